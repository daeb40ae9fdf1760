//! Per-source limits (`per_source:`): connections at once and new
//! connections per second (a token bucket) for each client address, or
//! each network of a prefix length, per service.
//!
//! The table is sharded (16 locks, each held for one map operation) and
//! bounded: at `max_sources` groups, the groups with no connection and a
//! full bucket — those that a fresh entry would equal — are dropped; when
//! every group is busy, a new source is refused rather than tracked. A
//! flood of sources thus costs at most `max_sources` entries.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hashbrown::HashMap;

use crate::clock;
use crate::config::PerSource;

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Entry {
    conns: u32,
    tokens: f64,
    /// When the tokens were last counted ([`clock`] nanoseconds).
    at: u64,
}

/// The per-source state of one service.
#[derive(Debug)]
pub(crate) struct Limits {
    cfg: PerSource,
    shards: [Mutex<HashMap<IpAddr, Entry>>; SHARDS],
}

/// Why a source was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Over {
    /// Its group has `max_connections` open.
    Connections,
    /// Its group used its bucket up.
    Rate,
    /// The table is full of busy groups.
    Table,
}

/// A place taken by [`Limits::admit`], given back when dropped.
#[derive(Debug)]
pub(crate) struct SourceGuard {
    limits: Arc<Limits>,
    key: IpAddr,
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut shard = self.limits.shard(&self.key);
        if let Some(e) = shard.get_mut(&self.key) {
            e.conns = e.conns.saturating_sub(1);
        }
    }
}

/// `ip` under the group's prefix length.
fn group(cfg: &PerSource, ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            let bits = u32::from(cfg.prefix_v4.min(32));
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let bits = u32::from(cfg.prefix_v6.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

impl Limits {
    pub(crate) fn new(cfg: PerSource) -> Arc<Limits> {
        Arc::new(Limits {
            cfg,
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        })
    }

    fn shard(&self, key: &IpAddr) -> MutexGuard<'_, HashMap<IpAddr, Entry>> {
        use std::hash::{Hash, Hasher};
        // A fixed hasher: the same key must find the same shard.
        let mut f = std::hash::DefaultHasher::new();
        key.hash(&mut f);
        let i = (f.finish() as usize) % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place for one more connection of `ip`'s group.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<SourceGuard, Over> {
        let key = group(&self.cfg, ip);
        let now = clock::now().as_nanos();
        let cap = (self.cfg.max_sources as usize).div_ceil(SHARDS).max(1);
        let burst = f64::from(self.cfg.burst);
        let mut shard = self.shard(&key);
        if !shard.contains_key(&key) && shard.len() >= cap {
            // Full: forget the groups a fresh entry would equal.
            let rate = self.cfg.rate;
            shard.retain(|_, e| {
                let refilled = rate.is_none_or(|r| {
                    e.tokens + r * (now.saturating_sub(e.at) as f64 / 1e9) >= burst
                });
                e.conns > 0 || !refilled
            });
            if shard.len() >= cap {
                return Err(Over::Table);
            }
        }
        let e = shard.entry(key).or_insert(Entry {
            conns: 0,
            tokens: burst,
            at: now,
        });
        if self.cfg.max_connections.is_some_and(|m| e.conns >= m) {
            return Err(Over::Connections);
        }
        if let Some(r) = self.cfg.rate {
            let elapsed = now.saturating_sub(e.at) as f64 / 1e9;
            e.tokens = (e.tokens + r * elapsed).min(burst);
            e.at = now;
            if e.tokens < 1.0 {
                return Err(Over::Rate);
            }
            e.tokens -= 1.0;
        }
        e.conns += 1;
        drop(shard);
        Ok(SourceGuard {
            limits: Arc::clone(self),
            key,
        })
    }

    /// Groups tracked now.
    pub(crate) fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cfg(max: Option<u32>, rate: Option<f64>, burst: u32, sources: u32) -> PerSource {
        PerSource {
            max_connections: max,
            rate,
            burst,
            prefix_v4: 32,
            prefix_v6: 64,
            max_sources: sources,
        }
    }

    #[test]
    fn connections_per_group_and_prefixes() {
        let l = Limits::new(PerSource {
            prefix_v4: 24,
            ..cfg(Some(2), None, 1, 100)
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.1.1".parse().unwrap();
        let g1 = l.admit(a).unwrap();
        let _g2 = l.admit(b).unwrap();
        assert_eq!(
            l.admit(a).unwrap_err(),
            Over::Connections,
            "a and b share a /24"
        );
        let _g3 = l.admit(c).unwrap();
        drop(g1);
        assert!(l.admit(b).is_ok(), "a place came back");
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2:1".parse().unwrap();
        let _x = l.admit(v6a).unwrap();
        let _y = l.admit(v6b).unwrap();
        assert_eq!(l.admit(v6a).unwrap_err(), Over::Connections, "one /64");
    }

    #[test]
    fn the_table_is_bounded_and_forgets_idle_groups() {
        let l = Limits::new(cfg(Some(10), None, 1, 16));
        let mut held = Vec::new();
        let mut refused = 0;
        for i in 0..200u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            match l.admit(ip) {
                Ok(g) => held.push(g),
                Err(Over::Table) => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(l.tracked() <= 16 + SHARDS, "{}", l.tracked());
        assert!(refused > 0);
        drop(held);
        // Idle groups make room again.
        for i in 1000..1200u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            drop(l.admit(ip).unwrap());
        }
        assert!(l.tracked() <= 16 + SHARDS);
    }

    #[test]
    fn the_rate_is_a_token_bucket() {
        let l = Limits::new(cfg(None, Some(1000.0), 3, 100));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            drop(l.admit(a).unwrap());
        }
        assert_eq!(l.admit(a).unwrap_err(), Over::Rate, "the burst is spent");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(l.admit(a).is_ok(), "refilled at 1000/s");
    }
}
