//! Round robin: ip_vs_rr.c.
//!
//! `svc->sched_data` points at the list entry picked last, or at the list
//! head before the first pick. A pick walks on from there to the end of the
//! list and, when it did not start at the head, wraps around up to and
//! including the entry it started from (`ip_vs_rr_schedule()`). A server is
//! usable when it is not overloaded and its weight is above 0. rr has no
//! `add_dest` hook: a server linked at the head is reached when the walk next
//! wraps. `ip_vs_rr_del_dest()` moves a pointer on the deleted server back to
//! its predecessor.

use std::sync::Arc;

use super::Skip;
use crate::dest::Dest;

/// The rr pointer: the list position of the last pick, `None` for the head.
#[derive(Debug, Default)]
pub(crate) struct Rr {
    last: Option<usize>,
}

fn usable(d: &Dest) -> bool {
    !d.is_overloaded() && d.weight() > 0
}

impl Rr {
    pub(crate) fn pick(&mut self, dests: &[Arc<Dest>], skip: Skip<'_>) -> Option<usize> {
        let start = self.last.map_or(0, |p| p + 1);
        let wrapped = self.last.map_or(0..0, |p| 0..(p + 1).min(dests.len()));
        let hit = (start..dests.len())
            .chain(wrapped)
            .find(|&i| usable(&dests[i]) && !skip.has(&dests[i]))?;
        self.last = Some(hit);
        Some(hit)
    }

    /// A server was linked at the head: every position moved up by one.
    pub(crate) fn linked_at_head(&mut self) {
        if let Some(p) = &mut self.last {
            *p += 1;
        }
    }

    /// The list was replaced whole (`old` is the list before; its servers
    /// now carry their new positions, or none): the pointer follows the
    /// server it pointed at, or, when that one left, the nearest server
    /// before it that stayed, as a run of `ip_vs_rr_del_dest()` would.
    pub(crate) fn replaced(&mut self, old: &[Arc<Dest>]) {
        self.last = self.last.and_then(|p| {
            old.get(..=p.min(old.len().saturating_sub(1)))?
                .iter()
                .rev()
                .map(|d| d.pos())
                .find(|&pos| pos != crate::dest::NO_POS)
                .map(|pos| pos as usize)
        });
    }

    /// The server at `pos` was unlinked.
    pub(crate) fn unlinked(&mut self, pos: usize) {
        self.last = match self.last {
            Some(p) if p == pos => pos.checked_sub(1),
            Some(p) if p > pos => Some(p - 1),
            other => other,
        };
    }
}
