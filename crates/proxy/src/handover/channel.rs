//! The state channel of a binary upgrade: a `SOCK_SEQPACKET` socket pair
//! between the old process and the new, one [`Message`] per datagram, the
//! UDP sessions' upstream sockets passed with their message (SCM_RIGHTS).
//! Blocking I/O, bounded by the socket's timeouts: run it on a blocking
//! thread.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
    sockopt::Timeout,
};

use super::wire::{MAX_MESSAGE, Message, SESSIONS_PER_MESSAGE};

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

/// The two ends: the old process keeps the first, the new one gets the
/// second. Close-on-exec: the spawn places the new one's end itself.
pub fn pair() -> io::Result<(Channel, OwnedFd)> {
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    Ok((Channel { fd: a }, b))
}

impl Channel {
    /// The end a process was handed; `limit` bounds each send and receive.
    pub fn new(fd: OwnedFd, limit: Duration) -> io::Result<Channel> {
        let channel = Channel { fd };
        channel.set_limit(limit)?;
        Ok(channel)
    }

    /// Bounds each send and receive from now on by `limit`.
    pub fn set_limit(&self, limit: Duration) -> io::Result<()> {
        rustix::net::sockopt::set_socket_timeout(&self.fd, Timeout::Recv, Some(limit))?;
        rustix::net::sockopt::set_socket_timeout(&self.fd, Timeout::Send, Some(limit))?;
        Ok(())
    }

    /// Sends `msg` with `fds` (as many as it says it carries).
    pub fn send(&self, msg: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if fds.len() != msg.descriptors() || fds.len() > SESSIONS_PER_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a message of {} descriptors with {}",
                    msg.descriptors(),
                    fds.len()
                ),
            ));
        }
        let bytes = msg.encode();
        if bytes.len() > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a message of {} bytes", bytes.len()),
            ));
        }
        let mut space =
            [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(SESSIONS_PER_MESSAGE))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("no room for the descriptors"));
        }
        loop {
            match rustix::net::sendmsg(
                &self.fd,
                &[IoSlice::new(&bytes)],
                &mut control,
                SendFlags::NOSIGNAL,
            ) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives one message and the descriptors that came with it; `None`
    /// at the end (the other process closed its end, or exited).
    pub fn recv(&self, buf: &mut Vec<u8>) -> io::Result<Option<(Message, Vec<OwnedFd>)>> {
        buf.resize(MAX_MESSAGE, 0);
        let mut space =
            [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(SESSIONS_PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = loop {
            match rustix::net::recvmsg(
                &self.fd,
                &mut [IoSliceMut::new(buf)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(r) => break r,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        };
        // Owned first, so that every descriptor passed is closed on any
        // error below.
        let mut fds = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(passed) = m {
                fds.extend(passed);
            }
        }
        if got.bytes == 0 && fds.is_empty() {
            return Ok(None);
        }
        if got.flags.contains(ReturnFlags::TRUNC) || got.flags.contains(ReturnFlags::CTRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a message larger than the buffer",
            ));
        }
        let msg = Message::decode(&buf[..got.bytes])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if fds.len() != msg.descriptors() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a message of {} sessions came with {} descriptors",
                    msg.descriptors(),
                    fds.len()
                ),
            ));
        }
        Ok(Some((msg, fds)))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::wire::{SessionState, VERSION};
    use super::*;

    fn session(port: u16) -> SessionState {
        SessionState {
            service: "dns".into(),
            listen: "127.0.0.1:53".parse().unwrap(),
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            client: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            dest: None,
            idle_ms: 0,
            age_ms: 0,
            header_sent: false,
            reply_from: None,
        }
    }

    /// Messages arrive whole and in order with their sockets, which are
    /// the same sockets (a datagram sent on the passed one leaves from the
    /// original's port); the end reads as `None`.
    #[test]
    fn messages_carry_their_sockets() {
        let (old, new) = pair().unwrap();
        let new = Channel::new(new, Duration::from_secs(5)).unwrap();
        let sockets: Vec<std::net::UdpSocket> = (0..3)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = sockets
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        old.send(&Message::Hello { version: VERSION }, &[]).unwrap();
        let msg = Message::Sessions {
            sessions: ports.iter().map(|p| session(*p)).collect(),
        };
        let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(AsFd::as_fd).collect();
        old.send(&msg, &fds).unwrap();
        // A message that says it carries sockets must carry them.
        assert!(old.send(&msg, &fds[..1]).is_err());
        drop(old);
        let mut buf = Vec::new();
        let (hello, none) = new.recv(&mut buf).unwrap().unwrap();
        assert_eq!(
            (hello, none.len()),
            (Message::Hello { version: VERSION }, 0)
        );
        let (got, passed) = new.recv(&mut buf).unwrap().unwrap();
        assert_eq!(got, msg);
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for (fd, port) in passed.into_iter().zip(&ports) {
            let s = std::net::UdpSocket::from(fd);
            assert_eq!(s.local_addr().unwrap().port(), *port);
            s.send_to(b"x", rx.local_addr().unwrap()).unwrap();
            let mut b = [0u8; 4];
            let (_, from) = rx.recv_from(&mut b).unwrap();
            assert_eq!(from.port(), *port);
        }
        assert!(new.recv(&mut buf).unwrap().is_none());
    }
}
