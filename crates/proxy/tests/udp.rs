//! UDP through the proxy: sessions, their timeout, one-packet scheduling,
//! the session bound, ACLs.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::*;
use rvs_proxy::stats::Refusal;
use tokio::net::UdpSocket;

fn yaml(extra: &str, servers: &[SocketAddr]) -> String {
    let mut y = format!(
        "services:\n  - name: dns\n    proto: udp\n    listen: 127.0.0.1:0\n    scheduler: rr\n{extra}    real_servers:\n"
    );
    for a in servers {
        y.push_str(&format!("      - address: \"{a}\"\n"));
    }
    y
}

async fn client(ip: &str) -> UdpSocket {
    UdpSocket::bind(format!("{ip}:0")).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stick_and_count_as_inactive() {
    let a = udp_backend("a").await;
    let b = udp_backend("b").await;
    let p = proxy(&yaml("", &[a, b]));
    let v = vip(&p, "dns");
    let c1 = client("127.0.0.1").await;
    let c2 = client("127.0.0.1").await;
    for i in 0..3 {
        let msg = format!("q{i}");
        assert_eq!(
            udp_ask(&c1, v, msg.as_bytes()).await.unwrap(),
            format!("b:{msg}")
        );
    }
    assert_eq!(udp_ask(&c2, v, b"x").await.unwrap(), "a:x");
    // IPVS counts every UDP session as an inactive connection.
    assert_eq!(counts(&p, "dns", a), (0, 1));
    assert_eq!(counts(&p, "dns", b), (0, 1));
    let svc = p.service("dns").unwrap();
    // Live sessions' bytes reach the totals when they are read.
    svc.flush();
    assert_eq!(svc.stats.in_pkts.load(Relaxed), 4);
    assert_eq!(svc.stats.out_pkts.load(Relaxed), 4);
    let db = svc.scheduler().dest(b).unwrap().traffic();
    assert_eq!((db.in_pkts, db.out_pkts, db.in_bytes), (3, 3, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_after_the_udp_timeout() {
    let a = udp_backend("a").await;
    let b = udp_backend("b").await;
    let p = proxy(&yaml("    timeouts: {udp: 1s}\n", &[a, b]));
    let v = vip(&p, "dns");
    let c = client("127.0.0.1").await;
    assert_eq!(udp_ask(&c, v, b"1").await.unwrap(), "b:1");
    assert_eq!(counts(&p, "dns", b), (0, 1));
    let svc = p.service("dns").unwrap();
    assert!(
        eventually(Duration::from_secs(4), || svc.stats.expired.load(Relaxed)
            == 1)
        .await
    );
    // The count goes when the session's reply task has let go of it.
    assert!(eventually(Duration::from_secs(1), || counts(&p, "dns", b) == (0, 0)).await);
    // A new session: rr has moved on.
    assert_eq!(udp_ask(&c, v, b"2").await.unwrap(), "a:2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_packet_scheduling_schedules_every_datagram() {
    let a = udp_backend("a").await;
    let b = udp_backend("b").await;
    let p = proxy(&yaml("    udp: {ops: true}\n", &[a, b]));
    let v = vip(&p, "dns");
    let c = client("127.0.0.1").await;
    let mut got = Vec::new();
    for i in 0..4 {
        got.push(udp_ask(&c, v, format!("{i}").as_bytes()).await.unwrap());
    }
    assert_eq!(got, ["b:0", "a:1", "b:2", "a:3"]);
    // Each datagram's connection is released at once.
    assert_eq!(counts(&p, "dns", a), (0, 0));
    assert_eq!(
        p.service("dns")
            .unwrap()
            .scheduler()
            .dest(a)
            .unwrap()
            .conns_total(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_bound_evicts_the_idlest() {
    let a = udp_backend("a").await;
    let p = proxy(&yaml("    udp: {max_sessions: 2}\n", &[a]));
    let v = vip(&p, "dns");
    let (c1, c2, c3) = (
        client("127.0.0.1").await,
        client("127.0.0.2").await,
        client("127.0.0.3").await,
    );
    assert!(udp_ask(&c1, v, b"1").await.is_some());
    assert!(udp_ask(&c2, v, b"2").await.is_some());
    let svc = p.service("dns").unwrap();
    assert_eq!(svc.open(), 2);
    // c2 stays busy; c3 arrives: the idlest, c1, goes.
    assert!(udp_ask(&c2, v, b"2 again").await.is_some());
    assert!(udp_ask(&c3, v, b"3").await.is_some());
    assert_eq!(svc.open(), 2);
    assert_eq!(svc.stats.evictions.load(Relaxed), 1);
    assert_eq!(counts(&p, "dns", a), (0, 2));
    // c2's session survived: it is still served without a new one.
    assert!(udp_ask(&c2, v, b"2 still").await.is_some());
    assert_eq!(svc.stats.conns.load(Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_clients_get_nothing() {
    let a = udp_backend("a").await;
    let p = proxy(&yaml("    deny: [127.0.9.0/24]\n", &[a]));
    let v = vip(&p, "dns");
    assert!(
        udp_ask(&client("127.0.9.1").await, v, b"no")
            .await
            .is_none()
    );
    assert_eq!(
        udp_ask(&client("127.0.10.1").await, v, b"yes")
            .await
            .unwrap(),
        "a:yes"
    );
    assert_eq!(p.service("dns").unwrap().stats.refused(Refusal::Acl), 1);
}

/// Datagrams of every size up to the largest, in bursts, come back whole
/// and counted: the replies of a burst are received together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_datagrams_of_every_size_pass_whole_both_ways() {
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let p = proxy(&yaml("", &[server]));
    let v = vip(&p, "dns");
    let c = client("127.0.0.1").await;
    // Sends a burst, returns the replies as they came.
    let burst = async |sent: &[Vec<u8>]| {
        for d in sent {
            c.send_to(d, v).await.unwrap();
        }
        let mut buf = vec![0u8; 65_536];
        let mut got = Vec::new();
        for _ in sent {
            let (n, from) = tokio::time::timeout(Duration::from_secs(5), c.recv_from(&mut buf))
                .await
                .expect("a reply within 5 s")
                .unwrap();
            assert_eq!(from, v);
            got.push(buf[..n].to_vec());
        }
        got
    };
    let rounds = 10;
    let per_round = 16;
    for round in 0..rounds {
        // One of the largest IPv4 payload, then small ones of growing size.
        let mut sent: Vec<Vec<u8>> = (0..per_round)
            .map(|i| {
                let len = if i == 0 { 65_507 } else { 1 + i * 61 + round };
                vec![u8::try_from((round * per_round + i) % 251).unwrap(); len]
            })
            .collect();
        let mut got = burst(&sent).await;
        sent.sort();
        got.sort();
        assert!(
            sent == got,
            "round {round}: the replies differ from the queries"
        );
    }
    // Replies of one size (as a DNS server's answers to one question): the
    // proxy sends a burst of them as one segmented send; the client gets
    // each on its own.
    for round in 0..rounds {
        let sent: Vec<Vec<u8>> = (0..per_round)
            .map(|i| format!("{round:03}-{i:03}-{}", "x".repeat(90)).into_bytes())
            .collect();
        assert_eq!(burst(&sent).await, sent, "round {round}");
    }
    let svc = p.service("dns").unwrap();
    svc.flush();
    let total = u64::try_from(2 * rounds * per_round).unwrap();
    assert_eq!(svc.stats.in_pkts.load(Relaxed), total);
    assert_eq!(svc.stats.out_pkts.load(Relaxed), total);
    assert_eq!(
        svc.stats.in_bytes.load(Relaxed),
        svc.stats.out_bytes.load(Relaxed)
    );
}

/// `per_source` on UDP: sessions at once per client address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_source_limits_count_sessions() {
    let a = udp_backend("a").await;
    let p = proxy(&yaml("    per_source: { max_connections: 1 }\n", &[a]));
    let v = vip(&p, "dns");
    let first = client("127.0.0.1").await;
    assert_eq!(udp_ask(&first, v, b"x").await.as_deref(), Some("a:x"));
    let second = client("127.0.0.1").await;
    assert_eq!(
        udp_ask(&second, v, b"y").await,
        None,
        "a second session of 127.0.0.1"
    );
    let svc = p.service("dns").unwrap();
    assert_eq!(svc.stats.refused(Refusal::Limit), 1);
    let other = client("127.0.0.2").await;
    assert_eq!(udp_ask(&other, v, b"z").await.as_deref(), Some("a:z"));
    assert_eq!(
        udp_ask(&first, v, b"again").await.as_deref(),
        Some("a:again"),
        "its own session goes on"
    );
}
