//! Checking the health settings of a service and its real servers.
//!
//! Defaults follow keepalived's where rvs users meet them the same way
//! (retry 1, 3 for DNS and 0 for a program; delay_before_retry 1 s, 3 s for
//! HTTP, delay_loop for DNS; warmup up to delay_loop; quorum 1), and are
//! quicker where keepalived's were set for another era: `delay_loop` is 5 s
//! (keepalived: 60 s) and `connect_timeout` 3 s (keepalived: 5 s). The
//! keepalived importer writes keepalived's values explicitly.

use std::time::Duration;

use super::raw::{RawHealthCheck, RawService};
use super::validate::{At, at};
use super::{CheckKind, DnsCheck, HealthCheck, HealthSpec, HttpCheck, MiscCheck, UdpCheck};

/// Defaults of a check.
pub(crate) mod defaults {
    use std::time::Duration;

    pub(crate) const DELAY_LOOP: Duration = Duration::from_secs(5);
    pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    pub(crate) const RETRY: u32 = 1;
    pub(crate) const RETRY_DNS: u32 = 3;
    pub(crate) const RETRY_MISC: u32 = 0;
    pub(crate) const DELAY_BEFORE_RETRY: Duration = Duration::from_secs(1);
    pub(crate) const DELAY_BEFORE_RETRY_HTTP: Duration = Duration::from_secs(3);
    pub(crate) const QUORUM: u32 = 1;
    pub(crate) const UDP_PAYLOAD: &[u8] = b"rvs-health-check";
    pub(crate) const MAX_REPLY: usize = 255;
    /// The compiled size an `expect_body` may take.
    pub(crate) const EXPECT_BODY_SIZE: usize = 1 << 20;
}

impl super::BodyPattern {
    /// Compiles `re` as `expect_body` does: on bytes, ASCII classes, the
    /// compiled size capped. The error says what and where, on one line.
    pub fn new(re: &str) -> Result<super::BodyPattern, String> {
        regex::bytes::RegexBuilder::new(re)
            .unicode(false)
            .size_limit(defaults::EXPECT_BODY_SIZE)
            .build()
            .map(super::BodyPattern)
            .map_err(|e| format!("{re:?} is not a regular expression: {}", regex_error(&e)))
    }
}

/// A regular expression's error on one line: what is wrong and where in
/// the expression (the regex crate draws it over several).
fn regex_error(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => {
            let what = s
                .lines()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .unwrap_or(s.as_str());
            // The caret line's offset is the column in the expression.
            let column = s
                .lines()
                .find(|l| l.trim_start().starts_with('^'))
                .and_then(|l| l.find('^'))
                .map(|c| c.saturating_sub(4) + 1);
            match column {
                Some(c) => format!("{what} (at character {c})"),
                None => what.to_owned(),
            }
        }
        regex::Error::CompiledTooBig(n) => format!("it compiles to over {n} bytes"),
        other => other.to_string(),
    }
}

/// The DNS query types a DNS check may ask (keepalived's).
pub(crate) const DNS_TYPES: [&str; 7] = ["A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA"];

/// Every check type, as `type:` names it.
pub(crate) const TYPES: [&str; 16] = [
    "tcp", "http", "https", "misc", "udp", "dns", "smtp", "pop", "imap", "nntp", "ftp", "ldap",
    "mysql", "pgsql", "sip", "radius",
];

/// `a, b or c`.
fn or_list(words: &[&str]) -> String {
    and_list(words).replacen(" and ", " or ", 1)
}

/// `a, b and c`.
fn and_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn known_type(t: &str) -> bool {
    TYPES.contains(&t)
}

/// The check types a type-specific key belongs to.
fn key_owners(key: &str) -> &'static [&'static str] {
    match key {
        "path" => &["http", "https", "ftp"],
        "expect_body" => &["http", "https", "ftp"],
        "status" | "digest" | "method" | "virtualhost" => &["http", "https"],
        "command" | "timeout" | "dynamic" => &["misc"],
        "payload" | "require_reply" | "min_reply_length" | "max_reply_length" => &["udp"],
        "name" | "query_type" => &["dns"],
        "steps" => &["tcp"],
        "tls" => &["pop", "imap", "ldap"],
        "login" | "password" => &["pop", "imap", "ftp", "ldap", "mysql", "pgsql", "radius"],
        "database" | "query" => &["mysql", "pgsql"],
        "base" | "expect_dn" => &["ldap"],
        "helo_name" => &["smtp"],
        "secret" => &["radius"],
        "uri" | "transport" => &["sip"],
        _ => &[],
    }
}

/// `health_check:` (one) or `health_checks:` (several), not both.
pub(crate) fn checks(
    one: Option<RawHealthCheck>,
    many: Option<Vec<RawHealthCheck>>,
    base: &str,
    problems: &mut Vec<At>,
) -> Option<Vec<HealthCheck>> {
    match (one, many) {
        (Some(_), Some(_)) => {
            problems.push(At {
                path: format!("{base}.health_checks"),
                key: true,
                reason: "give health_check (one) or health_checks (a list), not both".into(),
            });
            None
        }
        (Some(c), None) => Some(vec![check(c, &format!("{base}.health_check"), problems)]),
        (None, Some(list)) => Some(
            list.into_iter()
                .enumerate()
                .map(|(i, c)| check(c, &format!("{base}.health_checks[{i}]"), problems))
                .collect(),
        ),
        (None, None) => None,
    }
}

fn positive(
    d: Option<super::values::Dur>,
    default: Duration,
    path: String,
    problems: &mut Vec<At>,
) -> Duration {
    match d {
        Some(d) if d.0.is_zero() => {
            problems.push(at(path, "must be longer than 0"));
            default
        }
        Some(d) => d.0,
        None => default,
    }
}

/// One check.
fn check(mut r: RawHealthCheck, base: &str, problems: &mut Vec<At>) -> HealthCheck {
    let kind_name = r.kind.trim().to_ascii_lowercase();
    // Keys that belong to some types only.
    for (key, set) in [
        ("path", r.path.is_some()),
        ("status", r.status.is_some()),
        ("digest", r.digest.is_some()),
        ("expect_body", r.expect_body.is_some()),
        ("method", r.method.is_some()),
        ("virtualhost", r.virtualhost.is_some()),
        ("command", r.command.is_some()),
        ("timeout", r.timeout.is_some()),
        ("dynamic", r.dynamic.is_some()),
        ("payload", r.payload.is_some()),
        ("require_reply", r.require_reply.is_some()),
        ("min_reply_length", r.min_reply_length.is_some()),
        ("max_reply_length", r.max_reply_length.is_some()),
        ("name", r.name.is_some()),
        ("query_type", r.query_type.is_some()),
        ("steps", r.steps.is_some()),
        ("tls", r.tls.is_some()),
        ("login", r.login.is_some()),
        ("password", r.password.is_some()),
        ("database", r.database.is_some()),
        ("query", r.query.is_some()),
        ("base", r.base.is_some()),
        ("expect_dn", r.expect_dn.is_some()),
        ("helo_name", r.helo_name.is_some()),
        ("secret", r.secret.is_some()),
        ("uri", r.uri.is_some()),
        ("transport", r.transport.is_some()),
    ] {
        let owners = key_owners(key);
        if set && !owners.contains(&kind_name.as_str()) && known_type(&kind_name) {
            problems.push(At {
                path: format!("{base}.{key}"),
                key: true,
                reason: format!("only {} checks have this", and_list(owners)),
            });
        }
    }
    if kind_name == "misc" {
        for (key, set) in [
            ("connect_ip", r.connect_ip.is_some()),
            ("connect_port", r.connect_port.is_some()),
            ("connect_timeout", r.connect_timeout.is_some()),
        ] {
            if set {
                problems.push(At {
                    path: format!("{base}.{key}"),
                    key: true,
                    reason: "a misc check runs a program: it has no connection (use timeout)"
                        .into(),
                });
            }
        }
    }
    let delay_loop = positive(
        r.delay_loop,
        defaults::DELAY_LOOP,
        format!("{base}.delay_loop"),
        problems,
    );
    let kind = match kind_name.as_str() {
        "tcp" => match r.steps.take() {
            Some(steps) => CheckKind::Steps(super::check_protocols::steps(steps, base, problems)),
            None => CheckKind::Tcp,
        },
        k if let Some(p) = super::check_protocols::protocol(k) => {
            super::check_protocols::check(p, &mut r, base, problems)
        }
        "http" | "https" => {
            let path = r.path.unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                problems.push(at(
                    format!("{base}.path"),
                    format!("{path:?} is not a request path: it starts with / and has no spaces"),
                ));
            }
            let digest = r.digest.map(|d| d.to_ascii_lowercase());
            if let Some(d) = &digest
                && (d.len() != 32 || !d.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                problems.push(at(
                    format!("{base}.digest"),
                    format!("{d:?} is not an MD5 digest: 32 hex digits"),
                ));
            }
            let status = r.status.map_or_else(|| vec![(200, 299)], |s| s.0);
            if status.is_empty() {
                problems.push(at(
                    format!("{base}.status"),
                    "needs at least one status code",
                ));
            }
            let method = r.method.unwrap_or_else(|| "GET".into());
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                problems.push(at(
                    format!("{base}.method"),
                    format!(
                        "{method:?} is not an HTTP method: capital letters, as GET, HEAD or POST"
                    ),
                ));
            }
            let expect_body = r
                .expect_body
                .and_then(|re| match super::BodyPattern::new(&re) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        problems.push(at(format!("{base}.expect_body"), e));
                        None
                    }
                });
            if method == "HEAD" && (expect_body.is_some() || digest.is_some()) {
                problems.push(at(
                    format!("{base}.method"),
                    "an answer to HEAD has no body: expect_body and digest need another method",
                ));
            }
            CheckKind::Http(HttpCheck {
                tls: kind_name == "https",
                path,
                status,
                digest,
                expect_body,
                method,
                virtualhost: r.virtualhost,
            })
        }
        "misc" => {
            let args = r.command.unwrap_or_default();
            let secret_args = (0..args.len()).filter(|&i| args[i].secret).collect();
            let argv: Vec<String> = args.into_iter().map(|a| a.value).collect();
            if argv.first().is_none_or(|p| p.trim().is_empty()) {
                problems.push(At {
                    path: if argv.is_empty() {
                        base.to_owned()
                    } else {
                        format!("{base}.command")
                    },
                    key: argv.is_empty(),
                    reason: "a misc check needs command: the program and its arguments, as a list"
                        .into(),
                });
            }
            CheckKind::Misc(MiscCheck {
                argv,
                secret_args,
                timeout: positive(r.timeout, delay_loop, format!("{base}.timeout"), problems),
                dynamic: r.dynamic.unwrap_or(false),
            })
        }
        "udp" => {
            let payload = match r.payload {
                None => defaults::UDP_PAYLOAD.to_vec(),
                Some(p) => match super::values::hex_bytes(&p, false) {
                    Ok(b) => b.into_iter().map(|(v, _)| v).collect(),
                    Err(e) => {
                        problems.push(at(format!("{base}.payload"), e));
                        Vec::new()
                    }
                },
            };
            let min = r.min_reply_length.unwrap_or(0);
            let max = r.max_reply_length.unwrap_or(defaults::MAX_REPLY);
            if min > max {
                problems.push(at(
                    format!("{base}.min_reply_length"),
                    format!("{min} is above max_reply_length {max}"),
                ));
            }
            CheckKind::Udp(UdpCheck {
                payload,
                require_reply: r.require_reply.and_then(|m| m.0),
                min_reply_length: min,
                max_reply_length: max,
            })
        }
        "dns" => {
            let qtype = r
                .query_type
                .unwrap_or_else(|| "SOA".into())
                .to_ascii_uppercase();
            if !DNS_TYPES.contains(&qtype.as_str()) {
                problems.push(at(
                    format!("{base}.query_type"),
                    format!(
                        "{qtype:?} is not a query type rvs asks: {}",
                        DNS_TYPES.join(", ")
                    ),
                ));
            }
            let name = r.name.unwrap_or_else(|| ".".into());
            if name.split('.').any(|l| l.len() > 63) || name.len() > 253 {
                problems.push(at(
                    format!("{base}.name"),
                    format!("{name:?} is not a domain name"),
                ));
            }
            CheckKind::Dns(DnsCheck { name, qtype })
        }
        other => {
            problems.push(at(
                format!("{base}.type"),
                format!("unknown check type {other:?}: expected {}", or_list(&TYPES)),
            ));
            CheckKind::Tcp
        }
    };
    let retry = r.retry.unwrap_or(match kind {
        CheckKind::Dns(_) => defaults::RETRY_DNS,
        CheckKind::Misc(_) => defaults::RETRY_MISC,
        _ => defaults::RETRY,
    });
    let delay_before_retry = positive(
        r.delay_before_retry,
        match kind {
            CheckKind::Http(_) => defaults::DELAY_BEFORE_RETRY_HTTP,
            CheckKind::Dns(_) => delay_loop,
            _ => defaults::DELAY_BEFORE_RETRY,
        },
        format!("{base}.delay_before_retry"),
        problems,
    );
    HealthCheck {
        connect_timeout: positive(
            r.connect_timeout,
            defaults::CONNECT_TIMEOUT,
            format!("{base}.connect_timeout"),
            problems,
        ),
        delay_loop,
        retry,
        delay_before_retry,
        warmup: r.warmup.map_or(delay_loop, |w| w.0),
        connect_ip: r.connect_ip.map(|i| i.0),
        connect_port: r.connect_port,
        kind,
    }
}

/// The service's health settings (its real servers' are read with them).
pub(crate) fn service(s: &mut RawService, base: &str, problems: &mut Vec<At>) -> HealthSpec {
    let checks = checks(
        s.health_check.take(),
        s.health_checks.take(),
        base,
        problems,
    );
    if let Some(p) = &s.passive
        && p.failures == 0
    {
        problems.push(at(format!("{base}.passive.failures"), "must be 1 or more"));
    }
    let slow_start = s.slow_start.map(|d| d.0);
    if slow_start.is_some_and(|d| d.is_zero()) {
        problems.push(at(
            format!("{base}.slow_start"),
            "must be longer than 0 (leave it out for none)",
        ));
    }
    HealthSpec {
        checks: checks.unwrap_or_default(),
        alpha: s.alpha.unwrap_or(false),
        inhibit_on_failure: s.inhibit_on_failure.unwrap_or(false),
        passive_failures: s.passive.as_ref().map(|p| p.failures),
        sorry_server: s.sorry_server.map(|a| a.0),
        quorum: s.quorum.unwrap_or(defaults::QUORUM),
        hysteresis: s.hysteresis.unwrap_or(0),
        slow_start,
    }
}
