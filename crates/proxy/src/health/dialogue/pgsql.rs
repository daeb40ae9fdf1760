//! ldirectord's PostgreSQL check: log in, run `query`, pass when it
//! returns a row. Protocol 3.0: the startup message, then whichever login
//! the server asks for (trust, password, md5 or SCRAM-SHA-256, the
//! default since PostgreSQL 14), then a simple query read up to its first
//! row.

use ring::{digest, hmac, pbkdf2};

use super::{Context, Dialogue, Input, Next, base64, closed_before, hex, shown, unbase64};
use crate::config::ProtocolCheck;

/// One message read: type, body, bytes used; `None` while incomplete.
fn message(b: &[u8]) -> super::Framed<'_> {
    let kind = *b.first()?;
    let len = u32::from_be_bytes(b.get(1..5)?.try_into().ok()?) as usize;
    if !(4..=super::MAX_PENDING).contains(&len) {
        return Some(Err(format!(
            "not a PostgreSQL message: {}",
            shown(&b[..b.len().min(24)])
        )));
    }
    let body = b.get(5..1 + len)?;
    Some(Ok((kind, body, 1 + len)))
}

fn framed(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The message of an ErrorResponse (its `M` field, with the `C` code).
fn error_text(body: &[u8]) -> String {
    let (mut msg, mut code) = (String::new(), String::new());
    for field in body.split(|&b| b == 0) {
        match field.split_first() {
            Some((b'M', m)) => msg = String::from_utf8_lossy(m).into_owned(),
            Some((b'C', c)) => code = String::from_utf8_lossy(c).into_owned(),
            _ => {}
        }
    }
    format!("{msg} (SQLSTATE {code})")
}

fn md5_hex(parts: &[&[u8]]) -> String {
    hex(&super::md5(parts))
}

/// SCRAM-SHA-256's client state (RFC 5802, 7677).
struct Scram {
    nonce: String,
    first_bare: String,
    /// The server signature expected in the final message.
    server_signature: Option<Vec<u8>>,
}

impl Scram {
    fn new(random: &[u8]) -> Scram {
        let nonce = base64(random);
        Scram {
            first_bare: format!("n=,r={nonce}"),
            nonce,
            server_signature: None,
        }
    }

    /// The client-final message for the server-first `sf`.
    fn answer(&mut self, sf: &str, password: &str) -> Result<String, String> {
        let bad = || {
            format!(
                "a SCRAM challenge rvs cannot read: {}",
                shown(sf.as_bytes())
            )
        };
        let field = |k: char| {
            sf.split(',')
                .find_map(|f| f.strip_prefix(k).and_then(|f| f.strip_prefix('=')))
        };
        let nonce = field('r').ok_or_else(bad)?;
        if !nonce.starts_with(&self.nonce) {
            return Err("the server's SCRAM nonce does not extend the client's".into());
        }
        let salt = field('s').and_then(unbase64).ok_or_else(bad)?;
        let iterations: u32 = field('i').and_then(|i| i.parse().ok()).ok_or_else(bad)?;
        let iterations = std::num::NonZeroU32::new(iterations).ok_or_else(bad)?;
        if iterations.get() > 1_000_000 {
            return Err(format!(
                "{iterations} SCRAM iterations: more than a check spends"
            ));
        }
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, &salted);
        let client_key = hmac::sign(&key, b"Client Key");
        let stored = digest::digest(&digest::SHA256, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{},{sf},{without_proof}", self.first_bare);
        let signature = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, stored.as_ref()),
            auth.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac::sign(&key, b"Server Key");
        self.server_signature = Some(
            hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref()),
                auth.as_bytes(),
            )
            .as_ref()
            .to_vec(),
        );
        Ok(format!("{without_proof},p={}", base64(&proof)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    Start,
    Login,
    Query,
    Quit,
}

pub(super) struct Pgsql {
    at: At,
    user: String,
    password: String,
    database: Option<String>,
    query: String,
    scram: Scram,
}

impl Pgsql {
    pub(super) fn new(c: &ProtocolCheck, cx: Context) -> Pgsql {
        Pgsql {
            at: At::Start,
            user: c.login.clone().unwrap_or_default(),
            password: c.password.clone().unwrap_or_default(),
            database: c.database.clone(),
            query: c.query.clone(),
            scram: Scram::new(&cx.random[..18]),
        }
    }

    fn startup(&self) -> Vec<u8> {
        let mut body = 196_608u32.to_be_bytes().to_vec(); // 3.0
        for (k, v) in [
            ("user", Some(self.user.as_str())),
            ("database", self.database.as_deref()),
            ("application_name", Some("rvs-health-check")),
        ] {
            if let Some(v) = v {
                body.extend_from_slice(k.as_bytes());
                body.push(0);
                body.extend_from_slice(v.as_bytes());
                body.push(0);
            }
        }
        body.push(0);
        let mut out = (body.len() as u32 + 4).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    /// An Authentication message: what to answer, if anything.
    fn authenticate(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let code = body
            .get(..4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .ok_or("a malformed authentication request")?;
        let rest = &body[4..];
        let password = |p: &[u8]| {
            let mut b = p.to_vec();
            b.push(0);
            framed(b'p', &b)
        };
        match code {
            0 => Ok(None),
            3 => Ok(Some(password(self.password.as_bytes()))),
            5 => {
                let salt = rest.get(..4).ok_or("a malformed md5 request")?;
                let inner = md5_hex(&[self.password.as_bytes(), self.user.as_bytes()]);
                let outer = md5_hex(&[inner.as_bytes(), salt]);
                Ok(Some(password(format!("md5{outer}").as_bytes())))
            }
            10 => {
                let offers_scram = rest.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256");
                if !offers_scram {
                    return Err("the server offers no SASL login rvs speaks (it speaks SCRAM-SHA-256 without channel binding)".into());
                }
                let first = format!("n,,{}", self.scram.first_bare);
                let mut b = b"SCRAM-SHA-256\0".to_vec();
                b.extend_from_slice(&(first.len() as u32).to_be_bytes());
                b.extend_from_slice(first.as_bytes());
                Ok(Some(framed(b'p', &b)))
            }
            11 => {
                let sf = String::from_utf8_lossy(rest).into_owned();
                let last = self.scram.answer(&sf, &self.password)?;
                Ok(Some(framed(b'p', last.as_bytes())))
            }
            12 => {
                let text = String::from_utf8_lossy(rest);
                let got = text
                    .split(',')
                    .find_map(|f| f.strip_prefix("v="))
                    .and_then(unbase64);
                if got.is_none() || got != self.scram.server_signature {
                    return Err(
                        "the server's SCRAM signature is wrong: it does not know the password"
                            .into(),
                    );
                }
                Ok(None)
            }
            other => Err(format!(
                "the server asks for login method {other}, which rvs does not speak (it speaks password, md5 and SCRAM-SHA-256)"
            )),
        }
    }

    fn quit(&mut self) -> Next {
        self.at = At::Quit;
        Next::Send(framed(b'X', &[]))
    }
}

impl Dialogue for Pgsql {
    fn next(&mut self, input: &mut Input) -> Next {
        match self.at {
            At::Start => {
                self.at = At::Login;
                return Next::Send(self.startup());
            }
            At::Quit => return Next::Done(Ok(())),
            _ => {}
        }
        let (kind, body, used) = match message(input.bytes()) {
            None if input.closed => return closed_before("its answer"),
            None => return Next::Recv,
            Some(Err(e)) => return Next::Done(Err(e)),
            Some(Ok((k, b, u))) => (k, b.to_vec(), u),
        };
        input.consume(used);
        let step: Result<Option<Next>, String> = match (self.at, kind) {
            (_, b'E') => Err(match self.at {
                At::Login => format!("the login is refused: {}", error_text(&body)),
                _ => format!("the query failed: {}", error_text(&body)),
            }),
            // Notices, parameters, the key: read past.
            (_, b'N' | b'S' | b'K') => Ok(None),
            (At::Login, b'R') => self.authenticate(&body).map(|a| a.map(Next::Send)),
            (At::Login, b'Z') => {
                self.at = At::Query;
                let mut q = self.query.as_bytes().to_vec();
                q.push(0);
                Ok(Some(Next::Send(framed(b'Q', &q))))
            }
            (At::Query, b'T') => Ok(None),
            (At::Query, b'D') => Ok(Some(self.quit())),
            (At::Query, b'C' | b'I' | b'Z') => {
                Err(format!("the query {:?} returned no rows", self.query))
            }
            (_, k) => Err(format!(
                "not a PostgreSQL answer (message {:?})",
                char::from(k)
            )),
        };
        match step {
            Ok(None) => self.next(input),
            Ok(Some(n)) => n,
            Err(e) => Next::Done(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{replay, test_check};
    use super::*;
    use crate::config::Protocol;

    #[test]
    fn scram_matches_rfc_7677s_example() {
        // RFC 7677, section 3: user "user", password "pencil".
        let mut s = Scram {
            nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_signature: None,
        };
        let last = s
            .answer(
                "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                "pencil",
            )
            .unwrap();
        assert_eq!(
            last,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            base64(s.server_signature.as_deref().unwrap()),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn md5_login_then_a_row() {
        let mut c = test_check(Protocol::Pgsql);
        c.login = Some("monitor".into());
        c.password = Some("pw".into());
        let cx = Context {
            local: "127.0.0.1:1".parse().unwrap(),
            peer: "127.0.0.1:2".parse().unwrap(),
            random: [7; 32],
        };
        let md5 = framed(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]);
        let ok = framed(b'R', &[0, 0, 0, 0]);
        let param = framed(b'S', b"server_version\x0015.8\x00");
        let ready = framed(b'Z', b"I");
        let desc = framed(b'T', &[0, 1]);
        let row = framed(b'D', &[0, 1, 0, 0, 0, 1, b'1']);
        let all = [md5, ok, param, ready.clone(), desc.clone(), row].concat();
        let (v, sent) = replay(&mut Pgsql::new(&c, cx), &[&all], false, b"");
        assert_eq!(v, Ok(()));
        let want = md5_hex(&[md5_hex(&[b"pw", b"monitor"]).as_bytes(), &[1, 2, 3, 4]]);
        assert_eq!(&sent[1][5..8], b"md5");
        assert_eq!(&sent[1][8..40], want.as_bytes());
        assert_eq!(&sent[2][..1], b"Q");
        let done = framed(b'C', b"SELECT 0\0");
        let (v, _) = replay(
            &mut Pgsql::new(&c, cx),
            &[&framed(b'R', &[0, 0, 0, 0]), &ready, &desc, &done],
            false,
            b"",
        );
        assert!(v.unwrap_err().contains("no rows"));
        let err = framed(b'E', b"SFATAL\0C28P01\0Mpassword authentication failed\0\0");
        let (v, _) = replay(&mut Pgsql::new(&c, cx), &[&err], false, b"");
        assert!(v.unwrap_err().contains("password authentication failed"));
        let (v, _) = replay(
            &mut Pgsql::new(&c, cx),
            &[b"220 mail.test ESMTP\r\n"],
            false,
            b"",
        );
        assert!(v.is_err());
    }
}
