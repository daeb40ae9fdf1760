//! `persistence:` of a service: IPVS's timeout and netmask (`ipvsadm -p
//! -M`), what one template covers (`scope`, what an fwmark service is
//! used for), the persistence engine (`--pe sip`) and the firewall mark
//! under which the templates travel to other directors.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rvs_sched::{Netmask, Persistence, Scope};

use super::raw::{RawPersistence, RawScope};
use super::validate::{At, at};
use super::{PersistenceEngine, PersistenceSpec, Proto};

/// The checked `persistence:` of the service at `base`: the scheduler's
/// part and rvs's own.
pub(super) fn persistence(
    raw: Option<RawPersistence>,
    proto: Proto,
    base: &str,
    problems: &mut Vec<At>,
) -> (Option<Persistence>, PersistenceSpec) {
    let Some(p) = raw else {
        return (None, PersistenceSpec::default());
    };
    let pbase = format!("{base}.persistence");
    if p.timeout.0 < Duration::from_secs(1) {
        problems.push(at(
            format!("{pbase}.timeout"),
            "must be at least 1s, as ipvsadm -p",
        ));
    }
    let v4 = match p.netmask.as_deref() {
        None => Ipv4Addr::BROADCAST,
        Some(m) => match m.parse::<IpAddr>() {
            Ok(IpAddr::V4(m)) => m,
            _ => {
                problems.push(at(
                    format!("{pbase}.netmask"),
                    format!("{m:?} is not an IPv4 netmask (as \"255.255.255.0\"); IPv6 clients use ipv6_prefix"),
                ));
                Ipv4Addr::BROADCAST
            }
        },
    };
    let prefix = p.ipv6_prefix.unwrap_or(128);
    let netmask = Netmask::new(v4, prefix).unwrap_or_else(|e| {
        problems.push(at(format!("{pbase}.ipv6_prefix"), e.to_string()));
        Netmask::HOST
    });
    let scope = match p.scope {
        None | Some(RawScope::Destination) => Scope::Destination,
        Some(RawScope::Service) => Scope::Service,
    };
    let engine = match p.engine.as_deref() {
        None => None,
        Some("sip") if proto == Proto::Udp => Some(PersistenceEngine::Sip),
        Some("sip") => {
            problems.push(at(
                format!("{pbase}.engine"),
                "the sip engine reads the Call-ID of UDP datagrams: it needs proto: udp",
            ));
            None
        }
        Some(other) => {
            problems.push(at(
                format!("{pbase}.engine"),
                format!(
                    "unknown persistence engine {other:?}: the one there is, as in IPVS, is sip"
                ),
            ));
            None
        }
    };
    if p.fwmark == Some(0) {
        problems.push(at(
            format!("{pbase}.fwmark"),
            "a firewall mark is 1 or more, as ipvsadm -f",
        ));
    }
    if p.fwmark.is_some() && scope != Scope::Service {
        problems.push(at(
            format!("{pbase}.fwmark"),
            "a firewall mark names a service-wide template: it needs scope: service",
        ));
    }
    let spec = PersistenceSpec {
        engine,
        fwmark: p.fwmark.filter(|&m| m > 0),
    };
    (
        Some(Persistence {
            timeout: p.timeout.0,
            netmask,
            scope,
        }),
        spec,
    )
}

#[cfg(test)]
mod tests {
    use super::super::validate::tests::errors;

    fn svc(proto: &str, persistence: &str) -> String {
        format!(
            "services:\n  - name: s\n    listen: 127.0.0.1:5060\n    proto: {proto}\n    persistence: {persistence}\n    real_servers:\n      - address: 127.0.0.1:5061\n"
        )
    }

    #[test]
    fn scope_engine_and_mark_are_checked() {
        assert!(errors(&svc("udp", "{ timeout: 60s, engine: sip }")).is_empty());
        assert!(errors(&svc("tcp", "{ timeout: 60s, scope: service, fwmark: 7 }")).is_empty());
        assert_eq!(
            errors(&svc("tcp", "{ timeout: 60s, engine: sip }")),
            [
                "rvs.yaml:5:42: services[0].persistence.engine: the sip engine reads the Call-ID of UDP datagrams: it needs proto: udp"
            ]
        );
        assert_eq!(
            errors(&svc("udp", "{ timeout: 60s, engine: rtsp }")),
            [
                "rvs.yaml:5:42: services[0].persistence.engine: unknown persistence engine \"rtsp\": the one there is, as in IPVS, is sip"
            ]
        );
        assert_eq!(
            errors(&svc("tcp", "{ timeout: 60s, fwmark: 3 }")),
            [
                "rvs.yaml:5:42: services[0].persistence.fwmark: a firewall mark names a service-wide template: it needs scope: service"
            ]
        );
        let bad_scope = errors(&svc("tcp", "{ timeout: 60s, scope: everywhere }"));
        assert_eq!(bad_scope.len(), 1, "{bad_scope:?}");
        assert!(bad_scope[0].contains("persistence.scope"), "{bad_scope:?}");
    }
}
