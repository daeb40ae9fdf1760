//! The manual pages (`rvs manual rvs|rvsadm|rvs.yaml`): each renders with
//! man(1) without a warning, and names every command and option the
//! binaries take (read from their own --help) and every key of
//! docs/configuration.md.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page, as `MANWIDTH=80 man --warnings -l` renders it; no warning.
fn rendered(page: &str) -> String {
    let dir = std::env::temp_dir().join(format!("rvs-manual-{}-{page}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{page}.man"));
    std::fs::write(&file, run(env!("CARGO_BIN_EXE_rvs"), &["manual", page])).unwrap();
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&file)
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "0")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && warnings.is_empty(),
        "{page}: {warnings}"
    );
    // Bold and underline as man writes them to a pipe, undone.
    let text = String::from_utf8_lossy(&out.stdout);
    let mut plain = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if chars.peek() == Some(&'\u{8}') {
            chars.next();
            continue;
        }
        plain.push(c);
    }
    plain
}

/// Every `--long` option in a help text.
fn longs(help: &str) -> BTreeSet<String> {
    help.split(|c: char| {
        c.is_whitespace() || c == ',' || c == '[' || c == ']' || c == '|' || c == '='
    })
    .filter(|w| w.starts_with("--") && w.len() > 2)
    .map(|w| w.trim_end_matches(['.', ')', ':']).to_owned())
    .filter(|w| w[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-'))
    .collect()
}

#[test]
fn rvs_8_has_every_command_and_option() {
    let page = rendered("rvs");
    let help = run(env!("CARGO_BIN_EXE_rvs"), &["--help"]);
    let commands: Vec<String> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 9, "{commands:?}");
    for c in &commands {
        assert!(
            page.contains(&format!("rvs {c}")),
            "rvs {c} is not in rvs(8)"
        );
        let sub = run(env!("CARGO_BIN_EXE_rvs"), &[c, "--help"]);
        for o in longs(&sub) {
            if o == "--help" || o == "--version" {
                continue;
            }
            assert!(page.contains(&o), "rvs {c} {o} is not in rvs(8)");
        }
    }
    // The importers, each with its options.
    for from in ["ipvsadm", "keepalived", "ldirectord"] {
        assert!(
            page.contains(&format!("rvs import {from}")),
            "rvs import {from}"
        );
        let sub = run(env!("CARGO_BIN_EXE_rvs"), &["import", from, "--help"]);
        for o in longs(&sub) {
            if o != "--help" {
                assert!(page.contains(&o), "rvs import {from} {o} is not in rvs(8)");
            }
        }
    }
}

#[test]
fn rvsadm_8_has_every_option_and_says_what_is_not_there() {
    let page = rendered("rvsadm");
    let help = run(env!("CARGO_BIN_EXE_rvsadm"), &["-h"]);
    let opts = longs(&help);
    assert!(
        opts.contains("--start-daemon") && opts.contains("--pe"),
        "{opts:?}"
    );
    for o in opts {
        if o == "--admin" || o == "--token" {
            assert!(page.contains(&o), "{o}");
            continue;
        }
        assert!(page.contains(&o), "rvsadm {o} is not in rvsadm(8)");
    }
    let missing = page.split("NOT IMPLEMENTED").nth(1).unwrap();
    for o in ["--sctp-service", "--tun-type"] {
        assert!(missing.contains(o), "{o} under NOT IMPLEMENTED");
    }
}

#[test]
fn rvs_yaml_5_has_every_key_of_the_reference() {
    let page = rendered("rvs.yaml");
    let md = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md"),
    )
    .unwrap();
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let text = squash(&page);
    let mut keys = 0;
    for line in md.lines() {
        let key = if let Some(h) = line.strip_prefix("### ") {
            h.replace('`', "")
        } else if let Some(cell) = line.strip_prefix("| `") {
            match cell.split_once('`') {
                Some((k, _)) => k.to_owned(),
                None => continue,
            }
        } else {
            continue;
        };
        assert!(
            text.contains(&squash(&key)),
            "{key:?} is not in rvs.yaml(5)"
        );
        keys += 1;
    }
    assert!(keys > 60, "only {keys} keys found in docs/configuration.md");
}
