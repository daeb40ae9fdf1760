//! `global.sync_daemon` and the sync sysctls (`global.sync_threshold`,
//! `sync_period`, `sync_refresh_period`, `sync_retries`): IPVS's
//! connection synchronisation, `ipvsadm --start-daemon`.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::validate::{At, at};
use super::values::Dur;
use crate::sync::wire;

/// A sync daemon's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    /// Sends this director's templates and connections.
    Master,
    /// Receives and applies another director's.
    Backup,
}

impl SyncState {
    /// `master` or `backup`, as ipvsadm writes it.
    pub fn name(self) -> &'static str {
        match self {
            SyncState::Master => "master",
            SyncState::Backup => "backup",
        }
    }
}

impl std::str::FromStr for SyncState {
    type Err = ();
    fn from_str(s: &str) -> Result<SyncState, ()> {
        match s {
            "master" => Ok(SyncState::Master),
            "backup" => Ok(SyncState::Backup),
            _ => Err(()),
        }
    }
}

/// One sync daemon, as `ipvsadm --start-daemon` starts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncDaemon {
    /// Master or backup.
    pub state: SyncState,
    /// The interface its multicast goes out of, or is joined on.
    pub mcast_interface: String,
    /// The sync ID of its messages; a backup of 0 takes every ID.
    pub syncid: u8,
    /// The multicast group.
    pub mcast_group: IpAddr,
    /// The UDP port.
    pub mcast_port: u16,
    /// The multicast TTL (hop limit).
    pub mcast_ttl: u8,
    /// The largest message; `None`: the kernel's, from the interface's MTU.
    pub sync_maxlen: Option<u16>,
}

/// The sync daemons and IPVS's sync sysctls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSettings {
    /// At most one master and one backup.
    pub daemons: Vec<SyncDaemon>,
    /// `sync_threshold`'s first value: a connection is sent at its
    /// `threshold`-th packet...
    pub threshold: u32,
    /// ...and again every `period` packets (`sync_threshold`'s second
    /// value); 0: once.
    pub period: u32,
    /// `sync_refresh_period`: a connection is sent again at most this
    /// often; zero: on the threshold and period alone.
    pub refresh_period: Duration,
    /// `sync_retries` (0–3): sends repeated within a refresh period.
    pub retries: u32,
}

impl Default for SyncSettings {
    fn default() -> SyncSettings {
        SyncSettings {
            daemons: Vec::new(),
            threshold: DEFAULT_THRESHOLD,
            period: DEFAULT_PERIOD,
            refresh_period: Duration::ZERO,
            retries: 0,
        }
    }
}

/// The kernel's defaults: `sync_threshold = 3 50`.
pub(crate) const DEFAULT_THRESHOLD: u32 = 3;
pub(crate) const DEFAULT_PERIOD: u32 = 50;

/// `global.sync_daemon[]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSyncDaemon {
    pub(crate) state: String,
    pub(crate) mcast_interface: String,
    #[serde(default)]
    pub(crate) syncid: u32,
    pub(crate) mcast_group: Option<IpAddr>,
    pub(crate) mcast_port: Option<u32>,
    pub(crate) mcast_ttl: Option<u32>,
    pub(crate) sync_maxlen: Option<u32>,
}

/// The sync keys of `global:` as written.
#[derive(Debug, Default)]
pub(crate) struct RawSync {
    pub(crate) daemons: Vec<RawSyncDaemon>,
    pub(crate) threshold: Option<u32>,
    pub(crate) period: Option<u32>,
    pub(crate) refresh_period: Option<Dur>,
    pub(crate) retries: Option<u32>,
}

/// Checks one daemon at `base` (`global.sync_daemon[i]`, or the admin
/// API's body).
pub(crate) fn daemon(d: RawSyncDaemon, base: &str, problems: &mut Vec<At>) -> Option<SyncDaemon> {
    let before = problems.len();
    let state = d.state.parse::<SyncState>().unwrap_or_else(|()| {
        problems.push(at(
            format!("{base}.state"),
            format!("{:?} is not a daemon state: master or backup", d.state),
        ));
        SyncState::Master
    });
    // IFNAMSIZ, less its NUL.
    if d.mcast_interface.is_empty()
        || d.mcast_interface.len() > 15
        || d.mcast_interface.contains(['/', ' ', '\0'])
    {
        problems.push(at(
            format!("{base}.mcast_interface"),
            format!(
                "{:?} is not an interface name (1 to 15 characters, as eth0)",
                d.mcast_interface
            ),
        ));
    }
    let syncid = u8::try_from(d.syncid).unwrap_or_else(|_| {
        problems.push(at(
            format!("{base}.syncid"),
            format!("{} is out of range: 0 to 255", d.syncid),
        ));
        0
    });
    let group = d.mcast_group.unwrap_or(wire::GROUP_V4.into());
    if !group.is_multicast() {
        problems.push(at(
            format!("{base}.mcast_group"),
            format!("{group} is not a multicast group (224.0.0.0/4 or ff00::/8)"),
        ));
    }
    let port = match d.mcast_port {
        None => wire::PORT,
        Some(p) => u16::try_from(p).ok().filter(|&p| p > 0).unwrap_or_else(|| {
            problems.push(at(
                format!("{base}.mcast_port"),
                format!("{p} is out of range: 1 to 65535"),
            ));
            wire::PORT
        }),
    };
    let ttl = match d.mcast_ttl {
        None => 1,
        Some(t) => u8::try_from(t).ok().filter(|&t| t > 0).unwrap_or_else(|| {
            problems.push(at(
                format!("{base}.mcast_ttl"),
                format!("{t} is out of range: 1 to 255"),
            ));
            1
        }),
    };
    let maxlen = match d.sync_maxlen {
        None => None,
        Some(m) => match u16::try_from(m) {
            Ok(m) if m > 0 => Some(m),
            _ => {
                problems.push(at(
                    format!("{base}.sync_maxlen"),
                    format!("{m} is out of range: 1 to 65535"),
                ));
                None
            }
        },
    };
    (problems.len() == before).then_some(SyncDaemon {
        state,
        mcast_interface: d.mcast_interface,
        syncid,
        mcast_group: group,
        mcast_port: port,
        mcast_ttl: ttl,
        sync_maxlen: maxlen,
    })
}

/// Checks the sync keys of `global:`.
pub(super) fn settings(raw: RawSync, problems: &mut Vec<At>) -> SyncSettings {
    let mut daemons: Vec<SyncDaemon> = Vec::new();
    for (i, d) in raw.daemons.into_iter().enumerate() {
        let base = format!("global.sync_daemon[{i}]");
        if let Some(d) = daemon(d, &base, problems) {
            if let Some(j) = daemons.iter().position(|o| o.state == d.state) {
                problems.push(at(
                    format!("{base}.state"),
                    format!("a {} daemon is already global.sync_daemon[{j}]: there is one of each, as in IPVS", d.state.name()),
                ));
                continue;
            }
            daemons.push(d);
        }
    }
    let threshold = raw.threshold.unwrap_or(DEFAULT_THRESHOLD);
    let period = raw.period.unwrap_or(DEFAULT_PERIOD);
    // The kernel's check of `sync_threshold`.
    if period != 0 && threshold >= period {
        problems.push(at(
            "global.sync_threshold",
            format!("{threshold} must be below sync_period {period} (or sync_period 0), as the kernel requires"),
        ));
    }
    let retries = raw.retries.unwrap_or(0);
    if retries > 3 {
        problems.push(at(
            "global.sync_retries",
            format!("{retries} is out of range: 0 to 3"),
        ));
    }
    SyncSettings {
        daemons,
        threshold,
        period,
        refresh_period: raw.refresh_period.map_or(Duration::ZERO, |d| d.0),
        retries: retries.min(3),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::super::validate::tests::errors;

    #[test]
    fn daemons_and_sysctls_are_checked() {
        let ok = "global:\n  sync_daemon:\n    - { state: master, mcast_interface: eth0, syncid: 7 }\n    - { state: backup, mcast_interface: eth0, mcast_group: \"ff02::8:8848\", mcast_port: 8849 }\n  sync_threshold: 2\n  sync_period: 10\nservices: []\n";
        let c = Config::parse(ok, "rvs.yaml").unwrap_or_else(|e| panic!("{e}"));
        let s = &c.global.sync;
        assert_eq!(s.daemons.len(), 2);
        assert_eq!(s.daemons[0].mcast_group.to_string(), "224.0.0.81");
        assert_eq!((s.daemons[0].mcast_port, s.daemons[0].mcast_ttl), (8848, 1));
        assert_eq!((s.threshold, s.period), (2, 10));
        let e = errors(
            "global:\n  sync_daemon:\n    - { state: master, mcast_interface: eth0 }\n    - { state: master, mcast_interface: eth1 }\nservices: []\n",
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains(
                "global.sync_daemon[1].state: a master daemon is already global.sync_daemon[0]"
            ),
            "{e:?}"
        );
        let e = errors(
            "global:\n  sync_daemon:\n    - { state: primary, mcast_interface: eth0, syncid: 300, mcast_group: 10.0.0.1 }\nservices: []\n",
        );
        assert_eq!(e.len(), 3, "{e:?}");
        let e = errors("global:\n  sync_threshold: 50\nservices: []\n");
        assert!(e[0].contains("must be below sync_period 50"), "{e:?}");
    }
}
