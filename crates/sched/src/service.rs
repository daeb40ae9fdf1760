//! A virtual service: its servers, its scheduler, its persistence, and the
//! connections counted against it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use arc_swap::ArcSwap;
use hashbrown::HashMap;

use crate::dest::{Counted, Dest, DestParams, DestUpdate};
use crate::error::SchedError;
use crate::kind::{SchedFlags, SchedulerKind};
use crate::persist::{Control, Persistence, TemplateEntry, Templates};
use crate::sched::{self, PickState, Skip, View, twos::Rng};
use crate::time::Time;

/// How a service schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The algorithm.
    pub scheduler: SchedulerKind,
    /// Its flags, already checked against it ([`SchedFlags::for_scheduler`]).
    pub flags: SchedFlags,
    /// Persistence, when on.
    pub persistence: Option<Persistence>,
    /// Seed of the random numbers twos draws.
    pub seed: u64,
    /// IPVS's `expire_quiescent_template` sysctl: a persistence template
    /// whose server has weight 0 is invalidated at its next use, and the
    /// client scheduled again (`ip_vs_check_template()`).
    pub expire_quiescent_template: bool,
}

impl ServiceConfig {
    /// A service with `scheduler`, no flags, no persistence.
    pub fn new(scheduler: SchedulerKind) -> ServiceConfig {
        ServiceConfig {
            scheduler,
            flags: SchedFlags::default(),
            persistence: None,
            seed: 0,
            expire_quiescent_template: false,
        }
    }
}

/// A virtual service. Cloning gives another handle to the same service.
#[derive(Clone, Debug)]
pub struct Service {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: ServiceConfig,
    /// Whether connection counts feed the pick index (lc family, lblc, lblcr).
    indexed: bool,
    view: ArcSwap<View>,
    state: Mutex<State>,
    templates: Option<Mutex<Templates>>,
    rng: Rng,
}

#[derive(Debug)]
struct State {
    pick: PickState,
    /// Deleted servers that connections, templates or lblc/lblcr entries
    /// still hold: an add of the same address revives them with their
    /// counts (`ip_vs_trash_get_dest()`).
    trash: HashMap<SocketAddr, Weak<Dest>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // State is updated in place in small steps; a panic elsewhere cannot
    // leave it half-written in a way that matters more than stopping would.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn check(p: &DestParams) -> Result<(), SchedError> {
    if p.weight < 0 {
        return Err(SchedError::NegativeWeight(p.weight));
    }
    if p.l_threshold > p.u_threshold {
        return Err(SchedError::ThresholdOrder {
            lower: p.l_threshold,
            upper: p.u_threshold,
        });
    }
    Ok(())
}

impl Service {
    /// An empty service created at `now` (lblc/lblcr start their expiry
    /// timer then).
    pub fn new(cfg: ServiceConfig, now: Time) -> Service {
        Service {
            inner: Arc::new(Inner {
                indexed: PickState::has_index(cfg.scheduler),
                view: ArcSwap::from_pointee(View::empty(cfg.scheduler)),
                state: Mutex::new(State {
                    pick: PickState::new(cfg.scheduler, now),
                    trash: HashMap::new(),
                }),
                templates: cfg.persistence.map(|_| Mutex::new(Templates::default())),
                rng: Rng::new(cfg.seed),
                cfg,
            }),
        }
    }

    /// The configuration the service was made with.
    pub fn config(&self) -> &ServiceConfig {
        &self.inner.cfg
    }

    /// `ipvsadm -a`: links a server at the head of the list, reviving it
    /// from the trash when it was deleted and is still referenced.
    pub fn add_dest(&self, addr: SocketAddr, params: DestParams) -> Result<(), SchedError> {
        check(&params)?;
        let inner = &*self.inner;
        let mut st = lock(&inner.state);
        let view = inner.view.load_full();
        if view.position(addr).is_some() {
            return Err(SchedError::DestExists(addr));
        }
        let dest = st
            .trash
            .remove(&addr)
            .and_then(|w| w.upgrade())
            .unwrap_or_else(|| Arc::new(Dest::new(addr)));
        dest.apply(params, true);
        let mut dests = Vec::with_capacity(view.dests.len() + 1);
        dests.push(dest);
        dests.extend(view.dests.iter().cloned());
        let new = Arc::new(View::new(inner.cfg.scheduler, dests, &view.table));
        st.pick.linked(&new);
        inner.view.store(new);
        Ok(())
    }

    /// `ipvsadm -e`: changes some parameters of a server.
    pub fn edit_dest(&self, addr: SocketAddr, update: DestUpdate) -> Result<(), SchedError> {
        let inner = &*self.inner;
        let mut st = lock(&inner.state);
        let view = inner.view.load_full();
        let pos = view.position(addr).ok_or(SchedError::NoSuchDest(addr))?;
        let dest = &view.dests[pos];
        let cur = dest.params();
        let params = DestParams {
            weight: update.weight.unwrap_or(cur.weight),
            u_threshold: update.u_threshold.unwrap_or(cur.u_threshold),
            l_threshold: update.l_threshold.unwrap_or(cur.l_threshold),
        };
        check(&params)?;
        dest.apply(params, false);
        // sh and mh have an upd_dest hook that rebuilds their table.
        if matches!(inner.cfg.scheduler, SchedulerKind::Sh | SchedulerKind::Mh) {
            inner
                .view
                .store(Arc::new(view.rebuilt(inner.cfg.scheduler)));
        }
        st.pick.updated(pos, &view);
        Ok(())
    }

    /// `ipvsadm -d`: unlinks a server. Its connections keep their counts on
    /// it until they close; it is never picked again unless added again.
    pub fn del_dest(&self, addr: SocketAddr) -> Result<(), SchedError> {
        let inner = &*self.inner;
        let mut st = lock(&inner.state);
        let view = inner.view.load_full();
        let pos = view.position(addr).ok_or(SchedError::NoSuchDest(addr))?;
        let mut dests = view.dests.to_vec();
        let dest = dests.remove(pos);
        dest.unlink();
        st.trash.retain(|_, w| w.strong_count() > 0);
        st.trash.insert(addr, Arc::downgrade(&dest));
        drop(dest);
        let new = Arc::new(View::new(inner.cfg.scheduler, dests, &view.table));
        st.pick.unlinked(pos, &new);
        inner.view.store(new);
        Ok(())
    }

    /// Makes the list exactly `want` (head first), in one step: servers
    /// already in the list keep their counters (and are edited when their
    /// parameters differ), servers not in `want` are unlinked as by
    /// [`Service::del_dest`], new ones are linked (revived from the trash
    /// when still referenced). The table is rebuilt once. Nothing changes
    /// when the list already is `want`.
    ///
    /// This is how a control plane that owns the whole list (a config file,
    /// DNS discovery) keeps the list order a function of its own order,
    /// whatever the history of changes: replicas that agree on `want` build
    /// the same sh, dh and mh tables. Single changes (`ipvsadm -a`) use
    /// [`Service::add_dest`], which links at the head as IPVS does.
    pub fn set_dests(&self, want: &[(SocketAddr, DestParams)]) -> Result<(), SchedError> {
        let mut seen = hashbrown::HashSet::with_capacity(want.len());
        for (addr, p) in want {
            check(p)?;
            if !seen.insert(*addr) {
                return Err(SchedError::DestExists(*addr));
            }
        }
        let inner = &*self.inner;
        let mut st = lock(&inner.state);
        let view = inner.view.load_full();
        let same = view.dests.len() == want.len()
            && view
                .dests
                .iter()
                .zip(want)
                .all(|(d, (a, p))| d.addr() == *a && d.params() == *p);
        if same {
            return Ok(());
        }
        let mut have: HashMap<SocketAddr, &Arc<Dest>> =
            view.dests.iter().map(|d| (d.addr(), d)).collect();
        let mut dests = Vec::with_capacity(want.len());
        for (addr, params) in want {
            let dest = match have.remove(addr) {
                Some(d) => {
                    if d.params() != *params {
                        d.apply(*params, false);
                    }
                    Arc::clone(d)
                }
                None => {
                    let d = st
                        .trash
                        .remove(addr)
                        .and_then(|w| w.upgrade())
                        .unwrap_or_else(|| Arc::new(Dest::new(*addr)));
                    d.apply(*params, true);
                    d
                }
            };
            dests.push(dest);
        }
        st.trash.retain(|_, w| w.strong_count() > 0);
        for d in have.into_values() {
            d.unlink();
            st.trash.insert(d.addr(), Arc::downgrade(d));
        }
        let new = Arc::new(View::new(inner.cfg.scheduler, dests, &view.table));
        st.pick.replaced(&view.dests, &new);
        inner.view.store(new);
        Ok(())
    }

    /// The servers in list order (the head of the list first, as
    /// `ipvsadm -L` shows them).
    pub fn dests(&self) -> Vec<Arc<Dest>> {
        self.inner.view.load().dests.to_vec()
    }

    /// The server with this address, if it is in the list.
    pub fn dest(&self, addr: SocketAddr) -> Option<Arc<Dest>> {
        let view = self.inner.view.load();
        view.position(addr).map(|i| Arc::clone(&view.dests[i]))
    }

    /// Live persistence templates.
    pub fn template_count(&self) -> usize {
        self.inner.templates.as_ref().map_or(0, |t| lock(t).len())
    }

    /// The live persistence templates, oldest first.
    pub fn templates(&self) -> Vec<TemplateEntry> {
        self.inner
            .templates
            .as_ref()
            .map_or_else(Vec::new, |t| lock(t).entries())
    }

    /// Runs every expiry due at or before `now`: persistence templates and
    /// the lblc/lblcr table collection. Call it as the clock advances; the
    /// scheduling calls also run what is due before they decide.
    pub fn advance(&self, now: Time) {
        if let Some(t) = &self.inner.templates {
            let mut t = lock(t);
            self.expire_templates(&mut t, now);
        }
        if matches!(
            self.inner.cfg.scheduler,
            SchedulerKind::Lblc | SchedulerKind::Lblcr
        ) {
            lock(&self.inner.state).pick.run_timers(now);
        }
    }

    fn expire_templates(&self, t: &mut Templates, now: Time) {
        t.expire(now, |dest| self.unbind(dest, Counted::Template));
    }

    /// Schedules a new connection from `client` to the virtual address
    /// `dst` at `now` (`ip_vs_schedule()`): persistence first, when on, then
    /// the scheduler. The connection is counted as inactive until
    /// [`Conn::established`]. `None` when no server can take it.
    pub fn schedule(&self, client: SocketAddr, dst: SocketAddr, now: Time) -> Option<Conn> {
        self.schedule_with(client, dst, None, now)
    }

    /// [`Service::schedule`] under a persistence engine: its data for this
    /// packet (the SIP Call-ID, `ip_vs_sip_fill_param()`), which the
    /// client's template must also match. `None` when the engine found none
    /// in the packet: IPVS then falls back to the plain template, as this
    /// does. Without persistence, the data is not used.
    pub fn schedule_with(
        &self,
        client: SocketAddr,
        dst: SocketAddr,
        pe: Option<&[u8]>,
        now: Time,
    ) -> Option<Conn> {
        let inner = &self.inner;
        let (Some(p), Some(templates)) = (inner.cfg.persistence, &inner.templates) else {
            let dest = self.pick_and_bind(client, dst, now, Counted::Inactive, Skip::default())?;
            return Some(self.conn(dest, None));
        };
        let mut t = lock(templates);
        self.expire_templates(&mut t, now);
        let key = p.key(client.ip(), dst.ip(), dst.port(), pe);
        let found = t.lookup(&key, pe);
        let quiescent_expires = inner.cfg.expire_quiescent_template;
        let (dest, tpl) =
            match found.and_then(|f| t.valid_dest(f, quiescent_expires).map(|d| (d, f))) {
                Some(hit) => hit,
                None => {
                    if let Some(f) = found {
                        t.invalidate(f);
                    }
                    let dest =
                        self.pick_and_bind(client, dst, now, Counted::Template, Skip::default())?;
                    let f = t.create(key, pe, Arc::clone(&dest), p.timeout);
                    (dest, f)
                }
            };
        self.bind(&dest, Counted::Inactive);
        let ctl = t.control(tpl, now);
        drop(t);
        Some(self.conn(dest, ctl))
    }

    /// Schedules again a connection whose earlier servers (`exclude`) could
    /// not be reached. This is an rvs extension — IPVS never retries: the
    /// scheduler picks as if the excluded servers were unusable (quiescent),
    /// and persistence is bypassed: no template is consulted, made or
    /// refreshed, so the client's template still names its usual server.
    pub fn schedule_retry(
        &self,
        client: SocketAddr,
        dst: SocketAddr,
        now: Time,
        exclude: &[SocketAddr],
    ) -> Option<Conn> {
        if let Some(t) = &self.inner.templates {
            let mut t = lock(t);
            self.expire_templates(&mut t, now);
        }
        let dest = self.pick_and_bind(client, dst, now, Counted::Inactive, Skip(exclude))?;
        Some(self.conn(dest, None))
    }

    /// Takes over a persistence template made elsewhere — by the process
    /// before a binary upgrade, or by another director (IPVS's sync
    /// daemon): clients of `client`'s network (under the service's netmask)
    /// to the virtual address `vaddr:vport` go to the real server `dest`
    /// until `expires`, renewed by each connection from then on as any
    /// template is. A live template of that key for another server is
    /// invalidated (the one taken over wins); one for the same server
    /// keeps the later expiry. `pe` is the template's persistence-engine
    /// data (a SIP Call-ID). False when nothing was made: the service
    /// has no persistence, `dest` is not in its list, or the template was
    /// there already.
    pub fn adopt_template(
        &self,
        client: std::net::IpAddr,
        vaddr: std::net::IpAddr,
        vport: u16,
        pe: Option<&[u8]>,
        dest: SocketAddr,
        expires: Time,
    ) -> bool {
        let (Some(p), Some(templates)) = (self.inner.cfg.persistence, &self.inner.templates) else {
            return false;
        };
        let Some(dest) = self.dest(dest) else {
            return false;
        };
        let key = p.key(client, vaddr, vport, pe);
        let mut t = lock(templates);
        let made = t.adopt(key, pe, &dest, expires, p.timeout);
        drop(t);
        if made {
            self.bind(&dest, Counted::Template);
        }
        made
    }

    /// Takes over a connection made elsewhere (the process before a
    /// binary upgrade; a synced director): from `client` to the virtual
    /// address `dst`, on the real server `dest`, counted as inactive as a
    /// new one is. Under persistence it is controlled by its client's
    /// template when that template names `dest`, without renewing it (no
    /// new connection was scheduled). `None` when `dest` is not in the
    /// list.
    pub fn adopt(&self, client: SocketAddr, dst: SocketAddr, dest: SocketAddr) -> Option<Conn> {
        let dest = self.dest(dest)?;
        let ctl = match (self.inner.cfg.persistence, &self.inner.templates) {
            (Some(p), Some(templates)) => {
                let key = p.key(client.ip(), dst.ip(), dst.port(), None);
                let t = lock(templates);
                t.lookup(&key, None)
                    .filter(|f| t.dest_of(*f).is_some_and(|d| Arc::ptr_eq(d, &dest)))
                    .and_then(|f| t.attach(f))
            }
            _ => None,
        };
        self.bind(&dest, Counted::Inactive);
        Some(self.conn(dest, ctl))
    }

    fn conn(&self, dest: Arc<Dest>, template: Option<Arc<Control>>) -> Conn {
        Conn {
            svc: Arc::clone(&self.inner),
            dest,
            counted: Counted::Inactive,
            template,
        }
    }

    /// Picks a server and binds `how` to it, under one lock acquisition.
    fn pick_and_bind(
        &self,
        client: SocketAddr,
        dst: SocketAddr,
        now: Time,
        how: Counted,
        skip: Skip<'_>,
    ) -> Option<Arc<Dest>> {
        let inner = &*self.inner;
        let kind = inner.cfg.scheduler;
        if sched::is_lock_free(kind) {
            let view = inner.view.load();
            let dest =
                Arc::clone(view.pick(kind, inner.cfg.flags, client, dst, &inner.rng, skip)?);
            dest.bind(how);
            return Some(dest);
        }
        let mut st = lock(&inner.state);
        let view = inner.view.load();
        let dest = st.pick.pick(&view, dst, now, skip)?;
        dest.bind(how);
        if inner.indexed {
            st.pick.counts_changed(&dest);
        }
        Some(dest)
    }

    fn bind(&self, dest: &Dest, how: Counted) {
        dest.bind(how);
        self.inner.counts_changed(dest);
    }

    fn unbind(&self, dest: &Dest, how: Counted) {
        dest.unbind(how);
        self.inner.counts_changed(dest);
    }
}

impl Inner {
    fn counts_changed(&self, dest: &Dest) {
        if self.indexed {
            lock(&self.state).pick.counts_changed(dest);
        }
    }
}

/// One scheduled connection, counted against its server until dropped
/// (`ip_vs_conn_expire()` → `ip_vs_unbind_dest()`).
#[derive(Debug)]
pub struct Conn {
    svc: Arc<Inner>,
    dest: Arc<Dest>,
    counted: Counted,
    template: Option<Arc<Control>>,
}

impl Conn {
    /// The server the connection was scheduled to.
    pub fn dest(&self) -> &Arc<Dest> {
        &self.dest
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.dest.addr()
    }

    /// Where to connect for a client that connected to `dst`: the
    /// server's address, whose port 0 stands for `dst`'s port, as IPVS's
    /// does for a destination of port 0 (a firewall-mark service's, which
    /// covers several ports).
    pub fn target(&self, dst: SocketAddr) -> SocketAddr {
        let addr = self.dest.addr();
        if addr.port() == 0 {
            SocketAddr::new(addr.ip(), dst.port())
        } else {
            addr
        }
    }

    /// Whether the connection counts as active.
    pub fn is_active(&self) -> bool {
        self.counted == Counted::Active
    }

    /// TCP reached ESTABLISHED: the connection now counts as active.
    pub fn established(&mut self) {
        self.set(Counted::Active);
    }

    /// The connection left ESTABLISHED (a FIN, a half-close): it counts as
    /// inactive again.
    pub fn fin(&mut self) {
        self.set(Counted::Inactive);
    }

    fn set(&mut self, to: Counted) {
        if self.counted != to {
            self.dest.move_count(self.counted, to);
            self.counted = to;
            self.svc.counts_changed(&self.dest);
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(t) = &self.template {
            t.release();
        }
        self.dest.unbind(self.counted);
        self.svc.counts_changed(&self.dest);
    }
}
