//! Balancing end to end: real clients, rvs, real backends on loopback.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;

fn service(scheduler: &str, extra: &str, servers: &[(SocketAddr, u32)]) -> String {
    let mut y = format!(
        "services:\n  - name: web\n    listen: 127.0.0.1:0\n    scheduler: {scheduler}\n{extra}    real_servers:\n"
    );
    for (a, w) in servers {
        y.push_str(&format!("      - address: \"{a}\"\n        weight: {w}\n"));
    }
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rr_rotates_in_ipvs_list_order() {
    let a = name_backend("a").await;
    let b = name_backend("b").await;
    let c = name_backend("c").await;
    let p = proxy(&service("rr", "", &[(a, 1), (b, 1), (c, 1)]));
    let v = vip(&p, "web");
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(fetch_name(v).await);
    }
    // Added a, b, c: the list is [c, b, a], as ipvsadm -a would make it.
    assert_eq!(got, ["c", "b", "a", "c", "b", "a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrr_follows_weights() {
    let a = name_backend("a").await;
    let b = name_backend("b").await;
    let c = name_backend("c").await;
    let p = proxy(&service("wrr", "", &[(a, 1), (b, 2), (c, 3)]));
    let v = vip(&p, "web");
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..12 {
        *seen.entry(fetch_name(v).await).or_default() += 1;
    }
    assert_eq!((seen["a"], seen["b"], seen["c"]), (2, 4, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wlc_balances_open_connections_by_weight_and_counts_them() {
    let (a, open_a) = hold_backend("a").await;
    let (b, open_b) = hold_backend("b").await;
    let p = proxy(&service("wlc", "", &[(a, 1), (b, 3)]));
    let v = vip(&p, "web");
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = tokio::net::TcpStream::connect(v).await.unwrap();
        let mut name = [0u8; 1];
        s.read_exact(&mut name).await.unwrap();
        held.push(s);
    }
    assert!(
        eventually(Duration::from_secs(3), || open_a.load(Ordering::SeqCst)
            == 2)
        .await
    );
    assert_eq!(open_b.load(Ordering::SeqCst), 6);
    // Established on both sides: ActiveConn, as ipvsadm -L would show.
    assert_eq!(counts(&p, "web", a), (2, 0));
    assert_eq!(counts(&p, "web", b), (6, 0));
    drop(held);
    assert!(
        eventually(Duration::from_secs(3), || counts(&p, "web", a) == (0, 0)
            && counts(&p, "web", b) == (0, 0))
        .await
    );
    let d = p.service("web").unwrap().scheduler().dest(b).unwrap();
    assert_eq!(d.conns_total(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sh_sends_each_source_address_to_one_server() {
    let a = name_backend("a").await;
    let b = name_backend("b").await;
    let c = name_backend("c").await;
    let p = proxy(&service("sh", "", &[(a, 1), (b, 1), (c, 1)]));
    let v = vip(&p, "web");
    let mut by_source: HashMap<IpAddr, String> = HashMap::new();
    for round in 0..3 {
        for i in 1..=24u8 {
            let from = IpAddr::V4(Ipv4Addr::new(127, 0, 1, i));
            let mut s = connect_from(from, v).await.unwrap();
            let name = String::from_utf8(read_all(&mut s).await).unwrap();
            match by_source.get(&from) {
                None => assert_eq!(round, 0),
                Some(prev) => assert_eq!(prev, &name, "source {from} moved"),
            }
            by_source.insert(from, name);
        }
    }
    let servers: std::collections::HashSet<_> = by_source.values().collect();
    assert_eq!(
        servers.len(),
        3,
        "24 sources should reach all three servers: {by_source:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistence_keeps_a_client_network_on_one_server() {
    let a = name_backend("a").await;
    let b = name_backend("b").await;
    let extra = "    persistence:\n      timeout: 300s\n      netmask: 255.255.255.0\n";
    let p = proxy(&service("rr", extra, &[(a, 1), (b, 1)]));
    let v = vip(&p, "web");
    let first = String::from_utf8(
        read_all(&mut connect_from("127.0.2.1".parse().unwrap(), v).await.unwrap()).await,
    )
    .unwrap();
    // Other hosts of the same /24, and the same host again: same server,
    // although rr alone would alternate.
    for host in [1u8, 2, 3, 77, 200, 1] {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 2, host));
        let mut s = connect_from(from, v).await.unwrap();
        assert_eq!(String::from_utf8(read_all(&mut s).await).unwrap(), first);
    }
    // Another /24 gets the other server (rr moves on).
    let mut s = connect_from("127.0.3.1".parse().unwrap(), v).await.unwrap();
    assert_ne!(String::from_utf8(read_all(&mut s).await).unwrap(), first);
    assert_eq!(p.service("web").unwrap().scheduler().template_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener_and_backends() {
    let a = name_backend_on("[::1]:0".parse().unwrap(), "a6").await;
    let b = name_backend_on("[::1]:0".parse().unwrap(), "b6").await;
    let yaml = format!(
        "services:\n  - name: v6\n    listen: \"[::1]:0\"\n    scheduler: rr\n    real_servers:\n      - address: \"{a}\"\n      - address: \"{b}\"\n"
    );
    let p = proxy(&yaml);
    let v = vip(&p, "v6");
    assert!(v.is_ipv6());
    assert_eq!(fetch_name(v).await, "b6");
    assert_eq!(fetch_name(v).await, "a6");
    // An IPv4 listener in front of IPv6 servers: FULLNAT mixes families.
    let yaml = yaml.replace(
        "listen: \"[::1]:0\"",
        "listen: [\"[::1]:0\", \"127.0.0.1:0\"]",
    );
    let p = proxy(&yaml);
    let v4 = p
        .local_addrs("v6")
        .into_iter()
        .find(SocketAddr::is_ipv4)
        .unwrap();
    assert_eq!(fetch_name(v4).await, "b6");
}
