//! `services[].match` and the addresses services share.
//!
//! - A `match` has `sni` patterns, `alpn` protocols or both, each valid
//!   and listed once. TCP services match the TLS ClientHello, UDP services
//!   the one a QUIC client's Initial packets carry.
//! - Several services of one protocol may listen on one address when each
//!   has a `match`, at most one (the address's default) going without.
//! - On one address, a name two services match (or, for services with
//!   `alpn` alone, a protocol) must be told apart by ALPN: one with `alpn`
//!   and one without (the one with it wins when the client offers it), or
//!   two with protocols in common to none.
//! - Services on one address read the hello the same way: the same
//!   `accept_proxy_protocol`, `timeouts.proxy_header` and
//!   `timeouts.client_hello`.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::raw::RawMatch;
use super::validate::{At, at};
use super::{Proto, ServiceSpec};
use crate::sni::names::{Match, Pattern};

/// The longest ALPN protocol name (RFC 7301 §3.1).
const MAX_ALPN: usize = 255;

/// `services[i].match`, checked.
pub(super) fn service(raw: Option<RawMatch>, base: &str, problems: &mut Vec<At>) -> Option<Match> {
    let raw = raw?;
    let base = format!("{base}.match");
    if raw.sni.is_empty() && raw.alpn.is_empty() {
        problems.push(at(
            &base,
            "needs sni, alpn or both (a service without match is its address's default)",
        ));
    }
    let mut m = Match::default();
    for (k, text) in raw.sni.iter().enumerate() {
        let path = format!("{base}.sni[{k}]");
        match Pattern::parse(text) {
            Ok(p) if m.sni.contains(&p) => {
                problems.push(at(path, format!("{p} is listed twice")));
            }
            Ok(p) => m.sni.push(p),
            Err(e) => problems.push(at(path, e.to_string())),
        }
    }
    for (k, text) in raw.alpn.iter().enumerate() {
        let path = format!("{base}.alpn[{k}]");
        let printable = text.bytes().all(|b| b.is_ascii_graphic());
        if text.is_empty() || text.len() > MAX_ALPN || !printable {
            problems.push(at(
                path,
                format!(
                    "{text:?} is not an ALPN protocol: 1 to {MAX_ALPN} printable ASCII characters, as h2 or http/1.1"
                ),
            ));
        } else if m.alpn.iter().any(|p| p == text.as_bytes()) {
            problems.push(at(path, format!("{text} is listed twice")));
        } else {
            m.alpn.push(text.as_bytes().to_vec());
        }
    }
    Some(m)
}

/// The rules between the services of each address.
pub(super) fn shared_addresses(services: &[ServiceSpec], problems: &mut Vec<At>) {
    // Each address's services, in file order, with the listen entry.
    let mut by_addr: HashMap<(Proto, SocketAddr), Vec<(usize, usize)>> = HashMap::new();
    let mut order = Vec::new();
    for (i, s) in services.iter().enumerate() {
        for (j, addr) in s.listen.iter().enumerate() {
            let key = (s.proto, *addr);
            let on = by_addr.entry(key).or_default();
            if on.is_empty() {
                order.push(key);
            }
            // The same address twice in one list is one listener.
            if on.iter().all(|&(other, _)| other != i) {
                on.push((i, j));
            }
        }
    }
    for key in order {
        let on = &by_addr[&key];
        for (n, &(i, j)) in on.iter().enumerate().skip(1) {
            one_more(services, key, &on[..n], (i, j), problems);
        }
    }
}

/// Service `i` (its listen entry `j`) on `key`, after the services `before`.
fn one_more(
    services: &[ServiceSpec],
    (proto, addr): (Proto, SocketAddr),
    before: &[(usize, usize)],
    (i, j): (usize, usize),
    problems: &mut Vec<At>,
) {
    let s = &services[i];
    let base = format!("services[{i}]");
    let shared = |other: &ServiceSpec| {
        format!(
            "{proto} {addr} is also the address of service {:?}",
            other.name
        )
    };
    for &(d, _) in before {
        agree(s, &base, &services[d], (proto, addr), problems);
    }
    let Some(mine) = &s.matching else {
        if let Some(&(d, _)) = before
            .iter()
            .find(|&&(d, _)| services[d].matching.is_none())
        {
            problems.push(at(
                format!("{base}.listen[{j}]"),
                format!(
                    "{}, which has no match either: services that share an address need a match each, but one (the default)",
                    shared(&services[d])
                ),
            ));
        }
        return;
    };
    for &(d, _) in before {
        let other = &services[d];
        let Some(theirs) = &other.matching else {
            continue;
        };
        if alpn_tells_apart(mine, theirs) {
            continue;
        }
        if mine.sni.is_empty() && theirs.sni.is_empty() {
            problems.push(at(
                format!("{base}.match.alpn"),
                format!(
                    "{}, which matches the same protocols without a name: ALPN does not tell them apart",
                    shared(other)
                ),
            ));
        }
        for (k, p) in mine.sni.iter().enumerate() {
            if theirs.sni.contains(p) {
                problems.push(at(
                    format!("{base}.match.sni[{k}]"),
                    format!(
                        "{p} is also matched by service {:?} on {proto} {addr}, and ALPN does not tell them apart",
                        other.name
                    ),
                ));
            }
        }
    }
}

/// Services `s` and `other` on one address read the client's first bytes
/// alike.
fn agree(
    s: &ServiceSpec,
    base: &str,
    other: &ServiceSpec,
    (proto, addr): (Proto, SocketAddr),
    problems: &mut Vec<At>,
) {
    let why = "services that share an address read the client's first bytes alike";
    if other.accept_proxy_protocol != s.accept_proxy_protocol {
        problems.push(at(
            format!("{base}.accept_proxy_protocol"),
            format!(
                "{} differs from the {} of service {:?}, which shares {proto} {addr}: {why}",
                s.accept_proxy_protocol, other.accept_proxy_protocol, other.name
            ),
        ));
    }
    for (key, mine, theirs) in [
        (
            "client_hello",
            s.timeouts.client_hello,
            other.timeouts.client_hello,
        ),
        (
            "proxy_header",
            s.timeouts.proxy_header,
            other.timeouts.proxy_header,
        ),
    ] {
        if mine != theirs {
            problems.push(at(
                format!("{base}.timeouts.{key}"),
                format!(
                    "{} differs from the {} of service {:?}, which shares {proto} {addr}: {why}",
                    super::write::duration(mine),
                    super::write::duration(theirs),
                    other.name
                ),
            ));
        }
    }
}

/// Whether ALPN decides between two services matching the same names:
/// one asks for it and the other not, or both do with no protocol in
/// common (a client offering protocols of both goes by its own
/// preference).
fn alpn_tells_apart(a: &Match, b: &Match) -> bool {
    match (a.alpn.is_empty(), b.alpn.is_empty()) {
        (true, true) => false,
        (false, false) => !a.alpn.iter().any(|p| b.alpn.contains(p)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::Config;
    use super::super::validate::tests::errors;

    /// Services named a, b, c… on one address, each with the `match`
    /// given (`None`: no match key).
    fn shared(matches: &[Option<&str>]) -> String {
        let mut text = String::from("services:\n");
        for (i, m) in matches.iter().enumerate() {
            let name = char::from(b'a' + i as u8);
            text.push_str(&format!("  - name: {name}\n    listen: 127.0.0.1:443\n"));
            if let Some(m) = m {
                text.push_str(&format!("    match: {m}\n"));
            }
        }
        text
    }

    #[test]
    fn services_share_an_address_by_their_match() {
        let good = shared(&[
            Some("{sni: [api.example.com, \"*.api.example.com\"]}"),
            Some("{sni: [rpc.example.com], alpn: [h2]}"),
            Some("{sni: [rpc.example.com]}"),
            Some("{alpn: [acme-tls/1]}"),
            None,
        ]);
        assert_eq!(errors(&good), Vec::<String>::new());
        let c = Config::parse(&good, "t").unwrap();
        let m = c.services[1].matching.as_ref().unwrap();
        assert_eq!(m.sni[0].to_string(), "rpc.example.com");
        assert_eq!(m.alpn, [b"h2".to_vec()]);
        assert!(c.services[4].matching.is_none());
        // Written back as read.
        let again = Config::parse(&c.to_yaml(), "t").unwrap();
        assert_eq!(again.services, c.services);
    }

    #[test]
    fn ambiguous_or_bad_matches_are_refused_where_written() {
        assert_eq!(
            errors(&shared(&[None, Some("{sni: [a.test]}"), None])),
            [
                "rvs.yaml:8:13: services[2].listen[0]: tcp 127.0.0.1:443 is also the address of service \"a\", which has no match either: services that share an address need a match each, but one (the default)"
            ]
        );
        assert_eq!(
            errors(&shared(&[
                Some("{sni: [a.test, \"*.b.test\"]}"),
                Some("{sni: [\"*.B.test\"]}"),
                Some("{sni: [a.test], alpn: [h2]}"),
                Some("{sni: [a.test], alpn: [h2, http/1.1]}"),
            ])),
            [
                "rvs.yaml:7:19: services[1].match.sni[0]: *.b.test is also matched by service \"a\" on tcp 127.0.0.1:443, and ALPN does not tell them apart",
                "rvs.yaml:13:19: services[3].match.sni[0]: a.test is also matched by service \"c\" on tcp 127.0.0.1:443, and ALPN does not tell them apart",
            ]
        );
        assert_eq!(
            errors(&shared(&[Some("{alpn: [h2]}"), Some("{alpn: [h2]}")])),
            [
                "rvs.yaml:7:19: services[1].match.alpn: tcp 127.0.0.1:443 is also the address of service \"a\", which matches the same protocols without a name: ALPN does not tell them apart"
            ]
        );
        assert_eq!(
            errors(&shared(&[
                Some(
                    "{sni: [\"a.*.test\", \"bad name\", \"x.test.\", x.test, x.test], alpn: [\"\", h2, h2]}"
                ),
                Some("{}")
            ])),
            [
                "rvs.yaml:4:19: services[0].match.sni[0]: \"a.*.test\": a wildcard is `*.` before a name, as its first label only",
                "rvs.yaml:4:31: services[0].match.sni[1]: \"bad name\": not a DNS name: labels of 1 to 63 letters, digits, `-` or `_`, 253 bytes at most",
                "rvs.yaml:4:43: services[0].match.sni[2]: \"x.test.\": a name without its trailing dot (a ClientHello never has one)",
                "rvs.yaml:4:62: services[0].match.sni[4]: x.test is listed twice",
                "rvs.yaml:4:78: services[0].match.alpn[0]: \"\" is not an ALPN protocol: 1 to 255 printable ASCII characters, as h2 or http/1.1",
                "rvs.yaml:4:86: services[0].match.alpn[2]: h2 is listed twice",
                "rvs.yaml:7:12: services[1].match: needs sni, alpn or both (a service without match is its address's default)",
            ]
        );
        // UDP services share an address by the same rules (QUIC's hello).
        let udp = "services:\n  - name: q\n    proto: udp\n    listen: 127.0.0.1:443\n    match: {sni: [a.test]}\n  - name: r\n    proto: udp\n    listen: 127.0.0.1:443\n";
        assert_eq!(errors(udp), Vec::<String>::new());
        let two = format!("{udp}  - name: s\n    proto: udp\n    listen: 127.0.0.1:443\n");
        assert_eq!(
            errors(&two),
            [
                "rvs.yaml:11:13: services[2].listen[0]: udp 127.0.0.1:443 is also the address of service \"r\", which has no match either: services that share an address need a match each, but one (the default)",
            ]
        );
        let unlike = shared(&[Some("{sni: [a.test]}"), None]).replace(
            "  - name: b\n    listen: 127.0.0.1:443\n",
            "  - name: b\n    listen: 127.0.0.1:443\n    accept_proxy_protocol: true\n    timeouts: {client_hello: 2s}\n",
        );
        assert_eq!(
            errors(&unlike),
            [
                "rvs.yaml:7:28: services[1].accept_proxy_protocol: true differs from the false of service \"a\", which shares tcp 127.0.0.1:443: services that share an address read the client's first bytes alike",
                "rvs.yaml:8:30: services[1].timeouts.client_hello: 2s differs from the 5s of service \"a\", which shares tcp 127.0.0.1:443: services that share an address read the client's first bytes alike",
            ]
        );
    }
}
