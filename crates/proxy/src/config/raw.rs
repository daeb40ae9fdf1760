//! The configuration file as written: serde structs that refuse unknown keys.
//! Values check themselves (`values`); relations between values are
//! checked by `validate`. Defaults are applied there, not here, so
//! that this file says only what the user wrote.

use serde::Deserialize;

use super::values::{Addr, Arg, Cidr, Dur, DurOrOff, Ip, Listen, ReplyMatch, StatusList};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub(crate) global: RawGlobal,
    #[serde(default)]
    pub(crate) admin: RawAdmin,
    #[serde(default)]
    pub(crate) services: Vec<RawService>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGlobal {
    pub(crate) shutdown_grace: Option<Dur>,
    #[serde(default)]
    pub(crate) access_log: bool,
    #[serde(default)]
    pub(crate) timeouts: RawTimeouts,
    pub(crate) dns: Option<RawDns>,
    #[serde(default)]
    pub(crate) expire_nodest_conn: bool,
    #[serde(default)]
    pub(crate) expire_quiescent_template: bool,
    pub(crate) tcp_keepalive: Option<RawKeepalive>,
    pub(crate) tcp_user_timeout: Option<Dur>,
    #[serde(default)]
    pub(crate) sync_daemon: Vec<super::sync::RawSyncDaemon>,
    pub(crate) sync_threshold: Option<u32>,
    pub(crate) sync_period: Option<u32>,
    pub(crate) sync_refresh_period: Option<Dur>,
    pub(crate) sync_retries: Option<u32>,
}

/// `tcp_keepalive:` as written: `true`/`false`, or its timing.
#[derive(Debug)]
pub(crate) enum RawKeepalive {
    Switch(bool),
    Timing(RawKeepaliveTiming),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKeepaliveTiming {
    pub(crate) idle: Option<Dur>,
    pub(crate) interval: Option<Dur>,
    pub(crate) count: Option<u32>,
}

impl<'de> Deserialize<'de> for RawKeepalive {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RawKeepalive;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, or {idle, interval, count}")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawKeepalive, E> {
                Ok(RawKeepalive::Switch(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawKeepalive, A::Error> {
                RawKeepaliveTiming::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawKeepalive::Timing)
            }
        }
        d.deserialize_any(Visit)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub(crate) resolvers: Option<Vec<Addr>>,
    pub(crate) interval: Option<Dur>,
    pub(crate) hold_nx: Option<Dur>,
    pub(crate) timeout: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub(crate) listen: Option<Addr>,
    pub(crate) token: Option<String>,
    pub(crate) token_file: Option<String>,
    pub(crate) real_server_histograms: Option<bool>,
    pub(crate) allowed_hosts: Option<Vec<String>>,
    pub(crate) max_connections: Option<u32>,
    pub(crate) max_connections_per_source: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawProto {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawProxyVersion {
    V1,
    V2,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub(crate) name: String,
    pub(crate) listen: Listen,
    pub(crate) proto: Option<RawProto>,
    #[serde(rename = "match")]
    pub(crate) matching: Option<RawMatch>,
    pub(crate) scheduler: Option<String>,
    #[serde(default)]
    pub(crate) flags: Vec<String>,
    pub(crate) persistence: Option<RawPersistence>,
    #[serde(default)]
    pub(crate) timeouts: RawTimeouts,
    pub(crate) tcp_keepalive: Option<RawKeepalive>,
    pub(crate) tcp_user_timeout: Option<Dur>,
    pub(crate) connect_retries: Option<u32>,
    pub(crate) max_connections: Option<u32>,
    pub(crate) per_source: Option<RawPerSource>,
    pub(crate) proxy_protocol: Option<RawProxyVersion>,
    #[serde(default)]
    pub(crate) accept_proxy_protocol: bool,
    #[serde(default)]
    pub(crate) allow: Vec<Cidr>,
    #[serde(default)]
    pub(crate) deny: Vec<Cidr>,
    pub(crate) udp: Option<RawUdp>,
    pub(crate) health_check: Option<RawHealthCheck>,
    pub(crate) health_checks: Option<Vec<RawHealthCheck>>,
    pub(crate) alpha: Option<bool>,
    pub(crate) inhibit_on_failure: Option<bool>,
    pub(crate) passive: Option<RawPassive>,
    pub(crate) sorry_server: Option<Addr>,
    pub(crate) quorum: Option<u32>,
    pub(crate) hysteresis: Option<u32>,
    pub(crate) slow_start: Option<Dur>,
    #[serde(default)]
    pub(crate) real_servers: Vec<RawRealServer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPerSource {
    pub(crate) max_connections: Option<u32>,
    pub(crate) rate: Option<f64>,
    pub(crate) burst: Option<u32>,
    pub(crate) prefix_v4: Option<u8>,
    pub(crate) prefix_v6: Option<u8>,
    pub(crate) max_sources: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPassive {
    pub(crate) failures: u32,
}

/// One check as written: the keys of every type side by side; `validate`
/// refuses the keys that do not belong to the check's type.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) delay_loop: Option<Dur>,
    pub(crate) connect_timeout: Option<Dur>,
    pub(crate) retry: Option<u32>,
    pub(crate) delay_before_retry: Option<Dur>,
    pub(crate) warmup: Option<Dur>,
    pub(crate) connect_ip: Option<Ip>,
    pub(crate) connect_port: Option<u16>,
    pub(crate) path: Option<String>,
    pub(crate) status: Option<StatusList>,
    pub(crate) digest: Option<String>,
    pub(crate) expect_body: Option<String>,
    pub(crate) method: Option<String>,
    pub(crate) virtualhost: Option<String>,
    pub(crate) command: Option<Vec<Arg>>,
    pub(crate) timeout: Option<Dur>,
    pub(crate) dynamic: Option<bool>,
    pub(crate) payload: Option<String>,
    pub(crate) require_reply: Option<ReplyMatch>,
    pub(crate) min_reply_length: Option<usize>,
    pub(crate) max_reply_length: Option<usize>,
    pub(crate) name: Option<String>,
    pub(crate) query_type: Option<String>,
    pub(crate) steps: Option<Vec<RawTcpStep>>,
    pub(crate) tls: Option<bool>,
    pub(crate) login: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) database: Option<String>,
    pub(crate) query: Option<String>,
    pub(crate) base: Option<String>,
    pub(crate) expect_dn: Option<String>,
    pub(crate) helo_name: Option<String>,
    pub(crate) secret: Option<String>,
    pub(crate) uri: Option<String>,
    pub(crate) transport: Option<String>,
}

/// One step of a `tcp` check: one of its keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTcpStep {
    pub(crate) send: Option<String>,
    pub(crate) send_hex: Option<String>,
    pub(crate) expect: Option<String>,
    pub(crate) expect_hex: Option<String>,
    pub(crate) expect_regex: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPersistence {
    pub(crate) timeout: Dur,
    pub(crate) netmask: Option<String>,
    pub(crate) ipv6_prefix: Option<u8>,
    pub(crate) scope: Option<RawScope>,
    pub(crate) engine: Option<String>,
    pub(crate) fwmark: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawScope {
    Destination,
    Service,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub(crate) connect: Option<Dur>,
    pub(crate) tcp: Option<Dur>,
    pub(crate) tcpfin: Option<Dur>,
    pub(crate) udp: Option<Dur>,
    pub(crate) proxy_header: Option<Dur>,
    pub(crate) client_first_byte: Option<DurOrOff>,
    pub(crate) client_hello: Option<Dur>,
}

/// `services[].match:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    #[serde(default)]
    pub(crate) sni: Vec<String>,
    #[serde(default)]
    pub(crate) alpn: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUdp {
    #[serde(default)]
    pub(crate) ops: bool,
    pub(crate) max_sessions: Option<u32>,
    pub(crate) proxy_protocol_every: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRealServer {
    pub(crate) address: Option<Addr>,
    pub(crate) dns: Option<String>,
    pub(crate) srv: Option<String>,
    pub(crate) weight: Option<i64>,
    pub(crate) u_threshold: Option<u32>,
    pub(crate) l_threshold: Option<u32>,
    pub(crate) health_check: Option<RawHealthCheck>,
    pub(crate) health_checks: Option<Vec<RawHealthCheck>>,
    pub(crate) alpha: Option<bool>,
    pub(crate) inhibit_on_failure: Option<bool>,
}
