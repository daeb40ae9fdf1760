//! A small blocking HTTP/1.1 client for the admin API of a running rvs:
//! what `rvsadm` and `rvs show-config` use. One request per connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Where the admin API is, and the token for edits.
#[derive(Debug, Clone)]
pub struct AdminClient {
    /// `HOST:PORT` as given.
    pub target: String,
    token: Option<String>,
    timeout: Duration,
}

/// The default admin address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9180";

/// A response: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The API's error code and message (`{"error": .., "message": ..}`).
    pub fn error(&self) -> (String, String) {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap_or_default();
        let code = v["error"].as_str().unwrap_or("").to_owned();
        let message = v["message"]
            .as_str()
            .map_or_else(|| self.text().trim().to_owned(), str::to_owned);
        (code, message)
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address does not resolve.
    #[error("{0}: not an address (write HOST:PORT)")]
    Address(String),
    /// No connection, or it broke.
    #[error("{target}: {error}")]
    Io {
        /// Where.
        target: String,
        /// What.
        error: std::io::Error,
    },
    /// The answer is not HTTP.
    #[error("{0}: not an HTTP answer")]
    Protocol(String),
}

impl AdminClient {
    /// A client of the admin API at `target` (`HOST:PORT`).
    pub fn new(target: &str, token: Option<String>) -> AdminClient {
        AdminClient {
            target: target.to_owned(),
            token: token.filter(|t| !t.is_empty()),
            timeout: Duration::from_secs(10),
        }
    }

    /// The same client, giving up on a connect, a read or a write after
    /// `timeout`.
    pub fn with_timeout(self, timeout: Duration) -> AdminClient {
        AdminClient { timeout, ..self }
    }

    /// From the flag, else `RVS_ADMIN`, else the default; the token from
    /// the flag, else `RVS_ADMIN_TOKEN`.
    pub fn from_env(admin: Option<String>, token: Option<String>) -> AdminClient {
        let target = admin
            .or_else(|| std::env::var("RVS_ADMIN").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| DEFAULT_ADMIN.to_owned());
        let token = token.or_else(|| std::env::var("RVS_ADMIN_TOKEN").ok());
        AdminClient::new(&target, token)
    }

    fn addrs(&self) -> Result<Vec<SocketAddr>, ClientError> {
        self.target
            .to_socket_addrs()
            .map(Iterator::collect)
            .map_err(|_| ClientError::Address(self.target.clone()))
    }

    /// Sends one request; `body` is JSON when given.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Reply, ClientError> {
        let io = |error| ClientError::Io {
            target: self.target.clone(),
            error,
        };
        let mut last = None;
        let mut stream = None;
        for a in self.addrs()? {
            match TcpStream::connect_timeout(&a, self.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut s = match stream {
            Some(s) => s,
            None => {
                return Err(io(last.unwrap_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
                })));
            }
        };
        s.set_read_timeout(Some(self.timeout)).map_err(io)?;
        s.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: rvsadm\r\nAccept: application/json\r\nConnection: close\r\n",
            self.target
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() || method != "GET" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).map_err(io)?;
        s.write_all(body).map_err(io)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(io)?;
        parse_reply(&raw).ok_or_else(|| ClientError::Protocol(self.target.clone()))
    }

    /// `GET path`, as JSON.
    pub fn get_json(&self, path: &str) -> Result<Result<serde_json::Value, Reply>, ClientError> {
        let r = self.request("GET", path, None)?;
        if !r.ok() {
            return Ok(Err(r));
        }
        match serde_json::from_slice(&r.body) {
            Ok(v) => Ok(Ok(v)),
            Err(_) => Err(ClientError::Protocol(self.target.clone())),
        }
    }
}

/// Status and body of a raw HTTP/1.1 response (Content-Length, chunked or
/// until the end).
fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        let (k, v) = l.split_once(':')?;
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k == "content-length" {
            length = v.parse::<usize>().ok();
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        let mut out = Vec::new();
        let mut at = rest;
        loop {
            let nl = at.windows(2).position(|w| w == b"\r\n")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&at[..nl]).ok()?.trim(), 16).ok()?;
            at = &at[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(at.get(..size)?);
            at = at.get(size + 2..)?;
        }
        out
    } else if let Some(n) = length {
        rest.get(..n)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(Reply { status, body })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn replies_are_parsed_in_each_framing() {
        let r = parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let r = parse_reply(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        let r = parse_reply(b"HTTP/1.1 500 X\r\n\r\nuntil the end").unwrap();
        assert_eq!(r.body, b"until the end");
        assert!(parse_reply(b"garbage").is_none());
        let e = Reply {
            status: 409,
            body: br#"{"error":"service_exists","message":"m"}"#.to_vec(),
        };
        assert_eq!(e.error(), ("service_exists".into(), "m".into()));
    }
}
