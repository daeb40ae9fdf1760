//! Data-plane workers: one thread per core, each with its own
//! single-threaded tokio runtime (its own epoll and timers), as HAProxy's
//! threads and nginx's worker processes are.
//!
//! Each TCP address is bound once per worker with SO_REUSEPORT, and each
//! worker accepts on its own socket: the kernel spreads new connections
//! over the sockets by their addresses, and a connection lives its whole
//! life on the worker that accepted it. No task migrates between threads
//! and no wake-up crosses one (docs/benchmarks.md has the A/B run that
//! kept this design). The control plane (admin API, health checks,
//! reloads, UDP) stays on the main runtime.
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
use std::sync::mpsc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The worker threads. Dropping it ends them; the tasks still on them are
/// dropped with their runtimes (a shutdown drains them first).
#[derive(Debug)]
pub(crate) struct Workers {
    handles: Vec<Handle>,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `n` workers (none: connections run on the caller's runtime).
    pub(crate) fn start(n: usize) -> io::Result<Workers> {
        // Built as it goes: on an error, dropping it ends the threads
        // already started.
        let mut workers = Workers {
            handles: Vec::with_capacity(n),
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
