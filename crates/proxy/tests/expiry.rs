//! IPVS's sysctls for the flows of a real server that left:
//! `expire_nodest_conn` (UDP sessions rescheduled at their next datagram,
//! TCP connections reset) and `expire_quiescent_template` (a persistence
//! template on a weight-0 server ends at its next use); each against
//! today's behaviour when off.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use common::dns::Dnsmasq;
use common::*;
use rvs_proxy::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A UDP backend that answers `NAME:payload`, counts what it receives, and
/// can be muted (it then answers nothing: its health check fails).
struct Udp {
    addr: SocketAddr,
    got: Arc<AtomicUsize>,
    mute: Arc<AtomicBool>,
}

async fn udp_server(ip: &str, port: u16, name: &str) -> Udp {
    let s = UdpSocket::bind((ip.parse::<std::net::IpAddr>().unwrap(), port))
        .await
        .unwrap();
    let addr = s.local_addr().unwrap();
    let got = Arc::new(AtomicUsize::new(0));
    let mute = Arc::new(AtomicBool::new(false));
    let (g, m, name) = (Arc::clone(&got), Arc::clone(&mute), name.to_owned());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf).await else {
                continue;
            };
            if buf[..n].starts_with(b"q") {
                g.fetch_add(1, Relaxed);
            }
            if m.load(Relaxed) {
                continue;
            }
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from).await;
        }
    });
    Udp { addr, got, mute }
}

fn knob(on: bool) -> String {
    format!("global:\n  expire_nodest_conn: {on}\n")
}

fn udp_yaml(global: &str, check: &str, servers: &[SocketAddr]) -> String {
    let mut y = format!(
        "{global}services:\n  - name: u\n    proto: udp\n    listen: 127.0.0.1:0\n    scheduler: rr\n{check}    real_servers:\n"
    );
    for a in servers {
        y.push_str(&format!("      - address: \"{a}\"\n"));
    }
    y
}

/// Sends `q<i>` from one source port and returns who answered (or `-`).
async fn ask(c: &UdpSocket, vip: SocketAddr, i: usize) -> String {
    udp_ask(c, vip, format!("q{i}").as_bytes())
        .await
        .map_or_else(
            || "-".to_owned(),
            |r| r.split(':').next().unwrap().to_owned(),
        )
}

/// One client source port: its session is on `first`; the change is made;
/// with the knob on, the next datagram goes elsewhere and `first` gets none.
async fn session_moves(
    p: &rvs_proxy::Proxy,
    first: &Udp,
    change: impl std::future::Future<Output = ()>,
) -> (String, usize) {
    let v = vip(p, "u");
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(
        ask(&c, v, 0).await,
        "x",
        "the session starts on x (rr's head)"
    );
    change.await;
    let before = first.got.load(Relaxed);
    let after = ask(&c, v, 1).await;
    ask(&c, v, 2).await;
    (after, first.got.load(Relaxed) - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_server_s_udp_session_is_rescheduled_only_with_the_knob() {
    for on in [true, false] {
        let y = udp_server("127.0.0.1", 0, "y").await;
        let x = udp_server("127.0.0.1", 0, "x").await;
        // rr picks the list's head: the file's last server.
        let p = proxy(&udp_yaml(&knob(on), "", &[y.addr, x.addr]));
        let removed = async {
            let c = Config::parse(&udp_yaml(&knob(on), "", &[y.addr]), "t").unwrap();
            p.apply(c).unwrap();
        };
        let (after, to_x) = session_moves(&p, &x, removed).await;
        if on {
            assert_eq!(
                (after.as_str(), to_x),
                ("y", 0),
                "rescheduled, nothing to x"
            );
            let svc = p.service("u").unwrap();
            assert_eq!(svc.stats.expired_nodest.load(Relaxed), 1);
        } else {
            assert_eq!(
                (after.as_str(), to_x),
                ("x", 2),
                "today's behaviour: it stays"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_failed_server_s_udp_session_is_rescheduled_only_with_the_knob() {
    let check = "    health_check: { type: udp, payload: \"0a\", require_reply: true, delay_loop: 100ms, connect_timeout: 200ms, retry: 0, warmup: 0s }\n";
    for on in [true, false] {
        let y = udp_server("127.0.0.1", 0, "y").await;
        let x = udp_server("127.0.0.1", 0, "x").await;
        let p = proxy(&udp_yaml(&knob(on), check, &[y.addr, x.addr]));
        let svc = p.service("u").unwrap();
        assert!(
            eventually(Duration::from_secs(5), || svc
                .health()
                .values()
                .all(|h| h.checks_run > 0))
            .await
        );
        let failed = async {
            x.mute.store(true, Relaxed);
            assert!(
                eventually(Duration::from_secs(5), || svc
                    .scheduler()
                    .dest(x.addr)
                    .is_none())
                .await,
                "x failed its check and left the table"
            );
        };
        let (after, to_x) = session_moves(&p, &x, failed).await;
        if on {
            assert_eq!((after.as_str(), to_x), ("y", 0));
        } else {
            assert_eq!(
                after, "-",
                "x is silent: today's session keeps sending there"
            );
            assert_eq!(to_x, 2);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_gone_from_dns_loses_its_udp_session_only_with_the_knob() {
    for on in [true, false] {
        let y = udp_server("127.0.0.11", 0, "y").await;
        let port = y.addr.port();
        let x = udp_server("127.0.0.12", port, "x").await;
        let dns = Dnsmasq::start(
            &format!("expire-{on}"),
            &["127.0.0.11 u.test", "127.0.0.12 u.test"],
            &[],
        );
        let global = dns.global("200ms", &format!("  expire_nodest_conn: {on}\n"));
        let p = proxy(&format!(
            "{global}services:\n  - name: u\n    proto: udp\n    listen: 127.0.0.1:0\n    scheduler: rr\n    real_servers:\n      - dns: u.test:{port}\n"
        ));
        let svc = p.service("u").unwrap();
        assert!(
            eventually(Duration::from_secs(5), || svc.scheduler().dests().len()
                == 2)
            .await
        );
        let gone = async {
            dns.set_hosts(&["127.0.0.11 u.test"]);
            assert!(
                eventually(Duration::from_secs(5), || svc
                    .scheduler()
                    .dest(x.addr)
                    .is_none())
                .await,
                "a UDP server leaves at once"
            );
        };
        let (after, to_x) = session_moves(&p, &x, gone).await;
        if on {
            assert_eq!((after.as_str(), to_x), ("y", 0));
        } else {
            assert_eq!((after.as_str(), to_x), ("x", 2));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_server_s_tcp_connections_are_reset_only_with_the_knob() {
    for on in [true, false] {
        let x = echo_backend().await;
        let y = echo_backend().await;
        let yaml = |servers: &[SocketAddr]| {
            let mut s = format!(
                "{}services:\n  - name: t\n    listen: 127.0.0.1:0\n    scheduler: rr\n    real_servers:\n",
                knob(on)
            );
            for a in servers {
                s.push_str(&format!("      - address: \"{a}\"\n"));
            }
            s
        };
        let p = proxy(&yaml(&[y, x]));
        let mut c = TcpStream::connect(vip(&p, "t")).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(counts(&p, "t", x), (1, 0), "the connection is x's");
        p.apply(Config::parse(&yaml(&[y]), "t").unwrap()).unwrap();
        let _ = c.write_all(b"pong").await;
        let mut got = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut got)).await;
        if on {
            let r = r.expect("ended at once, not by a timeout");
            assert!(r.is_err() || got.is_empty(), "reset: {r:?} {got:?}");
            let svc = p.service("t").unwrap();
            assert!(
                eventually(Duration::from_secs(2), || svc
                    .stats
                    .expired_nodest
                    .load(Relaxed)
                    == 1)
                .await
            );
        } else {
            assert!(r.is_err(), "still open: the read waits");
            assert_eq!(&got, b"pong", "and still forwarding");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_on_a_quiescent_server_expires_only_with_the_knob() {
    for on in [true, false] {
        let x = name_backend("x").await;
        let y = name_backend("y").await;
        let yaml = |wx: u32| {
            format!(
                "global:\n  expire_quiescent_template: {on}\nservices:\n  - name: p\n    listen: 127.0.0.1:0\n    scheduler: rr\n    persistence: {{ timeout: 300s }}\n    real_servers:\n      - address: \"{y}\"\n      - address: \"{x}\"\n        weight: {wx}\n"
            )
        };
        let p = proxy(&yaml(1));
        let v = vip(&p, "p");
        assert_eq!(fetch_name(v).await, "x", "the template is made on x");
        assert_eq!(fetch_name(v).await, "x", "and used");
        p.apply(Config::parse(&yaml(0), "t").unwrap()).unwrap();
        let next = fetch_name(v).await;
        if on {
            assert_eq!(
                next, "y",
                "the template on quiescent x expired: scheduled again"
            );
            assert_eq!(fetch_name(v).await, "y", "a new template on y");
        } else {
            assert_eq!(
                next, "x",
                "IPVS's default: the template keeps the client on x"
            );
        }
    }
}
