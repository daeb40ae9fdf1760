//! The Debian package, built by deploy/debian/build (cargo-deb) from this
//! test's binaries, checked by lintian, then installed as docs/deploy.md
//! says into a Debian of this machine's release under a real systemd: it
//! is enabled and not started, serves a VIP once configured, reloads, is
//! upgraded twice under a stream of requests that refuses none (once with
//! rvs.socket holding the sockets, once by SIGUSR2), then is removed and
//! purged, leaving nothing of its own. tests/run installs cargo-deb,
//! lintian, dpkg-dev, debootstrap and podman.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::debian_systemd::{boot, in_container};
use common::{doc_commands, output_text, report, root, temp_dir};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guide's Debian block: its build line, then what is run on the
/// director.
fn guide_lines() -> Vec<String> {
    let guide = std::fs::read_to_string(root().join("docs/deploy.md")).unwrap();
    let lines: Vec<String> = doc_commands(&guide, Some("### Installing by hand"))
        .into_iter()
        .skip_while(|l| !l.starts_with("deploy/debian/build"))
        .collect();
    assert!(
        lines.len() >= 2 && lines[1].starts_with("apt install ./target/debian/"),
        "docs/deploy.md's Debian block: the build, then apt install: {lines:#?}"
    );
    lines
}

/// deploy/debian/build with `args`, packaging the test's own binaries (a
/// target directory holding them where a release build puts them).
fn build(target: &Path, args: &[&str]) -> PathBuf {
    let out = Command::new(root().join("deploy/debian/build"))
        .args(args)
        .env("CARGO_TARGET_DIR", target)
        .current_dir(root())
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "deploy/debian/build {args:?}: {text}");
    let deb = PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim(),
    );
    assert!(
        deb.extension().is_some_and(|e| e == "deb") && deb.exists(),
        "the last line names the package: {text}"
    );
    deb
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dpkg-deb {args:?}: {}",
        output_text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_package_builds_passes_lintian_installs_upgrades_and_purges() {
    let lines = guide_lines();
    let target = temp_dir("deb-target");
    let release = target.join("release");
    std::fs::create_dir_all(&release).unwrap();
    for bin in [env!("CARGO_BIN_EXE_rvs"), env!("CARGO_BIN_EXE_rvsadm")] {
        let to = release.join(Path::new(bin).file_name().unwrap());
        std::fs::copy(bin, to).unwrap();
    }
    // Two later revisions to upgrade to, each in a directory of its own
    // (cargo-deb empties target/debian as it starts); then the guide's
    // build line, on the prebuilt binaries.
    let (debs2, debs3) = (target.join("rev2"), target.join("rev3"));
    let deb2 = build(
        &target,
        &[
            "--no-build",
            "--revision",
            "2",
            "--output",
            debs2.to_str().unwrap(),
        ],
    );
    let deb3 = build(
        &target,
        &[
            "--no-build",
            "--revision",
            "3",
            "--output",
            debs3.to_str().unwrap(),
        ],
    );
    let mut first: Vec<&str> = lines[0]
        .split('#')
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .collect();
    first.push("--no-build");
    let deb1 = build(&target, &first);
    let install_line = &lines[1];
    let named = install_line
        .trim_start_matches("apt install ./")
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(
        target.join(named.trim_start_matches("target/")),
        deb1,
        "the guide installs the file the build makes"
    );

    // What the package holds and says.
    let info = dpkg_deb(&["-I"], &deb1);
    for field in [
        "Package: rvs",
        "Version: 0.1.0-1",
        "Section: net",
        "Depends: libc6",
    ] {
        assert!(info.contains(field), "{field}: {info}");
    }
    let files = dpkg_deb(&["-c"], &deb1);
    for path in [
        "./usr/sbin/rvs",
        "./usr/sbin/rvsadm",
        "./etc/rvs/rvs.yaml",
        "./usr/lib/systemd/system/rvs.service",
        "./usr/lib/systemd/system/rvs.socket",
        "./usr/share/man/man8/rvs.8.gz",
        "./usr/share/man/man8/rvsadm.8.gz",
        "./usr/share/man/man5/rvs.yaml.5.gz",
        "./usr/share/bash-completion/completions/rvs",
        "./usr/share/bash-completion/completions/rvsadm",
        "./usr/share/zsh/vendor-completions/_rvs",
        "./usr/share/zsh/vendor-completions/_rvsadm",
        "./usr/share/fish/vendor_completions.d/rvs.fish",
        "./usr/share/fish/vendor_completions.d/rvsadm.fish",
        "./usr/share/doc/rvs/copyright",
        "./usr/share/doc/rvs/changelog.Debian.gz",
        "./usr/share/doc/rvs/examples/minimal.yaml",
    ] {
        assert!(
            files.lines().any(|l| l.ends_with(path)),
            "{path} in the package: {files}"
        );
    }
    let control = temp_dir("deb-control");
    let out = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb1)
        .arg(&control)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/rvs/rvs.yaml\n"
    );

    // lintian, pedantic: no error, no warning, no pedantic tag, but the
    // overrides the package explains. Informational tags are reported:
    // some come from strings of the binary (a "spelling error" in bytes
    // that are no text), which differ from build to build.
    let out = Command::new("lintian")
        .args([
            "--pedantic",
            "--display-info",
            "--fail-on",
            "error,warning,pedantic",
        ])
        .arg(&deb1)
        .output()
        .unwrap_or_else(|e| panic!("lintian: {e} (tests/run installs it)"));
    let verdict = output_text(&out);
    assert!(out.status.success(), "lintian: {verdict}");
    assert!(
        !verdict
            .lines()
            .any(|l| ["E: ", "W: ", "P: "].iter().any(|t| l.starts_with(t))),
        "lintian: {verdict}"
    );
    let infos: Vec<&str> = verdict.lines().filter(|l| l.starts_with("I: ")).collect();
    report(&format!(
        "debian package: lintian --pedantic: no error, warning or pedantic tag; {} informational: {infos:?}",
        infos.len()
    ));

    // On a director: the guide's install line, as written, from a
    // checkout's layout (target/debian/ holds the package).
    let src = temp_dir("deb-src");
    std::fs::create_dir_all(src.join("target")).unwrap();
    let name = format!("rvs-test-deb-{}", std::process::id());
    let _removed = boot(
        &name,
        &[
            (target.join("debian"), "/src/target/debian"),
            (debs2.clone(), "/debs/2"),
            (debs3.clone(), "/debs/3"),
        ],
    );
    let run = |what: &str, script: &str| -> String {
        let (ok, out) = in_container(&name, script);
        assert!(ok, "{what}: {out}");
        out
    };
    for line in &lines[1..] {
        let out = run(
            &format!("docs/deploy.md: `{line}`"),
            &format!("cd /src && export EDITOR=true DEBIAN_FRONTEND=noninteractive && {line}"),
        );
        report(&format!(
            "debian package: `{line}` exited 0 ({} lines)",
            out.lines().count()
        ));
    }
    let out = run(
        "installed",
        "dpkg-query -W -f '${Status} ${Version}\\n' rvs; \
         systemctl is-enabled rvs.service; systemctl is-active rvs.service || true; \
         systemctl is-enabled rvs.socket || true; \
         rvs --version; rvsadm --version; \
         rvs check -c /etc/rvs/rvs.yaml",
    );
    let lines_of: Vec<&str> = out.lines().map(str::trim).collect();
    assert!(lines_of.contains(&"install ok installed 0.1.0-1"), "{out}");
    assert_eq!(
        lines_of.get(1..4),
        Some(&["enabled", "inactive", "disabled"][..]),
        "rvs.service enabled, not started; rvs.socket not enabled: {out}"
    );
    assert!(
        out.contains("rvs 0.1.0 (commit ") && out.contains("rvsadm v0.1.0 (commit "),
        "{out}"
    );
    assert!(out.contains("/etc/rvs/rvs.yaml: ok, 0 services"), "{out}");

    // The operator's configuration: a VIP on loopback, to the demo's three
    // HTTP servers; then start, serve, reload.
    run(
        "the backend",
        "systemd-run --unit=backend /usr/sbin/rvs demo --listen 127.0.0.1:8000 --admin 127.0.0.1:9300 && \
         for i in $(seq 60); do curl -s -o /dev/null http://127.0.0.1:8000/ && exit 0; sleep 0.5; done; exit 1",
    );
    let vip = |port: u16| {
        format!(
            "  - name: web{port}\n    listen: 127.0.0.10:{port}\n    scheduler: rr\n    real_servers:\n      - address: 127.0.0.1:8000\n"
        )
    };
    let config = |ports: &[u16]| {
        let services: String = ports.iter().map(|p| vip(*p)).collect();
        format!("admin:\n  listen: 127.0.0.1:9180\nservices:\n{services}")
    };
    run(
        "configured and started",
        &format!(
            "printf '%s' '{}' > /etc/rvs/rvs.yaml && systemctl start rvs && systemctl is-active rvs && \
             curl -s --max-time 5 http://127.0.0.10/",
            config(&[80])
        ),
    );
    let out = run(
        "reloaded",
        &format!(
            "printf '%s' '{}' > /etc/rvs/rvs.yaml && systemctl reload rvs && \
             for i in $(seq 40); do curl -s --max-time 5 http://127.0.0.10:81/ && exit 0; sleep 0.25; done; exit 1",
            config(&[80, 81])
        ),
    );
    assert!(out.contains("Hello from backend-"), "{out}");
    let out = run(
        "rvsadm against the packaged rvs",
        "rvsadm -Ln; man_pages=$(ls /usr/share/man/man8/rvs.8.gz /usr/share/man/man8/rvsadm.8.gz /usr/share/man/man5/rvs.yaml.5.gz | wc -l); echo pages=$man_pages",
    );
    assert!(
        out.contains("TCP  127.0.0.10:80 rr") && out.contains("TCP  127.0.0.10:81 rr"),
        "{out}"
    );
    assert!(out.contains("pages=3"), "{out}");

    // Socket activation: the operator lists the configuration's addresses
    // in a drop-in (systemctl edit), then rvs restarts on systemd's sockets.
    run(
        "rvs.socket enabled",
        "mkdir -p /etc/systemd/system/rvs.socket.d && \
         printf '[Socket]\\nListenStream=\\nListenDatagram=\\nListenStream=127.0.0.10:80\\nListenStream=127.0.0.10:81\\nListenStream=127.0.0.1:9180\\n' \
           > /etc/systemd/system/rvs.socket.d/addresses.conf && \
         systemctl daemon-reload && systemctl stop rvs && systemctl enable --now rvs.socket && systemctl start rvs && \
         for i in $(seq 40); do curl -s -o /dev/null --max-time 5 http://127.0.0.10/ && exit 0; sleep 0.25; done; exit 1",
    );

    // Upgrades under a stream of requests: none may fail. The first with
    // rvs.socket (postinst restarts rvs on the held sockets), the second
    // without (postinst hands over with SIGUSR2).
    let upgrade = |deb: &str, version: &str, how: &str| {
        let out = run(
            how,
            &format!(
                "old=$(systemctl show -p MainPID --value rvs.service); \
                 fails=0; ( for i in $(seq 300); do curl -s -o /dev/null --max-time 10 http://127.0.0.10/ || fails=$((fails+1)); done; echo fails=$fails ) & \
                 sleep 0.5; DEBIAN_FRONTEND=noninteractive dpkg -i {deb} >/tmp/dpkg.log 2>&1 || {{ cat /tmp/dpkg.log; exit 1; }}; wait; \
                 for i in $(seq 40); do new=$(systemctl show -p MainPID --value rvs.service); [ \"$new\" != \"$old\" ] && [ \"$new\" != 0 ] && break; sleep 0.5; done; \
                 echo old=$old new=$new; \
                 for i in $(seq 60); do kill -0 $old 2>/dev/null || break; sleep 0.5; done; \
                 echo active=$(systemctl is-active rvs.service) version=$(dpkg-query -W -f '${{Version}}' rvs) \
                   exe=$(readlink /proc/$new/exe) old_alive=$(kill -0 $old 2>/dev/null && echo yes || echo no); \
                 curl -s --max-time 5 http://127.0.0.10:81/"
            ),
        );
        let field = |key: &str| {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(field("fails="), "0", "{how}: no request refused: {out}");
        assert_eq!(field("version="), version, "{how}: {out}");
        assert_eq!(field("active="), "active", "{how}: {out}");
        assert_ne!(field("new="), field("old="), "{how}: a new process: {out}");
        assert_eq!(
            field("exe="),
            "/usr/sbin/rvs",
            "{how}: the new binary: {out}"
        );
        assert_eq!(
            field("old_alive="),
            "no",
            "{how}: the old one exited: {out}"
        );
        assert!(out.contains("Hello from backend-"), "{how}: {out}");
        report(&format!("debian package: {how}: 300 requests, none failed"));
    };
    let in_box =
        |dir: &str, deb: &Path| format!("{dir}/{}", deb.file_name().unwrap().to_str().unwrap());
    upgrade(
        &in_box("/debs/2", &deb2),
        "0.1.0-2",
        "upgrade with rvs.socket",
    );
    let (_, journal) = in_container(&name, "journalctl -u rvs.service --no-pager");
    assert!(
        journal.contains("admin: adopting the socket") && journal.contains("listen=127.0.0.10:81"),
        "the restarted rvs adopted systemd's sockets: {journal}"
    );
    run(
        "rvs.socket disabled again",
        "systemctl stop rvs && systemctl disable --now rvs.socket && rm -r /etc/systemd/system/rvs.socket.d && \
         systemctl daemon-reload && systemctl start rvs && systemctl is-active rvs && ! systemctl is-active rvs.socket",
    );
    upgrade(&in_box("/debs/3", &deb3), "0.1.0-3", "upgrade by SIGUSR2");

    // Removed: stopped (drained, not killed: after the SIGUSR2 upgrade the
    // main process is no child of systemd), the binaries gone, the
    // conffile kept; purged:
    // nothing of the package's left, no unit link, no helper state.
    let out = run(
        "removed",
        "dpkg -r rvs >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; exit 1; }; \
         echo result=$(systemctl show -p Result --value rvs.service) active=$(systemctl is-active rvs.service) sbin=$(ls /usr/sbin/rvs 2>/dev/null | wc -l) \
           conffile=$(ls /etc/rvs/rvs.yaml 2>/dev/null | wc -l); \
         curl -s -o /dev/null --max-time 2 http://127.0.0.10/ && echo still-serving || echo refused; \
         systemctl status rvs.service --no-pager 2>&1 | tail -n 3; journalctl -u rvs.service -o short-precise --no-pager | tail -n 45",
    );
    assert!(
        out.contains("result=success active=inactive sbin=0 conffile=1") && out.contains("refused"),
        "{out}"
    );
    let out = run(
        "purged",
        "dpkg -P rvs >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; exit 1; }; \
         dpkg-query -W rvs 2>/dev/null && echo still-known; \
         echo left: $(find /etc /usr /var/lib/systemd /var/lib/dpkg/info -name '*rvs*' 2>/dev/null | sort); \
         systemctl daemon-reload; systemctl list-unit-files 'rvs*' --no-legend | wc -l",
    );
    assert!(!out.contains("still-known"), "{out}");
    let left = out
        .lines()
        .find_map(|l| l.strip_prefix("left:"))
        .unwrap_or("?")
        .trim();
    assert_eq!(left, "", "what the purge left: {out}");
    assert_eq!(out.lines().last().map(str::trim), Some("0"), "{out}");
}
