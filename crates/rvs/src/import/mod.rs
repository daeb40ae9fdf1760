//! `rvs import`: an existing ipvsadm, keepalived or ldirectord setup, as
//! rvs's YAML.
//!
//! Each importer reads its format and builds services in the
//! configuration file's form. What rvs does differently is said twice: as
//! a comment in the YAML, next to the service it concerns, and as a warning
//! with the file and line it comes from. Nothing is dropped silently. The
//! YAML written is read back through rvs's own checks before it is printed.

pub mod ipvsadm;
pub mod keepalived;
pub mod ldirectord;
pub mod vrrp;

use std::fmt::Write as _;

use serde_yaml::{Mapping, Value};

/// Something the reader should know, from `file:line`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The file it comes from.
    pub file: String,
    /// Its line (1-based).
    pub line: usize,
    /// What rvs does differently, or leaves out.
    pub text: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.text)
    }
}

/// One service in the file's form, with its notes.
#[derive(Clone, Debug, Default)]
pub struct Service {
    /// The notes about it.
    pub notes: Vec<Note>,
    /// The service as `services:` holds it.
    pub body: Mapping,
}

/// An imported configuration.
#[derive(Clone, Debug, Default)]
pub struct Imported {
    /// What came from, for the header.
    pub source: String,
    /// Notes not about one service.
    pub notes: Vec<Note>,
    /// `global:` settings (ipvsadm --set, keepalived lvs_timeouts).
    pub global: Mapping,
    /// The services, in the input's order.
    pub services: Vec<Service>,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input could not be read.
    #[error("{file}: {error}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        error: std::io::Error,
    },
    /// The input is not what it should be.
    #[error("{file}:{line}: {reason}")]
    Syntax {
        /// The file.
        file: String,
        /// The line.
        line: usize,
        /// Why.
        reason: String,
    },
    /// The YAML made of it does not check (a setting rvs refuses).
    #[error("the converted configuration does not check:\n{0}")]
    Invalid(String),
}

pub(crate) fn key(k: &str) -> Value {
    Value::String(k.to_owned())
}

pub(crate) fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

pub(crate) fn n(v: impl Into<u64>) -> Value {
    Value::Number(v.into().into())
}

fn comment(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{indent}# {line}");
    }
}

impl Imported {
    /// Every note, the services' included, in input order.
    pub fn all_notes(&self) -> Vec<&Note> {
        let mut v: Vec<&Note> = self
            .notes
            .iter()
            .chain(self.services.iter().flat_map(|s| s.notes.iter()))
            .collect();
        v.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        v
    }

    /// The YAML, with the notes as comments; checked by rvs's own parser.
    pub fn render(&self) -> Result<String, ImportError> {
        let mut out = String::new();
        comment(
            &mut out,
            "",
            &format!(
                "Imported from {} by `rvs import`. Check it with `rvs check -c FILE`.",
                self.source
            ),
        );
        let mut notes: Vec<&Note> = self.notes.iter().collect();
        notes.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        for n in notes {
            comment(&mut out, "", &n.to_string());
        }
        out.push('\n');
        if !self.global.is_empty() {
            let mut g = Mapping::new();
            g.insert(key("global"), Value::Mapping(self.global.clone()));
            out.push_str(&serde_yaml::to_string(&g).unwrap_or_default());
            out.push('\n');
        }
        if self.services.is_empty() {
            out.push_str("services: []\n");
        } else {
            out.push_str("services:\n");
        }
        for svc in &self.services {
            let mut notes: Vec<&Note> = svc.notes.iter().collect();
            notes.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            for n in notes {
                comment(&mut out, "  ", &n.to_string());
            }
            let item =
                serde_yaml::to_string(&vec![Value::Mapping(svc.body.clone())]).unwrap_or_default();
            for line in item.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        rvs_proxy::Config::parse(&out, "converted")
            .map_err(|e| ImportError::Invalid(e.to_string()))?;
        Ok(out)
    }
}

/// A unique service name from `base`: letters, digits and `_-.` only.
pub(crate) fn unique_name(base: &str, taken: &[String]) -> String {
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = clean.clone();
    let mut i = 2;
    while taken.contains(&name) {
        name = format!("{clean}-{i}");
        i += 1;
    }
    name
}

/// A scheduler flag as rvs names it: `flag-N` is the scheduler's own (IPVS
/// shares the bits between sh and mh); `None` when the scheduler has no
/// such flag.
pub(crate) fn sched_flag(scheduler: &str, f: &str) -> Option<String> {
    match (scheduler, f) {
        ("sh", "flag-1") => Some("sh-fallback".to_owned()),
        ("sh", "flag-2") => Some("sh-port".to_owned()),
        ("mh", "flag-1") => Some("mh-fallback".to_owned()),
        ("mh", "flag-2") => Some("mh-port".to_owned()),
        (sch, f) if f.starts_with(sch) && f.as_bytes().get(sch.len()) == Some(&b'-') => {
            Some(f.to_owned())
        }
        _ => None,
    }
}

/// `flags:`, fallback first, each once; nothing when there are none.
pub(crate) fn insert_flags(b: &mut Mapping, mut flags: Vec<String>) {
    if flags.is_empty() {
        return;
    }
    flags.sort_by_key(|f| !f.ends_with("fallback"));
    flags.dedup();
    b.insert(
        key("flags"),
        Value::Sequence(flags.into_iter().map(s).collect()),
    );
}

/// `real_servers:` with their checks: said once, for the service, when
/// every server has the same ones; else each server's own (`[]` for none).
pub(crate) fn insert_servers(
    b: &mut Mapping,
    servers: Vec<Mapping>,
    checks: Vec<Option<Vec<Value>>>,
) {
    let all_same = !checks.is_empty()
        && checks.iter().all(|c| *c == checks[0])
        && checks[0].as_ref().is_some_and(|c| !c.is_empty());
    if all_same && let Some(c) = checks[0].clone() {
        b.insert(key("health_checks"), Value::Sequence(c));
    }
    let rs: Vec<Value> = servers
        .into_iter()
        .zip(checks)
        .map(|(mut m, c)| {
            if !all_same {
                m.insert(key("health_checks"), Value::Sequence(c.unwrap_or_default()));
            }
            Value::Mapping(m)
        })
        .collect();
    b.insert(key("real_servers"), Value::Sequence(rs));
}
