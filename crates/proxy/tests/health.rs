//! Health checks against real backends that die and come back: servers
//! leave the rotation within delay_loop + retries and return; HTTP status
//! and digest, a body pattern and a method; a program that sets weights; alpha; inhibit_on_failure; the
//! sorry server; passive ejection; slow start; UDP and DNS checks.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use rvs_proxy::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

/// The addresses in the scheduler's table, with their weights.
fn table(p: &Proxy, svc: &str) -> Vec<(SocketAddr, i32)> {
    let mut v: Vec<(SocketAddr, i32)> = p
        .service(svc)
        .unwrap()
        .scheduler()
        .dests()
        .iter()
        .map(|d| (d.addr(), d.weight()))
        .collect();
    v.sort();
    v
}

async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

fn service(extra: &str, servers: &[(SocketAddr, &str)]) -> String {
    let mut y = format!(
        "services:\n  - name: web\n    listen: 127.0.0.1:0\n    scheduler: rr\n{extra}    real_servers:\n"
    );
    for (a, more) in servers {
        y.push_str(&format!("      - {{ address: \"{a}\"{more} }}\n"));
    }
    y
}

const FAST_TCP: &str = "    health_check: { type: tcp, delay_loop: 200ms, connect_timeout: 200ms, retry: 1, delay_before_retry: 100ms, warmup: 0s }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_leaves_the_rotation_and_comes_back() {
    let a = Killable::start("a").await;
    let mut b = Killable::start("b").await;
    let p = proxy(&service(FAST_TCP, &[(a.addr, ""), (b.addr, "")]));
    let v = vip(&p, "web");
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(fetch_name(v).await);
    }
    assert!(
        seen.contains(&"a".into()) && seen.contains(&"b".into()),
        "{seen:?}"
    );

    // Traffic all along: a connect to the dead server before it is
    // detected is retried on the other (connect_retries), so no client
    // sees a failure.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_secs(2), async {
                    let mut s = tokio::net::TcpStream::connect(v).await?;
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).await?;
                    Ok::<_, std::io::Error>(got)
                })
                .await
                {
                    Ok(Ok(got)) if !got.is_empty() => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.kill();
    // Detection: a failed check, one retry 100 ms later, within a check
    // period: well under delay_loop + retry * delay_before_retry + timeouts.
    let took = wait_until(Duration::from_secs(3), || table(&p, "web") == [(a.addr, 1)]).await;
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = traffic.await.unwrap();
    assert!(ok > 10, "{ok} connections");
    // Connects refused by the dead server were retried on the other one:
    // without retries, about half the connections until detection (a
    // hundred or more) would fail. What a retry cannot save is a connection
    // the server had already completed but not yet accepted when it died:
    // closing its listener resets those, as with any server that dies, and
    // rvs had no refusal to retry. At most a couple fall in that window.
    let svc_metrics = http(admin(&p).await, "GET", "/metrics", None, None).await.1;
    let retries = sample(
        &svc_metrics,
        r#"rvs_service_retries_total{service="web",proto="tcp"}"#,
    )
    .unwrap();
    assert!(retries >= 1.0, "no connect was retried: {retries}");
    assert!(
        failed <= 2,
        "{failed} of {} connections failed ({retries} retried)",
        ok + failed
    );
    let h = p.service("web").unwrap().health();
    assert!(!h[&b.addr].up);
    assert!(
        h[&b.addr].reason.as_deref().unwrap().contains("refused"),
        "{:?}",
        h[&b.addr].reason
    );
    // No new connection goes to it.
    for _ in 0..20 {
        assert_eq!(fetch_name(v).await, "a");
    }
    // The API lists it out of the table, with the reason; metrics say so.
    let admin = admin(&p).await;
    let svc = get_json(admin, "/api/v1/services/web").await;
    let rs = svc["real_servers"].as_array().unwrap();
    let down = rs
        .iter()
        .find(|r| r["address"] == b.addr.to_string())
        .unwrap();
    assert_eq!(down["in_table"], false);
    assert_eq!(down["state"], "down");
    assert_eq!(down["health"]["up"], false);
    assert!(
        down["health"]["reason"]
            .as_str()
            .unwrap()
            .contains("refused")
    );
    let (_, scrape) = http(admin, "GET", "/metrics", None, None).await;
    let up = |a: SocketAddr| {
        sample(
            &scrape,
            &format!(r#"rvs_real_server_up{{service="web",real_server="{a}"}}"#),
        )
    };
    assert_eq!((up(a.addr), up(b.addr)), (Some(1.0), Some(0.0)));
    assert!(
        sample(
            &scrape,
            &format!(
                r#"rvs_real_server_health_checks_total{{service="web",real_server="{}",result="fail"}}"#,
                b.addr
            )
        )
        .unwrap()
            >= 2.0
    );

    b.restart().await;
    wait_until(Duration::from_secs(3), || table(&p, "web").len() == 2).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(fetch_name(v).await);
    }
    assert!(seen.contains(&"b".into()), "b is back: {seen:?}");
}

/// An HTTP server answering `status` with `body` to every request.
async fn http_backend(status: u16, body: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.0 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_look_at_the_status_and_the_digest() {
    let ok = http_backend(200, "healthy").await;
    let failing = http_backend(503, "busy").await;
    let teapot = http_backend(418, "tea").await;
    let check = "    health_check: { type: http, path: /health, status: [200, \"418\"], delay_loop: 200ms, connect_timeout: 500ms, retry: 0, warmup: 0s }\n";
    let p = proxy(&service(check, &[(ok, ""), (failing, ""), (teapot, "")]));
    let mut want = vec![(ok, 1), (teapot, 1)];
    want.sort();
    wait_until(Duration::from_secs(3), || table(&p, "web") == want).await;
    let h = p.service("web").unwrap().health();
    assert_eq!(h[&failing].reason.as_deref(), Some("HTTP status 503"));

    // A digest: only the body that hashes to it passes.
    let md5_healthy = {
        use std::process::Command;
        let out = Command::new("python3")
            .args([
                "-c",
                "import hashlib;print(hashlib.md5(b'healthy').hexdigest())",
            ])
            .output()
            .expect("python3 runs");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let check = format!(
        "    health_check: {{ type: http, digest: {md5_healthy}, delay_loop: 200ms, connect_timeout: 500ms, retry: 0, warmup: 0s }}\n"
    );
    let body_changed = http_backend(200, "healthy!").await;
    let p = proxy(&service(&check, &[(ok, ""), (body_changed, "")]));
    wait_until(Duration::from_secs(3), || table(&p, "web") == [(ok, 1)]).await;
    let h = p.service("web").unwrap().health();
    assert!(
        h[&body_changed]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("body digest"),
        "{:?}",
        h[&body_changed].reason
    );
}

/// An HTTP server whose body can change, and which keeps the request
/// lines it was sent.
async fn changing_backend() -> (
    SocketAddr,
    std::sync::Arc<std::sync::Mutex<String>>,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::sync::{Arc, Mutex};
    let body = Arc::new(Mutex::new(String::from(
        "{\"status\": \"ok\", \"load\": 3}",
    )));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap();
    let (b, r) = (Arc::clone(&body), Arc::clone(&requests));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (b, r) = (Arc::clone(&b), Arc::clone(&r));
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                r.lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or_default().to_owned());
                let body = b.lock().unwrap().clone();
                let reply = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (at, body, requests)
}

/// `expect_body` (ldirectord's `receive`): the server is up while its body
/// matches, down (with the reason) once it changes, up again when it
/// matches again; `method` is the request's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_match_the_body_and_send_the_method() {
    let (changing, body, requests) = changing_backend().await;
    let ok = http_backend(200, "{\"status\": \"ok\"}").await;
    let check = "    health_check: { type: http, path: /status, method: POST, expect_body: '\"status\": *\"ok\"', delay_loop: 200ms, connect_timeout: 500ms, retry: 0, warmup: 0s }\n";
    let p = proxy(&service(check, &[(ok, ""), (changing, "")]));
    let mut both = vec![(ok, 1), (changing, 1)];
    both.sort();
    wait_until(Duration::from_secs(3), || table(&p, "web") == both).await;
    *body.lock().unwrap() = "{\"status\": \"degraded\"}".into();
    wait_until(Duration::from_secs(3), || table(&p, "web") == [(ok, 1)]).await;
    let h = p.service("web").unwrap().health();
    assert_eq!(
        h[&changing].reason.as_deref(),
        Some("the body does not match expect_body \"\\\"status\\\": *\\\"ok\\\"\"")
    );
    *body.lock().unwrap() = "{\"load\": 9, \"status\":\"ok\"}".into();
    wait_until(Duration::from_secs(3), || table(&p, "web") == both).await;
    let seen = requests.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|l| l == "POST /status HTTP/1.0"),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_check_sets_the_weight_and_fails_on_status_1() {
    let (a, b, c) = (
        name_backend("a").await,
        name_backend("b").await,
        name_backend("c").await,
    );
    let misc = |cmd: &str| {
        format!(
            ", health_check: {{ type: misc, command: [sh, -c, \"{cmd}\"], dynamic: true, delay_loop: 200ms, timeout: 2s, warmup: 0s }}"
        )
    };
    let (ma, mb, mc) = (misc("exit 12"), misc("exit 1"), misc("sleep 10"));
    let p = proxy(&service("", &[(a, &ma), (b, &mb), (c, &mc)]));
    // exit 12: up with weight 10; exit 1: down; a hang is cut at 2 s.
    wait_until(Duration::from_secs(5), || {
        let h = p.service("web").unwrap().health();
        !h[&b].up && !h[&c].up
    })
    .await;
    assert_eq!(table(&p, "web"), [(a, 10)]);
    let h = p.service("web").unwrap().health();
    assert!(
        h[&b]
            .reason
            .as_deref()
            .unwrap()
            .contains("exited with status 1")
    );
    assert!(
        h[&c].reason.as_deref().unwrap().contains("ran over"),
        "{:?}",
        h[&c].reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpha_starts_down_and_inhibit_keeps_weight_zero() {
    let a = name_backend("a").await;
    let mut b = Killable::start("b").await;
    // alpha: down until the first check (a program that takes 500 ms).
    let slow = ", health_check: { type: misc, command: [sleep, \"0.5\"], delay_loop: 200ms, timeout: 2s, warmup: 0s }";
    let extra = format!("    alpha: true\n    inhibit_on_failure: true\n{FAST_TCP}");
    let p = proxy(&service(&extra, &[(a, slow), (b.addr, "")]));
    assert!(
        !table(&p, "web").iter().any(|(x, w)| *x == a && *w > 0),
        "alpha: a takes nothing before its check: {:?}",
        table(&p, "web")
    );
    wait_until(Duration::from_secs(3), || {
        let t = table(&p, "web");
        t.len() == 2 && t.iter().all(|(_, w)| *w == 1)
    })
    .await;
    // inhibit_on_failure: a dead server stays in the table with weight 0.
    b.kill();
    wait_until(Duration::from_secs(3), || {
        table(&p, "web").contains(&(b.addr, 0))
    })
    .await;
    assert_eq!(table(&p, "web").len(), 2);
    for _ in 0..10 {
        assert_eq!(fetch_name(vip(&p, "web")).await, "a");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sorry_server_takes_over_when_every_server_is_down() {
    let mut a = Killable::start("a").await;
    let mut b = Killable::start("b").await;
    let sorry = name_backend("sorry").await;
    let extra = format!("    sorry_server: \"{sorry}\"\n{FAST_TCP}");
    let p = proxy(&service(&extra, &[(a.addr, ""), (b.addr, "")]));
    let v = vip(&p, "web");
    a.kill();
    b.kill();
    wait_until(Duration::from_secs(3), || table(&p, "web") == [(sorry, 1)]).await;
    assert!(!p.service("web").unwrap().quorum_up());
    for _ in 0..5 {
        assert_eq!(fetch_name(v).await, "sorry");
    }
    a.restart().await;
    wait_until(Duration::from_secs(3), || table(&p, "web") == [(a.addr, 1)]).await;
    assert!(p.service("web").unwrap().quorum_up());
    assert_eq!(fetch_name(v).await, "a");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_connects_eject_a_server_until_it_answers() {
    let a = name_backend("a").await;
    let mut b = Killable::start("b").await;
    b.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let extra = "    passive: { failures: 2 }\n    connect_retries: 1\n";
    let p = proxy(&service(extra, &[(a, ""), (b.addr, "")]));
    let v = vip(&p, "web");
    // Every connection is served (the retry goes to a); b's refusals
    // count, and after two in a row it leaves the table.
    for _ in 0..6 {
        assert_eq!(fetch_name(v).await, "a");
    }
    assert_eq!(table(&p, "web"), [(a, 1)]);
    let h = p.service("web").unwrap().health();
    assert!(
        h[&b.addr]
            .reason
            .as_deref()
            .unwrap()
            .contains("connects in a row failed")
    );
    // It answers again: the readmission probe brings it back.
    b.restart().await;
    wait_until(Duration::from_secs(4), || table(&p, "web").len() == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_recovered_server() {
    let a = name_backend("a").await;
    let mut b = Killable::start("b").await;
    let extra = format!("    slow_start: 2s\n{FAST_TCP}");
    let p = proxy(&service(&extra, &[(a, ""), (b.addr, ", weight: 100")]));
    assert!(
        table(&p, "web").contains(&(b.addr, 100)),
        "up from the start: no ramp"
    );
    b.kill();
    wait_until(Duration::from_secs(3), || table(&p, "web").len() == 1).await;
    b.restart().await;
    wait_until(Duration::from_secs(3), || table(&p, "web").len() == 2).await;
    let w = |p: &Proxy| {
        table(p, "web")
            .iter()
            .find(|(x, _)| *x == b.addr)
            .map(|x| x.1)
            .unwrap()
    };
    let first = w(&p);
    assert!(first < 60, "ramping: {first}");
    wait_until(Duration::from_secs(4), || w(&p) == 100).await;
}

/// A UDP server that answers each datagram with `reply`.
async fn udp_answer(reply: &'static [u8]) -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let at = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = s.recv_from(&mut buf).await {
            let _ = s.send_to(reply, from).await;
        }
    });
    at
}

/// A DNS server answering every query with `rcode`.
async fn dns_server(rcode: u8) -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let at = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            let mut r = buf[..n].to_vec();
            r[2] |= 0x80; // QR
            r[3] = (r[3] & 0xf0) | rcode;
            let _ = s.send_to(&r, from).await;
        }
    });
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_dns_checks() {
    let echo = udp_answer(b"\x0aPONG").await;
    let wrong = udp_answer(b"\x0bNOPE").await;
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let yaml = format!(
        "services:\n  - name: u\n    listen: 127.0.0.1:0\n    proto: udp\n    health_check: {{ type: udp, payload: \"0a\", require_reply: \"0a\", delay_loop: 200ms, connect_timeout: 300ms, retry: 0, warmup: 0s }}\n    real_servers:\n      - address: \"{echo}\"\n      - address: \"{wrong}\"\n      - address: \"{closed}\"\n"
    );
    let p = proxy(&yaml);
    wait_until(Duration::from_secs(3), || table(&p, "u") == [(echo, 1)]).await;

    let (good, servfail) = (dns_server(0).await, dns_server(2).await);
    let yaml = format!(
        "services:\n  - name: d\n    listen: 127.0.0.1:0\n    proto: udp\n    health_check: {{ type: dns, name: example.com, query_type: A, delay_loop: 200ms, connect_timeout: 300ms, retry: 0, warmup: 0s }}\n    real_servers:\n      - address: \"{good}\"\n      - address: \"{servfail}\"\n"
    );
    let p = proxy(&yaml);
    wait_until(Duration::from_secs(3), || table(&p, "d") == [(good, 1)]).await;
    let h = p.service("d").unwrap().health();
    assert_eq!(
        h[&servfail].reason.as_deref(),
        Some("DNS answer with rcode 2")
    );
}

/// A thousand real servers are checked by the runtime's tasks, not a
/// thread each, and every check is cut at its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_servers_are_checked_without_a_thread_each() {
    // A thousand loopback addresses where nothing listens on port 1:
    // every check is refused at once.
    let mut y = String::from(
        "services:\n  - name: big\n    listen: 127.0.0.1:0\n    health_check: { type: tcp, delay_loop: 1s, retry: 0, warmup: 500ms }\n    real_servers:\n",
    );
    for i in 0..1000 {
        y.push_str(&format!(
            "      - address: 127.1.{}.{}:1\n",
            i / 250,
            i % 250 + 1
        ));
    }
    let threads = || {
        std::fs::read_dir("/proc/self/task")
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let before = threads();
    let p = proxy(&y);
    // (The table starts full, but a check whose warm-up drew a few
    // milliseconds may already have run by now: nothing to assert yet.)
    wait_until(Duration::from_secs(10), || table(&p, "big").is_empty()).await;
    let h = p.service("big").unwrap().health();
    assert_eq!(h.values().filter(|h| !h.up).count(), 1000);
    // Other tests run in this process too: a margin, far from a thread
    // per server.
    assert!(
        threads() < before + 100,
        "threads: {before} before, {} after",
        threads()
    );
}

/// An HTTPS server (self-signed) answering `status` with `body`.
async fn https_backend(status: u16, body: &'static str) -> SocketAddr {
    use std::sync::Arc;
    let cert = rcgen::generate_simple_self_signed(vec!["backend.test".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.0 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_checks_talk_tls() {
    let ok = https_backend(200, "fine").await;
    let failing = https_backend(500, "broken").await;
    // A plain HTTP server fails the handshake.
    let plain = http_backend(200, "plain").await;
    let check = "    health_check: { type: https, path: /, virtualhost: backend.test, delay_loop: 200ms, connect_timeout: 1s, retry: 0, warmup: 0s }\n";
    let p = proxy(&service(check, &[(ok, ""), (failing, ""), (plain, "")]));
    wait_until(Duration::from_secs(4), || table(&p, "web") == [(ok, 1)]).await;
    let h = p.service("web").unwrap().health();
    assert_eq!(h[&failing].reason.as_deref(), Some("HTTP status 500"));
    assert!(
        h[&plain]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("TLS handshake"),
        "{:?}",
        h[&plain].reason
    );
}
