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
        write!(f, "{}:{}: {}", self.file, self.line, cut(&self.text))
    }
}

/// One service in the file's form, with its notes.
#[derive(Clone, Debug, Default)]
pub struct Service {
    /// The notes about it.
    pub notes: Vec<Note>,
    /// The service as `services:` holds it (empty once [`Service::seal`]ed).
    pub body: Mapping,
    /// The body written out, once the service is complete: an import of a
    /// large file keeps each finished service as text, a fraction of what
    /// its YAML tree takes.
    pub written: Option<String>,
}

impl Service {
    /// Writes the body out and drops its tree: nothing more is added to it.
    pub fn seal(&mut self) {
        if self.written.is_none() {
            self.written = Some(serde_yaml::to_string(&self.body).unwrap_or_default());
            self.body = Mapping::new();
        }
    }

    /// The body as YAML.
    fn yaml(&self) -> std::borrow::Cow<'_, str> {
        match &self.written {
            Some(w) => std::borrow::Cow::Borrowed(w),
            None => std::borrow::Cow::Owned(serde_yaml::to_string(&self.body).unwrap_or_default()),
        }
    }
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

/// What the operator says a firewall mark covers (`--fwmark
/// N=ADDR:PORT,ADDR:PORT`, `N=udp:ADDR:PORT`): the addresses the marked
/// traffic is sent to, which become the listen addresses of one rvs
/// service whose persistence covers them all, as the mark's does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Marks(pub std::collections::BTreeMap<u32, Marked>);

/// The addresses of one mark.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Marked {
    /// `udp`, when given; else `tcp`.
    pub udp: bool,
    /// The addresses.
    pub listen: Vec<std::net::SocketAddr>,
}

impl Marks {
    /// Reads one `--fwmark` value.
    pub fn add(&mut self, arg: &str) -> Result<(), String> {
        let (mark, rest) = arg
            .split_once('=')
            .ok_or_else(|| format!("--fwmark {arg}: expected MARK=ADDR:PORT[,ADDR:PORT...]"))?;
        let mark: u32 = mark
            .trim()
            .parse()
            .ok()
            .filter(|&m| m > 0)
            .ok_or_else(|| format!("--fwmark {arg}: the mark is a number of 1 or more"))?;
        let (udp, rest) = match rest.strip_prefix("udp:") {
            Some(r) => (true, r),
            None => (false, rest.strip_prefix("tcp:").unwrap_or(rest)),
        };
        let mut listen = Vec::new();
        for a in rest.split(',') {
            let addr = a.trim().parse().map_err(|_| {
                format!("--fwmark {arg}: {a:?} is not ADDR:PORT (IPv6 as [ADDR]:PORT)")
            })?;
            listen.push(addr);
        }
        if self.0.insert(mark, Marked { udp, listen }).is_some() {
            return Err(format!("--fwmark {mark} is given twice"));
        }
        Ok(())
    }
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
    #[error("{file}:{line}: {}", cut(reason))]
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

/// A word of the input in a message: itself when it has a word's shape
/// (a keyword, a number, an address), else only its length
/// ([`rvs_proxy::quote`]): a file read by mistake (`/etc/shadow`) is never
/// echoed.
pub(crate) fn w(s: &str) -> std::borrow::Cow<'_, str> {
    rvs_proxy::quote::word(s)
}

/// A keyword of the input (where one was expected) in a message
/// ([`rvs_proxy::quote::keyword`]).
pub(crate) fn kw(s: &str) -> std::borrow::Cow<'_, str> {
    rvs_proxy::quote::keyword(s)
}

/// As [`w`], a word quoted (`"wrr2"`).
pub(crate) fn q(s: &str) -> String {
    if rvs_proxy::quote::is_word(s) {
        format!("{s:?}")
    } else {
        w(s).into_owned()
    }
}

/// The longest message an import writes (a note, an error): whatever went
/// into it, a line of the input never comes out whole.
const MAX_MESSAGE: usize = 1024;

/// `text`, cut at [`MAX_MESSAGE`] bytes.
fn cut(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_MESSAGE {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = MAX_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes in all)", &text[..end], text.len()))
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

/// `text` as YAML comment lines. What YAML forbids in a comment, or
/// reads as a line break (control characters, NEL, the Unicode line and
/// paragraph separators, a byte-order mark), is written `?`: a note that
/// quotes the input (ldirectord's `comment=`) cannot break the file.
fn comment(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        let line: String = line
            .chars()
            .map(|c| {
                if (c.is_control() && c != '\t')
                    || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
                {
                    '?'
                } else {
                    c
                }
            })
            .collect();
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
        let mut head = String::new();
        if !self.global.is_empty() {
            let mut g = Mapping::new();
            g.insert(key("global"), Value::Mapping(self.global.clone()));
            head.push_str(&serde_yaml::to_string(&g).unwrap_or_default());
            head.push('\n');
        }
        // Checked service by service, as the admin API checks one, then
        // across services: the memory the check takes is one service's,
        // not the whole file's (a million real servers are a 50 MB file).
        let invalid = |e: rvs_proxy::config::ConfigError| ImportError::Invalid(e.to_string());
        let checked = rvs_proxy::Config::parse(&format!("{head}services: []\n"), "converted")
            .map_err(invalid)?;
        out.push_str(&head);
        if self.services.is_empty() {
            out.push_str("services: []\n");
        } else {
            out.push_str("services:\n");
        }
        let mut names = std::collections::HashSet::new();
        let mut addresses = std::collections::HashMap::new();
        for svc in &self.services {
            let mut notes: Vec<&Note> = svc.notes.iter().collect();
            notes.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            for n in notes {
                comment(&mut out, "  ", &n.to_string());
            }
            let item = svc.yaml();
            let spec = checked
                .parse_service(&item, "converted service")
                .map_err(invalid)?;
            let clash = |reason: String| ImportError::Invalid(format!("converted: {reason}"));
            if !names.insert(spec.name.clone()) {
                return Err(clash(format!("service name {:?} is used twice", spec.name)));
            }
            for a in &spec.listen {
                if let Some(other) = addresses.insert((spec.proto, *a), spec.name.clone()) {
                    return Err(clash(format!(
                        "{} {a} is the address of services {other:?} and {:?}",
                        spec.proto, spec.name
                    )));
                }
            }
            for (i, line) in item.lines().enumerate() {
                let _ = writeln!(out, "  {}{line}", if i == 0 { "- " } else { "  " });
            }
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// A note quoting input with characters YAML refuses in a comment, or
    /// reads as a line break, still gives a file rvs reads (a fuzz
    /// target's find: ldirectord's `comment=` with control characters).
    #[test]
    fn notes_cannot_break_the_yaml() {
        let names = crate::ipvsadm::names::Names::none();
        for bad in [
            "\u{16}\u{16}",
            "a\u{2028}services: oops",
            "\u{85}x",
            "\u{feff}",
        ] {
            let cf =
                format!("virtual=10.0.0.1:80\n\treal=10.0.0.2:80 masq\n\tcomment=web {bad} site\n");
            let imp = super::ldirectord::import_text(&cf, "ldirectord.cf", &names).unwrap();
            let yaml = imp.render().unwrap();
            let c = rvs_proxy::Config::parse(&yaml, "out.yaml")
                .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            assert_eq!(c.services.len(), 1, "{yaml}");
            assert!(yaml.contains("# ldirectord.cf:3: comment: web"), "{yaml}");
        }
    }
}
