//! Checking `admin:`: the listener, the token (and the file it may come
//! from, refused when other users could read or change it), the host
//! names the listener answers to, and its connection bounds.

use std::net::IpAddr;

use super::raw::RawAdmin;
use super::validate::{At, at, defaults};
use super::{Admin, AdminLimits};

/// `admin:` into [`Admin`].
pub(crate) fn admin(raw: RawAdmin, problems: &mut Vec<At>) -> Admin {
    let token = match (raw.token, raw.token_file) {
        (Some(_), Some(_)) => {
            problems.push(At {
                path: "admin.token_file".into(),
                key: true,
                reason: "give token or token_file, not both".into(),
            });
            None
        }
        (Some(t), None) => {
            if t.trim().is_empty() {
                problems.push(at("admin.token", "must not be empty"));
            }
            Some(t)
        }
        (None, Some(f)) => match token_file(&f) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(at("admin.token_file", format!("{f}: {e}")));
                None
            }
        },
        (None, None) => None,
    };
    let allowed_hosts = raw.allowed_hosts.unwrap_or_default();
    for (i, h) in allowed_hosts.iter().enumerate() {
        if let Err(e) = allowed_host(h) {
            problems.push(at(format!("admin.allowed_hosts[{i}]"), e));
        }
    }
    let positive = |v: Option<u32>, key: &str, default: u32, problems: &mut Vec<At>| match v {
        Some(0) => {
            problems.push(at(format!("admin.{key}"), "must be 1 or more"));
            default
        }
        Some(n) => n,
        None => default,
    };
    let limits = AdminLimits {
        max_connections: positive(
            raw.max_connections,
            "max_connections",
            AdminLimits::DEFAULT.max_connections,
            problems,
        ),
        max_connections_per_source: positive(
            raw.max_connections_per_source,
            "max_connections_per_source",
            AdminLimits::DEFAULT.max_connections_per_source,
            problems,
        ),
    };
    if limits.max_connections_per_source > limits.max_connections {
        problems.push(at(
            "admin.max_connections_per_source",
            format!(
                "is above admin.max_connections ({}): one source could never reach it",
                limits.max_connections
            ),
        ));
    }
    Admin {
        listen: raw.listen.map_or(defaults::ADMIN, |a| a.0),
        token,
        real_server_histograms: raw.real_server_histograms.unwrap_or(false),
        allowed_hosts,
        limits,
    }
}

/// An entry of `admin.allowed_hosts`: a host name, an address, or `*.`
/// and a name (every name under it).
fn allowed_host(h: &str) -> Result<(), String> {
    let bare = h.strip_prefix("*.").unwrap_or(h);
    if bare.parse::<IpAddr>().is_ok() && bare.len() == h.len() {
        return Ok(());
    }
    let name = bare.strip_suffix('.').unwrap_or(bare);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a host name: write a name (rvs.example.com), an address, or *. and a name (*.example.com)",
            crate::quote::bounded(h)
        ))
    }
}

/// The token in `path`, refused when the file's permissions let another
/// user read or replace it, as ssh refuses a private key that others can
/// read. A file of rvs's own user must be readable by that user alone
/// (0600 or 0400); a file of another user (root, a secret mounted by
/// Kubernetes or a service manager) may be readable by its group — how
/// rvs, a member of it, reads a file it does not own — but never by every
/// user. Nobody but its owner may write it.
fn token_file(path: &str) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    let mode = meta.mode() & 0o7777;
    let own = meta.uid() == rustix::process::geteuid().as_raw();
    let chmod = |to: &str| format!("chmod {to} {path}");
    if mode & 0o022 != 0 {
        return Err(format!(
            "the token file can be written by other users (mode {mode:04o}): anyone of them could replace the token; {}",
            chmod("go-w")
        ));
    }
    if own && mode & 0o077 != 0 {
        return Err(format!(
            "the token file can be read by other users (mode {mode:04o}); it must be readable by rvs's user alone: {}",
            chmod("600")
        ));
    }
    if mode & 0o007 != 0 {
        return Err(format!(
            "the token file can be read by every user (mode {mode:04o}); {} (rvs reads it as its owner or through its group)",
            chmod("o-rwx")
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let t = text.trim();
    if t.is_empty() {
        return Err("the file is empty".into());
    }
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn with_mode(mode: u32) -> (tempdir::Dir, String) {
        let d = tempdir::Dir::new();
        let p = d.0.join("token");
        std::fs::write(&p, "s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        let s = p.display().to_string();
        (d, s)
    }

    mod tempdir {
        pub(super) struct Dir(pub(super) std::path::PathBuf);
        impl Dir {
            pub(super) fn new() -> Dir {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "rvs-token-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn a_token_file_others_can_read_or_write_is_refused() {
        for ok in [0o600, 0o400] {
            let (_d, p) = with_mode(ok);
            assert_eq!(token_file(&p).unwrap(), "s3cret", "{ok:o}");
        }
        for (bad, why) in [
            (0o644, "read by other users"),
            (0o640, "read by other users"),
            (0o604, "read by other users"),
            (0o666, "written by other users"),
            (0o620, "written by other users"),
            (0o602, "written by other users"),
        ] {
            let (_d, p) = with_mode(bad);
            let e = token_file(&p).unwrap_err();
            assert!(
                e.contains(why) && e.contains(&format!("{bad:04o}")),
                "{bad:o}: {e}"
            );
            assert!(e.contains("chmod"), "{e}");
        }
    }

    #[test]
    fn allowed_hosts_are_names_addresses_or_wildcards() {
        for ok in [
            "rvs.example.com",
            "rvs",
            "*.example.com",
            "10.0.0.1",
            "::1",
            "rvs.",
        ] {
            assert_eq!(allowed_host(ok), Ok(()), "{ok}");
        }
        for bad in ["", "*", "a b", "http://x", "x:80", "*.", "*.10.0.0.1x/"] {
            assert!(allowed_host(bad).is_err(), "{bad}");
        }
    }
}
