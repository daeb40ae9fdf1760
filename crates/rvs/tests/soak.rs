//! The soak: a running rvs under mixed TCP and UDP load, with reloads and
//! a real server whose health flaps, for `RVS_SOAK_SECS` (600 unless set);
//! rvs's memory and descriptors sampled every 5 s into `RVS_SOAK_CSV`
//! (target/soak.csv unless set), and both must stay flat. Not part of the
//! short suite: `tests/soak` runs it (see docs/reliability.md).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use common::{Running, fd_count, free_port, http_post, record, rss_kib, udp_echo};

/// A server that writes `name` to each connection, whose listener is
/// closed while `up` is false and opened again on the same port after.
fn flapping_backend(name: &'static str, up: Arc<AtomicBool>) -> SocketAddr {
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = first.local_addr().unwrap();
    thread::spawn(move || {
        let mut listener = Some(first);
        loop {
            match (&listener, up.load(Relaxed)) {
                (Some(l), true) => {
                    l.set_nonblocking(true).unwrap();
                    match l.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.write_all(name.as_bytes());
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
                (Some(_), false) => listener = None,
                (None, true) => listener = TcpListener::bind(at).ok(),
                (None, false) => thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    at
}

fn counter() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}

#[test]
#[ignore = "ten minutes: run by tests/soak"]
fn a_long_run_under_mixed_load_keeps_memory_and_descriptors_flat() {
    let secs: u64 = std::env::var("RVS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let csv = std::env::var_os("RVS_SOAK_CSV").map_or_else(
        || common::root().join("target/soak.csv"),
        std::path::PathBuf::from,
    );
    let always = Arc::new(AtomicBool::new(true));
    let c_up = Arc::new(AtomicBool::new(true));
    // c's health is checked on a port of its own, which flaps; c itself
    // serves on (a server stopped with connections in its queue resets
    // them, which is the server's doing, not rvs's).
    let (a, b, c, c_health) = (
        flapping_backend("x", Arc::clone(&always)),
        flapping_backend("x", Arc::clone(&always)),
        flapping_backend("x", Arc::clone(&always)),
        flapping_backend("health", Arc::clone(&c_up)),
    );
    let echo = udp_echo();
    let (web, dns, admin) = (free_port(), free_port(), free_port());
    let yaml = |w: u32| {
        format!(
            "global:\n  shutdown_grace: 10s\nadmin:\n  listen: \"{admin}\"\nservices:\n  - name: web\n    listen: \"{web}\"\n    scheduler: wlc\n    connect_retries: 2\n    passive: {{ failures: 1 }}\n    health_check: {{ type: tcp, delay_loop: 1s, warmup: 0s, retry: 0 }}\n    real_servers:\n      - address: \"{a}\"\n        weight: {w}\n      - address: \"{b}\"\n      - address: \"{c}\"\n        health_check: {{ type: tcp, delay_loop: 1s, warmup: 0s, retry: 0, connect_port: {} }}\n  - name: dns\n    proto: udp\n    listen: \"{dns}\"\n    timeouts: {{ udp: 5s }}\n    real_servers:\n      - address: \"{echo}\"\n",
            c_health.port()
        )
    };
    let mut rvs = Running::start("soak", &yaml(1), admin);
    let (pid, dir) = (rvs.pid(), rvs.dir.clone());
    let cfg = dir.join("rvs.yaml");

    let stop = Arc::new(AtomicBool::new(false));
    let (tcp_ok, tcp_failed, udp_ok, udp_lost) = (counter(), counter(), counter(), counter());
    let mut load = Vec::new();
    for _ in 0..2 {
        let (stop, ok, failed) = (
            Arc::clone(&stop),
            Arc::clone(&tcp_ok),
            Arc::clone(&tcp_failed),
        );
        load.push(thread::spawn(move || {
            while !stop.load(Relaxed) {
                let got = TcpStream::connect(web).and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    let mut name = String::new();
                    s.read_to_string(&mut name)?;
                    Ok(name)
                });
                match got {
                    Ok(n) if n == "x" => ok.fetch_add(1, Relaxed),
                    other => {
                        eprintln!("soak: a connection failed: {other:?}");
                        failed.fetch_add(1, Relaxed)
                    }
                };
                thread::sleep(Duration::from_millis(2));
            }
        }));
    }
    {
        let (stop, ok, lost) = (
            Arc::clone(&stop),
            Arc::clone(&udp_ok),
            Arc::clone(&udp_lost),
        );
        load.push(thread::spawn(move || {
            let mut i = 0u64;
            let mut buf = [0u8; 64];
            while !stop.load(Relaxed) {
                // A new source port now and then: sessions come and go.
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                for _ in 0..50 {
                    let msg = format!("q{i}");
                    i += 1;
                    s.send_to(msg.as_bytes(), dns).unwrap();
                    let answered = loop {
                        match s.recv_from(&mut buf) {
                            Ok((n, _)) if &buf[..n] == msg.as_bytes() => break true,
                            Ok(_) => continue,
                            Err(_) => break false,
                        }
                    };
                    if answered { &ok } else { &lost }.fetch_add(1, Relaxed);
                    thread::sleep(Duration::from_millis(5));
                }
            }
        }));
    }

    let mut out = std::fs::File::create(&csv).unwrap();
    writeln!(
        out,
        "seconds,rss_kib,fds,tcp_ok,tcp_failed,udp_ok,udp_lost,reloads,flaps"
    )
    .unwrap();
    let started = Instant::now();
    let (mut reloads, mut flaps) = (0u64, 0u64);
    let mut samples: Vec<(u64, usize)> = Vec::new();
    let mut tick = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        thread::sleep(Duration::from_secs(1));
        tick += 1;
        // A reload every 5 s (the file written whole, then asked for).
        if tick.is_multiple_of(5) {
            let tmp = dir.join("rvs.yaml.tmp");
            std::fs::write(&tmp, yaml(1 + (tick / 5 % 3) as u32)).unwrap();
            std::fs::rename(&tmp, &cfg).unwrap();
            let r = http_post(admin, "/api/v1/reload");
            assert_eq!(r.as_ref().map(|r| r.0), Some(200), "{r:?}");
            reloads += 1;
        }
        // c goes down for 10 s every 30 s.
        // (None starts in the last 10 s: each is to be seen whole.)
        if tick.is_multiple_of(30) && tick + 10 <= secs {
            c_up.store(false, Relaxed);
            flaps += 1;
        } else if tick % 30 == 10 {
            c_up.store(true, Relaxed);
        }
        if tick.is_multiple_of(5) {
            let (rss, fds) = (rss_kib(pid), fd_count(pid));
            samples.push((rss, fds));
            writeln!(
                out,
                "{},{rss},{fds},{},{},{},{},{reloads},{flaps}",
                started.elapsed().as_secs(),
                tcp_ok.load(Relaxed),
                tcp_failed.load(Relaxed),
                udp_ok.load(Relaxed),
                udp_lost.load(Relaxed)
            )
            .unwrap();
        }
    }
    stop.store(true, Relaxed);
    for t in load {
        t.join().unwrap();
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = rvs.child.wait().unwrap();
    assert!(status.success(), "{status}");

    // Each flap took c out of the table.
    let log = std::fs::read_to_string(dir.join("rvs.log")).unwrap_or_default();
    let downs = log.matches("real server down").count() as u64;
    assert!(downs >= flaps, "{flaps} flaps, {downs} times down: {log}");

    // Flat: the last quarter against the second (the first warms up).
    assert!(samples.len() >= 8, "{} samples", samples.len());
    let q = samples.len() / 4;
    let mean = |s: &[(u64, usize)]| s.iter().map(|x| x.0).sum::<u64>() / s.len() as u64;
    let (rss_early, rss_late) = (mean(&samples[q..2 * q]), mean(&samples[3 * q..]));
    let fds_early = samples[q..2 * q].iter().map(|x| x.1).max().unwrap();
    let fds_late = samples[3 * q..].iter().map(|x| x.1).max().unwrap();
    let (ok, failed) = (tcp_ok.load(Relaxed), tcp_failed.load(Relaxed));
    let (u_ok, u_lost) = (udp_ok.load(Relaxed), udp_lost.load(Relaxed));
    assert_eq!(failed, 0, "failed TCP connections");
    assert!(
        rss_late <= rss_early + rss_early / 10 + 2048,
        "memory grows: {rss_early} KiB then {rss_late} KiB"
    );
    assert!(
        fds_late <= fds_early + 16,
        "descriptors grow: {fds_early} then {fds_late}"
    );
    assert!(
        u_lost * 1000 <= u_ok,
        "{u_lost} UDP requests lost of {u_ok}"
    );
    let (min, max) = (
        samples.iter().map(|x| x.0).min().unwrap(),
        samples.iter().map(|x| x.0).max().unwrap(),
    );
    record(
        "08-soak",
        &format!(
            "the soak (`tests/soak`): {} minutes of mixed load — two clients opening TCP connections without end, a UDP client changing source port every 50 requests — with a reload every 5 s and a real server's health check failing 10 s of every 30 (it leaves the table, then comes back)",
            secs / 60
        ),
        "`crates/rvs/tests/soak.rs` (ignored in the short suite)",
        &format!(
            "{ok} TCP connections, 0 failed; {u_ok} UDP requests answered, {u_lost} not; {reloads} reloads, {flaps} flaps ({downs} times out of the table); rvs's memory {:.1}–{:.1} MiB over the run (mean {:.1} MiB in the second quarter, {:.1} in the last), descriptors at most {fds_early} then {fds_late}; samples every 5 s in `docs/soak.csv`",
            min as f64 / 1024.0,
            max as f64 / 1024.0,
            rss_early as f64 / 1024.0,
            rss_late as f64 / 1024.0
        ),
    );
}
