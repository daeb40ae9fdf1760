//! Graceful shutdown: no new connections, open ones drain to completion
//! within the grace period.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOTAL: usize = 8 << 20;

/// A server that sends TOTAL bytes slowly (about 1.3 s), then closes.
async fn slow_server() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut stream = Stream::new(9);
                let mut buf = vec![0u8; 64 * 1024];
                for _ in 0..TOTAL / buf.len() {
                    stream.fill(&mut buf);
                    if s.write_all(&buf).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
    });
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_transfer_drains_to_completion() {
    let server = slow_server().await;
    let p = proxy(&format!(
        "services:\n  - name: s\n    listen: 127.0.0.1:0\n    real_servers:\n      - address: \"{server}\"\n"
    ));
    let v = vip(&p, "s");
    let mut c = TcpStream::connect(v).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut d = Digest::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = c.read(&mut buf).await.unwrap();
            if n == 0 {
                return d;
            }
            d.update(&buf[..n]);
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopper = {
        let p = p.clone();
        tokio::spawn(async move { p.shutdown(Duration::from_secs(10)).await })
    };
    // No new connections once the shutdown has begun.
    assert!(
        eventually(Duration::from_secs(2), || std::net::TcpStream::connect(v)
            .is_err())
        .await
    );
    let got = reader.await.unwrap();
    let mut want = Digest::default();
    let mut stream = Stream::new(9);
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..TOTAL / buf.len() {
        stream.fill(&mut buf);
        want.update(&buf);
    }
    assert_eq!(got, want, "the whole transfer arrived");
    assert!(stopper.await.unwrap(), "drained within the grace period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_ends_connections_that_do_not() {
    let (server, _) = hold_backend("h").await;
    let p = proxy(&format!(
        "services:\n  - name: s\n    listen: 127.0.0.1:0\n    real_servers:\n      - address: \"{server}\"\n"
    ));
    let mut c = TcpStream::connect(vip(&p, "s")).await.unwrap();
    c.read_exact(&mut [0u8; 1]).await.unwrap();
    let start = std::time::Instant::now();
    assert!(!p.shutdown(Duration::from_millis(300)).await);
    assert!(start.elapsed() >= Duration::from_millis(300));
}
