//! sh and dh: 256-bucket tables (ip_vs_sh.c, ip_vs_dh.c).
//!
//! Both fill their buckets by walking the server list from the head:
//! `ip_vs_dh_reassign()` gives each server one bucket per round,
//! `ip_vs_sh_reassign()` gives each server `weight` consecutive buckets per
//! round (at least one: `++d_count >= weight`, so a weight-0 server keeps
//! its buckets). A client lands in bucket `hash_32(key, 8)`, where the key is
//! the folded client address plus, with sh-port, its source port (sh) or the
//! folded destination address (dh).
//!
//! A server that is quiescent (weight 0) or overloaded answers nothing. With
//! sh-fallback, `ip_vs_sh_get_fallback()` probes on: for offset 0, 1, …, 255
//! it tries bucket `(offset + ihash + hash_32(key, 8)) & 255`, i.e. starting
//! at twice the first bucket, not at the next one.
//!
//! dh has no `upd_dest` hook: an edit does not rebuild its table (the table
//! does not depend on weights, so rebuilding would give the same one).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::Skip;
use crate::dest::Dest;
use crate::hash::{addr_fold, hash_32};

const TAB_BITS: u32 = 8;
const TAB_SIZE: usize = 1 << TAB_BITS;
const TAB_MASK: u32 = TAB_SIZE as u32 - 1;
const EMPTY: u32 = u32::MAX;

/// A bucket table: list positions of the servers, [`EMPTY`] when the list was.
#[derive(Debug)]
pub(crate) struct Buckets([u32; TAB_SIZE]);

impl Buckets {
    /// `ip_vs_sh_reassign()` (`weighted`) or `ip_vs_dh_reassign()`.
    pub(crate) fn build(dests: &[Arc<Dest>], weighted: bool) -> Buckets {
        let mut b = [EMPTY; TAB_SIZE];
        if dests.is_empty() {
            return Buckets(b);
        }
        let (mut pos, mut count) = (0usize, 0i64);
        for slot in &mut b {
            *slot = pos as u32;
            count += 1;
            if !weighted || count >= i64::from(dests[pos].weight()) {
                pos = (pos + 1) % dests.len();
                count = 0;
            }
        }
        Buckets(b)
    }

    fn at(&self, bucket: u32) -> Option<usize> {
        let v = self.0[(bucket & TAB_MASK) as usize];
        (v != EMPTY).then_some(v as usize)
    }
}

fn unavailable(d: &Dest) -> bool {
    d.weight() <= 0 || d.is_overloaded()
}

/// `ip_vs_sh_schedule()`: `port` hashes the source port too (sh-port),
/// `fallback` probes on around the table (sh-fallback).
pub(crate) fn sh_pick(
    table: &Buckets,
    dests: &[Arc<Dest>],
    client: SocketAddr,
    port: bool,
    fallback: bool,
    skip: Skip<'_>,
) -> Option<usize> {
    let unavailable = |d: &Dest| unavailable(d) || skip.has(d);
    let sport = if port { u32::from(client.port()) } else { 0 };
    let key = sport.wrapping_add(addr_fold(client.ip()));
    let ihash = hash_32(key, TAB_BITS);
    let first = table.at(ihash)?;
    if !unavailable(&dests[first]) {
        return Some(first);
    }
    if !fallback {
        return None;
    }
    (0..TAB_SIZE as u32)
        .map(|offset| {
            let roffset = (offset + ihash) % TAB_SIZE as u32;
            table.at(roffset.wrapping_add(ihash))
        })
        .take_while(Option::is_some)
        .flatten()
        .find(|&i| !unavailable(&dests[i]))
}

/// `ip_vs_dh_schedule()`: the bucket of the destination address; the server
/// must be available, not quiescent and not overloaded.
pub(crate) fn dh_pick(
    table: &Buckets,
    dests: &[Arc<Dest>],
    dst: IpAddr,
    skip: Skip<'_>,
) -> Option<usize> {
    let i = table.at(hash_32(addr_fold(dst), TAB_BITS))?;
    let d = &dests[i];
    (d.is_available() && !unavailable(d) && !skip.has(d)).then_some(i)
}
