//! Retries on refused and black-holed servers; thresholds, connection
//! limits and ACLs that refuse cleanly; idle timeouts (`tcp`, `tcpfin`);
//! PROXY protocol bytes as the backend receives them.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use rvs_proxy::Options;
use rvs_proxy::stats::Refusal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn yaml(extra: &str, servers: &[SocketAddr]) -> String {
    let mut y =
        format!("services:\n  - name: s\n    listen: 127.0.0.1:0\n{extra}    real_servers:\n");
    for a in servers {
        y.push_str(&format!("      - address: \"{a}\"\n"));
    }
    y
}

/// An address where nothing listens: connects are refused.
async fn refused_address() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A listener whose accept queue is full and never drained: further SYNs
/// are dropped, so connects hang (a black hole, on loopback).
async fn black_hole() -> (
    SocketAddr,
    Vec<tokio::task::JoinHandle<()>>,
    socket2::Socket,
) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        fillers.push(tokio::spawn(async move {
            if let Ok(Ok(c)) =
                tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(addr)).await
            {
                tokio::time::sleep(Duration::from_secs(30)).await;
                drop(c);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    (addr, fillers, s)
}

/// A refused client gets no bytes and no hang: end of stream or a reset —
/// which may arrive before the client's connect() has returned.
async fn assert_refused(s: std::io::Result<TcpStream>) {
    let mut s = match s {
        Ok(s) => s,
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
            return;
        }
    };
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "expected a refusal, got {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_server_is_retried_on_another() {
    let dead = refused_address().await;
    let alive = name_backend("alive").await;
    let p = proxy(&yaml("    scheduler: rr\n", &[alive, dead]));
    let v = vip(&p, "s");
    for _ in 0..6 {
        assert_eq!(fetch_name(v).await, "alive");
    }
    let svc = p.service("s").unwrap();
    // The list is [dead, alive]. Each retry's pick moves rr's pointer to
    // alive, so the next connection starts at dead again: every connection
    // pays one failed connect (until health checks take dead out).
    let failures = svc.scheduler().dest(dead).unwrap().connect_failures();
    assert_eq!(failures, 6);
    assert_eq!(
        svc.stats.retries.load(std::sync::atomic::Ordering::Relaxed),
        6
    );
    assert_eq!(svc.stats.refused(Refusal::Unreachable), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_server_times_out_and_is_retried() {
    let (hole, _fillers, _socket) = black_hole().await;
    let alive = name_backend("alive").await;
    let extra = "    scheduler: rr\n    timeouts: {connect: 300ms}\n";
    let p = proxy(&yaml(extra, &[alive, hole]));
    let v = vip(&p, "s");
    let start = std::time::Instant::now();
    for _ in 0..4 {
        assert_eq!(fetch_name(v).await, "alive");
    }
    // As above, each connection tries the hole first and waits out 300 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        start.elapsed()
    );
    let svc = p.service("s").unwrap();
    assert_eq!(svc.scheduler().dest(hole).unwrap().connect_failures(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_server_is_unreachable_the_client_is_refused() {
    let a = refused_address().await;
    let b = refused_address().await;
    let p = proxy(&yaml("    connect_retries: 5\n", &[a, b]));
    assert_refused(TcpStream::connect(vip(&p, "s")).await).await;
    let svc = p.service("s").unwrap();
    assert!(
        eventually(Duration::from_secs(2), || svc
            .stats
            .refused(Refusal::Unreachable)
            == 1)
        .await
    );
    // Two servers: one try each; the retries stop when none is left.
    assert_eq!(
        svc.stats
            .connect_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upper_threshold_refuses_cleanly_and_recovers() {
    let (server, _) = hold_backend("h").await;
    let y = format!(
        "services:\n  - name: s\n    listen: 127.0.0.1:0\n    real_servers:\n      - address: \"{server}\"\n        u_threshold: 1\n"
    );
    let p = proxy(&y);
    let v = vip(&p, "s");
    let mut first = TcpStream::connect(v).await.unwrap();
    first.read_exact(&mut [0u8; 1]).await.unwrap();
    assert_refused(TcpStream::connect(v).await).await;
    let svc = p.service("s").unwrap();
    assert!(
        eventually(Duration::from_secs(2), || svc
            .stats
            .refused(Refusal::Threshold)
            == 1)
        .await
    );
    drop(first);
    // Back under 3/4 of the threshold: the overload flag clears.
    assert!(eventually(Duration::from_secs(3), || counts(&p, "s", server) == (0, 0)).await);
    let mut again = TcpStream::connect(v).await.unwrap();
    let mut b = [0u8; 1];
    again.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"h");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_beyond_the_limit() {
    let (server, _) = hold_backend("h").await;
    let p = proxy(&yaml("    max_connections: 2\n", &[server]));
    let v = vip(&p, "s");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(v).await.unwrap();
        s.read_exact(&mut [0u8; 1]).await.unwrap();
        held.push(s);
    }
    assert_refused(TcpStream::connect(v).await).await;
    let svc = p.service("s").unwrap();
    assert!(
        eventually(Duration::from_secs(2), || svc.stats.refused(Refusal::Limit)
            == 1)
        .await
    );
    held.pop();
    assert!(eventually(Duration::from_secs(2), || svc.open() == 1).await);
    let mut s = TcpStream::connect(v).await.unwrap();
    s.read_exact(&mut [0u8; 1]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_and_deny_lists() {
    let server = name_backend("ok").await;
    let p = proxy(&yaml(
        "    allow: [127.0.6.0/24, 127.0.4.0/23]\n    deny: [127.0.4.7]\n",
        &[server],
    ));
    let v = vip(&p, "s");
    let from = |s: &str| s.parse::<IpAddr>().unwrap();
    for ok in ["127.0.6.1", "127.0.4.1", "127.0.5.200"] {
        let mut s = connect_from(from(ok), v).await.unwrap();
        assert_eq!(read_all(&mut s).await, b"ok", "{ok} is allowed");
    }
    for refused in ["127.0.4.7", "127.0.7.1", "127.0.0.1"] {
        assert_refused(connect_from(from(refused), v).await).await;
    }
    let svc = p.service("s").unwrap();
    assert!(
        eventually(Duration::from_secs(2), || svc.stats.refused(Refusal::Acl)
            == 3)
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_bytes_as_the_backend_receives_them() {
    let (server, mut got) = capture_backend(200).await;
    for version in ["v1", "v2"] {
        let p = proxy(&yaml(
            &format!("    proxy_protocol: {version}\n"),
            &[server],
        ));
        let v = vip(&p, "s");
        let mut c = connect_from("127.0.8.9".parse().unwrap(), v).await.unwrap();
        let client = c.local_addr().unwrap();
        c.write_all(b"payload").await.unwrap();
        c.shutdown().await.unwrap();
        let bytes = tokio::time::timeout(Duration::from_secs(5), got.recv())
            .await
            .unwrap()
            .unwrap();
        let mut want = Vec::new();
        if version == "v1" {
            want.extend_from_slice(
                format!(
                    "PROXY TCP4 127.0.8.9 127.0.0.1 {} {}\r\n",
                    client.port(),
                    v.port()
                )
                .as_bytes(),
            );
        } else {
            want.extend_from_slice(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c");
            want.extend_from_slice(&[127, 0, 8, 9, 127, 0, 0, 1]);
            want.extend_from_slice(&client.port().to_be_bytes());
            want.extend_from_slice(&v.port().to_be_bytes());
        }
        want.extend_from_slice(b"payload");
        assert_eq!(bytes, want, "{version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_proxy_headers_give_the_real_client() {
    let (server, mut got) = capture_backend(200).await;
    let p = proxy(&yaml(
        "    accept_proxy_protocol: true\n    proxy_protocol: v1\n    timeouts: {proxy_header: 500ms}\n",
        &[server],
    ));
    let v = vip(&p, "s");
    // A v2 header from an upstream balancer, then the client's bytes.
    let mut header = Vec::new();
    rvs_proxy::proxy_proto::encode_v2(
        "192.0.2.9:4321".parse().unwrap(),
        "198.51.100.1:80".parse().unwrap(),
        &mut header,
    );
    header.extend_from_slice(b"hello");
    let mut c = TcpStream::connect(v).await.unwrap();
    c.write_all(&header).await.unwrap();
    c.shutdown().await.unwrap();
    let bytes = tokio::time::timeout(Duration::from_secs(5), got.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bytes, b"PROXY TCP4 192.0.2.9 198.51.100.1 4321 80\r\nhello");
    // No header, or garbage: refused.
    let mut c = TcpStream::connect(v).await.unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    assert_refused(Ok(c)).await;
    assert_refused(TcpStream::connect(v).await).await;
    let svc = p.service("s").unwrap();
    assert!(
        eventually(Duration::from_secs(2), || svc
            .stats
            .refused(Refusal::ProxyHeader)
            == 2)
        .await
    );
}

/// Waits for the proxy to cut `s`: a reset or an end of stream, within 5 s
/// and not before `limit` (less a little: the clocks differ).
async fn assert_cut_after(s: &mut TcpStream, since: Instant, limit: Duration) {
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an idle connection outlived its timeout by 5 s");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    let idle = since.elapsed();
    assert!(
        idle + Duration::from_millis(50) >= limit,
        "cut after {idle:?}"
    );
}

async fn idle_established_connections_are_cut(workers: usize) {
    let echo = echo_backend().await;
    let options = Options {
        workers,
        ..Options::default()
    };
    let p = proxy_with(&yaml("    timeouts: {tcp: 400ms}\n", &[echo]), options);
    let mut s = TcpStream::connect(vip(&p, "s")).await.unwrap();
    // Traffic every 100 ms keeps it open well past the timeout.
    let mut buf = [0u8; 4];
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"ping").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
    }
    assert_cut_after(&mut s, Instant::now(), Duration::from_millis(400)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_established_connections_are_cut_after_the_tcp_timeout() {
    idle_established_connections_are_cut(0).await;
}

/// On data-plane workers, whose timers run beside one always due within a
/// second: a shorter timeout still ends on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_established_connections_are_cut_after_the_tcp_timeout_on_workers() {
    idle_established_connections_are_cut(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_connections_are_cut_after_the_tcpfin_timeout() {
    // A server that reads to the client's end, then holds its own side.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 64];
                while s.read(&mut b).await.is_ok_and(|n| n > 0) {}
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let options = Options {
        workers: 2,
        ..Options::default()
    };
    let p = proxy_with(
        &yaml("    timeouts: {tcp: 30s, tcpfin: 400ms}\n", &[server]),
        options,
    );
    let mut s = TcpStream::connect(vip(&p, "s")).await.unwrap();
    s.write_all(b"request").await.unwrap();
    s.shutdown().await.unwrap();
    assert_cut_after(&mut s, Instant::now(), Duration::from_millis(400)).await;
}

/// `per_source`: connections at once per client address (or network), a
/// rate per group, and sources beyond the table refused, each counted as
/// `limit`; other clients go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_source_limits_hold_each_client_to_its_share() {
    let (b, _) = hold_backend("b").await;
    let p = proxy(&yaml(
        "    per_source: { max_connections: 2, prefix_v4: 24 }\n",
        &[b],
    ));
    let v = vip(&p, "s");
    let svc = p.service("s").unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut held = Vec::new();
    for from in ["127.0.5.1", "127.0.5.2"] {
        let mut c = connect_from(ip(from), v).await.unwrap();
        let mut name = [0u8; 1];
        c.read_exact(&mut name).await.unwrap();
        held.push(c);
    }
    // A third from the same /24: refused; from another /24: served.
    assert_refused(connect_from(ip("127.0.5.3"), v).await).await;
    assert_eq!(svc.stats.refused(Refusal::Limit), 1);
    let mut other = connect_from(ip("127.0.6.1"), v).await.unwrap();
    let mut name = [0u8; 1];
    other.read_exact(&mut name).await.unwrap();
    assert_eq!(&name, b"b");
    // One closes: its group has a place again.
    drop(held.pop());
    let mut again = None;
    for _ in 0..100 {
        // A refusal's reset may come before connect() returns.
        let Ok(mut c) = connect_from(ip("127.0.5.3"), v).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut name = [0u8; 1];
        if c.read_exact(&mut name).await.is_ok() {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the place came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_source_rate_is_a_token_bucket_per_client() {
    let b = name_backend("b").await;
    let p = proxy(&yaml("    per_source: { rate: 0.5, burst: 3 }\n", &[b]));
    let v = vip(&p, "s");
    let svc = p.service("s").unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut served = 0;
    for _ in 0..6 {
        let Ok(mut c) = connect_from(ip("127.0.7.1"), v).await else {
            continue;
        };
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf).await;
        if buf == b"b" {
            served += 1;
        }
    }
    // The burst of 3, and perhaps one more refilled while they ran.
    assert!((3..=4).contains(&served), "{served}");
    assert!(svc.stats.refused(Refusal::Limit) >= 2);
    // Another client has its own bucket.
    let mut c = connect_from(ip("127.0.7.2"), v).await.unwrap();
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).await.unwrap();
    assert_eq!(buf, b"b");
    // The bucket refills at one per 2 s.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut c = connect_from(ip("127.0.7.1"), v).await.unwrap();
    let mut buf = Vec::new();
    c.read_to_end(&mut buf).await.unwrap();
    assert_eq!(buf, b"b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sources_cannot_grow_the_table() {
    let (b, _) = hold_backend("b").await;
    let p = proxy(&yaml(
        "    per_source: { max_connections: 100, max_sources: 32 }\n",
        &[b],
    ));
    let v = vip(&p, "s");
    let svc = p.service("s").unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..120u32 {
        let from: IpAddr = format!("127.8.{}.{}", i / 200, 1 + i % 200)
            .parse()
            .unwrap();
        let Ok(mut c) = connect_from(from, v).await else {
            refused += 1; // reset before connect() returned
            continue;
        };
        let mut name = [0u8; 1];
        match c.read_exact(&mut name).await {
            Ok(_) => held.push(c),
            Err(_) => refused += 1,
        }
    }
    assert!(
        svc.sources_tracked() <= 32 + 16,
        "{}",
        svc.sources_tracked()
    );
    assert!(
        refused > 0 && !held.is_empty(),
        "{refused} refused, {} held",
        held.len()
    );
    // Once they close, new sources take their places.
    drop(held);
    assert!(
        eventually(Duration::from_secs(5), || svc.conns.is_empty()).await,
        "closed"
    );
    let mut c = connect_from("127.9.0.1".parse().unwrap(), v).await.unwrap();
    let mut name = [0u8; 1];
    c.read_exact(&mut name).await.unwrap();
}

/// `timeouts.client_first_byte`: a client that sends nothing in time is
/// reset before any real server is chosen or connected; one that speaks
/// is served; without the key, a silent client keeps its connection and
/// its server, as under IPVS (where the server may speak first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_nothing_in_time_costs_no_server_connection() {
    let (be, open) = hold_backend("h").await;
    let p = proxy(&yaml("    timeouts: { client_first_byte: 300ms }\n", &[be]));
    let vip = vip(&p, "s");
    let t = Instant::now();
    let mut silent = TcpStream::connect(vip).await.unwrap();
    let mut buf = [0u8; 8];
    let r = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0) | Err(_))),
        "the silent client is closed: {r:?}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        open.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no server connection"
    );
    let svc = p.service("s").unwrap();
    assert_eq!(svc.stats.refused(Refusal::FirstByte), 1);
    assert_eq!(
        svc.stats.conns.load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    let mut talker = TcpStream::connect(vip).await.unwrap();
    talker.write_all(b"hello").await.unwrap();
    let mut name = [0u8; 1];
    talker.read_exact(&mut name).await.unwrap();
    assert_eq!(&name, b"h");
    assert_eq!(
        svc.stats.conns.load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // Off (the default): the server speaks first to a silent client.
    let plain = proxy(&yaml("", &[be]));
    let mut quiet = TcpStream::connect(common::vip(&plain, "s")).await.unwrap();
    let mut name = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), quiet.read_exact(&mut name))
        .await
        .expect("the server's greeting comes")
        .unwrap();
    assert_eq!(&name, b"h");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        plain
            .service("s")
            .unwrap()
            .stats
            .refused(Refusal::FirstByte),
        0
    );
    // A bad value is refused where it is written.
    let e = rvs_proxy::Config::parse(
        &yaml("    timeouts: { client_first_byte: 0s }\n", &[be]),
        "t.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("t.yaml:4:") && e.contains("client_first_byte: must be longer than 0"),
        "{e}"
    );
}
