//! Binary upgrades on SIGUSR2 (nginx's convention), under load: a steady
//! stream of new TCP connections, ten long transfers in flight and a UDP
//! request loop go on through ten upgrades in a row — one to a binary that
//! exits at once, one with a broken configuration — with no connection
//! failed, every transfer byte-exact, every UDP request answered (but for
//! datagrams the kernel itself dropped), and one rvs left at the end.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
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

#[test]
fn ten_upgrades_under_load_drop_nothing() {
    let dir = temp_dir("upgrade");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe: PathBuf = bin.join("rvs");
    std::fs::copy(env!("CARGO_BIN_EXE_rvs"), &exe).unwrap();
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
    let cfg = dir.join("rvs.yaml");
    std::fs::write(&cfg, &config).unwrap();
    let pid_file = dir.join("rvs.pid");
    let log = dir.join("rvs.log");
    // Started by the test, whose child it is; each new process is the
    // child of the one before.
    let mut first = Command::new(&exe)
        .args(["run", "--workers", "2", "--pid-file"])
        .arg(&pid_file)
        .arg("-c")
        .arg(&cfg)
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(10), || pid_of(&pid_file).is_some()));
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

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

    let mut pids = vec![pid_of(&pid_file).unwrap()];
    let real = bin.join("rvs.real");
    for round in 0..10 {
        thread::sleep(Duration::from_millis(300));
        let current = *pids.last().unwrap();
        let failures = logs().matches("upgrade failed").count();
        match round {
            3 => {
                // A binary that exits at once.
                std::fs::rename(&exe, &real).unwrap();
                let mut f = std::fs::File::create(&exe).unwrap();
                f.write_all(b"#!/bin/sh\nexit 3\n").unwrap();
                drop(f);
                let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
                std::fs::set_permissions(&exe, mode).unwrap();
            }
            6 => std::fs::write(&cfg, "services: [").unwrap(),
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
                pid_of(&pid_file),
                Some(current),
                "the old process serves on"
            );
            assert!(alive(current));
            if round == 3 {
                std::fs::rename(&real, &exe).unwrap();
            } else {
                std::fs::write(&cfg, &config).unwrap();
            }
            continue;
        }
        assert!(
            wait_for(Duration::from_secs(20), || pid_of(&pid_file)
                .is_some_and(|p| p != current)),
            "round {round}: no new process: {}",
            logs()
        );
        pids.push(pid_of(&pid_file).unwrap());
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
    let _ = first.wait(); // the first was the test's child
    assert!(
        wait_for(Duration::from_secs(40), || running(&exe) == vec![last]),
        "left running: {:?} (wanted only {last})",
        running(&exe)
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
