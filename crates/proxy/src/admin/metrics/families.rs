//! The metric families rvs writes, in the order docs/metrics.md lists
//! them, each with what it reads from one service. A scrape writes one
//! family at a time over every service (the format wants a family's
//! samples together), reading the counters the data plane keeps anyway.

use std::sync::atomic::Ordering::Relaxed;

use rvs_sched::Dest;

use super::text::{Kind, Lines};
use crate::Proxy;
use crate::config::{Proto, ServiceSpec};
use crate::service::ServiceRuntime;
use crate::stats::Refusal;

/// Which part of the metrics a family belongs to (`/metrics?scope=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope {
    /// Per service (UDP and DNS discovery included).
    Service,
    /// Per real server.
    RealServer,
}

/// What a family's writer may read besides its service.
pub(super) struct Ctx<'a> {
    pub(super) proxy: &'a Proxy,
}

/// One family: its name, help, type, scope and writer.
pub(super) struct Family {
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    pub(super) kind: Kind,
    pub(super) scope: Scope,
    /// Written only when the configuration asks for it
    /// (`admin.real_server_histograms`).
    pub(super) opt_in: bool,
    pub(super) write: fn(&Ctx<'_>, &ServiceRuntime, &mut Lines<'_>),
}

const fn family(
    name: &'static str,
    help: &'static str,
    kind: Kind,
    scope: Scope,
    write: fn(&Ctx<'_>, &ServiceRuntime, &mut Lines<'_>),
) -> Family {
    Family {
        name,
        help,
        kind,
        scope,
        opt_in: false,
        write,
    }
}

use Kind::{Counter, Gauge, Histogram};
use Scope::{RealServer, Service};

/// A service's two labels: its name and protocol.
fn service_labels(svc: &ServiceRuntime) -> [(&'static str, &str); 2] {
    let proto = match svc.spec().proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    [("service", svc.name()), ("proto", proto)]
}

/// A sample per real server of the service's table: `value` of each.
fn per_server(svc: &ServiceRuntime, l: &mut Lines<'_>, value: impl Fn(&Dest) -> f64) {
    for d in svc.scheduler().dests() {
        let a = d.addr().to_string();
        l.sample(&[("service", svc.name()), ("real_server", &a)], value(&d));
    }
}

/// Two samples per real server of the table, `direction` in and out.
fn per_server_direction(
    svc: &ServiceRuntime,
    l: &mut Lines<'_>,
    value: impl Fn(&Dest) -> (u64, u64),
) {
    for d in svc.scheduler().dests() {
        let a = d.addr().to_string();
        let (i, o) = value(&d);
        for (dir, n) in [("in", i), ("out", o)] {
            l.int(
                &[
                    ("service", svc.name()),
                    ("real_server", &a),
                    ("direction", dir),
                ],
                n,
            );
        }
    }
}

/// The service's one sample.
fn per_service(svc: &ServiceRuntime, l: &mut Lines<'_>, value: u64) {
    l.int(&service_labels(svc), value);
}

/// The service's two samples, `direction` in and out.
fn per_service_direction(svc: &ServiceRuntime, l: &mut Lines<'_>, (i, o): (u64, u64)) {
    let [sl, pl] = service_labels(svc);
    for (dir, n) in [("in", i), ("out", o)] {
        l.int(&[sl, pl, ("direction", dir)], n);
    }
}

/// Whether the service's configuration lets it refuse a client for `r`.
/// A reason it cannot meet is left out of the scrape (its count is 0 and
/// stays so) unless it was met before a reload changed that.
fn can_refuse(spec: &ServiceSpec, r: Refusal) -> bool {
    match r {
        Refusal::Acl => !spec.acl.allow.is_empty() || !spec.acl.deny.is_empty(),
        // UDP: `udp.max_sessions` always bounds the sessions.
        Refusal::Limit => {
            spec.proto == Proto::Udp || spec.max_connections.is_some() || spec.per_source.is_some()
        }
        Refusal::Threshold => {
            spec.real_servers.iter().any(|r| r.params.u_threshold > 0) || !spec.discovery.is_empty()
        }
        Refusal::ProxyHeader => spec.accept_proxy_protocol,
        Refusal::FirstByte => spec.timeouts.client_first_byte.is_some(),
        Refusal::NoCallId => spec.persistence.engine.is_some(),
        Refusal::NoServer | Refusal::Unreachable | Refusal::Descriptors => true,
    }
}

fn active_inactive(svc: &ServiceRuntime) -> (u64, u64) {
    let dests = svc.scheduler().dests();
    (
        dests.iter().map(|d| u64::from(d.active_conns())).sum(),
        dests.iter().map(|d| u64::from(d.inactive_conns())).sum(),
    )
}

/// Every family, in order.
pub(super) static FAMILIES: &[Family] = &[
    family(
        "rvs_service_connections_total",
        "Connections (TCP) and sessions (UDP) given a real server, retries included.",
        Counter,
        Service,
        |_, svc, l| per_service(svc, l, svc.stats.totals().conns),
    ),
    family(
        "rvs_service_active_connections",
        "TCP connections established on both sides and not half-closed (ipvsadm ActiveConn).",
        Gauge,
        Service,
        |_, svc, l| per_service(svc, l, active_inactive(svc).0),
    ),
    family(
        "rvs_service_inactive_connections",
        "TCP connections connecting or half-closed, and UDP sessions (ipvsadm InActConn).",
        Gauge,
        Service,
        |_, svc, l| per_service(svc, l, active_inactive(svc).1),
    ),
    family(
        "rvs_service_packets_total",
        "Packets from (in) and to (out) clients: TCP segments of the client connection, counted when it ends; UDP datagrams.",
        Counter,
        Service,
        |_, svc, l| {
            let t = svc.stats.totals();
            per_service_direction(svc, l, (t.in_pkts, t.out_pkts));
        },
    ),
    family(
        "rvs_service_bytes_total",
        "Bytes from (in) and to (out) clients.",
        Counter,
        Service,
        |_, svc, l| {
            let t = svc.stats.totals();
            per_service_direction(svc, l, (t.in_bytes, t.out_bytes));
        },
    ),
    family(
        "rvs_service_refused_total",
        "Clients refused, by reason.",
        Counter,
        Service,
        |_, svc, l| {
            let [sl, pl] = service_labels(svc);
            let spec = svc.spec();
            for r in Refusal::ALL {
                let n = svc.stats.refused(r);
                if n > 0 || can_refuse(&spec, r) {
                    l.int(&[sl, pl, ("reason", r.name())], n);
                }
            }
        },
    ),
    family(
        "rvs_service_connect_failures_total",
        "Connects to real servers that failed or timed out.",
        Counter,
        Service,
        |_, svc, l| per_service(svc, l, svc.stats.connect_failures.load(Relaxed)),
    ),
    family(
        "rvs_service_retries_total",
        "Connections retried on another real server after a failed connect.",
        Counter,
        Service,
        |_, svc, l| per_service(svc, l, svc.stats.retries.load(Relaxed)),
    ),
    family(
        "rvs_service_connect_duration_seconds",
        "Time to connect to the service's real servers.",
        Histogram,
        Service,
        |_, svc, l| {
            let [sl, pl] = service_labels(svc);
            if pl.1 == "tcp" {
                // From the service's first connect on: 18 zeros for each
                // service that has not connected (half of a service's
                // series at 1000 services with no traffic).
                let (cumulative, count, sum) = svc.stats.connect_latency.snapshot();
                if count > 0 {
                    l.histogram(&[sl, pl], &cumulative, count, sum);
                }
            }
        },
    ),
    family(
        "rvs_service_persistence_templates",
        "Live persistence templates.",
        Gauge,
        Service,
        |_, svc, l| {
            let n = svc.scheduler().template_count() as u64;
            if n > 0 || svc.spec().sched.persistence.is_some() {
                per_service(svc, l, n);
            }
        },
    ),
    family(
        "rvs_service_quorum_up",
        "1 while the live real servers' weight meets the quorum.",
        Gauge,
        Service,
        |_, svc, l| {
            let [sl, pl] = service_labels(svc);
            l.flag(&[sl, pl], svc.quorum_up());
        },
    ),
    family(
        "rvs_service_sorry_server_active",
        "1 while the sorry server takes the service's connections.",
        Gauge,
        Service,
        |_, svc, l| {
            let [sl, pl] = service_labels(svc);
            let Some(sorry) = svc.spec().health.sorry_server else {
                return;
            };
            let on = !svc.quorum_up() && svc.scheduler().dest(sorry).is_some();
            l.flag(&[sl, pl], on);
        },
    ),
    family(
        "rvs_service_expired_nodest_total",
        "TCP connections reset and UDP sessions ended because their real server left the table (global.expire_nodest_conn).",
        Counter,
        Service,
        |_, svc, l| {
            let n = svc.stats.expired_nodest.load(Relaxed);
            if n > 0 || svc.expire_nodest() {
                per_service(svc, l, n);
            }
        },
    ),
    family(
        "rvs_service_sources_tracked",
        "Client groups (addresses, or networks of per_source's prefix) tracked by per_source limits; at most per_source.max_sources.",
        Gauge,
        Service,
        |_, svc, l| {
            let [sl, pl] = service_labels(svc);
            if svc.spec().per_source.is_some() {
                l.int(&[sl, pl], svc.sources_tracked() as u64);
            }
        },
    ),
    family(
        "rvs_service_listen_address_local",
        "1 when a listen address is on this host; 0 when rvs listens on it (IP_FREEBIND) but it is not here yet (a VRRP BACKUP, an address not assigned yet).",
        Gauge,
        Service,
        |ctx, svc, l| {
            let [sl, pl] = service_labels(svc);
            // The configured addresses: no scan of every listener per
            // service.
            for a in &svc.spec().listen {
                let addr = a.to_string();
                l.flag(&[sl, pl, ("address", &addr)], ctx.proxy.is_local(*a));
            }
        },
    ),
    family(
        "rvs_dns_resolutions_total",
        "Resolutions of a dns: or srv: real-server entry, by result (ok, nxdomain, no_records, failed).",
        Counter,
        Service,
        |ctx, svc, l| {
            if svc.spec().discovery.is_empty() {
                return;
            }
            for e in ctx.proxy.discovery_status(svc.name()) {
                for (result, n) in crate::discovery::RESULTS.iter().zip(e.by_result) {
                    l.int(
                        &[
                            ("service", svc.name()),
                            ("entry", &e.target),
                            ("result", result),
                        ],
                        n,
                    );
                }
            }
        },
    ),
    family(
        "rvs_dns_servers",
        "Real servers in force for a dns: or srv: entry, those leaving included.",
        Gauge,
        Service,
        |ctx, svc, l| {
            if svc.spec().discovery.is_empty() {
                return;
            }
            for e in ctx.proxy.discovery_status(svc.name()) {
                l.int(
                    &[("service", svc.name()), ("entry", &e.target)],
                    e.servers as u64,
                );
            }
        },
    ),
    family(
        "rvs_dns_failing",
        "1 while the last answer for a dns: or srv: entry was not good (the servers in force stay).",
        Gauge,
        Service,
        |ctx, svc, l| {
            if svc.spec().discovery.is_empty() {
                return;
            }
            for e in ctx.proxy.discovery_status(svc.name()) {
                l.flag(
                    &[("service", svc.name()), ("entry", &e.target)],
                    e.failing.is_some(),
                );
            }
        },
    ),
    family(
        "rvs_udp_sessions",
        "Live UDP sessions.",
        Gauge,
        Service,
        |_, svc, l| {
            if svc.spec().proto == Proto::Udp {
                l.int(&[("service", svc.name())], svc.open() as u64);
            }
        },
    ),
    family(
        "rvs_udp_datagrams_total",
        "UDP datagrams from (in) and to (out) clients.",
        Counter,
        Service,
        |_, svc, l| {
            if svc.spec().proto == Proto::Udp {
                let t = svc.stats.totals();
                for (dir, n) in [("in", t.in_pkts), ("out", t.out_pkts)] {
                    l.int(&[("service", svc.name()), ("direction", dir)], n);
                }
            }
        },
    ),
    family(
        "rvs_udp_session_evictions_total",
        "UDP sessions evicted to stay within udp.max_sessions.",
        Counter,
        Service,
        |_, svc, l| {
            if svc.spec().proto == Proto::Udp {
                l.int(
                    &[("service", svc.name())],
                    svc.stats.evictions.load(Relaxed),
                );
            }
        },
    ),
    family(
        "rvs_udp_session_expirations_total",
        "UDP sessions ended by their idle timeout.",
        Counter,
        Service,
        |_, svc, l| {
            if svc.spec().proto == Proto::Udp {
                l.int(&[("service", svc.name())], svc.stats.expired.load(Relaxed));
            }
        },
    ),
    family(
        "rvs_real_server_connections_total",
        "Connections scheduled to the real server.",
        Counter,
        RealServer,
        |_, svc, l| per_server(svc, l, |d| d.conns_total() as f64),
    ),
    family(
        "rvs_real_server_active_connections",
        "Active connections of the real server (ipvsadm ActiveConn).",
        Gauge,
        RealServer,
        |_, svc, l| per_server(svc, l, |d| d.active_conns().into()),
    ),
    family(
        "rvs_real_server_inactive_connections",
        "Inactive connections of the real server (ipvsadm InActConn).",
        Gauge,
        RealServer,
        |_, svc, l| per_server(svc, l, |d| d.inactive_conns().into()),
    ),
    family(
        "rvs_real_server_persistent_connections",
        "Persistence templates pointing at the real server (ipvsadm PersistConn).",
        Gauge,
        RealServer,
        |_, svc, l| per_server(svc, l, |d| d.persist_conns().into()),
    ),
    family(
        "rvs_real_server_packets_total",
        "Packets from (in) and to (out) the clients of the real server.",
        Counter,
        RealServer,
        |_, svc, l| {
            per_server_direction(svc, l, |d| {
                let t = d.traffic();
                (t.in_pkts, t.out_pkts)
            });
        },
    ),
    family(
        "rvs_real_server_bytes_total",
        "Bytes from (in) and to (out) the clients of the real server.",
        Counter,
        RealServer,
        |_, svc, l| {
            per_server_direction(svc, l, |d| {
                let t = d.traffic();
                (t.in_bytes, t.out_bytes)
            });
        },
    ),
    family(
        "rvs_real_server_weight",
        "Weight of the real server; 0 is quiescent.",
        Gauge,
        RealServer,
        |_, svc, l| per_server(svc, l, |d| d.weight().into()),
    ),
    family(
        "rvs_real_server_available",
        "1 when the real server takes new connections: weight above 0 and not overloaded.",
        Gauge,
        RealServer,
        |_, svc, l| per_server(svc, l, |d| f64::from(u8::from(d.is_available()))),
    ),
    family(
        "rvs_real_server_overloaded",
        "1 when the real server is over its upper connection threshold.",
        Gauge,
        RealServer,
        |_, svc, l| per_server(svc, l, |d| f64::from(u8::from(d.is_overloaded()))),
    ),
    family(
        "rvs_real_server_connect_failures_total",
        "Connects to the real server that failed or timed out.",
        Counter,
        RealServer,
        |_, svc, l| per_server(svc, l, |d| d.connect_failures() as f64),
    ),
    Family {
        name: "rvs_real_server_connect_duration_seconds",
        help: "Time to connect to the real server (admin.real_server_histograms).",
        kind: Histogram,
        scope: RealServer,
        opt_in: true,
        write: |_, svc, l| {
            for d in svc.scheduler().dests() {
                if let Some(rt) = svc.dest_runtime(d.addr()) {
                    let a = d.addr().to_string();
                    let (cumulative, count, sum) = rt.latency.snapshot();
                    l.histogram(
                        &[("service", svc.name()), ("real_server", &a)],
                        &cumulative,
                        count,
                        sum,
                    );
                }
            }
        },
    },
    family(
        "rvs_real_server_up",
        "1 when the configured real server passes its health checks (always 1 without checks).",
        Gauge,
        RealServer,
        |_, svc, l| {
            let health = svc.health();
            for r in &svc.spec().real_servers {
                let a = r.address.to_string();
                let up = health.get(&r.address).is_none_or(|h| h.up);
                l.flag(&[("service", svc.name()), ("real_server", &a)], up);
            }
        },
    ),
    family(
        "rvs_real_server_health_checks_total",
        "Health checks run on the real server, by result.",
        Counter,
        RealServer,
        |_, svc, l| {
            let health = svc.health();
            for r in &svc.spec().real_servers {
                let Some(h) = health.get(&r.address).filter(|h| h.checked) else {
                    continue;
                };
                let a = r.address.to_string();
                let pass = h.checks_run - h.checks_failed;
                l.int(
                    &[
                        ("service", svc.name()),
                        ("real_server", &a),
                        ("result", "pass"),
                    ],
                    pass,
                );
                l.int(
                    &[
                        ("service", svc.name()),
                        ("real_server", &a),
                        ("result", "fail"),
                    ],
                    h.checks_failed,
                );
            }
        },
    ),
];
