//! The tools of the `rvs` package that talk to a running rvs: the admin
//! API client and `rvsadm`, ipvsadm's command line over that API.

#![forbid(unsafe_code)]

pub mod admin_client;
pub mod import;
pub mod ipvsadm;
pub mod replay;
