//! Listening sockets handed to rvs by the process that started it, by the
//! socket activation protocol of systemd (`sd_listen_fds(3)`): file
//! descriptors 3, 4, … are open sockets, `LISTEN_FDS` says how many,
//! `LISTEN_PID` which process they are for, `LISTEN_FDNAMES` their names.
//!
//! A service whose address (protocol and `IP:PORT`, exactly) is one of
//! these sockets adopts it instead of binding its own; every other address
//! is bound as usual. Because the socket outlives rvs (the service manager
//! keeps its copy), a restart loses neither the listening socket nor the
//! clients queued on it.
//!
//! The pool keeps each socket for the life of the process and hands out
//! duplicates ([`Inherited::take`]): a service removed by a reload closes
//! its duplicate, and a later reload that brings the address back adopts
//! it again. A TCP socket is shared by the data-plane workers (one
//! duplicate each, all in their own event loops) rather than copied with
//! `SO_REUSEPORT`: extra copies bound by rvs would not survive a restart,
//! and the connections queued on them would be lost with them.
//!
//! The environment is read by the caller (the daemon), not here: this
//! module takes its values as arguments.

#![allow(unsafe_code)] // taking ownership of the descriptors the protocol hands over

use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Socket, Type};

use crate::config::Proto;

/// The first descriptor of the protocol (`SD_LISTEN_FDS_START`).
const FIRST_FD: RawFd = 3;

/// More than anyone passes; a bound on what a malformed variable can ask.
const MAX_FDS: usize = 4096;

/// Whether this process already took the descriptors: each may have one
/// owner only, so [`Inherited::from_listen_fds`] adopts them once.
static ADOPTED: AtomicBool = AtomicBool::new(false);

/// Why the passed sockets could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    /// `LISTEN_PID` or `LISTEN_FDS` is not a number.
    #[error("{var}={value:?}: not a number")]
    NotANumber {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// More sockets than rvs accepts.
    #[error("LISTEN_FDS={0}: more than {MAX_FDS} sockets")]
    TooMany(usize),
    /// `LISTEN_FDNAMES` does not name each socket once.
    #[error("LISTEN_FDNAMES has {names} names for LISTEN_FDS={fds} sockets")]
    Names {
        /// Names given.
        names: usize,
        /// Sockets passed.
        fds: usize,
    },
    /// A descriptor that is not an open socket of a kind rvs can serve.
    #[error("passed descriptor {fd} ({name}): {why}")]
    Descriptor {
        /// The descriptor.
        fd: RawFd,
        /// Its name from `LISTEN_FDNAMES`.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The descriptors were taken already by this process.
    #[error("the passed sockets were adopted already")]
    AlreadyAdopted,
}

/// One passed socket.
#[derive(Debug)]
struct Passed {
    proto: Proto,
    addr: SocketAddr,
    name: String,
    socket: Socket,
    /// Handed to a listener at least once.
    used: bool,
}

/// A passed socket, as the daemon reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassedSocket {
    /// TCP (a listening stream socket) or UDP (a datagram socket).
    pub proto: Proto,
    /// The address it is bound to.
    pub addr: SocketAddr,
    /// Its name from `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`).
    pub name: String,
}

/// The sockets passed to this process; empty when none were.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: Mutex<Vec<Passed>>,
}

impl Inherited {
    /// No passed sockets: every address is bound by rvs.
    pub fn none() -> Inherited {
        Inherited::default()
    }

    /// Takes the sockets that `LISTEN_PID`, `LISTEN_FDS` and
    /// `LISTEN_FDNAMES` (their values, `None` when unset) describe, when
    /// `LISTEN_PID` is `own_pid`; none otherwise (the variables are then
    /// meant for another process, as `sd_listen_fds(3)` reads them).
    /// Adopts at most once per process.
    pub fn from_listen_fds(
        listen_pid: Option<&str>,
        listen_fds: Option<&str>,
        listen_fdnames: Option<&str>,
        own_pid: u32,
    ) -> Result<Inherited, InheritError> {
        let (Some(pid), Some(fds)) = (listen_pid, listen_fds) else {
            return Ok(Inherited::none());
        };
        let number = |var, value: &str| {
            value
                .trim()
                .parse::<u64>()
                .map_err(|_| InheritError::NotANumber {
                    var,
                    value: value.to_owned(),
                })
        };
        if number("LISTEN_PID", pid)? != u64::from(own_pid) {
            return Ok(Inherited::none());
        }
        let n = usize::try_from(number("LISTEN_FDS", fds)?).unwrap_or(usize::MAX);
        if n > MAX_FDS {
            return Err(InheritError::TooMany(n));
        }
        let names: Vec<String> = match listen_fdnames {
            Some(all) if !all.is_empty() => all.split(':').map(str::to_owned).collect(),
            _ => vec!["unknown".to_owned(); n],
        };
        if names.len() != n {
            return Err(InheritError::Names {
                names: names.len(),
                fds: n,
            });
        }
        if ADOPTED.swap(true, Ordering::SeqCst) {
            return Err(InheritError::AlreadyAdopted);
        }
        // Owned first, all of them, so that an error below closes each
        // passed descriptor rather than leaving some unowned.
        let mut owned = Vec::with_capacity(n);
        for (i, name) in names.into_iter().enumerate() {
            let fd = FIRST_FD + RawFd::try_from(i).unwrap_or(RawFd::MAX - FIRST_FD);
            owned.push((fd, name, adopt(fd)));
        }
        let mut sockets = Vec::with_capacity(n);
        for (fd, name, got) in owned {
            let passed = got
                .and_then(|owned| describe(Socket::from(owned)))
                .map_err(|why| InheritError::Descriptor {
                    fd,
                    name: name.clone(),
                    why,
                })?;
            let (proto, addr, socket) = passed;
            sockets.push(Passed {
                proto,
                addr,
                name,
                socket,
                used: false,
            });
        }
        Ok(Inherited {
            sockets: Mutex::new(sockets),
        })
    }

    /// The passed sockets that no listener took (yet).
    pub fn unused(&self) -> Vec<PassedSocket> {
        self.lock()
            .iter()
            .filter(|p| !p.used)
            .map(Passed::public)
            .collect()
    }

    /// Duplicates of every socket passed for `proto` on exactly `addr`
    /// (a binary upgrade hands over a whole SO_REUSEPORT group: each must
    /// be accepted on, or the connections the kernel queues on it wait),
    /// non-blocking; `None` when none was passed.
    pub fn take_all(&self, proto: Proto, addr: SocketAddr) -> Option<io::Result<Vec<Socket>>> {
        let mut all = self.lock();
        let mut out = Vec::new();
        for p in all
            .iter_mut()
            .filter(|p| p.proto == proto && p.addr == addr)
        {
            p.used = true;
            out.push(p.socket.try_clone().and_then(|s| {
                s.set_nonblocking(true)?;
                Ok(s)
            }));
        }
        if out.is_empty() {
            return None;
        }
        Some(out.into_iter().collect())
    }

    /// A duplicate of the passed socket for `proto` on exactly `addr`,
    /// non-blocking, if one was passed.
    pub fn take(&self, proto: Proto, addr: SocketAddr) -> Option<io::Result<Socket>> {
        let mut all = self.lock();
        let p = all
            .iter_mut()
            .find(|p| p.proto == proto && p.addr == addr)?;
        p.used = true;
        Some(p.socket.try_clone().and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Passed>> {
        self.sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Passed {
    fn public(&self) -> PassedSocket {
        PassedSocket {
            proto: self.proto,
            addr: self.addr,
            name: self.name.clone(),
        }
    }
}

/// Owns descriptor `fd`, close-on-exec (program health checks must not
/// inherit it), after checking that it is open.
fn adopt(fd: RawFd) -> Result<OwnedFd, String> {
    // SAFETY: borrowed only for the fcntl(2) below, while `fd` is a plain
    // integer that nothing in this process owns yet.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = rustix::io::fcntl_getfd(borrowed).map_err(|e| format!("not open: {e}"))?;
    // SAFETY: the protocol hands descriptors 3 .. 3+LISTEN_FDS, open, to
    // the process LISTEN_PID names, which is this one. The daemon reads the
    // protocol before it opens any descriptor of its own (before its
    // runtime), so an open `fd` is a passed one, not one of rvs's; and
    // `ADOPTED` lets this happen once per process: it has no other owner.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&owned, flags | rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| format!("cannot set close-on-exec: {e}"))?;
    Ok(owned)
}

/// What a passed socket is: TCP listening or UDP, and its address.
fn describe(socket: Socket) -> Result<(Proto, SocketAddr, Socket), String> {
    let ty = socket.r#type().map_err(|e| format!("not a socket: {e}"))?;
    let addr = socket
        .local_addr()
        .map_err(|e| format!("no address: {e}"))?
        .as_socket()
        .ok_or("not an IPv4 or IPv6 socket")?;
    let proto = if ty == Type::STREAM {
        if !socket.is_listener().unwrap_or(false) {
            return Err(format!("stream socket {addr} is not listening"));
        }
        // Accepted connections inherit it, as for the sockets rvs binds.
        socket
            .set_tcp_nodelay(true)
            .map_err(|e| format!("{addr}: TCP_NODELAY: {e}"))?;
        Proto::Tcp
    } else if ty == Type::DGRAM {
        Proto::Udp
    } else {
        return Err(format!("{addr}: neither a stream nor a datagram socket"));
    };
    Ok((proto, addr, socket))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn variables_for_another_process_or_unset_pass_nothing() {
        let none = Inherited::from_listen_fds(None, Some("2"), None, 42).unwrap();
        assert!(none.unused().is_empty());
        let other = Inherited::from_listen_fds(Some("41"), Some("2"), None, 42).unwrap();
        assert!(other.unused().is_empty());
    }

    #[test]
    fn malformed_variables_are_named() {
        let e = Inherited::from_listen_fds(Some("x1"), Some("2"), None, 42).unwrap_err();
        assert_eq!(e.to_string(), "LISTEN_PID=\"x1\": not a number");
        let e = Inherited::from_listen_fds(Some("42"), Some("two"), None, 42).unwrap_err();
        assert_eq!(e.to_string(), "LISTEN_FDS=\"two\": not a number");
        let e = Inherited::from_listen_fds(Some("42"), Some("99999"), None, 42).unwrap_err();
        assert_eq!(e.to_string(), "LISTEN_FDS=99999: more than 4096 sockets");
        let e = Inherited::from_listen_fds(Some("42"), Some("2"), Some("a:b:c"), 42).unwrap_err();
        assert_eq!(
            e.to_string(),
            "LISTEN_FDNAMES has 3 names for LISTEN_FDS=2 sockets"
        );
        // None of these adopted anything: a later, valid call still can.
        assert!(!ADOPTED.load(Ordering::SeqCst));
    }

    #[test]
    fn a_socket_is_described_by_its_kind_and_address() {
        let tcp = Socket::new(socket2::Domain::IPV4, Type::STREAM, None).unwrap();
        tcp.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let at = tcp.local_addr().unwrap().as_socket().unwrap();
        let e = describe(tcp.try_clone().unwrap()).unwrap_err();
        assert_eq!(e, format!("stream socket {at} is not listening"));
        tcp.listen(8).unwrap();
        let (proto, addr, _) = describe(tcp).unwrap();
        assert_eq!((proto, addr), (Proto::Tcp, at));
        let udp = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let at = udp.local_addr().unwrap();
        let (proto, addr, _) = describe(Socket::from(udp)).unwrap();
        assert_eq!((proto, addr), (Proto::Udp, at));
    }

    #[test]
    fn take_hands_out_duplicates_and_marks_them_used() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        let (proto, addr, socket) = describe(Socket::from(l)).unwrap();
        let pool = Inherited {
            sockets: Mutex::new(vec![Passed {
                proto,
                addr,
                name: "web".into(),
                socket,
                used: false,
            }]),
        };
        assert_eq!(pool.unused().len(), 1);
        assert!(pool.take(Proto::Udp, at).is_none());
        let first = pool.take(Proto::Tcp, at).unwrap().unwrap();
        drop(first);
        // The pool's own copy still listens: a second take serves again.
        let second: std::net::TcpListener = pool.take(Proto::Tcp, at).unwrap().unwrap().into();
        let _client = std::net::TcpStream::connect(at).unwrap();
        second.set_nonblocking(false).unwrap();
        assert!(second.accept().is_ok());
        assert!(pool.unused().is_empty());
    }
}
