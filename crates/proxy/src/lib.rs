//! # rvs-proxy: rvs's data plane
//!
//! A userspace virtual server: each client is terminated on a virtual
//! address (VIP) and rvs opens its own connection to the real server that
//! the service's IPVS scheduler ([`rvs_sched`]) picks — what IPVS calls
//! FULLNAT. TCP and UDP, IPv4 and IPv6, configured from one YAML file that
//! reloads without dropping a connection.
//!
//! ## Layout
//!
//! - [`config`]: the YAML file, checked whole into typed settings, errors at
//!   `file:line:column`.
//! - [`proxy`]: [`Proxy`] — start, reload ([`Proxy::apply`]) and shutdown.
//! - [`service`]: a running service: its spec, its scheduler, its counters.
//! - `listener`: listening sockets and accept loops (errors back off, never
//!   end the loop); bound with IP_FREEBIND, so an address not on the host
//!   yet is listened on and served when it arrives ([`local_addrs`] says
//!   which are missing).
//! - [`inherited`]: listening sockets passed by systemd's socket activation
//!   (`LISTEN_FDS`), adopted by the services whose addresses they match.
//! - `tcp`: one connection's life (`tcp::conn`) and byte forwarding
//!   ([`tcp::forward`], splice(2) through pooled pipes, or a copy).
//! - `udp`: sessions, one-packet scheduling, the session bound;
//!   `datagrams`: batched receive (recvmmsg(2)).
//! - `workers`: data-plane threads, one single-threaded runtime each, each
//!   accepting on its own SO_REUSEPORT socket.
//! - [`proxy_proto`]: PROXY protocol v1/v2, both ways.
//! - [`reload`]: the configuration file watcher (inotify, ConfigMap `..data`
//!   swaps included) and SIGHUP.
//! - [`stats`]: per-service counters.
//! - [`fds`]: the process's descriptor limit (raised to the hard limit at
//!   start), the reserve kept for the admin listener, health checks and
//!   reloads, and what TCP connections and UDP sessions may hold.
//! - [`quote`]: what a message may quote of a file or a request.
//!
//! ## Hot paths
//!
//! Accepting a connection loads the service's spec and scheduler once (an
//! `Arc` each) and spawns one task. A pick takes no global lock (see
//! rvs-sched). Forwarding holds a pipe or buffer only while bytes are in
//! flight: an idle connection costs its two sockets and its task.
//!
//! ## What it is not
//!
//! It does not terminate TLS or parse HTTP; it does not forward packets at
//! layer 3 (IPVS's DR and TUN modes): the real server always sees rvs as its
//! peer, and learns the client from the PROXY protocol when asked.

#![deny(unsafe_code)] // allowed in `tcp::info` (one getsockopt(2)), `datagrams` (recvmmsg(2)), `inherited` (owning passed descriptors), `handover` (placing descriptors for the next process) and `memory` (mallopt(3), malloc_trim(3))

pub mod admin;
mod clock;
pub mod config;
pub mod conns;
mod datagrams;
pub mod discovery;
mod drain;
pub mod fds;
pub mod handover;
pub mod health;
pub mod history;
pub mod inherited;
mod limits;
mod listener;
pub mod local_addrs;
pub mod memory;
pub mod proxy;
pub mod proxy_proto;
pub mod quote;
pub mod reload;
pub mod service;
pub mod sip_callid;
pub mod sni;
pub mod stats;
pub mod sync;
pub mod tcp;
mod throttle;
mod udp;
mod workers;

pub use config::Config;
pub use inherited::Inherited;
pub use proxy::{ApplyError, Options, Proxy, TakenOver};
pub use service::ServiceRuntime;
pub use tcp::forward::Mode;
