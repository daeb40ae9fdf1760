//! Invariants of the schedulers, checked on random services and workloads.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use rvs_sched::{
    Conn, DestParams, DestUpdate, Netmask, Persistence, SchedFlag, SchedFlags, SchedulerKind,
    Service, ServiceConfig, Time,
};

fn rs(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i as u8 + 1), 80))
}

fn client(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(0xC633_6400u32.wrapping_add((i as u32).wrapping_mul(2_654_435_761))),
        1024 + (i % 50_000) as u16,
    ))
}

fn vip() -> SocketAddr {
    SocketAddr::from(([10, 255, 0, 1], 80))
}

fn service(cfg: ServiceConfig, weights: &[i32]) -> Service {
    let s = Service::new(cfg, Time::ZERO);
    for (i, &weight) in weights.iter().enumerate() {
        s.add_dest(
            rs(i),
            DestParams {
                weight,
                ..DestParams::default()
            },
        )
        .unwrap();
    }
    s
}

fn gcd(a: i32, b: i32) -> i32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

const HASHING: [SchedulerKind; 3] = [SchedulerKind::Sh, SchedulerKind::Dh, SchedulerKind::Mh];

/// The connection of client `i`: dh hashes the destination, so each client
/// also gets its own destination address.
fn hashed(s: &Service, i: usize) -> Option<Conn> {
    let dst = SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(172, 16, (i >> 8) as u8, i as u8),
        80,
    ));
    s.schedule(client(i), dst, Time::ZERO)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// ip_vs_wrr.c: over any window of one cycle (sum of weights / gcd picks),
    /// each server is picked exactly weight / gcd times.
    #[test]
    fn wrr_gives_each_server_its_weight_per_cycle(
        weights in prop::collection::vec(0i32..=12, 1..8),
        skip in 0usize..60,
    ) {
        let g = weights.iter().copied().filter(|&w| w > 0).reduce(gcd);
        prop_assume!(g.is_some());
        let g = g.unwrap();
        let s = service(ServiceConfig::new(SchedulerKind::Wrr), &weights);
        let period: i32 = weights.iter().map(|w| w / g).sum();
        for i in 0..skip {
            s.schedule(client(i), vip(), Time::ZERO).unwrap();
        }
        let mut seen: HashMap<SocketAddr, i32> = HashMap::new();
        for i in 0..period as usize {
            let c = s.schedule(client(i), vip(), Time::ZERO).unwrap();
            *seen.entry(c.addr()).or_default() += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            prop_assert_eq!(seen.get(&rs(i)).copied().unwrap_or(0), w / g, "server {}", i);
        }
    }

    /// sh, dh and mh answer from their table only: however the load moves,
    /// a client whose bucket did not change keeps its server.
    #[test]
    fn hashing_ignores_load(
        kind in prop::sample::select(HASHING.to_vec()),
        weights in prop::collection::vec(1i32..5, 1..10),
        load in prop::collection::vec((0usize..300, any::<bool>()), 0..200),
    ) {
        let s = service(ServiceConfig::new(kind), &weights);
        let before: Vec<_> = (0..300).map(|i| hashed(&s, i).map(|c| c.addr())).collect();
        let mut held = Vec::new();
        for (i, established) in load {
            if let Some(mut c) = hashed(&s, i) {
                if established { c.established(); }
                held.push(c);
            }
        }
        let after: Vec<_> = (0..300).map(|i| hashed(&s, i).map(|c| c.addr())).collect();
        prop_assert_eq!(before, after);
    }

    /// Quiescing one server of a hashing scheduler moves only its clients:
    /// without fallback they get no server, with fallback another one.
    #[test]
    fn quiescing_moves_only_that_servers_clients(
        kind in prop::sample::select(HASHING.to_vec()),
        n in 2usize..10,
        victim in any::<Index>(),
        fallback in any::<bool>(),
    ) {
        let mut cfg = ServiceConfig::new(kind);
        let flag = match kind {
            SchedulerKind::Sh => Some(SchedFlag::ShFallback),
            SchedulerKind::Mh => Some(SchedFlag::MhFallback),
            _ => None,
        };
        let fallback = fallback && flag.is_some();
        if fallback {
            cfg.flags = SchedFlags::for_scheduler(kind, flag).unwrap();
        }
        let s = service(cfg, &vec![1; n]);
        let victim = rs(victim.index(n));
        let before: Vec<_> = (0..400).map(|i| hashed(&s, i).map(|c| c.addr())).collect();
        s.edit_dest(victim, DestUpdate { weight: Some(0), ..DestUpdate::default() }).unwrap();
        for (i, b) in before.iter().enumerate() {
            let now = hashed(&s, i).map(|c| c.addr());
            if *b == Some(victim) {
                if fallback {
                    prop_assert!(now.is_some() && now != Some(victim));
                } else {
                    prop_assert_eq!(now, None);
                }
            } else {
                prop_assert_eq!(now, *b);
            }
        }
    }

    /// No scheduler lets a server's connections exceed its upper threshold
    /// (without persistence, whose templates ignore it as IPVS's do). lblc is
    /// the kernel's exception: ip_vs_lblc_schedule() keeps a cached server
    /// unless its own is_overloaded() (active > weight while another server is
    /// under half its weight) says so, and never reads the threshold flag.
    #[test]
    fn thresholds_bound_every_server(
        kind in prop::sample::select(
            SchedulerKind::ALL.into_iter().filter(|&k| k != SchedulerKind::Lblc).collect::<Vec<_>>()
        ),
        servers in prop::collection::vec((1i32..4, 0u32..4), 1..6),
        ops in prop::collection::vec((0u8..4, any::<Index>()), 1..150),
    ) {
        let s = Service::new(ServiceConfig::new(kind), Time::ZERO);
        for (i, &(weight, upper)) in servers.iter().enumerate() {
            s.add_dest(rs(i), DestParams { weight, u_threshold: upper, l_threshold: 0 }).unwrap();
        }
        let mut open: Vec<Conn> = Vec::new();
        for (n, (op, idx)) in ops.into_iter().enumerate() {
            match op {
                0 | 1 => {
                    if let Some(mut c) = hashed(&s, n) {
                        if op == 1 { c.established(); }
                        open.push(c);
                    }
                }
                2 if !open.is_empty() => { open.swap_remove(idx.index(open.len())); }
                _ if !open.is_empty() => { let i = idx.index(open.len()); open[i].fin(); }
                _ => {}
            }
            for d in s.dests() {
                let upper = d.params().u_threshold;
                let total = d.active_conns() + d.inactive_conns();
                prop_assert!(upper == 0 || total <= upper, "{} has {} > {}", d.addr(), total, upper);
            }
        }
        drop(open);
        for d in s.dests() {
            prop_assert_eq!((d.active_conns(), d.inactive_conns(), d.is_overloaded()), (0, 0, false));
        }
    }

    /// A deleted server is never picked again, and keeps its connections'
    /// counts until they close.
    #[test]
    fn a_deleted_server_is_never_picked_and_keeps_its_counts(
        kind in prop::sample::select(SchedulerKind::ALL.to_vec()),
        n in 2usize..6,
        victim in any::<Index>(),
    ) {
        let s = service(ServiceConfig::new(kind), &vec![1; n]);
        let victim = rs(victim.index(n));
        let held: Vec<Conn> = (0..60).filter_map(|i| hashed(&s, i)).collect();
        let on_victim = held.iter().filter(|c| c.addr() == victim).count() as u32;
        let dest = held.iter().find(|c| c.addr() == victim).map(|c| c.dest().clone());
        s.del_dest(victim).unwrap();
        for i in 60..400 {
            if let Some(c) = hashed(&s, i) { prop_assert_ne!(c.addr(), victim); }
        }
        if let Some(d) = dest {
            prop_assert_eq!(d.inactive_conns(), on_victim);
            prop_assert!(!d.is_available());
            drop(held);
            prop_assert_eq!(d.inactive_conns(), 0);
        }
    }

    /// Persistence sticks within the timeout and the template expires after it.
    #[test]
    fn persistence_sticks_then_expires(
        timeout in 1u64..600,
        gaps in prop::collection::vec(0.0f64..1.0, 1..20),
        kind in prop::sample::select(vec![SchedulerKind::Rr, SchedulerKind::Wlc, SchedulerKind::Twos]),
    ) {
        let mut cfg = ServiceConfig::new(kind);
        cfg.persistence = Some(Persistence {
            timeout: Duration::from_secs(timeout),
            netmask: Netmask::HOST,
            scope: Default::default(),
        });
        let s = service(cfg, &[1, 1, 1]);
        let mut now = Time::ZERO;
        let first = s.schedule(client(1), vip(), now).unwrap().addr();
        for gap in gaps {
            // Strictly less than the timeout since the last connection.
            let d = Duration::from_secs_f64(gap * (timeout as f64 - 0.001));
            now = now.saturating_add(d);
            s.advance(now);
            let c = s.schedule(client(1), vip(), now).unwrap();
            prop_assert_eq!(c.addr(), first);
            // Someone else's connections in between do not disturb it.
            let _ = s.schedule(client(2), vip(), now);
        }
        let last = now;
        s.advance(last.saturating_add(Duration::from_secs(timeout) - Duration::from_millis(1)));
        prop_assert!(s.template_count() >= 1);
        s.advance(last.saturating_add(Duration::from_secs(timeout)));
        prop_assert_eq!(s.template_count(), 0);
        for d in s.dests() {
            prop_assert_eq!(d.persist_conns(), 0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// schedule_retry() never returns an excluded server, refuses when only
    /// excluded ones could take the connection, and with nothing excluded
    /// decides exactly as schedule() does.
    #[test]
    fn retries_avoid_excluded_servers(
        kind in prop::sample::select(
            SchedulerKind::ALL.into_iter().filter(|&k| k != SchedulerKind::Twos).collect::<Vec<_>>()
        ),
        weights in prop::collection::vec(0i32..4, 1..7),
        excluded in prop::collection::vec(any::<Index>(), 0..4),
        picks in 1usize..40,
    ) {
        let a = service(ServiceConfig::new(kind), &weights);
        let b = service(ServiceConfig::new(kind), &weights);
        let mut held = Vec::new();
        for i in 0..picks {
            let x = hashed(&a, i);
            let dst = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(172, 16, (i >> 8) as u8, i as u8), 80));
            let y = b.schedule_retry(client(i), dst, Time::ZERO, &[]);
            prop_assert_eq!(x.as_ref().map(Conn::addr), y.as_ref().map(Conn::addr));
            held.extend(x);
            held.extend(y);
        }
        let ex: Vec<SocketAddr> = excluded.iter().map(|i| rs(i.index(weights.len()))).collect();
        for i in 0..picks {
            let dst = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(172, 16, (i >> 8) as u8, i as u8), 80));
            if let Some(c) = a.schedule_retry(client(i), dst, Time::ZERO, &ex) {
                prop_assert!(!ex.contains(&c.addr()), "{} picked excluded {}", kind, c.addr());
            }
        }
        let all: Vec<SocketAddr> = (0..weights.len()).map(rs).collect();
        prop_assert!(a.schedule_retry(client(0), vip(), Time::ZERO, &all).is_none());
    }
}

/// Maglev's promise (ip_vs_mh.c): removing one of N servers moves the
/// clients of that server, about 1/N of all, and few others. Maglev is not
/// perfectly minimal: with the kernel's 4093 slots the others that move grow
/// with N (0.1% at N=3, 1.7% at N=20, 2.4% at N=40), so the bound is on the
/// total: under 1.5/N.
#[test]
fn mh_removal_moves_about_one_nth() {
    for n in [3usize, 5, 8, 13, 20] {
        for victim in [0, n / 2, n - 1] {
            let s = service(ServiceConfig::new(SchedulerKind::Mh), &vec![1; n]);
            let clients = 20_000;
            let before: Vec<_> = (0..clients)
                .map(|i| hashed(&s, i).unwrap().addr())
                .collect();
            s.del_dest(rs(victim)).unwrap();
            let mut moved_others = 0;
            let mut on_victim = 0;
            for (i, b) in before.iter().enumerate() {
                let now = hashed(&s, i).unwrap().addr();
                if *b == rs(victim) {
                    on_victim += 1;
                } else if now != *b {
                    moved_others += 1;
                }
            }
            let share = on_victim as f64 / clients as f64;
            let others = moved_others as f64 / clients as f64;
            assert!(
                (share - 1.0 / n as f64).abs() < 0.35 / n as f64,
                "n={n}: the victim held {share:.4}"
            );
            assert!(
                share + others < 1.5 / n as f64,
                "n={n} victim={victim}: {:.4} of all clients moved",
                share + others
            );
        }
    }
}

/// ip_vs_sh_reassign(): sh's buckets follow the weights exactly.
#[test]
fn sh_shares_follow_weights() {
    let s = service(ServiceConfig::new(SchedulerKind::Sh), &[1, 2, 5]);
    let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
    // Every bucket: hash_32 is a bijection on the top byte of key * golden ratio.
    for b in 0..256u32 {
        let mut key = 0u32;
        while key.wrapping_mul(0x61C8_8647) >> 24 != b {
            key = key.wrapping_add(1);
        }
        let c = s
            .schedule(
                SocketAddr::from((Ipv4Addr::from(key), 9)),
                vip(),
                Time::ZERO,
            )
            .unwrap();
        *seen.entry(c.addr()).or_default() += 1;
    }
    // Rounds of 8 buckets (list [c5, b2, a1]): 256 = 32 rounds.
    assert_eq!(seen[&rs(2)], 5 * 32);
    assert_eq!(seen[&rs(1)], 2 * 32);
    assert_eq!(seen[&rs(0)], 32);
}
