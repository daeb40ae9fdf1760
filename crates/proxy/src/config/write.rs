//! The way back: a checked [`Config`] written out in the file's own form,
//! so that what runs (edits through the admin API included) can be kept as
//! a file, and read back to the same configuration.
//!
//! Values equal to their default are left out; timeouts equal to the
//! global ones are left out of services. The admin token is never written.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use super::validate::defaults;
use super::values::Dur;
use super::{Config, Proto, ProxyVersion, RealServerSpec, ServiceSpec, Timeouts};

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
}

#[derive(Serialize)]
struct OutAdmin {
    listen: String,
}

/// One service in the configuration file's form (also the admin API's).
#[derive(Serialize)]
pub(crate) struct OutService<'a> {
    name: &'a str,
    listen: Vec<String>,
    proto: &'static str,
    scheduler: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    flags: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistence: Option<OutPersistence>,
    #[serde(skip_serializing_if = "OutTimeouts::is_empty")]
    timeouts: OutTimeouts,
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<u32>,
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
    real_servers: Vec<OutRealServer>,
}

#[derive(Serialize)]
struct OutPersistence {
    timeout: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    netmask: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv6_prefix: Option<u8>,
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
        }
    }

    fn is_empty(&self) -> bool {
        self.connect.is_none()
            && self.tcp.is_none()
            && self.tcpfin.is_none()
            && self.udp.is_none()
            && self.proxy_header.is_none()
    }
}

#[derive(Serialize)]
struct OutUdp {
    #[serde(skip_serializing_if = "is_false")]
    ops: bool,
    max_sessions: usize,
}

#[derive(Serialize)]
struct OutRealServer {
    address: String,
    weight: i32,
    #[serde(skip_serializing_if = "is_zero")]
    u_threshold: u32,
    #[serde(skip_serializing_if = "is_zero")]
    l_threshold: u32,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn duration(d: Duration) -> String {
    Dur(d).to_string()
}

impl<'a> OutService<'a> {
    /// `s` as the file would say it, with timeouts relative to `global`.
    pub(crate) fn new(s: &'a ServiceSpec, global: &Timeouts) -> OutService<'a> {
        let sched = &s.sched;
        OutService {
            name: &s.name,
            listen: s.listen.iter().map(ToString::to_string).collect(),
            proto: match s.proto {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
            },
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
                }
            }),
            timeouts: OutTimeouts::diff(&s.timeouts, global),
            connect_retries: (s.connect_retries != defaults::CONNECT_RETRIES)
                .then_some(s.connect_retries),
            max_connections: s.max_connections,
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
            }),
            real_servers: s.real_servers.iter().map(real_server).collect(),
        }
    }
}

fn real_server(r: &RealServerSpec) -> OutRealServer {
    OutRealServer {
        address: r.address.to_string(),
        weight: r.params.weight,
        u_threshold: r.params.u_threshold,
        l_threshold: r.params.l_threshold,
    }
}

impl Config {
    /// The configuration in the file's form (YAML), without the admin token.
    pub fn to_yaml(&self) -> String {
        let out = OutConfig {
            global: OutGlobal {
                shutdown_grace: duration(self.global.shutdown_grace),
                access_log: self.global.access_log,
                timeouts: OutTimeouts::diff(&self.global.timeouts, &Timeouts::DEFAULT),
            },
            admin: (self.admin.listen != defaults::ADMIN).then(|| OutAdmin {
                listen: self.admin.listen.to_string(),
            }),
            services: self
                .services
                .iter()
                .map(|s| OutService::new(s, &self.global.timeouts))
                .collect(),
        };
        // Serializing plain strings, numbers and lists cannot fail.
        serde_yaml::to_string(&out).unwrap_or_default()
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
    connect_retries: 0
    max_connections: 10
    proxy_protocol: v2
    accept_proxy_protocol: true
    allow: [10.0.0.0/8]
    deny: [10.1.0.0/16, 192.0.2.1]
    real_servers:
      - { address: 127.0.0.2:80, weight: 0, u_threshold: 5, l_threshold: 2 }
      - { address: "[::1]:81", weight: 65535 }
  - name: b
    listen: 127.0.0.1:53
    proto: udp
    scheduler: mh
    udp: { ops: true, max_sessions: 7 }
    real_servers: []
"#;
        let c = Config::parse(text, "t").unwrap();
        let yaml = c.to_yaml();
        assert!(!yaml.contains("secret"), "the token leaked:\n{yaml}");
        let mut back = Config::parse(&yaml, "written").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(back.admin.token, None);
        back.admin.token = c.admin.token.clone();
        assert_eq!(back, c, "\n{yaml}");
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
