//! A Debian with a real systemd as PID 1, in a podman container: for the
//! units (systemd.rs) and the Debian package (debian_package.rs).

use super::{PodmanContainer, output_text, podman};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A Debian root file system with systemd, of this machine's release (so
/// that the test's rvs, linked against this machine's C library, runs in
/// it): made by debootstrap once per target directory, as a podman image
/// (once per test binary, whichever test asks first).
pub fn systemd_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(make_image).clone()
}

fn make_image() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let suite = release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "bookworm".to_owned());
    let image = format!("localhost/rvs-test-systemd:{suite}");
    let exists = podman(&["image", "exists", &image]);
    if exists.status.success() {
        return image;
    }
    let rootfs = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("debian-systemd-{suite}"));
    if !rootfs.join(".complete").exists() {
        let _ = std::fs::remove_dir_all(&rootfs);
        let out = Command::new("debootstrap")
            .args([
                "--variant=minbase",
                "--include=systemd,systemd-sysv,procps,curl",
                &suite,
            ])
            .arg(&rootfs)
            .output()
            .unwrap_or_else(|e| panic!("debootstrap: {e} (tests/run installs it)"));
        assert!(out.status.success(), "debootstrap: {}", output_text(&out));
        std::fs::write(rootfs.join(".complete"), "").unwrap();
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -c . | podman import - {image}",
            rootfs.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "podman import: {}", output_text(&out));
    image
}

/// A container of that image booted with systemd as PID 1 (privileged, in
/// a network namespace of its own with loopback only), `mounts` (host
/// path, container path) read-only; returned once systemd is up, removed
/// when dropped.
pub fn boot(name: &str, mounts: &[(PathBuf, &str)]) -> PodmanContainer {
    let image = systemd_image();
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        name,
        "--privileged",
        "--systemd=always",
        "--network",
        "none",
        "--runtime",
        "runc",
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
    ]
    .map(str::to_owned)
    .to_vec();
    for (from, to) in mounts {
        args.push("-v".into());
        args.push(format!("{}:{to}:ro", from.display()));
    }
    args.extend([image, "/sbin/init".to_owned()]);
    let started = podman(&args);
    assert!(started.status.success(), "{}", output_text(&started));
    let container = PodmanContainer(name.to_owned());
    let (ok, boot) = in_container(
        name,
        "for i in $(seq 120); do \
           case $(systemctl is-system-running 2>/dev/null) in running|degraded) exit 0;; esac; sleep 0.5; \
         done; systemctl is-system-running; exit 1",
    );
    assert!(ok, "systemd up: {boot}");
    container
}

/// Runs `script` in the container's shell; its output, and whether it
/// exited 0.
pub fn in_container(name: &str, script: &str) -> (bool, String) {
    let out = podman(&["exec", name, "sh", "-c", script]);
    (out.status.success(), output_text(&out))
}
