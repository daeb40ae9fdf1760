//! Persistence templates as `ipvsadm -lc` lists them: the masked client,
//! the virtual address and port, the server, the expiry and the
//! connections they control.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rvs_sched::{
    DestParams, Netmask, Persistence, SchedulerKind, Scope, Service, ServiceConfig, Time,
};

#[test]
fn templates_are_listed_with_their_expiry_and_controlled_connections() {
    let mut cfg = ServiceConfig::new(SchedulerKind::Rr);
    cfg.persistence = Some(Persistence {
        timeout: Duration::from_secs(300),
        netmask: Netmask::new("255.255.255.0".parse().unwrap(), 128).unwrap(),
        scope: Default::default(),
    });
    let s = Service::new(cfg, Time::ZERO);
    let rs: SocketAddr = "10.0.0.1:80".parse().unwrap();
    s.add_dest(rs, DestParams::default()).unwrap();
    let vip: SocketAddr = "192.0.2.1:80".parse().unwrap();
    assert!(s.templates().is_empty());

    let t0 = Time::from_secs(10);
    let mut conn = s
        .schedule("198.51.100.77:5000".parse().unwrap(), vip, t0)
        .unwrap();
    conn.established();
    let list = s.templates();
    assert_eq!(list.len(), 1);
    let t = &list[0];
    assert_eq!(t.client, "198.51.100.0".parse::<IpAddr>().unwrap());
    assert_eq!(t.vaddr, vip.ip());
    assert_eq!(t.vport, 80);
    assert_eq!(t.dest, rs);
    assert_eq!(t.controlled, 1);
    assert_eq!(t.expires, Time::from_secs(310));

    // A second client of the same /24 renews the same template.
    let t1 = Time::from_secs(20);
    let _c2 = s
        .schedule("198.51.100.8:6000".parse().unwrap(), vip, t1)
        .unwrap();
    let list = s.templates();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].controlled, 2);
    assert_eq!(list[0].expires, Time::from_secs(320));

    // Another network gets its own.
    let _c3 = s
        .schedule("203.0.113.1:1".parse().unwrap(), vip, t1)
        .unwrap();
    let list = s.templates();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1].client, "203.0.113.0".parse::<IpAddr>().unwrap());
}

/// Templates and connections taken over from elsewhere (the process before
/// a binary upgrade): the client goes to the adopted server whatever the
/// scheduler would pick, the template keeps its expiry and is renewed by
/// new connections, and adopted connections count on their server.
#[test]
fn adopted_templates_and_connections_keep_their_server() {
    let mut cfg = ServiceConfig::new(SchedulerKind::Rr);
    cfg.persistence = Some(Persistence {
        timeout: Duration::from_secs(300),
        netmask: Netmask::HOST,
        scope: Default::default(),
    });
    let s = Service::new(cfg, Time::ZERO);
    let (a, b): (SocketAddr, SocketAddr) = (
        "10.0.0.1:80".parse().unwrap(),
        "10.0.0.2:80".parse().unwrap(),
    );
    s.add_dest(a, DestParams::default()).unwrap();
    s.add_dest(b, DestParams::default()).unwrap();
    let vip: SocketAddr = "192.0.2.1:80".parse().unwrap();
    let client: SocketAddr = "198.51.100.7:4000".parse().unwrap();
    // rr would pick b (the head) first; the adopted template says a.
    let t0 = Time::from_secs(100);
    assert!(s.adopt_template(client.ip(), vip.ip(), 80, None, a, Time::from_secs(150)));
    assert_eq!(s.dest(a).unwrap().persist_conns(), 1);
    let list = s.templates();
    assert_eq!(
        (list.len(), list[0].dest, list[0].expires),
        (1, a, Time::from_secs(150))
    );
    // A connection taken over is controlled without renewing it.
    let adopted = s.adopt(client, vip, a).unwrap();
    assert_eq!(adopted.addr(), a);
    assert_eq!(s.dest(a).unwrap().inactive_conns(), 1);
    let list = s.templates();
    assert_eq!(
        (list[0].controlled, list[0].expires),
        (1, Time::from_secs(150))
    );
    // New connections follow it, and renew it.
    for i in 0..3 {
        let c = s.schedule(client, vip, t0).unwrap();
        assert_eq!(c.addr(), a, "connection {i}");
    }
    assert_eq!(s.templates()[0].expires, Time::from_secs(400));
    // The same template again changes nothing; one naming another server
    // replaces it.
    assert!(!s.adopt_template(client.ip(), vip.ip(), 80, None, a, Time::from_secs(120)));
    assert!(s.adopt_template(client.ip(), vip.ip(), 80, None, b, Time::from_secs(500)));
    assert_eq!(s.schedule(client, vip, t0).unwrap().addr(), b);
    // A server not in the list, or a service without persistence, takes
    // nothing.
    let gone: SocketAddr = "10.0.0.9:80".parse().unwrap();
    assert!(!s.adopt_template(client.ip(), vip.ip(), 80, None, gone, Time::from_secs(500)));
    assert!(s.adopt(client, vip, gone).is_none());
    let plain = Service::new(ServiceConfig::new(SchedulerKind::Rr), Time::ZERO);
    plain.add_dest(a, DestParams::default()).unwrap();
    assert!(!plain.adopt_template(client.ip(), vip.ip(), 80, None, a, Time::from_secs(500)));
    assert_eq!(plain.adopt(client, vip, a).unwrap().addr(), a);
    drop(adopted);
    // Renewed by the connection above to 400 s (now + timeout, as any
    // renewal), controlling nothing: both templates go then.
    s.advance(Time::from_secs(399));
    assert_eq!(s.templates().len(), 2);
    s.advance(Time::from_secs(401));
    assert!(s.templates().is_empty());
    assert_eq!(s.dest(b).unwrap().persist_conns(), 0);
}

fn rr_persistent(scope: Scope, servers: &[&str]) -> Service {
    let mut cfg = ServiceConfig::new(SchedulerKind::Rr);
    cfg.persistence = Some(Persistence {
        scope,
        ..Persistence::new(Duration::from_secs(300))
    });
    let s = Service::new(cfg, Time::ZERO);
    for a in servers {
        s.add_dest(a.parse().unwrap(), DestParams::default())
            .unwrap();
    }
    s
}

/// A service-wide template (what an fwmark service's is): one client's
/// connections to any of the service's addresses and ports reach one
/// server; per destination (the default), each address and port has its
/// own template, and rr moves the client on.
#[test]
fn a_service_wide_template_covers_every_address_and_port() {
    let client: SocketAddr = "198.51.100.7:4000".parse().unwrap();
    let http: SocketAddr = "192.0.2.1:80".parse().unwrap();
    let https: SocketAddr = "192.0.2.1:443".parse().unwrap();
    let other: SocketAddr = "192.0.2.2:8443".parse().unwrap();
    let s = rr_persistent(Scope::Service, &["10.0.0.1:0", "10.0.0.2:0"]);
    let first = s.schedule(client, http, Time::from_secs(1)).unwrap().addr();
    for (i, vip) in [https, other, http].into_iter().enumerate() {
        let now = Time::from_secs(2 + i as u64);
        assert_eq!(s.schedule(client, vip, now).unwrap().addr(), first, "{vip}");
    }
    assert_eq!(s.templates().len(), 1);
    assert_eq!(s.templates()[0].vport, 0);

    let s = rr_persistent(Scope::Destination, &["10.0.0.1:0", "10.0.0.2:0"]);
    let a = s.schedule(client, http, Time::from_secs(1)).unwrap().addr();
    let b = s
        .schedule(client, https, Time::from_secs(2))
        .unwrap()
        .addr();
    assert_ne!(
        a, b,
        "rr gives the second destination's template the next server"
    );
    assert_eq!(s.templates().len(), 2);
}

/// A persistence engine's data (the SIP Call-ID) is part of the template:
/// each call has its own, and a packet without data falls back to the
/// client's plain template, as IPVS's engine does.
#[test]
fn templates_with_engine_data_are_per_call() {
    let s = rr_persistent(Scope::Destination, &["10.0.0.1:5060", "10.0.0.2:5060"]);
    let vip: SocketAddr = "192.0.2.1:5060".parse().unwrap();
    let client: SocketAddr = "198.51.100.7:5060".parse().unwrap();
    let t = Time::from_secs(1);
    let call_a = s
        .schedule_with(client, vip, Some(b"call-a"), t)
        .unwrap()
        .addr();
    let call_b = s
        .schedule_with(client, vip, Some(b"call-b"), t)
        .unwrap()
        .addr();
    assert_ne!(call_a, call_b, "two calls, rr: two servers");
    // Every later message of a call, from any port, goes where it went.
    for port in [5060, 5070, 40000] {
        let c = SocketAddr::new(client.ip(), port);
        assert_eq!(
            s.schedule_with(c, vip, Some(b"call-a"), t).unwrap().addr(),
            call_a
        );
        assert_eq!(
            s.schedule_with(c, vip, Some(b"call-b"), t).unwrap().addr(),
            call_b
        );
    }
    // No Call-ID: the plain template, made once, then kept.
    let plain = s.schedule_with(client, vip, None, t).unwrap().addr();
    assert_eq!(s.schedule(client, vip, t).unwrap().addr(), plain);
    let list = s.templates();
    assert_eq!(list.len(), 3);
    let mut pes: Vec<Option<&[u8]>> = list.iter().map(|t| t.pe.as_deref()).collect();
    pes.sort();
    assert_eq!(pes, [None, Some(&b"call-a"[..]), Some(&b"call-b"[..])]);
    // Another client with the same Call-ID has its own template.
    let other: SocketAddr = "198.51.100.8:5060".parse().unwrap();
    s.schedule_with(other, vip, Some(b"call-a"), t).unwrap();
    assert_eq!(s.templates().len(), 4);
    // A template taken over with its Call-ID sends the call there.
    let (x, y): (SocketAddr, SocketAddr) = (
        "10.0.0.1:5060".parse().unwrap(),
        "10.0.0.2:5060".parse().unwrap(),
    );
    // Two of them, one per server: whatever rr would pick, each call
    // goes to its own.
    for (call, to) in [(&b"call-c"[..], x), (&b"call-d"[..], y)] {
        let later = Time::from_secs(100);
        assert!(s.adopt_template(client.ip(), vip.ip(), vip.port(), Some(call), to, later));
    }
    for _ in 0..3 {
        for (call, to) in [(&b"call-c"[..], x), (&b"call-d"[..], y)] {
            let got = s.schedule_with(client, vip, Some(call), t).unwrap().addr();
            assert_eq!(got, to);
        }
    }
}
