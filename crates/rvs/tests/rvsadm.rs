//! `rvsadm` against a running `rvs run`: the tables byte for byte against
//! fixtures written with ipvsadm's formats (tests/tools/ipvsadm_fixtures.py),
//! changes and their errors with ipvsadm's messages and exit statuses,
//! -S | -C | -R, the token, the live connection table, `rvs show-config`,
//! the status page in Chromium, the access log.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::temp_dir;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

fn bin(name: &str) -> Command {
    Command::new(match name {
        "rvs" => env!("CARGO_BIN_EXE_rvs"),
        _ => env!("CARGO_BIN_EXE_rvsadm"),
    })
}

/// A free loopback port of five digits (fixtures stand 40001.. for them).
fn free_port() -> u16 {
    common::free_port().port()
}

/// A running `rvs run` and its admin address; killed when dropped.
struct Daemon {
    child: Child,
    admin: String,
    log: PathBuf,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(tag: &str, yaml: &str, admin: u16) -> Daemon {
        let dir = temp_dir(tag);
        let path = dir.join("rvs.yaml");
        std::fs::write(&path, yaml).unwrap();
        let log = dir.join("rvs.log");
        let child = bin("rvs")
            .arg("run")
            .arg("-c")
            .arg(&path)
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let d = Daemon {
            child,
            admin: format!("127.0.0.1:{admin}"),
            log,
            dir,
        };
        let start = Instant::now();
        while TcpStream::connect(&d.admin).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "rvs did not start: {}",
                d.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs rvsadm against this daemon.
    fn rvsadm(&self, args: &str) -> Output {
        self.rvsadm_with(args, None, &[])
    }

    fn rvsadm_with(&self, args: &str, stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
        let mut c = bin("rvsadm");
        c.args(args.split_whitespace())
            .env("RVS_ADMIN", &self.admin)
            .env_remove("RVS_ADMIN_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let input = stdin.unwrap_or("").to_owned();
        let mut sin = child.stdin.take().unwrap();
        let feeder = thread::spawn(move || {
            let _ = sin.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        out
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit status and stderr of a run that must fail.
fn fails(o: &Output) -> (i32, String) {
    (o.status.code().unwrap(), stderr(o).trim_end().to_owned())
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
    stdout(o)
}

fn fixture(name: &str, ports: &[(u16, u16)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rvsadm")
        .join(name);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (stand_in, real) in ports {
        text = text.replace(&format!(":{stand_in}"), &format!(":{real}"));
    }
    text
}

/// A UDP server that echoes each datagram.
fn udp_echo(port: u16) {
    let s = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
}

/// The table of tests/tools/ipvsadm_fixtures.py.
fn fixture_table() -> (Daemon, Vec<(u16, u16)>) {
    let (v1, v2, v3, rs, admin) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    udp_echo(rs);
    let yaml = format!(
        r#"admin:
  listen: 127.0.0.1:{admin}
services:
  - name: web
    listen: 127.0.0.1:{v1}
    scheduler: wlc
    persistence: {{ timeout: 600s, netmask: 255.255.255.0 }}
    real_servers:
      - {{ address: "192.168.10.2:8080", weight: 3, u_threshold: 100, l_threshold: 50 }}
      - {{ address: "10.0.0.7:80", weight: 0 }}
      - {{ address: "127.0.0.1:8080", weight: 1 }}
      - {{ address: "10.0.0.7:79", weight: 2 }}
  - name: dns
    listen: 127.0.0.1:{v2}
    proto: udp
    scheduler: sh
    flags: [sh-port, sh-fallback]
    udp: {{ ops: true }}
    real_servers:
      - {{ address: "127.0.0.1:{rs}" }}
  - name: v6
    listen: "[::1]:{v3}"
    scheduler: mh
    flags: [mh-port]
    persistence: {{ timeout: 30s, ipv6_prefix: 64 }}
    real_servers:
      - {{ address: "[::1]:8443", weight: 1 }}
      - {{ address: "[2001:db8::1]:443", weight: 100 }}
"#
    );
    let d = Daemon::start("table", &yaml, admin);
    (d, vec![(40001, v1), (40002, v2), (40003, v3), (40004, rs)])
}

#[test]
fn the_tables_are_ipvsadms_byte_for_byte() {
    let (d, ports) = fixture_table();
    let check = |args: &str, name: &str| {
        let got = ok(&d.rvsadm(args));
        assert_eq!(got, fixture(name, &ports), "rvsadm {args}");
    };
    check("-Ln", "list.txt");
    check("-l -n", "list.txt");
    check("-L -n --thresholds", "thresholds.txt");
    check("-Ln --persistent-conn", "persistent-conn.txt");
    check("-Sn", "save.txt");
    check(&format!("-Ln -t 127.0.0.1:{}", ports[0].1), "list-one.txt");

    // Traffic through the UDP service (one-packet scheduling: each
    // datagram is a connection): exact counts.
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    for msg in ["one", "two", "three"] {
        c.send_to(msg.as_bytes(), ("127.0.0.1", ports[1].1))
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg.as_bytes());
    }
    check("-Ln --stats", "stats.txt");
    check("-L -n --stats --exact", "stats-exact.txt");

    // -Z zeroes the tables.
    ok(&d.rvsadm("-Z"));
    let zeroed = ok(&d.rvsadm("-Ln --stats"));
    assert!(!zeroed.contains("       11"), "{zeroed}");

    // The timeouts, and no sync daemon.
    assert_eq!(
        ok(&d.rvsadm("-L --timeout")),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    ok(&d.rvsadm("--set 600 0 30"));
    assert_eq!(
        ok(&d.rvsadm("-L --timeout")),
        "Timeout (tcp tcpfin udp): 600 120 30\n"
    );
    assert_eq!(ok(&d.rvsadm("-L --daemon")), "");

    // Sync daemons: started, listed as ipvsadm lists a kernel's (whose
    // defaults the kernel fills in), refused twice, stopped.
    ok(&d.rvsadm("--start-daemon master --mcast-interface lo --syncid 5"));
    ok(&d.rvsadm("--start-daemon backup --mcast-interface lo --mcast-group 224.0.0.82 --mcast-port 8849 --sync-maxlen 2000 --mcast-ttl 3"));
    assert_eq!(
        ok(&d.rvsadm("-L --daemon")),
        "master sync daemon (mcast=lo, syncid=5, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n\
         backup sync daemon (mcast=lo, syncid=0, maxlen=2000, group=224.0.0.82, port=8849, ttl=3)\n"
    );
    assert_eq!(
        fails(&d.rvsadm("--start-daemon master --mcast-interface lo")),
        (255, "Daemon has already run".into())
    );
    assert_eq!(
        fails(&d.rvsadm("--start-daemon master --mcast-group 10.0.0.1")),
        (2, "invalid IPv4 mcast-group `10.0.0.1'".into())
    );
    assert_eq!(
        fails(&d.rvsadm("--start-daemon bogus")),
        (2, "illegal start-daemon parameter specified".into())
    );
    // The daemons are part of the configuration: show-config has them.
    let shown = ok(&bin("rvs")
        .args(["show-config", "--admin", &d.admin])
        .output()
        .unwrap());
    assert!(shown.contains("sync_daemon:"), "{shown}");
    ok(&d.rvsadm("--stop-daemon master"));
    ok(&d.rvsadm("--stop-daemon backup"));
    assert_eq!(ok(&d.rvsadm("-L --daemon")), "");
    assert_eq!(
        fails(&d.rvsadm("--stop-daemon backup")),
        (255, "No daemon is running".into())
    );
    assert_eq!(
        fails(&d.rvsadm("--start-daemon master --mcast-interface nosuch0")),
        (255, "No such device: nosuch0".into())
    );
}

#[test]
fn changes_and_their_errors_are_ipvsadms() {
    let (backend, admin) = (free_port(), free_port());
    let l = TcpListener::bind(("127.0.0.1", backend)).unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = s.write_all(b"hello");
        }
    });
    let d = Daemon::start(
        "changes",
        &format!("admin:\n  listen: 127.0.0.1:{admin}\n"),
        admin,
    );
    let vip = free_port();
    let v = format!("127.0.0.1:{vip}");
    ok(&d.rvsadm(&format!("-A -t {v} -s rr")));
    assert_eq!(
        fails(&d.rvsadm(&format!("-A -t {v} -s rr"))),
        (255, "Service already exists".into())
    );
    ok(&d.rvsadm(&format!("-a -t {v} -r 127.0.0.1:{backend} -m -w 2")));
    assert_eq!(
        fails(&d.rvsadm(&format!("-a -t {v} -r 127.0.0.1:{backend} -m"))),
        (255, "Destination already exists".into())
    );
    // Traffic flows through what rvsadm built.
    let mut s = TcpStream::connect(&v).unwrap();
    let mut got = String::new();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello");

    // -e sends the whole server: weight 1 unless given.
    ok(&d.rvsadm(&format!("-e -t {v} -r 127.0.0.1:{backend} -m -x 10 -y 5")));
    let t = ok(&d.rvsadm(&format!("-Ln --thresholds -t {v}")));
    assert!(t.contains("10         5"), "{t}");
    let t = ok(&d.rvsadm(&format!("-Ln -t {v}")));
    assert!(
        t.contains(&format!("127.0.0.1:{backend}")) && t.contains(" FullNat 1 "),
        "{t}"
    );
    assert_eq!(
        fails(&d.rvsadm(&format!("-e -t {v} -r 127.0.0.1:1 -m"))),
        (255, "No such destination".into())
    );
    assert_eq!(
        fails(&d.rvsadm("-a -t 127.0.0.1:1 -r 127.0.0.1:2")),
        (255, "Service not defined".into())
    );
    assert_eq!(
        fails(&d.rvsadm("-E -t 127.0.0.1:1 -s rr")),
        (255, "No such service".into())
    );
    assert_eq!(
        fails(&d.rvsadm(&format!("-E -t {v} -s nosuch"))),
        (255, "Scheduler or persistence engine not found".into())
    );
    assert_eq!(
        fails(&d.rvsadm("-D -t 127.0.0.1:1")),
        (255, "No such service".into())
    );
    assert_eq!(
        fails(&d.rvsadm("-L -t 127.0.0.1:1")),
        (1, "No such service".into())
    );
    // The command line's own errors.
    assert_eq!(
        fails(&d.rvsadm("-A -t 127.0.0.1")),
        (2, "Zero port specified for non-persistent service".into())
    );
    assert_eq!(
        fails(&d.rvsadm(&format!("-a -t {v} -w 1"))),
        (
            2,
            "You need to supply the 'real-server' option for the 'add-server' command".into()
        )
    );
    assert_eq!(
        fails(&d.rvsadm("-n -L")),
        (
            255,
            format!(
                "Try `{0} -h' or '{0} --help' for more information.",
                env!("CARGO_BIN_EXE_rvsadm")
            )
        )
    );
    // -E changes the scheduler and persistence, as ipvsadm sends them.
    ok(&d.rvsadm(&format!("-E -t {v} -s sh -b sh-port -p 120")));
    let t = ok(&d.rvsadm(&format!("-Ln -t {v}")));
    assert!(
        t.contains(&format!("TCP  {v} sh (sh-port) persistent 120\n")),
        "{t}"
    );
    // -d, then -D: the address is free again.
    ok(&d.rvsadm(&format!("-d -t {v} -r 127.0.0.1:{backend}")));
    ok(&d.rvsadm(&format!("-D -t {v}")));
    let start = Instant::now();
    while TcpStream::connect(&v).is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{v} still accepts"
        );
        thread::sleep(Duration::from_millis(10));
    }
    // rvs not there.
    let gone = bin("rvsadm")
        .args(["-Ln", "--admin", "127.0.0.1:1"])
        .output()
        .unwrap();
    let (code, msg) = fails(&gone);
    assert_eq!(code, 2);
    assert!(msg.starts_with("Can't reach rvs"), "{msg}");
}

#[test]
fn save_clear_restore_gives_the_same_table() {
    let (d, _) = fixture_table();
    let saved = ok(&d.rvsadm("-Sn"));
    let listed = ok(&d.rvsadm("-Ln"));
    ok(&d.rvsadm("-C"));
    assert_eq!(
        ok(&d.rvsadm("-Ln")),
        "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    );
    let r = d.rvsadm_with("-R", Some(&saved), &[]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(ok(&d.rvsadm("-Sn")), saved);
    assert_eq!(ok(&d.rvsadm("-Ln")), listed);
    // A rule refused in the middle is reported, the rest still runs.
    ok(&d.rvsadm("-C"));
    let rules = format!("{saved}-a -t 127.0.0.1:1 -r 127.0.0.1:2 -m -w 1\n");
    let r = d.rvsadm_with("-R", Some(&rules), &[]);
    assert_eq!(fails(&r), (255, "Service not defined".into()));
    assert_eq!(ok(&d.rvsadm("-Sn")), saved);
    // `rvs show-config` writes the running table as a file rvs reads.
    let yaml = ok(&bin("rvs")
        .args(["show-config", "--admin", &d.admin])
        .output()
        .unwrap());
    let path = d.dir.join("kept.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let check = ok(&bin("rvs")
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap());
    assert!(check.contains("ok, 3 services"), "{check}\n{yaml}");
}

#[test]
fn changes_need_the_token_when_one_is_set() {
    let admin = free_port();
    let d = Daemon::start(
        "token",
        &format!("admin:\n  listen: 127.0.0.1:{admin}\n  token: t0ken\n"),
        admin,
    );
    let vip = format!("-A -t 127.0.0.1:{} -s rr", free_port());
    let (code, msg) = fails(&d.rvsadm(&vip));
    assert_eq!(code, 255);
    assert!(msg.starts_with("Permission denied"), "{msg}");
    ok(&d.rvsadm("-Ln"));
    ok(&d.rvsadm_with(&vip, None, &[("RVS_ADMIN_TOKEN", "t0ken")]));
    let listed = ok(&d.rvsadm("-Ln"));
    assert!(listed.contains("TCP  127.0.0.1:"), "{listed}");
    ok(&d.rvsadm("-C --token t0ken"));
}

#[test]
fn live_connections_are_listed_with_state_and_expiry() {
    let (backend, admin, vip) = (free_port(), free_port(), free_port());
    // Holds each connection until the client ends it.
    let l = TcpListener::bind(("127.0.0.1", backend)).unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut s = s;
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
            });
        }
    });
    let d = Daemon::start(
        "conns",
        &format!(
            "global:\n  access_log: true\nadmin:\n  listen: 127.0.0.1:{admin}\nservices:\n  - name: web\n    listen: 127.0.0.1:{vip}\n    persistence: {{timeout: 300s}}\n    real_servers:\n      - address: 127.0.0.1:{backend}\n"
        ),
        admin,
    );
    let mut c = TcpStream::connect(("127.0.0.1", vip)).unwrap();
    c.write_all(b"12345").unwrap();
    let me = c.local_addr().unwrap();
    let start = Instant::now();
    let listed = loop {
        let out = ok(&d.rvsadm("-Lnc"));
        if out.contains("ESTABLISHED") || start.elapsed() > Duration::from_secs(5) {
            break out;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines[0], "IPVS connection entries");
    assert_eq!(
        lines[1],
        "pro expire state       source             virtual            destination"
    );
    let row = "TCP 14:5";
    let conn = lines
        .iter()
        .find(|l| l.contains("ESTABLISHED"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(conn.starts_with(row), "{conn}");
    assert!(
        conn.ends_with(&format!(
            "ESTABLISHED {:<18} {:<18} 127.0.0.1:{backend}",
            me.to_string(),
            format!("127.0.0.1:{vip}")
        )),
        "{conn}"
    );
    // The persistence template: state NONE, client port 0.
    let template = lines
        .iter()
        .find(|l| l.contains("NONE"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(template.starts_with("TCP 04:"), "{template}");
    assert!(template.contains(" 127.0.0.1:0 "), "{template}");
    // The access log line when it ends: bytes each way, how it ended.
    drop(c);
    let start = Instant::now();
    while !d.log_text().contains("bytes_in=5") {
        assert!(start.elapsed() < Duration::from_secs(5), "{}", d.log_text());
        thread::sleep(Duration::from_millis(50));
    }
    let log = d.log_text();
    let line = log.lines().find(|l| l.contains("bytes_in=5")).unwrap();
    assert!(line.contains(&format!("client={me}")), "{line}");
    assert!(
        line.contains(&format!("server=127.0.0.1:{backend}")),
        "{line}"
    );
    assert!(
        line.contains("end=closed") || line.contains("end=reset"),
        "{line}"
    );
}

/// The status page in headless Chromium (Debian's chromium package): every
/// service and real server is a row, coloured by state.
#[test]
fn the_status_page_renders_in_chromium() {
    let (d, _) = fixture_table();
    let url = format!("http://{}/", d.admin);
    let run = |extra: &[&str]| common::chromium(&d.dir, &url, extra);
    let dom = stdout(&run(&["--dump-dom"]));
    for svc in ["web", "dns", "v6"] {
        assert!(
            dom.contains(&format!("data-service=\"{svc}\"")),
            "{svc} is not on the page:\n{dom}"
        );
    }
    for rs in [
        "192.168.10.2:8080",
        "10.0.0.7:79",
        "127.0.0.1:8080",
        "[2001:db8::1]:443",
    ] {
        assert!(dom.contains(&format!(">{rs}<")), "{rs} is not on the page");
    }
    assert!(
        dom.contains("<tr class=\"quiescent\"><td>10.0.0.7:80</td>"),
        "weight 0 is quiescent:\n{dom}"
    );
    assert!(
        dom.contains("<tr class=\"available\"><td>192.168.10.2:8080</td>"),
        "{dom}"
    );
    assert!(dom.contains(">ready<"), "{dom}");
    let shot = d.dir.join("status.png");
    let out = run(&[
        "--hide-scrollbars",
        "--window-size=1280,900",
        &format!("--screenshot={}", shot.display()),
    ]);
    assert!(out.status.success());
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a screenshot"
    );
}

/// The fixtures are what the generator writes from ipvsadm's formats.
#[test]
fn the_fixtures_come_from_the_generator() {
    let dir = temp_dir("fixtures");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(root.join("tests/tools/ipvsadm_fixtures.py"))
        .arg(&dir)
        .output()
        .expect("python3 runs (.ci/run installs it)");
    assert!(out.status.success(), "{}", stderr(&out));
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        let committed = root.join("tests/fixtures/rvsadm").join(name);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            std::fs::read_to_string(&committed).unwrap(),
            "{} differs from what the generator writes",
            committed.display()
        );
        n += 1;
    }
    assert_eq!(n, 7);
}

/// As ipvsadm after keepalived's checks: a server that fails its checks is
/// not in the table; the log says when and why.
#[test]
fn a_server_failing_its_checks_leaves_the_table_and_the_log_says_why() {
    let (live, dead, admin, vip) = (free_port(), free_port(), free_port(), free_port());
    let l = TcpListener::bind(("127.0.0.1", live)).unwrap();
    thread::spawn(move || for _ in l.incoming() {});
    let d = Daemon::start(
        "health",
        &format!(
            "admin:\n  listen: 127.0.0.1:{admin}\nservices:\n  - name: web\n    listen: 127.0.0.1:{vip}\n    health_check: {{ type: tcp, delay_loop: 200ms, retry: 0, warmup: 0s }}\n    real_servers:\n      - address: 127.0.0.1:{live}\n      - address: 127.0.0.1:{dead}\n"
        ),
        admin,
    );
    let start = Instant::now();
    let listed = loop {
        let out = ok(&d.rvsadm("-Ln"));
        if !out.contains(&format!(":{dead} ")) || start.elapsed() > Duration::from_secs(5) {
            break out;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(listed.contains(&format!("127.0.0.1:{live} ")), "{listed}");
    assert!(!listed.contains(&format!("127.0.0.1:{dead} ")), "{listed}");
    let log = d.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("real server down"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains(&format!("real_server=127.0.0.1:{dead}")),
        "{line}"
    );
    assert!(line.contains("refused"), "{line}");
}
