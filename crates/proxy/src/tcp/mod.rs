//! TCP: accepting, scheduling, connecting and forwarding.

pub(crate) mod conn;
pub mod forward;
pub(crate) mod info;
#[cfg(target_os = "linux")]
pub(crate) mod pipes;
pub(crate) mod sockopts;
