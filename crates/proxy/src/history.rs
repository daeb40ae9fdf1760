//! The last few minutes of a service's traffic and of its real servers'
//! connections, for the status page's charts: fixed rings of samples, one
//! each estimator interval (2 s). No I/O, no clock: the estimator's tick
//! feeds them.
//!
//! Memory is fixed per series: [`SAMPLES`] `f32`s (600 bytes). A service
//! keeps three series (connections a second, bytes a second in and out), a
//! real server one (its active connections): 1.8 KB and 600 bytes.

use crate::stats::{Estimator, Totals};

/// Samples kept per series: five minutes at the 2 s tick.
pub const SAMPLES: usize = 150;

/// A ring of the last [`SAMPLES`] values of one series.
#[derive(Clone, Debug)]
pub struct Ring {
    values: [f32; SAMPLES],
    /// Where the next value goes.
    next: usize,
    /// Values held (up to [`SAMPLES`]).
    len: usize,
}

impl Default for Ring {
    fn default() -> Ring {
        Ring {
            values: [0.0; SAMPLES],
            next: 0,
            len: 0,
        }
    }
}

impl Ring {
    /// Adds the newest value, forgetting the oldest when full.
    pub fn push(&mut self, v: f32) {
        self.values[self.next] = v;
        self.next = (self.next + 1) % SAMPLES;
        self.len = (self.len + 1).min(SAMPLES);
    }

    /// The values held, oldest first.
    pub fn to_vec(&self) -> Vec<f32> {
        let start = (self.next + SAMPLES - self.len) % SAMPLES;
        (0..self.len)
            .map(|i| self.values[(start + i) % SAMPLES])
            .collect()
    }
}

/// A service's series: each interval's connections a second and bytes a
/// second (from the totals' difference, not the smoothed estimate).
#[derive(Clone, Debug)]
pub struct ServiceHistory {
    /// New connections (UDP: sessions) a second.
    pub cps: Ring,
    /// Bytes a second from clients.
    pub in_bps: Ring,
    /// Bytes a second to clients.
    pub out_bps: Ring,
    last: Totals,
}

impl ServiceHistory {
    /// A history that counts from the totals `now`.
    pub fn new(now: Totals) -> ServiceHistory {
        ServiceHistory {
            cps: Ring::default(),
            in_bps: Ring::default(),
            out_bps: Ring::default(),
            last: now,
        }
    }

    /// One interval ended with the totals `now`.
    pub fn sample(&mut self, now: Totals) {
        let secs = Estimator::INTERVAL.as_secs_f64();
        let per_s = |a: u64, b: u64| (a.saturating_sub(b) as f64 / secs) as f32;
        self.cps.push(per_s(now.conns, self.last.conns));
        self.in_bps.push(per_s(now.in_bytes, self.last.in_bytes));
        self.out_bps.push(per_s(now.out_bytes, self.last.out_bytes));
        self.last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_keeps_the_last_values_oldest_first() {
        let mut r = Ring::default();
        assert!(r.to_vec().is_empty());
        for v in 0..3 {
            r.push(v as f32);
        }
        assert_eq!(r.to_vec(), [0.0, 1.0, 2.0]);
        for v in 3..(SAMPLES + 10) {
            r.push(v as f32);
        }
        let held = r.to_vec();
        assert_eq!(held.len(), SAMPLES);
        assert_eq!(held[0], 10.0);
        assert_eq!(held[SAMPLES - 1], (SAMPLES + 9) as f32);
    }

    #[test]
    fn a_service_samples_rates_from_its_totals() {
        let mut h = ServiceHistory::new(Totals::default());
        let t = |conns, in_bytes| Totals {
            conns,
            in_bytes,
            ..Totals::default()
        };
        h.sample(t(20, 2000));
        h.sample(t(20, 2000));
        h.sample(t(26, 3000));
        assert_eq!(h.cps.to_vec(), [10.0, 0.0, 3.0]);
        assert_eq!(h.in_bps.to_vec(), [1000.0, 0.0, 500.0]);
        assert_eq!(h.out_bps.to_vec(), [0.0, 0.0, 0.0]);
    }

    #[test]
    fn a_series_costs_what_the_docs_say() {
        assert_eq!(std::mem::size_of::<[f32; SAMPLES]>(), 600);
    }
}
