//! The line protocols of mail and news: SMTP (keepalived's SMTP_CHECK:
//! greeting 220, HELO answered 250, QUIT), POP3 and IMAP (ldirectord's:
//! the greeting, then a login when one is given) and NNTP (a greeting
//! that starts with 2).

use super::{Dialogue, Input, Next, closed_before, line_or, read_reply, refused, shown};
use crate::config::ProtocolCheck;

/// Where an exchange is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    Greeting,
    User,
    Pass,
    Login,
    Helo,
    Quit,
}

/// keepalived's SMTP_CHECK.
pub(super) struct Smtp {
    at: At,
    helo: String,
}

impl Smtp {
    pub(super) fn new(c: &ProtocolCheck) -> Smtp {
        Smtp {
            at: At::Greeting,
            helo: c.helo_name.clone(),
        }
    }
}

impl Dialogue for Smtp {
    fn next(&mut self, input: &mut Input) -> Next {
        if self.at == At::Quit {
            return Next::Done(Ok(()));
        }
        let (code, line) = match read_reply(input) {
            None if input.closed => return closed_before("its reply"),
            None => return Next::Recv,
            Some(Err(e)) => return Next::Done(Err(e)),
            Some(Ok(r)) => r,
        };
        match self.at {
            At::Greeting if code == 220 => {
                self.at = At::Helo;
                Next::Send(format!("HELO {}\r\n", self.helo).into_bytes())
            }
            At::Greeting => Next::Done(refused("the greeting is not 220", &line)),
            At::Helo if code == 250 => {
                self.at = At::Quit;
                Next::Send(b"QUIT\r\n".to_vec())
            }
            _ => Next::Done(refused("HELO is not answered 250", &line)),
        }
    }
}

/// ldirectord's POP3 check.
pub(super) struct Pop {
    at: At,
    login: Option<(String, String)>,
}

impl Pop {
    pub(super) fn new(c: &ProtocolCheck) -> Pop {
        Pop {
            at: At::Greeting,
            login: login(c),
        }
    }
}

/// The login and password of a check that logs in when given one.
fn login(c: &ProtocolCheck) -> Option<(String, String)> {
    c.login
        .clone()
        .map(|l| (l, c.password.clone().unwrap_or_default()))
}

impl Dialogue for Pop {
    fn next(&mut self, input: &mut Input) -> Next {
        if self.at == At::Quit {
            return Next::Done(Ok(()));
        }
        let line = match line_or(input, "its reply") {
            Ok(l) => l,
            Err(next) => return next,
        };
        let ok = line.starts_with("+OK");
        let quit = |at: &mut At| {
            *at = At::Quit;
            Next::Send(b"QUIT\r\n".to_vec())
        };
        match (self.at, &self.login) {
            (At::Greeting, _) if !ok => Next::Done(refused("not a POP3 greeting", &line)),
            (At::Greeting, None) => quit(&mut self.at),
            (At::Greeting, Some((user, _))) => {
                self.at = At::User;
                Next::Send(format!("USER {user}\r\n").into_bytes())
            }
            (At::User, Some((_, pass))) if ok => {
                self.at = At::Pass;
                Next::Send(format!("PASS {pass}\r\n").into_bytes())
            }
            (At::Pass, _) if ok => quit(&mut self.at),
            _ => Next::Done(refused("the login is refused", &line)),
        }
    }
}

/// ldirectord's IMAP check.
pub(super) struct Imap {
    at: At,
    login: Option<(String, String)>,
}

impl Imap {
    pub(super) fn new(c: &ProtocolCheck) -> Imap {
        Imap {
            at: At::Greeting,
            login: login(c),
        }
    }
}

/// An IMAP quoted string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Dialogue for Imap {
    fn next(&mut self, input: &mut Input) -> Next {
        if self.at == At::Quit {
            return Next::Done(Ok(()));
        }
        let line = match line_or(input, "its reply") {
            Ok(l) => l,
            Err(next) => return next,
        };
        let logout = |at: &mut At| {
            *at = At::Quit;
            Next::Send(b"r2 LOGOUT\r\n".to_vec())
        };
        match self.at {
            At::Greeting => {
                if !(line.starts_with("* OK") || line.starts_with("* PREAUTH")) {
                    return Next::Done(refused("not an IMAP greeting", &line));
                }
                match &self.login {
                    None => logout(&mut self.at),
                    Some((user, pass)) => {
                        self.at = At::Login;
                        Next::Send(
                            format!("r1 LOGIN {} {}\r\n", quoted(user), quoted(pass)).into_bytes(),
                        )
                    }
                }
            }
            // Untagged lines (capabilities) until the tagged answer.
            _ if line.starts_with("* ") => Next::Recv,
            _ if line.starts_with("r1 OK") => logout(&mut self.at),
            _ => Next::Done(refused("the login is refused", &line)),
        }
    }
}

/// ldirectord's NNTP check: a greeting that starts with 2.
pub(super) struct Nntp {
    greeted: bool,
}

impl Nntp {
    pub(super) fn new() -> Nntp {
        Nntp { greeted: false }
    }
}

impl Dialogue for Nntp {
    fn next(&mut self, input: &mut Input) -> Next {
        if self.greeted {
            return Next::Done(Ok(()));
        }
        let line = match line_or(input, "its greeting") {
            Ok(l) => l,
            Err(next) => return next,
        };
        if line.starts_with('2') {
            self.greeted = true;
            Next::Send(b"QUIT\r\n".to_vec())
        } else {
            Next::Done(Err(format!(
                "the greeting does not start with 2: {}",
                shown(line.as_bytes())
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{replay, test_check as check};
    use super::*;
    use crate::config::Protocol;

    #[test]
    fn smtp_greets_helos_and_quits() {
        let c = check(Protocol::Smtp);
        let (v, sent) = replay(
            &mut Smtp::new(&c),
            &[b"220-mx.test ESMTP\r\n220 ready\r\n", b"250 mx.test\r\n"],
            false,
            b"",
        );
        assert_eq!(v, Ok(()));
        assert_eq!(
            sent,
            [b"HELO checker.test\r\n".to_vec(), b"QUIT\r\n".to_vec()]
        );
        // A busy server, an IMAP server, a silent one that closes.
        let (v, _) = replay(&mut Smtp::new(&c), &[b"554 go away\r\n"], false, b"");
        assert!(v.unwrap_err().contains("554 go away"));
        let (v, _) = replay(&mut Smtp::new(&c), &[b"* OK IMAP4rev1\r\n"], false, b"");
        assert!(v.unwrap_err().contains("not a reply line"));
        let (v, _) = replay(&mut Smtp::new(&c), &[], false, b"");
        assert!(v.unwrap_err().contains("closed"));
        let (v, _) = replay(
            &mut Smtp::new(&c),
            &[b"220 x\r\n", b"500 no\r\n"],
            false,
            b"",
        );
        assert!(v.unwrap_err().contains("HELO"));
    }

    #[test]
    fn pop_and_imap_log_in_when_given_a_login() {
        let mut c = check(Protocol::Pop);
        let (v, sent) = replay(&mut Pop::new(&c), &[b"+OK ready\r\n"], false, b"");
        assert_eq!((v, sent), (Ok(()), vec![b"QUIT\r\n".to_vec()]));
        c.login = Some("u".into());
        c.password = Some("p".into());
        let (v, sent) = replay(
            &mut Pop::new(&c),
            &[b"+OK ready\r\n", b"+OK\r\n", b"+OK logged in\r\n"],
            false,
            b"",
        );
        assert_eq!(v, Ok(()));
        assert_eq!(sent[1], b"PASS p\r\n");
        let (v, _) = replay(
            &mut Pop::new(&c),
            &[b"+OK ready\r\n", b"+OK\r\n", b"-ERR [AUTH] no\r\n"],
            false,
            b"",
        );
        assert!(v.unwrap_err().contains("refused"));

        let mut c = check(Protocol::Imap);
        c.login = Some("u\"".into());
        c.password = Some("p".into());
        let (v, sent) = replay(
            &mut Imap::new(&c),
            &[
                b"* OK [CAPABILITY IMAP4rev1] ready\r\n",
                b"* CAPABILITY X\r\nr1 OK done\r\n",
            ],
            false,
            b"",
        );
        assert_eq!(v, Ok(()));
        assert_eq!(sent[0], b"r1 LOGIN \"u\\\"\" \"p\"\r\n");
        let (v, _) = replay(
            &mut Imap::new(&c),
            &[b"* OK ready\r\n", b"r1 NO [AUTHENTICATIONFAILED]\r\n"],
            false,
            b"",
        );
        assert!(v.is_err());
        let (v, _) = replay(&mut Imap::new(&c), &[b"+OK POP3\r\n"], false, b"");
        assert!(v.unwrap_err().contains("not an IMAP greeting"));
    }

    #[test]
    fn nntp_wants_a_2xx_greeting() {
        let (v, _) = replay(&mut Nntp::new(), &[b"200 news ready\r\n"], false, b"");
        assert_eq!(v, Ok(()));
        let (v, _) = replay(&mut Nntp::new(), &[b"502 no permission\r\n"], false, b"");
        assert!(v.is_err());
    }
}
