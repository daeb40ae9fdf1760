//! Listening sockets, and the loops that accept on them.
//!
//! A listener belongs to an address, not to a service: a [`Slot`] points at
//! the service it serves, and a reload can point it at another service
//! without closing the socket. Accept errors never end a loop: errors of one
//! connection are skipped, and resource errors (EMFILE, ENFILE, ENOBUFS,
//! ENOMEM) back off, from 5 ms up to 1 s, logging at most once a second.
//!
//! With data-plane workers (`crate::workers`), a TCP address is bound
//! once per worker with SO_REUSEPORT and each worker accepts on its own
//! socket; UDP sockets are served by the main runtime. A socket passed by
//! the service manager ([`crate::inherited`]) is not copied: each worker
//! accepts on a duplicate of the one socket. With `--balance-workers`, a
//! worker passes a connection it accepted to one that holds fewer
//! (`crate::workers::Balance`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::config::Proto;
use crate::service::ServiceRuntime;
use crate::sni::names::Routes;
use crate::tcp::forward::Mode;
use crate::workers::{Placer, Workers};

/// What an address serves: one service, or several that share it, each
/// connection going to the one its TLS ClientHello chooses.
#[derive(Debug)]
pub(crate) enum Serving {
    One(Arc<ServiceRuntime>),
    ByHello(Routes<Arc<ServiceRuntime>>),
}

impl Serving {
    /// The service counted for what happens before a connection is
    /// routed (and UDP's one service): the default, else the first.
    pub(crate) fn first(&self) -> &Arc<ServiceRuntime> {
        match self {
            Serving::One(s) => s,
            Serving::ByHello(routes) => routes
                .services()
                .next()
                // `Proxy::apply` builds routes of one service at least.
                .unwrap_or_else(|| unreachable!("an address serves no service")),
        }
    }

    /// Whether service `name` is served here.
    pub(crate) fn serves(&self, name: &str) -> bool {
        self.named(name).is_some()
    }

    /// Service `name`, if it is served here.
    pub(crate) fn named(&self, name: &str) -> Option<&Arc<ServiceRuntime>> {
        match self {
            Serving::One(s) => (s.name() == name).then_some(s),
            Serving::ByHello(routes) => routes.services().find(|s| s.name() == name),
        }
    }
}

/// An address rvs listens on.
#[derive(Debug)]
pub(crate) struct Slot {
    /// The bound address (the port is known even when 0 was configured).
    pub(crate) local: SocketAddr,
    /// The service or services it serves now.
    pub(crate) target: ArcSwap<Serving>,
    /// Connections closed before they could be routed by their hello.
    pub(crate) refusals: Arc<crate::sni::read::Refusals>,
    pub(crate) stop: CancellationToken,
    /// Set when a binary upgrade took the sockets: a UDP listener that
    /// stops then keeps its sessions until they idle out.
    pub(crate) handed_over: Arc<std::sync::atomic::AtomicBool>,
    /// Cancelled once the process may serve: at once, or in a binary
    /// upgrade's new process once it adopted the old one's state. Until
    /// then, connections and datagrams wait in the socket.
    pub(crate) opened: CancellationToken,
    /// UDP sessions handed over by the process before, adopted by the
    /// listener when it starts serving.
    pub(crate) adopted: std::sync::Mutex<Vec<crate::udp::Handed>>,
    /// In a binary upgrade's old process: where the UDP listener, once
    /// stopped, sends its sessions instead of ending them.
    pub(crate) export:
        std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Vec<crate::udp::Handed>>>>,
}

impl Slot {
    /// A slot serving `target` on `local`.
    pub(crate) fn new(
        local: SocketAddr,
        target: Arc<Serving>,
        stop: CancellationToken,
        handed_over: Arc<std::sync::atomic::AtomicBool>,
        opened: CancellationToken,
    ) -> Slot {
        Slot {
            local,
            target: ArcSwap::new(target),
            refusals: Arc::default(),
            stop,
            handed_over,
            opened,
            adopted: std::sync::Mutex::new(Vec::new()),
            export: std::sync::Mutex::new(None),
        }
    }

    /// Waits until the process may serve; false when the slot stopped
    /// first.
    pub(crate) async fn wait_open(&self) -> bool {
        tokio::select! {
            () = self.opened.cancelled() => true,
            () = self.stop.cancelled() => false,
        }
    }
}

/// A socket bound by a reload's first phase, not yet serving: for TCP, one
/// listening socket per worker, all on the same address.
#[derive(Debug)]
pub(crate) enum Bound {
    Tcp(Vec<std::net::TcpListener>),
    Udp(std::net::UdpSocket),
}

/// Binds `addr` for `proto`; a TCP address `copies` times, with
/// SO_REUSEPORT when more than once (the first bind resolves port 0, the
/// others take the same port).
pub(crate) fn bind(proto: Proto, addr: SocketAddr, copies: usize) -> io::Result<Bound> {
    match proto {
        Proto::Udp => udp(socket(proto, addr, false)?),
        Proto::Tcp => {
            let reuse_port = copies > 1;
            if reuse_port && addr.port() != 0 {
                not_in_use(addr)?;
            }
            let mut all: Vec<std::net::TcpListener> = Vec::with_capacity(copies);
            let mut at = addr;
            for _ in 0..copies.max(1) {
                let sock = socket(proto, at, reuse_port)?;
                sock.listen(4096)?;
                let l: std::net::TcpListener = sock.into();
                at = l.local_addr()?;
                all.push(l);
            }
            Ok(Bound::Tcp(all))
        }
    }
}

/// Sockets passed to rvs ([`crate::inherited`]), ready to serve. TCP:
/// every socket passed is served (a SO_REUSEPORT group handed over by a
/// binary upgrade keeps all its members); with fewer sockets than workers
/// (`copies`), workers share them through duplicates. UDP: the first.
pub(crate) fn adopt(proto: Proto, sockets: Vec<Socket>, copies: usize) -> io::Result<Bound> {
    let mut sockets = sockets.into_iter();
    let first = sockets
        .next()
        .ok_or_else(|| io::Error::other("no socket passed"))?;
    match proto {
        Proto::Udp => udp(first),
        Proto::Tcp => {
            let mut all: Vec<std::net::TcpListener> = vec![first.into()];
            all.extend(sockets.map(Into::into));
            let passed = all.len();
            for i in passed..copies.max(1) {
                let dup = all[i % passed].try_clone()?;
                all.push(dup);
            }
            Ok(Bound::Tcp(all))
        }
    }
}

/// A UDP listener; on a wildcard address, it learns each datagram's
/// destination, for the replies to leave from it.
fn udp(sock: Socket) -> io::Result<Bound> {
    if let Some(local) = sock.local_addr()?.as_socket()
        && local.ip().is_unspecified()
    {
        crate::datagrams::receive_destinations(&sock, local.is_ipv6())?;
    }
    Ok(Bound::Udp(sock.into()))
}

/// Fails when something listens on `addr` already. The workers' sockets
/// share their address with SO_REUSEPORT, which would as well let them
/// join the sockets of another process of the same user — a second rvs
/// started by mistake would then silently split the traffic with the
/// first. A plain bind (SO_REUSEADDR, which still conflicts with any
/// listening socket) tells first; only sockets handed over
/// ([`crate::inherited`]) share an address with another process.
fn not_in_use(addr: SocketAddr) -> io::Result<()> {
    match socket(Proto::Tcp, addr, false) {
        Ok(_probe) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "address in use: something listens there already (another rvs?); \
             rvs shares a listening address only with the process that hands its sockets over",
        )),
        Err(e) => Err(e),
    }
}

/// A non-blocking socket bound to `addr`.
fn socket(proto: Proto, addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let domain = Domain::for_address(addr);
    let sock = match proto {
        Proto::Tcp => Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?,
        Proto::Udp => Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?,
    };
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    // An address not on the host yet (a VRRP BACKUP's VIP) is bound
    // anyway, and served when it arrives; no privilege needed. IPv6's own
    // option is Linux 4.15's; before it, IP_FREEBIND covers IPv6 sockets
    // too. Without either, a missing address fails the bind, as before.
    let freebind = if addr.is_ipv6() {
        sock.set_freebind_v6(true)
            .or_else(|_| sock.set_freebind_v4(true))
    } else {
        sock.set_freebind_v4(true)
    };
    if let Err(e) = freebind {
        tracing::debug!(%addr, error = %e, "IP_FREEBIND refused: the address must be on the host");
    }
    sock.set_nonblocking(true)?;
    if proto == Proto::Tcp {
        // Restarting must not wait for TIME_WAIT connections to go.
        sock.set_reuse_address(true)?;
        if reuse_port {
            sock.set_reuse_port(true)?;
        }
        // Accepted sockets inherit it (Linux copies the listener's TCP
        // options into each child): no setsockopt(2) per connection.
        sock.set_tcp_nodelay(true)?;
    }
    sock.bind(&addr.into())?;
    Ok(sock)
}

impl Bound {
    /// Close-on-exec duplicates of its sockets, kept for a binary upgrade
    /// to hand over.
    pub(crate) fn duplicates(&self) -> Vec<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().ok();
        match self {
            Bound::Tcp(l) => l.iter().filter_map(|l| dup(l.as_fd())).collect(),
            Bound::Udp(s) => dup(s.as_fd()).into_iter().collect(),
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Bound::Tcp(l) => l
                .first()
                .ok_or_else(|| io::Error::other("no socket bound"))?
                .local_addr(),
            Bound::Udp(s) => s.local_addr(),
        }
    }

    /// Starts serving `slot`: a TCP socket on each worker (or on the
    /// current runtime without workers), UDP on the current runtime.
    pub(crate) fn serve(
        self,
        slot: Arc<Slot>,
        tracker: &TaskTracker,
        mode: Mode,
        workers: &Workers,
    ) -> io::Result<()> {
        match self {
            Bound::Tcp(listeners) if workers.handles().is_empty() => {
                for l in listeners {
                    let listener = TcpListener::from_std(l)?;
                    tracker.spawn(accept_loop(
                        listener,
                        Arc::clone(&slot),
                        tracker.clone(),
                        mode,
                        None,
                    ));
                }
            }
            Bound::Tcp(listeners) => {
                // More sockets than workers (a group handed over by a
                // process with more workers): some workers take two.
                let n = workers.handles().len();
                for (i, l) in listeners.into_iter().enumerate() {
                    let (slot, tasks) = (Arc::clone(&slot), tracker.clone());
                    let placer = workers.balance().map(|b| Placer::new(Arc::clone(b), i % n));
                    // Registered with the worker's own reactor, there.
                    workers.handles()[i % n].spawn(tracker.track_future(async move {
                        match TcpListener::from_std(l) {
                            Ok(listener) => accept_loop(listener, slot, tasks, mode, placer).await,
                            Err(e) => {
                                tracing::error!(listen = %slot.local, error = %e, "a worker cannot serve its socket");
                            }
                        }
                    }));
                }
            }
            Bound::Udp(s) => {
                let socket = Arc::new(UdpSocket::from_std(s)?);
                tracker.spawn(crate::udp::serve(socket, slot, tracker.clone()));
            }
        }
        Ok(())
    }
}

fn is_resource_error(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// Accepts on `listener` for `slot`; with a `placer`, on one of several
/// workers, each connection served where the placer puts it.
async fn accept_loop(
    listener: TcpListener,
    slot: Arc<Slot>,
    tracker: TaskTracker,
    mode: Mode,
    mut placer: Option<Placer>,
) {
    if !slot.wait_open().await {
        return;
    }
    let mut backoff = Duration::from_millis(5);
    let warnings = crate::throttle::Throttle::per_second();
    loop {
        let accepted = tokio::select! {
            () = slot.stop.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let serving = slot.target.load_full();
                // Beyond the data plane's share of the descriptors, closed
                // at once: the reserve stays for the admin listener, the
                // health checks and reloads.
                let Some(fds) = crate::fds::BUDGET.tcp() else {
                    crate::tcp::conn::refuse_for_descriptors(
                        serving.first(),
                        &stream,
                        peer,
                        slot.local,
                    );
                    continue;
                };
                let (placed, elsewhere) = match placer.as_mut().map(Placer::place) {
                    Some((placed, to)) => (Some(placed), to),
                    None => (None, None),
                };
                // A listener on one address knows the local address of
                // what it accepts: no getsockname(2) per connection.
                let local = (!slot.local.ip().is_unspecified()).then_some(slot.local);
                let refusals = Arc::clone(&slot.refusals);
                let Some(to) = elsewhere else {
                    let accepted = crate::tcp::conn::Accepted {
                        stream,
                        peer,
                        local,
                        refusals,
                        placed,
                    };
                    tracker.spawn(crate::tcp::conn::serve(serving, accepted, mode, fds));
                    continue;
                };
                // Started there: its socket registered with that worker's
                // reactor, its memory taken by that thread (allocated here
                // and freed there, a task and its registration cost an
                // idle connection 0.2 KiB more).
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(e) => {
                        warn!(listen = %slot.local, client = %peer, error = %e, "cannot pass a connection to another worker");
                        continue;
                    }
                };
                let (tasks, listen) = (tracker.clone(), slot.local);
                let start = async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => {
                            let accepted = crate::tcp::conn::Accepted {
                                stream,
                                peer,
                                local,
                                refusals,
                                placed,
                            };
                            tasks.spawn(crate::tcp::conn::serve(serving, accepted, mode, fds));
                        }
                        Err(e) => {
                            warn!(%listen, client = %peer, error = %e, "cannot serve a passed connection");
                        }
                    }
                };
                drop(to.spawn(tracker.track_future(start)));
            }
            Err(e) if is_resource_error(&e) => {
                if let Some(unsaid) = warnings.allow() {
                    warn!(listen = %slot.local, error = %e, also_since = unsaid, "accept failed: backing off");
                }
                tokio::select! {
                    () = slot.stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            // A connection that failed between SYN and accept: skip it.
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// What `tcp::conn` relies on to skip a setsockopt(2) per connection.
    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let Bound::Tcp(mut ls) = bind(Proto::Tcp, "127.0.0.1:0".parse().unwrap(), 1).unwrap()
        else {
            panic!("a TCP bind gives listeners");
        };
        let l = ls.pop().unwrap();
        l.set_nonblocking(false).unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        assert!(s.nodelay().unwrap());
    }

    /// A connection accepted on one worker and passed to another is served
    /// there, on that worker's reactor: it works while the worker that
    /// accepted it is busy.
    #[test]
    fn a_passed_connection_is_served_by_the_other_worker() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let workers = Workers::start(2, true).unwrap();
        let [here, there] = workers.handles() else {
            panic!("two workers");
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (passed_tx, passed) = std::sync::mpsc::channel();
        let to = there.clone();
        here.spawn(async move {
            let l = TcpListener::from_std(l).unwrap();
            let (stream, _) = l.accept().await.unwrap();
            let stream = stream.into_std().unwrap();
            passed_tx.send(()).unwrap();
            to.spawn(async move {
                let mut stream = TcpStream::from_std(stream).unwrap();
                let mut buf = [0; 4];
                stream.read_exact(&mut buf).await.unwrap();
                let name = std::thread::current().name().map(str::to_owned);
                stream.write_all(&buf).await.unwrap();
                tx.send(name).unwrap();
            });
        });
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        passed.recv_timeout(Duration::from_secs(10)).unwrap();
        // The accepting worker is busy from here on: the passed
        // connection must not need it.
        here.spawn(async { std::thread::sleep(Duration::from_secs(2)) });
        std::io::Write::write_all(&mut c, b"ping").unwrap();
        let mut back = [0; 4];
        std::io::Read::read_exact(&mut c, &mut back).unwrap();
        assert_eq!(&back, b"ping");
        let name = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(name.as_deref(), Some("rvs-worker-1"));
    }
}
