//! Checking the checks that speak a protocol (`smtp`, `pop`, `imap`,
//! `nntp`, `ftp`, `ldap`, `mysql`, `pgsql`, `sip`, `radius`) and the
//! steps of a `tcp` check. Which keys a type has at all is
//! `health::key_owners`'s; here, what the values must be.

use super::raw::{RawHealthCheck, RawTcpStep};
use super::validate::{At, at};
use super::{BodyPattern, CheckKind, Protocol, ProtocolCheck, TcpStep};

/// SMTP's HELO name when none is given.
pub(crate) const HELO_NAME: &str = "localhost";
/// The SQL checks' query when none is given.
pub(crate) const QUERY: &str = "SELECT 1";

/// The protocol a check type speaks.
pub(crate) fn protocol(kind: &str) -> Option<Protocol> {
    Protocol::ALL.into_iter().find(|p| p.name() == kind)
}

fn pattern(re: Option<String>, path: String, problems: &mut Vec<At>) -> Option<BodyPattern> {
    re.and_then(|re| match BodyPattern::new(&re) {
        Ok(p) => Some(p),
        Err(e) => {
            problems.push(at(path, e));
            None
        }
    })
}

/// A value sent on a line of the protocol: no line breaks in it.
fn one_line(v: &Option<String>, path: String, problems: &mut Vec<At>) {
    if let Some(v) = v
        && v.contains(['\r', '\n', '\0'])
    {
        problems.push(at(
            path,
            "has a line break or a NUL: it is sent on one line",
        ));
    }
}

/// A protocol check.
pub(crate) fn check(
    p: Protocol,
    r: &mut RawHealthCheck,
    base: &str,
    problems: &mut Vec<At>,
) -> CheckKind {
    let kind = p.name();
    for (key, v) in [
        ("login", &r.login),
        ("password", &r.password),
        ("path", &r.path),
        ("helo_name", &r.helo_name),
        ("uri", &r.uri),
        ("database", &r.database),
    ] {
        one_line(v, format!("{base}.{key}"), problems);
    }
    if r.password.is_some() && r.login.is_none() {
        problems.push(at(
            format!("{base}.password"),
            "a password without a login: give login too",
        ));
    }
    if matches!(p, Protocol::Mysql | Protocol::Pgsql) && r.login.is_none() {
        problems.push(At {
            path: base.to_owned(),
            key: true,
            reason: format!("a {kind} check needs login: the user it logs in as"),
        });
    }
    if let Some(q) = &r.query
        && q.trim().is_empty()
    {
        problems.push(at(
            format!("{base}.query"),
            "is empty: a query that returns a row",
        ));
    }
    if p == Protocol::Radius && r.secret.as_deref().is_none_or(str::is_empty) {
        problems.push(At {
            path: base.to_owned(),
            key: true,
            reason: "a radius check needs secret: the secret the server shares with rvs".into(),
        });
    }
    if p == Protocol::Ftp && r.expect_body.is_some() && r.path.is_none() {
        problems.push(at(
            format!("{base}.expect_body"),
            "matches a file: give the file's path too",
        ));
    }
    let sip_tcp = match r
        .transport
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("udp") => false,
        Some("tcp") => true,
        Some(other) => {
            problems.push(at(
                format!("{base}.transport"),
                format!("{other:?} is not a transport: udp or tcp"),
            ));
            false
        }
    };
    if let Some(u) = &r.uri
        && !(u.starts_with("sip:") || u.starts_with("sips:"))
    {
        problems.push(at(
            format!("{base}.uri"),
            format!("{u:?} is not a SIP URI: it starts with sip:"),
        ));
    }
    let helo_name = r.helo_name.take().unwrap_or_else(|| HELO_NAME.into());
    if helo_name.is_empty() || helo_name.contains(char::is_whitespace) {
        problems.push(at(
            format!("{base}.helo_name"),
            format!("{helo_name:?} is not a host name"),
        ));
    }
    CheckKind::Protocol(ProtocolCheck {
        protocol: p,
        tls: r.tls.unwrap_or(false),
        login: r.login.take(),
        password: r.password.take(),
        database: r.database.take(),
        query: r.query.take().unwrap_or_else(|| QUERY.into()),
        base: r.base.take().unwrap_or_default(),
        expect_dn: pattern(r.expect_dn.take(), format!("{base}.expect_dn"), problems),
        path: r.path.take(),
        expect_body: pattern(
            r.expect_body.take(),
            format!("{base}.expect_body"),
            problems,
        ),
        helo_name,
        secret: r.secret.take(),
        uri: r.uri.take(),
        sip_tcp,
    })
}

/// A `tcp` check's `steps`: each one of send, send_hex, expect,
/// expect_hex, expect_regex.
pub(crate) fn steps(raw: Vec<RawTcpStep>, base: &str, problems: &mut Vec<At>) -> Vec<TcpStep> {
    if raw.is_empty() {
        problems.push(at(
            format!("{base}.steps"),
            "is empty: leave it out for a connect",
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let path = format!("{base}.steps[{i}]");
        let given = [
            s.send.is_some(),
            s.send_hex.is_some(),
            s.expect.is_some(),
            s.expect_hex.is_some(),
            s.expect_regex.is_some(),
        ]
        .iter()
        .filter(|&&g| g)
        .count();
        if given != 1 {
            problems.push(at(
                path,
                "a step is one of send, send_hex, expect, expect_hex or expect_regex",
            ));
            continue;
        }
        let hex =
            |h: &str, key: &str, problems: &mut Vec<At>| match super::values::hex_bytes(h, false) {
                Ok(b) if !b.is_empty() => Some(b.into_iter().map(|(v, _)| v).collect()),
                Ok(_) => {
                    problems.push(at(format!("{path}.{key}"), "is empty"));
                    None
                }
                Err(e) => {
                    problems.push(at(format!("{path}.{key}"), e));
                    None
                }
            };
        let step = if let Some(t) = s.send {
            Some(TcpStep::Send(t.into_bytes()))
        } else if let Some(h) = s.send_hex {
            hex(&h, "send_hex", problems).map(TcpStep::Send)
        } else if let Some(t) = s.expect {
            if t.is_empty() {
                problems.push(at(format!("{path}.expect"), "is empty"));
            }
            Some(TcpStep::Expect(t.into_bytes()))
        } else if let Some(h) = s.expect_hex {
            hex(&h, "expect_hex", problems).map(TcpStep::Expect)
        } else {
            pattern(s.expect_regex, format!("{path}.expect_regex"), problems)
                .map(TcpStep::ExpectRegex)
        };
        out.extend(step);
    }
    if out.iter().all(|s| matches!(s, TcpStep::Send(_))) && !out.is_empty() {
        problems.push(at(
            format!("{base}.steps"),
            "has nothing to expect: a check needs an answer (add an expect step)",
        ));
    }
    out
}
