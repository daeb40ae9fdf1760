//! Asking DNS, with hickory-resolver (pure Rust: it works in the static
//! binary of an empty container image, where the C library's name service
//! cannot load its modules).
//!
//! The resolver's cache is off (every answer is at most 0 s old): names are
//! asked again every `global.dns.interval`, and a record's TTL, when longer,
//! is not waited for. Without `global.dns.resolvers`, the name servers,
//! search domains and `ndots` of /etc/resolv.conf are used, as the C
//! library would (in a Kubernetes pod: the cluster's DNS).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use super::{Answer, Found};
use crate::config::{DnsSettings, Target};

/// A resolver made from `global.dns`.
#[derive(Clone)]
pub(crate) struct Resolver {
    inner: TokioResolver,
    settings: DnsSettings,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Resolver {
    /// A resolver asking `settings.resolvers`, or those of
    /// /etc/resolv.conf. `Err` says why none can be made (no resolv.conf
    /// and no resolvers given).
    pub(crate) fn new(settings: &DnsSettings) -> Result<Resolver, String> {
        let (config, mut opts) = if settings.resolvers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("/etc/resolv.conf: {e} (set global.dns.resolvers)"))?
        } else {
            let mut c =
                ResolverConfig::from_parts(None, Vec::new(), Vec::<NameServerConfig>::new());
            for a in &settings.resolvers {
                c.add_name_server(NameServerConfig::new(*a, Protocol::Udp));
                c.add_name_server(NameServerConfig::new(*a, Protocol::Tcp));
            }
            (c, ResolverOpts::default())
        };
        opts.timeout = settings.timeout;
        opts.attempts = 1;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // No cache: each interval asks again.
        opts.cache_size = 0;
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        opts.preserve_intermediates = true;
        let mut b = TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        *b.options_mut() = opts;
        Ok(Resolver {
            inner: b.build(),
            settings: settings.clone(),
        })
    }

    /// The settings it was made from.
    pub(crate) fn settings(&self) -> &DnsSettings {
        &self.settings
    }

    /// Resolves `target` once.
    pub(crate) async fn resolve(&self, target: &Target) -> Answer {
        match target {
            Target::Dns { host, port } => match self.inner.lookup_ip(host.as_str()).await {
                Ok(ips) => servers(ips.iter().map(|ip| Found {
                    addr: SocketAddr::new(ip, *port),
                    weight: None,
                })),
                Err(e) => failure(&e),
            },
            Target::Srv { name } => self.srv(name).await,
        }
    }

    async fn srv(&self, name: &str) -> Answer {
        let lookup = match self.inner.srv_lookup(name).await {
            Ok(l) => l,
            Err(e) => return failure(&e),
        };
        let Some(lowest) = lookup.iter().map(|s| s.priority()).min() else {
            return Answer::NoRecords;
        };
        let mut out = Vec::new();
        let mut failed = None;
        for srv in lookup.iter().filter(|s| s.priority() == lowest) {
            let target = srv.target();
            // "." is RFC 2782's "no such service here".
            if target.is_root() {
                continue;
            }
            let weight = Some(i32::from(srv.weight()));
            // The addresses the answer carried (its additional section).
            let mut ips: Vec<std::net::IpAddr> = lookup
                .as_lookup()
                .record_iter()
                .filter(|r| r.name() == target)
                .filter_map(|r| match r.data() {
                    RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(std::net::IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect();
            if ips.is_empty() {
                match self.inner.lookup_ip(target.clone()).await {
                    Ok(l) => ips.extend(l.iter()),
                    Err(e) => match failure(&e) {
                        Answer::NxDomain | Answer::NoRecords => {}
                        f => failed = Some(f),
                    },
                }
            }
            out.extend(ips.into_iter().map(|ip| Found {
                addr: SocketAddr::new(ip, srv.port()),
                weight,
            }));
        }
        // One target that could not be resolved: the answer is not whole.
        if let Some(f) = failed {
            return f;
        }
        servers(out.into_iter())
    }
}

fn servers(found: impl Iterator<Item = Found>) -> Answer {
    let v: Vec<Found> = found.collect();
    if v.is_empty() {
        Answer::NoRecords
    } else {
        Answer::Servers(v)
    }
}

/// An error as an answer: NXDOMAIN and NOERROR-without-records are
/// answers about the name; SERVFAIL, REFUSED, timeouts are not.
fn failure(e: &ResolveError) -> Answer {
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => match *response_code {
            ResponseCode::NXDomain => Answer::NxDomain,
            ResponseCode::NoError => Answer::NoRecords,
            other => Answer::Failed(format!("the name server answered {other}")),
        },
        _ => Answer::Failed(e.to_string()),
    }
}
