//! Persistence templates: `ip_vs_sched_persist()` (ip_vs_core.c) and the
//! template side of ip_vs_conn.c.
//!
//! A template maps a client network (the client address under the netmask)
//! and the virtual address and port to a server. The rules:
//!
//! - Lookup (`ip_vs_ct_in_get()`) finds the most recently hashed template
//!   with the key. `ip_vs_check_template()` refuses one whose server is no
//!   longer available (deleted): the template is *invalidated*, rehashed
//!   under virtual port 65535 so that it no longer matches, and left to
//!   expire on its own timer; a new template is scheduled.
//! - A template found valid is used whatever the server's weight or overload
//!   (with the default `expire_quiescent_template = 0`).
//! - Each connection made through a template is controlled by it
//!   (`n_control`), and re-arms its timer to `now + timeout`
//!   (`ip_vs_conn_put()`); a new template's timeout is the service's.
//! - When the timer fires while the template still controls connections,
//!   `ip_vs_conn_expire()` sets its timeout to 60 s and re-arms it; from then
//!   on every re-arm uses those 60 s. Otherwise the template goes, and its
//!   server is unbound (`persistconns` drops and the overload flag is tested).
//!
//! Each template has at most one entry in the timer heap: a re-arm that moves
//! the expiry later leaves the entry where it is, and the entry, when it comes
//! up early, re-queues itself at the real expiry.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use hashbrown::HashMap;

use crate::dest::Dest;
use crate::error::SchedError;
use crate::time::Time;

/// The timeout `ip_vs_conn_expire()` gives a template that still controls
/// connections when its timer fires.
const EXPIRE_LATER: Duration = Duration::from_secs(60);
/// The virtual port of an invalidated template.
const INVALID_PORT: u16 = 0xffff;

/// Persistence granularity: `ipvsadm -M` (IPv4) and the IPv6 prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Netmask {
    v4: Ipv4Addr,
    v6_prefix: u8,
}

impl Netmask {
    /// One template per client address (`255.255.255.255`, `/128`).
    pub const HOST: Netmask = Netmask {
        v4: Ipv4Addr::BROADCAST,
        v6_prefix: 128,
    };

    /// A netmask for IPv4 clients and a prefix length (1..=128) for IPv6
    /// clients. Any IPv4 mask is accepted, as the kernel just ANDs it.
    pub fn new(v4: Ipv4Addr, v6_prefix: u8) -> Result<Netmask, SchedError> {
        if !(1..=128).contains(&v6_prefix) {
            return Err(SchedError::PrefixLength(v6_prefix));
        }
        Ok(Netmask { v4, v6_prefix })
    }

    /// The IPv4 mask.
    pub fn v4(&self) -> Ipv4Addr {
        self.v4
    }

    /// The IPv6 prefix length.
    pub fn v6_prefix(&self) -> u8 {
        self.v6_prefix
    }

    /// The client's network: `saddr & netmask`, or `ipv6_addr_prefix()`.
    pub fn apply(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & u32::from(self.v4))),
            IpAddr::V6(a) => {
                let bits = u32::from(self.v6_prefix);
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }
}

/// What one template covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// One virtual address and port: IPVS's template of a service of an
    /// address and port, `<proto, caddr & netmask, 0, vaddr, vport>`.
    #[default]
    Destination,
    /// Every address and port of the service: IPVS's template of a
    /// firewall-mark service, `<IPPROTO_IP, caddr & netmask, 0, fwmark, 0>`,
    /// which sends one client's HTTP and HTTPS to one server.
    Service,
}

/// A service's persistence: `ipvsadm -p TIMEOUT -M NETMASK`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persistence {
    /// How long a template outlives the last connection made through it.
    pub timeout: Duration,
    /// Client granularity.
    pub netmask: Netmask,
    /// What one template covers.
    pub scope: Scope,
}

impl Persistence {
    /// Persistence for `timeout` per client address, per virtual address
    /// and port: `ipvsadm -p TIMEOUT`.
    pub fn new(timeout: Duration) -> Persistence {
        Persistence {
            timeout,
            netmask: Netmask::HOST,
            scope: Scope::Destination,
        }
    }

    /// The key of the template of `client` to `vaddr:vport`, with a
    /// persistence engine's data (the SIP Call-ID) when there is one.
    pub(crate) fn key(&self, client: IpAddr, vaddr: IpAddr, vport: u16, pe: Option<&[u8]>) -> Key {
        let net = self.netmask.apply(client);
        let (vaddr, vport) = match self.scope {
            Scope::Destination => (vaddr, vport),
            Scope::Service => (unspecified_like(net), 0),
        };
        Key {
            net,
            vaddr,
            vport,
            pe: pe.map_or(0, pe_hash),
        }
    }
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// A persistence engine's data in a key: a hash that is never 0 (0 is a
/// template without engine data); templates compare the bytes themselves.
fn pe_hash(data: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    data.hash(&mut h);
    h.finish() | 1
}

/// A persistence template as `ipvsadm -lc` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateEntry {
    /// The client's address under the netmask.
    pub client: IpAddr,
    /// The virtual address.
    pub vaddr: IpAddr,
    /// The virtual port (65535 once the template was invalidated).
    pub vport: u16,
    /// The real server it sends the client to.
    pub dest: SocketAddr,
    /// When it expires unless a connection renews it.
    pub expires: Time,
    /// Connections it controls now.
    pub controlled: u32,
    /// Its persistence engine's data (the SIP Call-ID), when it has some.
    pub pe: Option<Arc<[u8]>>,
}

/// What a connection keeps of the template that controls it.
#[derive(Debug)]
pub(crate) struct Control {
    dest: Arc<Dest>,
    n_control: AtomicU32,
}

impl Control {
    pub(crate) fn release(&self) {
        let _ = self
            .n_control
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    }
}

/// The key of a template: `<proto, caddr & netmask, 0, vaddr, vport>`; the
/// protocol is the service's. With a persistence engine, its data's hash
/// too (IPVS hashes such a template by the engine's data alone and matches
/// it on all of them, `ip_vs_sip_ct_match()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) net: IpAddr,
    pub(crate) vaddr: IpAddr,
    pub(crate) vport: u16,
    /// [`pe_hash`] of the engine's data; 0 without.
    pub(crate) pe: u64,
}

#[derive(Debug)]
struct Template {
    ctl: Arc<Control>,
    key: Key,
    expires: Time,
    timeout: Duration,
    /// The time of this template's entry in the timer heap.
    queued: Option<Time>,
    /// The persistence engine's data.
    pe: Option<Arc<[u8]>>,
}

/// The templates of one service.
#[derive(Debug, Default)]
pub(crate) struct Templates {
    all: HashMap<u64, Template>,
    /// Template ids by key, most recently hashed first.
    by_key: HashMap<Key, Vec<u64>>,
    timers: BinaryHeap<Reverse<(Time, u64)>>,
    next_id: u64,
}

/// A template found for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found(u64);

impl Templates {
    /// `ip_vs_ct_in_get()`: the most recent template of `key` whose engine
    /// data is `pe`.
    pub(crate) fn lookup(&self, key: &Key, pe: Option<&[u8]>) -> Option<Found> {
        let ids = self.by_key.get(key)?;
        if key.pe == 0 {
            return ids.first().copied().map(Found);
        }
        ids.iter()
            .copied()
            .find(|id| self.all.get(id).is_some_and(|t| t.pe.as_deref() == pe))
            .map(Found)
    }

    /// The server of a template, if `ip_vs_check_template()` accepts it:
    /// still in the list and, with `expire_quiescent_template`
    /// (`quiescent_expires`), not at weight 0.
    pub(crate) fn valid_dest(&self, f: Found, quiescent_expires: bool) -> Option<Arc<Dest>> {
        let t = self.all.get(&f.0)?;
        let d = &t.ctl.dest;
        let usable = d.is_available() && !(quiescent_expires && d.weight() == 0);
        usable.then(|| Arc::clone(d))
    }

    /// `ip_vs_check_template()` failing: rehash under port 65535.
    pub(crate) fn invalidate(&mut self, f: Found) {
        let Some(t) = self.all.get_mut(&f.0) else {
            return;
        };
        if t.key.vport == INVALID_PORT {
            return;
        }
        let old = t.key;
        t.key.vport = INVALID_PORT;
        let new = t.key;
        self.unhash(old, f.0);
        self.by_key.entry(new).or_default().insert(0, f.0);
    }

    /// A new template for `dest`, which the caller has bound as a template.
    pub(crate) fn create(
        &mut self,
        key: Key,
        pe: Option<&[u8]>,
        dest: Arc<Dest>,
        timeout: Duration,
    ) -> Found {
        let id = self.next_id;
        self.next_id += 1;
        self.all.insert(
            id,
            Template {
                ctl: Arc::new(Control {
                    dest,
                    n_control: AtomicU32::new(0),
                }),
                key,
                expires: Time::ZERO,
                timeout,
                queued: None,
                pe: pe.map(Arc::from),
            },
        );
        self.by_key.entry(key).or_default().insert(0, id);
        Found(id)
    }

    /// A template made elsewhere (another process, another director) for
    /// `dest`, which the caller has bound as a template, expiring at
    /// `expires` and re-armed with `timeout` from then on. A live template
    /// of the same key for another server is invalidated first, as a
    /// template refused at lookup is; one for the same server takes the
    /// later of the two expiries. True when a template was made.
    pub(crate) fn adopt(
        &mut self,
        key: Key,
        pe: Option<&[u8]>,
        dest: &Arc<Dest>,
        expires: Time,
        timeout: Duration,
    ) -> bool {
        if let Some(f) = self.lookup(&key, pe) {
            let same = self
                .all
                .get(&f.0)
                .is_some_and(|t| Arc::ptr_eq(&t.ctl.dest, dest));
            if same {
                if let Some(t) = self.all.get_mut(&f.0)
                    && expires > t.expires
                {
                    t.expires = expires;
                    self.queue(f.0);
                }
                return false;
            }
            self.invalidate(f);
        }
        let f = self.create(key, pe, Arc::clone(dest), timeout);
        if let Some(t) = self.all.get_mut(&f.0) {
            t.expires = expires;
        }
        self.queue(f.0);
        true
    }

    /// Queues template `id`'s timer at its expiry, unless an earlier entry
    /// is queued (it re-queues itself when it comes up).
    fn queue(&mut self, id: u64) {
        if let Some(t) = self.all.get_mut(&id)
            && t.queued.is_none_or(|q| t.expires < q)
        {
            t.queued = Some(t.expires);
            self.timers.push(Reverse((t.expires, id)));
        }
    }

    /// One more connection under the template, without restarting its
    /// timer: a connection taken over with its template, not a new one.
    pub(crate) fn attach(&self, f: Found) -> Option<Arc<Control>> {
        let t = self.all.get(&f.0)?;
        t.ctl.n_control.fetch_add(1, Relaxed);
        Some(Arc::clone(&t.ctl))
    }

    /// The server a template sends its clients to.
    pub(crate) fn dest_of(&self, f: Found) -> Option<&Arc<Dest>> {
        self.all.get(&f.0).map(|t| &t.ctl.dest)
    }

    /// `ip_vs_control_add()` then `ip_vs_conn_put()`: one more connection
    /// under the template, whose timer restarts at `now`.
    pub(crate) fn control(&mut self, f: Found, now: Time) -> Option<Arc<Control>> {
        let t = self.all.get_mut(&f.0)?;
        t.ctl.n_control.fetch_add(1, Relaxed);
        t.expires = now.saturating_add(t.timeout);
        let ctl = Arc::clone(&t.ctl);
        self.queue(f.0);
        Some(ctl)
    }

    /// Fires every template timer due at or before `now`, in time order;
    /// `unbind` is called with the server of each template that goes.
    pub(crate) fn expire(&mut self, now: Time, mut unbind: impl FnMut(&Arc<Dest>)) {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(t) = self.all.get_mut(&id) else {
                continue;
            };
            if t.queued != Some(at) {
                continue;
            }
            if t.expires > at {
                t.queued = Some(t.expires);
                self.timers.push(Reverse((t.expires, id)));
                continue;
            }
            if t.ctl.n_control.load(Relaxed) > 0 {
                t.timeout = EXPIRE_LATER;
                t.expires = at.saturating_add(EXPIRE_LATER);
                t.queued = Some(t.expires);
                self.timers.push(Reverse((t.expires, id)));
                continue;
            }
            if let Some(t) = self.all.remove(&id) {
                self.unhash(t.key, id);
                unbind(&t.ctl.dest);
            }
        }
    }

    fn unhash(&mut self, key: Key, id: u64) {
        if let Some(ids) = self.by_key.get_mut(&key) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.by_key.remove(&key);
            }
        }
    }

    /// Live templates (for tables and tests).
    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    /// Every live template, oldest first.
    pub(crate) fn entries(&self) -> Vec<TemplateEntry> {
        let mut ids: Vec<&u64> = self.all.keys().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| self.all.get(id))
            .map(|t| TemplateEntry {
                client: t.key.net,
                vaddr: t.key.vaddr,
                vport: t.key.vport,
                dest: t.ctl.dest.addr(),
                expires: t.expires,
                controlled: t.ctl.n_control.load(Relaxed),
                pe: t.pe.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmask_applies_per_family() {
        let m = Netmask::new("255.255.255.0".parse().unwrap(), 48).unwrap();
        assert_eq!(
            m.apply("192.0.2.77".parse().unwrap()),
            "192.0.2.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            m.apply("2001:db8:aa:bb::1".parse().unwrap()),
            "2001:db8:aa::".parse::<IpAddr>().unwrap()
        );
        let host = Netmask::HOST;
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(host.apply(a), a);
        assert!(Netmask::new(Ipv4Addr::BROADCAST, 0).is_err());
        assert!(Netmask::new(Ipv4Addr::BROADCAST, 129).is_err());
    }
}
