//! # rvs-sched: Linux IPVS's schedulers as a library
//!
//! Every scheduler of IPVS — rr, wrr, lc, wlc, sed, nq, sh, dh, lblc, lblcr,
//! mh, fo, ovf, twos — with the kernel's exact decisions: the same list order
//! (a new real server goes to the head), the same tie-breaking, the same
//! overload thresholds, the same persistence templates, the same hash buckets
//! for sh, dh and mh. docs/ipvs-semantics.md states each rule and the kernel
//! function it mirrors; each module's docs do the same for its part.
//!
//! This crate is *sans-io*: no sockets, no async, no clock, no global RNG.
//! The caller passes the client and destination addresses, the time
//! ([`Time`]) and the seed of twos' random numbers, and reports each
//! connection's life through the [`Conn`] handle a pick returns.
//!
//! ## Layout
//!
//! - [`service`]: [`Service`] — add, edit and delete servers; schedule a
//!   connection; run expiries. [`Conn`] — one connection's accounting.
//! - [`dest`]: [`Dest`] — a real server's counters, flags and the kernel's
//!   bind/unbind/update rules.
//! - `sched`: one module per scheduler or family (`rr`, `wrr`, `least` for
//!   lc/wlc/sed/nq/fo/ovf, `bucket` for sh/dh, `mh`, `locality` for
//!   lblc/lblcr, `twos`).
//! - [`persist`]: persistence templates.
//! - [`hash`]: `hash_32()`, `hsiphash()` and address folding, bit for bit.
//! - [`kind`], [`time`], [`error`]: names, the caller's clock, errors.
//!
//! ## Concurrency
//!
//! A data plane picks from many threads while others count connections in
//! and out. The design follows IPVS's own: counters are atomics read without
//! a lock, the server list is published whole, and only state that a pick
//! itself changes is serialized, per service.
//!
//! - **The list.** A service's servers and the sh/dh/mh lookup table form one
//!   immutable `View`, published through an [`arc_swap::ArcSwap`]. A control
//!   change (add, edit, delete) builds the next view and swaps it in whole,
//!   as the kernel replaces the list under RCU. Readers never see a table
//!   that disagrees with its list.
//! - **Lock-free picks.** sh, dh, mh and twos pick from a loaded view and
//!   the servers' atomic counters and flags; they take no lock at all. twos'
//!   random numbers come from an atomic counter (SplitMix64).
//! - **Per-service lock.** rr and wrr move a pointer on every pick; lblc and
//!   lblcr update their tables; the least-connection schedulers (lc, wlc,
//!   sed, nq, fo, ovf, and the wlc step inside lblc and lblcr) keep an index.
//!   Those picks take the service's `Mutex` for a handful of instructions, as
//!   IPVS takes `svc->sched_lock`. There is no process-wide lock: two
//!   services never contend.
//! - **Sub-linear least-connection.** IPVS scans every server on each pick.
//!   Here a tournament tree holds, for each subtree, its best server with the
//!   kernel's tie rule (the earliest in list order wins), so a pick reads the
//!   root in O(1) and a change of one server's counts costs O(log n) under
//!   the service's lock. The kernel's scan stays in the code as the
//!   reference; property tests hold the tree to it.
//! - **No allocation per pick.** Picks clone an `Arc` of the chosen server
//!   (an atomic increment). Allocation happens when servers are changed, when
//!   a persistence template is created, and when lblc/lblcr learn a new
//!   destination address.
//! - **Counts.** [`Conn`] binds on creation, moves between inactive and active
//!   on [`Conn::established`] / [`Conn::fin`], and unbinds when dropped. Each
//!   step is an atomic update of the server's counters and flags, plus, for
//!   the indexed schedulers, an O(log n) index update under the lock.
//!
//! Exactness: a single-threaded sequence of operations gives exactly the
//! kernel's decisions (this is what `rvs sched-replay` checks). Under
//! concurrency, a pick reads counters that other threads are changing, as
//! the kernel does.
//!
//! ## What this crate is not
//!
//! It does not forward traffic, resolve names, parse configuration, or keep
//! time. It does not implement IPVS's forwarding methods, the FTP and SIP
//! persistence engines, or connection synchronization.

#![forbid(unsafe_code)]

pub mod dest;
pub mod error;
pub mod hash;
pub mod kind;
pub mod persist;
mod sched;
pub mod service;
pub mod time;

pub use dest::{Dest, DestParams, DestUpdate, Traffic};
pub use error::SchedError;
pub use kind::{SchedFlag, SchedFlags, SchedulerKind};
pub use persist::{Netmask, Persistence, Scope, TemplateEntry};
pub use service::{Conn, Service, ServiceConfig};
pub use time::Time;
