//! A real server ("destination" in IPVS) and the counters the schedulers read.
//!
//! Everything a pick reads is an atomic, so that picks can run while other
//! threads count connections in and out, as IPVS reads `atomic_t` counters
//! under RCU. The update rules are the kernel's:
//!
//! - `Dest::apply` is `__ip_vs_update_dest()` (ip_vs_ctl.c): `last_weight`
//!   keeps the latest non-zero weight, and the overload flag is cleared only
//!   when the new upper threshold is 0 or higher than the old one.
//! - `Dest::bind` is `ip_vs_bind_dest()` (ip_vs_conn.c): a new connection
//!   counts as inactive, a persistence template in `persistconns`; then the
//!   overload flag is set once active + inactive reaches the upper threshold.
//! - `Dest::unbind` is `ip_vs_unbind_dest()`: the flag is cleared below the
//!   lower threshold, or below 3/4 of the upper one when the lower is 0.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

/// `IP_VS_DEST_F_AVAILABLE`: the server is in its service's list.
const F_AVAILABLE: u8 = 1;
/// `IP_VS_DEST_F_OVERLOAD`: the upper connection threshold was reached.
const F_OVERLOAD: u8 = 2;

/// Position value of a server that is not in any list (deleted, in the trash).
pub(crate) const NO_POS: u32 = u32::MAX;

/// What an operator sets on a real server: `ipvsadm -a/-e ... -w -x -y`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DestParams {
    /// Relative capacity; 0 is quiescent (no new connections).
    pub weight: i32,
    /// Upper connection threshold (`-x`); 0 is no limit.
    pub u_threshold: u32,
    /// Lower connection threshold (`-y`); 0 means "3/4 of the upper one".
    pub l_threshold: u32,
}

impl Default for DestParams {
    fn default() -> Self {
        DestParams {
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
        }
    }
}

/// A change to some of a real server's parameters (`ipvsadm -e`); a field
/// left `None` keeps its current value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DestUpdate {
    /// New weight.
    pub weight: Option<i32>,
    /// New upper threshold.
    pub u_threshold: Option<u32>,
    /// New lower threshold.
    pub l_threshold: Option<u32>,
}

/// Traffic through a server, as `ipvsadm --stats` counts it: "in" is from
/// clients towards the server, "out" the replies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Packets (TCP segments, UDP datagrams) from clients.
    pub in_pkts: u64,
    /// Packets to clients.
    pub out_pkts: u64,
    /// Bytes from clients to the server.
    pub in_bytes: u64,
    /// Bytes from the server to clients.
    pub out_bytes: u64,
}

/// How a binding to a server is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counted {
    /// `activeconns`: an established TCP connection.
    Active,
    /// `inactconns`: connecting, half-closed, or any UDP session.
    Inactive,
    /// `persistconns`: a persistence template.
    Template,
}

/// A real server of one service.
pub struct Dest {
    addr: SocketAddr,
    weight: AtomicI32,
    last_weight: AtomicI32,
    u_threshold: AtomicU32,
    l_threshold: AtomicU32,
    flags: AtomicU8,
    active: AtomicU32,
    inactive: AtomicU32,
    persist: AtomicU32,
    /// Position in the service's list while linked, [`NO_POS`] otherwise.
    /// Written only under the service's state lock.
    pos: AtomicU32,
    /// Connections ever scheduled to this server (`ipvsadm --stats` Conns).
    conns_total: AtomicU64,
    in_pkts: AtomicU64,
    out_pkts: AtomicU64,
    in_bytes: AtomicU64,
    out_bytes: AtomicU64,
    /// Connects that failed (a data plane's count; IPVS has none).
    connect_failures: AtomicU64,
}

impl fmt::Debug for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dest")
            .field("addr", &self.addr)
            .field("weight", &self.weight())
            .field("active", &self.active_conns())
            .field("inactive", &self.inactive_conns())
            .field("persist", &self.persist_conns())
            .field("overloaded", &self.is_overloaded())
            .field("available", &self.is_available())
            .finish()
    }
}

impl Dest {
    /// A fresh server, as `ip_vs_new_dest()` allocates it: zero counters; the
    /// parameters are applied by [`Dest::apply`] when it is linked.
    pub(crate) fn new(addr: SocketAddr) -> Dest {
        Dest {
            addr,
            weight: AtomicI32::new(0),
            last_weight: AtomicI32::new(0),
            u_threshold: AtomicU32::new(0),
            l_threshold: AtomicU32::new(0),
            flags: AtomicU8::new(0),
            active: AtomicU32::new(0),
            inactive: AtomicU32::new(0),
            persist: AtomicU32::new(0),
            pos: AtomicU32::new(NO_POS),
            conns_total: AtomicU64::new(0),
            in_pkts: AtomicU64::new(0),
            out_pkts: AtomicU64::new(0),
            in_bytes: AtomicU64::new(0),
            out_bytes: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
        }
    }

    /// Counts a connect to this server that failed.
    pub fn count_connect_failure(&self) {
        self.connect_failures.fetch_add(1, Relaxed);
    }

    /// Connects to this server that failed.
    pub fn connect_failures(&self) -> u64 {
        self.connect_failures.load(Relaxed)
    }

    /// Counts traffic that went through this server.
    pub fn add_traffic(&self, t: Traffic) {
        self.in_pkts.fetch_add(t.in_pkts, Relaxed);
        self.out_pkts.fetch_add(t.out_pkts, Relaxed);
        self.in_bytes.fetch_add(t.in_bytes, Relaxed);
        self.out_bytes.fetch_add(t.out_bytes, Relaxed);
    }

    /// Traffic counted so far.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            in_pkts: self.in_pkts.load(Relaxed),
            out_pkts: self.out_pkts.load(Relaxed),
            in_bytes: self.in_bytes.load(Relaxed),
            out_bytes: self.out_bytes.load(Relaxed),
        }
    }

    /// The server's address and port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Current weight.
    pub fn weight(&self) -> i32 {
        self.weight.load(Relaxed)
    }

    /// The latest weight that was not 0 (what mh builds its table from), or
    /// the weight the server was added with.
    pub fn last_weight(&self) -> i32 {
        self.last_weight.load(Relaxed)
    }

    /// The current parameters.
    pub fn params(&self) -> DestParams {
        DestParams {
            weight: self.weight(),
            u_threshold: self.u_threshold.load(Relaxed),
            l_threshold: self.l_threshold.load(Relaxed),
        }
    }

    /// `ActiveConn`.
    pub fn active_conns(&self) -> u32 {
        self.active.load(Relaxed)
    }

    /// `InActConn`.
    pub fn inactive_conns(&self) -> u32 {
        self.inactive.load(Relaxed)
    }

    /// `PersistConn`: persistence templates pointing at this server.
    pub fn persist_conns(&self) -> u32 {
        self.persist.load(Relaxed)
    }

    /// Connections ever scheduled to this server.
    pub fn conns_total(&self) -> u64 {
        self.conns_total.load(Relaxed)
    }

    /// Whether the upper threshold was reached and not yet cleared.
    pub fn is_overloaded(&self) -> bool {
        self.flags.load(Relaxed) & F_OVERLOAD != 0
    }

    /// Whether the server is in its service's list (not deleted).
    pub fn is_available(&self) -> bool {
        self.flags.load(Relaxed) & F_AVAILABLE != 0
    }

    /// `ip_vs_dest_conn_overhead()`: active * 256 + inactive.
    pub(crate) fn overhead(&self) -> i64 {
        (i64::from(self.active_conns()) << 8) + i64::from(self.inactive_conns())
    }

    fn total_conns(&self) -> u64 {
        u64::from(self.active_conns()) + u64::from(self.inactive_conns())
    }

    pub(crate) fn pos(&self) -> u32 {
        self.pos.load(Relaxed)
    }

    pub(crate) fn set_pos(&self, pos: u32) {
        self.pos.store(pos, Relaxed)
    }

    /// `__ip_vs_update_dest()`: set the parameters of a server being added
    /// (`add`) or edited, and mark it available.
    pub(crate) fn apply(&self, p: DestParams, add: bool) {
        if add || p.weight != 0 {
            self.last_weight.store(p.weight, Relaxed);
        }
        self.weight.store(p.weight, Relaxed);
        self.flags.fetch_or(F_AVAILABLE, Relaxed);
        let old_upper = self.u_threshold.load(Relaxed);
        if p.u_threshold == 0 || p.u_threshold > old_upper {
            self.flags.fetch_and(!F_OVERLOAD, Relaxed);
        }
        self.u_threshold.store(p.u_threshold, Relaxed);
        self.l_threshold.store(p.l_threshold, Relaxed);
    }

    /// `__ip_vs_unlink_dest()`: the server leaves its list.
    pub(crate) fn unlink(&self) {
        self.flags.fetch_and(!F_AVAILABLE, Relaxed);
        self.set_pos(NO_POS);
    }

    /// `ip_vs_bind_dest()`.
    pub(crate) fn bind(&self, how: Counted) {
        match how {
            Counted::Active => self.active.fetch_add(1, Relaxed),
            Counted::Inactive => self.inactive.fetch_add(1, Relaxed),
            Counted::Template => self.persist.fetch_add(1, Relaxed),
        };
        if how != Counted::Template {
            self.conns_total.fetch_add(1, Relaxed);
        }
        let upper = self.u_threshold.load(Relaxed);
        if upper != 0 && self.total_conns() >= u64::from(upper) {
            self.flags.fetch_or(F_OVERLOAD, Relaxed);
        }
    }

    /// `ip_vs_unbind_dest()`.
    pub(crate) fn unbind(&self, how: Counted) {
        let counter = match how {
            Counted::Active => &self.active,
            Counted::Inactive => &self.inactive,
            Counted::Template => &self.persist,
        };
        // Never wraps: every unbind pairs with an earlier bind.
        let _ = counter.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        let lower = self.l_threshold.load(Relaxed);
        let upper = self.u_threshold.load(Relaxed);
        let total = self.total_conns();
        let clear = if lower != 0 {
            total < u64::from(lower)
        } else if upper != 0 {
            total * 4 < u64::from(upper) * 3
        } else {
            true
        };
        if clear {
            self.flags.fetch_and(!F_OVERLOAD, Relaxed);
        }
    }

    /// The TCP state machine moving a connection between the active and the
    /// inactive count (`set_tcp_state()` in ip_vs_proto_tcp.c). The overload
    /// flag is not touched: the total does not change.
    pub(crate) fn move_count(&self, from: Counted, to: Counted) {
        let counter = |c: Counted| match c {
            Counted::Active => &self.active,
            Counted::Inactive => &self.inactive,
            Counted::Template => &self.persist,
        };
        let _ = counter(from).fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        counter(to).fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(u: u32, l: u32) -> Dest {
        let d = Dest::new("10.0.0.1:80".parse().unwrap());
        d.apply(
            DestParams {
                weight: 1,
                u_threshold: u,
                l_threshold: l,
            },
            true,
        );
        d
    }

    #[test]
    fn overload_set_at_upper_and_cleared_below_three_quarters() {
        // ip_vs_bind_dest / ip_vs_unbind_dest with l_threshold 0.
        let d = dest(4, 0);
        for _ in 0..3 {
            d.bind(Counted::Inactive);
        }
        assert!(!d.is_overloaded());
        d.bind(Counted::Inactive);
        assert!(d.is_overloaded());
        d.unbind(Counted::Inactive); // 3 * 4 < 4 * 3 is false
        assert!(d.is_overloaded());
        d.unbind(Counted::Inactive); // 2 * 4 < 12
        assert!(!d.is_overloaded());
    }

    #[test]
    fn lower_threshold_clears_strictly_below() {
        let d = dest(3, 2);
        for _ in 0..3 {
            d.bind(Counted::Inactive);
        }
        assert!(d.is_overloaded());
        d.unbind(Counted::Inactive); // 2 < 2 is false
        assert!(d.is_overloaded());
        d.unbind(Counted::Inactive);
        assert!(!d.is_overloaded());
    }

    #[test]
    fn templates_do_not_count_towards_thresholds_but_unbind_tests() {
        let d = dest(2, 0);
        d.bind(Counted::Template);
        d.bind(Counted::Template);
        assert!(!d.is_overloaded());
        assert_eq!(d.persist_conns(), 2);
        d.bind(Counted::Inactive);
        d.bind(Counted::Inactive);
        assert!(d.is_overloaded());
        d.move_count(Counted::Inactive, Counted::Active);
        assert!(d.is_overloaded());
        assert_eq!((d.active_conns(), d.inactive_conns()), (1, 1));
        d.unbind(Counted::Template); // total 2: 8 < 6 false
        assert!(d.is_overloaded());
    }

    #[test]
    fn update_clears_overload_only_when_upper_is_raised_or_removed() {
        let d = dest(2, 0);
        d.bind(Counted::Inactive);
        d.bind(Counted::Inactive);
        assert!(d.is_overloaded());
        let p = |u| DestParams {
            weight: 1,
            u_threshold: u,
            l_threshold: 0,
        };
        d.apply(p(2), false);
        assert!(d.is_overloaded());
        d.apply(p(1), false);
        assert!(
            d.is_overloaded(),
            "lowering sets nothing and clears nothing"
        );
        d.apply(p(3), false);
        assert!(!d.is_overloaded());
        d.bind(Counted::Inactive);
        assert!(d.is_overloaded());
        d.apply(p(0), false);
        assert!(!d.is_overloaded());
    }

    #[test]
    fn last_weight_keeps_latest_non_zero() {
        let d = dest(0, 0);
        let w = |weight| DestParams {
            weight,
            ..DestParams::default()
        };
        d.apply(w(5), false);
        d.apply(w(0), false);
        assert_eq!((d.weight(), d.last_weight()), (0, 5));
        d.apply(w(0), true);
        assert_eq!(d.last_weight(), 0, "an add always sets it");
    }
}
