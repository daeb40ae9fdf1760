//! Picks, connection state changes and control changes from many threads at
//! once: nothing deadlocks or panics, and every count returns to zero.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use rvs_sched::{
    DestParams, DestUpdate, Netmask, Persistence, SchedulerKind, Service, ServiceConfig, Time,
};

fn rs(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, i as u8), 80))
}

fn run(cfg: ServiceConfig) {
    let s = Service::new(cfg, Time::ZERO);
    for i in 0..8 {
        s.add_dest(
            rs(i),
            DestParams {
                weight: 1 + i as i32 % 3,
                u_threshold: 50,
                l_threshold: 0,
            },
        )
        .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let control = {
        let (s, stop) = (s.clone(), stop.clone());
        thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let i = (n % 8) as usize;
                match n % 3 {
                    0 => {
                        let _ = s.del_dest(rs(i));
                    }
                    1 => {
                        let _ = s.add_dest(rs(i), DestParams::default());
                    }
                    _ => {
                        let _ = s.edit_dest(
                            rs(i),
                            DestUpdate {
                                weight: Some((n % 4) as i32),
                                ..DestUpdate::default()
                            },
                        );
                    }
                }
                s.advance(Time::from_secs(u64::from(n / 10)));
                n += 1;
                thread::yield_now();
            }
        })
    };
    let workers: Vec<_> = (0..4u32)
        .map(|t| {
            let s = s.clone();
            thread::spawn(move || {
                let mut held = Vec::new();
                let vip = SocketAddr::from(([10, 255, 0, 1], 80));
                for k in 0..20_000u32 {
                    let client = SocketAddr::from((
                        Ipv4Addr::from(0xC000_0000 | (t << 16) | (k % 5000)),
                        1000,
                    ));
                    let now = Time::from_secs(u64::from(k / 100));
                    if let Some(mut c) = s.schedule(client, vip, now) {
                        c.established();
                        if k % 3 == 0 {
                            c.fin();
                        }
                        held.push(c);
                    }
                    if held.len() > 40 {
                        held.drain(..20);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    stop.store(true, Ordering::Relaxed);
    control.join().expect("control");
    s.advance(Time::from_secs(1_000_000));
    for d in s.dests() {
        assert_eq!(
            (d.active_conns(), d.inactive_conns(), d.persist_conns()),
            (0, 0, 0),
            "{:?} with {:?}",
            d,
            s.config().scheduler
        );
    }
    assert_eq!(s.template_count(), 0);
}

#[test]
fn every_scheduler_under_concurrent_load() {
    for kind in SchedulerKind::ALL {
        run(ServiceConfig::new(kind));
    }
}

#[test]
fn persistent_services_under_concurrent_load() {
    for kind in [SchedulerKind::Wlc, SchedulerKind::Mh, SchedulerKind::Lblcr] {
        let mut cfg = ServiceConfig::new(kind);
        cfg.persistence = Some(Persistence {
            timeout: Duration::from_secs(30),
            netmask: Netmask::HOST,
            scope: Default::default(),
        });
        run(cfg);
    }
}
