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
                match names.len() {
                    0 => String::new(),
                    n if n <= 20 => format!(": {}", names.join(", ")),
                    n => format!(": {}, and {} more", names[..20].join(", "), n - 20),
                }
            );
            let entries: usize = c.services.iter().map(|s| s.discovery.len()).sum();
            if entries > 0 {
                println!(
                    "{entries} dns/srv entr{} checked, not resolved: `rvs run` resolves them (and starts even when they do not resolve yet)",
                    if entries == 1 { "y" } else { "ies" }
                );
            }
            let absent: std::collections::BTreeSet<std::net::IpAddr> = c
                .services
                .iter()
                .flat_map(|s| s.listen.iter().map(SocketAddr::ip))
                .filter(|ip| !rvs_proxy::local_addrs::is_local(*ip))
                .collect();
            // What `rvs run` will have: the hard limit, to which it raises
            // its soft one.
            let plan = rvs_proxy::fds::Plan::new(
                rvs_proxy::fds::hard_limit(),
                &c,
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            );
            for w in plan.warnings(&c) {
                println!("warning: {w}");
            }
            if !absent.is_empty() {
                let list: Vec<String> = absent.iter().map(ToString::to_string).collect();
                println!(
                    "not on this host: {}: `rvs run` listens on {} anyway and serves {} when {} (VRRP, MetalLB, kube-vip)",
                    list.join(", "),
                    if list.len() == 1 { "it" } else { "them" },
                    if list.len() == 1 { "it" } else { "them" },
                    if list.len() == 1 {
                        "it arrives"
                    } else {
                        "they arrive"
                    },
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

/// What the daemon knows of its own process.
#[derive(Debug)]
pub(crate) struct Process {
    /// `--pid-file`.
    pub(crate) pid_file: Option<std::path::PathBuf>,
    /// The process that started this one to take over, the pipe to tell
    /// it this one serves, and the channel its state comes on.
    pub(crate) upgrade_from: Option<rvs_proxy::handover::Upgrade>,
    /// The binary's path as started, run again on SIGUSR2.
    pub(crate) exe: Option<std::path::PathBuf>,
    /// The arguments it was started with.
    pub(crate) args: Vec<std::ffi::OsString>,
}

/// How long a new binary may take to serve before the upgrade is given up.
const UPGRADE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// SIGUSR2: starts the binary again with every listening socket (and the
/// admin listener), and waits until it serves. `Ok` is its pid.
async fn upgrade(proxy: &Proxy, admin: &socket2::Socket, process: &Process) -> Result<u32, String> {
    let exe = process
        .exe
        .as_deref()
        .ok_or("the binary's path is unknown")?;
    let mut sockets: Vec<(String, std::os::fd::OwnedFd)> = Vec::new();
    for (proto, addr, fd) in proxy
        .listening_sockets()
        .map_err(|e| format!("duplicating the listening sockets: {e}"))?
    {
        sockets.push((format!("{proto}-{addr}").replace(':', "_"), fd));
    }
    let admin = admin
        .try_clone()
        .map_err(|e| format!("duplicating the admin socket: {e}"))?;
    sockets.push(("admin".to_owned(), std::os::fd::OwnedFd::from(admin)));
    let spawned = rvs_proxy::handover::spawn(exe, &process.args, &sockets)
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    let handed = sockets.len();
    drop(sockets);
    let mut child = spawned.child;
    let pid = child.id();
    info!(pid, binary = %exe.display(), sockets = handed, "upgrade: started the new binary with the listening sockets");
    let ready = rvs_proxy::handover::wait_ready(spawned.ready, UPGRADE_WAIT);
    tokio::pin!(ready);
    let state = spawned.state;
    let hello = tokio::task::spawn_blocking(move || {
        let asked = rvs_proxy::handover::wait_hello(&state, UPGRADE_WAIT);
        (state, asked)
    });
    // The new process asks for the state once it is bound, serves once it
    // adopted it, and says READY then. One that says READY without asking
    // is an rvs from before the state channel.
    let mut stopped = false;
    let result = tokio::select! {
        r = &mut ready => r,
        asked = hello => match asked {
            Ok((state, Ok(true))) => {
                let held = proxy.hand_over_state().await;
                stopped = true;
                let (templates, sessions) = (held.templates.len(), held.sessions.len());
                let sent = tokio::task::spawn_blocking(move || held.send(&state)).await;
                match sent {
                    Ok(Ok(())) => info!(pid, templates, udp_sessions = sessions, "upgrade: stopped serving and handed the state over"),
                    Ok(Err(e)) => warn!(pid, error = %e, "upgrade: the state was not all handed over"),
                    Err(e) => warn!(pid, error = %e, "upgrade: handing the state over failed"),
                }
                ready.await
            }
            Ok((_, Ok(false))) => ready.await,
            Ok((_, Err(e))) => {
                warn!(pid, error = %e, "upgrade: the new process did not ask for the state");
                ready.await
            }
            Err(e) => Err(format!("waiting for the new process: {e}")),
        },
    };
    match result {
        Ok(()) => Ok(pid),
        Err(why) => {
            let _ = child.kill();
            let status = child
                .wait()
                .map_or_else(|e| e.to_string(), |s| s.to_string());
            if stopped {
                // It failed after this one stopped: serve again.
                proxy.resume();
            }
            Err(format!("{why} ({status})"))
        }
    }
}

/// How long a new process waits for the old one's state, each message.
const STATE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// In a binary upgrade's new process: asks the old one for its state on
/// `channel` and adopts what comes, before serving.
async fn take_over(proxy: &Proxy, channel: std::os::fd::OwnedFd, old: u32) {
    use rvs_proxy::handover::{State, channel::Channel};
    let got = tokio::task::spawn_blocking(move || match Channel::new(channel, STATE_WAIT) {
        Ok(c) => State::receive(&c),
        Err(e) => (State::default(), Some(e)),
    })
    .await;
    let (state, broke) = match got {
        Ok(x) => x,
        Err(e) => {
            warn!(old_pid = old, error = %e, "upgrade: receiving the state of the process before failed");
            return;
        }
    };
    if let Some(e) = broke {
        warn!(old_pid = old, error = %e, "upgrade: the state of the process before came incomplete: what came is used");
    }
    let took = proxy.take_over(state);
    info!(
        old_pid = old,
        health = took.health,
        templates = took.templates,
        templates_not_taken = took.templates_dropped,
        udp_sessions = took.sessions,
        udp_sessions_not_taken = took.sessions_dropped,
        "upgrade: took over the health verdicts, persistence templates and UDP sessions of the process before"
    );
}

/// Writes `pid` to the pid file, atomically.
fn write_pid_file(path: &Path, pid: u32) {
    let tmp = path.with_extension("tmp-rvs");
    let r = std::fs::write(&tmp, format!("{pid}\n")).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        warn!(file = %path.display(), error = %e, "cannot write the pid file");
    }
}

pub(crate) async fn run(
    path: &Path,
    options: Options,
    inherited: Inherited,
    notifier: Notifier,
    mut process: Process,
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
    let proxy = match Proxy::start_held(config, options, Arc::clone(&inherited)) {
        Ok(p) => p,
        Err(e) => {
            error!(error = %e, "cannot start");
            eprintln!("rvs: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A binary upgrade's new process: bound, not yet serving; the old
    // one's templates and UDP sessions first.
    if let Some(up) = &mut process.upgrade_from
        && let Some(channel) = up.state.take()
    {
        take_over(&proxy, channel, up.old_pid).await;
    }
    proxy.open();
    // Kept to hand over on SIGUSR2 (the listener's own closes with it).
    let admin_handover = match admin_socket.try_clone() {
        Ok(s) => s,
        Err(e) => return admin_failed(admin_addr, &e),
    };
    let admin_listener = match listen_admin(admin_socket) {
        Ok(l) => l,
        Err(e) => return admin_failed(admin_addr, &e),
    };
    let (mut hup, mut term, mut int, mut usr2) = match (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined2()),
    ) {
        (Ok(h), Ok(t), Ok(i), Ok(u)) => (h, t, i, u),
        _ => {
            eprintln!("rvs: cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    let reloader = Reloader::new(path, proxy.clone(), &text);
    let mut handed_to: Option<u32> = None;
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
    if let Some(up) = process.upgrade_from.take() {
        let old = up.old_pid;
        match rvs_proxy::handover::say_ready(up.ready) {
            Ok(()) => info!(
                old_pid = old,
                "upgrade: took over from the process before, which drains"
            ),
            Err(e) => {
                warn!(old_pid = old, error = %e, "upgrade: cannot tell the process before that this one serves")
            }
        }
    }
    if let Some(f) = &process.pid_file {
        write_pid_file(f, std::process::id());
    }
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
            _ = usr2.recv() => {
                if std::process::id() == 1 {
                    // The container would end with its PID 1.
                    warn!("SIGUSR2 ignored: rvs is PID 1 (a container); an upgrade there is a new image rolled out by the platform");
                    continue;
                }
                info!("SIGUSR2: upgrading to the binary at the same path");
                match upgrade(&proxy, &admin_handover, &process).await {
                    Ok(pid) => {
                        info!(new_pid = pid, "upgrade: the new process serves; this one stops accepting and drains");
                        reloader.status().upgrades_ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        notifier.main_pid(pid);
                        handed_to = Some(pid);
                        break;
                    }
                    Err(e) => {
                        error!(error = %e, "upgrade failed: this process keeps serving");
                        reloader.status().upgrade_failed(e);
                    }
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    stop.cancel();
    let grace = proxy.config().global.shutdown_grace;
    if handed_to.is_some() {
        // The next process accepts on the same sockets now.
        proxy.handed_over();
        admin_stop.cancel();
    } else {
        notifier.stopping(&format!("draining open connections (up to {grace:?})"));
    }
    info!(grace = ?grace, "shutting down: no new connections, draining open ones");
    if proxy.shutdown(grace).await {
        info!("all connections closed");
    } else {
        warn!("grace period over: closing the connections still open");
    }
    admin_stop.cancel();
    if let Some(f) = &process.pid_file
        && handed_to.is_none()
        && std::fs::read_to_string(f).is_ok_and(|t| t.trim() == std::process::id().to_string())
    {
        let _ = std::fs::remove_file(f);
    }
    ExitCode::SUCCESS
}
