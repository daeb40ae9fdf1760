//! `GET /metrics`: the Prometheus text format.
//!
//! Nothing is counted twice: a scrape reads the counters the data plane
//! keeps anyway (atomics of services and real servers); the process
//! collector adds descriptors, memory and CPU. Labels are bounded:
//! service, real server, direction, reason — never a client.
//!
//! A scrape is written as it is sent: the body is produced in chunks of
//! about [`CHUNK`] bytes, family by family over every service, so that
//! its memory does not grow with the number of services and real servers.
//! `?scope=` chooses what is written, as HAProxy's exporter does.
//!
//! Every metric is documented in docs/metrics.md.

mod families;
mod text;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::Response;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderValue};
use prometheus::core::Collector;
use prometheus::{Encoder, TextEncoder};

use self::families::{Ctx, FAMILIES, Scope};
use self::text::{Kind, Lines};
use super::ApiError;
use crate::Proxy;
use crate::reload::ReloadStatus;
use crate::service::ServiceRuntime;

/// About how many bytes each chunk of a scrape holds.
const CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub(super) struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    proxy: Proxy,
    reload: Option<Arc<ReloadStatus>>,
    #[cfg(target_os = "linux")]
    process: prometheus::process_collector::ProcessCollector,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("metrics")
    }
}

/// What a scrape asked for (`?scope=`, repeated): nothing said is all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Scopes {
    global: bool,
    service: bool,
    real_server: bool,
}

impl Scopes {
    const ALL: Scopes = Scopes {
        global: true,
        service: true,
        real_server: true,
    };

    /// The scopes a query string names.
    fn parse(query: Option<&str>) -> Result<Scopes, ApiError> {
        let mut named = Scopes {
            global: false,
            service: false,
            real_server: false,
        };
        let mut any = false;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key != "scope" {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {key:?}: /metrics takes scope=global, scope=service, scope=real_server"
                )));
            }
            any = true;
            match value {
                "global" => named.global = true,
                "service" => named.service = true,
                "real_server" => named.real_server = true,
                // HAProxy's exporter: an empty scope asks for nothing (a
                // way to begin a list).
                "" => {}
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown scope {other:?}: global, service or real_server"
                    )));
                }
            }
        }
        Ok(if any { named } else { Scopes::ALL })
    }

    fn has(self, scope: Scope) -> bool {
        match scope {
            Scope::Service => self.service,
            Scope::RealServer => self.real_server,
        }
    }
}

impl Metrics {
    pub(super) fn new(proxy: Proxy, reload: Option<Arc<ReloadStatus>>) -> Metrics {
        Metrics {
            inner: Arc::new(Inner {
                proxy,
                reload,
                #[cfg(target_os = "linux")]
                process: prometheus::process_collector::ProcessCollector::for_self(),
            }),
        }
    }

    /// The response to `GET /metrics?QUERY`: its body is written as it is
    /// sent.
    pub(super) fn scrape(&self, query: Option<&str>) -> Result<Response<Scrape>, ApiError> {
        let scopes = Scopes::parse(query)?;
        let services = self.inner.proxy.services();
        // Live connections' bytes into the totals, as every read does.
        for s in &services {
            s.flush();
        }
        let histograms = self.inner.proxy.config().admin.real_server_histograms;
        let mut r = Response::new(Scrape {
            inner: Arc::clone(&self.inner),
            services,
            scopes,
            histograms,
            family: 0,
            service: 0,
            headed: false,
            tail_done: false,
        });
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    }
}

/// A scrape's body, written chunk by chunk as hyper asks for it.
pub(super) struct Scrape {
    inner: Arc<Inner>,
    services: Vec<Arc<ServiceRuntime>>,
    scopes: Scopes,
    histograms: bool,
    /// Where the writing stands: the family, and the service within it.
    family: usize,
    service: usize,
    /// Whether the current family's header was written.
    headed: bool,
    /// Whether the global families (configuration, process) were written.
    tail_done: bool,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrape")
            .field("family", &self.family)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Scrape {
    /// The next chunk, or `None` at the end.
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        let mut buf = Vec::with_capacity(CHUNK + CHUNK / 4);
        let ctx = Ctx {
            proxy: &self.inner.proxy,
        };
        while buf.len() < CHUNK {
            if let Some(f) = FAMILIES.get(self.family) {
                let wanted = self.scopes.has(f.scope) && (!f.opt_in || self.histograms);
                match self.services.get(self.service).filter(|_| wanted) {
                    Some(svc) => {
                        let mut lines = Lines {
                            buf: &mut buf,
                            name: f.name,
                            help: f.help,
                            kind: f.kind,
                            headed: &mut self.headed,
                        };
                        (f.write)(&ctx, svc, &mut lines);
                        self.service += 1;
                    }
                    None => {
                        self.family += 1;
                        self.service = 0;
                        self.headed = false;
                    }
                }
            } else if !self.tail_done {
                self.tail_done = true;
                if self.scopes.global {
                    self.write_global(&mut buf);
                }
            } else {
                break;
            }
        }
        (!buf.is_empty()).then_some(buf)
    }

    /// The configuration's and the process's families.
    fn write_global(&self, buf: &mut Vec<u8>) {
        let p = &self.inner.proxy;
        let mut one = |name: &'static str,
                       help: &'static str,
                       kind: Kind,
                       write: &mut dyn FnMut(&mut Lines<'_>)| {
            let mut headed = false;
            write(&mut Lines {
                buf,
                name,
                help,
                kind,
                headed: &mut headed,
            });
        };
        one(
            "rvs_config_generation",
            "Configurations applied since the start: reloads and admin API edits.",
            Kind::Gauge,
            &mut |l| l.int(&[], p.generation()),
        );
        let hash = format!("{:016x}", p.config_hash());
        one(
            "rvs_config_info",
            "The running configuration: its hash (of the configuration as rvs writes it back).",
            Kind::Gauge,
            &mut |l| l.int(&[("hash", &hash)], 1),
        );
        one(
            "rvs_build_info",
            "The rvs version.",
            Kind::Gauge,
            &mut |l| {
                l.int(&[("version", env!("CARGO_PKG_VERSION"))], 1);
            },
        );
        one(
            "rvs_ready",
            "1 when serving new connections (every listener bound, not draining).",
            Kind::Gauge,
            &mut |l| l.flag(&[], p.is_ready()),
        );
        if let Some(plan) = p.descriptor_plan() {
            one(
                "rvs_descriptors_budget",
                "The file descriptor plan: the soft limit, the reserve kept for the admin listener, health checks and reloads, what the data plane may hold, and the UDP sessions it allows.",
                Kind::Gauge,
                &mut |l| {
                    l.int(&[("part", "limit")], plan.limit);
                    l.int(&[("part", "reserve")], plan.reserve);
                    l.int(&[("part", "data_plane")], plan.data);
                    l.int(&[("part", "udp_sessions")], plan.udp_sessions);
                    l.int(
                        &[("part", "admin_connections")],
                        u64::from(plan.admin_connections),
                    );
                },
            );
        }
        let loads = p.worker_loads();
        if !loads.is_empty() {
            one(
                "rvs_worker_connections",
                "TCP connections each data-plane worker serves (with two workers or more).",
                Kind::Gauge,
                &mut |l| {
                    for (i, load) in loads.iter().enumerate() {
                        l.int(&[("worker", &i.to_string())], u64::from(load.connections));
                    }
                },
            );
            one(
                "rvs_worker_passed_total",
                "Connections a worker accepted and passed to a worker holding fewer.",
                Kind::Counter,
                &mut |l| {
                    for (i, load) in loads.iter().enumerate() {
                        l.int(&[("worker", &i.to_string())], load.passed);
                    }
                },
            );
        }
        let budget = &crate::fds::BUDGET;
        let (held, udp) = budget.held();
        one(
            "rvs_descriptors_held",
            "File descriptors the data plane holds: TCP connections' and UDP sessions' sockets and splice pipes (data_plane), of which UDP sessions' (udp_sessions).",
            Kind::Gauge,
            &mut |l| {
                l.int(&[("part", "data_plane")], held);
                l.int(&[("part", "udp_sessions")], udp);
            },
        );
        one(
            "rvs_descriptors_exhausted_total",
            "For want of descriptors in the data plane's share: TCP connections refused (tcp_refused), UDP sessions evicted to make room (udp_evicted), UDP datagrams dropped with no session to evict (udp_refused).",
            Kind::Counter,
            &mut |l| {
                l.int(
                    &[("event", "tcp_refused")],
                    budget.refused_tcp.load(Relaxed),
                );
                l.int(
                    &[("event", "udp_evicted")],
                    budget.evicted_udp.load(Relaxed),
                );
                l.int(
                    &[("event", "udp_refused")],
                    budget.refused_udp.load(Relaxed),
                );
            },
        );
        let daemons = p.sync().list();
        let st = &p.sync().stats;
        if !daemons.is_empty()
            || st.received_messages.load(Relaxed) > 0
            || st.sent_messages.load(Relaxed) > 0
        {
            one(
                "rvs_sync_daemon_up",
                "The sync daemons (ipvsadm --start-daemon), by state: 1 while its multicast socket is open, 0 while it waits for its interface.",
                Kind::Gauge,
                &mut |l| {
                    for d in &daemons {
                        l.flag(
                            &[
                                ("state", d.daemon.state.name()),
                                ("interface", &d.daemon.mcast_interface),
                            ],
                            d.error.is_none(),
                        );
                    }
                },
            );
            one(
                "rvs_sync_sent_total",
                "What the master sync daemon sent: messages, and the entries in them.",
                Kind::Counter,
                &mut |l| {
                    l.int(&[("what", "messages")], st.sent_messages.load(Relaxed));
                    l.int(&[("what", "entries")], st.sent_entries.load(Relaxed));
                },
            );
            one(
                "rvs_sync_lost_total",
                "Entries the data plane could not queue for the master sync daemon (queue_full: it never waits), and messages the socket refused (send_error).",
                Kind::Counter,
                &mut |l| {
                    l.int(&[("reason", "queue_full")], st.queue_drops.load(Relaxed));
                    l.int(&[("reason", "send_error")], st.send_errors.load(Relaxed));
                },
            );
            one(
                "rvs_sync_received_total",
                "What the backup sync daemon received: messages read, entries applied, entries skipped (a protocol, state, engine, service or real server this director has not).",
                Kind::Counter,
                &mut |l| {
                    l.int(&[("what", "messages")], st.received_messages.load(Relaxed));
                    l.int(&[("what", "applied")], st.applied_entries.load(Relaxed));
                    l.int(&[("what", "skipped")], st.skipped_entries.load(Relaxed));
                },
            );
            one(
                "rvs_sync_dropped_total",
                "Received messages (or their rest) dropped as the kernel's backup drops them, by reason: too_short, bad_size, other_syncid, truncated, unknown_version, bad_option.",
                Kind::Counter,
                &mut |l| {
                    let names = [
                        "too_short",
                        "bad_size",
                        "other_syncid",
                        "truncated",
                        "unknown_version",
                        "bad_option",
                    ];
                    for (name, n) in names.iter().zip(&st.dropped) {
                        l.int(&[("reason", name)], n.load(Relaxed));
                    }
                },
            );
        }
        let routed = p.routed_addresses();
        if !routed.is_empty() {
            one(
                "rvs_sni_refused_total",
                "Connections to an address that services share by their match, closed before one took them: the ClientHello not all there within timeouts.client_hello (timeout), over 16 KiB (too_large), the client gone first (closed), no service matching and no default (no_match), or a bad PROXY header (proxy_header); UDP: more QUIC flows waiting for the rest of their hello than a listener keeps (backlog).",
                Kind::Counter,
                &mut |l| {
                    for (proto, addr, refusals) in &routed {
                        let (listen, proto) = (addr.to_string(), proto.to_string());
                        for why in crate::sni::read::Refused::ALL {
                            l.int(
                                &[
                                    ("proto", &proto),
                                    ("listen", &listen),
                                    ("reason", why.name()),
                                ],
                                refusals.get(why),
                            );
                        }
                    }
                },
            );
        }
        if let Some(r) = &self.inner.reload {
            one(
                "rvs_config_reloads_total",
                "Reloads of the configuration file, by result.",
                Kind::Counter,
                &mut |l| {
                    l.int(&[("result", "success")], r.succeeded.load(Relaxed));
                    l.int(&[("result", "failure")], r.failed.load(Relaxed));
                },
            );
            one(
                "rvs_config_last_reload_success_timestamp_seconds",
                "Unix time of the last configuration applied from the file (the start counts).",
                Kind::Gauge,
                &mut |l| l.int(&[], r.last_success_unix.load(Relaxed)),
            );
            one(
                "rvs_config_last_reload_failed",
                "1 when the last reload was refused (the previous configuration runs).",
                Kind::Gauge,
                &mut |l| l.flag(&[], r.last_error().is_some()),
            );
            one(
                "rvs_binary_upgrades_total",
                "Binary upgrades on SIGUSR2, by result: success (handed over; this process then drains) or failure (this process kept serving).",
                Kind::Counter,
                &mut |l| {
                    l.int(&[("result", "success")], r.upgrades_ok.load(Relaxed));
                    l.int(&[("result", "failure")], r.upgrades_failed.load(Relaxed));
                },
            );
        }
        #[cfg(target_os = "linux")]
        {
            let families = self.inner.process.collect();
            if let Err(e) = TextEncoder::new().encode(&families, buf) {
                tracing::warn!(error = %e, "metrics: cannot encode the process's metrics");
            }
        }
    }
}

impl Body for Scrape {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(
            self.get_mut()
                .next_chunk()
                .map(|c| Ok(Frame::data(Bytes::from(c)))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.tail_done && self.family >= FAMILIES.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use hyper::StatusCode;

    use super::*;

    #[test]
    fn scopes_are_read_as_haproxy_reads_them() {
        assert_eq!(Scopes::parse(None).ok(), Some(Scopes::ALL));
        assert_eq!(Scopes::parse(Some("")).ok(), Some(Scopes::ALL));
        let s = Scopes::parse(Some("scope=service&scope=global")).ok();
        assert_eq!(
            s,
            Some(Scopes {
                global: true,
                service: true,
                real_server: false
            })
        );
        let none = Scopes::parse(Some("scope=")).ok();
        assert_eq!(
            none,
            Some(Scopes {
                global: false,
                service: false,
                real_server: false
            })
        );
        for bad in ["scope=backend", "format=json", "scope=service&x=1"] {
            let e = Scopes::parse(Some(bad)).err();
            assert!(
                e.is_some_and(|e| e.status == StatusCode::BAD_REQUEST),
                "{bad}"
            );
        }
    }
}
