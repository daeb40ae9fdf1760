//! DNS discovery against a real DNS server (dnsmasq on loopback): addresses
//! added, removed and changed while traffic flows, SRV weights and
//! priorities, a resolver that stops answering, AAAA, a name that never
//! resolved, NXDOMAIN's hold, and two replicas that must agree.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::dns::Dnsmasq;
use common::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A backend on `ip:port` that writes `NAME\n`, then echoes lines until
/// the client closes.
async fn line_backend(ip: &str, port: u16, name: &str) -> SocketAddr {
    let l = TcpListener::bind((ip.parse::<IpAddr>().unwrap(), port))
        .await
        .unwrap();
    let at = l.local_addr().unwrap();
    let name = name.to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let name = name.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                if w.write_all(format!("{name}\n").as_bytes()).await.is_err() {
                    return;
                }
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    if w.write_all(format!("{l}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    at
}

/// A free port on 127.0.0.11 (the backends use 127.0.0.11 and up).
async fn port() -> u16 {
    let l = TcpListener::bind("127.0.0.11:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// Connects, reads the backend's name, and keeps the connection.
async fn open(vip: SocketAddr) -> (String, BufReader<TcpStream>) {
    let s = TcpStream::connect(vip).await.unwrap();
    let mut r = BufReader::new(s);
    let mut name = String::new();
    tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut name))
        .await
        .unwrap()
        .unwrap();
    (name.trim().to_owned(), r)
}

async fn name_of(vip: SocketAddr) -> String {
    open(vip).await.0
}

/// The names `n` new connections reach.
async fn names(vip: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for _ in 0..n {
        *m.entry(name_of(vip).await).or_default() += 1;
    }
    m
}

/// The service's table as (address, weight), in list order.
fn table(p: &rvs_proxy::Proxy, svc: &str) -> Vec<(String, i32)> {
    p.service(svc)
        .unwrap()
        .scheduler()
        .dests()
        .iter()
        .map(|d| (d.addr().to_string(), d.weight()))
        .collect()
}

async fn wait_table(p: &rvs_proxy::Proxy, svc: &str, want: &[(&str, i32)]) {
    let want: Vec<(String, i32)> = want.iter().map(|(a, w)| ((*a).to_owned(), *w)).collect();
    let mut sorted_want = want.clone();
    sorted_want.sort();
    let ok = eventually(Duration::from_secs(10), || {
        let mut t = table(p, svc);
        t.sort();
        t == sorted_want
    })
    .await;
    assert!(ok, "table {:?}, wanted {:?}", table(p, svc), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_added_removed_and_changed_while_traffic_flows() {
    let port = port().await;
    for (ip, name) in [
        ("127.0.0.11", "a"),
        ("127.0.0.12", "b"),
        ("127.0.0.13", "c"),
        ("127.0.0.14", "d"),
    ] {
        line_backend(ip, port, name).await;
    }
    let dns = Dnsmasq::start(
        "churn",
        &["127.0.0.11 web.test", "127.0.0.12 web.test"],
        &[],
    );
    let p = proxy(&format!(
        "{}services:\n  - name: web\n    listen: 127.0.0.1:0\n    scheduler: rr\n    real_servers:\n      - dns: web.test:{port}\n        weight: 2\n",
        dns.global("200ms", "")
    ));
    let v = vip(&p, "web");
    let (a, b) = (format!("127.0.0.11:{port}"), format!("127.0.0.12:{port}"));
    let (c, d) = (format!("127.0.0.13:{port}"), format!("127.0.0.14:{port}"));
    wait_table(&p, "web", &[(&a, 2), (&b, 2)]).await;
    assert_eq!(
        names(v, 4).await,
        BTreeMap::from([("a".into(), 2), ("b".into(), 2)])
    );

    // Added: the next resolution brings c.
    dns.set_hosts(&[
        "127.0.0.11 web.test",
        "127.0.0.12 web.test",
        "127.0.0.13 web.test",
    ]);
    wait_table(&p, "web", &[(&a, 2), (&b, 2), (&c, 2)]).await;
    assert_eq!(names(v, 3).await.len(), 3);

    // A long connection to b, then b leaves DNS: TCP keeps it quiescent
    // (weight 0) while the connection lasts, and it still works.
    let mut held = None;
    for _ in 0..6 {
        let (n, r) = open(v).await;
        if n == "b" {
            held = Some(r);
            break;
        }
    }
    let mut held = held.expect("rr reaches b within 6 connections");
    dns.set_hosts(&["127.0.0.11 web.test", "127.0.0.13 web.test"]);
    wait_table(&p, "web", &[(&a, 2), (&b, 0), (&c, 2)]).await;
    let seen = names(v, 6).await;
    assert!(
        !seen.contains_key("b"),
        "quiescent b takes no new connection: {seen:?}"
    );
    held.get_mut().write_all(b"still here\n").await.unwrap();
    let mut echo = String::new();
    held.read_line(&mut echo).await.unwrap();
    assert_eq!(echo, "still here\n", "b's open connection goes on");
    let api = get_json(admin(&p).await, "/api/v1/services/web").await;
    let b_row = api["real_servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == b.as_str())
        .unwrap()
        .clone();
    assert_eq!(b_row["state"], "quiescent");
    assert_eq!(b_row["discovered_by"], format!("dns:web.test:{port}"));
    assert_eq!(api["discovery"][0]["leaving"], 1);
    // Its last connection ends: it leaves the table.
    drop(held);
    wait_table(&p, "web", &[(&a, 2), (&c, 2)]).await;

    // Changed: a is replaced by d.
    dns.set_hosts(&["127.0.0.14 web.test", "127.0.0.13 web.test"]);
    wait_table(&p, "web", &[(&c, 2), (&d, 2)]).await;
    assert_eq!(
        names(v, 4).await,
        BTreeMap::from([("c".into(), 2), ("d".into(), 2)])
    );
    // Unchanged servers kept their counters through every change.
    let cd = p
        .service("web")
        .unwrap()
        .scheduler()
        .dest(c.parse().unwrap())
        .unwrap();
    assert!(
        cd.conns_total() >= 3,
        "c counted since it came: {}",
        cd.conns_total()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_targets_ports_and_weights_of_the_lowest_priority() {
    let port = port().await;
    line_backend("127.0.0.11", port, "a").await;
    line_backend("127.0.0.12", port, "b").await;
    let hosts = [
        "127.0.0.11 a.test",
        "127.0.0.12 b.test",
        "127.0.0.13 c.test",
    ];
    let srv = |wa: u16| {
        vec![
            format!("_x._tcp.api.test,a.test,{port},0,{wa}"),
            format!("_x._tcp.api.test,b.test,{port},0,1"),
            // A higher priority number: a backup, not used.
            format!("_x._tcp.api.test,c.test,{port},1,5"),
        ]
    };
    let records = srv(3);
    let mut dns = Dnsmasq::start(
        "srv",
        &hosts,
        &records.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let p = proxy(&format!(
        "{}services:\n  - name: api\n    listen: 127.0.0.1:0\n    scheduler: wrr\n    real_servers:\n      - srv: _x._tcp.api.test\n",
        dns.global("200ms", "")
    ));
    let (a, b) = (format!("127.0.0.11:{port}"), format!("127.0.0.12:{port}"));
    wait_table(&p, "api", &[(&a, 3), (&b, 1)]).await;
    let v = vip(&p, "api");
    assert_eq!(
        names(v, 8).await,
        BTreeMap::from([("a".into(), 6), ("b".into(), 2)])
    );
    // Weight 0 in the record: quiescent.
    let records = srv(0);
    dns.restart(&records.iter().map(String::as_str).collect::<Vec<_>>());
    wait_table(&p, "api", &[(&a, 0), (&b, 1)]).await;
    assert_eq!(names(v, 3).await, BTreeMap::from([("b".into(), 3)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_that_stops_answering_keeps_the_servers_and_says_so() {
    let port = port().await;
    line_backend("127.0.0.11", port, "a").await;
    let mut dns = Dnsmasq::start("silent", &["127.0.0.11 web.test"], &[]);
    let p = proxy(&format!(
        "{}services:\n  - name: web\n    listen: 127.0.0.1:0\n    real_servers:\n      - dns: web.test:{port}\n",
        dns.global("200ms", "")
    ));
    let a = format!("127.0.0.11:{port}");
    wait_table(&p, "web", &[(&a, 1)]).await;
    let adm = admin(&p).await;
    dns.stop();
    let failing = async {
        for _ in 0..100 {
            let j = get_json(adm, "/api/v1/services/web").await;
            if j["discovery"][0]["state"] == "failing" {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the entry never showed as failing");
    }
    .await;
    assert!(
        failing["discovery"][0]["resolutions"]["failed"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(failing["discovery"][0]["error"].as_str().unwrap().len() > 3);
    // Well past several intervals: the server stays and serves.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(table(&p, "web"), [(a.clone(), 1)]);
    assert_eq!(name_of(vip(&p, "web")).await, "a");
    let (_, scrape) = http(adm, "GET", "/metrics", None, None).await;
    let series = format!("rvs_dns_failing{{service=\"web\",entry=\"dns:web.test:{port}\"}}");
    assert_eq!(sample(&scrape, &series), Some(1.0), "{scrape}");
    // The status page, rendered by a browser, says so.
    let dom = rendered_status_page(adm).await;
    assert!(
        dom.contains(&format!(
            "class=\"dns failing\" data-entry=\"dns:web.test:{port}\""
        )),
        "{dom}"
    );
    assert!(dom.contains("(the servers in force stay)"), "{dom}");
    dns.restart(&[]);
    let ok = async {
        for _ in 0..100 {
            let j = get_json(adm, "/api/v1/services/web").await;
            if j["discovery"][0]["state"] == "ok" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the entry never recovered");
    };
    ok.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aaaa_records_are_real_servers_too() {
    let l6 = TcpListener::bind("[::1]:0").await.unwrap();
    let port = l6.local_addr().unwrap().port();
    drop(l6);
    line_backend("::1", port, "six").await;
    line_backend("127.0.0.11", port, "four").await;
    let dns = Dnsmasq::start("aaaa", &["::1 dual.test", "127.0.0.11 dual.test"], &[]);
    let p = proxy(&format!(
        "{}services:\n  - name: web\n    listen: 127.0.0.1:0\n    scheduler: rr\n    real_servers:\n      - dns: dual.test:{port}\n",
        dns.global("200ms", "")
    ));
    wait_table(
        &p,
        "web",
        &[
            (&format!("127.0.0.11:{port}"), 1),
            (&format!("[::1]:{port}"), 1),
        ],
    )
    .await;
    assert_eq!(
        names(vip(&p, "web"), 4).await,
        BTreeMap::from([("four".into(), 2), ("six".into(), 2)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_never_resolved_has_no_server_until_it_does_and_nxdomain_holds() {
    let port = port().await;
    line_backend("127.0.0.11", port, "a").await;
    let dns = Dnsmasq::start("nx", &[], &[]);
    let p = proxy(&format!(
        "{}services:\n  - name: web\n    listen: 127.0.0.1:0\n    real_servers:\n      - dns: later.test:{port}\n",
        dns.global("200ms", "    hold_nx: 1500ms\n")
    ));
    let adm = admin(&p).await;
    // Started, with no server: refused, and the API says why.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let j = get_json(adm, "/api/v1/services/web").await;
    assert_eq!(j["discovery"][0]["servers"], 0);
    assert_eq!(j["discovery"][0]["error"], "NXDOMAIN");
    assert!(
        j["discovery"][0]["resolutions"]["nxdomain"]
            .as_u64()
            .unwrap()
            >= 1
    );
    // Refused: reset at once, nothing read.
    if let Ok(mut s) = TcpStream::connect(vip(&p, "web")).await {
        assert!(read_all(&mut s).await.is_empty(), "no server: refused");
    }
    let refused = p
        .service("web")
        .unwrap()
        .stats
        .refused(rvs_proxy::stats::Refusal::NoServer);
    assert!(refused >= 1, "counted as no_server");
    // It appears.
    dns.set_hosts(&["127.0.0.11 later.test"]);
    let a = format!("127.0.0.11:{port}");
    wait_table(&p, "web", &[(&a, 1)]).await;
    assert_eq!(name_of(vip(&p, "web")).await, "a");
    // It goes (NXDOMAIN): kept for hold_nx, then removed.
    dns.set_hosts(&[]);
    let gone_at = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || get_json_sync_failing(&p)).await,
        "NXDOMAIN seen"
    );
    assert_eq!(table(&p, "web"), [(a.clone(), 1)], "held");
    wait_table(&p, "web", &[]).await;
    assert!(
        gone_at.elapsed() >= Duration::from_millis(1400),
        "removed after the hold: {:?}",
        gone_at.elapsed()
    );
}

/// The status page as headless Chromium renders it (its DOM after the
/// page's script ran).
async fn rendered_status_page(admin: SocketAddr) -> String {
    let dir = std::env::temp_dir().join(format!(
        "rvs-chromium-{}-{}",
        std::process::id(),
        admin.port()
    ));
    tokio::task::spawn_blocking(move || {
        let chromium = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|c| {
                std::process::Command::new(c)
                    .arg("--version")
                    .output()
                    .is_ok()
            })
            .expect("chromium runs (tests/run installs Debian's chromium package)");
        let out = std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--virtual-time-budget=5000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", dir.display()))
            .arg(format!("http://{admin}/"))
            .stderr(std::process::Stdio::null())
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

fn get_json_sync_failing(p: &rvs_proxy::Proxy) -> bool {
    p.discovery_status("web")
        .first()
        .is_some_and(|e| e.failing.is_some())
}

/// Two replicas with an mh service, one started before a record was added
/// and one after, send the same clients to the same servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_before_and_after_a_change_agree() {
    let port = port().await;
    let ips = [
        "127.0.0.11",
        "127.0.0.12",
        "127.0.0.13",
        "127.0.0.14",
        "127.0.0.15",
    ];
    for (i, ip) in ips.iter().enumerate() {
        line_backend(ip, port, &format!("s{i}")).await;
    }
    let hosts = |list: &[&str]| {
        list.iter()
            .map(|ip| format!("{ip} web.test"))
            .collect::<Vec<_>>()
    };
    let first: Vec<&str> = vec![ips[0], ips[1], ips[3], ips[4]];
    let h = hosts(&first);
    let dns = Dnsmasq::start(
        "agree",
        &h.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    let yaml = format!(
        "{}services:\n  - name: web\n    listen: 127.0.0.1:0\n    scheduler: mh\n    real_servers:\n      - dns: web.test:{port}\n      - address: 127.0.0.1:9\n        weight: 0\n",
        dns.global("200ms", "")
    );
    let early = proxy(&yaml);
    let want4: Vec<String> = first.iter().map(|ip| format!("{ip}:{port}")).collect();
    let mut w: Vec<(&str, i32)> = want4.iter().map(|a| (a.as_str(), 1)).collect();
    w.push(("127.0.0.1:9", 0));
    wait_table(&early, "web", &w).await;
    // The record in the middle of the address order arrives.
    let h = hosts(&ips);
    dns.set_hosts(&h.iter().map(String::as_str).collect::<Vec<_>>());
    let want5: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    let mut w: Vec<(&str, i32)> = want5.iter().map(|a| (a.as_str(), 1)).collect();
    w.push(("127.0.0.1:9", 0));
    wait_table(&early, "web", &w).await;
    let late = proxy(&yaml);
    wait_table(&late, "web", &w).await;
    assert_eq!(
        table(&early, "web"),
        table(&late, "web"),
        "the same list, in the same order"
    );
    let (ve, vl) = (vip(&early, "web"), vip(&late, "web"));
    let mut spread = BTreeMap::new();
    for i in 0..200u32 {
        let from: IpAddr = format!("127.1.{}.{}", i / 250, 1 + i % 250)
            .parse()
            .unwrap();
        let get = |v| async move {
            let s = connect_from(from, v).await.unwrap();
            let mut r = BufReader::new(s);
            let mut name = String::new();
            r.read_line(&mut name).await.unwrap();
            name
        };
        let (e, l) = (get(ve).await, get(vl).await);
        assert_eq!(e, l, "client {from}");
        *spread.entry(e).or_insert(0) += 1;
    }
    assert_eq!(
        spread.len(),
        5,
        "every server takes some clients: {spread:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_edits_of_a_discovered_server_last_until_its_record_changes() {
    let port = port().await;
    let dns = Dnsmasq::start(
        "edits",
        &["127.0.0.11 web.test", "127.0.0.12 web.test"],
        &[],
    );
    let p = proxy(&format!(
        "{}services:\n  - name: web\n    listen: 127.0.0.1:0\n    scheduler: wrr\n    real_servers:\n      - dns: web.test:{port}\n",
        dns.global("100ms", "")
    ));
    let (a, b) = (format!("127.0.0.11:{port}"), format!("127.0.0.12:{port}"));
    wait_table(&p, "web", &[(&a, 1), (&b, 1)]).await;
    let adm = admin(&p).await;
    let (st, body) = http(
        adm,
        "PATCH",
        &format!("/api/v1/services/web/real_servers/{b}"),
        Some("{\"weight\": 5}"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = http(
        adm,
        "DELETE",
        &format!("/api/v1/services/web/real_servers/{a}"),
        None,
        None,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    wait_table(&p, "web", &[(&b, 5)]).await;
    // Resolutions with the same answer leave the edits in force.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(table(&p, "web"), [(b.clone(), 5)]);
    let (st, _) = http(
        adm,
        "PATCH",
        &format!("/api/v1/services/web/real_servers/{b}"),
        Some("{\"u_threshold\": 1, \"l_threshold\": 2}"),
        None,
    )
    .await;
    assert_eq!(st, 422, "thresholds out of order are refused");
    // a's record goes and comes back: a is back, as DNS says.
    dns.set_hosts(&["127.0.0.12 web.test"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    dns.set_hosts(&["127.0.0.11 web.test", "127.0.0.12 web.test"]);
    wait_table(&p, "web", &[(&a, 1), (&b, 5)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_entry_s_health_checks_apply_to_each_discovered_server() {
    let port = port().await;
    line_backend("127.0.0.11", port, "a").await;
    // Nothing listens on 127.0.0.12 at that port: its check fails.
    let dns = Dnsmasq::start(
        "checks",
        &["127.0.0.11 web.test", "127.0.0.12 web.test"],
        &[],
    );
    let p = proxy(&format!(
        "{}services:\n  - name: web\n    listen: 127.0.0.1:0\n    real_servers:\n      - dns: web.test:{port}\n        health_check: {{ type: tcp, delay_loop: 100ms, connect_timeout: 200ms, retry: 0, warmup: 0s }}\n",
        dns.global("200ms", "")
    ));
    let a = format!("127.0.0.11:{port}");
    let b: SocketAddr = format!("127.0.0.12:{port}").parse().unwrap();
    let svc = p.service("web").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || svc
            .health()
            .get(&b)
            .is_some_and(|h| !h.up))
        .await,
        "b is checked and down"
    );
    wait_table(&p, "web", &[(&a, 1)]).await;
    assert!(svc.health().values().all(|h| h.checked));
}
