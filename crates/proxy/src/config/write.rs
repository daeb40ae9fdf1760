//! The way back: a checked [`Config`] written out in the file's own form,
//! so that what runs (edits through the admin API included) can be kept as
//! a file, and read back to the same configuration.
//!
//! Values equal to their default are left out; timeouts equal to the
//! global ones are left out of services. The admin token is never written.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use super::health::defaults as hd;
use super::validate::defaults;
use super::values::Dur;
use super::{
    CheckKind, Config, DnsSettings, Entry, Global, HealthCheck, Proto, ProxyVersion,
    RealServerSpec, ServiceSpec, Target, TcpOptions, Timeouts,
};

#[derive(Serialize)]
struct OutConfig<'a> {
    global: OutGlobal,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin: Option<OutAdmin>,
    services: Vec<OutService<'a>>,
}

#[derive(Serialize)]
struct OutGlobal {
    shutdown_grace: String,
    #[serde(skip_serializing_if = "is_false")]
    access_log: bool,
    #[serde(skip_serializing_if = "OutTimeouts::is_empty")]
    timeouts: OutTimeouts,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<OutDns>,
    #[serde(skip_serializing_if = "is_false")]
    expire_nodest_conn: bool,
    #[serde(skip_serializing_if = "is_false")]
    expire_quiescent_template: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp_keepalive: Option<OutKeepalive>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp_user_timeout: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sync_daemon: Vec<OutSyncDaemon>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync_threshold: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync_period: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync_refresh_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync_retries: Option<u32>,
}

#[derive(Serialize)]
struct OutSyncDaemon {
    state: &'static str,
    mcast_interface: String,
    #[serde(skip_serializing_if = "is_zero_u8")]
    syncid: u8,
    mcast_group: String,
    mcast_port: u16,
    mcast_ttl: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync_maxlen: Option<u16>,
}

fn is_zero_u8(v: &u8) -> bool {
    *v == 0
}

/// `tcp_keepalive:` as written: `false` (turning an inherited one off),
/// or its timing (`{}`: the kernel's).
#[derive(Serialize)]
#[serde(untagged)]
enum OutKeepalive {
    Off(bool),
    On {
        #[serde(skip_serializing_if = "Option::is_none")]
        idle: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        interval: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
    },
}

impl OutKeepalive {
    /// `tcp_keepalive` and `tcp_user_timeout` of `t` where they differ
    /// from `base`.
    fn diff(t: &TcpOptions, base: &TcpOptions) -> (Option<OutKeepalive>, Option<String>) {
        let keepalive = (t.keepalive != base.keepalive).then(|| match t.keepalive {
            None => OutKeepalive::Off(false),
            Some(k) => OutKeepalive::On {
                idle: k.idle.map(duration),
                interval: k.interval.map(duration),
                count: k.count,
            },
        });
        let user_timeout = (t.user_timeout != base.user_timeout)
            .then(|| duration(t.user_timeout.unwrap_or_default()));
        (keepalive, user_timeout)
    }
}

#[derive(Serialize)]
struct OutDns {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    resolvers: Vec<String>,
    interval: String,
    hold_nx: String,
    timeout: String,
}

#[derive(Serialize)]
struct OutAdmin {
    listen: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    real_server_histograms: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_hosts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections_per_source: Option<u32>,
}

/// One service in the configuration file's form (also the admin API's).
#[derive(Serialize)]
pub(crate) struct OutService<'a> {
    name: &'a str,
    listen: Vec<String>,
    proto: &'static str,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    matching: Option<OutMatch>,
    scheduler: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    flags: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistence: Option<OutPersistence>,
    #[serde(skip_serializing_if = "OutTimeouts::is_empty")]
    timeouts: OutTimeouts,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp_keepalive: Option<OutKeepalive>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp_user_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    per_source: Option<OutPerSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_protocol: Option<&'static str>,
    #[serde(skip_serializing_if = "is_false")]
    accept_proxy_protocol: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allow: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    deny: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    udp: Option<OutUdp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health_check: Option<OutCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health_checks: Option<Vec<OutCheck>>,
    #[serde(skip_serializing_if = "is_false")]
    alpha: bool,
    #[serde(skip_serializing_if = "is_false")]
    inhibit_on_failure: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    passive: Option<OutPassive>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sorry_server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quorum: Option<u32>,
    #[serde(skip_serializing_if = "is_zero")]
    hysteresis: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    slow_start: Option<String>,
    real_servers: Vec<OutRealServer>,
}

#[derive(Serialize)]
struct OutPerSource {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    burst: Option<u32>,
    prefix_v4: u8,
    prefix_v6: u8,
    max_sources: u32,
}

#[derive(Serialize)]
struct OutPassive {
    failures: u32,
}

/// A check, with the values that differ from its type's defaults.
#[derive(Default, Serialize)]
struct OutCheck {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_loop: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_before_retry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warmup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expect_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtualhost: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<Vec<OutArg>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dynamic: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    require_reply: Option<serde_yaml::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_reply_length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_reply_length: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<Vec<OutStep>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    login: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expect_dn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    helo_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transport: Option<&'static str>,
}

/// A `tcp` check's step (one key): text when it is UTF-8 without NULs,
/// else hex.
#[derive(Default, Serialize)]
struct OutStep {
    #[serde(skip_serializing_if = "Option::is_none")]
    send: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    send_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expect_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expect_regex: Option<String>,
}

impl OutStep {
    fn new(s: &super::TcpStep) -> OutStep {
        let text = |b: &[u8]| {
            std::str::from_utf8(b)
                .ok()
                .filter(|t| !t.contains('\0'))
                .map(str::to_owned)
        };
        let hexed = |b: &[u8]| hex(b.iter().map(|x| (*x, 0xff)));
        match s {
            super::TcpStep::Send(b) => match text(b) {
                Some(t) => OutStep {
                    send: Some(t),
                    ..OutStep::default()
                },
                None => OutStep {
                    send_hex: Some(hexed(b)),
                    ..OutStep::default()
                },
            },
            super::TcpStep::Expect(b) => match text(b) {
                Some(t) => OutStep {
                    expect: Some(t),
                    ..OutStep::default()
                },
                None => OutStep {
                    expect_hex: Some(hexed(b)),
                    ..OutStep::default()
                },
            },
            super::TcpStep::ExpectRegex(p) => OutStep {
                expect_regex: Some(p.as_str().to_owned()),
                ..OutStep::default()
            },
        }
    }
}

/// A misc check's argument: a string, or `{secret: ...}`.
#[derive(Serialize)]
#[serde(untagged)]
enum OutArg {
    Plain(String),
    Secret { secret: String },
}

fn hex(bytes: impl Iterator<Item = (u8, u8)>) -> String {
    let mut s = String::new();
    for (v, m) in bytes {
        for (shift, mask) in [(4, 0xf0u8), (0, 0x0f)] {
            if m & mask == 0 {
                s.push('x');
            } else {
                s.push(char::from_digit(u32::from((v >> shift) & 0xf), 16).unwrap_or('0'));
            }
        }
    }
    s
}

impl OutCheck {
    fn new(c: &HealthCheck) -> OutCheck {
        let differs = |a: Duration, b: Duration| (a != b).then(|| duration(a));
        let (retry_default, dbr_default) = match &c.kind {
            CheckKind::Dns(_) => (hd::RETRY_DNS, c.delay_loop),
            CheckKind::Misc(_) => (hd::RETRY_MISC, hd::DELAY_BEFORE_RETRY),
            CheckKind::Http(_) => (hd::RETRY, hd::DELAY_BEFORE_RETRY_HTTP),
            _ => (hd::RETRY, hd::DELAY_BEFORE_RETRY),
        };
        let mut o = OutCheck {
            kind: c.kind.name(),
            delay_loop: differs(c.delay_loop, hd::DELAY_LOOP),
            connect_timeout: differs(c.connect_timeout, hd::CONNECT_TIMEOUT),
            retry: (c.retry != retry_default).then_some(c.retry),
            delay_before_retry: differs(c.delay_before_retry, dbr_default),
            warmup: differs(c.warmup, c.delay_loop),
            connect_ip: c.connect_ip.map(|i| i.to_string()),
            connect_port: c.connect_port,
            ..OutCheck::default()
        };
        match &c.kind {
            CheckKind::Tcp => {}
            CheckKind::Http(h) => {
                o.path = (h.path != "/").then(|| h.path.clone());
                o.status = (h.status != [(200, 299)]).then(|| {
                    h.status
                        .iter()
                        .map(|(a, b)| {
                            if a == b {
                                a.to_string()
                            } else {
                                format!("{a}-{b}")
                            }
                        })
                        .collect()
                });
                o.digest.clone_from(&h.digest);
                o.expect_body = h.expect_body.as_ref().map(|p| p.as_str().to_owned());
                o.method = (h.method != "GET").then(|| h.method.clone());
                o.virtualhost.clone_from(&h.virtualhost);
            }
            CheckKind::Misc(m) => {
                o.command = Some(
                    m.argv
                        .iter()
                        .enumerate()
                        .map(|(i, a)| {
                            if m.secret_args.contains(&i) {
                                OutArg::Secret { secret: a.clone() }
                            } else {
                                OutArg::Plain(a.clone())
                            }
                        })
                        .collect(),
                );
                o.timeout = differs(m.timeout, c.delay_loop);
                o.dynamic = m.dynamic.then_some(true);
            }
            CheckKind::Udp(u) => {
                o.payload = (u.payload != hd::UDP_PAYLOAD)
                    .then(|| hex(u.payload.iter().map(|b| (*b, 0xff))));
                o.require_reply = u.require_reply.as_ref().map(|r| {
                    if r.is_empty() {
                        serde_yaml::Value::Bool(true)
                    } else {
                        serde_yaml::Value::String(hex(r.iter().copied()))
                    }
                });
                o.min_reply_length = (u.min_reply_length != 0).then_some(u.min_reply_length);
                o.max_reply_length =
                    (u.max_reply_length != hd::MAX_REPLY).then_some(u.max_reply_length);
            }
            CheckKind::Dns(d) => {
                o.name = (d.name != ".").then(|| d.name.clone());
                o.query_type = (d.qtype != "SOA").then(|| d.qtype.clone());
            }
            CheckKind::Steps(steps) => {
                o.steps = Some(steps.iter().map(OutStep::new).collect());
            }
            CheckKind::Protocol(p) => {
                o.tls = p.tls.then_some(true);
                o.login.clone_from(&p.login);
                o.password.clone_from(&p.password);
                o.database.clone_from(&p.database);
                o.query = (p.query != super::check_protocols::QUERY
                    && matches!(p.protocol, super::Protocol::Mysql | super::Protocol::Pgsql))
                .then(|| p.query.clone());
                o.base = (!p.base.is_empty()).then(|| p.base.clone());
                o.expect_dn = p.expect_dn.as_ref().map(|r| r.as_str().to_owned());
                o.path.clone_from(&p.path);
                o.expect_body = p.expect_body.as_ref().map(|r| r.as_str().to_owned());
                o.helo_name = (p.protocol == super::Protocol::Smtp
                    && p.helo_name != super::check_protocols::HELO_NAME)
                    .then(|| p.helo_name.clone());
                o.secret.clone_from(&p.secret);
                o.uri.clone_from(&p.uri);
                o.transport = (p.protocol == super::Protocol::Sip && p.sip_tcp).then_some("tcp");
            }
        }
        o
    }
}

/// `health_check` for one, `health_checks` for several (or none).
fn out_checks(c: &[HealthCheck]) -> (Option<OutCheck>, Option<Vec<OutCheck>>) {
    match c {
        [] => (None, None),
        [one] => (Some(OutCheck::new(one)), None),
        many => (None, Some(many.iter().map(OutCheck::new).collect())),
    }
}

#[derive(Serialize)]
struct OutPersistence {
    timeout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    netmask: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6_prefix: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    engine: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fwmark: Option<u32>,
}

#[derive(Serialize)]
struct OutMatch {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sni: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    alpn: Vec<String>,
}

impl OutMatch {
    fn new(m: &crate::sni::names::Match) -> OutMatch {
        OutMatch {
            sni: m.sni.iter().map(ToString::to_string).collect(),
            // Checked as printable ASCII when read.
            alpn: m
                .alpn
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect(),
        }
    }
}

#[derive(Serialize, Default)]
struct OutTimeouts {
    #[serde(skip_serializing_if = "Option::is_none")]
    connect: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcpfin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    udp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_first_byte: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_hello: Option<String>,
}

impl OutTimeouts {
    /// The timeouts of `t` that differ from `base`.
    fn diff(t: &Timeouts, base: &Timeouts) -> OutTimeouts {
        let d = |a: Duration, b: Duration| (a != b).then(|| duration(a));
        OutTimeouts {
            connect: d(t.connect, base.connect),
            tcp: d(t.tcp, base.tcp),
            tcpfin: d(t.tcpfin, base.tcpfin),
            udp: d(t.udp, base.udp),
            proxy_header: d(t.proxy_header, base.proxy_header),
            // `off` turns off what `global` turns on.
            client_first_byte: (t.client_first_byte != base.client_first_byte).then(|| {
                t.client_first_byte
                    .map_or_else(|| "off".to_owned(), duration)
            }),
            client_hello: d(t.client_hello, base.client_hello),
        }
    }

    fn is_empty(&self) -> bool {
        self.connect.is_none()
            && self.tcp.is_none()
            && self.tcpfin.is_none()
            && self.udp.is_none()
            && self.proxy_header.is_none()
            && self.client_first_byte.is_none()
            && self.client_hello.is_none()
    }
}

#[derive(Serialize)]
struct OutUdp {
    #[serde(skip_serializing_if = "is_false")]
    ops: bool,
    max_sessions: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_protocol_every: Option<bool>,
}

#[derive(Serialize)]
struct OutRealServer {
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    srv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<i32>,
    #[serde(skip_serializing_if = "is_zero")]
    u_threshold: u32,
    #[serde(skip_serializing_if = "is_zero")]
    l_threshold: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    health_check: Option<OutCheck>,
    /// An empty list: no checks at all for this server.
    #[serde(skip_serializing_if = "Option::is_none")]
    health_checks: Option<Vec<OutCheck>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alpha: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inhibit_on_failure: Option<bool>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

pub(super) fn duration(d: Duration) -> String {
    Dur(d).to_string()
}

impl<'a> OutService<'a> {
    /// `s` as the file would say it, with timeouts relative to `global`.
    pub(crate) fn new(s: &'a ServiceSpec, global: &Global) -> OutService<'a> {
        let sched = &s.sched;
        let (tcp_keepalive, tcp_user_timeout) = OutKeepalive::diff(&s.tcp, &global.tcp);
        let checks = out_checks(&s.health.checks);
        OutService {
            name: &s.name,
            listen: s.listen.iter().map(ToString::to_string).collect(),
            proto: match s.proto {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
            },
            matching: s.matching.as_ref().map(OutMatch::new),
            scheduler: sched.scheduler.name(),
            flags: sched
                .flags
                .names(sched.scheduler)
                .into_iter()
                .map(|f| f.name())
                .collect(),
            persistence: sched.persistence.map(|p| {
                let v4 = p.netmask.v4();
                let prefix = p.netmask.v6_prefix();
                OutPersistence {
                    timeout: duration(p.timeout),
                    netmask: (v4 != Ipv4Addr::BROADCAST).then(|| v4.to_string()),
                    ipv6_prefix: (prefix != 128).then_some(prefix),
                    scope: (p.scope == rvs_sched::Scope::Service).then_some("service"),
                    engine: s.persistence.engine.map(|e| e.name()),
                    fwmark: s.persistence.fwmark,
                }
            }),
            timeouts: OutTimeouts::diff(&s.timeouts, &global.timeouts),
            tcp_keepalive,
            tcp_user_timeout,
            connect_retries: (s.connect_retries != defaults::CONNECT_RETRIES)
                .then_some(s.connect_retries),
            max_connections: s.max_connections,
            per_source: s.per_source.map(|p| OutPerSource {
                max_connections: p.max_connections,
                rate: p.rate,
                burst: p.rate.map(|_| p.burst),
                prefix_v4: p.prefix_v4,
                prefix_v6: p.prefix_v6,
                max_sources: p.max_sources,
            }),
            proxy_protocol: s.proxy_protocol.map(|v| match v {
                ProxyVersion::V1 => "v1",
                ProxyVersion::V2 => "v2",
            }),
            accept_proxy_protocol: s.accept_proxy_protocol,
            allow: s.acl.allow.iter().map(ToString::to_string).collect(),
            deny: s.acl.deny.iter().map(ToString::to_string).collect(),
            udp: (s.proto == Proto::Udp).then_some(OutUdp {
                ops: s.udp.ops,
                max_sessions: s.udp.max_sessions,
                proxy_protocol_every: (!s.udp.proxy_protocol_every).then_some(false),
            }),
            health_check: checks.0,
            health_checks: checks.1,
            alpha: s.health.alpha,
            inhibit_on_failure: s.health.inhibit_on_failure,
            passive: s
                .health
                .passive_failures
                .map(|failures| OutPassive { failures }),
            sorry_server: s.health.sorry_server.map(|a| a.to_string()),
            quorum: (s.health.quorum != hd::QUORUM).then_some(s.health.quorum),
            hysteresis: s.health.hysteresis,
            slow_start: s.health.slow_start.map(duration),
            real_servers: s
                .entries()
                .into_iter()
                .map(|e| match e {
                    Entry::Static(r) => real_server(r),
                    Entry::Discovery(_, d) => {
                        let mut out = real_server(&d.template);
                        out.address = None;
                        match &d.target {
                            Target::Dns { host, port } => out.dns = Some(format!("{host}:{port}")),
                            Target::Srv { name } => {
                                out.srv = Some(name.clone());
                                out.weight = None;
                            }
                        }
                        out
                    }
                })
                .collect(),
        }
    }
}

fn real_server(r: &RealServerSpec) -> OutRealServer {
    let (health_check, health_checks) = match r.checks.as_deref() {
        None => (None, None),
        // No checks of its own kind at all: an empty list says so.
        Some([]) => (None, Some(Vec::new())),
        Some(c) => out_checks(c),
    };
    OutRealServer {
        address: Some(r.address.to_string()),
        dns: None,
        srv: None,
        weight: Some(r.params.weight),
        u_threshold: r.params.u_threshold,
        l_threshold: r.params.l_threshold,
        health_check,
        health_checks,
        alpha: r.alpha,
        inhibit_on_failure: r.inhibit_on_failure,
    }
}

/// One service in the file's form, alone (as the admin API takes one).
pub(crate) fn service_yaml(s: &ServiceSpec, global: &Global) -> String {
    serde_yaml::to_string(&OutService::new(s, global)).unwrap_or_default()
}

impl super::Admin {
    /// `admin:` as written, without the token; `None` when every key has
    /// its default.
    fn out(&self) -> Option<OutAdmin> {
        let limits = super::AdminLimits::DEFAULT;
        let differs = |v: u32, d: u32| (v != d).then_some(v);
        let out = OutAdmin {
            listen: self.listen.to_string(),
            real_server_histograms: self.real_server_histograms,
            allowed_hosts: self.allowed_hosts.clone(),
            max_connections: differs(self.limits.max_connections, limits.max_connections),
            max_connections_per_source: differs(
                self.limits.max_connections_per_source,
                limits.max_connections_per_source,
            ),
        };
        let default = self.listen == defaults::ADMIN
            && !out.real_server_histograms
            && out.allowed_hosts.is_empty()
            && out.max_connections.is_none()
            && out.max_connections_per_source.is_none();
        (!default).then_some(out)
    }
}

impl Config {
    /// The configuration in the file's form (YAML), without the admin token.
    pub fn to_yaml(&self) -> String {
        // Serializing plain strings, numbers and lists cannot fail.
        serde_yaml::to_string(&self.out()).unwrap_or_default()
    }

    /// A hash of the form [`Config::to_yaml`] writes: equal configurations,
    /// however their files were written, hash alike. The form is streamed
    /// into the hasher as JSON, the same values in the same order, without
    /// the YAML emitter's cost or the text held whole (30 ms and 1 MB at
    /// 1000 services × 20 servers, where this takes a few ms).
    pub fn form_hash(&self) -> u64 {
        struct Hashing(std::hash::DefaultHasher);
        impl std::io::Write for Hashing {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                std::hash::Hasher::write(&mut self.0, b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut h = Hashing(std::hash::DefaultHasher::new());
        // Writing into a hasher cannot fail, nor serializing plain values.
        let _ = serde_json::to_writer(&mut h, &self.out());
        std::hash::Hasher::finish(&h.0)
    }

    fn out(&self) -> OutConfig<'_> {
        let (tcp_keepalive, tcp_user_timeout) =
            OutKeepalive::diff(&self.global.tcp, &TcpOptions::default());
        OutConfig {
            global: OutGlobal {
                shutdown_grace: duration(self.global.shutdown_grace),
                access_log: self.global.access_log,
                timeouts: OutTimeouts::diff(&self.global.timeouts, &Timeouts::DEFAULT),
                dns: (self.global.dns != DnsSettings::default()).then(|| OutDns {
                    resolvers: self
                        .global
                        .dns
                        .resolvers
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    interval: duration(self.global.dns.interval),
                    hold_nx: duration(self.global.dns.hold_nx),
                    timeout: duration(self.global.dns.timeout),
                }),
                expire_nodest_conn: self.global.expire_nodest_conn,
                expire_quiescent_template: self.global.expire_quiescent_template,
                tcp_keepalive,
                tcp_user_timeout,
                sync_daemon: self
                    .global
                    .sync
                    .daemons
                    .iter()
                    .map(|d| OutSyncDaemon {
                        state: d.state.name(),
                        mcast_interface: d.mcast_interface.clone(),
                        syncid: d.syncid,
                        mcast_group: d.mcast_group.to_string(),
                        mcast_port: d.mcast_port,
                        mcast_ttl: d.mcast_ttl,
                        sync_maxlen: d.sync_maxlen,
                    })
                    .collect(),
                sync_threshold: (self.global.sync.threshold != super::sync::DEFAULT_THRESHOLD)
                    .then_some(self.global.sync.threshold),
                sync_period: (self.global.sync.period != super::sync::DEFAULT_PERIOD)
                    .then_some(self.global.sync.period),
                sync_refresh_period: (!self.global.sync.refresh_period.is_zero())
                    .then(|| duration(self.global.sync.refresh_period)),
                sync_retries: (self.global.sync.retries != 0).then_some(self.global.sync.retries),
            },
            admin: self.admin.out(),
            services: self
                .services
                .iter()
                .map(|s| OutService::new(s, &self.global))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every example config, written back and read again, is the same
    /// configuration.
    #[test]
    fn example_configs_round_trip() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let c = Config::load(&path).unwrap();
            let yaml = c.to_yaml();
            let back = Config::parse(&yaml, "written").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            assert_eq!(back, c, "{}:\n{yaml}", path.display());
            seen += 1;
        }
        assert!(seen >= 3, "only {seen} example configs");
    }

    #[test]
    fn everything_settable_round_trips() {
        let text = r#"
global:
  shutdown_grace: 2.5s
  access_log: true
  timeouts: { tcp: 1h, connect: 250ms }
  tcp_keepalive: { idle: 60s, count: 4 }
  tcp_user_timeout: 30s
admin:
  listen: 127.0.0.1:9999
  token: secret
services:
  - name: a
    listen: [127.0.0.1:80, "[::1]:80"]
    scheduler: sh
    flags: [sh-port, sh-fallback]
    persistence: { timeout: 5m, netmask: 255.255.255.0, ipv6_prefix: 64 }
    timeouts: { tcpfin: 30s, proxy_header: 0.0005s }
    tcp_keepalive: false
    tcp_user_timeout: 0s
    connect_retries: 0
    max_connections: 10
    proxy_protocol: v2
    accept_proxy_protocol: true
    allow: [10.0.0.0/8]
    deny: [10.1.0.0/16, 192.0.2.1]
    health_checks:
      - { type: http, path: /health, status: [200, "300-399"], digest: 9b3a0c85a887a256d6939da88aabd8cd, virtualhost: www.example.com, delay_loop: 2s, retry: 3, warmup: 0s, connect_port: 8080 }
      - { type: tcp, connect_timeout: 1s, connect_ip: 127.0.0.9, delay_before_retry: 500ms }
    alpha: true
    inhibit_on_failure: true
    passive: { failures: 3 }
    sorry_server: 127.0.0.1:9999
    quorum: 2
    hysteresis: 1
    slow_start: 30s
    real_servers:
      - { address: 127.0.0.2:80, weight: 0, u_threshold: 5, l_threshold: 2, alpha: false }
      - address: "[::1]:81"
        weight: 65535
        inhibit_on_failure: false
        health_check: { type: misc, command: [/bin/check, --fast], timeout: 2s, dynamic: true }
      - { address: 127.0.0.3:80, health_checks: [] }
  - name: b
    listen: 127.0.0.1:53
    proto: udp
    scheduler: mh
    udp: { ops: true, max_sessions: 7 }
    health_checks:
      - { type: dns, name: example.com, query_type: A }
      - { type: udp, payload: "0a0b 0c", require_reply: "0ax", min_reply_length: 2, max_reply_length: 100 }
      - { type: udp, require_reply: true }
    real_servers: []
"#;
        let c = Config::parse(text, "t").unwrap();
        assert_eq!(c.services[0].tcp, crate::config::TcpOptions::default());
        assert_eq!(c.services[1].tcp, c.global.tcp);
        assert_eq!(c.global.tcp.user_timeout, Some(Duration::from_secs(30)));
        let yaml = c.to_yaml();
        assert!(!yaml.contains("secret"), "the token leaked:\n{yaml}");
        let mut back = Config::parse(&yaml, "written").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(back.admin.token, None);
        back.admin.token = c.admin.token.clone();
        assert_eq!(back, c, "\n{yaml}");
    }

    #[test]
    fn protocol_checks_round_trip() {
        let text = r#"
services:
  - name: p
    listen: 127.0.0.1:25
    health_checks:
      - { type: smtp, helo_name: lb.example.com }
      - { type: smtp }
      - { type: pop, tls: true, login: u, password: p }
      - { type: ftp, path: /ok.txt, expect_body: "^ok" }
      - { type: ldap, login: "cn=a", password: x, base: "dc=b", expect_dn: "^dc" }
      - { type: mysql, login: u, database: d, query: SELECT 2 }
      - { type: pgsql, login: u }
      - { type: sip, uri: "sip:a@b", transport: tcp }
      - { type: radius, secret: s, login: u, password: p }
      - { type: nntp }
      - type: tcp
        steps:
          - send: "PING\r\n"
          - expect: "+PONG"
          - send_hex: "00ff"
          - expect_hex: "01 02"
          - expect_regex: "ok$"
    real_servers: []
"#;
        let c = Config::parse(text, "t").unwrap();
        let yaml = c.to_yaml();
        let back = Config::parse(&yaml, "written").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(back, c, "\n{yaml}");
        // Defaults are not written out.
        assert_eq!(yaml.matches("helo_name").count(), 1, "{yaml}");
        assert!(!yaml.contains("SELECT 1"), "{yaml}");
        // The secrets are redacted when shown without the token.
        let shown = c.redacted().to_yaml();
        for secret in ["password: p", "password: x", "secret: s"] {
            assert!(!shown.contains(secret), "{secret}:\n{shown}");
        }
        let mut sent = Config::parse(&shown, "shown").unwrap().services.remove(0);
        sent.keep_secrets(Some(&c.services[0])).unwrap();
        assert_eq!(sent, c.services[0]);
    }

    #[test]
    fn a_service_alone_is_checked_and_placed_in_its_own_text() {
        let c = Config::parse("global: { timeouts: { tcp: 10s } }", "t").unwrap();
        let s = c
            .parse_service(
                r#"{"name": "x", "listen": "127.0.0.1:1", "real_servers": [{"address": "127.0.0.1:2"}]}"#,
                "body",
            )
            .unwrap();
        assert_eq!(s.timeouts.tcp, Duration::from_secs(10), "inherits global");
        let e = c
            .parse_service("name: x\nlisten: 127.0.0.1:1\nscheduler: nope\n", "body")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("body:3:12: scheduler: unknown scheduler \"nope\""),
            "{e}"
        );
        // Relations are checked when the service joins the others.
        let mut services = vec![s.clone(), s];
        services[1].listen = vec!["127.0.0.1:3".parse().unwrap()];
        let e = c.with_services(services).unwrap_err().to_string();
        assert!(e.contains("service name \"x\" is already used"), "{e}");
    }
}
