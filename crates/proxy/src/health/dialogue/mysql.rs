//! ldirectord's MySQL check (MariaDB too): log in, run `query`, pass when
//! it returns a row. The client/server protocol 4.1: the server's
//! handshake, a HandshakeResponse41 with mysql_native_password (or
//! caching_sha2_password's fast path, or an auth switch to either), then
//! COM_QUERY and its result set read up to the first row.

use ring::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};

use super::{Dialogue, Input, Next, closed_before, shown};
use crate::config::ProtocolCheck;

const LONG_PASSWORD: u32 = 1;
const CONNECT_WITH_DB: u32 = 8;
const PROTOCOL_41: u32 = 0x200;
const SECURE_CONNECTION: u32 = 0x8000;
const PLUGIN_AUTH: u32 = 0x8_0000;

/// One packet read: sequence id, payload, bytes used; `None` while it
/// is incomplete.
fn packet(b: &[u8]) -> Option<(u8, &[u8], usize)> {
    let len =
        usize::from(*b.first()?) | (usize::from(*b.get(1)?) << 8) | (usize::from(*b.get(2)?) << 16);
    let seq = *b.get(3)?;
    let payload = b.get(4..4 + len)?;
    Some((seq, payload, 4 + len))
}

fn framed(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len() as u32;
    let mut out = n.to_le_bytes()[..3].to_vec();
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// mysql_native_password: SHA1(pw) ^ SHA1(scramble + SHA1(SHA1(pw))).
fn native(password: &str, scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = digest(&SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes());
    let h2 = digest(&SHA1_FOR_LEGACY_USE_ONLY, h1.as_ref());
    let mut salted = scramble.to_vec();
    salted.extend_from_slice(h2.as_ref());
    xor(
        h1.as_ref(),
        digest(&SHA1_FOR_LEGACY_USE_ONLY, &salted).as_ref(),
    )
}

/// caching_sha2_password: SHA256(pw) ^ SHA256(SHA256(SHA256(pw)) + scramble).
fn caching_sha2(password: &str, scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = digest(&SHA256, password.as_bytes());
    let h2 = digest(&SHA256, h1.as_ref());
    let mut salted = h2.as_ref().to_vec();
    salted.extend_from_slice(scramble);
    xor(h1.as_ref(), digest(&SHA256, &salted).as_ref())
}

fn scrambled(plugin: &str, password: &str, scramble: &[u8]) -> Option<Vec<u8>> {
    match plugin {
        "mysql_native_password" | "" => Some(native(password, scramble)),
        "caching_sha2_password" => Some(caching_sha2(password, scramble)),
        _ => None,
    }
}

/// A NUL-terminated string at the start of `b`, and the rest.
fn cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = b.iter().position(|&x| x == 0)?;
    Some((&b[..end], &b[end + 1..]))
}

/// The text of an ERR packet (0xff, code, optional #state, message).
fn error_text(p: &[u8]) -> String {
    let code = p.get(1..3).map_or(0, |c| u16::from_le_bytes([c[0], c[1]]));
    let mut msg = p.get(3..).unwrap_or_default();
    if msg.first() == Some(&b'#') {
        msg = msg.get(6..).unwrap_or_default();
    }
    format!("error {code}: {}", String::from_utf8_lossy(msg))
}

/// The server's first packet: its auth plugin and scramble.
fn handshake(p: &[u8]) -> Result<(String, Vec<u8>, u32), String> {
    if p.first() == Some(&0xff) {
        return Err(format!("the server refuses: {}", error_text(p)));
    }
    let bad = || format!("not a MySQL handshake: {}", shown(&p[..p.len().min(24)]));
    if p.first() != Some(&10) {
        return Err(bad());
    }
    let (_version, rest) = cstr(&p[1..]).ok_or_else(bad)?;
    // connection id (4), scramble part 1 (8), filler (1).
    let part1 = rest.get(4..12).ok_or_else(bad)?;
    let rest = rest.get(13..).ok_or_else(bad)?;
    let low = rest.get(..2).ok_or_else(bad)?;
    let mut caps = u32::from(u16::from_le_bytes([low[0], low[1]]));
    let mut scramble = part1.to_vec();
    let mut plugin = String::new();
    // charset (1), status (2), caps high (2), scramble length (1), 10 reserved.
    if let Some(more) = rest.get(2..) {
        if let Some(high) = more.get(3..5) {
            caps |= u32::from(u16::from_le_bytes([high[0], high[1]])) << 16;
        }
        let len = more.get(5).map_or(0, |&l| usize::from(l));
        if let Some(tail) = more.get(16..) {
            let n = len.saturating_sub(8).max(13).min(tail.len());
            let part2 = &tail[..n];
            // The scramble is 20 bytes; its part 2 ends with a NUL.
            scramble.extend_from_slice(part2.strip_suffix(&[0]).unwrap_or(part2));
            if caps & PLUGIN_AUTH != 0
                && let Some((name, _)) = cstr(&tail[n..]).or(Some((&tail[n..], &[])))
            {
                plugin = String::from_utf8_lossy(name).into_owned();
            }
        }
    }
    Ok((plugin, scramble, caps))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    Greeting,
    Auth,
    Columns,
    ColumnDefs,
    Rows,
    Quit,
}

pub(super) struct Mysql {
    at: At,
    user: String,
    password: String,
    database: Option<String>,
    query: String,
    /// The last sequence id received.
    seq: u8,
}

impl Mysql {
    pub(super) fn new(c: &ProtocolCheck) -> Mysql {
        Mysql {
            at: At::Greeting,
            user: c.login.clone().unwrap_or_default(),
            password: c.password.clone().unwrap_or_default(),
            database: c.database.clone(),
            query: c.query.clone(),
            seq: 0,
        }
    }

    fn response(&self, plugin: &str, scramble: &[u8]) -> Result<Vec<u8>, String> {
        let auth = scrambled(plugin, &self.password, scramble).ok_or_else(|| {
            format!("the server wants the {plugin} login, which rvs cannot speak: give the check's user mysql_native_password")
        })?;
        let mut caps = LONG_PASSWORD | PROTOCOL_41 | SECURE_CONNECTION | PLUGIN_AUTH;
        if self.database.is_some() {
            caps |= CONNECT_WITH_DB;
        }
        let mut p = caps.to_le_bytes().to_vec();
        p.extend_from_slice(&(1u32 << 24).to_le_bytes());
        p.push(45); // utf8mb4
        p.extend_from_slice(&[0; 23]);
        p.extend_from_slice(self.user.as_bytes());
        p.push(0);
        p.push(auth.len() as u8);
        p.extend_from_slice(&auth);
        if let Some(db) = &self.database {
            p.extend_from_slice(db.as_bytes());
            p.push(0);
        }
        p.extend_from_slice(if plugin.is_empty() {
            b"mysql_native_password"
        } else {
            plugin.as_bytes()
        });
        p.push(0);
        Ok(framed(1, &p))
    }

    fn quit(&mut self) -> Next {
        self.at = At::Quit;
        Next::Send(framed(0, &[0x01]))
    }
}

/// A length-encoded integer at the start of `b`.
fn lenenc(b: &[u8]) -> Option<u64> {
    match *b.first()? {
        n @ 0..=0xfa => Some(u64::from(n)),
        0xfc => Some(u64::from(u16::from_le_bytes([*b.get(1)?, *b.get(2)?]))),
        0xfd => Some(u64::from_le_bytes([
            *b.get(1)?,
            *b.get(2)?,
            *b.get(3)?,
            0,
            0,
            0,
            0,
            0,
        ])),
        0xfe => Some(u64::from_le_bytes(b.get(1..9)?.try_into().ok()?)),
        _ => None,
    }
}

/// An EOF packet (0xfe, shorter than 9 bytes).
fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xfe) && p.len() < 9
}

impl Dialogue for Mysql {
    fn next(&mut self, input: &mut Input) -> Next {
        if self.at == At::Quit {
            return Next::Done(Ok(()));
        }
        let Some((seq, payload, used)) = packet(input.bytes()) else {
            // The first bytes of a handshake say at once whether it can be
            // one: protocol 10 after a 3-byte length and sequence 0.
            let b = input.bytes();
            if self.at == At::Greeting
                && b.len() >= 5
                && (b[3] != 0 || (b[4] != 10 && b[4] != 0xff))
            {
                return Next::Done(Err(format!(
                    "not a MySQL handshake: {}",
                    shown(&b[..b.len().min(24)])
                )));
            }
            return if input.closed {
                closed_before("its answer")
            } else {
                Next::Recv
            };
        };
        let p = payload.to_vec();
        input.consume(used);
        self.seq = seq;
        let step = match self.at {
            At::Greeting => handshake(&p).and_then(|(plugin, scramble, _)| {
                self.at = At::Auth;
                self.response(&plugin, &scramble).map(Next::Send)
            }),
            At::Auth => match p.first() {
                Some(0x00) => {
                    self.at = At::Columns;
                    let mut q = vec![0x03];
                    q.extend_from_slice(self.query.as_bytes());
                    Ok(Next::Send(framed(0, &q)))
                }
                Some(0xff) => Err(format!("the login is refused: {}", error_text(&p))),
                // An auth switch: another plugin, a new scramble.
                Some(0xfe) => {
                    let rest = &p[1..];
                    let (name, data) = cstr(rest).unwrap_or((rest, &[]));
                    let name = String::from_utf8_lossy(name).into_owned();
                    let scramble = data.strip_suffix(&[0]).unwrap_or(data);
                    scrambled(&name, &self.password, scramble)
                        .map(|a| Next::Send(framed(self.seq.wrapping_add(1), &a)))
                        .ok_or_else(|| format!("the server wants the {name} login, which rvs cannot speak"))
                }
                // caching_sha2_password: 3 is the fast path's success (an
                // OK follows); 4 asks for the password in clear.
                Some(0x01) if p.get(1) == Some(&3) => Ok(Next::Recv),
                Some(0x01) => Err("caching_sha2_password wants the password over TLS or RSA, which rvs does not send: log in once from a client (the server then caches it), or give the check's user mysql_native_password".into()),
                _ => Err(format!("not a MySQL answer: {}", shown(&p[..p.len().min(24)]))),
            },
            At::Columns => match p.first() {
                Some(0xff) => Err(format!("the query failed: {}", error_text(&p))),
                Some(0x00) => Err(format!("the query {:?} returned no rows", self.query)),
                _ => match lenenc(&p) {
                    Some(n) if n > 0 => {
                        self.at = At::ColumnDefs;
                        Ok(Next::Recv)
                    }
                    _ => Err(format!("not a MySQL answer: {}", shown(&p[..p.len().min(24)]))),
                },
            },
            // Column definitions up to their EOF packet.
            At::ColumnDefs => {
                if is_eof(&p) {
                    self.at = At::Rows;
                }
                Ok(Next::Recv)
            }
            At::Rows => match p.first() {
                Some(0xff) => Err(format!("the query failed: {}", error_text(&p))),
                _ if is_eof(&p) => Err(format!("the query {:?} returned no rows", self.query)),
                // A row: that is all the check needs.
                _ => Ok(self.quit()),
            },
            At::Quit => Ok(Next::Done(Ok(()))),
        };
        match step {
            Ok(Next::Recv) => self.next(input),
            Ok(n) => n,
            Err(e) => Next::Done(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{replay, test_check};
    use super::*;
    use crate::config::Protocol;

    /// A MariaDB 10.11 handshake, as the server sends it (scramble
    /// `12345678` + `abcdefghijkl`).
    fn greeting() -> Vec<u8> {
        let mut p = vec![10];
        p.extend_from_slice(b"5.5.5-10.11.6-MariaDB-0+deb12u1\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"12345678\0");
        p.extend_from_slice(&0xf7feu16.to_le_bytes());
        p.push(45);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&0x81bfu16.to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 10]);
        p.extend_from_slice(b"abcdefghijkl\0");
        p.extend_from_slice(b"mysql_native_password\0");
        framed(0, &p)
    }

    #[test]
    fn the_handshake_is_read() {
        let g = greeting();
        let (plugin, scramble, caps) = handshake(&g[4..]).unwrap();
        assert_eq!(plugin, "mysql_native_password");
        assert_eq!(scramble, b"12345678abcdefghijkl");
        assert!(caps & PLUGIN_AUTH != 0);
        // The known answer of MySQL's documentation shape: 20 bytes, and
        // none for an empty password.
        assert_eq!(native("secret", &scramble).len(), 20);
        assert!(native("", &scramble).is_empty());
        assert_eq!(caching_sha2("x", &scramble).len(), 32);
    }

    #[test]
    fn a_row_passes_and_no_row_or_an_error_fails() {
        let mut c = test_check(Protocol::Mysql);
        c.login = Some("monitor".into());
        c.password = Some("pw".into());
        let ok = framed(2, &[0, 0, 0, 2, 0, 0, 0]);
        let count = framed(1, &[1]);
        let def = framed(
            2,
            b"\x03def\x00\x00\x00\x011\x00\x0c\x3f\x00\x01\x00\x00\x00\x08\x81\x00\x00\x00\x00",
        );
        let eof = framed(3, &[0xfe, 0, 0, 2, 0]);
        let row = framed(4, b"\x011");
        let g = greeting();
        let (v, sent) = replay(
            &mut Mysql::new(&c),
            &[&g, &ok, &count, &def, &eof, &row],
            false,
            b"",
        );
        assert_eq!(v, Ok(()));
        assert!(sent[0].windows(8).any(|w| w == b"monitor\0"));
        assert_eq!(&sent[1][4..], b"\x03SELECT 1");
        assert_eq!(sent[2], [1, 0, 0, 0, 1]);
        let (v, _) = replay(
            &mut Mysql::new(&c),
            &[&g, &ok, &count, &def, &eof, &eof],
            false,
            b"",
        );
        assert!(v.unwrap_err().contains("no rows"));
        let denied = framed(2, b"\xff\x15\x04#28000Access denied for user");
        let (v, _) = replay(&mut Mysql::new(&c), &[&g, &denied], false, b"");
        assert!(v.unwrap_err().contains("Access denied"), "");
        let (v, _) = replay(
            &mut Mysql::new(&c),
            &[b"220 mail.test ESMTP\r\n"],
            false,
            b"",
        );
        assert!(v.unwrap_err().contains("not a MySQL handshake"));
    }
}
