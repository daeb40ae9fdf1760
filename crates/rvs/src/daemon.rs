//! `rvs run -c FILE` and `rvs check -c FILE`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use rvs_proxy::admin::Admin;
use rvs_proxy::reload::Reloader;
use rvs_proxy::{Config, Options, Proxy};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Reads and checks the configuration, printing what is wrong.
fn load(path: &Path) -> Result<(String, Config), ExitCode> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return Err(ExitCode::FAILURE);
        }
    };
    match Config::parse(&text, &path.display().to_string()) {
        Ok(c) => Ok((text, c)),
        Err(e) => {
            eprintln!("{e}");
            Err(ExitCode::FAILURE)
        }
    }
}

pub(crate) fn check(path: &Path) -> ExitCode {
    match load(path) {
        Ok((_, c)) => {
            let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
            println!(
                "{}: ok, {} service{}{}",
                path.display(),
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                if names.is_empty() {
                    String::new()
                } else {
                    format!(": {}", names.join(", "))
                }
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The admin address, bound but not yet listening.
fn bind_admin(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std's and tokio's listeners: a restart need not wait for the
    // TIME_WAIT connections of the last one.
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

fn listen_admin(s: socket2::Socket) -> std::io::Result<tokio::net::TcpListener> {
    s.listen(1024)?;
    tokio::net::TcpListener::from_std(s.into())
}

fn admin_failed(addr: SocketAddr, e: &std::io::Error) -> ExitCode {
    error!(listen = %addr, error = %e, "cannot start the admin listener");
    eprintln!("rvs: admin.listen {addr}: {e}");
    ExitCode::FAILURE
}

pub(crate) async fn run(path: &Path, options: Options) -> ExitCode {
    let (text, config) = match load(path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let services = config.services.len();
    let admin_addr = config.admin.listen;
    // The admin address is bound first: a port taken there stops the start
    // before any service listens. It listens only once the services do, so
    // that a connection to it (a TCP readiness probe) means rvs serves.
    let admin_socket = match bind_admin(admin_addr) {
        Ok(s) => s,
        Err(e) => return admin_failed(admin_addr, &e),
    };
    let proxy = match Proxy::start(config, options) {
        Ok(p) => p,
        Err(e) => {
            error!(error = %e, "cannot start");
            eprintln!("rvs: {e}");
            return ExitCode::FAILURE;
        }
    };
    let admin_listener = match listen_admin(admin_socket) {
        Ok(l) => l,
        Err(e) => return admin_failed(admin_addr, &e),
    };
    let (mut hup, mut term, mut int) = match (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(h), Ok(t), Ok(i)) => (h, t, i),
        _ => {
            eprintln!("rvs: cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let reloader = Reloader::new(path, proxy.clone(), &text);
    let stop = CancellationToken::new();
    tokio::spawn(reloader.clone().watch(stop.clone()));
    let admin_stop = CancellationToken::new();
    let admin = Admin::new(proxy.clone(), Some(reloader.clone()));
    let admin_local = admin_listener.local_addr().unwrap_or(admin_addr);
    tokio::spawn(admin.serve(admin_listener, admin_stop.clone()));
    info!(file = %path.display(), services, admin = %admin_local, "rvs running");
    loop {
        tokio::select! {
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                let _ = reloader.reload().await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    stop.cancel();
    let grace = proxy.config().global.shutdown_grace;
    info!(grace = ?grace, "shutting down: no new connections, draining open ones");
    if proxy.shutdown(grace).await {
        info!("all connections closed");
    } else {
        warn!("grace period over: closing the connections still open");
    }
    admin_stop.cancel();
    ExitCode::SUCCESS
}
