//! How many admin connections are served at once — from everyone, and from
//! one client address — and where the others go.
//!
//! A connection beyond either cap is not closed unread: it goes to the
//! probe lane ([`super::lane`]), which reads one request head and answers
//! `/healthz` and `/readyz` (anything else: 503). The kubelet's probes and
//! keepalived's `rvs ready` thus answer while a local user holds every
//! place with idle connections. The lane has a few places; when they are
//! all taken, the oldest is closed for the newest, so that a client
//! opening connections without sending cannot keep a probe out for longer
//! than it takes the probe to send one line. Idle served connections are
//! closed after [`super::HEADER_TIMEOUT`] without a request.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hashbrown::HashMap;
use tokio_util::sync::CancellationToken;

/// The counts. Accepting an admin connection is not a hot path: one lock.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
    /// The lane's connections, oldest first: an id and what closes it.
    lane: VecDeque<(u64, CancellationToken)>,
    next: u64,
}

/// Where a new connection goes.
#[derive(Debug)]
pub(crate) enum Admitted {
    /// Served whole, while the place is held.
    Serve(Place),
    /// To the probe lane.
    Lane(LanePlace),
}

/// A served connection's place, given back when dropped.
#[derive(Debug)]
pub(crate) struct Place {
    admission: Arc<Admission>,
    ip: IpAddr,
}

/// A place in the probe lane, given back when dropped; `closed` is
/// cancelled when a newer connection takes it.
#[derive(Debug)]
pub(crate) struct LanePlace {
    admission: Arc<Admission>,
    id: u64,
    pub(crate) closed: CancellationToken,
}

impl Admission {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a connection from `ip`: served while fewer than `max`
    /// connections are, and fewer than `per_source` from `ip`; else in the
    /// lane of `lane` places.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        max: usize,
        per_source: usize,
        lane: usize,
    ) -> Admitted {
        // An IPv4 client of a dual-stack socket is its IPv4 address.
        let ip = ip.to_canonical();
        let mut st = self.lock();
        let mine = st.by_source.get(&ip).copied().unwrap_or(0);
        if st.total < max && mine < per_source {
            st.total += 1;
            *st.by_source.entry(ip).or_insert(0) += 1;
            return Admitted::Serve(Place {
                admission: Arc::clone(self),
                ip,
            });
        }
        if st.lane.len() >= lane.max(1)
            && let Some((_, oldest)) = st.lane.pop_front()
        {
            oldest.cancel();
        }
        let id = st.next;
        st.next += 1;
        let closed = CancellationToken::new();
        st.lane.push_back((id, closed.clone()));
        Admitted::Lane(LanePlace {
            admission: Arc::clone(self),
            id,
            closed,
        })
    }

    /// Connections served, and in the lane.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.total, st.lane.len())
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut st = self.admission.lock();
        st.total = st.total.saturating_sub(1);
        if let Some(n) = st.by_source.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                st.by_source.remove(&self.ip);
            }
        }
    }
}

impl Drop for LanePlace {
    fn drop(&mut self) {
        let mut st = self.admission.lock();
        if let Some(i) = st.lane.iter().position(|(id, _)| *id == self.id) {
            st.lane.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn served(a: &Admitted) -> bool {
        matches!(a, Admitted::Serve(_))
    }

    #[test]
    fn caps_per_source_and_in_all_send_the_rest_to_the_lane() {
        let adm = Arc::new(Admission::default());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let first: Vec<Admitted> = (0..3).map(|_| adm.admit(a, 5, 3, 2)).collect();
        assert!(first.iter().all(served));
        assert!(
            !served(&adm.admit(mapped, 5, 3, 2)),
            "the same client, mapped"
        );
        let other: Vec<Admitted> = (0..2).map(|_| adm.admit(b, 5, 3, 2)).collect();
        assert!(other.iter().all(served));
        assert!(!served(&adm.admit(b, 5, 3, 2)), "5 in all");
        assert_eq!(adm.counts(), (5, 0), "lane places given back when dropped");
        drop(first);
        assert!(served(&adm.admit(a, 5, 3, 2)));
        assert_eq!(adm.counts(), (2, 0));
    }

    #[test]
    fn a_full_lane_closes_its_oldest_for_the_newest() {
        let adm = Arc::new(Admission::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let _held = adm.admit(ip, 1, 1, 2);
        let lane: Vec<LanePlace> = (0..3)
            .map(|_| match adm.admit(ip, 1, 1, 2) {
                Admitted::Lane(l) => l,
                Admitted::Serve(_) => panic!("the cap is 1"),
            })
            .collect();
        assert!(lane[0].closed.is_cancelled(), "the oldest made room");
        assert!(!lane[1].closed.is_cancelled() && !lane[2].closed.is_cancelled());
        assert_eq!(adm.counts(), (1, 2));
        drop(lane);
        assert_eq!(adm.counts(), (1, 0));
    }
}
