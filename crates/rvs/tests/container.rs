//! deploy/container: the image built by `deploy/container/build.sh` (with
//! no image registry) runs under podman as a platform would run it —
//! read-only root, no capability, no new privileges, user 65532, the
//! configuration mounted read-only from a directory — and carries traffic
//! to a backend on the host, follows a kubelet-style ConfigMap update of
//! the mounted directory, and drains a transfer in flight on `podman stop`.
//! .ci/run (tests/run) installs podman and runc from Debian.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{
    PodmanContainer, config, fetch, free_port, name_backend, output_text, paced_backend, podman,
    report, root, temp_dir, wait_for,
};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::Duration;

const IMAGE: &str = "localhost/rvs:dev";

/// The soft limit of `what` in /proc/self/limits ("Max open files"), or
/// `fallback` when it is unlimited.
fn soft_limit(what: &str, fallback: u64) -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with(what)).unwrap();
    line[what.len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(fallback)
}

/// The podman options this machine needs to run the image at all, found
/// by trying: the default runtime, then runc (crun fails on hybrid cgroup
/// hierarchies), each with podman's default rlimits and then with rlimits
/// below the current ones (podman's defaults may be above what may be
/// set): descriptors at the current soft limit, processes at 4096 (rvs
/// runs a few dozen threads; the sandboxes seen here refuse some values
/// under their own stated limit).
fn runnable_options() -> Vec<String> {
    let ulimits = vec![
        "--ulimit".to_owned(),
        format!("nofile={0}:{0}", soft_limit("Max open files", 4096)),
        "--ulimit".to_owned(),
        format!("nproc={0}:{0}", soft_limit("Max processes", 4096).min(4096)),
    ];
    let runc: Vec<String> = vec!["--runtime".into(), "runc".into()];
    let tries: Vec<(Vec<String>, &str)> = vec![
        (vec![], "podman's defaults"),
        (runc.clone(), "--runtime runc"),
        (ulimits.clone(), "--ulimit below the current limits"),
        (
            [runc, ulimits].concat(),
            "--runtime runc and --ulimit below the current limits",
        ),
    ];
    let mut failures = Vec::new();
    for (opts, what) in tries {
        let mut args: Vec<&str> = vec!["run", "--rm"];
        args.extend(opts.iter().map(String::as_str));
        args.extend([IMAGE, "--version"]);
        let out = podman(&args);
        if out.status.success() && output_text(&out).contains("rvs ") {
            report(&format!(
                "container test: podman runs the image with {what}"
            ));
            for (o, why) in &failures {
                report(&format!("  (not with {o}: {why})"));
            }
            return opts;
        }
        let why = output_text(&out).lines().last().unwrap_or("").to_owned();
        failures.push((what.to_owned(), why));
    }
    panic!("podman cannot run {IMAGE}: {failures:#?}");
}

/// A kubelet-style ConfigMap volume: `..TIMESTAMP/rvs.yaml`, `..data`
/// pointing at it, `rvs.yaml` pointing through `..data`.
struct ConfigMapDir {
    dir: std::path::PathBuf,
    version: usize,
}

impl ConfigMapDir {
    fn new(yaml: &str) -> ConfigMapDir {
        let dir = temp_dir("configmap");
        let mut c = ConfigMapDir { dir, version: 0 };
        c.update(yaml);
        std::os::unix::fs::symlink("..data/rvs.yaml", c.dir.join("rvs.yaml")).unwrap();
        c
    }

    /// As the kubelet updates it: a new timestamped directory, a new
    /// symlink renamed over `..data`, the old directory removed.
    fn update(&mut self, yaml: &str) {
        self.version += 1;
        let old = format!("..2026_12_01_00_00_00.{:09}", self.version - 1);
        let new = format!("..2026_12_01_00_00_00.{:09}", self.version);
        std::fs::create_dir(self.dir.join(&new)).unwrap();
        std::fs::write(self.dir.join(&new).join("rvs.yaml"), yaml).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&new, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        let _ = std::fs::remove_dir_all(self.dir.join(old));
    }
}

/// A line of /proc/PID/status, its fields after the name.
fn status_field(pid: &str, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .map(|l| {
            l[name.len() + 1..]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

#[test]
fn the_image_runs_unprivileged_follows_configmap_updates_and_drains_on_stop() {
    // docs/deploy.md's commands, as written: the builds (from the top of
    // the checkout), then its `podman run` with this test's directory for
    // /etc/rvs, its own name, and the options this machine needs.
    let guide = std::fs::read_to_string(root().join("docs/deploy.md")).unwrap();
    let commands = common::doc_commands(&guide, None);
    let builds: Vec<&String> = commands
        .iter()
        .filter(|l| l.starts_with("deploy/container/build.sh"))
        .collect();
    assert!(builds.len() >= 2, "docs/deploy.md's builds: {commands:#?}");
    let mut built = String::new();
    for line in &builds {
        let build = Command::new("sh")
            .arg("-c")
            .arg(line.as_str())
            .current_dir(root())
            .output()
            .expect("sh runs");
        let out = output_text(&build);
        assert!(build.status.success(), "docs/deploy.md: `{line}`: {out}");
        report(&format!("container test: `{line}` exited 0"));
        if line
            .split_whitespace()
            .nth(1)
            .is_none_or(|w| w.starts_with('#'))
        {
            built = out;
        } else {
            // Another tag: the same image, removed again.
            let tag = line.split_whitespace().nth(1).unwrap_or_default();
            assert!(out.contains(&format!("{tag}: ")), "{line}: {out}");
            let same = output_text(&podman(&["image", "inspect", "--format", "{{.Id}}", tag]));
            let dev = output_text(&podman(&["image", "inspect", "--format", "{{.Id}}", IMAGE]));
            assert_eq!(same, dev, "`{line}` tags the same image");
            let _ = podman(&["rmi", tag]);
        }
    }
    let run_line = commands
        .iter()
        .find(|l| l.starts_with("podman run"))
        .unwrap_or_else(|| panic!("docs/deploy.md's podman run: {commands:#?}"));
    // The size goal the README and docs/deploy.md state.
    let size_line = built
        .lines()
        .find(|l| l.starts_with(&format!("{IMAGE}: ")))
        .unwrap_or_else(|| panic!("build.sh says the size: {built}"));
    report(&format!("container test: {size_line}"));
    let mb: f64 = size_line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(mb <= 10.0, "the image is {mb} MB, above the 10 MB goal");
    // Empty but for the binary: no shell to run.
    let inspect = podman(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}} {{.Config.Entrypoint}} {{.Config.Cmd}}",
        IMAGE,
    ]);
    assert_eq!(
        output_text(&inspect).trim(),
        "65532:65532 [/usr/local/bin/rvs] [run -c /etc/rvs/rvs.yaml]"
    );

    let opts = runnable_options();
    let no_shell = podman(
        &[
            &["run", "--rm"][..],
            &opts.iter().map(String::as_str).collect::<Vec<_>>(),
            &["--entrypoint", "/bin/sh", IMAGE, "-c", "true"],
        ]
        .concat(),
    );
    assert!(!no_shell.status.success(), "the image has a shell");
    let rvsadm = podman(
        &[
            &["run", "--rm"][..],
            &opts.iter().map(String::as_str).collect::<Vec<_>>(),
            &["--entrypoint", "/usr/local/bin/rvsadm", IMAGE, "--version"],
        ]
        .concat(),
    );
    assert!(
        output_text(&rvsadm).contains("rvsadm v"),
        "{}",
        output_text(&rvsadm)
    );

    const CHUNKS: usize = 80; // 8 s of transfer
    let (one, two, long) = (
        name_backend("one"),
        name_backend("two"),
        paced_backend(CHUNKS, 65536, Duration::from_millis(100)),
    );
    let (vip, admin) = (free_port(), free_port());
    let mut cm = ConfigMapDir::new(&config(vip, one, admin));
    let name = format!("rvs-test-{}", std::process::id());
    let volume = format!("{}:/etc/rvs:ro", cm.dir.display());
    let mut words: Vec<&str> = run_line.split_whitespace().skip(1).collect();
    assert_eq!(words.pop(), Some(IMAGE), "{run_line}");
    let mut args: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        match (words[i], words.get(i + 1).copied()) {
            ("--name", Some(_)) => {
                args.extend(["--name", &name]);
                i += 2;
            }
            ("-v", Some(v)) if v.starts_with("/etc/rvs:/etc/rvs") => {
                args.extend(["-v", &volume]);
                i += 2;
            }
            (w, _) => {
                args.push(w);
                i += 1;
            }
        }
    }
    for hardening in ["--read-only", "ALL", "no-new-privileges", "65532:65532"] {
        assert!(args.contains(&hardening), "{run_line}");
    }
    args.extend(opts.iter().map(String::as_str));
    args.push(IMAGE);
    let started = podman(&args);
    assert!(started.status.success(), "{}", output_text(&started));
    let container = PodmanContainer(name.clone());
    let logs = || output_text(&podman(&["logs", &name]));

    assert!(
        wait_for(Duration::from_secs(20), || fetch(vip).as_deref()
            == Some("one")),
        "traffic through the container: {}",
        logs()
    );

    // The process inside runs as 65532, with no capability and no way to
    // gain privileges.
    let pid = output_text(&podman(&["inspect", "--format", "{{.State.Pid}}", &name]))
        .trim()
        .to_owned();
    assert_eq!(status_field(&pid, "Uid"), "65532 65532 65532 65532");
    assert_eq!(status_field(&pid, "Gid"), "65532 65532 65532 65532");
    assert_eq!(status_field(&pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(&pid, "CapPrm"), "0000000000000000");
    assert_eq!(status_field(&pid, "NoNewPrivs"), "1");
    let ro = podman(&[
        "inspect",
        "--format",
        "{{.HostConfig.ReadonlyRootfs}}",
        &name,
    ]);
    assert_eq!(output_text(&ro).trim(), "true");

    // rvsadm, the link to rvs in the image, reads the table from inside.
    let table = podman(&[
        "exec",
        &name,
        "rvsadm",
        "--admin",
        &admin.to_string(),
        "-Ln",
    ]);
    assert!(
        output_text(&table).contains(&format!("TCP  {vip} wlc"))
            && output_text(&table).contains(&format!("-> {one}")),
        "{}",
        output_text(&table)
    );

    // A kubelet-style update of the mounted directory is picked up.
    cm.update(&config(vip, two, admin));
    assert!(
        wait_for(Duration::from_secs(20), || fetch(vip).as_deref()
            == Some("two")),
        "the ConfigMap update: {}",
        logs()
    );

    // DNS discovery in the static binary of an empty image (no C library
    // name service, no /etc/hosts entry for the name): a dnsmasq on the
    // host's loopback names the backend.
    let dns = Dnsmasq::start(&temp_dir("dns"), &format!("{} backend.test", one.ip()));
    cm.update(&format!(
        "global:\n  shutdown_grace: 20s\n  dns: {{ resolvers: [\"{}\"], interval: 1s }}\nadmin:\n  listen: \"{admin}\"\nservices:\n  - name: web\n    listen: \"{vip}\"\n    real_servers:\n      - dns: backend.test:{}\n",
        dns.addr,
        one.port()
    ));
    assert!(
        wait_for(Duration::from_secs(20), || fetch(vip).as_deref()
            == Some("one")),
        "a dns: real server resolved inside the image: {}",
        logs()
    );
    drop(dns);

    // podman stop (SIGTERM) during a transfer: it completes, rvs exits 0.
    cm.update(&config(vip, long, admin));
    assert!(
        wait_for(Duration::from_secs(20), || logs()
            .matches("configuration reloaded")
            .count()
            >= 3),
        "{}",
        logs()
    );
    let mut c = TcpStream::connect(vip).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut first = [0u8; 1];
    c.read_exact(&mut first).unwrap();
    let reader = thread::spawn(move || {
        let mut rest = Vec::new();
        let r = c.read_to_end(&mut rest).map(|_| rest.len() + 1);
        drop(c); // the client closes its side too: the connection is over
        r
    });
    let stopper = {
        let name = name.clone();
        thread::spawn(move || podman(&["stop", "-t", "40", &name]))
    };
    // Draining: the listener is closed while the transfer goes on.
    let refused = wait_for(Duration::from_secs(6), || TcpStream::connect(vip).is_err());
    let in_flight = !reader.is_finished();
    let got = reader.join().unwrap();
    assert_eq!(
        got.as_ref().ok(),
        Some(&(CHUNKS * 65536)),
        "the transfer in flight finished: {got:?} {}",
        logs()
    );
    assert!(
        refused && in_flight,
        "new connections refused while the transfer went on"
    );
    let stopped = stopper.join().unwrap();
    assert!(stopped.status.success(), "{}", output_text(&stopped));
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &name]);
    let all = logs();
    assert_eq!(output_text(&code).trim(), "0", "{all}");
    assert!(all.contains("shutting down"), "{all}");
    assert!(all.contains("all connections closed"), "{all}");
    drop(container);
}

/// A dnsmasq on the host's loopback answering from one hosts line (Debian's
/// dnsmasq-base, installed by tests/run), stopped when dropped.
struct Dnsmasq {
    addr: SocketAddr,
    child: std::process::Child,
}

impl Dnsmasq {
    fn start(dir: &std::path::Path, hosts_line: &str) -> Dnsmasq {
        let hosts = dir.join("hosts");
        std::fs::write(&hosts, format!("{hosts_line}\n")).unwrap();
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let program = if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
            "/usr/sbin/dnsmasq"
        } else {
            "dnsmasq"
        };
        let child = std::process::Command::new(program)
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--local=/test/",
                "--pid-file=",
                "--user=root",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dnsmasq runs (tests/run installs dnsmasq-base)");
        Dnsmasq {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
