//! Real backends and clients on loopback for the data-plane tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // shared by several test crates

pub mod dns;
mod temp;

#[allow(unused_imports)] // not every test crate makes directories
pub use temp::temp_dir;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rvs_proxy::{Config, Options, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::mpsc;

/// Starts a proxy from YAML.
pub fn proxy(yaml: &str) -> Proxy {
    proxy_with(yaml, Options::default())
}

pub fn proxy_with(yaml: &str, options: Options) -> Proxy {
    let config = Config::parse(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    Proxy::start(config, options).unwrap()
}

/// The first address of service `name`.
pub fn vip(p: &Proxy, name: &str) -> SocketAddr {
    p.local_addrs(name)[0]
}

/// A backend that writes its name and closes each connection.
pub async fn name_backend(name: &str) -> SocketAddr {
    name_backend_on("127.0.0.1:0".parse().unwrap(), name).await
}

pub async fn name_backend_on(addr: SocketAddr, name: &str) -> SocketAddr {
    let l = TcpListener::bind(addr).await.unwrap();
    let at = l.local_addr().unwrap();
    let name = name.to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let name = name.clone();
            tokio::spawn(async move {
                let _ = s.write_all(name.as_bytes()).await;
                let _ = s.shutdown().await;
                // Wait for the client's FIN so the close is orderly.
                let mut sink = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut sink)).await;
            });
        }
    });
    at
}

/// A backend that writes its name, then holds the connection until the
/// client closes it. Counts connections open now.
pub async fn hold_backend(name: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let name = name.to_owned();
    let counter = open.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let name = name.clone();
            let counter = counter.clone();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = s.write_all(name.as_bytes()).await;
                let mut sink = vec![0u8; 4096];
                while let Ok(n) = s.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (at, open)
}

/// A backend that echoes every byte back, and half-closes after the
/// client's FIN.
pub async fn echo_backend() -> SocketAddr {
    echo_backend_on("127.0.0.1:0".parse().unwrap()).await
}

pub async fn echo_backend_on(addr: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind(addr).await.unwrap();
    let at = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    at
}

/// A backend that sends each connection's first bytes (up to `n`, or what
/// came before the client's FIN) to the test.
pub async fn capture_backend(n: usize) -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while got.len() < n {
                    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                        Ok(Ok(k)) => got.extend_from_slice(&buf[..k]),
                    }
                }
                let _ = tx.send(got);
                let _ = s.write_all(b"ok").await;
            });
        }
    });
    (at, rx)
}

/// Connects to `to` from the source address `from` (any 127.x address).
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.bind(SocketAddr::new(from, 0))?;
    sock.connect(to).await
}

/// Reads until end of stream (or 5 s), returning what came.
pub async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut v)).await;
    v
}

/// Connects to `vip` and returns the name the backend wrote.
pub async fn fetch_name(vip: SocketAddr) -> String {
    let mut s = TcpStream::connect(vip).await.unwrap();
    String::from_utf8(read_all(&mut s).await).unwrap()
}

/// Fetches names from `vip` until one is `name`, for up to 2 s; the last
/// name seen.
pub async fn fetch_name_until(vip: SocketAddr, name: &str) -> String {
    let mut seen = String::new();
    for _ in 0..100 {
        seen = fetch_name(vip).await;
        if seen == name {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

/// A deterministic byte stream (xorshift64*), for integrity checks.
pub struct Stream(u64);

impl Stream {
    pub fn new(seed: u64) -> Stream {
        Stream(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A running digest of bytes (FNV-1a over 64-bit words and a length).
#[derive(Default, PartialEq, Eq, Debug, Clone, Copy)]
pub struct Digest {
    h: u64,
    len: u64,
    tail: u64,
    tail_len: u32,
}

impl Digest {
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        while !data.is_empty() {
            if self.tail_len == 0 && data.len() >= 8 {
                let (words, rest) = data.split_at(data.len() - data.len() % 8);
                for w in words.chunks_exact(8) {
                    let v = u64::from_le_bytes(w.try_into().unwrap());
                    self.h = (self.h ^ v).wrapping_mul(0x100_0000_01B3);
                }
                data = rest;
                continue;
            }
            self.tail |= u64::from(data[0]) << (8 * self.tail_len);
            self.tail_len += 1;
            data = &data[1..];
            if self.tail_len == 8 {
                self.h = (self.h ^ self.tail).wrapping_mul(0x100_0000_01B3);
                self.tail = 0;
                self.tail_len = 0;
            }
        }
    }
}

/// A UDP backend that answers each datagram with `NAME:payload`.
pub async fn udp_backend(name: &str) -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let at = s.local_addr().unwrap();
    let name = name.to_owned();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf).await else {
                continue;
            };
            let mut reply = format!("{name}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from).await;
        }
    });
    at
}

/// Sends `msg` from `client` to `vip` and waits for one reply.
pub async fn udp_ask(client: &UdpSocket, vip: SocketAddr, msg: &[u8]) -> Option<String> {
    client.send_to(msg, vip).await.ok()?;
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), client.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Waits until `cond` holds (checked every 10 ms), up to `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// The active and inactive counts of real server `addr` of service `name`.
pub fn counts(p: &Proxy, name: &str, addr: SocketAddr) -> (u32, u32) {
    let d = p.service(name).unwrap().scheduler().dest(addr).unwrap();
    (d.active_conns(), d.inactive_conns())
}

/// Serves the admin API of `p` on a loopback port.
pub async fn admin(p: &Proxy) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap();
    let admin = rvs_proxy::admin::Admin::new(p.clone(), None);
    tokio::spawn(admin.serve(l, tokio_util::sync::CancellationToken::new()));
    at
}

/// One HTTP/1.1 request to the admin API: the status and the body.
pub async fn http(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(admin).await.unwrap();
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if method != "GET" {
        req.push_str("Content-Type: application/json\r\n");
    }
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("the admin API answers")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    )
}

/// A chunked body's content (a scrape of /metrics is sent so).
pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk's size line");
        let n = usize::from_str_radix(size.trim(), 16).expect("a chunk's size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").expect("a chunk's end");
    }
}

/// `GET path` as JSON.
pub async fn get_json(admin: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http(admin, "GET", path, None, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The value of one sample of a Prometheus text scrape.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l[series.len()..].trim().parse().ok())
}

/// A name backend that can be stopped (its listener closes) and started
/// again on the same address.
pub struct Killable {
    pub addr: SocketAddr,
    name: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Killable {
    pub async fn start(name: &str) -> Killable {
        let mut k = Killable {
            addr: "127.0.0.1:0".parse().unwrap(),
            name: name.to_owned(),
            task: None,
        };
        k.restart().await;
        k
    }

    /// Stops accepting: connects are refused.
    pub fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again (on the same address once it has one).
    pub async fn restart(&mut self) {
        self.kill();
        let mut tries = 0;
        let l = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("rebinding {}: {e}", self.addr),
            }
        };
        self.addr = l.local_addr().unwrap();
        let name = self.name.clone();
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                let name = name.clone();
                tokio::spawn(async move {
                    let _ = s.write_all(name.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        }));
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}

/// This process's resident memory, in KiB (`VmRSS`).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A row of docs/reliability.md, as the binary-level tests record theirs
/// (crates/rvs/tests/common): on the standard error, and with
/// `RVS_RELIABILITY_OUT` set, appended to that file as a JSON line.
pub fn record(key: &str, what: &str, test: &str, observed: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "reliability: {key}: {observed}");
    if let Some(path) = std::env::var_os("RVS_RELIABILITY_OUT") {
        let line =
            serde_json::json!({"key": key, "what": what, "test": test, "observed": observed});
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
}
