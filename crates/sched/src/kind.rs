//! Scheduler names and scheduler flags, as `ipvsadm -s NAME -b FLAGS` spells them.

use std::fmt;
use std::str::FromStr;

use crate::error::SchedError;

/// One of IPVS's scheduling algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// Round robin (ip_vs_rr.c).
    Rr,
    /// Weighted round robin (ip_vs_wrr.c).
    Wrr,
    /// Least connection (ip_vs_lc.c).
    Lc,
    /// Weighted least connection (ip_vs_wlc.c), ipvsadm's default.
    Wlc,
    /// Shortest expected delay (ip_vs_sed.c).
    Sed,
    /// Never queue (ip_vs_nq.c).
    Nq,
    /// Source hashing (ip_vs_sh.c).
    Sh,
    /// Destination hashing (ip_vs_dh.c).
    Dh,
    /// Locality-based least connection (ip_vs_lblc.c).
    Lblc,
    /// Locality-based least connection with replication (ip_vs_lblcr.c).
    Lblcr,
    /// Maglev hashing (ip_vs_mh.c).
    Mh,
    /// Weighted failover (ip_vs_fo.c).
    Fo,
    /// Weighted overflow (ip_vs_ovf.c).
    Ovf,
    /// Power of two choices (ip_vs_twos.c).
    Twos,
}

impl SchedulerKind {
    /// Every scheduler, in the order ipvsadm's man page lists them.
    pub const ALL: [SchedulerKind; 14] = [
        SchedulerKind::Rr,
        SchedulerKind::Wrr,
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
        SchedulerKind::Lblc,
        SchedulerKind::Lblcr,
        SchedulerKind::Dh,
        SchedulerKind::Sh,
        SchedulerKind::Sed,
        SchedulerKind::Nq,
        SchedulerKind::Fo,
        SchedulerKind::Ovf,
        SchedulerKind::Mh,
        SchedulerKind::Twos,
    ];

    /// The name ipvsadm uses.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Rr => "rr",
            SchedulerKind::Wrr => "wrr",
            SchedulerKind::Lc => "lc",
            SchedulerKind::Wlc => "wlc",
            SchedulerKind::Sed => "sed",
            SchedulerKind::Nq => "nq",
            SchedulerKind::Sh => "sh",
            SchedulerKind::Dh => "dh",
            SchedulerKind::Lblc => "lblc",
            SchedulerKind::Lblcr => "lblcr",
            SchedulerKind::Mh => "mh",
            SchedulerKind::Fo => "fo",
            SchedulerKind::Ovf => "ovf",
            SchedulerKind::Twos => "twos",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = SchedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| SchedError::UnknownScheduler(s.to_owned()))
    }
}

/// A scheduler flag (`ipvsadm -b`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchedFlag {
    /// sh: when the hashed server is unavailable, probe on around the table.
    ShFallback,
    /// sh: hash the client's source port too.
    ShPort,
    /// mh: when the hashed server is unavailable, probe on around the table.
    MhFallback,
    /// mh: hash the client's source port too.
    MhPort,
}

impl SchedFlag {
    /// Every flag.
    pub const ALL: [SchedFlag; 4] = [
        SchedFlag::ShFallback,
        SchedFlag::ShPort,
        SchedFlag::MhFallback,
        SchedFlag::MhPort,
    ];

    /// The name ipvsadm uses.
    pub fn name(self) -> &'static str {
        match self {
            SchedFlag::ShFallback => "sh-fallback",
            SchedFlag::ShPort => "sh-port",
            SchedFlag::MhFallback => "mh-fallback",
            SchedFlag::MhPort => "mh-port",
        }
    }

    /// The scheduler the flag belongs to.
    pub fn scheduler(self) -> SchedulerKind {
        match self {
            SchedFlag::ShFallback | SchedFlag::ShPort => SchedulerKind::Sh,
            SchedFlag::MhFallback | SchedFlag::MhPort => SchedulerKind::Mh,
        }
    }

    fn is_fallback(self) -> bool {
        matches!(self, SchedFlag::ShFallback | SchedFlag::MhFallback)
    }
}

impl fmt::Display for SchedFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedFlag {
    type Err = SchedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SchedFlag::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| SchedError::UnknownFlag(s.to_owned()))
    }
}

/// The flags of one service, checked against its scheduler. As in the kernel
/// (`IP_VS_SVC_F_SCHED1`, `IP_VS_SVC_F_SCHED2`), sh and mh share the meaning:
/// `fallback` and `port`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedFlags {
    /// sh-fallback / mh-fallback.
    pub fallback: bool,
    /// sh-port / mh-port.
    pub port: bool,
}

impl SchedFlags {
    /// Checks that every flag belongs to `kind`.
    pub fn for_scheduler(
        kind: SchedulerKind,
        flags: impl IntoIterator<Item = SchedFlag>,
    ) -> Result<SchedFlags, SchedError> {
        let mut out = SchedFlags::default();
        for flag in flags {
            if flag.scheduler() != kind {
                return Err(SchedError::FlagNotForScheduler { flag, kind });
            }
            if flag.is_fallback() {
                out.fallback = true;
            } else {
                out.port = true;
            }
        }
        Ok(out)
    }

    /// The flag names for `kind`, as ipvsadm prints them.
    pub fn names(self, kind: SchedulerKind) -> Vec<SchedFlag> {
        let (fallback, port) = match kind {
            SchedulerKind::Sh => (SchedFlag::ShFallback, SchedFlag::ShPort),
            SchedulerKind::Mh => (SchedFlag::MhFallback, SchedFlag::MhPort),
            _ => return Vec::new(),
        };
        let mut v = Vec::new();
        if self.fallback {
            v.push(fallback);
        }
        if self.port {
            v.push(port);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in SchedulerKind::ALL {
            assert_eq!(k.name().parse::<SchedulerKind>().unwrap(), k);
        }
        for f in SchedFlag::ALL {
            assert_eq!(f.name().parse::<SchedFlag>().unwrap(), f);
        }
        assert!("wrrr".parse::<SchedulerKind>().is_err());
        assert!("sh_port".parse::<SchedFlag>().is_err());
    }

    #[test]
    fn flags_must_belong_to_the_scheduler() {
        let f = SchedFlags::for_scheduler(SchedulerKind::Sh, [SchedFlag::ShPort]).unwrap();
        assert!(f.port && !f.fallback);
        assert_eq!(f.names(SchedulerKind::Sh), vec![SchedFlag::ShPort]);
        let e = SchedFlags::for_scheduler(SchedulerKind::Sh, [SchedFlag::MhPort]).unwrap_err();
        assert_eq!(e.to_string(), "flag mh-port belongs to mh, not to sh");
        assert!(SchedFlags::for_scheduler(SchedulerKind::Rr, [SchedFlag::ShFallback]).is_err());
    }
}
