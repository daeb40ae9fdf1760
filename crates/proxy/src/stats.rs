//! Counters of a service: what happened to its connections; the totals and
//! rates that `ipvsadm --stats` and `--rate` show; the connect latency
//! histogram.
//!
//! Counters only grow (Prometheus needs them to). `ipvsadm -Z` is a
//! baseline: a [`Totals`] remembered at the zeroing and subtracted from
//! what the tables show.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

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
    /// The data plane's share of the process's file descriptors is in use
    /// (`crate::fds`): a TCP connection is closed at once, a UDP datagram
    /// that would open a session is dropped.
    Descriptors,
    /// The client sent nothing within `timeouts.client_first_byte`.
    FirstByte,
    /// The SIP persistence engine found no Call-ID in the datagram, which
    /// IPVS's engine drops too (`ip_vs_sched_persist()`: `NF_DROP`).
    NoCallId,
}

impl Refusal {
    /// Every reason, in a fixed order.
    pub const ALL: [Refusal; 9] = [
        Refusal::Acl,
        Refusal::Limit,
        Refusal::Threshold,
        Refusal::NoServer,
        Refusal::Unreachable,
        Refusal::ProxyHeader,
        Refusal::Descriptors,
        Refusal::FirstByte,
        Refusal::NoCallId,
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
            Refusal::Descriptors => "descriptors",
            Refusal::FirstByte => "first_byte_timeout",
            Refusal::NoCallId => "no_call_id",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one service.
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Connections (TCP) or sessions (UDP) given a real server (a retry
    /// on another server counts again, as it does for the server).
    pub conns: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    /// Connects to a real server that failed (refused, timed out).
    pub connect_failures: AtomicU64,
    /// Connections retried on another real server.
    pub retries: AtomicU64,
    /// Bytes from clients.
    pub in_bytes: AtomicU64,
    /// Bytes to clients.
    pub out_bytes: AtomicU64,
    /// Packets from clients: TCP segments received from them (counted when
    /// the connection ends), UDP datagrams.
    pub in_pkts: AtomicU64,
    /// Packets to clients: TCP segments sent to them, UDP datagrams.
    pub out_pkts: AtomicU64,
    /// UDP sessions evicted to stay within `max_sessions`.
    pub evictions: AtomicU64,
    /// UDP sessions ended by their idle timeout.
    pub expired: AtomicU64,
    /// TCP connections reset and UDP sessions ended because their real
    /// server left the table (`expire_nodest_conn`).
    pub expired_nodest: AtomicU64,
    /// Connect times to the service's real servers.
    pub connect_latency: LatencyHistogram,
}

impl ServiceStats {
    pub(crate) fn refuse(&self, why: Refusal) {
        self.refused[why.index()].fetch_add(1, Relaxed);
    }

    /// Clients refused for `why`.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why.index()].load(Relaxed)
    }

    /// The totals, as `ipvsadm --stats` shows them.
    pub fn totals(&self) -> Totals {
        Totals {
            conns: self.conns.load(Relaxed),
            in_pkts: self.in_pkts.load(Relaxed),
            out_pkts: self.out_pkts.load(Relaxed),
            in_bytes: self.in_bytes.load(Relaxed),
            out_bytes: self.out_bytes.load(Relaxed),
        }
    }
}

/// The five totals of `ipvsadm --stats`: Conns, InPkts, OutPkts, InBytes,
/// OutBytes ("in" is from clients).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Connections.
    pub conns: u64,
    /// Packets from clients.
    pub in_pkts: u64,
    /// Packets to clients.
    pub out_pkts: u64,
    /// Bytes from clients.
    pub in_bytes: u64,
    /// Bytes to clients.
    pub out_bytes: u64,
}

impl Totals {
    fn array(self) -> [u64; 5] {
        [
            self.conns,
            self.in_pkts,
            self.out_pkts,
            self.in_bytes,
            self.out_bytes,
        ]
    }

    /// What grew since `base` (a zeroing's baseline).
    pub fn since(self, base: Totals) -> Totals {
        Totals {
            conns: self.conns.saturating_sub(base.conns),
            in_pkts: self.in_pkts.saturating_sub(base.in_pkts),
            out_pkts: self.out_pkts.saturating_sub(base.out_pkts),
            in_bytes: self.in_bytes.saturating_sub(base.in_bytes),
            out_bytes: self.out_bytes.saturating_sub(base.out_bytes),
        }
    }
}

impl From<rvs_sched::Traffic> for Totals {
    fn from(t: rvs_sched::Traffic) -> Totals {
        Totals {
            conns: 0,
            in_pkts: t.in_pkts,
            out_pkts: t.out_pkts,
            in_bytes: t.in_bytes,
            out_bytes: t.out_bytes,
        }
    }
}

/// Rates per second, as `ipvsadm --rate` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rates {
    /// Connections per second.
    pub cps: u64,
    /// Packets per second from clients.
    pub in_pps: u64,
    /// Packets per second to clients.
    pub out_pps: u64,
    /// Bytes per second from clients.
    pub in_bps: u64,
    /// Bytes per second to clients.
    pub out_bps: u64,
}

/// IPVS's rate estimator (`ip_vs_est.c`): every 2 seconds, the rate over
/// the last interval is folded into a moving average with weight 1/4, in
/// fixed point (connections and packets scaled by 2^10, bytes by 2^5), and
/// read rounded to the nearest whole number, as the kernel does.
#[derive(Clone, Copy, Debug, Default)]
pub struct Estimator {
    last: Totals,
    avg: [i64; 5],
}

impl Estimator {
    /// The interval between two [`Estimator::tick`]s.
    pub const INTERVAL: Duration = Duration::from_secs(2);

    /// An estimator that starts from `now`'s totals.
    pub fn new(now: Totals) -> Estimator {
        Estimator {
            last: now,
            avg: [0; 5],
        }
    }

    /// Folds in the interval that ends with the totals `now`.
    pub fn tick(&mut self, now: Totals) {
        let cur = now.array();
        let last = self.last.array();
        for i in 0..5 {
            let delta = cur[i].wrapping_sub(last[i]) as i64;
            // Over 2 s: x<<9 is the per-second rate scaled by 2^10; x<<4 is
            // it scaled by 2^5.
            let rate = if i < 3 { delta << 9 } else { delta << 4 };
            self.avg[i] += (rate - self.avg[i]) >> 2;
        }
        self.last = now;
    }

    /// Starts again from `now` with no rate (`ipvsadm -Z`).
    pub fn reset(&mut self, now: Totals) {
        *self = Estimator::new(now);
    }

    /// The rates, rounded as `ip_vs_read_estimator()` does.
    pub fn rates(&self) -> Rates {
        let small = |a: i64| ((a + 0x1FF) >> 10).max(0) as u64;
        let big = |a: i64| ((a + 0xF) >> 5).max(0) as u64;
        Rates {
            cps: small(self.avg[0]),
            in_pps: small(self.avg[1]),
            out_pps: small(self.avg[2]),
            in_bps: big(self.avg[3]),
            out_bps: big(self.avg[4]),
        }
    }
}

/// Upper bounds of the connect latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// One connect time, placed in its bucket of [`LATENCY_BUCKETS`].
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    bucket: usize,
    nanos: u64,
}

impl Observation {
    /// `d`'s bucket (the last is `+Inf`).
    pub fn of(d: Duration) -> Observation {
        let secs = d.as_secs_f64();
        Observation {
            bucket: LATENCY_BUCKETS
                .iter()
                .position(|&b| secs <= b)
                .unwrap_or(LATENCY_BUCKETS.len()),
            nanos: u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        }
    }
}

/// A histogram of connect latencies: lock-free, fixed buckets.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// Records one connect.
    pub fn observe(&self, d: Duration) {
        self.record(Observation::of(d));
    }

    /// Records one connect already placed in its bucket (a connect counts
    /// in its server's histogram and in its service's).
    pub fn record(&self, o: Observation) {
        self.counts[o.bucket].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(o.nanos, Relaxed);
    }

    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`], the total count
    /// and the sum in seconds.
    pub fn snapshot(&self) -> ([u64; LATENCY_BUCKETS.len()], u64, f64) {
        let mut cumulative = [0u64; LATENCY_BUCKETS.len()];
        let mut acc = 0u64;
        for (i, c) in cumulative.iter_mut().enumerate() {
            acc += self.counts[i].load(Relaxed);
            *c = acc;
        }
        let count = acc + self.counts[LATENCY_BUCKETS.len()].load(Relaxed);
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        (cumulative, count, sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(n: u64) -> Totals {
        Totals {
            conns: n,
            ..Totals::default()
        }
    }

    /// A steady 100 connections/s and 1 MB/s: the estimate climbs towards
    /// them by a quarter of the gap each interval, as the kernel's does.
    #[test]
    fn the_estimator_converges_as_ipvs_does() {
        let mut e = Estimator::new(Totals::default());
        let mut t = Totals::default();
        let mut seen = Vec::new();
        for _ in 0..100 {
            t.conns += 200;
            t.in_bytes += 2_000_000;
            e.tick(t);
            seen.push(e.rates());
        }
        // First interval: avg = rate/4 → 25 cps, 250000 B/s.
        assert_eq!(seen[0].cps, 25);
        assert_eq!(seen[0].in_bps, 250_000);
        // Second: 25 + (100-25)/4 = 43.75 → rounded 44.
        assert_eq!(seen[1].cps, 44);
        let last = seen[99];
        assert_eq!((last.cps, last.in_bps), (100, 1_000_000));
        e.reset(t);
        assert_eq!(e.rates(), Rates::default());
        e.tick(t);
        assert_eq!(e.rates(), Rates::default());
        // A quiet service decays to 0.
        let mut e = Estimator::new(conns(0));
        e.tick(conns(2));
        assert_eq!(e.rates().cps, 0, "1 cps /4 = 0.25 rounds to 0");
    }

    #[test]
    fn latency_buckets_are_cumulative() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(10));
        let (b, count, sum) = h.snapshot();
        assert_eq!(b[0], 2, "<= 100us");
        assert_eq!(b[4], 2, "<= 2.5ms");
        assert_eq!(b[5], 3, "<= 5ms");
        assert_eq!(b[13], 3, "<= 2.5s");
        assert_eq!(count, 4);
        assert!((sum - 10.00315).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn zeroing_is_a_baseline() {
        let now = Totals {
            conns: 10,
            in_pkts: 5,
            out_pkts: 6,
            in_bytes: 700,
            out_bytes: 800,
        };
        let base = Totals {
            conns: 4,
            in_pkts: 5,
            out_pkts: 1,
            in_bytes: 100,
            out_bytes: 900,
        };
        let d = now.since(base);
        assert_eq!(d.array(), [6, 0, 5, 600, 0]);
    }
}
