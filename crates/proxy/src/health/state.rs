//! The health state machine, without I/O: what keepalived concludes from
//! each check result, and which real servers (with which weights) the
//! scheduler gets. The check tasks feed it results; `effective` turns it
//! into the scheduler's table.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rvs_sched::DestParams;

use crate::config::{HealthCheck, RealServerSpec, ServiceSpec};

/// What to do after one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Next {
    /// The checker's new verdict, when it has one.
    pub(crate) verdict: Option<bool>,
    /// How long to wait before the next check.
    pub(crate) wait: Duration,
}

/// One checker's retry logic (keepalived's `retry`/`delay_before_retry`):
/// a failure of a checker that is up is tried again `retry` times,
/// `delay_before_retry` apart, before the checker says down; a checker that
/// is down says up at its first success.
#[derive(Clone, Debug, Default)]
pub(crate) struct Retries {
    failed_in_row: u32,
}

impl Retries {
    pub(crate) fn after(&mut self, ok: bool, up: bool, c: &HealthCheck) -> Next {
        if ok {
            self.failed_in_row = 0;
            return Next {
                verdict: Some(true),
                wait: c.delay_loop,
            };
        }
        if up && self.failed_in_row < c.retry {
            self.failed_in_row += 1;
            return Next {
                verdict: None,
                wait: c.delay_before_retry,
            };
        }
        self.failed_in_row = 0;
        Next {
            verdict: Some(false),
            wait: c.delay_loop,
        }
    }
}

/// One checker's last verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Checker {
    pub(crate) up: bool,
    /// The weight a dynamic program check set (exit status − 2).
    pub(crate) weight: Option<i32>,
    /// Why it is down.
    pub(crate) reason: Option<String>,
}

/// The health of one real server.
#[derive(Clone, Debug)]
pub(crate) struct RsHealth {
    /// The checks it was set up with (a reload that changes them starts
    /// over).
    pub(crate) checks: Vec<HealthCheck>,
    pub(crate) checkers: Vec<Checker>,
    /// Ejected by failed connects, with the reason.
    pub(crate) passive: Option<String>,
    /// When it last came up (slow start counts from it).
    pub(crate) up_since: Option<Instant>,
}

impl RsHealth {
    /// A server with `checks`, up unless `alpha`.
    pub(crate) fn new(checks: Vec<HealthCheck>, alpha: bool) -> RsHealth {
        let up = !alpha || checks.is_empty();
        let checkers = checks
            .iter()
            .map(|_| Checker {
                up,
                weight: None,
                reason: (!up).then(|| "alpha: down until a check passes".to_owned()),
            })
            .collect();
        RsHealth {
            checks,
            checkers,
            passive: None,
            // Up from the start: no ramp (alpha ramps when it comes up).
            up_since: None,
        }
    }

    /// Up: every checker passes and it is not ejected.
    pub(crate) fn is_up(&self) -> bool {
        self.passive.is_none() && self.checkers.iter().all(|c| c.up)
    }

    /// Why it is down, if it is.
    pub(crate) fn reason(&self) -> Option<String> {
        if let Some(p) = &self.passive {
            return Some(p.clone());
        }
        let reasons: Vec<&str> = self
            .checkers
            .iter()
            .filter(|c| !c.up)
            .filter_map(|c| c.reason.as_deref())
            .collect();
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }

    /// Records checker `i`'s verdict. True when the server went up or down.
    pub(crate) fn record(
        &mut self,
        i: usize,
        up: bool,
        weight: Option<i32>,
        reason: Option<String>,
        now: Instant,
    ) -> bool {
        let before = self.is_up();
        if let Some(c) = self.checkers.get_mut(i) {
            c.up = up;
            c.weight = if up { weight } else { None };
            c.reason = if up { None } else { reason };
        }
        if up {
            // A passing check ends a passive ejection.
            self.passive = None;
        }
        self.changed(before, now)
    }

    /// Ejects it after failed connects. True when it went down.
    pub(crate) fn eject(&mut self, reason: String, now: Instant) -> bool {
        let before = self.is_up();
        self.passive = Some(reason);
        self.changed(before, now)
    }

    /// Ends a passive ejection (a probe passed). True when it went up.
    pub(crate) fn readmit(&mut self, now: Instant) -> bool {
        let before = self.is_up();
        self.passive = None;
        self.changed(before, now)
    }

    fn changed(&mut self, before: bool, now: Instant) -> bool {
        let after = self.is_up();
        if after && !before {
            self.up_since = Some(now);
        }
        after != before
    }

    /// The weight a dynamic check set, if one did.
    pub(crate) fn weight_set(&self) -> Option<i32> {
        self.checkers.iter().rev().find_map(|c| c.weight)
    }

    /// Takes the verdict of the process before a binary upgrade: every
    /// checker says `up` (with `weight` on the last, `reason` when down)
    /// until it concludes itself. Not a change: no slow start.
    pub(crate) fn adopt(&mut self, up: bool, weight: Option<i32>, reason: Option<String>) {
        let n = self.checkers.len();
        for (i, c) in self.checkers.iter_mut().enumerate() {
            c.up = up;
            c.weight = (up && i + 1 == n).then_some(weight).flatten();
            c.reason = (!up).then(|| {
                reason
                    .clone()
                    .unwrap_or_else(|| "down in the process before the upgrade".to_owned())
            });
        }
        self.passive = None;
        self.up_since = None;
    }

    /// Its weight: a dynamic check's, else the configured one.
    pub(crate) fn weight(&self, configured: i32) -> i32 {
        self.checkers
            .iter()
            .rev()
            .find_map(|c| c.weight)
            .unwrap_or(configured)
    }
}

/// A slow start's weight `since` a server came up: from 1 to `w` over
/// `ramp`, rounded up.
pub(crate) fn ramped(w: i32, since: Duration, ramp: Option<Duration>) -> i32 {
    match ramp {
        Some(r) if w > 0 && since < r => {
            let part = since.as_secs_f64() / r.as_secs_f64();
            ((f64::from(w) * part).ceil() as i32).clamp(1, w)
        }
        _ => w,
    }
}

/// keepalived's quorum with hysteresis: `up` is the state before; the
/// result the state after, given the live weight.
pub(crate) fn quorum(up: bool, live_weight: i64, quorum: u32, hysteresis: u32) -> bool {
    let h = i64::from(hysteresis);
    let threshold = i64::from(quorum) + if up { -h } else { h };
    if up {
        !(live_weight == 0 || live_weight < threshold)
    } else {
        live_weight >= threshold
    }
}

/// The real servers the scheduler gets, in configuration order:
///
/// - a server that is up, with its weight (a dynamic check's, ramped by a
///   slow start);
/// - a server that is down: left out, or kept with weight 0 when
///   `inhibit_on_failure`;
/// - with a sorry server and the quorum lost: the sorry server alone.
///
/// `quorum_up` carries the quorum state from one call to the next.
pub(crate) fn effective<'h>(
    spec: &ServiceSpec,
    health: &dyn Fn(SocketAddr) -> Option<&'h RsHealth>,
    quorum_up: &mut bool,
    now: Instant,
) -> Vec<RealServerSpec> {
    let h = &spec.health;
    let mut live: Vec<RealServerSpec> = Vec::with_capacity(spec.real_servers.len());
    let mut live_weight: i64 = 0;
    for r in &spec.real_servers {
        let inhibit = r.inhibit_on_failure.unwrap_or(h.inhibit_on_failure);
        let state = health(r.address);
        let up = state.is_none_or(RsHealth::is_up);
        let weight = state.map_or(r.params.weight, |s| s.weight(r.params.weight));
        if up {
            live_weight += i64::from(weight);
            let since = state
                .and_then(|s| s.up_since)
                .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
            live.push(with_weight(r, ramped(weight, since, h.slow_start)));
        } else if inhibit {
            live.push(with_weight(r, 0));
        }
    }
    *quorum_up = quorum(*quorum_up, live_weight, h.quorum, h.hysteresis);
    match h.sorry_server {
        Some(sorry) if !*quorum_up => vec![RealServerSpec {
            address: sorry,
            params: DestParams {
                weight: 1,
                u_threshold: 0,
                l_threshold: 0,
            },
            checks: None,
            alpha: None,
            inhibit_on_failure: None,
            discovered: None,
        }],
        _ => live,
    }
}

fn with_weight(r: &RealServerSpec, weight: i32) -> RealServerSpec {
    RealServerSpec {
        params: DestParams { weight, ..r.params },
        ..r.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{CheckKind, Config};

    fn check(retry: u32) -> HealthCheck {
        HealthCheck {
            kind: CheckKind::Tcp,
            delay_loop: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            retry,
            delay_before_retry: Duration::from_secs(1),
            warmup: Duration::ZERO,
            connect_ip: None,
            connect_port: None,
        }
    }

    #[test]
    fn a_live_checker_retries_before_it_says_down() {
        let c = check(2);
        let mut r = Retries::default();
        let retry = Next {
            verdict: None,
            wait: c.delay_before_retry,
        };
        assert_eq!(r.after(false, true, &c), retry);
        assert_eq!(r.after(false, true, &c), retry);
        let down = r.after(false, true, &c);
        assert_eq!(down.verdict, Some(false));
        assert_eq!(down.wait, c.delay_loop);
        // Down: each failure is a verdict, no retries.
        assert_eq!(r.after(false, false, &c).verdict, Some(false));
        // One success brings it up.
        assert_eq!(r.after(true, false, &c).verdict, Some(true));
        // A success in the middle of retries resets them.
        assert_eq!(r.after(false, true, &c), retry);
        assert_eq!(r.after(true, true, &c).verdict, Some(true));
        assert_eq!(r.after(false, true, &c), retry);
    }

    #[test]
    fn every_checker_must_pass_and_passive_ejection_needs_a_pass() {
        let now = Instant::now();
        let mut h = RsHealth::new(vec![check(0), check(0)], false);
        assert!(h.is_up());
        assert!(h.record(1, false, None, Some("connection refused".into()), now));
        assert!(!h.is_up());
        assert_eq!(h.reason().as_deref(), Some("connection refused"));
        assert!(!h.record(0, true, None, None, now), "still down: checker 1");
        assert!(h.record(1, true, None, None, now));
        assert!(h.eject("3 failed connects".into(), now));
        assert!(!h.is_up());
        assert!(h.record(0, true, None, None, now), "a pass readmits");
        // alpha: down until each checker passes.
        let mut a = RsHealth::new(vec![check(0)], true);
        assert!(!a.is_up());
        assert!(a.record(0, true, Some(7), None, now));
        assert_eq!(a.weight(1), 7, "a dynamic check's weight");
        // Without checks, alpha has nothing to wait for.
        assert!(RsHealth::new(Vec::new(), true).is_up());
    }

    #[test]
    fn quorum_with_hysteresis_is_keepalived_s() {
        // quorum 3, hysteresis 1: gained at 4, lost below 2 (or at 0).
        assert!(!quorum(false, 3, 3, 1));
        assert!(quorum(false, 4, 3, 1));
        assert!(quorum(true, 2, 3, 1));
        assert!(!quorum(true, 1, 3, 1));
        assert!(!quorum(true, 0, 0, 0), "no live weight at all");
        assert!(quorum(false, 1, 1, 0));
    }

    #[test]
    fn slow_start_ramps_from_one() {
        let r = Some(Duration::from_secs(10));
        assert_eq!(ramped(10, Duration::ZERO, r), 1);
        assert_eq!(ramped(10, Duration::from_secs(5), r), 5);
        assert_eq!(ramped(10, Duration::from_millis(5001), r), 6);
        assert_eq!(ramped(10, Duration::from_secs(10), r), 10);
        assert_eq!(ramped(0, Duration::ZERO, r), 0, "quiescent stays so");
        assert_eq!(ramped(10, Duration::ZERO, None), 10);
    }

    #[test]
    fn the_table_follows_health_quorum_and_the_sorry_server() {
        let c = Config::parse(
            "services:\n  - name: s\n    listen: 127.0.0.1:1\n    sorry_server: 127.0.0.1:9\n    quorum: 2\n    real_servers:\n      - { address: 127.0.0.1:2, weight: 1 }\n      - { address: 127.0.0.1:3, weight: 1, inhibit_on_failure: true }\n      - { address: 127.0.0.1:4, weight: 2 }\n",
            "t",
        )
        .unwrap();
        let spec = &c.services[0];
        let now = Instant::now();
        let up = RsHealth::new(Vec::new(), false);
        let mut down = up.clone();
        down.eject("down".into(), now);
        let addrs = |v: &[RealServerSpec]| -> Vec<(u16, i32)> {
            v.iter()
                .map(|r| (r.address.port(), r.params.weight))
                .collect()
        };
        let mut q = true;
        let all_up = effective(spec, &|_| Some(&up), &mut q, now);
        assert_eq!(addrs(&all_up), [(2, 1), (3, 1), (4, 2)]);
        // :3 down with inhibit: weight 0; :4 down: gone; live weight 1 < 2.
        let health = |a: SocketAddr| match a.port() {
            3 | 4 => Some(&down),
            _ => Some(&up),
        };
        let t = effective(spec, &health, &mut q, now);
        assert!(!q, "quorum lost");
        assert_eq!(addrs(&t), [(9, 1)], "the sorry server alone");
        // Only :4 down: live weight 2, quorum back, sorry server gone.
        let health = |a: SocketAddr| match a.port() {
            4 => Some(&down),
            _ => Some(&up),
        };
        let t = effective(spec, &health, &mut q, now);
        assert!(q);
        assert_eq!(addrs(&t), [(2, 1), (3, 1)]);
    }
}
