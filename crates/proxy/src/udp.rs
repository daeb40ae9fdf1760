//! UDP services: a session per client address and port.
//!
//! The first datagram of a client schedules a real server (the session
//! counts as one inactive connection, as IPVS counts UDP) and opens an
//! upstream socket connected to it; a task relays the server's replies back
//! to the client from the service's own socket. A session ends after
//! `timeouts.udp` without traffic.
//!
//! Both ways, datagrams are received in batches (recvmmsg(2)): the
//! listening socket's into a batch of its own, a session's replies into one
//! batch per thread, used within one poll. A session waiting for its
//! server holds no buffer (it held 64 KiB before), and a reply costs no
//! receive that only finds the socket empty.
//!
//! With `udp.ops` (one-packet scheduling, ipvsadm `--ops`), every datagram
//! is scheduled on its own; the session only routes replies, from any of the
//! service's real servers, back to the client.
//!
//! `udp.max_sessions` bounds the sessions of a service, and the process's
//! descriptor budget (`crate::fds`: each session holds one socket) bounds
//! them all. Beyond either, a session is evicted with the CLOCK algorithm,
//! an O(1) approximation of "least recently used": sessions wait in a
//! queue; one that saw traffic since it was last looked at gets a second
//! chance at the back, the first one that did not is evicted. A flood of
//! new sources thus evicts idle sessions, not busy ones, and never takes
//! the descriptors that TCP, the admin listener and health checks need.
//! When the budget runs short, a listening socket holding more than its
//! fair share gives idle sessions back each second, so that a flood on one
//! service leaves room for another's new clients.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use hashbrown::HashMap;
use rvs_sched::{Conn, Dest, Traffic};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::clock;
use crate::config::{PersistenceEngine, Proto};
use crate::conns::{ConnState, LiveConn};
use crate::datagrams::{self, BATCH, Batch, Destination};
use crate::limits::SourceGuard;
use crate::listener::{Serving, Slot};
use crate::proxy_proto::{self, Transport, V2Header};
use crate::service::{OpenGuard, Registered, ServiceRuntime};
use crate::sip_callid;
use crate::stats::Refusal;

mod pending;
mod takeover;

pub(crate) use takeover::Handed;

/// A session's places: under `max_sessions`, in the live table, under
/// `per_source`, and in the descriptor budget.
type Held = (
    OpenGuard,
    Option<Registered>,
    Option<SourceGuard>,
    crate::fds::Held,
);

/// UDP listening sockets serving now, each with its table: a table above
/// its fair share of the descriptor budget gives sessions back when the
/// budget runs short (see [`Table::trim`]).
static TABLES: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
struct Session {
    svc: Arc<ServiceRuntime>,
    up: UdpSocket,
    /// The client: a PROXY header's source, or the datagrams' own.
    client: SocketAddr,
    /// The scheduled connection; `None` in one-packet mode.
    conn: Option<Conn>,
    /// Its entry in the live table (its bytes count there); `None` in
    /// one-packet mode.
    live: Option<Arc<LiveConn>>,
    started: Instant,
    /// The PROXY v2 header sent before its datagrams, when the service
    /// sends one.
    header: Option<V2Header>,
    /// The header goes before every datagram (else the first only).
    header_every: bool,
    /// Where the client sent to, when the listener is on a wildcard
    /// address: its replies leave from there.
    reply_from: Option<Destination>,
    header_sent: AtomicBool,
    /// Datagrams from the client, counted while a sync master runs
    /// (`in_pkts`, which decides when the session is synced).
    pkts: std::sync::atomic::AtomicU32,
    /// `sync_endtime`: when it was last synced ([`crate::sync::Daemons::needed`]).
    sync_end: AtomicU64,
    last: AtomicU64,
    referenced: AtomicBool,
    stop: CancellationToken,
    /// The session's place under `max_sessions` and in the live table,
    /// given back as soon as the session ends, not when its last reference
    /// goes.
    held: std::sync::Mutex<Option<Held>>,
}

impl Session {
    fn touch_at(&self, now: rvs_sched::Time) {
        self.last.store(now.as_nanos(), Relaxed);
        self.referenced.store(true, Relaxed);
        if let Some(live) = &self.live {
            live.counters.touch_at(now);
        }
    }

    /// Whether a datagram from its client goes to its server as it is: the
    /// session has a server of its own (not one-packet scheduling), no
    /// header goes before its datagrams, and the server has not left it
    /// (`expire_nodest_conn`).
    fn takes_as_is(&self) -> bool {
        self.conn.is_some() && self.header.is_none() && !self.server_gone()
    }

    /// Counts a datagram of `n` bytes from its client, at `now`; with a
    /// server of its own, the bytes count in the session, flushed into
    /// the totals (one-packet scheduling counts them where it schedules).
    fn count_in(&self, n: usize, now: rvs_sched::Time) {
        self.touch_at(now);
        self.svc.stats.in_pkts.fetch_add(1, Relaxed);
        if let (Some(conn), Some(live)) = (&self.conn, &self.live) {
            live.counters.to_server.fetch_add(n as u64, Relaxed);
            conn.dest().add_traffic(Traffic {
                in_pkts: 1,
                ..Traffic::default()
            });
            if self.svc.sync.master_on() {
                let pkts = self.pkts.fetch_add(1, Relaxed).wrapping_add(1);
                let timeout = self.svc.spec().timeouts.udp;
                if self.svc.sync.needed(&self.sync_end, pkts, timeout) {
                    let how = Some(crate::sync::ConnSync::Udp);
                    self.svc
                        .sync_conn(live.client, live.vip, conn.addr(), how, None);
                }
            }
        }
    }

    /// The header to send before this datagram, if one goes.
    fn header_now(&self) -> Option<&V2Header> {
        let h = self.header.as_ref()?;
        (self.header_every || !self.header_sent.swap(true, Relaxed)).then_some(h)
    }

    /// Whether its real server left the table and, under
    /// `expire_nodest_conn`, the session must end.
    fn server_gone(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| !c.dest().is_available() && self.svc.expire_nodest())
    }

    /// Counts a reply of `n` bytes from `dest`, sent to the client at
    /// `now` (read once for a batch).
    fn replied(&self, dest: &Dest, n: usize, now: rvs_sched::Time) {
        self.touch_at(now);
        self.svc.stats.out_pkts.fetch_add(1, Relaxed);
        match &self.live {
            Some(live) => {
                live.counters.to_client.fetch_add(n as u64, Relaxed);
                dest.add_traffic(Traffic {
                    out_pkts: 1,
                    ..Traffic::default()
                });
            }
            None => {
                self.svc.stats.out_bytes.fetch_add(n as u64, Relaxed);
                dest.add_traffic(Traffic {
                    out_pkts: 1,
                    out_bytes: n as u64,
                    ..Traffic::default()
                });
            }
        }
    }

    /// Ends the session: stops its reply task and frees its places.
    fn end(&self, how: &str) {
        let held = self.release();
        if held.is_some()
            && self.svc.access_log()
            && let Some(live) = &self.live
        {
            self.svc.log_access(live, self.started, how);
        }
    }

    /// Stops its reply task and gives its places back; what it held, if
    /// it still held them.
    fn release(&self) -> Option<Held> {
        self.stop.cancel();
        lock(&self.held).take()
    }
}

/// The sessions of one listening socket. A session leaves it by eviction,
/// expiry, or the socket's end; each way cancels the session's reply task,
/// which holds the session while it waits.
#[derive(Default)]
struct Table {
    map: HashMap<SocketAddr, Arc<Session>>,
    /// CLOCK queue of clients, oldest first.
    clock: VecDeque<SocketAddr>,
    /// On an address services share by `match`: flows waiting for the
    /// rest of their QUIC ClientHello.
    pending: pending::Pending,
}

impl Table {
    fn insert(&mut self, client: SocketAddr, s: Arc<Session>) {
        self.map.insert(client, s);
        self.clock.push_back(client);
    }

    /// Gives back sessions when the UDP share of descriptors is more than
    /// 7/8 used and this table holds more than its fair part of 7/8:
    /// a flooded socket makes room for the others' new clients.
    fn trim(&mut self) {
        let budget = &crate::fds::BUDGET;
        let (_, held) = budget.held();
        let (_, share) = budget.shares();
        let high = share / 8 * 7;
        if held <= high {
            return;
        }
        let fair = high / TABLES.load(Relaxed).max(1);
        let mut over = held - high;
        while over > 0 && self.map.len() as u64 > fair && self.evict_one() {
            budget.evicted_udp.fetch_add(1, Relaxed);
            over -= 1;
        }
    }

    /// Evicts one session by CLOCK; false when there is none.
    fn evict_one(&mut self) -> bool {
        while let Some(client) = self.clock.pop_front() {
            let Some(s) = self.map.get(&client) else {
                continue; // ended already
            };
            if s.referenced.swap(false, Relaxed) {
                self.clock.push_back(client);
                continue;
            }
            if let Some(s) = self.map.remove(&client) {
                s.end("evicted");
                s.svc.stats.evictions.fetch_add(1, Relaxed);
            }
            return true;
        }
        false
    }

    /// Ends the sessions idle for their service's UDP timeout.
    fn expire(&mut self) {
        let now = clock::now();
        self.map.retain(|_, s| {
            let idle = s.svc.spec().timeouts.udp;
            let alive =
                rvs_sched::Time::from_nanos(s.last.load(Relaxed)).saturating_add(idle) > now;
            if !alive {
                s.end("idle_timeout");
                s.svc.stats.expired.fetch_add(1, Relaxed);
            }
            alive
        });
        let map = &self.map;
        self.clock.retain(|c| map.contains_key(c));
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        for s in self.map.values() {
            s.end("closed");
        }
    }
}

/// A lock whose holder panicked still guards state changed in single steps.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unspecified_for(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

/// Serves one listening socket until its slot is stopped. Datagrams are
/// received in batches (recvmmsg(2), [`crate::datagrams`]).
pub(crate) async fn serve(socket: Arc<UdpSocket>, slot: Arc<Slot>, tracker: TaskTracker) {
    TABLES.fetch_add(1, Relaxed);
    struct Counted;
    impl Drop for Counted {
        fn drop(&mut self) {
            TABLES.fetch_sub(1, Relaxed);
        }
    }
    let _counted = Counted;
    if !slot.wait_open().await {
        return;
    }
    let mut table = Table::default();
    let handed = std::mem::take(&mut *lock(&slot.adopted));
    if !handed.is_empty() {
        takeover::adopt_all(&socket, &slot, &tracker, &mut table, handed).await;
    }
    let mut batch = Batch::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = slot.stop.cancelled() => {
                if let Some(to) = lock(&slot.export).take() {
                    // A binary upgrade: the sessions go to the next process.
                    let _ = to.send(takeover::export(&mut table, &slot));
                    return;
                }
                if slot.handed_over.load(Relaxed) {
                    drain(table, sweep).await;
                }
                return;
            }
            _ = sweep.tick() => {
                table.expire();
                table.trim();
                let wait = slot.target.load().first().spec().timeouts.client_hello;
                for _ in 0..table.pending.expire(wait) {
                    slot.refusals.count(crate::sni::read::Refused::Timeout);
                }
                continue;
            }
            r = socket.readable() => if r.is_err() {
                continue;
            },
        }
        // WouldBlock (nothing waits), or an ICMP error that surfaced here:
        // nothing to do either way.
        if batch.recv(&socket).is_err() {
            continue;
        }
        // Datagrams for open sessions that take them as they come (a
        // server of their own, no header first) wait until the batch is
        // read, then go per session in one sendmmsg(2); any other is
        // handled in turn, after those before it went.
        let mut onward = Onward::new();
        let headers_in = slot.target.load().first().accepts_proxy_protocol();
        let now = clock::now();
        for (data, client, to) in batch.iter() {
            if !headers_in
                && let Some(session) = table.map.get(&client)
                && session.takes_as_is()
            {
                session.count_in(data.len(), now);
                onward.push(Arc::clone(session), data);
                continue;
            }
            onward.send().await;
            datagram(&socket, &slot, &tracker, &mut table, data, client, to).await;
        }
        onward.send().await;
    }
}

/// Datagrams of one received batch on their way to their sessions' real
/// servers, each session's sent together.
struct Onward<'b> {
    waiting: [Option<(Arc<Session>, &'b [u8])>; BATCH],
    n: usize,
}

impl<'b> Onward<'b> {
    fn new() -> Onward<'b> {
        Onward {
            waiting: std::array::from_fn(|_| None),
            n: 0,
        }
    }

    fn push(&mut self, session: Arc<Session>, data: &'b [u8]) {
        // A batch holds at most BATCH datagrams.
        if let Some(slot) = self.waiting.get_mut(self.n) {
            *slot = Some((session, data));
            self.n += 1;
        }
    }

    /// Sends what waits: per session, in order, as many per system call
    /// as the socket takes; the rest once it can take them.
    async fn send(&mut self) {
        for i in 0..self.n {
            let Some((session, first)) = self.waiting[i].take() else {
                continue;
            };
            let mut data: [&[u8]; BATCH] = [&[]; BATCH];
            data[0] = first;
            let mut k = 1;
            for w in &mut self.waiting[i + 1..self.n] {
                if w.as_ref().is_some_and(|(s, _)| Arc::ptr_eq(s, &session))
                    && let Some((_, d)) = w.take()
                {
                    data[k] = d;
                    k += 1;
                }
            }
            if let Some(unsent) = datagrams::send_all(&session.up, &data[..k], |_| {}) {
                for d in &data[unsent..k] {
                    let _ = session.up.send(d).await;
                }
            }
        }
        self.n = 0;
    }
}

/// After a binary upgrade to an rvs that did not take the sessions over
/// (one before the state channel): the listening socket is the next
/// process's to read (new datagrams go there); the sessions here keep
/// relaying their servers' replies until each idles out (`timeouts.udp`),
/// or until the shutdown's grace ends the process.
async fn drain(mut table: Table, mut sweep: tokio::time::Interval) {
    while !table.map.is_empty() {
        sweep.tick().await;
        table.expire();
    }
}

/// One datagram from `client`: its session (opened on the first), counted
/// and sent to the real server.
async fn datagram(
    socket: &Arc<UdpSocket>,
    slot: &Slot,
    tracker: &TaskTracker,
    table: &mut Table,
    data: &[u8],
    client: SocketAddr,
    to: Option<Destination>,
) {
    // A PROXY v2 header from a balancer in front: its source is the client
    // (for a new session's scheduling, ACL and persistence); it is
    // stripped. The session stays keyed by the datagram's own source.
    let (data, who) = if slot.target.load().first().accepts_proxy_protocol() {
        match proxy_proto::split_v2_datagram(data) {
            Ok(None) => (data, client),
            Ok(Some((addrs, len))) => (&data[len..], addrs.map_or(client, |(src, _)| src)),
            Err(e) => {
                let serving = slot.target.load();
                let svc = serving.first();
                debug!(service = %svc.name(), %client, error = %e, "udp: datagram dropped: bad PROXY header");
                svc.refuse(Refusal::ProxyHeader, client, slot.local, Instant::now());
                return;
            }
        }
    } else {
        (data, client)
    };
    let session = match table.map.get(&client) {
        Some(s) if !s.server_gone() => Arc::clone(s),
        found => {
            if found.is_some()
                && let Some(old) = table.map.remove(&client)
            {
                // expire_nodest_conn: its server left; this datagram
                // is scheduled again.
                old.end("expired_nodest");
                old.svc.stats.expired_nodest.fetch_add(1, Relaxed);
            }
            let (svc, earlier) = match &**slot.target.load() {
                Serving::One(svc) => (Arc::clone(svc), Vec::new()),
                Serving::ByHello(routes) => match table.pending.route(client, data, routes) {
                    pending::Route::To(svc, earlier) => (svc, earlier),
                    pending::Route::Wait => return,
                    pending::Route::Refused(why) => {
                        debug!(listen = %slot.local, %client, reason = why.name(), "udp: datagram dropped: no service takes its flow");
                        slot.refusals.count(why);
                        return;
                    }
                },
            };
            let arrival = Arrival {
                peer: client,
                client: who,
                to,
            };
            let Some(session) = open(&svc, socket, slot, arrival, table, tracker).await else {
                return;
            };
            // A flow routed by a hello over several datagrams: those
            // before this one first, in order.
            for d in &earlier {
                forward(&session, d, who, slot).await;
            }
            session
        }
    };
    forward(&session, data, who, slot).await;
}

/// Counts one datagram of `session` and sends it to the real server.
async fn forward(session: &Arc<Session>, data: &[u8], who: SocketAddr, slot: &Slot) {
    let n = data.len();
    session.count_in(n, clock::now());
    let svc = &session.svc;
    match &session.conn {
        Some(_) => {
            let _ = match session.header_now() {
                Some(h) => datagrams::send_prefixed(&session.up, h.as_bytes(), data, None).await,
                None => session.up.send(data).await,
            };
        }
        None => {
            // One-packet scheduling, or the SIP engine: this datagram
            // alone is scheduled (by its Call-ID), counted, sent and
            // released.
            svc.stats.in_bytes.fetch_add(n as u64, Relaxed);
            let sched = svc.scheduler();
            let call = match svc.spec().persistence.engine {
                Some(PersistenceEngine::Sip) => {
                    match sip_callid::call_id(data, sip_callid::search_start(who.is_ipv6())) {
                        Some(id) => Some(id),
                        None => {
                            // IPVS's engine drops it: no template can be
                            // looked up without the Call-ID.
                            svc.refuse(Refusal::NoCallId, who, slot.local, Instant::now());
                            return;
                        }
                    }
                }
                None => None,
            };
            match sched.schedule_with(who, slot.local, call, clock::now()) {
                Some(conn) => {
                    svc.stats.conns.fetch_add(1, Relaxed);
                    // One-packet entries are not synced; their templates are.
                    svc.sync_conn(who, slot.local, conn.addr(), None, call);
                    conn.dest().add_traffic(Traffic {
                        in_pkts: 1,
                        in_bytes: n as u64,
                        ..Traffic::default()
                    });
                    // Each datagram may go elsewhere: each carries a header.
                    let _ = match session.header {
                        Some(h) => {
                            datagrams::send_prefixed(
                                &session.up,
                                h.as_bytes(),
                                data,
                                Some(conn.target(slot.local)),
                            )
                            .await
                        }
                        None => session.up.send_to(data, conn.target(slot.local)).await,
                    };
                }
                None => {
                    svc.refuse_unscheduled(who, slot.local, Instant::now());
                }
            }
        }
    }
}

/// Whom a new session is for.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    /// The datagram's source: the session's key, where replies go.
    peer: SocketAddr,
    /// The client: the PROXY header's source, or the peer itself.
    client: SocketAddr,
    /// Where it was sent, on a wildcard listener.
    to: Option<Destination>,
}

/// Opens a session for the datagrams of `arrival.peer`; `None` when it is
/// refused.
async fn open(
    svc: &Arc<ServiceRuntime>,
    socket: &Arc<UdpSocket>,
    slot: &Slot,
    arrival: Arrival,
    table: &mut Table,
    tracker: &TaskTracker,
) -> Option<Arc<Session>> {
    let Arrival { client, .. } = arrival;
    let spec = svc.spec();
    let started = Instant::now();
    let places = admit(svc, slot, client, table, started)?;
    let sched = svc.scheduler();
    let (conn, up) = if spec.schedules_each_datagram() {
        let up = UdpSocket::bind(unspecified_for(slot.local)).await.ok()?;
        (None, up)
    } else {
        // A session a master director synced here keeps its server.
        let synced = if svc.sync.synced.is_empty() {
            None
        } else {
            svc.sync
                .synced
                .take_udp(svc.name(), client, slot.local)
                .and_then(|dest| sched.adopt(client, slot.local, dest))
        };
        let Some(conn) = synced.or_else(|| sched.schedule(client, slot.local, clock::now())) else {
            svc.refuse_unscheduled(client, slot.local, started);
            return None;
        };
        let target = conn.target(slot.local);
        let up = match UdpSocket::bind(unspecified_for(target)).await {
            Ok(u) => u,
            Err(e) => {
                debug!(service = %svc.name(), error = %e, "udp: no upstream socket");
                return None;
            }
        };
        if up.connect(target).await.is_err() {
            conn.dest().count_connect_failure();
            svc.stats.connect_failures.fetch_add(1, Relaxed);
            svc.connect_failed(conn.addr());
            svc.refuse(Refusal::Unreachable, client, slot.local, started);
            return None;
        }
        svc.stats.conns.fetch_add(1, Relaxed);
        (Some(conn), up)
    };
    let opened = Opened {
        conn,
        up,
        places,
        started,
        last: clock::now(),
        header_sent: false,
    };
    Some(install(svc, socket, slot, arrival, opened, table, tracker))
}

/// A session's places: under `max_sessions`, under `per_source`, in the
/// descriptor budget.
type Places = (OpenGuard, Option<SourceGuard>, crate::fds::Held);

/// Admits a new session of `client` (`allow`/`deny`, `per_source`,
/// `max_sessions`, the descriptor budget), evicting from `table` to make
/// room; `None` when it is refused (counted, logged).
fn admit(
    svc: &Arc<ServiceRuntime>,
    slot: &Slot,
    client: SocketAddr,
    table: &mut Table,
    started: Instant,
) -> Option<Places> {
    let spec = svc.spec();
    if !spec.acl.allows(client.ip()) {
        svc.refuse(Refusal::Acl, client, slot.local, started);
        return None;
    }
    let source = match svc.admit_source(client.ip()) {
        Ok(g) => g,
        Err(_) => {
            svc.refuse(Refusal::Limit, client, slot.local, started);
            return None;
        }
    };
    let open = loop {
        if let Some(g) = svc.admit(Some(
            u32::try_from(spec.udp.max_sessions).unwrap_or(u32::MAX),
        )) {
            break g;
        }
        // At the bound: evict from this socket's sessions. If this socket
        // has none (the service's sessions are on its other sockets), drop.
        if !table.evict_one() {
            svc.refuse(Refusal::Limit, client, slot.local, started);
            return None;
        }
    };
    let fds = loop {
        if let Some(h) = crate::fds::BUDGET.udp() {
            break h;
        }
        // At the descriptor budget: the idlest session of this socket
        // makes room; with none here, the datagram is dropped.
        let budget = &crate::fds::BUDGET;
        if !table.evict_one() {
            budget.refused_udp.fetch_add(1, Relaxed);
            svc.refuse(Refusal::Descriptors, client, slot.local, started);
            if let Some(unsaid) = budget.log.allow() {
                let ((held, _), (_, share)) = (budget.held(), budget.shares());
                tracing::warn!(service = %svc.name(), %client, held, udp_share = share, also_since = unsaid, "udp: no session opened: the UDP share of file descriptors is in use and this socket has none to evict");
            }
            return None;
        }
        budget.evicted_udp.fetch_add(1, Relaxed);
        if let Some(unsaid) = budget.log.allow() {
            let (_, share) = budget.shares();
            tracing::warn!(service = %svc.name(), udp_share = share, also_since = unsaid, "udp: the UDP share of file descriptors is in use: the idlest session was evicted for a new one");
        }
    };
    Some((open, source, fds))
}

/// A session about to be installed: its connection, its socket, its
/// places, and its clock.
struct Opened {
    conn: Option<Conn>,
    up: UdpSocket,
    places: Places,
    started: Instant,
    /// Its last datagram.
    last: rvs_sched::Time,
    /// Its PROXY header went already.
    header_sent: bool,
}

/// Puts a session in `table` and starts relaying its replies.
fn install(
    svc: &Arc<ServiceRuntime>,
    socket: &Arc<UdpSocket>,
    slot: &Slot,
    arrival: Arrival,
    opened: Opened,
    table: &mut Table,
    tracker: &TaskTracker,
) -> Arc<Session> {
    let Arrival { peer, client, to } = arrival;
    let Opened {
        conn,
        up,
        places: (open, source, fds),
        started,
        last,
        header_sent,
    } = opened;
    let spec = svc.spec();
    let registered = conn.as_ref().map(|c| {
        svc.register(LiveConn::new(
            Proto::Udp,
            client,
            slot.local,
            Arc::clone(c.dest()),
            ConnState::Udp,
        ))
    });
    let session = Arc::new(Session {
        svc: Arc::clone(svc),
        up,
        client,
        conn,
        live: registered.as_ref().map(|r| Arc::clone(&r.conn)),
        started,
        // The address the client sent to (a wildcard listener's is the
        // datagram's destination).
        header: spec.proxy_protocol.map(|_| {
            let vip = to.map_or(slot.local, |d| SocketAddr::new(d.ip, slot.local.port()));
            V2Header::new(client, vip, Transport::Udp)
        }),
        header_every: spec.udp.proxy_protocol_every,
        reply_from: to,
        header_sent: AtomicBool::new(header_sent),
        pkts: std::sync::atomic::AtomicU32::new(0),
        sync_end: AtomicU64::new(0),
        last: AtomicU64::new(last.as_nanos()),
        referenced: AtomicBool::new(false),
        stop: CancellationToken::new(),
        held: std::sync::Mutex::new(Some((open, registered, source, fds))),
    });
    table.insert(peer, Arc::clone(&session));
    tracker.spawn(replies(
        Arc::downgrade(&session),
        session.stop.clone(),
        Arc::clone(socket),
        peer,
    ));
    session
}

thread_local! {
    /// The batch that sessions' replies are received into, one per thread
    /// (taken and given back within one poll, never across an await): a
    /// session waiting for its server holds no buffer.
    static REPLIES: RefCell<Option<Batch>> = const { RefCell::new(None) };
}

/// Relays a session's replies to its client until the session ends.
async fn replies(
    session: std::sync::Weak<Session>,
    stop: CancellationToken,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
) {
    loop {
        let Some(s) = session.upgrade() else {
            return;
        };
        tokio::select! {
            () = stop.cancelled() => return,
            r = s.up.readable() => if r.is_err() {
                continue;
            },
        }
        // A reply the client's socket had no room for waits here, sent
        // once it has.
        let blocked = relay(&s, &socket, client);
        for (data, dest) in blocked {
            if send_one(&socket, client, s.reply_from, &data).await {
                s.replied(&dest, data.len(), clock::now());
            }
        }
    }
}

/// Sends one reply to `client` (from `from`), waiting for room; true
/// when it went.
async fn send_one(
    socket: &UdpSocket,
    client: SocketAddr,
    from: Option<Destination>,
    data: &[u8],
) -> bool {
    loop {
        if socket.writable().await.is_err() {
            return false;
        }
        let mut sent = false;
        if datagrams::send_to_all(socket, client, from, &[data], |_| sent = true).is_none() {
            return sent;
        }
    }
}

/// Receives the replies waiting on the session's socket (a batch, as the
/// listening socket's datagrams are) and sends them on to the client (a
/// batch too, [`datagrams::send_to_all`]). Returns those that found the
/// client's socket full.
fn relay(s: &Session, socket: &UdpSocket, client: SocketAddr) -> Vec<(Vec<u8>, Arc<Dest>)> {
    let mut blocked = Vec::new();
    REPLIES.with(|b| {
        let mut b = b.borrow_mut();
        let batch = b.get_or_insert_with(Batch::new);
        // WouldBlock (nothing waits), or an ICMP error from the server:
        // the session stays either way.
        if batch.recv(&s.up).is_err() {
            return;
        }
        let mut out: [&[u8]; BATCH] = [&[]; BATCH];
        // Each reply's server: the session's, or in one-packet mode the
        // one it came from, which must be one of the service's.
        let session_dest = s.conn.as_ref().map(|c| &**c.dest());
        let mut found: [Option<Arc<Dest>>; BATCH] = Default::default();
        let mut count = 0;
        for (data, from, _) in batch.iter() {
            if session_dest.is_none() {
                found[count] = s.svc.scheduler().dest(from);
                if found[count].is_none() {
                    continue;
                }
            }
            out[count] = data;
            count += 1;
        }
        let dest = |i: usize| session_dest.or(found[i].as_deref());
        let now = clock::now();
        let full = datagrams::send_to_all(socket, client, s.reply_from, &out[..count], |i| {
            if let Some(d) = dest(i) {
                s.replied(d, out[i].len(), now);
            }
        });
        // Rare: the client's socket is full. These wait, owned.
        for i in full.unwrap_or(count)..count {
            let owned = match &s.conn {
                Some(c) => Some(Arc::clone(c.dest())),
                None => found[i].clone(),
            };
            if let Some(d) = owned {
                blocked.push((out[i].to_vec(), d));
            }
        }
    });
    blocked
}
