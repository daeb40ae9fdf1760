//! What churn costs with a large configuration: N services of M real
//! servers each (1000 × 100 by default), served by a real proxy.
//!
//! Measured, each as the median (and p90) of repeated runs:
//!
//! 1. a file reload that changes one line: the parse (`Config::parse`, which
//!    a reload cannot skip) and the apply (`Proxy::apply`), apart;
//! 2. one service's DNS answer changing (`Proxy::apply_resolution`, what
//!    the discovery loop does), and one real server's weight flipping
//!    through the API's edit path;
//! 3. the latency of new connections through an unrelated service (connect,
//!    a request, its answer, close) with nothing changing, then while a
//!    discovery change is applied every 100 ms, then while a whole file
//!    reload is applied every 100 ms: p50, p99, max;
//! 4. resident memory before the first reload, after 20, and after they end.
//!
//! Run: `cargo bench -p rvs-proxy --bench churn` (`-- SERVICES SERVERS` to
//! change the size). It prints a table for docs/benchmarks.md.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rvs_proxy::config::Target;
use rvs_proxy::discovery::{Answer, Found};
use rvs_proxy::{Config, Options, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn config_text(services: usize, servers: usize, backend: SocketAddr, weight: u32) -> String {
    let mut y = String::with_capacity(services * servers * 40);
    y.push_str("admin: { listen: 127.0.0.1:0 }\nservices:\n");
    // Service 0 is the unrelated one the clients use: one real backend.
    y.push_str(&format!(
        "  - name: s0\n    listen: 127.0.0.1:0\n    real_servers:\n      - address: {backend}\n"
    ));
    for s in 1..services {
        y.push_str(&format!(
            "  - name: s{s}\n    listen: 127.2.{}.{}:18080\n    scheduler: mh\n    real_servers:\n",
            s >> 8,
            s & 0xff
        ));
        for r in 0..servers {
            // The last service's first server carries the line a reload changes.
            let w = if s == services - 1 && r == 0 {
                weight
            } else {
                1
            };
            y.push_str(&format!(
                "      - address: 10.{}.{}.{}:80\n        weight: {w}\n",
                s >> 8,
                s & 0xff,
                r + 1
            ));
        }
        if s == services / 2 {
            y.push_str("      - dns: churn.test:80\n");
        }
    }
    y
}

fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / 1e6
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9), at(0.99), v[v.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

async fn backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let at = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut b = [0u8; 64];
                if let Ok(n) = s.read(&mut b).await {
                    let _ = s.write_all(&b[..n]).await;
                }
            });
        }
    });
    at
}

/// Connections one after another for `d`: the latency of each.
async fn clients(vip: SocketAddr, d: Duration) -> Vec<Duration> {
    let mut out = Vec::new();
    let end = Instant::now() + d;
    while Instant::now() < end {
        let t0 = Instant::now();
        let Ok(mut s) = TcpStream::connect(vip).await else {
            continue;
        };
        let _ = s.write_all(b"ping").await;
        let mut b = [0u8; 4];
        let _ = s.read_exact(&mut b).await;
        drop(s);
        out.push(t0.elapsed());
    }
    out
}

fn found(n: u8) -> Answer {
    Answer::Servers(
        (1..=n)
            .map(|i| Found {
                addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 255, 0, i)), 80),
                weight: None,
            })
            .collect(),
    )
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let services = args.first().copied().unwrap_or(1000).max(3);
    let servers = args.get(1).copied().unwrap_or(100).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(run(services, servers));
}

async fn run(services: usize, servers: usize) {
    let be = backend().await;
    let texts = [
        config_text(services, servers, be, 1),
        config_text(services, servers, be, 2),
    ];
    println!(
        "# churn: {services} services x {servers} real servers, config {:.1} MB",
        texts[0].len() as f64 / 1e6
    );
    let rss0 = rss_mb();
    let t = Instant::now();
    let config = Config::parse(&texts[0], "churn.yaml").unwrap_or_else(|e| panic!("{e}"));
    let parse_first = t.elapsed();
    let t = Instant::now();
    let proxy = Proxy::start(
        config,
        Options {
            workers: 1,
            ..Options::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let start = t.elapsed();
    println!(
        "start: parse {} ms, apply {} ms",
        ms(parse_first),
        ms(start)
    );
    println!();
    println!("| change | median ms | p90 ms |");
    println!("|---|---:|---:|");
    let vip = proxy.local_addrs("s0")[0];
    let rss_started = rss_mb();

    // 1. Reloads changing one line.
    let mut parse = Vec::new();
    let mut apply = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let c = Config::parse(&texts[i % 2], "churn.yaml").unwrap_or_else(|e| panic!("{e}"));
        parse.push(t.elapsed());
        let t = Instant::now();
        proxy.apply(c).unwrap_or_else(|e| panic!("{e}"));
        apply.push(t.elapsed());
        // Alternate the changed line.
        let t2 = Instant::now();
        let c = Config::parse(&texts[(i + 1) % 2], "churn.yaml").unwrap_or_else(|e| panic!("{e}"));
        parse.push(t2.elapsed());
        let t2 = Instant::now();
        proxy.apply(c).unwrap_or_else(|e| panic!("{e}"));
        apply.push(t2.elapsed());
        // What the daemon's reloader does after each reload.
        rvs_proxy::memory::release();
    }
    let rss_reloaded = rss_mb();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_mb();
    let (p50, p90, _, _) = stats(parse.clone());
    let (a50, a90, _, _) = stats(apply.clone());
    println!(
        "| one-line file reload: parse | {} | {} |",
        ms(p50),
        ms(p90)
    );
    println!(
        "| one-line file reload: apply | {} | {} |",
        ms(a50),
        ms(a90)
    );

    // 2. One service's discovery change, and a weight edit.
    let mid = format!("s{}", services / 2);
    let target = Target::Dns {
        host: "churn.test".into(),
        port: 80,
    };
    let mut disc = Vec::new();
    for i in 0..200 {
        let t = Instant::now();
        let r = proxy.apply_resolution(&mid, &target, found(1 + (i % 2) as u8), Instant::now());
        disc.push(t.elapsed());
        assert!(r.is_some_and(|r| r.3), "the answer changed the service");
    }
    let (d50, d90, _, _) = stats(disc);
    println!(
        "| one service's DNS answer changes | {} | {} |",
        ms(d50),
        ms(d90)
    );
    // An API edit (rvsadm -e): one server's weight, flipped.
    let mut edits = Vec::new();
    let last = format!("s{}", services - 1);
    for i in 0..20 {
        let t = Instant::now();
        proxy
            .edit(|c| {
                if let Some(s) = c.services.iter_mut().find(|s| s.name == last) {
                    s.real_servers[0].params.weight = 1 + (i % 2);
                }
                Ok::<_, rvs_proxy::proxy::ApplyError>(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        edits.push(t.elapsed());
    }
    let (e50, e90, _, _) = stats(edits);
    println!(
        "| one real server's weight edited through the API (rvsadm -e) | {} | {} |",
        ms(e50),
        ms(e90)
    );

    // 3. Latency through s0: idle, with discovery changes, with reloads.
    let idle = clients(vip, Duration::from_secs(4)).await;
    let churn = Arc::new(AtomicBool::new(true));
    let changer = {
        let proxy = proxy.clone();
        let churn = Arc::clone(&churn);
        let mid = mid.clone();
        let target = target.clone();
        std::thread::spawn(move || {
            let mut i = 0u8;
            while churn.load(Relaxed) {
                let _ = proxy.apply_resolution(&mid, &target, found(1 + i % 2), Instant::now());
                i = i.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let during_dns = clients(vip, Duration::from_secs(4)).await;
    churn.store(false, Relaxed);
    let _ = changer.join();
    let churn = Arc::new(AtomicBool::new(true));
    let reloader = {
        let proxy = proxy.clone();
        let churn = Arc::clone(&churn);
        let texts = texts.clone();
        std::thread::spawn(move || {
            let mut i = 0;
            let mut n = 0;
            while churn.load(Relaxed) {
                let t = Instant::now();
                if let Ok(c) = Config::parse(&texts[i % 2], "churn.yaml") {
                    let _ = proxy.apply(c);
                    rvs_proxy::memory::release();
                    n += 1;
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(100).saturating_sub(t.elapsed()));
            }
            n
        })
    };
    let during_reload = clients(vip, Duration::from_secs(4)).await;
    churn.store(false, Relaxed);
    let reloads = reloader.join().unwrap_or(0);
    println!();
    println!("| connections through s0 | count | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for (what, v) in [
        ("nothing changing", idle),
        ("a DNS change every 100 ms", during_dns),
        (
            &*format!("a whole-file reload every 100 ms ({reloads} applied)"),
            during_reload,
        ),
    ] {
        let n = v.len();
        let (p50, _, p99, max) = stats(v);
        println!("| {what} | {n} | {} | {} | {} |", ms(p50), ms(p99), ms(max));
    }
    println!();
    println!(
        "resident memory: {rss0:.0} MB before the config, {rss_started:.0} MB started, {rss_reloaded:.0} MB after 40 reloads, {rss_after:.0} MB 2 s later, {:.0} MB at the end",
        rss_mb()
    );
}
