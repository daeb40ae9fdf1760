//! Maglev hashing: ip_vs_mh.c, with the kernel's default table of 4093 slots
//! (`CONFIG_IP_VS_MH_TAB_INDEX` 12).
//!
//! `ip_vs_mh_permutate()` gives each server, in list order, an `offset` and a
//! `skip` from `hsiphash()` of its folded address plus port under two fixed
//! keys, and a number of `turns`: `(last_weight / gcd) >> rshift`, or 1 for a
//! non-zero weight that shifts to 0, where `rshift` keeps the largest
//! `weight / gcd` within 6 bits. `ip_vs_mh_populate()` then fills the table
//! round by round: each server in turn claims `turns` slots, each the next
//! free one along its own permutation. The table is built from
//! `last_weight`, the latest non-zero weight, so a server edited to weight 0
//! keeps its slots and is merely unavailable there.
//!
//! A client lands in slot `hsiphash(port + fold(addr)) % 4093`; with
//! mh-fallback, `ip_vs_mh_get_fallback()` re-hashes with `offset + ihash`
//! added inside the hash for offset 0, 1, … until it finds an available
//! server. With more than 4093 servers `ip_vs_mh_reassign()` refuses to
//! rebuild and the previous table stays in force, servers it holds included.

use std::net::SocketAddr;
use std::sync::Arc;

use super::Skip;
use crate::dest::Dest;
use crate::hash::{HsipKey, addr_fold, fls, gcd, hsiphash_u32};

/// `IP_VS_MH_TAB_SIZE`: `primes[CONFIG_IP_VS_MH_TAB_INDEX - 8]`.
pub(crate) const TAB_SIZE: u32 = 4093;
/// `IP_VS_MH_TAB_BITS`: `CONFIG_IP_VS_MH_TAB_INDEX / 2`.
const TAB_BITS: u32 = 6;
const EMPTY: u32 = u32::MAX;

/// `generate_hash_secret()`: fixed, so every director builds the same table.
const HASH1: HsipKey = HsipKey(2_654_435_761, 2_654_435_761);
const HASH2: HsipKey = HsipKey(2_654_446_892, 2_654_446_892);

/// A lookup table and the servers it refers to (which may include servers
/// deleted since, when a rebuild was refused).
#[derive(Debug)]
pub(crate) struct MhTable {
    dests: Vec<Arc<Dest>>,
    lookup: Box<[u32]>,
}

fn hashkey(addr: SocketAddr, port: u16, key: HsipKey, offset: u32) -> u32 {
    let v = offset
        .wrapping_add(u32::from(port))
        .wrapping_add(addr_fold(addr.ip()));
    hsiphash_u32(v, key)
}

fn unavailable(d: &Dest) -> bool {
    d.weight() <= 0 || d.is_overloaded()
}

impl MhTable {
    /// `ip_vs_mh_dest_changed()`: a new table for `dests`, or `prev` again
    /// when there are more servers than slots.
    pub(crate) fn build(dests: &[Arc<Dest>], prev: Option<&Arc<MhTable>>) -> Arc<MhTable> {
        if dests.len() > TAB_SIZE as usize
            && let Some(prev) = prev
        {
            return Arc::clone(prev);
        }
        let mut lookup = vec![EMPTY; TAB_SIZE as usize].into_boxed_slice();
        let lw = |d: &Arc<Dest>| i64::from(d.last_weight());
        // ip_vs_mh_gcd_weight() and ip_vs_mh_shift_weight().
        let g = dests
            .iter()
            .map(lw)
            .filter(|&w| w > 0)
            .reduce(gcd)
            .unwrap_or(0);
        if g >= 1 {
            let max = dests.iter().map(lw).max().unwrap_or(0);
            let rshift = (fls(u32::try_from(max / g).unwrap_or(u32::MAX)) as i64
                - i64::from(TAB_BITS))
            .max(0);
            // ip_vs_mh_permutate(): (offset, skip, perm, turns) per server.
            let mut setup: Vec<(u32, u32, u32, i64)> = dests
                .iter()
                .map(|d| {
                    let a = d.addr();
                    let offset = hashkey(a, a.port(), HASH1, 0) % TAB_SIZE;
                    let skip = hashkey(a, a.port(), HASH2, 0) % (TAB_SIZE - 1) + 1;
                    let w = lw(d);
                    let t = (w / g) >> rshift;
                    let turns = if t != 0 { t } else { i64::from(w != 0) };
                    (offset, skip, offset, turns)
                })
                .collect();
            // ip_vs_mh_populate().
            let mut taken = vec![false; TAB_SIZE as usize];
            let mut n = 0;
            'fill: loop {
                let mut i = 0;
                let mut dt_count = 0;
                while i < dests.len() {
                    let s = &mut setup[i];
                    if s.3 < 1 {
                        i += 1;
                        continue;
                    }
                    let mut c = s.2;
                    while taken[c as usize] {
                        s.2 += s.1;
                        if s.2 >= TAB_SIZE {
                            s.2 -= TAB_SIZE;
                        }
                        c = s.2;
                    }
                    taken[c as usize] = true;
                    lookup[c as usize] = i as u32;
                    n += 1;
                    if n == TAB_SIZE {
                        break 'fill;
                    }
                    dt_count += 1;
                    if dt_count >= s.3 {
                        dt_count = 0;
                        i += 1;
                    }
                }
            }
        }
        Arc::new(MhTable {
            dests: dests.to_vec(),
            lookup,
        })
    }

    fn at(&self, slot: u32) -> Option<&Arc<Dest>> {
        let v = self.lookup[(slot % TAB_SIZE) as usize];
        (v != EMPTY).then(|| &self.dests[v as usize])
    }

    /// `ip_vs_mh_schedule()`.
    pub(crate) fn pick(
        &self,
        client: SocketAddr,
        port: bool,
        fallback: bool,
        skip: Skip<'_>,
    ) -> Option<&Arc<Dest>> {
        let unavailable = |d: &Dest| unavailable(d) || skip.has(d);
        let sport = if port { client.port() } else { 0 };
        let ihash = hashkey(client, sport, HASH1, 0) % TAB_SIZE;
        let first = self.at(ihash)?;
        if !unavailable(first) {
            return Some(first);
        }
        if !fallback {
            return None;
        }
        for offset in 0..TAB_SIZE {
            let roffset = (offset + ihash) % TAB_SIZE;
            let d = self.at(hashkey(client, sport, HASH1, roffset) % TAB_SIZE)?;
            if !unavailable(d) {
                return Some(d);
            }
        }
        None
    }

    /// How many slots each server of the table holds, in the table's order.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> Vec<(SocketAddr, usize)> {
        self.dests
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let n = self.lookup.iter().filter(|&&v| v == i as u32).count();
                (d.addr(), n)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::DestParams;

    fn dests(weights: &[i32]) -> Vec<Arc<Dest>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let d = Dest::new(format!("10.0.0.{}:80", i + 1).parse().unwrap());
                d.apply(
                    DestParams {
                        weight: w,
                        ..DestParams::default()
                    },
                    true,
                );
                Arc::new(d)
            })
            .collect()
    }

    #[test]
    fn slots_follow_turns_round_by_round() {
        // gcd 1, max 1000: rshift = fls(1000) - 6 = 4; turns 62, 6 and 1
        // (1 >> 4 is 0, and a non-zero weight gets 1). 4093 slots are 59
        // full rounds of 69 plus 22 slots, which go to the first server.
        let t = MhTable::build(&dests(&[1000, 100, 1]), None);
        let slots: Vec<usize> = t.slots().into_iter().map(|(_, n)| n).collect();
        assert_eq!(slots, vec![59 * 62 + 22, 59 * 6, 59]);
        assert_eq!(slots.iter().sum::<usize>(), TAB_SIZE as usize);
    }

    #[test]
    fn weight_zero_servers_get_no_slot_and_all_zero_gives_no_table() {
        let t = MhTable::build(&dests(&[0, 3, 0]), None);
        let slots: Vec<usize> = t.slots().into_iter().map(|(_, n)| n).collect();
        assert_eq!(slots, vec![0, TAB_SIZE as usize, 0]);
        let empty = MhTable::build(&dests(&[0, 0]), None);
        assert!(empty.slots().iter().all(|&(_, n)| n == 0));
        assert!(
            empty
                .pick("192.0.2.1:1".parse().unwrap(), false, true, Skip::default())
                .is_none()
        );
    }

    #[test]
    fn more_servers_than_slots_keeps_the_previous_table() {
        let few = dests(&[1, 1]);
        let prev = MhTable::build(&few, None);
        let many: Vec<Arc<Dest>> = (0..TAB_SIZE as usize + 1)
            .map(|i| {
                let d = Dest::new(
                    format!("10.{}.{}.{}:80", i >> 16, (i >> 8) & 255, i & 255)
                        .parse()
                        .unwrap(),
                );
                d.apply(DestParams::default(), true);
                Arc::new(d)
            })
            .collect();
        let kept = MhTable::build(&many, Some(&prev));
        assert!(Arc::ptr_eq(&kept, &prev));
    }
}
