//! Configuration: one YAML file, read and checked whole into a [`Config`] of
//! checked types, or rejected with every problem at `file:line:column`.
//!
//! Layers, as in sozu and pingora: `raw` is what the file says (serde,
//! unknown keys refused); `values` are the self-checking value types;
//! `validate` turns the raw tree into a [`Config`], applying defaults and
//! checking relations (unique names and addresses, thresholds, flags that
//! belong to the scheduler). `locate` places any error on its line and
//! column. serde_yaml is used in this module only.
//!
//! Every key is documented in docs/configuration.md.

mod locate;
mod raw;
mod validate;
mod values;
pub(crate) mod write;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use rvs_sched::DestParams;

use values::Dur;

/// A checked configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Process-wide settings.
    pub global: Global,
    /// The admin listener (metrics, API, status page).
    pub admin: Admin,
    /// The virtual services, in file order.
    pub services: Vec<ServiceSpec>,
}

/// Process-wide settings (`global:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Global {
    /// How long a shutdown waits for connections to finish.
    pub shutdown_grace: Duration,
    /// Log one line per connection when it ends.
    pub access_log: bool,
    /// The timeouts of services that do not set their own (`ipvsadm
    /// --set` changes these and every service's).
    pub timeouts: Timeouts,
}

/// The admin listener (`admin:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The bearer token mutations need, if any.
    pub token: Option<String>,
}

impl Admin {
    /// Whether the API may change anything: with a token always (the token
    /// is checked per request), without one only on a loopback listener.
    pub fn mutations_open_without_token(&self) -> bool {
        self.listen.ip().is_loopback()
    }
}

/// TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP: a connection per client connection.
    Tcp,
    /// UDP: a session per client address and port.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// PROXY protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text header.
    V1,
    /// The binary header.
    V2,
}

/// One virtual service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSpec {
    /// Unique name: letters, digits, `_`, `-`, `.`.
    pub name: String,
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
    /// TCP or UDP.
    pub proto: Proto,
    /// Scheduler, flags and persistence.
    pub sched: rvs_sched::ServiceConfig,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Further servers tried when a connect fails (TCP).
    pub connect_retries: u32,
    /// Connections at once, at most (TCP).
    pub max_connections: Option<u32>,
    /// PROXY protocol header sent to real servers (TCP).
    pub proxy_protocol: Option<ProxyVersion>,
    /// Read a PROXY protocol header from each client first (TCP).
    pub accept_proxy_protocol: bool,
    /// Client networks allowed and denied.
    pub acl: Acl,
    /// UDP settings.
    pub udp: UdpSettings,
    /// Real servers, in file order.
    pub real_servers: Vec<RealServerSpec>,
}

/// Timeouts of a service (`timeouts:`), as `ipvsadm --set tcp tcpfin udp`
/// plus the proxy's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting to a real server.
    pub connect: Duration,
    /// An established TCP connection with no traffic.
    pub tcp: Duration,
    /// A half-closed TCP connection with no traffic.
    pub tcpfin: Duration,
    /// A UDP session with no traffic.
    pub udp: Duration,
    /// Reading the PROXY header of a client.
    pub proxy_header: Duration,
}

impl Timeouts {
    /// The defaults: ipvsadm's for tcp, tcpfin and udp.
    pub const DEFAULT: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        tcp: Duration::from_secs(900),
        tcpfin: Duration::from_secs(120),
        udp: Duration::from_secs(300),
        proxy_header: Duration::from_secs(5),
    };
}

/// Client networks: a client is refused when it is in `deny`, or when
/// `allow` is not empty and it is not in `allow`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    /// Allowed networks; empty allows everyone not denied.
    pub allow: Vec<IpNet>,
    /// Denied networks.
    pub deny: Vec<IpNet>,
}

impl Acl {
    /// Whether a client address may connect.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// UDP settings (`udp:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpSettings {
    /// One-packet scheduling: each datagram scheduled on its own.
    pub ops: bool,
    /// Sessions at once, at most; the idlest is evicted beyond.
    pub max_sessions: usize,
}

/// One real server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealServerSpec {
    /// Its address.
    pub address: SocketAddr,
    /// Weight and thresholds.
    pub params: DestParams,
}

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: {reason}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// The file is not a valid configuration.
    #[error("{}", .problems.iter().map(|p| format!("{file}:{p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        file: String,
        /// Each problem, in file order.
        problems: Vec<Problem>,
    },
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, in plain words.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.reason)
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Checks `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        validate::parse(text).map_err(|problems| ConfigError::Invalid {
            file: file.to_owned(),
            problems,
        })
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Checks one service written as in the file's `services:` list (YAML
    /// or JSON), as the admin API receives it; `source` names it in errors.
    /// Timeouts it leaves out are this configuration's global ones.
    pub fn parse_service(&self, text: &str, source: &str) -> Result<ServiceSpec, ConfigError> {
        validate::parse_service(text, &self.global.timeouts).map_err(|problems| {
            ConfigError::Invalid {
                file: source.to_owned(),
                problems,
            }
        })
    }

    /// This configuration with its services replaced, checked whole as a
    /// file would be (unique names and addresses, every value): how an edit
    /// made through the admin API is accepted or refused.
    pub fn with_services(&self, services: Vec<ServiceSpec>) -> Result<Config, ConfigError> {
        let draft = Config {
            global: self.global.clone(),
            admin: self.admin.clone(),
            services,
        };
        let text = draft.to_yaml();
        let mut checked = Config::parse(&text, "edited configuration")?;
        checked.admin = self.admin.clone();
        Ok(checked)
    }
}
