//! Which service a ClientHello goes to, among those sharing an address:
//! each service's `match.sni` patterns and `match.alpn` protocols, the
//! most specific match winning. Sans-io: names in, a choice out.
//!
//! - A pattern is a DNS name, compared case-insensitively, or `*.` and a
//!   name: a wildcard for one or more labels before it (`*.b.test`
//!   matches `x.b.test` and `y.z.b.test`, not `b.test`).
//! - A service with `sni` needs a hello whose name one of its patterns
//!   matches; with `alpn`, a hello that offers one of its protocols; with
//!   both, both.
//! - The most specific wins: an exact name before any wildcard, a longer
//!   wildcard before a shorter one, any name before none (a service with
//!   `alpn` alone); at the same name, one that also asks for ALPN before
//!   one that does not; between two that ask for different protocols the
//!   client offers, the one it prefers (the earlier in its list). Left
//!   over: the address's default (the service without `match`), if it has
//!   one.

use std::cmp::Reverse;
use std::fmt;

use super::hello::{ClientHello, host_name};

/// One `match.sni` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// A name, lower-cased.
    Exact(String),
    /// `*.` and a name: the name with its leading dot (`.b.test`).
    Wildcard(String),
}

/// Why a `match.sni` entry is not a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError(String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PatternError {}

impl Pattern {
    /// Reads `text`: `name.example` or `*.name.example`.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let bad = |why: &str| Err(PatternError(format!("{text:?}: {why}")));
        let (wild, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if name.contains('*') {
            return bad("a wildcard is `*.` before a name, as its first label only");
        }
        if name.ends_with('.') {
            return bad("a name without its trailing dot (a ClientHello never has one)");
        }
        let Some(lower) = host_name(name.as_bytes()) else {
            return bad(
                "not a DNS name: labels of 1 to 63 letters, digits, `-` or `_`, 253 bytes at most",
            );
        };
        Ok(if wild {
            Pattern::Wildcard(format!(".{lower}"))
        } else {
            Pattern::Exact(lower)
        })
    }

    /// How specifically it matches `name` (lower-cased): `None` when it
    /// does not; an exact name above every wildcard, a wildcard by its
    /// length.
    pub fn specificity(&self, name: &str) -> Option<usize> {
        match self {
            Pattern::Exact(n) => (n == name).then_some(usize::MAX),
            Pattern::Wildcard(suffix) => (name.len() > suffix.len()
                && name.ends_with(suffix.as_str()))
            .then_some(suffix.len()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(n) => f.write_str(n),
            Pattern::Wildcard(s) => write!(f, "*{s}"),
        }
    }
}

/// One service's `match`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Match {
    /// Server names, any of which the hello's must match; empty: any.
    pub sni: Vec<Pattern>,
    /// Protocols, one of which the hello must offer; empty: any.
    pub alpn: Vec<Vec<u8>>,
}

impl Match {
    /// How well it takes `hello`, best highest; `None` when it does not:
    /// by the name's specificity, then whether it asks for ALPN, then how
    /// early in the client's list the first protocol it takes stands.
    fn rank(&self, hello: &ClientHello) -> Option<Rank> {
        let sni = if self.sni.is_empty() {
            0
        } else {
            let name = hello.sni.as_deref()?;
            self.sni.iter().filter_map(|p| p.specificity(name)).max()?
        };
        if self.alpn.is_empty() {
            return Some((sni, false, Reverse(usize::MAX)));
        }
        let first = hello
            .alpn
            .iter()
            .position(|offered| self.alpn.contains(offered))?;
        Some((sni, true, Reverse(first)))
    }
}

/// How well a `match` takes a hello (see [`Match::rank`]).
type Rank = (usize, bool, Reverse<usize>);

/// The services of one address: those with a `match`, and the default.
#[derive(Clone, Debug)]
pub struct Routes<T> {
    matched: Vec<(Match, T)>,
    default: Option<T>,
}

impl<T> Routes<T> {
    /// The address's services: `matched` in configuration order, and the
    /// one without `match`.
    pub fn new(matched: Vec<(Match, T)>, default: Option<T>) -> Routes<T> {
        Routes { matched, default }
    }

    /// The default, then the services with a `match`.
    pub fn services(&self) -> impl Iterator<Item = &T> {
        self.default
            .iter()
            .chain(self.matched.iter().map(|(_, t)| t))
    }

    /// Where a connection goes: by its hello, or (`None`: no hello, not
    /// TLS) to the default. `None` when nothing takes it.
    pub fn choose(&self, hello: Option<&ClientHello>) -> Option<&T> {
        let Some(hello) = hello else {
            return self.default.as_ref();
        };
        let mut best: Option<(Rank, &T)> = None;
        for (m, t) in &self.matched {
            if let Some(rank) = m.rank(hello)
                && best.is_none_or(|(b, _)| rank > b)
            {
                best = Some((rank, t));
            }
        }
        best.map(|(_, t)| t).or(self.default.as_ref())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn m(sni: &[&str], alpn: &[&str]) -> Match {
        Match {
            sni: sni.iter().map(|s| Pattern::parse(s).unwrap()).collect(),
            alpn: alpn.iter().map(|a| a.as_bytes().to_vec()).collect(),
        }
    }

    fn hello(sni: Option<&str>, alpn: &[&str]) -> ClientHello {
        ClientHello {
            sni: sni.map(str::to_owned),
            alpn: alpn.iter().map(|a| a.as_bytes().to_vec()).collect(),
            len: 0,
        }
    }

    #[test]
    fn patterns_are_names_or_one_leading_wildcard() {
        assert_eq!(
            Pattern::parse("API.Example.com").unwrap(),
            Pattern::Exact("api.example.com".into())
        );
        let w = Pattern::parse("*.b.test").unwrap();
        assert_eq!(w.to_string(), "*.b.test");
        assert!(w.specificity("x.b.test").is_some());
        assert!(w.specificity("y.z.b.test").is_some());
        assert_eq!(w.specificity("b.test"), None);
        assert_eq!(w.specificity("xb.test"), None);
        for bad in [
            "",
            "*",
            "*.",
            "a.*.b",
            "*x.b.test",
            "x.test.",
            "sp ace.test",
            "a..b",
        ] {
            let e = Pattern::parse(bad).unwrap_err();
            assert!(e.to_string().starts_with(&format!("{bad:?}: ")), "{e}");
        }
    }

    #[test]
    fn the_most_specific_match_wins() {
        let routes = Routes::new(
            vec![
                (m(&["*.example.com"], &[]), "wide"),
                (m(&["*.api.example.com"], &[]), "api-wild"),
                (m(&["api.example.com", "*.api.example.com"], &[]), "api"),
                (m(&["rpc.example.com"], &["h2"]), "grpc"),
                (m(&["rpc.example.com"], &[]), "rpc"),
                (m(&[], &["acme-tls/1"]), "acme"),
            ],
            Some("default"),
        );
        let to = |sni, alpn: &[&str]| *routes.choose(Some(&hello(sni, alpn))).unwrap();
        assert_eq!(to(Some("api.example.com"), &[]), "api");
        // Both api-wild and api have the wildcard; the first listed wins a
        // tie (validation refuses such ties; here it only shows order).
        assert_eq!(to(Some("v1.api.example.com"), &[]), "api-wild");
        assert_eq!(to(Some("www.example.com"), &[]), "wide");
        assert_eq!(to(Some("rpc.example.com"), &["h2", "http/1.1"]), "grpc");
        assert_eq!(to(Some("rpc.example.com"), &["http/1.1"]), "rpc");
        assert_eq!(to(Some("other.test"), &["acme-tls/1"]), "acme");
        assert_eq!(to(Some("www.example.com"), &["acme-tls/1"]), "wide");
        assert_eq!(to(Some("example.com"), &[]), "default");
        assert_eq!(to(None, &[]), "default");
        assert_eq!(routes.choose(None), Some(&"default"));
        let no_default = Routes::new(vec![(m(&["a.test"], &[]), "a")], None);
        assert_eq!(no_default.choose(Some(&hello(Some("b.test"), &[]))), None);
        assert_eq!(no_default.choose(None), None);
    }

    #[test]
    fn between_protocols_the_client_prefers_its_own_first() {
        let routes = Routes::new(
            vec![
                (m(&["web.test"], &["http/1.1"]), "h1"),
                (m(&["web.test"], &["h2"]), "h2"),
            ],
            None,
        );
        let to = |alpn: &[&str]| routes.choose(Some(&hello(Some("web.test"), alpn))).copied();
        assert_eq!(to(&["h2", "http/1.1"]), Some("h2"));
        assert_eq!(to(&["http/1.1", "h2"]), Some("h1"));
        assert_eq!(to(&["h3"]), None);
    }
}
