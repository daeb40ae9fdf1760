//! Idle timeouts that respect TCP keepalive, and rvs's own keepalive and
//! user timeout (`tcp_keepalive`, `tcp_user_timeout`), against the
//! kernel's own TCP: a connection whose peers send keepalive probes lives
//! past `timeouts.tcp` as under IPVS, a truly silent one ends there; a
//! black-holed real server (iptables in a network namespace) is found by
//! rvs's probes, and by the user timeout when data waits on it; `ss -tnoi`
//! shows the keepalive timer on both of rvs's sockets.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Kill, Netns, Running, free_port, spawn_ready, temp_dir, wait_for};
use socket2::{SockRef, TcpKeepalive};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

fn keepalive_1s(s: &TcpStream) {
    let p = TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1));
    SockRef::from(s).set_tcp_keepalive(&p).unwrap();
}

/// An echo server; with `keepalive`, each accepted socket sends probes
/// every second of silence.
fn echo_server(keepalive: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            if keepalive {
                keepalive_1s(&s);
            }
            thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    at
}

fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    s.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got)?;
    assert_eq!(got, msg);
    Ok(())
}

/// How long until `s` is closed or reset by rvs, at most `limit`.
fn closed_after(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 16];
    match s.read(&mut b) {
        Ok(0) => Some(t0.elapsed()),
        Err(e)
            if e.kind() != std::io::ErrorKind::WouldBlock
                && e.kind() != std::io::ErrorKind::TimedOut =>
        {
            Some(t0.elapsed())
        }
        _ => None,
    }
}

/// The case checked by hand against IPVS's behaviour: `timeouts.tcp: 3s`,
/// client and real server with SO_KEEPALIVE (1 s, 1 s), silent for 9 s:
/// the connection lives, and carries data after. Beside it, the same
/// with no keepalive anywhere: ended at the timeout.
#[test]
fn keepalive_probes_keep_a_connection_the_idle_timeout_ends_silent_ones() {
    let (probing, plain) = (echo_server(true), echo_server(false));
    let (va, vb, admin) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "admin:\n  listen: {admin}\nservices:\n  - name: probed\n    listen: {va}\n    timeouts: {{tcp: 3s}}\n    real_servers:\n      - address: {probing}\n  - name: silent\n    listen: {vb}\n    timeouts: {{tcp: 3s}}\n    real_servers:\n      - address: {plain}\n"
    );
    let rvs = Running::start("idle-keepalive", &yaml, admin);
    let silent = thread::spawn(move || {
        let mut s = TcpStream::connect(vb).unwrap();
        round_trip(&mut s, b"hello").unwrap();
        closed_after(&mut s, Duration::from_secs(15))
    });
    let mut s = TcpStream::connect(va).unwrap();
    keepalive_1s(&s);
    round_trip(&mut s, b"hello").unwrap();
    thread::sleep(Duration::from_secs(9));
    let kept = round_trip(&mut s, b"still there?");
    assert!(
        kept.is_ok(),
        "a connection with keepalive probes both ways, silent 9 s under a 3 s timeout, ended: {kept:?}\n{}",
        rvs.log()
    );
    let ended = silent.join().unwrap();
    let ended = ended.unwrap_or_else(|| {
        panic!(
            "a truly silent connection outlived its 3 s timeout by far\n{}",
            rvs.log()
        )
    });
    assert!(
        ended >= Duration::from_millis(2500),
        "the silent connection ended before its timeout: {ended:?}"
    );
    common::report(&format!(
        "keepalive test: silent connection ended after {ended:?} (timeout 3 s); the probed one lived 9 s"
    ));
}

/// `rvs check` and `rvs run` refuse what the kernel would not take, by
/// key, and take what it would.
#[test]
fn keepalive_and_user_timeout_values_are_checked() {
    let dir = temp_dir("keepalive-check");
    let check = |yaml: &str| {
        let f = dir.join("rvs.yaml");
        std::fs::write(&f, yaml).unwrap();
        let out = common::rvs()
            .args(["check", "-c"])
            .arg(&f)
            .output()
            .unwrap();
        (out.status.success(), common::output_text(&out))
    };
    let svc = |extra: &str| {
        format!(
            "services:\n  - name: a\n    listen: 127.0.0.1:1\n{extra}    real_servers:\n      - address: 127.0.0.1:2\n"
        )
    };
    let (ok, out) = check(&format!(
        "global:\n  tcp_keepalive: {{idle: 60s, interval: 10s, count: 5}}\n  tcp_user_timeout: 30s\n{}",
        svc("    tcp_keepalive: false\n")
    ));
    assert!(ok, "{out}");
    for (extra, want) in [
        (
            "    tcp_keepalive: {idle: 1500ms}\n",
            "services[0].tcp_keepalive.idle",
        ),
        (
            "    tcp_keepalive: {interval: 40000s}\n",
            "services[0].tcp_keepalive.interval",
        ),
        (
            "    tcp_keepalive: {count: 0}\n",
            "services[0].tcp_keepalive.count",
        ),
        ("    tcp_keepalive: {idel: 5s}\n", "unknown field `idel`"),
        ("    tcp_keepalive: yes please\n", "tcp_keepalive"),
        (
            "    tcp_user_timeout: 30d\n",
            "services[0].tcp_user_timeout",
        ),
        (
            "    proto: udp\n    tcp_keepalive: true\n",
            "only TCP services have this",
        ),
    ] {
        let (ok, out) = check(&svc(extra));
        assert!(!ok && out.contains(want), "{extra}: {out}");
    }
}

/// A TCP echo server (python3) on `IP PORT`.
const ECHO: &str = r#"
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
print("ready", flush=True)
def serve(c):
    while True:
        d = c.recv(1024)
        if not d: break
        c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A client (python3) in the namespace: connects to `VIP`, round trip,
/// prints `up`; waits for a line on its input, then (with `send`) sends
/// one more message; prints how long until the connection ended.
const CLIENT: &str = r#"
import socket, sys, time
host, port, send = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "send"
c = socket.create_connection((host, port))
c.sendall(b"ping"); assert c.recv(16) == b"ping"
print("up", flush=True)
sys.stdin.readline()
t0 = time.monotonic()
if send: c.sendall(b"into the void")
c.settimeout(30)
try:
    d = c.recv(16)
    print("ended %.2f %r" % (time.monotonic() - t0, d), flush=True)
except socket.timeout:
    print("alive after 30 s", flush=True)
except OSError as e:
    print("ended %.2f %s" % (time.monotonic() - t0, e), flush=True)
"#;

/// A real server black-holed by iptables in a network namespace (no
/// reset, no ICMP): with `tcp_keepalive {idle: 2s, interval: 1s, count:
/// 2}` rvs's probes go unanswered and the client's connection is closed
/// within idle + interval × count (4 s, and the timeout is 300 s); with
/// `tcp_user_timeout: 2s`, data sent towards it ends its connection in
/// about 2 s. Before the black hole, `ss -tnoi` shows rvs's keepalive
/// timer on its socket to the client and on its socket to the server.
#[test]
fn tcp_keepalive_and_user_timeout_find_a_black_holed_server() {
    let ns = Netns::new("kalive");
    let _server = spawn_ready(&mut ns.cmd(&["python3", "-c", ECHO, "127.0.0.2", "8000"]));
    let (_rvs, log) = ns.rvs(
        "kalive",
        "admin:\n  listen: 127.0.0.1:9180\nservices:\n  - name: probed\n    listen: 127.0.0.1:80\n    timeouts: {tcp: 300s}\n    tcp_keepalive: {idle: 2s, interval: 1s, count: 2}\n    real_servers:\n      - address: 127.0.0.2:8000\n  - name: bounded\n    listen: 127.0.0.1:81\n    timeouts: {tcp: 300s}\n    tcp_user_timeout: 2s\n    real_servers:\n      - address: 127.0.0.2:8000\n",
    );
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(20), || {
            ns.cmd(&["curl", "-sf", "http://127.0.0.1:9180/readyz"])
                .output()
                .is_ok_and(|o| o.status.success())
        }),
        "{}",
        logs()
    );
    let client = |port: &str, send: &str| {
        let mut c = ns
            .cmd(&["python3", "-c", CLIENT, "127.0.0.1", port, send])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(c.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "up", "{}", logs());
        (Kill(c), out)
    };
    let (mut probed, mut probed_out) = client("80", "wait");
    let (mut bounded, mut bounded_out) = client("81", "send");

    // rvs's keepalive timer on both of its sockets of the probed service.
    let ss = |filter: &str| {
        let out = ns
            .cmd(&[
                "sh",
                "-c",
                &format!("ss -tnoiH state established '{filter}'"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let to_client = ss("( sport = :80 )");
    let to_server = ss("( dst 127.0.0.2:8000 )");
    assert!(
        to_client.contains("timer:(keepalive"),
        "rvs's socket to the client: {to_client}"
    );
    assert!(
        to_server.contains("timer:(keepalive"),
        "rvs's socket to the server: {to_server}"
    );
    let others = ss("( sport = :81 )");
    assert!(
        !others.contains("timer:(keepalive"),
        "no keepalive where none is set: {others}"
    );

    ns.drop_tcp_to("-I", "127.0.0.2:8000".parse().unwrap());
    let go = |c: &mut Kill| {
        writeln!(c.0.stdin.as_mut().unwrap()).unwrap();
    };
    go(&mut probed);
    go(&mut bounded);
    let ended = |out: &mut std::io::BufReader<std::process::ChildStdout>| {
        let mut line = String::new();
        std::io::BufRead::read_line(out, &mut line).unwrap();
        let secs: Option<f64> = line
            .strip_prefix("ended ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok());
        (secs, line)
    };
    let (secs, line) = ended(&mut probed_out);
    let secs = secs.unwrap_or_else(|| panic!("tcp_keepalive: {line}\n{}", logs()));
    // 2 s idle (counted from the last traffic, before the black hole) +
    // 2 probes 1 s apart; the slack is for a loaded machine.
    assert!(secs < 12.0, "tcp_keepalive took {secs} s: {line}");
    let (usecs, uline) = ended(&mut bounded_out);
    let usecs = usecs.unwrap_or_else(|| panic!("tcp_user_timeout: {uline}\n{}", logs()));
    assert!(
        (1.5..12.0).contains(&usecs),
        "tcp_user_timeout took {usecs} s: {uline}"
    );
    common::report(&format!(
        "keepalive test: black-holed server found by tcp_keepalive in {secs:.1} s, by tcp_user_timeout in {usecs:.1} s"
    ));
}
