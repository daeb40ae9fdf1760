//! Binary upgrades on SIGUSR2 (nginx's convention), under load: a steady
//! stream of new TCP connections, ten long transfers in flight and a UDP
//! request loop go on through ten upgrades in a row — one to a binary that
//! exits at once, one with a broken configuration — with no connection
//! failed, every transfer byte-exact, every UDP request answered (but for
//! datagrams the kernel itself dropped), and one rvs left at the end.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

use common::{
    connection_stream, free_port, kernel_udp_drops, name_backend, paced_backend, record, temp_dir,
    udp_echo, wait_for,
};

fn pid_of(file: &Path) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn alive(pid: u32) -> bool {
    // A zombie is not serving: only a running or sleeping process counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn sig(pid: u32, s: &str) {
    let st = Command::new("kill")
        .arg(format!("-{s}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

/// Processes running the binary at `exe`.
fn running(exe: &Path) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let first = cmd.split(|b| *b == 0).next().unwrap_or_default();
        if first == exe.as_os_str().as_encoded_bytes() && alive(pid) {
            v.push(pid);
        }
    }
    v
}

/// Kills every process still running the binary at its path when the test
/// ends, passed or failed: an upgraded rvs is no child of the test, and one
/// left behind would hold the test's output open.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in running(&self.0) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

/// Copies `from` to `to` with cp(1), so that the file is never open for
/// writing in this process: the tests of this file run in parallel, and a
/// process one of them forks while another holds such a descriptor keeps
/// it until it execs — an exec of the file meanwhile fails (ETXTBSY).
fn install(from: &Path, to: &Path) {
    let st = Command::new("cp").arg(from).arg(to).status().unwrap();
    assert!(st.success(), "cp {} {}", from.display(), to.display());
}

/// An executable script at `to` (through [`install`]).
fn install_script(to: &Path, text: &str) {
    let draft = to.with_extension("draft");
    std::fs::write(&draft, text).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&draft, mode).unwrap();
    install(&draft, to);
}

/// An rvs started from a copy of the binary in a directory of the test's
/// own (the test replaces the copy), with a pid file and a log; every
/// process running the copy is killed when it drops.
struct Upgradable {
    dir: PathBuf,
    bin: PathBuf,
    exe: PathBuf,
    cfg: PathBuf,
    pid_file: PathBuf,
    log: PathBuf,
    /// The first process: the test's child (each new process is the child
    /// of the one before).
    first: std::process::Child,
    _reaper: Reaper,
}

impl Upgradable {
    fn start(tag: &str, config: &str, args: &[&str]) -> Upgradable {
        let dir = temp_dir(tag);
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let exe: PathBuf = bin.join("rvs");
        install(Path::new(env!("CARGO_BIN_EXE_rvs")), &exe);
        let reaper = Reaper(exe.clone());
        let cfg = dir.join("rvs.yaml");
        std::fs::write(&cfg, config).unwrap();
        let pid_file = dir.join("rvs.pid");
        let log = dir.join("rvs.log");
        let first = Command::new(&exe)
            .arg("run")
            .args(args)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("-c")
            .arg(&cfg)
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        assert!(wait_for(Duration::from_secs(10), || pid_of(&pid_file).is_some()));
        Upgradable {
            dir,
            bin,
            exe,
            cfg,
            pid_file,
            log,
            first,
            _reaper: reaper,
        }
    }

    /// The process that took over from `old` (the pid file names it),
    /// waited for up to 20 s.
    fn successor_of(&self, old: u32) -> Option<u32> {
        let mut new = None;
        wait_for(Duration::from_secs(20), || {
            new = pid_of(&self.pid_file).filter(|p| *p != old);
            new.is_some()
        });
        new
    }

    /// Reads its log, whenever called.
    fn logs_fn(&self) -> impl Fn() -> String + use<> {
        let log = self.log.clone();
        move || std::fs::read_to_string(&log).unwrap_or_default()
    }
}

#[test]
fn ten_upgrades_under_load_drop_nothing() {
    const CHUNKS: usize = 60;
    const CHUNK: usize = 32 * 1024;
    let (short, long, udp) = (
        name_backend("a"),
        paced_backend(CHUNKS, CHUNK, Duration::from_millis(100)),
        udp_echo(),
    );
    let (v_short, v_long, v_udp, admin) = (free_port(), free_port(), free_port(), free_port());
    let config = format!(
        "global:\n  shutdown_grace: 30s\n  timeouts: {{ udp: 2s }}\nadmin:\n  listen: \"{admin}\"\nservices:\n  - name: short\n    listen: \"{v_short}\"\n    real_servers:\n      - address: \"{short}\"\n  - name: long\n    listen: \"{v_long}\"\n    real_servers:\n      - address: \"{long}\"\n  - name: udp\n    proto: udp\n    listen: \"{v_udp}\"\n    real_servers:\n      - address: \"{udp}\"\n"
    );
    let mut u = Upgradable::start("upgrade", &config, &["--workers", "2"]);
    let logs = u.logs_fn();

    let stop = Arc::new(AtomicBool::new(false));
    let (stream, ok, failed) = connection_stream(v_short, "a", Duration::ZERO, &stop);
    let transfers: Vec<_> = (0..10)
        .map(|_| {
            thread::spawn(move || -> Result<usize, String> {
                let mut s = TcpStream::connect(v_long).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).map_err(|e| e.to_string())?;
                if got.iter().any(|b| *b != b'x') {
                    return Err("corrupted".into());
                }
                Ok(got.len())
            })
        })
        .collect();
    let drops_before = kernel_udp_drops();
    let (udp_ok, udp_lost) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let udp_loop = {
        let (stop, udp_ok, udp_lost) = (
            Arc::clone(&stop),
            Arc::clone(&udp_ok),
            Arc::clone(&udp_lost),
        );
        thread::spawn(move || {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 64];
            let mut i = 0u64;
            while !stop.load(Relaxed) {
                let msg = format!("q{i}");
                c.send_to(msg.as_bytes(), v_udp).unwrap();
                // Replies to earlier requests that came late are skipped.
                let answered = loop {
                    match c.recv_from(&mut buf) {
                        Ok((n, _)) if &buf[..n] == msg.as_bytes() => break true,
                        Ok(_) => continue,
                        Err(_) => break false,
                    }
                };
                if answered {
                    udp_ok.fetch_add(1, Relaxed);
                } else {
                    eprintln!("upgrade test: UDP request {msg} unanswered");
                    udp_lost.fetch_add(1, Relaxed);
                }
                i += 1;
                thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let mut pids = vec![pid_of(&u.pid_file).unwrap()];
    let real = u.bin.join("rvs.real");
    for round in 0..10 {
        thread::sleep(Duration::from_millis(300));
        let current = *pids.last().unwrap();
        let failures = logs().matches("upgrade failed").count();
        match round {
            3 => {
                // A binary that exits at once.
                std::fs::rename(&u.exe, &real).unwrap();
                install_script(&u.exe, "#!/bin/sh\nexit 3\n");
            }
            6 => std::fs::write(&u.cfg, "services: [").unwrap(),
            _ => {}
        }
        sig(current, "USR2");
        if round == 3 || round == 6 {
            assert!(
                wait_for(Duration::from_secs(20), || logs()
                    .matches("upgrade failed")
                    .count()
                    > failures),
                "round {round}: {}",
                logs()
            );
            assert_eq!(
                pid_of(&u.pid_file),
                Some(current),
                "the old process serves on"
            );
            assert!(alive(current));
            if round == 3 {
                std::fs::rename(&real, &u.exe).unwrap();
            } else {
                std::fs::write(&u.cfg, &config).unwrap();
            }
            continue;
        }
        let new = u.successor_of(current);
        assert!(new.is_some(), "round {round}: no new process: {}", logs());
        pids.push(new.unwrap());
    }
    assert_eq!(pids.len(), 9, "eight upgrades took over");
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    stream.join().unwrap();
    udp_loop.join().unwrap();
    for t in transfers {
        assert_eq!(
            t.join().unwrap(),
            Ok(CHUNKS * CHUNK),
            "a transfer in flight"
        );
    }
    let drops = kernel_udp_drops() - drops_before;
    let (n_ok, n_failed) = (ok.load(Relaxed), failed.load(Relaxed));
    let (u_ok, u_lost) = (udp_ok.load(Relaxed), udp_lost.load(Relaxed));
    eprintln!(
        "upgrade test: {n_ok} connections, {n_failed} failed; {u_ok} UDP requests answered, {u_lost} not (kernel drops {drops})"
    );
    assert_eq!(n_failed, 0, "{}", logs());
    assert!(n_ok > 100, "a steady stream: {n_ok}");
    assert!(
        u_lost as u64 <= drops,
        "{u_lost} UDP requests lost, the kernel dropped {drops}"
    );
    assert!(u_ok > 50);
    // The old ones drain and exit; one is left.
    let last = *pids.last().unwrap();
    let _ = u.first.wait(); // the first was the test's child
    assert!(
        wait_for(Duration::from_secs(40), || running(&u.exe) == vec![last]),
        "left running: {:?} (wanted only {last})",
        running(&u.exe)
    );
    let l = logs();
    assert_eq!(
        l.matches("took over from the process before").count(),
        8,
        "{l}"
    );
    sig(last, "TERM");
    assert!(wait_for(Duration::from_secs(20), || !alive(last)));
    record(
        "00-upgrades",
        "ten SIGUSR2 binary upgrades in a row, one to a binary that exits at once, one with a broken configuration, under a stream of new TCP connections (no pause), ten 1.9 MB transfers in flight (6 s each) and a UDP request loop on one source port",
        "`crates/rvs/tests/upgrade.rs`",
        &format!(
            "{n_ok} connections, 0 failed; 10 of 10 transfers byte-exact; {u_ok} UDP requests, {u_lost} unanswered ({drops} dropped by the kernel); the two bad upgrades left the old process serving (`upgrade failed` logged, pid file unchanged); 8 took over; one rvs process at the end"
        ),
    );
}

/// A UDP server that answers each datagram with `name|source|payload`
/// (which real server a flow reached, and from which upstream address),
/// 40 ms later: an upgrade always finds replies on their way.
fn udp_named(name: &'static str) -> SocketAddr {
    let s = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    let at = s.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let mut out = format!("{name}|{from}|").into_bytes();
            out.extend_from_slice(&buf[..n]);
            let s = Arc::clone(&s);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(40));
                let _ = s.send_to(&out, from);
            });
        }
    });
    at
}

/// The name a TCP backend sends, to a connection from `source`.
fn name_from(source: std::net::IpAddr, vip: SocketAddr) -> Option<String> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    s.bind(&SocketAddr::new(source, 0).into()).ok()?;
    s.connect_timeout(&vip.into(), Duration::from_secs(5))
        .ok()?;
    let mut s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut got = String::new();
    s.read_to_string(&mut got).ok()?;
    Some(got)
}

/// What one UDP flow saw: (real server, upstream address) per answer.
struct Flow {
    socket: UdpSocket,
    first: Option<(String, String)>,
}

impl Flow {
    /// Sends `msg` and reads its answer (skipping late ones); the server
    /// and upstream address it came through.
    fn ask(&self, msg: &str) -> Option<(String, String)> {
        self.socket.send(msg.as_bytes()).ok()?;
        let mut buf = [0u8; 2048];
        loop {
            let n = self.socket.recv(&mut buf).ok()?;
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let mut parts = text.splitn(3, '|');
            let (Some(name), Some(from), Some(payload)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if payload == msg {
                return Some((name.to_owned(), from.to_owned()));
            }
        }
    }
}

/// UDP flows with fixed source ports under rr over two servers, and the
/// clients of a persistent TCP service, through two binary upgrades under
/// traffic: no flow changes server or upstream address, no datagram is
/// lost, every persistent client stays on its server, and each old process
/// is gone within seconds although `timeouts.udp` is a minute.
#[test]
fn udp_flows_and_persistence_survive_upgrades() {
    let (u1, u2) = (udp_named("u1"), udp_named("u2"));
    let (t1, t2) = (name_backend("t1"), name_backend("t2"));
    // The persistent service's servers start down (alpha) and a check takes
    // 1.5 s to pass: a new process that did not start from the old one's
    // verdicts would have them down — and refuse, and drop the templates —
    // for that long.
    let slow_ok = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                thread::spawn(move || {
                    let mut s = s;
                    thread::sleep(Duration::from_millis(1500));
                    let _ = s.write_all(b"ok");
                });
            }
        });
        at
    };
    let (v_udp, v_tcp, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        "global:\n  shutdown_grace: 60s\n  timeouts: {{ udp: 60s }}\nadmin:\n  listen: \"{admin}\"\nservices:\n  - name: flows\n    proto: udp\n    listen: \"{v_udp}\"\n    scheduler: rr\n    real_servers:\n      - address: \"{u1}\"\n      - address: \"{u2}\"\n  - name: sticky\n    listen: \"{v_tcp}\"\n    scheduler: rr\n    persistence: {{ timeout: 300s }}\n    alpha: true\n    health_check: {{ type: tcp, connect_port: {}, steps: [{{ expect: ok }}], connect_timeout: 5s, delay_loop: 1s, retry: 0 }}\n    real_servers:\n      - address: \"{t1}\"\n      - address: \"{t2}\"\n",
        slow_ok.port()
    );
    let mut u = Upgradable::start("upgrade-state", &config, &["--workers", "2"]);
    let logs = u.logs_fn();

    // Eight flows, each on its own source port for the whole test.
    const FLOWS: usize = 8;
    let mut flows: Vec<Flow> = (0..FLOWS)
        .map(|_| {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.connect(v_udp).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            Flow {
                socket,
                first: None,
            }
        })
        .collect();
    for (i, f) in flows.iter_mut().enumerate() {
        f.first = f.ask(&format!("f{i}-start"));
        assert!(f.first.is_some(), "flow {i} unanswered: {}", logs());
    }
    let on_u1 = flows
        .iter()
        .filter(|f| f.first.as_ref().is_some_and(|(n, _)| n == "u1"))
        .count();
    assert_eq!(on_u1, FLOWS / 2, "rr spreads the flows over both servers");
    // Eight persistent clients, each from its own address, once both
    // servers passed their first check.
    assert!(
        wait_for(Duration::from_secs(20), || common::http_get(
            admin,
            "/api/v1/services/sticky"
        )
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        .is_some_and(
            |v| v["real_servers"].as_array().is_some_and(|rs| rs.len() == 2
                && rs
                    .iter()
                    .all(|r| r["health"]["up"] == serde_json::json!(true)))
        )),
        "{}",
        logs()
    );
    let sources: Vec<std::net::IpAddr> = (10..18u8)
        .map(|i| std::net::IpAddr::from([127, 0, 0, i]))
        .collect();
    let sticky: Vec<String> = sources
        .iter()
        .map(|s| name_from(*s, v_tcp).unwrap())
        .collect();
    assert!(sticky.iter().any(|n| n == "t1") && sticky.iter().any(|n| n == "t2"));

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, lost, moved) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let drops_before = kernel_udp_drops();
    let traffic: Vec<_> = flows
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let (stop, ok, lost, moved) = (
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&lost),
                Arc::clone(&moved),
            );
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Relaxed) {
                    let msg = format!("f{i}-{n}");
                    match f.ask(&msg) {
                        Some(seen) if Some(&seen) == f.first.as_ref() => {
                            ok.fetch_add(1, Relaxed);
                        }
                        Some(seen) => {
                            eprintln!("flow {i}: {msg} came through {seen:?}, not {:?}", f.first);
                            moved.fetch_add(1, Relaxed);
                        }
                        None => {
                            eprintln!("flow {i}: {msg} unanswered");
                            lost.fetch_add(1, Relaxed);
                        }
                    }
                    n += 1;
                    thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();

    let mut pids = vec![pid_of(&u.pid_file).unwrap()];
    let mut gone_after = Vec::new();
    for round in 0..2 {
        thread::sleep(Duration::from_millis(500));
        let old = *pids.last().unwrap();
        let t = std::time::Instant::now();
        sig(old, "USR2");
        let new = u.successor_of(old);
        assert!(new.is_some(), "round {round}: no new process: {}", logs());
        pids.push(new.unwrap());
        assert!(
            wait_for(Duration::from_secs(10), || !alive(old)),
            "round {round}: the old process {old} still runs: {}",
            logs()
        );
        gone_after.push(t.elapsed());
        for (s, want) in sources.iter().zip(&sticky) {
            assert_eq!(
                name_from(*s, v_tcp).as_ref(),
                Some(want),
                "round {round}: persistent client {s}"
            );
        }
    }
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    for t in traffic {
        t.join().unwrap();
    }
    let drops = kernel_udp_drops() - drops_before;
    let (ok, lost, moved) = (ok.load(Relaxed), lost.load(Relaxed), moved.load(Relaxed));
    let l = logs();
    assert_eq!(moved, 0, "answers through another server or address: {l}");
    assert!(
        lost as u64 <= drops,
        "{lost} UDP requests lost, the kernel dropped {drops}: {l}"
    );
    assert!(ok > 100, "a steady exchange: {ok}");
    assert_eq!(
        l.matches("udp_sessions=8 udp_sessions_not_taken=0").count(),
        2,
        "{l}"
    );
    assert_eq!(
        l.matches("health=2 templates=8 templates_not_taken=0")
            .count(),
        2,
        "{l}"
    );
    let _ = u.first.wait(); // the test's own child, gone (a zombie) already
    let last = *pids.last().unwrap();
    sig(last, "TERM");
    assert!(wait_for(Duration::from_secs(20), || !alive(last)));
    let gone: Vec<String> = gone_after.iter().map(|d| format!("{d:.1?}")).collect();
    record(
        "00-upgrade-state",
        "two SIGUSR2 upgrades under traffic: eight UDP flows with fixed source ports under rr over two servers (timeouts.udp 60 s; each answer 40 ms after its request, the next request 10 ms after it), and eight persistent TCP clients from their own addresses (alpha servers whose check takes 1.5 s)",
        "`crates/rvs/tests/upgrade.rs` `udp_flows_and_persistence_survive_upgrades`",
        &format!(
            "{ok} UDP answers, {lost} lost ({drops} dropped by the kernel), 0 through another server or upstream port; 8 of 8 persistent clients on their server at once after each upgrade (2 health verdicts and 8 templates taken over each time); each old process gone {} after its SIGUSR2",
            gone.join(" and ")
        ),
    );
}

/// A new binary that takes the state and dies before it serves: the old
/// process, which had stopped serving to hand its state over, serves again
/// — TCP and UDP — and a later upgrade to a real binary still works.
#[test]
fn an_upgrade_that_dies_after_taking_the_state_leaves_the_old_serving() {
    let (udp, tcp) = (udp_echo(), name_backend("a"));
    let (v_udp, v_tcp, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        "global:\n  shutdown_grace: 10s\nadmin:\n  listen: \"{admin}\"\nservices:\n  - name: dns\n    proto: udp\n    listen: \"{v_udp}\"\n    real_servers:\n      - address: \"{udp}\"\n  - name: web\n    listen: \"{v_tcp}\"\n    persistence: {{ timeout: 300s }}\n    real_servers:\n      - address: \"{tcp}\"\n"
    );
    let mut u = Upgradable::start("upgrade-dies", &config, &[]);
    let logs = u.logs_fn();
    let pid = pid_of(&u.pid_file).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(v_udp).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let ask = |msg: &[u8]| {
        let mut buf = [0u8; 64];
        client.send(msg).ok()?;
        let n = client.recv(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    };
    assert_eq!(ask(b"before").as_deref(), Some(&b"before"[..]));
    assert_eq!(common::fetch(v_tcp).as_deref(), Some("a"));

    // The impostor: asks for the state, reads it to its end, and exits.
    let real = u.bin.join("rvs.real");
    std::fs::rename(&u.exe, &real).unwrap();
    let taken = u.dir.join("taken");
    install_script(
        &u.exe,
        &format!(
            "#!/usr/bin/env python3\nimport json, os, socket\ns = socket.socket(fileno=int(os.environ['RVS_UPGRADE_STATE_FD']))\ns.send(json.dumps({{'type': 'hello', 'version': 1}}).encode())\nseen = []\nwhile True:\n    m, fds, _, _ = socket.recv_fds(s, 1 << 18, 64)\n    m = json.loads(m)\n    seen.append(m['type'])\n    if m['type'] == 'end':\n        break\nopen('{}', 'w').write(' '.join(seen))\nos._exit(4)\n",
            taken.display()
        ),
    );
    sig(pid, "USR2");
    assert!(
        wait_for(Duration::from_secs(20), || logs()
            .contains("upgrade failed")),
        "{}",
        logs()
    );
    assert_eq!(
        std::fs::read_to_string(&taken).unwrap_or_default(),
        "templates sessions end",
        "the impostor read the whole state: {}",
        logs()
    );
    assert!(logs().contains("upgrade: serving again"), "{}", logs());
    assert_eq!(pid_of(&u.pid_file), Some(pid));
    assert!(alive(pid));
    // It serves again: TCP, and UDP (the session it handed out is gone;
    // the next datagram makes a new one).
    assert_eq!(common::fetch(v_tcp).as_deref(), Some("a"), "{}", logs());
    assert_eq!(ask(b"after").as_deref(), Some(&b"after"[..]), "{}", logs());

    // A real binary again: the upgrade works.
    std::fs::rename(&real, &u.exe).unwrap();
    sig(pid, "USR2");
    assert!(u.successor_of(pid).is_some(), "{}", logs());
    assert!(
        wait_for(Duration::from_secs(10), || !alive(pid)),
        "{}",
        logs()
    );
    assert_eq!(ask(b"later").as_deref(), Some(&b"later"[..]), "{}", logs());
    assert_eq!(common::fetch(v_tcp).as_deref(), Some("a"));
    let _ = u.first.wait();
    let last = pid_of(&u.pid_file).unwrap();
    sig(last, "TERM");
    assert!(wait_for(Duration::from_secs(20), || !alive(last)));
}

/// A QUIC connection routed by its SNI to a service that shares its
/// address with a default lives on through an upgrade: its session is
/// adopted by its own service (not the address's default, whose server
/// would not know the connection), and its next request on the same
/// connection reaches the same server.
#[test]
fn quic_connections_keep_their_service_across_an_upgrade() {
    let dir = temp_dir("upgrade-quic");
    let b = common::Backends::quic(&dir, &["api", "default"]);
    let (vip, admin) = (free_port(), free_port());
    let config = format!(
        "global:\n  shutdown_grace: 30s\nadmin:\n  listen: \"{admin}\"\nservices:\n  - name: h3-api\n    proto: udp\n    listen: \"{vip}\"\n    match: {{ sni: [api.example.com] }}\n    real_servers:\n      - address: \"{}\"\n  - name: h3-default\n    proto: udp\n    listen: \"{vip}\"\n    real_servers:\n      - address: \"{}\"\n",
        b.at("api"),
        b.at("default")
    );
    let u = Upgradable::start("upgrade-quic", &config, &[]);
    let logs = u.logs_fn();
    let mut client = Command::new("python3")
        .arg(common::tool("quic_client.py"))
        .arg(vip.to_string())
        .args(["--sni", "api.example.com", "--hold"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(
        line.trim(),
        "api sni=api.example.com alpn=h3 version=1",
        "{}",
        logs()
    );
    let old = pid_of(&u.pid_file).unwrap();
    sig(old, "USR2");
    assert!(u.successor_of(old).is_some(), "no new process: {}", logs());
    assert!(
        wait_for(Duration::from_secs(10), || logs()
            .contains("udp_sessions=1 udp_sessions_not_taken=0")),
        "the session was not handed over: {}",
        logs()
    );
    // The same QUIC connection, through the new process.
    client.stdin.take().unwrap().write_all(b"\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(
        line.trim(),
        "api sni=api.example.com alpn=h3 version=1",
        "{}",
        logs()
    );
    assert!(client.wait().unwrap().success());
    let new = pid_of(&u.pid_file).unwrap();
    sig(new, "TERM");
    assert!(wait_for(Duration::from_secs(20), || !alive(new)));
}
