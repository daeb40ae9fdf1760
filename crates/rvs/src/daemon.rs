//! `rvs run -c FILE` and `rvs check -c FILE`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use rvs_proxy::admin::Admin;
use rvs_proxy::config::Proto;
use rvs_proxy::reload::Reloader;
use rvs_proxy::{Config, Inherited, Options, Proxy};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::systemd::Notifier;

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
            let entries: usize = c.services.iter().map(|s| s.discovery.len()).sum();
            if entries > 0 {
                println!(
                    "{entries} dns/srv entr{} checked, not resolved: `rvs run` resolves them (and starts even when they do not resolve yet)",
                    if entries == 1 { "y" } else { "ies" }
                );
            }
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The admin address, bound but not yet listening (or the listening
/// socket the service manager passed for it).
fn bind_admin(addr: SocketAddr, inherited: &Inherited) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    if let Some(passed) = inherited.take(Proto::Tcp, addr) {
        info!(listen = %addr, "admin: adopting the socket passed by the service manager");
        return passed;
    }
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

/// The `STATUS=` of a running rvs.
fn serving(proxy: &Proxy) -> String {
    let n = proxy.config().services.len();
    format!("serving {n} service{}", if n == 1 { "" } else { "s" })
}

fn admin_failed(addr: SocketAddr, e: &std::io::Error) -> ExitCode {
    error!(listen = %addr, error = %e, "cannot start the admin listener");
    eprintln!("rvs: admin.listen {addr}: {e}");
    ExitCode::FAILURE
}

pub(crate) async fn run(
    path: &Path,
    options: Options,
    inherited: Inherited,
    notifier: Notifier,
) -> ExitCode {
    let (text, config) = match load(path) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let services = config.services.len();
    let admin_addr = config.admin.listen;
    // The admin address is bound first: a port taken there stops the start
    // before any service listens. It listens only once the services do, so
    // that a connection to it (a TCP readiness probe) means rvs serves.
    let inherited = Arc::new(inherited);
    let notifier = Arc::new(notifier);
    let admin_socket = match bind_admin(admin_addr, &inherited) {
        Ok(s) => s,
        Err(e) => return admin_failed(admin_addr, &e),
    };
    let proxy = match Proxy::start_with(config, options, Arc::clone(&inherited)) {
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
    for s in inherited.unused() {
        warn!(proto = %s.proto, listen = %s.addr, name = %s.name, "a socket passed by the service manager matches no service: connections to it wait until a reload configures its address");
    }
    info!(file = %path.display(), services, admin = %admin_local, "rvs running");
    notifier.ready(&serving(&proxy));
    if let Some(every) = notifier.watchdog_every() {
        let notifier = Arc::clone(&notifier);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => notifier.alive(),
                }
            }
        });
    }
    loop {
        tokio::select! {
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                notifier.reloading();
                let status = match reloader.reload().await {
                    Ok(()) => serving(&proxy),
                    Err(e) => format!("{}; reload refused: {e}", serving(&proxy)),
                };
                notifier.reloaded(&status);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    stop.cancel();
    let grace = proxy.config().global.shutdown_grace;
    notifier.stopping(&format!("draining open connections (up to {grace:?})"));
    info!(grace = ?grace, "shutting down: no new connections, draining open ones");
    if proxy.shutdown(grace).await {
        info!("all connections closed");
    } else {
        warn!("grace period over: closing the connections still open");
    }
    admin_stop.cancel();
    ExitCode::SUCCESS
}
