//! A binary upgrade's state, from the proxy's side: the old process stops
//! serving and takes out what it holds (health verdicts, persistence
//! templates, UDP sessions) ([`Proxy::hand_over_state`]), or
//! serves again when the new one failed ([`Proxy::resume`]); the new one
//! adopts it before it serves ([`Proxy::take_over`], then
//! [`Proxy::open`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::{Proxy, lock};
use crate::config::Proto;
use crate::handover::State;
use crate::handover::wire::TemplateState;
use crate::listener::Bound;

/// How long a UDP listener may take to give its sessions up.
const EXPORT_WAIT: Duration = Duration::from_secs(5);

/// The least a template that still controls connections in the process
/// before is kept: what IPVS gives a template whose timer fires while it
/// controls connections (`ip_vs_conn_expire()`).
const CONTROLLED_AT_LEAST: Duration = Duration::from_secs(60);

/// What [`Proxy::take_over`] adopted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TakenOver {
    /// Checked real servers that start from the old process's verdict.
    pub health: usize,
    /// Persistence templates adopted.
    pub templates: usize,
    /// Templates not adopted (their service or server is not configured
    /// here, or the service has no persistence).
    pub templates_dropped: usize,
    /// UDP sessions given to their listeners.
    pub sessions: usize,
    /// Sessions whose listening address is not configured here.
    pub sessions_dropped: usize,
}

impl Proxy {
    /// Starts serving: listeners bound by [`Proxy::start_held`] accept and
    /// read from now on. Idempotent.
    pub fn open(&self) {
        self.inner.opened.cancel();
    }

    /// In a binary upgrade's old process: stops accepting and reading on
    /// every listener (what arrives from now on waits in the sockets, for
    /// the next process), and takes out the UDP sessions (each with its
    /// upstream socket) and the live persistence templates. The TCP
    /// connections open here stay, and drain.
    pub async fn hand_over_state(&self) -> State {
        let mut waiting = Vec::new();
        {
            let st = lock(&self.inner.state);
            for ((proto, _), slot) in &st.slots {
                if *proto == Proto::Udp {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    *crate::udp::lock(&slot.export) = Some(tx);
                    waiting.push(rx);
                }
                slot.stop.cancel();
            }
        }
        let mut state = State::default();
        for rx in waiting {
            match tokio::time::timeout(EXPORT_WAIT, rx).await {
                Ok(Ok(mut sessions)) => state.sessions.append(&mut sessions),
                // The listener had ended already (a reload closed it).
                Ok(Err(_)) => {}
                Err(_) => warn!("upgrade: a UDP listener did not give its sessions up in time"),
            }
        }
        // After the listeners stopped: no template is made here from now
        // on but by connections accepted before (which rarely schedule
        // later, after a PROXY header or a first byte).
        let now = crate::clock::now();
        for svc in self.services() {
            state.health.extend(svc.health_states());
            for t in svc.scheduler().templates() {
                // Invalidated ones (port 65535) only wait to expire.
                if t.vport == u16::MAX {
                    continue;
                }
                state.templates.push(TemplateState {
                    service: svc.name().to_owned(),
                    client: t.client,
                    vaddr: t.vaddr,
                    vport: t.vport,
                    dest: t.dest,
                    remaining_ms: u64::try_from(t.expires.saturating_since(now).as_millis())
                        .unwrap_or(u64::MAX),
                    controlled: t.controlled,
                    pe: t.pe.as_deref().map(<[u8]>::to_vec),
                });
            }
        }
        state
    }

    /// In a binary upgrade's old process, when the new one failed after
    /// [`Proxy::hand_over_state`]: serves every listener again, from the
    /// duplicates kept for the handover. The UDP sessions handed out are
    /// gone (their clients' next datagrams are scheduled again); the
    /// templates were only copied.
    pub fn resume(&self) {
        let mut st = lock(&self.inner.state);
        let keys: Vec<_> = st.slots.keys().copied().collect();
        let mut resumed = 0;
        for key in keys {
            let Some(old) = st.slots.get(&key).cloned() else {
                continue;
            };
            if !old.stop.is_cancelled() {
                continue;
            }
            let fds: Vec<std::os::fd::OwnedFd> = st
                .handover
                .get(&key)
                .map(|fds| fds.iter().filter_map(|fd| fd.try_clone().ok()).collect())
                .unwrap_or_default();
            let mut fds = fds.into_iter();
            let bound = match (key.0, fds.next()) {
                (Proto::Tcp, Some(first)) => Bound::Tcp(
                    std::iter::once(first)
                        .chain(fds)
                        .map(std::net::TcpListener::from)
                        .collect(),
                ),
                (Proto::Udp, Some(fd)) => Bound::Udp(std::net::UdpSocket::from(fd)),
                (_, None) => {
                    warn!(proto = %key.0, listen = %old.local, "upgrade: no socket kept to serve again");
                    continue;
                }
            };
            match self.serve(bound, old.local, old.target.load_full()) {
                Ok(slot) => {
                    st.slots.insert(key, slot);
                    resumed += 1;
                }
                Err(e) => warn!(listen = %old.local, error = %e, "upgrade: cannot serve again"),
            }
        }
        info!(listeners = resumed, "upgrade: serving again");
    }

    /// In a binary upgrade's new process, before [`Proxy::open`]: adopts
    /// the old one's templates (each service's by name, for the same real
    /// server, with the time it had left) and gives its UDP sessions to
    /// the listeners on their addresses, which adopt them when they open.
    pub fn take_over(&self, state: State) -> TakenOver {
        let mut took = TakenOver::default();
        // Health first: a server the old process had up is in the list
        // (under `alpha` it would start down and out of it), and its
        // templates and sessions can be bound to it.
        for h in &state.health {
            if self
                .service(&h.service)
                .is_some_and(|svc| svc.adopt_health(h))
            {
                took.health += 1;
            }
        }
        let now = crate::clock::now();
        for t in state.templates {
            let mut left = Duration::from_millis(t.remaining_ms);
            if t.controlled > 0 {
                left = left.max(CONTROLLED_AT_LEAST);
            }
            let adopted = self.service(&t.service).is_some_and(|svc| {
                svc.scheduler().adopt_template(
                    t.client,
                    t.vaddr,
                    t.vport,
                    t.pe.as_deref(),
                    t.dest,
                    now.saturating_add(left),
                )
            });
            if adopted {
                took.templates += 1;
            } else {
                took.templates_dropped += 1;
                debug!(service = %t.service, client = %t.client, real_server = %t.dest, "upgrade: a persistence template was not taken over");
            }
        }
        let st = lock(&self.inner.state);
        let by_local: std::collections::HashMap<SocketAddr, &Arc<crate::listener::Slot>> = st
            .slots
            .iter()
            .filter(|((proto, _), _)| *proto == Proto::Udp)
            .map(|(_, slot)| (slot.local, slot))
            .collect();
        for handed in state.sessions {
            match by_local.get(&handed.0.listen) {
                Some(slot) => {
                    crate::udp::lock(&slot.adopted).push(handed);
                    took.sessions += 1;
                }
                None => took.sessions_dropped += 1,
            }
        }
        took
    }
}
