//! What `rvs run` takes from and tells a service manager, by systemd's
//! protocols; each does nothing when its variables are unset.
//!
//! - Socket activation (`sd_listen_fds(3)`): `LISTEN_PID`, `LISTEN_FDS`,
//!   `LISTEN_FDNAMES` describe listening sockets passed as descriptors 3,
//!   4, …; [`passed_sockets`] reads them and [`rvs_proxy::inherited`]
//!   adopts each for the service (or admin listener) bound to its address.
//! - Readiness (`sd_notify(3)`): datagrams to `$NOTIFY_SOCKET` —
//!   `READY=1` once every service listens, `RELOADING=1` … `READY=1`
//!   around a reload asked by SIGHUP, `STOPPING=1` when draining starts,
//!   with a `STATUS=` line for `systemctl status`.
//! - The watchdog (`WATCHDOG_USEC`): `WATCHDOG=1` at half the interval,
//!   from the control runtime, so a stuck control plane is restarted.

use std::env;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use rvs_proxy::inherited::{InheritError, Inherited};
use tracing::{debug, warn};

/// The sockets passed to this process by socket activation. Read before
/// anything opens a descriptor (see [`rvs_proxy::inherited`]).
pub(crate) fn passed_sockets() -> Result<Inherited, InheritError> {
    let var = |name| env::var(name).ok();
    // A binary upgrade cannot know this process's pid before the fork: it
    // names itself instead, and it must be this process's parent.
    let upgrading = var(rvs_proxy::handover::UPGRADE_PID)
        .and_then(|p| p.parse::<i32>().ok())
        .is_some_and(|p| rustix::process::getppid().map(|pp| pp.as_raw_nonzero().get()) == Some(p));
    let listen_pid =
        var("LISTEN_PID").or_else(|| upgrading.then(|| std::process::id().to_string()));
    Inherited::from_listen_fds(
        listen_pid.as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )
}

/// Sends state changes to the service manager, if there is one.
#[derive(Debug)]
pub(crate) struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
    /// namespace); one that does nothing when it is unset.
    pub(crate) fn from_env() -> Notifier {
        let Some(path) = env::var_os("NOTIFY_SOCKET") else {
            return Notifier { target: None };
        };
        let target = notify_address(path.as_encoded_bytes())
            .and_then(|addr| Ok((UnixDatagram::unbound()?, addr)));
        match target {
            Ok(t) => Notifier { target: Some(t) },
            Err(e) => {
                warn!(socket = %path.to_string_lossy(), error = %e, "NOTIFY_SOCKET unusable: the service manager will not hear from rvs");
                Notifier { target: None }
            }
        }
    }

    /// Sends `state` (`KEY=VALUE` lines). A failure is logged, never fatal.
    fn send(&self, state: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
                warn!(error = %e, "cannot notify the service manager");
            } else {
                debug!(state, "notified the service manager");
            }
        }
    }

    /// Every service listens: rvs serves.
    pub(crate) fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nMAINPID={}\nSTATUS={}",
            std::process::id(),
            one_line(status)
        ));
    }

    /// A binary upgrade succeeded: the new process is the service's main
    /// process from now on (this one drains and exits).
    pub(crate) fn main_pid(&self, pid: u32) {
        self.send(&format!(
            "MAINPID={pid}\nSTATUS=handed over to pid {pid}; draining"
        ));
    }

    /// A reload begins; [`Notifier::reloaded`] ends it.
    pub(crate) fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration",
            monotonic_usec()
        ));
    }

    /// A reload ended, applied or refused (the old configuration serves).
    pub(crate) fn reloaded(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// Draining has begun.
    pub(crate) fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// Tells the watchdog the control runtime is alive.
    pub(crate) fn alive(&self) {
        self.send("WATCHDOG=1");
    }

    /// How often to call [`Notifier::alive`]: half the watchdog interval,
    /// when the service manager set one for this process.
    pub(crate) fn watchdog_every(&self) -> Option<Duration> {
        self.target.as_ref()?;
        let usec: u64 = env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
        if let Ok(pid) = env::var("WATCHDOG_PID")
            && pid.trim().parse::<u32>().ok()? != std::process::id()
        {
            return None;
        }
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

/// The notify socket's address: a path, or `@name` in the abstract namespace.
fn notify_address(path: &[u8]) -> std::io::Result<SocketAddr> {
    match path.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        None => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(path))
        }
    }
}

/// A `STATUS=` value is one line.
fn one_line(s: &str) -> String {
    s.trim().replace('\n', "; ")
}

/// CLOCK_MONOTONIC in microseconds, as `RELOADING=1` carries it.
fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0) / 1000
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_status_is_one_line() {
        assert_eq!(one_line("a: x\nb: y\n"), "a: x; b: y");
    }

    #[test]
    fn notify_addresses_are_paths_or_abstract_names() {
        let p = notify_address(b"/run/systemd/notify").unwrap();
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        use std::os::linux::net::SocketAddrExt;
        let a = notify_address(b"@rvs-test").unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"rvs-test"[..]));
    }

    #[test]
    fn messages_reach_the_socket() {
        let dir = std::env::temp_dir().join(format!("rvs-notify-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            )),
        };
        n.ready("serving 2 services");
        let mut buf = [0u8; 512];
        let got = listener.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..got]).unwrap();
        assert_eq!(
            text,
            format!(
                "READY=1\nMAINPID={}\nSTATUS=serving 2 services",
                std::process::id()
            )
        );
        n.reloading();
        let got = listener.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..got]).unwrap();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
