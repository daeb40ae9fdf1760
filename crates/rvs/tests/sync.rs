//! Two rvs directors on one link, master and backup, sharing state with
//! IPVS's sync protocol: clients through the master, then the VIP moved to
//! the backup, keep their servers. The wire format is checked with a
//! decoder written from ip_vs_sync.c's structs (in Python, not rvs's code),
//! and the backup's decoder with datagrams built the same way, hostile ones
//! included.
//!
//! The link: network namespaces `m` (master), `b` (backup) and `c`
//! (clients and real servers), a bridge in `c` with a veth to each
//! director. Needs root, ip(8) and python3.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use common::{Kill, NAME_SERVER, Netns, spawn_ready, wait_for};

const VIP: &str = "10.77.0.100";
const SERVERS: [&str; 2] = ["10.77.0.3:8001", "10.77.0.3:8002"];
const UDP_SERVERS: [&str; 2] = ["10.77.0.3:9001", "10.77.0.3:9002"];

/// A UDP server that answers each datagram with its name.
const UDP_NAME_SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(sys.argv[3].encode(), peer)
"#;

/// The datagrams of ip_vs_sync.c, version 1, written from its structs:
/// `decode` prints a received message as JSON, `template` builds one.
const SYNC_PY: &str = r#"
import json, socket, struct, sys

def decode(b):
    # struct ip_vs_sync_mesg: reserved, syncid, size, nr_conns, version, spare
    reserved, syncid, size, n, version, spare = struct.unpack_from("!BBHBbH", b, 0)
    out = {"reserved": reserved, "syncid": syncid, "size": size, "len": len(b),
           "version": version, "spare": spare, "entries": []}
    p = 8
    for _ in range(n):
        # struct ip_vs_sync_v4 / _v6: type, protocol, ver_size, flags, state,
        # cport, vport, dport, fwmark, timeout, then caddr, vaddr, daddr
        typ, proto, ver_size, flags, state, cport, vport, dport, fwmark, timeout = \
            struct.unpack_from("!BBHIHHHHII", b, p)
        esize = ver_size & 0x0fff
        alen = 16 if typ & 1 else 4
        fam = socket.AF_INET6 if typ & 1 else socket.AF_INET
        addrs = [socket.inet_ntop(fam, b[p + 24 + i * alen: p + 24 + (i + 1) * alen]) for i in range(3)]
        opts, q = {}, p + 24 + 3 * alen
        while q < p + esize:
            t, l = b[q], b[q + 1]
            opts[str(t)] = b[q + 2:q + 2 + l].decode("latin-1")
            q += 2 + l
        out["entries"].append({"type": typ, "protocol": proto, "version": ver_size >> 12,
            "size": esize, "flags": flags, "state": state, "cport": cport, "vport": vport,
            "dport": dport, "fwmark": fwmark, "timeout": timeout, "caddr": addrs[0],
            "vaddr": addrs[1], "daddr": addrs[2], "options": opts, "offset": p})
        p += (esize + 3) & ~3
    return out

def template(syncid, caddr, vaddr, vport, daddr, dport, timeout):
    entry = struct.pack("!BBHIHHHHII", 0, 6, 36, 0x1000, 0, 0, vport, dport, 0, timeout)
    entry += socket.inet_aton(caddr) + socket.inet_aton(vaddr) + socket.inet_aton(daddr)
    return struct.pack("!BBHBbH", 0, syncid, 8 + len(entry), 1, 1, 0) + entry

def group_socket(ifname, bind):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    if bind:
        s.bind(("224.0.0.81", 8848))
        ifindex = socket.if_nametoindex(ifname)
        mreqn = struct.pack("4s4si", socket.inet_aton("224.0.0.81"), socket.inet_aton("0.0.0.0"), ifindex)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    return s

if sys.argv[1] == "capture":
    s = group_socket(sys.argv[2], True)
    print("ready", flush=True)
    s.settimeout(30)
    while True:
        data = s.recv(65535)
        d = decode(data)
        print(json.dumps(d), flush=True)
elif sys.argv[1] == "send":
    s = group_socket(sys.argv[2], False)
    for hexed in sys.argv[3:]:
        s.sendto(bytes.fromhex(hexed), ("224.0.0.81", 8848))
elif sys.argv[1] == "template":
    a = sys.argv[2:]
    print(template(int(a[0]), a[1], a[2], int(a[3]), a[4], int(a[5]), int(a[6])).hex())
"#;

struct Link {
    m: Netns,
    b: Netns,
    c: Netns,
}

impl Link {
    fn new() -> Link {
        let (m, b, c) = (
            Netns::new("sync-m"),
            Netns::new("sync-b"),
            Netns::new("sync-c"),
        );
        c.must(&["ip", "link", "add", "br0", "type", "bridge"], true);
        c.must(
            &[
                "ip",
                "link",
                "set",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
            true,
        );
        for (ns, dev, peer, addr) in [
            (&m, "vm", "cm", "10.77.0.1/24"),
            (&b, "vb", "cb", "10.77.0.2/24"),
        ] {
            c.must(
                &[
                    "ip", "link", "add", peer, "type", "veth", "peer", "name", dev,
                ],
                true,
            );
            c.must(&["ip", "link", "set", dev, "netns", &ns.0], true);
            c.must(&["ip", "link", "set", peer, "master", "br0", "up"], true);
            ns.must(&["ip", "addr", "add", addr, "dev", dev], true);
            ns.must(&["ip", "link", "set", dev, "up"], true);
        }
        c.must(&["ip", "addr", "add", "10.77.0.3/24", "dev", "br0"], true);
        for i in 11..=18 {
            c.must(
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("10.77.0.{i}/24"),
                    "dev",
                    "br0",
                ],
                true,
            );
        }
        c.must(&["ip", "link", "set", "br0", "up"], true);
        Link { m, b, c }
    }

    /// Moves the VIP from the master to the backup, as VRRP would.
    fn fail_over(&self) {
        self.m.must(
            &["ip", "addr", "del", &format!("{VIP}/24"), "dev", "vm"],
            true,
        );
        self.b.must(
            &["ip", "addr", "add", &format!("{VIP}/24"), "dev", "vb"],
            true,
        );
        self.c.must(&["ip", "neigh", "flush", "dev", "br0"], true);
    }
}

fn config(daemon: &str, iface: &str) -> String {
    format!(
        "global:\n  sync_daemon:\n    - {{ state: {daemon}, mcast_interface: {iface}, syncid: 7 }}\n  sync_threshold: 1\n  sync_period: 0\nservices:\n  - name: web\n    listen: \"{VIP}:80\"\n    scheduler: rr\n    persistence: {{ timeout: 300s }}\n    real_servers:\n      - address: {}\n      - address: {}\n  - name: dns\n    proto: udp\n    listen: \"{VIP}:53\"\n    scheduler: rr\n    real_servers:\n      - address: {}\n      - address: {}\n",
        SERVERS[0], SERVERS[1], UDP_SERVERS[0], UDP_SERVERS[1]
    )
}

fn rvsadm(ns: &Netns, args: &[&str]) -> String {
    let out = ns
        .cmd(&[env!("CARGO_BIN_EXE_rvsadm")])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The name a TCP server at the VIP answers `from` with.
fn tcp_name(c: &Netns, from: &str) -> String {
    let script = format!(
        "import socket\ns=socket.socket()\ns.settimeout(10)\ns.bind(('{from}',0))\ns.connect(('{VIP}',80))\nprint(s.recv(100).decode())"
    );
    let out = c.cmd(&["python3", "-c", &script]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_backup_director_keeps_each_clients_server_after_failover() {
    let link = Link::new();
    let c = &link.c;
    let mut servers: Vec<Kill> = Vec::new();
    for (i, at) in SERVERS.iter().enumerate() {
        let (ip, port) = at.split_once(':').unwrap();
        servers.push(spawn_ready(&mut c.cmd(&[
            "python3",
            "-c",
            NAME_SERVER,
            ip,
            port,
            &format!("tcp{i}"),
        ])));
    }
    for (i, at) in UDP_SERVERS.iter().enumerate() {
        let (ip, port) = at.split_once(':').unwrap();
        servers.push(spawn_ready(&mut c.cmd(&[
            "python3",
            "-c",
            UDP_NAME_SERVER,
            ip,
            port,
            &format!("udp{i}"),
        ])));
    }
    // What the master multicasts, read by the test's own decoder.
    let mut capture = c
        .cmd(&["python3", "-c", SYNC_PY, "capture", "br0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut captured = std::io::BufReader::new(capture.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut captured, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let _capture = Kill(capture);

    link.m.must(
        &["ip", "addr", "add", &format!("{VIP}/24"), "dev", "vm"],
        true,
    );
    let (_master, mlog) = link.m.rvs("sync-master", &config("master", "vm"));
    let (_backup, blog) = link.b.rvs("sync-backup", &config("backup", "vb"));
    let log = || {
        format!(
            "master: {}\nbackup: {}",
            std::fs::read_to_string(&mlog).unwrap_or_default(),
            std::fs::read_to_string(&blog).unwrap_or_default()
        )
    };
    for (ns, state, iface) in [(&link.m, "master", "vm"), (&link.b, "backup", "vb")] {
        let want = format!(
            "{state} sync daemon (mcast={iface}, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n"
        );
        assert!(
            wait_for(Duration::from_secs(20), || rvsadm(ns, &["-L", "--daemon"])
                == want),
            "{}\n{}",
            rvsadm(ns, &["-L", "--daemon"]),
            log()
        );
    }

    // Through the master: each client gets a server (rr spreads them).
    let clients: Vec<String> = (11..=16).map(|i| format!("10.77.0.{i}")).collect();
    let mut before: HashMap<String, String> = HashMap::new();
    for cl in &clients {
        let name = tcp_name(c, cl);
        assert!(name.starts_with("tcp"), "{cl}: {name:?}\n{}", log());
        before.insert(cl.clone(), name);
    }
    assert!(before.values().any(|n| n == "tcp0") && before.values().any(|n| n == "tcp1"));
    // UDP flows: one socket per client, kept across the failover.
    let udp_script = r#"
import socket, sys
socks = []
for ip in sys.argv[2:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); s.bind((ip, 5353)); socks.append(s)
print("ready", flush=True)
first = True
for line in sys.stdin:
    # The first round starts with the last socket alone, so that the
    # master's rr is one server ahead of the backup's.
    if first:
        socks[-1].sendto(b"q", (sys.argv[1], 53)); socks[-1].recv(100); socks = socks[:-1]; first = False
    out = []
    for s in socks:
        s.sendto(b"q", (sys.argv[1], 53))
        try: out.append(s.recv(100).decode())
        except Exception: out.append("-")
    print(" ".join(out), flush=True)
"#;
    let mut udp = c
        .cmd(&["python3", "-c", udp_script, VIP])
        .args(&clients[..4])
        .arg(&clients[5])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut udp_in = udp.stdin.take().unwrap();
    let mut udp_out = std::io::BufReader::new(udp.stdout.take().unwrap());
    let _udp = Kill(udp);
    let mut ask = || {
        use std::io::Write;
        writeln!(udp_in, "go").unwrap();
        let mut l = String::new();
        std::io::BufRead::read_line(&mut udp_out, &mut l).unwrap();
        l.trim().to_owned()
    };
    assert_eq!(ask(), "ready");
    let udp_before = ask();
    assert!(!udp_before.contains('-'), "{udp_before}\n{}", log());

    // The backup has every template, the UDP sessions and the TCP entries.
    let has_all = || {
        let l = rvsadm(&link.b, &["-Lnc"]);
        clients
            .iter()
            .all(|cl| l.contains(&format!("NONE        {cl}:0")))
            && l.matches("UDP ").count() >= 4
    };
    assert!(
        wait_for(Duration::from_secs(20), has_all),
        "{}\n{}",
        rvsadm(&link.b, &["-Lnc"]),
        log()
    );
    let listed = rvsadm(&link.b, &["-Lnc"]);
    assert!(listed.starts_with("IPVS connection entries\npro expire state       source             virtual            destination\n"), "{listed}");
    assert!(
        listed.contains("CLOSE") || listed.contains("ESTABLISHED"),
        "{listed}"
    );

    // The wire, by the test's decoder: version 1 messages of syncid 7, a
    // size that is the datagram's, entries of version 0 on 4-byte
    // boundaries, templates of the persistence timeout.
    let mut seen_template = false;
    for _ in 0..50 {
        let mut l = String::new();
        if std::io::BufRead::read_line(&mut captured, &mut l).unwrap_or(0) == 0 {
            break;
        }
        let m: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(
            (
                m["reserved"].as_u64(),
                m["syncid"].as_u64(),
                m["version"].as_i64(),
                m["spare"].as_u64()
            ),
            (Some(0), Some(7), Some(1), Some(0)),
            "{l}"
        );
        assert_eq!(m["size"], m["len"], "{l}");
        for e in m["entries"].as_array().unwrap() {
            assert_eq!(e["version"], 0, "{l}");
            assert_eq!(e["offset"].as_u64().unwrap() % 4, 0, "{l}");
            assert_eq!(e["vaddr"], VIP, "{l}");
            if e["flags"].as_u64().unwrap() & 0x1000 != 0 {
                assert_eq!(
                    (
                        e["protocol"].as_u64(),
                        e["vport"].as_u64(),
                        e["cport"].as_u64(),
                        e["timeout"].as_u64()
                    ),
                    (Some(6), Some(80), Some(0), Some(300)),
                    "{l}"
                );
                assert!(
                    SERVERS.contains(
                        &format!("{}:{}", e["daddr"].as_str().unwrap(), e["dport"]).as_str()
                    ),
                    "{l}"
                );
                seen_template = true;
            }
        }
        if seen_template {
            break;
        }
    }
    assert!(seen_template, "no template captured");

    // A template made by the test's own encoder, for a client the master
    // never saw, and hostile datagrams: the backup applies the first,
    // ignores and counts the others.
    // Two strangers, both sent to tcp1 by their templates: rr alone never
    // gives one server twice in a row.
    let strangers = ["10.77.0.17", "10.77.0.18"];
    let mut made = Vec::new();
    for st in strangers {
        let out = c
            .cmd(&[
                "python3",
                "-c",
                SYNC_PY,
                "template",
                "7",
                st,
                VIP,
                "80",
                "10.77.0.3",
                "8002",
                "300",
            ])
            .output()
            .unwrap();
        made.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    let mut wrong_id = made[0].clone();
    wrong_id.replace_range(2..4, "08");
    let hostile = [
        "00",
        "000700ff01010000",
        "deadbeefdeadbeefdeadbeef",
        &wrong_id,
    ];
    let sent = c
        .cmd(&["python3", "-c", SYNC_PY, "send", "br0"])
        .args(hostile)
        .args(&made)
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let strangers_listed = || {
        let l = rvsadm(&link.b, &["-Lnc"]);
        strangers
            .iter()
            .all(|st| l.contains(&format!("NONE        {st}:0")))
    };
    assert!(
        wait_for(Duration::from_secs(10), strangers_listed),
        "{}",
        rvsadm(&link.b, &["-Lnc"])
    );

    // The VIP moves; the backup serves. Clients come back in another order
    // than before, so that the backup's own rr would give them other
    // servers: each gets its own.
    link.fail_over();
    let mut order = clients.clone();
    order.rotate_left(1);
    for cl in &order {
        let name = tcp_name(c, cl);
        assert_eq!(&name, &before[cl], "client {cl} after failover\n{}", log());
    }
    for st in strangers {
        assert_eq!(tcp_name(c, st), "tcp1", "{st}: the test's own template");
    }
    assert_eq!(ask(), udp_before, "UDP flows keep their servers\n{}", log());

    // What the backup counted: messages in, the hostile ones dropped.
    let scrape = link
        .b
        .cmd(&["curl", "-s", "http://127.0.0.1:9180/metrics"])
        .output()
        .unwrap();
    let scrape = String::from_utf8_lossy(&scrape.stdout);
    let n = |series: &str| common::sample(&scrape, series).unwrap_or(0.0);
    assert!(
        n("rvs_sync_received_total{what=\"applied\"}") >= 7.0,
        "{scrape}"
    );
    assert!(
        n("rvs_sync_dropped_total{reason=\"too_short\"}") >= 1.0,
        "{scrape}"
    );
    assert!(
        n("rvs_sync_dropped_total{reason=\"bad_size\"}") >= 2.0,
        "{scrape}"
    );
    assert!(
        n("rvs_sync_dropped_total{reason=\"other_syncid\"}") >= 1.0,
        "{scrape}"
    );
}
