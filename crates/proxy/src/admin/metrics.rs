//! `GET /metrics`: the Prometheus text format.
//!
//! Nothing is counted twice: at each scrape a collector reads the counters
//! the data plane keeps anyway (atomics of services and real servers) and
//! builds the metric families; the process collector adds file
//! descriptors, memory and CPU. Labels are bounded: service, real server,
//! direction, reason — never a client.
//!
//! Every metric is documented in docs/metrics.md.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::Proxy;
use crate::config::Proto;
use crate::reload::{ReloadStatus, content_hash};
use crate::stats::{LATENCY_BUCKETS, Refusal};

#[derive(Debug)]
pub(super) struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub(super) fn new(proxy: Proxy, reload: Option<Arc<ReloadStatus>>) -> Metrics {
        let registry = Registry::new();
        // Registering a fresh collector in a fresh registry cannot clash.
        let _ = registry.register(Box::new(RvsCollector { proxy, reload }));
        #[cfg(target_os = "linux")]
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Metrics { registry }
    }

    pub(super) fn render(&self) -> Response<Full<Bytes>> {
        let families = self.registry.gather();
        let mut out = Vec::with_capacity(16 * 1024);
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&families, &mut out) {
            return super::respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                format!("cannot encode the metrics: {e}\n"),
            );
        }
        super::respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            out,
        )
    }
}

struct RvsCollector {
    proxy: Proxy,
    reload: Option<Arc<ReloadStatus>>,
}

impl std::fmt::Debug for RvsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RvsCollector")
    }
}

/// One metric family being built.
struct Family {
    mf: MetricFamily,
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut l = LabelPair::default();
            l.set_name((*k).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Family {
        let mut mf = MetricFamily::default();
        mf.set_name(name.to_owned());
        mf.set_help(help.to_owned());
        mf.set_field_type(kind);
        Family { mf }
    }

    fn counter(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::COUNTER)
    }

    fn gauge(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::GAUGE)
    }

    fn add(&mut self, pairs: &[(&str, &str)], value: f64) {
        let mut m = Metric::default();
        m.set_label(labels(pairs));
        match self.mf.get_field_type() {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.mf.mut_metric().push(m);
    }

    fn add_histogram(&mut self, pairs: &[(&str, &str)], cumulative: &[u64], count: u64, sum: f64) {
        let mut h = Histogram::default();
        let buckets = LATENCY_BUCKETS
            .iter()
            .zip(cumulative)
            .map(|(&le, &n)| {
                let mut b = Bucket::default();
                b.set_upper_bound(le);
                b.set_cumulative_count(n);
                b
            })
            .collect();
        h.set_bucket(buckets);
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        let mut m = Metric::default();
        m.set_label(labels(pairs));
        m.set_histogram(h);
        self.mf.mut_metric().push(m);
    }
}

/// The families, in the order docs/metrics.md lists them.
struct Families {
    svc_conns: Family,
    svc_active: Family,
    svc_inactive: Family,
    svc_packets: Family,
    svc_bytes: Family,
    svc_refused: Family,
    svc_connect_failures: Family,
    svc_retries: Family,
    svc_templates: Family,
    svc_quorum: Family,
    svc_sorry: Family,
    svc_expired_nodest: Family,
    svc_sources: Family,
    dns_resolutions: Family,
    dns_servers: Family,
    dns_failing: Family,
    udp_sessions: Family,
    udp_datagrams: Family,
    udp_evictions: Family,
    udp_expired: Family,
    rs_conns: Family,
    rs_active: Family,
    rs_inactive: Family,
    rs_persistent: Family,
    rs_packets: Family,
    rs_bytes: Family,
    rs_weight: Family,
    rs_available: Family,
    rs_overloaded: Family,
    rs_connect_failures: Family,
    rs_latency: Family,
    rs_up: Family,
    rs_checks: Family,
}

impl Families {
    fn new() -> Families {
        use Family as F;
        Families {
            svc_conns: F::counter(
                "rvs_service_connections_total",
                "Connections (TCP) and sessions (UDP) given a real server, retries included.",
            ),
            svc_active: F::gauge(
                "rvs_service_active_connections",
                "TCP connections established on both sides and not half-closed (ipvsadm ActiveConn).",
            ),
            svc_inactive: F::gauge(
                "rvs_service_inactive_connections",
                "TCP connections connecting or half-closed, and UDP sessions (ipvsadm InActConn).",
            ),
            svc_packets: F::counter(
                "rvs_service_packets_total",
                "Packets from (in) and to (out) clients: TCP segments of the client connection, counted when it ends; UDP datagrams.",
            ),
            svc_bytes: F::counter(
                "rvs_service_bytes_total",
                "Bytes from (in) and to (out) clients.",
            ),
            svc_refused: F::counter("rvs_service_refused_total", "Clients refused, by reason."),
            svc_connect_failures: F::counter(
                "rvs_service_connect_failures_total",
                "Connects to real servers that failed or timed out.",
            ),
            svc_retries: F::counter(
                "rvs_service_retries_total",
                "Connections retried on another real server after a failed connect.",
            ),
            svc_templates: F::gauge(
                "rvs_service_persistence_templates",
                "Live persistence templates.",
            ),
            svc_quorum: F::gauge(
                "rvs_service_quorum_up",
                "1 while the live real servers' weight meets the quorum.",
            ),
            svc_sorry: F::gauge(
                "rvs_service_sorry_server_active",
                "1 while the sorry server takes the service's connections.",
            ),
            svc_expired_nodest: F::counter(
                "rvs_service_expired_nodest_total",
                "TCP connections reset and UDP sessions ended because their real server left the table (global.expire_nodest_conn).",
            ),
            svc_sources: F::gauge(
                "rvs_service_sources_tracked",
                "Client groups (addresses, or networks of per_source's prefix) tracked by per_source limits; at most per_source.max_sources.",
            ),
            dns_resolutions: F::counter(
                "rvs_dns_resolutions_total",
                "Resolutions of a dns: or srv: real-server entry, by result (ok, nxdomain, no_records, failed).",
            ),
            dns_servers: F::gauge(
                "rvs_dns_servers",
                "Real servers in force for a dns: or srv: entry, those leaving included.",
            ),
            dns_failing: F::gauge(
                "rvs_dns_failing",
                "1 while the last answer for a dns: or srv: entry was not good (the servers in force stay).",
            ),
            udp_sessions: F::gauge("rvs_udp_sessions", "Live UDP sessions."),
            udp_datagrams: F::counter(
                "rvs_udp_datagrams_total",
                "UDP datagrams from (in) and to (out) clients.",
            ),
            udp_evictions: F::counter(
                "rvs_udp_session_evictions_total",
                "UDP sessions evicted to stay within udp.max_sessions.",
            ),
            udp_expired: F::counter(
                "rvs_udp_session_expirations_total",
                "UDP sessions ended by their idle timeout.",
            ),
            rs_conns: F::counter(
                "rvs_real_server_connections_total",
                "Connections scheduled to the real server.",
            ),
            rs_active: F::gauge(
                "rvs_real_server_active_connections",
                "Active connections of the real server (ipvsadm ActiveConn).",
            ),
            rs_inactive: F::gauge(
                "rvs_real_server_inactive_connections",
                "Inactive connections of the real server (ipvsadm InActConn).",
            ),
            rs_persistent: F::gauge(
                "rvs_real_server_persistent_connections",
                "Persistence templates pointing at the real server (ipvsadm PersistConn).",
            ),
            rs_packets: F::counter(
                "rvs_real_server_packets_total",
                "Packets from (in) and to (out) the clients of the real server.",
            ),
            rs_bytes: F::counter(
                "rvs_real_server_bytes_total",
                "Bytes from (in) and to (out) the clients of the real server.",
            ),
            rs_weight: F::gauge(
                "rvs_real_server_weight",
                "Weight of the real server; 0 is quiescent.",
            ),
            rs_available: F::gauge(
                "rvs_real_server_available",
                "1 when the real server takes new connections: weight above 0 and not overloaded.",
            ),
            rs_overloaded: F::gauge(
                "rvs_real_server_overloaded",
                "1 when the real server is over its upper connection threshold.",
            ),
            rs_connect_failures: F::counter(
                "rvs_real_server_connect_failures_total",
                "Connects to the real server that failed or timed out.",
            ),
            rs_latency: F::new(
                "rvs_real_server_connect_duration_seconds",
                "Time to connect to the real server.",
                MetricType::HISTOGRAM,
            ),
            rs_up: F::gauge(
                "rvs_real_server_up",
                "1 when the configured real server passes its health checks (always 1 without checks).",
            ),
            rs_checks: F::counter(
                "rvs_real_server_health_checks_total",
                "Health checks run on the real server, by result.",
            ),
        }
    }

    fn into_vec(self) -> Vec<MetricFamily> {
        [
            self.svc_conns,
            self.svc_active,
            self.svc_inactive,
            self.svc_packets,
            self.svc_bytes,
            self.svc_refused,
            self.svc_connect_failures,
            self.svc_retries,
            self.svc_templates,
            self.svc_quorum,
            self.svc_sorry,
            self.svc_expired_nodest,
            self.svc_sources,
            self.dns_resolutions,
            self.dns_servers,
            self.dns_failing,
            self.udp_sessions,
            self.udp_datagrams,
            self.udp_evictions,
            self.udp_expired,
            self.rs_conns,
            self.rs_active,
            self.rs_inactive,
            self.rs_persistent,
            self.rs_packets,
            self.rs_bytes,
            self.rs_weight,
            self.rs_available,
            self.rs_overloaded,
            self.rs_connect_failures,
            self.rs_latency,
            self.rs_up,
            self.rs_checks,
        ]
        .into_iter()
        .map(|f| f.mf)
        .collect()
    }
}

impl RvsCollector {
    fn services(&self) -> Vec<MetricFamily> {
        let mut f = Families::new();
        for svc in self.proxy.services() {
            svc.flush();
            let spec = svc.spec();
            let name = svc.name();
            let proto = spec.proto.to_string();
            let s = [("service", name), ("proto", proto.as_str())];
            let t = svc.stats.totals();
            let sched = svc.scheduler();
            let dests = sched.dests();
            let active: u64 = dests.iter().map(|d| u64::from(d.active_conns())).sum();
            let inactive: u64 = dests.iter().map(|d| u64::from(d.inactive_conns())).sum();
            f.svc_conns.add(&s, t.conns as f64);
            f.svc_active.add(&s, active as f64);
            f.svc_inactive.add(&s, inactive as f64);
            for (dir, p, b) in [
                ("in", t.in_pkts, t.in_bytes),
                ("out", t.out_pkts, t.out_bytes),
            ] {
                let l = [s[0], s[1], ("direction", dir)];
                f.svc_packets.add(&l, p as f64);
                f.svc_bytes.add(&l, b as f64);
            }
            for r in Refusal::ALL {
                f.svc_refused.add(
                    &[s[0], s[1], ("reason", r.name())],
                    svc.stats.refused(r) as f64,
                );
            }
            f.svc_connect_failures
                .add(&s, svc.stats.connect_failures.load(Relaxed) as f64);
            f.svc_retries
                .add(&s, svc.stats.retries.load(Relaxed) as f64);
            f.svc_templates.add(&s, sched.template_count() as f64);
            let quorum_up = svc.quorum_up();
            f.svc_quorum.add(&s, if quorum_up { 1.0 } else { 0.0 });
            let sorry_on = !quorum_up
                && spec
                    .health
                    .sorry_server
                    .is_some_and(|a| dests.iter().any(|d| d.addr() == a));
            f.svc_sorry.add(&s, if sorry_on { 1.0 } else { 0.0 });
            f.svc_expired_nodest
                .add(&s, svc.stats.expired_nodest.load(Relaxed) as f64);
            if spec.per_source.is_some() {
                f.svc_sources.add(&s, svc.sources_tracked() as f64);
            }
            if !spec.discovery.is_empty() {
                for e in self.proxy.discovery_status(name) {
                    let l = [("service", name), ("entry", e.target.as_str())];
                    for (result, n) in crate::discovery::RESULTS.iter().zip(e.by_result) {
                        f.dns_resolutions
                            .add(&[l[0], l[1], ("result", result)], n as f64);
                    }
                    f.dns_servers.add(&l, e.servers as f64);
                    f.dns_failing
                        .add(&l, if e.failing.is_some() { 1.0 } else { 0.0 });
                }
            }
            let health = svc.health();
            for r in &spec.real_servers {
                let addr = r.address.to_string();
                let l = [("service", name), ("real_server", addr.as_str())];
                let h = health.get(&r.address);
                f.rs_up
                    .add(&l, if h.is_none_or(|h| h.up) { 1.0 } else { 0.0 });
                if let Some(h) = h.filter(|h| h.checked) {
                    let pass = h.checks_run - h.checks_failed;
                    f.rs_checks
                        .add(&[l[0], l[1], ("result", "pass")], pass as f64);
                    f.rs_checks
                        .add(&[l[0], l[1], ("result", "fail")], h.checks_failed as f64);
                }
            }
            if spec.proto == Proto::Udp {
                let u = [("service", name)];
                f.udp_sessions.add(&u, svc.open() as f64);
                f.udp_datagrams
                    .add(&[u[0], ("direction", "in")], t.in_pkts as f64);
                f.udp_datagrams
                    .add(&[u[0], ("direction", "out")], t.out_pkts as f64);
                f.udp_evictions
                    .add(&u, svc.stats.evictions.load(Relaxed) as f64);
                f.udp_expired
                    .add(&u, svc.stats.expired.load(Relaxed) as f64);
            }
            for d in &dests {
                let addr = d.addr().to_string();
                let l = [("service", name), ("real_server", addr.as_str())];
                let tr = d.traffic();
                f.rs_conns.add(&l, d.conns_total() as f64);
                f.rs_active.add(&l, f64::from(d.active_conns()));
                f.rs_inactive.add(&l, f64::from(d.inactive_conns()));
                f.rs_persistent.add(&l, f64::from(d.persist_conns()));
                for (dir, p, b) in [
                    ("in", tr.in_pkts, tr.in_bytes),
                    ("out", tr.out_pkts, tr.out_bytes),
                ] {
                    let ld = [l[0], l[1], ("direction", dir)];
                    f.rs_packets.add(&ld, p as f64);
                    f.rs_bytes.add(&ld, b as f64);
                }
                f.rs_weight.add(&l, f64::from(d.weight()));
                f.rs_available
                    .add(&l, if d.is_available() { 1.0 } else { 0.0 });
                f.rs_overloaded
                    .add(&l, if d.is_overloaded() { 1.0 } else { 0.0 });
                f.rs_connect_failures.add(&l, d.connect_failures() as f64);
                if let Some(rt) = svc.dest_runtime(d.addr()) {
                    let (cumulative, count, sum) = rt.latency.snapshot();
                    f.rs_latency.add_histogram(&l, &cumulative, count, sum);
                }
            }
        }
        f.into_vec()
    }

    fn config(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        let mut generation = Family::gauge(
            "rvs_config_generation",
            "Configurations applied since the start: reloads and admin API edits.",
        );
        generation.add(&[], self.proxy.generation() as f64);
        out.push(generation.mf);
        let hash = format!("{:016x}", content_hash(&self.proxy.config().to_yaml()));
        let mut info = Family::gauge(
            "rvs_config_info",
            "The running configuration: its hash (of the configuration as rvs writes it back).",
        );
        info.add(&[("hash", hash.as_str())], 1.0);
        out.push(info.mf);
        let mut build = Family::gauge("rvs_build_info", "The rvs version.");
        build.add(&[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        out.push(build.mf);
        let mut ready = Family::gauge(
            "rvs_ready",
            "1 when serving new connections (every listener bound, not draining).",
        );
        ready.add(&[], if self.proxy.is_ready() { 1.0 } else { 0.0 });
        out.push(ready.mf);
        if let Some(r) = &self.reload {
            let mut reloads = Family::counter(
                "rvs_config_reloads_total",
                "Reloads of the configuration file, by result.",
            );
            reloads.add(&[("result", "success")], r.succeeded.load(Relaxed) as f64);
            reloads.add(&[("result", "failure")], r.failed.load(Relaxed) as f64);
            out.push(reloads.mf);
            let mut last = Family::gauge(
                "rvs_config_last_reload_success_timestamp_seconds",
                "Unix time of the last configuration applied from the file (the start counts).",
            );
            last.add(&[], r.last_success_unix.load(Relaxed) as f64);
            out.push(last.mf);
            let mut failed = Family::gauge(
                "rvs_config_last_reload_failed",
                "1 when the last reload was refused (the previous configuration runs).",
            );
            failed.add(&[], if r.last_error().is_some() { 1.0 } else { 0.0 });
            out.push(failed.mf);
            let mut upgrades = Family::counter(
                "rvs_binary_upgrades_total",
                "Binary upgrades on SIGUSR2, by result: success (handed over; this process then drains) or failure (this process kept serving).",
            );
            upgrades.add(&[("result", "success")], r.upgrades_ok.load(Relaxed) as f64);
            upgrades.add(
                &[("result", "failure")],
                r.upgrades_failed.load(Relaxed) as f64,
            );
            out.push(upgrades.mf);
        }
        out
    }
}

impl Collector for RvsCollector {
    fn desc(&self) -> Vec<&Desc> {
        // The families vary with the configuration: they are described as
        // they are collected.
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut v = self.services();
        v.extend(self.config());
        v
    }
}
