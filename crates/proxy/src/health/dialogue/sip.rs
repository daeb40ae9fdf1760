//! ldirectord's SIP check: an OPTIONS request, over UDP or TCP, that the
//! server must answer `SIP/2.0 200`. Provisional answers (1xx) are read
//! past; an answer to another request (another Call-ID) is ignored.

use super::{Context, Dialogue, Input, Next, closed_before, hex, shown};
use crate::config::ProtocolCheck;

pub(super) struct Sip {
    request: Option<Vec<u8>>,
    call_id: String,
    tcp: bool,
}

impl Sip {
    pub(super) fn new(c: &ProtocolCheck, cx: Context) -> Sip {
        let host = match cx.peer {
            std::net::SocketAddr::V4(a) => a.to_string(),
            std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        let local = match cx.local {
            std::net::SocketAddr::V4(a) => a.to_string(),
            std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        let uri = c.uri.clone().unwrap_or_else(|| format!("sip:{host}"));
        let call_id = format!("{}@rvs", hex(&cx.random[..12]));
        let branch = hex(&cx.random[12..20]);
        let tag = hex(&cx.random[20..24]);
        let transport = if c.sip_tcp { "TCP" } else { "UDP" };
        let request = format!(
            "OPTIONS {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {local};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             To: <{uri}>\r\n\
             From: <sip:rvs-health-check@{local}>;tag={tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Contact: <sip:rvs-health-check@{local}>\r\n\
             Accept: application/sdp\r\n\
             User-Agent: rvs-health-check\r\n\
             Content-Length: 0\r\n\r\n"
        );
        Sip {
            request: Some(request.into_bytes()),
            call_id,
            tcp: c.sip_tcp,
        }
    }
}

/// An answer's status code and the value of its Call-ID header.
fn answer(head: &str) -> Result<(u16, Option<&str>), String> {
    let mut lines = head.split("\r\n").flat_map(|l| l.split('\n'));
    let status = lines.next().unwrap_or("");
    let code = status
        .strip_prefix("SIP/2.0 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("not a SIP answer: {}", shown(status.as_bytes())))?;
    let call_id = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("call-id") || name == "i").then(|| value.trim())
    });
    Ok((code, call_id))
}

impl Dialogue for Sip {
    fn next(&mut self, input: &mut Input) -> Next {
        if let Some(r) = self.request.take() {
            return Next::Send(r);
        }
        // Over UDP the datagram is the answer; over TCP, up to the blank
        // line (OPTIONS answers' bodies are not read).
        let head = if self.tcp {
            let b = input.bytes();
            if b.len() >= 8 && !b.starts_with(b"SIP/2.0 ") {
                return Next::Done(Err(format!("not a SIP answer: {}", shown(b))));
            }
            let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
                return if input.closed {
                    closed_before("its answer")
                } else {
                    Next::Recv
                };
            };
            let head = String::from_utf8_lossy(&b[..end]).into_owned();
            let body = content_length(&head);
            if b.len() < end + 4 + body {
                return Next::Recv;
            }
            input.consume(end + 4 + body);
            head
        } else {
            if input.bytes().is_empty() {
                return Next::Recv;
            }
            let head = String::from_utf8_lossy(input.bytes()).into_owned();
            input.clear();
            head
        };
        match answer(&head) {
            Err(e) if self.tcp => Next::Done(Err(e)),
            // A stray datagram: wait for ours.
            Err(_) => Next::Recv,
            Ok((_, Some(id))) if id != self.call_id => Next::Recv,
            Ok((100..=199, _)) => self.next(input),
            Ok((200, _)) => Next::Done(Ok(())),
            Ok(_) => Next::Done(Err(format!(
                "OPTIONS is answered {}",
                shown(head.lines().next().unwrap_or("").as_bytes())
            ))),
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case("content-length") || name == "l")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
        .min(super::MAX_PENDING)
}

#[cfg(test)]
mod tests {
    use super::super::{replay, test_check};
    use super::*;
    use crate::config::Protocol;

    fn cx() -> Context {
        Context {
            local: "127.0.0.1:5070".parse().unwrap(),
            peer: "127.0.0.1:5060".parse().unwrap(),
            random: [0xab; 32],
        }
    }

    #[test]
    fn options_is_answered_200() {
        let c = test_check(Protocol::Sip);
        let mut d = Sip::new(&c, cx());
        let id = d.call_id.clone();
        let ok = format!("SIP/2.0 200 OK\r\nCall-ID: {id}\r\nContent-Length: 0\r\n\r\n");
        let other = "SIP/2.0 200 OK\r\nCall-ID: someone-else\r\n\r\n";
        let (v, sent) = replay(
            &mut d,
            &[b"garbage", other.as_bytes(), ok.as_bytes()],
            true,
            b"",
        );
        assert_eq!(v, Ok(()));
        let req = String::from_utf8(sent[0].clone()).unwrap();
        assert!(
            req.starts_with("OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n"),
            "{req}"
        );
        assert!(
            req.contains("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK"),
            "{req}"
        );
        let busy = format!("SIP/2.0 503 Service Unavailable\r\nCall-ID: {id}\r\n\r\n");
        let (v, _) = replay(&mut Sip::new(&c, cx()), &[busy.as_bytes()], true, b"");
        assert!(v.unwrap_err().contains("503"));
        let (v, _) = replay(&mut Sip::new(&c, cx()), &[], true, b"");
        assert!(v.is_err());
    }

    #[test]
    fn over_tcp_the_answer_is_read_to_its_blank_line() {
        let mut c = test_check(Protocol::Sip);
        c.sip_tcp = true;
        let d = Sip::new(&c, cx());
        let id = d.call_id.clone();
        let ok = format!(
            "SIP/2.0 100 Trying\r\nCall-ID: {id}\r\n\r\nSIP/2.0 200 OK\r\nCall-ID: {id}\r\nContent-Length: 2\r\n\r\nab"
        );
        let (a, b) = ok.as_bytes().split_at(30);
        let (v, _) = replay(&mut Sip::new(&c, cx()), &[a, b], false, b"");
        assert_eq!(v, Ok(()));
        let (v, _) = replay(
            &mut Sip::new(&c, cx()),
            &[b"220 smtp.test ESMTP\r\n"],
            false,
            b"",
        );
        assert!(v.unwrap_err().contains("not a SIP answer"));
    }
}
