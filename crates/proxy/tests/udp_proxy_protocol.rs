//! PROXY protocol v2 over UDP, checked by a parser written here from the
//! specification (HAProxy's proxy-protocol.txt, section 2.2), in Python,
//! not by rvs's own code: the header before every datagram (or a
//! session's first), UDP's family bytes 0x12 and 0x22, replies without a
//! header, and a rvs in front of a rvs.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use rvs_proxy::stats::Refusal;
use tokio::net::UdpSocket;

/// A UDP server that parses a v2 header at the start of each datagram and
/// answers what it found: `fam=0x12 src=IP:PORT dst=IP:PORT data=...`, or
/// `none data=...`, or `bad data=...` when the signature is there but the
/// rest is not a header.
const SERVER: &str = r#"
import socket, struct, sys, ipaddress
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ':' in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((host, port))
print(s.getsockname()[1], flush=True)
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
def parse(d):
    if not d.startswith(SIG):
        return "none", d
    if len(d) < 16:
        return "bad", d
    ver_cmd, fam_proto, length = d[12], d[13], struct.unpack("!H", d[14:16])[0]
    if ver_cmd != 0x21 or len(d) < 16 + length:
        return "bad", d
    body, rest = d[16:16 + length], d[16 + length:]
    if fam_proto in (0x11, 0x12):
        src, dst = ipaddress.IPv4Address(body[0:4]), ipaddress.IPv4Address(body[4:8])
        sp, dp = struct.unpack("!HH", body[8:12])
        return "fam=0x%02x src=%s:%d dst=%s:%d" % (fam_proto, src, sp, dst, dp), rest
    if fam_proto in (0x21, 0x22):
        src, dst = ipaddress.IPv6Address(body[0:16]), ipaddress.IPv6Address(body[16:32])
        sp, dp = struct.unpack("!HH", body[32:36])
        return "fam=0x%02x src=[%s]:%d dst=[%s]:%d" % (fam_proto, src, sp, dst, dp), rest
    return "bad", d
while True:
    d, peer = s.recvfrom(65535)
    what, rest = parse(d)
    s.sendto(("%s data=%s" % (what, rest.decode(errors="replace"))).encode(), peer)
"#;

struct PyServer {
    addr: SocketAddr,
    child: Child,
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn py_server(host: &str) -> PyServer {
    let mut child = Command::new("python3")
        .args(["-c", SERVER, host, "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 must be installed (tests/run installs it)");
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let ip: std::net::IpAddr = host.parse().unwrap();
    PyServer {
        addr: SocketAddr::new(ip, port),
        child,
    }
}

fn service(name: &str, listen: &str, extra: &str, server: SocketAddr) -> String {
    format!(
        "  - name: {name}\n    proto: udp\n    listen: \"{listen}\"\n{extra}    real_servers:\n      - address: \"{server}\"\n"
    )
}

async fn ask(c: &UdpSocket, to: SocketAddr, msg: &str) -> String {
    udp_ask(c, to, msg.as_bytes()).await.expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_datagram_carries_the_client_s_address_with_udp_s_family_byte() {
    let py = py_server("127.0.0.1");
    let p = proxy(&format!(
        "services:\n{}",
        service("u", "127.0.0.1:0", "    proxy_protocol: v2\n", py.addr)
    ));
    let v = vip(&p, "u");
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = c.local_addr().unwrap();
    for i in 0..3 {
        // The reply comes back without a header: the client sees the
        // server's text as it was sent.
        assert_eq!(
            ask(&c, v, &format!("q{i}")).await,
            format!("fam=0x12 src={me} dst={v} data=q{i}")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_datagram_only_when_asked() {
    let py = py_server("127.0.0.1");
    let p = proxy(&format!(
        "services:\n{}",
        service(
            "u",
            "127.0.0.1:0",
            "    proxy_protocol: v2\n    udp: { proxy_protocol_every: false }\n",
            py.addr
        )
    ));
    let v = vip(&p, "u");
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = c.local_addr().unwrap();
    assert_eq!(
        ask(&c, v, "one").await,
        format!("fam=0x12 src={me} dst={v} data=one")
    );
    assert_eq!(ask(&c, v, "two").await, "none data=two");
    assert_eq!(ask(&c, v, "three").await, "none data=three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_ipv6_the_family_byte_is_0x22() {
    let py = py_server("::1");
    let p = proxy(&format!(
        "services:\n{}",
        service("u", "[::1]:0", "    proxy_protocol: v2\n", py.addr)
    ));
    let v = vip(&p, "u");
    let c = UdpSocket::bind("[::1]:0").await.unwrap();
    let me = c.local_addr().unwrap();
    assert_eq!(
        ask(&c, v, "six").await,
        format!("fam=0x22 src={me} dst={v} data=six")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rvs_behind_a_rvs_learns_the_client_and_drops_bad_headers() {
    let py = py_server("127.0.0.1");
    // The back rvs reads the front's header, schedules by the client it
    // names, and sends its own header (the client, its own address).
    let back = proxy(&format!(
        "services:\n{}",
        service(
            "back",
            "127.0.0.1:0",
            "    accept_proxy_protocol: true\n    proxy_protocol: v2\n",
            py.addr
        )
    ));
    let bv = vip(&back, "back");
    let front = proxy(&format!(
        "services:\n{}",
        service("front", "127.0.0.1:0", "    proxy_protocol: v2\n", bv)
    ));
    let fv = vip(&front, "front");
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = c.local_addr().unwrap();
    for i in 0..2 {
        assert_eq!(
            ask(&c, fv, &format!("x{i}")).await,
            format!("fam=0x12 src={me} dst={bv} data=x{i}")
        );
    }
    let conns = back.service("back").unwrap().conns.list();
    assert_eq!(conns.len(), 1);
    assert_eq!(
        conns[0].client, me,
        "the back rvs's session is the client's"
    );
    // A datagram straight to the back rvs with no header is served as it is.
    let direct = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dme = direct.local_addr().unwrap();
    assert_eq!(
        ask(&direct, bv, "plain").await,
        format!("fam=0x12 src={dme} dst={bv} data=plain")
    );
    // The signature with a broken header: dropped and counted.
    let bad = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut d = b"\r\n\r\n\x00\r\nQUIT\n\x21\x12\x00\x0c".to_vec();
    d.extend_from_slice(b"short");
    bad.send_to(&d, bv).await.unwrap();
    let mut buf = [0u8; 256];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), bad.recv_from(&mut buf))
            .await
            .is_err(),
        "no answer: dropped"
    );
    let svc = back.service("back").unwrap();
    assert!(
        eventually(Duration::from_secs(2), || svc
            .stats
            .refused(Refusal::ProxyHeader)
            == 1)
        .await
    );
}
