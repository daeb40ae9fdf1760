//! Scrapes of a large table hold no more memory than a chunk: a running
//! rvs with 200 services of 20 real servers is scraped 100 times; its
//! resident memory after the last is where it was after the tenth, and its
//! peak during them stays near where it started (the whole text, several
//! MB, is never held). benches/scrape.rs measures 1000 × 20.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Running, free_port, record, rss_kib};

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One scrape, read and dropped as it comes: its size.
fn scrape(admin: std::net::SocketAddr) -> usize {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..200.min(text.len())]
    );
    assert!(text.contains("process_open_fds "), "a whole scrape");
    raw.len()
}

#[test]
fn a_hundred_scrapes_of_4000_real_servers_keep_memory_flat() {
    let admin = free_port();
    let mut yaml = format!("admin:\n  listen: \"{admin}\"\nservices:\n");
    for s in 0..200 {
        yaml.push_str(&format!(
            "  - name: s{s}\n    listen: 127.4.0.{}:18080\n    real_servers:\n",
            s + 1
        ));
        for r in 0..20 {
            yaml.push_str(&format!("      - address: 10.0.{s}.{}:80\n", r + 1));
        }
    }
    let rvs = Running::start("scrape", &yaml, admin);
    let pid = rvs.pid();
    let mut size = 0;
    for _ in 0..10 {
        size = scrape(admin);
    }
    let after_ten = rss_kib(pid);
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    for _ in 0..90 {
        scrape(admin);
    }
    let peak = status_kib(pid, "VmHWM:");
    let after_hundred = rss_kib(pid);
    assert!(size > 4 << 20, "a scrape of {size} bytes");
    assert!(
        after_hundred <= after_ten + 4 * 1024,
        "memory grows with scrapes: {after_ten} KiB after 10, {after_hundred} KiB after 100"
    );
    assert!(
        peak <= after_ten + (size as u64 / 1024) / 2,
        "a scrape holds its text: peak {peak} KiB, {after_ten} KiB before, {size} bytes a scrape"
    );
    record(
        "09-scrapes",
        "100 scrapes of /metrics, one after another, of 200 services × 20 real servers",
        "`crates/rvs/tests/scrape.rs`",
        &format!(
            "{:.1} MB a scrape; rvs {:.1} MiB after 10 scrapes, {:.1} MiB after 100, peak {:.1} MiB during the last 90",
            size as f64 / 1e6,
            after_ten as f64 / 1024.0,
            after_hundred as f64 / 1024.0,
            peak as f64 / 1024.0
        ),
    );
}
