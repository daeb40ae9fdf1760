//! Power of two choices: ip_vs_twos.c.
//!
//! Two numbers are drawn uniformly from `[0, total_weight]` (inclusive: the
//! kernel adds 1 to the total before `get_random_u32_below()`). Walking the
//! servers that are not overloaded and have a weight, each number is reduced
//! by the server's weight; the server that brings it to 0 or below is that
//! number's choice. So the first such server is chosen with probability
//! `(w + 1) / (W + 1)` and every other with `w / (W + 1)`. Of the two
//! choices, the second wins only when its overhead per weight is strictly
//! lower (`weight2 * overhead1 > weight1 * overhead2`).
//!
//! The random numbers come from a SplitMix64 sequence over an atomic
//! counter seeded by the caller, so picks need no lock and a seeded service
//! is reproducible.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::Skip;
use crate::dest::Dest;

/// A lock-free source of uniform random numbers.
#[derive(Debug)]
pub(crate) struct Rng(AtomicU64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(AtomicU64::new(seed))
    }

    fn next_u64(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)`, without modulo bias (`n > 0`).
    pub(crate) fn below(&self, n: u64) -> u64 {
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let r = self.next_u64();
            if r < zone {
                return r % n;
            }
        }
    }
}

fn usable(d: &Dest) -> bool {
    !d.is_overloaded() && d.weight() > 0
}

/// `ip_vs_twos_schedule()`.
pub(crate) fn pick(dests: &[Arc<Dest>], rng: &Rng, skip: Skip<'_>) -> Option<usize> {
    let usable = |d: &Dest| usable(d) && !skip.has(d);
    let total: i64 = dests
        .iter()
        .filter(|d| usable(d))
        .map(|d| i64::from(d.weight()))
        .sum();
    if total == 0 {
        return None;
    }
    let span = total as u64 + 1;
    let mut r1 = rng.below(span) as i64;
    let mut r2 = rng.below(span) as i64;
    let mut c1: Option<(usize, i64, i64)> = None;
    let mut c2: Option<(usize, i64, i64)> = None;
    for (i, d) in dests.iter().enumerate() {
        if !usable(d) {
            continue;
        }
        let w = i64::from(d.weight());
        r1 -= w;
        r2 -= w;
        if r1 <= 0 && c1.is_none() {
            c1 = Some((i, w, d.overhead()));
        }
        if r2 <= 0 && c2.is_none() {
            c2 = Some((i, w, d.overhead()));
        }
        if c1.is_some() && c2.is_some() {
            break;
        }
    }
    let (i1, w1, oh1) = c1?;
    match c2 {
        Some((i2, w2, oh2)) if w2 * oh1 > w1 * oh2 => Some(i2),
        _ => Some(i1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::DestParams;

    #[test]
    fn below_is_in_range_and_covers_it() {
        let rng = Rng::new(7);
        let mut seen = [0u32; 5];
        for _ in 0..5000 {
            seen[rng.below(5) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }

    #[test]
    fn idle_servers_follow_the_kernel_distribution() {
        // All idle: overheads 0, so choice 1 always stands. Weights 1 and 3:
        // the first server is chosen with (1 + 1) / 5, the second with 3 / 5.
        let dests: Vec<Arc<Dest>> = [1, 3]
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
            .collect();
        let rng = Rng::new(42);
        let n = 20_000;
        let first = (0..n)
            .filter(|_| pick(&dests, &rng, Skip::default()) == Some(0))
            .count();
        let share = first as f64 / n as f64;
        assert!((share - 0.4).abs() < 0.02, "share {share}");
    }
}
