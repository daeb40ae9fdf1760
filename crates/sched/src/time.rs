//! The caller's clock.
//!
//! The library never reads a clock. Every operation that can expire something
//! (persistence templates, lblc/lblcr entries) takes a [`Time`] from the
//! caller: the data plane passes a monotonic clock, `rvs sched-replay` the
//! trace's virtual clock.

use std::time::Duration;

/// A point on the caller's monotonic clock, in nanoseconds from an origin the
/// caller chooses (the replay starts at zero when the service is created).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    /// The origin.
    pub const ZERO: Time = Time(0);

    /// A time `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Time {
        Time(nanos)
    }

    /// A time `secs` whole seconds after the origin (saturating).
    pub const fn from_secs(secs: u64) -> Time {
        Time(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// This time plus `d`, saturating at the end of the clock.
    pub fn saturating_add(self, d: Duration) -> Time {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Time(self.0.saturating_add(nanos))
    }

    /// The time elapsed since `earlier`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Time::from_secs(10);
        assert_eq!(
            t.saturating_add(Duration::from_secs(5)),
            Time::from_secs(15)
        );
        assert_eq!(
            Time::from_nanos(u64::MAX).saturating_add(Duration::from_secs(1)),
            Time::from_nanos(u64::MAX)
        );
        assert_eq!(Time::from_secs(3).saturating_since(t), Duration::ZERO);
        assert_eq!(
            t.saturating_since(Time::from_secs(4)),
            Duration::from_secs(6)
        );
    }
}
