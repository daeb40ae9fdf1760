//! The configuration file as written: serde structs that refuse unknown keys.
//! Values check themselves (`values`); relations between values are
//! checked by `validate`. Defaults are applied there, not here, so
//! that this file says only what the user wrote.

use serde::Deserialize;

use super::values::{Addr, Cidr, Dur, Listen};

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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub(crate) listen: Option<Addr>,
    pub(crate) token: Option<String>,
    pub(crate) token_file: Option<String>,
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
    pub(crate) scheduler: Option<String>,
    #[serde(default)]
    pub(crate) flags: Vec<String>,
    pub(crate) persistence: Option<RawPersistence>,
    #[serde(default)]
    pub(crate) timeouts: RawTimeouts,
    pub(crate) connect_retries: Option<u32>,
    pub(crate) max_connections: Option<u32>,
    pub(crate) proxy_protocol: Option<RawProxyVersion>,
    #[serde(default)]
    pub(crate) accept_proxy_protocol: bool,
    #[serde(default)]
    pub(crate) allow: Vec<Cidr>,
    #[serde(default)]
    pub(crate) deny: Vec<Cidr>,
    pub(crate) udp: Option<RawUdp>,
    #[serde(default)]
    pub(crate) real_servers: Vec<RawRealServer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPersistence {
    pub(crate) timeout: Dur,
    pub(crate) netmask: Option<String>,
    pub(crate) ipv6_prefix: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTimeouts {
    pub(crate) connect: Option<Dur>,
    pub(crate) tcp: Option<Dur>,
    pub(crate) tcpfin: Option<Dur>,
    pub(crate) udp: Option<Dur>,
    pub(crate) proxy_header: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUdp {
    #[serde(default)]
    pub(crate) ops: bool,
    pub(crate) max_sessions: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRealServer {
    pub(crate) address: Addr,
    pub(crate) weight: Option<i64>,
    pub(crate) u_threshold: Option<u32>,
    pub(crate) l_threshold: Option<u32>,
}
