//! Moving bytes between a client and its real server.
//!
//! Each direction is its own loop (as tokio's `copy_bidirectional`): read
//! from one socket, write everything to the other; at end of stream, shut
//! down the write half of the other socket and stop, while the other
//! direction goes on. Both loops run in the connection's task.
//!
//! Linux: splice(2) moves the bytes socket → pipe → socket without copying
//! them into user space (the `pipes` module). Elsewhere, or when asked, the
//! bytes go through a pooled buffer. Neither holds memory while idle.
//!
//! The default, [`Mode::Auto`], copies until a read fills the whole buffer,
//! then splices that direction from there on: small messages (requests,
//! replies) cost one read and one write, bulk transfers never enter user
//! space. Measured on loopback, splice doubled a single stream's throughput
//! but cost 10–20% on small keep-alive requests; Auto keeps both.
//!
//! Idle timeouts are ipvsadm's: `tcp` while both directions are open,
//! `tcpfin` once one direction has ended. As under IPVS, where every
//! packet refreshes a connection's entry, a segment without data counts:
//! a TCP keepalive probe from either peer (or an answer to rvs's own,
//! `tcp_keepalive`) keeps the connection. Nothing is read per packet: the
//! kernel's segment counters (`TCP_INFO`) are read when the timer fires,
//! and once a short while into each silence, for the count to compare with.
//!
//! The end of a stream rides on its last data when it can: a read that
//! empties the socket after the peer's FIN came in (epoll said RDHUP) has
//! taken the last bytes, so they are sent with MSG_MORE and the caller's
//! shutdown(2) or close(2), which follows at once, puts the FIN in the
//! same segment, as a server that writes its answer and closes does. It
//! saves a segment and a read per direction that ends with data (an HTTP
//! server closing after its answer: one segment in six or so of the
//! proxied connection).

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::clock;

/// How bytes are moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Copy until a read fills the buffer, then splice (Linux).
    #[default]
    Auto,
    /// splice(2) through a pipe from the first byte (Linux).
    Splice,
    /// read(2)/write(2) through a buffer.
    Copy,
}

/// Byte counts and the time of the last activity, shared by both directions.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) to_server: AtomicU64,
    pub(crate) to_client: AtomicU64,
    last: AtomicU64,
    /// Told when the connection must end (its real server left the table
    /// under `expire_nodest_conn`). One permit: the connection's task is its
    /// only waiter, and a permit given before it waits is kept for it.
    expire: tokio::sync::Notify,
}

impl Counters {
    /// Ends the connection: its task resets both sides.
    pub(crate) fn expire(&self) {
        self.expire.notify_one();
    }

    /// Records activity now.
    pub(crate) fn touch(&self) {
        self.last.store(clock::now().as_nanos(), Relaxed);
    }

    /// The time of the last activity ([`clock`] nanoseconds).
    pub(crate) fn last(&self) -> u64 {
        self.last.load(Relaxed)
    }
}

/// How a connection's forwarding ended.
#[derive(Debug)]
pub(crate) enum End {
    /// Both directions reached end of stream.
    Closed,
    /// No traffic for the idle timeout.
    Timeout,
    /// Its real server left the table (`expire_nodest_conn`).
    Expired,
    /// A socket failed (a reset, typically).
    Failed(io::Error),
}

/// Forwards until both directions end; `half_closed` runs when the first
/// one does, with `true` when the client ended first.
pub(crate) async fn run(
    client: &TcpStream,
    server: &TcpStream,
    mode: Mode,
    tcp: Duration,
    tcpfin: Duration,
    c: &Counters,
    half_closed: impl FnOnce(bool),
) -> End {
    c.touch();
    let up = pump(client, server, mode, &c.to_server, c);
    let down = pump(server, client, mode, &c.to_client, c);
    tokio::pin!(up, down);
    let (up_first, res) = tokio::select! {
        r = &mut up => (true, r),
        r = &mut down => (false, r),
        () = idle(c, tcp, client, server) => return End::Timeout,
        () = c.expire.notified() => return End::Expired,
    };
    if let Err(e) = res {
        return End::Failed(e);
    }
    // Half-close: the direction that ended passes its end on (FIN). The
    // other direction's end needs no shutdown(2): the sockets close then,
    // and closing sends the FIN.
    let dst = if up_first { server } else { client };
    if let Err(e) = SockRef::from(dst).shutdown(std::net::Shutdown::Write)
        && e.kind() != io::ErrorKind::NotConnected
    {
        return End::Failed(e);
    }
    half_closed(up_first);
    let res = if up_first {
        tokio::select! {
            r = &mut down => r,
            () = idle(c, tcpfin, client, server) => return End::Timeout,
            () = c.expire.notified() => return End::Expired,
        }
    } else {
        tokio::select! {
            r = &mut up => r,
            () = idle(c, tcpfin, client, server) => return End::Timeout,
            () = c.expire.notified() => return End::Expired,
        }
    };
    match res {
        Ok(()) => End::Closed,
        Err(e) => End::Failed(e),
    }
}

/// Returns once neither peer has sent a segment, data or not, for
/// `limit`.
///
/// The data is seen in user space ([`Counters::touch`]); segments without
/// data (keepalive probes) only in the kernel's count of segments received
/// (`tcpi_segs_in`) of the two sockets. The count is read a `lead` into
/// each silence (once the last data's acknowledgements are in), and again
/// when `limit` of silence has passed: if it grew, a peer spoke, and the
/// silence is measured from then. A segment in the first `lead` of a
/// silence is missed, and a keepalive probe is never alone in it: the
/// data came just before. While data waits to be sent on either socket (a
/// peer that does not read), the segments are window probes and their
/// answers, not keepalives: such a connection is timed out by its data.
async fn idle(c: &Counters, limit: Duration, client: &TcpStream, server: &TcpStream) {
    let lead = (limit / 4).min(Duration::from_secs(1));
    // `None` while data waits on either socket: a connection stuck on a
    // peer that does not read is timed out by its data alone.
    let segments = || {
        let a = super::info::idle_segments_in(client)?;
        let b = super::info::idle_segments_in(server)?;
        Some(a.wrapping_add(b))
    };
    // The last data seen, and the silence's start with the count then.
    let mut data = c.last.load(Relaxed);
    let mut quiet_since = rvs_sched::Time::from_nanos(data);
    let mut counted: Option<u64> = None;
    loop {
        let last = c.last.load(Relaxed);
        if last != data {
            data = last;
            quiet_since = rvs_sched::Time::from_nanos(last);
            counted = None;
        }
        let now = clock::now();
        let (wake, at_deadline) = match counted {
            None => (quiet_since.saturating_add(lead), false),
            Some(_) => (quiet_since.saturating_add(limit), true),
        };
        if now < wake {
            tokio::time::sleep(wake.saturating_since(now)).await;
            continue;
        }
        if !at_deadline {
            match segments() {
                Some(n) => counted = Some(n),
                // No TCP_INFO: data alone counts, as before.
                None => {
                    if now >= quiet_since.saturating_add(limit) {
                        return;
                    }
                    tokio::time::sleep(quiet_since.saturating_add(limit).saturating_since(now))
                        .await;
                    if c.last.load(Relaxed) == data {
                        return;
                    }
                }
            }
            continue;
        }
        match (segments(), counted) {
            (Some(n), Some(before)) if n != before => {
                quiet_since = now;
                counted = Some(n);
            }
            _ => return,
        }
    }
}

/// One direction, until its end of stream.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    mode: Mode,
    bytes: &AtomicU64,
    c: &Counters,
) -> io::Result<()> {
    match mode {
        Mode::Splice => splice_loop(src, dst, bytes, c).await?,
        Mode::Copy => {
            copy_loop(src, dst, bytes, c, false).await?;
        }
        Mode::Auto => {
            if copy_loop(src, dst, bytes, c, true).await? == Copied::Bulk {
                splice_loop(src, dst, bytes, c).await?;
            }
        }
    }
    Ok(())
}

/// A read that clears the readiness when it empties the socket
/// ([`crate::drain`]).
fn read_draining(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let full = buf.len();
    crate::drain::receive(
        |f| s.try_io(Interest::READABLE, f),
        full,
        || (&*SockRef::from(s)).read(buf),
    )
}

#[cfg(target_os = "linux")]
async fn splice_loop(
    src: &TcpStream,
    dst: &TcpStream,
    bytes: &AtomicU64,
    c: &Counters,
) -> io::Result<()> {
    use rustix::pipe::{SpliceFlags, splice};

    use super::pipes;

    let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
    loop {
        src.readable().await?;
        let pipe = pipes::take()?;
        let spliced = src.try_io(Interest::READABLE, || {
            splice(src, None, &pipe.write, None, pipe.capacity, flags).map_err(io::Error::from)
        });
        let n = match spliced {
            Ok(0) => {
                pipes::give(pipe);
                return Ok(());
            }
            Ok(n) => n,
            Err(e) => {
                // Nothing entered the pipe: it can go back.
                pipes::give(pipe);
                if e.kind() == io::ErrorKind::WouldBlock {
                    continue;
                }
                return Err(e);
            }
        };
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, dst, None, left, flags).map_err(io::Error::from)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The pipe still holds bytes: it is dropped, not pooled.
                Err(e) => return Err(e),
            }
        }
        pipes::give(pipe);
        bytes.fetch_add(n as u64, Relaxed);
        c.touch();
    }
}

#[cfg(not(target_os = "linux"))]
async fn splice_loop(
    src: &TcpStream,
    dst: &TcpStream,
    bytes: &AtomicU64,
    c: &Counters,
) -> io::Result<()> {
    copy_loop(src, dst, bytes, c, false).await.map(|_| ())
}

const BUF_SIZE: usize = 64 * 1024;
const BUF_POOL_MAX: usize = 64;

thread_local! {
    static BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// Why a copy loop stopped.
#[derive(Debug, PartialEq, Eq)]
enum Copied {
    /// End of stream.
    Eof,
    /// A read filled the buffer: bulk data, better spliced.
    Bulk,
}

/// Ends with [`Copied::Eof`] also when the last read took the last bytes
/// before the peer's FIN: they were sent with MSG_MORE, and the caller
/// must end `dst`'s stream (shutdown or close) at once.
async fn copy_loop(
    src: &TcpStream,
    dst: &TcpStream,
    bytes: &AtomicU64,
    c: &Counters,
    until_bulk: bool,
) -> io::Result<Copied> {
    loop {
        let ready = src.ready(Interest::READABLE).await?;
        let mut buf = BUFFERS
            .with(|b| b.borrow_mut().pop())
            .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice());
        let n = match read_draining(src, &mut buf) {
            Ok(0) => {
                give_buffer(buf);
                return Ok(Copied::Eof);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                give_buffer(buf);
                continue;
            }
            Err(e) => {
                give_buffer(buf);
                return Err(e);
            }
        };
        // The FIN was in before this read, which came back short: these
        // are the stream's last bytes.
        let last = ready.is_read_closed() && n < buf.len();
        let mut off = 0;
        while off < n {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || send(dst, &buf[off..n], last)) {
                Ok(m) => off += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        give_buffer(buf);
        bytes.fetch_add(n as u64, Relaxed);
        c.touch();
        if last {
            return Ok(Copied::Eof);
        }
        if until_bulk && n == BUF_SIZE && cfg!(target_os = "linux") {
            return Ok(Copied::Bulk);
        }
    }
}

/// A send; with `more`, held back (MSG_MORE) for the FIN that follows.
fn send(dst: &TcpStream, buf: &[u8], more: bool) -> io::Result<usize> {
    #[cfg(target_os = "linux")]
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    #[cfg(not(target_os = "linux"))]
    let flags = {
        let _ = more;
        0
    };
    SockRef::from(dst).send_with_flags(buf, flags)
}

fn give_buffer(buf: Box<[u8]>) {
    BUFFERS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < BUF_POOL_MAX {
            b.push(buf);
        }
    });
}
