//! A `tcp` check's `steps`, in order: bytes sent, and answers waited for
//! (HAProxy's `tcp-check send`/`expect`, ldirectord's simpletcp). An
//! expectation reads until what came since the last one contains its
//! bytes or matches its pattern; the text it matched is consumed.

use super::{Dialogue, Input, Next, shown};
use crate::config::TcpStep;

pub(super) struct Script {
    steps: Vec<TcpStep>,
    at: usize,
}

impl Script {
    pub(super) fn new(steps: &[TcpStep]) -> Script {
        Script {
            steps: steps.to_vec(),
            at: 0,
        }
    }
}

impl Dialogue for Script {
    fn next(&mut self, input: &mut Input) -> Next {
        let Some(step) = self.steps.get(self.at) else {
            return Next::Done(Ok(()));
        };
        let found = match step {
            TcpStep::Send(b) => {
                self.at += 1;
                return Next::Send(b.clone());
            }
            TcpStep::Expect(want) => input
                .bytes()
                .windows(want.len().max(1))
                .position(|w| w == want.as_slice())
                .map(|at| at + want.len()),
            TcpStep::ExpectRegex(re) => re.0.find(input.bytes()).map(|m| m.end()),
        };
        match found {
            Some(end) => {
                input.consume(end);
                self.at += 1;
                self.next(input)
            }
            None if input.closed => {
                let what = match step {
                    TcpStep::ExpectRegex(re) => format!("expect_regex {:?}", re.as_str()),
                    TcpStep::Expect(b) => format!("expect {}", shown(b)),
                    TcpStep::Send(_) => String::new(),
                };
                let got = input.bytes();
                Next::Done(Err(if got.is_empty() {
                    format!("the server closed before {what}")
                } else {
                    format!("{what} not found in {}", shown(got))
                }))
            }
            None => Next::Recv,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::replay;
    use super::*;
    use crate::config::BodyPattern;

    #[test]
    fn steps_run_in_order() {
        let steps = [
            TcpStep::Send(b"PING\r\n".to_vec()),
            TcpStep::Expect(b"+PONG".to_vec()),
            TcpStep::Send(b"INFO\r\n".to_vec()),
            TcpStep::ExpectRegex(BodyPattern::new("role:(master|slave)").unwrap()),
        ];
        let (v, sent) = replay(
            &mut Script::new(&steps),
            &[b"+PO", b"NG\r\n$30\r\nrole:", b"master\r\n"],
            false,
            b"",
        );
        assert_eq!(v, Ok(()));
        assert_eq!(sent, [b"PING\r\n".to_vec(), b"INFO\r\n".to_vec()]);
        // The pattern only sees what came after +PONG: a server that says
        // role before it fails.
        let (v, _) = replay(
            &mut Script::new(&steps),
            &[b"role:master +PONG\r\n"],
            false,
            b"",
        );
        assert!(v.unwrap_err().contains("role:"), "");
        let (v, _) = replay(&mut Script::new(&steps), &[], false, b"");
        assert!(v.unwrap_err().contains("closed before expect"));
    }
}
