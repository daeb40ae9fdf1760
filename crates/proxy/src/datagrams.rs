//! Datagrams received in batches: one recvmmsg(2) takes up to [`BATCH`]
//! waiting datagrams with their sources, where a recvfrom(2) takes one;
//! and sent in batches to one address: one sendmmsg(2) for up to
//! [`BATCH`] ([`send_to_all`]). In a batch to send, a run of datagrams of
//! one size (up to [`GSO_MAX_SEGMENT`]) goes as one message with Linux's
//! UDP segmentation offload (UDP_SEGMENT): the stack handles the run once
//! and cuts it into its datagrams at the end of the path — on loopback, at
//! the receiving socket; on a network, in the NIC or just before it. A
//! kernel that refuses it (before 4.18) turns it off for the process.
//!
//! A listener on a wildcard address (`0.0.0.0`, `[::]`) asks for each
//! datagram's destination (IP_PKTINFO, IPV6_RECVPKTINFO): the address the
//! client sent to, which the replies must come from — a resolver's
//! connected socket (dig's) drops an answer from any other address. Sent
//! back as the same control message, on the batched and segmented paths
//! alike.
//!
//! One of the crate's `unsafe` modules (with `tcp::info`, `inherited`,
//! `handover` and `memory`): the message
//! headers point into buffers that [`Batch`] owns, are built on the stack
//! for each call and do not outlive it.

#![allow(unsafe_code)]

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

/// Datagrams taken per system call at most.
pub(crate) const BATCH: usize = 16;

/// Room for the largest UDP payload: a datagram is never cut.
pub(crate) const MAX_DATAGRAM: usize = 65_535;

/// Where a datagram was sent to, as a wildcard listener learns it: the
/// address its replies come from, and the interface it came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Destination {
    /// The address the client sent to.
    pub(crate) ip: IpAddr,
    /// The interface it arrived on (IPv6 replies go out there: a
    /// link-local address needs it).
    pub(crate) ifindex: u32,
}

/// Room for the control messages of one datagram: a destination (IPv6's
/// is the larger: CMSG_SPACE(20) = 40 bytes) and a segment size
/// (CMSG_SPACE(2) = 24), aligned as `cmsghdr`.
#[cfg(target_os = "linux")]
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; 64]);

/// Asks the kernel for each datagram's destination on `socket` (a
/// listener on a wildcard address): IP_PKTINFO, or IPV6_RECVPKTINFO.
#[cfg(target_os = "linux")]
pub(crate) fn receive_destinations(
    socket: &impl std::os::fd::AsRawFd,
    ipv6: bool,
) -> io::Result<()> {
    let on: libc::c_int = 1;
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    // SAFETY: `on` is a live `c_int` of the size given; the fd is open
    // while `socket` is borrowed.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn receive_destinations(_: &impl std::os::fd::AsRawFd, _: bool) -> io::Result<()> {
    Ok(())
}

/// Buffers for one batch, allocated once per listening socket (1 MiB).
pub(crate) struct Batch {
    bufs: Box<[u8]>,
    got: [(usize, Option<SocketAddr>, Option<Destination>); BATCH],
    count: usize,
    #[cfg(target_os = "linux")]
    addrs: Box<[socket2::SockAddrStorage]>,
    #[cfg(target_os = "linux")]
    controls: Box<[Control]>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("count", &self.count).finish()
    }
}

impl Batch {
    pub(crate) fn new() -> Batch {
        Batch {
            bufs: vec![0u8; BATCH * MAX_DATAGRAM].into_boxed_slice(),
            got: [(0, None, None); BATCH],
            count: 0,
            #[cfg(target_os = "linux")]
            addrs: (0..BATCH)
                .map(|_| socket2::SockAddrStorage::zeroed())
                .collect(),
            #[cfg(target_os = "linux")]
            controls: vec![Control([0; 64]); BATCH].into_boxed_slice(),
        }
    }

    /// The datagrams of the last receive, with their sources, and their
    /// destinations when the socket asked for them.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], SocketAddr, Option<Destination>)> {
        self.got[..self.count]
            .iter()
            .enumerate()
            .filter_map(|(i, &(len, from, to))| {
                Some((
                    &self.bufs[i * MAX_DATAGRAM..i * MAX_DATAGRAM + len],
                    from?,
                    to,
                ))
            })
    }

    /// Receives what waits on `socket`, at least one datagram, without
    /// blocking: `WouldBlock` when there is none. A batch that is not full
    /// emptied the queue and clears the readiness ([`crate::drain`]).
    pub(crate) fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        crate::drain::receive(
            |f| socket.try_io(tokio::io::Interest::READABLE, f),
            BATCH,
            || self.recv_now(socket),
        )
    }

    #[cfg(target_os = "linux")]
    fn recv_now(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;

        let name_len = socket2::SockAddrStorage::zeroed().size_of();
        // SAFETY: all-zero bytes are valid `iovec`s and `mmsghdr`s (null
        // pointers and integers), filled in below before the call.
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, ((chunk, addr), control)) in self
            .bufs
            .chunks_exact_mut(MAX_DATAGRAM)
            .zip(self.addrs.iter_mut())
            .zip(self.controls.iter_mut())
            .enumerate()
        {
            iovs[i] = libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM,
            };
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_name = std::ptr::from_mut(addr).cast();
            hdr.msg_namelen = name_len;
            hdr.msg_iov = std::ptr::from_mut(&mut iovs[i]);
            hdr.msg_iovlen = 1;
            hdr.msg_control = control.0.as_mut_ptr().cast();
            hdr.msg_controllen = control.0.len() as _;
        }
        // SAFETY: each header points at a buffer of `MAX_DATAGRAM` bytes and an
        // address of `name_len` bytes owned by `self`, and at an `iovec`
        // on this stack frame; all outlive the call, which writes within
        // those lengths. The fd is open while `socket` is borrowed.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        for (i, msg) in msgs.iter().enumerate().take(n) {
            let storage = std::mem::replace(&mut self.addrs[i], socket2::SockAddrStorage::zeroed());
            // SAFETY: the kernel wrote an address of its family and of
            // `msg_namelen` bytes into this storage.
            let from = unsafe { socket2::SockAddr::new(storage, msg.msg_hdr.msg_namelen) };
            self.got[i] = (
                msg.msg_len as usize,
                from.as_socket(),
                destination(&msg.msg_hdr),
            );
        }
        self.count = n;
        Ok(n)
    }

    #[cfg(not(target_os = "linux"))]
    fn recv_now(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let (len, from) = socket.try_recv_from(&mut self.bufs[..MAX_DATAGRAM])?;
        self.got[0] = (len, Some(from), None);
        self.count = 1;
        Ok(1)
    }
}

/// The destination a received message's control messages carry, if any.
#[cfg(target_os = "linux")]
fn destination(hdr: &libc::msghdr) -> Option<Destination> {
    // SAFETY: `hdr` is a header the kernel filled in: its control buffer
    // (owned by the batch) holds `msg_controllen` bytes of well-formed
    // control messages, which the CMSG macros walk within; the data read
    // is of the type the message's level and type say, read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let p: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    return Some(Destination {
                        ip: IpAddr::from(u32::from_be(p.ipi_addr.s_addr).to_be_bytes()),
                        ifindex: u32::try_from(p.ipi_ifindex).unwrap_or(0),
                    });
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let p: libc::in6_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    return Some(Destination {
                        ip: IpAddr::from(p.ipi6_addr.s6_addr),
                        ifindex: p.ipi6_ifindex,
                    });
                }
                _ => c = libc::CMSG_NXTHDR(hdr, c),
            }
        }
    }
    None
}

/// Sends `datagrams` to `to` from `socket` without blocking, as many per
/// system call as it takes (sendmmsg(2) on Linux), calling `sent` with the
/// index of each one sent. A datagram that meets an error is skipped, as
/// a send of it alone would lose it (a pending ICMP error surfaces on one
/// send only). Stops when the socket's buffer is full, clearing its
/// readiness, and returns the index of the first datagram not sent.
/// With `from`, each datagram leaves from that address (a wildcard
/// listener's reply, from where the client sent to).
pub(crate) fn send_to_all(
    socket: &UdpSocket,
    to: SocketAddr,
    from: Option<Destination>,
    datagrams: &[&[u8]],
    sent: impl FnMut(usize),
) -> Option<usize> {
    let to = socket2::SockAddr::from(to);
    send_batch(socket, Some(&to), from, datagrams, sent)
}

/// [`send_to_all`] on a connected socket, to its peer (no address per
/// message: the socket's route is used as it was found at connect).
pub(crate) fn send_all(
    socket: &UdpSocket,
    datagrams: &[&[u8]],
    sent: impl FnMut(usize),
) -> Option<usize> {
    send_batch(socket, None, None, datagrams, sent)
}

fn send_batch(
    socket: &UdpSocket,
    to: Option<&socket2::SockAddr>,
    from: Option<Destination>,
    datagrams: &[&[u8]],
    mut sent: impl FnMut(usize),
) -> Option<usize> {
    let mut i = 0;
    while i < datagrams.len() {
        let rest = &datagrams[i..];
        match socket.try_io(tokio::io::Interest::WRITABLE, || {
            send_now(socket, to, from, rest)
        }) {
            Ok(n) => {
                (i..i + n).for_each(&mut sent);
                i += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(i),
            Err(_) => i += 1,
        }
    }
    None
}

/// Whether segmentation offload (UDP_SEGMENT) is used: until a send with
/// it fails as unsupported.
#[cfg(target_os = "linux")]
static GSO: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// The largest datagram sent with segmentation offload: one that fits the
/// smallest IPv6 path (1280 bytes less the headers), so that no path's MTU
/// refuses the segment size.
#[cfg(target_os = "linux")]
const GSO_MAX_SEGMENT: usize = 1232;

/// One sendmmsg(2); returns how many datagrams were sent. With GSO, a run
/// of datagrams of one size goes as one message with UDP_SEGMENT: one pass
/// through the stack, cut into the datagrams at the end of the path.
#[cfg(target_os = "linux")]
fn send_now(
    socket: &UdpSocket,
    to: Option<&socket2::SockAddr>,
    from: Option<Destination>,
    datagrams: &[&[u8]],
) -> io::Result<usize> {
    use std::sync::atomic::Ordering::Relaxed;

    let gso = GSO.load(Relaxed);
    match send_messages(socket, to, from, datagrams, gso) {
        Err((e, true)) if is_unsupported(&e) => {
            GSO.store(false, Relaxed);
            tracing::debug!(error = %e, "UDP segmentation offload refused: sending datagrams one by one");
            send_messages(socket, to, from, datagrams, false).map_err(|(e, _)| e)
        }
        r => r.map_err(|(e, _)| e),
    }
}

#[cfg(target_os = "linux")]
fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EIO | libc::EOPNOTSUPP | libc::ENOPROTOOPT)
    )
}

/// The error, if any, with whether the message that met it was segmented.
#[cfg(target_os = "linux")]
fn send_messages(
    socket: &UdpSocket,
    to: Option<&socket2::SockAddr>,
    from: Option<Destination>,
    datagrams: &[&[u8]],
    gso: bool,
) -> Result<usize, (io::Error, bool)> {
    use std::os::fd::AsRawFd;

    let count = datagrams.len().min(BATCH);
    // SAFETY: all-zero bytes are valid `iovec`s and `mmsghdr`s (null
    // pointers and integers), filled in below before the call.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut cmsgs = [Control([0; 64]); BATCH];
    // Datagrams in each message.
    let mut segments = [0usize; BATCH];
    let (mut m, mut i) = (0, 0);
    while i < count {
        let len = datagrams[i].len();
        let mut k = 1;
        if gso && (1..=GSO_MAX_SEGMENT).contains(&len) {
            while i + k < count && datagrams[i + k].len() == len {
                k += 1;
            }
        }
        for (iov, d) in iovs[i..i + k].iter_mut().zip(&datagrams[i..i + k]) {
            *iov = libc::iovec {
                iov_base: d.as_ptr().cast_mut().cast(),
                iov_len: d.len(),
            };
        }
        let hdr = &mut msgs[m].msg_hdr;
        if let Some(to) = to {
            hdr.msg_name = to.as_ptr().cast_mut().cast();
            hdr.msg_namelen = to.len();
        }
        hdr.msg_iov = std::ptr::from_mut(&mut iovs[i]);
        hdr.msg_iovlen = k;
        let buf = cmsgs[m].0.as_mut_ptr();
        let mut used = 0usize;
        if let Some(d) = from {
            // SAFETY: `buf` is 64 bytes aligned for a `cmsghdr`; the
            // destination's message takes CMSG_SPACE(12) or CMSG_SPACE(20)
            // (32 or 40 bytes) from its start, written within it.
            used = unsafe { write_destination(buf, d) };
        }
        if k > 1 {
            // SAFETY: the segment size's message takes CMSG_SPACE(2) (24
            // bytes) after at most 40 used: within the 64, aligned (every
            // CMSG_SPACE is a multiple of 8).
            unsafe {
                let c = buf.add(used).cast::<libc::cmsghdr>();
                (*c).cmsg_len = libc::CMSG_LEN(2) as _;
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), len as u16);
                used += libc::CMSG_SPACE(2) as usize;
            }
        }
        if used > 0 {
            hdr.msg_control = buf.cast();
            hdr.msg_controllen = used as _;
        }
        segments[m] = k;
        m += 1;
        i += k;
    }
    // SAFETY: each header points at datagrams borrowed for the call, the
    // address `to` (if any) borrowed for the call, and `iovec`s and control
    // messages on this stack frame; the kernel only reads them (sendmmsg
    // writes the headers' `msg_len`, within `msgs`). The fd is open while
    // `socket` is borrowed.
    let n = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            m as libc::c_uint,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    match usize::try_from(n) {
        Ok(sent) => Ok(segments[..sent].iter().sum()),
        Err(_) => Err((io::Error::last_os_error(), segments[0] > 1)),
    }
}

/// Writes the control message that sends from `d` at `buf`; returns the
/// bytes it takes (its CMSG_SPACE).
///
/// # Safety
///
/// `buf` must be aligned for a `cmsghdr` with room for 40 bytes.
#[cfg(target_os = "linux")]
unsafe fn write_destination(buf: *mut u8, d: Destination) -> usize {
    // SAFETY: as the caller promises; the data written is of the size
    // CMSG_LEN declares.
    unsafe {
        let c = buf.cast::<libc::cmsghdr>();
        match d.ip {
            IpAddr::V4(v4) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(v4).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let size = std::mem::size_of::<libc::in_pktinfo>() as u32;
                (*c).cmsg_len = libc::CMSG_LEN(size) as _;
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
                libc::CMSG_SPACE(size) as usize
            }
            IpAddr::V6(v6) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: v6.octets(),
                    },
                    ipi6_ifindex: d.ifindex,
                };
                let size = std::mem::size_of::<libc::in6_pktinfo>() as u32;
                (*c).cmsg_len = libc::CMSG_LEN(size) as _;
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), info);
                libc::CMSG_SPACE(size) as usize
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn send_now(
    socket: &UdpSocket,
    to: Option<&socket2::SockAddr>,
    _from: Option<Destination>,
    datagrams: &[&[u8]],
) -> io::Result<usize> {
    let Some(to) = to else {
        return socket.try_send(datagrams[0]).map(|_| 1);
    };
    let to = to
        .as_socket()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    socket.try_send_to(datagrams[0], to).map(|_| 1)
}

/// Sends `header` and then `data` as one datagram (to the socket's peer,
/// or to `to`), gathered by sendmsg(2) rather than copied together: how a
/// PROXY v2 header goes before a client's datagram.
pub(crate) async fn send_prefixed(
    socket: &UdpSocket,
    header: &[u8],
    data: &[u8],
    to: Option<SocketAddr>,
) -> io::Result<usize> {
    use rustix::net::{SendAncillaryBuffer, SendFlags, sendmsg, sendmsg_addr};
    use std::io::IoSlice;
    use tokio::io::Interest;
    loop {
        socket.writable().await?;
        let iov = [IoSlice::new(header), IoSlice::new(data)];
        let sent = socket.try_io(Interest::WRITABLE, || {
            let mut control = SendAncillaryBuffer::default();
            match to {
                Some(a) => sendmsg_addr(socket, &a, &iov, &mut control, SendFlags::empty()),
                None => sendmsg(socket, &iov, &mut control, SendFlags::empty()),
            }
            .map_err(io::Error::from)
        });
        match sent {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The first datagram is the largest UDP payload; then small ones, so
    /// that all wait in the receive buffer together.
    fn size(i: usize) -> usize {
        if i == 0 { 65_507 } else { 1 + i * 97 }
    }

    async fn batch_of(local: &str, peer: &str, count: usize) {
        let rx = UdpSocket::bind(local).await.unwrap();
        let tx = UdpSocket::bind(peer).await.unwrap();
        let to = rx.local_addr().unwrap();
        for i in 0..count {
            let payload = vec![u8::try_from(i % 251).unwrap(); size(i)];
            tx.send_to(&payload, to).await.unwrap();
        }
        let mut b = Batch::new();
        let mut seen = Vec::new();
        let mut largest = 0;
        while seen.len() < count {
            rx.readable().await.unwrap();
            match b.recv(&rx) {
                Ok(n) => {
                    assert!(n <= BATCH);
                    largest = largest.max(n);
                    for (data, from, _) in b.iter() {
                        assert_eq!(from, tx.local_addr().unwrap());
                        seen.push(data.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        // Everything was queued before the first receive: one call took
        // a full batch.
        #[cfg(target_os = "linux")]
        assert_eq!(largest, BATCH.min(count));
        #[cfg(not(target_os = "linux"))]
        let _ = largest;
        for (i, d) in seen.iter().enumerate() {
            assert_eq!(d.len(), size(i), "datagram {i}");
            assert!(d.iter().all(|&x| usize::from(x) == i % 251), "datagram {i}");
        }
    }

    /// More datagrams than a batch, sent in batches to one address, arrive
    /// whole and in order; each is reported sent once.
    #[tokio::test]
    async fn batches_are_sent_whole_and_in_order() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let count = BATCH * 2 + 5;
        let payloads: Vec<Vec<u8>> = (0..count)
            .map(|i| vec![u8::try_from(i).unwrap(); size(i) % 9000 + 1])
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let mut reported = Vec::new();
        // Sends are tried only once tokio knows the socket writable.
        tx.writable().await.unwrap();
        let full = send_to_all(&tx, rx.local_addr().unwrap(), None, &refs, |i| {
            reported.push(i);
        });
        assert_eq!(full, None);
        assert_eq!(reported, (0..count).collect::<Vec<_>>());
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for (i, p) in payloads.iter().enumerate() {
            let (n, from) = rx.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            assert_eq!(&buf[..n], &p[..], "datagram {i}");
        }
    }

    /// Runs of datagrams of one size (sent segmented, UDP_SEGMENT, up to
    /// GSO_MAX_SEGMENT) and of sizes beyond it, over IPv4 and IPv6: each
    /// arrives on its own, whole, in order.
    #[tokio::test]
    async fn runs_of_one_size_arrive_as_separate_datagrams() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let rx = UdpSocket::bind(local).await.unwrap();
            let tx = UdpSocket::bind(local).await.unwrap();
            let mut payloads: Vec<Vec<u8>> = Vec::new();
            for (len, n) in [(100, 7), (1232, 3), (1, 2), (1233, 2), (9000, 2)] {
                for _ in 0..n {
                    let tag = u8::try_from(payloads.len()).unwrap();
                    payloads.push(vec![tag; len]);
                }
            }
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            tx.writable().await.unwrap();
            let mut reported = 0;
            let full = send_to_all(&tx, rx.local_addr().unwrap(), None, &refs, |_| {
                reported += 1
            });
            assert_eq!((full, reported), (None, payloads.len()));
            let mut buf = vec![0u8; MAX_DATAGRAM];
            for (i, p) in payloads.iter().enumerate() {
                let (n, _) = rx.recv_from(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], &p[..], "datagram {i} over {local}");
            }
        }
        // The segmented sends were taken, not refused and sent one by one.
        #[cfg(target_os = "linux")]
        assert!(GSO.load(std::sync::atomic::Ordering::Relaxed));
    }

    /// A wildcard listener learns where each datagram was sent (127.0.0.2,
    /// the client being 127.0.0.1), and its replies — one alone, then a
    /// run of one size sent segmented — leave from there.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_wildcard_listener_answers_from_the_address_sent_to() {
        let rx = {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            s.bind(&SocketAddr::from(([0, 0, 0, 0], 0)).into()).unwrap();
            s.set_nonblocking(true).unwrap();
            receive_destinations(&s, false).unwrap();
            UdpSocket::from_std(s.into()).unwrap()
        };
        let port = rx.local_addr().unwrap().port();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let vip = SocketAddr::from(([127, 0, 0, 2], port));
        client.send_to(b"query", vip).await.unwrap();
        let mut b = Batch::new();
        let (from, to) = loop {
            rx.readable().await.unwrap();
            if b.recv(&rx).is_ok() {
                let (data, from, to) = b.iter().next().unwrap();
                assert_eq!(data, b"query");
                break (from, to);
            }
        };
        assert_eq!(from, client.local_addr().unwrap());
        let to = to.unwrap();
        assert_eq!(to.ip, vip.ip());
        rx.writable().await.unwrap();
        let replies: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 300]).collect();
        let mut refs: Vec<&[u8]> = vec![b"one"];
        refs.extend(replies.iter().map(Vec::as_slice));
        assert_eq!(send_to_all(&rx, from, Some(to), &refs, |_| {}), None);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for want in &refs {
            let (n, src) = client.recv_from(&mut buf).await.unwrap();
            assert_eq!((&buf[..n], src), (*want, vip));
        }

        // IPv6: the destination is read too.
        let rx6 = {
            let s =
                socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None).unwrap();
            s.set_only_v6(true).unwrap();
            s.bind(&"[::]:0".parse::<SocketAddr>().unwrap().into())
                .unwrap();
            s.set_nonblocking(true).unwrap();
            receive_destinations(&s, true).unwrap();
            UdpSocket::from_std(s.into()).unwrap()
        };
        let vip6 = SocketAddr::new("::1".parse().unwrap(), rx6.local_addr().unwrap().port());
        let c6 = UdpSocket::bind("[::1]:0").await.unwrap();
        c6.connect(vip6).await.unwrap();
        c6.send(b"q6").await.unwrap();
        let to6 = loop {
            rx6.readable().await.unwrap();
            if b.recv(&rx6).is_ok() {
                break b.iter().next().unwrap().2;
            }
        };
        assert_eq!(to6.map(|d| d.ip), Some(vip6.ip()));
        rx6.writable().await.unwrap();
        assert_eq!(
            send_to_all(&rx6, c6.local_addr().unwrap(), to6, &[b"a6"], |_| {}),
            None
        );
        assert_eq!(c6.recv(&mut buf).await.unwrap(), 2);
    }

    /// More datagrams than a batch, of growing sizes, in order, with their
    /// source, over IPv4 and IPv6.
    #[tokio::test]
    async fn batches_keep_datagrams_whole_and_in_order() {
        batch_of("127.0.0.1:0", "127.0.0.1:0", BATCH * 2 + 3).await;
        batch_of("[::1]:0", "[::1]:0", BATCH + 1).await;
    }
}
