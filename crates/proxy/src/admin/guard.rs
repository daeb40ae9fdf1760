//! Which requests the admin listener takes at all, before any route runs:
//! the defences against a browser turned against it.
//!
//! - **DNS rebinding.** A page on `attacker.example` that makes its name
//!   resolve to 127.0.0.1 talks to the admin listener as its own origin:
//!   the browser then sends `Host: attacker.example:9180`. A request is
//!   taken only when its `Host` names the listener itself: one of its
//!   addresses (the connection's local address, or the configured one),
//!   `localhost` (and `*.localhost`, which browsers resolve to loopback
//!   themselves), or a name of `admin.allowed_hosts`.
//! - **Cross-site requests.** A page on any origin can make the browser
//!   send a "simple" request (a form, or `fetch` with `text/plain`) with no
//!   preflight. Such a request carries an `Origin` (and, in browsers since
//!   2020, `Sec-Fetch-Site`) naming the page: one from another origin is
//!   refused. A change must also send its body as `application/json` (or
//!   YAML), which no simple request can: a form or `text/plain` body is
//!   refused (415).
//!
//! Probes and scrapes (`/healthz`, `/readyz`, `/metrics`) are not guarded:
//! the kubelet and Prometheus name the target however they were told to,
//! and none of them reveals a secret or changes anything.
//!
//! Sans-io: a request is looked at through [`Head`], a few of its headers
//! and its connection's addresses, so that the rules are tested and fuzzed
//! alone.

use std::net::{IpAddr, SocketAddr};

use crate::quote::bounded;

/// What the guard looks at in a request.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Head<'a> {
    /// Whether it changes something (every method but GET and HEAD).
    pub(crate) change: bool,
    /// `Host` (or the authority of an absolute-form target).
    pub(crate) host: Option<&'a str>,
    /// `Origin`.
    pub(crate) origin: Option<&'a str>,
    /// `Sec-Fetch-Site`.
    pub(crate) fetch_site: Option<&'a str>,
    /// `Content-Type`.
    pub(crate) content_type: Option<&'a str>,
    /// Whether a body comes (a `Content-Length` above 0, or chunked).
    pub(crate) has_body: bool,
}

/// Where the request came in.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Listener<'a> {
    /// The configured `admin.listen`.
    pub(crate) listen: SocketAddr,
    /// The connection's local address: what the client reached.
    pub(crate) local: SocketAddr,
    /// `admin.allowed_hosts`.
    pub(crate) allowed_hosts: &'a [String],
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `Host` names something other than this listener (403).
    Host(String),
    /// Sent by a page of another origin (403).
    CrossOrigin(String),
    /// A change whose body is not JSON or YAML (415).
    MediaType(String),
}

/// The media types a change's body may have. None of them is one a form
/// or a simple `fetch` can send without a preflight, which rvs never
/// answers.
const BODY_TYPES: [&str; 4] = [
    "application/json",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
];

/// The checks, in order: Host, then where the request was sent from, then
/// a change's body.
pub(crate) fn check(head: &Head<'_>, at: &Listener<'_>) -> Result<(), Refused> {
    check_host(head.host, at)?;
    check_origin(head)?;
    if head.change {
        check_body(head)?;
    }
    Ok(())
}

/// The host of an authority (`host`, `host:port`, `[v6]`, `[v6]:port`),
/// lower-cased, without a final dot; `None` when it is not one.
fn host_part(authority: &str) -> Option<String> {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        inside
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) if is_port(p) => h,
            Some(_) => return None,
            None => a,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'%'));
    ok.then(|| host.to_ascii_lowercase())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// The same address, an IPv4 client of a dual-stack socket as its IPv4.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// Whether `host` (lower-case, from [`host_part`]) is one of `allowed`:
/// a name written there, or under a `*.` entry.
fn listed(host: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| {
        let a = a.trim_end_matches('.');
        match a.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => a.eq_ignore_ascii_case(host),
        }
    })
}

fn check_host(host: Option<&str>, at: &Listener<'_>) -> Result<(), Refused> {
    // HTTP/1.0 has no Host, and no browser sends a request without one.
    let Some(raw) = host else {
        return Ok(());
    };
    let refused = || {
        Refused::Host(format!(
            "Host {:?} does not name this admin listener: use its address ({}), localhost, or add the name to admin.allowed_hosts",
            bounded(raw),
            at.local.ip()
        ))
    };
    let host = host_part(raw).ok_or_else(refused)?;
    if listed(&host, at.allowed_hosts) {
        return Ok(());
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return if same_ip(ip, at.local.ip()) || same_ip(ip, at.listen.ip()) {
            Ok(())
        } else {
            Err(refused())
        };
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return Ok(());
    }
    Err(refused())
}

fn check_origin(head: &Head<'_>) -> Result<(), Refused> {
    if let Some(site) = head.fetch_site {
        let site = site.trim();
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return Err(Refused::CrossOrigin(format!(
                "sent by a page of another site (Sec-Fetch-Site: {})",
                bounded(site)
            )));
        }
    }
    let Some(origin) = head.origin else {
        return Ok(());
    };
    let origin = origin.trim();
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let same = match (authority, head.host) {
        (Some(a), Some(h)) => !a.contains('/') && a.eq_ignore_ascii_case(h.trim()),
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(Refused::CrossOrigin(format!(
            "sent by a page of another origin ({}): the admin API answers its own origin only",
            bounded(origin)
        )))
    }
}

fn check_body(head: &Head<'_>) -> Result<(), Refused> {
    if !head.has_body && head.content_type.is_none() {
        // Nothing a form could have sent: a form always has a type.
        return Ok(());
    }
    let media = head.content_type.map(|t| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    match media {
        Some(m) if BODY_TYPES.contains(&m.as_str()) => Ok(()),
        Some(m) => Err(Refused::MediaType(format!(
            "changes take Content-Type: application/json (or application/yaml), not {}",
            bounded(&m)
        ))),
        None => Err(Refused::MediaType(
            "changes take Content-Type: application/json (or application/yaml): the body has no type"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at<'a>(listen: &str, local: &str, allowed: &'a [String]) -> Listener<'a> {
        Listener {
            listen: listen.parse().unwrap(),
            local: local.parse().unwrap(),
            allowed_hosts: allowed,
        }
    }

    fn read(host: &str) -> Head<'_> {
        Head {
            host: Some(host),
            ..Head::default()
        }
    }

    #[test]
    fn hosts_that_name_the_listener_pass_and_others_do_not() {
        let none: Vec<String> = Vec::new();
        let l = at("127.0.0.1:9180", "127.0.0.1:9180", &none);
        for ok in [
            "127.0.0.1:9180",
            "127.0.0.1",
            "localhost:9180",
            "LOCALHOST",
            "localhost.",
            "rvs.localhost:9180",
        ] {
            assert_eq!(check(&read(ok), &l), Ok(()), "{ok}");
        }
        for bad in [
            "rebind.attacker.example:9180",
            "attacker.example",
            "127.0.0.2:9180",
            "10.0.0.1",
            "localhost.attacker.example",
            "",
            "127.0.0.1:99999999",
            "127.0.0.1:x",
            "a b",
            "[::1",
        ] {
            assert!(
                matches!(check(&read(bad), &l), Err(Refused::Host(_))),
                "{bad}"
            );
        }
        // No Host: HTTP/1.0.
        assert_eq!(check(&Head::default(), &l), Ok(()));
    }

    #[test]
    fn a_wildcard_listener_takes_the_address_that_was_reached() {
        let none: Vec<String> = Vec::new();
        let l = at("0.0.0.0:9180", "10.1.2.3:9180", &none);
        assert_eq!(check(&read("10.1.2.3:9180"), &l), Ok(()));
        assert!(check(&read("10.1.2.4:9180"), &l).is_err());
        let l6 = at("[::]:9180", "[::1]:9180", &none);
        assert_eq!(check(&read("[::1]:9180"), &l6), Ok(()));
        assert_eq!(check(&read("[::1]"), &l6), Ok(()));
        assert!(check(&read("[::2]:9180"), &l6).is_err());
        // An IPv4 client of a dual-stack socket.
        let mapped = at("[::]:9180", "[::ffff:10.1.2.3]:9180", &none);
        assert_eq!(check(&read("10.1.2.3:9180"), &mapped), Ok(()));
    }

    #[test]
    fn allowed_hosts_are_exact_or_under_a_wildcard() {
        let allowed = vec!["rvs.example.com".to_owned(), "*.lb.example".to_owned()];
        let l = at("0.0.0.0:9180", "10.1.2.3:9180", &allowed);
        for ok in [
            "rvs.example.com",
            "RVS.example.com:9180",
            "a.lb.example",
            "b.a.lb.example:1",
        ] {
            assert_eq!(check(&read(ok), &l), Ok(()), "{ok}");
        }
        for bad in [
            "lb.example",
            "xlb.example",
            "example.com",
            "rvs.example.com.evil",
        ] {
            assert!(check(&read(bad), &l).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_from_other_origins_are_refused() {
        let none: Vec<String> = Vec::new();
        let l = at("127.0.0.1:9180", "127.0.0.1:9180", &none);
        let with = |origin: Option<&'static str>, site: Option<&'static str>| Head {
            host: Some("127.0.0.1:9180"),
            origin,
            fetch_site: site,
            ..Head::default()
        };
        assert_eq!(
            check(&with(Some("http://127.0.0.1:9180"), None), &l),
            Ok(())
        );
        assert_eq!(
            check(&with(Some("https://127.0.0.1:9180"), None), &l),
            Ok(())
        );
        assert_eq!(check(&with(None, Some("same-origin")), &l), Ok(()));
        assert_eq!(check(&with(None, Some("none")), &l), Ok(()));
        for (origin, site) in [
            (Some("http://attacker.example"), None),
            (Some("http://127.0.0.1:8000"), None),
            (Some("null"), None),
            (Some("http://127.0.0.1:9180/x"), None),
            (Some("file://"), None),
            (None, Some("cross-site")),
            (None, Some("same-site")),
            (Some("http://127.0.0.1:9180"), Some("cross-site")),
        ] {
            assert!(
                matches!(check(&with(origin, site), &l), Err(Refused::CrossOrigin(_))),
                "{origin:?} {site:?}"
            );
        }
    }

    #[test]
    fn changes_need_a_json_or_yaml_body() {
        let none: Vec<String> = Vec::new();
        let l = at("127.0.0.1:9180", "127.0.0.1:9180", &none);
        let change = |content_type: Option<&'static str>, has_body: bool| Head {
            change: true,
            host: Some("127.0.0.1:9180"),
            content_type,
            has_body,
            ..Head::default()
        };
        for ok in [
            change(Some("application/json"), true),
            change(Some("Application/JSON; charset=utf-8"), true),
            change(Some("application/yaml"), true),
            change(Some("application/json"), false),
            change(None, false),
        ] {
            assert_eq!(check(&ok, &l), Ok(()), "{ok:?}");
        }
        for bad in [
            change(Some("text/plain"), true),
            change(Some("text/plain;charset=UTF-8"), true),
            change(Some("application/x-www-form-urlencoded"), true),
            change(Some("multipart/form-data; boundary=x"), true),
            change(Some("text/plain"), false),
            change(None, true),
        ] {
            assert!(
                matches!(check(&bad, &l), Err(Refused::MediaType(_))),
                "{bad:?}"
            );
        }
        // Reads take any type.
        let read = Head {
            content_type: Some("text/plain"),
            has_body: true,
            ..change(None, false)
        };
        assert_eq!(
            check(
                &Head {
                    change: false,
                    ..read
                },
                &l
            ),
            Ok(())
        );
    }
}
