//! The sync daemons' multicast sockets, set up as `make_send_sock()` and
//! `make_receive_sock()` set up the kernel's: the master's leaves by the
//! daemon's interface, without looping back, with its TTL, connected to
//! the group; the backup's is bound to the group's port on that interface
//! and joined to the group there. Neither needs a privilege.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::config::sync::{SyncDaemon, SyncState};

/// IP and UDP headers' length for the group's family (`hlen`).
fn header_len(group: IpAddr) -> u16 {
    if group.is_ipv6() { 40 + 8 } else { 20 + 8 }
}

/// The interface's MTU, as the kernel reads `dev->mtu`.
fn mtu(interface: &str) -> u16 {
    std::fs::read_to_string(format!("/sys/class/net/{interface}/mtu"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1500)
}

/// `start_sync_thread()`'s `sync_maxlen`: the one given, clamped (from
/// 1 for a master, 1024 for a backup, to 65535 less the headers); else a
/// master's messages fit 1500 bytes, a backup takes the interface's MTU
/// (at least 1500), less the headers.
pub(super) fn maxlen(d: &SyncDaemon) -> u16 {
    let hlen = header_len(d.mcast_group);
    let (floor, mtu) = match d.state {
        SyncState::Master => (1, 1500),
        SyncState::Backup => (1024, mtu(&d.mcast_interface).max(1500)),
    };
    match d.sync_maxlen {
        Some(m) => m.clamp(floor, u16::MAX - hlen),
        None => mtu - hlen,
    }
}

fn index(socket: &Socket, interface: &str) -> io::Result<u32> {
    rustix::net::netdevice::name_to_index(socket, interface)
        .map_err(|e| io::Error::new(e.kind(), format!("interface {interface}: {e}")))
}

fn new_socket(group: IpAddr) -> io::Result<Socket> {
    let domain = if group.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The master's socket.
pub(super) fn sender(d: &SyncDaemon) -> io::Result<UdpSocket> {
    let s = new_socket(d.mcast_group)?;
    let ifindex = index(&s, &d.mcast_interface)?;
    // Out of the daemon's interface, as the kernel's `set_mcast_if()`.
    s.bind_device(Some(d.mcast_interface.as_bytes()))?;
    match d.mcast_group {
        IpAddr::V4(_) => {
            s.set_multicast_loop_v4(false)?;
            s.set_multicast_ttl_v4(u32::from(d.mcast_ttl))?;
        }
        IpAddr::V6(_) => {
            s.set_multicast_if_v6(ifindex)?;
            s.set_multicast_loop_v6(false)?;
            s.set_multicast_hops_v6(u32::from(d.mcast_ttl))?;
        }
    }
    s.connect(&SocketAddr::new(d.mcast_group, d.mcast_port).into())?;
    UdpSocket::from_std(s.into())
}

/// The backup's socket.
pub(super) fn receiver(d: &SyncDaemon) -> io::Result<UdpSocket> {
    let s = new_socket(d.mcast_group)?;
    let ifindex = index(&s, &d.mcast_interface)?;
    // `sk_reuse`, and the interface: `sk_bound_dev_if`.
    s.set_reuse_address(true)?;
    s.bind_device(Some(d.mcast_interface.as_bytes()))?;
    s.bind(&SocketAddr::new(d.mcast_group, d.mcast_port).into())?;
    match d.mcast_group {
        IpAddr::V4(g) => {
            s.set_multicast_all_v4(false)?;
            s.join_multicast_v4_n(&g, &InterfaceIndexOrAddress::Index(ifindex))?;
        }
        IpAddr::V6(g) => {
            s.set_multicast_all_v6(false)?;
            s.join_multicast_v6(&g, ifindex)?;
        }
    }
    UdpSocket::from_std(s.into())
}
