//! A running virtual service: its configuration, its scheduler and its
//! counters. Listeners and connections hold it by `Arc`; a reload updates it
//! in place, so that what is unchanged keeps its state.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use arc_swap::ArcSwap;
use rvs_sched::{DestUpdate, Service};
use tracing::info;

use crate::config::{RealServerSpec, ServiceSpec};
use crate::stats::{Refusal, ServiceStats};

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
}

fn new_scheduler(spec: &ServiceSpec) -> Service {
    let s = Service::new(spec.sched, crate::clock::now());
    sync_dests(&s, &spec.real_servers);
    s
}

/// Brings the scheduler's servers to `want`: deletes those gone, edits
/// those changed, adds the new ones in file order (each at the head of the
/// list, as keepalived's adds do). Unchanged servers keep their counters.
fn sync_dests(sched: &Service, want: &[RealServerSpec]) {
    for d in sched.dests() {
        if !want.iter().any(|w| w.address == d.addr()) {
            // Cannot fail: the server was just listed.
            let _ = sched.del_dest(d.addr());
        }
    }
    for w in want {
        match sched.dest(w.address) {
            Some(d) if d.params() == w.params => {}
            Some(_) => {
                let update = DestUpdate {
                    weight: Some(w.params.weight),
                    u_threshold: Some(w.params.u_threshold),
                    l_threshold: Some(w.params.l_threshold),
                };
                // Cannot fail: the parameters were validated with the config.
                let _ = sched.edit_dest(w.address, update);
            }
            None => {
                let _ = sched.add_dest(w.address, w.params);
            }
        }
    }
}

impl ServiceRuntime {
    pub(crate) fn new(spec: ServiceSpec) -> Arc<ServiceRuntime> {
        Arc::new(ServiceRuntime {
            name: spec.name.clone(),
            sched: ArcSwap::from_pointee(new_scheduler(&spec)),
            spec: ArcSwap::from_pointee(spec),
            stats: ServiceStats::default(),
            open: AtomicUsize::new(0),
        })
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The running configuration of the service.
    pub fn spec(&self) -> Arc<ServiceSpec> {
        self.spec.load_full()
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
    pub(crate) fn update(&self, spec: ServiceSpec) {
        let old = self.spec.load_full();
        if old.sched == spec.sched {
            sync_dests(&self.sched.load(), &spec.real_servers);
        } else {
            info!(service = %self.name, scheduler = %spec.sched.scheduler, "new scheduler");
            self.sched.store(Arc::new(new_scheduler(&spec)));
        }
        self.spec.store(Arc::new(spec));
    }

    /// Counts a refusal, and tells apart "every server is over its
    /// threshold" from "no server at all".
    pub(crate) fn refuse_unscheduled(&self) -> Refusal {
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
        self.stats.refuse(why);
        why
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
