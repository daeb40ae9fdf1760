//! `tcp_keepalive` and `tcp_user_timeout`, in `global` and in each TCP
//! service: checked against what Linux accepts, a service's own taking the
//! place of the global one.

use std::time::Duration;

use super::raw::{RawKeepalive, RawKeepaliveTiming};
use super::validate::{At, at};
use super::values::Dur;
use super::{Keepalive, TcpOptions};

/// Linux's limits on TCP_KEEPIDLE and TCP_KEEPINTVL (MAX_TCP_KEEPIDLE,
/// MAX_TCP_KEEPINTVL), in seconds.
const MAX_KEEPALIVE_SECS: u64 = 32_767;
/// Linux's limit on TCP_KEEPCNT (MAX_TCP_KEEPCNT).
const MAX_KEEPALIVE_COUNT: u32 = 127;

/// The options at `base` (`global`, `services[i]`), each one left out
/// taken from `inherited`.
pub(crate) fn options(
    keepalive: Option<RawKeepalive>,
    user_timeout: Option<Dur>,
    inherited: &TcpOptions,
    base: &str,
    problems: &mut Vec<At>,
) -> TcpOptions {
    let path = |k: &str| {
        if base.is_empty() {
            k.to_owned()
        } else {
            format!("{base}.{k}")
        }
    };
    TcpOptions {
        keepalive: match keepalive {
            None => inherited.keepalive,
            Some(RawKeepalive::Switch(false)) => None,
            Some(RawKeepalive::Switch(true)) => Some(Keepalive::default()),
            Some(RawKeepalive::Timing(t)) => Some(timing(t, &path("tcp_keepalive"), problems)),
        },
        user_timeout: match user_timeout {
            None => inherited.user_timeout,
            // 0: the kernel's default, as TCP_USER_TIMEOUT 0 is.
            Some(d) if d.0.is_zero() => None,
            Some(d) => {
                if d.0 > Duration::from_millis(i32::MAX as u64) {
                    problems.push(at(
                        path("tcp_user_timeout"),
                        format!("{d} is too long: at most 24d (the kernel counts milliseconds in an int)"),
                    ));
                } else if d.0 < Duration::from_millis(1) {
                    problems.push(at(
                        path("tcp_user_timeout"),
                        "the kernel counts whole milliseconds: 1ms or more (0s: the kernel's default)",
                    ));
                }
                Some(d.0)
            }
        },
    }
}

fn timing(t: RawKeepaliveTiming, base: &str, problems: &mut Vec<At>) -> Keepalive {
    let mut seconds = |d: Option<Dur>, key: &str| {
        let d = d?;
        let whole = d.0.subsec_nanos() == 0;
        if !whole || d.0.is_zero() || d.0.as_secs() > MAX_KEEPALIVE_SECS {
            problems.push(at(
                format!("{base}.{key}"),
                format!(
                    "{d} is not a keepalive time: whole seconds from 1s to {MAX_KEEPALIVE_SECS}s, as the kernel takes them"
                ),
            ));
        }
        Some(d.0)
    };
    let idle = seconds(t.idle, "idle");
    let interval = seconds(t.interval, "interval");
    if let Some(n) = t.count
        && !(1..=MAX_KEEPALIVE_COUNT).contains(&n)
    {
        problems.push(at(
            format!("{base}.count"),
            format!("{n} probes: from 1 to {MAX_KEEPALIVE_COUNT}, as the kernel takes them"),
        ));
    }
    Keepalive {
        idle,
        interval,
        count: t.count,
    }
}
