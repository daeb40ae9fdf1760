//! Helpers shared by the binary-level tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // shared by several test crates

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A fresh, empty directory of this test process, named after `tag`.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "rvs-test-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A line in the test run's output even when the test passes (the test
/// harness captures `println!`, not writes to the standard error itself):
/// what a test found about the machine, a figure it measured.
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

pub fn rvs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rvs"))
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A backend thread that writes `name` to each connection and closes it.
pub fn name_backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = s.write_all(name.as_bytes());
        }
    });
    at
}

/// A backend that sends `n` bytes slowly (in 20 chunks, 50 ms apart),
/// then closes.
pub fn slow_backend(n: usize) -> SocketAddr {
    paced_backend(20, n / 20, Duration::from_millis(50))
}

/// A backend that sends `chunks` chunks of `size` bytes, `pause` apart, to
/// each connection, then closes.
pub fn paced_backend(chunks: usize, size: usize, pause: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            thread::spawn(move || {
                let chunk = vec![b'x'; size];
                for _ in 0..chunks {
                    if s.write_all(&chunk).is_err() {
                        return;
                    }
                    thread::sleep(pause);
                }
            });
        }
    });
    at
}

/// `podman ARGS`, run to its end.
pub fn podman<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman: {e} (tests/run installs podman and runc)"))
}

/// A podman container, removed however the test ends.
pub struct PodmanContainer(pub String);

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.0]);
    }
}

/// A command's standard output and error, as text.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn fetch(vip: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(vip).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A one-service config; each daemon of a test gets its own admin port, so
/// that parallel tests do not meet on the default 9180.
pub fn config(vip: SocketAddr, backend: SocketAddr, admin: SocketAddr) -> String {
    format!(
        "global:\n  shutdown_grace: 20s\nadmin:\n  listen: \"{admin}\"\nservices:\n  - name: web\n    listen: \"{vip}\"\n    real_servers:\n      - address: \"{backend}\"\n"
    )
}
