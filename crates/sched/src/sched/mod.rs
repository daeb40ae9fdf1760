//! The schedulers, one module per kernel file or family, and the two kinds of
//! state they keep:
//!
//! - [`View`]: the service's servers in list order, with the sh/dh/mh table
//!   built from them. Immutable; a change builds a new one that replaces the
//!   old whole. sh, dh, mh and twos pick from a view alone, without a lock.
//! - [`PickState`]: what a pick itself changes (the rr/wrr pointer, the
//!   lblc/lblcr tables) and the least-connection index, which connection
//!   counts keep current. It lives under the service's lock.

pub(crate) mod bucket;
pub(crate) mod least;
pub(crate) mod locality;
pub(crate) mod mh;
pub(crate) mod rr;
pub(crate) mod twos;
pub(crate) mod wrr;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::dest::{Dest, NO_POS};
use crate::kind::{SchedFlags, SchedulerKind};
use crate::time::Time;

use bucket::Buckets;
use least::{Metric, Tournament};
use locality::{Lblc, Lblcr, Spare};
use mh::MhTable;
use rr::Rr;
use wrr::Wrr;

/// Servers a retry must not pick: an rvs extension (IPVS never retries). The
/// schedulers treat them as unusable, exactly as they treat a quiescent or
/// overloaded server; with none, every pick is IPVS's.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Skip<'a>(pub(crate) &'a [SocketAddr]);

impl Skip<'_> {
    pub(crate) fn has(&self, d: &Dest) -> bool {
        !self.0.is_empty() && self.0.contains(&d.addr())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The servers of a service, head of the list first, and the hash table of
/// the hashing schedulers.
#[derive(Debug)]
pub(crate) struct View {
    pub(crate) dests: Box<[Arc<Dest>]>,
    pub(crate) table: Table,
}

/// The lookup table of sh, dh or mh.
#[derive(Debug)]
pub(crate) enum Table {
    None,
    Sh(Buckets),
    Dh(Buckets),
    Mh(Arc<MhTable>),
}

impl View {
    pub(crate) fn empty(kind: SchedulerKind) -> View {
        View {
            dests: Box::new([]),
            table: Table::build(kind, &[], &Table::None),
        }
    }

    /// A view of `dests`, numbering their positions.
    pub(crate) fn new(kind: SchedulerKind, dests: Vec<Arc<Dest>>, prev: &Table) -> View {
        for (i, d) in dests.iter().enumerate() {
            d.set_pos(i as u32);
        }
        let table = Table::build(kind, &dests, prev);
        View {
            dests: dests.into_boxed_slice(),
            table,
        }
    }

    /// The same servers with the table rebuilt (an edit, for sh and mh).
    pub(crate) fn rebuilt(&self, kind: SchedulerKind) -> View {
        View {
            dests: self.dests.clone(),
            table: Table::build(kind, &self.dests, &self.table),
        }
    }

    pub(crate) fn position(&self, addr: SocketAddr) -> Option<usize> {
        self.dests.iter().position(|d| d.addr() == addr)
    }

    /// Lock-free picks: sh, dh, mh, twos.
    pub(crate) fn pick(
        &self,
        kind: SchedulerKind,
        flags: SchedFlags,
        client: SocketAddr,
        dst: SocketAddr,
        rng: &twos::Rng,
        skip: Skip<'_>,
    ) -> Option<&Arc<Dest>> {
        let at = |i: usize| &self.dests[i];
        match (kind, &self.table) {
            (SchedulerKind::Sh, Table::Sh(b)) => {
                bucket::sh_pick(b, &self.dests, client, flags.port, flags.fallback, skip).map(at)
            }
            (SchedulerKind::Dh, Table::Dh(b)) => {
                bucket::dh_pick(b, &self.dests, dst.ip(), skip).map(at)
            }
            (SchedulerKind::Mh, Table::Mh(t)) => t.pick(client, flags.port, flags.fallback, skip),
            (SchedulerKind::Twos, _) => twos::pick(&self.dests, rng, skip).map(at),
            _ => None,
        }
    }
}

impl Table {
    /// The `add_dest`/`del_dest`/`upd_dest` hooks of sh, dh and mh.
    fn build(kind: SchedulerKind, dests: &[Arc<Dest>], prev: &Table) -> Table {
        match kind {
            SchedulerKind::Sh => Table::Sh(Buckets::build(dests, true)),
            SchedulerKind::Dh => Table::Dh(Buckets::build(dests, false)),
            SchedulerKind::Mh => {
                let prev = match prev {
                    Table::Mh(t) => Some(t),
                    _ => None,
                };
                Table::Mh(MhTable::build(dests, prev))
            }
            _ => Table::None,
        }
    }
}

/// Whether `kind` picks from the view alone, without the service's lock.
pub(crate) fn is_lock_free(kind: SchedulerKind) -> bool {
    matches!(
        kind,
        SchedulerKind::Sh | SchedulerKind::Dh | SchedulerKind::Mh | SchedulerKind::Twos
    )
}

/// State changed by picks, kept under the service's lock.
#[derive(Debug)]
pub(crate) enum PickState {
    Rr(Rr),
    Wrr(Wrr),
    Least(Tournament),
    Lblc(Lblc, Tournament, Spare),
    Lblcr(Lblcr, Tournament, Spare),
    LockFree,
}

impl PickState {
    pub(crate) fn new(kind: SchedulerKind, now: Time) -> PickState {
        let tree = Tournament::new;
        match kind {
            SchedulerKind::Rr => PickState::Rr(Rr::default()),
            SchedulerKind::Wrr => PickState::Wrr(Wrr::new()),
            SchedulerKind::Lc => PickState::Least(tree(Metric::Lc)),
            SchedulerKind::Wlc => PickState::Least(tree(Metric::Wlc)),
            SchedulerKind::Sed => PickState::Least(tree(Metric::Sed)),
            SchedulerKind::Nq => PickState::Least(tree(Metric::Nq)),
            SchedulerKind::Fo => PickState::Least(tree(Metric::Fo)),
            SchedulerKind::Ovf => PickState::Least(tree(Metric::Ovf)),
            SchedulerKind::Lblc => {
                PickState::Lblc(Lblc::new(now), tree(Metric::Wlc), Spare::default())
            }
            SchedulerKind::Lblcr => {
                PickState::Lblcr(Lblcr::new(now), tree(Metric::Wlc), Spare::default())
            }
            SchedulerKind::Sh | SchedulerKind::Dh | SchedulerKind::Mh | SchedulerKind::Twos => {
                PickState::LockFree
            }
        }
    }

    /// Rebuilds the indexes that depend on list positions.
    fn reindex(&mut self, dests: &[Arc<Dest>]) {
        match self {
            PickState::Least(t) => t.rebuild(dests),
            PickState::Lblc(_, t, s) | PickState::Lblcr(_, t, s) => {
                t.rebuild(dests);
                s.rebuild(dests);
            }
            _ => {}
        }
    }

    /// Re-reads one server into the indexes.
    fn reindex_one(&mut self, pos: usize, d: &Dest) {
        match self {
            PickState::Least(t) => t.update(pos, d),
            PickState::Lblc(_, t, s) | PickState::Lblcr(_, t, s) => {
                t.update(pos, d);
                s.update(pos, d);
            }
            _ => {}
        }
    }

    /// Whether connection counts must be reported to this state.
    pub(crate) fn has_index(kind: SchedulerKind) -> bool {
        !matches!(
            kind,
            SchedulerKind::Rr
                | SchedulerKind::Wrr
                | SchedulerKind::Sh
                | SchedulerKind::Dh
                | SchedulerKind::Mh
                | SchedulerKind::Twos
        )
    }

    /// A server was linked at the head of `view`.
    pub(crate) fn linked(&mut self, view: &View) {
        match self {
            PickState::Rr(rr) => rr.linked_at_head(),
            PickState::Wrr(w) => w.dest_changed(&view.dests),
            _ => {}
        }
        self.reindex(&view.dests);
    }

    /// The server at `pos` was unlinked; `view` is the list without it.
    pub(crate) fn unlinked(&mut self, pos: usize, view: &View) {
        match self {
            PickState::Rr(rr) => rr.unlinked(pos),
            PickState::Wrr(w) => w.dest_changed(&view.dests),
            _ => {}
        }
        self.reindex(&view.dests);
    }

    /// The list was replaced whole: `old` is the list before (its servers
    /// that left are unlinked, with no position), `view` the list after.
    pub(crate) fn replaced(&mut self, old: &[Arc<Dest>], view: &View) {
        match self {
            PickState::Rr(rr) => rr.replaced(old),
            PickState::Wrr(w) => w.dest_changed(&view.dests),
            _ => {}
        }
        self.reindex(&view.dests);
    }

    /// The server at `pos` was edited.
    pub(crate) fn updated(&mut self, pos: usize, view: &View) {
        if let PickState::Wrr(w) = self {
            w.dest_changed(&view.dests);
        }
        self.reindex_one(pos, &view.dests[pos]);
    }

    /// `dest`'s counters or flags changed.
    pub(crate) fn counts_changed(&mut self, dest: &Dest) {
        let pos = dest.pos();
        if pos != NO_POS {
            self.reindex_one(pos as usize, dest);
        }
    }

    /// Runs the lblc/lblcr table timers due at `now`.
    pub(crate) fn run_timers(&mut self, now: Time) {
        match self {
            PickState::Lblc(l, ..) => l.run_timers(now),
            PickState::Lblcr(l, ..) => l.run_timers(now),
            _ => {}
        }
    }

    /// A pick under the lock: rr, wrr, the least-connection family, lblc, lblcr.
    pub(crate) fn pick(
        &mut self,
        view: &View,
        dst: SocketAddr,
        now: Time,
        skip: Skip<'_>,
    ) -> Option<Arc<Dest>> {
        let dests = &view.dests;
        let pos = match self {
            PickState::Rr(rr) => rr.pick(dests, skip),
            PickState::Wrr(w) => w.pick(dests, skip),
            PickState::Least(t) => best(t, dests, skip),
            PickState::Lblc(l, t, s) => {
                return l.pick(dests, s, dst.ip(), now, skip, || best(t, dests, skip));
            }
            PickState::Lblcr(l, t, s) => {
                return l.pick(dests, s, dst.ip(), now, skip, || best(t, dests, skip));
            }
            PickState::LockFree => None,
        };
        pos.map(|i| Arc::clone(&dests[i]))
    }
}

/// The tree's answer, or, for a retry, its answer with the skipped servers
/// masked out.
fn best(t: &mut Tournament, dests: &[Arc<Dest>], skip: Skip<'_>) -> Option<usize> {
    if skip.is_empty() {
        return t.best();
    }
    let masked: Vec<usize> = (0..dests.len()).filter(|&i| skip.has(&dests[i])).collect();
    t.best_without(&masked, dests)
}
