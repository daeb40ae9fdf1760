//! A binary upgrade's two ends (nginx's SIGUSR2): the running rvs starts
//! the binary at its path again, handing over every listening socket by
//! the socket-activation protocol (`LISTEN_FDS`, `LISTEN_FDNAMES`: the one
//! adoption path, [`crate::inherited`]), and waits until the new process
//! says it serves; only then does it stop accepting and drain.
//!
//! The new process finds the old one by `RVS_UPGRADE_PID` (its parent: it
//! takes the sockets without `LISTEN_PID`, which the parent cannot know
//! before the fork, only when its parent is that process) and says it is
//! ready by writing `READY` to the pipe `RVS_UPGRADE_READY_FD` names. A
//! new process that exits, or closes the pipe without a word, has failed:
//! the old one goes on serving.
//!
//! The listening sockets are half of what the old process holds: its UDP
//! sessions (each with its upstream socket) and its persistence templates
//! go over a third descriptor, the state channel `RVS_UPGRADE_STATE_FD`
//! names ([`channel`], in the messages of [`wire`]), so that every flow
//! keeps its real server and its upstream address. The new process binds
//! everything, serves nothing yet, and says `hello` there; the old one
//! stops accepting and reading, sends what it holds (with its health
//! verdicts, so that the new one starts from them), and the new one
//! adopts it, starts serving, and says `READY`.
//!
//! One of the crate's `unsafe` modules: descriptors are placed at 3, 4, …
//! in the child between fork and exec (dup2(2), async-signal-safe), and
//! the new process owns the pipe's descriptor by its number.

#![allow(unsafe_code)]

pub mod channel;
pub mod wire;

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

/// The variable naming the process that hands its sockets over.
pub const UPGRADE_PID: &str = "RVS_UPGRADE_PID";
/// The variable naming the descriptor the new process says `READY` on.
pub const READY_FD: &str = "RVS_UPGRADE_READY_FD";
/// The variable naming the state channel's descriptor.
pub const STATE_FD: &str = "RVS_UPGRADE_STATE_FD";

/// The new process, as the old one sees it while the upgrade runs.
#[derive(Debug)]
pub struct Spawned {
    /// The process.
    pub child: Child,
    /// The pipe it says `READY` on.
    pub ready: OwnedFd,
    /// The state channel's old end.
    pub state: channel::Channel,
}

/// A UDP session handed over: its state and its upstream socket.
pub type HandedSession = (wire::SessionState, OwnedFd);

/// What the old process hands over besides its sockets.
#[derive(Debug, Default)]
pub struct State {
    /// Its checked real servers' health.
    pub health: Vec<wire::HealthState>,
    /// Its persistence templates.
    pub templates: Vec<wire::TemplateState>,
    /// Its UDP sessions.
    pub sessions: Vec<HandedSession>,
}

impl State {
    /// In the old process: sends it all, in batches, then the end.
    pub fn send(&self, to: &channel::Channel) -> io::Result<()> {
        use std::os::fd::AsFd;
        for batch in self.health.chunks(wire::TEMPLATES_PER_MESSAGE) {
            let msg = wire::Message::Health {
                servers: batch.to_vec(),
            };
            to.send(&msg, &[])?;
        }
        for batch in self.templates.chunks(wire::TEMPLATES_PER_MESSAGE) {
            let msg = wire::Message::Templates {
                templates: batch.to_vec(),
            };
            to.send(&msg, &[])?;
        }
        for batch in self.sessions.chunks(wire::SESSIONS_PER_MESSAGE) {
            let msg = wire::Message::Sessions {
                sessions: batch.iter().map(|(s, _)| s.clone()).collect(),
            };
            let fds: Vec<_> = batch.iter().map(|(_, fd)| fd.as_fd()).collect();
            to.send(&msg, &fds)?;
        }
        to.send(
            &wire::Message::End {
                templates: self.templates.len(),
                sessions: self.sessions.len(),
            },
            &[],
        )
    }

    /// In the new process: says hello on `from`, then reads the state
    /// until its end. What arrived is kept when the exchange breaks off,
    /// with the reason it did.
    pub fn receive(from: &channel::Channel) -> (State, Option<io::Error>) {
        let mut state = State::default();
        let hello = wire::Message::Hello {
            version: wire::VERSION,
        };
        if let Err(e) = from.send(&hello, &[]) {
            return (state, Some(e));
        }
        let mut buf = Vec::new();
        loop {
            match from.recv(&mut buf) {
                Ok(Some((wire::Message::Health { servers }, _))) => {
                    state.health.extend(servers);
                }
                Ok(Some((wire::Message::Templates { templates }, _))) => {
                    state.templates.extend(templates);
                }
                Ok(Some((wire::Message::Sessions { sessions }, fds))) => {
                    state.sessions.extend(sessions.into_iter().zip(fds));
                }
                Ok(Some((wire::Message::End { .. }, _))) => return (state, None),
                Ok(Some(_)) => {}
                Ok(None) => {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the process before closed the state channel before its end",
                    );
                    return (state, Some(e));
                }
                Err(e) => return (state, Some(e)),
            }
        }
    }
}

/// In the new process: what the old one handed over besides the sockets.
#[derive(Debug)]
pub struct Upgrade {
    /// The old process's pid.
    pub old_pid: u32,
    /// The pipe to say `READY` on.
    pub ready: OwnedFd,
    /// The state channel, when the old process has one (an rvs before it
    /// had none).
    pub state: Option<OwnedFd>,
}

/// Starts `exe` with `args`, handing it `sockets` (a name each, for
/// `LISTEN_FDNAMES`) at descriptors 3 and up, then the write end of a
/// pipe and the new end of the state channel.
pub fn spawn(exe: &Path, args: &[OsString], sockets: &[(String, OwnedFd)]) -> io::Result<Spawned> {
    use rustix::io::fcntl_dupfd_cloexec;
    let n = sockets.len();
    let (ready_read, ready_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let (state, state_child) = channel::pair()?;
    // The sources sit above every target, so that placing one never
    // overwrites another not yet placed.
    let floor = RawFd::try_from(3 + n + 2).unwrap_or(RawFd::MAX);
    let mut sources = Vec::with_capacity(n + 2);
    for (_, fd) in sockets {
        sources.push(fcntl_dupfd_cloexec(fd, floor)?);
    }
    sources.push(fcntl_dupfd_cloexec(&ready_write, floor)?);
    sources.push(fcntl_dupfd_cloexec(&state_child, floor)?);
    drop(ready_write);
    drop(state_child);
    let raw: Vec<RawFd> = sources.iter().map(AsRawFd::as_raw_fd).collect();
    let names: Vec<&str> = sockets.iter().map(|(name, _)| name.as_str()).collect();
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("LISTEN_FDS", n.to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env_remove("LISTEN_PID")
        .env(UPGRADE_PID, std::process::id().to_string())
        .env(READY_FD, (3 + n).to_string())
        .env(STATE_FD, (3 + n + 1).to_string());
    // systemd's watchdog, when it watches this process: the new one feeds
    // it once it is the service's main process. Its pid cannot be named
    // before the fork, and WATCHDOG_USEC without WATCHDOG_PID means "you".
    if let Ok(watched) = std::env::var("WATCHDOG_PID") {
        cmd.env_remove("WATCHDOG_PID");
        if watched.trim() != std::process::id().to_string() {
            cmd.env_remove("WATCHDOG_USEC");
        }
    }
    // SAFETY: runs in the child between fork and exec, and calls only
    // dup2(2), which is async-signal-safe; `raw` was built before the fork
    // and is only read. dup2 leaves the targets without close-on-exec, the
    // sources keep it (they close at exec).
    unsafe {
        cmd.pre_exec(move || {
            for (i, fd) in raw.iter().enumerate() {
                let target = 3 + i as RawFd;
                if libc::dup2(*fd, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    // The child has its copies; the write end must close here, or the
    // child's exit would never read as end of file.
    drop(sources);
    Ok(Spawned {
        child,
        ready: ready_read,
        state,
    })
}

/// In the old process: waits up to `limit` for the new one to say hello
/// on the state channel. `Ok(false)` when it closed the channel or exited
/// first (a failed start; or an rvs before the state channel, which says
/// `READY` without it).
pub fn wait_hello(state: &channel::Channel, limit: Duration) -> io::Result<bool> {
    state.set_limit(limit)?;
    let mut buf = Vec::new();
    loop {
        match state.recv(&mut buf)? {
            None => return Ok(false),
            Some((wire::Message::Hello { version }, _)) => {
                tracing::debug!(version, "upgrade: the new process asks for the state");
                return Ok(true);
            }
            Some(_) => {}
        }
    }
}

/// Waits up to `limit` for the new process to say `READY` on `ready`.
/// `Err` says why it did not (it exited, or closed the pipe, or took too
/// long).
pub async fn wait_ready(ready: OwnedFd, limit: Duration) -> Result<(), String> {
    let read = tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::from(ready);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.ends_with(b"\n") {
                        return got;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return got,
            }
        }
    });
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(got)) if got == b"READY\n" => Ok(()),
        Ok(Ok(_)) => Err("the new process ended before it served".into()),
        Ok(Err(e)) => Err(format!("waiting for the new process: {e}")),
        Err(_) => Err(format!("the new process was not ready within {limit:?}")),
    }
}

/// In the new process: the pipe to say `READY` on and the state channel,
/// when a running rvs started this one to take over, and the old
/// process's pid. Read before the runtime opens any descriptor (as
/// [`crate::inherited`]).
pub fn from_env() -> Option<Upgrade> {
    let old: u32 = std::env::var(UPGRADE_PID).ok()?.parse().ok()?;
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(old as i32) {
        return None;
    }
    let ready = own_from_env(READY_FD)?;
    Some(Upgrade {
        old_pid: old,
        ready,
        state: own_from_env(STATE_FD),
    })
}

/// Owns the descriptor `var` names, close-on-exec.
fn own_from_env(var: &str) -> Option<OwnedFd> {
    let fd: RawFd = std::env::var(var).ok()?.parse().ok()?;
    if fd < 3 {
        return None;
    }
    // SAFETY: the old process placed this descriptor at this number for
    // this process (its child: checked by the caller); it is read once,
    // before this process opens a descriptor of its own.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = rustix::io::fcntl_getfd(borrowed).ok()?;
    // SAFETY: as above; nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&owned, flags | rustix::io::FdFlags::CLOEXEC).ok()?;
    Some(owned)
}

/// Says `READY` to the old process.
pub fn say_ready(pipe: OwnedFd) -> io::Result<()> {
    std::fs::File::from(pipe).write_all(b"READY\n")
}
