//! UDP sessions across a binary upgrade.
//!
//! In the old process, a listener stopped for the upgrade exports its
//! table: each session's state and a duplicate of its upstream socket,
//! whose port is what the real server knows the flow by. Its reply task
//! stops; replies that come meanwhile wait in that socket, which the next
//! process reads. The session ends here without an access-log line: it
//! goes on there.
//!
//! In the new process, the listener adopts them before it reads its first
//! datagram (datagrams wait in the listening socket meanwhile): each is
//! admitted as a new session would be (`allow`/`deny`, `per_source`,
//! `max_sessions`, the descriptor budget, as configured now), bound to the
//! same real server without scheduling ([`rvs_sched::Service::adopt`],
//! controlled by the client's template under persistence), and keeps its
//! idle time, its age and its PROXY header state.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::{Arrival, Opened, Table, admit, install};
use crate::clock;
use crate::datagrams::Destination;
use crate::handover::wire::SessionState;
use crate::listener::{Serving, Slot};
use crate::service::ServiceRuntime;

/// A UDP session handed over: its state and its upstream socket.
pub(crate) type Handed = crate::handover::HandedSession;

/// Takes every session out of `table`, for the next process.
pub(super) fn export(table: &mut Table, slot: &Slot) -> Vec<Handed> {
    let now = clock::now();
    let mut out = Vec::with_capacity(table.map.len());
    for (peer, s) in table.map.drain() {
        // Quietly: its places go, it is not logged as ended.
        drop(s.release());
        let Ok(fd) = s.up.as_fd().try_clone_to_owned() else {
            continue;
        };
        let last = rvs_sched::Time::from_nanos(s.last.load(Relaxed));
        out.push((
            SessionState {
                service: s.svc.name().to_owned(),
                listen: slot.local,
                peer,
                client: s.client,
                dest: s.conn.as_ref().map(rvs_sched::Conn::addr),
                idle_ms: millis(now.saturating_since(last)),
                age_ms: millis(s.started.elapsed()),
                header_sent: s.header_sent.load(Relaxed),
                reply_from: s.reply_from.map(|d| (d.ip, d.ifindex)),
            },
            fd,
        ));
    }
    table.clock.clear();
    out
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Adopts the sessions handed over to this listener.
pub(super) async fn adopt_all(
    socket: &Arc<UdpSocket>,
    slot: &Slot,
    tracker: &TaskTracker,
    table: &mut Table,
    handed: Vec<Handed>,
) {
    let serving = slot.target.load_full();
    let (mut adopted, mut dropped) = (0usize, 0usize);
    for (state, fd) in handed {
        let (peer, dest) = (state.peer, state.dest);
        // The address's service; on one shared by `match`, the one its
        // flow was routed to (a session of a service gone from the
        // address is routed again at its next datagram).
        let svc = match &*serving {
            Serving::One(svc) => Some(svc),
            Serving::ByHello(_) => serving.named(&state.service),
        };
        let Some(svc) = svc.cloned() else {
            dropped += 1;
            debug!(service = %state.service, client = %peer, "upgrade: a UDP session's service no longer serves this address: its next datagram is routed again");
            continue;
        };
        match adopt(&svc, socket, slot, tracker, table, state, fd) {
            Ok(()) => adopted += 1,
            Err(why) => {
                dropped += 1;
                debug!(service = %svc.name(), client = %peer, real_server = ?dest, why, "upgrade: a UDP session was not taken over: its next datagram is scheduled again");
            }
        }
    }
    info!(service = %serving.first().name(), listen = %slot.local, sessions = adopted, not_taken = dropped, "upgrade: took over the UDP sessions of the process before");
}

fn adopt(
    svc: &Arc<ServiceRuntime>,
    socket: &Arc<UdpSocket>,
    slot: &Slot,
    tracker: &TaskTracker,
    table: &mut Table,
    state: SessionState,
    fd: OwnedFd,
) -> Result<(), &'static str> {
    let up = std::net::UdpSocket::from(fd);
    up.set_nonblocking(true)
        .map_err(|_| "its socket cannot be made non-blocking")?;
    let ops = svc.spec().schedules_each_datagram();
    if ops != state.dest.is_none() {
        return Err("the service's udp.ops or persistence engine changed");
    }
    // A real server of port 0 was connected on the client's port.
    let connected_to = |peer: SocketAddr, dest: SocketAddr| {
        peer.ip() == dest.ip() && (dest.port() == 0 || peer.port() == dest.port())
    };
    if let Some(dest) = state.dest
        && !up.peer_addr().is_ok_and(|p| connected_to(p, dest))
    {
        return Err("its socket is not connected to its real server");
    }
    let started = Instant::now()
        .checked_sub(Duration::from_millis(state.age_ms))
        .unwrap_or_else(Instant::now);
    let places = admit(svc, slot, state.client, table, started)
        .ok_or("refused by the service's limits or allow/deny")?;
    let conn = match state.dest {
        Some(dest) => Some(
            svc.scheduler()
                .adopt(state.client, slot.local, dest)
                .ok_or("its real server is not in the service")?,
        ),
        None => None,
    };
    let up = UdpSocket::from_std(up).map_err(|_| "its socket cannot be registered")?;
    let now = clock::now().as_nanos();
    let idle = u64::try_from(Duration::from_millis(state.idle_ms).as_nanos()).unwrap_or(u64::MAX);
    let opened = Opened {
        conn,
        up,
        places,
        started,
        last: rvs_sched::Time::from_nanos(now.saturating_sub(idle)),
        header_sent: state.header_sent,
    };
    let arrival = Arrival {
        peer: state.peer,
        client: state.client,
        to: state
            .reply_from
            .map(|(ip, ifindex)| Destination { ip, ifindex }),
    };
    install(svc, socket, slot, arrival, opened, table, tracker);
    Ok(())
}
