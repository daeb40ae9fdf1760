//! ldirectord's RADIUS check: an Access-Request for `login`/`password`
//! (RFC 2865) that the server answers at all, Accept, Reject or
//! Challenge, as ldirectord's passes on any answer. The answer must be to
//! this request and signed with `secret` (its Response Authenticator): a
//! server that does not share the secret stays silent or signs wrongly,
//! and fails. Message-Authenticator (RFC 3579) is sent, as servers
//! hardened against BlastRADIUS require.

use super::{Context, Dialogue, Input, Next, md5};
use crate::config::ProtocolCheck;

const ACCESS_REQUEST: u8 = 1;
const USER_NAME: u8 = 1;
const USER_PASSWORD: u8 = 2;
const NAS_IDENTIFIER: u8 = 32;
const MESSAGE_AUTHENTICATOR: u8 = 80;

/// HMAC-MD5 (RFC 2104), for Message-Authenticator.
fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..16].copy_from_slice(&md5(&[key]));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    md5(&[&opad, &md5(&[&ipad, data])])
}

/// User-Password, hidden with the secret and the authenticator.
fn hide(password: &[u8], secret: &[u8], authenticator: &[u8; 16]) -> Vec<u8> {
    let mut padded = password.to_vec();
    let len = padded.len().div_ceil(16).max(1) * 16;
    padded.resize(len.min(128), 0);
    let mut out = Vec::with_capacity(padded.len());
    let mut prev: Vec<u8> = authenticator.to_vec();
    for chunk in padded.chunks(16) {
        let b = md5(&[secret, &prev]);
        let c: Vec<u8> = chunk.iter().zip(b).map(|(p, k)| p ^ k).collect();
        out.extend_from_slice(&c);
        prev = c;
    }
    out
}

fn attribute(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    let value = &value[..value.len().min(253)];
    out.push(kind);
    out.push(value.len() as u8 + 2);
    out.extend_from_slice(value);
}

/// The Access-Request with identifier `id` and request authenticator `ra`.
pub(super) fn access_request(c: &ProtocolCheck, id: u8, ra: &[u8; 16]) -> Vec<u8> {
    let secret = c.secret.as_deref().unwrap_or("").as_bytes();
    let mut attrs = Vec::new();
    attribute(
        &mut attrs,
        USER_NAME,
        c.login.as_deref().unwrap_or("rvs-health-check").as_bytes(),
    );
    attribute(
        &mut attrs,
        USER_PASSWORD,
        &hide(c.password.as_deref().unwrap_or("").as_bytes(), secret, ra),
    );
    attribute(&mut attrs, NAS_IDENTIFIER, b"rvs-health-check");
    let ma_at = attrs.len() + 2;
    attribute(&mut attrs, MESSAGE_AUTHENTICATOR, &[0; 16]);
    let mut p = vec![ACCESS_REQUEST, id];
    p.extend_from_slice(&(20 + attrs.len() as u16).to_be_bytes());
    p.extend_from_slice(ra);
    p.extend_from_slice(&attrs);
    let mac = hmac_md5(secret, &p);
    p[20 + ma_at..20 + ma_at + 16].copy_from_slice(&mac);
    p
}

pub(super) struct Radius {
    request: Option<Vec<u8>>,
    id: u8,
    authenticator: [u8; 16],
    secret: Vec<u8>,
}

impl Radius {
    pub(super) fn new(c: &ProtocolCheck, cx: Context) -> Radius {
        let id = cx.random[0];
        let mut ra = [0u8; 16];
        ra.copy_from_slice(&cx.random[1..17]);
        Radius {
            request: Some(access_request(c, id, &ra)),
            id,
            authenticator: ra,
            secret: c.secret.clone().unwrap_or_default().into_bytes(),
        }
    }
}

impl Dialogue for Radius {
    fn next(&mut self, input: &mut Input) -> Next {
        if let Some(r) = self.request.take() {
            return Next::Send(r);
        }
        let p = input.bytes();
        if p.is_empty() {
            return Next::Recv;
        }
        // Another datagram than our answer: wait for ours.
        if p.len() < 20 || p[1] != self.id {
            input.clear();
            return Next::Recv;
        }
        let len = usize::from(u16::from_be_bytes([p[2], p[3]]));
        if len < 20 || len > p.len() {
            input.clear();
            return Next::Recv;
        }
        let p = &p[..len];
        let want = md5(&[&p[..4], &self.authenticator, &p[20..], &self.secret]);
        let verdict = if want != p[4..20] {
            Err("the answer is not signed with the check's secret".into())
        } else {
            match p[0] {
                2 | 3 | 11 => Ok(()),
                code => Err(format!("not an answer to an Access-Request (code {code})")),
            }
        };
        input.clear();
        Next::Done(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{replay, test_check};
    use super::*;
    use crate::config::Protocol;

    #[test]
    fn rfc_2104s_hmac_md5() {
        // RFC 2104's second test vector.
        let mac = hmac_md5(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(super::super::hex(&mac), "750c783e6ab0b503eaa86e310a5db738");
    }

    #[test]
    fn any_signed_answer_passes() {
        let mut c = test_check(Protocol::Radius);
        c.secret = Some("testing123".into());
        c.login = Some("monitor".into());
        c.password = Some("pw".into());
        let cx = Context {
            local: "127.0.0.1:1".parse().unwrap(),
            peer: "127.0.0.1:1812".parse().unwrap(),
            random: [9; 32],
        };
        let d = Radius::new(&c, cx);
        let (id, ra) = (d.id, d.authenticator);
        let answer = |code: u8, secret: &[u8]| {
            let mut p = vec![code, id, 0, 20];
            p.extend_from_slice(&md5(&[&p[..4], &ra, secret]));
            p
        };
        for code in [2, 3, 11] {
            let (v, sent) = replay(
                &mut Radius::new(&c, cx),
                &[&answer(code, b"testing123")],
                true,
                b"",
            );
            assert_eq!(v, Ok(()), "code {code}");
            assert_eq!(sent[0][0], ACCESS_REQUEST);
        }
        let (v, _) = replay(&mut Radius::new(&c, cx), &[&answer(3, b"other")], true, b"");
        assert!(v.unwrap_err().contains("secret"));
        let (v, _) = replay(&mut Radius::new(&c, cx), &[b"short"], true, b"");
        assert!(v.is_err());
        // The hidden password comes back with the same secret.
        let hidden = hide(b"pw", b"testing123", &ra);
        let b = md5(&[b"testing123", &ra]);
        assert_eq!(hidden[0] ^ b[0], b'p');
        assert_eq!(hidden.len(), 16);
    }
}
