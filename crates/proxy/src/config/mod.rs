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

mod admin;
mod check_protocols;
mod depth;
mod health;
mod locate;
mod matching;
mod persistence;
pub(crate) use health::defaults as health_defaults;
mod raw;
mod secrets;
pub mod sync;
mod tcp_options;
pub use secrets::REDACTED;
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
    /// How `dns:` and `srv:` real servers are resolved.
    pub dns: DnsSettings,
    /// IPVS's `expire_nodest_conn`: the flows of a real server that left
    /// the table end (UDP: rescheduled at their next datagram; TCP: reset).
    pub expire_nodest_conn: bool,
    /// IPVS's `expire_quiescent_template`: a persistence template whose
    /// real server has weight 0 ends at its next use.
    pub expire_quiescent_template: bool,
    /// The TCP socket options of services that set none.
    pub tcp: TcpOptions,
    /// IPVS's connection synchronisation: the daemons and sysctls.
    pub sync: sync::SyncSettings,
}

/// Socket options set on both of a TCP connection's sockets, the client's
/// and the real server's (`tcp_keepalive`, `tcp_user_timeout`). Off by
/// default: the kernel's own settings, as HAProxy without `clitcpka`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    /// SO_KEEPALIVE, with the probes' timing; `None`: no keepalive.
    pub keepalive: Option<Keepalive>,
    /// TCP_USER_TIMEOUT: how long sent data may stay unacknowledged
    /// before the kernel ends the connection; `None`: the kernel's default.
    pub user_timeout: Option<Duration>,
}

/// TCP keepalive's timing; a `None` is the kernel's setting
/// (net.ipv4.tcp_keepalive_time, _intvl, _probes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence before the first probe (TCP_KEEPIDLE), whole seconds.
    pub idle: Option<Duration>,
    /// Between unanswered probes (TCP_KEEPINTVL), whole seconds.
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection ends (TCP_KEEPCNT).
    pub count: Option<u32>,
}

/// DNS discovery settings (`global.dns`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// The name servers asked; empty: those of /etc/resolv.conf.
    pub resolvers: Vec<SocketAddr>,
    /// How often every name is resolved again.
    pub interval: Duration,
    /// How long a name that resolved keeps its servers once it answers
    /// NXDOMAIN or no address (HAProxy's `hold nx`).
    pub hold_nx: Duration,
    /// How long one query waits for an answer.
    pub timeout: Duration,
}

impl Default for DnsSettings {
    fn default() -> DnsSettings {
        DnsSettings {
            resolvers: Vec::new(),
            interval: Duration::from_secs(5),
            hold_nx: Duration::from_secs(30),
            timeout: Duration::from_secs(2),
        }
    }
}

/// What a `dns:` or `srv:` real-server entry names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Every A and AAAA record of `host`, at `port`.
    Dns {
        /// The name.
        host: String,
        /// The port of every server.
        port: u16,
    },
    /// Every SRV record of `name` of the lowest priority: target, port and
    /// weight from the record.
    Srv {
        /// The SRV name (`_service._proto.name`).
        name: String,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Dns { host, port } => write!(f, "dns:{host}:{port}"),
            Target::Srv { name } => write!(f, "srv:{name}"),
        }
    }
}

/// A `dns:` or `srv:` entry of a service's `real_servers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovery {
    /// What is resolved.
    pub target: Target,
    /// What each server found gets: weight (SRV: the record's), thresholds,
    /// checks, `alpha`, `inhibit_on_failure`. Its address means nothing.
    pub template: RealServerSpec,
    /// Its place among the file's `real_servers` entries: the servers it
    /// finds stand there, ordered by address and port.
    pub position: usize,
}

/// The admin listener (`admin:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    /// Where it listens.
    pub listen: SocketAddr,
    /// The bearer token mutations need, if any.
    pub token: Option<String>,
    /// Whether `/metrics` has a connect-time histogram per real server
    /// (`admin.real_server_histograms`; the per-service one is always
    /// there).
    pub real_server_histograms: bool,
    /// Host names the listener answers to besides its own addresses and
    /// `localhost` (`admin.allowed_hosts`; `*.` and a name for every name
    /// under it).
    pub allowed_hosts: Vec<String>,
    /// Connections served at once.
    pub limits: AdminLimits,
}

/// How many admin connections are served at once (`admin.max_connections`,
/// `admin.max_connections_per_source`). Beyond either, a connection is
/// answered only if it asks for `/healthz` or `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminLimits {
    /// From every client together.
    pub max_connections: u32,
    /// From one client address.
    pub max_connections_per_source: u32,
}

impl AdminLimits {
    /// The defaults.
    pub const DEFAULT: AdminLimits = AdminLimits {
        max_connections: 512,
        max_connections_per_source: 64,
    };
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
    /// Which connections of a shared address it takes, by their TLS
    /// ClientHello (`match:`); `None`: the address's default.
    pub matching: Option<crate::sni::names::Match>,
    /// Scheduler, flags and persistence.
    pub sched: rvs_sched::ServiceConfig,
    /// What persistence has beyond the scheduler's part.
    pub persistence: PersistenceSpec,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Keepalive and user timeout of both sockets of a connection (TCP).
    pub tcp: TcpOptions,
    /// Further servers tried when a connect fails (TCP).
    pub connect_retries: u32,
    /// Connections at once, at most (TCP).
    pub max_connections: Option<u32>,
    /// Limits per client address or network.
    pub per_source: Option<PerSource>,
    /// PROXY protocol header sent to real servers (TCP).
    pub proxy_protocol: Option<ProxyVersion>,
    /// Read a PROXY protocol header from each client first (TCP).
    pub accept_proxy_protocol: bool,
    /// Client networks allowed and denied.
    pub acl: Acl,
    /// UDP settings.
    pub udp: UdpSettings,
    /// Health checking, quorum and the sorry server.
    pub health: HealthSpec,
    /// Real servers, in file order. While running, the servers that
    /// `discovery` found stand among them at their entry's place.
    pub real_servers: Vec<RealServerSpec>,
    /// The `dns:` and `srv:` entries of `real_servers`.
    pub discovery: Vec<Discovery>,
}

/// What a service's persistence has beyond IPVS's timeout, netmask and
/// scope (those are the scheduler's, in [`ServiceSpec::sched`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistenceSpec {
    /// The persistence engine (`persistence.engine`, ipvsadm `--pe`).
    pub engine: Option<PersistenceEngine>,
    /// The firewall mark of a service-wide persistence: its templates go to
    /// other directors as those of a kernel fwmark service of that mark.
    pub fwmark: Option<u32>,
}

/// A persistence engine: what, besides the client, keys a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PersistenceEngine {
    /// The SIP Call-ID of each UDP datagram (`ip_vs_pe_sip.c`).
    Sip,
}

impl PersistenceEngine {
    /// The name in the config and in `ipvsadm -Ln`.
    pub fn name(self) -> &'static str {
        match self {
            PersistenceEngine::Sip => "sip",
        }
    }
}

/// Health checking of a service's real servers, with keepalived's meaning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthSpec {
    /// The checks of every real server that does not set its own.
    pub checks: Vec<HealthCheck>,
    /// Real servers start down until a check passes (keepalived `alpha`).
    pub alpha: bool,
    /// A failed real server gets weight 0 instead of leaving the table.
    pub inhibit_on_failure: bool,
    /// Consecutive failed connects that eject a real server until a check
    /// passes.
    pub passive_failures: Option<u32>,
    /// Where connections go when the quorum is lost.
    pub sorry_server: Option<SocketAddr>,
    /// The weight of live servers needed (keepalived `quorum`, default 1).
    pub quorum: u32,
    /// Flap damping around the quorum (keepalived `hysteresis`).
    pub hysteresis: u32,
    /// A recovered real server's weight ramps up over this time.
    pub slow_start: Option<Duration>,
}

/// One health check (a keepalived checker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// What is checked.
    pub kind: CheckKind,
    /// Between two checks (keepalived `delay_loop`).
    pub delay_loop: Duration,
    /// A check taking longer fails.
    pub connect_timeout: Duration,
    /// Further tries before a live server is declared down.
    pub retry: u32,
    /// Between those tries.
    pub delay_before_retry: Duration,
    /// The first check waits a random time up to this.
    pub warmup: Duration,
    /// Check this address instead of the real server's.
    pub connect_ip: Option<std::net::IpAddr>,
    /// Check this port instead of the real server's.
    pub connect_port: Option<u16>,
}

/// The kinds of health checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connect (TCP_CHECK).
    Tcp,
    /// An HTTP GET (HTTP_GET), or over TLS (SSL_GET).
    Http(HttpCheck),
    /// A program (MISC_CHECK).
    Misc(MiscCheck),
    /// A UDP datagram (UDP_CHECK).
    Udp(UdpCheck),
    /// A DNS query over UDP (DNS_CHECK).
    Dns(DnsCheck),
    /// A TCP exchange: bytes sent and answers expected, in order
    /// (HAProxy's `tcp-check send/expect`, ldirectord's simpletcp).
    Steps(Vec<TcpStep>),
    /// A server's own protocol spoken (keepalived's SMTP_CHECK,
    /// ldirectord's negotiate checks).
    Protocol(ProtocolCheck),
}

impl CheckKind {
    /// The name used in the configuration (`type:`).
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http(h) if h.tls => "https",
            CheckKind::Http(_) => "http",
            CheckKind::Misc(_) => "misc",
            CheckKind::Udp(_) => "udp",
            CheckKind::Dns(_) => "dns",
            CheckKind::Steps(_) => "tcp",
            CheckKind::Protocol(p) => p.protocol.name(),
        }
    }
}

/// One step of a `tcp` check's exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpStep {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Wait until what came since the last expectation contains these
    /// bytes.
    Expect(Vec<u8>),
    /// Wait until what came since the last expectation matches.
    ExpectRegex(BodyPattern),
}

/// The protocols a check can speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// SMTP: the greeting, HELO, QUIT (keepalived's SMTP_CHECK).
    Smtp,
    /// POP3: the greeting, a login when given, QUIT.
    Pop,
    /// IMAP: the greeting, a LOGIN when given, LOGOUT.
    Imap,
    /// NNTP: a 2xx greeting.
    Nntp,
    /// FTP: the greeting, a login (anonymous by default), a file when
    /// given.
    Ftp,
    /// LDAP: a bind, then a base search that finds one entry.
    Ldap,
    /// MySQL and MariaDB: a login, then a query that returns a row.
    Mysql,
    /// PostgreSQL: a login, then a query that returns a row.
    Pgsql,
    /// SIP: OPTIONS, answered 200.
    Sip,
    /// RADIUS: an Access-Request, answered at all.
    Radius,
}

impl Protocol {
    /// Every protocol, as `type:` names them.
    pub const ALL: [Protocol; 10] = [
        Protocol::Smtp,
        Protocol::Pop,
        Protocol::Imap,
        Protocol::Nntp,
        Protocol::Ftp,
        Protocol::Ldap,
        Protocol::Mysql,
        Protocol::Pgsql,
        Protocol::Sip,
        Protocol::Radius,
    ];

    /// The name used in the configuration (`type:`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Pop => "pop",
            Protocol::Imap => "imap",
            Protocol::Nntp => "nntp",
            Protocol::Ftp => "ftp",
            Protocol::Ldap => "ldap",
            Protocol::Mysql => "mysql",
            Protocol::Pgsql => "pgsql",
            Protocol::Sip => "sip",
            Protocol::Radius => "radius",
        }
    }
}

impl ProtocolCheck {
    /// Whether it is spoken over UDP (RADIUS; SIP by its `transport`).
    pub fn udp(&self) -> bool {
        match self.protocol {
            Protocol::Radius => true,
            Protocol::Sip => !self.sip_tcp,
            _ => false,
        }
    }
}

/// A protocol check: the protocol and what it logs in with. Keys a
/// protocol does not use are refused when the configuration is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolCheck {
    /// What is spoken.
    pub protocol: Protocol,
    /// Over TLS from the first byte (pop, imap, ldap, ftp are not: POP3S,
    /// IMAPS, LDAPS).
    pub tls: bool,
    /// Who logs in (POP3, IMAP, FTP, LDAP's bind DN, SQL, RADIUS).
    pub login: Option<String>,
    /// Their password: a secret, never shown without the admin token.
    pub password: Option<String>,
    /// SQL: the database.
    pub database: Option<String>,
    /// SQL: the query, which must return a row (default `SELECT 1`).
    pub query: String,
    /// LDAP: the entry searched for (default the root DSE, `""`).
    pub base: String,
    /// LDAP: a pattern the entry's DN must match.
    pub expect_dn: Option<BodyPattern>,
    /// FTP: a file retrieved.
    pub path: Option<String>,
    /// FTP: a pattern the file must match.
    pub expect_body: Option<BodyPattern>,
    /// SMTP: the name said in HELO.
    pub helo_name: String,
    /// RADIUS: the shared secret (a secret).
    pub secret: Option<String>,
    /// SIP: the Request-URI of OPTIONS (default `sip:` and the server's
    /// address).
    pub uri: Option<String>,
    /// SIP: over TCP instead of UDP.
    pub sip_tcp: bool,
}

/// HTTP_GET, and SSL_GET with `tls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCheck {
    /// Over TLS (`type: https`); the certificate is not verified.
    pub tls: bool,
    /// The path asked for.
    pub path: String,
    /// Status codes that pass, as inclusive ranges (default 200–299).
    pub status: Vec<(u16, u16)>,
    /// MD5 of the body that passes (hex), if any.
    pub digest: Option<String>,
    /// A regular expression the body must match (ldirectord's `receive`,
    /// HAProxy's `http-check expect rstring`), if any.
    pub expect_body: Option<BodyPattern>,
    /// The request's method (default `GET`).
    pub method: String,
    /// The Host header (default: the address checked).
    pub virtualhost: Option<String>,
}

/// `expect_body`: a regular expression, compiled when the configuration is
/// loaded, matched against an answer's body as bytes. Two are equal when
/// they were written the same.
#[derive(Clone, Debug)]
pub struct BodyPattern(pub regex::bytes::Regex);

impl BodyPattern {
    /// The expression as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for BodyPattern {
    fn eq(&self, other: &BodyPattern) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for BodyPattern {}

/// MISC_CHECK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MiscCheck {
    /// The program and its arguments (no shell).
    pub argv: Vec<String>,
    /// Which of `argv` are secrets (`{secret: ...}`), never shown by the
    /// admin API or `rvs show-config` without the token.
    pub secret_args: Vec<usize>,
    /// A run longer than this is killed and fails.
    pub timeout: Duration,
    /// Exit status 2–255 passes and sets the weight to status − 2.
    pub dynamic: bool,
}

/// UDP_CHECK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpCheck {
    /// What is sent.
    pub payload: Vec<u8>,
    /// A reply is needed; when it has bytes, the reply must match them
    /// (`None` nibbles of the mask match anything).
    pub require_reply: Option<Vec<(u8, u8)>>,
    /// Shortest reply that passes.
    pub min_reply_length: usize,
    /// Longest reply that passes.
    pub max_reply_length: usize,
}

/// DNS_CHECK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsCheck {
    /// The name asked for.
    pub name: String,
    /// The query type (A, NS, CNAME, SOA, MX, TXT, AAAA).
    pub qtype: String,
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
    /// A client connection that sends nothing this long after it is
    /// accepted is closed before a real server is chosen (TCP; off by
    /// default, as in IPVS, where a server may speak first).
    pub client_first_byte: Option<Duration>,
    /// On an address whose services have `match`, a client whose TLS
    /// ClientHello (or first bytes) is not all there this long after it
    /// is accepted is closed (TCP).
    pub client_hello: Duration,
}

impl Timeouts {
    /// The defaults: ipvsadm's for tcp, tcpfin and udp.
    pub const DEFAULT: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        tcp: Duration::from_secs(900),
        tcpfin: Duration::from_secs(120),
        udp: Duration::from_secs(300),
        proxy_header: Duration::from_secs(5),
        client_first_byte: None,
        client_hello: Duration::from_secs(5),
    };
}

/// Limits per source (`per_source:`): clients are grouped by their address
/// under a prefix length, and each group has its own limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PerSource {
    /// Connections (TCP) or sessions (UDP) of one group at once, at most.
    pub max_connections: Option<u32>,
    /// New connections (sessions) of one group per second, on average.
    pub rate: Option<f64>,
    /// How many may come at once above the rate (the bucket's size).
    pub burst: u32,
    /// IPv4 clients are grouped by this prefix length (32: each address).
    pub prefix_v4: u8,
    /// IPv6 clients are grouped by this prefix length.
    pub prefix_v6: u8,
    /// Groups tracked at most: memory stays bounded however many sources.
    pub max_sources: u32,
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
        let ip = ip.to_canonical();
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
    /// With `proxy_protocol`, the header goes before every datagram (true)
    /// or a session's first one only.
    pub proxy_protocol_every: bool,
    /// Sessions at once, at most; the idlest is evicted beyond.
    pub max_sessions: usize,
}

impl UdpSettings {
    /// `max_sessions` when the file does not set it; the process's
    /// descriptor budget ([`crate::fds`]) lowers it on its own.
    pub const DEFAULT_MAX_SESSIONS: usize = validate::defaults::MAX_SESSIONS as usize;
}

/// One real server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealServerSpec {
    /// Its address.
    pub address: SocketAddr,
    /// Weight and thresholds.
    pub params: DestParams,
    /// Its own checks, in place of the service's.
    pub checks: Option<Vec<HealthCheck>>,
    /// Its own `alpha`.
    pub alpha: Option<bool>,
    /// Its own `inhibit_on_failure`.
    pub inhibit_on_failure: Option<bool>,
    /// Found by `discovery[i]` of its service (`None`: written in the
    /// file, or added through the API).
    pub discovered: Option<usize>,
}

/// A `real_servers` entry as the file has it.
#[derive(Clone, Copy, Debug)]
pub enum Entry<'a> {
    /// `address:`.
    Static(&'a RealServerSpec),
    /// `dns:` or `srv:`: its index in `discovery`, and the entry.
    Discovery(usize, &'a Discovery),
}

impl ServiceSpec {
    /// Whether each UDP datagram is scheduled on its own: one-packet
    /// scheduling (`udp.ops`), or the SIP engine, whose connection entries
    /// IPVS hashes by Call-ID, so that each datagram finds its call's
    /// template whatever flow it comes in.
    pub fn schedules_each_datagram(&self) -> bool {
        self.udp.ops || self.persistence.engine.is_some()
    }

    /// The `real_servers` entries in file order: the servers written with
    /// an address, and the `dns:`/`srv:` entries at their places.
    pub fn entries(&self) -> Vec<Entry<'_>> {
        let mut statics = self
            .real_servers
            .iter()
            .filter(|r| r.discovered.is_none())
            .map(Entry::Static);
        let mut out = Vec::with_capacity(self.real_servers.len() + self.discovery.len());
        let mut pending = self.discovery.iter().enumerate().peekable();
        loop {
            match pending.peek() {
                Some((i, d)) if d.position <= out.len() => {
                    out.push(Entry::Discovery(*i, d));
                    pending.next();
                }
                _ => match statics.next() {
                    Some(e) => out.push(e),
                    None => {
                        out.extend(pending.map(|(i, d)| Entry::Discovery(i, d)));
                        return out;
                    }
                },
            }
        }
    }

    /// The checks of real server `r`: its own, else the service's.
    pub fn checks_of<'a>(&'a self, r: &'a RealServerSpec) -> &'a [HealthCheck] {
        r.checks.as_deref().unwrap_or(&self.health.checks)
    }
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

    /// Refuses YAML nested deeper than a configuration can be, in one
    /// linear pass: `Err` names the line and column (for the admin API's
    /// bodies, which are not configurations but are YAML too).
    pub fn check_depth(text: &str) -> Result<(), String> {
        depth::check(text).map_err(|(line, column)| {
            format!(
                "{line}:{column}: nested deeper than {} levels",
                depth::MAX_DEPTH
            )
        })
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
        let mut spec = validate::parse_service(text, &self.global).map_err(|problems| {
            ConfigError::Invalid {
                file: source.to_owned(),
                problems,
            }
        })?;
        spec.sched.expire_quiescent_template = self.global.expire_quiescent_template;
        Ok(spec)
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

    /// An edit of this (running) configuration, `draft`, checked as
    /// [`Config::with_services`] checks it, at the cost of what changed:
    /// services equal to running ones were checked when they came and are
    /// kept as they are; each changed or new service is written out and
    /// read back alone; then names and addresses are checked across
    /// services. An edit of the global settings checks everything.
    pub fn check_edit(&self, draft: Config) -> Result<Config, ConfigError> {
        if draft.global != self.global {
            return draft.with_services(draft.services.clone());
        }
        let running: std::collections::HashMap<&str, &ServiceSpec> =
            self.services.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut problems = Vec::new();
        let mut services = Vec::with_capacity(draft.services.len());
        let mut names = std::collections::HashSet::new();
        let mut listeners: std::collections::HashMap<(Proto, SocketAddr), &str> =
            std::collections::HashMap::new();
        for s in &draft.services {
            let checked = if running.get(s.name.as_str()).is_some_and(|r| *r == s) {
                s.clone()
            } else {
                let text = write::service_yaml(s, &self.global);
                match self.parse_service(&text, "edited configuration") {
                    Ok(c) => c,
                    Err(ConfigError::Invalid { problems: p, .. }) => {
                        problems.extend(p);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            services.push(checked);
        }
        for s in &services {
            if !names.insert(s.name.as_str()) {
                problems.push(Problem {
                    line: 1,
                    column: 1,
                    reason: format!("service name {:?} is used twice", s.name),
                });
            }
            for a in &s.listen {
                if let Some(other) = listeners.insert((s.proto, *a), s.name.as_str()) {
                    problems.push(Problem {
                        line: 1,
                        column: 1,
                        reason: format!(
                            "{} {a} is already the address of service {other:?}",
                            s.proto
                        ),
                    });
                }
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                file: "edited configuration".into(),
                problems,
            });
        }
        Ok(Config {
            global: self.global.clone(),
            admin: self.admin.clone(),
            services,
        })
    }
}
