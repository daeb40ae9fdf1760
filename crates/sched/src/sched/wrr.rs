//! Weighted round robin: ip_vs_wrr.c.
//!
//! The mark holds the current entry (or the head), the current weight `cw`,
//! the maximum weight `mw` reduced by `di - 1`, and the step `di`, the gcd of
//! the positive weights. A pick walks on from the current entry looking for
//! a server that is not overloaded with `weight >= cw`; at the end of the list
//! `cw` drops by `di`, and below 1 it restarts at `mw`. Every add, edit and
//! delete runs `ip_vs_wrr_dest_changed()`, which puts the mark back on the
//! head and recomputes `di`, `mw` and `cw`.

use std::sync::Arc;

use super::Skip;
use crate::dest::Dest;
use crate::hash::gcd;

/// `struct ip_vs_wrr_mark`.
#[derive(Debug, Default)]
pub(crate) struct Wrr {
    /// Current entry; `None` is the list head.
    cl: Option<usize>,
    cw: i64,
    mw: i64,
    di: i64,
}

impl Wrr {
    /// `ip_vs_wrr_init_svc()` on an empty service.
    pub(crate) fn new() -> Wrr {
        Wrr {
            cl: None,
            cw: 0,
            mw: 0,
            di: 1,
        }
    }

    /// `ip_vs_wrr_dest_changed()`.
    pub(crate) fn dest_changed(&mut self, dests: &[Arc<Dest>]) {
        self.cl = None;
        let weights = || dests.iter().map(|d| i64::from(d.weight()));
        self.di = weights().filter(|&w| w > 0).reduce(gcd).unwrap_or(1);
        self.mw = weights().max().unwrap_or(0).max(0) - (self.di - 1);
        if self.cw > self.mw || self.cw == 0 {
            self.cw = self.mw;
        } else if self.di > 1 {
            self.cw = (self.cw / self.di) * self.di + 1;
        }
    }

    /// `ip_vs_wrr_schedule()`.
    pub(crate) fn pick(&mut self, dests: &[Arc<Dest>], skip: Skip<'_>) -> Option<usize> {
        if self.mw == 0 {
            return None;
        }
        let last = self.cl;
        let mut cur = self.cl;
        let mut stop: Option<usize> = None;
        let mut last_pass = false;
        let mut restarted = false;
        loop {
            let start = cur.map_or(0, |p| p + 1);
            for (i, d) in dests.iter().enumerate().skip(start) {
                if !d.is_overloaded() && i64::from(d.weight()) >= self.cw && !skip.has(d) {
                    self.cl = Some(i);
                    return Some(i);
                }
                if stop == Some(i) {
                    self.cl = Some(i);
                    return None;
                }
            }
            cur = None;
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
                if last_pass || last.is_none() {
                    self.cl = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = self.cw <= self.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
        }
    }
}
