//! The checks themselves: one probe of one real server, cut at its
//! timeout. Each says pass or fail, with the reason of a failure and, for a
//! dynamic program check, a weight.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use md5::{Digest, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::dialogue::{self, Context, Dialogue, Input, MAX_ANSWER, MAX_PENDING, Next};
use crate::config::{
    CheckKind, DnsCheck, HealthCheck, HttpCheck, MiscCheck, ProtocolCheck, UdpCheck,
};

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// It passed; a dynamic program check gives a weight.
    Pass(Option<i32>),
    /// It failed, and why.
    Fail(String),
}

/// The largest HTTP answer read (a health page, not a download).
const MAX_HTTP: usize = 1 << 20;

/// Probes real server `rs` with `c`.
pub(crate) async fn probe(c: &HealthCheck, rs: SocketAddr) -> Outcome {
    let target = SocketAddr::new(
        c.connect_ip.unwrap_or(rs.ip()),
        c.connect_port.unwrap_or(rs.port()),
    );
    let run = async {
        match &c.kind {
            CheckKind::Tcp => tcp(target).await,
            CheckKind::Http(h) => http(target, h).await,
            CheckKind::Udp(u) => udp(target, u).await,
            CheckKind::Dns(d) => dns(target, d).await,
            CheckKind::Steps(steps) => match TcpStream::connect(target).await {
                Ok(s) => converse(s, dialogue::for_steps(steps), target.ip()).await,
                Err(e) => Outcome::Fail(format!("connect to {target}: {e}")),
            },
            CheckKind::Protocol(p) => protocol(target, p).await,
            // Cut at its own timeout, with its process group.
            CheckKind::Misc(m) => misc(m, rs).await,
        }
    };
    if let CheckKind::Misc(_) = &c.kind {
        return run.await;
    }
    let limit = c.connect_timeout;
    match tokio::time::timeout(limit, run).await {
        Ok(o) => o,
        Err(_) => Outcome::Fail(format!("no answer in {limit:?}")),
    }
}

async fn tcp(target: SocketAddr) -> Outcome {
    match TcpStream::connect(target).await {
        Ok(_) => Outcome::Pass(None),
        Err(e) => Outcome::Fail(format!("connect to {target}: {e}")),
    }
}

async fn http(target: SocketAddr, h: &HttpCheck) -> Outcome {
    let tcp = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => return Outcome::Fail(format!("connect to {target}: {e}")),
    };
    let host = h.virtualhost.clone().unwrap_or_else(|| match target.ip() {
        IpAddr::V4(a) => format!("{a}:{}", target.port()),
        IpAddr::V6(a) => format!("[{a}]:{}", target.port()),
    });
    if !h.tls {
        return exchange(tcp, h, &host).await;
    }
    let config = match super::tls::config() {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e),
    };
    // SNI: the virtual host's name, else the address.
    let name = h
        .virtualhost
        .as_deref()
        .map(|v| {
            v.rsplit_once(':')
                .map_or(v, |(h, p)| if p.parse::<u16>().is_ok() { h } else { v })
        })
        .and_then(|v| rustls::pki_types::ServerName::try_from(v.to_owned()).ok())
        .unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(target.ip().into()));
    match tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
    {
        Ok(s) => exchange(s, h, &host).await,
        Err(e) => Outcome::Fail(format!("TLS handshake with {target}: {e}")),
    }
}

/// One HTTP/1.0 request on `s` (GET unless `method` says), and the checks
/// of its answer: the status, the body's digest, the body's pattern.
async fn exchange<S>(mut s: S, h: &HttpCheck, host: &str) -> Outcome
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // A method that may carry a body says it has none.
    let length = if matches!(h.method.as_str(), "GET" | "HEAD") {
        ""
    } else {
        "Content-Length: 0\r\n"
    };
    let req = format!(
        "{} {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: rvs-health-check\r\nConnection: close\r\n{length}\r\n",
        h.method, h.path
    );
    if let Err(e) = s.write_all(req.as_bytes()).await {
        return Outcome::Fail(format!("sending the request: {e}"));
    }
    let mut body = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                body.extend_from_slice(&buf[..n]);
                if body.len() > MAX_HTTP {
                    return Outcome::Fail(format!("the answer is over {MAX_HTTP} bytes"));
                }
            }
            // A TLS server that closes without close_notify: the answer
            // is what came.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !body.is_empty() => break,
            Err(e) => return Outcome::Fail(format!("reading the answer: {e}")),
        }
    }
    let Some(end) = body.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Outcome::Fail("not an HTTP answer".into());
    };
    let head = String::from_utf8_lossy(&body[..end]);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok());
    let Some(status) = status else {
        return Outcome::Fail("not an HTTP answer".into());
    };
    if !h.status.iter().any(|(a, b)| (*a..=*b).contains(&status)) {
        return Outcome::Fail(format!("HTTP status {status}"));
    }
    if let Some(want) = &h.digest {
        let got = Md5::digest(&body[end + 4..]);
        let got = dialogue::hex(&got);
        if &got != want {
            return Outcome::Fail(format!("body digest {got}, not {want}"));
        }
    }
    if let Some(want) = &h.expect_body
        && !want.0.is_match(&body[end + 4..])
    {
        return Outcome::Fail(format!(
            "the body does not match expect_body {:?}",
            want.as_str()
        ));
    }
    Outcome::Pass(None)
}

/// Fresh random bytes for a dialogue (nonces, identifiers).
fn random() -> [u8; 32] {
    use ring::rand::SecureRandom;
    let mut r = [0u8; 32];
    if ring::rand::SystemRandom::new().fill(&mut r).is_err() {
        // No system randomness: the clock, spread (identifiers only need
        // to differ between checks).
        let mut x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        for b in &mut r {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
    }
    r
}

/// A protocol check: its dialogue over TCP (TLS with `tls`) or UDP.
async fn protocol(target: SocketAddr, p: &ProtocolCheck) -> Outcome {
    if p.udp() {
        let s = match connected_udp(target).await {
            Ok(s) => s,
            Err(o) => return o,
        };
        let cx = Context {
            local: s.local_addr().unwrap_or(unspecified(target)),
            peer: target,
            random: random(),
        };
        return converse_udp(&s, dialogue::for_protocol(p, cx)).await;
    }
    let tcp = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => return Outcome::Fail(format!("connect to {target}: {e}")),
    };
    let cx = Context {
        local: tcp.local_addr().unwrap_or(unspecified(target)),
        peer: target,
        random: random(),
    };
    let d = dialogue::for_protocol(p, cx);
    if !p.tls {
        return converse(tcp, d, target.ip()).await;
    }
    let config = match super::tls::config() {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e),
    };
    let name = rustls::pki_types::ServerName::IpAddress(target.ip().into());
    match tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
    {
        Ok(s) => converse(s, d, target.ip()).await,
        Err(e) => Outcome::Fail(format!("TLS handshake with {target}: {e}")),
    }
}

fn verdict(v: dialogue::Verdict) -> Outcome {
    match v {
        Ok(()) => Outcome::Pass(None),
        Err(e) => Outcome::Fail(e),
    }
}

/// Drives a dialogue over a stream: what it sends is written, what the
/// server sends is read for it, at most [`MAX_ANSWER`] bytes in all and
/// [`MAX_PENDING`] it has not consumed. An FTP data connection goes to
/// the server's own address (`server`).
async fn converse<S>(mut s: S, mut d: Box<dyn Dialogue>, server: IpAddr) -> Outcome
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut input = Input::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0usize;
    let mut data: Option<TcpStream> = None;
    loop {
        match d.next(&mut input) {
            Next::Send(b) => {
                if let Err(e) = s.write_all(&b).await {
                    return Outcome::Fail(format!("sending to the server: {e}"));
                }
            }
            Next::Recv if input.closed => return Outcome::Fail("the server closed".into()),
            Next::Recv => match s.read(&mut buf).await {
                Ok(0) => input.closed = true,
                Ok(n) => {
                    total += n;
                    input.push(&buf[..n]);
                    if total > MAX_ANSWER {
                        return Outcome::Fail(format!("the answer is over {MAX_ANSWER} bytes"));
                    }
                    if input.bytes().len() > MAX_PENDING {
                        return Outcome::Fail(format!(
                            "over {MAX_PENDING} bytes without the answer's end: {}",
                            dialogue::shown(input.bytes())
                        ));
                    }
                }
                // A TLS server that closes without close_notify.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => input.closed = true,
                Err(e) => return Outcome::Fail(format!("reading the answer: {e}")),
            },
            Next::OpenData(port) => {
                let at = SocketAddr::new(server, port);
                match TcpStream::connect(at).await {
                    Ok(c) => data = Some(c),
                    Err(e) => return Outcome::Fail(format!("the data connection to {at}: {e}")),
                }
            }
            Next::ReadData => {
                let Some(mut c) = data.take() else {
                    return Outcome::Fail("no data connection".into());
                };
                let mut got = Vec::new();
                loop {
                    match c.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) if got.len() + n > MAX_ANSWER => {
                            return Outcome::Fail(format!("the file is over {MAX_ANSWER} bytes"));
                        }
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) => return Outcome::Fail(format!("reading the file: {e}")),
                    }
                }
                d.data(&got);
            }
            Next::Done(v) => return verdict(v),
        }
    }
}

/// Drives a dialogue over a connected UDP socket: one datagram per send
/// and per receive; an ICMP error fails.
async fn converse_udp(s: &UdpSocket, mut d: Box<dyn Dialogue>) -> Outcome {
    let mut input = Input::default();
    let mut buf = vec![0u8; 65_536];
    loop {
        match d.next(&mut input) {
            Next::Send(b) => {
                if let Err(e) = s.send(&b).await {
                    return Outcome::Fail(format!("sending to the server: {e}"));
                }
            }
            Next::Recv => match s.recv(&mut buf).await {
                Ok(n) => {
                    input.clear();
                    input.push(&buf[..n]);
                }
                Err(e) => return Outcome::Fail(format!("the server: {e}")),
            },
            Next::OpenData(_) | Next::ReadData => {
                return Outcome::Fail("no data connection over UDP".into());
            }
            Next::Done(v) => return verdict(v),
        }
    }
}

async fn misc(m: &MiscCheck, rs: SocketAddr) -> Outcome {
    let Some((program, args)) = m.argv.split_first() else {
        return Outcome::Fail("no program".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("RVS_REAL_SERVER", rs.to_string())
        .env("RVS_REAL_SERVER_IP", rs.ip().to_string())
        .env("RVS_REAL_SERVER_PORT", rs.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(format!("cannot run {program}: {e}")),
    };
    let pid = child.id();
    match tokio::time::timeout(m.timeout, child.wait()).await {
        Ok(Ok(status)) => match status.code() {
            Some(0) => Outcome::Pass(None),
            Some(code @ 2..=255) if m.dynamic => Outcome::Pass(Some(code - 2)),
            Some(code) => Outcome::Fail(format!("{program} exited with status {code}")),
            None => Outcome::Fail(format!("{program} was killed by a signal")),
        },
        Ok(Err(e)) => Outcome::Fail(format!("waiting for {program}: {e}")),
        Err(_) => {
            // The program and whatever it started.
            #[cfg(unix)]
            if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.kill().await;
            Outcome::Fail(format!("{program} ran over {:?}", m.timeout))
        }
    }
}

fn unspecified(target: SocketAddr) -> SocketAddr {
    match target {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

async fn connected_udp(target: SocketAddr) -> Result<UdpSocket, Outcome> {
    let s = UdpSocket::bind(unspecified(target))
        .await
        .map_err(|e| Outcome::Fail(format!("no UDP socket: {e}")))?;
    s.connect(target)
        .await
        .map_err(|e| Outcome::Fail(format!("connect to {target}: {e}")))?;
    Ok(s)
}

/// keepalived's UDP_CHECK: without `require_reply`, a port that answers
/// with an ICMP error fails and silence passes; with it, a reply of the
/// right length that starts with the given bytes is needed.
async fn udp(target: SocketAddr, u: &UdpCheck) -> Outcome {
    let s = match connected_udp(target).await {
        Ok(s) => s,
        Err(o) => return o,
    };
    if let Err(e) = s.send(&u.payload).await {
        return Outcome::Fail(format!("send to {target}: {e}"));
    }
    let mut buf = vec![0u8; 65_536];
    match &u.require_reply {
        None => {
            // Wait a moment for an ICMP error; the caller's timeout ends
            // the wait, and silence is a pass.
            match tokio::time::timeout(Duration::from_millis(200), s.recv(&mut buf)).await {
                Ok(Err(e)) => Outcome::Fail(format!("{target}: {e}")),
                _ => Outcome::Pass(None),
            }
        }
        Some(want) => match s.recv(&mut buf).await {
            Err(e) => Outcome::Fail(format!("{target}: {e}")),
            Ok(n) => {
                if n < u.min_reply_length || n > u.max_reply_length {
                    return Outcome::Fail(format!(
                        "a reply of {n} bytes, not {}–{}",
                        u.min_reply_length, u.max_reply_length
                    ));
                }
                let matches = want
                    .iter()
                    .zip(&buf[..n])
                    .all(|((v, mask), got)| got & mask == v & mask);
                if matches {
                    Outcome::Pass(None)
                } else {
                    Outcome::Fail("the reply does not match require_reply".into())
                }
            }
        },
    }
}

fn qtype_code(t: &str) -> u16 {
    match t {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        _ => 6, // SOA
    }
}

/// A DNS query for `d` with id `id` (recursion desired).
pub(crate) fn dns_query(d: &DnsCheck, id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + d.name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    q.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    q.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // AN, NS, AR
    for label in d.name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype_code(&d.qtype).to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    q
}

/// keepalived's DNS_CHECK: the answer with our id passes when its RCODE is
/// 0; other datagrams are ignored until the timeout.
async fn dns(target: SocketAddr, d: &DnsCheck) -> Outcome {
    let s = match connected_udp(target).await {
        Ok(s) => s,
        Err(o) => return o,
    };
    let id = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos())
        & 0xffff) as u16;
    if let Err(e) = s.send(&dns_query(d, id)).await {
        return Outcome::Fail(format!("send to {target}: {e}"));
    }
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match s.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => return Outcome::Fail(format!("{target}: {e}")),
        };
        if n < 12 || u16::from_be_bytes([buf[0], buf[1]]) != id || buf[2] & 0x80 == 0 {
            continue;
        }
        let rcode = buf[3] & 0x0f;
        return if rcode == 0 {
            Outcome::Pass(None)
        } else {
            Outcome::Fail(format!("DNS answer with rcode {rcode}"))
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dns_query_is_well_formed() {
        let q = dns_query(
            &DnsCheck {
                name: "www.example.com".into(),
                qtype: "AAAA".into(),
            },
            0x1234,
        );
        assert_eq!(&q[..12], &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&q[12..], b"\x03www\x07example\x03com\x00\x00\x1c\x00\x01");
        let root = dns_query(
            &DnsCheck {
                name: ".".into(),
                qtype: "SOA".into(),
            },
            1,
        );
        assert_eq!(&root[12..], &[0, 0, 6, 0, 1]);
    }
}
