//! Cost of one scheduling decision, per scheduler and number of real servers.
//!
//! One iteration = `Service::schedule()` of a new connection (persistence
//! off) plus the drop of the connection it returns: the full per-connection
//! work the library does (pick, bind, unbind, index upkeep). Before timing,
//! each server is given a few established connections so that the
//! least-connection schedulers compare real, differing loads.
//!
//! Run: `cargo bench -p rvs-sched --bench sched_pick`.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rvs_sched::{DestParams, SchedulerKind, Service, ServiceConfig, Time};

const SIZES: [usize; 4] = [2, 16, 256, 4096];

fn rs(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8),
        80,
    ))
}

fn client(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(0xC000_0200u32.wrapping_add(i as u32 * 2_654_435_761)),
        1024 + (i % 60_000) as u16,
    ))
}

fn service(kind: SchedulerKind, n: usize) -> (Service, Vec<rvs_sched::Conn>) {
    let mut cfg = ServiceConfig::new(kind);
    cfg.seed = 1;
    let svc = Service::new(cfg, Time::ZERO);
    for i in 0..n {
        let weight = 1 + (i % 4) as i32;
        svc.add_dest(
            rs(i),
            DestParams {
                weight,
                ..DestParams::default()
            },
        )
        .expect("distinct addresses");
    }
    // Background load: about three established connections per server.
    let vip = SocketAddr::from(([10, 255, 0, 1], 80));
    let held = (0..3 * n)
        .filter_map(|i| {
            let mut c = svc.schedule(client(i), vip, Time::ZERO)?;
            c.established();
            Some(c)
        })
        .collect();
    (svc, held)
}

fn bench(c: &mut Criterion) {
    let vip = SocketAddr::from(([10, 255, 0, 1], 80));
    let clients: Vec<SocketAddr> = (0..4096).map(|i| client(i + 1_000_000)).collect();
    let mut group = c.benchmark_group("schedule+close");
    group.throughput(Throughput::Elements(1));
    for kind in SchedulerKind::ALL {
        for n in SIZES {
            let (svc, _held) = service(kind, n);
            let mut i = 0usize;
            group.bench_with_input(BenchmarkId::new(kind.name(), n), &n, |b, _| {
                b.iter(|| {
                    i = (i + 1) & 4095;
                    black_box(svc.schedule(clients[i], vip, Time::ZERO))
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_millis(700));
    targets = bench
}
criterion_main!(benches);
