//! rvs under systemd, with systemd's own tools: the unit files pass
//! `systemd-analyze verify` and `security`, sockets passed by
//! `systemd-socket-activate` (socket activation) carry traffic, the
//! notify protocol (READY, RELOADING, STOPPING, WATCHDOG) reaches a
//! socket the test listens on, and the units run under a real systemd
//! (PID 1 of a podman container made from a debootstrapped Debian).
//! tests/run installs systemd, debootstrap and podman.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::debian_systemd::{boot, in_container};
use common::{
    config, fetch, free_port, name_backend, output_text, report, root, signal, temp_dir, wait_for,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (Debian's systemd package has it; tests/run installs it)")
    })
}

/// `systemd-analyze verify` looks for the binaries the unit runs: a root
/// holding the units, rvs at the path the unit names, kill, sh, and the
/// system's own units (targets the unit refers to).
fn unit_root(rvs_unit: &str) -> std::path::PathBuf {
    let r = temp_dir("unit-root");
    for d in [
        "usr/local/bin",
        "bin",
        "etc/systemd/system",
        "usr/lib/systemd",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    let copied = run(Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system")
        .arg(r.join("usr/lib/systemd")));
    assert!(copied.status.success(), "{}", output_text(&copied));
    std::fs::copy(env!("CARGO_BIN_EXE_rvs"), r.join("usr/local/bin/rvs")).unwrap();
    let kill = ["/bin/kill", "/usr/bin/kill"]
        .into_iter()
        .find(|k| Path::new(k).exists())
        .expect("kill(1) is installed");
    std::fs::copy(kill, r.join("bin/kill")).unwrap();
    std::fs::copy("/bin/sh", r.join("bin/sh")).unwrap();
    let units = r.join("etc/systemd/system");
    std::fs::write(units.join("rvs.service"), rvs_unit).unwrap();
    std::fs::copy(
        root().join("deploy/systemd/rvs.socket"),
        units.join("rvs.socket"),
    )
    .unwrap();
    r
}

fn verify(unit_root: &Path) -> Output {
    run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", unit_root.display()))
        .args(["rvs.service", "rvs.socket"]))
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(root().join("deploy/systemd/rvs.service")).unwrap();
    let out = verify(&unit_root(&unit));
    assert!(
        out.status.success() && output_text(&out).trim().is_empty(),
        "systemd-analyze verify: {}",
        output_text(&out)
    );
    // The check can fail: a misspelt setting is reported.
    let broken = unit.replace("Type=notify", "Type=notfy");
    assert_ne!(broken, unit);
    let out = verify(&unit_root(&broken));
    assert!(output_text(&out).contains("notfy"), "{}", output_text(&out));
    // The unit is what the docs say: notify, reload by SIGHUP after a check.
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStartPre=/usr/local/bin/rvs check -c ${RVS_CONFIG}",
        "KillMode=mixed",
        "ExecStop=/bin/sh -c 'kill -TERM $$MAINPID 2>/dev/null || exit 0; while kill -0 $$MAINPID 2>/dev/null; do sleep 0.2; done'",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "rvs.service has no line {line:?}"
        );
    }
}

/// The exposure figure docs/deploy.md states; the unit must not rise above it.
const EXPOSURE: &str = "1.6";

#[test]
fn systemd_analyze_security_rates_the_unit_ok() {
    let unit = root().join("deploy/systemd/rvs.service");
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit));
    let all = output_text(&out);
    let verdict = all
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no rating: {all}"));
    report(&format!("systemd test: {}", verdict.trim()));
    let level: f64 = verdict
        .split(": ")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{verdict}"));
    assert!(
        level <= EXPOSURE.parse::<f64>().unwrap(),
        "exposure rose to {level} (docs/deploy.md states {EXPOSURE}): {all}"
    );
    assert!(
        verdict.contains(" OK") || verdict.contains(" SAFE"),
        "{verdict}"
    );
    let docs = std::fs::read_to_string(root().join("docs/deploy.md")).unwrap();
    assert!(
        docs.contains(&format!("exposure level {EXPOSURE} OK")),
        "docs/deploy.md states the figure"
    );
    // The rating can fail: an unhardened unit rates worse.
    let bare = temp_dir("bare-unit").join("bare.service");
    std::fs::write(
        &bare,
        "[Service]\nType=notify\nExecStart=/usr/local/bin/rvs run -c /etc/rvs/rvs.yaml\n",
    )
    .unwrap();
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", "--threshold=5"])
        .arg(&bare));
    assert!(!out.status.success(), "{}", output_text(&out));
}

/// rvs started by `systemd-socket-activate` with the given listeners.
fn activated(
    listen: &[SocketAddr],
    names: &str,
    datagram: bool,
    config: &Path,
    log: &Path,
) -> Child {
    let mut cmd = Command::new("systemd-socket-activate");
    for l in listen {
        cmd.arg("-l").arg(l.to_string());
    }
    if datagram {
        cmd.arg("--datagram");
    }
    cmd.arg(format!("--fdname={names}"))
        .arg(env!("CARGO_BIN_EXE_rvs"))
        .args(["run", "--workers", "2", "-c"])
        .arg(config)
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .expect("systemd-socket-activate (Debian's systemd package; tests/run installs it)")
}

fn log_of(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn stop(mut child: Child) {
    signal(&child, "TERM");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
}

#[test]
fn sockets_passed_by_systemd_socket_activate_carry_the_traffic() {
    let backend = name_backend("activated");
    let (vip, admin) = (free_port(), free_port());
    let dir = temp_dir("activate");
    let path = dir.join("rvs.yaml");
    std::fs::write(&path, config(vip, backend, admin)).unwrap();
    let log = dir.join("rvs.log");
    // systemd-socket-activate holds both sockets, and starts rvs at the
    // first connection: that client waits in the queue meanwhile.
    let child = activated(&[vip, admin], "web:admin", false, &path, &log);
    assert!(
        wait_for(Duration::from_secs(10), || TcpStream::connect(vip).is_ok()),
        "the socket listens"
    );
    let first = fetch(vip);
    // Were rvs binding the address itself, it would find it in use and
    // exit: every connection is served by the passed socket.
    let all: Vec<Option<String>> = (0..40).map(|_| fetch(vip)).collect();
    let l = log_of(&log);
    let ready = TcpStream::connect(admin).and_then(|mut s| {
        s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    });
    stop(child);
    assert_eq!(first.as_deref(), Some("activated"), "{l}");
    assert!(
        all.iter().all(|a| a.as_deref() == Some("activated")),
        "{all:?}\n{l}"
    );
    assert!(
        l.contains("adopting the socket passed by the service manager")
            && l.contains(&format!("listen={vip}")),
        "{l}"
    );
    assert!(
        l.contains("admin: adopting the socket passed by the service manager"),
        "{l}"
    );
    assert!(ready.unwrap().contains("200 OK"), "the admin socket serves");
}

#[test]
fn a_passed_udp_socket_carries_datagrams() {
    // An echo server as the real server.
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let backend = echo.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let vip = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = temp_dir("activate-udp");
    let path = dir.join("rvs.yaml");
    std::fs::write(
        &path,
        format!(
            "admin:\n  listen: \"{}\"\nservices:\n  - name: dns\n    proto: udp\n    listen: \"{vip}\"\n    real_servers:\n      - address: \"{backend}\"\n",
            free_port()
        ),
    )
    .unwrap();
    let log = dir.join("rvs.log");
    let child = activated(&[vip], "dns", true, &path, &log);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    // The first datagram starts rvs; asked again until one comes back.
    let answered = wait_for(Duration::from_secs(10), || {
        client.send_to(b"ping", vip).unwrap();
        matches!(client.recv_from(&mut buf), Ok((4, _)))
    });
    let l = log_of(&log);
    stop(child);
    assert!(answered, "{l}");
    assert_eq!(&buf[..4], b"ping");
    assert!(
        l.contains("adopting the socket passed by the service manager") && l.contains("proto=udp"),
        "{l}"
    );
}

#[test]
fn a_passed_descriptor_that_is_no_socket_is_refused_by_name() {
    let dir = temp_dir("activate-bad");
    let path = dir.join("rvs.yaml");
    std::fs::write(&path, config(free_port(), free_port(), free_port())).unwrap();
    let out = run(Command::new("sh").arg("-c").arg(format!(
        "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web exec {} run -c {} 3</dev/null",
        env!("CARGO_BIN_EXE_rvs"),
        path.display()
    )));
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out)
            .contains("rvs: socket activation: passed descriptor 3 (web): not a socket"),
        "{}",
        output_text(&out)
    );
}

/// Reads notify datagrams until one satisfies `want`; all are kept.
fn until(sock: &UnixDatagram, seen: &mut Vec<String>, want: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(10) {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push(msg.clone());
            if want(&msg) {
                return msg;
            }
        }
    }
    panic!("no such notification; seen: {seen:?}");
}

#[test]
fn the_service_manager_hears_ready_reloading_stopping_and_the_watchdog() {
    let (one, two) = (name_backend("one"), name_backend("two"));
    let (vip, admin) = (free_port(), free_port());
    let dir = temp_dir("notify");
    let path = dir.join("rvs.yaml");
    std::fs::write(&path, config(vip, one, admin)).unwrap();
    let socket_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = common::rvs()
        .args(["run", "-c"])
        .arg(&path)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let ready = until(&sock, &mut seen, |m| m.contains("READY=1"));
    // READY=1 means every service listens: served at once, no retry.
    let served = fetch(vip);
    assert_eq!(served.as_deref(), Some("one"), "served right after READY=1");
    assert!(
        ready.contains(&format!("MAINPID={}", child.id())),
        "{ready}"
    );
    assert!(ready.contains("STATUS=serving 1 service"), "{ready}");
    until(&sock, &mut seen, |m| m == "WATCHDOG=1");

    // systemctl reload: RELOADING=1, then READY=1 once applied.
    std::fs::write(&path, config(vip, two, admin)).unwrap();
    signal(&child, "HUP");
    let reloading = until(&sock, &mut seen, |m| m.contains("RELOADING=1"));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    until(&sock, &mut seen, |m| m.contains("READY=1"));
    assert_eq!(fetch(vip).as_deref(), Some("two"));

    // A refused reload ends the reload too, and says why in STATUS.
    std::fs::write(&path, "services: [").unwrap();
    signal(&child, "HUP");
    until(&sock, &mut seen, |m| m.contains("RELOADING=1"));
    let refused = until(&sock, &mut seen, |m| m.contains("READY=1"));
    assert!(refused.contains("reload refused"), "{refused}");
    assert_eq!(refused.lines().count(), 2, "STATUS is one line: {refused}");

    signal(&child, "TERM");
    let stopping = until(&sock, &mut seen, |m| m.contains("STOPPING=1"));
    assert!(stopping.contains("STATUS=draining"), "{stopping}");
    let _ = child.wait();
}

#[test]
fn without_notify_socket_rvs_runs_as_before() {
    let backend = name_backend("plain");
    let vip = free_port();
    let path = temp_dir("no-notify").join("rvs.yaml");
    std::fs::write(&path, config(vip, backend, free_port())).unwrap();
    let child = common::rvs()
        .args(["run", "-c"])
        .arg(&path)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ok = wait_for(Duration::from_secs(10), || {
        fetch(vip).as_deref() == Some("plain")
    });
    stop(child);
    assert!(ok);
}

/// The units as shipped, under a real systemd (PID 1 of a privileged
/// podman container, in a network namespace of its own): the hardening
/// lets rvs run (dynamic user, CAP_NET_BIND_SERVICE only, seccomp), notify
/// and the watchdog work, `systemctl reload` checks first, and with
/// rvs.socket two restarts under a stream of requests fail none.
#[test]
fn the_units_run_under_a_real_systemd() {
    let name = format!("rvs-test-systemd-{}", std::process::id());
    let dir = temp_dir("real-systemd");
    // Port 80 to the demo's virtual service (itself rvs, as the backend),
    // 443 and UDP 53 as rvs.socket lists them; the admin port as there.
    std::fs::write(
        dir.join("rvs.yaml"),
        "admin:\n  listen: 127.0.0.1:9180\nservices:\n  - name: web\n    listen: 0.0.0.0:80\n    real_servers:\n      - address: 127.0.0.1:8000\n  - name: tls\n    listen: 0.0.0.0:443\n    real_servers:\n      - address: 127.0.0.1:8000\n  - name: dns\n    proto: udp\n    listen: 0.0.0.0:53\n    real_servers:\n      - address: 127.0.0.1:5300\n",
    )
    .unwrap();
    let units = root().join("deploy/systemd");
    let _removed = boot(
        &name,
        &[
            (
                Path::new(env!("CARGO_BIN_EXE_rvs")).to_path_buf(),
                "/usr/local/bin/rvs",
            ),
            (units.join("rvs.service"), "/etc/systemd/system/rvs.service"),
            (units.join("rvs.socket"), "/etc/systemd/system/rvs.socket"),
            (dir.clone(), "/etc/rvs"),
        ],
    );
    // The backend: rvs's demo on 8000 (three HTTP servers).
    let (ok, boot) = in_container(
        &name,
        "systemd-run --unit=backend /usr/local/bin/rvs demo --listen 127.0.0.1:8000 --admin 127.0.0.1:9300 && \
         for i in $(seq 60); do curl -s -o /dev/null http://127.0.0.1:8000/ && exit 0; sleep 0.5; done; exit 1",
    );
    assert!(ok, "the backend up: {boot}");
    let (ok, out) = in_container(
        &name,
        "systemctl start rvs.service && systemctl is-active rvs.service && \
         systemctl show -p StatusText rvs.service && \
         pid=$(systemctl show -p MainPID --value rvs.service) && \
         ps -o user= -p $pid && grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/$pid/status",
    );
    assert!(ok, "{boot}\n{out}");
    assert!(out.contains("StatusText=serving 3 services"), "{out}");
    assert!(
        out.contains("CapEff:\t0000000000000400"),
        "CAP_NET_BIND_SERVICE only: {out}"
    );
    assert!(
        out.contains("NoNewPrivs:\t1") && out.contains("Seccomp:\t2"),
        "{out}"
    );
    assert!(
        !out.lines().any(|l| l.trim() == "root"),
        "a dynamic user: {out}"
    );
    let (ok, out) = in_container(
        &name,
        "for i in 1 2 3 4 5 6 7 8 9 10; do curl -s --max-time 3 http://127.0.0.1/ && break; sleep 0.5; done; \
         curl -s http://127.0.0.1:9180/metrics | grep -c '^process_start_time_seconds'; \
         systemctl show -p WatchdogTimestampMonotonic --value rvs.service",
    );
    assert!(ok && out.contains("Hello from backend-"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(&"1"),
        "process metrics under ProtectProc: {out}"
    );
    assert_ne!(
        lines.last().copied(),
        Some("0"),
        "the watchdog was fed: {out}"
    );

    // systemctl reload: checked first; a broken file fails the reload and
    // rvs keeps serving.
    let (ok, out) = in_container(&name, "systemctl reload rvs.service");
    assert!(ok, "{out}");
    let broken = dir.join("rvs.yaml.good");
    std::fs::copy(dir.join("rvs.yaml"), &broken).unwrap();
    std::fs::write(dir.join("rvs.yaml"), "services: [").unwrap();
    let (ok, out) = in_container(&name, "systemctl reload rvs.service");
    assert!(!ok, "a broken file reloads: {out}");
    std::fs::rename(&broken, dir.join("rvs.yaml")).unwrap();
    let (ok, out) = in_container(
        &name,
        "systemctl is-active rvs.service && curl -s --max-time 3 http://127.0.0.1/",
    );
    assert!(ok && out.contains("Hello from backend-"), "{out}");

    // A binary upgrade (SIGUSR2 to the main process) under a stream of
    // requests: none fails, systemd follows the new process (MAINPID=),
    // which feeds the watchdog from then on (no restart after the
    // watchdog's 10 s), and the old one drains and exits.
    let (ok, out) = in_container(
        &name,
        "old=$(systemctl show -p MainPID --value rvs.service); \
         fails=0; ( for i in $(seq 200); do curl -s -o /dev/null --max-time 10 http://127.0.0.1/ || fails=$((fails+1)); done; echo fails=$fails ) & \
         sleep 0.3; kill -USR2 $old; wait; \
         for i in $(seq 40); do new=$(systemctl show -p MainPID --value rvs.service); [ \"$new\" != \"$old\" ] && break; sleep 0.5; done; \
         echo old=$old new=$new; sleep 15; \
         echo after=$(systemctl show -p MainPID --value rvs.service) restarts=$(systemctl show -p NRestarts --value rvs.service) \
           active=$(systemctl is-active rvs.service) old_alive=$(kill -0 $old 2>/dev/null && echo yes || echo no); \
         curl -s --max-time 3 http://127.0.0.1/",
    );
    assert!(ok, "{out}");
    assert!(out.contains("fails=0"), "{out}");
    let field = |key: &str| {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_default()
            .to_owned()
    };
    let (old, new) = (field("old="), field("new="));
    assert!(!new.is_empty() && new != "0" && new != old, "{out}");
    assert_eq!(
        field("after="),
        new,
        "systemd follows the new process: {out}"
    );
    assert_eq!(field("restarts="), "0", "{out}");
    assert_eq!(field("active="), "active", "{out}");
    assert_eq!(
        field("old_alive="),
        "no",
        "the old process drained and exited: {out}"
    );
    assert!(out.contains("Hello from backend-"), "{out}");

    // Socket activation: systemd holds the sockets; two restarts in the
    // middle of 300 requests refuse none.
    let (ok, out) = in_container(
        &name,
        "systemctl stop rvs.service && systemctl start rvs.socket && systemctl start rvs.service && \
         journalctl -u rvs.service --no-pager | grep -c 'adopting the socket passed'",
    );
    assert!(ok, "{out}");
    let (ok, out) = in_container(
        &name,
        "fails=0; ( for i in $(seq 300); do curl -s -o /dev/null --max-time 10 http://127.0.0.1/ || fails=$((fails+1)); done; echo fails=$fails ) & \
         sleep 0.5; systemctl restart rvs.service; sleep 0.5; systemctl restart rvs.service; wait",
    );
    assert!(ok && out.contains("fails=0"), "{out}");
    let (_, journal) = in_container(&name, "journalctl -u rvs.service --no-pager");
    for adopted in [
        "service=\"web\" proto=tcp listen=0.0.0.0:80",
        "service=\"tls\" proto=tcp listen=0.0.0.0:443",
        "service=\"dns\" proto=udp listen=0.0.0.0:53",
        "admin: adopting the socket",
    ] {
        assert!(journal.contains(adopted), "{adopted}: {journal}");
    }
    assert!(journal.contains("all connections closed"), "{journal}");
}

/// docs/deploy.md's systemd steps, line by line as written, from a
/// checkout (the shipped config/rvs.yaml, the units, the binary where
/// `cargo build --release` puts it), in a fresh container under a real
/// systemd: rvs.service is installed, enabled and serving, then
/// rvs.socket takes over its addresses. `$EDITOR` edits nothing.
#[test]
fn the_deploy_guide_systemd_steps_run_as_written() {
    let guide = std::fs::read_to_string(root().join("docs/deploy.md")).unwrap();
    let steps: Vec<String> = common::doc_commands(&guide, None)
        .into_iter()
        .skip_while(|l| !l.starts_with("install -m 0755 target/release/rvs"))
        .collect();
    let (service, socket): (Vec<&String>, Vec<&String>) = {
        let split = steps
            .iter()
            .position(|l| l.contains("rvs.socket"))
            .expect("the guide installs rvs.socket");
        (
            steps[..split].iter().collect(),
            steps[split..].iter().collect(),
        )
    };
    assert!(
        service
            .iter()
            .any(|l| l.starts_with("systemctl enable --now rvs"))
            && socket
                .iter()
                .any(|l| l.starts_with("systemctl enable --now rvs.socket")),
        "the guide's systemd steps: {steps:#?}"
    );
    // The checkout, as the guide's commands expect it.
    let src = temp_dir("deploy-guide");
    for rel in [
        "config/rvs.yaml",
        "deploy/systemd/rvs.service",
        "deploy/systemd/rvs.socket",
    ] {
        std::fs::create_dir_all(src.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(root().join(rel), src.join(rel)).unwrap();
    }
    std::fs::create_dir_all(src.join("target/release")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_rvs"), src.join("target/release/rvs")).unwrap();

    let name = format!("rvs-test-guide-{}", std::process::id());
    let _removed = boot(&name, &[(src.clone(), "/src")]);
    let step = |line: &str| {
        let (ok, out) = in_container(&name, &format!("cd /src && export EDITOR=true && {line}"));
        assert!(ok, "docs/deploy.md: `{line}` failed:\n{out}");
        report(&format!("deploy guide: `{line}` exited 0"));
    };
    let serving = |what: &str| {
        let (ok, out) = in_container(
            &name,
            "for i in $(seq 40); do curl -sf -o /dev/null http://127.0.0.1:9180/healthz && \
               systemctl is-active rvs.service && exit 0; sleep 0.5; done; \
             systemctl status rvs.service rvs.socket --no-pager; journalctl -u rvs.service --no-pager | tail -20; exit 1",
        );
        assert!(ok, "{what}: rvs serves its admin address:\n{out}");
    };
    for line in &service {
        step(line);
    }
    serving("rvs.service enabled");
    let (_, enabled) = in_container(&name, "systemctl is-enabled rvs.service");
    assert_eq!(enabled.trim(), "enabled");
    for line in &socket {
        step(line);
    }
    serving("rvs.socket enabled");
    let (ok, out) = in_container(
        &name,
        "systemctl is-active rvs.socket && systemctl is-enabled rvs.socket && \
         journalctl -u rvs.service --no-pager | grep -c 'admin: adopting the socket'",
    );
    assert!(
        ok,
        "rvs.socket active and enabled, its admin socket adopted:\n{out}"
    );
}
