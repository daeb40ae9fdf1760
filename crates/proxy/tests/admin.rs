//! The admin listener against a running proxy with real traffic: counters
//! move by exactly what was sent, live connections show, edits apply or
//! change nothing, the token guards edits, promtool accepts the scrape.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn one_service(backends: &[SocketAddr], extra: &str) -> String {
    let mut y = format!(
        "{extra}services:\n  - name: web\n    listen: 127.0.0.1:0\n    scheduler: rr\n    real_servers:\n"
    );
    for b in backends {
        y.push_str(&format!("      - address: \"{b}\"\n"));
    }
    y
}

/// Sends `n` bytes on a new connection through `vip` and reads the echo.
async fn echo_through(vip: SocketAddr, n: usize) {
    let mut s = TcpStream::connect(vip).await.unwrap();
    let data = vec![7u8; n];
    s.write_all(&data).await.unwrap();
    let mut back = vec![0u8; n];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, data);
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_by_exactly_what_was_sent() {
    let (a, b) = (echo_backend().await, echo_backend().await);
    let p = proxy(&one_service(
        &[a, b],
        "admin:\n  real_server_histograms: true\n",
    ));
    let vip = vip(&p, "web");
    let admin = admin(&p).await;
    for i in 0..10 {
        echo_through(vip, 1000 + i).await;
    }
    let sent: u64 = (0..10).map(|i| 1000 + i).sum();
    let svc = &get_json(admin, "/api/v1/services/web").await;
    let stats = &svc["stats"];
    assert_eq!(stats["conns"], 10);
    assert_eq!(stats["in_bytes"], sent);
    assert_eq!(stats["out_bytes"], sent);
    // Each connection is at least its SYN, data and FIN each way.
    assert!(stats["in_pkts"].as_u64().unwrap() >= 30, "{stats}");
    assert!(stats["out_pkts"].as_u64().unwrap() >= 20, "{stats}");
    let rs = svc["real_servers"].as_array().unwrap();
    let per: Vec<(u64, u64)> = rs
        .iter()
        .map(|r| {
            (
                r["stats"]["conns"].as_u64().unwrap(),
                r["stats"]["in_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(per.iter().map(|x| x.0).sum::<u64>(), 10);
    assert_eq!(per.iter().map(|x| x.1).sum::<u64>(), sent);
    assert!(per.iter().all(|x| x.0 == 5), "rr splits evenly: {per:?}");

    let (status, scrape) = http(admin, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let s = |series: &str| sample(&scrape, series).unwrap_or_else(|| panic!("{series}\n{scrape}"));
    assert_eq!(
        s(r#"rvs_service_connections_total{service="web",proto="tcp"}"#),
        10.0
    );
    assert_eq!(
        s(r#"rvs_service_bytes_total{service="web",proto="tcp",direction="in"}"#),
        sent as f64
    );
    assert_eq!(
        s(r#"rvs_service_bytes_total{service="web",proto="tcp",direction="out"}"#),
        sent as f64
    );
    assert_eq!(
        s(&format!(
            r#"rvs_real_server_connect_duration_seconds_count{{service="web",real_server="{a}"}}"#
        )),
        5.0
    );
    assert_eq!(
        s(r#"rvs_service_connect_duration_seconds_count{service="web",proto="tcp"}"#),
        10.0
    );
    assert_eq!(
        s(&format!(
            r#"rvs_real_server_weight{{service="web",real_server="{b}"}}"#
        )),
        1.0
    );
    assert_eq!(s("rvs_config_generation"), 1.0);
    assert!(s("process_open_fds") > 0.0);

    // A live connection: in the table, ESTABLISHED, its bytes counted
    // while it lasts.
    let mut live = TcpStream::connect(vip).await.unwrap();
    live.write_all(&[1u8; 500]).await.unwrap();
    let mut back = [0u8; 500];
    live.read_exact(&mut back).await.unwrap();
    let conns = get_json(admin, "/api/v1/connections").await;
    let list = conns["connections"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{conns}");
    let c = &list[0];
    assert_eq!(c["state"], "ESTABLISHED");
    assert_eq!(c["client"], live.local_addr().unwrap().to_string());
    assert_eq!(c["vip"], vip.to_string());
    assert_eq!(c["proto"], "TCP");
    assert!(
        c["expires"].as_u64().unwrap() > 890,
        "tcp timeout 900s: {c}"
    );
    let svc = get_json(admin, "/api/v1/services/web").await;
    assert_eq!(svc["stats"]["in_bytes"], sent + 500);
    assert_eq!(svc["active_conns"], 1);
    drop(live);

    // -Z: the tables count from zero; Prometheus counters do not go back.
    let (status, _) = http(admin, "POST", "/api/v1/zero", None, None).await;
    assert_eq!(status, 200);
    let svc = get_json(admin, "/api/v1/services/web").await;
    assert_eq!(svc["stats"]["conns"], 0);
    assert_eq!(svc["stats"]["in_bytes"], 0);
    assert_eq!(svc["real_servers"][0]["stats"]["in_bytes"], 0);
    let (_, scrape) = http(admin, "GET", "/metrics", None, None).await;
    assert_eq!(
        sample(
            &scrape,
            r#"rvs_service_connections_total{service="web",proto="tcp"}"#
        ),
        Some(11.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_services_count_datagrams_sessions_and_refusals() {
    let a = udp_backend("a").await;
    let yaml = format!(
        "services:\n  - name: dns\n    listen: 127.0.0.1:0\n    proto: udp\n    deny: [10.0.0.0/8]\n    real_servers:\n      - address: \"{a}\"\n"
    );
    let p = proxy(&yaml);
    let v = vip(&p, "dns");
    let admin = admin(&p).await;
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for msg in ["one", "two", "three"] {
        assert_eq!(
            udp_ask(&c, v, msg.as_bytes()).await.unwrap(),
            format!("a:{msg}")
        );
    }
    let svc = get_json(admin, "/api/v1/services/dns").await;
    assert_eq!(svc["stats"]["conns"], 1, "one session");
    assert_eq!(svc["stats"]["in_pkts"], 3);
    assert_eq!(svc["stats"]["out_pkts"], 3);
    assert_eq!(svc["stats"]["in_bytes"], 11);
    assert_eq!(svc["stats"]["out_bytes"], 17, "a: before each answer");
    assert_eq!(svc["udp"]["sessions"], 1);
    assert_eq!(svc["inactive_conns"], 1, "IPVS counts UDP as inactive");
    let conns = get_json(admin, "/api/v1/connections").await;
    assert_eq!(conns["connections"][0]["state"], "UDP");
    let (_, scrape) = http(admin, "GET", "/metrics", None, None).await;
    assert_eq!(
        sample(
            &scrape,
            r#"rvs_udp_datagrams_total{service="dns",direction="in"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&scrape, r#"rvs_udp_sessions{service="dns"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &scrape,
            r#"rvs_service_refused_total{service="dns",proto="udp",reason="acl"}"#
        ),
        Some(0.0)
    );
}

/// `promtool check metrics` (Debian's prometheus package) on a real
/// scrape of TCP and UDP services with traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_a_real_scrape() {
    let (a, u) = (echo_backend().await, udp_backend("u").await);
    let yaml = format!(
        "services:\n  - name: web\n    listen: 127.0.0.1:0\n    persistence: {{timeout: 60s}}\n    health_check: {{type: tcp, delay_loop: 100ms, warmup: 0s}}\n    sorry_server: 127.0.0.1:9\n    real_servers:\n      - address: \"{a}\"\n        u_threshold: 100\n  - name: dns\n    listen: 127.0.0.1:0\n    proto: udp\n    real_servers:\n      - address: \"{u}\"\n"
    );
    let p = proxy(&yaml);
    let admin = admin(&p).await;
    echo_through(vip(&p, "web"), 100).await;
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp_ask(&c, vip(&p, "dns"), b"x").await.unwrap();
    // A health check has run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, scrape) = http(admin, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    assert!(
        scrape.contains("rvs_real_server_health_checks_total{"),
        "{scrape}"
    );
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (.ci/run installs Debian's prometheus package)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{scrape}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every family is documented.
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/metrics.md"),
    )
    .unwrap();
    for line in scrape.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} is not in docs/metrics.md"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_apply_whole_and_bad_ones_change_nothing() {
    let (a, b) = (name_backend("a").await, name_backend("b").await);
    let p = proxy(&one_service(&[a], ""));
    let admin = admin(&p).await;
    let before = p.config();

    // A new service, in the file's own form (JSON here).
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let new_vip = free.local_addr().unwrap();
    drop(free);
    let body = format!(
        r#"{{"name": "api", "listen": "{new_vip}", "scheduler": "wrr", "real_servers": [{{"address": "{b}", "weight": 2}}]}}"#
    );
    let (status, reply) = http(admin, "POST", "/api/v1/services", Some(&body), None).await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(fetch_name(new_vip).await, "b");
    let (status, reply) = http(admin, "POST", "/api/v1/services", Some(&body), None).await;
    assert_eq!(status, 409);
    assert!(reply.contains("\"service_exists\""), "{reply}");

    // Bad bodies: a clear error placed in the body, nothing changes.
    let gen_before = p.generation();
    let (status, reply) = http(
        admin,
        "POST",
        "/api/v1/services",
        Some("name: x\nlisten: 127.0.0.1:1\nscheduler: bogus\n"),
        None,
    )
    .await;
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply.contains("request body:3:12: scheduler: unknown scheduler"),
        "{reply}"
    );
    let (status, reply) = http(admin, "POST", "/api/v1/services", Some("{"), None).await;
    assert!(status == 422 || status == 400, "{status} {reply}");
    let dup = format!(r#"{{"name": "x", "listen": "{new_vip}"}}"#);
    let (status, reply) = http(admin, "POST", "/api/v1/services", Some(&dup), None).await;
    assert_eq!(status, 409, "the address is api's: {reply}");
    let (status, reply) = http(
        admin,
        "POST",
        "/api/v1/services/web/real_servers",
        Some(r#"{"address": "127.0.0.1:9", "weight": 70000}"#),
        None,
    )
    .await;
    assert_eq!(status, 422, "{reply}");
    assert!(reply.contains("70000"), "{reply}");
    assert_eq!(p.generation(), gen_before, "refused edits apply nothing");

    // Real servers: add, edit, drain, delete.
    let path = "/api/v1/services/web/real_servers";
    let body = format!(r#"{{"address": "{b}", "weight": 3}}"#);
    assert_eq!(http(admin, "POST", path, Some(&body), None).await.0, 201);
    assert_eq!(http(admin, "POST", path, Some(&body), None).await.0, 409);
    let one = format!("{path}/{b}");
    let (status, reply) = http(
        admin,
        "PATCH",
        &one,
        Some(r#"{"weight": 5, "u_threshold": 9}"#),
        None,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let d = p.service("web").unwrap().scheduler().dest(b).unwrap();
    assert_eq!((d.weight(), d.params().u_threshold), (5, 9));
    assert_eq!(
        http(admin, "POST", &format!("{one}/drain"), None, None)
            .await
            .0,
        200
    );
    assert_eq!(
        p.service("web")
            .unwrap()
            .scheduler()
            .dest(b)
            .unwrap()
            .weight(),
        0
    );
    let svc = get_json(admin, "/api/v1/services/web").await;
    let states: Vec<&str> = svc["real_servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert!(states.contains(&"quiescent"), "{states:?}");
    assert_eq!(http(admin, "DELETE", &one, None, None).await.0, 200);
    let (status, reply) = http(admin, "DELETE", &one, None, None).await;
    assert_eq!(status, 404);
    assert!(reply.contains("no_such_destination"), "{reply}");
    let (status, reply) = http(admin, "DELETE", "/api/v1/services/nope", None, None).await;
    assert_eq!(status, 404);
    assert!(reply.contains("no_such_service"), "{reply}");

    // Timeouts, as ipvsadm --set: 0 leaves one as it is.
    let (status, reply) = http(
        admin,
        "PUT",
        "/api/v1/timeouts",
        Some(r#"{"tcp": 600, "tcpfin": 0, "udp": 30}"#),
        None,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let t = p.service("web").unwrap().spec().timeouts;
    assert_eq!(
        (t.tcp.as_secs(), t.tcpfin.as_secs(), t.udp.as_secs()),
        (600, 120, 30)
    );

    // The running configuration, as YAML, reads back to the same.
    let (status, yaml) = http(admin, "GET", "/api/v1/config", None, None).await;
    assert_eq!(status, 200);
    let back = rvs_proxy::Config::parse(&yaml, "running").unwrap();
    assert_eq!(back.services, p.config().services);
    assert_ne!(back.services, before.services);

    // Deleting a service closes its address.
    assert_eq!(
        http(admin, "DELETE", "/api/v1/services/api", None, None)
            .await
            .0,
        200
    );
    assert!(
        eventually(Duration::from_secs(3), || std::net::TcpStream::connect(
            new_vip
        )
        .is_err())
        .await
    );

    // Unknown routes and methods.
    assert_eq!(http(admin, "GET", "/api/v1/nope", None, None).await.0, 404);
    assert_eq!(http(admin, "POST", "/metrics", None, None).await.0, 405);
    assert_eq!(
        http(admin, "DELETE", "/api/v1/connections", None, None)
            .await
            .0,
        405
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_edits() {
    let a = name_backend("a").await;
    let p = proxy(&one_service(&[a], "admin:\n  token: s3cret\n"));
    let admin = admin(&p).await;
    let body = r#"{"address": "127.0.0.1:9"}"#;
    let path = "/api/v1/services/web/real_servers";
    let (status, reply) = http(admin, "POST", path, Some(body), None).await;
    assert_eq!(status, 401, "{reply}");
    assert!(reply.contains("unauthorized"), "{reply}");
    assert_eq!(
        http(admin, "POST", path, Some(body), Some("wrong")).await.0,
        401
    );
    assert_eq!(
        p.config().services[0].real_servers.len(),
        1,
        "nothing changed"
    );
    assert_eq!(
        http(admin, "POST", path, Some(body), Some("s3cret"))
            .await
            .0,
        201
    );
    assert_eq!(p.config().services[0].real_servers.len(), 2);
    // Reads need no token, and the token is never shown.
    let (status, yaml) = http(admin, "GET", "/api/v1/config", None, None).await;
    assert_eq!(status, 200);
    assert!(!yaml.contains("s3cret"), "{yaml}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_a_loopback_listener_takes_edits() {
    let a = name_backend("a").await;
    // The configured admin address is what decides; this one is not
    // loopback (the test serves the API on loopback all the same).
    let p = proxy(&one_service(&[a], "admin:\n  listen: 0.0.0.0:9180\n"));
    let admin = admin(&p).await;
    let (status, reply) = http(admin, "POST", "/api/v1/zero", None, None).await;
    assert_eq!(status, 403, "{reply}");
    assert!(reply.contains("not on loopback"), "{reply}");
    assert_eq!(
        http(admin, "GET", "/api/v1/services", None, None).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let a = name_backend("a").await;
    let p = proxy(&one_service(&[a], ""));
    let admin = admin(&p).await;
    assert_eq!(
        http(admin, "GET", "/healthz", None, None).await,
        (200, "ok\n".into())
    );
    assert_eq!(
        http(admin, "GET", "/readyz", None, None).await,
        (200, "ready\n".into())
    );
    let (status, page) = http(admin, "GET", "/", None, None).await;
    assert_eq!(status, 200);
    assert!(page.contains("/api/v1/services"), "the page polls the API");
    // Nothing loaded from elsewhere (the SVG namespace's URI is a name,
    // never fetched).
    for outside in ["src=", "href=", "@import", "url(", "<link", "fetch(\"http"] {
        assert!(!page.contains(outside), "the page loads {outside}");
    }
    let uris: Vec<&str> = page
        .match_indices("http")
        .map(|(i, _)| &page[i..i + 30.min(page.len() - i)])
        .collect();
    assert!(
        uris.iter()
            .all(|u| u.starts_with("http://www.w3.org/2000/svg")),
        "{uris:?}"
    );
    let p2 = p.clone();
    let drain = tokio::spawn(async move { p2.shutdown(Duration::from_secs(1)).await });
    assert!(
        eventually(Duration::from_secs(2), || !p.is_ready()).await,
        "draining is not ready"
    );
    assert_eq!(http(admin, "GET", "/readyz", None, None).await.0, 503);
    drain.await.unwrap();
}

/// IPVS names a half-closed connection by who sent the first FIN: the
/// client (FIN_WAIT) or the real server (CLOSE_WAIT). Both count inactive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_connections_are_named_by_who_closed_first() {
    // A server that writes one byte and keeps its side open for a while.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let held = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"h").await;
                tokio::time::sleep(Duration::from_secs(10)).await;
            });
        }
    });
    let closer = name_backend("c").await;
    let yaml = format!(
        "services:\n  - name: held\n    listen: 127.0.0.1:0\n    real_servers:\n      - address: \"{held}\"\n  - name: closer\n    listen: 127.0.0.2:0\n    real_servers:\n      - address: \"{closer}\"\n"
    );
    let p = proxy(&yaml);
    let admin = admin(&p).await;
    // The client ends its direction; the server holds on.
    let mut c1 = TcpStream::connect(vip(&p, "held")).await.unwrap();
    let mut name = [0u8; 1];
    c1.read_exact(&mut name).await.unwrap();
    c1.shutdown().await.unwrap();
    // The server ends its direction; the client holds on.
    let mut c2 = TcpStream::connect(vip(&p, "closer")).await.unwrap();
    let mut got = Vec::new();
    c2.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"c");
    let mut states = Vec::new();
    for _ in 0..100 {
        let conns = get_json(admin, "/api/v1/connections").await;
        states = conns["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["service"].as_str().unwrap().to_owned(),
                    c["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        states.sort();
        if states.len() == 2 && states.iter().all(|(_, s)| s != "ESTABLISHED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        states,
        [
            ("closer".to_owned(), "CLOSE_WAIT".to_owned()),
            ("held".to_owned(), "FIN_WAIT".to_owned())
        ]
    );
    for svc in ["held", "closer"] {
        let s = get_json(admin, &format!("/api/v1/services/{svc}")).await;
        assert_eq!(
            (s["active_conns"].as_u64(), s["inactive_conns"].as_u64()),
            (Some(0), Some(1)),
            "{svc}"
        );
    }
    drop((c1, c2));
}

/// A service deleted and added back at once gets its address again, even
/// while the old socket is still closing (a UDP session was open on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_deleted_and_added_back_at_once_is_bound_again() {
    let u = udp_backend("u").await;
    let t = name_backend("t").await;
    let p = proxy(&format!(
        "services:\n  - name: dns\n    listen: 127.0.0.1:0\n    proto: udp\n    real_servers:\n      - address: \"{u}\"\n  - name: web\n    listen: 127.0.0.1:0\n    real_servers:\n      - address: \"{t}\"\n"
    ));
    let (dns, web) = (vip(&p, "dns"), vip(&p, "web"));
    let full = format!(
        "services:\n  - name: dns\n    listen: \"{dns}\"\n    proto: udp\n    real_servers:\n      - address: \"{u}\"\n  - name: web\n    listen: \"{web}\"\n    real_servers:\n      - address: \"{t}\"\n"
    );
    let full = rvs_proxy::Config::parse(&full, "full").unwrap();
    let empty = rvs_proxy::Config::parse("services: []", "empty").unwrap();
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..20 {
        assert_eq!(udp_ask(&c, dns, b"y").await.unwrap(), "u:y");
        assert_eq!(fetch_name(web).await, "t");
        // No await between the two: the old sockets close on other tasks.
        p.apply(empty.clone()).unwrap();
        p.apply(full.clone()).unwrap();
    }
}

/// Deeply nested bodies are refused in one linear pass, before the YAML
/// parser (whose work grows with the square of the depth) sees them, and
/// nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_bodies_are_refused_at_once() {
    let be = echo_backend().await;
    let p = proxy(&one_service(&[be], ""));
    let adm = admin(&p).await;
    let before = p.generation();
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let t = std::time::Instant::now();
    let (status, body) = http(adm, "POST", "/api/v1/services", Some(&deep), None).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("nested deeper than 64 levels"), "{body}");
    let maps = format!("{}1{}", "{\"weight\": ".repeat(50_000), "}".repeat(50_000));
    let (status, body) = http(
        adm,
        "PATCH",
        &format!("/api/v1/services/web/real_servers/{be}"),
        Some(&maps),
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nested deeper than 64 levels"), "{body}");
    // Both together took 8 s and more before; a bound far above the
    // milliseconds they take now, for a loaded machine.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(p.generation(), before, "nothing changed");
}

/// Sends `raw` as it is and reads the answer's status line, with the time
/// it took; `None` when the server closed without answering.
async fn raw_request(admin: SocketAddr, raw: &[u8]) -> (Option<u16>, String, Duration) {
    let started = std::time::Instant::now();
    let mut s = TcpStream::connect(admin).await.unwrap();
    // The server may answer (and close) before taking the whole body.
    let _ = s.write_all(raw).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok());
    (status, text, started.elapsed())
}

/// Hostile requests: each is answered 4xx with a reason (or closed, for
/// headers that never end) within a bound, changes nothing, and does not
/// hold up anyone else's request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_within_a_bound_and_change_nothing() {
    let a = name_backend("a").await;
    let p = proxy(&one_service(&[a], "admin:\n  token: s3cret\n"));
    let admin = admin(&p).await;
    let generation = p.generation();
    let path = "/api/v1/services/web/real_servers";
    let bound = Duration::from_secs(5);

    // A body over the limit, announced: refused before it is read.
    let huge = format!(
        "POST {path} HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer s3cret\r\nContent-Type: application/json\r\nContent-Length: 4000000000\r\n\r\n{{"
    );
    let (status, text, took) = raw_request(admin, huge.as_bytes()).await;
    assert_eq!(status, Some(413), "{text}");
    assert!(text.contains("too_large"), "{text}");
    assert!(took < bound, "{took:?}");
    // Sent whole (2 MiB, chunked so no length announces it).
    let chunk = vec![b'a'; 2 << 20];
    let mut sent = format!(
        "POST {path} HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer s3cret\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        chunk.len()
    )
    .into_bytes();
    sent.extend_from_slice(&chunk);
    sent.extend_from_slice(b"\r\n0\r\n\r\n");
    let (status, text, _) = raw_request(admin, &sent).await;
    assert_eq!(status, Some(413), "{text}");

    // Malformed JSON, an unknown field, the wrong type: 4xx naming why.
    for (body, why) in [
        (r#"{"address": "127.0.0.1:9", "weight": "#, "request body"),
        (r#"{"address": "127.0.0.1:9", "wieght": 3}"#, "wieght"),
        (r#"{"address": "127.0.0.1:9", "weight": "heavy"}"#, "weight"),
        (r#"["127.0.0.1:9"]"#, "request body"),
        ("\u{0}\u{1}\u{2}", "request body"),
    ] {
        let (status, reply) = http(admin, "POST", path, Some(body), Some("s3cret")).await;
        assert!((400..500).contains(&status), "{body}: {status} {reply}");
        assert!(reply.contains(why), "{body}: {reply}");
    }
    // Wrong methods, missing and wrong tokens, a token of another length.
    assert_eq!(http(admin, "PUT", "/metrics", None, None).await.0, 405);
    assert_eq!(http(admin, "PATCH", "/readyz", None, None).await.0, 405);
    assert_eq!(
        http(
            admin,
            "GET",
            "/api/v1/services/web/real_servers/x",
            None,
            None
        )
        .await
        .0,
        404
    );
    for token in [None, Some("s3creT"), Some("s3cret-and-more"), Some("")] {
        let (status, reply) = http(admin, "DELETE", "/api/v1/services", None, token).await;
        assert_eq!(status, 401, "{token:?}: {reply}");
    }
    // A request line and headers of garbage.
    let (status, text, took) = raw_request(admin, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").await;
    assert!(status.is_none() || status == Some(400), "{text}");
    assert!(took < bound, "{took:?}");
    let long_header = format!(
        "GET /healthz HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let (status, text, took) = raw_request(admin, long_header.as_bytes()).await;
    assert!(
        status.is_none() || status == Some(431) || status == Some(400),
        "{text}"
    );
    assert!(took < bound, "{took:?}");

    // Slow loris: headers a byte at a time, and a body that never comes.
    // Both are cut at the read timeout while other requests go through.
    let loris = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut s = TcpStream::connect(admin).await.unwrap();
        let mut closed = false;
        for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
            .take(60)
        {
            if s.write_all(&[*b]).await.is_err() {
                closed = true;
                break;
            }
            let mut one = [0u8; 1];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(500), s.read(&mut one)).await
            {
                closed = true;
                break;
            }
        }
        (closed, started.elapsed())
    });
    let stalled = tokio::spawn(async move {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer s3cret\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        );
        raw_request(admin, head.as_bytes()).await
    });
    for _ in 0..20 {
        let t = std::time::Instant::now();
        assert_eq!(http(admin, "GET", "/healthz", None, None).await.0, 200);
        assert!(t.elapsed() < bound, "{:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (closed, after) = loris.await.unwrap();
    assert!(closed, "a slow-loris connection is closed");
    let limit = rvs_proxy::admin::READ_TIMEOUT + Duration::from_secs(5);
    assert!(after < limit, "closed after {after:?}");
    let (status, text, took) = stalled.await.unwrap();
    assert_eq!(status, Some(408), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(took < limit, "{took:?}");

    assert_eq!(p.generation(), generation, "nothing changed");
    assert_eq!(p.config().services[0].real_servers.len(), 1);
}

/// `?scope=` chooses the families (as HAProxy's exporter does); the
/// per-real-server connect-time histogram is there only when asked for;
/// a scrape is sent in chunks as it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_are_scoped_and_written_as_sent() {
    let a = echo_backend().await;
    let mut yaml = String::from("services:\n");
    for i in 0..300 {
        yaml.push_str(&format!(
            "  - name: s{i}\n    listen: 127.1.{}.{}:0\n    real_servers:\n      - address: \"{a}\"\n      - address: 127.0.0.1:{}\n",
            i / 200,
            1 + i % 200,
            10000 + i
        ));
    }
    let p = proxy(&yaml);
    echo_through(vip(&p, "s0"), 10).await;
    let admin = admin(&p).await;
    let families = |scrape: &str| -> Vec<String> {
        scrape
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect()
    };
    let (status, all) = http(admin, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    let every = families(&all);
    assert!(every.contains(&"rvs_service_connect_duration_seconds".to_owned()));
    assert!(every.contains(&"rvs_real_server_up".to_owned()));
    assert!(every.contains(&"process_open_fds".to_owned()));
    assert!(
        !every.contains(&"rvs_real_server_connect_duration_seconds".to_owned()),
        "the per-server histogram is opt-in"
    );
    assert_eq!(
        sample(
            &all,
            r#"rvs_service_connect_duration_seconds_count{service="s0",proto="tcp"}"#
        ),
        Some(1.0)
    );
    // Each family once, all its samples together.
    let mut sorted = every.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), every.len(), "a family written twice");
    for (query, has, lacks) in [
        (
            "scope=service",
            "rvs_service_",
            vec!["rvs_real_server_", "process_", "rvs_config_"],
        ),
        (
            "scope=real_server",
            "rvs_real_server_",
            vec!["rvs_service_", "process_", "rvs_config_"],
        ),
        (
            "scope=global",
            "rvs_config_",
            vec!["rvs_service_", "rvs_real_server_"],
        ),
        (
            "scope=service&scope=global",
            "process_",
            vec!["rvs_real_server_"],
        ),
    ] {
        let (status, scrape) = http(admin, "GET", &format!("/metrics?{query}"), None, None).await;
        assert_eq!(status, 200, "{query}: {scrape}");
        let f = families(&scrape);
        assert!(f.iter().any(|n| n.starts_with(has)), "{query}: {f:?}");
        for l in lacks {
            assert!(
                !f.iter().any(|n| n.starts_with(l)),
                "{query} has {l}: {f:?}"
            );
        }
    }
    let (status, scrape) = http(admin, "GET", "/metrics?scope=", None, None).await;
    assert_eq!((status, scrape.as_str()), (200, ""));
    let (status, reply) = http(admin, "GET", "/metrics?scope=backend", None, None).await;
    assert_eq!(status, 400);
    assert!(reply.contains("unknown scope"), "{reply}");
    // Sent in chunks: the scrape (300 services) is several.
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    let chunks = body.matches("\r\n").count() / 2;
    assert!(chunks > 3, "{chunks} chunks for {} bytes", body.len());
    // The same text as the whole scrape before (the process's own figures
    // aside, which move between two scrapes).
    let mine = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("process_"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(mine(&dechunk(body)), mine(&all));
}

/// A request as a browser (or anyone) sends it: the headers given, a body,
/// `Connection: close`. The status (`None`: closed unanswered) and the
/// whole answer.
async fn send(
    admin: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (Option<u16>, String) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let (status, text, _) = raw_request(admin, req.as_bytes()).await;
    (status, text)
}

/// What a page on another origin can make a browser send without a
/// preflight — a form, or `fetch` with `text/plain` — and what a DNS
/// rebinding page sends: each refused, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_are_refused_and_change_nothing() {
    let a = name_backend("a").await;
    let p = proxy(&one_service(&[a], ""));
    let admin = admin(&p).await;
    let host = admin.to_string();
    let generation = p.generation();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let chosen = free.local_addr().unwrap();
    drop(free);
    let service = format!(
        r#"{{"name": "evil", "listen": "{chosen}", "real_servers": [{{"address": "127.0.0.1:9"}}]}}"#
    );
    let evil = "http://attacker.example";
    for (content_type, origin) in [
        ("text/plain", None),
        ("text/plain;charset=UTF-8", Some(evil)),
        ("application/x-www-form-urlencoded", Some(evil)),
        ("multipart/form-data; boundary=x", Some(evil)),
    ] {
        let mut headers = vec![("Host", host.as_str()), ("Content-Type", content_type)];
        if let Some(o) = origin {
            headers.push(("Origin", o));
        }
        let (status, text) = send(admin, "POST", "/api/v1/services", &headers, &service).await;
        match origin {
            None => {
                assert_eq!(status, Some(415), "{content_type}: {text}");
                assert!(text.contains("unsupported_media_type"), "{text}");
            }
            Some(_) => {
                assert_eq!(status, Some(403), "{content_type}: {text}");
                assert!(text.contains("cross_origin"), "{text}");
            }
        }
    }
    // The simple POSTs of drain and zero: a text/plain form, an empty
    // fetch from another origin, a fetch the browser marks cross-site.
    let drain = format!("/api/v1/services/web/real_servers/{a}/drain");
    for (path, headers) in [
        (drain.as_str(), vec![("Content-Type", "text/plain")]),
        (drain.as_str(), vec![("Origin", evil)]),
        ("/api/v1/zero", vec![("Origin", "null")]),
        ("/api/v1/zero", vec![("Sec-Fetch-Site", "cross-site")]),
        (
            "/api/v1/zero",
            vec![
                ("Origin", "http://127.0.0.1:1"),
                ("Content-Type", "application/json"),
            ],
        ),
    ] {
        let mut all = vec![("Host", host.as_str())];
        all.extend(headers.iter().copied());
        let (status, text) = send(admin, "POST", path, &all, "").await;
        assert!(
            matches!(status, Some(403 | 415)),
            "{path} {headers:?}: {text}"
        );
    }
    // A rebinding page: its own origin, a foreign Host.
    let rebound = "rebind.attacker.example:9180";
    let (status, text) = send(
        admin,
        "DELETE",
        "/api/v1/services/web",
        &[
            ("Host", rebound),
            ("Origin", "http://rebind.attacker.example:9180"),
        ],
        "",
    )
    .await;
    assert_eq!(status, Some(403), "{text}");
    assert!(text.contains("host_not_allowed"), "{text}");
    assert_eq!(p.generation(), generation, "nothing changed");
    assert_eq!(p.config().services.len(), 1);
    assert_eq!(p.config().services[0].real_servers[0].params.weight, 1);
    assert!(
        TcpStream::connect(chosen).await.is_err(),
        "nothing listens on {chosen}"
    );

    // The same changes, as rvsadm and curl -H 'Content-Type:
    // application/json' send them (same origin, or none), pass.
    let json = [
        ("Host", host.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (status, text) = send(admin, "POST", "/api/v1/services", &json, &service).await;
    assert_eq!(status, Some(201), "{text}");
    let own_origin = format!("http://{host}");
    let (status, text) = send(
        admin,
        "POST",
        &drain,
        &[("Host", "localhost"), ("Origin", "http://localhost")],
        "",
    )
    .await;
    assert_eq!(status, Some(200), "{text}");
    let (status, text) = send(
        admin,
        "POST",
        "/api/v1/zero",
        &[
            ("Host", &host),
            ("Origin", &own_origin),
            ("Sec-Fetch-Site", "same-origin"),
        ],
        "",
    )
    .await;
    assert_eq!(status, Some(200), "{text}");
}

/// The Host rule: reads and changes need a Host that names the listener
/// (its address, localhost, a name of admin.allowed_hosts), the token
/// notwithstanding; probes and scrapes answer whatever the Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_is_refused_for_reads_and_changes() {
    let a = name_backend("a").await;
    let p = proxy(&one_service(
        &[a],
        "admin:\n  token: s3cret\n  allowed_hosts: [rvs.example.test, \"*.lb.example.test\"]\n",
    ));
    let admin = admin(&p).await;
    let auth = "Bearer s3cret";
    for path in ["/api/v1/config", "/api/v1/services", "/"] {
        for headers in [
            vec![("Host", "rebind.attacker.example:9180")],
            vec![
                ("Host", "rebind.attacker.example:9180"),
                ("Authorization", auth),
            ],
            vec![("Host", "127.0.0.2")],
        ] {
            let (status, text) = send(admin, "GET", path, &headers, "").await;
            assert_eq!(status, Some(403), "{path} {headers:?}: {text}");
            assert!(!text.contains("real_servers"), "{text}");
        }
    }
    let (status, text) = send(
        admin,
        "DELETE",
        "/api/v1/services/web",
        &[("Host", "attacker.example"), ("Authorization", auth)],
        "",
    )
    .await;
    assert_eq!(status, Some(403), "{text}");
    assert_eq!(p.config().services.len(), 1);
    for path in ["/metrics", "/healthz", "/readyz"] {
        let (status, text) = send(
            admin,
            "GET",
            path,
            &[("Host", "prometheus.target:9180")],
            "",
        )
        .await;
        assert_eq!(status, Some(200), "{path}: {text}");
    }
    for host in [
        admin.to_string(),
        "127.0.0.1".into(),
        format!("localhost:{}", admin.port()),
        "rvs.example.test".into(),
        "a.lb.example.test:9180".into(),
    ] {
        let (status, text) = send(admin, "GET", "/api/v1/config", &[("Host", &host)], "").await;
        assert_eq!(status, Some(200), "{host}: {text}");
    }
    // Absolute-form targets name a host too.
    let (status, text) = send(
        admin,
        "GET",
        "http://attacker.example/api/v1/config",
        &[("Host", &admin.to_string())],
        "",
    )
    .await;
    assert_eq!(status, Some(403), "{text}");
}

/// Secrets of the configuration (misc check arguments written {secret:},
/// HTTP check query values) are shown only to a request with the token;
/// a service sent back redacted keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_shown_only_with_the_token_and_kept_when_sent_back() {
    let a = name_backend("a").await;
    let yaml = format!(
        r#"admin:
  token: s3cret
services:
  - name: web
    listen: 127.0.0.1:0
    scheduler: rr
    health_checks:
      - {{type: misc, command: [/bin/true, --password, {{secret: hunter2}}], delay_loop: 60s}}
      - {{type: http, path: "/status?key=k3y", delay_loop: 60s}}
    real_servers:
      - address: "{a}"
"#
    );
    let p = proxy(&yaml);
    let admin = admin(&p).await;
    let host = admin.to_string();
    let secrets = ["hunter2", "k3y", "s3cret"];
    let (status, config) = send(admin, "GET", "/api/v1/config", &[("Host", &host)], "").await;
    assert_eq!(status, Some(200), "{config}");
    assert!(config.contains("<redacted>"), "{config}");
    let (_, service) = send(admin, "GET", "/api/v1/services/web", &[("Host", &host)], "").await;
    for s in secrets {
        assert!(!config.contains(s), "{s}: {config}");
        assert!(!service.contains(s), "{s}: {service}");
    }
    let with = [("Host", host.as_str()), ("Authorization", "Bearer s3cret")];
    let (_, shown) = send(admin, "GET", "/api/v1/config", &with, "").await;
    assert!(
        shown.contains("hunter2") && shown.contains("k3y"),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "the token itself never: {shown}");
    let wrong = [("Host", host.as_str()), ("Authorization", "Bearer guess")];
    assert_eq!(
        send(admin, "GET", "/api/v1/config", &wrong, "").await.0,
        Some(401)
    );

    // rvsadm -E's way: read the service (without the token), change a
    // key, send it back.
    let v: serde_json::Value =
        serde_json::from_str(service.split_once("\r\n\r\n").map_or("", |(_, b)| b)).unwrap();
    let mut body = v["config"].clone();
    body["scheduler"] = "wrr".into();
    let body = body.to_string();
    assert!(body.contains("<redacted>"), "{body}");
    let put = [
        ("Host", host.as_str()),
        ("Authorization", "Bearer s3cret"),
        ("Content-Type", "application/json"),
    ];
    let (status, text) = send(admin, "PUT", "/api/v1/services/web", &put, &body).await;
    assert_eq!(status, Some(200), "{text}");
    let running = p.config();
    let checks = &running.services[0].health.checks;
    let running_yaml = running.to_yaml();
    assert!(running_yaml.contains("hunter2"), "{running_yaml}");
    assert!(running_yaml.contains("/status?key=k3y"), "{running_yaml}");
    assert!(!running_yaml.contains("<redacted>"), "{running_yaml}");
    assert_eq!(checks.len(), 2);
    assert_eq!(running.services[0].sched.scheduler.name(), "wrr");

    // A new service cannot borrow a secret it never had.
    let mut new = v["config"].clone();
    new["name"] = "other".into();
    new["listen"] = serde_json::json!(["127.0.0.1:0"]);
    let (status, text) = send(admin, "POST", "/api/v1/services", &put, &new.to_string()).await;
    assert_eq!(status, Some(422), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
    assert_eq!(p.config().services.len(), 1);
}

/// A thousand idle connections to the admin port (what any local user can
/// open): the probes still answer, through the probe lane; another client
/// address is still served whole; what the lane does not serve is 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_admin_connections_leave_the_probes_answered() {
    let a = name_backend("a").await;
    let p = proxy(&one_service(&[a], ""));
    let admin = admin(&p).await;
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(admin).await.unwrap());
    }
    // Past the per-source cap (64) and the lane (32): the probes from the
    // same address are answered, again and again.
    for _ in 0..5 {
        for (path, body) in [("/readyz", "ready\n"), ("/healthz", "ok\n")] {
            let t = std::time::Instant::now();
            let (status, text) =
                send(admin, "GET", path, &[("Host", &admin.to_string())], "").await;
            assert_eq!(status, Some(200), "{path}: {text}");
            assert!(text.ends_with(body), "{text}");
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        }
    }
    let (status, text) = send(
        admin,
        "GET",
        "/api/v1/services",
        &[("Host", "127.0.0.1")],
        "",
    )
    .await;
    assert_eq!(status, Some(503), "{text}");
    assert!(
        text.contains("busy") && text.contains("Retry-After: 1"),
        "{text}"
    );
    // Another address has places of its own.
    let mut other = connect_from("127.0.0.2".parse().unwrap(), admin)
        .await
        .unwrap();
    other
        .write_all(
            format!("GET /api/v1/services HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let reply = String::from_utf8(read_all(&mut other).await).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"web\""), "{reply}");
    // Idle served connections are closed after the header timeout: then
    // everything is served again.
    let t = std::time::Instant::now();
    let mut closed = 0;
    for s in &mut idle {
        let mut one = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(10), s.read(&mut one)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, idle.len(), "every idle connection is closed");
    assert!(
        t.elapsed() < rvs_proxy::admin::HEADER_TIMEOUT + Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
    drop(idle);
    assert_eq!(
        get_json(admin, "/api/v1/services").await["services"][0]["name"],
        "web"
    );
}
