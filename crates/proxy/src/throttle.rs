//! Logging that a flood cannot turn into a flood of log lines: an event
//! that may repeat thousands of times a second (a refused admin request, a
//! UDP session evicted, a connection refused for want of descriptors) is
//! logged at most once per interval, with how many were left unsaid since.
//!
//! Lock-free: one atomic for the time of the last line, one for the count;
//! two threads racing at the interval's edge may both log, never neither.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::clock;

/// At most one line per `interval`.
#[derive(Debug)]
pub(crate) struct Throttle {
    interval: Duration,
    /// When the last line was let through ([`clock`] nanoseconds, plus one
    /// so that 0 means never).
    last: AtomicU64,
    /// Events not logged since that line.
    suppressed: AtomicU64,
}

impl Throttle {
    /// One line per `interval`.
    pub(crate) const fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// One line a second.
    pub(crate) const fn per_second() -> Throttle {
        Throttle::new(Duration::from_secs(1))
    }

    /// Counts an event; `Some(n)` when it is to be logged now, `n` being
    /// how many before it were not.
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(clock::now().as_nanos())
    }

    fn allow_at(&self, now: u64) -> Option<u64> {
        let stamp = now.saturating_add(1);
        let last = self.last.load(Relaxed);
        let due = last == 0
            || now.saturating_sub(last - 1)
                >= u64::try_from(self.interval.as_nanos()).unwrap_or(u64::MAX);
        if due
            && self
                .last
                .compare_exchange(last, stamp, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;
    use std::time::Duration;

    #[test]
    fn one_line_per_interval_with_the_count_of_the_others() {
        let t = Throttle::new(Duration::from_secs(1));
        let s = 1_000_000_000;
        assert_eq!(t.allow_at(0), Some(0));
        assert_eq!(t.allow_at(1), None);
        assert_eq!(t.allow_at(s / 2), None);
        assert_eq!(t.allow_at(s - 1), None);
        assert_eq!(t.allow_at(s), Some(3));
        assert_eq!(t.allow_at(s + 5), None);
        assert_eq!(t.allow_at(5 * s), Some(1));
        assert_eq!(t.allow_at(5 * s), None);
    }
}
