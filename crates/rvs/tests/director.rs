//! rvs on a bare-metal director, in a network namespace of its own: a VIP
//! that is not on the host yet (a VRRP BACKUP's, an address added later)
//! is listened on and served when it arrives; keepalived, kept for VRRP
//! alone by `rvs import keepalived --vrrp-out`, moves the VIP and gives it
//! up when rvs stops serving.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Kill, NAME_SERVER, Netns, spawn_ready, temp_dir, wait_for};

/// Connects to `ip port` and prints what it reads, or `fail: why`.
const READ: &str = r#"
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    print(c.recv(100).decode())
except OSError as e:
    print("fail:", e)
"#;

fn name_server(ns: &Netns, ip: &str, port: &str, name: &str) -> Kill {
    spawn_ready(&mut ns.cmd(&["python3", "-c", NAME_SERVER, ip, port, name]))
}

fn read_from(ns: &Netns, ip: &str, port: &str) -> String {
    let out = ns.cmd(&["python3", "-c", READ, ip, port]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `GET path` of rvs's admin listener inside the namespace.
fn admin_get(ns: &Netns, path: &str) -> String {
    let url = format!("http://127.0.0.1:9180{path}");
    let out = ns
        .cmd(&["curl", "-s", "--max-time", "3", &url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace with a veth pair, `eth0` up, where the VIPs go.
fn director(tag: &str) -> Netns {
    let ns = Netns::new(tag);
    ns.must(
        &[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ],
        true,
    );
    ns.must(&["ip", "link", "set", "eth0", "up"], true);
    ns.must(&["ip", "link", "set", "eth1", "up"], true);
    // The director's own address (VRRP needs one on the interface).
    ns.must(
        &["ip", "addr", "add", "198.51.100.1/24", "dev", "eth0"],
        true,
    );
    ns
}

/// A service's `listen_not_local`, from the API.
fn not_local(ns: &Netns, service: &str) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&admin_get(ns, &format!("/api/v1/services/{service}")))
            .unwrap_or_default();
    v["listen_not_local"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_else(|| vec!["(no answer)".into()])
}

fn start_rvs(ns: &Netns, dir: &Path, yaml: &str) -> Kill {
    std::fs::write(dir.join("rvs.yaml"), yaml).unwrap();
    let rvs = Kill(
        ns.cmd(&[env!("CARGO_BIN_EXE_rvs"), "run", "--workers", "2", "-c"])
            .arg(dir.join("rvs.yaml"))
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("rvs.log")).unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_for(Duration::from_secs(20), || admin_get(ns, "/readyz")
            == "ready\n"),
        "rvs ready (it must start although its VIP is not here): {}",
        std::fs::read_to_string(dir.join("rvs.log")).unwrap_or_default()
    );
    rvs
}

fn has_addr(ns: &Netns, ip: &str) -> bool {
    let out = ns
        .cmd(&["ip", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!(" {ip}/"))
}

#[test]
fn a_vip_not_on_the_host_is_listened_on_and_served_when_it_arrives() {
    let ns = director("freebind");
    let _backend = name_server(&ns, "127.0.0.2", "8000", "backend-a");
    let dir = temp_dir("freebind");
    let yaml = "services:\n  - name: web4\n    listen: 192.0.2.10:80\n    real_servers: [{address: 127.0.0.2:8000}]\n  - name: web6\n    listen: '[2001:db8::10]:80'\n    real_servers: [{address: 127.0.0.2:8000}]\n";
    // `rvs check` (in the namespace, where neither is yet) says so.
    std::fs::write(dir.join("check.yaml"), yaml).unwrap();
    let check = ns
        .cmd(&[env!("CARGO_BIN_EXE_rvs"), "check", "-c"])
        .arg(dir.join("check.yaml"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && said.contains("not on this host: 192.0.2.10, 2001:db8::10:"),
        "{said}"
    );
    let rvs = start_rvs(&ns, &dir, yaml);
    let log = || std::fs::read_to_string(dir.join("rvs.log")).unwrap_or_default();

    // Absent, and said so: the log, the API, the metric.
    assert!(
        log().contains("listen address not on this host"),
        "{}",
        log()
    );
    assert_eq!(not_local(&ns, "web4"), ["192.0.2.10:80"]);
    assert_eq!(not_local(&ns, "web6"), ["[2001:db8::10]:80"]);
    let metrics = admin_get(&ns, "/metrics");
    let series = "rvs_service_listen_address_local{service=\"web6\",proto=\"tcp\",address=\"[2001:db8::10]:80\"}";
    assert!(metrics.contains(&format!("{series} 0")), "{metrics}");
    assert!(read_from(&ns, "192.0.2.10", "80").starts_with("fail"));

    // The addresses arrive: served at once, the state follows within the
    // second it is looked at.
    ns.must(&["ip", "addr", "add", "192.0.2.10/24", "dev", "eth0"], true);
    ns.must(
        &[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8::10/64",
            "dev",
            "eth0",
            "nodad",
        ],
        true,
    );
    assert_eq!(read_from(&ns, "192.0.2.10", "80"), "backend-a");
    assert_eq!(read_from(&ns, "2001:db8::10", "80"), "backend-a");
    assert!(
        wait_for(Duration::from_secs(5), || not_local(&ns, "web4").is_empty()
            && not_local(&ns, "web6").is_empty()),
        "{:?}",
        not_local(&ns, "web4")
    );
    assert!(
        wait_for(Duration::from_secs(5), || admin_get(&ns, "/metrics")
            .contains(&format!("{series} 1"))),
        "the metric"
    );
    assert!(
        log().contains("listen address on this host now"),
        "{}",
        log()
    );

    // It leaves again (a MASTER becoming BACKUP): said, and still listened on.
    ns.must(&["ip", "addr", "del", "192.0.2.10/24", "dev", "eth0"], true);
    assert!(wait_for(Duration::from_secs(5), || not_local(&ns, "web4")
        == ["192.0.2.10:80"]));
    ns.must(&["ip", "addr", "add", "192.0.2.10/24", "dev", "eth0"], true);
    assert_eq!(read_from(&ns, "192.0.2.10", "80"), "backend-a");
    drop(rvs);
}

/// The rvs binary where keepalived's script user (nobody) can run it.
fn binary_for_nobody(dir: &Path) -> PathBuf {
    let to = dir.join("rvs");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_rvs"), &to).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_rvs"), &to).unwrap();
    }
    let mut d = Some(dir);
    while let Some(p) = d {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p).unwrap().permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | 0o011)).unwrap();
        }
        d = p.parent().filter(|p| p.starts_with(std::env::temp_dir()));
    }
    to
}

/// keepalived's config test (`-t`) in the namespace: its messages.
/// keepalived 2.2 ends a config test by SIGTERM whatever the verdict, so
/// the messages are the verdict.
fn keepalived_t(ns: &Netns, conf: &Path) -> String {
    let out = ns
        .cmd(&["keepalived", "-t", "-l", "-n", "-D", "-f"])
        .arg(conf)
        .output()
        .unwrap_or_else(|e| panic!("keepalived: {e} (tests/run installs Debian's keepalived)"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const KEEPALIVED_CONF: &str = "! a director of an LVS-DR pair
global_defs {
    router_id LB1
    lvs_timeouts tcp 7200 tcpfin 120 udp 60
}

vrrp_script chk_sshd {
    script \"/bin/true\"
    user nobody
    interval 5
}

vrrp_instance VI_WEB {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass s3cret
    }
    virtual_ipaddress {
        192.0.2.10/24 dev eth0
    }
    track_script {
        chk_sshd
    }
}

virtual_server 192.0.2.10 80 {
    delay_loop 2
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server 127.0.0.2 8000 {
        TCP_CHECK {
            connect_timeout 1
        }
    }
}
";

#[test]
fn keepalived_keeps_vrrp_and_gives_the_vip_up_when_rvs_stops() {
    let ns = director("vrrp");
    let _backend = name_server(&ns, "127.0.0.2", "8000", "backend-a");
    let dir = temp_dir("vrrp");
    let src = dir.join("keepalived.conf");
    std::fs::write(&src, KEEPALIVED_CONF).unwrap();
    let vrrp = dir.join("vrrp.conf");
    let rvs_bin = binary_for_nobody(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_rvs"))
        .args(["import", "keepalived"])
        .arg(&src)
        .arg("--vrrp-out")
        .arg(&vrrp)
        .arg("--rvs-binary")
        .arg(&rvs_bin)
        .output()
        .unwrap();
    let warnings = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{warnings}");
    assert!(
        warnings.contains(&format!(
            "vrrp_instance VI_WEB (virtual addresses 192.0.2.10/24): kept for keepalived in {}",
            vrrp.display()
        )),
        "{warnings}"
    );
    let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
    let text = std::fs::read_to_string(&vrrp).unwrap();
    assert!(
        text.contains("track_script {\n        chk_sshd\n        rvs_ready\n    }"),
        "{text}"
    );
    assert!(
        !text.contains("\nvirtual_server") && !text.contains("real_server"),
        "{text}"
    );
    assert!(
        text.contains("auth_pass s3cret"),
        "authentication kept: {text}"
    );

    // keepalived's own config test: nothing unknown, the script found and
    // kept. The same test on a file with an unknown keyword says so (the
    // check can fail).
    let verdict = keepalived_t(&ns, &vrrp);
    for bad in [
        "Unknown keyword",
        "not found",
        "Disabling",
        "SECURITY VIOLATION",
        "rror",
    ] {
        assert!(
            !verdict.contains(bad),
            "keepalived -t: {bad}: {verdict}\n{text}"
        );
    }
    let broken = dir.join("broken.conf");
    std::fs::write(
        &broken,
        text.replace("router_id LB1", "router_id LB1\n    bogus_keyword 1"),
    )
    .unwrap();
    assert!(keepalived_t(&ns, &broken).contains("Unknown keyword 'bogus_keyword'"));

    // Now for real: rvs listens on the VIP before keepalived brings it;
    // keepalived (VRRP alone) becomes MASTER and adds it; the VIP is served.
    let rvs = start_rvs(&ns, &dir, &yaml);
    let klog = dir.join("keepalived.log");
    let _keepalived = Kill(
        ns.cmd(&["keepalived", "-n", "-l", "-D", "--vrrp", "-f"])
            .arg(&vrrp)
            .arg("-p")
            .arg(dir.join("keepalived.pid"))
            .arg("-r")
            .arg(dir.join("vrrp.pid"))
            .stdout(Stdio::from(std::fs::File::create(&klog).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&klog)
                    .unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    let klog_text = || std::fs::read_to_string(&klog).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(30), || has_addr(&ns, "192.0.2.10")),
        "MASTER with the VIP: {}",
        klog_text()
    );
    assert!(
        wait_for(Duration::from_secs(5), || read_from(
            &ns,
            "192.0.2.10",
            "80"
        ) == "backend-a"),
        "served through rvs"
    );

    // rvs stops serving: the script fails, the instance gives the VIP up.
    drop(rvs);
    assert!(
        wait_for(Duration::from_secs(15), || !has_addr(&ns, "192.0.2.10")),
        "the VIP given up when rvs stopped: {}",
        klog_text()
    );
    assert!(klog_text().contains("rvs_ready"), "{}", klog_text());
    // rvs back: the VIP back.
    let _rvs = start_rvs(&ns, &dir, &yaml);
    assert!(
        wait_for(Duration::from_secs(30), || has_addr(&ns, "192.0.2.10")),
        "the VIP back with rvs: {}",
        klog_text()
    );
    assert!(wait_for(Duration::from_secs(5), || read_from(
        &ns,
        "192.0.2.10",
        "80"
    ) == "backend-a"));
}

/// A UDP server that answers each datagram with `count` copies of it,
/// each 300 bytes: a run of one size, which rvs relays segmented.
const BURST_SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    for i in range(int(sys.argv[3])):
        s.sendto((data + b"-%d" % i).ljust(300, b"."), peer)
"#;

/// A client bound to one address that sends to another through a
/// connected socket (as resolvers do: an answer from any other address is
/// dropped) and prints how many answers it read.
const CONNECTED_CLIENT: &str = r#"
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
c = socket.socket(fam, socket.SOCK_DGRAM)
c.bind((sys.argv[1], 0))
c.connect((sys.argv[2], int(sys.argv[3])))
c.settimeout(2)
c.send(b"go")
n = 0
try:
    while n < int(sys.argv[4]):
        c.recv(2048)
        n += 1
except OSError:
    pass
print(n)
"#;

/// A DNS server answering `www.example.test` from a hosts line, on the
/// namespace's 127.0.0.2:5353.
fn dnsmasq(ns: &Netns, dir: &Path) -> Kill {
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "192.0.2.99 www.example.test\n").unwrap();
    let program = if Path::new("/usr/sbin/dnsmasq").exists() {
        "/usr/sbin/dnsmasq"
    } else {
        "dnsmasq"
    };
    let hosts_arg = format!("--addn-hosts={}", hosts.display());
    Kill(
        ns.cmd(&[
            program,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.2",
            "--port=5353",
            "--local=/test/",
            "--pid-file=",
            "--user=root",
            &hosts_arg,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq runs (tests/run installs dnsmasq-base)"),
    )
}

fn dig(ns: &Netns, server: &str, from: &str) -> String {
    let at = format!("@{server}");
    let out = ns
        .cmd(&[
            "dig",
            &at,
            "-p",
            "53",
            "-b",
            from,
            "+short",
            "+time=2",
            "+tries=1",
            "www.example.test",
            "A",
        ])
        .output()
        .unwrap_or_else(|e| panic!("dig: {e} (tests/run installs dnsutils)"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

#[test]
fn a_udp_service_on_a_wildcard_answers_from_the_address_sent_to() {
    let ns = director("pktinfo");
    // Addresses of the director that are not the clients' own.
    ns.must(&["ip", "addr", "add", "10.200.0.53/32", "dev", "lo"], true);
    ns.must(
        &["ip", "-6", "addr", "add", "2001:db8::53/128", "dev", "lo"],
        true,
    );
    let dir = temp_dir("pktinfo");
    let _dns = dnsmasq(&ns, &dir);
    let _burst =
        spawn_ready(&mut ns.cmd(&["python3", "-c", BURST_SERVER, "127.0.0.3", "7100", "6"]));
    let yaml = "services:
  - {name: dns4, proto: udp, listen: 0.0.0.0:53, real_servers: [{address: 127.0.0.2:5353}]}
  - {name: dns6, proto: udp, listen: '[::]:53', real_servers: [{address: 127.0.0.2:5353}]}
  - {name: burst4, proto: udp, listen: 0.0.0.0:7000, real_servers: [{address: 127.0.0.3:7100}]}
  - {name: burst6, proto: udp, listen: '[::]:7000', real_servers: [{address: 127.0.0.3:7100}]}
  - {name: ops4, proto: udp, listen: 0.0.0.0:7001, udp: {ops: true}, real_servers: [{address: 127.0.0.3:7100}]}
";
    let _rvs = start_rvs(&ns, &dir, yaml);

    // dig, bound to one address, asking another: the answer comes back
    // from the address asked (dig drops any other: "timed out").
    assert_eq!(dig(&ns, "10.200.0.53", "127.0.0.1"), "192.0.2.99");
    assert_eq!(dig(&ns, "2001:db8::53", "::1"), "192.0.2.99");
    // And the address the client itself has, as before.
    assert_eq!(dig(&ns, "127.0.0.1", "127.0.0.1"), "192.0.2.99");

    // Six answers of one size at once: batched, sent segmented, each from
    // the address asked; one-packet scheduling too.
    for (from, to, port) in [
        ("127.0.0.1", "10.200.0.53", "7000"),
        ("::1", "2001:db8::53", "7000"),
        ("127.0.0.1", "10.200.0.53", "7001"),
        ("198.51.100.1", "10.200.0.53", "7000"),
    ] {
        let out = ns
            .cmd(&["python3", "-c", CONNECTED_CLIENT, from, to, port, "6"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "6",
            "{from} -> {to}:{port}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
