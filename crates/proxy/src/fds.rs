//! File descriptors: the process's limit, and what each part of rvs may
//! take of it.
//!
//! At start rvs raises its soft `RLIMIT_NOFILE` to the hard limit
//! ([`raise_limit`]), as HAProxy and nginx do: a shell's soft default
//! (1024) is no server's. Of the limit, a [`Plan`] keeps a reserve for
//! what must not fail for want of a descriptor — the admin listener and
//! its connections, health checks, reloads and DNS, the listening sockets
//! and the duplicates kept for a binary upgrade — and gives the rest to
//! the data plane, where a TCP connection takes two (its two sockets;
//! splice's pipes are counted as they are made and closed) and a UDP
//! session one (its upstream socket). UDP sessions may take at most half
//! of the data plane's share, so that a UDP flood leaves TCP its room.
//!
//! The `Budget` counts what the data plane holds, in atomics (no lock
//! on the accept path), process-wide as the limit is: a TCP connection
//! accepted beyond the share is closed at once (refused, reason
//! `descriptors`); a new UDP session beyond it evicts the idlest session
//! of its socket first. Plans are made again at every reload: the reserve
//! follows the configuration (listeners, health checks).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::config::{CheckKind, Config, Proto};

/// What a configuration may use of a descriptor limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The limit (the soft `RLIMIT_NOFILE`).
    pub limit: u64,
    /// Kept for the admin listener, health checks, reloads, DNS and the
    /// listening sockets.
    pub reserve: u64,
    /// What the data plane may hold: `limit - reserve`.
    pub data: u64,
    /// UDP sessions at once, at most (each holds one descriptor).
    pub udp_sessions: u64,
    /// Admin connections served at once (`admin.max_connections`, lowered
    /// to fit a small limit).
    pub admin_connections: u32,
}

/// Descriptors a process holds whatever its configuration: standard
/// streams, the runtimes' epoll and event descriptors, the signal and
/// inotify descriptors, the configuration file being read, DNS sockets.
const BASE: u64 = 64;

/// Per data-plane worker: its runtime's epoll and eventfd. (The pipes its
/// splice pool keeps are the data plane's, counted as they are made.)
const PER_WORKER: u64 = 4;

/// Admin connections beyond the cap that are still read, to answer
/// `/healthz` and `/readyz` (`admin::lane`).
pub const PROBE_LANE: u32 = 32;

impl Plan {
    /// The plan for `config` under `limit` descriptors, with `workers`
    /// data-plane threads.
    pub fn new(limit: u64, config: &Config, workers: usize) -> Plan {
        let copies = workers.max(1) as u64;
        let sockets: u64 = config
            .services
            .iter()
            .map(|s| {
                let per = match s.proto {
                    Proto::Tcp => copies,
                    Proto::Udp => 1,
                };
                // Each socket and the duplicate kept for an upgrade.
                2 * per * s.listen.len() as u64
            })
            .sum();
        let checks: u64 = config
            .services
            .iter()
            .flat_map(|s| {
                s.real_servers
                    .iter()
                    .flat_map(move |r| s.checks_of(r).iter())
            })
            .map(|c| match c.kind {
                // The program's pipes and its descriptor while it starts.
                CheckKind::Misc(_) => 4,
                _ => 1,
            })
            .sum();
        // A small limit lowers the admin listener's cap before anything
        // else: 1/16 of the limit, at least 16.
        let admin_connections = config
            .admin
            .limits
            .max_connections
            .min(u32::try_from((limit / 16).max(16)).unwrap_or(u32::MAX));
        let admin = 1 + 2 + u64::from(admin_connections) + u64::from(PROBE_LANE);
        let reserve = BASE + PER_WORKER * workers as u64 + sockets + checks + admin;
        // Whatever the reserve, the data plane keeps a quarter of the
        // limit: a configuration too large for its limit still serves
        // (and `rvs check` says so).
        let data = limit.saturating_sub(reserve).max(limit / 4);
        Plan {
            limit,
            reserve,
            data,
            udp_sessions: (data / 2).max(1),
            admin_connections,
        }
    }

    /// What is wrong with `config` under this plan, for `rvs check` and
    /// the log at start: limits that the descriptors cannot honour.
    pub fn warnings(&self, config: &Config) -> Vec<String> {
        let mut out = Vec::new();
        if self.reserve + self.limit / 4 > self.limit {
            out.push(format!(
                "the descriptor limit {} is below what the listeners, health checks and admin listener need ({}): raise LimitNOFILE (systemd), --ulimit nofile (containers) or ulimit -n",
                self.limit, self.reserve
            ));
        }
        // The default (65536) is a ceiling the budget lowers on its own:
        // only values written in the file are said.
        let default = crate::config::UdpSettings::DEFAULT_MAX_SESSIONS;
        let udp: u64 = config
            .services
            .iter()
            .filter(|s| s.proto == Proto::Udp && s.udp.max_sessions != default)
            .map(|s| s.udp.max_sessions as u64)
            .sum();
        if udp > self.udp_sessions {
            out.push(format!(
                "udp.max_sessions of the UDP services add up to {udp}, above the {} sessions that {} descriptors allow: beyond, the idlest session is evicted",
                self.udp_sessions, self.limit
            ));
        }
        // With a service unbounded, the sum means nothing.
        let bounded = config
            .services
            .iter()
            .all(|s| s.proto != Proto::Tcp || s.max_connections.is_some());
        let tcp: u64 = config
            .services
            .iter()
            .filter(|s| s.proto == Proto::Tcp)
            .filter_map(|s| s.max_connections)
            .map(|m| 2 * u64::from(m))
            .sum();
        if bounded && tcp > self.data {
            out.push(format!(
                "max_connections of the TCP services add up to {} connections, above the {} that {} descriptors allow: beyond, new connections are refused",
                tcp / 2,
                self.data / 2,
                self.limit
            ));
        }
        if self.admin_connections < config.admin.limits.max_connections {
            out.push(format!(
                "admin.max_connections {} is lowered to {} by the descriptor limit {}",
                config.admin.limits.max_connections, self.admin_connections, self.limit
            ));
        }
        out
    }
}

/// The soft and hard `RLIMIT_NOFILE` (`None`: unlimited).
pub fn limits() -> (Option<u64>, Option<u64>) {
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    (l.current, l.maximum)
}

/// The most descriptors a process can be given: the hard limit, or the
/// kernel's `fs.nr_open` when the hard limit says unlimited.
pub fn hard_limit() -> u64 {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    limits().1.map_or(nr_open, |h| h.min(nr_open))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; the soft limit
/// before and after. A refusal leaves it as it was.
pub fn raise_limit() -> (u64, u64) {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let (soft, hard) = limits();
    let before = soft.unwrap_or(u64::MAX);
    let target = hard_limit();
    if before >= target {
        return (before, before);
    }
    let raised = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: hard,
        },
    );
    match raised {
        Ok(()) => (before, target),
        Err(_) => (before, before),
    }
}

/// The soft limit in force.
pub fn current_limit() -> u64 {
    limits().0.unwrap_or_else(hard_limit)
}

/// What the data plane holds of the process's descriptors, against the
/// plan in force.
#[derive(Debug)]
pub(crate) struct Budget {
    /// Descriptors held: TCP connections' sockets, UDP sessions' sockets,
    /// pipes out of the pools.
    held: AtomicU64,
    /// Of which UDP sessions.
    udp: AtomicU64,
    /// The plan's `data`.
    data: AtomicU64,
    /// The plan's `udp_sessions`.
    udp_max: AtomicU64,
    /// The plan's `admin_connections`.
    admin: AtomicU64,
    /// Refusals and evictions for want of descriptors.
    pub(crate) refused_tcp: AtomicU64,
    pub(crate) refused_udp: AtomicU64,
    pub(crate) evicted_udp: AtomicU64,
    /// Logging of them, once a second.
    pub(crate) log: crate::throttle::Throttle,
}

/// The process's budget.
pub(crate) static BUDGET: Budget = Budget::new();

/// Descriptors taken from a budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    budget: &'static Budget,
    n: u32,
    udp: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(u64::from(self.n), Relaxed);
        if self.udp {
            self.budget.udp.fetch_sub(1, Relaxed);
        }
    }
}

impl Budget {
    /// A budget with no plan yet: no bound.
    const fn new() -> Budget {
        Budget {
            held: AtomicU64::new(0),
            udp: AtomicU64::new(0),
            data: AtomicU64::new(u64::MAX),
            udp_max: AtomicU64::new(u64::MAX),
            admin: AtomicU64::new(crate::config::AdminLimits::DEFAULT.max_connections as u64),
            refused_tcp: AtomicU64::new(0),
            refused_udp: AtomicU64::new(0),
            evicted_udp: AtomicU64::new(0),
            log: crate::throttle::Throttle::per_second(),
        }
    }

    /// Puts `plan` in force.
    pub(crate) fn set(&self, plan: &Plan) {
        self.data.store(plan.data, Relaxed);
        self.udp_max.store(plan.udp_sessions, Relaxed);
        self.admin.store(u64::from(plan.admin_connections), Relaxed);
    }

    /// The two descriptors of a TCP connection; `None` beyond the share.
    pub(crate) fn tcp(&'static self) -> Option<Held> {
        let before = self.held.fetch_add(2, Relaxed);
        let held = Held {
            budget: self,
            n: 2,
            udp: false,
        };
        (before + 2 <= self.data.load(Relaxed)).then_some(held)
    }

    /// The descriptor of a UDP session; `None` beyond its share.
    pub(crate) fn udp(&'static self) -> Option<Held> {
        let before = self.udp.fetch_add(1, Relaxed);
        let total = self.held.fetch_add(1, Relaxed);
        let held = Held {
            budget: self,
            n: 1,
            udp: true,
        };
        (before < self.udp_max.load(Relaxed) && total < self.data.load(Relaxed)).then_some(held)
    }

    /// A pipe pair made (`true`) or closed (`false`) by splice's pools.
    pub(crate) fn pipe(&self, made: bool) {
        if made {
            self.held.fetch_add(2, Relaxed);
        } else {
            self.held.fetch_sub(2, Relaxed);
        }
    }

    /// The admin connections the plan allows.
    pub(crate) fn admin_connections(&self) -> usize {
        usize::try_from(self.admin.load(Relaxed)).unwrap_or(usize::MAX)
    }

    /// Descriptors held by the data plane, and of them by UDP sessions.
    pub(crate) fn held(&self) -> (u64, u64) {
        (self.held.load(Relaxed), self.udp.load(Relaxed))
    }

    /// The data plane's share and UDP's.
    pub(crate) fn shares(&self) -> (u64, u64) {
        (self.data.load(Relaxed), self.udp_max.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn config(services: &str) -> Config {
        Config::parse(&format!("services:\n{services}"), "rvs.yaml").unwrap()
    }

    #[test]
    fn the_reserve_follows_the_configuration_and_udp_takes_half_the_rest() {
        let c = config(
            "  - {name: web, listen: [127.0.0.1:80, 127.0.0.1:81], real_servers: [{address: 127.0.0.1:1, health_check: {type: tcp}}, {address: 127.0.0.1:2, health_check: {type: misc, command: [/bin/true]}}]}\n  - {name: dns, proto: udp, listen: 127.0.0.1:53}\n",
        );
        let p = Plan::new(20_000, &c, 2);
        // Sockets: 2 TCP addresses × 2 workers × 2 (duplicates) + 1 UDP × 2.
        let sockets = 2 * 2 * 2 + 2;
        let checks = 1 + 4;
        let admin = 3 + 512 + u64::from(PROBE_LANE);
        assert_eq!(p.reserve, BASE + 2 * PER_WORKER + sockets + checks + admin);
        assert_eq!(p.data, 20_000 - p.reserve);
        assert_eq!(p.udp_sessions, p.data / 2);
        assert_eq!(p.admin_connections, 512);
        assert!(
            !p.warnings(&c)
                .iter()
                .any(|w| w.contains("udp.max_sessions")),
            "the default is lowered without a word"
        );
        let set = config(
            "  - {name: dns, proto: udp, listen: 127.0.0.1:53, udp: {max_sessions: 50000}}
",
        );
        let w = Plan::new(20_000, &set, 2).warnings(&set);
        assert!(w.iter().any(|w| w.contains("add up to 50000")), "{w:?}");
    }

    #[test]
    fn a_small_limit_lowers_the_admin_cap_and_is_said() {
        let c =
            config("  - {name: dns, proto: udp, listen: 127.0.0.1:53, udp: {max_sessions: 100}}\n");
        let p = Plan::new(1024, &c, 2);
        assert_eq!(p.admin_connections, 64);
        assert!(p.data > 700 && p.data < 1024, "{p:?}");
        assert_eq!(p.udp_sessions, p.data / 2);
        let w = p.warnings(&c);
        assert!(w.iter().any(|w| w.contains("lowered to 64")), "{w:?}");
        assert!(!w.iter().any(|w| w.contains("udp.max_sessions")), "{w:?}");
        // Far too small: the data plane keeps a quarter, and it is said.
        let tiny = Plan::new(100, &c, 2);
        assert_eq!(tiny.data, 25);
        assert!(tiny.warnings(&c).iter().any(|w| w.contains("below what")));
    }

    #[test]
    fn max_connections_beyond_the_share_are_said() {
        let c = config("  - {name: web, listen: 127.0.0.1:80, max_connections: 100000}\n");
        let p = Plan::new(20_000, &c, 1);
        assert!(
            p.warnings(&c)
                .iter()
                .any(|w| w.contains("max_connections of the TCP"))
        );
    }

    #[test]
    fn the_budget_refuses_beyond_its_shares_and_gives_back() {
        let b: &'static Budget = Box::leak(Box::new(Budget::new()));
        let c = config("  - {name: dns, proto: udp, listen: 127.0.0.1:53}\n");
        let mut plan = Plan::new(1024, &c, 1);
        plan.data = 5;
        plan.udp_sessions = 2;
        b.set(&plan);
        let u1 = b.udp().unwrap();
        let _u2 = b.udp().unwrap();
        assert!(b.udp().is_none(), "udp's share is 2");
        assert_eq!(b.held(), (2, 2), "a refusal gives back at once");
        let t = b.tcp().unwrap();
        assert!(b.tcp().is_none(), "4 + 2 is over 5");
        drop(u1);
        b.pipe(true);
        assert_eq!(b.held(), (5, 1));
        assert!(b.udp().is_none(), "the data plane's share is full");
        b.pipe(false);
        drop(t);
        assert_eq!(b.held(), (1, 1));
        assert!(b.tcp().is_some());
        assert_eq!(b.admin_connections(), 64);
    }
}
