//! ldirectord's LDAP check: a simple bind (anonymous unless a login is
//! given), then a search of `base` with scope base and filter
//! `(objectClass=*)` that must find exactly one entry, whose DN matches
//! `expect_dn` when given; then an unbind. LDAPv3 over BER (RFC 4511),
//! only the few shapes this needs.

use super::{Dialogue, Input, Next, closed_before};
use crate::config::{BodyPattern, ProtocolCheck};

/// A BER element: tag, then length, then `content`.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 128 {
        out.push(n as u8);
    } else {
        let bytes = (n as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

fn int(v: u32) -> Vec<u8> {
    let mut out: Vec<u8> = v
        .to_be_bytes()
        .into_iter()
        .skip_while(|&b| b == 0)
        .collect();
    // A positive number keeps its top bit clear.
    if out.first().is_none_or(|b| b & 0x80 != 0) {
        out.insert(0, 0);
    }
    tlv(0x02, &out)
}

/// An LDAPMessage with `id` around `op`.
fn message(id: u32, op: Vec<u8>) -> Vec<u8> {
    let mut content = int(id);
    content.extend(op);
    tlv(0x30, &content)
}

fn bind_request(id: u32, dn: &str, password: &str) -> Vec<u8> {
    let mut c = int(3);
    c.extend(tlv(0x04, dn.as_bytes()));
    c.extend(tlv(0x80, password.as_bytes())); // [0] simple
    message(id, tlv(0x60, &c))
}

fn search_request(id: u32, base: &str) -> Vec<u8> {
    let mut c = tlv(0x04, base.as_bytes());
    c.extend(tlv(0x0a, &[0])); // scope: baseObject
    c.extend(tlv(0x0a, &[0])); // derefAliases: never
    c.extend(int(0)); // sizeLimit
    c.extend(int(0)); // timeLimit
    c.extend(tlv(0x01, &[0])); // typesOnly: false
    c.extend(tlv(0x87, b"objectClass")); // present
    c.extend(tlv(0x30, &tlv(0x04, b"1.1"))); // no attributes
    message(id, tlv(0x63, &c))
}

/// One element read: its tag, its content, and the bytes it took; `None`
/// while it is incomplete, `Err` when it cannot be BER.
fn read(b: &[u8]) -> super::Framed<'_> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, head) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Some(Err("not an LDAP message (a length of over 4 bytes)".into()));
        }
        let bytes = b.get(2..2 + n)?;
        let len = bytes.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x));
        (len, 2 + n)
    };
    if len > super::MAX_PENDING {
        return Some(Err(format!("an LDAP message of {len} bytes")));
    }
    let content = b.get(head..head + len)?;
    Some(Ok((tag, content, head + len)))
}

/// Reads one element out of a complete buffer: `Err` when short.
fn take<'a>(b: &mut &'a [u8], what: &str) -> Result<(u8, &'a [u8]), String> {
    match read(b) {
        Some(Ok((tag, content, used))) => {
            *b = &b[used..];
            Ok((tag, content))
        }
        _ => Err(format!("a malformed LDAP {what}")),
    }
}

/// An answer: message id, operation tag and content.
struct Answer<'a> {
    id: u32,
    op: u8,
    body: &'a [u8],
}

fn answer(msg: &[u8]) -> Result<Answer<'_>, String> {
    let mut b = msg;
    let (tag, id) = take(&mut b, "message id")?;
    if tag != 0x02 || id.is_empty() || id.len() > 4 {
        return Err("a malformed LDAP message id".into());
    }
    let id = id.iter().fold(0u32, |a, &x| (a << 8) | u32::from(x));
    let (op, body) = take(&mut b, "operation")?;
    Ok(Answer { id, op, body })
}

/// An LDAPResult's code and diagnostic message.
fn result(body: &[u8]) -> Result<(u32, String), String> {
    let mut b = body;
    let (tag, code) = take(&mut b, "result")?;
    if tag != 0x0a || code.is_empty() || code.len() > 4 {
        return Err("a malformed LDAP result code".into());
    }
    let code = code.iter().fold(0u32, |a, &x| (a << 8) | u32::from(x));
    let _matched = take(&mut b, "result");
    let diag = take(&mut b, "result").map_or_else(
        |_| String::new(),
        |(_, d)| String::from_utf8_lossy(d).into_owned(),
    );
    Ok((code, diag))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    Start,
    Bind,
    Search,
    Unbind,
}

pub(super) struct Ldap {
    at: At,
    dn: String,
    password: String,
    base: String,
    expect: Option<BodyPattern>,
    entries: usize,
    first_dn: Option<String>,
}

impl Ldap {
    pub(super) fn new(c: &ProtocolCheck) -> Ldap {
        Ldap {
            at: At::Start,
            dn: c.login.clone().unwrap_or_default(),
            password: c.password.clone().unwrap_or_default(),
            base: c.base.clone(),
            expect: c.expect_dn.clone(),
            entries: 0,
            first_dn: None,
        }
    }

    fn searched(&mut self) -> Next {
        if self.entries != 1 {
            return Next::Done(Err(format!(
                "the search of {:?} found {} entries, not 1",
                self.base, self.entries
            )));
        }
        let dn = self.first_dn.take().unwrap_or_default();
        if let Some(re) = &self.expect
            && !re.0.is_match(dn.as_bytes())
        {
            return Next::Done(Err(format!(
                "the entry {dn:?} does not match expect_dn {:?}",
                re.as_str()
            )));
        }
        self.at = At::Unbind;
        Next::Send(message(3, tlv(0x42, &[])))
    }
}

impl Dialogue for Ldap {
    fn next(&mut self, input: &mut Input) -> Next {
        match self.at {
            At::Start => {
                self.at = At::Bind;
                return Next::Send(bind_request(1, &self.dn, &self.password));
            }
            At::Unbind => return Next::Done(Ok(())),
            _ => {}
        }
        if input.bytes().first().is_some_and(|&t| t != 0x30) {
            return Next::Done(Err(format!(
                "not an LDAP message: {}",
                super::shown(&input.bytes()[..input.bytes().len().min(16)])
            )));
        }
        let (_, content, used) = match read(input.bytes()) {
            None if input.closed => return closed_before("its answer"),
            None => return Next::Recv,
            Some(Err(e)) => return Next::Done(Err(e)),
            Some(Ok(t)) => t,
        };
        let verdict = answer(content).and_then(|a| {
            let want = if self.at == At::Bind { 1 } else { 2 };
            if a.id != want {
                return Err(format!("an LDAP answer to message {}, not {want}", a.id));
            }
            match (self.at, a.op) {
                (At::Bind, 0x61) => {
                    let (code, diag) = result(a.body)?;
                    if code != 0 {
                        return Err(format!("the bind is refused: result {code} {diag:?}"));
                    }
                    Ok(Some(Next::Send(search_request(2, &self.base))))
                }
                (At::Search, 0x64) => {
                    let mut b = a.body;
                    let (_, dn) = take(&mut b, "entry")?;
                    self.entries += 1;
                    if self.first_dn.is_none() {
                        self.first_dn = Some(String::from_utf8_lossy(dn).into_owned());
                    }
                    Ok(None)
                }
                // A referral or an intermediate answer: not an entry.
                (At::Search, 0x73 | 0x79) => Ok(None),
                (At::Search, 0x65) => {
                    let (code, diag) = result(a.body)?;
                    if code != 0 {
                        return Err(format!(
                            "the search of {:?} failed: result {code} {diag:?}",
                            self.base
                        ));
                    }
                    Ok(Some(Next::Done(Ok(()))))
                }
                (_, op) => Err(format!("an unexpected LDAP answer (operation {op:#04x})")),
            }
        });
        input.consume(used);
        match verdict {
            Err(e) => Next::Done(Err(e)),
            Ok(None) => self.next(input),
            Ok(Some(Next::Done(_))) => self.searched(),
            Ok(Some(n)) => {
                self.at = At::Search;
                n
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{replay, test_check};
    use super::*;
    use crate::config::Protocol;

    fn result_msg(id: u32, op: u8, code: u8) -> Vec<u8> {
        let mut r = tlv(0x0a, &[code]);
        r.extend(tlv(0x04, b""));
        r.extend(tlv(0x04, b""));
        message(id, tlv(op, &r))
    }

    fn entry(id: u32, dn: &str) -> Vec<u8> {
        let mut e = tlv(0x04, dn.as_bytes());
        e.extend(tlv(0x30, &[]));
        message(id, tlv(0x64, &e))
    }

    #[test]
    fn the_requests_are_ber() {
        assert_eq!(int(0), [2, 1, 0]);
        assert_eq!(int(200), [2, 2, 0, 200]);
        assert_eq!(int(3), [2, 1, 3]);
        // Anonymous bind, message 1 (as ldapsearch -x sends it).
        assert_eq!(
            bind_request(1, "", ""),
            [
                0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00
            ]
        );
        let long = tlv(0x04, &[b'x'; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(read(&long).unwrap().unwrap().2, 304);
        assert!(read(&long[..100]).is_none());
    }

    #[test]
    fn one_entry_passes_and_anything_else_fails() {
        let mut c = test_check(Protocol::Ldap);
        let bind = result_msg(1, 0x61, 0);
        let done = result_msg(2, 0x65, 0);
        let one = [bind.as_slice(), &entry(2, ""), &done];
        assert_eq!(replay(&mut Ldap::new(&c), &one, false, b"").0, Ok(()));
        // In one read, split anywhere.
        let all: Vec<u8> = one.concat();
        for cut in [1, 5, 14, 20] {
            let (a, b) = all.split_at(cut);
            assert_eq!(replay(&mut Ldap::new(&c), &[a, b], false, b"").0, Ok(()));
        }
        let none = [bind.as_slice(), &done];
        assert!(replay(&mut Ldap::new(&c), &none, false, b"").0.is_err());
        let refused = result_msg(1, 0x61, 49);
        let v = replay(&mut Ldap::new(&c), &[&refused], false, b"").0;
        assert!(v.unwrap_err().contains("result 49"));
        c.expect_dn = Some(BodyPattern::new("dc=example").unwrap());
        let e = entry(2, "dc=other,dc=test");
        let v = replay(&mut Ldap::new(&c), &[&bind, &e, &done], false, b"").0;
        assert!(v.unwrap_err().contains("expect_dn"));
        let v = replay(&mut Ldap::new(&c), &[b"220 smtp ready\r\n"], false, b"").0;
        assert!(v.unwrap_err().contains("not an LDAP message"));
    }
}
