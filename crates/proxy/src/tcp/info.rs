//! The kernel's count of a TCP socket's segments (`TCP_INFO`): what
//! `ipvsadm --stats` shows as InPkts and OutPkts of a connection.
//!
//! One of the crate's three `unsafe` modules (with `datagrams` and
//! `inherited`): one `getsockopt(2)` into a zeroed `tcp_info` of the size
//! the kernel is told.

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// Segments received from and sent to the peer of `sock`, if the kernel
/// says (Linux 4.2 and later).
#[cfg(target_os = "linux")]
pub(crate) fn segments(sock: &impl AsRawFd) -> Option<(u64, u64)> {
    let info = tcp_info(sock)?;
    // Kernels older than the segment counters leave them at zero.
    Some((u64::from(info.tcpi_segs_in), u64::from(info.tcpi_segs_out)))
}

/// Segments received from the peer of `sock`, when nothing waits to be
/// sent or acknowledged on it: the count an idle connection's keepalive
/// probes raise. `None` while data waits (a peer that does not read: the
/// segments then are window probes and their answers, not a sign of
/// life), or when the kernel does not say.
#[cfg(target_os = "linux")]
pub(crate) fn idle_segments_in(sock: &impl AsRawFd) -> Option<u64> {
    let info = tcp_info(sock)?;
    (info.tcpi_unacked == 0 && info.tcpi_notsent_bytes == 0).then_some(u64::from(info.tcpi_segs_in))
}

/// Elsewhere: unknown.
#[cfg(not(target_os = "linux"))]
pub(crate) fn idle_segments_in(_sock: &impl AsRawFd) -> Option<u64> {
    None
}

#[cfg(target_os = "linux")]
fn tcp_info(sock: &impl AsRawFd) -> Option<libc::tcp_info> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).ok()?;
    // SAFETY: `info` is a writable, zero-initialized `tcp_info` of `len`
    // bytes; the kernel writes at most `len` bytes and updates `len`. The fd
    // is open for as long as `sock` is borrowed.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: zero-initialized, then filled (in part) by the kernel: every
    // bit pattern is a valid `tcp_info` (integers only).
    Some(unsafe { info.assume_init() })
}

/// Elsewhere: unknown.
#[cfg(not(target_os = "linux"))]
pub(crate) fn segments(_sock: &impl AsRawFd) -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[cfg(target_os = "linux")]
    #[test]
    fn segments_grow_with_traffic() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let (in0, out0) = super::segments(&s).unwrap();
        for _ in 0..5 {
            c.write_all(b"ping").unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).unwrap();
            s.write_all(b"pong").unwrap();
            c.read_exact(&mut b).unwrap();
        }
        let (in1, out1) = super::segments(&s).unwrap();
        assert!(in1 >= in0 + 5, "in {in0} -> {in1}");
        assert!(out1 >= out0 + 5, "out {out0} -> {out1}");
    }
}
