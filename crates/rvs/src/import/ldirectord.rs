//! `rvs import ldirectord FILE`: ldirectord.cf as rvs's YAML.
//!
//! The file is read as ldirectord reads it: global `key=value` lines, then
//! `virtual=` (`virtual6=`) lines whose directives follow, indented by a tab
//! or four spaces; a line that is not indented ends the block (so does a
//! blank one); `#` starts a comment anywhere. Host and service names are
//! looked up in the hosts and services files; a real server's name that
//! is not there becomes a `dns:` real server, which rvs resolves itself.
//!
//! Each virtual service becomes a service with ldirectord's defaults written
//! out (scheduler wrr, check every 10 s, checktimeout 5 s, negotiatetimeout
//! 30 s, failurecount 1, quiescent no — the code's default, whatever the
//! manual says). The checks become rvs's: `negotiate` the service's own
//! check where rvs has one (http, https, dns) and a TCP connect (UDP
//! probe) to the check port where it does not, `connect` a TCP connect,
//! `N` both (the negotiate one every N intervals), `external` a program
//! check with ldirectord's four arguments, `on` none, `off` every server
//! at weight 0. What rvs does differently is a comment and a warning with
//! the line it comes from.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::{
    ImportError, Imported, Note, Service, insert_flags, insert_servers, key, n, s, sched_flag,
    unique_name,
};
use crate::ipvsadm::names::{Names, Proto};

/// Reads ldirectord.cf at `path`.
pub fn import(path: &Path, names: &Names) -> Result<Imported, ImportError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ImportError::Read {
        file: file.clone(),
        error,
    })?;
    import_text(&text, &file, names)
}

/// Reads `text` as the content of ldirectord.cf `file`.
pub fn import_text(text: &str, file: &str, names: &Names) -> Result<Imported, ImportError> {
    let parsed = parse(text, file)?;
    let mut imp = Imported {
        source: format!("{file} (ldirectord)"),
        ..Imported::default()
    };
    let globals = Globals::read(&parsed.globals, file, &mut imp.notes)?;
    let mut taken = Vec::new();
    let mut seen = Vec::new();
    for v in &parsed.virtuals {
        let conv = Convert {
            file,
            names,
            globals: &globals,
        };
        if let Some(mut svc) = conv.virtual_service(v, &mut taken, &mut imp.notes)? {
            let id = (
                svc.body.get(key("proto")).cloned(),
                svc.body.get(key("listen")).cloned(),
            );
            if seen.contains(&id) {
                return Err(syntax(
                    file,
                    v.line,
                    "duplicate virtual server (ldirectord refuses it too)",
                ));
            }
            seen.push(id);
            // Kept as text: a large file's services as trees would take
            // tens of times the file's size.
            svc.seal();
            imp.services.push(svc);
        }
    }
    Ok(imp)
}

/// One `key=value` line.
#[derive(Clone, Debug)]
struct Directive {
    key: String,
    value: String,
    line: usize,
}

/// A `virtual=` line and the directives of its block.
#[derive(Clone, Debug)]
struct Virtual {
    v6: bool,
    address: String,
    line: usize,
    directives: Vec<Directive>,
}

struct Parsed {
    globals: Vec<Directive>,
    virtuals: Vec<Virtual>,
}

fn syntax(file: &str, line: usize, reason: impl Into<String>) -> ImportError {
    ImportError::Syntax {
        file: file.to_owned(),
        line,
        reason: reason.into(),
    }
}

/// `key = value` (the value up to a `#`, trimmed); a bare word is a key
/// with an empty value.
fn directive(text: &str, line: usize, file: &str) -> Result<Directive, ImportError> {
    let text = text.split('#').next().unwrap_or("").trim();
    let (k, v) = text.split_once('=').unwrap_or((text, ""));
    let k = k.trim();
    if k.is_empty()
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(syntax(
            file,
            line,
            format!(
                "{text} is not a directive (KEY=VALUE)",
                text = super::q(text)
            ),
        ));
    }
    Ok(Directive {
        key: k.to_owned(),
        value: v.trim().to_owned(),
        line,
    })
}

fn parse(text: &str, file: &str) -> Result<Parsed, ImportError> {
    let mut globals = Vec::new();
    let mut virtuals: Vec<Virtual> = Vec::new();
    let mut open = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim_start().starts_with('#') {
            continue;
        }
        let body = raw.split('#').next().unwrap_or("").replace('\t', "    ");
        if open {
            if body.starts_with("    ") && !body.trim().is_empty() {
                let d = directive(&body, line, file)?;
                if let Some(v) = virtuals.last_mut() {
                    v.directives.push(d);
                }
                continue;
            }
            open = false;
        }
        if body.trim().is_empty() {
            continue;
        }
        if body.starts_with(char::is_whitespace) {
            return Err(syntax(
                file,
                line,
                "an indented directive outside a virtual= block (a blank or unindented line ends the block, as ldirectord reads it)",
            ));
        }
        let d = directive(&body, line, file)?;
        if d.key == "virtual" || d.key == "virtual6" {
            virtuals.push(Virtual {
                v6: d.key == "virtual6",
                address: d.value,
                line,
                directives: Vec::new(),
            });
            open = true;
        } else {
            globals.push(d);
        }
    }
    Ok(Parsed { globals, virtuals })
}

/// `"text"` → `text`; an unquoted value as it is.
fn unquote(v: &str) -> &str {
    match v.strip_prefix('"') {
        Some(rest) => rest.rfind('"').map_or(rest, |end| &rest[..end]),
        None => v,
    }
}

/// ldirectord takes the first digits of a value (`$1 =~ /(\d+)/`).
fn number(d: &Directive, file: &str) -> Result<u64, ImportError> {
    let digits: String = d
        .value
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().map_err(|_| {
        syntax(
            file,
            d.line,
            format!("{}: {} is not a number", d.key, super::q(&d.value)),
        )
    })
}

fn yes_no(d: &Directive, file: &str) -> Result<bool, ImportError> {
    match d.value.as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(syntax(
            file,
            d.line,
            format!(
                "{} must be yes or no, not {other}",
                d.key,
                other = super::q(other)
            ),
        )),
    }
}

fn note(file: &str, line: usize, text: impl Into<String>) -> Note {
    Note {
        file: file.to_owned(),
        line,
        text: text.into(),
    }
}

/// Settings a virtual service may override, as ldirectord's globals.
#[derive(Clone, Debug, Default)]
struct Timing {
    checktimeout: Option<u64>,
    negotiatetimeout: Option<u64>,
    checkinterval: Option<u64>,
    checkcount: Option<u64>,
    failurecount: Option<u64>,
    quiescent: Option<bool>,
    fallback: Option<(String, usize)>,
}

impl Timing {
    /// Takes the directive if it is one of these; true when it was.
    fn take(
        &mut self,
        d: &Directive,
        file: &str,
        notes: &mut Vec<Note>,
    ) -> Result<bool, ImportError> {
        match d.key.as_str() {
            "checktimeout" => self.checktimeout = Some(number(d, file)?.max(1)),
            "negotiatetimeout" => self.negotiatetimeout = Some(number(d, file)?.max(1)),
            "connecttimeout" => {
                notes.push(note(
                    file,
                    d.line,
                    "connecttimeout: ldirectord refuses it now (\"deprecated in favour of negotiatetimeout\"): taken as negotiatetimeout",
                ));
                self.negotiatetimeout = Some(number(d, file)?.max(1));
            }
            "checkinterval" => self.checkinterval = Some(number(d, file)?.max(1)),
            "checkcount" => self.checkcount = Some(number(d, file)?.max(1)),
            "failurecount" => self.failurecount = Some(number(d, file)?.max(1)),
            "quiescent" => self.quiescent = Some(yes_no(d, file)?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// The global part of the file.
#[derive(Debug, Default)]
struct Globals {
    timing: Timing,
    fallback6: Option<(String, usize)>,
    fork: bool,
}

impl Globals {
    fn read(ds: &[Directive], file: &str, notes: &mut Vec<Note>) -> Result<Globals, ImportError> {
        let mut g = Globals::default();
        for d in ds {
            if g.timing.take(d, file, notes)? {
                continue;
            }
            let line = d.line;
            if let Some(text) = left_out(&d.key, &d.value) {
                notes.push(note(file, line, text));
                continue;
            }
            match d.key.as_str() {
                "fallback" => g.timing.fallback = Some((d.value.clone(), line)),
                "fallback6" => g.fallback6 = Some((d.value.clone(), line)),
                "fork" => g.fork = yes_no(d, file)?,
                other => notes.push(note(
                    file,
                    line,
                    format!(
                        "{other}: a global directive rvs does not know: left out",
                        other = super::kw(other)
                    ),
                )),
            }
        }
        Ok(g)
    }
}

/// What is said of a directive rvs leaves out, global or in a virtual
/// block; `None` for the others.
fn left_out(key: &str, value: &str) -> Option<String> {
    Some(match key {
        "autoreload" => format!(
            "autoreload={value}: rvs always watches its configuration file and applies a change that checks (a broken one is refused, the running one stays)"
        ),
        "callback" | "execute" => {
            format!("{key}: rvs runs no other instance or program on a change of its file: left out")
        }
        "logfile" => "logfile: rvs logs to standard error (journald under systemd, the container's log): left out".into(),
        "supervised" => "supervised: rvs always runs in the foreground: left out".into(),
        "readdquiescent" | "cleanstop" => {
            format!("{key}: about the kernel's LVS table, which rvs does not use: left out")
        }
        "fallbackcommand" => "fallbackcommand: rvs runs no scripts: watch rvs_service_quorum_up (the RvsServiceNoRealServer alert) instead. Left out".into(),
        "maintenancedir" => "maintenancedir: take a server out with `rvsadm -e -t VIP:PORT -r SERVER -w 0` or the admin API (drain) instead: left out".into(),
        "emailalert" | "emailalertfreq" | "emailalertstatus" | "emailalertfrom" | "smtp" => format!(
            "{key}: rvs sends no mail: alert on its metrics (deploy/prometheus/rules.yml). Left out"
        ),
        "monitorfile" => "monitorfile: rvs logs every check's change (real server up/down with the reason) and keeps the history in its API: left out".into(),
        "login" | "database" | "load" => {
            format!("{key}={value}: used by ldirectord's own protocol checks only: left out")
        }
        "passwd" | "secret" => {
            format!("{key}: used by ldirectord's protocol checks only: left out (not copied here)")
        }
        _ => return None,
    })
}

const SCHEDULERS: [&str; 14] = [
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// ldirectord's service for a virtual port (`ld_port_to_service`).
fn port_service(port: u16) -> &'static str {
    match port {
        21 => "ftp",
        25 => "smtp",
        53 => "dns",
        80 => "http",
        110 => "pop",
        119 => "nntp",
        143 => "imap",
        389 => "ldap",
        443 => "https",
        587 => "submission",
        636 => "ldaps",
        993 => "imaps",
        995 => "pops",
        1521 => "oracle",
        1812 => "radius",
        3128 => "http_proxy",
        3306 => "mysql",
        5060 => "sip",
        5432 => "pgsql",
        _ => "none",
    }
}

/// A service's port (`ld_service_to_port`), for checks of port-0 servers.
fn service_port(service: &str) -> Option<u16> {
    (1..=u16::MAX).find(|p| port_service(*p) == service)
}

const SERVICES: [&str; 21] = [
    "dns",
    "ftp",
    "http",
    "https",
    "http_proxy",
    "imap",
    "imaps",
    "ldap",
    "ldaps",
    "nntp",
    "mysql",
    "none",
    "oracle",
    "pop",
    "pops",
    "radius",
    "pgsql",
    "sip",
    "smtp",
    "submission",
    "simpletcp",
];

/// Where a real server is: an address, or a name rvs resolves.
#[derive(Clone, Debug)]
enum Target {
    Addr(IpAddr),
    Name(String),
}

/// A `real=` line, read.
#[derive(Clone, Debug)]
struct Real {
    /// `ADDR::PORT`, read as `ADDR:PORT`.
    doubled: bool,
    line: usize,
    targets: Vec<Target>,
    port: u16,
    forward: String,
    weight: u64,
    request: Option<String>,
    receive: Option<String>,
    l_threshold: u64,
    u_threshold: u64,
}

/// The check a virtual service's directives ask for, resolved.
#[derive(Clone, Debug)]
struct CheckSpec {
    checktype: String,
    service: String,
    request: String,
    receive: String,
    httpmethod: String,
    virtualhost: Option<String>,
    checkport: Option<u16>,
    checkcommand: String,
    /// `login`, `passwd`, `database`, `secret`: the protocol checks'.
    login: Option<String>,
    passwd: Option<String>,
    database: Option<String>,
    secret: Option<String>,
    delay: u64,
    checktimeout: u64,
    negotiatetimeout: u64,
    failurecount: u64,
    checkcount: u64,
    /// `checktype=N`: the negotiate check every N intervals.
    nth: u64,
    udp: bool,
    /// The line the check's notes point to: `checktype=`, else
    /// `service=`, else `virtual=`.
    line: usize,
}

struct Convert<'a> {
    file: &'a str,
    names: &'a Names,
    globals: &'a Globals,
}

impl Convert<'_> {
    fn err(&self, line: usize, reason: impl Into<String>) -> ImportError {
        syntax(self.file, line, reason)
    }

    fn note(&self, line: usize, text: impl Into<String>) -> Note {
        note(self.file, line, text)
    }

    /// `real6=`/`fallback6=` belong in `virtual6=` blocks, the others in
    /// `virtual=` ones.
    fn same_family(&self, d: &Directive, v6: bool) -> Result<(), ImportError> {
        if d.key.ends_with('6') == v6 {
            return Ok(());
        }
        let base = d.key.trim_end_matches('6');
        Err(self.err(
            d.line,
            format!(
                "{} in a {} block: use {base}{}",
                d.key,
                if v6 { "virtual6" } else { "virtual" },
                if v6 { "6" } else { "" }
            ),
        ))
    }

    /// A host: an address literal, or a name in the hosts file.
    fn host(&self, h: &str, v6: bool) -> Option<IpAddr> {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        if let Ok(a) = h.parse::<IpAddr>() {
            return (a.is_ipv6() == v6).then_some(a);
        }
        if !v6 && let Some(a) = crate::ipvsadm::names::inet_aton(h) {
            return Some(IpAddr::V4(a));
        }
        self.names.addr_of(h, v6)
    }

    /// A port: digits, or a service name of `proto`.
    fn port(&self, p: &str, proto: Proto) -> Option<u16> {
        p.parse::<u16>()
            .ok()
            .or_else(|| self.names.port_of(p, proto))
    }

    fn virtual_service(
        &self,
        v: &Virtual,
        taken: &mut Vec<String>,
        global_notes: &mut Vec<Note>,
    ) -> Result<Option<Service>, ImportError> {
        let file = self.file;
        let mut svc = Service::default();
        let mut timing = self.globals.timing.clone();
        if v.v6 {
            timing.fallback.clone_from(&self.globals.fallback6);
        }
        let mut checktype = "negotiate".to_owned();
        let mut combined: Option<u64> = None;
        let mut service: Option<String> = None;
        let mut request = "/".to_owned();
        let mut receive = String::new();
        let mut httpmethod = "GET".to_owned();
        let mut virtualhost = None;
        let mut checkport = None;
        let mut checkcommand = "/bin/true".to_owned();
        let mut scheduler = "wrr".to_owned();
        let mut persistent = None;
        let mut netmask: Option<(String, usize)> = None;
        let mut protocol: Option<(String, usize)> = None;
        let mut ops = false;
        let mut schedflags: Option<(String, usize)> = None;
        let mut servicename = None;
        let (mut login, mut passwd, mut database, mut secret) = (None, None, None, None);
        let mut protocol_keys: Vec<(String, usize)> = Vec::new();
        let mut reals: Vec<&Directive> = Vec::new();
        let mut interval_line = None;
        let mut check_line: Option<usize> = None;
        for d in &v.directives {
            if d.key == "checktype" || (d.key == "service" && check_line.is_none()) {
                check_line = Some(d.line);
            }
            let before = timing.checkinterval;
            if timing.take(d, file, &mut svc.notes)? {
                if d.key == "checkinterval" && !self.globals.fork {
                    // ldirectord ignores it unless fork=yes.
                    timing.checkinterval = before;
                    interval_line = Some(d.line);
                }
                continue;
            }
            let line = d.line;
            let val = d.value.as_str();
            // The protocol checks' own: read here, used by the checks.
            let slot = match d.key.as_str() {
                "login" => Some(&mut login),
                "passwd" => Some(&mut passwd),
                "database" => Some(&mut database),
                "secret" => Some(&mut secret),
                _ => None,
            };
            if let Some(slot) = slot {
                *slot = Some(unquote(val).to_owned()).filter(|v| !v.is_empty());
                protocol_keys.push((d.key.clone(), line));
                continue;
            }
            if let Some(text) = left_out(&d.key, val) {
                svc.notes.push(self.note(line, text));
                continue;
            }
            match d.key.as_str() {
                "real" | "real6" => {
                    self.same_family(d, v.v6)?;
                    reals.push(d);
                }
                "fallback" | "fallback6" => {
                    self.same_family(d, v.v6)?;
                    timing.fallback = Some((val.to_owned(), line));
                }
                "request" => {
                    let r = unquote(val);
                    if r.is_empty() {
                        return Err(self.err(line, "no request string specified"));
                    }
                    request = if r.starts_with('/') {
                        r.to_owned()
                    } else {
                        format!("/{r}")
                    };
                }
                "receive" => receive = unquote(val).to_owned(),
                "checktype" => {
                    let t = val.trim();
                    if let Ok(nth) = t.parse::<u64>() {
                        combined = Some(nth.max(1));
                        checktype = "combined".into();
                    } else if matches!(
                        t,
                        "connect"
                            | "negotiate"
                            | "ping"
                            | "off"
                            | "on"
                            | "external"
                            | "external-perl"
                    ) {
                        checktype = t.to_owned();
                        combined = None;
                    } else {
                        return Err(self.err(
                            line,
                            format!("checktype must be connect, negotiate, on, off, ping, external, external-perl or a number, not {t}", t = super::q(t)),
                        ));
                    }
                }
                "checkcommand" => checkcommand = unquote(val).to_owned(),
                "checkport" => {
                    let p = number(d, file)?;
                    let p = u16::try_from(p)
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| self.err(line, "checkport must be in range 1..65535"))?;
                    checkport = Some(p);
                }
                "scheduler" => {
                    let sch: String = val.chars().take_while(char::is_ascii_lowercase).collect();
                    if SCHEDULERS.contains(&sch.as_str()) {
                        scheduler = sch;
                    } else {
                        svc.notes.push(self.note(
                            line,
                            format!("scheduler={val}: not a scheduler rvs has: wrr (ldirectord's default) instead", val = super::w(val)),
                        ));
                    }
                }
                "persistent" => persistent = Some(number(d, file)?.max(1)),
                "netmask" => netmask = Some((val.to_owned(), line)),
                "protocol" => protocol = Some((val.to_owned(), line)),
                "schedflags" => schedflags = Some((val.to_owned(), line)),
                "ops" => ops = yes_no(d, file)?,
                "service" => {
                    if !SERVICES.contains(&val) {
                        return Err(self.err(
                            line,
                            format!(
                                "service {val} is not one ldirectord knows",
                                val = super::q(val)
                            ),
                        ));
                    }
                    service = Some(val.to_owned());
                }
                "httpmethod" => {
                    let m = val.to_ascii_uppercase();
                    if m != "GET" && m != "HEAD" {
                        return Err(self.err(line, "httpmethod must be GET or HEAD"));
                    }
                    httpmethod = m;
                }
                "virtualhost" => virtualhost = Some(unquote(val).to_owned()),
                "servicename" => servicename = Some(val.to_owned()),
                "comment" => svc.notes.push(self.note(line, format!("comment: {val}"))),
                other => svc.notes.push(self.note(
                    line,
                    format!(
                        "{other}: a virtual directive rvs does not know: left out",
                        other = super::kw(other)
                    ),
                )),
            }
        }
        if let Some(line) = interval_line {
            svc.notes.push(self.note(
                line,
                "checkinterval in a virtual block: ldirectord ignores it without fork=yes, so the global value is kept",
            ));
        }

        // The virtual address.
        let va = v.address.trim();
        if !va.is_empty() && va.chars().all(|c| c.is_ascii_digit()) {
            global_notes.push(self.note(
                v.line,
                format!("virtual={va}: a firewall-mark service: rvs has no firewall marks (it listens on addresses and ports): this virtual service is left out", va = super::w(va)),
            ));
            return Ok(None);
        }
        let (vhost, vport) = split_host_port(va).ok_or_else(|| {
            self.err(
                v.line,
                format!("{va} is not an address and port", va = super::q(va)),
            )
        })?;
        if v.v6 != vhost.starts_with('[') {
            return Err(self.err(
                v.line,
                if v.v6 {
                    "virtual6 takes an IPv6 address in brackets ([2001:db8::1]:80)"
                } else {
                    "an IPv6 address: use virtual6"
                },
            ));
        }
        let proto = match &protocol {
            Some((p, line)) => match p.as_str() {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                "fwm" => {
                    global_notes.push(self.note(
                        *line,
                        "protocol=fwm: rvs has no firewall-mark services: this virtual service is left out",
                    ));
                    return Ok(None);
                }
                other => {
                    return Err(self.err(
                        *line,
                        format!(
                            "protocol must be tcp or udp, not {other}",
                            other = super::q(other)
                        ),
                    ));
                }
            },
            None if vport == "53" || vport == "domain" => Proto::Udp,
            None => Proto::Tcp,
        };
        let vip = self.host(vhost, v.v6).ok_or_else(|| {
            self.err(
                v.line,
                format!(
                    "{vhost}: not an address, nor a name in /etc/hosts: write the address",
                    vhost = super::w(vhost)
                ),
            )
        })?;
        let vport = self.port(vport, proto).ok_or_else(|| {
            self.err(
                v.line,
                format!(
                    "{vport}: not a port, nor a service in /etc/services",
                    vport = super::w(vport)
                ),
            )
        })?;
        let listen = SocketAddr::new(vip, vport);
        let service = service.unwrap_or_else(|| port_service(vport).to_owned());
        let udp = proto == Proto::Udp;

        let checktimeout = timing.checktimeout.or(timing.negotiatetimeout).unwrap_or(5);
        let negotiatetimeout = timing
            .negotiatetimeout
            .or(timing.checktimeout)
            .unwrap_or(30);
        // The protocol keys a check of this service does not use.
        let negotiates = matches!(checktype.as_str(), "negotiate" | "combined");
        for (k, line) in &protocol_keys {
            let users: &[&str] = match k.as_str() {
                "login" => &[
                    "pop", "pops", "imap", "imaps", "ftp", "ldap", "ldaps", "mysql", "pgsql",
                    "sip", "radius",
                ],
                "passwd" => &[
                    "pop", "pops", "imap", "imaps", "ftp", "ldap", "ldaps", "mysql", "pgsql",
                    "radius",
                ],
                "database" => &["mysql", "pgsql"],
                _ => &["radius"],
            };
            if !negotiates || !users.contains(&service.as_str()) {
                svc.notes.push(self.note(
                    *line,
                    format!("{k}: used by ldirectord's protocol checks; this one (service={service}, checktype={checktype}) does not use it: left out"),
                ));
            }
        }
        let spec = CheckSpec {
            checktype: checktype.clone(),
            service: service.clone(),
            request,
            receive,
            httpmethod,
            virtualhost,
            checkport,
            checkcommand,
            login,
            passwd,
            database,
            secret,
            delay: timing.checkinterval.unwrap_or(10),
            checktimeout,
            negotiatetimeout,
            failurecount: timing.failurecount.unwrap_or(1),
            checkcount: timing.checkcount.unwrap_or(1),
            nth: combined.unwrap_or(1),
            udp,
            line: check_line.unwrap_or(v.line),
        };

        let base = servicename.as_deref().map_or_else(
            || {
                format!(
                    "{}-{}-{vport}",
                    if udp { "udp" } else { "tcp" },
                    vip.to_string().replace(':', "_")
                )
            },
            str::to_owned,
        );
        let name = unique_name(&base, taken);
        taken.push(name.clone());

        let mut b = Mapping::new();
        b.insert(key("name"), s(name));
        b.insert(key("listen"), s(listen.to_string()));
        b.insert(key("proto"), s(if udp { "udp" } else { "tcp" }));
        b.insert(key("scheduler"), s(scheduler.clone()));
        if let Some((f, line)) = schedflags {
            let flags = f
                .split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .filter_map(|f| {
                    let rvs = sched_flag(&scheduler, f);
                    if rvs.is_none() {
                        svc.notes.push(self.note(
                            line,
                            format!("schedflags {f}: not a flag of the {scheduler} scheduler in rvs: left out", f = super::w(f)),
                        ));
                    }
                    rvs
                })
                .collect();
            insert_flags(&mut b, flags);
        }
        if let Some(t) = persistent {
            let mut p = Mapping::new();
            p.insert(key("timeout"), s(format!("{t}s")));
            if let Some((m, line)) = netmask {
                if v.v6 {
                    match m.parse::<u8>() {
                        Ok(len) if (1..=128).contains(&len) => {
                            p.insert(key("ipv6_prefix"), n(len));
                        }
                        _ => {
                            return Err(self.err(
                                line,
                                "netmask: a prefix length between 1 and 128 is required",
                            ));
                        }
                    }
                } else {
                    match m.parse::<Ipv4Addr>() {
                        Ok(mask) => {
                            if !mask.is_broadcast() {
                                p.insert(key("netmask"), s(mask.to_string()));
                            }
                        }
                        Err(_) => {
                            return Err(self.err(line, "netmask: dotted quad notation is required"));
                        }
                    }
                }
            }
            b.insert(key("persistence"), Value::Mapping(p));
        } else if let Some((_, line)) = netmask {
            svc.notes.push(self.note(
                line,
                "netmask without persistent: no meaning (as in ldirectord): left out",
            ));
        }
        if ops {
            if udp {
                let mut u = Mapping::new();
                u.insert(key("ops"), Value::Bool(true));
                b.insert(key("udp"), Value::Mapping(u));
            } else {
                svc.notes.push(self.note(
                    v.line,
                    "ops=yes: one-packet scheduling is for UDP: left out",
                ));
            }
        }
        if timing.quiescent == Some(true) && checktype != "off" {
            b.insert(key("inhibit_on_failure"), Value::Bool(true));
        }
        if let Some((fb, line)) = &timing.fallback {
            if checktype == "off" {
                svc.notes.push(self.note(*line, "fallback with checktype=off: ldirectord activates no server, the fallback neither: left out"));
            } else {
                let addr = self.fallback(fb, *line, v.v6, proto, vport)?;
                b.insert(key("sorry_server"), s(addr.to_string()));
            }
        }

        // The real servers and their checks.
        let mut servers = Vec::new();
        let mut checks = Vec::new();
        let mut methods: Vec<String> = Vec::new();
        for d in reals {
            let r = self.real(d, v.v6, proto)?;
            if r.doubled {
                svc.notes.push(self.note(
                    r.line,
                    "ADDRESS::PORT read as ADDRESS:PORT (ldirectord itself takes the port as the server's address here)",
                ));
            }
            if spec.checkcount > 1
                && spec.checktype != "ping"
                && !(udp && spec.checktype == "connect")
            {
                svc.notes.push(self.note(
                    spec.line,
                    "checkcount: ldirectord uses it for ping checks only: left out",
                ));
            }
            match (&r.targets[0], r.targets.len()) {
                (Target::Name(h), 1) => svc.notes.push(self.note(
                    r.line,
                    format!("{h}: not in /etc/hosts: a dns: real server, which rvs resolves itself (each address a server) and follows as it changes; ldirectord took one address at start"),
                )),
                (Target::Name(h), count) => svc.notes.push(self.note(
                    r.line,
                    format!("{}: names not in /etc/hosts: ldirectord takes every address between the two ends' addresses; rvs takes the {count} names from {h} by their number, each a dns: real server (check that they are the same servers)", d.value.split_whitespace().next().unwrap_or("")),
                )),
                _ => {}
            }
            if !methods.contains(&r.forward) {
                methods.push(r.forward.clone());
                svc.notes.push(self.note(r.line, forward_note(&r.forward)));
            }
            let port = if r.forward != "masq" && r.port != 0 && r.port != vport {
                svc.notes.push(self.note(
                    r.line,
                    format!("port {} with {}: LVS sends to the virtual port with gate and ipip, so ldirectord's real server gets port {vport}: rvs connects to {vport} too", r.port, r.forward),
                ));
                vport
            } else if r.port == 0 {
                vport
            } else {
                r.port
            };
            if r.targets.len() > 1024 {
                return Err(self.err(r.line, "a range of over 1024 servers"));
            }
            for t in &r.targets {
                let mut m = Mapping::new();
                match t {
                    Target::Addr(a) => {
                        m.insert(key("address"), s(SocketAddr::new(*a, port).to_string()));
                    }
                    Target::Name(h) => {
                        m.insert(key("dns"), s(format!("{h}:{port}")));
                    }
                }
                m.insert(
                    key("weight"),
                    n(if checktype == "off" {
                        0
                    } else {
                        r.weight.min(65_535)
                    }),
                );
                if r.u_threshold > 0 {
                    m.insert(key("u_threshold"), n(r.u_threshold));
                }
                if r.l_threshold > 0 {
                    if r.u_threshold > r.l_threshold {
                        m.insert(key("l_threshold"), n(r.l_threshold));
                    } else {
                        svc.notes.push(self.note(
                            r.line,
                            format!("l:{} without a higher u: threshold: rvs needs the lower threshold under the upper one: left out", r.l_threshold),
                        ));
                    }
                }
                let c = self.checks(&spec, &r, t, port, vip, vport, &mut svc.notes);
                servers.push(m);
                checks.push(Some(c));
            }
        }
        if checktype == "off" {
            svc.notes.push(self.note(
                v.line,
                "checktype=off: ldirectord activates no real server: every one has weight 0 here (no new connections)",
            ));
        }
        insert_servers(&mut b, servers, checks);
        svc.body = b;
        dedup_notes(&mut svc.notes);
        Ok(Some(svc))
    }

    /// `fallback=HOST[:PORT] [gate|masq|ipip]`.
    fn fallback(
        &self,
        text: &str,
        line: usize,
        v6: bool,
        proto: Proto,
        vport: u16,
    ) -> Result<SocketAddr, ImportError> {
        let mut words = text.split_whitespace();
        let hp = words.next().unwrap_or("");
        if let Some(fwd) = words.next()
            && !matches!(fwd, "gate" | "masq" | "ipip")
        {
            return Err(self.err(line, "forward method must be gate, masq or ipip"));
        }
        let (h, p) = match split_host_port(hp) {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        };
        let ip = self.host(h, v6).ok_or_else(|| {
            self.err(
                line,
                format!(
                    "invalid {} address for the fallback server: {h}",
                    if v6 { "IPv6" } else { "IPv4" }
                ),
            )
        })?;
        let port = match p {
            Some(p) => self
                .port(p, proto)
                .ok_or_else(|| self.err(line, "invalid port for the fallback server"))?,
            None => vport,
        };
        Ok(SocketAddr::new(ip, port))
    }

    /// `real=HOST[->HOST][:PORT] gate|masq|ipip [WEIGHT] ["REQUEST", "RECEIVE"] [l:N] [u:N]`.
    fn real(&self, d: &Directive, v6: bool, proto: Proto) -> Result<Real, ImportError> {
        let line = d.line;
        let text = d.value.trim();
        let (spec, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        let rest = rest.trim_start();
        // HOST[->HOST][:PORT]; `192.0.2.1::80` (ldirectord's own sample) is
        // read as one colon.
        let (hosts, port) = match split_host_port(spec) {
            Some((h, p)) => (h, p),
            None => (spec, "0"),
        };
        let mut doubled = false;
        let (hosts, port) = match (hosts.strip_suffix(':'), port) {
            (Some(h), p) if !v6 => {
                doubled = true;
                (h, p)
            }
            _ => (hosts, port),
        };
        let port_n = self
            .port(port, proto)
            .ok_or_else(|| self.err(line, format!("invalid port ({port}) for real server (not a port, nor a service in /etc/services)", port = super::w(port))))?;
        let targets = match hosts.split_once("->") {
            None => match self.host(hosts, v6) {
                Some(a) => vec![Target::Addr(a)],
                None if is_hostname(hosts) => vec![Target::Name(hosts.to_owned())],
                None => {
                    return Err(self.err(
                        line,
                        format!(
                            "invalid address ({hosts}) for real server",
                            hosts = super::w(hosts)
                        ),
                    ));
                }
            },
            Some((a, b)) => {
                if v6 {
                    return Err(self.err(line, "address ranges are IPv4 only (as in ldirectord)"));
                }
                match (self.host(a, false), self.host(b, false)) {
                    (Some(IpAddr::V4(x)), Some(IpAddr::V4(y))) => {
                        let (x, y) = (u32::from(x), u32::from(y));
                        if x > y {
                            return Err(self.err(line, format!("invalid range {a}->{b}: the first address must not be above the last", a = super::w(a), b = super::w(b))));
                        }
                        if y - x >= 1024 {
                            return Err(self.err(
                                line,
                                format!(
                                    "{a}->{b}: over 1024 addresses",
                                    a = super::w(a),
                                    b = super::w(b)
                                ),
                            ));
                        }
                        (x..=y)
                            .map(|i| Target::Addr(IpAddr::V4(Ipv4Addr::from(i))))
                            .collect()
                    }
                    _ => name_range(a, b).ok_or_else(|| {
                        self.err(
                            line,
                            format!(
                                "{a}->{b}: the ends are neither addresses nor names in /etc/hosts"
                            ),
                        )
                    })?,
                }
            }
        };
        let mut words = Words(rest);
        let forward = words.word();
        if !matches!(forward.as_str(), "gate" | "masq" | "ipip") {
            return Err(self.err(line, "forward method must be gate, masq or ipip"));
        }
        let mut r = Real {
            doubled,
            line,
            targets,
            port: port_n,
            forward,
            weight: 1,
            request: None,
            receive: None,
            l_threshold: 0,
            u_threshold: 0,
        };
        if let Some(w) = words.number() {
            r.weight = w;
        }
        if let Some((req, rec)) = words.quoted_pair() {
            r.request = Some(req);
            r.receive = Some(rec);
        }
        if let Some(l) = words.prefixed("l:") {
            r.l_threshold = l;
        }
        if let Some(u) = words.prefixed("u:") {
            r.u_threshold = u;
        }
        if !words.0.trim().is_empty() {
            return Err(self.err(
                line,
                format!(
                    "invalid real server line, around {}",
                    super::q(words.0.trim())
                ),
            ));
        }
        Ok(r)
    }

    /// The checks of one real server, as ldirectord would run them.
    #[allow(clippy::too_many_arguments)]
    fn checks(
        &self,
        spec: &CheckSpec,
        r: &Real,
        target: &Target,
        port: u16,
        vip: IpAddr,
        vport: u16,
        notes: &mut Vec<Note>,
    ) -> Vec<Value> {
        let line = spec.line;
        // Notes on the request and the answer: the real server's line when
        // it has its own.
        let rline = if r.request.is_some() {
            r.line
        } else {
            spec.line
        };
        let check_port = spec
            .checkport
            .or((port > 0).then_some(port))
            .or_else(|| service_port(&spec.service))
            .unwrap_or(port);
        let common = |kind: &str, timeout: u64, delay: u64| {
            let mut m = Mapping::new();
            m.insert(key("type"), s(kind));
            m.insert(key("delay_loop"), s(format!("{delay}s")));
            if kind == "misc" {
                m.insert(key("timeout"), s(format!("{timeout}s")));
            } else {
                m.insert(key("connect_timeout"), s(format!("{timeout}s")));
                if check_port != port {
                    m.insert(key("connect_port"), n(check_port));
                }
            }
            m.insert(key("retry"), n(spec.failurecount - 1));
            m.insert(key("delay_before_retry"), s(format!("{}s", spec.delay)));
            m
        };
        let connect = |notes: &mut Vec<Note>, why: Option<String>| {
            if let Some(why) = why {
                notes.push(self.note(line, why));
            }
            let mut m = common(
                if spec.udp { "udp" } else { "tcp" },
                spec.checktimeout,
                spec.delay,
            );
            // A ping (also a UDP connect) tries checkcount times.
            if spec.checktype == "ping" || (spec.udp && spec.checktype == "connect") {
                m.insert(key("retry"), n(spec.failurecount * spec.checkcount - 1));
            }
            Value::Mapping(m)
        };
        let request = r.request.clone().unwrap_or_else(|| spec.request.clone());
        let receive = r.receive.clone().unwrap_or_else(|| spec.receive.clone());
        let negotiate = |notes: &mut Vec<Note>| -> Option<Value> {
            let svc = spec.service.as_str();
            match svc {
                "http" | "https" => {
                    let mut m = common(svc, spec.negotiatetimeout, spec.delay);
                    let mut path = request.clone();
                    let mut host = spec.virtualhost.clone();
                    // An absolute URL in the request: its host and port are checked.
                    let scheme = format!("{svc}://");
                    if let Some(rest) = request.trim_start_matches('/').strip_prefix(&scheme) {
                        let (hp, p) = rest
                            .split_once('/')
                            .map_or((rest, "/".to_owned()), |(a, b)| (a, format!("/{b}")));
                        path = p;
                        let (h, pt) = split_host_port(hp)
                            .unwrap_or((hp, if svc == "https" { "443" } else { "80" }));
                        if let Ok(a) = h
                            .trim_start_matches('[')
                            .trim_end_matches(']')
                            .parse::<IpAddr>()
                        {
                            m.insert(key("connect_ip"), s(a.to_string()));
                        } else {
                            notes.push(self.note(rline, format!("request {request}: rvs checks the real server's address, with Host: {h}")));
                        }
                        if let Ok(p) = pt.parse::<u16>() {
                            m.insert(key("connect_port"), n(p));
                        }
                        if host.is_none() {
                            host = Some(hp.to_owned());
                        }
                    }
                    m.insert(key("path"), s(path));
                    if spec.httpmethod == "HEAD" {
                        m.insert(key("method"), s("HEAD"));
                        if !receive.is_empty() {
                            notes.push(self.note(rline, format!("receive {receive:?} with httpmethod=HEAD: a HEAD answer has no body, so ldirectord's check could never pass; rvs checks the status alone")));
                        }
                    } else if !receive.is_empty() {
                        match rvs_proxy::config::BodyPattern::new(&receive) {
                            Ok(_) => {
                                m.insert(key("expect_body"), s(receive.clone()));
                            }
                            Err(_) => notes.push(self.note(
                                rline,
                                format!("receive {receive:?}: a Perl regular expression rvs's regex syntax cannot read (look-around, back-references): left out, the status alone is checked"),
                            )),
                        }
                    }
                    if let Some(h) = host {
                        m.insert(key("virtualhost"), s(h));
                    }
                    Some(Value::Mapping(m))
                }
                "dns" => {
                    let mut m = common("dns", spec.negotiatetimeout, spec.delay);
                    let name = request.trim_start_matches('/');
                    if name.parse::<IpAddr>().is_ok() {
                        notes.push(self.note(rline, format!("request {name}: a PTR lookup; rvs's DNS check asks for SOA of the root instead (any answer with RCODE 0 passes)")));
                        m.insert(key("name"), s("."));
                        m.insert(key("query_type"), s("SOA"));
                    } else {
                        m.insert(key("name"), s(if name.is_empty() { "." } else { name }));
                        m.insert(
                            key("query_type"),
                            s(if name.is_empty() { "SOA" } else { "A" }),
                        );
                    }
                    if !receive.is_empty() {
                        notes.push(self.note(rline, format!("receive {receive:?}: rvs's DNS check passes on any answer with RCODE 0; the addresses are not matched")));
                    }
                    if !spec.udp {
                        notes.push(self.note(line, "dns over TCP: rvs's DNS check asks over UDP"));
                    }
                    Some(Value::Mapping(m))
                }
                "none" => None,
                "smtp" | "submission" | "pop" | "pops" | "imap" | "imaps" | "nntp" | "ftp"
                | "ldap" | "ldaps" | "mysql" | "pgsql" | "sip" | "radius" | "simpletcp" => {
                    match self.protocol_check(spec, &request, &receive, rline, notes) {
                        Ok(extra) => {
                            let kind = extra
                                .get(key("type"))
                                .and_then(Value::as_str)
                                .unwrap_or("tcp")
                                .to_owned();
                            let mut m = common(&kind, spec.negotiatetimeout, spec.delay);
                            for (k, v) in extra {
                                m.insert(k, v);
                            }
                            Some(Value::Mapping(m))
                        }
                        Err(why) => Some(connect(notes, Some(why))),
                    }
                }
                other => Some(connect(
                    notes,
                    Some(format!(
                        "service={other}: rvs has no {other} check: a {} to port {check_port} instead (it passes when the port {}; the protocol exchange is not tried)",
                        if spec.udp { "UDP probe" } else { "TCP connect" },
                        if spec.udp {
                            "answers or stays silent, fails on an ICMP error"
                        } else {
                            "accepts"
                        }
                    )),
                )),
            }
        };
        match spec.checktype.as_str() {
            "on" | "off" => Vec::new(),
            "connect" => vec![connect(
                notes,
                spec.udp.then(|| "checktype=connect on UDP: ldirectord pings; rvs has no ICMP check (it runs without privilege): a UDP probe to the port instead".to_owned()),
            )],
            "ping" => vec![connect(
                notes,
                Some(format!(
                    "checktype=ping: rvs has no ICMP check (it runs without privilege): a {} to port {check_port} instead, which also needs the service to be there",
                    if spec.udp { "UDP probe" } else { "TCP connect" }
                )),
            )],
            "external" | "external-perl" => {
                if spec.checktype == "external-perl" {
                    notes.push(self.note(line, "checktype=external-perl: rvs runs the script as a program (it needs its #! line), as checktype=external"));
                }
                let mut m = common("misc", spec.checktimeout, spec.delay);
                let rip = match target {
                    Target::Name(h) => h.clone(),
                    Target::Addr(a) => a.to_string(),
                };
                m.insert(
                    key("command"),
                    Value::Sequence(vec![
                        s(spec.checkcommand.clone()),
                        s(vip.to_string()),
                        s(vport.to_string()),
                        s(rip),
                        s(port.to_string()),
                    ]),
                );
                vec![Value::Mapping(m)]
            }
            "combined" => {
                let nth = spec.nth;
                let mut out = vec![connect(notes, None)];
                // A negotiate check that is a connect too is said once.
                let connect_type = out[0]
                    .as_mapping()
                    .and_then(|o| o.get(key("type")))
                    .cloned();
                if let Some(Value::Mapping(mut m)) = negotiate(notes)
                    && m.get(key("type")) != connect_type.as_ref()
                {
                    let every = spec.delay * nth;
                    m.insert(key("delay_loop"), s(format!("{every}s")));
                    notes.push(self.note(
                        line,
                        format!(
                            "checktype={nth}: two checks here, the connect every {}s and the negotiate one every {every}s; both must pass (in ldirectord the next connect that passes brings a server back)",
                            spec.delay
                        ),
                    ));
                    out.push(Value::Mapping(m));
                }
                out
            }
            _ => negotiate(notes).map_or_else(Vec::new, |c| vec![c]),
        }
    }
}

impl Convert<'_> {
    /// The keys of a negotiate check that speaks `spec.service`, as
    /// ldirectord's check subroutine does; `Err` says why it becomes a
    /// connect instead (ldirectord's check could never pass).
    fn protocol_check(
        &self,
        spec: &CheckSpec,
        request: &str,
        receive: &str,
        rline: usize,
        notes: &mut Vec<Note>,
    ) -> Result<Mapping, String> {
        let svc = spec.service.as_str();
        let mut m = Mapping::new();
        let kind = match svc {
            "smtp" | "submission" => "smtp",
            "pop" | "pops" => "pop",
            "imap" | "imaps" => "imap",
            "ldap" | "ldaps" => "ldap",
            "simpletcp" => "tcp",
            other => other,
        };
        m.insert(key("type"), s(kind));
        if matches!(svc, "pops" | "imaps" | "ldaps") {
            m.insert(key("tls"), Value::Bool(true));
        }
        // ldirectord's request always starts with / (it adds one).
        let bare = request.strip_prefix('/').unwrap_or(request);
        let login = |m: &mut Mapping| {
            if let Some(l) = &spec.login {
                m.insert(key("login"), s(l.clone()));
                if let Some(p) = &spec.passwd {
                    m.insert(key("password"), s(p.clone()));
                }
            }
        };
        let pattern = |what: &str, notes: &mut Vec<Note>| -> Option<Value> {
            if receive.is_empty() {
                return None;
            }
            match rvs_proxy::config::BodyPattern::new(receive) {
                Ok(_) => Some(s(receive.to_owned())),
                Err(_) => {
                    notes.push(self.note(rline, format!("receive {receive:?}: a Perl regular expression rvs's regex syntax cannot read (look-around, back-references): left out, {what}")));
                    None
                }
            }
        };
        let ignored = |what: &str, notes: &mut Vec<Note>| {
            if !receive.is_empty() {
                notes.push(self.note(
                    rline,
                    format!("receive {receive:?}: ldirectord's {svc} check does not read it ({what}): left out"),
                ));
            }
        };
        match kind {
            "smtp" | "nntp" => ignored("it checks the greeting", notes),
            "pop" | "imap" => {
                login(&mut m);
                ignored("it checks the greeting and the login", notes);
            }
            "ftp" => {
                login(&mut m);
                if bare.is_empty() {
                    // ldirectord asks for "/", a directory: no file comes,
                    // and only an empty receive could match.
                    if !receive.is_empty() {
                        notes.push(self.note(rline, format!("receive {receive:?} without a request: ldirectord matches it against the file it fetches, and it fetches none: left out, the login is checked")));
                    }
                } else {
                    m.insert(key("path"), s(request.to_owned()));
                    if let Some(p) = pattern("any content passes", notes) {
                        m.insert(key("expect_body"), p);
                    }
                }
            }
            "ldap" => {
                login(&mut m);
                if !bare.is_empty() {
                    m.insert(key("base"), s(bare.to_owned()));
                }
                if let Some(p) = pattern("the entry is found, whatever its DN", notes) {
                    m.insert(key("expect_dn"), p);
                }
            }
            "mysql" | "pgsql" => {
                if spec.login.is_none() || bare.is_empty() {
                    return Err(format!(
                        "service={svc} without login= and request=: ldirectord refuses the check (\"Must specify a login and request string\") and never adds these servers; rvs checks with a TCP connect instead: give login=, passwd= and request=\"SELECT ...\""
                    ));
                }
                login(&mut m);
                if let Some(d) = &spec.database {
                    m.insert(key("database"), s(d.clone()));
                }
                m.insert(key("query"), s(bare.to_owned()));
                ignored("it wants a row", notes);
            }
            "sip" => {
                let user = spec
                    .login
                    .clone()
                    .unwrap_or_else(|| "ldirectord@localhost".into());
                m.insert(key("uri"), s(format!("sip:{user}")));
                if !spec.udp {
                    m.insert(key("transport"), s("tcp"));
                }
                ignored("it wants 200 OK", notes);
            }
            "radius" => {
                let Some(secret) = &spec.secret else {
                    return Err("service=radius without secret=: no RADIUS server answers a request signed with no secret; rvs checks with a UDP probe instead: give secret=".into());
                };
                m.insert(key("secret"), s(secret.clone()));
                login(&mut m);
                ignored("any answer passes", notes);
            }
            _ => {
                // simpletcp: the request sent (\n read as a newline), then
                // a line that matches receive.
                if spec.udp {
                    notes.push(self.note(
                        spec.line,
                        "service=simpletcp on UDP: rvs's check speaks TCP",
                    ));
                }
                let sent = bare.replace("\\n", "\n");
                let mut steps = Vec::new();
                if !sent.is_empty() {
                    let mut st = Mapping::new();
                    st.insert(key("send"), s(sent));
                    steps.push(Value::Mapping(st));
                }
                let mut ex = Mapping::new();
                ex.insert(
                    key("expect_regex"),
                    pattern("any answer passes", notes).unwrap_or_else(|| s(".")),
                );
                steps.push(Value::Mapping(ex));
                m.insert(key("steps"), Value::Sequence(steps));
            }
        }
        Ok(m)
    }
}

fn forward_note(method: &str) -> String {
    let what = match method {
        "gate" => "direct routing",
        "ipip" => "tunnelling",
        _ => "NAT",
    };
    format!(
        "{method} ({what}): rvs proxies every connection (FULLNAT): the real servers see rvs's address, not the client's, and answer through rvs{}. If they need the client's address, set proxy_protocol: v2 (they must read it)",
        if method == "masq" {
            " (no route back through the director is needed)"
        } else {
            " (they need no VIP on loopback and no ARP settings)"
        }
    )
}

/// The same note twice (one per server of a range) is said once.
fn dedup_notes(notes: &mut Vec<Note>) {
    let mut seen = std::collections::HashSet::new();
    notes.retain(|n| seen.insert((n.line, n.text.clone())));
}

/// `HOST:PORT` or `[V6]:PORT` → (host, port); `None` without a port.
fn split_host_port(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('[') {
        let end = s.find(']')?;
        let port = s[end + 1..].strip_prefix(':')?;
        return Some((&s[..=end], port));
    }
    let (h, p) = s.rsplit_once(':')?;
    (!h.is_empty() && !p.is_empty()).then_some((h, p))
}

fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && h.chars().any(|c| c.is_ascii_alphabetic())
}

/// `sql01->sql03` with names not in the hosts file: the names between,
/// by their number (`sql01`, `sql02`, `sql03`).
fn name_range(a: &str, b: &str) -> Option<Vec<Target>> {
    let split = |h: &str| {
        let first = h.split('.').next().unwrap_or(h);
        let digits = first.chars().rev().take_while(char::is_ascii_digit).count();
        let (stem, num) = first.split_at(first.len() - digits);
        (stem.to_owned(), num.to_owned(), h[first.len()..].to_owned())
    };
    let (sa, na, ta) = split(a);
    let (sb, nb, tb) = split(b);
    if sa != sb || ta != tb || na.is_empty() || nb.is_empty() || !is_hostname(a) {
        return None;
    }
    let (x, y): (u32, u32) = (na.parse().ok()?, nb.parse().ok()?);
    if x > y || y - x >= 1024 {
        return None;
    }
    let width = if na.starts_with('0') { na.len() } else { 0 };
    Some(
        (x..=y)
            .map(|i| Target::Name(format!("{sa}{i:0width$}{ta}")))
            .collect(),
    )
}

/// The rest of a `real=` line, read left to right.
struct Words<'a>(&'a str);

impl Words<'_> {
    fn word(&mut self) -> String {
        let t = self.0.trim_start();
        let end = t.find(char::is_whitespace).unwrap_or(t.len());
        let (w, rest) = t.split_at(end);
        self.0 = rest;
        w.to_owned()
    }

    fn number(&mut self) -> Option<u64> {
        let t = self.0.trim_start();
        let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let v = t[..end].parse().ok()?;
        self.0 = &t[end..];
        Some(v)
    }

    /// `"request", "receive"` (or separated by a space).
    fn quoted_pair(&mut self) -> Option<(String, String)> {
        let t = self.0.trim_start().strip_prefix('"')?;
        let q1 = t.find('"')?;
        let req = &t[..q1];
        let after = t[q1 + 1..].trim_start_matches([',', ' ']).trim_start();
        let after = after.strip_prefix('"')?;
        let q2 = after.find('"')?;
        let rec = &after[..q2];
        self.0 = &after[q2 + 1..];
        let req = if req.starts_with('/') || req.contains("://") {
            req.to_owned()
        } else {
            format!("/{req}")
        };
        Some((req, rec.to_owned()))
    }

    fn prefixed(&mut self, p: &str) -> Option<u64> {
        let t = self.0.trim_start().strip_prefix(p)?;
        let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let v = t[..end].parse().ok()?;
        self.0 = &t[end..];
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn names(t: &[Target]) -> Vec<String> {
        t.iter()
            .map(|t| match t {
                Target::Name(n) => n.clone(),
                Target::Addr(a) => a.to_string(),
            })
            .collect()
    }

    #[test]
    fn each_server_of_a_name_range_checks_itself() {
        let imp = import_text(
            "virtual=10.0.0.1:5432\n\treal=db1->db3:5432 masq\n\tchecktype=external\n\tcheckcommand=/bin/check\n",
            "f",
            &Names::none(),
        )
        .unwrap();
        let yaml = imp.render().unwrap();
        let c = rvs_proxy::Config::parse(&yaml, "t").unwrap();
        let hosts: Vec<String> = c.services[0]
            .discovery
            .iter()
            .map(|d| match &d.template.checks.as_ref().unwrap()[0].kind {
                rvs_proxy::config::CheckKind::Misc(m) => m.argv[3].clone(),
                k => panic!("{k:?}"),
            })
            .collect();
        assert_eq!(hosts, ["db1", "db2", "db3"]);
        let e = import_text(
            "virtual=10.0.0.1:80\n\treal6=[::1]:80 masq\n",
            "f",
            &Names::none(),
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "f:2: real6 in a virtual block: use real"
        );
    }

    #[test]
    fn name_ranges_keep_their_width() {
        assert_eq!(
            names(&name_range("sql01", "sql03").unwrap()),
            ["sql01", "sql02", "sql03"]
        );
        assert_eq!(
            names(&name_range("web9.dc", "web10.dc").unwrap()),
            ["web9.dc", "web10.dc"]
        );
        assert!(name_range("a1", "b2").is_none());
        assert!(name_range("sql03", "sql01").is_none());
    }

    #[test]
    fn addresses_ports_and_the_rest_of_a_real_line() {
        assert_eq!(
            split_host_port("[2001:db8::1]:80"),
            Some(("[2001:db8::1]", "80"))
        );
        assert_eq!(split_host_port("host:http"), Some(("host", "http")));
        assert_eq!(split_host_port("10.0.0.1"), None);
        let mut w = Words(" masq 3 \"/status\", \"^OK$\" l:4 u:9");
        assert_eq!(w.word(), "masq");
        assert_eq!(w.number(), Some(3));
        assert_eq!(w.quoted_pair(), Some(("/status".into(), "^OK$".into())));
        assert_eq!((w.prefixed("l:"), w.prefixed("u:")), (Some(4), Some(9)));
        assert!(w.0.trim().is_empty());
    }

    #[test]
    fn blocks_end_at_an_unindented_line_and_comments_go() {
        let p = parse(
            "checktimeout=3 # seconds\nvirtual=10.0.0.1:80\n\treal=10.0.0.2:80 gate\n    # a comment\n    scheduler=rr\nquiescent=yes\n",
            "f",
        )
        .unwrap();
        assert_eq!(p.globals.len(), 2);
        assert_eq!(p.globals[0].value, "3");
        assert_eq!(p.virtuals[0].directives.len(), 2);
        assert_eq!(p.virtuals[0].directives[1].line, 5);
    }
}
