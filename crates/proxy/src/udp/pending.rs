//! UDP flows of an address that services share by their `match`, waiting
//! for the rest of their QUIC ClientHello ([`crate::sni::quic`]).
//!
//! A flow's first datagram decides where it goes. When it is a QUIC
//! Initial whose hello goes on in another datagram, the flow waits here,
//! its datagrams kept in order, until the hello is whole; then the
//! service it names gets them all, first to last. A datagram that is not
//! a QUIC Initial, or does not decrypt, goes to the default at once.
//!
//! Bounded: at most [`MAX_FLOWS`] flows wait per listening socket, each
//! with at most [`MAX_DATAGRAMS`] datagrams, for at most
//! `timeouts.client_hello`; beyond, a flow is dropped and counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;

use crate::service::ServiceRuntime;
use crate::sni::hello::Parse;
use crate::sni::names::Routes;
use crate::sni::quic::{self, Assembly};
use crate::sni::read::Refused;

/// Flows waiting at once, per listening socket.
pub(super) const MAX_FLOWS: usize = 1024;
/// Datagrams kept per waiting flow (a hello spans two or three).
pub(super) const MAX_DATAGRAMS: usize = 8;

/// A flow waiting for the rest of its hello.
struct Waiting {
    assembly: Assembly,
    datagrams: Vec<Vec<u8>>,
    since: Instant,
}

/// Where a flow's datagram goes.
pub(super) enum Route {
    /// To this service, after the datagrams the flow sent before it.
    To(Arc<ServiceRuntime>, Vec<Vec<u8>>),
    /// Kept: the hello is not whole yet.
    Wait,
    /// Dropped, with the flow's earlier datagrams.
    Refused(Refused),
}

/// The flows of one listening socket waiting for their hello.
#[derive(Default)]
pub(super) struct Pending {
    flows: HashMap<SocketAddr, Waiting>,
}

impl Pending {
    /// Routes the datagram `data` of `client`, which has no session.
    pub(super) fn route(
        &mut self,
        client: SocketAddr,
        data: &[u8],
        routes: &Routes<Arc<ServiceRuntime>>,
    ) -> Route {
        let pieces = match quic::initial_crypto(data) {
            Ok(pieces) => pieces,
            // Not a QUIC Initial we can read: the default, unless the flow
            // waits for its hello (a datagram of another kind between its
            // Initials, as a 0-RTT packet: kept with them).
            Err(why) => {
                if self.flows.contains_key(&client) {
                    return self.hold(client, data);
                }
                tracing::trace!(%client, %why, "udp: not a QUIC Initial: the default service");
                return to(routes.choose(None), Vec::new());
            }
        };
        if !self.flows.contains_key(&client) && self.flows.len() >= MAX_FLOWS {
            return Route::Refused(Refused::Backlog);
        }
        let w = self.flows.entry(client).or_insert_with(|| Waiting {
            assembly: Assembly::default(),
            datagrams: Vec::new(),
            since: Instant::now(),
        });
        let hello = match w.assembly.add(pieces) {
            Parse::NeedMore => return self.hold(client, data),
            Parse::TooLarge => {
                self.flows.remove(&client);
                return Route::Refused(Refused::TooLarge);
            }
            Parse::Hello(hello) => Some(hello),
            // A CRYPTO stream that is not a ClientHello: as any datagram
            // that cannot be read, the default.
            Parse::NotTls | Parse::Invalid(_) => None,
        };
        let earlier = self
            .flows
            .remove(&client)
            .map_or_else(Vec::new, |w| w.datagrams);
        to(routes.choose(hello.as_ref()), earlier)
    }

    /// Keeps `data` with the waiting flow of `client`; a flow that holds
    /// all it may is dropped.
    fn hold(&mut self, client: SocketAddr, data: &[u8]) -> Route {
        match self.flows.get_mut(&client) {
            Some(w) if w.datagrams.len() < MAX_DATAGRAMS => {
                w.datagrams.push(data.to_vec());
                Route::Wait
            }
            _ => {
                self.flows.remove(&client);
                Route::Refused(Refused::TooLarge)
            }
        }
    }

    /// Drops the flows that waited longer than `wait`; how many.
    pub(super) fn expire(&mut self, wait: Duration) -> usize {
        let before = self.flows.len();
        self.flows.retain(|_, w| w.since.elapsed() < wait);
        before - self.flows.len()
    }
}

fn to(svc: Option<&Arc<ServiceRuntime>>, earlier: Vec<Vec<u8>>) -> Route {
    match svc {
        Some(s) => Route::To(Arc::clone(s), earlier),
        None => Route::Refused(Refused::NoMatch),
    }
}
