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

use std::io;
use std::sync::mpsc;

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
                    rt.block_on(done.cancelled());
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

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
