//! TLS routed by SNI and ALPN without terminating it: several services on
//! one address, real clients (curl, openssl s_client, Python's ssl) and
//! real TLS servers (Python's ssl, tests/tools/tls_backends.py) that
//! answer their own name and the name and protocol their TLS library saw
//! in the hello rvs passed on.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{Backends, Running, free_port, sample, tool, wait_for};

/// `curl --resolve` over https to `name` on `vip`: the body.
fn curl(vip: SocketAddr, name: &str) -> String {
    let out = Command::new("curl")
        .args(["-sk", "--http1.1", "--max-time", "10", "--resolve"])
        .arg(format!("{name}:{}:127.0.0.1", vip.port()))
        .arg(format!("https://{name}:{}/", vip.port()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `openssl s_client -servername`: the answer's body line.
fn s_client(vip: SocketAddr, name: &str, alpn: Option<&str>) -> String {
    let mut c = Command::new("openssl");
    c.args(["s_client", "-quiet", "-connect"])
        .arg(vip.to_string())
        .args(["-servername", name]);
    if let Some(a) = alpn {
        c.args(["-alpn", a]);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // -quiet keeps reading after stdin ends; the server closes.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.contains(" sni="))
        .unwrap_or(&text)
        .trim()
        .to_owned()
}

/// tests/tools/tls_client.py with `args`: its output.
fn py_client(vip: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(tool("tls_client.py"))
        .arg(vip.to_string())
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A plain TCP client that writes `bytes` and reads to the end: what it
/// got, `None` when reset.
fn raw(vip: SocketAddr, bytes: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect(vip).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
        Err(_) => None,
    }
}

fn yaml(admin: SocketAddr, services: &str) -> String {
    format!("global:\n  shutdown_grace: 2s\nadmin:\n  listen: \"{admin}\"\nservices:\n{services}")
}

fn service(name: &str, vip: SocketAddr, matching: Option<&str>, server: SocketAddr) -> String {
    let m = matching.map_or(String::new(), |m| format!("    match: {m}\n"));
    format!(
        "  - name: {name}\n    listen: \"{vip}\"\n{m}    scheduler: rr\n    real_servers:\n      - address: \"{server}\"\n"
    )
}

/// The connections a service scheduled, from the scrape.
fn conns(run: &Running, svc: &str) -> f64 {
    sample(
        &run.scrape(),
        &format!("rvs_service_connections_total{{service=\"{svc}\",proto=\"tcp\"}}"),
    )
    .unwrap_or(0.0)
}

#[test]
fn connections_go_to_the_service_their_hello_names() {
    let dir = common::temp_dir("sni");
    let b = Backends::start(&dir, &["api", "grpc", "rpc", "acme", "default"]);
    let (vip, admin) = (free_port(), free_port());
    let services = [
        service(
            "api",
            vip,
            Some("{sni: [api.example.com, \"*.api.example.com\"]}"),
            b.at("api"),
        ),
        service(
            "grpc",
            vip,
            Some("{sni: [rpc.example.com], alpn: [h2]}"),
            b.at("grpc"),
        ),
        service("rpc", vip, Some("{sni: [rpc.example.com]}"), b.at("rpc")),
        service("acme", vip, Some("{alpn: [acme-tls/1]}"), b.at("acme")),
        service("everything-else", vip, None, b.at("default")),
    ]
    .concat();
    let run = Running::start("sni", &yaml(admin, &services), admin);

    // curl over https, by --resolve: the exact name, a wildcard of one
    // label and of two, a name no service has.
    assert_eq!(
        curl(vip, "api.example.com"),
        "api sni=api.example.com alpn=http/1.1 tls=yes"
    );
    assert_eq!(
        curl(vip, "v1.api.example.com"),
        "api sni=v1.api.example.com alpn=http/1.1 tls=yes"
    );
    assert_eq!(
        curl(vip, "a.b.api.example.com"),
        "api sni=a.b.api.example.com alpn=http/1.1 tls=yes"
    );
    assert_eq!(
        curl(vip, "www.example.com"),
        "default sni=www.example.com alpn=http/1.1 tls=yes"
    );
    // openssl s_client: ALPN h2 takes grpc; offered otherwise, the name
    // alone takes rpc; upper-case SNI is the same name.
    assert_eq!(
        s_client(vip, "rpc.example.com", Some("h2")),
        "grpc sni=rpc.example.com alpn=h2 tls=yes"
    );
    assert_eq!(
        s_client(vip, "RPC.Example.COM", Some("http/1.1")),
        "rpc sni=RPC.Example.COM alpn=http/1.1 tls=yes"
    );
    assert_eq!(
        s_client(vip, "rpc.example.com", None),
        "rpc sni=rpc.example.com alpn=- tls=yes"
    );
    // ALPN alone, whatever the name (ACME's tls-alpn-01).
    assert_eq!(
        s_client(vip, "www.example.com", Some("acme-tls/1")),
        "acme sni=www.example.com alpn=acme-tls/1 tls=yes"
    );
    // Python's ssl: no SNI at all goes to the default.
    assert_eq!(
        py_client(vip, &["--alpn", "h2"]),
        "default sni=- alpn=h2 tls=yes"
    );
    // A hello in five pieces 300 ms apart is read whole, then forwarded.
    assert_eq!(
        py_client(
            vip,
            &[
                "--sni",
                "api.example.com",
                "--pieces",
                "5",
                "--pause",
                "0.3"
            ]
        ),
        "api sni=api.example.com alpn=- tls=yes"
    );
    // Not TLS at all: the default, in the clear, bytes unchanged.
    let plain = raw(vip, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(plain.ends_with("default sni=- alpn=- tls=no\n"), "{plain}");

    // Each matched service is a virtual service of its own: scheduled and
    // counted as such.
    for (svc, want) in [
        ("api", 4.0),
        ("grpc", 1.0),
        ("rpc", 2.0),
        ("acme", 1.0),
        ("everything-else", 3.0),
    ] {
        assert_eq!(conns(&run, svc), want, "{svc}\n{}", run.scrape());
    }
    // rvsadm -Ln: one row per service on the shared address.
    let out = Command::new(env!("CARGO_BIN_EXE_rvsadm"))
        .arg("-Ln")
        .env("RVS_ADMIN", admin.to_string())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        table.matches(&format!("TCP  {vip} rr")).count(),
        5,
        "{table}"
    );
    // Editing by address cannot tell them apart: refused, naming them.
    let out = Command::new(env!("CARGO_BIN_EXE_rvsadm"))
        .args(["-a", "-t", &vip.to_string(), "-r", "127.0.0.1:9"])
        .env("RVS_ADMIN", admin.to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("shared by services api, grpc, rpc, acme, everything-else"),
        "{err}"
    );
    // show-config writes the match back.
    let out = common::rvs()
        .args(["show-config", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("match:\n    sni:\n    - rpc.example.com\n    alpn:\n    - h2\n"),
        "{shown}"
    );
}

#[test]
fn hellos_that_cannot_be_routed_are_closed_and_counted() {
    let dir = common::temp_dir("sni-refused");
    let b = Backends::start(&dir, &["api"]);
    let (vip, admin) = (free_port(), free_port());
    // One service with a match, no default; a short client_hello.
    let services = service("api", vip, Some("{sni: [api.example.com]}"), b.at("api")).replace(
        "    scheduler: rr\n",
        "    scheduler: rr\n    timeouts: {client_hello: 1s}\n",
    );
    let run = Running::start("sni-refused", &yaml(admin, &services), admin);
    let refused = |why: &str| {
        sample(
            &run.scrape(),
            &format!("rvs_sni_refused_total{{proto=\"tcp\",listen=\"{vip}\",reason=\"{why}\"}}"),
        )
        .unwrap_or(-1.0)
    };
    assert_eq!(
        curl(vip, "api.example.com"),
        "api sni=api.example.com alpn=http/1.1 tls=yes"
    );
    // No match and no default: closed.
    assert_eq!(curl(vip, "www.example.com"), "");
    assert!(raw(vip, b"GET / HTTP/1.0\r\n\r\n").is_none_or(|got| got.is_empty()));
    assert_eq!(refused("no_match"), 2.0);
    // A hello that stops halfway (two pieces, the second after 3 s): closed
    // at the 1 s client_hello.
    let slow = py_client(
        vip,
        &["--sni", "api.example.com", "--pieces", "2", "--pause", "3"],
    );
    assert!(slow.starts_with("closed:"), "{slow}");
    assert_eq!(refused("timeout"), 1.0);
    // A client that sends nothing: closed too.
    let mut idle = TcpStream::connect(vip).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert!(matches!(idle.read(&mut [0u8; 1]), Err(_) | Ok(0)));
    assert_eq!(refused("timeout"), 2.0);
    // A hello over 16 KiB: a handshake record that says 20000 bytes of
    // ClientHello follow, refused as soon as that is read.
    let mut big = vec![
        0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x4e, 0x20, 0x03, 0x03,
    ];
    big.resize(5 + 0x4000, 0);
    let mut c = TcpStream::connect(vip).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = c.write_all(&big);
    assert!(matches!(c.read(&mut [0u8; 1]), Err(_) | Ok(0)));
    assert_eq!(refused("too_large"), 1.0);
    // Nothing of it reached the real server.
    assert_eq!(conns(&run, "api"), 1.0, "{}", run.scrape());
}

/// A server that reads a PROXY v2 header and answers with its TLVs' bytes
/// (hex), then echoes nothing more.
fn proxy_header_backend() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let mut head = [0u8; 16];
            if s.read_exact(&mut head).is_err() {
                continue;
            }
            let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
            let mut body = vec![0u8; len];
            if s.read_exact(&mut body).is_err() {
                continue;
            }
            let mut all = head.to_vec();
            all.extend_from_slice(&body);
            let _ = tx.send(all);
            let _ = s.write_all(b"seen\n");
        }
    });
    (at, rx)
}

#[test]
fn the_sni_travels_in_proxy_v2_and_is_read_from_it() {
    let dir = common::temp_dir("sni-proxy");
    let b = Backends::start(&dir, &["api", "default"]);
    let (front, behind, admin) = (free_port(), free_port(), free_port());
    let (header_at, headers) = proxy_header_backend();
    // Front: routes by SNI and sends PROXY v2 to a server that shows the
    // header. Behind: reads PROXY v2 and routes by its authority.
    let services = [
        service("front", front, Some("{sni: [api.example.com]}"), header_at).replace(
            "    scheduler: rr\n",
            "    scheduler: rr\n    proxy_protocol: v2\n",
        ),
        service(
            "behind-api",
            behind,
            Some("{sni: [api.example.com]}"),
            b.at("api"),
        )
        .replace(
            "    scheduler: rr\n",
            "    scheduler: rr\n    accept_proxy_protocol: true\n",
        ),
        service("behind-default", behind, None, b.at("default")).replace(
            "    scheduler: rr\n",
            "    scheduler: rr\n    accept_proxy_protocol: true\n",
        ),
    ]
    .concat();
    let _run = Running::start("sni-proxy", &yaml(admin, &services), admin);
    let _ = py_client(front, &["--sni", "API.example.com"]);
    let header = headers.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut tlv = vec![0x02, 0, 15];
    tlv.extend_from_slice(b"api.example.com");
    assert!(header.ends_with(&tlv), "{header:02x?}");
    // Behind: a header naming api.example.com, then plain bytes.
    let mut h = Vec::new();
    rvs_proxy::proxy_proto::encode_v2_with(
        "192.0.2.9:4321".parse().unwrap(),
        behind,
        Some("api.example.com"),
        &mut h,
    );
    h.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    let got = raw(behind, &h).unwrap();
    assert!(got.ends_with("api sni=- alpn=- tls=no\n"), "{got}");
    // No authority: the hello decides (here none: plain bytes, the default).
    let mut h = Vec::new();
    rvs_proxy::proxy_proto::encode_v2("192.0.2.9:4321".parse().unwrap(), behind, &mut h);
    h.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    let got = raw(behind, &h).unwrap();
    assert!(got.ends_with("default sni=- alpn=- tls=no\n"), "{got}");
}

#[test]
fn a_reload_moves_a_name_for_new_connections_only() {
    let dir = common::temp_dir("sni-reload");
    let b = Backends::start(&dir, &["one", "two"]);
    let (vip, admin) = (free_port(), free_port());
    let before = [
        service(
            "one",
            vip,
            Some("{sni: [api.example.com, www.example.com]}"),
            b.at("one"),
        ),
        service("two", vip, Some("{sni: [rpc.example.com]}"), b.at("two")),
    ]
    .concat();
    let run = Running::start("sni-reload", &yaml(admin, &before), admin);
    // A connection held open across the reload, answering line by line.
    let mut held = Command::new("python3")
        .arg(tool("tls_client.py"))
        .arg(vip.to_string())
        .args(["--sni", "www.example.com", "--lines", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut held_out = BufReader::new(held.stdout.take().unwrap());
    let mut line = String::new();
    held_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "one sni=www.example.com alpn=- tls=yes");
    // www.example.com moves to two.
    let after = [
        service("one", vip, Some("{sni: [api.example.com]}"), b.at("one")),
        service(
            "two",
            vip,
            Some("{sni: [rpc.example.com, www.example.com]}"),
            b.at("two"),
        ),
    ]
    .concat();
    std::fs::write(run.dir.join("rvs.yaml"), yaml(admin, &after)).unwrap();
    common::signal(&run.child, "HUP");
    assert!(
        wait_for(Duration::from_secs(10), || curl(vip, "www.example.com")
            .starts_with("two ")),
        "{}",
        run.log()
    );
    assert!(curl(vip, "api.example.com").starts_with("one "));
    // The held connection still reaches its server, through its service.
    let mut sin = held.stdin.take().unwrap();
    sin.write_all(b"\n").unwrap();
    line.clear();
    held_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "one sni=www.example.com alpn=- tls=yes");
    drop(sin);
    assert!(held.wait().unwrap().success());
}

#[test]
fn rvs_check_refuses_services_that_cannot_share_an_address() {
    let dir = common::temp_dir("sni-check");
    let file = dir.join("rvs.yaml");
    let text = "services:\n  - name: a\n    listen: 127.0.0.1:443\n    match: {sni: [a.test]}\n  - name: b\n    listen: 127.0.0.1:443\n    match: {sni: [\"*.test\", a.test]}\n  - name: c\n    listen: 127.0.0.1:443\n  - name: d\n    listen: 127.0.0.1:443\n";
    std::fs::write(&file, text).unwrap();
    let out = common::rvs()
        .arg("check")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for want in [
        "rvs.yaml:7:29: services[1].match.sni[1]: a.test is also matched by service \"a\" on tcp 127.0.0.1:443, and ALPN does not tell them apart",
        "rvs.yaml:11:13: services[3].listen[0]: tcp 127.0.0.1:443 is also the address of service \"c\", which has no match either",
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
}

#[test]
fn the_example_config_routes_as_it_says() {
    let dir = common::temp_dir("sni-example");
    let b = Backends::start(&dir, &["api1", "api2", "rpc", "default"]);
    let (vip, admin) = (free_port(), free_port());
    let example = std::fs::read_to_string(common::root().join("config/sni.yaml")).unwrap();
    // Its addresses are the test's; grpc (PROXY v2) is left unserved.
    let mut text = example.replace("127.0.0.1:8443", &vip.to_string());
    for (port, name) in [
        ("19441", "api1"),
        ("19442", "api2"),
        ("19444", "rpc"),
        ("19445", "default"),
    ] {
        text = text.replace(&format!("127.0.0.1:{port}"), &b.at(name).to_string());
    }
    text = text.replacen(
        "services:\n",
        &format!("admin:\n  listen: \"{admin}\"\nservices:\n"),
        1,
    );
    let run = Running::start("sni-example", &text, admin);
    let api = curl(vip, "v2.api.example.com");
    assert!(
        api.starts_with("api1 ") || api.starts_with("api2 "),
        "{api}"
    );
    // Persistence: the same client address keeps its server.
    for _ in 0..3 {
        assert_eq!(
            curl(vip, "api.example.com").split(' ').next(),
            api.split(' ').next()
        );
    }
    assert_eq!(
        s_client(vip, "rpc.example.com", Some("http/1.1")),
        "rpc sni=rpc.example.com alpn=http/1.1 tls=yes"
    );
    assert_eq!(
        curl(vip, "www.example.com"),
        "default sni=www.example.com alpn=http/1.1 tls=yes"
    );
    drop(run);
}

/// tests/tools/quic_client.py: an HTTP/3 GET; the body.
fn h3_get(vip: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(tool("quic_client.py"))
        .arg(vip.to_string())
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn udp_service(name: &str, vip: SocketAddr, matching: Option<&str>, server: SocketAddr) -> String {
    service(name, vip, matching, server)
        .replace("    scheduler: rr\n", "    proto: udp\n    scheduler: rr\n")
}

#[test]
fn quic_flows_go_to_the_service_their_initial_names() {
    let dir = common::temp_dir("sni-quic");
    let b = Backends::quic(&dir, &["api", "rpc", "default", "lonely"]);
    let (vip, alone, admin) = (free_port(), free_port(), free_port());
    let services = [
        udp_service(
            "h3-api",
            vip,
            Some("{sni: [api.example.com, \"*.api.example.com\"]}"),
            b.at("api"),
        ),
        udp_service(
            "h3-rpc",
            vip,
            Some("{sni: [rpc.example.com], alpn: [h3]}"),
            b.at("rpc"),
        ),
        udp_service("h3-default", vip, None, b.at("default")),
        udp_service(
            "h3-alone",
            alone,
            Some("{sni: [api.example.com]}"),
            b.at("lonely"),
        ),
    ]
    .concat();
    let run = Running::start("sni-quic", &yaml(admin, &services), admin);
    // QUIC v1, v2, and a hello over two Initial packets in two datagrams.
    assert_eq!(
        h3_get(vip, &["--sni", "api.example.com"]),
        "api sni=api.example.com alpn=h3 version=1"
    );
    assert_eq!(
        h3_get(vip, &["--sni", "RPC.example.com", "--v2"]),
        "rpc sni=RPC.example.com alpn=h3 version=2"
    );
    assert_eq!(
        h3_get(vip, &["--sni", "v1.api.example.com", "--large-hello"]),
        "api sni=v1.api.example.com alpn=h3 version=1"
    );
    assert_eq!(
        h3_get(vip, &["--sni", "rpc.example.com", "--large-hello", "--v2"]),
        "rpc sni=rpc.example.com alpn=h3 version=2"
    );
    // Another name, or none: the default.
    assert_eq!(
        h3_get(vip, &["--sni", "www.example.com"]),
        "default sni=www.example.com alpn=h3 version=1"
    );
    // Not QUIC: the default takes the flow.
    let before = conns_udp(&run, "h3-default");
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"not quic at all", vip).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || conns_udp(&run, "h3-default")
            == before + 1.0),
        "{}",
        run.scrape()
    );
    // Without a default, a name nobody matches, or plain bytes: dropped
    // and counted.
    assert!(h3_get(alone, &["--sni", "www.example.com"]).starts_with("failed:"));
    s.send_to(b"not quic at all", alone).unwrap();
    let series =
        format!("rvs_sni_refused_total{{proto=\"udp\",listen=\"{alone}\",reason=\"no_match\"}}");
    // The client sent its Initial more than once (it retries): one or more
    // for it, one for the plain datagram.
    assert!(
        wait_for(Duration::from_secs(5), || sample(&run.scrape(), &series)
            .is_some_and(|n| n >= 2.0)),
        "{}",
        run.scrape()
    );
    assert_eq!(
        h3_get(alone, &["--sni", "api.example.com"]),
        "lonely sni=api.example.com alpn=h3 version=1"
    );
    for (svc, want) in [("h3-api", 2.0), ("h3-rpc", 2.0)] {
        assert_eq!(conns_udp(&run, svc), want, "{svc}\n{}", run.scrape());
    }
}

fn conns_udp(run: &Running, svc: &str) -> f64 {
    sample(
        &run.scrape(),
        &format!("rvs_service_connections_total{{service=\"{svc}\",proto=\"udp\"}}"),
    )
    .unwrap_or(0.0)
}
