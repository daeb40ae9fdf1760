//! Which listen addresses are on this host.
//!
//! rvs binds its listeners with IP_FREEBIND (IPV6_FREEBIND), which needs
//! no privilege: an address that is not on the host yet — a VRRP BACKUP's
//! VIP, an address MetalLB or kube-vip adds after the pod starts — is
//! listened on anyway, and served the moment it arrives, as keepalived's
//! IPVS never needed the address. What is not on the host is said: in the
//! log when it changes, in the API, on the status page and in
//! `rvs_service_listen_address_local`. A probe is a bind without
//! FREEBIND: EADDRNOTAVAIL means the address is not here.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};

use socket2::{Domain, Socket, Type};

/// Whether `ip` is an address of this host (or a wildcard, always "here").
pub fn is_local(ip: IpAddr) -> bool {
    if ip.is_unspecified() {
        return true;
    }
    let addr = SocketAddr::new(ip, 0);
    let probe = Socket::new(Domain::for_address(addr), Type::DGRAM, None)
        .and_then(|s| s.bind(&addr.into()));
    match probe {
        Err(e) => e.raw_os_error() != Some(libc::EADDRNOTAVAIL),
        Ok(()) => true,
    }
}

/// The listen addresses last found missing from the host.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    absent: Mutex<BTreeSet<IpAddr>>,
}

impl Presence {
    /// Probes `ips` (each once), keeps which are missing, and logs what
    /// changed since the last time.
    pub(crate) fn refresh(&self, ips: impl IntoIterator<Item = IpAddr>) {
        let ips: BTreeSet<IpAddr> = ips.into_iter().filter(|ip| !ip.is_unspecified()).collect();
        let now: BTreeSet<IpAddr> = ips.iter().copied().filter(|ip| !is_local(*ip)).collect();
        let mut absent = self.absent.lock().unwrap_or_else(PoisonError::into_inner);
        for ip in now.difference(&absent) {
            tracing::warn!(
                address = %ip,
                "listen address not on this host: rvs listens on it anyway (IP_FREEBIND) and serves it once it arrives (VRRP, MetalLB, kube-vip, ip addr add)"
            );
        }
        for ip in absent.difference(&now) {
            if ips.contains(ip) {
                tracing::info!(address = %ip, "listen address on this host now: served");
            }
        }
        *absent = now;
    }

    /// Whether `ip` was missing at the last probe.
    pub(crate) fn is_absent(&self, ip: IpAddr) -> bool {
        self.absent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_here_and_a_documentation_address_is_not() {
        assert!(is_local(
            "127.0.0.1".parse().unwrap_or(IpAddr::from([127, 0, 0, 1]))
        ));
        assert!(is_local(IpAddr::from([0, 0, 0, 0])));
        assert!(!is_local(IpAddr::from([192, 0, 2, 77])));
        let p = Presence::default();
        p.refresh([IpAddr::from([192, 0, 2, 77]), IpAddr::from([127, 0, 0, 1])]);
        assert!(p.is_absent(IpAddr::from([192, 0, 2, 77])));
        assert!(!p.is_absent(IpAddr::from([127, 0, 0, 1])));
    }
}
