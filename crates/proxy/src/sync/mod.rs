//! IPVS's connection synchronisation between directors (`ip_vs_sync.c`,
//! `ipvsadm --start-daemon`): a master multicasts this director's
//! persistence templates, UDP sessions and TCP connections; a backup
//! applies what it receives, so that after a failover a persistent client
//! reaches the server it had, and a UDP flow keeps its server. Both speak
//! the kernel's protocol version 1 ([`wire`]), so an rvs director and a
//! kernel director can back each other up.
//!
//! - The data plane never waits for the master: what it has to say goes
//!   into a bounded queue (`try_send`); a full queue drops the entry and
//!   counts it. A director without a master daemon pays one atomic load.
//! - A backup keeps templates in the scheduler ([`rvs_sched::Service::adopt_template`]),
//!   UDP sessions until their client's next datagram opens a session on
//!   the synced server, and TCP connections for `rvsadm -Lnc` and the
//!   scheduler's counts: a userspace proxy cannot adopt another process's
//!   TCP sockets, so a client whose connection was on the old director
//!   reconnects, and its template sends it back to its server.
//!
//! What is sent, and when, follows `ip_vs_sync_conn_needed()`: a TCP
//! connection once established and at each state change after (closing);
//! a UDP session at its `sync_threshold`-th datagram and every
//! `sync_period` datagrams after; with either, the template that controls
//! it. rvs sends a template at most once a second (the kernel sends it with
//! every synced packet of its connections).

mod backup;
mod master;
mod socket;
pub mod wire;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::sync::{SyncDaemon, SyncSettings, SyncState};
use crate::config::{Proto, ServiceSpec};
pub(crate) use backup::Synced;
pub use backup::SyncedView;
use rvs_sched::Scope;

/// Entries the master's queue holds before the data plane's are dropped.
const QUEUE: usize = 8192;

/// What the sync daemons count.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Messages the master sent.
    pub sent_messages: AtomicU64,
    /// Entries in them.
    pub sent_entries: AtomicU64,
    /// Entries the data plane could not queue (the master's queue full).
    pub queue_drops: AtomicU64,
    /// Messages the master could not send (the socket refused them).
    pub send_errors: AtomicU64,
    /// Messages the backup read.
    pub received_messages: AtomicU64,
    /// Entries the backup applied.
    pub applied_entries: AtomicU64,
    /// Datagrams (or their rest) the backup dropped, as the kernel drops
    /// them: by [`wire::Dropped`] reason, in its order.
    pub dropped: [AtomicU64; wire::Dropped::ALL.len()],
    /// Entries skipped: a protocol, state or engine the backup cannot use,
    /// or a service or real server it does not have.
    pub skipped_entries: AtomicU64,
}

/// A running daemon, as `ipvsadm -L --daemon` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonView {
    /// The daemon as configured, with the kernel's defaults in place.
    pub daemon: SyncDaemon,
    /// The largest message, as the kernel computes it from the interface.
    pub sync_maxlen: u16,
    /// Why its socket is not open, while it is not.
    pub error: Option<String>,
}

/// The sync daemons of a proxy, and what the data plane tells the master.
#[derive(Debug, Default)]
pub struct Daemons {
    /// A master runs: the data plane's one check.
    master_on: AtomicBool,
    queue: ArcSwapOption<mpsc::Sender<wire::Entry>>,
    /// `sync_threshold` and `sync_period`.
    threshold: AtomicU32,
    period: AtomicU32,
    /// `sync_refresh_period` in milliseconds, and `sync_retries`.
    refresh_ms: AtomicU64,
    retries: AtomicU32,
    running: Mutex<Running>,
    /// What backups received: UDP sessions and TCP connections.
    pub(crate) synced: Synced,
    /// Counters, for the metrics.
    pub stats: SyncStats,
}

#[derive(Debug, Default)]
struct Running {
    master: Option<Task>,
    backup: Option<Task>,
}

#[derive(Debug)]
struct Task {
    daemon: SyncDaemon,
    stop: CancellationToken,
    status: Arc<Mutex<Status>>,
}

/// What a daemon's task says about itself.
#[derive(Debug, Default)]
struct Status {
    maxlen: u16,
    error: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Daemons {
    /// Whether a master daemon runs: whether the data plane has anything
    /// to tell.
    #[inline]
    pub(crate) fn master_on(&self) -> bool {
        self.master_on.load(Relaxed)
    }

    /// `ip_vs_sync_conn_needed()` for a connection at its `pkts`-th packet,
    /// whose entry lives `timeout` on a backup: whether it is sent now.
    /// `end` is the connection's `sync_endtime` (milliseconds of
    /// [`crate::clock`], the sends retried in its two low bits), updated
    /// when it is.
    pub(crate) fn needed(&self, end: &AtomicU64, pkts: u32, timeout: Duration) -> bool {
        let (threshold, period) = (self.threshold.load(Relaxed), self.period.load(Relaxed));
        let refresh = self.refresh_ms.load(Relaxed);
        let now = crate::clock::now().as_nanos() / 1_000_000;
        let timeout = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX / 4);
        let orig = end.load(Relaxed);
        let mut n = now.saturating_add(timeout) & !3;
        if refresh > 0 {
            let diff = n.abs_diff(orig);
            let min_diff = (timeout / 2).max(10_000);
            // Not sent again while its expiry would move by less than the
            // refresh period (and half its timeout), but for retries.
            if diff < refresh.min(min_diff) {
                let retries = orig & 3;
                if retries >= u64::from(self.retries.load(Relaxed)) {
                    return false;
                }
                // `time_before(now, orig - timeout + refresh / 8)`: the last
                // send was `orig - timeout`.
                let (now_s, orig_s) = (now as i128, orig as i128);
                if now_s < orig_s - timeout as i128 + (refresh >> 3) as i128 {
                    return false;
                }
                n |= retries + 1;
            }
        }
        if period > 0 {
            if pkts % period != threshold {
                return false;
            }
        } else if refresh == 0 && pkts != threshold {
            return false;
        }
        end.compare_exchange(orig, n, Relaxed, Relaxed).is_ok()
    }

    /// Queues `e` for the master, never waiting.
    pub(crate) fn send(&self, e: wire::Entry) {
        if let Some(q) = &*self.queue.load()
            && q.try_send(e).is_err()
        {
            self.stats.queue_drops.fetch_add(1, Relaxed);
        }
    }

    /// Starts, stops and restarts the daemons to match `settings`; the
    /// backups apply what they receive to `proxy`'s services.
    pub(crate) fn configure(
        self: &Arc<Self>,
        settings: &SyncSettings,
        proxy: Weak<crate::proxy::Inner>,
    ) {
        self.threshold.store(settings.threshold, Relaxed);
        self.period.store(settings.period, Relaxed);
        self.refresh_ms.store(
            u64::try_from(settings.refresh_period.as_millis()).unwrap_or(u64::MAX),
            Relaxed,
        );
        self.retries.store(settings.retries, Relaxed);
        if tokio::runtime::Handle::try_current().is_err() {
            // Configurations are applied on the runtime; a daemon needs it.
            if !settings.daemons.is_empty() {
                tracing::error!("sync daemons not started: no runtime");
            }
            return;
        }
        let mut run = lock(&self.running);
        for state in [SyncState::Master, SyncState::Backup] {
            let want = settings.daemons.iter().find(|d| d.state == state);
            let slot = match state {
                SyncState::Master => &mut run.master,
                SyncState::Backup => &mut run.backup,
            };
            if slot.as_ref().map(|t| &t.daemon) == want {
                continue;
            }
            if let Some(old) = slot.take() {
                old.stop.cancel();
                info!(state = state.name(), interface = %old.daemon.mcast_interface, syncid = old.daemon.syncid, "sync daemon stopped");
                if state == SyncState::Master {
                    self.master_on.store(false, Relaxed);
                    self.queue.store(None);
                }
            }
            let Some(d) = want else { continue };
            let stop = CancellationToken::new();
            let status = Arc::new(Mutex::new(Status::default()));
            match state {
                SyncState::Master => {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    self.queue.store(Some(Arc::new(tx)));
                    self.master_on.store(true, Relaxed);
                    tokio::spawn(master::run(
                        d.clone(),
                        rx,
                        Arc::clone(self),
                        Arc::clone(&status),
                        stop.clone(),
                    ));
                }
                SyncState::Backup => {
                    tokio::spawn(backup::run(
                        d.clone(),
                        Arc::clone(self),
                        proxy.clone(),
                        Arc::clone(&status),
                        stop.clone(),
                    ));
                }
            }
            info!(state = state.name(), interface = %d.mcast_interface, syncid = d.syncid, group = %d.mcast_group, port = d.mcast_port, "sync daemon started");
            *slot = Some(Task {
                daemon: d.clone(),
                stop,
                status,
            });
        }
    }

    /// Stops every daemon (the proxy stops).
    pub(crate) fn stop(&self) {
        let mut run = lock(&self.running);
        for t in [run.master.take(), run.backup.take()].into_iter().flatten() {
            t.stop.cancel();
        }
        self.master_on.store(false, Relaxed);
        self.queue.store(None);
    }

    /// What backups received and keep: synced UDP sessions and TCP
    /// connections, for `rvsadm -Lnc`.
    pub fn synced(&self, now: rvs_sched::Time) -> Vec<SyncedView> {
        self.synced.list(now)
    }

    /// The running daemons, master first.
    pub fn list(&self) -> Vec<DaemonView> {
        let run = lock(&self.running);
        [&run.master, &run.backup]
            .into_iter()
            .flatten()
            .map(|t| {
                let st = lock(&t.status);
                DaemonView {
                    daemon: t.daemon.clone(),
                    sync_maxlen: t.daemon.sync_maxlen.unwrap_or(st.maxlen),
                    error: st.error.clone(),
                }
            })
            .collect()
    }
}

/// Between two tries to open a daemon's socket (an interface not there
/// yet).
const RETRY: Duration = Duration::from_secs(2);

/// A daemon's socket by `open`, tried again every [`RETRY`] while it fails,
/// the error kept in `status` (and logged when it changes); `after_failure`
/// runs after each failed try. `None` when the daemon stops first.
async fn open_retrying(
    d: &SyncDaemon,
    status: &Mutex<Status>,
    stop: &CancellationToken,
    open: fn(&SyncDaemon) -> std::io::Result<tokio::net::UdpSocket>,
    mut after_failure: impl FnMut(),
) -> Option<tokio::net::UdpSocket> {
    loop {
        match open(d) {
            Ok(s) => {
                lock(status).error = None;
                return Some(s);
            }
            Err(e) => {
                let e = e.to_string();
                if lock(status).error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(state = d.state.name(), interface = %d.mcast_interface, error = %e, "sync daemon: no socket yet; retrying");
                    lock(status).error = Some(e);
                }
                after_failure();
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

/// The kernel's protocol number of a service's.
fn protocol(p: Proto) -> u8 {
    match p {
        Proto::Tcp => wire::proto::TCP,
        Proto::Udp => wire::proto::UDP,
    }
}

/// An address of `like`'s family holding `mark` in its first 32 bits: the
/// virtual address of a firewall-mark template (`union nf_inet_addr fwmark
/// = { .ip = htonl(svc->fwmark) }`).
pub(crate) fn mark_addr(mark: u32, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(mark)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(u128::from(mark) << 96)),
    }
}

/// How a connection's entry says where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnSync {
    /// TCP, established.
    Established,
    /// TCP, half-closed (`FIN_WAIT` when the client closed first, else
    /// `CLOSE_WAIT`).
    Closing { client_first: bool },
    /// TCP, closed.
    Closed,
    /// A UDP session.
    Udp,
}

/// The entry of a connection of `spec` from `client` to `vip` on `dest`,
/// and of the template that controls it when the service is persistent.
pub(crate) fn entries(
    spec: &ServiceSpec,
    client: SocketAddr,
    vip: SocketAddr,
    dest: SocketAddr,
    how: Option<ConnSync>,
    pe: Option<&[u8]>,
) -> (Option<wire::Entry>, Option<wire::Entry>) {
    use wire::{flags, tcp_state};
    let fwmark = spec.persistence.fwmark.unwrap_or(0);
    let conn = how.map(|how| {
        let (state, inactive, timeout) = match how {
            ConnSync::Established => (tcp_state::ESTABLISHED, false, spec.timeouts.tcp),
            ConnSync::Closing { client_first } => (
                if client_first {
                    tcp_state::FIN_WAIT
                } else {
                    tcp_state::CLOSE_WAIT
                },
                true,
                spec.timeouts.tcpfin,
            ),
            // IPVS's CLOSE timeout.
            ConnSync::Closed => (tcp_state::CLOSE, true, Duration::from_secs(10)),
            ConnSync::Udp => (0, false, spec.timeouts.udp),
        };
        wire::Entry {
            protocol: protocol(spec.proto),
            flags: if inactive { flags::INACTIVE } else { 0 },
            state,
            caddr: client.ip(),
            cport: client.port(),
            vaddr: vip.ip(),
            vport: vip.port(),
            daddr: dest.ip(),
            // A server of port 0 serves the port the client connected to.
            dport: if dest.port() == 0 {
                vip.port()
            } else {
                dest.port()
            },
            fwmark,
            timeout: secs(timeout),
            pe: None,
        }
    });
    let template = spec.sched.persistence.map(|p| {
        let net = p.netmask.apply(client.ip());
        let (proto, vaddr, vport) = match (p.scope, spec.persistence.fwmark) {
            (Scope::Destination, _) => (protocol(spec.proto), vip.ip(), vip.port()),
            (Scope::Service, Some(mark)) => (wire::proto::IP, mark_addr(mark, net), 0),
            (Scope::Service, None) => (
                protocol(spec.proto),
                first_like(spec, net).unwrap_or(vip.ip()),
                0,
            ),
        };
        wire::Entry {
            protocol: proto,
            flags: flags::TEMPLATE,
            state: 0,
            caddr: net,
            cport: 0,
            vaddr,
            vport,
            daddr: dest.ip(),
            dport: dest.port(),
            fwmark,
            timeout: secs(p.timeout),
            pe: pe.map(|d| (b"sip".to_vec(), d.to_vec())),
        }
    });
    (conn, template)
}

/// The service's first listen address of `like`'s family: the virtual
/// address of its service-wide templates without a mark.
fn first_like(spec: &ServiceSpec, like: IpAddr) -> Option<IpAddr> {
    spec.listen
        .iter()
        .map(|a| a.ip())
        .find(|ip| ip.is_ipv4() == like.is_ipv4())
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_sent_as_the_kernel_decides() {
        let d = Daemons::default();
        d.threshold.store(3, Relaxed);
        d.period.store(50, Relaxed);
        let end = AtomicU64::new(0);
        let t = Duration::from_secs(300);
        let sent: Vec<u32> = (1..=110).filter(|&p| d.needed(&end, p, t)).collect();
        assert_eq!(sent, [3, 53, 103], "sync_threshold 3 50");
        // Period 0: once, at the threshold.
        d.period.store(0, Relaxed);
        let end = AtomicU64::new(0);
        let sent: Vec<u32> = (1..=110).filter(|&p| d.needed(&end, p, t)).collect();
        assert_eq!(sent, [3]);
        // A refresh period: not again within it (the expiry would move by
        // less), whatever the packet count; with retries, up to that many
        // more once an eighth of it passed.
        d.period.store(1, Relaxed);
        d.threshold.store(0, Relaxed);
        d.refresh_ms.store(60_000, Relaxed);
        let end = AtomicU64::new(0);
        let sent = (1..=20).filter(|&p| d.needed(&end, p, t)).count();
        assert_eq!(sent, 1, "within the refresh period");
        d.retries.store(2, Relaxed);
        // Pretend the last send was 10 s ago (past an eighth of 60 s).
        let back = end.load(Relaxed).saturating_sub(10_000) & !3;
        end.store(back, Relaxed);
        let sent = (1..=20).filter(|&p| d.needed(&end, p, t)).count();
        assert_eq!(sent, 1, "one retry now, the next an eighth later");
    }
}
