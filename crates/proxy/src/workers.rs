//! Data-plane workers: one thread per core, each with its own
//! single-threaded tokio runtime (its own epoll and timers), as HAProxy's
//! threads and nginx's worker processes are.
//!
//! Each TCP address is bound once per worker with SO_REUSEPORT, and each
//! worker accepts on its own socket: the kernel spreads new connections
//! over the sockets by a hash of their addresses, and a connection lives
//! its whole life on one worker. No task migrates between threads and no
//! wake-up crosses one (docs/benchmarks.md has the A/B run that kept this
//! design). The control plane (admin API, health checks, reloads, UDP)
//! stays on the main runtime.
//!
//! A hash is even only on average: 50 connections split 30/20 as often
//! as not. Each worker counts the connections it serves
//! (`rvs_worker_connections`). With `--balance-workers` ([`Balance`]),
//! the accepting worker compares its count with one other worker's, the
//! next in turn, and passes the connection to that worker when it holds
//! [`SLACK`] fewer: the two choices HAProxy's threads make on each
//! accept, here made only when the hash was uneven. Long-lived
//! connections then end up even; short ones are passed about half the
//! time, each pass a wake-up of the other thread (measured: 8% more CPU
//! per short connection), which is why it is not the default.
//!
//! Each worker also keeps a timer due within [`TICK`] armed at all times
//! ([`keep_timer_armed`]). tokio's timer driver wakes its thread (an
//! eventfd write, and an extra return from epoll_wait) whenever a timer is
//! registered that is due before the driver's next planned wake-up. A
//! connection's timers (connect: 5 s, idle: 120 s or more) were, most of
//! the time, the earliest on their worker: profiled under new-connection
//! load, 0.76 eventfd writes per connection. With a timer always due
//! within a second, only timeouts shorter than that wake the driver early.

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The worker threads. Dropping it ends them; the tasks still on them are
/// dropped with their runtimes (a shutdown drains them first).
#[derive(Debug)]
pub(crate) struct Workers {
    handles: Vec<Handle>,
    balance: Option<Arc<Balance>>,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `n` workers (none: connections run on the caller's runtime);
    /// with `pass`, a worker passes what it accepts to one holding fewer.
    pub(crate) fn start(n: usize, pass: bool) -> io::Result<Workers> {
        // Built as it goes: on an error, dropping it ends the threads
        // already started.
        let mut workers = Workers {
            handles: Vec::with_capacity(n),
            balance: None,
            stop: CancellationToken::new(),
        };
        for i in 0..n {
            let (tx, rx) = mpsc::sync_channel(1);
            let done = workers.stop.clone();
            std::thread::Builder::new()
                .name(format!("rvs-worker-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(async {
                        tokio::select! {
                            () = done.cancelled() => {}
                            () = keep_timer_armed() => {}
                        }
                    });
                })?;
            let handle = rx
                .recv()
                .map_err(|_| io::Error::other("a worker thread ended at its start"))??;
            workers.handles.push(handle);
        }
        if n > 1 {
            workers.balance = Some(Arc::new(Balance {
                pass,
                handles: workers.handles.clone(),
                live: (0..n).map(|_| Arc::new(Live::default())).collect(),
            }));
        }
        Ok(workers)
    }

    /// The workers' runtimes; empty when connections run on the caller's.
    pub(crate) fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// How many sockets each TCP address needs: one per worker, or one.
    pub(crate) fn sockets_per_address(&self) -> usize {
        self.handles.len().max(1)
    }

    /// The workers' counts of connections, and their passing of them;
    /// none with fewer than two workers.
    pub(crate) fn balance(&self) -> Option<&Arc<Balance>> {
        self.balance.as_ref()
    }
}

/// How many fewer connections another worker must hold for an accepted
/// connection to be passed to it. 1 would even them exactly, passing
/// every other connection of a burst that the hash sent to one side; 2
/// keeps two workers within two of each other and passes fewer.
pub(crate) const SLACK: u32 = 2;

/// The connections each worker holds, and the workers' runtimes to pass
/// connections to.
#[derive(Debug)]
pub(crate) struct Balance {
    /// Whether connections are passed (`--balance-workers`), or only
    /// counted.
    pass: bool,
    handles: Vec<Handle>,
    live: Vec<Arc<Live>>,
}

/// One worker's count of connections, on a cache line of its own: each
/// worker writes its own counts and only reads the others'.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Live {
    connections: AtomicU32,
    passed: AtomicU64,
}

/// What one worker holds, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Load {
    /// TCP connections it serves.
    pub(crate) connections: u32,
    /// Connections it accepted and passed to another worker.
    pub(crate) passed: u64,
}

impl Balance {
    /// Each worker's load, in worker order.
    pub(crate) fn loads(&self) -> Vec<Load> {
        self.live
            .iter()
            .map(|l| Load {
                connections: l.connections.load(Relaxed),
                passed: l.passed.load(Relaxed),
            })
            .collect()
    }
}

/// A connection's place in its worker's count, given back when dropped.
#[derive(Debug)]
pub(crate) struct Placed(Arc<Live>);

impl Drop for Placed {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Relaxed);
    }
}

/// Where one accept loop places what it accepts.
#[derive(Debug)]
pub(crate) struct Placer {
    balance: Arc<Balance>,
    /// The worker this loop runs on.
    here: usize,
    /// The worker compared with next.
    next: usize,
}

impl Placer {
    /// The placer of an accept loop on worker `here`.
    pub(crate) fn new(balance: Arc<Balance>, here: usize) -> Placer {
        let next = (here + 1) % balance.live.len();
        Placer {
            balance,
            here,
            next,
        }
    }

    /// Where a connection just accepted goes: counted there, and the
    /// runtime to pass it to, `None` to keep it here.
    pub(crate) fn place(&mut self) -> (Placed, Option<&Handle>) {
        let to = if self.balance.pass {
            self.least_of_two()
        } else {
            self.here
        };
        let count = &self.balance.live[to];
        count.connections.fetch_add(1, Relaxed);
        if to != self.here {
            self.balance.live[self.here].passed.fetch_add(1, Relaxed);
        }
        let handle = (to != self.here).then(|| &self.balance.handles[to]);
        (Placed(Arc::clone(count)), handle)
    }

    /// This worker, unless the next one in turn holds [`SLACK`] fewer.
    fn least_of_two(&mut self) -> usize {
        let n = self.balance.live.len();
        let other = self.next;
        self.next = (self.next + 1) % n;
        if self.next == self.here {
            self.next = (self.next + 1) % n;
        }
        let live = |i: usize| self.balance.live[i].connections.load(Relaxed);
        if other != self.here && live(other) + SLACK <= live(self.here) {
            other
        } else {
            self.here
        }
    }
}

/// How far ahead a worker's timer driver always has a timer due.
const TICK: Duration = Duration::from_secs(1);

/// A timer due within [`TICK`], always (see the module's notes): the
/// worker's driver then plans to wake within a second, and a connection's
/// timer due later than that is registered without waking it.
async fn keep_timer_armed() {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn counts(b: &Balance) -> Vec<u32> {
        b.loads().iter().map(|l| l.connections).collect()
    }

    /// Every connection accepted on one worker, as an uneven hash sends
    /// them: the others take their share, within SLACK.
    #[test]
    fn a_burst_on_one_worker_is_spread_within_the_slack() {
        for n in [2, 3, 4] {
            let workers = Workers::start(n, true).unwrap();
            let balance = Arc::clone(workers.balance().unwrap());
            let mut placer = Placer::new(Arc::clone(&balance), 0);
            let mut held = Vec::new();
            let mut passed = 0;
            for _ in 0..40 {
                let (placed, to) = placer.place();
                passed += usize::from(to.is_some());
                held.push(placed);
            }
            let c = counts(&balance);
            assert_eq!(c.iter().sum::<u32>(), 40, "{n} workers: {c:?}");
            let loads = balance.loads();
            assert_eq!(loads[0].passed, passed as u64, "{n} workers: {loads:?}");
            assert!(
                loads[1..].iter().all(|l| l.passed == 0),
                "{n} workers: {loads:?}"
            );
            let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
            assert!(hi - lo <= SLACK, "{n} workers: {c:?}");
            assert!(
                passed >= 40 - 40 / n - 2,
                "{n} workers: only {passed} passed"
            );
            drop(held);
            assert_eq!(
                counts(&balance),
                vec![0; n],
                "{n} workers: counts given back"
            );
        }
    }

    /// Connections that stay where the hash put them when it was even
    /// enough: none passed while the counts are within the slack.
    #[test]
    fn an_even_spread_passes_nothing() {
        let workers = Workers::start(2, true).unwrap();
        let balance = Arc::clone(workers.balance().unwrap());
        let mut on = [
            Placer::new(Arc::clone(&balance), 0),
            Placer::new(balance, 1),
        ];
        let mut held = Vec::new();
        for i in 0..40 {
            let (placed, to) = on[i % 2].place();
            assert!(to.is_none(), "connection {i} passed");
            held.push(placed);
        }
    }

    #[test]
    fn one_worker_has_no_balance() {
        assert!(Workers::start(1, true).unwrap().balance().is_none());
        assert!(Workers::start(0, true).unwrap().balance().is_none());
    }

    /// Without passing, connections are counted where accepted.
    #[test]
    fn without_passing_connections_are_only_counted() {
        let workers = Workers::start(2, false).unwrap();
        let balance = Arc::clone(workers.balance().unwrap());
        let mut placer = Placer::new(Arc::clone(&balance), 1);
        let held: Vec<Placed> = (0..10)
            .map(|_| {
                let (placed, to) = placer.place();
                assert!(to.is_none());
                placed
            })
            .collect();
        assert_eq!(counts(&balance), vec![0, 10]);
        assert!(balance.loads().iter().all(|l| l.passed == 0));
        drop(held);
        assert_eq!(counts(&balance), vec![0, 0]);
    }
}
