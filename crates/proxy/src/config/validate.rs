//! From the raw tree to a checked [`Config`]: defaults, then every relation
//! between values. Problems carry the path of what is wrong; [`parse`] places
//! them on their line and column.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rvs_sched::{DestParams, SchedFlag, SchedFlags, SchedulerKind, ServiceConfig};

use super::locate::Positions;
use super::raw::{RawConfig, RawProto, RawProxyVersion, RawService, RawTimeouts};
use super::values::DurOrOff;
use super::{
    Acl, Config, Discovery, DnsSettings, Global, Problem, Proto, ProxyVersion, RealServerSpec,
    ServiceSpec, Target, TcpOptions, Timeouts, UdpSettings,
};

/// Defaults, as ipvsadm's where it has one.
pub(crate) mod defaults {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
    use std::time::Duration;

    pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    /// The admin listener: loopback, so that only this host reaches it.
    pub(crate) const ADMIN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9180));
    pub(crate) const CONNECT_RETRIES: u32 = 2;
    pub(crate) const MAX_SESSIONS: u32 = 65_536;
    pub(crate) const MAX_RETRIES: u32 = 32;
    /// ipvsadm refuses weights above 65535.
    pub(crate) const MAX_WEIGHT: i64 = 65_535;
}

/// A problem not yet placed: the path of what is wrong and whether the key
/// (rather than the value) is at fault.
pub(crate) struct At {
    pub(crate) path: String,
    pub(crate) key: bool,
    pub(crate) reason: String,
}

pub(crate) fn at(path: impl Into<String>, reason: impl Into<String>) -> At {
    At {
        path: path.into(),
        key: false,
        reason: reason.into(),
    }
}

/// Parses and checks `text`.
pub(crate) fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let raw: RawConfig = deserialize(text)?;
    let mut problems = Vec::new();
    let config = check(raw, &mut problems);
    place(text, problems).map(|()| config)
}

/// Parses and checks one service alone (as the admin API receives it),
/// its timeouts defaulting to `inherited`.
pub(crate) fn parse_service(text: &str, inherited: &Global) -> Result<ServiceSpec, Vec<Problem>> {
    let raw: RawService = deserialize(text)?;
    let mut problems = Vec::new();
    let spec = service(raw, "", inherited, &mut problems);
    for p in &mut problems {
        p.path = p.path.trim_start_matches('.').to_owned();
    }
    place(text, problems).map(|()| spec)
}

/// serde's half: the text into raw types, or the one error placed. Deep
/// nesting is refused first, in one linear pass (`depth`).
fn deserialize<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Vec<Problem>> {
    if let Err((line, column)) = super::depth::check(text) {
        return Err(vec![Problem {
            line,
            column,
            reason: format!(
                "nested deeper than {} levels: refused before parsing (a configuration needs about 8)",
                super::depth::MAX_DEPTH
            ),
        }]);
    }
    // A file that reads is read once, without the path tracking that only
    // an error needs (a third of the parse at 1000 services); one that does
    // not is read again, tracking the path, to say where.
    if let Ok(raw) = T::deserialize(serde_yaml::Deserializer::from_str(text)) {
        return Ok(raw);
    }
    let de = serde_yaml::Deserializer::from_str(text);
    match serde_path_to_error::deserialize(de) {
        Ok(raw) => Ok(raw),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let positions = Positions::of(text);
            let message = bare_message(&inner);
            let unknown = message.starts_with("unknown field");
            // A YAML syntax error: serde_yaml's own position is the exact one.
            let syntax = message.contains("while scanning") || message.contains("while parsing");
            let own = inner.location().map(|l| super::locate::Pos {
                line: l.line(),
                column: l.column(),
            });
            let pos = if syntax {
                own
            } else {
                positions.find(&path, unknown).or(own)
            }
            .unwrap_or(super::locate::Pos { line: 1, column: 1 });
            // What the message quotes of the file is kept to keys and
            // plain values: a file read by mistake (`rvs check -c
            // /etc/shadow`) is never echoed.
            let top = path.is_empty() || path == ".";
            let message = if top && message.starts_with("invalid type: ") {
                let found = message["invalid type: ".len()..]
                    .split([' ', ','])
                    .next()
                    .unwrap_or("something else");
                format!(
                    "not a configuration: a mapping of keys (global, admin, services) was expected, and the file holds a {found}"
                )
            } else {
                crate::quote::scrub(&message)
            };
            let reason = if syntax || top {
                message
            } else if crate::quote::is_path(&path) {
                format!("{path}: {message}")
            } else {
                format!("(a key not quoted): {message}")
            };
            Err(vec![Problem {
                line: pos.line,
                column: pos.column,
                reason,
            }])
        }
    }
}

/// Places the problems found in `text`, in file order.
fn place(text: &str, problems: Vec<At>) -> Result<(), Vec<Problem>> {
    if problems.is_empty() {
        return Ok(());
    }
    let positions = Positions::of(text);
    let mut placed: Vec<Problem> = problems
        .into_iter()
        .map(|p| {
            let pos = positions
                .find(&p.path, p.key)
                .unwrap_or(super::locate::Pos { line: 1, column: 1 });
            Problem {
                line: pos.line,
                column: pos.column,
                reason: format!("{}: {}", p.path, p.reason),
            }
        })
        .collect();
    placed.sort_by_key(|p| (p.line, p.column));
    Err(placed)
}

/// serde_yaml's message without its own (rough) path prefix and position
/// suffix, which this module replaces with exact ones.
fn bare_message(e: &serde_yaml::Error) -> String {
    let mut s = e.to_string();
    if let Some(i) = s.rfind(" at line ") {
        s.truncate(i);
    }
    match s.split_once(": ") {
        Some((p, rest)) if !p.contains(' ') && !p.is_empty() => rest.to_owned(),
        _ => s,
    }
}

fn check(raw: RawConfig, problems: &mut Vec<At>) -> Config {
    let global = Global {
        shutdown_grace: raw
            .global
            .shutdown_grace
            .map_or(defaults::SHUTDOWN_GRACE, |d| d.0),
        access_log: raw.global.access_log,
        timeouts: timeouts(
            &raw.global.timeouts,
            &Timeouts::DEFAULT,
            "global.timeouts",
            problems,
        ),
        dns: dns(raw.global.dns.unwrap_or_default(), problems),
        expire_nodest_conn: raw.global.expire_nodest_conn,
        expire_quiescent_template: raw.global.expire_quiescent_template,
        tcp: super::tcp_options::options(
            raw.global.tcp_keepalive,
            raw.global.tcp_user_timeout,
            &TcpOptions::default(),
            "global",
            problems,
        ),
        sync: super::sync::settings(
            super::sync::RawSync {
                daemons: raw.global.sync_daemon,
                threshold: raw.global.sync_threshold,
                period: raw.global.sync_period,
                refresh_period: raw.global.sync_refresh_period,
                retries: raw.global.sync_retries,
            },
            problems,
        ),
    };
    let admin = super::admin::admin(raw.admin, problems);
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut services = Vec::with_capacity(raw.services.len());
    for (i, s) in raw.services.into_iter().enumerate() {
        let base = format!("services[{i}]");
        if let Some(first) = names.insert(s.name.clone(), i) {
            problems.push(at(
                format!("{base}.name"),
                format!(
                    "service name {:?} is already used by services[{first}]",
                    s.name
                ),
            ));
        }
        let mut spec = service(s, &base, &global, problems);
        spec.sched.expire_quiescent_template = global.expire_quiescent_template;
        services.push(spec);
    }
    super::matching::shared_addresses(&services, problems);
    Config {
        global,
        admin,
        services,
    }
}

/// `services[].per_source`.
fn per_source(p: super::raw::RawPerSource, base: &str, problems: &mut Vec<At>) -> super::PerSource {
    if p.max_connections == Some(0) {
        problems.push(at(
            format!("{base}.max_connections"),
            "must be 1 or more (leave it out for no limit)",
        ));
    }
    let rate = p.rate;
    if let Some(r) = rate
        && !(r.is_finite() && r > 0.0)
    {
        problems.push(at(
            format!("{base}.rate"),
            "must be above 0: new connections per second",
        ));
    }
    if p.burst.is_some() && rate.is_none() {
        problems.push(At {
            path: format!("{base}.burst"),
            key: true,
            reason: "burst goes with rate".into(),
        });
    }
    let burst = p
        .burst
        .unwrap_or_else(|| rate.map_or(1, |r| r.ceil().max(1.0) as u32));
    if burst == 0 {
        problems.push(at(format!("{base}.burst"), "must be 1 or more"));
    }
    let prefix_v4 = p.prefix_v4.unwrap_or(32);
    if !(1..=32).contains(&prefix_v4) {
        problems.push(at(format!("{base}.prefix_v4"), "must be 1 to 32"));
    }
    let prefix_v6 = p.prefix_v6.unwrap_or(64);
    if !(1..=128).contains(&prefix_v6) {
        problems.push(at(format!("{base}.prefix_v6"), "must be 1 to 128"));
    }
    let max_sources = p.max_sources.unwrap_or(65_536);
    if max_sources == 0 {
        problems.push(at(format!("{base}.max_sources"), "must be 1 or more"));
    }
    if p.max_connections.is_none() && rate.is_none() {
        problems.push(at(base.to_owned(), "give max_connections, rate, or both"));
    }
    super::PerSource {
        max_connections: p.max_connections,
        rate,
        burst: burst.max(1),
        prefix_v4: prefix_v4.clamp(1, 32),
        prefix_v6: prefix_v6.clamp(1, 128),
        max_sources: max_sources.max(1),
    }
}

/// `global.dns`.
fn dns(raw: super::raw::RawDns, problems: &mut Vec<At>) -> DnsSettings {
    let d = DnsSettings::default();
    let resolvers: Vec<SocketAddr> = raw
        .resolvers
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.0)
        .collect();
    let at_least = |v: Option<super::values::Dur>,
                    def: Duration,
                    min: Duration,
                    key: &str,
                    problems: &mut Vec<At>| {
        let v = v.map_or(def, |v| v.0);
        if v < min {
            problems.push(at(
                format!("global.dns.{key}"),
                format!("must be at least {}", super::values::Dur(min)),
            ));
        }
        v.max(min)
    };
    DnsSettings {
        resolvers,
        interval: at_least(
            raw.interval,
            d.interval,
            Duration::from_millis(100),
            "interval",
            problems,
        ),
        hold_nx: raw.hold_nx.map_or(d.hold_nx, |v| v.0),
        timeout: at_least(
            raw.timeout,
            d.timeout,
            Duration::from_millis(10),
            "timeout",
            problems,
        ),
    }
}

/// A host name as DNS has it: labels of letters, digits, `-` and `_`,
/// dot-separated, an optional final dot.
fn host_name(name: &str) -> Result<(), String> {
    if name.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{name:?} is an address, not a name: write it as address: IP:PORT"
        ));
    }
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() || bare.len() > 253 {
        return Err(format!("{name:?} is not a host name"));
    }
    for label in bare.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!(
                "{name:?} is not a host name: labels of letters, digits, '-' and '_', separated by dots"
            ));
        }
    }
    Ok(())
}

/// `dns: NAME:PORT`.
fn dns_target(text: &str) -> Result<Target, String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "{text:?} has no port: write NAME:PORT, as web.default.svc.cluster.local:8080"
        ));
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("{port:?} is not a port (1 to 65535)")),
    };
    host_name(host)?;
    Ok(Target::Dns {
        host: host.to_owned(),
        port,
    })
}

/// Timeouts as written, each one absent taken from `inherited`.
fn timeouts(t: &RawTimeouts, inherited: &Timeouts, base: &str, problems: &mut Vec<At>) -> Timeouts {
    let path = |k: &str| format!("{base}.{k}");
    Timeouts {
        connect: positive(t.connect, inherited.connect, path("connect"), problems),
        tcp: positive(t.tcp, inherited.tcp, path("tcp"), problems),
        tcpfin: positive(t.tcpfin, inherited.tcpfin, path("tcpfin"), problems),
        udp: positive(t.udp, inherited.udp, path("udp"), problems),
        proxy_header: positive(
            t.proxy_header,
            inherited.proxy_header,
            path("proxy_header"),
            problems,
        ),
        client_first_byte: match t.client_first_byte {
            None => inherited.client_first_byte,
            Some(DurOrOff::Off) => None,
            Some(DurOrOff::Dur(d)) => Some(positive(
                Some(d),
                Duration::from_secs(1),
                path("client_first_byte"),
                problems,
            )),
        },
        client_hello: positive(
            t.client_hello,
            inherited.client_hello,
            path("client_hello"),
            problems,
        ),
    }
}

fn positive(
    d: Option<super::Dur>,
    default: Duration,
    path: String,
    problems: &mut Vec<At>,
) -> Duration {
    match d {
        None => default,
        Some(d) if d.0.is_zero() => {
            problems.push(at(path, "must be longer than 0"));
            default
        }
        Some(d) => d.0,
    }
}

fn service(
    mut s: RawService,
    base: &str,
    inherited: &Global,
    problems: &mut Vec<At>,
) -> ServiceSpec {
    let health = super::health::service(&mut s, base, problems);
    let name_ok = !s.name.is_empty()
        && s.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !name_ok {
        problems.push(at(
            format!("{base}.name"),
            format!(
                "{:?} is not a service name: use letters, digits, '_', '-' and '.'",
                s.name
            ),
        ));
    }
    if s.listen.0.is_empty() {
        problems.push(at(format!("{base}.listen"), "needs at least one address"));
    }
    let proto = match s.proto {
        None | Some(RawProto::Tcp) => Proto::Tcp,
        Some(RawProto::Udp) => Proto::Udp,
    };
    let scheduler = match s.scheduler.as_deref() {
        None => SchedulerKind::Wlc,
        Some(name) => name.parse().unwrap_or_else(|_| {
            let names: Vec<&str> = SchedulerKind::ALL.iter().map(|k| k.name()).collect();
            problems.push(at(
                format!("{base}.scheduler"),
                format!(
                    "unknown scheduler {name:?}: expected one of {}",
                    names.join(", ")
                ),
            ));
            SchedulerKind::Wlc
        }),
    };
    let mut flags = Vec::new();
    for (j, f) in s.flags.iter().enumerate() {
        match f.parse::<SchedFlag>() {
            Ok(flag) if flag.scheduler() == scheduler => flags.push(flag),
            Ok(flag) => problems.push(at(
                format!("{base}.flags[{j}]"),
                format!("flag {flag} belongs to {}, not to {scheduler}", flag.scheduler()),
            )),
            Err(_) => problems.push(at(
                format!("{base}.flags[{j}]"),
                format!("unknown scheduler flag {f:?}: expected sh-fallback, sh-port, mh-fallback or mh-port"),
            )),
        }
    }
    let flags = SchedFlags::for_scheduler(scheduler, flags).unwrap_or_default();
    let (persistence, persistence_spec) =
        super::persistence::persistence(s.persistence, proto, base, problems);
    let timeouts = timeouts(
        &s.timeouts,
        &inherited.timeouts,
        &format!("{base}.timeouts"),
        problems,
    );
    let connect_retries = s.connect_retries.unwrap_or(defaults::CONNECT_RETRIES);
    if connect_retries > defaults::MAX_RETRIES {
        problems.push(at(
            format!("{base}.connect_retries"),
            format!(
                "{connect_retries} is too many: at most {}",
                defaults::MAX_RETRIES
            ),
        ));
    }
    if s.max_connections == Some(0) {
        problems.push(at(
            format!("{base}.max_connections"),
            "must be 1 or more (leave it out for no limit)",
        ));
    }
    let tcp_only = |key: &str, set: bool, problems: &mut Vec<At>| {
        if set && proto == Proto::Udp {
            problems.push(At {
                path: format!("{base}.{key}"),
                key: true,
                reason: "only TCP services have this".into(),
            });
        }
    };
    if proto == Proto::Udp && s.proxy_protocol == Some(RawProxyVersion::V1) {
        problems.push(at(
            format!("{base}.proxy_protocol"),
            "v1 cannot carry UDP: a UDP service sends v2",
        ));
    }
    tcp_only("max_connections", s.max_connections.is_some(), problems);
    tcp_only("tcp_keepalive", s.tcp_keepalive.is_some(), problems);
    tcp_only("tcp_user_timeout", s.tcp_user_timeout.is_some(), problems);
    let tcp = super::tcp_options::options(
        s.tcp_keepalive.take(),
        s.tcp_user_timeout.take(),
        &inherited.tcp,
        base,
        problems,
    );
    let per_source = s
        .per_source
        .map(|p| per_source(p, &format!("{base}.per_source"), problems));
    if s.udp.is_some() && proto == Proto::Tcp {
        problems.push(At {
            path: format!("{base}.udp"),
            key: true,
            reason: "only UDP services (proto: udp) have this".into(),
        });
    }
    let udp = s.udp.unwrap_or_default();
    let max_sessions = udp.max_sessions.unwrap_or(defaults::MAX_SESSIONS);
    if max_sessions == 0 {
        problems.push(at(format!("{base}.udp.max_sessions"), "must be 1 or more"));
    }
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    let mut targets: HashMap<Target, usize> = HashMap::new();
    let mut real_servers = Vec::with_capacity(s.real_servers.len());
    let mut discovery = Vec::new();
    for (j, r) in s.real_servers.into_iter().enumerate() {
        let rbase = format!("{base}.real_servers[{j}]");
        let named = [
            ("address", r.address.is_some()),
            ("dns", r.dns.is_some()),
            ("srv", r.srv.is_some()),
        ];
        let given: Vec<&str> = named.iter().filter(|(_, g)| *g).map(|(k, _)| *k).collect();
        if given.len() != 1 {
            problems.push(at(
                rbase.clone(),
                if given.is_empty() {
                    "a real server needs address: IP:PORT, dns: NAME:PORT or srv: _service._proto.NAME".to_owned()
                } else {
                    format!("give one of address, dns and srv, not {}", given.join(" and "))
                },
            ));
            continue;
        }
        let target = if let Some(d) = &r.dns {
            match dns_target(d) {
                Ok(t) => Some(t),
                Err(e) => {
                    problems.push(at(format!("{rbase}.dns"), e));
                    continue;
                }
            }
        } else if let Some(name) = &r.srv {
            if let Err(e) = host_name(name) {
                problems.push(at(format!("{rbase}.srv"), e));
                continue;
            }
            if r.weight.is_some() {
                problems.push(At {
                    path: format!("{rbase}.weight"),
                    key: true,
                    reason: "an srv entry takes each server's weight from its record".into(),
                });
            }
            Some(Target::Srv { name: name.clone() })
        } else {
            None
        };
        let address = match (&target, &r.address) {
            (_, Some(a)) => a.0,
            (Some(Target::Dns { port, .. }), None) => {
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), *port)
            }
            _ => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
        };
        if target.is_none()
            && let Some(first) = seen.insert(address, j)
        {
            problems.push(at(
                format!("{rbase}.address"),
                format!("{address} is already real_servers[{first}]"),
            ));
        }
        if let Some(t) = &target
            && let Some(first) = targets.insert(t.clone(), j)
        {
            let key = if r.dns.is_some() { "dns" } else { "srv" };
            problems.push(at(
                format!("{rbase}.{key}"),
                format!("{t} is already real_servers[{first}]"),
            ));
        }
        let weight = r.weight.unwrap_or(1);
        if !(0..=defaults::MAX_WEIGHT).contains(&weight) {
            problems.push(at(
                format!("{rbase}.weight"),
                format!(
                    "{weight} is out of range: 0 (quiescent) to {}",
                    defaults::MAX_WEIGHT
                ),
            ));
        }
        let params = DestParams {
            weight: weight.clamp(0, defaults::MAX_WEIGHT) as i32,
            u_threshold: r.u_threshold.unwrap_or(0),
            l_threshold: r.l_threshold.unwrap_or(0),
        };
        if params.l_threshold > params.u_threshold {
            problems.push(at(
                format!("{rbase}.l_threshold"),
                format!(
                    "{} is above u_threshold {} (a lower threshold needs an upper one above it)",
                    params.l_threshold, params.u_threshold
                ),
            ));
        }
        let checks = super::health::checks(r.health_check, r.health_checks, &rbase, problems);
        let spec = RealServerSpec {
            address,
            params,
            checks,
            alpha: r.alpha,
            inhibit_on_failure: r.inhibit_on_failure,
            discovered: None,
        };
        match target {
            Some(target) => discovery.push(Discovery {
                target,
                template: spec,
                position: j,
            }),
            None => real_servers.push(spec),
        }
    }
    ServiceSpec {
        matching: super::matching::service(s.matching, base, problems),
        name: s.name,
        listen: s.listen.0,
        proto,
        sched: ServiceConfig {
            scheduler,
            flags,
            persistence,
            seed: 0,
            // The global setting, set by the caller.
            expire_quiescent_template: false,
        },
        persistence: persistence_spec,
        timeouts,
        tcp,
        connect_retries,
        max_connections: s.max_connections,
        per_source,
        proxy_protocol: s.proxy_protocol.map(|v| match v {
            RawProxyVersion::V1 => ProxyVersion::V1,
            RawProxyVersion::V2 => ProxyVersion::V2,
        }),
        accept_proxy_protocol: s.accept_proxy_protocol,
        acl: Acl {
            allow: s.allow.into_iter().map(|c| c.0).collect(),
            deny: s.deny.into_iter().map(|c| c.0).collect(),
        },
        health,
        udp: UdpSettings {
            ops: udp.ops,
            proxy_protocol_every: udp.proxy_protocol_every.unwrap_or(true),
            max_sessions: max_sessions.max(1) as usize,
        },
        real_servers,
        discovery,
    }
}

#[cfg(test)]
pub(super) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::{Config, ConfigError};

    /// The problems of `text`, as `rvs check` prints them for rvs.yaml.
    pub(in crate::config) fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, "rvs.yaml") {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(|p| format!("rvs.yaml:{p}")).collect()
            }
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn health_settings_are_checked_key_by_key() {
        let text = "\
services:
  - name: a
    listen: 127.0.0.1:1
    health_check: { type: tcp, path: /x }
    passive: { failures: 0 }
    real_servers:
      - address: 127.0.0.1:2
        health_check: { type: misc }
      - address: 127.0.0.1:3
        health_checks:
          - { type: http, status: [200, 700] }
          - { type: http, digest: xyz }
          - { type: dns, query_type: PTR }
          - { type: gopher }
";
        // A value serde cannot read stops there, with its position.
        assert_eq!(
            errors(text),
            [
                "rvs.yaml:11:41: services[0].real_servers[1].health_checks[0].status[1]: \"700\" is not a status code or range, as 200 or \"200-299\"",
            ]
        );
        // Once it reads, every other problem is found.
        let text = text.replace("[200, 700]", "[200, \"500-599\"]");
        assert_eq!(
            errors(&text),
            [
                "rvs.yaml:4:32: services[0].health_check.path: only http, https and ftp checks have this",
                "rvs.yaml:5:26: services[0].passive.failures: must be 1 or more",
                "rvs.yaml:8:9: services[0].real_servers[0].health_check: a misc check needs command: the program and its arguments, as a list",
                "rvs.yaml:12:35: services[0].real_servers[1].health_checks[1].digest: \"xyz\" is not an MD5 digest: 32 hex digits",
                "rvs.yaml:13:38: services[0].real_servers[1].health_checks[2].query_type: \"PTR\" is not a query type rvs asks: A, NS, CNAME, SOA, MX, TXT, AAAA",
                "rvs.yaml:14:21: services[0].real_servers[1].health_checks[3].type: unknown check type \"gopher\": expected tcp, http, https, misc, udp, dns, smtp, pop, imap, nntp, ftp, ldap, mysql, pgsql, sip or radius",
            ]
        );
    }

    #[test]
    fn http_checks_take_a_body_pattern_and_a_method() {
        let text = "\
services:
  - name: a
    listen: 127.0.0.1:1
    real_servers:
      - address: 127.0.0.1:3
        health_checks:
          - { type: http, expect_body: \"status: (ok|degraded\" }
          - { type: http, method: head, expect_body: ok }
          - { type: http, method: HEAD, expect_body: ok }
          - { type: tcp, expect_body: ok, method: POST }
          - { type: https, expect_body: \"^\\\\{.*\\\"up\\\": *true\", method: POST }
";
        assert_eq!(
            errors(text),
            [
                "rvs.yaml:7:40: services[0].real_servers[0].health_checks[0].expect_body: \"status: (ok|degraded\" is not a regular expression: unclosed group (at character 9)",
                "rvs.yaml:8:35: services[0].real_servers[0].health_checks[1].method: \"head\" is not an HTTP method: capital letters, as GET, HEAD or POST",
                "rvs.yaml:9:35: services[0].real_servers[0].health_checks[2].method: an answer to HEAD has no body: expect_body and digest need another method",
                "rvs.yaml:10:26: services[0].real_servers[0].health_checks[3].expect_body: only http, https and ftp checks have this",
                "rvs.yaml:10:43: services[0].real_servers[0].health_checks[3].method: only http and https checks have this",
            ]
        );
        // The good one, read and written back.
        let good = "services:\n  - name: a\n    listen: 127.0.0.1:1\n    real_servers:\n      - address: 127.0.0.1:3\n        health_check: { type: https, expect_body: \"\\\"up\\\": *true\", method: POST }\n";
        let c = Config::parse(good, "rvs.yaml").unwrap();
        let back = Config::parse(&c.to_yaml(), "back.yaml").unwrap();
        assert_eq!(back, c);
        let yaml = c.to_yaml();
        assert!(
            yaml.contains("expect_body:") && yaml.contains("method: POST"),
            "{yaml}"
        );
        // Matched as bytes, classes and case folding in ASCII, other text
        // as its UTF-8 bytes.
        for (re, body, matches) in [
            (r"load: \d+", "load: 42", true),
            (r"(?i)^status:\s*OK$", "Status: ok", true),
            ("état: prêt", "{\"état: prêt\"}", true),
            (r"\w+=\w+", "a=b", true),
            (r"^ok$", "ok\n", false),
        ] {
            let text = format!(
                "services:\n  - name: a\n    listen: 127.0.0.1:1\n    real_servers:\n      - address: 127.0.0.1:3\n        health_check: {{ type: http, expect_body: '{re}' }}\n"
            );
            let c = Config::parse(&text, "rvs.yaml").unwrap();
            let checks = c.services[0].real_servers[0].checks.as_ref().unwrap();
            let super::super::CheckKind::Http(h) = &checks[0].kind else {
                panic!("{checks:?}");
            };
            let p = h.expect_body.as_ref().unwrap();
            assert_eq!(p.0.is_match(body.as_bytes()), matches, "{re} on {body:?}");
        }
    }

    const GOOD: &str = "\
services:
  - name: web
    listen: 127.0.0.1:8080
    scheduler: wrr
    real_servers:
      - address: 127.0.0.1:18081
        weight: 1
      - address: 127.0.0.1:18082
        weight: 2
";

    #[test]
    fn a_good_file_with_defaults() {
        let c = Config::parse(GOOD, "rvs.yaml").unwrap();
        let s = &c.services[0];
        assert_eq!(s.sched.scheduler, rvs_sched::SchedulerKind::Wrr);
        assert_eq!(s.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(s.real_servers[1].params.weight, 2);
        assert_eq!(s.timeouts.tcp.as_secs(), 900);
        assert_eq!(s.connect_retries, 2);
        assert_eq!(c.global.shutdown_grace.as_secs(), 30);
    }

    #[test]
    fn errors_are_placed_on_their_line_and_column() {
        assert_eq!(
            errors(&GOOD.replace("weight: 2", "weight: -2")),
            [
                "rvs.yaml:9:17: services[0].real_servers[1].weight: -2 is out of range: 0 (quiescent) to 65535"
            ]
        );
        assert_eq!(
            errors(&GOOD.replace("weight: 2", "wieght: 2")),
            [
                "rvs.yaml:9:9: services[0].real_servers[1].wieght: unknown field `wieght`, expected one of `address`, `dns`, `srv`, `weight`, `u_threshold`, `l_threshold`, `health_check`, `health_checks`, `alpha`, `inhibit_on_failure`"
            ]
        );
        assert_eq!(
            errors(&GOOD.replace("listen: 127.0.0.1:8080", "listen: 127.0.0.1")),
            [
                "rvs.yaml:3:13: services[0].listen: \"127.0.0.1\" is not an address: write IP:PORT, or [IPv6]:PORT"
            ]
        );
        assert_eq!(
            errors(&GOOD.replace("scheduler: wrr", "scheduler: wrrr")),
            [
                "rvs.yaml:4:16: services[0].scheduler: unknown scheduler \"wrrr\": expected one of rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos"
            ]
        );
        assert_eq!(
            errors(&GOOD.replace(
                "        weight: 1\n",
                "        u_threshold: 2\n        l_threshold: 3\n"
            )),
            [
                "rvs.yaml:8:22: services[0].real_servers[0].l_threshold: 3 is above u_threshold 2 (a lower threshold needs an upper one above it)"
            ]
        );
        assert_eq!(
            errors("services:\n  - name: a\n    listen: 127.0.0.1:1\n    timeouts: {tcp: 90}\n"),
            [
                "rvs.yaml:4:21: services[0].timeouts.tcp: 90 needs to be written as a duration with a unit, as \"300s\" or \"5m\""
            ]
        );
        assert_eq!(
            errors("services:\n  - listen: 127.0.0.1:1\n"),
            ["rvs.yaml:2:5: services[0]: missing field `name`"]
        );
        let syntax = errors("services:\n  - name: \"unterminated\n");
        assert_eq!(syntax.len(), 1);
        assert_eq!(
            syntax,
            [
                "rvs.yaml:3:1: found unexpected end of stream at line 3 column 1, while scanning a quoted scalar"
            ]
        );
    }

    #[test]
    fn a_service_turns_off_what_global_turns_on() {
        let text = "global:\n  timeouts: {client_first_byte: 10s}\nservices:\n  - name: web\n    listen: 127.0.0.1:1\n  - name: smtp\n    listen: 127.0.0.1:2\n    timeouts: {client_first_byte: off}\n";
        let c = Config::parse(text, "t").unwrap();
        assert_eq!(
            c.services[0].timeouts.client_first_byte,
            Some(std::time::Duration::from_secs(10))
        );
        assert_eq!(c.services[1].timeouts.client_first_byte, None);
        // Written back as read, `off` included.
        let yaml = c.to_yaml();
        assert!(yaml.contains("client_first_byte: off"), "{yaml}");
        assert_eq!(Config::parse(&yaml, "t").unwrap().services, c.services);
        assert_eq!(
            errors(&text.replace("client_first_byte: off", "client_first_byte: never")),
            [
                "rvs.yaml:8:35: services[1].timeouts.client_first_byte: \"never\" is not a duration: write a number and a unit (ms, s, m, h, d), as \"300s\", \"5m\" or \"1h30m\", or off"
            ]
        );
    }

    #[test]
    fn relations_between_services_are_checked() {
        let two = format!("{GOOD}{}", GOOD.replace("services:\n", ""));
        assert_eq!(
            errors(&two),
            [
                "rvs.yaml:10:11: services[1].name: service name \"web\" is already used by services[0]",
                "rvs.yaml:11:13: services[1].listen[0]: tcp 127.0.0.1:8080 is also the address of service \"web\", which has no match either: services that share an address need a match each, but one (the default)"
            ]
        );
        // TCP and UDP may share an address.
        let udp = two.replacen(
            "  - name: web\n    listen",
            "  - name: dns\n    proto: udp\n    listen",
            1,
        );
        assert_eq!(errors(&udp), Vec::<String>::new());
        let flags = GOOD.replace("scheduler: wrr", "scheduler: wrr\n    flags: [sh-port]");
        assert_eq!(
            errors(&flags),
            ["rvs.yaml:5:13: services[0].flags[0]: flag sh-port belongs to sh, not to wrr"]
        );
        let udp_proxy = GOOD.replace("scheduler: wrr", "proto: udp\n    proxy_protocol: v1");
        assert_eq!(
            errors(&udp_proxy),
            [
                "rvs.yaml:5:21: services[0].proxy_protocol: v1 cannot carry UDP: a UDP service sends v2"
            ]
        );
        let v2 = GOOD.replace("scheduler: wrr", "proto: udp\n    proxy_protocol: v2");
        assert_eq!(errors(&v2), Vec::<String>::new());
    }

    #[test]
    fn discovery_entries_are_checked() {
        let e = errors(
            "services:\n  - name: s\n    listen: 127.0.0.1:1\n    real_servers:\n      - dns: web.test\n      - dns: \"bad name!:80\"\n      - { address: 127.0.0.1:7, srv: _x._tcp.test }\n      - { srv: _x._tcp.test, weight: 2 }\n      - { weight: 2 }\n      - dns: 10.0.0.1:80\n      - dns: a.test:80\n      - dns: a.test:80\n",
        );
        assert_eq!(
            e,
            [
                "rvs.yaml:5:14: services[0].real_servers[0].dns: \"web.test\" has no port: write NAME:PORT, as web.default.svc.cluster.local:8080",
                "rvs.yaml:6:14: services[0].real_servers[1].dns: \"bad name!\" is not a host name: labels of letters, digits, '-' and '_', separated by dots",
                "rvs.yaml:7:9: services[0].real_servers[2]: give one of address, dns and srv, not address and srv",
                "rvs.yaml:8:30: services[0].real_servers[3].weight: an srv entry takes each server's weight from its record",
                "rvs.yaml:9:9: services[0].real_servers[4]: a real server needs address: IP:PORT, dns: NAME:PORT or srv: _service._proto.NAME",
                "rvs.yaml:10:14: services[0].real_servers[5].dns: \"10.0.0.1\" is an address, not a name: write it as address: IP:PORT",
                "rvs.yaml:12:14: services[0].real_servers[7].dns: dns:a.test:80 is already real_servers[6]",
            ]
        );
        let ok = Config::parse("global:\n  dns: { resolvers: [\"127.0.0.1:5353\"], interval: 1s }\n  expire_nodest_conn: true\n  expire_quiescent_template: true\nservices:\n  - name: s\n    listen: 127.0.0.1:1\n    scheduler: rr\n    persistence: { timeout: 60s }\n    real_servers:\n      - address: 127.0.0.1:2\n      - dns: web.test:80\n        weight: 3\n      - srv: _http._tcp.api.test.\n", "t").unwrap();
        let s = &ok.services[0];
        assert_eq!(s.real_servers.len(), 1);
        assert_eq!(s.discovery.len(), 2);
        assert_eq!(s.discovery[0].position, 1);
        assert_eq!(s.discovery[0].template.params.weight, 3);
        assert!(
            s.sched.expire_quiescent_template,
            "the global sysctl reaches the scheduler"
        );
        assert!(ok.global.expire_nodest_conn);
        assert_eq!(
            ok.global.dns.resolvers,
            ["127.0.0.1:5353".parse::<std::net::SocketAddr>().unwrap()]
        );
        assert_eq!(ok.global.dns.interval, std::time::Duration::from_secs(1));
        assert_eq!(
            Config::parse(&ok.to_yaml(), "again").unwrap(),
            ok,
            "written back, read again"
        );
    }
}
