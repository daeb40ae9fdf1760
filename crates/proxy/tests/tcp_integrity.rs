//! Bytes arrive whole and in order, and streams end the way they should:
//! large transfers both ways at once, half-closes each way, a backend that
//! closes early, a client that resets. Run with splice and with copy.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use rvs_proxy::{Mode, Options, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MODES: [Mode; 3] = [Mode::Auto, Mode::Splice, Mode::Copy];

fn one_server(server: SocketAddr, mode: Mode) -> Proxy {
    proxy_with(
        &format!(
            "services:\n  - name: t\n    listen: 127.0.0.1:0\n    scheduler: wlc\n    timeouts: {{tcp: 30s, tcpfin: 30s}}\n    real_servers:\n      - address: \"{server}\"\n"
        ),
        Options {
            forwarding: mode,
            ..Options::default()
        },
    )
}

/// Listening sockets on `at` in /proc/net/tcp (state 0A: LISTEN).
fn listeners_on(at: SocketAddr) -> usize {
    let std::net::IpAddr::V4(ip) = at.ip() else {
        panic!("an IPv4 address")
    };
    // The kernel writes the address as a host-order (little-endian) word.
    let want = format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), at.port());
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "0A" && f[1] == want
        })
        .count()
}

/// With data-plane workers, each accepts on its own SO_REUSEPORT socket of
/// the address; the scheduler is shared, bytes arrive whole, and a reload
/// moves every worker's socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_accept_on_their_own_sockets() {
    let (a, b) = (name_backend("a").await, name_backend("b").await);
    let echo = echo_backend().await;
    let yaml = |port: u16| {
        format!(
            "services:\n  - name: names\n    listen: 127.0.0.1:{port}\n    scheduler: rr\n    real_servers:\n      - address: \"{a}\"\n      - address: \"{b}\"\n  - name: echo\n    listen: 127.0.0.2:0\n    real_servers:\n      - address: \"{echo}\"\n"
        )
    };
    let p = proxy_with(
        &yaml(0),
        Options {
            workers: 2,
            ..Options::default()
        },
    );
    let v = vip(&p, "names");
    assert_eq!(listeners_on(v), 2, "one socket per worker");
    // rr over both workers: one scheduler, so exactly half each.
    let mut count = std::collections::HashMap::new();
    for _ in 0..200 {
        *count.entry(fetch_name(v).await).or_insert(0) += 1;
    }
    assert_eq!(count.get("a"), Some(&100), "{count:?}");
    assert_eq!(count.get("b"), Some(&100), "{count:?}");
    // Four concurrent transfers, spread over the workers by the kernel.
    let e = vip(&p, "echo");
    let total = 16 << 20;
    let (w, x, y, z) = tokio::join!(
        echo_transfer(e, total, 1),
        echo_transfer(e, total, 2),
        echo_transfer(e, total, 3),
        echo_transfer(e, total, 4)
    );
    for (sent, back, n) in [w, x, y, z] {
        assert_eq!(n, total);
        assert_eq!(sent, back);
    }
    // A reload to another port: the old sockets close, the new ones serve.
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = spare.local_addr().unwrap().port();
    drop(spare);
    p.apply(rvs_proxy::Config::parse(&yaml(port), "test.yaml").unwrap())
        .unwrap();
    let moved = vip(&p, "names");
    assert_eq!(moved.port(), port);
    assert!(["a", "b"].contains(&fetch_name(moved).await.as_str()));
    assert_eq!(listeners_on(moved), 2);
    assert!(
        eventually(Duration::from_secs(3), || listeners_on(v) == 0).await,
        "the old sockets close"
    );
}

/// Each worker's `rvs_worker_connections`, in worker order.
async fn worker_connections(admin: SocketAddr) -> Vec<u64> {
    let (status, body) = http(admin, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let mut by_worker: Vec<(usize, u64)> = body
        .lines()
        .filter_map(|l| l.strip_prefix("rvs_worker_connections{worker=\""))
        .map(|l| {
            let (worker, rest) = l.split_once('"').unwrap();
            let value = rest.rsplit(' ').next().unwrap();
            (worker.parse().unwrap(), value.parse().unwrap())
        })
        .collect();
    by_worker.sort_unstable();
    by_worker.into_iter().map(|(_, n)| n).collect()
}

/// With `balance_workers`, long-lived connections end up even between the
/// workers whatever the kernel's hash made of their addresses: a worker
/// that holds two more than another passes what it accepts to it, and a
/// passed connection is served as well as any (bytes both ways, its end
/// counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_connections_are_spread_evenly_over_the_workers() {
    let echo = echo_backend().await;
    let p = proxy_with(
        &format!(
            "services:\n  - name: echo\n    listen: 127.0.0.1:0\n    real_servers:\n      - address: \"{echo}\"\n"
        ),
        Options {
            workers: 2,
            balance_workers: true,
            ..Options::default()
        },
    );
    let admin = admin(&p).await;
    let v = vip(&p, "echo");
    let mut held = Vec::new();
    for i in 0..30u8 {
        let mut s = TcpStream::connect(v).await.unwrap();
        // Served (and so placed) before the next one comes.
        s.write_all(&[i]).await.unwrap();
        let mut back = [0];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, [i]);
        held.push(s);
    }
    let counts = worker_connections(admin).await;
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert_eq!(counts.iter().sum::<u64>(), 30, "{counts:?}");
    let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(hi - lo <= 2, "uneven: {counts:?}");
    // Every connection, passed or not, still carries bytes.
    for (i, s) in held.iter_mut().enumerate() {
        let n = u8::try_from(i).unwrap().wrapping_add(100);
        s.write_all(&[n]).await.unwrap();
        let mut back = [0];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, [n]);
    }
    drop(held);
    let mut left = Vec::new();
    for _ in 0..100 {
        left = worker_connections(admin).await;
        if left.iter().all(|&n| n == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, vec![0, 0], "connections ended are given back");
}

/// Sends `total` bytes of a deterministic stream and reads back the echo at
/// the same time; returns the digests of what was sent and what came back.
async fn echo_transfer(vip: SocketAddr, total: usize, seed: u64) -> (Digest, Digest, usize) {
    let s = TcpStream::connect(vip).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut stream = Stream::new(seed);
        let mut d = Digest::default();
        let mut buf = vec![0u8; 256 * 1024];
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len());
            stream.fill(&mut buf[..n]);
            w.write_all(&buf[..n]).await.unwrap();
            d.update(&buf[..n]);
            left -= n;
        }
        w.shutdown().await.unwrap();
        d
    });
    let mut got = Digest::default();
    let mut n = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let k = r.read(&mut buf).await.unwrap();
        if k == 0 {
            break;
        }
        got.update(&buf[..k]);
        n += k;
    }
    (writer.await.unwrap(), got, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfers_both_ways_arrive_byte_exact() {
    for mode in MODES {
        let p = one_server(echo_backend().await, mode);
        let v = vip(&p, "t");
        // Two concurrent connections of 256 MiB each way, full duplex.
        let total = 256 << 20;
        let (x, y) = tokio::join!(echo_transfer(v, total, 1), echo_transfer(v, total, 2));
        for (sent, back, n) in [x, y] {
            assert_eq!(n, total, "{mode:?}: bytes back");
            assert_eq!(sent, back, "{mode:?}: digest of the echo");
        }
        let svc = p.service("t").unwrap();
        let d = svc.scheduler().dests()[0].clone();
        assert!(
            eventually(Duration::from_secs(3), || d.traffic().out_bytes
                == 2 * total as u64)
            .await
        );
        assert_eq!(d.traffic().in_bytes, 2 * total as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_then_server_answers() {
    // The server reads to the client's FIN, then answers and closes.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                s.read_to_end(&mut req).await.unwrap();
                let answer = format!("got {} bytes", req.len());
                s.write_all(answer.as_bytes()).await.unwrap();
            });
        }
    });
    for mode in MODES {
        let p = one_server(server, mode);
        let mut c = TcpStream::connect(vip(&p, "t")).await.unwrap();
        c.write_all(&vec![7u8; 100_000]).await.unwrap();
        c.shutdown().await.unwrap();
        assert_eq!(read_all(&mut c).await, b"got 100000 bytes", "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_half_close_then_client_keeps_sending() {
    // The server speaks first and shuts its side; it then reads the client
    // to the end and reports the count on a channel.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = l.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                s.write_all(b"banner").await.unwrap();
                s.shutdown().await.unwrap();
                let mut got = Vec::new();
                s.read_to_end(&mut got).await.unwrap();
                tx.send(got.len()).unwrap();
            });
        }
    });
    for mode in MODES {
        let p = one_server(server, mode);
        let mut c = TcpStream::connect(vip(&p, "t")).await.unwrap();
        let mut banner = [0u8; 6];
        c.read_exact(&mut banner).await.unwrap();
        // The server's FIN came through: the next read is end of stream.
        assert_eq!(c.read(&mut [0u8; 1]).await.unwrap(), 0, "{mode:?}");
        // The other direction still flows.
        for _ in 0..10 {
            c.write_all(&[1u8; 10_000]).await.unwrap();
        }
        c.shutdown().await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 100_000, "{mode:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_closes_early_ends_the_client_stream() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    for mode in MODES {
        let p = one_server(server, mode);
        let mut c = TcpStream::connect(vip(&p, "t")).await.unwrap();
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
        // End of stream (or a reset): never a hang.
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{mode:?}: {r:?}");
        // Half-closed until the client closes too: inactive, then gone.
        let d = p.service("t").unwrap().scheduler().dests()[0].clone();
        assert!(eventually(Duration::from_secs(3), || d.active_conns() == 0).await);
        drop(c);
        assert!(
            eventually(Duration::from_secs(3), || d.active_conns()
                + d.inactive_conns()
                == 0)
            .await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_closes_the_server_side() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = l.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let end = loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break "eof",
                        Ok(_) => {}
                        Err(_) => break "reset",
                    }
                };
                tx.send(end).unwrap();
            });
        }
    });
    for mode in MODES {
        let p = one_server(server, mode);
        let c = TcpStream::connect(vip(&p, "t")).await.unwrap();
        let mut c = c;
        c.write_all(b"some bytes").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(c); // RST
        let end = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(end, "reset", "{mode:?}: the reset is passed on");
        let d = p.service("t").unwrap().scheduler().dests()[0].clone();
        assert!(
            eventually(Duration::from_secs(3), || d.active_conns()
                + d.inactive_conns()
                == 0)
            .await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_connections_count_as_inactive() {
    // A server that, after the client's FIN, keeps its own side open a while.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                s.write_all(b"h").await.unwrap();
                let mut sink = Vec::new();
                s.read_to_end(&mut sink).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1500)).await;
            });
        }
    });
    let p = one_server(server, Mode::Splice);
    let mut c = TcpStream::connect(vip(&p, "t")).await.unwrap();
    let mut name = [0u8; 1];
    c.read_exact(&mut name).await.unwrap();
    assert!(eventually(Duration::from_secs(3), || counts(&p, "t", server) == (1, 0)).await);
    c.shutdown().await.unwrap(); // FIN: no longer established both ways
    assert!(eventually(Duration::from_secs(3), || counts(&p, "t", server) == (0, 1)).await);
    drop(c);
    assert!(eventually(Duration::from_secs(3), || counts(&p, "t", server) == (0, 0)).await);
}
