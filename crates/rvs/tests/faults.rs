//! Faults around a running rvs (the binary, its own process, so that its
//! memory and descriptors are its own): a real server black-holed in a
//! network namespace, peers that never read, a UDP flood from tens of
//! thousands of source ports, a storm of reloads and a SIGTERM drain under
//! load. Each test records what it observed (docs/reliability.md's table,
//! written by tests/reliability).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    NAME_SERVER, Netns, Running, connection_stream, fd_count, free_port, http_post,
    kernel_udp_drops, median_p99, name_backend, record, rss_kib, sample, signal, spawn_ready,
    udp_echo, wait_for,
};

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The byte at `i` of every patterned stream: a corruption, a loss or a
/// duplication anywhere shows at the first byte out of place.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// A real server that sends `total` patterned bytes to each connection,
/// `chunk` at a time, `pause` apart, then closes.
fn pattern_backend(total: u64, chunk: usize, pause: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            thread::spawn(move || {
                let mut sent = 0u64;
                let mut buf = vec![0u8; chunk];
                while sent < total {
                    let n = chunk.min(usize::try_from(total - sent).unwrap());
                    for (j, b) in buf[..n].iter_mut().enumerate() {
                        *b = pattern(sent + j as u64);
                    }
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    sent += n as u64;
                    thread::sleep(pause);
                }
            });
        }
    });
    at
}

/// `n` clients each reading a patterned stream from `vip` to its end.
fn start_transfers(n: usize, vip: SocketAddr) -> Vec<thread::JoinHandle<Result<u64, String>>> {
    (0..n)
        .map(|_| {
            thread::spawn(move || {
                let mut s = TcpStream::connect(vip).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                read_pattern(&mut s)
            })
        })
        .collect()
}

/// Waits for the transfers: each must have read `total` bytes, every one
/// in place. Returns how many did (all, or the test fails).
fn exact_transfers(transfers: Vec<thread::JoinHandle<Result<u64, String>>>, total: u64) -> usize {
    let mut exact = 0;
    for t in transfers {
        match t.join().unwrap() {
            Ok(n) if n == total => exact += 1,
            other => panic!("a transfer: {other:?} of {total} bytes"),
        }
    }
    exact
}

/// Reads a patterned stream to its end: `Ok(bytes)` when every byte is in
/// place, else where it went wrong.
fn read_pattern(s: &mut TcpStream) -> Result<u64, String> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Ok(at),
            Ok(n) => {
                for b in &buf[..n] {
                    if *b != pattern(at) {
                        return Err(format!("byte {at} corrupted"));
                    }
                    at += 1;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("after {at} bytes: {e}")),
        }
    }
}

/// A client for the namespace: N connections one after another, each line
/// the name read (or `fail`) and the time it took.
const CLIENT: &str = r#"
import socket, sys, time
for _ in range(int(sys.argv[3])):
    t = time.monotonic()
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
        data = b""
        while True:
            b = c.recv(100)
            if not b:
                break
            data += b
        c.close()
        name = data.decode() or "empty"
    except OSError as e:
        name = "fail"
    print(name, (time.monotonic() - t) * 1000, flush=True)
"#;

/// (name, milliseconds) of each of `n` connections to the namespace's VIP.
fn ns_requests(ns: &Netns, n: usize) -> Vec<(String, f64)> {
    let out = ns.must(
        &["python3", "-c", CLIENT, "127.0.0.1", "80", &n.to_string()],
        true,
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, ms) = l.split_once(' ')?;
            Some((name.to_owned(), ms.parse().ok()?))
        })
        .collect()
}

/// A real server's entry in the namespace's admin API: whether it is in
/// the scheduler's table.
fn in_table(ns: &Netns, server: &str) -> Option<bool> {
    let out = ns
        .cmd(&[
            "curl",
            "-s",
            "--max-time",
            "3",
            "http://127.0.0.1:9180/api/v1/services/bh",
        ])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["real_servers"]
        .as_array()?
        .iter()
        .find(|r| r["address"] == server)?["in_table"]
        .as_bool()
}

/// A real server whose packets vanish (iptables drops its port in a
/// network namespace: no reset, no ICMP, the connect just waits): the
/// connect times out, the client is served by the other server, the black
/// hole is ejected; when the path returns, passive checking's probe puts
/// it back and traffic reaches it again.
#[test]
fn a_black_holed_server_is_timed_out_ejected_and_recovered() {
    let ns = Netns::new("bhole");
    let mut servers = Vec::new();
    for (ip, name) in [("127.0.0.2", "a"), ("127.0.0.3", "b")] {
        servers.push(spawn_ready(&mut ns.cmd(&[
            "python3",
            "-c",
            NAME_SERVER,
            ip,
            "8000",
            name,
        ])));
    }
    let (rvs, log) = ns.rvs(
        "bhole",
        "admin:\n  listen: 127.0.0.1:9180\nservices:\n  - name: bh\n    listen: 127.0.0.1:80\n    scheduler: rr\n    connect_retries: 1\n    passive: { failures: 1 }\n    timeouts: { connect: 1s }\n    real_servers:\n      - address: 127.0.0.2:8000\n      - address: 127.0.0.3:8000\n",
    );
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(20), || in_table(&ns, "127.0.0.2:8000")
            == Some(true)),
        "{}",
        logs()
    );
    let pid = rvs.0.id();
    let (rss0, fds0) = (rss_kib(pid), fd_count(pid));
    let before = ns_requests(&ns, 10);
    assert!(before.iter().any(|(n, _)| n == "a") && before.iter().any(|(n, _)| n == "b"));

    let black_holed: SocketAddr = "127.0.0.2:8000".parse().unwrap();
    ns.drop_tcp_to("-I", black_holed);
    let during = ns_requests(&ns, 20);
    let failed = during.iter().filter(|(n, _)| n != "b").count();
    assert_eq!(failed, 0, "every request served by b: {during:?}");
    let slowest = during.iter().map(|(_, ms)| *ms).fold(0.0, f64::max);
    assert!(
        slowest >= 900.0,
        "one request met the black hole (the 1 s connect timeout): {during:?}"
    );
    assert!(slowest < 5000.0, "{during:?}");
    assert_eq!(
        in_table(&ns, "127.0.0.2:8000"),
        Some(false),
        "ejected: {}",
        logs()
    );

    ns.drop_tcp_to("-D", black_holed);
    let restored = Instant::now();
    assert!(
        wait_for(Duration::from_secs(20), || in_table(&ns, "127.0.0.2:8000")
            == Some(true)),
        "back in the table once the path returns: {}",
        logs()
    );
    let recovered = restored.elapsed();
    let after = ns_requests(&ns, 10);
    assert!(after.iter().all(|(n, _)| n == "a" || n == "b"), "{after:?}");
    assert!(after.iter().any(|(n, _)| n == "a"), "{after:?}");
    let (rss1, fds1) = (rss_kib(pid), fd_count(pid));
    assert!(fds1 <= fds0 + 2, "descriptors: {fds0} then {fds1}");
    record(
        "02-black-hole",
        "a real server black-holed (its port dropped by iptables in a network namespace: no reset, no ICMP), then the path restored",
        "`crates/rvs/tests/faults.rs` `a_black_holed_server_is_timed_out_ejected_and_recovered`",
        &format!(
            "0 of 20 requests failed while the path was black-holed; the one that met it took {slowest:.0} ms (the 1 s connect timeout, then the other server), the server was ejected; path restored: back in the table after {:.1} s and serving; rvs {:.1} → {:.1} MiB, {fds0} → {fds1} fds",
            recovered.as_secs_f64(),
            mib(rss0),
            mib(rss1)
        ),
    );
}

/// Clients that never read a server's stream and servers that never read
/// a client's: rvs holds a bounded amount per connection (it stops reading
/// one side when the other does not take), closes them at the idle
/// timeout, and other clients' latency is not held up meanwhile.
#[test]
fn peers_that_never_read_cost_bounded_memory_and_are_timed_out() {
    const STUCK: usize = 40;
    // A server that writes to every connection for as long as it can.
    let firehose = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut s = s;
                thread::spawn(move || {
                    let chunk = vec![b'f'; 64 * 1024];
                    while s.write_all(&chunk).is_ok() {}
                });
            }
        });
        at
    };
    // A server that accepts and never reads.
    let (sink, held) = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        let held = Arc::new(std::sync::Mutex::new(Vec::new()));
        let h = Arc::clone(&held);
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                h.lock().unwrap().push(s);
            }
        });
        (at, held)
    };
    let quick = name_backend("quick");
    let (v_fire, v_sink, v_quick, admin) = (free_port(), free_port(), free_port(), free_port());
    let d = Running::start(
        "neverread",
        &format!(
            "admin:\n  listen: \"{admin}\"\nservices:\n  - name: fire\n    listen: \"{v_fire}\"\n    timeouts: {{ tcp: 3s }}\n    real_servers:\n      - address: \"{firehose}\"\n  - name: sink\n    listen: \"{v_sink}\"\n    timeouts: {{ tcp: 3s }}\n    real_servers:\n      - address: \"{sink}\"\n  - name: quick\n    listen: \"{v_quick}\"\n    real_servers:\n      - address: \"{quick}\"\n"
        ),
        admin,
    );
    let probe = |n: usize| {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            let got = common::fetch(v_quick);
            assert_eq!(got.as_deref(), Some("quick"));
            v.push(t.elapsed());
        }
        median_p99(&mut v)
    };
    let (med0, p99_0) = probe(200);
    let (rss0, fds0) = (rss_kib(d.pid()), fd_count(d.pid()));

    // Clients of the firehose that never read; clients of the sink that
    // write until they cannot (their writes block, then fail when rvs
    // closes them).
    let readers: Vec<TcpStream> = (0..STUCK)
        .map(|_| TcpStream::connect(v_fire).unwrap())
        .collect();
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<thread::JoinHandle<Instant>> = (0..STUCK)
        .map(|_| {
            let written = Arc::clone(&written);
            thread::spawn(move || {
                let mut s = TcpStream::connect(v_sink).unwrap();
                let chunk = vec![b's'; 16 * 1024];
                while let Ok(n) = s.write(&chunk) {
                    if n == 0 {
                        break;
                    }
                    written.fetch_add(n as u64, Relaxed);
                }
                Instant::now()
            })
        })
        .collect();
    let stuck_at = Instant::now();
    // Every buffer on the way fills; then nothing moves.
    thread::sleep(Duration::from_millis(1500));
    let rss_stuck = rss_kib(d.pid());
    let (med1, p99_1) = probe(200);
    let per_conn_kib = rss_stuck.saturating_sub(rss0) / (2 * STUCK as u64);
    assert!(
        per_conn_kib < 1024,
        "rvs holds {per_conn_kib} KiB per stuck connection ({rss0} → {rss_stuck} KiB)"
    );
    assert!(
        p99_1 < Duration::from_millis(500),
        "other clients held up: p99 {p99_1:?} (before: {p99_0:?})"
    );
    // The idle timeout (3 s without traffic) closes them all.
    for h in writers {
        let ended = h.join().unwrap();
        let after = ended.duration_since(stuck_at);
        assert!(
            after < Duration::from_secs(20),
            "a writer closed after {after:?}"
        );
    }
    // The readers' connections are closed by rvs before they read: a read
    // would move the stream again (the firehose never ends), so wait for
    // rvs to have closed every one first.
    assert!(
        wait_for(Duration::from_secs(20), || sample(
            &d.scrape(),
            "rvs_service_active_connections{service=\"fire\",proto=\"tcp\"}"
        ) == Some(0.0)),
        "{}",
        d.scrape()
    );
    for mut r in readers {
        r.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut sink = vec![0u8; 1 << 20];
        loop {
            match r.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let took = stuck_at.elapsed();
        assert!(
            took < Duration::from_secs(25),
            "a reader cut after {took:?}"
        );
    }
    let closed_after = stuck_at.elapsed();
    drop(held);
    assert!(
        wait_for(Duration::from_secs(10), || {
            let m = d.scrape();
            ["fire", "sink"].iter().all(|s| {
                sample(
                    &m,
                    &format!("rvs_service_active_connections{{service=\"{s}\",proto=\"tcp\"}}"),
                ) == Some(0.0)
            })
        }),
        "{}",
        d.scrape()
    );
    let fds1 = fd_count(d.pid());
    assert!(
        wait_for(Duration::from_secs(10), || fd_count(d.pid()) <= fds0 + 2),
        "descriptors: {fds0} before, {fds1} after"
    );
    let rss1 = rss_kib(d.pid());
    record(
        "03-never-read",
        "40 clients that never read a server that writes without end, 40 clients that write to a server that never reads (`timeouts.tcp: 3s`)",
        "`crates/rvs/tests/faults.rs` `peers_that_never_read_cost_bounded_memory_and_are_timed_out`",
        &format!(
            "rvs held {per_conn_kib} KiB per stuck connection ({:.1} → {:.1} MiB), the clients wrote {:.1} MiB (into the kernel's socket buffers on the way) before their writes blocked; all 80 closed by the idle timeout within {:.1} s; other clients' latency: median {} → {}, p99 {} → {} (200 requests each); fds {fds0} → {}, RSS after {:.1} MiB",
            mib(rss0),
            mib(rss_stuck),
            written.load(Relaxed) as f64 / 1048576.0,
            closed_after.as_secs_f64(),
            ms(med0),
            ms(med1),
            ms(p99_0),
            ms(p99_1),
            fd_count(d.pid()),
            mib(rss1)
        ),
    );
}

/// A flood of datagrams, each from a new source port (tens of thousands of
/// them, over four source addresses): the session table holds at
/// `udp.max_sessions` (the idlest evicted), rvs's memory and descriptors
/// stay flat, and a client in the middle of it is still answered.
#[test]
fn a_udp_flood_from_many_ports_holds_the_table_at_its_bound() {
    const MAX: usize = 2000;
    const FLOOD: usize = 30_000;
    let echo = udp_echo();
    let (vip, admin) = (free_port(), free_port());
    let d = Running::start(
        "udpflood",
        &format!(
            "admin:\n  listen: \"{admin}\"\nservices:\n  - name: dns\n    proto: udp\n    listen: \"{vip}\"\n    timeouts: {{ udp: 120s }}\n    udp: {{ max_sessions: {MAX} }}\n    real_servers:\n      - address: \"{echo}\"\n"
        ),
        admin,
    );
    let (rss0, fds0) = (rss_kib(d.pid()), fd_count(d.pid()));
    // The legitimate client: one source port, a request every 10 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let drops0 = kernel_udp_drops();
    let client = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let (mut sent, mut answered) = (0u64, 0u64);
            let mut buf = [0u8; 64];
            while !stop.load(Relaxed) {
                let msg = format!("legit-{sent}");
                s.send_to(msg.as_bytes(), vip).unwrap();
                sent += 1;
                // Answers to earlier requests may come late: read until
                // this one's (or the timeout).
                while let Ok((n, _)) = s.recv_from(&mut buf) {
                    if &buf[..n] == msg.as_bytes() {
                        answered += 1;
                        break;
                    }
                }
                thread::sleep(Duration::from_millis(10));
            }
            (sent, answered)
        })
    };
    let flood = |from: usize, to: usize| {
        for i in from..to {
            let src = format!("127.0.0.{}:0", 2 + i % 4);
            if let Ok(s) = UdpSocket::bind(src.as_str()) {
                let _ = s.send_to(b"flood", vip);
            }
            // In bursts: rvs is to see most of them, not the kernel drop
            // them (it drops what overflows rvs's receive buffer).
            if i % 100 == 99 {
                thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let started = Instant::now();
    flood(0, FLOOD / 2);
    thread::sleep(Duration::from_millis(500));
    let (rss_half, fds_half) = (rss_kib(d.pid()), fd_count(d.pid()));
    flood(FLOOD / 2, FLOOD);
    let flood_took = started.elapsed();
    thread::sleep(Duration::from_millis(500));
    let (rss_full, fds_full) = (rss_kib(d.pid()), fd_count(d.pid()));
    stop.store(true, Relaxed);
    let (sent, answered) = client.join().unwrap();
    let drops = kernel_udp_drops() - drops0;
    let m = d.scrape();
    let sessions = sample(&m, "rvs_udp_sessions{service=\"dns\"}").unwrap();
    let evicted = sample(&m, "rvs_udp_session_evictions_total{service=\"dns\"}").unwrap();
    let created = sample(
        &m,
        "rvs_service_connections_total{service=\"dns\",proto=\"udp\"}",
    )
    .unwrap();
    assert!(sessions <= MAX as f64, "{sessions} sessions");
    assert!(
        created >= (5 * MAX) as f64,
        "the flood reached rvs: {created} sessions made of {FLOOD} datagrams"
    );
    assert_eq!(
        evicted,
        created - sessions,
        "every session beyond the bound evicted one"
    );
    // One upstream socket per session, and nothing else grows.
    assert!(
        fds_full <= fds0 + MAX + 16,
        "descriptors: {fds0} at rest, {fds_full} after the flood"
    );
    assert!(
        rss_full <= rss_half + 8 * 1024,
        "memory grows with the flood: {rss_half} KiB at half, {rss_full} KiB at its end"
    );
    assert!(
        answered + drops >= sent && answered * 2 >= sent,
        "the legitimate client: {answered} of {sent} answered, {drops} datagrams dropped by the kernel"
    );
    record(
        "05-udp-flood",
        "a UDP flood: 30,000 datagrams, each from a new source port (four source addresses), `udp.max_sessions: 2000`, and a client sending a request every 10 ms",
        "`crates/rvs/tests/faults.rs` `a_udp_flood_from_many_ports_holds_the_table_at_its_bound`",
        &format!(
            "the flood took {:.1} s; {created} sessions made, {sessions} at its end (the bound), {evicted} evicted; rvs {:.1} MiB at rest, {:.1} at half the flood, {:.1} at its end; fds {fds0} → {fds_half} → {fds_full}; the legitimate client: {answered} of {sent} requests answered ({drops} dropped by the kernel)",
            flood_took.as_secs_f64(),
            mib(rss0),
            mib(rss_half),
            mib(rss_full)
        ),
    );
}

/// A UDP flood from thousands of source ports under a low descriptor
/// limit (soft and hard 512, which rvs cannot raise): each session holds
/// a socket, so unbounded sessions would take every descriptor — TCP
/// accepts, the admin API, reloads and new UDP clients would all fail for
/// the whole UDP timeout. rvs keeps its reserve: the flood's idlest
/// sessions are evicted, counted and logged, and everyone else is served.
#[test]
fn a_udp_flood_under_a_low_descriptor_limit_leaves_everyone_else_served() {
    const FLOOD: usize = 3000;
    let echo = udp_echo();
    let web = name_backend("web");
    let (vip, dns, admin) = (free_port(), free_port(), free_port());
    let yaml = |extra: &str| {
        format!(
            "admin:\n  listen: \"{admin}\"\nservices:\n  - name: web\n    listen: \"{vip}\"\n    real_servers:\n      - address: \"{web}\"\n  - name: dns\n    proto: udp\n    listen: \"{dns}\"\n    real_servers:\n      - address: \"{echo}\"\n{extra}"
        )
    };
    let d = Running::start_limited("fdflood", &yaml(""), admin, "-n 512");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", d.pid())).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 512 ")),
        "{limits}"
    );
    let started = Instant::now();
    for i in 0..FLOOD {
        if let Ok(s) = UdpSocket::bind(format!("127.0.0.{}:0", 2 + i % 4).as_str()) {
            let _ = s.send_to(b"flood", dns);
        }
        if i % 100 == 99 {
            thread::sleep(Duration::from_millis(20));
        }
    }
    let flood_took = started.elapsed();
    thread::sleep(Duration::from_millis(300));
    let fds = fd_count(d.pid());
    assert!(fds < 512, "{fds} descriptors open");
    // TCP, the admin API, a reload, a new UDP client: all served.
    assert_eq!(common::fetch(vip).as_deref(), Some("web"), "{}", d.log());
    let (status, _) = common::http_get(admin, "/api/v1/services").unwrap();
    assert_eq!(status, 200);
    let m = d.scrape();
    let evicted = sample(&m, "rvs_udp_session_evictions_total{service=\"dns\"}").unwrap();
    let sessions = sample(&m, "rvs_udp_sessions{service=\"dns\"}").unwrap();
    let plan = sample(&m, "rvs_descriptors_budget{part=\"udp_sessions\"}").unwrap();
    assert!(
        evicted > 0.0 && sessions <= plan,
        "{evicted} evicted, {sessions} of {plan}"
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    client.send_to(b"legit", dns).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = client
        .recv_from(&mut buf)
        .expect("a new UDP client is answered at once");
    assert_eq!(&buf[..n], b"legit");
    let extra = free_port();
    std::fs::write(
        d.dir.join("rvs.yaml"),
        yaml(&format!("  - name: extra\n    listen: \"{extra}\"\n    real_servers:\n      - address: \"{web}\"\n")),
    )
    .unwrap();
    signal(&d.child, "HUP");
    assert!(
        wait_for(Duration::from_secs(10), || common::fetch(extra).as_deref()
            == Some("web")),
        "the reload applied: {}",
        d.log()
    );
    assert!(
        d.log()
            .contains("the idlest session was evicted for a new one"),
        "the eviction is logged: {}",
        d.log()
    );
    record(
        "05b-udp-flood-low-limit",
        "a UDP flood: 3,000 datagrams from new source ports, under a descriptor limit of 512 (soft and hard, so rvs cannot raise it)",
        "`crates/rvs/tests/faults.rs` `a_udp_flood_under_a_low_descriptor_limit_leaves_everyone_else_served`",
        &format!(
            "the flood took {:.1} s; sessions held at {sessions} of a budget of {plan} ({evicted} evicted, the idlest first); {fds} descriptors open of 512; a TCP connection, the admin API, a reload adding a listener and a new UDP client all served",
            flood_took.as_secs_f64()
        ),
    );

    // A low soft limit alone is raised to the hard limit at start.
    let (vip2, admin2) = (free_port(), free_port());
    let raised = Running::start_limited(
        "fdraise",
        &common::config(vip2, web, admin2),
        admin2,
        "-Sn 256",
    );
    let hard = hard_limit_here();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", raised.pid())).unwrap();
    let soft: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(Some(soft), hard, "{limits}");
}

/// This process's hard descriptor limit (what a child inherits).
fn hard_limit_here() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse().ok())
}

/// Three hundred reloads (by the admin API, every third of a broken file)
/// while transfers stream and new connections arrive without pause: every
/// good file applies, every broken one is refused, no connection fails,
/// every byte arrives in place.
#[test]
fn a_reload_storm_under_load_drops_nothing() {
    const RELOADS: usize = 300;
    const TRANSFERS: usize = 10;
    const TOTAL: u64 = 2 << 20;
    let long = pattern_backend(TOTAL, 32 * 1024, Duration::from_millis(20));
    let (a, b) = (name_backend("x"), name_backend("x"));
    let (v_long, v_short, v_extra, admin) = (free_port(), free_port(), free_port(), free_port());
    let good = |i: usize| {
        let (sched, w) = if i.is_multiple_of(2) {
            ("rr", 1)
        } else {
            ("wlc", 3)
        };
        let extra = if i % 4 == 1 {
            format!(
                "  - name: extra\n    listen: \"{v_extra}\"\n    real_servers:\n      - address: \"{a}\"\n"
            )
        } else {
            String::new()
        };
        format!(
            "global:\n  shutdown_grace: 30s\nadmin:\n  listen: \"{admin}\"\nservices:\n  - name: long\n    listen: \"{v_long}\"\n    scheduler: {sched}\n    real_servers:\n      - address: \"{long}\"\n        weight: {w}\n  - name: short\n    listen: \"{v_short}\"\n    scheduler: {sched}\n    real_servers:\n      - address: \"{a}\"\n        weight: {w}\n      - address: \"{b}\"\n{extra}"
        )
    };
    let d = Running::start("storm", &good(0), admin);
    let (rss0, fds0) = (rss_kib(d.pid()), fd_count(d.pid()));
    let transfers = start_transfers(TRANSFERS, v_long);
    let stop = Arc::new(AtomicBool::new(false));
    let (stream, ok, failed) = connection_stream(v_short, "x", Duration::ZERO, &stop);
    let broken = [
        "services: [",
        "services:\n  - name: long\n    listen: 127.0.0.1:1\n    scheduler: bogus\n",
        "global:\n  shutdown_grace: forever\n",
    ];
    let (mut applied, mut refused) = (0, 0);
    let started = Instant::now();
    for i in 1..=RELOADS {
        let text = if i.is_multiple_of(3) {
            broken[(i / 3) % broken.len()].to_owned()
        } else {
            good(i)
        };
        std::fs::write(d.dir.join("rvs.yaml"), &text).unwrap();
        match http_post(admin, "/api/v1/reload") {
            Some((200, _)) => applied += 1,
            Some((422, _)) => refused += 1,
            other => panic!("reload {i}: {other:?}"),
        }
    }
    let storm = started.elapsed();
    // The extra service follows the file: present after the last good
    // file that had it, gone after one without.
    std::fs::write(d.dir.join("rvs.yaml"), good(1)).unwrap();
    assert_eq!(http_post(admin, "/api/v1/reload").map(|r| r.0), Some(200));
    assert_eq!(common::fetch(v_extra).as_deref(), Some("x"));
    stop.store(true, Relaxed);
    stream.join().unwrap();
    let exact = exact_transfers(transfers, TOTAL);
    assert_eq!(failed.load(Relaxed), 0, "failed connections");
    assert_eq!((applied, refused), (RELOADS - RELOADS / 3, RELOADS / 3));
    let (rss1, fds1) = (rss_kib(d.pid()), fd_count(d.pid()));
    assert!(
        wait_for(Duration::from_secs(10), || fd_count(d.pid()) <= fds0 + 4),
        "descriptors: {fds0} before, {fds1} after"
    );
    record(
        "06-reload-storm",
        "300 reloads through the admin API, one after another (every third of a broken file; the good ones change schedulers and weights and add and remove a service), under ten 2 MiB transfers and a stream of new connections",
        "`crates/rvs/tests/faults.rs` `a_reload_storm_under_load_drops_nothing`",
        &format!(
            "{applied} applied, {refused} refused, in {:.1} s; {} connections, 0 failed; {exact} of {TRANSFERS} transfers byte-exact; rvs {:.1} → {:.1} MiB, {fds0} → {fds1} fds",
            storm.as_secs_f64(),
            ok.load(Relaxed),
            mib(rss0),
            mib(rss1)
        ),
    );
}

/// SIGTERM while transfers stream and connections arrive: the listeners
/// close, every open connection finishes byte-exact within the grace, and
/// rvs exits 0 once the last one has.
#[test]
fn a_sigterm_drain_under_load_drops_nothing() {
    const TRANSFERS: usize = 10;
    const TOTAL: u64 = 1 << 20;
    // 64 chunks, 50 ms apart: about 3 s each.
    let long = pattern_backend(TOTAL, 16 * 1024, Duration::from_millis(50));
    let short = name_backend("x");
    let (v_long, v_short, admin) = (free_port(), free_port(), free_port());
    let mut d = Running::start(
        "drain",
        &format!(
            "global:\n  shutdown_grace: 30s\nadmin:\n  listen: \"{admin}\"\nservices:\n  - name: long\n    listen: \"{v_long}\"\n    real_servers:\n      - address: \"{long}\"\n  - name: short\n    listen: \"{v_short}\"\n    real_servers:\n      - address: \"{short}\"\n"
        ),
        admin,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (stream, ok, failed) = connection_stream(v_short, "x", Duration::ZERO, &stop);
    let transfers = start_transfers(TRANSFERS, v_long);
    thread::sleep(Duration::from_millis(800));
    stop.store(true, Relaxed);
    stream.join().unwrap();
    assert_eq!(failed.load(Relaxed), 0, "failed before the signal");
    let term = Instant::now();
    signal(&d.child, "TERM");
    // The listeners close at once.
    assert!(
        wait_for(Duration::from_secs(5), || TcpStream::connect(v_short)
            .is_err()),
        "new connections refused once draining"
    );
    let exact = exact_transfers(transfers, TOTAL);
    let finished = term.elapsed();
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(term.elapsed() < Duration::from_secs(40), "rvs still runs");
        thread::sleep(Duration::from_millis(20));
    };
    let exited = term.elapsed();
    assert!(status.success(), "{status}: {}", d.log());
    assert!(d.log().contains("all connections closed"), "{}", d.log());
    record(
        "07-sigterm-drain",
        "SIGTERM under load: ten 1 MiB transfers (3 s each) in flight and a stream of new connections",
        "`crates/rvs/tests/faults.rs` `a_sigterm_drain_under_load_drops_nothing`",
        &format!(
            "{} connections before the signal, 0 failed; the listeners closed at once; {exact} of {TRANSFERS} transfers finished byte-exact {:.1} s after the signal; rvs exited 0 {:.1} s after it (the last transfer's end, not the 30 s grace)",
            ok.load(Relaxed),
            finished.as_secs_f64(),
            exited.as_secs_f64()
        ),
    );
}
