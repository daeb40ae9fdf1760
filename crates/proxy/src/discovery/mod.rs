//! Real servers found in DNS: `dns: NAME:PORT` (every A and AAAA record)
//! and `srv: _service._proto.NAME` (every SRV record of the lowest
//! priority) entries of a service's `real_servers`.
//!
//! This module holds what is decided without I/O: each entry's state (the
//! last good answer, the servers in force, the failure in progress) and how
//! a new answer changes it (`EntryState::update`), and where the servers
//! stand in the service's list (`expand`). `resolve` asks DNS; `task`
//! resolves every name each `global.dns.interval` and applies what changed
//! to that one service, through the reload's own path
//! ([`crate::Proxy`]'s `apply_resolution`).
//!
//! Rules:
//!
//! - Order: an entry's servers stand at the entry's place among the file's
//!   entries, ordered by address then port, whatever order the answer gave
//!   them in, and whatever came before: two replicas with the same answer
//!   build the same table. An address written in the file, or found by an
//!   earlier entry, is not added twice.
//! - A server whose address leaves the answer: on a TCP service it turns
//!   quiescent (weight 0: no new connections, its open ones go on) and
//!   leaves once its last connection has ended (kube-proxy's graceful
//!   termination); on a UDP service it leaves at once.
//! - A failed answer (timeout, SERVFAIL, refused) keeps the servers in
//!   force. NXDOMAIN, or a name with no address, empties the entry only once
//!   it has lasted `global.dns.hold_nx` (HAProxy's `hold nx`); a name that
//!   never resolved has no server until it does.

mod resolve;
pub(crate) mod task;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{Entry, Proto, ServiceSpec, Target};

pub(crate) use resolve::Resolver;

/// A server found in an answer: its address and, for SRV, the record's
/// weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    /// Its address and port.
    pub addr: SocketAddr,
    /// The SRV record's weight (`None` for A and AAAA).
    pub weight: Option<i32>,
}

/// What one resolution of a name gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// These servers (never empty).
    Servers(Vec<Found>),
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The name exists but has no address (or SRV record).
    NoRecords,
    /// No answer: a timeout, SERVFAIL, REFUSED, a network error.
    Failed(String),
}

impl Answer {
    fn failure(&self) -> Option<String> {
        match self {
            Answer::Servers(_) => None,
            Answer::NxDomain => Some("NXDOMAIN".into()),
            Answer::NoRecords => Some("no records".into()),
            Answer::Failed(e) => Some(e.clone()),
        }
    }
}

/// A server in force for an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    /// The SRV record's weight.
    weight: Option<i32>,
    /// Gone from the answer: quiescent until its connections end (TCP).
    leaving: bool,
}

/// An edit made through the API (rvsadm) to a discovered server: it lasts
/// until a resolution changes that server's record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Override {
    /// `rvsadm -e`: weight and thresholds.
    Params(rvs_sched::DestParams),
    /// `rvsadm -d`.
    Deleted,
}

/// What the log should say after an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing to say.
    None,
    /// Answers fail since now; the servers in force stay.
    Failing(String),
    /// Answers came back after failing.
    Recovered,
    /// NXDOMAIN (or no records) lasted the hold time: the entry is empty.
    Emptied(String),
}

/// One entry of one service.
#[derive(Clone, Debug, Default)]
pub(crate) struct EntryState {
    /// The last good answer, sorted.
    answer: Vec<Found>,
    /// The servers in force, by address.
    members: BTreeMap<SocketAddr, Member>,
    /// Edits made through the API, by address.
    overrides: BTreeMap<SocketAddr, Override>,
    /// Since when answers fail, and why.
    failing: Option<(Instant, String)>,
    /// Whether a good answer ever came.
    resolved: bool,
    /// Resolutions by result ([`RESULTS`]).
    pub(crate) by_result: [u64; 4],
}

/// The names of the slots of the resolutions by result.
pub const RESULTS: [&str; 4] = ["ok", "nxdomain", "no_records", "failed"];

impl EntryState {
    /// Takes one answer; true when the servers in force changed.
    pub(crate) fn update(
        &mut self,
        answer: Answer,
        proto: Proto,
        hold_nx: Duration,
        now: Instant,
    ) -> (bool, Event) {
        let slot = match &answer {
            Answer::Servers(_) => 0,
            Answer::NxDomain => 1,
            Answer::NoRecords => 2,
            Answer::Failed(_) => 3,
        };
        self.by_result[slot] += 1;
        let Answer::Servers(mut found) = answer else {
            let why = answer.failure().unwrap_or_default();
            let event = match &self.failing {
                Some((_, old)) if *old == why => Event::None,
                _ => Event::Failing(why.clone()),
            };
            let since = self.failing.as_ref().map_or(now, |(t, _)| *t);
            self.failing = Some((since, why.clone()));
            let authoritative = matches!(answer, Answer::NxDomain | Answer::NoRecords);
            if authoritative
                && !self.answer.is_empty()
                && now.saturating_duration_since(since) >= hold_nx
            {
                self.answer.clear();
                let changed = self.set_members(&[], proto);
                return (changed, Event::Emptied(why));
            }
            return (false, event);
        };
        let event = if self.failing.take().is_some() {
            Event::Recovered
        } else {
            Event::None
        };
        self.resolved = true;
        found.sort();
        found.dedup_by_key(|f| f.addr);
        if found == self.answer {
            return (false, event);
        }
        // An edit lasts until the server's record changes.
        let old = &self.answer;
        self.overrides.retain(|a, _| {
            let was = old.iter().find(|f| f.addr == *a);
            let now = found.iter().find(|f| f.addr == *a);
            was.is_some() && was == now
        });
        let changed = self.set_members(&found, proto);
        self.answer = found;
        (changed, event)
    }

    /// Whether `addr` is one of its servers.
    pub(crate) fn has(&self, addr: SocketAddr) -> bool {
        self.members.contains_key(&addr)
    }

    /// Records an edit of one of its servers.
    pub(crate) fn edit(&mut self, addr: SocketAddr, o: Override) {
        self.overrides.insert(addr, o);
    }

    /// Makes `found` the servers in force: those gone leave (TCP: as
    /// quiescent, until [`EntryState::sweep`] sees them idle).
    fn set_members(&mut self, found: &[Found], proto: Proto) -> bool {
        let before = self.members.clone();
        let mut next: BTreeMap<SocketAddr, Member> = found
            .iter()
            .map(|f| {
                (
                    f.addr,
                    Member {
                        weight: f.weight,
                        leaving: false,
                    },
                )
            })
            .collect();
        if proto == Proto::Tcp {
            for (addr, m) in &self.members {
                next.entry(*addr).or_insert(Member {
                    leaving: true,
                    ..*m
                });
            }
        }
        self.members = next;
        self.members != before
    }

    /// Drops the leaving servers that `idle` says have no connection left;
    /// true when one left.
    pub(crate) fn sweep(&mut self, idle: impl Fn(SocketAddr) -> bool) -> bool {
        let before = self.members.len();
        self.members.retain(|a, m| !m.leaving || !idle(*a));
        self.members.len() != before
    }

    /// Whether some server waits for its connections to end.
    pub(crate) fn has_leaving(&self) -> bool {
        self.members.values().any(|m| m.leaving)
    }

    /// Servers in force (leaving ones included).
    pub(crate) fn servers(&self) -> usize {
        self.members.len()
    }

    /// Servers leaving.
    pub(crate) fn leaving(&self) -> usize {
        self.members.values().filter(|m| m.leaving).count()
    }

    /// Why answers fail, and for how long, if they do.
    pub(crate) fn failing(&self, now: Instant) -> Option<(String, Duration)> {
        self.failing
            .as_ref()
            .map(|(t, why)| (why.clone(), now.saturating_duration_since(*t)))
    }

    /// Whether a good answer ever came.
    pub(crate) fn resolved(&self) -> bool {
        self.resolved
    }
}

/// What the API, the metrics and the status page show of one entry.
#[derive(Clone, Debug)]
pub struct EntryView {
    /// The entry (`dns:NAME:PORT` or `srv:NAME`).
    pub target: String,
    /// Servers in force, leaving ones included.
    pub servers: usize,
    /// Servers gone from DNS, quiescent until their connections end.
    pub leaving: usize,
    /// Whether a good answer ever came.
    pub resolved: bool,
    /// Resolutions by result ([`RESULTS`]).
    pub by_result: [u64; 4],
    /// Why answers fail now, and since how long.
    pub failing: Option<(String, Duration)>,
}

impl EntryView {
    pub(crate) fn of(target: &Target, e: Option<&EntryState>, now: Instant) -> EntryView {
        EntryView {
            target: target.to_string(),
            servers: e.map_or(0, EntryState::servers),
            leaving: e.map_or(0, EntryState::leaving),
            resolved: e.is_some_and(EntryState::resolved),
            by_result: e.map_or([0; 4], |e| e.by_result),
            failing: e.and_then(|e| e.failing(now)),
        }
    }

    /// `ok`, `pending` (never answered yet), or `failing`.
    pub fn state(&self) -> &'static str {
        match (&self.failing, self.resolved) {
            (Some(_), _) => "failing",
            (None, true) => "ok",
            (None, false) => "pending",
        }
    }
}

/// The service with its discovered servers in place: the file's entries in
/// order, each `dns:`/`srv:` entry replaced by the servers in force for it
/// (`state`), ordered by address and port. The file's own servers come
/// from `file` (servers found earlier in `file` are dropped first).
pub(crate) fn expand<'a>(
    file: &ServiceSpec,
    state: impl Fn(usize) -> Option<&'a EntryState>,
) -> ServiceSpec {
    let mut spec = file.clone();
    if file.discovery.is_empty() {
        return spec;
    }
    let entries = file.entries();
    let mut seen: hashbrown::HashSet<SocketAddr> = file
        .real_servers
        .iter()
        .filter(|r| r.discovered.is_none())
        .map(|r| r.address)
        .collect();
    let mut out = Vec::with_capacity(file.real_servers.len());
    for e in entries {
        match e {
            Entry::Static(r) => out.push(r.clone()),
            Entry::Discovery(i, d) => {
                let Some(st) = state(i) else {
                    continue;
                };
                for (addr, m) in &st.members {
                    let edit = st.overrides.get(addr);
                    if edit == Some(&Override::Deleted) || !seen.insert(*addr) {
                        continue;
                    }
                    let mut r = d.template.clone();
                    r.address = *addr;
                    r.discovered = Some(i);
                    if let Some(w) = m.weight {
                        r.params.weight = w;
                    }
                    if let Some(Override::Params(p)) = edit {
                        r.params = *p;
                    }
                    if m.leaving {
                        r.params.weight = 0;
                    }
                    out.push(r);
                }
            }
        }
    }
    spec.real_servers = out;
    spec
}

/// A discovered server's spec, for the tests.
#[cfg(test)]
fn addrs(s: &ServiceSpec) -> Vec<(String, i32, Option<usize>)> {
    s.real_servers
        .iter()
        .map(|r| (r.address.to_string(), r.params.weight, r.discovered))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::Config;

    fn found(list: &[&str]) -> Answer {
        Answer::Servers(
            list.iter()
                .map(|a| Found {
                    addr: a.parse().unwrap(),
                    weight: None,
                })
                .collect(),
        )
    }

    fn spec() -> ServiceSpec {
        Config::parse(
            "services:\n  - name: s\n    listen: 127.0.0.1:1\n    real_servers:\n      - address: 10.0.0.9:80\n      - dns: web.test:80\n        weight: 3\n      - address: 10.0.0.1:80\n      - srv: _http._tcp.api.test\n",
            "t",
        )
        .unwrap()
        .services
        .remove(0)
    }

    #[test]
    fn entries_keep_their_places_in_the_file() {
        let s = spec();
        let kinds: Vec<String> = s
            .entries()
            .iter()
            .map(|e| match e {
                Entry::Static(r) => r.address.to_string(),
                Entry::Discovery(_, d) => d.target.to_string(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "10.0.0.9:80",
                "dns:web.test:80",
                "10.0.0.1:80",
                "srv:_http._tcp.api.test"
            ]
        );
    }

    #[test]
    fn servers_stand_at_their_entry_in_address_order_whatever_the_answer_order() {
        let s = spec();
        let now = Instant::now();
        let hold = Duration::from_secs(30);
        let mut a = EntryState::default();
        a.update(
            found(&["10.0.0.7:80", "10.0.0.1:80", "10.0.0.3:80"]),
            Proto::Tcp,
            hold,
            now,
        );
        let mut b = EntryState::default();
        b.update(found(&["10.0.0.3:80"]), Proto::Tcp, hold, now);
        b.update(
            found(&["10.0.0.3:80", "10.0.0.7:80", "10.0.0.1:80"]),
            Proto::Tcp,
            hold,
            now,
        );
        let ea = expand(&s, |i| (i == 0).then_some(&a));
        let eb = expand(&s, |i| (i == 0).then_some(&b));
        assert_eq!(addrs(&ea), addrs(&eb), "history does not matter");
        assert_eq!(
            addrs(&ea),
            [
                ("10.0.0.9:80".into(), 1, None),
                ("10.0.0.3:80".into(), 3, Some(0)),
                ("10.0.0.7:80".into(), 3, Some(0)),
                ("10.0.0.1:80".into(), 1, None),
            ],
            "10.0.0.1 is written in the file: not added twice"
        );
        let mut file = ea.clone();
        file.real_servers.retain(|r| r.discovered.is_none());
        assert_eq!(file, s, "the file's servers are the ones not discovered");
    }

    #[test]
    fn a_vanished_tcp_server_turns_quiescent_until_idle_a_udp_one_leaves() {
        let now = Instant::now();
        let hold = Duration::from_secs(30);
        let mut t = EntryState::default();
        t.update(
            found(&["10.0.0.5:80", "10.0.0.2:80"]),
            Proto::Tcp,
            hold,
            now,
        );
        let (changed, _) = t.update(found(&["10.0.0.2:80"]), Proto::Tcp, hold, now);
        assert!(changed);
        assert_eq!(t.servers(), 2);
        assert_eq!(t.leaving(), 1);
        let s = spec();
        let e = expand(&s, |i| (i == 0).then_some(&t));
        assert_eq!(e.real_servers[2].address.to_string(), "10.0.0.5:80");
        assert_eq!(e.real_servers[2].params.weight, 0, "quiescent");
        assert_eq!(e.real_servers[1].params.weight, 3);
        assert!(!t.sweep(|_| false), "connections remain");
        assert!(t.sweep(|_| true));
        assert_eq!(t.servers(), 1);
        // Back before it left: it takes connections again.
        let mut t2 = EntryState::default();
        t2.update(found(&["10.0.0.1:80"]), Proto::Tcp, hold, now);
        t2.update(found(&["10.0.0.2:80"]), Proto::Tcp, hold, now);
        t2.update(
            found(&["10.0.0.1:80", "10.0.0.2:80"]),
            Proto::Tcp,
            hold,
            now,
        );
        assert_eq!(t2.leaving(), 0);
        let mut u = EntryState::default();
        u.update(
            found(&["10.0.0.1:80", "10.0.0.2:80"]),
            Proto::Udp,
            hold,
            now,
        );
        u.update(found(&["10.0.0.2:80"]), Proto::Udp, hold, now);
        assert_eq!((u.servers(), u.leaving()), (1, 0));
    }

    #[test]
    fn failures_keep_the_servers_nxdomain_empties_after_the_hold() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(30);
        let mut e = EntryState::default();
        e.update(found(&["10.0.0.1:80"]), Proto::Udp, hold, t0);
        let (changed, ev) = e.update(Answer::Failed("timed out".into()), Proto::Udp, hold, t0);
        assert!(!changed);
        assert_eq!(ev, Event::Failing("timed out".into()));
        let (_, ev) = e.update(
            Answer::Failed("timed out".into()),
            Proto::Udp,
            hold,
            t0 + Duration::from_secs(100),
        );
        assert_eq!(ev, Event::None, "logged once per change of state");
        assert_eq!(e.servers(), 1, "a failure never empties");
        let (_, ev) = e.update(found(&["10.0.0.1:80"]), Proto::Udp, hold, t0);
        assert_eq!(ev, Event::Recovered);
        let t1 = t0 + Duration::from_secs(200);
        let (changed, ev) = e.update(Answer::NxDomain, Proto::Udp, hold, t1);
        assert!(!changed);
        assert_eq!(ev, Event::Failing("NXDOMAIN".into()));
        let (changed, _) = e.update(
            Answer::NxDomain,
            Proto::Udp,
            hold,
            t1 + Duration::from_secs(29),
        );
        assert!(!changed, "within the hold");
        let (changed, ev) = e.update(
            Answer::NxDomain,
            Proto::Udp,
            hold,
            t1 + Duration::from_secs(30),
        );
        assert!(changed);
        assert_eq!(ev, Event::Emptied("NXDOMAIN".into()));
        assert_eq!(e.servers(), 0);
        assert_eq!(e.by_result.iter().sum::<u64>(), 7, "resolutions");
        assert_eq!(e.by_result, [2, 3, 0, 2]);
    }

    #[test]
    fn a_name_that_never_resolved_has_no_server() {
        let mut e = EntryState::default();
        let (changed, _) = e.update(Answer::NxDomain, Proto::Tcp, Duration::ZERO, Instant::now());
        assert!(!changed);
        assert!(!e.resolved());
        let s = spec();
        let x = expand(&s, |i| (i == 0).then_some(&e));
        assert_eq!(x.real_servers.len(), 2);
    }
}
