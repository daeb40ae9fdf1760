//! `rvs import ipvsadm FILE`: ipvsadm rules (what `ipvsadm -S` writes, or
//! a script of ipvsadm commands), numeric or with names, as rvs's YAML.
//!
//! Each line is read as rvsadm (and ipvsadm) reads it, then played on a
//! table: `-A`, `-E`, `-D`, `-a`, `-e`, `-d`, `-C` and `--set` change it, in
//! order. What rvs has no equivalent for (firewall-mark services, port 0,
//! persistence engines, direct routing and tunnelling) is noted.

use std::net::{IpAddr, SocketAddr};

use serde_yaml::{Mapping, Value};

use super::{ImportError, Imported, Marks, Note, Service, key, n, s, unique_name};
use crate::ipvsadm::args::{self, Cmd, Command, Forward};
use crate::ipvsadm::names::{Names, Proto};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Id {
    Addr(Proto, IpAddr, u16),
    Mark(u32),
}

#[derive(Clone, Debug)]
struct Dest {
    addr: SocketAddr,
    weight: u32,
    u: u32,
    l: u32,
    forward: Forward,
    line: usize,
}

#[derive(Clone, Debug)]
struct Svc {
    id: Id,
    cmd: Command,
    line: usize,
    dests: Vec<Dest>,
}

fn id_of(c: &Command) -> Option<Id> {
    match (c.service, c.fwmark) {
        (Some((p, ip, port)), _) => Some(Id::Addr(p, ip, port)),
        (None, Some(m)) => Some(Id::Mark(m)),
        _ => None,
    }
}

/// Reads `text` (the rules of `file`).
/// The first host name given to `-t`, `-u` or `-r` (and their long forms)
/// that is neither an address nor a name `names` knows.
fn unresolved_host(words: &[String], names: &Names) -> Option<String> {
    let takes_address = |w: &str| {
        matches!(
            w,
            "-t" | "-u" | "-r" | "--tcp-service" | "--udp-service" | "--real-server"
        )
    };
    words.windows(2).find_map(|pair| {
        if !takes_address(&pair[0]) {
            return None;
        }
        let arg = pair[1].as_str();
        if arg.starts_with('[') {
            return None; // IPv6: an address, never a name
        }
        let host = arg.rsplit_once(':').map_or(arg, |(h, _)| h);
        let known = host.parse::<std::net::IpAddr>().is_ok()
            || host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            || names.v4_of(host).is_some();
        (!known).then(|| host.to_owned())
    })
}

pub fn import(text: &str, file: &str, names: &Names) -> Result<Imported, ImportError> {
    import_marked(text, file, names, &Marks::default())
}

/// As [`import`], with the addresses each firewall mark covers: an `-f`
/// service of a mark given becomes a service listening on them whose
/// persistence covers them all (`scope: service`).
pub fn import_marked(
    text: &str,
    file: &str,
    names: &Names,
    marks: &Marks,
) -> Result<Imported, ImportError> {
    let mut table: Vec<Svc> = Vec::new();
    let mut daemons: Vec<Mapping> = Vec::new();
    let mut imp = Imported {
        source: format!("{file} (ipvsadm rules)"),
        ..Imported::default()
    };
    let note = |line: usize, text: String| Note {
        file: file.to_owned(),
        line,
        text,
    };
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let words: Vec<String> = t
            .split_whitespace()
            .filter(|w| !w.ends_with("ipvsadm") && !w.ends_with("rvsadm"))
            .map(str::to_owned)
            .collect();
        if words.is_empty() {
            continue;
        }
        let c = args::parse("ipvsadm", &words, names).map_err(|e| {
            let mut reason = e.message.lines().next().unwrap_or("").to_owned();
            // ipvsadm's words, and the name it could not resolve.
            if reason.contains("address")
                && reason.starts_with("illegal")
                && let Some(host) = unresolved_host(&words, names)
            {
                reason.push_str(&format!(
                    ": host {host:?} does not resolve (names are looked up in /etc/hosts)"
                ));
            }
            ImportError::Syntax {
                file: file.to_owned(),
                line,
                reason,
            }
        })?;
        let id = id_of(&c);
        let at = |table: &[Svc]| id.and_then(|id| table.iter().position(|s| s.id == id));
        match c.cmd {
            Cmd::Add => match at(&table) {
                Some(_) => imp.notes.push(note(
                    line,
                    "Service already exists: the rule is skipped".into(),
                )),
                None => table.push(Svc {
                    id: id.ok_or_else(|| ImportError::Syntax {
                        file: file.to_owned(),
                        line,
                        reason: "a service needs -t, -u or -f".into(),
                    })?,
                    cmd: c,
                    line,
                    dests: Vec::new(),
                }),
            },
            Cmd::Edit => match at(&table) {
                Some(k) => {
                    let dests = std::mem::take(&mut table[k].dests);
                    table[k] = Svc {
                        id: table[k].id,
                        cmd: c,
                        line,
                        dests,
                    };
                }
                None => imp
                    .notes
                    .push(note(line, "No such service: the rule is skipped".into())),
            },
            Cmd::Del => match at(&table) {
                Some(k) => {
                    table.remove(k);
                }
                None => imp
                    .notes
                    .push(note(line, "No such service: the rule is skipped".into())),
            },
            Cmd::Flush => table.clear(),
            Cmd::AddDest | Cmd::EditDest | Cmd::DelDest => {
                let Some(k) = at(&table) else {
                    imp.notes.push(note(
                        line,
                        "Service not defined: the rule is skipped".into(),
                    ));
                    continue;
                };
                let Some(addr) = c.server else {
                    continue;
                };
                let dests = &mut table[k].dests;
                let pos = dests.iter().position(|d| d.addr == addr);
                let d = Dest {
                    addr,
                    weight: c.weight,
                    u: c.u_threshold,
                    l: c.l_threshold,
                    forward: c.forward,
                    line,
                };
                match (c.cmd, pos) {
                    (Cmd::AddDest, None) => dests.push(d),
                    (Cmd::AddDest, Some(_)) => imp.notes.push(note(
                        line,
                        "Destination already exists: the rule is skipped".into(),
                    )),
                    (Cmd::EditDest, Some(p)) => dests[p] = d,
                    (Cmd::DelDest, Some(p)) => {
                        dests.remove(p);
                    }
                    _ => imp.notes.push(note(
                        line,
                        "No such destination: the rule is skipped".into(),
                    )),
                }
            }
            Cmd::Timeout => {
                if let Some((tcp, tcpfin, udp)) = c.timeouts {
                    let mut t = Mapping::new();
                    for (k, v) in [("tcp", tcp), ("tcpfin", tcpfin), ("udp", udp)] {
                        if v > 0 {
                            t.insert(key(k), s(format!("{v}s")));
                        }
                    }
                    if !t.is_empty() {
                        imp.global.insert(key("timeouts"), Value::Mapping(t));
                    }
                }
            }
            Cmd::List | Cmd::Save | Cmd::Zero => imp.notes.push(note(
                line,
                "not a rule (a listing or a zeroing): skipped".into(),
            )),
            Cmd::StartDaemon => {
                let d = &c.daemon;
                if daemons
                    .iter()
                    .any(|m| m.get(key("state")) == Some(&s(d.state.clone())))
                {
                    imp.notes.push(note(
                        line,
                        "Daemon has already run: the rule is skipped".into(),
                    ));
                    continue;
                }
                let mut m = Mapping::new();
                m.insert(key("state"), s(d.state.clone()));
                m.insert(
                    key("mcast_interface"),
                    s(d.mcast_interface.clone().unwrap_or_else(|| "eth0".into())),
                );
                if let Some(id) = d.syncid.filter(|&i| i > 0) {
                    m.insert(key("syncid"), n(id));
                }
                if let Some(g) = d.mcast_group {
                    m.insert(key("mcast_group"), s(g.to_string()));
                }
                if let Some(p) = d.mcast_port {
                    m.insert(key("mcast_port"), n(p));
                }
                if let Some(t) = d.mcast_ttl {
                    m.insert(key("mcast_ttl"), n(t));
                }
                if let Some(l) = d.sync_maxlen {
                    m.insert(key("sync_maxlen"), n(l));
                }
                daemons.push(m);
            }
            Cmd::StopDaemon => {
                let before = daemons.len();
                daemons.retain(|m| m.get(key("state")) != Some(&s(c.daemon.state.clone())));
                if daemons.len() == before {
                    imp.notes.push(note(
                        line,
                        "No daemon is running: the rule is skipped".into(),
                    ));
                }
            }
            Cmd::Restore => imp.notes.push(note(line, "not a rule: skipped".into())),
        }
    }
    if !daemons.is_empty() {
        imp.global.insert(
            key("sync_daemon"),
            Value::Sequence(daemons.into_iter().map(Value::Mapping).collect()),
        );
    }
    let mut taken: Vec<String> = Vec::new();
    for svc in table {
        let mut out = Service::default();
        let sn = |t: String| Note {
            file: file.to_owned(),
            line: svc.line,
            text: t,
        };
        let (proto, ip, port, mark) = match svc.id {
            Id::Mark(m) => match marks.0.get(&m) {
                Some(covered) => {
                    let proto = if covered.udp { Proto::Udp } else { Proto::Tcp };
                    let first = covered
                        .listen
                        .first()
                        .copied()
                        .unwrap_or_else(|| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
                    (proto, first.ip(), first.port(), Some((m, covered)))
                }
                None => {
                    imp.notes.push(sn(format!(
                        "-f {m}: rvs does not see firewall marks: it listens on addresses. Name the addresses the mark covers (rvs import ipvsadm --fwmark {m}=ADDR:PORT,ADDR:PORT) and the service listens on them with one persistence for all, as the mark's. The service and its {} real servers are left out",
                        svc.dests.len()
                    )));
                    continue;
                }
            },
            Id::Addr(p, ip, port) => (p, ip, port, None),
        };
        if port == 0 {
            imp.notes.push(sn(format!(
                "{} {}: a persistent service on every port is not possible in rvs (it listens on a port): left out",
                proto.switch(),
                SocketAddr::new(ip, 0)
            )));
            continue;
        }
        let c = &svc.cmd;
        let base = match mark {
            Some((m, _)) => format!("fwm-{m}"),
            None => crate::ipvsadm::service_name(proto, ip, port),
        };
        let name = unique_name(&base, &taken);
        taken.push(name.clone());
        let b = &mut out.body;
        b.insert(key("name"), s(name));
        match mark {
            Some((_, covered)) => {
                let all = covered.listen.iter().map(|a| s(a.to_string())).collect();
                b.insert(key("listen"), Value::Sequence(all));
            }
            None => {
                b.insert(key("listen"), s(SocketAddr::new(ip, port).to_string()));
            }
        }
        b.insert(key("proto"), s(proto.lower()));
        b.insert(key("scheduler"), s(c.scheduler.clone()));
        if !c.sched_flags.is_empty() {
            b.insert(
                key("flags"),
                Value::Sequence(c.sched_flags.iter().map(|f| s(f.clone())).collect()),
            );
        }
        if let Some(t) = c.persistent {
            let mut p = Mapping::new();
            p.insert(key("timeout"), s(format!("{t}s")));
            if let Some(m) = c.netmask_v4.filter(|m| !m.is_broadcast()) {
                p.insert(key("netmask"), s(m.to_string()));
            }
            if let Some(m) = c.netmask_v6.filter(|m| *m != 128) {
                p.insert(key("ipv6_prefix"), n(m));
            }
            if let Some((m, _)) = mark {
                p.insert(key("scope"), s("service"));
                p.insert(key("fwmark"), n(m));
            }
            match c.pe.as_deref() {
                Some("sip") if proto == Proto::Udp => {
                    p.insert(key("engine"), s("sip"));
                }
                Some(pe) => out.notes.push(sn(format!(
                    "--pe {pe}: the SIP engine reads UDP datagrams only (IPVS's would drop every TCP packet): left out",
                    pe = super::w(pe)
                ))),
                None => {}
            }
            b.insert(key("persistence"), Value::Mapping(p));
        } else if let Some(pe) = &c.pe {
            out.notes.push(sn(format!(
                "--pe {pe}: a persistence engine without persistence (-p) does nothing, in IPVS too: left out",
                pe = super::w(pe)
            )));
        }
        if mark.is_some() && c.persistent.is_none() {
            out.notes.push(sn(
                "-f without -p: the mark only grouped the addresses; the service listens on them all, each connection scheduled on its own".into(),
            ));
        }
        if c.ops && proto == Proto::Udp {
            let mut u = Mapping::new();
            u.insert(key("ops"), Value::Bool(true));
            b.insert(key("udp"), Value::Mapping(u));
        }
        let mut noted_forward = false;
        let mut rs = Vec::new();
        for d in &svc.dests {
            if !noted_forward && d.forward != Forward::Masq {
                noted_forward = true;
                out.notes.push(Note {
                    file: file.to_owned(),
                    line: d.line,
                    text: format!(
                        "{} ({}): rvs proxies every connection (FULLNAT): real servers see rvs's address, not the client's, and answer through rvs; they need no VIP on loopback. The client's address reaches them with proxy_protocol: v2, if they read it",
                        if d.forward == Forward::Tunnel { "-i" } else { "-g" },
                        if d.forward == Forward::Tunnel { "tunnelling" } else { "direct routing" }
                    ),
                });
            }
            let mut m = Mapping::new();
            m.insert(key("address"), s(d.addr.to_string()));
            m.insert(key("weight"), n(d.weight));
            if d.u > 0 {
                m.insert(key("u_threshold"), n(d.u));
            }
            if d.l > 0 {
                if d.l > d.u {
                    out.notes.push(Note {
                        file: file.to_owned(),
                        line: d.line,
                        text: format!(
                            "-y {} above -x {}: rvs needs the lower threshold under the upper one: l_threshold left out",
                            d.l, d.u
                        ),
                    });
                } else {
                    m.insert(key("l_threshold"), n(d.l));
                }
            }
            rs.push(Value::Mapping(m));
        }
        b.insert(key("real_servers"), Value::Sequence(rs));
        out.seal();
        imp.services.push(out);
    }
    Ok(imp)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn rules_become_services() {
        let names = Names::from_text("10.0.0.5 web1\n", "http 80/tcp\nhttps 443/tcp\n");
        let rules = "\
# saved by ipvsadm -S
-A -t 192.0.2.1:http -s wlc -p 600 -M 255.255.255.0
-a -t 192.0.2.1:http -r web1:http -g -w 2
-a -t 192.0.2.1:http -r 10.0.0.6:8080 -m -w 1 -x 100 -y 50
-A -u 192.0.2.1:53 -s sh -o -b sh-port
-a -u 192.0.2.1:53 -r 10.0.0.7:53 -m -w 1
-A -f 7 -s rr
-a -f 7 -r 10.0.0.8:0 -g -w 1
/sbin/ipvsadm --set 900 60 30
-E -u 192.0.2.1:53 -s mh -o
-d -u 192.0.2.1:53 -r 10.0.0.7:53
";
        let imp = import(rules, "rules", &names).unwrap();
        let yaml = imp.render().unwrap();
        let c = rvs_proxy::Config::parse(&yaml, "out").unwrap();
        assert_eq!(c.services.len(), 2, "{yaml}");
        let web = &c.services[0];
        assert_eq!(web.name, "tcp-192.0.2.1-80");
        assert_eq!(web.sched.scheduler.name(), "wlc");
        let p = web.sched.persistence.unwrap();
        assert_eq!(p.timeout.as_secs(), 600);
        assert_eq!(p.netmask.v4().to_string(), "255.255.255.0");
        let rs: Vec<String> = web
            .real_servers
            .iter()
            .map(|r| r.address.to_string())
            .collect();
        assert_eq!(rs, ["10.0.0.5:80", "10.0.0.6:8080"]);
        assert_eq!(web.real_servers[1].params.u_threshold, 100);
        let dns = &c.services[1];
        assert_eq!(dns.sched.scheduler.name(), "mh", "the -E");
        assert!(dns.udp.ops);
        assert!(dns.real_servers.is_empty(), "the -d");
        assert_eq!(c.global.timeouts.tcpfin.as_secs(), 60);
        let notes: Vec<String> = imp.all_notes().iter().map(|n| n.to_string()).collect();
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("rules:7: -f 7: rvs does not see firewall marks")),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("rules:3: -g (direct routing)")),
            "{notes:?}"
        );
        assert!(yaml.contains("# rules:3: -g (direct routing)"), "{yaml}");
    }

    #[test]
    fn a_bad_rule_is_an_error_with_its_line() {
        let e = import(
            "-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.0.0.2 -w 99999\n",
            "r",
            &Names::none(),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "r:2: illegal weight specified");
    }

    #[test]
    fn a_host_that_does_not_resolve_is_named() {
        let names = Names::from_text("10.0.0.5 web1\n", "http 80/tcp\n");
        let e = |rules: &str| import(rules, "r", &names).unwrap_err().to_string();
        assert_eq!(
            e("-A -t vip.example:80\n"),
            "r:1: illegal virtual server address[:port] specified: host \"vip.example\" does not resolve (names are looked up in /etc/hosts)"
        );
        assert_eq!(
            e("-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r nothere:80\n"),
            "r:2: illegal real server address[:port] specified: host \"nothere\" does not resolve (names are looked up in /etc/hosts)"
        );
        // A known name is fine; a malformed address keeps ipvsadm's words.
        assert!(import("-A -t web1:http\n", "r", &names).is_ok());
        assert_eq!(
            e("-A -t 80\n"),
            "r:1: illegal virtual server address[:port] specified"
        );
    }
}
