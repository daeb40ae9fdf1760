//! Reading a connection's ClientHello for [`super::hello::parse`]:
//! peeked, never consumed, so that every byte the client sent goes to the
//! real server chosen, unchanged, in the forwarding that follows.
//!
//! Each time the socket turns readable, everything queued is peeked again
//! and parsed from its start. A peek leaves the data queued, so the
//! socket stays readable: a peek that finds an unfinished hello is
//! reported to tokio as `WouldBlock`, which clears the readiness it
//! observed before the peek (and only if no event came since), so the
//! task sleeps until more bytes arrive instead of spinning.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

use super::hello::{self, ClientHello, MAX_HELLO, Parse};

/// The first peek's buffer; grown to [`MAX_HELLO`] for a larger hello.
const FIRST_PEEK: usize = 2048;

/// What the first bytes of a connection are.
#[derive(Debug)]
pub(crate) enum First {
    /// A whole ClientHello.
    Hello(ClientHello),
    /// Not TLS, or a TLS handshake that is not a well-formed ClientHello:
    /// the address's default takes it, as a connection without SNI.
    Other,
}

/// Why a connection was closed before it could be routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The hello (or the first bytes) did not all come within
    /// `timeouts.client_hello`.
    Timeout,
    /// The hello needs more than [`MAX_HELLO`] bytes.
    TooLarge,
    /// The client closed the connection, or it failed, before its hello.
    Closed,
    /// No service of the address takes it, and there is no default.
    NoMatch,
    /// An expected PROXY protocol header was missing or malformed.
    ProxyHeader,
    /// UDP: more QUIC flows wait for the rest of their hello than a
    /// listener keeps.
    Backlog,
}

impl Refused {
    /// Every reason, in a fixed order.
    pub(crate) const ALL: [Refused; 6] = [
        Refused::Timeout,
        Refused::TooLarge,
        Refused::Closed,
        Refused::NoMatch,
        Refused::ProxyHeader,
        Refused::Backlog,
    ];

    /// A short name, for logs and metric labels.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Refused::Timeout => "timeout",
            Refused::TooLarge => "too_large",
            Refused::Closed => "closed",
            Refused::NoMatch => "no_match",
            Refused::ProxyHeader => "proxy_header",
            Refused::Backlog => "backlog",
        }
    }
}

/// Connections an address closed before routing them, by reason; kept by
/// its listener across reloads.
#[derive(Debug, Default)]
pub(crate) struct Refusals([AtomicU64; Refused::ALL.len()]);

impl Refusals {
    pub(crate) fn count(&self, why: Refused) {
        self.0[why as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn get(&self, why: Refused) -> u64 {
        self.0[why as usize].load(Relaxed)
    }
}

/// Waits for the client's first bytes and reads them as a hello, within
/// `wait`.
pub(crate) async fn first_bytes(stream: &TcpStream, wait: Duration) -> Result<First, Refused> {
    let mut buf = vec![0u8; FIRST_PEEK];
    // A hello sent with the handshake's last ACK is often queued by the
    // time the connection is accepted: tried at once, before tokio has
    // heard of the socket's readiness (which costs a turn of its poll).
    let peeked = match peek_hello(stream, &mut buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            tokio::time::timeout(
                wait,
                stream.async_io(Interest::READABLE, || peek_hello(stream, &mut buf)),
            )
            .await
        }
        now => Ok(now),
    };
    match peeked {
        Err(_) => Err(Refused::Timeout),
        Ok(Err(_)) => Err(Refused::Closed),
        Ok(Ok(Parse::Hello(h))) => Ok(First::Hello(h)),
        Ok(Ok(Parse::NotTls | Parse::Invalid(_))) => Ok(First::Other),
        Ok(Ok(Parse::TooLarge)) => Err(Refused::TooLarge),
        // `peek_hello` never ends on NeedMore.
        Ok(Ok(Parse::NeedMore)) => Err(Refused::Closed),
    }
}

/// Peeks what is queued and parses it; `WouldBlock` while the hello is
/// unfinished and nothing more is queued.
fn peek_hello(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<Parse> {
    loop {
        let (n, _) = rustix::net::recv(stream, &mut buf[..], rustix::net::RecvFlags::PEEK)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match hello::parse(&buf[..n]) {
            Parse::NeedMore if n == buf.len() => {
                if buf.len() >= MAX_HELLO {
                    return Ok(Parse::TooLarge);
                }
                // More may be queued than the buffer held.
                let grown = (buf.len() * 2).min(MAX_HELLO);
                buf.resize(grown, 0);
            }
            Parse::NeedMore => return Err(io::ErrorKind::WouldBlock.into()),
            done => return Ok(done),
        }
    }
}
