//! Secrets of a configuration: what the admin API and `rvs show-config`
//! write as [`REDACTED`] unless the request carries the admin token.
//!
//! - the arguments of a misc check written `{secret: ...}` (a password, a
//!   key passed to the program);
//! - the query of an HTTP(S) check's `path` (`/status?user=u&key=...`:
//!   each value);
//! - a protocol check's `password` and `secret`.
//!
//! The admin token itself is never written at all. A service sent back
//! with a secret still written [`REDACTED`] (as `rvsadm -E` does: it reads
//! a service, changes a key, sends it back) keeps the running value at the
//! same place: the same check of the service, or of the same real server.

use std::borrow::Cow;
use std::net::SocketAddr;

use super::{CheckKind, Config, HealthCheck, ServiceSpec, Target};

/// What stands for a secret in what rvs writes out.
pub const REDACTED: &str = "<redacted>";

/// `path` with every value of its query redacted; `None` when it has no
/// query.
fn redact_path(path: &str) -> Option<String> {
    let (base, query) = path.split_once('?')?;
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) => format!("{k}={REDACTED}"),
            None if p.is_empty() => String::new(),
            None => REDACTED.to_owned(),
        })
        .collect();
    Some(format!("{base}?{}", params.join("&")))
}

fn has_secrets(c: &HealthCheck) -> bool {
    match &c.kind {
        CheckKind::Misc(m) => !m.secret_args.is_empty(),
        CheckKind::Http(h) => h.path.contains('?'),
        CheckKind::Protocol(p) => p.password.is_some() || p.secret.is_some(),
        _ => false,
    }
}

fn redact(c: &mut HealthCheck) {
    match &mut c.kind {
        CheckKind::Misc(m) => {
            for &i in &m.secret_args {
                if let Some(a) = m.argv.get_mut(i) {
                    REDACTED.clone_into(a);
                }
            }
        }
        CheckKind::Http(h) => {
            if let Some(p) = redact_path(&h.path) {
                h.path = p;
            }
        }
        CheckKind::Protocol(p) => {
            for s in [&mut p.password, &mut p.secret].into_iter().flatten() {
                REDACTED.clone_into(s);
            }
        }
        _ => {}
    }
}

/// Whether `c` still has a secret written [`REDACTED`].
fn has_placeholder(c: &HealthCheck) -> bool {
    match &c.kind {
        CheckKind::Misc(m) => m
            .secret_args
            .iter()
            .any(|&i| m.argv.get(i).is_some_and(|a| a == REDACTED)),
        CheckKind::Http(h) => h.path.contains(REDACTED),
        CheckKind::Protocol(p) => [&p.password, &p.secret]
            .iter()
            .any(|s| s.as_deref() == Some(REDACTED)),
        _ => false,
    }
}

/// `new`'s placeholders filled from `old`, the running check at its place.
fn restore(new: &mut HealthCheck, old: &HealthCheck) -> bool {
    match (&mut new.kind, &old.kind) {
        (CheckKind::Misc(n), CheckKind::Misc(o)) => {
            for &i in &n.secret_args {
                if n.argv.get(i).is_some_and(|a| a == REDACTED) {
                    match o.argv.get(i) {
                        Some(v) if o.secret_args.contains(&i) => n.argv[i].clone_from(v),
                        _ => return false,
                    }
                }
            }
            true
        }
        (CheckKind::Http(n), CheckKind::Http(o)) if n.path.contains(REDACTED) => {
            if redact_path(&o.path).as_deref() == Some(n.path.as_str()) {
                n.path.clone_from(&o.path);
                true
            } else {
                false
            }
        }
        (CheckKind::Protocol(n), CheckKind::Protocol(o)) => {
            for (new, old) in [(&mut n.password, &o.password), (&mut n.secret, &o.secret)] {
                if new.as_deref() == Some(REDACTED) {
                    match old {
                        Some(v) => new.clone_from(&Some(v.clone())),
                        None => return false,
                    }
                }
            }
            true
        }
        _ => !has_placeholder(new),
    }
}

/// Where a check is in its service.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    /// The service's own `health_checks[i]`.
    Service(usize),
    /// A real server's.
    Server(SocketAddr, usize),
    /// A `dns:`/`srv:` entry's.
    Entry(Target, usize),
}

/// Every check of `s`, with its place.
fn places(s: &ServiceSpec) -> Vec<(Place, &HealthCheck)> {
    let mut out: Vec<(Place, &HealthCheck)> = s
        .health
        .checks
        .iter()
        .enumerate()
        .map(|(i, c)| (Place::Service(i), c))
        .collect();
    for r in s.real_servers.iter().filter(|r| r.discovered.is_none()) {
        for (i, c) in r.checks.iter().flatten().enumerate() {
            out.push((Place::Server(r.address, i), c));
        }
    }
    for d in &s.discovery {
        for (i, c) in d.template.checks.iter().flatten().enumerate() {
            out.push((Place::Entry(d.target.clone(), i), c));
        }
    }
    out
}

/// Applies `f` to every check of `s`, with its place.
fn each_mut(s: &mut ServiceSpec, mut f: impl FnMut(Place, &mut HealthCheck)) {
    for (i, c) in s.health.checks.iter_mut().enumerate() {
        f(Place::Service(i), c);
    }
    for r in s.real_servers.iter_mut().filter(|r| r.discovered.is_none()) {
        let addr = r.address;
        for (i, c) in r.checks.iter_mut().flatten().enumerate() {
            f(Place::Server(addr, i), c);
        }
    }
    for d in &mut s.discovery {
        let target = d.target.clone();
        for (i, c) in d.template.checks.iter_mut().flatten().enumerate() {
            f(Place::Entry(target.clone(), i), c);
        }
    }
}

impl ServiceSpec {
    /// This service with its secrets written [`REDACTED`] (itself when it
    /// has none).
    pub fn redacted(&self) -> Cow<'_, ServiceSpec> {
        if !places(self).iter().any(|(_, c)| has_secrets(c)) {
            return Cow::Borrowed(self);
        }
        let mut s = self.clone();
        each_mut(&mut s, |_, c| redact(c));
        Cow::Owned(s)
    }

    /// Fills the secrets sent back as [`REDACTED`] from `running`, the
    /// service as it runs; an error names a placeholder that has no
    /// running value (a new check, or one whose place changed).
    pub fn keep_secrets(&mut self, running: Option<&ServiceSpec>) -> Result<(), String> {
        let old = running.map(places).unwrap_or_default();
        let mut missing: Option<Place> = None;
        each_mut(self, |place, c| {
            if missing.is_some() || !has_placeholder(c) {
                return;
            }
            let kept = old
                .iter()
                .find(|(p, _)| *p == place)
                .is_some_and(|(_, o)| restore(c, o));
            if !kept {
                missing = Some(place);
            }
        });
        match missing {
            None => Ok(()),
            Some(place) => Err(format!(
                "{} writes a secret as {REDACTED}, and no running check at that place has one to keep: write the secret itself",
                match place {
                    Place::Service(i) => format!("health check {i}"),
                    Place::Server(a, i) => format!("health check {i} of real server {a}"),
                    Place::Entry(t, i) => format!("health check {i} of {t}"),
                }
            )),
        }
    }
}

impl Config {
    /// This configuration with every service's secrets written
    /// [`REDACTED`] (itself when there are none).
    pub fn redacted(&self) -> Cow<'_, Config> {
        let services: Vec<Cow<'_, ServiceSpec>> =
            self.services.iter().map(ServiceSpec::redacted).collect();
        if services.iter().all(|s| matches!(s, Cow::Borrowed(_))) {
            return Cow::Borrowed(self);
        }
        Cow::Owned(Config {
            global: self.global.clone(),
            admin: self.admin.clone(),
            services: services.into_iter().map(Cow::into_owned).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const FILE: &str = r#"
services:
  - name: db
    listen: 127.0.0.1:3306
    health_checks:
      - type: misc
        command: [/usr/local/bin/check-db, --user, monitor, --password, {secret: hunter2}]
      - type: http
        path: /status?user=monitor&key=k3y&flag
    real_servers:
      - address: 127.0.0.1:3307
        health_check: { type: http, path: "/ping?token=t0ken" }
      - address: 127.0.0.1:3308
"#;

    fn spec() -> ServiceSpec {
        Config::parse(FILE, "rvs.yaml").unwrap().services.remove(0)
    }

    #[test]
    fn secrets_are_redacted_and_the_rest_kept() {
        let s = spec();
        let yaml = Config::parse(FILE, "rvs.yaml")
            .unwrap()
            .redacted()
            .to_yaml();
        for secret in ["hunter2", "k3y", "t0ken"] {
            assert!(!yaml.contains(secret), "{secret}:\n{yaml}");
        }
        for kept in [
            "check-db",
            "monitor",
            "/status?user=",
            "/ping?token=",
            "secret:",
        ] {
            assert!(yaml.contains(kept), "{kept}:\n{yaml}");
        }
        assert_eq!(
            redact_path("/s?a=1&b&c=").as_deref(),
            Some("/s?a=<redacted>&<redacted>&c=<redacted>")
        );
        assert_eq!(redact_path("/plain"), None);
        // Shown, it reads back the same.
        let shown = Config::parse(FILE, "rvs.yaml").unwrap().to_yaml();
        assert!(shown.contains("hunter2"), "{shown}");
        assert_eq!(Config::parse(&shown, "back").unwrap().services[0], s);
        // No secret: no copy.
        let mut plain = s.clone();
        plain.health.checks.clear();
        plain.real_servers[0].checks = None;
        assert!(matches!(plain.redacted(), Cow::Borrowed(_)));
    }

    #[test]
    fn a_redacted_service_sent_back_keeps_its_secrets() {
        let running = spec();
        let text = Config::parse(FILE, "rvs.yaml")
            .unwrap()
            .redacted()
            .to_yaml();
        let config = Config::parse(&text, "redacted").unwrap();
        let mut back = config.services[0].clone();
        assert_ne!(back, running);
        back.keep_secrets(Some(&running)).unwrap();
        assert_eq!(back, running);

        // Nothing running to keep: refused, naming the place.
        let mut new = config.services[0].clone();
        let e = new.keep_secrets(None).unwrap_err();
        assert!(e.contains("health check 0"), "{e}");
        // A placeholder moved to another real server: refused.
        let mut moved = config.services[0].clone();
        moved.real_servers[0].address = "127.0.0.1:3309".parse().unwrap();
        let e = moved.keep_secrets(Some(&running)).unwrap_err();
        assert!(e.contains("127.0.0.1:3309"), "{e}");
        // A path whose visible part changed: refused.
        let mut changed = config.services[0].clone();
        if let CheckKind::Http(h) = &mut changed.health.checks[1].kind {
            h.path = format!("/other?key={REDACTED}");
        }
        assert!(changed.keep_secrets(Some(&running)).is_err());
    }
}
