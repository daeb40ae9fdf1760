//! Faults around rvs: a real server killed in the middle of transfers
//! (the proxy in this process, to see its counts; crates/rvs/tests/faults.rs
//! has the faults seen from outside a running rvs).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A real server in its own process that streams `x` to every client until
/// it is killed.
const STREAMER: &str = r#"
import socket, threading, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
def serve(c):
    try:
        while True:
            c.sendall(b"x" * 4096)
            threading.Event().wait(0.01)
    except OSError:
        pass
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_server_killed_mid_transfer_releases_everything() {
    let mut victim = Command::new("python3")
        .args(["-c", STREAMER])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (tests/run installs it)");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(victim.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let vaddr: std::net::SocketAddr = format!("127.0.0.1:{}", line.trim()).parse().unwrap();
    let ok = name_backend("ok").await;
    // rr over [victim, ok] (the list's head is the file's last): passive
    // checking ejects a server at its first failed connect.
    let p = proxy(&format!(
        "services:\n  - name: s\n    listen: 127.0.0.1:0\n    scheduler: rr\n    connect_retries: 1\n    passive: {{ failures: 1 }}\n    real_servers:\n      - address: \"{ok}\"\n      - address: \"{vaddr}\"\n"
    ));
    let v = vip(&p, "s");
    let svc = p.service("s").unwrap();
    let before = open_fds();
    let rss_before = rss_kib();
    // Five transfers on the victim (rr alternates with `ok`, which closes).
    let mut transfers = Vec::new();
    while transfers.len() < 5 {
        let mut c = TcpStream::connect(v).await.unwrap();
        let mut first = [0u8; 2];
        c.read_exact(&mut first).await.unwrap();
        if &first == b"xx" {
            transfers.push(c);
        }
    }
    let d = svc.scheduler().dest(vaddr).unwrap();
    assert_eq!(d.active_conns(), 5);
    victim.kill().unwrap();
    victim.wait().unwrap();
    let killed = std::time::Instant::now();
    // Each client sees its stream end (a close or a reset), not a hang.
    for mut c in transfers {
        let mut rest = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest)).await;
        assert!(r.is_ok(), "a client of the killed server hangs");
        assert!(rest.iter().all(|b| *b == b'x'), "only the server's bytes");
    }
    assert!(
        eventually(Duration::from_secs(5), || d.active_conns() == 0
            && d.inactive_conns() == 0)
        .await,
        "the counts are released: {} {}",
        d.active_conns(),
        d.inactive_conns()
    );
    let released = killed.elapsed();
    // New connections go elsewhere at once: the first connect to the dead
    // server fails, is retried on `ok`, and ejects it.
    for _ in 0..10 {
        assert_eq!(fetch_name(v).await, "ok");
    }
    let health = svc.health();
    assert!(!health[&vaddr].up, "ejected by passive checking");
    // Nothing leaks: the process holds the descriptors it held before.
    assert!(
        eventually(Duration::from_secs(5), || open_fds() <= before).await,
        "descriptors: {} before, {} after",
        before,
        open_fds()
    );
    // Nor memory (this process holds the proxy and the clients: what the
    // transfers took is given back).
    let rss_after = rss_kib();
    assert!(
        rss_after < rss_before + 16 * 1024,
        "memory: {rss_before} KiB before, {rss_after} KiB after"
    );
    record(
        "01-killed-server",
        "a real server (its own process) killed with SIGKILL while five transfers stream from it",
        "`crates/proxy/tests/faults.rs` `a_real_server_killed_mid_transfer_releases_everything`",
        &format!(
            "every client's stream ended (close or reset) with only the server's bytes; the server's counts back to 0 within {:.2} s; the next 10 connections all served by the other server (the first connect to the dead one failed, was retried and ejected it); descriptors {before} → {}, memory {:.1} → {:.1} MiB (the test's process, proxy and clients)",
            released.as_secs_f64(),
            open_fds(),
            rss_before as f64 / 1024.0,
            rss_after as f64 / 1024.0
        ),
    );
}
