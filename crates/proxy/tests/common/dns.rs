//! A real DNS server on loopback for the discovery tests: Debian's dnsmasq
//! (package dnsmasq-base), answering from a hosts file it re-reads on
//! SIGHUP and from `--srv-host` records, authoritative for `test.` (a name
//! it does not know is NXDOMAIN), with a long TTL that rvs must not wait
//! for.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running dnsmasq.
pub struct Dnsmasq {
    pub addr: SocketAddr,
    dir: PathBuf,
    srv: Vec<String>,
    child: Option<Child>,
}

fn free_udp_port() -> u16 {
    // The port is free on both UDP and TCP when dnsmasq binds it a moment
    // later, but for a race with another test, which a retry covers.
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

impl Dnsmasq {
    /// Starts dnsmasq with `hosts` (lines of `IP NAME`) and SRV records
    /// (`--srv-host` values: `_svc._proto.name,target,port,priority,weight`).
    pub fn start(tag: &str, hosts: &[&str], srv: &[&str]) -> Dnsmasq {
        let dir = std::env::temp_dir().join(format!("rvs-dns-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Dnsmasq {
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
            srv: srv.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        d.write_hosts(hosts);
        d.spawn();
        d
    }

    fn hosts_path(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    fn write_hosts(&self, hosts: &[&str]) {
        let tmp = self.dir.join("hosts.new");
        std::fs::write(&tmp, hosts.join("\n") + "\n").unwrap();
        std::fs::rename(&tmp, self.hosts_path()).unwrap();
    }

    fn spawn(&mut self) {
        for _ in 0..10 {
            let port = if self.addr.port() == 0 {
                free_udp_port()
            } else {
                self.addr.port()
            };
            // /usr/sbin is not on every user's PATH.
            let program = if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
                "/usr/sbin/dnsmasq"
            } else {
                "dnsmasq"
            };
            let mut cmd = Command::new(program);
            cmd.args([
                "--keep-in-foreground",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--local=/test/",
                "--local-ttl=300",
                "--pid-file=",
                "--user=root",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", self.hosts_path().display()));
            for s in &self.srv {
                cmd.arg(format!("--srv-host={s}"));
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("dnsmasq must be installed (Debian package dnsmasq-base; tests/run installs it)");
            std::thread::sleep(Duration::from_millis(200));
            if let Ok(Some(_)) = child.try_wait() {
                // The port was taken in the meantime: another one.
                if self.addr.port() == 0 {
                    continue;
                }
                std::thread::sleep(Duration::from_millis(300));
                continue;
            }
            self.addr = SocketAddr::from(([127, 0, 0, 1], port));
            self.child = Some(child);
            return;
        }
        panic!("dnsmasq did not start");
    }

    /// Replaces the hosts file and makes dnsmasq read it again.
    pub fn set_hosts(&self, hosts: &[&str]) {
        self.write_hosts(hosts);
        if let Some(c) = &self.child {
            let pid = rustix::process::Pid::from_raw(c.id() as i32).unwrap();
            rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
        }
        // dnsmasq handles the signal in its loop.
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Stops answering (the process ends; the port stays ours to restart).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port, with these SRV records.
    pub fn restart(&mut self, srv: &[&str]) {
        self.stop();
        self.srv = srv.iter().map(|s| (*s).to_owned()).collect();
        self.spawn();
    }

    /// The `global.dns` block pointing at it, resolving every `interval`.
    pub fn global(&self, interval: &str, extra: &str) -> String {
        format!(
            "global:\n  dns:\n    resolvers: [\"{}\"]\n    interval: {interval}\n    timeout: 500ms\n{extra}",
            self.addr
        )
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
