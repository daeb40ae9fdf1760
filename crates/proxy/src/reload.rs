//! Reloading the configuration file.
//!
//! A reload reads the file, checks it whole, and applies it
//! ([`crate::Proxy::apply`]); if either step fails the running
//! configuration stays in force and the failure is logged and kept in
//! [`ReloadStatus`]. Reloads come from:
//!
//! - a request ([`Reloader::reload`]), which the daemon makes on SIGHUP;
//! - the file changing: the file's directory is watched (inotify), so an
//!   atomic rename, an editor's save and a Kubernetes ConfigMap update,
//!   which swaps the `..data` symlink in the mounted directory, are all seen.
//!   A write that ended (the file closed after writing, renamed into place,
//!   created) is read once events have stopped for 10 ms, a burst
//!   taken as one; a write still in progress (data written, the file not yet
//!   closed) once they have stopped for 100 ms. Only changes to the file's
//!   name or to names starting with `..` (the ConfigMap's) count: not
//!   other files in the directory, and not opens and reads, which the
//!   watcher's own read of the file would otherwise answer with another
//!   read, forever;
//! - a check every 5 s, in case an event was missed (network filesystems).
//!
//! The watcher reloads only when the file's content changed.

use std::ffi::OsStr;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::Proxy;
use crate::config::Config;

/// What reloads did: for logs, metrics and the admin API.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    /// Reloads applied.
    pub succeeded: AtomicU64,
    /// Reloads refused (the running configuration stayed).
    pub failed: AtomicU64,
    /// Unix time of the last applied configuration (the start counts).
    pub last_success_unix: AtomicU64,
    /// Hash of the configuration file in force.
    pub config_hash: AtomicU64,
    /// Times the watcher read the file to see whether it changed.
    pub checks: AtomicU64,
    /// Binary upgrades (SIGUSR2) handed over to a new process.
    pub upgrades_ok: AtomicU64,
    /// Binary upgrades that failed (this process kept serving).
    pub upgrades_failed: AtomicU64,
    last_error: Mutex<Option<String>>,
    last_upgrade_error: Mutex<Option<String>>,
}

impl ReloadStatus {
    /// Why the last reload failed, if the last one did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Why the last failed binary upgrade failed.
    pub fn last_upgrade_error(&self) -> Option<String> {
        self.last_upgrade_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Counts a failed binary upgrade and keeps why.
    pub fn upgrade_failed(&self, why: String) {
        self.upgrades_failed.fetch_add(1, Relaxed);
        *self
            .last_upgrade_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(why);
    }

    fn set_error(&self, e: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = e;
    }
}

/// Hash of a file's content.
pub fn content_hash(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// Reloads one proxy from one file.
#[derive(Debug, Clone)]
pub struct Reloader {
    path: PathBuf,
    proxy: Proxy,
    status: Arc<ReloadStatus>,
    /// Serializes reloads (SIGHUP and the watcher may race).
    serial: Arc<tokio::sync::Mutex<()>>,
}

impl Reloader {
    /// A reloader of `proxy` from `path`, whose content `initial` is in force.
    pub fn new(path: &Path, proxy: Proxy, initial: &str) -> Reloader {
        let status = ReloadStatus::default();
        status.config_hash.store(content_hash(initial), Relaxed);
        status.last_success_unix.store(unix_now(), Relaxed);
        Reloader {
            path: path.to_path_buf(),
            proxy,
            status: Arc::new(status),
            serial: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The configuration file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What reloads did.
    pub fn status(&self) -> Arc<ReloadStatus> {
        Arc::clone(&self.status)
    }

    /// Reloads now. `Err` says why the running configuration stayed.
    pub async fn reload(&self) -> Result<(), String> {
        let _one = self.serial.lock().await;
        self.reload_locked(false).await
    }

    async fn reload_locked(&self, only_if_changed: bool) -> Result<(), String> {
        let r = self.read_and_apply(only_if_changed).await;
        crate::memory::release();
        r
    }

    async fn read_and_apply(&self, only_if_changed: bool) -> Result<(), String> {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(t) => t,
            Err(e) => return self.failed(format!("{}: {e}", self.path.display())),
        };
        let hash = content_hash(&text);
        if only_if_changed {
            self.status.checks.fetch_add(1, Relaxed);
        }
        if only_if_changed && hash == self.status.config_hash.load(Relaxed) {
            return Ok(());
        }
        // An empty file is what a reader sees in the middle of a write that
        // truncates first; applying it would close every service.
        if is_blank(&text) {
            return self.failed(format!(
                "{}: the file is empty (a write in progress?); to remove every service, write `services: []`",
                self.path.display()
            ));
        }
        // The parse is the reload's CPU (0.1 s at 1000 services × 20
        // servers): on a blocking thread, not on a worker that serves
        // connections meanwhile.
        let name = self.path.display().to_string();
        let parsed = tokio::task::spawn_blocking(move || Config::parse(&text, &name)).await;
        let mut config = match parsed {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return self.failed(e.to_string()),
            Err(e) => return self.failed(format!("the parse did not finish: {e}")),
        };
        // The admin listener stays where it is until a restart: the running
        // address is the one that decides whether edits need a token.
        let running = self.proxy.config().admin.listen;
        if config.admin.listen != running {
            warn!(
                running = %running,
                file = %config.admin.listen,
                "admin.listen changed: the admin listener moves at the next restart"
            );
            config.admin.listen = running;
        }
        let services = config.services.len();
        if let Err(e) = self.proxy.apply(config) {
            return self.failed(e.to_string());
        }
        self.status.config_hash.store(hash, Relaxed);
        self.status.succeeded.fetch_add(1, Relaxed);
        self.status.last_success_unix.store(unix_now(), Relaxed);
        self.status.set_error(None);
        info!(file = %self.path.display(), services, hash = format_args!("{hash:016x}"), "configuration reloaded");
        Ok(())
    }

    fn failed(&self, why: String) -> Result<(), String> {
        self.status.failed.fetch_add(1, Relaxed);
        error!(error = %why, "reload refused: the running configuration stays");
        self.status.set_error(Some(why.clone()));
        Err(why)
    }

    /// Watches the file and reloads when its content changes, until `stop`.
    pub async fn watch(self, stop: CancellationToken) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Change>();
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let name = self.path.file_name().unwrap_or_default().to_os_string();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // A watcher's error (a lost event, say) may hide a change.
            let change = match &event {
                Ok(e) => concerns(e, &name),
                Err(_) => Some(Change::InProgress),
            };
            if let Some(c) = change {
                let _ = tx.send(c);
            }
        });
        let _watcher = match watcher {
            Ok(mut w) => match w.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "cannot watch the configuration's directory: checking every 5s");
                    None
                }
            },
            Err(e) => {
                warn!(error = %e, "no file watcher: checking the configuration every 5s");
                None
            }
        };
        let mut poll = tokio::time::interval(Duration::from_secs(5));
        poll.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                got = rx.recv() => {
                    let Some(mut last) = got else {
                        return;
                    };
                    // Take a burst of events as one: read the file once
                    // events have stopped for a moment (longer while the
                    // last one says a write is still going on: it is not
                    // read half done), or after a bound however busy.
                    let began = tokio::time::Instant::now();
                    while began.elapsed() < QUIET_AT_MOST {
                        match tokio::time::timeout(last.settle(), rx.recv()).await {
                            Ok(Some(c)) => last = c,
                            Ok(None) => return,
                            Err(_) => break,
                        }
                    }
                }
                _ = poll.tick() => {}
            }
            let _one = self.serial.lock().await;
            let _ = self.reload_locked(true).await;
        }
    }
}

/// What an event says of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// A write ended: the file was closed after writing, renamed into
    /// place, created (a ConfigMap's link), or its mode changed.
    Done,
    /// Data was written to a file still open, the file was moved away or
    /// removed (a new one usually follows), or the watcher lost events.
    InProgress,
}

impl Change {
    /// How long events must stop after this one before the file is read.
    fn settle(self) -> Duration {
        match self {
            Change::Done => SETTLE,
            Change::InProgress => QUIET,
        }
    }
}

/// After a write that ended: time for the rest of its burst (a ConfigMap
/// update is several renames, an editor's save a rename and a chmod).
const SETTLE: Duration = Duration::from_millis(10);
/// After data written to a file still open: how long the file must go
/// without a change before the watcher reads it.
const QUIET: Duration = Duration::from_millis(100);
/// A file that never stops changing is read after this long all the same.
const QUIET_AT_MOST: Duration = Duration::from_secs(5);

/// Whether a configuration's text holds nothing but blanks and comments.
fn is_blank(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#'))
}

/// Whether an event in the configuration's directory may have changed
/// the configuration, and whether the change is complete: a change, not an
/// open or a read, of the file's own name or of a name starting with `..`
/// (a ConfigMap's `..data` symlink and versioned directories).
fn concerns(event: &notify::Event, name: &OsStr) -> Option<Change> {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    let change = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Change::Done,
        EventKind::Access(_) => return None,
        EventKind::Create(_) => Change::Done,
        // Moved away or removed: a new file usually follows.
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
            Change::InProgress
        }
        EventKind::Modify(ModifyKind::Name(_) | ModifyKind::Metadata(_)) => Change::Done,
        EventKind::Modify(_) | EventKind::Any | EventKind::Other => Change::InProgress,
    };
    let ours = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n == name || n.as_encoded_bytes().starts_with(b".."))
    };
    // No path: a rescan after lost events.
    if event.paths.is_empty() {
        return Some(Change::InProgress);
    }
    event.paths.iter().any(|p| ours(p)).then_some(change)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, ModifyKind, RemoveKind, RenameMode,
    };
    use notify::{Event, EventKind};

    use super::*;

    fn ev(kind: EventKind, paths: &[&str]) -> Event {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    #[test]
    fn changes_to_the_file_or_a_configmap_name_concern_the_watcher() {
        let name = OsStr::new("rvs.yaml");
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        let written = EventKind::Access(AccessKind::Close(AccessMode::Write));
        let done = Some(Change::Done);
        assert_eq!(concerns(&ev(written, &["/etc/rvs/rvs.yaml"]), name), done);
        assert_eq!(
            concerns(
                &ev(rename, &["/etc/rvs/.rvs.yaml.swp", "/etc/rvs/rvs.yaml"]),
                name
            ),
            done
        );
        assert_eq!(
            concerns(
                &ev(EventKind::Create(CreateKind::Any), &["/etc/rvs/..data"]),
                name
            ),
            done
        );
        assert_eq!(
            concerns(&ev(EventKind::Other, &[]), name),
            Some(Change::InProgress),
            "a rescan"
        );
    }

    #[test]
    fn a_write_still_going_on_waits_longer_than_one_that_ended() {
        let name = OsStr::new("rvs.yaml");
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Content));
        let away = EventKind::Modify(ModifyKind::Name(RenameMode::From));
        let removed = EventKind::Remove(RemoveKind::File);
        for kind in [data, away, removed] {
            assert_eq!(
                concerns(&ev(kind, &["/etc/rvs/rvs.yaml"]), name),
                Some(Change::InProgress),
                "{kind:?}"
            );
        }
        assert!(Change::InProgress.settle() > Change::Done.settle());
    }

    #[test]
    fn reads_and_other_files_do_not_concern_the_watcher() {
        let name = OsStr::new("rvs.yaml");
        let opened = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        assert_eq!(concerns(&ev(opened, &["/etc/rvs/rvs.yaml"]), name), None);
        assert_eq!(concerns(&ev(read, &["/etc/rvs/rvs.yaml"]), name), None);
        let modified = EventKind::Modify(ModifyKind::Any);
        assert_eq!(
            concerns(&ev(modified, &["/etc/rvs/access.log"]), name),
            None
        );
        assert_eq!(
            concerns(&ev(modified, &["/etc/rvs/rvs.yaml.bak"]), name),
            None
        );
    }
}
