//! Reloads under load: no connection fails, no byte is corrupted, a broken
//! file changes nothing, established connections survive the removal of
//! their server and service, a ConfigMap-style symlink swap is seen.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use rvs_proxy::reload::Reloader;
use rvs_proxy::{Config, Options, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// One echo round trip of `size` bytes; Err on any failure or corruption.
async fn round_trip(vip: SocketAddr, size: usize, seed: u64) -> Result<(), String> {
    let mut s = TcpStream::connect(vip)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut data = vec![0u8; size];
    Stream::new(seed).fill(&mut data);
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(&data).await?;
        w.shutdown().await
    };
    let mut back = Vec::with_capacity(size);
    let recv = r.read_to_end(&mut back);
    let (a, b) = tokio::join!(send, recv);
    a.map_err(|e| format!("send: {e}"))?;
    b.map_err(|e| format!("recv: {e}"))?;
    if back != data {
        return Err(format!("corrupted: {} bytes back of {size}", back.len()));
    }
    Ok(())
}

/// A config of one service, `name`, with one real server.
fn one_server(name: &str, server: SocketAddr) -> String {
    format!(
        "services:\n  - name: {name}\n    listen: 127.0.0.1:0\n    real_servers:\n      - address: \"{server}\"\n"
    )
}

fn web(scheduler: &str, servers: &[(SocketAddr, u32)], extra_service: Option<&str>) -> String {
    let mut y = format!(
        "services:\n  - name: web\n    listen: 127.0.0.1:0\n    scheduler: {scheduler}\n    real_servers:\n"
    );
    for (a, w) in servers {
        y.push_str(&format!("      - address: \"{a}\"\n        weight: {w}\n"));
    }
    if let Some(listen) = extra_service {
        y.push_str(&format!(
            "  - name: extra\n    listen: \"{listen}\"\n    real_servers:\n      - address: \"{}\"\n",
            servers[0].0
        ));
    }
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_under_load_lose_nothing() {
    hundred_reloads_under_load(Options::default()).await;
}

/// The same with data-plane workers: every reload that adds the "extra"
/// address binds it once per worker, every one that drops it closes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_reloads_under_load_lose_nothing_with_workers() {
    hundred_reloads_under_load(Options {
        workers: 2,
        ..Options::default()
    })
    .await;
}

async fn hundred_reloads_under_load(options: Options) {
    let e = [
        echo_backend().await,
        echo_backend().await,
        echo_backend().await,
    ];
    let extra_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let variants = [
        web("rr", &[(e[0], 1), (e[1], 1), (e[2], 1)], None),
        web("wrr", &[(e[0], 2), (e[1], 1)], None),
        web("rr", &[(e[1], 1), (e[2], 3)], Some(&extra_port.to_string())),
        web("wlc", &[(e[2], 1), (e[0], 5)], None),
        web(
            "wlc",
            &[(e[2], 2), (e[0], 5), (e[1], 1)],
            Some(&extra_port.to_string()),
        ),
    ];
    let dir = temp_dir("reload");
    let path = dir.join("rvs.yaml");
    std::fs::write(&path, &variants[0]).unwrap();
    let p = Proxy::start(Config::load(&path).unwrap(), options).unwrap();
    let reloader = Reloader::new(&path, p.clone(), &variants[0]);
    let v = vip(&p, "web");

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for t in 0..6u64 {
        let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let size = 16 * 1024 + (n as usize % 7) * 9000;
                match round_trip(v, size, t * 1_000_000 + n).await {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.lock().unwrap().push(e),
                }
                n += 1;
            }
        }));
    }
    for i in 0..120 {
        if i == 60 {
            // A broken file: refused, the running configuration stays.
            std::fs::write(&path, "services:\n  - name: web\n    listen: [oops\n").unwrap();
            let err = reloader.reload().await.unwrap_err();
            assert!(err.contains("rvs.yaml:3:"), "{err}");
            let in_force = Config::parse(&variants[(i - 1) % 5], "x").unwrap();
            assert_eq!(*p.config(), in_force);
            assert!(reloader.status().last_error().is_some());
            continue;
        }
        std::fs::write(&path, &variants[i % 5]).unwrap();
        reloader.reload().await.unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        ok.load(Ordering::Relaxed) > 200,
        "only {} round trips",
        ok.load(Ordering::Relaxed)
    );
    let status = reloader.status();
    assert_eq!(status.succeeded.load(Ordering::Relaxed), 119);
    assert_eq!(status.failed.load(Ordering::Relaxed), 1);
    // The last good file is in force: variant 119 % 5 = 4, with "extra".
    assert!(p.service("extra").is_some());
    assert_eq!(p.config().service("web").unwrap().real_servers.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_connections_survive_the_removal_of_their_server_and_service() {
    let e1 = echo_backend().await;
    let e2 = echo_backend().await;
    let dir = temp_dir("survive");
    let path = dir.join("rvs.yaml");
    let first = format!(
        "services:\n  - name: old\n    listen: 127.0.0.1:0\n    real_servers:\n      - address: \"{e1}\"\n"
    );
    std::fs::write(&path, &first).unwrap();
    let p = Proxy::start(Config::load(&path).unwrap(), Options::default()).unwrap();
    let reloader = Reloader::new(&path, p.clone(), &first);
    let old_vip = vip(&p, "old");
    let mut held = TcpStream::connect(old_vip).await.unwrap();
    held.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    held.read_exact(&mut buf).await.unwrap();
    // A new config: the service, its address and its server are gone.
    let second = format!(
        "services:\n  - name: new\n    listen: 127.0.0.2:0\n    real_servers:\n      - address: \"{e2}\"\n"
    );
    std::fs::write(&path, &second).unwrap();
    reloader.reload().await.unwrap();
    assert!(p.service("old").is_none());
    // The removed service no longer accepts...
    assert!(
        eventually(Duration::from_secs(2), || std::net::TcpStream::connect(
            old_vip
        )
        .is_err())
        .await
    );
    // ...but its established connection still flows both ways.
    held.write_all(b"after!").await.unwrap();
    held.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after!");
    held.shutdown().await.unwrap();
    assert_eq!(read_all(&mut held).await, b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_servers_keep_their_counters_and_connections() {
    let (a, _) = hold_backend("a").await;
    let (b, _) = hold_backend("b").await;
    let dir = temp_dir("counters");
    let path = dir.join("rvs.yaml");
    let one = web("wlc", &[(a, 1)], None);
    std::fs::write(&path, &one).unwrap();
    let p = Proxy::start(Config::load(&path).unwrap(), Options::default()).unwrap();
    let reloader = Reloader::new(&path, p.clone(), &one);
    let v = vip(&p, "web");
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(v).await.unwrap();
        s.read_exact(&mut [0u8; 1]).await.unwrap();
        held.push(s);
    }
    let before = p.service("web").unwrap().scheduler().dest(a).unwrap();
    assert!(eventually(Duration::from_secs(2), || before.active_conns() == 3).await);
    // Add b, change nothing about a.
    let two = web("wlc", &[(a, 1), (b, 1)], None);
    std::fs::write(&path, &two).unwrap();
    reloader.reload().await.unwrap();
    let after = p.service("web").unwrap().scheduler().dest(a).unwrap();
    assert!(
        Arc::ptr_eq(&before, &after),
        "the same server, not a new one"
    );
    assert_eq!((after.active_conns(), after.conns_total()), (3, 3));
    // wlc now sends new connections to the idle b.
    let mut s = TcpStream::connect(v).await.unwrap();
    let mut name = [0u8; 1];
    s.read_exact(&mut name).await.unwrap();
    assert_eq!(&name, b"b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_seen_by_the_watcher() {
    let x = name_backend("x").await;
    let y = name_backend("y").await;
    // The layout kubelet makes: rvs.yaml -> ..data/rvs.yaml, ..data -> ..v1
    let dir = temp_dir("configmap");
    let doc = |a: SocketAddr| one_server("cm", a);
    std::fs::create_dir(dir.join("..v1")).unwrap();
    std::fs::write(dir.join("..v1/rvs.yaml"), doc(x)).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/rvs.yaml", dir.join("rvs.yaml")).unwrap();
    let path = dir.join("rvs.yaml");
    let p = Proxy::start(Config::load(&path).unwrap(), Options::default()).unwrap();
    let reloader = Reloader::new(&path, p.clone(), &doc(x));
    let stop = CancellationToken::new();
    tokio::spawn(reloader.clone().watch(stop.clone()));
    let v = vip(&p, "cm");
    assert_eq!(fetch_name(v).await, "x");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The update: a new directory, a new ..data symlink renamed over the old.
    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(dir.join("..v2/rvs.yaml"), doc(y)).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let seen = fetch_name_until(v, "y").await;
    assert_eq!(seen, "y", "the watcher did not reload within 2 s");
    // Counted just after it applies: the client may see it first.
    let status = reloader.status();
    assert!(
        eventually(Duration::from_secs(2), || status
            .succeeded
            .load(Ordering::Relaxed)
            == 1)
        .await
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_reads_the_file_only_when_it_may_have_changed() {
    let x = name_backend("x").await;
    let y = name_backend("y").await;
    let dir = temp_dir("quiet");
    let doc = |a: SocketAddr| one_server("q", a);
    let path = dir.join("rvs.yaml");
    std::fs::write(&path, doc(x)).unwrap();
    let p = Proxy::start(Config::load(&path).unwrap(), Options::default()).unwrap();
    let reloader = Reloader::new(&path, p.clone(), &doc(x));
    let status = reloader.status();
    let stop = CancellationToken::new();
    tokio::spawn(reloader.clone().watch(stop.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Its own reads and a log written beside the file: nothing to check
    // (the every-5-s check may fall in the window, once).
    let before = status.checks.load(Ordering::Relaxed);
    for i in 0..20 {
        std::fs::write(dir.join("access.log"), format!("line {i}\n")).unwrap();
        let _ = std::fs::read_to_string(&path).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let checks = status.checks.load(Ordering::Relaxed) - before;
    assert!(checks <= 1, "{checks} checks of an unchanged file in 1.5 s");
    // A change is still seen.
    std::fs::write(&path, doc(y)).unwrap();
    let v = vip(&p, "q");
    let seen = fetch_name_until(v, "y").await;
    assert_eq!(seen, "y", "the watcher did not reload within 2 s");
    // Counted just after it applies: the client may see it first.
    assert!(
        eventually(Duration::from_secs(2), || status
            .succeeded
            .load(Ordering::Relaxed)
            == 1)
        .await,
        "{} reloads",
        status.succeeded.load(Ordering::Relaxed)
    );
    stop.cancel();
}

/// A file emptied (what a reader sees between a truncating write's open
/// and its write) is refused, not applied as "no services": every service
/// keeps serving, and the file's next full form applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_file_is_refused_and_closes_nothing() {
    let x = name_backend("x").await;
    let y = name_backend("y").await;
    let dir = temp_dir("emptied");
    let doc = |a: SocketAddr| one_server("e", a);
    let path = dir.join("rvs.yaml");
    std::fs::write(&path, doc(x)).unwrap();
    let p = Proxy::start(Config::load(&path).unwrap(), Options::default()).unwrap();
    let reloader = Reloader::new(&path, p.clone(), &doc(x));
    let v = vip(&p, "e");
    for empty in ["", "\n  \n", "# being rewritten\n"] {
        std::fs::write(&path, empty).unwrap();
        let err = reloader.reload().await.unwrap_err();
        assert!(err.contains("the file is empty"), "{err}");
        assert_eq!(fetch_name(v).await, "x", "still serving");
    }
    std::fs::write(&path, "services: []\n").unwrap();
    reloader.reload().await.unwrap();
    assert!(
        p.config().services.is_empty(),
        "an explicit empty list applies"
    );
    std::fs::write(&path, doc(y)).unwrap();
    reloader.reload().await.unwrap();
    let v = vip(&p, "e");
    assert_eq!(fetch_name(v).await, "y");
}
