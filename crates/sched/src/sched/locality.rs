//! lblc and lblcr: ip_vs_lblc.c and ip_vs_lblcr.c.
//!
//! Both keep a table from destination address to a server (lblc) or a set of
//! servers (lblcr), fall back to the wlc choice over all servers, and treat a
//! cached server as "overloaded" when its active count is above its weight
//! while some server of the service has `active * 2 < weight`.
//!
//! lblc: a cached server is kept when it is available (not deleted), its
//! weight is above 0 and it is not "overloaded"; otherwise wlc picks anew and
//! the entry is replaced.
//!
//! lblcr: the set's least loaded available member (`ip_vs_dest_set_min()`)
//! is used unless it is "overloaded", in which case wlc picks a server that
//! joins the set at its head. When the set has more than one member and was
//! last changed more than `lblcr_expiration` (24 h) ago, its most loaded
//! member (`ip_vs_dest_set_max()`) is dropped, after the pick.
//!
//! Entries expire on the service's own timer, which the caller's clock drives:
//! every 60 s (`CHECK_EXPIRE_INTERVAL`) from the service's creation; every
//! 30th run drops the entries unused for 24 h; in between, when there are
//! more than 16384 entries, it drops entries unused for 6 min, bucket by
//! bucket from a rover, until a quota is met.
//!
//! A table entry holds its server: a deleted server stays in the trash while
//! an entry refers to it, and comes back with the entry still pointing at it
//! when it is added again, as in the kernel.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;

use super::Skip;
use crate::dest::Dest;
use crate::hash::{addr_fold, hash_32};
use crate::time::Time;

const CHECK_EXPIRE_INTERVAL: Duration = Duration::from_secs(60);
const ENTRY_TIMEOUT: Duration = Duration::from_secs(6 * 60);
/// The default of the `lblc_expiration` / `lblcr_expiration` sysctls.
const EXPIRATION: Duration = Duration::from_secs(24 * 60 * 60);
const COUNT_FOR_FULL_EXPIRATION: u32 = 30;
const TAB_BITS: u32 = 10;
const TAB_SIZE: u32 = 1 << TAB_BITS;
const MAX_SIZE: usize = TAB_SIZE as usize * 16;

fn has_spare(d: &Dest) -> bool {
    i64::from(d.active_conns()) * 2 < i64::from(d.weight())
}

/// The kernel's `is_overloaded()` of both modules: more active connections
/// than weight, while some server of the service has `active * 2 < weight`.
/// The second half is a scan in the kernel; here [`Spare`] keeps its answer.
fn is_overloaded(d: &Dest, spare: &Spare) -> bool {
    i64::from(d.active_conns()) > i64::from(d.weight()) && spare.count > 0
}

/// Which servers of the list have `active * 2 < weight`, and how many: kept
/// current on every count change, so `is_overloaded()` needs no scan.
#[derive(Debug, Default)]
pub(crate) struct Spare {
    flags: Vec<bool>,
    count: usize,
}

impl Spare {
    pub(crate) fn rebuild(&mut self, dests: &[Arc<Dest>]) {
        self.flags.clear();
        self.flags.extend(dests.iter().map(|d| has_spare(d)));
        self.count = self.flags.iter().filter(|&&f| f).count();
    }

    pub(crate) fn update(&mut self, pos: usize, d: &Dest) {
        if let Some(f) = self.flags.get_mut(pos) {
            let now = has_spare(d);
            if *f != now {
                *f = now;
                if now {
                    self.count += 1;
                } else {
                    self.count -= 1;
                }
            }
        }
    }
}

trait Entry {
    fn lastuse(&self) -> Time;
}

/// The entry table and its garbage-collection timer.
#[derive(Debug)]
struct Table<E> {
    map: HashMap<IpAddr, E>,
    /// When the periodic timer next fires.
    next_run: Time,
    counter: u32,
    rover: u32,
}

fn bucket(addr: IpAddr) -> u32 {
    hash_32(addr_fold(addr), TAB_BITS)
}

impl<E: Entry> Table<E> {
    fn new(now: Time) -> Self {
        Table {
            map: HashMap::new(),
            next_run: now.saturating_add(CHECK_EXPIRE_INTERVAL),
            counter: 1,
            rover: 0,
        }
    }

    /// Runs every timer expiry due at or before `now`, each at its own time.
    fn run_timers(&mut self, now: Time) {
        while self.next_run <= now {
            let at = self.next_run;
            if self.map.len() <= MAX_SIZE && !self.counter.is_multiple_of(COUNT_FOR_FULL_EXPIRATION)
            {
                // Runs that only count: skip to the next full check at once.
                let period = CHECK_EXPIRE_INTERVAL.as_nanos() as u64;
                let due = (now.as_nanos() - at.as_nanos()) / period + 1;
                let to_full = u64::from(COUNT_FOR_FULL_EXPIRATION - self.counter);
                let skip = due.min(to_full);
                self.counter += skip as u32;
                self.next_run = Time::from_nanos(at.as_nanos().saturating_add(skip * period));
                if self.map.is_empty() && skip == to_full && due > to_full {
                    // Full checks of an empty table change nothing: the
                    // counter just cycles 1..=30.
                    let rest = due - to_full;
                    let cycle = u64::from(COUNT_FOR_FULL_EXPIRATION);
                    self.counter = ((u64::from(self.counter) - 1 + rest) % cycle) as u32 + 1;
                    self.next_run =
                        Time::from_nanos(self.next_run.as_nanos().saturating_add(rest * period));
                }
                continue;
            }
            self.fire(at);
            self.next_run = at.saturating_add(CHECK_EXPIRE_INTERVAL);
        }
    }

    /// `ip_vs_lblc_check_expire()` / `ip_vs_lblcr_check_expire()` at `now`.
    fn fire(&mut self, now: Time) {
        if self.counter.is_multiple_of(COUNT_FOR_FULL_EXPIRATION) {
            // *_full_check(): drop what was unused for `EXPIRATION`.
            self.map
                .retain(|_, e| now < e.lastuse().saturating_add(EXPIRATION));
            self.counter = 1;
            return;
        }
        if self.map.len() <= MAX_SIZE {
            self.counter += 1;
            return;
        }
        let mut goal = ((self.map.len() - MAX_SIZE) * 4 / 3).min(MAX_SIZE / 2) as i64;
        // Stale entries, visited bucket by bucket from the one after the rover.
        let start = (self.rover + 1) % TAB_SIZE;
        let mut stale: Vec<(u32, IpAddr)> = self
            .map
            .iter()
            .filter(|(_, e)| now >= e.lastuse().saturating_add(ENTRY_TIMEOUT))
            .map(|(&a, _)| ((bucket(a) + TAB_SIZE - start) % TAB_SIZE, a))
            .collect();
        stale.sort_unstable_by_key(|&(order, _)| order);
        let mut visited = TAB_SIZE - 1; // all buckets, unless the goal is met
        let mut idx = 0;
        while idx < stale.len() {
            let order = stale[idx].0;
            while idx < stale.len() && stale[idx].0 == order {
                self.map.remove(&stale[idx].1);
                goal -= 1;
                idx += 1;
            }
            if goal <= 0 {
                visited = order;
                break;
            }
        }
        self.rover = (start + visited) % TAB_SIZE;
    }
}

#[derive(Debug)]
struct LblcEntry {
    dest: Arc<Dest>,
    lastuse: Time,
}

impl Entry for LblcEntry {
    fn lastuse(&self) -> Time {
        self.lastuse
    }
}

/// lblc's state: destination address → server.
#[derive(Debug)]
pub(crate) struct Lblc {
    table: Table<LblcEntry>,
}

impl Lblc {
    pub(crate) fn new(now: Time) -> Lblc {
        Lblc {
            table: Table::new(now),
        }
    }

    pub(crate) fn run_timers(&mut self, now: Time) {
        self.table.run_timers(now);
    }

    /// `ip_vs_lblc_schedule()`; `wlc` is the wlc choice over all servers.
    pub(crate) fn pick(
        &mut self,
        dests: &[Arc<Dest>],
        spare: &Spare,
        dst: IpAddr,
        now: Time,
        skip: Skip<'_>,
        wlc: impl FnOnce() -> Option<usize>,
    ) -> Option<Arc<Dest>> {
        self.run_timers(now);
        if let Some(en) = self.table.map.get_mut(&dst) {
            en.lastuse = now;
            let d = &en.dest;
            if d.is_available() && d.weight() > 0 && !is_overloaded(d, spare) && !skip.has(d) {
                return Some(Arc::clone(d));
            }
        }
        let dest = Arc::clone(&dests[wlc()?]);
        // ip_vs_lblc_new(): a changed server replaces the entry.
        match self.table.map.get_mut(&dst) {
            Some(en) if Arc::ptr_eq(&en.dest, &dest) => {}
            Some(en) => {
                *en = LblcEntry {
                    dest: Arc::clone(&dest),
                    lastuse: now,
                }
            }
            None => {
                self.table.map.insert(
                    dst,
                    LblcEntry {
                        dest: Arc::clone(&dest),
                        lastuse: now,
                    },
                );
            }
        }
        Some(dest)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.map.len()
    }
}

#[derive(Debug)]
struct LblcrEntry {
    /// Head first.
    set: Vec<Arc<Dest>>,
    lastmod: Time,
    lastuse: Time,
}

impl Entry for LblcrEntry {
    fn lastuse(&self) -> Time {
        self.lastuse
    }
}

impl LblcrEntry {
    /// `ip_vs_dest_set_min()`: the least loaded available member.
    fn min(&self, skip: Skip<'_>) -> Option<&Arc<Dest>> {
        let available = |d: &Dest| d.is_available() && !skip.has(d);
        let usable = |d: &Dest| !d.is_overloaded() && d.weight() > 0 && available(d);
        let first = self.set.iter().position(|d| usable(d))?;
        let mut least = &self.set[first];
        let mut loh = least.overhead();
        for d in &self.set[first + 1..] {
            if d.is_overloaded() {
                continue;
            }
            let doh = d.overhead();
            if loh * i64::from(d.weight()) > doh * i64::from(least.weight()) && available(d) {
                least = d;
                loh = doh;
            }
        }
        Some(least)
    }

    /// `ip_vs_dest_set_max()`: the most loaded member with a weight.
    fn max(&self) -> Option<usize> {
        let first = self.set.iter().position(|d| d.weight() > 0)?;
        let (mut most, mut moh) = (first, self.set[first].overhead());
        for (i, d) in self.set.iter().enumerate().skip(first + 1) {
            let doh = d.overhead();
            if moh * i64::from(d.weight()) < doh * i64::from(self.set[most].weight())
                && d.weight() > 0
            {
                most = i;
                moh = doh;
            }
        }
        Some(most)
    }

    /// `ip_vs_dest_set_insert(..., check = true)`.
    fn insert(&mut self, dest: &Arc<Dest>, now: Time) {
        if self.set.iter().any(|d| Arc::ptr_eq(d, dest)) {
            return;
        }
        self.set.insert(0, Arc::clone(dest));
        self.lastmod = now;
    }
}

/// lblcr's state: destination address → set of servers.
#[derive(Debug)]
pub(crate) struct Lblcr {
    table: Table<LblcrEntry>,
}

impl Lblcr {
    pub(crate) fn new(now: Time) -> Lblcr {
        Lblcr {
            table: Table::new(now),
        }
    }

    pub(crate) fn run_timers(&mut self, now: Time) {
        self.table.run_timers(now);
    }

    /// `ip_vs_lblcr_schedule()`; `wlc` is the wlc choice over all servers.
    pub(crate) fn pick(
        &mut self,
        dests: &[Arc<Dest>],
        spare: &Spare,
        dst: IpAddr,
        now: Time,
        skip: Skip<'_>,
        wlc: impl FnOnce() -> Option<usize>,
    ) -> Option<Arc<Dest>> {
        self.run_timers(now);
        let Some(en) = self.table.map.get_mut(&dst) else {
            let dest = Arc::clone(&dests[wlc()?]);
            self.table.map.insert(
                dst,
                LblcrEntry {
                    set: vec![Arc::clone(&dest)],
                    lastmod: now,
                    lastuse: now,
                },
            );
            return Some(dest);
        };
        en.lastuse = now;
        let dest = en.min(skip).cloned();
        if en.set.len() > 1
            && now > en.lastmod.saturating_add(EXPIRATION)
            && let Some(m) = en.max()
        {
            en.set.remove(m);
            en.lastmod = now;
        }
        if let Some(d) = dest
            && !is_overloaded(&d, spare)
        {
            return Some(d);
        }
        let dest = Arc::clone(&dests[wlc()?]);
        en.insert(&dest, now);
        Some(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dest::DestParams;

    fn dest(i: u8) -> Arc<Dest> {
        let d = Dest::new(format!("10.0.0.{i}:80").parse().unwrap());
        d.apply(DestParams::default(), true);
        Arc::new(d)
    }

    #[test]
    fn spare_count_follows_the_counts() {
        use crate::dest::Counted;
        let dests = vec![dest(1), dest(2)];
        dests[1].apply(
            DestParams {
                weight: 3,
                ..DestParams::default()
            },
            false,
        );
        let mut spare = Spare::default();
        spare.rebuild(&dests);
        assert_eq!(spare.count, 2, "idle servers with a weight have room");
        let scan = |dests: &[Arc<Dest>]| dests.iter().filter(|d| has_spare(d)).count();
        for (i, d) in dests.iter().enumerate() {
            d.bind(Counted::Inactive);
            d.move_count(Counted::Inactive, Counted::Active);
            spare.update(i, d);
            assert_eq!(spare.count, scan(&dests));
        }
        assert_eq!(
            spare.count, 1,
            "weight 3 with 1 active still has room: 2 < 3"
        );
        dests[1].bind(Counted::Active);
        spare.update(1, &dests[1]);
        assert_eq!(spare.count, 0);
        // Server 0: 2 active over weight 1, but nobody has room: not overloaded.
        dests[0].bind(Counted::Active);
        spare.update(0, &dests[0]);
        assert!(!is_overloaded(&dests[0], &spare));
        // Server 1 drops to 1 active (2 < 3): now server 0 is.
        dests[1].unbind(Counted::Active);
        spare.update(1, &dests[1]);
        assert!(is_overloaded(&dests[0], &spare));
    }

    #[test]
    fn entries_unused_for_a_day_go_at_the_next_full_check() {
        let dests = vec![dest(1)];
        let spare = Spare::default();
        let mut l = Lblc::new(Time::ZERO);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let no = Skip::default();
        l.pick(&dests, &spare, ip("172.16.0.1"), Time::ZERO, no, || Some(0));
        l.pick(
            &dests,
            &spare,
            ip("172.16.0.2"),
            Time::from_secs(3600),
            no,
            || Some(0),
        );
        // Full checks run every 30 minutes: at 86400 s the first entry has
        // been unused for exactly a day (dropped), the second is kept.
        l.run_timers(Time::from_secs(86_399));
        assert_eq!(l.len(), 2);
        l.run_timers(Time::from_secs(86_400));
        assert_eq!(l.len(), 1);
        l.run_timers(Time::from_secs(3600 + 86_400 + 1800));
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn a_long_idle_jump_keeps_the_timer_phase() {
        let mut t: Table<LblcEntry> = Table::new(Time::ZERO);
        t.run_timers(Time::from_secs(60 * 1_000_003));
        // 1_000_003 runs from counter 1: the counter cycles with period 30.
        assert_eq!(t.counter, ((1_000_003 % 30) as u32) + 1);
        assert_eq!(t.next_run, Time::from_secs(60 * 1_000_004));
        let mut step: Table<LblcEntry> = Table::new(Time::ZERO);
        for k in 1..=100u64 {
            step.run_timers(Time::from_secs(60 * k));
        }
        let mut jump: Table<LblcEntry> = Table::new(Time::ZERO);
        jump.run_timers(Time::from_secs(6000));
        assert_eq!((step.counter, step.next_run), (jump.counter, jump.next_run));
    }
}
