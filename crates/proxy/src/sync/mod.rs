//! IPVS's connection synchronisation between directors.

pub mod wire;
