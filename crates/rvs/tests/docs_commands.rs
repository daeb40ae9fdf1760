//! The README's quick start, exactly as written: every line of its `sh`
//! blocks before "Run the tests", in order, in a fresh copy of the
//! checkout (its tracked and new files, nothing built), with the
//! environment of a new user's shell (no cargo variables of this test).
//! A line that keeps running (the demo, `rvs run`) passes when it listens
//! and stays up, and keeps running, as in the reader's other terminal,
//! until the next such line starts (the reader stops the demo before
//! running their own file); every other line must exit 0.
//!
//! docs/deploy.md's commands are accounted for line by line in
//! `every_deploy_command_is_run_somewhere_or_says_why_not`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{doc_commands, report, root};
use std::collections::HashSet;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A build from nothing on a loaded two-core machine takes minutes.
const LINE_LIMIT: Duration = Duration::from_secs(40 * 60);
/// A listening line must stay up this long after it listens.
const STAYS_UP: Duration = Duration::from_secs(2);

/// The socket inodes of the TCP sockets listening in this network
/// namespace.
fn listening_inodes() -> HashSet<u64> {
    let mut set = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9
                && f[3] == "0A"
                && let Ok(inode) = f[9].parse()
            {
                set.insert(inode);
            }
        }
    }
    set
}

/// The processes of process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // pid (comm) state ppid pgrp ...: comm may hold spaces.
                    let after = s.rsplit_once(')')?.1.to_owned();
                    after.split_whitespace().nth(2)?.parse::<u32>().ok()
                })
                == Some(pgid)
        })
        .collect()
}

/// Whether a process of group `pgid` holds a listening TCP socket.
fn group_listens(pgid: u32) -> bool {
    let listening = listening_inodes();
    group_members(pgid).into_iter().any(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter_map(|l| {
                let l = l.to_str()?.to_owned();
                l.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse::<u64>()
                    .ok()
            })
            .any(|inode| listening.contains(&inode))
    })
}

/// A line left running: its process group, interrupted (as by Ctrl-C)
/// and then killed when dropped.
struct Running {
    line: String,
    child: Child,
}

impl Running {
    fn stop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-INT", "--", &group])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Outcome {
    /// Exited 0, with this output.
    Exited(String),
    /// Listens and stays up.
    Listening(Running),
}

fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// A new user's shell in `dir`: the variables cargo sets for this test
/// removed, the rest of the environment (PATH, HOME, where rustup and
/// cargo live) kept.
fn shell(dir: &Path, line: &str, log: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(line).current_dir(dir);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let users_own = k == "CARGO_HOME" || k == "RUSTUP_HOME";
        if (k.starts_with("CARGO") || k.starts_with("RUST")) && !users_own {
            cmd.env_remove(&k);
        }
    }
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0);
    cmd
}

fn run_line(dir: &Path, line: &str, log: &Path) -> Result<Outcome, String> {
    let mut child = shell(dir, line, log)
        .spawn()
        .map_err(|e| format!("sh: {e}"))?;
    let started = Instant::now();
    let mut listening_since: Option<Instant> = None;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(Outcome::Exited(read_log(log))),
            Ok(Some(status)) => {
                return Err(format!(
                    "`{line}` exited with {status} after {:?}:\n{}",
                    started.elapsed(),
                    read_log(log)
                ));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("`{line}`: {e}")),
        }
        if started.elapsed() > LINE_LIMIT {
            let _ = Running {
                line: line.to_owned(),
                child,
            };
            return Err(format!(
                "`{line}` neither exited nor listened in {LINE_LIMIT:?}:\n{}",
                read_log(log)
            ));
        }
        match listening_since {
            Some(t) if t.elapsed() >= STAYS_UP => {
                return Ok(Outcome::Listening(Running {
                    line: line.to_owned(),
                    child,
                }));
            }
            Some(_) => {}
            None if group_listens(child.id()) => listening_since = Some(Instant::now()),
            None => {}
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// The checkout as a fresh clone of it has it: every tracked file and
/// every new file git does not ignore, copied into `dest` (emptied first,
/// but for `target`, the build directory kept from an earlier run of this
/// test so that only the first run builds everything).
fn fresh_copy(dest: &Path) {
    let files = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root())
        .output()
        .expect("git is installed");
    assert!(files.status.success(), "git ls-files in the checkout");
    if let Ok(entries) = std::fs::read_dir(dest) {
        for e in entries.flatten() {
            if e.file_name() != "target" {
                let p = e.path();
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
        }
    }
    for name in files.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let rel = PathBuf::from(String::from_utf8_lossy(name).into_owned());
        let from = root().join(&rel);
        // A tracked file deleted in the working tree is not in a clone.
        let Ok(meta) = std::fs::symlink_metadata(&from) else {
            continue;
        };
        let to = dest.join(&rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&from).unwrap();
            std::os::unix::fs::symlink(target, &to).unwrap();
        } else if meta.is_file() {
            std::fs::copy(&from, &to).unwrap();
        }
    }
}

#[test]
fn the_readme_quick_start_runs_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = doc_commands(&readme, Some("## Run the tests"));
    assert!(
        lines.iter().any(|l| l.contains("-- demo")) && lines.len() >= 5,
        "the quick start's commands: {lines:#?}"
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme-fresh-clone");
    std::fs::create_dir_all(&dir).unwrap();
    fresh_copy(&dir);
    let logs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("readme-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut running: Option<Running> = None;
    let mut outputs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let log = logs.join(format!("line-{i}.log"));
        let outcome = run_line(&dir, line, &log);
        let outcome = match outcome {
            Err(e) if running.is_some() && e.contains("in use") => {
                // It needs the ports the line still running holds (`rvs
                // run` of the reader's own file after the demo): the
                // reader stops that one (Ctrl-C) and tries again.
                if let Some(mut r) = running.take() {
                    report(&format!("quick start: stopped `{}` for `{line}`", r.line));
                    r.stop();
                }
                run_line(&dir, line, &log)
            }
            o => o,
        };
        match outcome {
            Ok(Outcome::Exited(out)) => {
                report(&format!("quick start: `{line}` exited 0"));
                outputs.push((line.clone(), out));
            }
            Ok(Outcome::Listening(r)) => {
                report(&format!("quick start: `{line}` listens and stays up"));
                if let Some(mut old) = running.replace(r) {
                    old.stop();
                }
                outputs.push((line.clone(), String::new()));
            }
            Err(e) => panic!("README quick start, line {}: {e}", i + 1),
        }
    }
    // What the text around the commands promises of their output.
    let curl = outputs
        .iter()
        .find(|(l, _)| l.contains("curl -s http://127.0.0.1:8080/"))
        .map(|(_, o)| o.as_str())
        .expect("the curl loop is in the quick start");
    let backends: HashSet<&str> = curl
        .lines()
        .filter(|l| l.contains("backend-"))
        .map(str::trim)
        .collect();
    assert_eq!(backends.len(), 3, "the answers rotate: {curl}");
    let table = outputs
        .iter()
        .find(|(l, _)| l.contains("rvsadm -- -Ln"))
        .map(|(_, o)| o.as_str())
        .expect("rvsadm is in the quick start");
    assert!(
        table.contains("TCP  127.0.0.1:8080"),
        "the demo's table: {table}"
    );
    let replay = outputs
        .iter()
        .find(|(l, _)| l.contains("sched-replay"))
        .map(|(_, o)| o.as_str())
        .expect("sched-replay is in the quick start");
    let picks: Vec<&str> = replay.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        !picks.is_empty()
            && picks
                .iter()
                .all(|l| l.trim().parse::<std::net::SocketAddr>().is_ok()),
        "one real server per new connection: {replay}"
    );
}

/// Where each command of docs/deploy.md runs, or why it cannot run here:
/// a command added to the guide fails this test until it is placed.
const DEPLOY_COMMANDS: &[(&str, Placed)] = &[
    (
        "podman build -f deploy/container/Containerfile",
        Placed::Not("pulls the Rust image from a registry, which this machine cannot reach"),
    ),
    ("deploy/container/build.sh", Placed::By("container.rs")),
    ("podman run -d --name rvs", Placed::By("container.rs")),
    (
        "cd deploy/kubernetes/overlays/",
        Placed::Not("the overlay is rendered by kubernetes.rs; applying it needs a cluster"),
    ),
    (
        "kustomize edit set image",
        Placed::Not("kustomize's own binary and an image registry"),
    ),
    ("$EDITOR rvs.yaml", Placed::Not("the reader's own services")),
    ("kubectl apply -k", Placed::Not("needs a cluster")),
    ("deploy/debian/build", Placed::By("debian_package.rs")),
    (
        "apt install ./target/debian/",
        Placed::By("debian_package.rs"),
    ),
    (
        "install -m 0755 target/release/rvs",
        Placed::By("systemd.rs"),
    ),
    (
        "install -D -m 0644 config/rvs.yaml",
        Placed::By("systemd.rs"),
    ),
    ("install -m 0644 deploy/systemd/", Placed::By("systemd.rs")),
    ("systemctl ", Placed::By("systemd.rs")),
    (
        "$EDITOR /etc/systemd/system/rvs.socket",
        Placed::By("systemd.rs"),
    ),
];

enum Placed {
    /// Run, as written, by this test file (which reads it from the guide).
    By(&'static str),
    /// Not run here, for this reason.
    Not(&'static str),
}

#[test]
fn every_deploy_command_is_run_somewhere_or_says_why_not() {
    let guide = std::fs::read_to_string(root().join("docs/deploy.md")).unwrap();
    let commands = doc_commands(&guide, None);
    assert!(commands.len() >= 10, "{commands:#?}");
    let mut unplaced = Vec::new();
    for line in &commands {
        match DEPLOY_COMMANDS.iter().find(|(p, _)| line.starts_with(p)) {
            None => unplaced.push(line.clone()),
            Some((_, Placed::By(file))) => {
                // The test that runs it takes it from the guide.
                let test =
                    std::fs::read_to_string(root().join("crates/rvs/tests").join(file)).unwrap();
                assert!(
                    test.contains("docs/deploy.md") && test.contains("doc_commands("),
                    "{file} runs `{line}` from docs/deploy.md"
                );
                report(&format!("deploy guide: `{line}`: run by {file}"));
            }
            Some((_, Placed::Not(why))) => {
                report(&format!("deploy guide: `{line}`: not run here: {why}"));
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "docs/deploy.md commands no test runs and none says why not: {unplaced:#?}"
    );
}
