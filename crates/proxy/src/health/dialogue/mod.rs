//! The protocol exchanges of health checks, without I/O: each protocol is
//! a state machine that says what to send and what it needs next, given
//! the bytes the server sent so far. The driver (`health::probe`) does the
//! connecting, reading, writing and the timeout; a test or a fuzzer feeds
//! the same machines canned answers (`replay`).
//!
//! Every exchange is bounded: the driver stops at [`MAX_ANSWER`] bytes in
//! all and at [`MAX_PENDING`] bytes a machine has not consumed (a line
//! that never ends, a message that claims to be huge), and the check's
//! timeout ends a server that goes silent.

mod ftp;
mod ldap;
mod mail;
mod mysql;
mod pgsql;
mod radius;
mod script;
mod sip;

use std::net::SocketAddr;

use crate::config::{Protocol, ProtocolCheck, TcpStep};

/// The most a server may send in one check (a health answer, not data).
pub const MAX_ANSWER: usize = 1 << 20;
/// The most a machine may leave unconsumed (one line or one message).
pub const MAX_PENDING: usize = 64 * 1024;

/// What a check has found once it is done: `Err` says why it failed.
pub type Verdict = Result<(), String>;

/// A tagged, length-prefixed unit read from the start of a buffer (an
/// LDAP element, a PostgreSQL message): its tag, its body and the bytes it
/// took; `None` while it is incomplete, `Err` when it cannot be one.
type Framed<'a> = Option<Result<(u8, &'a [u8], usize), String>>;

/// What the machine wants next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Send these bytes (a datagram over UDP), then ask again.
    Send(Vec<u8>),
    /// More bytes from the server (over UDP: another datagram).
    Recv,
    /// FTP: open a data connection to this port of the server, then ask
    /// again.
    OpenData(u16),
    /// FTP: read the data connection to its end and give what came to
    /// [`Dialogue::data`], then ask again.
    ReadData,
    /// The check is over.
    Done(Verdict),
}

/// What the server has sent and the machine has not consumed yet.
#[derive(Debug, Default)]
pub struct Input {
    bytes: Vec<u8>,
    /// The server closed its side: no more will come.
    pub closed: bool,
}

impl Input {
    /// Bytes arrived (over UDP: one datagram, replacing what was left).
    pub fn push(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
    }

    /// What is there.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Drops the first `n` bytes (consumed).
    pub fn consume(&mut self, n: usize) {
        self.bytes.drain(..n.min(self.bytes.len()));
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    /// The next whole line, without its CR LF (or LF), consumed; lossy
    /// UTF-8 (servers' texts are ASCII).
    pub fn line(&mut self) -> Option<String> {
        let end = self.bytes.iter().position(|&b| b == b'\n')?;
        let mut line = &self.bytes[..end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let s = String::from_utf8_lossy(line).into_owned();
        self.consume(end + 1);
        Some(s)
    }
}

/// One protocol's exchange.
pub trait Dialogue: Send {
    /// The next step, given what the server sent (the machine consumes
    /// what it has read).
    fn next(&mut self, input: &mut Input) -> Next;

    /// FTP: what the data connection carried (at most [`MAX_ANSWER`]).
    fn data(&mut self, _bytes: &[u8]) {}
}

/// Where a check runs, and what its machine may draw on.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    /// The check's own address (SIP's Via).
    pub local: SocketAddr,
    /// The server checked.
    pub peer: SocketAddr,
    /// Fresh random bytes (nonces, authenticators, identifiers).
    pub random: [u8; 32],
}

/// The machine of a protocol check.
pub fn for_protocol(c: &ProtocolCheck, cx: Context) -> Box<dyn Dialogue> {
    match c.protocol {
        Protocol::Smtp => Box::new(mail::Smtp::new(c)),
        Protocol::Pop => Box::new(mail::Pop::new(c)),
        Protocol::Imap => Box::new(mail::Imap::new(c)),
        Protocol::Nntp => Box::new(mail::Nntp::new()),
        Protocol::Ftp => Box::new(ftp::Ftp::new(c)),
        Protocol::Ldap => Box::new(ldap::Ldap::new(c)),
        Protocol::Mysql => Box::new(mysql::Mysql::new(c)),
        Protocol::Pgsql => Box::new(pgsql::Pgsql::new(c, cx)),
        Protocol::Sip => Box::new(sip::Sip::new(c, cx)),
        Protocol::Radius => Box::new(radius::Radius::new(c, cx)),
    }
}

/// The machine of a `tcp` check's `steps`.
pub fn for_steps(steps: &[TcpStep]) -> Box<dyn Dialogue> {
    Box::new(script::Script::new(steps))
}

/// Runs `d` against a server whose answers are `chunks`, in order (one
/// per read; over UDP one per datagram, with `datagrams`), then a close:
/// what tests and the fuzzer use. What the machine sends is returned with
/// the verdict; an FTP data connection carries `data`.
pub fn replay(
    d: &mut dyn Dialogue,
    chunks: &[&[u8]],
    datagrams: bool,
    data: &[u8],
) -> (Verdict, Vec<Vec<u8>>) {
    let mut input = Input::default();
    let mut sent = Vec::new();
    let mut next_chunk = chunks.iter();
    let mut received = 0usize;
    // Every step either consumes a chunk or sends; a machine that loops
    // without either is a bug the bound catches.
    for _ in 0..10_000 {
        match d.next(&mut input) {
            Next::Send(b) => sent.push(b),
            Next::Recv if input.closed => return (Err("the server closed".into()), sent),
            Next::Recv => match next_chunk.next() {
                Some(c) => {
                    received += c.len();
                    if datagrams {
                        input.clear();
                    }
                    input.push(c);
                    if received > MAX_ANSWER || input.bytes().len() > MAX_PENDING {
                        return (Err("the answer is too long".into()), sent);
                    }
                }
                None if datagrams => return (Err("no answer".into()), sent),
                None => input.closed = true,
            },
            Next::OpenData(_) => {}
            Next::ReadData => d.data(data),
            Next::Done(v) => return (v, sent),
        }
    }
    (Err("the machine did not finish".into()), sent)
}

/// A reply code at the start of a line (`220 `, `250-`): the code, and
/// whether more lines of the same reply follow.
fn reply_code(line: &str) -> Option<(u16, bool)> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = line[..3].parse().ok()?;
    Some((code, b.get(3) == Some(&b'-')))
}

/// The whole of a multi-line reply (SMTP, FTP): its code and last line,
/// or `None` until it has all come. A line without a code fails.
fn read_reply(input: &mut Input) -> Option<Result<(u16, String), String>> {
    loop {
        // Whole lines only: a continued reply is consumed line by line.
        let line = input.line()?;
        match reply_code(&line) {
            Some((code, false)) => return Some(Ok((code, line))),
            Some((_, true)) => continue,
            None => return Some(Err(format!("not a reply line: {}", shown(line.as_bytes())))),
        }
    }
}

/// A server's text as a log line shows it: at most 80 characters, control
/// characters escaped.
pub(crate) fn shown(b: &[u8]) -> String {
    let cut = &b[..b.len().min(80)];
    let mut s: String = cut.escape_ascii().to_string();
    if b.len() > 80 {
        s.push('…');
    }
    format!("\"{s}\"")
}

/// What a server said when a step fails: `what`, then its text.
fn refused(what: &str, line: &str) -> Verdict {
    Err(format!("{what}: {}", shown(line.as_bytes())))
}

/// The next whole line, or what to do without one: wait for more, or
/// fail when the server closed before `what`.
fn line_or(input: &mut Input, what: &str) -> Result<String, Next> {
    match input.line() {
        Some(l) => Ok(l),
        None if input.closed => Err(closed_before(what)),
        None => Err(Next::Recv),
    }
}

/// A server that closed, or sent nothing usable, before the step.
fn closed_before(what: &str) -> Next {
    Next::Done(Err(format!("the server closed before {what}")))
}

/// Standard base64 (RFC 4648, with padding): SCRAM's encoding.
pub(crate) fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(A[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reads standard base64; `None` when it is not.
pub(crate) fn unbase64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// MD5 of `parts`, one after the other (RADIUS, PostgreSQL's md5 login).
fn md5(parts: &[&[u8]]) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Bytes as lowercase hex (digests, identifiers, nonces).
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A check of protocol `p` with every key at its default.
#[cfg(test)]
pub(crate) fn test_check(p: Protocol) -> ProtocolCheck {
    ProtocolCheck {
        protocol: p,
        tls: false,
        login: None,
        password: None,
        database: None,
        query: "SELECT 1".into(),
        base: String::new(),
        expect_dn: None,
        path: None,
        expect_body: None,
        helo_name: "checker.test".into(),
        secret: None,
        uri: None,
        sip_tcp: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for (plain, coded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain), coded);
            assert_eq!(unbase64(coded).as_deref(), Some(plain));
        }
        assert_eq!(unbase64("a b"), None);
    }

    #[test]
    fn lines_and_replies_are_read_whole() {
        let mut i = Input::default();
        i.push(b"220-first\r\n220 last\r\n250 x");
        assert_eq!(read_reply(&mut i), Some(Ok((220, "220 last".into()))));
        assert_eq!(read_reply(&mut i), None);
        i.push(b"\n");
        assert_eq!(read_reply(&mut i), Some(Ok((250, "250 x".into()))));
        i.push(b"hello\n");
        assert!(matches!(read_reply(&mut i), Some(Err(_))));
    }
}
