//! Persistence templates as `ipvsadm -lc` lists them: the masked client,
//! the virtual address and port, the server, the expiry and the
//! connections they control.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rvs_sched::{DestParams, Netmask, Persistence, SchedulerKind, Service, ServiceConfig, Time};

#[test]
fn templates_are_listed_with_their_expiry_and_controlled_connections() {
    let mut cfg = ServiceConfig::new(SchedulerKind::Rr);
    cfg.persistence = Some(Persistence {
        timeout: Duration::from_secs(300),
        netmask: Netmask::new("255.255.255.0".parse().unwrap(), 128).unwrap(),
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
    let t = list[0];
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
