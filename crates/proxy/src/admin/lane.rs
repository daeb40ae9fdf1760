//! The probe lane: admin connections beyond the caps (`admin::admission`)
//! are read for one request head, within [`LANE_TIMEOUT`] and
//! [`MAX_HEAD`] bytes, and answered only when they ask for `/healthz` or
//! `/readyz`; anything else gets 503 and a `Retry-After`, and the
//! connection is closed either way.
//!
//! The head is read by [`parse`], a small sans-io reader of an HTTP/1.x
//! request head (the request line and the header lines), which the fuzz
//! target `admin_request` drives together with the `admin::guard` rules.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// How long the lane waits for a request head.
pub const LANE_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest head the lane reads.
pub const MAX_HEAD: usize = 4096;

/// A request head, as far as it has arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// The head has not ended yet.
    Incomplete,
    /// A whole head.
    Request(Head<'a>),
    /// Not an HTTP/1.x request head.
    Bad,
}

/// A request head: its line's parts and its header lines.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'a> {
    /// The method.
    pub method: &'a str,
    /// The request target (a path, or an absolute URI).
    pub target: &'a str,
    /// The header lines between the request line and the blank line.
    lines: &'a str,
}

impl<'a> Head<'a> {
    /// The first header named `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.lines.split('\n').find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The target's path: without the query, and without the scheme and
    /// authority of an absolute target.
    pub fn path(&self) -> &'a str {
        let t = self.target;
        let t = match t.find("://") {
            Some(i) => t[i + 3..].find('/').map_or("/", |j| &t[i + 3 + j..]),
            None => t,
        };
        t.split_once('?').map_or(t, |(p, _)| p)
    }
}

/// Reads the head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    let end = match find(buf, b"\r\n\r\n") {
        Some(i) => i,
        None if find(buf, b"\n\n").is_some() => return Parsed::Bad,
        None => return Parsed::Incomplete,
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Bad;
    };
    let (line, lines) = head.split_once("\r\n").unwrap_or((head, ""));
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Bad;
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase());
    let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !token(method) || !visible(target) || !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Parsed::Bad;
    }
    if lines
        .split("\r\n")
        .any(|l| !l.contains(':') || l.starts_with([' ', '\t']))
        && !lines.is_empty()
    {
        return Parsed::Bad;
    }
    Parsed::Request(Head {
        method,
        target,
        lines,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Serves one connection of the lane: `probe` answers a path with a status
/// and a body when it is a probe's.
pub(crate) async fn serve(
    mut stream: TcpStream,
    closed: CancellationToken,
    probe: impl Fn(&str) -> Option<(u16, &'static str)>,
) {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut have = 0;
    let read = async {
        loop {
            match parse(&buf[..have]) {
                Parsed::Incomplete if have < buf.len() => {}
                Parsed::Request(h) => {
                    let answer = if matches!(h.method, "GET" | "HEAD") {
                        probe(h.path()).map(|(status, body)| (status, body, h.method == "HEAD"))
                    } else {
                        None
                    };
                    return Some(answer);
                }
                _ => return None,
            }
            match stream.read(&mut buf[have..]).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => have += n,
            }
        }
    };
    let answer = tokio::select! {
        () = closed.cancelled() => return,
        r = tokio::time::timeout(LANE_TIMEOUT, read) => match r {
            Ok(Some(a)) => a,
            _ => return,
        },
    };
    let (status, reason, body, head_only) = match answer {
        Some((200, body, head)) => (200, "OK", body, head),
        Some((status, body, head)) => (status, "Service Unavailable", body, head),
        None => (
            503,
            "Service Unavailable",
            "{\"error\": \"busy\", \"message\": \"too many admin connections: only /healthz and /readyz are answered now\"}\n",
            false,
        ),
    };
    let kind = if body.starts_with('{') {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    if status == 503 && kind == "application/json" {
        out.push_str("Retry-After: 1\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(body);
    }
    let _ = tokio::time::timeout(LANE_TIMEOUT, stream.write_all(out.as_bytes())).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_read_whole_or_refused() {
        let h = b"GET /readyz?x=1 HTTP/1.1\r\nHost: 127.0.0.1:9180\r\nX-A:b\r\n\r\nrest";
        let Parsed::Request(head) = parse(h) else {
            panic!("a head");
        };
        assert_eq!((head.method, head.path()), ("GET", "/readyz"));
        assert_eq!(head.header("host"), Some("127.0.0.1:9180"));
        assert_eq!(head.header("x-a"), Some("b"));
        assert_eq!(head.header("origin"), None);
        assert_eq!(
            parse(b"GET /healthz HTTP/1.1\r\nHost: x"),
            Parsed::Incomplete
        );
        assert_eq!(parse(b""), Parsed::Incomplete);
        for bad in [
            &b"\x16\x03\x01\x02\x00garbage\r\n\r\n"[..],
            b"get /healthz HTTP/1.1\r\n\r\n",
            b"GET  /healthz HTTP/1.1\r\n\r\n",
            b"GET /healthz HTTP/2\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\n folded: x\r\n\r\n",
            b"GET /healthz HTTP/1.1\n\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Parsed::Bad,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let Parsed::Request(abs) = parse(b"GET http://h:1/healthz HTTP/1.0\r\n\r\n") else {
            panic!("a head");
        };
        assert_eq!(abs.path(), "/healthz");
        let Parsed::Request(bare) = parse(b"GET http://h:1 HTTP/1.0\r\n\r\n") else {
            panic!("a head");
        };
        assert_eq!(bare.path(), "/");
    }
}
