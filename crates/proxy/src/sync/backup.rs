//! The backup daemon's task, and what it keeps: every datagram from the
//! group is read as the kernel's backup reads it ([`wire::decode`], the
//! sync ID filter included) and applied as `ip_vs_proc_conn()` applies
//! it, each entry's timeout restarting on receipt.
//!
//! - A template goes into its service's scheduler: the client goes to the
//!   synced server whatever this director's scheduler would choose.
//! - A UDP session waits in [`Synced`] for its client's next datagram,
//!   which opens a session on the synced server.
//! - A TCP connection is kept in [`Synced`] for `rvsadm -Lnc` and, bound to
//!   its server, for the scheduler's counts, until its timeout.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rvs_sched::{Conn, Scope, Time};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::wire::{self, Entry, flags, proto, tcp_state};
use super::{Daemons, Status, lock, mark_addr, open_retrying, socket};
use crate::config::Proto;
use crate::config::sync::SyncDaemon;
use crate::proxy::Proxy;
use crate::service::ServiceRuntime;

/// A template's timeout when a version 0 message gave none
/// (`ip_vs_proc_conn()`: 3 minutes).
const V0_TEMPLATE: Duration = Duration::from_secs(180);

pub(super) async fn run(
    d: SyncDaemon,
    daemons: Arc<Daemons>,
    proxy: Weak<crate::proxy::Inner>,
    status: Arc<Mutex<Status>>,
    stop: CancellationToken,
) {
    let maxlen = socket::maxlen(&d);
    lock(&status).maxlen = maxlen;
    let Some(sock) = open_retrying(&d, &status, &stop, socket::receiver, || {}).await else {
        return;
    };
    let mut buf = vec![0u8; usize::from(maxlen)];
    loop {
        let n = tokio::select! {
            () = stop.cancelled() => return,
            r = sock.recv(&mut buf) => match r {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        let Some(p) = Proxy::upgrade(&proxy) else {
            return;
        };
        daemons.stats.received_messages.fetch_add(1, Relaxed);
        let got = match wire::decode(&buf[..n], d.syncid) {
            Ok(got) => got,
            Err(why) => {
                count_drop(&daemons, why);
                debug!(reason = why.name(), "sync backup: message dropped");
                continue;
            }
        };
        if let Some(why) = got.dropped {
            count_drop(&daemons, why);
        }
        daemons
            .stats
            .skipped_entries
            .fetch_add(u64::from(got.skipped), Relaxed);
        let now = crate::clock::now();
        for e in got.entries {
            if apply(&p, &daemons.synced, &e, now) {
                daemons.stats.applied_entries.fetch_add(1, Relaxed);
            } else {
                daemons.stats.skipped_entries.fetch_add(1, Relaxed);
            }
        }
    }
}

fn count_drop(daemons: &Daemons, why: wire::Dropped) {
    daemons.stats.dropped[why.index()].fetch_add(1, Relaxed);
}

/// The service an entry is of: by firewall mark, or by protocol and
/// virtual address (and port, but for a service-wide template).
fn service_of(p: &Proxy, e: &Entry) -> Option<Arc<ServiceRuntime>> {
    p.services().into_iter().find(|svc| {
        let spec = svc.spec();
        let scope = spec.sched.persistence.map(|p| p.scope);
        if e.protocol == proto::IP || (e.fwmark != 0 && spec.persistence.fwmark.is_some()) {
            return spec.persistence.fwmark.is_some_and(|m| {
                m == e.fwmark || (e.is_template() && mark_addr(m, e.vaddr) == e.vaddr)
            });
        }
        if super::protocol(spec.proto) != e.protocol {
            return false;
        }
        spec.listen.iter().any(|a| {
            let ip_matches = a.ip() == e.vaddr || a.ip().is_unspecified();
            ip_matches
                && (a.port() == e.vport
                    || (e.is_template() && e.vport == 0 && scope == Some(Scope::Service)))
        })
    })
}

/// The real server an entry names: its address and port, or, for a port
/// of 0 on either side, the one server of that address.
fn dest_of(svc: &ServiceRuntime, ip: IpAddr, port: u16) -> Option<SocketAddr> {
    let sched = svc.scheduler();
    let exact = SocketAddr::new(ip, port);
    if sched.dest(exact).is_some() {
        return Some(exact);
    }
    let zero = SocketAddr::new(ip, 0);
    if sched.dest(zero).is_some() {
        return Some(zero);
    }
    if port == 0 {
        let mut same = sched.dests().into_iter().filter(|d| d.addr().ip() == ip);
        if let (Some(one), None) = (same.next(), same.next()) {
            return Some(one.addr());
        }
    }
    None
}

/// Applies one entry; false when this director has no use for it.
fn apply(p: &Proxy, synced: &Synced, e: &Entry, now: Time) -> bool {
    let Some(svc) = service_of(p, e) else {
        return false;
    };
    let Some(dest) = dest_of(&svc, e.daddr, e.dport) else {
        return false;
    };
    let spec = svc.spec();
    if e.is_template() {
        let timeout = if e.timeout > 0 {
            Duration::from_secs(u64::from(e.timeout))
        } else {
            V0_TEMPLATE
        };
        let pe = e.pe.as_ref().map(|(_, data)| data.as_slice());
        svc.scheduler().adopt_template(
            e.caddr,
            e.vaddr,
            e.vport,
            pe,
            dest,
            now.saturating_add(timeout),
        );
        return true;
    }
    let (proto, timeout) = match e.protocol {
        proto::TCP if spec.proto == Proto::Tcp => {
            let t = match e.state {
                tcp_state::ESTABLISHED => spec.timeouts.tcp,
                tcp_state::FIN_WAIT | tcp_state::CLOSE_WAIT => spec.timeouts.tcpfin,
                _ => Duration::from_secs(10),
            };
            (Proto::Tcp, t)
        }
        proto::UDP if spec.proto == Proto::Udp => (Proto::Udp, spec.timeouts.udp),
        _ => return false,
    };
    let timeout = if e.timeout > 0 {
        Duration::from_secs(u64::from(e.timeout))
    } else {
        timeout
    };
    let client = SocketAddr::new(e.caddr, e.cport);
    let vip = SocketAddr::new(e.vaddr, e.vport);
    let active =
        proto == Proto::Tcp && e.state == tcp_state::ESTABLISHED && e.flags & flags::INACTIVE == 0;
    synced.put(
        (proto, client, vip),
        Flow {
            service: svc.name().to_owned(),
            dest,
            state: e.state,
            expires: now.saturating_add(timeout),
            conn: None,
        },
        active,
        || svc.scheduler().adopt(client, vip, dest),
    );
    true
}

/// A synced UDP session or TCP connection.
#[derive(Debug)]
struct Flow {
    service: String,
    dest: SocketAddr,
    /// The kernel's state number.
    state: u16,
    expires: Time,
    /// Bound to its server while it lives.
    conn: Option<Conn>,
}

/// A synced flow as `rvsadm -Lnc` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncedView {
    /// Its service.
    pub service: String,
    /// TCP or UDP.
    pub proto: Proto,
    /// The client.
    pub client: SocketAddr,
    /// The virtual address it was sent to.
    pub vip: SocketAddr,
    /// Its real server.
    pub server: SocketAddr,
    /// The state's name, as IPVS's (`ESTABLISHED`, `FIN_WAIT`, `UDP`, …).
    pub state: &'static str,
    /// Until it expires.
    pub expires_in: Duration,
}

type Key = (Proto, SocketAddr, SocketAddr);

/// What a backup received and keeps: UDP sessions and TCP connections.
#[derive(Debug, Default)]
pub(crate) struct Synced {
    len: AtomicUsize,
    flows: Mutex<HashMap<Key, Flow>>,
}

impl Synced {
    fn put(&self, key: Key, mut flow: Flow, active: bool, adopt: impl FnOnce() -> Option<Conn>) {
        let mut flows = lock(&self.flows);
        match flows.get_mut(&key) {
            // The same server: the entry is updated, its count moved.
            Some(old) if old.dest == flow.dest && old.service == flow.service => {
                old.state = flow.state;
                old.expires = flow.expires;
                if let Some(c) = &mut old.conn {
                    if active { c.established() } else { c.fin() }
                }
            }
            _ => {
                flow.conn = adopt();
                if let Some(c) = &mut flow.conn
                    && active
                {
                    c.established();
                }
                flows.insert(key, flow);
            }
        }
        self.len.store(flows.len(), Relaxed);
    }

    /// Whether anything is kept: the data plane's one check.
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Relaxed) == 0
    }

    /// The real server of a synced UDP session of `client` to `vip` of
    /// `service`, taken out: its client's datagram opens a session there.
    pub(crate) fn take_udp(
        &self,
        service: &str,
        client: SocketAddr,
        vip: SocketAddr,
    ) -> Option<SocketAddr> {
        let mut flows = lock(&self.flows);
        let key = (Proto::Udp, client, vip);
        let dest = flows
            .get(&key)
            .filter(|f| f.service == service)
            .map(|f| f.dest)?;
        flows.remove(&key);
        self.len.store(flows.len(), Relaxed);
        Some(dest)
    }

    /// Drops what expired by `now`.
    pub(crate) fn sweep(&self, now: Time) {
        if self.is_empty() {
            return;
        }
        let mut flows = lock(&self.flows);
        flows.retain(|_, f| f.expires > now);
        self.len.store(flows.len(), Relaxed);
    }

    /// Every flow kept, for `rvsadm -Lnc`.
    pub(crate) fn list(&self, now: Time) -> Vec<SyncedView> {
        let flows = lock(&self.flows);
        flows
            .iter()
            .map(|(&(proto, client, vip), f)| SyncedView {
                service: f.service.clone(),
                proto,
                client,
                vip,
                server: f.dest,
                state: state_name(proto, f.state),
                expires_in: f.expires.saturating_since(now),
            })
            .collect()
    }
}

/// `ip_vs_state_name()`'s names.
fn state_name(p: Proto, state: u16) -> &'static str {
    if p == Proto::Udp {
        return "UDP";
    }
    const TCP: [&str; 11] = [
        "NONE",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "SYNACK",
    ];
    TCP.get(usize::from(state)).copied().unwrap_or("ERR!")
}
