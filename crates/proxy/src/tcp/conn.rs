//! One client connection, from accept to close.
//!
//! 1. With `accept_proxy_protocol`, read the upstream balancer's header to
//!    learn the real client.
//! 2. On an address several services share, choose one by the client's
//!    ClientHello (peeked, so that the real server gets it), or by the
//!    host name of the PROXY header; a connection no service takes is
//!    closed, counted by its address.
//! 3. Check the client against the service's ACL and connection limit.
//! 4. With `timeouts.client_first_byte`, wait for the client's first byte
//!    (a client that sends nothing in time is reset, no server chosen).
//! 5. Schedule: the destination the scheduler sees (dh, lblc, lblcr,
//!    persistence) is the original destination when iptables redirected the
//!    connection (SO_ORIGINAL_DST), else the address it was accepted on.
//! 6. Connect with a timeout; on failure, count it against that server and
//!    retry on another ([`rvs_sched::Service::schedule_retry`]).
//! 7. Counts: the connection is inactive while connecting (IPVS's SYN
//!    state), active once both sides are established, inactive again after
//!    the first FIN, and released at close.
//! 8. Send the PROXY header if the service asks (v2 with the SNI as
//!    `PP2_TYPE_AUTHORITY`), then forward.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use rvs_sched::{Conn, Traffic};
use socket2::SockRef;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;

use super::forward::{self, End, Mode};
use crate::clock;
use crate::config::{Proto, ProxyVersion, ServiceSpec};
use crate::conns::{ConnState, LiveConn};
use crate::listener::Serving;
use crate::proxy_proto;
use crate::service::{Registered, ServiceRuntime};
use crate::sni::hello::ClientHello;
use crate::sni::names::Routes;
use crate::sni::read::{self, First, Refusals, Refused};
use crate::stats::Refusal;
use crate::sync::ConnSync;

/// The destination the client connected to: the original destination of a
/// connection that iptables redirected (REDIRECT/DNAT), else the local address.
fn original_dst(stream: &TcpStream, local: SocketAddr) -> SocketAddr {
    #[cfg(target_os = "linux")]
    {
        let orig = match local {
            SocketAddr::V4(_) => rustix::net::sockopt::ip_original_dst(stream).map(SocketAddr::V4),
            SocketAddr::V6(_) => {
                rustix::net::sockopt::ipv6_original_dst(stream).map(SocketAddr::V6)
            }
        };
        if let Ok(o) = orig {
            return o;
        }
    }
    let _ = stream;
    local
}

/// Ends a connection with a reset rather than a FIN: for refusals after the
/// handshake, timeouts and failures, so that neither side mistakes a cut
/// stream for a complete one.
fn reset(stream: &impl std::os::fd::AsFd) {
    let _ = SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
}

/// A connection accepted beyond the data plane's share of descriptors
/// ([`crate::fds`]): reset at once, counted, logged once a second.
pub(crate) fn refuse_for_descriptors(
    svc: &ServiceRuntime,
    client: &impl std::os::fd::AsFd,
    peer: SocketAddr,
    local: SocketAddr,
) {
    let budget = &crate::fds::BUDGET;
    budget.refused_tcp.fetch_add(1, Relaxed);
    svc.refuse(Refusal::Descriptors, peer, local, Instant::now());
    if let Some(unsaid) = budget.log.allow() {
        let ((held, _), (share, _)) = (budget.held(), budget.shares());
        tracing::warn!(service = %svc.name(), client = %peer, held, share, also_refused_since = unsaid, "refused: the data plane's share of file descriptors is in use (the rest is kept for the admin listener, health checks and reloads)");
    }
    reset(client);
}

/// A connection the listener accepted.
pub(crate) struct Accepted {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    /// The address it was accepted on, when the listener knows it.
    pub(crate) local: Option<SocketAddr>,
    /// Its address's count of connections closed before being routed.
    pub(crate) refusals: Arc<Refusals>,
    /// Its place in its worker's count, with several workers.
    pub(crate) placed: Option<crate::workers::Placed>,
}

/// Serves one accepted connection; `fds` is its place in the descriptor
/// budget, held until it ends.
///
/// Opening the connection (routing, a PROXY header in, the first byte,
/// scheduling and connecting, the header out) is one boxed future, freed
/// once done; from then on the task holds only a [`Relay`], what
/// forwarding and the connection's end need. A future is as large as its
/// largest state, and a connection lives in its forwarding state: opening
/// inline would make every idle connection carry it (about 1.6 KB), and an
/// `async fn` here would carry its arguments throughout. The task's future:
/// 1640 bytes with nothing boxed, 1192 with each opening step boxed apart,
/// 528 now (a relay of 200 and its forwarding of 288).
pub(crate) fn serve(
    serving: Arc<Serving>,
    accepted: Accepted,
    mode: Mode,
    fds: crate::fds::Held,
) -> impl Future<Output = ()> + Send {
    let opening = Box::pin(open(serving, accepted, mode, fds));
    async move {
        // A `let`, not an `if let`: the scrutinee of an `if let` would
        // live on beside the relay taken out of it, a second copy.
        let Some(mut relay) = opening.await else {
            return;
        };
        relay.forward().await;
    }
}

/// An open connection: both sockets and what counts it. Fields drop in
/// order: the live table's entry (its last counts flushed), the
/// scheduler's count, the server's socket, the limits' places, the
/// client's socket, the descriptors. Its service is the live entry's.
struct Relay {
    live: Registered,
    conn: Conn,
    server: TcpStream,
    _open: crate::service::OpenGuard,
    _source: Option<crate::limits::SourceGuard>,
    client: TcpStream,
    _fds: crate::fds::Held,
    _placed: Option<crate::workers::Placed>,
    started: Instant,
    mode: Mode,
}

/// Everything before forwarding; `None` when the connection was refused
/// or failed (counted, logged and reset here).
async fn open(
    serving: Arc<Serving>,
    accepted: Accepted,
    mode: Mode,
    fds: crate::fds::Held,
) -> Option<Relay> {
    let started = Instant::now();
    let Accepted {
        stream: mut client,
        peer,
        local,
        refusals,
        placed,
    } = accepted;
    let local = local.unwrap_or_else(|| client.local_addr().unwrap_or(peer));
    let (svc, spec, who, vip, sni) = match &*serving {
        Serving::One(svc) => {
            let spec = svc.spec();
            let Some((who, vip, _)) =
                learn_client(svc.name(), &spec, &mut client, peer, local).await
            else {
                svc.refuse(Refusal::ProxyHeader, peer, local, started);
                reset(&client);
                return None;
            };
            (Arc::clone(svc), spec, who, vip, None)
        }
        Serving::ByHello(routes) => {
            match route(routes, serving.first(), &mut client, peer, local).await {
                Ok((svc, who, vip, sni)) => {
                    let spec = svc.spec();
                    (svc, spec, who, vip, sni)
                }
                Err(why) => {
                    refusals.count(why);
                    reset(&client);
                    return None;
                }
            }
        }
    };
    if !spec.acl.allows(who.ip()) {
        debug!(service = %svc.name(), client = %who, "refused: acl");
        svc.refuse(Refusal::Acl, who, vip, started);
        reset(&client);
        return None;
    }
    let source = match svc.admit_source(who.ip()) {
        Ok(g) => g,
        Err(over) => {
            debug!(service = %svc.name(), client = %who, ?over, "refused: per_source");
            svc.refuse(Refusal::Limit, who, vip, started);
            reset(&client);
            return None;
        }
    };
    let Some(open) = svc.admit(spec.max_connections) else {
        debug!(service = %svc.name(), client = %who, "refused: max_connections");
        svc.refuse(Refusal::Limit, who, vip, started);
        reset(&client);
        return None;
    };
    // A client that must speak first and does not is closed before it
    // costs a real server a connection.
    // (A peek: an accepted stream is assumed readable until tried.)
    if let Some(wait) = spec.timeouts.client_first_byte
        && sni.is_none()
        && tokio::time::timeout(wait, client.peek(&mut [0u8; 1]))
            .await
            .is_err()
    {
        debug!(service = %svc.name(), client = %who, "refused: nothing sent within client_first_byte");
        svc.refuse(Refusal::FirstByte, who, vip, started);
        reset(&client);
        return None;
    }
    // TCP_NODELAY: inherited from the listener (`listener::bind`).
    super::sockopts::apply(&client, &spec.tcp, "client");
    let Some((mut server, mut conn, live)) = connect(&svc, &spec, who, vip, started).await else {
        reset(&client);
        return None;
    };
    let _ = server.set_nodelay(true);
    super::sockopts::apply(&server, &spec.tcp, "server");
    conn.established();
    live.conn.set_state(ConnState::Established);
    svc.sync_conn(who, vip, conn.addr(), Some(ConnSync::Established), None);
    if let Some(version) = spec.proxy_protocol {
        let mut header = Vec::with_capacity(64);
        match version {
            ProxyVersion::V1 => proxy_proto::encode_v1(who, vip, &mut header),
            ProxyVersion::V2 => proxy_proto::encode_v2_with(who, vip, sni.as_deref(), &mut header),
        }
        if server.write_all(&header).await.is_err() {
            reset(&client);
            return None;
        }
    }
    Some(Relay {
        live,
        conn,
        server,
        _open: open,
        _source: source,
        client,
        _fds: fds,
        _placed: placed,
        started,
        mode,
    })
}

impl Relay {
    /// Forwards until the connection ends, then counts and logs its end.
    async fn forward(&mut self) {
        // Fields, not locals bound to them: what lives across this await
        // is in the task of every idle connection. The timeouts are the
        // service's as forwarding starts.
        let (tcp, tcpfin) = {
            let spec = self.live.service().spec();
            (spec.timeouts.tcp, spec.timeouts.tcpfin)
        };
        let end = forward::run(
            &self.client,
            &self.server,
            self.mode,
            tcp,
            tcpfin,
            &self.live.conn.counters,
            |client_first| {
                self.conn.fin();
                self.live.conn.set_state(if client_first {
                    ConnState::FinWait
                } else {
                    ConnState::CloseWait
                });
                let c = &self.live.conn;
                self.live.service().sync_conn(
                    c.client,
                    c.vip,
                    self.conn.addr(),
                    Some(ConnSync::Closing { client_first }),
                    None,
                );
            },
        )
        .await;
        self.ended(&end);
    }

    /// Counts and logs how the connection ended; resets both sides unless
    /// it closed cleanly.
    fn ended(&self, end: &End) {
        let Relay {
            live,
            conn,
            server,
            client,
            ..
        } = self;
        let svc = live.service();
        // The client's segments, as IPVS counts a connection's packets.
        if let Some((segs_in, segs_out)) = super::info::segments(client) {
            conn.dest().add_traffic(Traffic {
                in_pkts: segs_in,
                out_pkts: segs_out,
                ..Traffic::default()
            });
            svc.stats.in_pkts.fetch_add(segs_in, Relaxed);
            svc.stats.out_pkts.fetch_add(segs_out, Relaxed);
        }
        let who = live.conn.client;
        svc.sync_conn(
            who,
            live.conn.vip,
            conn.addr(),
            Some(ConnSync::Closed),
            None,
        );
        let how = match end {
            End::Closed => "closed",
            End::Timeout => {
                debug!(service = %svc.name(), client = %who, server = %conn.addr(), "idle timeout");
                reset(client);
                reset(server);
                "idle_timeout"
            }
            End::Expired => {
                debug!(service = %svc.name(), client = %who, server = %conn.addr(), "real server gone: reset (expire_nodest_conn)");
                svc.stats.expired_nodest.fetch_add(1, Relaxed);
                reset(client);
                reset(server);
                "expired_nodest"
            }
            End::Failed(e) => {
                debug!(service = %svc.name(), client = %who, server = %conn.addr(), error = %e, "connection failed");
                reset(client);
                reset(server);
                "reset"
            }
        };
        if svc.access_log() {
            svc.log_access(&live.conn, self.started, how);
        }
    }
}

/// The client and the destination it asked for: from the PROXY header of
/// the balancer in front when the service expects one (with the host name
/// its client asked for, if the header says), else the connection's own.
/// `None`: no valid header in time (logged).
async fn learn_client(
    name: &str,
    spec: &ServiceSpec,
    client: &mut TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<(SocketAddr, SocketAddr, Option<String>)> {
    if !spec.accept_proxy_protocol {
        return Some((peer, original_dst(client, local), None));
    }
    let header =
        tokio::time::timeout(spec.timeouts.proxy_header, proxy_proto::read_header(client)).await;
    match header {
        Ok(Ok(h)) => {
            let (who, vip) = h
                .addrs
                .unwrap_or_else(|| (peer, original_dst(client, local)));
            Some((who, vip, h.authority))
        }
        Ok(Err(e)) => {
            debug!(service = %name, %peer, error = %e, "refused: bad PROXY header");
            None
        }
        Err(_) => {
            debug!(service = %name, %peer, "refused: no PROXY header in time");
            None
        }
    }
}

/// The service of a shared address that takes the connection, by the
/// host name in the PROXY header of the balancer in front, else by the
/// client's ClientHello (peeked: every byte stays for the real server).
/// `first` stands for the address in what happens before: its services
/// read the first bytes alike (`config::matching`).
async fn route(
    routes: &Routes<Arc<ServiceRuntime>>,
    first: &Arc<ServiceRuntime>,
    client: &mut TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<(Arc<ServiceRuntime>, SocketAddr, SocketAddr, Option<String>), Refused> {
    let spec = first.spec();
    let (who, vip, authority) = learn_client("(routed by SNI)", &spec, client, peer, local)
        .await
        .ok_or(Refused::ProxyHeader)?;
    let hello = match authority {
        Some(name) => ClientHello {
            sni: Some(name),
            ..ClientHello::default()
        },
        None => match read::first_bytes(client, spec.timeouts.client_hello).await {
            Ok(First::Hello(h)) => h,
            Ok(First::Other) => {
                let Some(svc) = routes.choose(None) else {
                    debug!(listen = %local, client = %who, "refused: not TLS, and no default service");
                    return Err(Refused::NoMatch);
                };
                return Ok((Arc::clone(svc), who, vip, None));
            }
            Err(why) => {
                debug!(listen = %local, client = %who, reason = why.name(), "refused before its ClientHello was read");
                return Err(why);
            }
        },
    };
    let Some(svc) = routes.choose(Some(&hello)) else {
        debug!(listen = %local, client = %who, sni = ?hello.sni, "refused: no service matches the ClientHello, and none is the default");
        return Err(Refused::NoMatch);
    };
    Ok((Arc::clone(svc), who, vip, hello.sni))
}

/// Schedules and connects, retrying on other servers. Each attempt is a
/// connection of its server and of the service (as IPVS counts a SYN that
/// got no answer), in the live table while it connects.
async fn connect(
    svc: &Arc<ServiceRuntime>,
    spec: &ServiceSpec,
    client: SocketAddr,
    vip: SocketAddr,
    started: Instant,
) -> Option<(TcpStream, Conn, Registered)> {
    let sched = svc.scheduler();
    let mut tried: Vec<SocketAddr> = Vec::new();
    for attempt in 0..=spec.connect_retries {
        let now = clock::now();
        let conn = if attempt == 0 {
            sched.schedule(client, vip, now)
        } else {
            sched.schedule_retry(client, vip, now, &tried)
        };
        let Some(conn) = conn else {
            if attempt == 0 {
                let why = svc.refuse_unscheduled(client, vip, started);
                debug!(service = %svc.name(), %client, reason = why.name(), "refused");
            } else {
                svc.refuse(Refusal::Unreachable, client, vip, started);
                debug!(service = %svc.name(), %client, "refused: no reachable server");
            }
            return None;
        };
        svc.stats.conns.fetch_add(1, Relaxed);
        let addr = conn.addr();
        let live = svc.register(LiveConn::new(
            Proto::Tcp,
            client,
            vip,
            Arc::clone(conn.dest()),
            ConnState::SynRecv,
        ));
        let t0 = Instant::now();
        let target = conn.target(vip);
        match tokio::time::timeout(spec.timeouts.connect, TcpStream::connect(target)).await {
            Ok(Ok(stream)) => {
                svc.observe_connect(addr, t0.elapsed());
                return Some((stream, conn, live));
            }
            Ok(Err(e)) => {
                debug!(service = %svc.name(), server = %addr, error = %e, "connect failed");
            }
            Err(_) => {
                debug!(service = %svc.name(), server = %addr, "connect timed out");
            }
        }
        conn.dest().count_connect_failure();
        svc.stats.connect_failures.fetch_add(1, Relaxed);
        svc.connect_failed(addr);
        tried.push(addr);
        if attempt < spec.connect_retries {
            svc.stats.retries.fetch_add(1, Relaxed);
        }
    }
    svc.refuse(Refusal::Unreachable, client, vip, started);
    None
}
