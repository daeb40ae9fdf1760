//! Routing by the names in a TLS ClientHello, without terminating TLS:
//! several services on one address, each connection sent to the one its
//! server name (SNI) and offered protocols (ALPN) choose.
//!
//! - [`hello`]: the ClientHello parser (sans-io): bytes in, the names out.
//! - [`names`]: which service of an address a hello goes to (`match.sni`,
//!   `match.alpn`, the most specific winning).
//! - [`quic`]: the same hello from a QUIC client's Initial packets,
//!   decrypted with the keys their header gives (sans-io).
//! - `read`: the task's side: a connection's first bytes peeked until
//!   they hold a hello, within `timeouts.client_hello`.

pub mod hello;
pub mod names;
pub mod quic;
pub(crate) mod read;
