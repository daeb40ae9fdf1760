//! Health checking, with keepalived's meaning.
//!
//! Each real server of a service with checks gets one task per check
//! (tokio tasks, not threads: a thousand servers are checked by the
//! runtime's workers). A task waits a random warm-up, probes (`probe`),
//! and feeds the verdict to the service's health table (`state`): a live
//! server's failure is retried `retry` times before it counts; a server is
//! up when every one of its checks passes. Passive checking ejects a real
//! server after consecutive failed connects, until a check passes (a TCP
//! connect when it has no check of its own).
//!
//! The health table drives the scheduler as keepalived drives IPVS: a down
//! server leaves the table (its open connections stay), or keeps weight 0
//! with `inhibit_on_failure`; with the quorum lost, the sorry server alone
//! takes new connections; a recovered server's weight ramps up over
//! `slow_start`. Every change is logged with its reason.

pub mod dialogue;
pub(crate) mod probe;
pub(crate) mod state;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{CheckKind, HealthCheck};
use crate::service::ServiceRuntime;
use probe::Outcome;
use state::{Retries, RsHealth};

/// The health of a service's real servers.
#[derive(Debug, Default)]
pub(crate) struct Health {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) servers: HashMap<SocketAddr, Server>,
    /// keepalived's quorum state (up at the start).
    pub(crate) quorum_up: bool,
}

impl Default for Inner {
    fn default() -> Inner {
        Inner {
            servers: HashMap::new(),
            quorum_up: true,
        }
    }
}

/// A configured real server: its health and its check tasks.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) health: RsHealth,
    /// Stops its tasks.
    stop: CancellationToken,
    /// Checks run, and those that failed.
    pub(crate) checks_run: u64,
    pub(crate) checks_failed: u64,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What the API, the metrics and the status page show of a real server.
#[derive(Clone, Debug)]
pub struct HealthView {
    /// Up (every check passes, not ejected).
    pub up: bool,
    /// Why it is down.
    pub reason: Option<String>,
    /// Whether it has checks at all (active or passive).
    pub checked: bool,
    /// Checks run, and those that failed.
    pub checks_run: u64,
    /// Checks that failed.
    pub checks_failed: u64,
}

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Health {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }
}

/// The check that readmits a passively ejected server without checks of
/// its own: a TCP connect every second while it is ejected.
fn readmission_check() -> HealthCheck {
    use crate::config::health_defaults as d;
    HealthCheck {
        kind: CheckKind::Tcp,
        delay_loop: Duration::from_secs(1),
        connect_timeout: d::CONNECT_TIMEOUT,
        retry: 0,
        delay_before_retry: Duration::from_secs(1),
        warmup: Duration::ZERO,
        connect_ip: None,
        connect_port: None,
    }
}

/// A random duration up to `max` (keepalived's warm-up), from the clock.
fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // One multiply-xorshift round spreads the nanoseconds.
    let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    max.mul_f64((x % 10_000) as f64 / 10_000.0)
}

impl ServiceRuntime {
    /// Matches the health table and its tasks to the configuration: new
    /// servers (or servers whose checks changed) start over, up unless
    /// `alpha`; servers gone lose their tasks. Then the scheduler's table.
    pub(crate) fn reconcile_health(self: &Arc<Self>, fresh: Option<rvs_sched::Service>) {
        let spec = self.spec();
        let runtime = tokio::runtime::Handle::try_current().ok();
        {
            let mut h = self.health.lock();
            h.servers
                .retain(|a, _| spec.real_servers.iter().any(|r| r.address == *a));
            for r in &spec.real_servers {
                let checks = spec.checks_of(r).to_vec();
                if h.servers
                    .get(&r.address)
                    .is_some_and(|s| s.health.checks == checks)
                {
                    continue;
                }
                let alpha = r.alpha.unwrap_or(spec.health.alpha);
                let server = Server {
                    health: RsHealth::new(checks.clone(), alpha),
                    stop: CancellationToken::new(),
                    checks_run: 0,
                    checks_failed: 0,
                };
                if let Some(rt) = &runtime {
                    for (i, c) in checks.iter().enumerate() {
                        rt.spawn(run_check(
                            Arc::downgrade(self),
                            r.address,
                            Some(i),
                            c.clone(),
                            server.stop.clone(),
                        ));
                    }
                    if checks.is_empty() && spec.health.passive_failures.is_some() {
                        rt.spawn(run_check(
                            Arc::downgrade(self),
                            r.address,
                            None,
                            readmission_check(),
                            server.stop.clone(),
                        ));
                    }
                }
                h.servers.insert(r.address, server);
            }
        }
        self.resync_into(fresh);
    }

    /// Gives the scheduler the table that health, quorum, the sorry server
    /// and slow start make of the configuration.
    pub(crate) fn resync(&self) {
        self.resync_into(None);
    }

    fn resync_into(&self, fresh: Option<rvs_sched::Service>) {
        let spec = self.spec();
        let mut guard = self.health.lock();
        let Inner {
            servers, quorum_up, ..
        } = &mut *guard;
        let before = *quorum_up;
        let table = state::effective(
            &spec,
            &|a| servers.get(&a).map(|s| &s.health),
            quorum_up,
            Instant::now(),
        );
        if before != *quorum_up {
            let live: usize = servers.values().filter(|s| s.health.is_up()).count();
            if *quorum_up {
                info!(service = %self.name(), live, quorum = spec.health.quorum, "quorum gained");
            } else {
                warn!(
                    service = %self.name(),
                    live,
                    quorum = spec.health.quorum,
                    sorry_server = ?spec.health.sorry_server,
                    "quorum lost"
                );
            }
        }
        self.sync_table(&table, fresh);
    }

    /// Every second: servers ramping up under `slow_start` get their next
    /// weight.
    pub(crate) fn health_tick(&self) {
        let spec = self.spec();
        let Some(ramp) = spec.health.slow_start else {
            return;
        };
        let now = Instant::now();
        let ramping = self.health.lock().servers.values().any(|s| {
            s.health.is_up()
                && s.health.up_since.is_some_and(|t| {
                    now.saturating_duration_since(t) <= ramp + Duration::from_secs(1)
                })
        });
        if ramping {
            self.resync();
        }
    }

    /// Health of the configured real servers.
    pub fn health(&self) -> HashMap<SocketAddr, HealthView> {
        let spec = self.spec();
        let passive = spec.health.passive_failures.is_some();
        self.health
            .lock()
            .servers
            .iter()
            .map(|(a, s)| {
                (
                    *a,
                    HealthView {
                        up: s.health.is_up(),
                        reason: s.health.reason(),
                        checked: passive || !s.health.checks.is_empty(),
                        checks_run: s.checks_run,
                        checks_failed: s.checks_failed,
                    },
                )
            })
            .collect()
    }

    /// The verdicts of the checked real servers, for the next process of
    /// a binary upgrade.
    pub(crate) fn health_states(&self) -> Vec<crate::handover::wire::HealthState> {
        let h = self.health.lock();
        h.servers
            .iter()
            .filter(|(_, s)| !s.health.checks.is_empty() || s.health.passive.is_some())
            .map(|(a, s)| crate::handover::wire::HealthState {
                service: self.name().to_owned(),
                address: *a,
                up: s.health.is_up(),
                weight: s.health.weight_set(),
                reason: s.health.reason(),
            })
            .collect()
    }

    /// Starts a checked real server from the verdict of the process
    /// before a binary upgrade: each of its checkers says what the server
    /// was, until the checker concludes itself. False when the server is
    /// not configured here or has no checks.
    pub(crate) fn adopt_health(&self, h: &crate::handover::wire::HealthState) -> bool {
        let adopted = {
            let mut inner = self.health.lock();
            let Some(s) = inner.servers.get_mut(&h.address) else {
                return false;
            };
            // A check that ran here already knows better.
            if s.health.checks.is_empty() || s.checks_run > 0 {
                return false;
            }
            s.health.adopt(h.up, h.weight, h.reason.clone());
            true
        };
        if adopted {
            self.resync();
        }
        adopted
    }

    /// Whether the quorum holds.
    pub fn quorum_up(&self) -> bool {
        self.health.lock().quorum_up
    }

    /// A connect to `addr` failed: with passive checking, enough of them in
    /// a row eject it.
    pub(crate) fn connect_failed(&self, addr: SocketAddr) {
        let spec = self.spec();
        let Some(limit) = spec.health.passive_failures else {
            return;
        };
        let Some(d) = self.dest_runtime(addr) else {
            return;
        };
        let n = d.note_connect(false);
        if n < limit {
            return;
        }
        d.note_connect(true);
        let changed = {
            let mut h = self.health.lock();
            match h.servers.get_mut(&addr) {
                Some(s) => s
                    .health
                    .eject(format!("{n} connects in a row failed"), Instant::now()),
                None => false,
            }
        };
        if changed {
            warn!(service = %self.name(), real_server = %addr, failures = n, "real server down: ejected after failed connects");
            self.resync();
        }
    }

    /// Records one check's verdict; logs and applies a change.
    fn record_check(
        &self,
        addr: SocketAddr,
        i: Option<usize>,
        outcome: &Outcome,
        verdict: Option<bool>,
    ) {
        let now = Instant::now();
        let (changed, resync, up, reason) = {
            let mut h = self.health.lock();
            let Some(s) = h.servers.get_mut(&addr) else {
                return;
            };
            s.checks_run += 1;
            if let Outcome::Fail(_) = outcome {
                s.checks_failed += 1;
            }
            let Some(v) = verdict else {
                return;
            };
            let (weight, reason) = match outcome {
                Outcome::Pass(w) => (*w, None),
                Outcome::Fail(r) => (None, Some(r.clone())),
            };
            let old_weight = s.health.weight(-1);
            let changed = match i {
                Some(i) => s.health.record(i, v, weight, reason, now),
                // The readmission probe only ends an ejection.
                None if v => s.health.readmit(now),
                None => false,
            };
            let resync = changed || s.health.weight(-1) != old_weight;
            (changed, resync, s.health.is_up(), s.health.reason())
        };
        if changed {
            if up {
                info!(service = %self.name(), real_server = %addr, "real server up: its checks pass");
            } else {
                warn!(
                    service = %self.name(),
                    real_server = %addr,
                    reason = reason.as_deref().unwrap_or("-"),
                    "real server down"
                );
            }
        }
        if resync {
            self.resync();
        }
    }

    /// Whether check `i` of `addr` says up now (for its retries).
    fn check_up(&self, addr: SocketAddr, i: Option<usize>) -> bool {
        let h = self.health.lock();
        let Some(s) = h.servers.get(&addr) else {
            return false;
        };
        match i {
            Some(i) => s.health.checkers.get(i).is_some_and(|c| c.up),
            None => s.health.passive.is_none(),
        }
    }
}

/// One check of one real server, until `stop`. `i` is the check's index;
/// `None` is the readmission probe of passive checking, which runs only
/// while the server is ejected.
async fn run_check(
    svc: Weak<ServiceRuntime>,
    addr: SocketAddr,
    i: Option<usize>,
    check: HealthCheck,
    stop: CancellationToken,
) {
    let sleep = |d: Duration| {
        let stop = stop.clone();
        async move {
            tokio::select! {
                () = stop.cancelled() => false,
                () = tokio::time::sleep(d) => true,
            }
        }
    };
    if !sleep(jitter(check.warmup)).await {
        return;
    }
    let mut retries = Retries::default();
    loop {
        let passive_wait = i.is_none() && svc.upgrade().is_some_and(|s| s.check_up(addr, None));
        if !passive_wait {
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                o = probe::probe(&check, addr) => o,
            };
            let Some(s) = svc.upgrade() else {
                return;
            };
            let up = s.check_up(addr, i);
            let next = retries.after(matches!(outcome, Outcome::Pass(_)), up, &check);
            s.record_check(addr, i, &outcome, next.verdict);
            drop(s);
            if !sleep(next.wait).await {
                return;
            }
        } else if !sleep(check.delay_loop).await {
            return;
        }
    }
}
