//! The data plane's clock for the scheduler: a monotonic [`rvs_sched::Time`]
//! counted from the first time it is read.

use std::sync::OnceLock;
use std::time::Instant;

use rvs_sched::Time;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Now, on the process's monotonic clock.
pub(crate) fn now() -> Time {
    let origin = *ORIGIN.get_or_init(Instant::now);
    Time::from_nanos(u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
}

/// `t` as an [`Instant`] (for a timer's deadline).
pub(crate) fn instant(t: Time) -> Instant {
    let origin = *ORIGIN.get_or_init(Instant::now);
    origin + std::time::Duration::from_nanos(t.as_nanos())
}
