//! The running proxy: services, listeners, reloads and shutdown.
//!
//! A reload ([`Proxy::apply`]) takes a whole checked [`Config`] and applies
//! it in two phases. First every address the new config needs and that is
//! not already open is bound; if one fails, the new sockets are closed and
//! nothing has changed. Then, with nothing left that can fail: services are
//! updated in place (unchanged real servers keep their counters and the
//! scheduler its state), new ones are created, listeners are pointed at
//! their (new) service, and listeners no longer configured stop accepting.
//! Connections in flight are never touched: they hold their service, and a
//! removed service's connections drain on their own.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::{Config, ConfigError, Proto, Target};
use crate::discovery::{self, EntryState};
use crate::inherited::Inherited;
use crate::listener::{self, Bound, Serving, Slot};
use crate::service::ServiceRuntime;
use crate::sni::names::Routes;
use crate::tcp::forward::Mode;
use crate::workers::Workers;

mod takeover;

pub use takeover::TakenOver;

/// Why a configuration could not be applied. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// An address could not be bound.
    #[error("service {service:?}: cannot listen on {proto} {addr}: {error}")]
    Bind {
        /// The service.
        service: String,
        /// TCP or UDP.
        proto: Proto,
        /// The address.
        addr: SocketAddr,
        /// The system's error.
        error: io::Error,
    },
    /// The data-plane threads could not start.
    #[error("cannot start the data-plane workers: {0}")]
    Workers(io::Error),
    /// An edit made the configuration invalid.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
}

/// Options of the data plane that are not in the configuration file.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// How TCP bytes are moved.
    pub forwarding: Mode,
    /// Data-plane worker threads, each with its own runtime and its own
    /// SO_REUSEPORT socket per TCP address. 0: TCP connections run on the
    /// runtime that started the proxy, one socket per address.
    pub workers: usize,
    /// With two workers or more: a worker holding two connections more
    /// than another passes what it accepts to that one
    /// (`rvs run --balance-workers`).
    pub balance_workers: bool,
}

/// A running proxy. Cloning gives another handle to it.
#[derive(Clone, Debug)]
pub struct Proxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    state: Mutex<State>,
    config: ArcSwap<Config>,
    /// Configurations applied, the first included.
    generation: AtomicU64,
    /// Shutting down: not ready for new connections.
    draining: AtomicBool,
    /// The listening sockets were handed to the next process.
    pub(crate) handed_over: Arc<AtomicBool>,
    /// Cancelled once the listeners may serve ([`Proxy::open`]).
    opened: CancellationToken,
    tracker: TaskTracker,
    options: Options,
    stop: CancellationToken,
    workers: Workers,
    /// Sockets passed by the service manager, adopted before binding.
    inherited: Arc<Inherited>,
    /// Wakes DNS discovery when the configuration changed.
    discovery_wake: Arc<tokio::sync::Notify>,
    /// The running configuration's hash, and the generation it is of.
    config_hash: Mutex<Option<(u64, u64)>>,
    /// Which listen addresses are not on this host (yet).
    presence: crate::local_addrs::Presence,
    /// The descriptor plan of the configuration in force.
    plan: Mutex<Option<crate::fds::Plan>>,
    /// IPVS's sync daemons.
    sync: Arc<crate::sync::Daemons>,
}

#[derive(Debug, Default)]
struct State {
    services: HashMap<String, Arc<ServiceRuntime>>,
    /// What DNS discovery found, by service and entry.
    discovered: HashMap<String, HashMap<Target, EntryState>>,
    /// Listening sockets by protocol and configured address.
    slots: HashMap<(Proto, SocketAddr), Arc<Slot>>,
    /// Addresses whose listener was stopped lately: its task closes the
    /// socket a moment later, which a new bind of the address waits for.
    closing: HashMap<(Proto, SocketAddr), std::time::Instant>,
    /// Duplicates of each listening socket, for a binary upgrade to hand
    /// over; dropped with their listener.
    handover: HashMap<(Proto, SocketAddr), Vec<std::os::fd::OwnedFd>>,
}

impl State {
    /// A service as it runs: its file form `spec` with the servers DNS
    /// found for it in place.
    fn running_form(&self, spec: &crate::config::ServiceSpec) -> crate::config::ServiceSpec {
        let found = self.discovered.get(&spec.name);
        discovery::expand(spec, |i| {
            found.and_then(|f| f.get(&spec.discovery[i].target))
        })
    }
}

/// How long a bind waits for a listener of ours that is closing.
const CLOSING_WAIT: Duration = Duration::from_millis(500);

/// Binds `addr`; when it is in use by a listener of ours that was just
/// stopped (`ours`), waits for that one to close, up to [`CLOSING_WAIT`].
fn bind_after_close(
    proto: Proto,
    addr: SocketAddr,
    ours: bool,
    copies: usize,
) -> io::Result<listener::Bound> {
    let start = std::time::Instant::now();
    loop {
        match listener::bind(proto, addr, copies) {
            Err(e)
                if ours
                    && e.kind() == io::ErrorKind::AddrInUse
                    && start.elapsed() < CLOSING_WAIT =>
            {
                pause(Duration::from_millis(2));
            }
            r => return r,
        }
    }
}

/// Sleeps without holding up the runtime's other tasks when it can.
fn pause(d: Duration) {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| std::thread::sleep(d));
        }
        _ => std::thread::sleep(d),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Proxy {
    /// Starts serving `config` (inside a tokio runtime), with
    /// `options.workers` data-plane threads.
    pub fn start(config: Config, options: Options) -> Result<Proxy, ApplyError> {
        Proxy::start_with(config, options, Arc::new(Inherited::none()))
    }

    /// As [`Proxy::start`], adopting the `inherited` sockets for the
    /// addresses they are bound to, now and at every reload.
    pub fn start_with(
        config: Config,
        options: Options,
        inherited: Arc<Inherited>,
    ) -> Result<Proxy, ApplyError> {
        let proxy = Proxy::start_held(config, options, inherited)?;
        proxy.open();
        Ok(proxy)
    }

    /// As [`Proxy::start_with`], but serving nothing until
    /// [`Proxy::open`]: every address is bound (connections and datagrams
    /// wait in the sockets), the health checks and timers run. A binary
    /// upgrade's new process adopts the old one's state
    /// ([`Proxy::take_over`]) in between.
    pub fn start_held(
        config: Config,
        options: Options,
        inherited: Arc<Inherited>,
    ) -> Result<Proxy, ApplyError> {
        let workers = Workers::start(options.workers, options.balance_workers)
            .map_err(ApplyError::Workers)?;
        let proxy = Proxy {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                config: ArcSwap::from_pointee(Config {
                    global: config.global.clone(),
                    admin: config.admin.clone(),
                    services: Vec::new(),
                }),
                generation: AtomicU64::new(0),
                draining: AtomicBool::new(false),
                handed_over: Arc::new(AtomicBool::new(false)),
                opened: CancellationToken::new(),
                tracker: TaskTracker::new(),
                options,
                stop: CancellationToken::new(),
                workers,
                inherited,
                discovery_wake: Arc::new(tokio::sync::Notify::new()),
                config_hash: Mutex::new(None),
                presence: crate::local_addrs::Presence::default(),
                plan: Mutex::new(None),
                sync: Arc::default(),
            }),
        };
        // A shell's soft limit (1024) is no server's: raised to the hard
        // limit, once per process, before the first plan is made.
        static RAISED: std::sync::Once = std::sync::Once::new();
        RAISED.call_once(|| {
            let (before, after) = crate::fds::raise_limit();
            if after > before {
                info!(
                    from = before,
                    to = after,
                    "file descriptor limit raised to the hard limit"
                );
            }
        });
        proxy.apply(config)?;
        tokio::spawn(timers(
            Arc::downgrade(&proxy.inner),
            proxy.inner.stop.clone(),
        ));
        tokio::spawn(crate::discovery::task::run(
            proxy.downgrade(),
            proxy.inner.stop.clone(),
        ));
        Ok(proxy)
    }

    /// IPVS's sync daemons: what runs, what they counted, what backups
    /// received.
    pub fn sync(&self) -> &crate::sync::Daemons {
        &self.inner.sync
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.inner.config.load_full()
    }

    /// How many configurations were applied (the first one counts): it
    /// changes with every reload and every edit.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Relaxed)
    }

    /// A hash of the running configuration in the form `rvs show-config`
    /// writes it (`rvs_config_info`, `GET /api/v1/reload`): the same on two
    /// replicas running the same configuration. Computed once per generation.
    pub fn config_hash(&self) -> u64 {
        let generation = self.generation();
        if let Some((g, h)) = *lock(&self.inner.config_hash)
            && g == generation
        {
            return h;
        }
        // Of the redacted form: the hash is shown to anyone who can scrape,
        // and must not be an oracle for a secret.
        let hash = self.config().redacted().form_hash();
        // Kept only if no configuration was applied meanwhile.
        if self.generation() == generation {
            *lock(&self.inner.config_hash) = Some((generation, hash));
        }
        hash
    }

    /// Whether it takes new connections: every listener is bound (true
    /// once started) and it is not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.inner.draining.load(Relaxed)
    }

    /// Applies a new configuration, whole, or not at all.
    pub fn apply(&self, config: Config) -> Result<(), ApplyError> {
        let mut st = lock(&self.inner.state);
        self.apply_locked(&mut st, config)?;
        let ips = listen_ips(&st);
        drop(st);
        self.inner.presence.refresh(ips);
        Ok(())
    }

    /// Whether `addr`'s IP is on this host (at the last look, once a
    /// second): rvs listens on it either way.
    pub fn is_local(&self, addr: SocketAddr) -> bool {
        !self.inner.presence.is_absent(addr.ip())
    }

    /// Edits the running configuration: `edit` changes a copy of it, which
    /// is checked as a file would be ([`Config::check_edit`]: what changed
    /// is read back, names and addresses across services) and applied, or nothing
    /// changes. Edits and reloads do not interleave. The edit lasts until
    /// the next reload of the file.
    pub fn edit<T, E: From<ApplyError>>(
        &self,
        edit: impl FnOnce(&mut Config) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut st = lock(&self.inner.state);
        let running = self.inner.config.load_full();
        let mut draft = Config::clone(&running);
        let out = edit(&mut draft)?;
        let checked = running.check_edit(draft).map_err(ApplyError::Invalid)?;
        self.apply_locked(&mut st, checked)?;
        Ok(out)
    }

    fn apply_locked(&self, st: &mut State, config: Config) -> Result<(), ApplyError> {
        // The addresses wanted, and the services each one serves (several
        // when they share it, routed by the ClientHello), in file order.
        let mut wanted: Vec<((Proto, SocketAddr), Vec<&str>)> = Vec::new();
        let mut at: HashMap<(Proto, SocketAddr), usize> = HashMap::new();
        for s in &config.services {
            for a in &s.listen {
                let key = (s.proto, *a);
                let i = *at.entry(key).or_insert_with(|| {
                    wanted.push((key, Vec::new()));
                    wanted.len() - 1
                });
                let names = &mut wanted[i].1;
                if !names.contains(&s.name.as_str()) {
                    names.push(s.name.as_str());
                }
            }
        }
        // Phase 1: bind what is new. Dropping `fresh` on error closes them.
        let mut fresh: HashMap<(Proto, SocketAddr), Bound> = HashMap::new();
        for (key @ (proto, addr), names) in &wanted {
            if st.slots.contains_key(key) {
                continue;
            }
            let service = names[0];
            let ours = st.closing.contains_key(key);
            let copies = self.inner.workers.sockets_per_address();
            let bound = match self.inner.inherited.take_all(*proto, *addr) {
                Some(passed) => {
                    info!(service, proto = %proto, listen = %addr, "adopting the socket passed by the service manager or the process before");
                    passed.and_then(|s| listener::adopt(*proto, s, copies))
                }
                None => bind_after_close(*proto, *addr, ours, copies),
            }
            .map_err(|error| ApplyError::Bind {
                service: (*service).to_owned(),
                proto: *proto,
                addr: *addr,
                error,
            })?;
            fresh.insert(*key, bound);
        }
        // Phase 2: nothing below fails. A service whose running form
        // (its discovered servers in place) did not change is not touched:
        // a reload costs what changed.
        let mut services = HashMap::new();
        for spec in &config.services {
            let running = st.running_form(spec);
            let rt = match st.services.remove(&spec.name) {
                Some(rt) => {
                    rt.set_globals(&config.global);
                    if *rt.spec() != running {
                        rt.update(running);
                    }
                    rt
                }
                None => ServiceRuntime::new(running, Arc::clone(&self.inner.sync)),
            };
            services.insert(spec.name.clone(), rt);
        }
        // Forget what was found for entries no longer configured.
        st.discovered.retain(|name, found| {
            let Some(spec) = config.services.iter().find(|s| &s.name == name) else {
                return false;
            };
            found.retain(|t, _| spec.discovery.iter().any(|d| &d.target == t));
            !found.is_empty()
        });
        let mut slots = HashMap::new();
        for (key, names) in &wanted {
            let target = Arc::new(serving(&services, names));
            if let Some(slot) = st.slots.remove(key) {
                slot.target.store(target);
                slots.insert(*key, slot);
                continue;
            }
            let Some(bound) = fresh.remove(key) else {
                continue;
            };
            st.handover.insert(*key, bound.duplicates());
            let local = bound.local_addr().unwrap_or(key.1);
            match self.serve(bound, local, target) {
                Ok(slot) => {
                    slots.insert(*key, slot);
                }
                Err(e) => {
                    tracing::error!(listen = %local, error = %e, "cannot serve a bound socket")
                }
            }
        }
        st.closing
            .retain(|_, at| at.elapsed() < Duration::from_secs(5));
        for (key, slot) in st.slots.drain() {
            st.handover.remove(&key);
            info!(proto = %key.0, listen = %slot.local, "listener closed");
            slot.stop.cancel();
            // By the address configured and the one bound (port 0).
            let now = std::time::Instant::now();
            st.closing.insert(key, now);
            st.closing.insert((key.0, slot.local), now);
        }
        for (name, rt) in &st.services {
            info!(service = %name, "service removed: its connections drain");
            rt.retire();
        }
        for rt in services.values() {
            rt.set_globals(&config.global);
        }
        st.slots = slots;
        st.services = services;
        self.plan_descriptors(&config);
        self.inner
            .sync
            .configure(&config.global.sync, Arc::downgrade(&self.inner));
        self.inner.config.store(Arc::new(config));
        self.inner.generation.fetch_add(1, Relaxed);
        self.inner.discovery_wake.notify_one();
        Ok(())
    }

    /// Serves `bound` on `local` for `target`, in a new slot.
    fn serve(
        &self,
        bound: Bound,
        local: SocketAddr,
        target: Arc<Serving>,
    ) -> io::Result<Arc<Slot>> {
        let slot = Arc::new(Slot::new(
            local,
            target,
            self.inner.stop.child_token(),
            Arc::clone(&self.inner.handed_over),
            self.inner.opened.clone(),
        ));
        bound.serve(
            Arc::clone(&slot),
            &self.inner.tracker,
            self.inner.options.forwarding,
            &self.inner.workers,
        )?;
        Ok(slot)
    }

    /// Makes the descriptor plan of `config` and puts it in force; what
    /// it cannot honour is logged when the plan changes.
    fn plan_descriptors(&self, config: &Config) {
        let plan = crate::fds::Plan::new(
            crate::fds::current_limit(),
            config,
            self.inner.options.workers,
        );
        crate::fds::BUDGET.set(&plan);
        let mut last = lock(&self.inner.plan);
        if *last != Some(plan) {
            info!(
                limit = plan.limit,
                reserve = plan.reserve,
                data_plane = plan.data,
                udp_sessions = plan.udp_sessions,
                admin_connections = plan.admin_connections,
                "file descriptors planned"
            );
            for w in plan.warnings(config) {
                tracing::warn!("{w}");
            }
            *last = Some(plan);
        }
    }

    /// The descriptor plan in force.
    pub fn descriptor_plan(&self) -> Option<crate::fds::Plan> {
        *lock(&self.inner.plan)
    }

    /// Each data-plane worker's TCP connections and the connections it
    /// passed to another; empty with fewer than two workers.
    pub(crate) fn worker_loads(&self) -> Vec<crate::workers::Load> {
        self.inner
            .workers
            .balance()
            .map(|b| b.loads())
            .unwrap_or_default()
    }

    /// A handle that does not keep the proxy alive.
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// The proxy behind a weak handle, while it runs.
    pub(crate) fn upgrade(weak: &std::sync::Weak<Inner>) -> Option<Proxy> {
        weak.upgrade().map(|inner| Proxy { inner })
    }

    /// Told each time a configuration is applied.
    pub(crate) fn config_changes(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.inner.discovery_wake)
    }

    /// Applies one resolution of `target` for `service`: when the servers
    /// in force change, that service alone is updated, as a reload would
    /// update it. Returns what to log, the servers in force and leaving,
    /// and whether they changed; `None` when the service has no such entry.
    /// The discovery loop calls it; public for the churn benchmark.
    pub fn apply_resolution(
        &self,
        service: &str,
        target: &Target,
        answer: discovery::Answer,
        now: std::time::Instant,
    ) -> Option<(discovery::Event, usize, usize, bool)> {
        let mut st = lock(&self.inner.state);
        let config = self.inner.config.load();
        let spec = config.service(service)?;
        spec.discovery.iter().find(|d| &d.target == target)?;
        let hold = config.global.dns.hold_nx;
        let entry = st
            .discovered
            .entry(service.to_owned())
            .or_default()
            .entry(target.clone())
            .or_default();
        let (changed, event) = entry.update(answer, spec.proto, hold, now);
        let (servers, leaving) = (entry.servers(), entry.leaving());
        if changed {
            self.rerun(&st, spec);
        }
        Some((event, servers, leaving, changed))
    }

    /// Edits a server that DNS discovery found (`rvsadm -e`, `-d`): `edit`
    /// gets its running parameters and says what to do. The edit lasts
    /// until a resolution changes the server's record. `None` when no
    /// discovered server of `service` has that address.
    pub(crate) fn edit_discovered<E>(
        &self,
        service: &str,
        addr: SocketAddr,
        edit: impl FnOnce(rvs_sched::DestParams) -> Result<discovery::Override, E>,
    ) -> Option<Result<(), E>> {
        let mut st = lock(&self.inner.state);
        let config = self.inner.config.load();
        let spec = config.service(service)?;
        let rt = st.services.get(service)?;
        let running = rt.spec();
        let r = running
            .real_servers
            .iter()
            .find(|r| r.address == addr && r.discovered.is_some())?;
        let target = &spec.discovery.get(r.discovered?)?.target;
        let o = match edit(r.params) {
            Ok(o) => o,
            Err(e) => return Some(Err(e)),
        };
        let entry = st.discovered.get_mut(service)?.get_mut(target)?;
        if !entry.has(addr) {
            return None;
        }
        entry.edit(addr, o);
        self.rerun(&st, spec);
        Some(Ok(()))
    }

    /// Drops the servers that left DNS and have no connection left; true
    /// when some wait still.
    pub(crate) fn sweep_leaving(&self) -> bool {
        let mut st = lock(&self.inner.state);
        let config = self.inner.config.load();
        let mut waiting = false;
        let mut changed: Vec<String> = Vec::new();
        let State {
            services,
            discovered,
            ..
        } = &mut *st;
        for (name, found) in discovered.iter_mut() {
            let Some(rt) = services.get(name) else {
                continue;
            };
            let idle = |a: SocketAddr| {
                rt.scheduler()
                    .dest(a)
                    .is_none_or(|d| d.active_conns() == 0 && d.inactive_conns() == 0)
            };
            let mut any = false;
            for e in found.values_mut().filter(|e| e.has_leaving()) {
                any |= e.sweep(idle);
                waiting |= e.has_leaving();
            }
            if any {
                changed.push(name.clone());
            }
        }
        for name in changed {
            if let Some(spec) = config.service(&name) {
                info!(service = %name, "real servers that left DNS have no connection left: removed");
                self.rerun(&st, spec);
            }
        }
        waiting
    }

    /// Updates one running service to its file form `spec` with what was
    /// found for it.
    fn rerun(&self, st: &State, spec: &crate::config::ServiceSpec) {
        let Some(rt) = st.services.get(&spec.name) else {
            return;
        };
        let running = st.running_form(spec);
        if *rt.spec() != running {
            rt.update(running);
        }
    }

    /// What DNS discovery says of each entry of `service`: the entry, the
    /// servers in force, those leaving, resolutions by result, whether a
    /// good answer ever came, and the failure in progress with its age.
    pub fn discovery_status(&self, service: &str) -> Vec<crate::discovery::EntryView> {
        let st = lock(&self.inner.state);
        let config = self.inner.config.load();
        let Some(spec) = config.service(service) else {
            return Vec::new();
        };
        let found = st.discovered.get(service);
        let now = std::time::Instant::now();
        spec.discovery
            .iter()
            .map(|d| {
                crate::discovery::EntryView::of(
                    &d.target,
                    found.and_then(|f| f.get(&d.target)),
                    now,
                )
            })
            .collect()
    }

    /// `ipvsadm -Z`: zeroes the tables' counters of one service, or of all.
    /// False when there is no service of that name.
    pub fn zero(&self, service: Option<&str>) -> bool {
        match service {
            Some(name) => match self.service(name) {
                Some(s) => {
                    s.zero();
                    true
                }
                None => false,
            },
            None => {
                for s in self.services() {
                    s.zero();
                }
                true
            }
        }
    }

    /// Duplicates of every listening socket, with its protocol and bound
    /// address: what a binary upgrade hands to the next process. A TCP
    /// address gives each member of its SO_REUSEPORT group.
    pub fn listening_sockets(&self) -> io::Result<Vec<(Proto, SocketAddr, std::os::fd::OwnedFd)>> {
        let st = lock(&self.inner.state);
        let mut out = Vec::new();
        for (key, fds) in &st.handover {
            let local = st.slots.get(key).map_or(key.1, |s| s.local);
            for fd in fds {
                out.push((key.0, local, fd.try_clone()?));
            }
        }
        Ok(out)
    }

    /// A binary upgrade took over: from now on, stopping keeps the UDP
    /// sessions relaying their servers' replies until they idle out (the
    /// listening sockets are the next process's to read).
    pub fn handed_over(&self) {
        self.inner.handed_over.store(true, Relaxed);
    }

    /// The running services.
    pub fn services(&self) -> Vec<Arc<ServiceRuntime>> {
        let st = lock(&self.inner.state);
        let mut v: Vec<_> = st.services.values().cloned().collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    /// The running service named `name`.
    pub fn service(&self, name: &str) -> Option<Arc<ServiceRuntime>> {
        lock(&self.inner.state).services.get(name).cloned()
    }

    /// The addresses whose services are routed by the ClientHello, with
    /// their count of connections closed before one took them.
    pub(crate) fn routed_addresses(
        &self,
    ) -> Vec<(Proto, SocketAddr, Arc<crate::sni::read::Refusals>)> {
        let st = lock(&self.inner.state);
        let mut v: Vec<_> = st
            .slots
            .iter()
            .filter(|(_, s)| matches!(**s.target.load(), Serving::ByHello(_)))
            .map(|((proto, _), s)| (*proto, s.local, Arc::clone(&s.refusals)))
            .collect();
        v.sort_by_key(|(p, a, _)| (*a, *p == Proto::Udp));
        v
    }

    /// The bound addresses of a service (the real ports when 0 was asked).
    pub fn local_addrs(&self, name: &str) -> Vec<SocketAddr> {
        let st = lock(&self.inner.state);
        let mut v: Vec<SocketAddr> = st
            .slots
            .values()
            .filter(|s| s.target.load().serves(name))
            .map(|s| s.local)
            .collect();
        v.sort();
        v
    }

    /// Stops accepting, then waits up to `grace` for open connections to
    /// finish. True when they all did.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.inner.draining.store(true, Relaxed);
        self.inner.stop.cancel();
        self.inner.sync.stop();
        {
            let mut st = lock(&self.inner.state);
            st.slots.clear();
            st.handover.clear();
        }
        self.inner.tracker.close();
        tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_ok()
    }
}

/// The IPs of every listener, each once.
/// What an address serves: its one service without `match`, or its
/// services routed by their `match` (`names` in file order: the
/// configuration was checked, so at most one has none).
fn serving(services: &HashMap<String, Arc<ServiceRuntime>>, names: &[&str]) -> Serving {
    if let [one] = names
        && services[*one].spec().matching.is_none()
    {
        return Serving::One(Arc::clone(&services[*one]));
    }
    let (mut matched, mut default) = (Vec::new(), None);
    for name in names {
        let rt = Arc::clone(&services[*name]);
        match rt.spec().matching.clone() {
            Some(m) => matched.push((m, rt)),
            None => default = Some(rt),
        }
    }
    Serving::ByHello(Routes::new(matched, default))
}

fn listen_ips(st: &State) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = st.slots.keys().map(|(_, a)| a.ip()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Runs the schedulers' expiries (persistence templates, lblc/lblcr
/// tables) once a second, and the rate estimators every 2 seconds.
async fn timers(inner: std::sync::Weak<Inner>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut odd = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let (services, ips) = {
            let st = lock(&inner.state);
            let services: Vec<_> = st.services.values().cloned().collect();
            (services, listen_ips(&st))
        };
        inner.presence.refresh(ips);
        let now = crate::clock::now();
        odd = !odd;
        inner.sync.synced.sweep(now);
        for s in services {
            s.scheduler().advance(now);
            s.health_tick();
            if !odd {
                s.tick();
            }
        }
    }
}
