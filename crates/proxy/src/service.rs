//! A running virtual service: its configuration, its scheduler and its
//! counters. Listeners and connections hold it by `Arc`; a reload updates it
//! in place, so that what is unchanged keeps its state.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hashbrown::HashMap;
use rvs_sched::{Dest, Service};
use tracing::{info, warn};

use crate::config::{RealServerSpec, ServiceSpec};
use crate::conns::{ConnTable, LiveConn};
use crate::health::Health;
use crate::history::{Ring, ServiceHistory};
use crate::stats::{
    Estimator, LatencyHistogram, Observation, Rates, Refusal, ServiceStats, Totals,
};

/// One virtual service while it runs.
#[derive(Debug)]
pub struct ServiceRuntime {
    name: String,
    spec: ArcSwap<ServiceSpec>,
    sched: ArcSwap<Service>,
    /// What happened to its connections.
    pub stats: ServiceStats,
    /// TCP connections, or UDP sessions, open now.
    open: AtomicUsize,
    /// What rvs keeps of each real server beside the scheduler's counts.
    dests: ArcSwap<HashMap<SocketAddr, Arc<DestRuntime>>>,
    /// The live connections (`ipvsadm -lc`).
    pub conns: ConnTable,
    /// `ipvsadm -Z`'s baseline and the rate estimator of the service.
    view: Mutex<View>,
    /// The last minutes of its traffic (the status page's charts).
    history: Mutex<ServiceHistory>,
    /// When each refusal reason was last logged ([`crate::clock`] ns).
    refusal_logged: [AtomicU64; Refusal::ALL.len()],
    access_log: AtomicBool,
    /// `global.expire_nodest_conn`.
    expire_nodest: AtomicBool,
    /// Per-source limits, when the service has them.
    limits: arc_swap::ArcSwapOption<crate::limits::Limits>,
    /// Health of the real servers; it decides the scheduler's table.
    pub(crate) health: Health,
    /// The proxy's sync daemons: what a master is told, what a backup
    /// received.
    pub(crate) sync: Arc<crate::sync::Daemons>,
}

/// Refusals of one reason are logged at most this often per service.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What `ipvsadm -L --stats` and `--rate` show of a service or a real
/// server: totals since the last zeroing, and the estimated rates.
#[derive(Debug)]
struct View {
    zero: Totals,
    est: Estimator,
}

impl View {
    fn new(now: Totals) -> Mutex<View> {
        Mutex::new(View {
            zero: Totals::default(),
            est: Estimator::new(now),
        })
    }

    /// `ipvsadm -Z` at the totals `now`.
    fn zero(&mut self, now: Totals) {
        self.zero = now;
        self.est.reset(now);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A real server of a running service: the scheduler's [`Dest`] (weight,
/// connection counts, traffic) and what rvs adds to it.
#[derive(Debug)]
pub struct DestRuntime {
    dest: Arc<Dest>,
    /// Time to connect to it.
    pub latency: LatencyHistogram,
    view: Mutex<View>,
    /// Its active connections over the last minutes.
    active_history: Mutex<Ring>,
    /// Connects that failed in a row (passive checking).
    failed_in_row: std::sync::atomic::AtomicU32,
}

fn dest_totals(d: &Dest) -> Totals {
    Totals {
        conns: d.conns_total(),
        ..d.traffic().into()
    }
}

impl DestRuntime {
    fn new(dest: Arc<Dest>) -> DestRuntime {
        let now = dest_totals(&dest);
        DestRuntime {
            dest,
            latency: LatencyHistogram::default(),
            view: View::new(now),
            active_history: Mutex::new(Ring::default()),
            failed_in_row: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Counts a connect: a success ends a run of failures; returns the
    /// failures in a row.
    pub(crate) fn note_connect(&self, ok: bool) -> u32 {
        if ok {
            // Read first: a run of successes writes nothing.
            if self.failed_in_row.load(Relaxed) != 0 {
                self.failed_in_row.store(0, Relaxed);
            }
            0
        } else {
            self.failed_in_row.fetch_add(1, Relaxed) + 1
        }
    }

    /// The scheduler's server.
    pub fn dest(&self) -> &Arc<Dest> {
        &self.dest
    }

    /// Totals since it was added (monotonic).
    pub fn totals(&self) -> Totals {
        dest_totals(&self.dest)
    }

    /// Totals since the last zeroing.
    pub fn shown(&self) -> Totals {
        self.totals().since(lock(&self.view).zero)
    }

    /// The estimated rates.
    pub fn rates(&self) -> Rates {
        lock(&self.view).est.rates()
    }

    fn tick(&self) {
        let now = self.totals();
        lock(&self.view).est.tick(now);
        lock(&self.active_history).push(self.dest.active_conns() as f32);
    }

    /// Its active connections, one sample an estimator interval, oldest
    /// first.
    pub fn active_history(&self) -> Vec<f32> {
        lock(&self.active_history).to_vec()
    }

    fn zero(&self) {
        let now = self.totals();
        lock(&self.view).zero(now);
    }
}

/// A connection's place in its service's table, left when dropped (its
/// last bytes then move into the totals).
#[derive(Debug)]
pub(crate) struct Registered {
    svc: Arc<ServiceRuntime>,
    pub(crate) conn: Arc<LiveConn>,
}

impl Registered {
    /// The service the connection is of.
    pub(crate) fn service(&self) -> &Arc<ServiceRuntime> {
        &self.svc
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.svc.conns.remove(&self.conn);
        self.conn.flush(&self.svc.stats);
    }
}

/// An empty scheduler: the table comes from [`ServiceRuntime::resync`].
fn new_scheduler(spec: &ServiceSpec) -> Service {
    Service::new(spec.sched, crate::clock::now())
}

/// Brings the scheduler's servers to `want`, in one step
/// ([`Service::set_dests`]): the list is `want` reversed, which is what
/// IPVS holds after keepalived added `want` in order (each add links at the
/// head), and it stays a function of `want` alone whatever came before, so
/// that replicas given the same servers build the same sh, dh and mh
/// tables. Unchanged servers keep their counters. Returns the servers that
/// left the list.
fn sync_dests(sched: &Service, want: &[RealServerSpec]) -> Vec<Arc<Dest>> {
    let list: Vec<(SocketAddr, rvs_sched::DestParams)> =
        want.iter().rev().map(|w| (w.address, w.params)).collect();
    let before = sched.dests();
    if let Err(e) = sched.set_dests(&list) {
        // The table is checked with the configuration: not expected.
        warn!(error = %e, "the scheduler refused the table; it stays as it was");
        return Vec::new();
    }
    before.into_iter().filter(|d| !d.is_available()).collect()
}

impl ServiceRuntime {
    pub(crate) fn new(spec: ServiceSpec, sync: Arc<crate::sync::Daemons>) -> Arc<ServiceRuntime> {
        let per_source = spec.per_source;
        let rt = Arc::new(ServiceRuntime {
            name: spec.name.clone(),
            sched: ArcSwap::from_pointee(new_scheduler(&spec)),
            spec: ArcSwap::from_pointee(spec),
            stats: ServiceStats::default(),
            open: AtomicUsize::new(0),
            dests: ArcSwap::default(),
            conns: ConnTable::default(),
            view: View::new(Totals::default()),
            history: Mutex::new(ServiceHistory::new(Totals::default())),
            refusal_logged: Default::default(),
            access_log: AtomicBool::new(false),
            expire_nodest: AtomicBool::new(false),
            limits: arc_swap::ArcSwapOption::new(per_source.map(crate::limits::Limits::new)),
            health: Health::default(),
            sync,
        });
        rt.reconcile_health(None);
        rt
    }

    /// Matches the per-server runtime to the scheduler's servers: a server
    /// still there keeps its histogram, baseline and estimator.
    fn refresh_dests(&self) {
        let old = self.dests.load();
        let mut map = HashMap::new();
        for d in self.scheduler().dests() {
            let rt = match old.get(&d.addr()) {
                Some(rt) if Arc::ptr_eq(&rt.dest, &d) => Arc::clone(rt),
                _ => Arc::new(DestRuntime::new(d)),
            };
            map.insert(rt.dest.addr(), rt);
        }
        self.dests.store(Arc::new(map));
    }

    /// Tells a master sync daemon, if one runs, of a connection of this
    /// service from `client` to `vip` on the real server `dest` (its
    /// entry, when `how` says where it is) and of the template that
    /// controls it, with the template's engine data `pe`.
    #[inline]
    pub(crate) fn sync_conn(
        &self,
        client: SocketAddr,
        vip: SocketAddr,
        dest: SocketAddr,
        how: Option<crate::sync::ConnSync>,
        pe: Option<&[u8]>,
    ) {
        if !self.sync.master_on() {
            return;
        }
        let spec = self.spec();
        let (conn, template) = crate::sync::entries(&spec, client, vip, dest, how, pe);
        // The template first: a backup applies in order, and a
        // connection's entry finds its template there.
        for e in [template, conn].into_iter().flatten() {
            self.sync.send(e);
        }
    }

    /// The real server at `addr`, with what rvs keeps of it.
    pub fn dest_runtime(&self, addr: SocketAddr) -> Option<Arc<DestRuntime>> {
        self.dests.load().get(&addr).cloned()
    }

    /// Observes a connect to `addr` that succeeded in `took`.
    pub(crate) fn observe_connect(&self, addr: SocketAddr, took: std::time::Duration) {
        let o = Observation::of(took);
        self.stats.connect_latency.record(o);
        if let Some(d) = self.dests.load().get(&addr) {
            d.latency.record(o);
            d.note_connect(true);
        }
    }

    /// Puts a connection in the live table until the returned guard drops.
    pub(crate) fn register(self: &Arc<Self>, conn: LiveConn) -> Registered {
        let conn = Arc::new(conn);
        self.conns.insert(Arc::clone(&conn));
        Registered {
            svc: Arc::clone(self),
            conn,
        }
    }

    /// Moves the live connections' new bytes into the totals.
    pub fn flush(&self) {
        self.conns.flush(&self.stats);
    }

    /// The service's totals since the last zeroing (after a [`Self::flush`]).
    pub fn shown(&self) -> Totals {
        self.stats.totals().since(lock(&self.view).zero)
    }

    /// The service's estimated rates.
    pub fn rates(&self) -> Rates {
        lock(&self.view).est.rates()
    }

    /// One estimator interval ([`Estimator::INTERVAL`]) has passed.
    pub(crate) fn tick(&self) {
        self.flush();
        let now = self.stats.totals();
        lock(&self.view).est.tick(now);
        lock(&self.history).sample(now);
        for d in self.dests.load().values() {
            d.tick();
        }
    }

    /// The last minutes of its traffic.
    pub fn history(&self) -> ServiceHistory {
        lock(&self.history).clone()
    }

    /// `ipvsadm -Z`: the tables count from zero again (the Prometheus
    /// counters do not: they only grow).
    pub fn zero(&self) {
        self.flush();
        let now = self.stats.totals();
        lock(&self.view).zero(now);
        for d in self.dests.load().values() {
            d.zero();
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The running configuration of the service.
    pub fn spec(&self) -> Arc<ServiceSpec> {
        self.spec.load_full()
    }

    /// Whether clients' PROXY headers are read (`accept_proxy_protocol`),
    /// without taking a reference to the spec.
    pub(crate) fn accepts_proxy_protocol(&self) -> bool {
        self.spec.load().accept_proxy_protocol
    }

    /// The scheduler.
    pub fn scheduler(&self) -> Arc<Service> {
        self.sched.load_full()
    }

    /// TCP connections, or UDP sessions, open now.
    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// A reload: the new spec replaces the old one. With the same scheduler,
    /// flags and persistence, the servers are updated in place; otherwise
    /// the service gets a new scheduler (open connections finish on the old).
    pub(crate) fn update(self: &Arc<Self>, spec: ServiceSpec) {
        let old = self.spec.load_full();
        if old.per_source != spec.per_source {
            self.limits
                .store(spec.per_source.map(crate::limits::Limits::new));
        }
        let fresh = (old.sched != spec.sched).then(|| {
            info!(service = %self.name, scheduler = %spec.sched.scheduler, "new scheduler");
            new_scheduler(&spec)
        });
        self.spec.store(Arc::new(spec));
        self.reconcile_health(fresh);
    }

    /// Brings the scheduler's servers to `table` (see [`sync_dests`]); a
    /// `fresh` scheduler is filled first and then takes over, so that no
    /// connection meets an empty one.
    pub(crate) fn sync_table(&self, table: &[RealServerSpec], fresh: Option<Service>) {
        let gone = match fresh {
            Some(s) => {
                sync_dests(&s, table);
                self.sched.store(Arc::new(s));
                Vec::new()
            }
            None => sync_dests(&self.sched.load(), table),
        };
        self.refresh_dests();
        if !gone.is_empty() && self.expire_nodest() {
            // UDP sessions see it at their next datagram; TCP is told here.
            let n = self.conns.expire_dests(&gone);
            if n > 0 {
                info!(service = %self.name, connections = n, "expire_nodest_conn: resetting the connections of real servers that left");
            }
        }
    }

    /// Whether the flows of a real server that left end (`global.expire_nodest_conn`).
    pub fn expire_nodest(&self) -> bool {
        self.expire_nodest.load(Relaxed)
    }

    /// A removed service: its checks stop (its connections drain).
    pub(crate) fn retire(&self) {
        self.health.lock().servers.clear();
    }

    /// Counts a refusal, and tells apart "every server is over its
    /// threshold" from "no server at all".
    pub(crate) fn refuse_unscheduled(
        &self,
        client: SocketAddr,
        vip: SocketAddr,
        started: Instant,
    ) -> Refusal {
        let why = if self
            .scheduler()
            .dests()
            .iter()
            .any(|d| d.weight() > 0 && d.is_overloaded())
        {
            Refusal::Threshold
        } else {
            Refusal::NoServer
        };
        self.refuse(why, client, vip, started);
        why
    }

    /// Counts a refusal; says so in the log at most once per
    /// [`REFUSAL_LOG_INTERVAL`] per reason, with the running count; writes
    /// an access log line when those are on.
    pub(crate) fn refuse(
        &self,
        why: Refusal,
        client: SocketAddr,
        vip: SocketAddr,
        started: Instant,
    ) {
        self.stats.refuse(why);
        let now = crate::clock::now().as_nanos();
        let last = &self.refusal_logged[why.index()];
        let prev = last.load(Relaxed);
        let interval = u64::try_from(REFUSAL_LOG_INTERVAL.as_nanos()).unwrap_or(u64::MAX);
        if (prev == 0 || now.saturating_sub(prev) >= interval)
            && last.compare_exchange(prev, now, Relaxed, Relaxed).is_ok()
        {
            warn!(
                service = %self.name,
                reason = %why.name(),
                refused_total = self.stats.refused(why),
                "refusing clients"
            );
        }
        if self.access_log() {
            info!(
                target: "rvs::access",
                service = %self.name,
                proto = %self.spec.load().proto,
                %client,
                %vip,
                server = "-",
                bytes_in = 0,
                bytes_out = 0,
                duration_ms = started.elapsed().as_millis() as u64,
                end = %"refused",
                reason = %why.name(),
                "access"
            );
        }
    }

    /// Whether connections are logged when they end (`global.access_log`).
    pub fn access_log(&self) -> bool {
        self.access_log.load(Relaxed)
    }

    /// Takes the process-wide settings it follows.
    pub(crate) fn set_globals(&self, g: &crate::config::Global) {
        self.access_log.store(g.access_log, Relaxed);
        self.expire_nodest.store(g.expire_nodest_conn, Relaxed);
    }

    /// The access log line of a connection that ended `how`.
    pub(crate) fn log_access(&self, c: &LiveConn, started: Instant, how: &str) {
        info!(
            target: "rvs::access",
            service = %self.name,
            proto = %c.proto,
            client = %c.client,
            vip = %c.vip,
            server = %c.server,
            bytes_in = c.counters.to_server.load(Relaxed),
            bytes_out = c.counters.to_client.load(Relaxed),
            duration_ms = started.elapsed().as_millis() as u64,
            end = %how,
            "access"
        );
    }

    /// Takes a place for one more connection (session) of client `ip`
    /// under `per_source`; `None` when its group is over a limit (counted
    /// and logged by the caller as `limit`).
    pub(crate) fn admit_source(
        &self,
        ip: std::net::IpAddr,
    ) -> Result<Option<crate::limits::SourceGuard>, crate::limits::Over> {
        match self.limits.load_full() {
            None => Ok(None),
            Some(l) => l.admit(ip).map(Some),
        }
    }

    /// Source groups tracked by `per_source` now.
    pub fn sources_tracked(&self) -> usize {
        self.limits.load().as_ref().map_or(0, |l| l.tracked())
    }

    /// Takes a place for one more connection, within `max`.
    pub(crate) fn admit(self: &Arc<Self>, max: Option<u32>) -> Option<OpenGuard> {
        let limit = max.map_or(usize::MAX, |m| m as usize);
        let mut n = self.open.load(Relaxed);
        loop {
            if n >= limit {
                return None;
            }
            match self.open.compare_exchange_weak(n, n + 1, Relaxed, Relaxed) {
                Ok(_) => return Some(OpenGuard(Arc::clone(self))),
                Err(cur) => n = cur,
            }
        }
    }
}

/// A place taken by [`ServiceRuntime::admit`], given back when dropped.
#[derive(Debug)]
pub(crate) struct OpenGuard(Arc<ServiceRuntime>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}
