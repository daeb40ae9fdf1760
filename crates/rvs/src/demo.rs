//! `rvs demo`: small HTTP backends that answer with their own name, and a
//! virtual service in front of them, so a new user sees balancing with curl.

use std::net::SocketAddr;
use std::time::Duration;

use rvs_proxy::admin::Admin;
use rvs_proxy::{Config, Options, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Answers every HTTP request on `stream` with `Hello from NAME`, keeping
/// the connection open between requests.
pub(crate) async fn http_backend_conn(mut stream: TcpStream, name: String) {
    let mut buf = vec![0u8; 8192];
    let mut have = 0;
    loop {
        let end = loop {
            if let Some(i) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if have == buf.len() {
                return;
            }
            match stream.read(&mut buf[have..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => have += n,
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let close = head.contains("connection: close");
        let body = format!("Hello from {name}\n");
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nServer: rvs-demo\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if stream.write_all(reply.as_bytes()).await.is_err() || close {
            return;
        }
        buf.copy_within(end..have, 0);
        have -= end;
    }
}

async fn http_backend(listener: TcpListener, name: String) {
    loop {
        if let Ok((s, _)) = listener.accept().await {
            tokio::spawn(http_backend_conn(s, name.clone()));
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Binds `preferred`, or any free port on the same address when it is taken.
async fn bind_near(preferred: SocketAddr) -> std::io::Result<TcpListener> {
    match TcpListener::bind(preferred).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind(SocketAddr::new(preferred.ip(), 0)).await,
    }
}

pub(crate) async fn run(
    listen: SocketAddr,
    admin: SocketAddr,
    scheduler: &str,
) -> Result<(), String> {
    let admin_listener = bind_near(admin)
        .await
        .map_err(|e| format!("cannot start the admin listener: {e}"))?;
    let admin = admin_listener.local_addr().map_err(|e| e.to_string())?;
    let mut backends = Vec::new();
    for i in 1..=3u16 {
        let l = bind_near(SocketAddr::new(listen.ip(), 18080 + i))
            .await
            .map_err(|e| format!("cannot start a demo backend: {e}"))?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        let name = format!("backend-{i}");
        tokio::spawn(http_backend(l, name.clone()));
        backends.push((name, addr));
    }
    let mut yaml = format!(
        "admin:\n  listen: \"{admin}\"\nservices:\n  - name: demo\n    listen: \"{listen}\"\n    scheduler: {scheduler}\n    real_servers:\n"
    );
    for (_, addr) in &backends {
        yaml.push_str(&format!("      - address: \"{addr}\"\n        weight: 1\n"));
    }
    let config = Config::parse(&yaml, "demo").map_err(|e| e.to_string())?;
    let proxy = Proxy::start(config, Options::default()).map_err(|e| e.to_string())?;
    let stop = CancellationToken::new();
    tokio::spawn(Admin::new(proxy.clone(), None).serve(admin_listener, stop.clone()));
    println!("rvs demo: three HTTP backends behind one virtual service ({scheduler}).\n");
    for (name, addr) in &backends {
        println!("  {name}  {addr}");
    }
    println!("  VIP        http://{listen}/\n");
    println!("The configuration it runs:\n\n{yaml}");
    println!("Try:\n\n  for i in 1 2 3 4 5 6; do curl -s http://{listen}/; done\n");
    println!("Each request is a new connection, and the answers rotate between the backends.\n");
    println!("The status page:  http://{admin}/");
    println!("The table:        rvsadm --admin {admin} -Ln --stats");
    println!("Prometheus:       curl -s http://{admin}/metrics\n");
    println!("Ctrl-C stops the demo.");
    let _ = tokio::signal::ctrl_c().await;
    proxy.shutdown(Duration::from_secs(1)).await;
    stop.cancel();
    Ok(())
}
