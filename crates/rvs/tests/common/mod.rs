//! Helpers shared by the binary-level tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // shared by several test crates

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

#[path = "../../../proxy/tests/common/temp.rs"]
mod temp;
#[allow(unused_imports)] // not every test crate makes directories
pub use temp::temp_dir;

pub mod debian_systemd;

/// A line in the test run's output even when the test passes (the test
/// harness captures `println!`, not writes to the standard error itself):
/// what a test found about the machine, a figure it measured.
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

pub fn rvs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rvs"))
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A port free on 127.0.0.1 for TCP and UDP, below the kernel's ephemeral
/// range (32768 and up): a port picked there could be taken, before rvs
/// binds it, by any client's connection on the machine; here only by
/// another test picking the same one at the same moment.
pub fn free_port() -> SocketAddr {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let seed = (std::process::id() as usize).wrapping_mul(7919)
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as usize));
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (seed.wrapping_add(n.wrapping_mul(4099)) % 12000) as u16;
        let at = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpListener::bind(at).is_ok() && std::net::UdpSocket::bind(at).is_ok() {
            return at;
        }
    }
    panic!("no free port between 20000 and 32000 on 127.0.0.1")
}

/// A backend thread that writes `name` to each connection and closes it.
pub fn name_backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = s.write_all(name.as_bytes());
        }
    });
    at
}

/// A backend that accepts connections, holds them open and never says a
/// word (a hung server; active connections).
pub fn holding_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    at
}

/// A backend that sends `n` bytes slowly (in 20 chunks, 50 ms apart),
/// then closes.
pub fn slow_backend(n: usize) -> SocketAddr {
    paced_backend(20, n / 20, Duration::from_millis(50))
}

/// A backend that sends `chunks` chunks of `size` bytes, `pause` apart, to
/// each connection, then closes.
pub fn paced_backend(chunks: usize, size: usize, pause: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            thread::spawn(move || {
                let chunk = vec![b'x'; size];
                for _ in 0..chunks {
                    if s.write_all(&chunk).is_err() {
                        return;
                    }
                    thread::sleep(pause);
                }
            });
        }
    });
    at
}

/// `podman ARGS`, run to its end.
pub fn podman<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman: {e} (tests/run installs podman and runc)"))
}

/// A podman container, removed however the test ends.
pub struct PodmanContainer(pub String);

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "0", &self.0]);
    }
}

/// A command's standard output and error, as text.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn fetch(vip: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(vip).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A one-service config; each daemon of a test gets its own admin port, so
/// that parallel tests do not meet on the default 9180.
pub fn config(vip: SocketAddr, backend: SocketAddr, admin: SocketAddr) -> String {
    format!(
        "global:\n  shutdown_grace: 20s\nadmin:\n  listen: \"{admin}\"\nservices:\n  - name: web\n    listen: \"{vip}\"\n    real_servers:\n      - address: \"{backend}\"\n"
    )
}

/// A process's resident memory, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A process's open descriptors.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A process's CPU time so far (user and system), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the line, the 12th and 13th after it.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// A row of docs/reliability.md: what was done, by which test, what was
/// observed. Always reported on the standard error; with
/// `RVS_RELIABILITY_OUT` set (tests/reliability sets it), also appended to
/// that file as a JSON line, from which the document's table is written.
pub fn record(key: &str, what: &str, test: &str, observed: &str) {
    report(&format!("reliability: {key}: {observed}"));
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

/// A network namespace of the test's own, with its loopback up, deleted
/// when dropped. Needs root and ip(8).
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("rvs-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ns = Netns(name);
        ns.must(&["ip", "netns", "add", &ns.0], false);
        ns.must(&["ip", "link", "set", "lo", "up"], true);
        ns
    }

    /// `args` run inside the namespace.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    /// Runs `args` (inside the namespace or not) and asserts it succeeds.
    pub fn must(&self, args: &[&str], inside: bool) -> std::process::Output {
        let out = if inside {
            self.cmd(args).output()
        } else {
            Command::new(args[0]).args(&args[1..]).output()
        }
        .unwrap_or_else(|e| panic!("{args:?}: {e} (this test needs ip and iptables)"));
        assert!(
            out.status.success(),
            "{args:?}: {} (this test needs root, ip and iptables)",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Netns {
    /// Black-holes TCP to `to` inside the namespace (`-I`: packets are
    /// dropped, no reset, no ICMP) or restores it (`-D`).
    pub fn drop_tcp_to(&self, op: &str, to: SocketAddr) {
        let (ip, port) = (to.ip().to_string(), to.port().to_string());
        self.must(
            &[
                "iptables", op, "INPUT", "-p", "tcp", "-d", &ip, "--dport", &port, "-j", "DROP",
            ],
            true,
        );
    }

    /// `rvs run` inside the namespace on `yaml` (written in a directory of
    /// `tag`), its standard error in the returned log file; killed when
    /// the `Kill` is dropped.
    pub fn rvs(&self, tag: &str, yaml: &str) -> (Kill, PathBuf) {
        let dir = temp_dir(tag);
        std::fs::write(dir.join("rvs.yaml"), yaml).unwrap();
        let log = dir.join("rvs.log");
        let child = self
            .cmd(&[env!("CARGO_BIN_EXE_rvs"), "run", "-c"])
            .arg(dir.join("rvs.yaml"))
            .stderr(std::process::Stdio::from(
                std::fs::File::create(&log).unwrap(),
            ))
            .spawn()
            .unwrap();
        (Kill(child), log)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A TCP server (python3) that writes its name to each connection and
/// closes it: `NAME_SERVER IP PORT NAME`, IPv4 or IPv6.
pub const NAME_SERVER: &str = r#"
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(128)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.sendall(sys.argv[3].encode())
    finally:
        c.close()
"#;

/// Starts `cmd` (a server that prints `ready` once it listens) and waits
/// for that line; killed when dropped.
pub fn spawn_ready(cmd: &mut Command) -> Kill {
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready", "{cmd:?}");
    Kill(child)
}

/// A child process killed when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on an HTTP/1.1 server: the status and the body.
pub fn http_get(at: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(at).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {at}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    Some((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_owned()
        },
    ))
}

/// A chunked body's content.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        body = rest.get(n..)?.strip_prefix("\r\n")?;
    }
}

/// `POST path` (no body) on an HTTP/1.1 server: the status and the body.
pub fn http_post(at: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(at).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {at}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// One sample's value in a Prometheus scrape (`series` is the whole
/// series: name and labels as rvs writes them).
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|v| v.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Median and 99th percentile of `v` (sorted here), in the unit given.
pub fn median_p99(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    if v.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Headless Chromium (Debian's chromium package) on `url`, with a profile
/// under `dir` and `extra` flags (`--dump-dom`, `--screenshot=…`): its
/// output. The page's scripts run for up to 5 s of virtual time.
pub fn chromium(dir: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
        .expect("chromium runs (tests/run installs Debian's chromium package)");
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .args(extra)
        .arg(url)
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// A running `rvs run` of a test, on its own configuration file, killed
/// when dropped.
pub struct Running {
    pub child: Child,
    pub dir: PathBuf,
    pub admin: SocketAddr,
}

impl Running {
    /// Starts rvs (with two workers) on `yaml`, whose admin listener is
    /// `admin`, and waits until it is ready.
    pub fn start(tag: &str, yaml: &str, admin: SocketAddr) -> Running {
        Running::start_with(tag, yaml, admin, &[])
    }

    /// As [`Running::start`], with `extra` arguments to `rvs run`.
    pub fn start_with(tag: &str, yaml: &str, admin: SocketAddr, extra: &[&str]) -> Running {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rvs"));
        cmd.args(["run"]).args(extra);
        Running::start_in(tag, yaml, admin, cmd)
    }

    /// As [`Running::start`], under the shell's `ulimit` with `limit`
    /// (`-n 512`: soft and hard; `-Sn 1024`: soft only).
    pub fn start_limited(tag: &str, yaml: &str, admin: SocketAddr, limit: &str) -> Running {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("ulimit {limit} && exec \"$0\" \"$@\"")])
            .arg(env!("CARGO_BIN_EXE_rvs"))
            .arg("run");
        Running::start_in(tag, yaml, admin, cmd)
    }

    fn start_in(tag: &str, yaml: &str, admin: SocketAddr, mut cmd: Command) -> Running {
        let dir = temp_dir(tag);
        std::fs::write(dir.join("rvs.yaml"), yaml).unwrap();
        let child = cmd
            .args(["--workers", "2", "-c"])
            .arg(dir.join("rvs.yaml"))
            .stderr(std::process::Stdio::from(
                std::fs::File::create(dir.join("rvs.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let r = Running { child, dir, admin };
        assert!(
            wait_for(Duration::from_secs(20), || http_get(admin, "/readyz")
                .is_some_and(|(s, _)| s == 200)),
            "rvs ready: {}",
            r.log()
        );
        r
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rvs.log")).unwrap_or_default()
    }

    pub fn scrape(&self) -> String {
        http_get(self.admin, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// UDP datagrams the kernel dropped (receive buffers full, checksums): the
/// only losses the UDP tests forgive.
pub fn kernel_udp_drops() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(n, _)| matches!(*n, "InErrors" | "RcvbufErrors"))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// A UDP server that sends every datagram back.
pub fn udp_echo() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = s.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    at
}

/// New connections to `vip` one after another, `pause` apart, each read
/// whole and expected to be `want`, until `stop`: the thread, and the
/// counts of those that were and were not.
pub fn connection_stream(
    vip: SocketAddr,
    want: &'static str,
    pause: Duration,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (
    thread::JoinHandle<()>,
    std::sync::Arc<AtomicUsize>,
    std::sync::Arc<AtomicUsize>,
) {
    use std::sync::Arc;
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let handle = {
        let (stop, ok, failed) = (Arc::clone(stop), Arc::clone(&ok), Arc::clone(&failed));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let got = TcpStream::connect(vip).and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    let mut name = String::new();
                    s.read_to_string(&mut name)?;
                    Ok(name)
                });
                match got {
                    Ok(n) if n == want => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("a connection to {vip} failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                if !pause.is_zero() {
                    thread::sleep(pause);
                }
            }
        })
    };
    (handle, ok, failed)
}

/// The shell commands of a Markdown file as a reader would type them:
/// every line of its ```` ```sh ```` blocks up to the heading `until` (or
/// the end), continuation lines (`\`) joined, blank lines and whole-line
/// comments left out. A trailing comment stays: the shell ignores it.
pub fn doc_commands(markdown: &str, until: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        if until.is_some_and(|h| line.trim_end() == h) {
            break;
        }
        let fence = line.trim_start();
        if fence.starts_with("```") {
            in_sh = !in_sh && fence.trim_end() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                out.push(std::mem::take(&mut pending));
            }
        }
    }
    out
}

/// tests/tools/NAME: the test servers and clients written in Python.
pub fn tool(name: &str) -> PathBuf {
    root().join("crates/rvs/tests/tools").join(name)
}

/// A self-signed certificate for every name the tests ask for.
pub fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
        .args(["-nodes", "-days", "2", "-subj", "/CN=example.com"])
        .args([
            "-addext",
            "subjectAltName=DNS:api.example.com,DNS:*.api.example.com,DNS:rpc.example.com,DNS:www.example.com",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl req: {}", output_text(&out));
    (cert, key)
}

/// Test servers (TLS or HTTP/3), by name; stopped when dropped.
pub struct Backends {
    ports: HashMap<String, SocketAddr>,
    _proc: Kill,
}

impl Backends {
    /// TLS servers (tests/tools/tls_backends.py).
    pub fn start(dir: &Path, names: &[&str]) -> Backends {
        Backends::of("tls_backends.py", dir, names)
    }

    /// HTTP/3 servers (tests/tools/quic_backends.py).
    pub fn quic(dir: &Path, names: &[&str]) -> Backends {
        Backends::of("quic_backends.py", dir, names)
    }

    fn of(script: &str, dir: &Path, names: &[&str]) -> Backends {
        let (cert, key) = certificate(dir);
        let mut child = Command::new("python3")
            .arg(tool(script))
            .arg(&cert)
            .arg(&key)
            .args(names)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut ports = HashMap::new();
        for _ in names {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let (name, port) = line.trim().split_once(' ').unwrap();
            ports.insert(
                name.to_owned(),
                ([127, 0, 0, 1], port.parse().unwrap()).into(),
            );
        }
        Backends {
            ports,
            _proc: Kill(child),
        }
    }

    pub fn at(&self, name: &str) -> SocketAddr {
        self.ports[name]
    }
}
