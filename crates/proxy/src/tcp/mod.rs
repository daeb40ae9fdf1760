//! TCP: accepting, scheduling, connecting and forwarding.

pub(crate) mod conn;
pub mod forward;
#[cfg(target_os = "linux")]
pub(crate) mod pipes;
