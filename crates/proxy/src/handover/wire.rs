//! What one rvs hands the next in a binary upgrade, besides its listening
//! sockets: the messages on the state channel ([`super::channel`]), and
//! their encoding. Sans-io: bytes in, messages out.
//!
//! The exchange, once the new process has bound every address (it serves
//! none yet):
//!
//! 1. new → old: [`Message::Hello`] with the version it speaks.
//! 2. old → new: [`Message::Health`] (the checked servers' verdicts),
//!    [`Message::Templates`] (persistence templates, in batches), then [`Message::Sessions`] (UDP sessions, in batches, each
//!    session's upstream socket passed alongside in the same order), then
//!    [`Message::End`] with the counts sent.
//! 3. The new process adopts them, starts serving, and says `READY` on the
//!    pipe ([`super::say_ready`]).
//!
//! Each message is one JSON object in one datagram of a `SOCK_SEQPACKET`
//! socket: the two processes may be different versions of rvs, and JSON
//! lets either ignore what it does not know (fields, and whole messages of
//! a type it does not know) rather than fail the upgrade.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The version of the exchange this rvs speaks.
pub const VERSION: u32 = 1;

/// The largest message either side sends or accepts.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// Sessions per [`Message::Sessions`]: the descriptors passed with one
/// message (at most 253 on Linux, `SCM_MAX_FD`).
pub const SESSIONS_PER_MESSAGE: usize = 64;

/// Templates per [`Message::Templates`], servers per [`Message::Health`].
pub const TEMPLATES_PER_MESSAGE: usize = 512;

/// One message of the exchange.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// The new process is bound and waits for the state.
    Hello {
        /// The version it speaks.
        version: u32,
    },
    /// Health verdicts of checked real servers: the new process starts
    /// from them, not from "up" (or "down" under `alpha`), until its own
    /// checks conclude.
    Health {
        /// A batch of them.
        servers: Vec<HealthState>,
    },
    /// Persistence templates.
    Templates {
        /// A batch of them.
        templates: Vec<TemplateState>,
    },
    /// UDP sessions; the message carries one descriptor per session, in
    /// order: its upstream socket.
    Sessions {
        /// A batch of them.
        sessions: Vec<SessionState>,
    },
    /// Everything was sent.
    End {
        /// Templates sent.
        templates: usize,
        /// Sessions sent.
        sessions: usize,
    },
    /// A message of a later version, ignored.
    #[serde(other)]
    Unknown,
}

/// A checked real server's health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    /// The service it belongs to.
    pub service: String,
    /// The real server.
    pub address: SocketAddr,
    /// Up: every check passes and it is not ejected.
    pub up: bool,
    /// The weight a dynamic program check set.
    #[serde(default)]
    pub weight: Option<i32>,
    /// Why it is down.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A persistence template (`rvsadm -Lnc`'s `NONE` entries).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateState {
    /// The service it belongs to.
    pub service: String,
    /// The client's network (its address under the netmask).
    pub client: IpAddr,
    /// The virtual address and port.
    pub vaddr: IpAddr,
    /// The virtual port.
    pub vport: u16,
    /// The real server it sends its clients to.
    pub dest: SocketAddr,
    /// Milliseconds until it expires.
    pub remaining_ms: u64,
    /// Connections it controlled in the process before (which keeps them).
    #[serde(default)]
    pub controlled: u32,
    /// Its persistence engine's data (a SIP Call-ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pe: Option<Vec<u8>>,
}

/// A UDP session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// The service it belongs to.
    pub service: String,
    /// The listening socket's bound address.
    pub listen: SocketAddr,
    /// The datagrams' source: the session's key, where replies go.
    pub peer: SocketAddr,
    /// The client (a PROXY header's source, or the peer itself).
    pub client: SocketAddr,
    /// The real server; `None` for one-packet scheduling (`udp.ops`).
    pub dest: Option<SocketAddr>,
    /// Milliseconds since its last datagram either way.
    pub idle_ms: u64,
    /// Milliseconds since it opened.
    pub age_ms: u64,
    /// Its PROXY header went already (sent before the first datagram only).
    #[serde(default)]
    pub header_sent: bool,
    /// Where the client sent to, on a wildcard listener: the replies'
    /// source address and interface.
    #[serde(default)]
    pub reply_from: Option<(IpAddr, u32)>,
}

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Larger than [`MAX_MESSAGE`].
    #[error("a message of {0} bytes: more than the {MAX_MESSAGE} allowed")]
    TooLarge(usize),
    /// Not a message.
    #[error("not a handover message: {0}")]
    Malformed(#[from] serde_json::Error),
}

impl Message {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these types cannot fail: no maps with non-string
        // keys, no failing Serialize impls.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads one message.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(WireError::TooLarge(bytes.len()));
        }
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The descriptors this message must carry.
    pub fn descriptors(&self) -> usize {
        match self {
            Message::Sessions { sessions } => sessions.len(),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn session() -> SessionState {
        SessionState {
            service: "dns".into(),
            listen: "127.0.0.1:53".parse().unwrap(),
            peer: "127.0.0.9:4000".parse().unwrap(),
            client: "192.0.2.1:4000".parse().unwrap(),
            dest: Some("10.0.0.1:53".parse().unwrap()),
            idle_ms: 1200,
            age_ms: 50_000,
            header_sent: true,
            reply_from: Some(("::1".parse().unwrap(), 1)),
        }
    }

    #[test]
    fn messages_round_trip() {
        let all = [
            Message::Hello { version: VERSION },
            Message::Health {
                servers: vec![HealthState {
                    service: "web".into(),
                    address: "10.0.0.2:443".parse().unwrap(),
                    up: false,
                    weight: Some(3),
                    reason: Some("HTTP 503".into()),
                }],
            },
            Message::Templates {
                templates: vec![TemplateState {
                    service: "web".into(),
                    client: "198.51.100.0".parse().unwrap(),
                    vaddr: "192.0.2.1".parse().unwrap(),
                    vport: 443,
                    dest: "10.0.0.2:443".parse().unwrap(),
                    remaining_ms: 299_000,
                    controlled: 2,
                    pe: Some(b"a84b4c76e66710".to_vec()),
                }],
            },
            Message::Sessions {
                sessions: vec![session(), session()],
            },
            Message::End {
                templates: 1,
                sessions: 2,
            },
        ];
        for m in all {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
        assert_eq!(
            Message::Sessions {
                sessions: vec![session(); 3]
            }
            .descriptors(),
            3
        );
    }

    /// A later version's messages and fields are read past, not refused.
    #[test]
    fn what_a_later_version_adds_is_ignored() {
        let m = Message::decode(br#"{"type":"peers","servers":[]}"#).unwrap();
        assert_eq!(m, Message::Unknown);
        let m = Message::decode(br#"{"type":"hello","version":2,"features":["x"]}"#).unwrap();
        assert_eq!(m, Message::Hello { version: 2 });
        // A field that came later, missing from an earlier sender.
        let mut v = serde_json::to_value(session()).unwrap();
        v.as_object_mut().unwrap().remove("header_sent");
        v.as_object_mut().unwrap().remove("reply_from");
        let back: SessionState = serde_json::from_value(v).unwrap();
        assert!(!back.header_sent && back.reply_from.is_none());
    }

    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        let e = Message::decode(b"{\"type\":\"hello\"}").unwrap_err();
        assert!(e.to_string().contains("missing field `version`"), "{e}");
        let e = Message::decode(b"\x00\x01").unwrap_err();
        assert!(e.to_string().starts_with("not a handover message"), "{e}");
        let big = vec![b' '; MAX_MESSAGE + 1];
        let e = Message::decode(&big).unwrap_err();
        assert!(matches!(e, WireError::TooLarge(_)), "{e}");
    }
}
