//! lc, wlc, sed, nq, fo and ovf: the schedulers that scan every server for
//! the best load figure (ip_vs_lc.c, ip_vs_wlc.c, ip_vs_sed.c, ip_vs_nq.c,
//! ip_vs_fo.c, ip_vs_ovf.c; lblc and lblcr use the wlc scan too).
//!
//! Every one of those scans keeps the current best and replaces it only with
//! a strictly better server, so the kernel's answer is *the earliest server
//! in list order among the best ones*. That answer can be kept up to date
//! instead of recomputed: a tournament tree over the list positions, whose
//! leaves hold each server's figure and whose inner nodes hold the winner of
//! their two halves, the left (earlier) half winning ties. A pick reads the
//! root; a change to one server's counters replays its leaf-to-root path,
//! O(log n). [`scan`] is the kernel's loop written out literally; the
//! property tests hold the tree to it.
//!
//! The figures, per scheduler, over the servers that may be picked at all
//! (not overloaded, weight above 0; ovf also needs `active <= weight`):
//!
//! | scheduler | best server | kernel comparison |
//! |---|---|---|
//! | lc | least `active*256 + inactive` | `doh < loh` |
//! | wlc | least `(active*256 + inactive) / weight` | `loh * dw > doh * lw` |
//! | sed | least `(active + 1) / weight` | `loh * dw > doh * lw` |
//! | nq | the first idle (`active == 0`) server, else as sed | early return |
//! | fo | highest weight | `w > hw` |
//! | ovf | highest weight | `w > hw` |

use std::sync::Arc;

use crate::dest::Dest;

/// Which load figure a tree ranks by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Metric {
    Lc,
    Wlc,
    Sed,
    Nq,
    Fo,
    Ovf,
}

/// One server's figure, read from its counters when its leaf is updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    /// lc/wlc: the overhead; sed/nq: active + 1.
    load: i64,
    weight: i64,
    idle: bool,
}

impl Metric {
    /// The server's figure, or `None` when this scheduler may not pick it.
    fn key(self, d: &Dest) -> Option<Key> {
        let weight = i64::from(d.weight());
        if d.is_overloaded() || weight <= 0 {
            return None;
        }
        let active = i64::from(d.active_conns());
        let load = match self {
            Metric::Lc | Metric::Wlc => d.overhead(),
            Metric::Sed | Metric::Nq => active + 1,
            Metric::Fo => 0,
            Metric::Ovf if active > weight => return None,
            Metric::Ovf => 0,
        };
        Some(Key {
            load,
            weight,
            idle: active == 0,
        })
    }

    /// Whether `later` beats `earlier`: strictly better, as every scan
    /// replaces its current best only on a strict improvement.
    fn later_wins(self, earlier: &Key, later: &Key) -> bool {
        let ratio_less = || earlier.load * later.weight > later.load * earlier.weight;
        match self {
            Metric::Lc => later.load < earlier.load,
            Metric::Wlc | Metric::Sed => ratio_less(),
            Metric::Nq => !earlier.idle && (later.idle || ratio_less()),
            Metric::Fo | Metric::Ovf => later.weight > earlier.weight,
        }
    }
}

const NONE: u32 = u32::MAX;

/// A tournament tree over the list positions of one service.
#[derive(Debug)]
pub(crate) struct Tournament {
    metric: Metric,
    /// Number of leaves, a power of two (at least 1).
    width: usize,
    keys: Vec<Option<Key>>,
    /// `win[1]` is the root; node `i` has children `2i` and `2i + 1`;
    /// leaves are `width..2 * width`. Each holds a list position or [`NONE`].
    win: Vec<u32>,
}

impl Tournament {
    pub(crate) fn new(metric: Metric) -> Tournament {
        Tournament {
            metric,
            width: 1,
            keys: Vec::new(),
            win: vec![NONE; 2],
        }
    }

    /// Rebuilds the whole tree for a new list.
    pub(crate) fn rebuild(&mut self, dests: &[Arc<Dest>]) {
        self.width = dests.len().next_power_of_two().max(1);
        self.keys.clear();
        self.keys.extend(dests.iter().map(|d| self.metric.key(d)));
        self.win.clear();
        self.win.resize(2 * self.width, NONE);
        for (pos, key) in self.keys.iter().enumerate() {
            if key.is_some() {
                self.win[self.width + pos] = pos as u32;
            }
        }
        for node in (1..self.width).rev() {
            self.win[node] = self.play(self.win[2 * node], self.win[2 * node + 1]);
        }
    }

    /// Re-reads the server at `pos` and replays its path to the root.
    pub(crate) fn update(&mut self, pos: usize, d: &Dest) {
        self.set(pos, self.metric.key(d));
    }

    fn set(&mut self, pos: usize, key: Option<Key>) {
        let Some(slot) = self.keys.get_mut(pos) else {
            return;
        };
        *slot = key;
        let mut node = self.width + pos;
        self.win[node] = if key.is_some() { pos as u32 } else { NONE };
        while node > 1 {
            node /= 2;
            self.win[node] = self.play(self.win[2 * node], self.win[2 * node + 1]);
        }
    }

    /// The best server when the servers at `masked` may not be picked: they
    /// are taken out, the root is read, and they are put back.
    pub(crate) fn best_without(&mut self, masked: &[usize], dests: &[Arc<Dest>]) -> Option<usize> {
        for &pos in masked {
            self.set(pos, None);
        }
        let best = self.best();
        for &pos in masked {
            self.update(pos, &dests[pos]);
        }
        best
    }

    /// The position of the server the kernel's scan would return.
    pub(crate) fn best(&self) -> Option<usize> {
        let w = self.win[1];
        (w != NONE).then_some(w as usize)
    }

    fn play(&self, left: u32, right: u32) -> u32 {
        if left == NONE {
            return right;
        }
        if right == NONE {
            return left;
        }
        match (self.keys[left as usize], self.keys[right as usize]) {
            (Some(l), Some(r)) if self.metric.later_wins(&l, &r) => right,
            _ => left,
        }
    }
}

/// The kernel's scan, loop for loop. The reference the tree is tested against.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn scan(metric: Metric, dests: &[Arc<Dest>]) -> Option<usize> {
    let weight = |d: &Dest| i64::from(d.weight());
    let ovl = |d: &Dest| d.is_overloaded();
    match metric {
        Metric::Lc => {
            // ip_vs_lc_schedule(): unsigned overheads, strict '<'.
            let mut least: Option<(usize, i64)> = None;
            for (i, d) in dests.iter().enumerate() {
                if ovl(d) || weight(d) == 0 {
                    continue;
                }
                let doh = d.overhead();
                if least.is_none_or(|(_, loh)| doh < loh) {
                    least = Some((i, doh));
                }
            }
            least.map(|(i, _)| i)
        }
        Metric::Wlc | Metric::Sed => {
            // ip_vs_wlc_schedule() / ip_vs_sed_schedule().
            let oh = |d: &Dest| match metric {
                Metric::Wlc => d.overhead(),
                _ => i64::from(d.active_conns()) + 1,
            };
            let first = dests.iter().position(|d| !ovl(d) && weight(d) > 0)?;
            let (mut least, mut loh) = (first, oh(&dests[first]));
            for (i, d) in dests.iter().enumerate().skip(first + 1) {
                if ovl(d) {
                    continue;
                }
                let doh = oh(d);
                if loh * weight(d) > doh * weight(&dests[least]) {
                    least = i;
                    loh = doh;
                }
            }
            Some(least)
        }
        Metric::Nq => {
            // ip_vs_nq_schedule().
            let mut least: Option<(usize, i64)> = None;
            for (i, d) in dests.iter().enumerate() {
                if ovl(d) || weight(d) == 0 {
                    continue;
                }
                let doh = i64::from(d.active_conns()) + 1;
                if d.active_conns() == 0 {
                    return Some(i);
                }
                if least.is_none_or(|(l, loh)| loh * weight(d) > doh * weight(&dests[l])) {
                    least = Some((i, doh));
                }
            }
            least.map(|(i, _)| i)
        }
        Metric::Fo => {
            // ip_vs_fo_schedule().
            let mut best: Option<usize> = None;
            let mut hw = 0;
            for (i, d) in dests.iter().enumerate() {
                if !ovl(d) && weight(d) > hw {
                    best = Some(i);
                    hw = weight(d);
                }
            }
            best
        }
        Metric::Ovf => {
            // ip_vs_ovf_schedule().
            let mut best: Option<usize> = None;
            let mut hw = 0;
            for (i, d) in dests.iter().enumerate() {
                let w = weight(d);
                if ovl(d) || i64::from(d.active_conns()) > w || w == 0 {
                    continue;
                }
                if best.is_none() || w > hw {
                    best = Some(i);
                    hw = w;
                }
            }
            best
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::{Counted, DestParams};
    use proptest::prelude::*;

    fn make(specs: &[(i32, u32, u32, bool)]) -> Vec<Arc<Dest>> {
        specs
            .iter()
            .enumerate()
            .map(|(i, &(w, act, inact, ovl))| {
                let d = Dest::new(format!("10.0.{}.{}:80", i / 250, i % 250).parse().unwrap());
                d.apply(
                    DestParams {
                        weight: w,
                        // An upper threshold of 1 lets a bind set the flag.
                        u_threshold: u32::from(ovl),
                        l_threshold: 0,
                    },
                    true,
                );
                for _ in 0..act {
                    d.bind(Counted::Inactive);
                    d.move_count(Counted::Inactive, Counted::Active);
                }
                for _ in 0..inact {
                    d.bind(Counted::Inactive);
                }
                if ovl && act + inact == 0 {
                    d.bind(Counted::Template);
                    d.bind(Counted::Inactive);
                    d.unbind(Counted::Template);
                }
                Arc::new(d)
            })
            .collect()
    }

    const METRICS: [Metric; 6] = [
        Metric::Lc,
        Metric::Wlc,
        Metric::Sed,
        Metric::Nq,
        Metric::Fo,
        Metric::Ovf,
    ];

    #[test]
    fn wlc_tie_goes_to_the_earlier_server() {
        // wlc_ties.jsonl, conn5: C 512/2 ties B 256/1 -> C (earlier).
        let dests = make(&[(2, 2, 0, false), (1, 1, 0, false), (1, 1, 0, false)]);
        let mut t = Tournament::new(Metric::Wlc);
        t.rebuild(&dests);
        assert_eq!(t.best(), Some(0));
        assert_eq!(scan(Metric::Wlc, &dests), Some(0));
    }

    #[test]
    fn nq_prefers_the_first_idle_server() {
        let dests = make(&[(5, 3, 0, false), (1, 0, 4, false), (9, 0, 0, false)]);
        assert_eq!(scan(Metric::Nq, &dests), Some(1));
        let mut t = Tournament::new(Metric::Nq);
        t.rebuild(&dests);
        assert_eq!(t.best(), Some(1));
    }

    #[test]
    fn nothing_eligible_gives_none() {
        let dests = make(&[(0, 0, 0, false), (3, 0, 0, true)]);
        for m in METRICS {
            let mut t = Tournament::new(m);
            t.rebuild(&dests);
            assert_eq!(t.best(), None, "{m:?}");
            assert_eq!(scan(m, &dests), None, "{m:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// The tree answers exactly what the kernel's loop answers, after a
        /// rebuild and after any sequence of single-server changes.
        #[test]
        fn tree_matches_kernel_scan(
            specs in prop::collection::vec((0i32..5, 0u32..4, 0u32..6, prop::bool::weighted(0.15)), 1..40),
            changes in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4), 0..40),
        ) {
            let dests = make(&specs);
            for m in METRICS {
                let mut t = Tournament::new(m);
                t.rebuild(&dests);
                prop_assert_eq!(t.best(), scan(m, &dests), "{:?} after rebuild", m);
            }
            let mut trees: Vec<Tournament> = METRICS.iter().map(|&m| {
                let mut t = Tournament::new(m);
                t.rebuild(&dests);
                t
            }).collect();
            for (idx, op) in changes {
                let pos = idx.index(dests.len());
                let d = &dests[pos];
                match op {
                    0 => d.bind(Counted::Inactive),
                    1 => d.unbind(Counted::Inactive),
                    2 => { d.bind(Counted::Inactive); d.move_count(Counted::Inactive, Counted::Active) }
                    _ => d.apply(DestParams { weight: (pos % 4) as i32, u_threshold: 0, l_threshold: 0 }, false),
                }
                for t in &mut trees {
                    t.update(pos, d);
                    prop_assert_eq!(t.best(), scan(t.metric, &dests), "{:?} after change", t.metric);
                }
            }
        }
    }
}
