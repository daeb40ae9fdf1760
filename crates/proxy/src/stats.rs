//! Counters of a service: what happened to its connections.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a client was turned away.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Its address is denied, or not allowed.
    Acl,
    /// The service is at `max_connections` (or `max_sessions` for UDP, which
    /// evicts instead; this counts datagrams dropped for want of a socket).
    Limit,
    /// Every real server that could take it is over its upper threshold.
    Threshold,
    /// No real server is available (none, all quiescent, or deleted).
    NoServer,
    /// Every real server tried refused the connection or timed out.
    Unreachable,
    /// An expected PROXY protocol header was missing or malformed.
    ProxyHeader,
}

impl Refusal {
    /// Every reason, in a fixed order.
    pub const ALL: [Refusal; 6] = [
        Refusal::Acl,
        Refusal::Limit,
        Refusal::Threshold,
        Refusal::NoServer,
        Refusal::Unreachable,
        Refusal::ProxyHeader,
    ];

    /// A short name (for logs and metric labels).
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Acl => "acl",
            Refusal::Limit => "limit",
            Refusal::Threshold => "threshold",
            Refusal::NoServer => "no_server",
            Refusal::Unreachable => "unreachable",
            Refusal::ProxyHeader => "proxy_header",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one service.
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Connections (TCP) or sessions (UDP) given a real server.
    pub conns: AtomicU64,
    refused: [AtomicU64; 6],
    /// Connects to a real server that failed (refused, timed out).
    pub connect_failures: AtomicU64,
    /// Connections retried on another real server.
    pub retries: AtomicU64,
    /// Bytes from clients.
    pub in_bytes: AtomicU64,
    /// Bytes to clients.
    pub out_bytes: AtomicU64,
    /// Datagrams from clients (UDP).
    pub in_datagrams: AtomicU64,
    /// Datagrams to clients (UDP).
    pub out_datagrams: AtomicU64,
    /// UDP sessions evicted to stay within `max_sessions`.
    pub evictions: AtomicU64,
    /// UDP sessions ended by their idle timeout.
    pub expired: AtomicU64,
}

impl ServiceStats {
    pub(crate) fn refuse(&self, why: Refusal) {
        self.refused[why.index()].fetch_add(1, Relaxed);
    }

    /// Clients refused for `why`.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why.index()].load(Relaxed)
    }
}
