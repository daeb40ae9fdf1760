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
//! One of the crate's `unsafe` modules: descriptors are placed at 3, 4, …
//! in the child between fork and exec (dup2(2), async-signal-safe), and
//! the new process owns the pipe's descriptor by its number.

#![allow(unsafe_code)]

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

/// Starts `exe` with `args`, handing it `sockets` (a name each, for
/// `LISTEN_FDNAMES`) at descriptors 3 and up, and the write end of a
/// pipe after them. Returns the child and the pipe's read end.
pub fn spawn(
    exe: &Path,
    args: &[OsString],
    sockets: &[(String, OwnedFd)],
) -> io::Result<(Child, OwnedFd)> {
    use rustix::io::fcntl_dupfd_cloexec;
    let n = sockets.len();
    let (ready_read, ready_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // The sources sit above every target, so that placing one never
    // overwrites another not yet placed.
    let floor = RawFd::try_from(3 + n + 1).unwrap_or(RawFd::MAX);
    let mut sources = Vec::with_capacity(n + 1);
    for (_, fd) in sockets {
        sources.push(fcntl_dupfd_cloexec(fd, floor)?);
    }
    sources.push(fcntl_dupfd_cloexec(&ready_write, floor)?);
    drop(ready_write);
    let raw: Vec<RawFd> = sources.iter().map(AsRawFd::as_raw_fd).collect();
    let names: Vec<&str> = sockets.iter().map(|(name, _)| name.as_str()).collect();
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env("LISTEN_FDS", n.to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env_remove("LISTEN_PID")
        .env(UPGRADE_PID, std::process::id().to_string())
        .env(READY_FD, (3 + n).to_string());
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
    Ok((child, ready_read))
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

/// In the new process: the pipe to say `READY` on, when a running rvs
/// started this one to take over, and the old process's pid. Read before
/// the runtime opens any descriptor (as [`crate::inherited`]).
pub fn ready_pipe_from_env() -> Option<(u32, OwnedFd)> {
    let old: u32 = std::env::var(UPGRADE_PID).ok()?.parse().ok()?;
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(old as i32) {
        return None;
    }
    let fd: RawFd = std::env::var(READY_FD).ok()?.parse().ok()?;
    // SAFETY: the old process placed the pipe's write end at this number
    // for this process (its child: checked above); it is read once,
    // before this process opens a descriptor of its own.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = rustix::io::fcntl_getfd(borrowed).ok()?;
    // SAFETY: as above; nothing else owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&owned, flags | rustix::io::FdFlags::CLOEXEC).ok()?;
    Some((old, owned))
}

/// Says `READY` to the old process.
pub fn say_ready(pipe: OwnedFd) -> io::Result<()> {
    std::fs::File::from(pipe).write_all(b"READY\n")
}
