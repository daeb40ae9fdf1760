//! The live connection table: what `ipvsadm -lc` lists — every TCP
//! connection and UDP session of a service with its client, virtual
//! address, real server, state and time left.
//!
//! A connection registers once scheduled and leaves when it ends; the
//! table is sharded by the entry's address so that connections of one
//! service rarely meet on the same lock, and each lock is held for one map
//! insert or remove. Reading the table clones the entries' `Arc`s.
//!
//! Bytes of a live connection reach the service's and the real server's
//! totals when they are read (`LiveConn::flush`): the forwarding loops
//! count into the connection's own counters only, and whoever reads the
//! totals (the rate estimator every 2 s, a scrape, an API call) first moves
//! what is new into them. A connection's last bytes move when it ends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hashbrown::HashMap;
use rvs_sched::{Dest, Time, Traffic};

use crate::clock;
use crate::config::{Proto, Timeouts};
use crate::stats::ServiceStats;
use crate::tcp::forward::Counters;

/// A connection's state, named as IPVS names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    /// Connecting to the real server.
    SynRecv = 0,
    /// Both sides established.
    Established = 1,
    /// The client ended its direction first.
    FinWait = 2,
    /// The real server ended its direction first.
    CloseWait = 3,
    /// A UDP session.
    Udp = 4,
}

impl ConnState {
    /// IPVS's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            ConnState::SynRecv => "SYN_RECV",
            ConnState::Established => "ESTABLISHED",
            ConnState::FinWait => "FIN_WAIT",
            ConnState::CloseWait => "CLOSE_WAIT",
            ConnState::Udp => "UDP",
        }
    }

    fn from_u8(v: u8) -> ConnState {
        match v {
            0 => ConnState::SynRecv,
            1 => ConnState::Established,
            2 => ConnState::FinWait,
            3 => ConnState::CloseWait,
            _ => ConnState::Udp,
        }
    }
}

/// One live connection or session.
#[derive(Debug)]
pub struct LiveConn {
    /// TCP or UDP.
    pub proto: Proto,
    /// The client (as the PROXY header told, when one did).
    pub client: SocketAddr,
    /// The virtual address it reached.
    pub vip: SocketAddr,
    /// Its real server.
    pub server: SocketAddr,
    state: AtomicU8,
    /// When the connection entered its state (for SYN_RECV's expiry).
    since: AtomicU64,
    pub(crate) counters: Counters,
    /// Bytes of `counters` already in the totals, each way.
    reported: [AtomicU64; 2],
    dest: Arc<Dest>,
}

impl LiveConn {
    pub(crate) fn new(
        proto: Proto,
        client: SocketAddr,
        vip: SocketAddr,
        dest: Arc<Dest>,
        state: ConnState,
    ) -> LiveConn {
        let now = clock::now().as_nanos();
        let conn = LiveConn {
            proto,
            client,
            vip,
            server: dest.addr(),
            state: AtomicU8::new(state as u8),
            since: AtomicU64::new(now),
            counters: Counters::default(),
            reported: [AtomicU64::new(0), AtomicU64::new(0)],
            dest,
        };
        conn.counters.touch();
        conn
    }

    /// Its state now.
    pub fn state(&self) -> ConnState {
        ConnState::from_u8(self.state.load(Relaxed))
    }

    pub(crate) fn set_state(&self, s: ConnState) {
        self.state.store(s as u8, Relaxed);
        self.since.store(clock::now().as_nanos(), Relaxed);
    }

    /// Time left before the idle timeout of its state ends it (for SYN_RECV,
    /// the connect timeout), as `ipvsadm -lc` shows in its expire column.
    pub fn expires_in(&self, t: &Timeouts) -> Duration {
        let now = clock::now();
        let (from, limit) = match self.state() {
            ConnState::SynRecv => (self.since.load(Relaxed), t.connect),
            ConnState::Established => (self.counters.last(), t.tcp),
            ConnState::FinWait | ConnState::CloseWait => (self.counters.last(), t.tcpfin),
            ConnState::Udp => (self.counters.last(), t.udp),
        };
        Time::from_nanos(from)
            .saturating_add(limit)
            .saturating_since(now)
    }

    /// Moves the bytes counted since the last flush into the service's
    /// and the real server's totals. Safe to race: each byte moves once.
    pub(crate) fn flush(&self, stats: &ServiceStats) {
        let moved =
            |i: usize, now: u64| now.saturating_sub(self.reported[i].fetch_max(now, Relaxed));
        let up = moved(0, self.counters.to_server.load(Relaxed));
        let down = moved(1, self.counters.to_client.load(Relaxed));
        if up == 0 && down == 0 {
            return;
        }
        self.dest.add_traffic(Traffic {
            in_bytes: up,
            out_bytes: down,
            ..Traffic::default()
        });
        stats.in_bytes.fetch_add(up, Relaxed);
        stats.out_bytes.fetch_add(down, Relaxed);
    }
}

const SHARDS: usize = 16;

type Shard = Mutex<HashMap<usize, Arc<LiveConn>>>;

/// The live connections of one service.
#[derive(Debug)]
pub struct ConnTable {
    shards: [Shard; SHARDS],
}

impl Default for ConnTable {
    fn default() -> ConnTable {
        ConnTable {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }
}

fn key(c: &Arc<LiveConn>) -> (usize, usize) {
    let k = Arc::as_ptr(c) as usize;
    // Allocations are at least 16-byte aligned: skip the constant bits.
    (k, (k >> 6) % SHARDS)
}

impl ConnTable {
    fn shard(&self, i: usize) -> std::sync::MutexGuard<'_, HashMap<usize, Arc<LiveConn>>> {
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn insert(&self, c: Arc<LiveConn>) {
        let (k, s) = key(&c);
        self.shard(s).insert(k, c);
    }

    pub(crate) fn remove(&self, c: &Arc<LiveConn>) {
        let (k, s) = key(c);
        self.shard(s).remove(&k);
    }

    /// Every live connection, in no particular order.
    pub fn list(&self) -> Vec<Arc<LiveConn>> {
        let mut v = Vec::new();
        for i in 0..SHARDS {
            v.extend(self.shard(i).values().cloned());
        }
        v
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).len()).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends the TCP connections whose real server is one of `gone`
    /// (`expire_nodest_conn`): each is reset by its own task. Returns how
    /// many were told.
    pub(crate) fn expire_dests(&self, gone: &[Arc<Dest>]) -> usize {
        let mut n = 0;
        for i in 0..SHARDS {
            for c in self.shard(i).values() {
                if c.proto == Proto::Tcp && gone.iter().any(|d| Arc::ptr_eq(d, &c.dest)) {
                    c.counters.expire();
                    n += 1;
                }
            }
        }
        n
    }

    /// Flushes every live connection's new bytes into the totals.
    pub(crate) fn flush(&self, stats: &ServiceStats) {
        for i in 0..SHARDS {
            for c in self.shard(i).values() {
                c.flush(stats);
            }
        }
    }
}
