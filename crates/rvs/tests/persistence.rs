//! Persistence beyond one address and port: a template that covers all of
//! a service's addresses and ports (what IPVS's firewall-mark services are
//! used for), real servers of port 0, and the SIP persistence engine, with
//! real clients: curl over HTTP and HTTPS, and SIPp's UAC against two of
//! its UAS.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    Backends, Kill, NAME_SERVER, Running, free_port, sample, spawn_ready, temp_dir, wait_for,
};

/// curl from the source address `from` to `url`: the body.
fn curl(from: &str, url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sk", "--http1.1", "--max-time", "10", "--interface", from])
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url} from {from}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The backend's name in a tls_backends.py answer ("NAME sni=… tls=…").
fn name_of(answer: &str) -> &str {
    answer.split(' ').next().unwrap_or_default()
}

/// HTTP then HTTPS from one client reach one server under rr when the
/// template covers the service (`scope: service`); per destination, the
/// default, rr sends the second to the other server.
#[test]
fn http_then_https_from_one_client_reach_one_server() {
    let dir = temp_dir("scope");
    let backends = Backends::start(&dir, &["a", "b"]);
    let admin = free_port();
    let (http, https) = (free_port(), free_port());
    let (http2, https2) = (free_port(), free_port());
    let yaml = format!(
        "admin:\n  listen: \"{admin}\"\nservices:\n  - name: shop\n    listen: [\"{http}\", \"{https}\"]\n    scheduler: rr\n    persistence: {{ timeout: 300s, scope: service }}\n    real_servers:\n      - address: \"{a}\"\n      - address: \"{b}\"\n  - name: plain\n    listen: [\"{http2}\", \"{https2}\"]\n    scheduler: rr\n    persistence: {{ timeout: 300s }}\n    real_servers:\n      - address: \"{a}\"\n      - address: \"{b}\"\n",
        a = backends.at("a"),
        b = backends.at("b"),
    );
    let _rvs = Running::start("scope", &yaml, admin);
    let mut seen = BTreeSet::new();
    for client in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        let first = curl(client, &format!("http://{http}/"));
        assert!(first.ends_with("tls=no"), "{first}");
        let second = curl(client, &format!("https://{https}/"));
        assert!(second.ends_with("tls=yes"), "{second}");
        assert_eq!(name_of(&first), name_of(&second), "client {client}");
        // And back: the template holds both ways.
        assert_eq!(
            name_of(&curl(client, &format!("http://{http}/"))),
            name_of(&first)
        );
        seen.insert(name_of(&first).to_owned());
    }
    assert_eq!(seen.len(), 2, "rr spreads the clients: {seen:?}");
    // Per destination: one template per port, rr gives the second port's
    // the next server.
    let first = curl("127.0.0.2", &format!("http://{http2}/"));
    let second = curl("127.0.0.2", &format!("https://{https2}/"));
    assert_ne!(name_of(&first), name_of(&second));
    // One template for both ports of `shop` per client, as an fwmark
    // service's: four clients, four templates; `plain` has two for its one.
    let list = common::http_get(admin, "/api/v1/connections").unwrap().1;
    let templates: serde_json::Value = serde_json::from_str(&list).unwrap();
    let count = |svc: &str| {
        templates["connections"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["state"] == "NONE" && c["service"] == svc)
            .count()
    };
    assert_eq!((count("shop"), count("plain")), (4, 2), "{list}");
}

/// A real server of port 0 takes the port the client connected to, as an
/// IPVS destination of port 0 does: with a service-wide template, one
/// client's connections to either port reach one server, each on its port.
#[test]
fn a_real_server_of_port_0_takes_the_clients_port() {
    let admin = free_port();
    let (p1, p2) = (free_port().port(), free_port().port());
    let mut servers: Vec<Kill> = Vec::new();
    for (ip, name) in [("127.0.0.2", "a"), ("127.0.0.3", "b")] {
        for (port, what) in [(p1, "one"), (p2, "two")] {
            servers.push(spawn_ready(
                Command::new("python3")
                    .args(["-c", NAME_SERVER, ip, &port.to_string()])
                    .arg(format!("{name}-{what}")),
            ));
        }
    }
    let yaml = format!(
        "admin:\n  listen: \"{admin}\"\nservices:\n  - name: mark\n    listen: [\"127.0.0.1:{p1}\", \"127.0.0.1:{p2}\"]\n    scheduler: rr\n    persistence: {{ timeout: 300s, scope: service, fwmark: 7 }}\n    real_servers:\n      - address: 127.0.0.2:0\n      - address: 127.0.0.3:0\n"
    );
    let _rvs = Running::start("port0", &yaml, admin);
    let get = |from: &str, port: u16| -> String {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::new(from.parse().unwrap(), 0).into())
            .unwrap();
        s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
            .unwrap();
        let mut t: std::net::TcpStream = s.into();
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut t, &mut out).unwrap();
        out
    };
    let mut names = BTreeSet::new();
    for client in ["127.0.0.4", "127.0.0.5"] {
        let one = get(client, p1);
        let two = get(client, p2);
        let (server, what) = one.split_once('-').unwrap();
        assert_eq!(what, "one", "{one}");
        assert_eq!(two, format!("{server}-two"), "client {client}");
        names.insert(server.to_owned());
    }
    assert_eq!(names.len(), 2, "{names:?}");
}

/// A SIPp UAS on `port` tracing the messages it receives into its
/// directory; killed when dropped.
fn uas(dir: &Path, port: u16) -> Kill {
    let child = Command::new("sipp")
        .args(["-sn", "uas", "-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-trace_msg", "-message_file"])
        .arg(dir.join(format!("uas-{port}.log")))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Kill(child)
}

/// Every Call-ID in a SIPp message log, with how many messages it had.
fn call_ids(log: &Path) -> HashMap<String, usize> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut ids = HashMap::new();
    for line in text.lines() {
        if let Some(id) = line
            .strip_prefix("Call-ID:")
            .or_else(|| line.strip_prefix("Call-Id:"))
        {
            *ids.entry(id.trim().to_owned()).or_insert(0) += 1;
        }
    }
    ids
}

/// Calls of SIPp's UAC through a UDP service with `--pe sip` under rr:
/// every message of a call (INVITE, ACK, BYE) reaches one of the two UAS,
/// the calls spread over both, every call completes, and a datagram with
/// no Call-ID is dropped and counted, as IPVS's engine drops it.
#[test]
fn every_message_of_a_sip_call_reaches_one_server() {
    let dir = temp_dir("sip");
    let (a, b) = (free_port().port(), free_port().port());
    let _uas = (uas(&dir, a), uas(&dir, b));
    let admin = free_port();
    let vip = free_port();
    let yaml = format!(
        "admin:\n  listen: \"{admin}\"\nservices:\n  - name: sip\n    proto: udp\n    listen: \"{vip}\"\n    scheduler: rr\n    persistence: {{ timeout: 60s, engine: sip }}\n    real_servers:\n      - address: 127.0.0.1:{a}\n      - address: 127.0.0.1:{b}\n"
    );
    let rvs = Running::start("sip", &yaml, admin);
    // rvsadm lists the engine as ipvsadm does.
    let listed = Command::new(env!("CARGO_BIN_EXE_rvsadm"))
        .args(["--admin", &admin.to_string(), "-Ln"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(&format!("UDP  {vip} rr persistent 60 pe sip\n")),
        "{listed}"
    );
    let calls = 12;
    let uac = Command::new("sipp")
        .args([
            "-sn",
            "uac",
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().port().to_string(),
        ])
        .args(["-m", &calls.to_string(), "-r", "20", "-l", "4", "-d", "200"])
        .args([
            "-timeout",
            "60s",
            "-timeout_error",
            "-trace_err",
            "-error_file",
        ])
        .arg(dir.join("uac-errors.log"))
        .arg(vip.to_string())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        uac.status.success(),
        "sipp uac: {}\n{}\nrvs: {}",
        uac.status,
        std::fs::read_to_string(dir.join("uac-errors.log")).unwrap_or_default(),
        rvs.log()
    );
    // The UAS write their logs as messages come: the BYEs are in by now.
    let logs = [
        dir.join(format!("uas-{a}.log")),
        dir.join(format!("uas-{b}.log")),
    ];
    assert!(wait_for(Duration::from_secs(10), || {
        logs.iter().map(|l| call_ids(l).len()).sum::<usize>() >= calls
    }));
    let (on_a, on_b) = (call_ids(&logs[0]), call_ids(&logs[1]));
    assert!(
        !on_a.is_empty() && !on_b.is_empty(),
        "calls spread: {} and {}",
        on_a.len(),
        on_b.len()
    );
    assert_eq!(on_a.len() + on_b.len(), calls, "{on_a:?} {on_b:?}");
    for (id, n) in on_a.iter().chain(&on_b) {
        assert!(
            !(on_a.contains_key(id) && on_b.contains_key(id)),
            "call {id} reached both servers"
        );
        // INVITE, ACK and BYE.
        assert!(*n >= 3, "call {id}: {n} messages on its server");
    }
    // rvsadm -Lnc --persistent-conn lists each call's template with its
    // engine and Call-ID, in ipvsadm's row.
    let conns = Command::new(env!("CARGO_BIN_EXE_rvsadm"))
        .args(["--admin", &admin.to_string(), "-Lnc", "--persistent-conn"])
        .output()
        .unwrap();
    let conns = String::from_utf8_lossy(&conns.stdout);
    let rows: Vec<Vec<&str>> = conns
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .filter(|f: &Vec<&str>| f.get(2) == Some(&"NONE"))
        .collect();
    assert_eq!(rows.len(), calls, "{conns}");
    for r in &rows {
        assert_eq!(r.len(), 8, "{conns}");
        assert_eq!(r[6], "sip", "{conns}");
        assert!(
            on_a.contains_key(r[7]) || on_b.contains_key(r[7]),
            "{conns}"
        );
    }
    // No Call-ID: dropped, counted.
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(
        b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1\r\nCSeq: 1 OPTIONS\r\n\r\n",
        vip,
    )
    .unwrap();
    let series = "rvs_service_refused_total{service=\"sip\",proto=\"udp\",reason=\"no_call_id\"}";
    assert!(
        wait_for(Duration::from_secs(10), || sample(&rvs.scrape(), series)
            == Some(1.0)),
        "{}",
        rvs.scrape()
    );
}
