//! ldirectord's FTP check: the greeting, a login (anonymous unless one is
//! given, as Net::FTP), and with `path` the file, fetched in passive mode
//! (EPSV, else PASV; the data connection goes to the server's own
//! address, whatever PASV names) and matched against `expect_body`.

use super::{Dialogue, Input, Next, closed_before, read_reply, refused};
use crate::config::{BodyPattern, ProtocolCheck};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    Greeting,
    User,
    Pass,
    Type,
    Epsv,
    Pasv,
    /// The data connection is open: RETR.
    Open,
    Retr,
    Transfer,
    Quit,
}

pub(super) struct Ftp {
    at: At,
    user: String,
    pass: String,
    path: Option<String>,
    expect: Option<BodyPattern>,
    data: Option<Vec<u8>>,
}

impl Ftp {
    pub(super) fn new(c: &ProtocolCheck) -> Ftp {
        let (user, pass) = match &c.login {
            Some(l) => (l.clone(), c.password.clone().unwrap_or_default()),
            None => ("anonymous".into(), "rvs@".into()),
        };
        Ftp {
            at: At::Greeting,
            user,
            pass,
            path: c.path.clone(),
            expect: c.expect_body.clone(),
            data: None,
        }
    }

    fn send(&mut self, at: At, line: String) -> Next {
        self.at = at;
        Next::Send(line.into_bytes())
    }

    /// Logged in: the file, or done.
    fn logged_in(&mut self) -> Next {
        if self.path.is_some() {
            self.send(At::Type, "TYPE I\r\n".into())
        } else {
            self.send(At::Quit, "QUIT\r\n".into())
        }
    }
}

/// The port of an EPSV answer: `229 Entering Extended Passive Mode (|||6446|)`.
fn epsv_port(line: &str) -> Option<u16> {
    let inner = line.split_once('(')?.1.split_once(')')?.0;
    let d = inner.chars().next()?;
    let mut parts = inner.split(d);
    // (d d d port d): empty, empty, empty, port, empty.
    parts.nth(3)?.parse().ok()
}

/// The port of a PASV answer: `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`.
fn pasv_port(line: &str) -> Option<u16> {
    let start = line[3..].find(|c: char| c.is_ascii_digit())? + 3;
    let nums: Vec<u16> = line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(6)
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    match nums.as_slice() {
        [_, _, _, _, p1, p2] if *p1 < 256 && *p2 < 256 => Some(p1 * 256 + p2),
        _ => None,
    }
}

impl Dialogue for Ftp {
    fn next(&mut self, input: &mut Input) -> Next {
        match self.at {
            At::Quit => return Next::Done(Ok(())),
            At::Transfer if self.data.is_none() => return Next::ReadData,
            At::Open => {
                let retr = format!("RETR {}\r\n", self.path.as_deref().unwrap_or(""));
                return self.send(At::Retr, retr);
            }
            _ => {}
        }
        let (code, line) = match read_reply(input) {
            None if input.closed => return closed_before("its reply"),
            None => return Next::Recv,
            Some(Err(e)) => return Next::Done(Err(e)),
            Some(Ok(r)) => r,
        };
        match (self.at, code) {
            (At::Greeting, 220) => {
                let user = format!("USER {}\r\n", self.user);
                self.send(At::User, user)
            }
            (At::Greeting, _) => Next::Done(refused("the greeting is not 220", &line)),
            (At::User, 230) => self.logged_in(),
            (At::User, 331) => {
                let pass = format!("PASS {}\r\n", self.pass);
                self.send(At::Pass, pass)
            }
            (At::Pass, 230 | 202) => self.logged_in(),
            (At::User | At::Pass, _) => Next::Done(refused("the login is refused", &line)),
            (At::Type, 200) => self.send(At::Epsv, "EPSV\r\n".into()),
            (At::Type, _) => Next::Done(refused("TYPE I is refused", &line)),
            (At::Epsv, 229) => match epsv_port(&line) {
                Some(p) => {
                    self.at = At::Open;
                    Next::OpenData(p)
                }
                None => Next::Done(refused("an EPSV answer without a port", &line)),
            },
            (At::Epsv, _) => self.send(At::Pasv, "PASV\r\n".into()),
            (At::Pasv, 227) => match pasv_port(&line) {
                Some(p) => {
                    self.at = At::Open;
                    Next::OpenData(p)
                }
                None => Next::Done(refused("a PASV answer without a port", &line)),
            },
            (At::Pasv, _) => Next::Done(refused("passive mode is refused", &line)),
            (At::Retr, 125 | 150) => {
                self.at = At::Transfer;
                Next::ReadData
            }
            (At::Retr, _) => Next::Done(refused(
                &format!("the file {} is refused", self.path.as_deref().unwrap_or("")),
                &line,
            )),
            (At::Transfer, 226 | 250) => {
                let data = self.data.take().unwrap_or_default();
                if let Some(re) = &self.expect
                    && !re.0.is_match(&data)
                {
                    return Next::Done(Err(format!(
                        "the file does not match expect_body {:?}",
                        re.as_str()
                    )));
                }
                self.send(At::Quit, "QUIT\r\n".into())
            }
            _ => Next::Done(refused("the transfer failed", &line)),
        }
    }

    fn data(&mut self, bytes: &[u8]) {
        self.data = Some(bytes.to_vec());
    }
}

#[cfg(test)]
mod tests {
    use super::super::{replay, test_check};
    use super::*;
    use crate::config::Protocol;

    #[test]
    fn ports_of_passive_answers() {
        assert_eq!(
            epsv_port("229 Entering Extended Passive Mode (|||6446|)"),
            Some(6446)
        );
        assert_eq!(
            pasv_port("227 Entering Passive Mode (127,0,0,1,39,16)."),
            Some(10000)
        );
        assert_eq!(
            pasv_port("227 Entering Passive Mode (127,0,0,1,300,16)"),
            None
        );
        assert_eq!(epsv_port("229 nothing"), None);
    }

    #[test]
    fn an_anonymous_login_and_a_file() {
        let mut c = test_check(Protocol::Ftp);
        let (v, sent) = replay(
            &mut Ftp::new(&c),
            &[
                b"220 (vsFTPd 3.0.3)\r\n",
                b"331 Please specify the password.\r\n",
                b"230 Login successful.\r\n",
            ],
            false,
            b"",
        );
        assert_eq!(v, Ok(()));
        assert_eq!(sent[0], b"USER anonymous\r\n");
        c.path = Some("/ok.txt".into());
        c.expect_body = Some(BodyPattern::new("^alive").unwrap());
        let answers: [&[u8]; 7] = [
            b"220 ready\r\n",
            b"331 pass\r\n",
            b"230 in\r\n",
            b"200 Switching to Binary mode.\r\n",
            b"229 Entering Extended Passive Mode (|||40000|)\r\n",
            b"150 Opening BINARY mode data connection\r\n",
            b"226 Transfer complete.\r\n",
        ];
        let (v, sent) = replay(&mut Ftp::new(&c), &answers, false, b"alive\n");
        assert_eq!(v, Ok(()));
        assert!(sent.contains(&b"RETR /ok.txt\r\n".to_vec()), "{sent:?}");
        let (v, _) = replay(&mut Ftp::new(&c), &answers, false, b"dead\n");
        assert!(v.unwrap_err().contains("expect_body"));
        let (v, _) = replay(&mut Ftp::new(&c), &[b"+OK POP3 ready\r\n"], false, b"");
        assert!(v.is_err());
    }
}
