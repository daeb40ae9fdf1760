//! What a scrape of `/metrics` costs with a large table: N services of M
//! real servers each (1000 × 20 by default), no traffic, the rvs binary in
//! its own process (so that its memory is its own).
//!
//! For each way of scraping — everything (the default), everything with
//! `admin.real_server_histograms: true`, and `?scope=global&scope=service`
//! — 20 scrapes one after another: the bytes sent, the time of each
//! (median, p90), rvs's resident memory before the first, its peak during
//! them (VmHWM, reset before), and after the last.
//!
//! Run: `cargo bench -p rvs --bench scrape` (`-- SERVICES SERVERS` to
//! change the size; `-- SERVICES SERVERS BINARY` to measure another rvs
//! binary as well, an older one for an A/B: it is scraped in full only).
//! It prints a table for docs/benchmarks.md.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("a free port: {e}"))
}

fn config(services: usize, servers: usize, admin: SocketAddr, histograms: bool) -> String {
    let mut y = String::with_capacity(services * servers * 32);
    y.push_str(&format!(
        "admin:\n  listen: \"{admin}\"\n  real_server_histograms: {histograms}\nservices:\n"
    ));
    for s in 0..services {
        y.push_str(&format!(
            "  - name: s{s}\n    listen: 127.3.{}.{}:18080\n    real_servers:\n",
            s >> 8,
            s & 0xff
        ));
        for r in 0..servers {
            y.push_str(&format!(
                "      - address: 10.{}.{}.{}:80\n",
                s >> 8,
                s & 0xff,
                r + 1
            ));
        }
    }
    y
}

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One scrape: bytes received (the chunks' framing included) and time.
fn scrape(admin: SocketAddr, query: &str) -> (u64, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(admin).unwrap_or_else(|e| panic!("connect: {e}"));
    write!(
        s,
        "GET /metrics{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("send: {e}"));
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) => panic!("read: {e}"),
        }
    }
    (n, t.elapsed())
}

struct Rvs(Child);

impl Drop for Rvs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(binary: &Path, yaml: &str, admin: SocketAddr) -> Rvs {
    let dir = std::env::temp_dir().join(format!("rvs-bench-scrape-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("rvs.yaml");
    std::fs::write(&file, yaml).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let child = Command::new(binary)
        .args(["run", "--log-level", "warn", "-c"])
        .arg(&file)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
    let rvs = Rvs(child);
    let t = Instant::now();
    while TcpStream::connect(admin).is_err() {
        assert!(t.elapsed() < Duration::from_secs(120), "rvs did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    rvs
}

fn row(label: &str, binary: &Path, yaml: &str, admin: SocketAddr, query: &str) {
    let rvs = start(binary, yaml, admin);
    let pid = rvs.0.id();
    let before = status_kib(pid, "VmRSS:");
    // Resets the peak (VmHWM) to the current resident set.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..20 {
        let (n, t) = scrape(admin, query);
        bytes = n;
        times.push(t);
    }
    let peak = status_kib(pid, "VmHWM:");
    let after = status_kib(pid, "VmRSS:");
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {label} | {:.1} MB | {:.0} ms | {:.0} ms | {:.0} MB | {:.0} MB | {:.0} MB |",
        bytes as f64 / 1e6,
        ms(times[times.len() / 2]),
        ms(times[times.len() * 9 / 10]),
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        after as f64 / 1024.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let services: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let servers: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let other = args.get(2).map(std::path::PathBuf::from);
    let this = Path::new(env!("CARGO_BIN_EXE_rvs"));
    println!("{services} services × {servers} real servers, 20 scrapes each, no traffic\n");
    println!("| rvs, scrape | bytes | median | p90 | RSS before | peak during | RSS after |");
    println!("|---|---|---|---|---|---|---|");
    let admin = free_port();
    let plain = config(services, servers, admin, false);
    row("this build, all (the default)", this, &plain, admin, "");
    row(
        "this build, `?scope=global&scope=service`",
        this,
        &plain,
        admin,
        "?scope=global&scope=service",
    );
    let with = config(services, servers, admin, true);
    row(
        "this build, all, `real_server_histograms: true`",
        this,
        &with,
        admin,
        "",
    );
    if let Some(other) = other {
        // An older binary knows no real_server_histograms: its
        // configuration leaves the key out.
        let old = plain.replace("  real_server_histograms: false\n", "");
        row(
            "the binary given (an older rvs), all",
            &other,
            &old,
            admin,
            "",
        );
        row(
            "the binary given, `?scope=global&scope=service`",
            &other,
            &old,
            admin,
            "?scope=global&scope=service",
        );
    }
}
