//! The API's reads: services and real servers with their counts, totals
//! and rates; the live connection table; reload status; timeouts.
//!
//! Totals are those of the tables (`ipvsadm --stats`): counted since the
//! last zeroing. Prometheus gets the monotonic ones.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::ApiError;
use crate::Proxy;
use crate::config::{Proto, write::OutService};
use crate::reload::Reloader;
use crate::service::ServiceRuntime;
use crate::stats::{Rates, Refusal, Totals};

#[derive(Serialize)]
struct TotalsJson {
    conns: u64,
    in_pkts: u64,
    out_pkts: u64,
    in_bytes: u64,
    out_bytes: u64,
}

impl From<Totals> for TotalsJson {
    fn from(t: Totals) -> Self {
        TotalsJson {
            conns: t.conns,
            in_pkts: t.in_pkts,
            out_pkts: t.out_pkts,
            in_bytes: t.in_bytes,
            out_bytes: t.out_bytes,
        }
    }
}

#[derive(Serialize)]
struct RatesJson {
    cps: u64,
    in_pps: u64,
    out_pps: u64,
    in_bps: u64,
    out_bps: u64,
}

impl From<Rates> for RatesJson {
    fn from(r: Rates) -> Self {
        RatesJson {
            cps: r.cps,
            in_pps: r.in_pps,
            out_pps: r.out_pps,
            in_bps: r.in_bps,
            out_bps: r.out_bps,
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// One service, as `GET /api/v1/services` lists it; its `config` with
/// its secrets unless `reveal` (a request with the admin token).
pub(super) fn service_json(p: &Proxy, svc: &ServiceRuntime, reveal: bool) -> Value {
    svc.flush();
    let spec = svc.spec();
    let sched = svc.scheduler();
    let config = p.config();
    let mut active = 0u64;
    let mut inactive = 0u64;
    let health = svc.health();
    let health_json = |a: SocketAddr| {
        health.get(&a).filter(|h| h.checked).map(|h| {
            json!({
                "up": h.up,
                "reason": h.reason,
                "checks_run": h.checks_run,
                "checks_failed": h.checks_failed,
            })
        })
    };
    let sorry = spec.health.sorry_server;
    let shown = if reveal {
        std::borrow::Cow::Borrowed(&*spec)
    } else {
        spec.redacted()
    };
    let table = sched.dests();
    // The scheduler's table, in IPVS's list order.
    let mut real_servers: Vec<Value> = table
        .iter()
        .map(|d| {
            active += u64::from(d.active_conns());
            inactive += u64::from(d.inactive_conns());
            let rt = svc.dest_runtime(d.addr());
            let (shown, rates) = rt
                .as_ref()
                .map_or((Totals::default(), Rates::default()), |r| {
                    (r.shown(), r.rates())
                });
            let params = d.params();
            let is_sorry =
                sorry == Some(d.addr()) && !spec.real_servers.iter().any(|r| r.address == d.addr());
            let down = health.get(&d.addr()).is_some_and(|h| !h.up);
            json!({
                "address": d.addr().to_string(),
                "discovered_by": discovered_by(&spec, d.addr()),
                "weight": d.weight(),
                "u_threshold": params.u_threshold,
                "l_threshold": params.l_threshold,
                "active_conns": d.active_conns(),
                "inactive_conns": d.inactive_conns(),
                "persist_conns": d.persist_conns(),
                "state": if is_sorry { "sorry" } else if down { "down" } else { dest_state(d) },
                "in_table": true,
                "health": health_json(d.addr()),
                "connect_failures": d.connect_failures(),
                "stats": TotalsJson::from(shown),
                "rates": RatesJson::from(rates),
            })
        })
        .collect();
    // Configured servers out of the table: down (or replaced by the sorry
    // server while the quorum is lost).
    for r in &spec.real_servers {
        if table.iter().any(|d| d.addr() == r.address) {
            continue;
        }
        real_servers.push(json!({
            "address": r.address.to_string(),
            "discovered_by": discovered_by(&spec, r.address),
            "weight": r.params.weight,
            "u_threshold": r.params.u_threshold,
            "l_threshold": r.params.l_threshold,
            "active_conns": 0,
            "inactive_conns": 0,
            "persist_conns": 0,
            "state": if health.get(&r.address).is_some_and(|h| !h.up) { "down" } else { "standby" },
            "in_table": false,
            "health": health_json(r.address),
            "connect_failures": 0,
            "stats": TotalsJson::from(Totals::default()),
            "rates": RatesJson::from(Rates::default()),
        }));
    }
    let refused: serde_json::Map<String, Value> = Refusal::ALL
        .iter()
        .map(|r| (r.name().to_owned(), json!(svc.stats.refused(*r))))
        .collect();
    let persistence = spec.sched.persistence.map(|pe| {
        json!({
            "timeout": pe.timeout.as_secs(),
            "netmask": pe.netmask.v4().to_string(),
            "ipv6_prefix": pe.netmask.v6_prefix(),
            "scope": match pe.scope {
                rvs_sched::Scope::Destination => "destination",
                rvs_sched::Scope::Service => "service",
            },
            "pe": spec.persistence.engine.map(|e| e.name()),
            "fwmark": spec.persistence.fwmark,
        })
    });
    let t = &spec.timeouts;
    let listen = p.local_addrs(svc.name());
    let mut v = json!({
        "name": svc.name(),
        "proto": spec.proto.to_string(),
        "listen": listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "listen_not_local": listen.iter().filter(|a| !p.is_local(**a)).map(ToString::to_string).collect::<Vec<_>>(),
        "scheduler": spec.sched.scheduler.name(),
        "flags": spec.sched.flags.names(spec.sched.scheduler).iter().map(|f| f.name()).collect::<Vec<_>>(),
        "persistence": persistence,
        "ops": spec.udp.ops && spec.proto == Proto::Udp,
        "match": spec.matching.as_ref().map(|m| json!({
            "sni": m.sni.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "alpn": m.alpn.iter().map(|p| String::from_utf8_lossy(p)).collect::<Vec<_>>(),
        })),
        "timeouts": {
            "connect": secs(t.connect),
            "tcp": secs(t.tcp),
            "tcpfin": secs(t.tcpfin),
            "udp": secs(t.udp),
            "proxy_header": secs(t.proxy_header),
            "client_first_byte": t.client_first_byte.map(secs),
            "client_hello": secs(t.client_hello),
        },
        "active_conns": active,
        "inactive_conns": inactive,
        "persistence_templates": sched.template_count(),
        "stats": TotalsJson::from(svc.shown()),
        "rates": RatesJson::from(svc.rates()),
        "refused": refused,
        "quorum_up": svc.quorum_up(),
        "sorry_server_active": sorry.is_some_and(|s| table.iter().any(|d| d.addr() == s)) && !svc.quorum_up(),
        "connect_failures": svc.stats.connect_failures.load(std::sync::atomic::Ordering::Relaxed),
        "retries": svc.stats.retries.load(std::sync::atomic::Ordering::Relaxed),
        "real_servers": real_servers,
        "config": OutService::new(&shown, &config.global),
    });
    if !spec.discovery.is_empty() {
        v["discovery"] = p
            .discovery_status(svc.name())
            .iter()
            .map(|e| {
                json!({
                    "entry": e.target,
                    "state": e.state(),
                    "servers": e.servers,
                    "leaving": e.leaving,
                    "resolutions": crate::discovery::RESULTS
                        .iter()
                        .zip(e.by_result)
                        .map(|(k, n)| ((*k).to_owned(), json!(n)))
                        .collect::<serde_json::Map<String, Value>>(),
                    "error": e.failing.as_ref().map(|(why, _)| why),
                    "failing_for": e.failing.as_ref().map(|(_, d)| d.as_secs_f64()),
                })
            })
            .collect();
    }
    v["expired_nodest"] = json!(
        svc.stats
            .expired_nodest
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    if spec.proto == Proto::Udp {
        v["udp"] = json!({
            "sessions": svc.conns.len(),
            "evictions": svc.stats.evictions.load(std::sync::atomic::Ordering::Relaxed),
            "expired": svc.stats.expired.load(std::sync::atomic::Ordering::Relaxed),
        });
    }
    v
}

/// The entry (`dns:NAME:PORT`, `srv:NAME`) that found the real server at
/// `addr`, if DNS did.
fn discovered_by(spec: &crate::config::ServiceSpec, addr: SocketAddr) -> Option<String> {
    let r = spec.real_servers.iter().find(|r| r.address == addr)?;
    Some(spec.discovery.get(r.discovered?)?.target.to_string())
}

/// `available`, `quiescent` (weight 0) or `overloaded` (over its upper
/// threshold).
pub(super) fn dest_state(d: &rvs_sched::Dest) -> &'static str {
    if d.weight() == 0 {
        "quiescent"
    } else if d.is_overloaded() {
        "overloaded"
    } else {
        "available"
    }
}

pub(super) fn services(p: &Proxy, reveal: bool) -> Value {
    // In configuration order.
    let config = p.config();
    let list: Vec<Value> = config
        .services
        .iter()
        .filter_map(|s| p.service(&s.name))
        .map(|s| service_json(p, &s, reveal))
        .collect();
    json!({ "services": list })
}

pub(super) fn service(p: &Proxy, name: &str, reveal: bool) -> Result<Value, ApiError> {
    p.service(name)
        .map(|s| service_json(p, &s, reveal))
        .ok_or_else(|| no_such_service(name))
}

/// The last minutes of every service's traffic (or one's): a sample an
/// estimator interval, oldest first, the newest the last interval's.
pub(super) fn history(p: &Proxy, name: Option<&str>) -> Result<Value, ApiError> {
    let services = match name {
        Some(n) => vec![p.service(n).ok_or_else(|| no_such_service(n))?],
        None => p.services(),
    };
    let one = |s: &ServiceRuntime| {
        let h = s.history();
        let table = s.scheduler().dests();
        let real_servers: Vec<Value> = table
            .iter()
            .map(|d| {
                let active = s
                    .dest_runtime(d.addr())
                    .map(|rt| rt.active_history())
                    .unwrap_or_default();
                json!({"address": d.addr().to_string(), "active_conns": active})
            })
            .collect();
        json!({
            "name": s.name(),
            "cps": h.cps.to_vec(),
            "in_bps": h.in_bps.to_vec(),
            "out_bps": h.out_bps.to_vec(),
            "real_servers": real_servers,
        })
    };
    let list: Vec<Value> = services.iter().map(|s| one(s.as_ref())).collect();
    let mut v = json!({
        "interval": crate::stats::Estimator::INTERVAL.as_secs(),
        "samples": crate::history::SAMPLES,
    });
    match name {
        Some(_) => v["service"] = list.into_iter().next().unwrap_or_default(),
        None => v["services"] = Value::Array(list),
    }
    Ok(v)
}

pub(super) fn no_such_service(name: &str) -> ApiError {
    ApiError::new(
        hyper::StatusCode::NOT_FOUND,
        "no_such_service",
        format!("no service named {name:?}"),
    )
}

/// The live connection table, and persistence templates (state `NONE`,
/// client port 0), as `ipvsadm -lc` lists them.
pub(super) fn connections(p: &Proxy) -> Value {
    let now = crate::clock::now();
    let mut out = Vec::new();
    for svc in p.services() {
        let spec = svc.spec();
        for c in svc.conns.list() {
            out.push(json!({
                "service": svc.name(),
                "proto": proto_upper(c.proto),
                "client": c.client.to_string(),
                "vip": c.vip.to_string(),
                "server": c.server.to_string(),
                "state": c.state().name(),
                "expires": c.expires_in(&spec.timeouts).as_secs(),
            }));
        }
        for t in svc.scheduler().templates() {
            out.push(json!({
                "service": svc.name(),
                "proto": proto_upper(spec.proto),
                "client": std::net::SocketAddr::new(t.client, 0).to_string(),
                "vip": std::net::SocketAddr::new(t.vaddr, t.vport).to_string(),
                "server": t.dest.to_string(),
                "state": "NONE",
                "expires": t.expires.saturating_since(now).as_secs(),
                "template": true,
                "controlled": t.controlled,
                "pe_name": t.pe.as_ref().and(spec.persistence.engine).map(|e| e.name()),
                "pe_data": t.pe.as_deref().map(String::from_utf8_lossy),
            }));
        }
    }
    // Entries a master director synced here (a backup's).
    for f in p.sync().synced(now) {
        out.push(json!({
            "service": f.service,
            "proto": proto_upper(f.proto),
            "client": f.client.to_string(),
            "vip": f.vip.to_string(),
            "server": f.server.to_string(),
            "state": f.state,
            "expires": f.expires_in.as_secs(),
            "synced": true,
        }));
    }
    json!({ "connections": out })
}

/// `GET /api/v1/daemon`: the sync daemons, as `ipvsadm -L --daemon` lists
/// them, with what they counted.
pub(super) fn daemons(p: &Proxy) -> Value {
    let ld = std::sync::atomic::Ordering::Relaxed;
    let st = &p.sync().stats;
    let list: Vec<Value> = p
        .sync()
        .list()
        .into_iter()
        .map(|v| {
            json!({
                "state": v.daemon.state.name(),
                "mcast_interface": v.daemon.mcast_interface,
                "syncid": v.daemon.syncid,
                "sync_maxlen": v.sync_maxlen,
                "mcast_group": v.daemon.mcast_group.to_string(),
                "mcast_port": v.daemon.mcast_port,
                "mcast_ttl": v.daemon.mcast_ttl,
                "error": v.error,
            })
        })
        .collect();
    json!({
        "daemons": list,
        "stats": {
            "sent_messages": st.sent_messages.load(ld),
            "sent_entries": st.sent_entries.load(ld),
            "queue_drops": st.queue_drops.load(ld),
            "send_errors": st.send_errors.load(ld),
            "received_messages": st.received_messages.load(ld),
            "applied_entries": st.applied_entries.load(ld),
            "skipped_entries": st.skipped_entries.load(ld),
        },
    })
}

fn proto_upper(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "TCP",
        Proto::Udp => "UDP",
    }
}

pub(super) fn reload_status(p: &Proxy, r: Option<&Reloader>) -> Value {
    let mut v = json!({
        "generation": p.generation(),
        "config_hash": format!("{:016x}", p.config_hash()),
        "ready": p.is_ready(),
    });
    if let Some(r) = r {
        let s = r.status();
        let ld = std::sync::atomic::Ordering::Relaxed;
        v["file"] = json!(r.path().display().to_string());
        v["file_hash"] = json!(format!("{:016x}", s.config_hash.load(ld)));
        v["reloads"] = json!({
            "succeeded": s.succeeded.load(ld),
            "failed": s.failed.load(ld),
        });
        v["last_success_unix"] = json!(s.last_success_unix.load(ld));
        v["last_error"] = json!(s.last_error());
        v["upgrades"] = json!({
            "succeeded": s.upgrades_ok.load(ld),
            "failed": s.upgrades_failed.load(ld),
            "last_error": s.last_upgrade_error(),
        });
    }
    v
}

pub(super) fn timeouts(p: &Proxy) -> Value {
    let t = p.config().global.timeouts;
    json!({
        "tcp": t.tcp.as_secs(),
        "tcpfin": t.tcpfin.as_secs(),
        "udp": t.udp.as_secs(),
    })
}
