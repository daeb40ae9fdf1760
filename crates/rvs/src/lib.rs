//! The tools of the `rvs` package that talk to a running rvs: the admin
//! API client and `rvsadm`, ipvsadm's command line over that API.

#![forbid(unsafe_code)]

pub mod admin_client;
pub mod completions;
pub mod import;
pub mod ipvsadm;
pub mod manual;
pub mod replay;

/// The commit this rvs was built from (`build.rs`), or `unknown`.
pub const COMMIT: &str = env!("RVS_COMMIT");

/// `rvs --version`'s: the version and the commit.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RVS_COMMIT"),
    ")"
);
