//! Moving bytes between a client and its real server.
//!
//! Each direction is its own small state machine (as tokio's
//! `copy_bidirectional`): read from one socket, write everything to the
//! other; at end of stream, shut down the write half of the other socket
//! and stop, while the other direction goes on. Both run in the
//! connection's task, in one hand-written future that waits on each
//! socket's readiness slots directly.
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
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Sleep;

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
    /// Set when the connection must end (its real server left the table
    /// under `expire_nodest_conn`); the connection's task is woken by
    /// `waker`, which it leaves there once (its waker does not change).
    expired: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Counters {
    /// Ends the connection: its task resets both sides.
    pub(crate) fn expire(&self) {
        self.expired.store(true, Relaxed);
        let waker = self.waker.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether [`Counters::expire`] was called; leaves `cx`'s waker for it
    /// unless `left` says it did already: a task's waker is the same at
    /// every poll (the connection's future is its task's own), so once is
    /// enough, and no poll after the first takes the lock.
    fn poll_expired(&self, cx: &Context<'_>, left: &mut bool) -> bool {
        if !*left {
            if let Ok(mut slot) = self.waker.lock() {
                *slot = Some(cx.waker().clone());
            }
            *left = true;
        }
        // After the waker is in place: an expiry that took none set the
        // flag first.
        self.expired.load(Relaxed)
    }

    /// Records activity now.
    pub(crate) fn touch(&self) {
        self.touch_at(clock::now());
    }

    /// Records activity at `now` (read once for a batch).
    pub(crate) fn touch_at(&self, now: rvs_sched::Time) {
        self.last.store(now.as_nanos(), Relaxed);
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
pub(crate) fn run<'a, F: FnOnce(bool)>(
    client: &'a TcpStream,
    server: &'a TcpStream,
    mode: Mode,
    tcp: Duration,
    tcpfin: Duration,
    c: &'a Counters,
    half_closed: F,
) -> Forward<'a, F> {
    c.touch();
    let (idle, wake) = Idle::new(c, tcp);
    Forward {
        client,
        server,
        c,
        up: Direction::new(mode),
        down: Direction::new(mode),
        tcpfin: nanos(tcpfin),
        half_closed: Some(half_closed),
        left: false,
        idle,
        sleep: tokio::time::sleep_until(deadline(wake)),
    }
}

pin_project_lite::pin_project! {
    /// [`run`]'s future, written out: polled as a whole on each wake of
    /// the connection's task, each direction a small state machine
    /// ([`Direction`]) that waits on its socket's own readiness slot
    /// (`poll_read_ready`, `poll_write_ready`: an atomic load when ready,
    /// a waker stored once when not), so a wake costs no more than the
    /// I/O it came for. Before, each direction was an `async` loop
    /// awaiting readiness futures in a `select!`, which linked, polled and
    /// unlinked a waiter under the socket's lock on every wake of either
    /// side (the proxy's CPU per keep-alive request went from 10.4 to
    /// 9.7 µs). Written out rather than `async`, it holds each thing once,
    /// counts in 32 bits and durations in nanoseconds: 288 bytes, where an
    /// `async fn` around a `poll_fn` with an `async` idle timer took 568.
    pub(crate) struct Forward<'a, F> {
        client: &'a TcpStream,
        server: &'a TcpStream,
        c: &'a Counters,
        up: Direction,
        down: Direction,
        // Nanoseconds, as the idle timer's: this future is in every idle
        // connection's task.
        tcpfin: u64,
        half_closed: Option<F>,
        // Whether the task's waker was left for `expire_nodest_conn`
        // ([`Counters::expire`]).
        left: bool,
        idle: Idle,
        #[pin]
        sleep: Sleep,
    }
}

impl<F: FnOnce(bool)> Future for Forward<'_, F> {
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let mut this = self.project();
        let c = *this.c;
        if c.poll_expired(cx, this.left) {
            return Poll::Ready(End::Expired);
        }
        for to_server in [true, false] {
            let (dir, src, dst, bytes) = if to_server {
                (&mut *this.up, *this.client, *this.server, &c.to_server)
            } else {
                (&mut *this.down, *this.server, *this.client, &c.to_client)
            };
            if dir.is_done() {
                continue;
            }
            match dir.poll(cx, src, dst, bytes, c) {
                Poll::Pending => {}
                Poll::Ready(Err(e)) => return Poll::Ready(End::Failed(e)),
                Poll::Ready(Ok(())) => {
                    let Some(first) = this.half_closed.take() else {
                        return Poll::Ready(End::Closed);
                    };
                    // Half-close: the direction that ended passes its end
                    // on (FIN). The other direction's end needs no
                    // shutdown(2): the sockets close then, and closing
                    // sends the FIN.
                    if let Err(e) = SockRef::from(dst).shutdown(std::net::Shutdown::Write)
                        && e.kind() != io::ErrorKind::NotConnected
                    {
                        return Poll::Ready(End::Failed(e));
                    }
                    first(to_server);
                    let (idle, wake) = Idle::new(c, Duration::from_nanos(*this.tcpfin));
                    *this.idle = idle;
                    this.sleep.as_mut().reset(deadline(wake));
                }
            }
        }
        let (client, server) = (*this.client, *this.server);
        match this.idle.poll(this.sleep, cx, c, client, server) {
            Poll::Ready(()) => Poll::Ready(End::Timeout),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A byte count of one read, write or splice: at most a buffer's or a
/// pipe's size (64 KiB, 1 MiB), kept in 32 bits, as this future is in
/// every idle connection's task.
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn deadline(t: rvs_sched::Time) -> tokio::time::Instant {
    tokio::time::Instant::from_std(clock::instant(t))
}

/// The idle timeout: ends once neither peer has sent a segment, data or
/// not, for `limit`.
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
///
/// Nothing here runs while its timer has not fired: a wake of the
/// connection's task for data costs the timer's poll alone.
#[derive(Debug)]
struct Idle {
    /// The limit and the lead, in nanoseconds.
    limit: u64,
    lead: u64,
    /// The last data seen.
    data: u64,
    /// Where the silence started, and the count of segments then.
    quiet_since: rvs_sched::Time,
    counted: Option<u64>,
    /// No count to read (no TCP_INFO): data alone counts.
    blind: bool,
}

impl Idle {
    /// A timeout of `limit` from the last data, and when to look first.
    fn new(c: &Counters, limit: Duration) -> (Idle, rvs_sched::Time) {
        let data = c.last();
        let idle = Idle {
            limit: nanos(limit),
            lead: nanos((limit / 4).min(Duration::from_secs(1))),
            data,
            quiet_since: rvs_sched::Time::from_nanos(data),
            counted: None,
            blind: false,
        };
        let first = idle
            .quiet_since
            .saturating_add(Duration::from_nanos(idle.lead));
        (idle, first)
    }

    /// `Ready` once the connection has been idle for the limit; `sleep` is
    /// this timeout's timer, set to when to look next.
    fn poll(
        &mut self,
        mut sleep: Pin<&mut Sleep>,
        cx: &mut Context<'_>,
        c: &Counters,
        client: &TcpStream,
        server: &TcpStream,
    ) -> Poll<()> {
        // `None` while data waits on either socket: a connection stuck on
        // a peer that does not read is timed out by its data alone.
        let segments = || {
            let a = super::info::idle_segments_in(client)?;
            let b = super::info::idle_segments_in(server)?;
            Some(a.wrapping_add(b))
        };
        loop {
            ready!(sleep.as_mut().poll(cx));
            let wake = loop {
                let last = c.last();
                if last != self.data {
                    self.data = last;
                    self.quiet_since = rvs_sched::Time::from_nanos(last);
                    self.counted = None;
                    self.blind = false;
                }
                let now = clock::now();
                let limit = Duration::from_nanos(self.limit);
                let wake = if self.counted.is_some() || self.blind {
                    self.quiet_since.saturating_add(limit)
                } else {
                    self.quiet_since
                        .saturating_add(Duration::from_nanos(self.lead))
                };
                if now < wake {
                    break wake;
                }
                if self.blind {
                    return Poll::Ready(());
                }
                match (segments(), self.counted) {
                    (Some(n), None) => self.counted = Some(n),
                    (None, None) => {
                        if now >= self.quiet_since.saturating_add(limit) {
                            return Poll::Ready(());
                        }
                        self.blind = true;
                    }
                    (Some(n), Some(before)) if n != before => {
                        self.quiet_since = now;
                        self.counted = Some(n);
                    }
                    _ => return Poll::Ready(()),
                }
            };
            sleep.as_mut().reset(deadline(wake));
        }
    }
}

/// One direction: read from `src`, write all of it to `dst`, until the
/// end of `src`'s stream.
#[derive(Debug)]
enum Direction {
    /// Waiting for bytes to copy; with `until_bulk`, a read that fills the
    /// buffer turns the direction to splicing ([`Mode::Auto`]).
    Read { until_bulk: bool },
    /// Writing what a read brought: `buf[off..len]` is left. `last`: the
    /// stream's last bytes, sent with MSG_MORE for the FIN that follows.
    Write {
        buf: Box<[u8]>,
        off: u32,
        len: u32,
        last: bool,
        until_bulk: bool,
    },
    /// Waiting for bytes to splice.
    #[cfg(target_os = "linux")]
    Splice,
    /// Draining a pipe that holds `left` of the `n` bytes spliced into it.
    #[cfg(target_os = "linux")]
    Drain {
        pipe: super::pipes::Pipe,
        left: u32,
        n: u32,
    },
    /// End of stream passed on.
    Done,
}

impl Direction {
    fn new(mode: Mode) -> Direction {
        #[cfg(target_os = "linux")]
        let dir = match mode {
            Mode::Splice => Direction::Splice,
            Mode::Auto => Direction::Read { until_bulk: true },
            Mode::Copy => Direction::Read { until_bulk: false },
        };
        #[cfg(not(target_os = "linux"))]
        let dir = {
            let _ = mode;
            Direction::Read { until_bulk: false }
        };
        dir
    }

    fn is_done(&self) -> bool {
        matches!(self, Direction::Done)
    }

    /// Moves what can be moved now; `Ready(Ok)` at the end of the stream
    /// (also when the last read took the last bytes before the peer's FIN:
    /// they were sent with MSG_MORE, and the caller must end `dst`'s
    /// stream, shutdown or close, at once).
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        src: &TcpStream,
        dst: &TcpStream,
        bytes: &AtomicU64,
        c: &Counters,
    ) -> Poll<io::Result<()>> {
        loop {
            match self {
                Direction::Done => return Poll::Ready(Ok(())),
                Direction::Read { until_bulk } => {
                    let until_bulk = *until_bulk;
                    ready!(src.poll_read_ready(cx))?;
                    let closed = read_closed(src, cx);
                    let mut buf = BUFFERS
                        .with(|b| b.borrow_mut().pop())
                        .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice());
                    match read_draining(src, &mut buf) {
                        Ok(0) => {
                            give_buffer(buf);
                            *self = Direction::Done;
                        }
                        Ok(len) => {
                            // The FIN was in before this read, which came
                            // back short: these are the stream's last bytes.
                            let last = closed && len < buf.len();
                            *self = Direction::Write {
                                buf,
                                off: 0,
                                len: count(len),
                                last,
                                until_bulk,
                            };
                        }
                        Err(e) => {
                            give_buffer(buf);
                            if e.kind() != io::ErrorKind::WouldBlock {
                                return Poll::Ready(Err(e));
                            }
                        }
                    }
                }
                Direction::Write {
                    buf,
                    off,
                    len,
                    last,
                    until_bulk,
                } => {
                    while *off < *len {
                        let unsent = &buf[*off as usize..*len as usize];
                        match dst.try_io(Interest::WRITABLE, || send(dst, unsent, *last)) {
                            Ok(m) => *off += count(m),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                ready!(dst.poll_write_ready(cx))?;
                            }
                            Err(e) => return Poll::Ready(Err(e)),
                        }
                    }
                    bytes.fetch_add(*len as u64, Relaxed);
                    c.touch();
                    let next = if *last {
                        Direction::Done
                    } else if *until_bulk && *len as usize == BUF_SIZE {
                        #[cfg(target_os = "linux")]
                        {
                            Direction::Splice
                        }
                        #[cfg(not(target_os = "linux"))]
                        Direction::Read { until_bulk: false }
                    } else {
                        Direction::Read {
                            until_bulk: *until_bulk,
                        }
                    };
                    if let Direction::Write { buf, .. } = std::mem::replace(self, next) {
                        give_buffer(buf);
                    }
                }
                #[cfg(target_os = "linux")]
                Direction::Splice => {
                    ready!(src.poll_read_ready(cx))?;
                    let pipe = super::pipes::take()?;
                    match splice_in(src, &pipe) {
                        Ok(0) => {
                            super::pipes::give(pipe);
                            *self = Direction::Done;
                        }
                        Ok(n) => {
                            *self = Direction::Drain {
                                pipe,
                                left: count(n),
                                n: count(n),
                            }
                        }
                        Err(e) => {
                            // Nothing entered the pipe: it can go back.
                            super::pipes::give(pipe);
                            if e.kind() != io::ErrorKind::WouldBlock {
                                return Poll::Ready(Err(e));
                            }
                        }
                    }
                }
                #[cfg(target_os = "linux")]
                Direction::Drain { pipe, left, n } => {
                    while *left > 0 {
                        match splice_out(pipe, dst, *left as usize) {
                            Ok(m) => *left -= count(m),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                ready!(dst.poll_write_ready(cx))?;
                            }
                            // The pipe still holds bytes: it is dropped
                            // with the direction, not pooled.
                            Err(e) => return Poll::Ready(Err(e)),
                        }
                    }
                    bytes.fetch_add(*n as u64, Relaxed);
                    c.touch();
                    if let Direction::Drain { pipe, .. } =
                        std::mem::replace(self, Direction::Splice)
                    {
                        super::pipes::give(pipe);
                    }
                }
            }
        }
    }
}

/// Whether the peer's FIN is in, as the readiness `src` was just found
/// with says (RDHUP): a readiness future polled once, which on a ready
/// socket is a load and no waiter (its drop still takes the socket's
/// lock: tokio unlinks unconditionally, 0.4% of rvs's time on keep-alive
/// requests, the price of the FIN riding on the last data).
fn read_closed(src: &TcpStream, cx: &mut Context<'_>) -> bool {
    let ready = pin!(src.ready(Interest::READABLE));
    matches!(ready.poll(cx), Poll::Ready(Ok(r)) if r.is_read_closed())
}

/// A read that clears the readiness when it empties the socket
/// ([`crate::drain`]). rustix's recv(2), as its send(2) below: the system
/// call itself, without libc's cancellation-point wrapper (1.4% of rvs's
/// time on keep-alive requests, in two calls per message).
fn read_draining(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use rustix::net::{RecvFlags, recv};
    let full = buf.len();
    crate::drain::receive(
        |f| s.try_io(Interest::READABLE, f),
        full,
        || {
            recv(s, &mut *buf, RecvFlags::empty())
                .map(|(n, _)| n)
                .map_err(io::Error::from)
        },
    )
}

#[cfg(target_os = "linux")]
const SPLICE_FLAGS: rustix::pipe::SpliceFlags =
    rustix::pipe::SpliceFlags::NONBLOCK.union(rustix::pipe::SpliceFlags::MOVE);

/// Socket → pipe.
#[cfg(target_os = "linux")]
fn splice_in(src: &TcpStream, pipe: &super::pipes::Pipe) -> io::Result<usize> {
    use rustix::pipe::splice;
    src.try_io(Interest::READABLE, || {
        splice(src, None, &pipe.write, None, pipe.capacity, SPLICE_FLAGS).map_err(io::Error::from)
    })
}

/// Pipe → socket.
#[cfg(target_os = "linux")]
fn splice_out(pipe: &super::pipes::Pipe, dst: &TcpStream, left: usize) -> io::Result<usize> {
    use rustix::pipe::splice;
    dst.try_io(Interest::WRITABLE, || {
        splice(&pipe.read, None, dst, None, left, SPLICE_FLAGS).map_err(io::Error::from)
    })
}

const BUF_SIZE: usize = 64 * 1024;
const BUF_POOL_MAX: usize = 64;

thread_local! {
    static BUFFERS: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A send; with `more`, held back (MSG_MORE) for the FIN that follows.
fn send(dst: &TcpStream, buf: &[u8], more: bool) -> io::Result<usize> {
    use rustix::net::SendFlags;
    #[cfg(target_os = "linux")]
    let flags = if more {
        SendFlags::NOSIGNAL | SendFlags::MORE
    } else {
        SendFlags::NOSIGNAL
    };
    #[cfg(not(target_os = "linux"))]
    let flags = {
        let _ = more;
        SendFlags::empty()
    };
    rustix::net::send(dst, buf, flags).map_err(io::Error::from)
}

fn give_buffer(buf: Box<[u8]>) {
    BUFFERS.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < BUF_POOL_MAX {
            b.push(buf);
        }
    });
}
