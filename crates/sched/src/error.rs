//! The errors of the control operations, as ipvsadm reports them.

use std::net::SocketAddr;

use crate::kind::{SchedFlag, SchedulerKind};

/// Why a control operation was refused. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedError {
    /// `ipvsadm -a` of a server that is already in the service (-EEXIST).
    #[error("real server {0} already exists")]
    DestExists(SocketAddr),
    /// `ipvsadm -e/-d` of a server that is not in the service (-ENOENT).
    #[error("no such real server {0}")]
    NoSuchDest(SocketAddr),
    /// A negative weight (-ERANGE).
    #[error("weight {0} is out of range: it must be 0 or more")]
    NegativeWeight(i32),
    /// `l_threshold > u_threshold` (-ERANGE), checked even when the upper
    /// threshold is 0.
    #[error("lower threshold {lower} is above upper threshold {upper}")]
    ThresholdOrder {
        /// The lower threshold asked for.
        lower: u32,
        /// The upper threshold asked for.
        upper: u32,
    },
    /// A scheduler name that IPVS does not have.
    #[error("unknown scheduler {0:?}")]
    UnknownScheduler(String),
    /// A scheduler flag name that IPVS does not have.
    #[error("unknown scheduler flag {0:?}")]
    UnknownFlag(String),
    /// A scheduler flag given to another scheduler.
    #[error("flag {flag} belongs to {}, not to {kind}", flag.scheduler())]
    FlagNotForScheduler {
        /// The flag.
        flag: SchedFlag,
        /// The service's scheduler.
        kind: SchedulerKind,
    },
    /// An IPv6 persistence prefix outside 1..=128.
    #[error("IPv6 persistence prefix length {0} is out of range 1..=128")]
    PrefixLength(u8),
}
