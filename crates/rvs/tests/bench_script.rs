//! The load benchmark (benches/load/bench.py) is not run by the tests (it
//! takes minutes and measures, never asserts), but what it feeds rvs is
//! checked here so that it cannot rot: the configuration it writes loads
//! with `rvs check`, and its options are validated before anything starts.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bench() -> Command {
    let mut c = Command::new("python3");
    c.arg(root().join("benches/load/bench.py"));
    c
}

#[test]
fn the_benchmark_config_is_valid() {
    let dir = common::temp_dir("bench");
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sys; sys.path.insert(0, sys.argv[1]); import bench; bench.write_configs(sys.argv[2])")
        .arg(root().join("benches/load"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = dir.join("rvs.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap();
    // The scaling services hold a thousand real servers each.
    assert!(text.matches("127.1.3.250:").count() == 2, "{text}");
    // The earlier rvs of `--before` has the same services on its own
    // ports, the scaling ones aside.
    let before = dir.join("rvs-before.yaml");
    let before_text = std::fs::read_to_string(&before).unwrap();
    assert!(!before_text.contains("127.1.3.250:"), "{before_text}");
    assert!(before_text.contains("127.0.0.1:26080"), "{before_text}");
    // The rvs of `--sync`: the same services, with a master sync daemon.
    let sync = dir.join("rvs-sync.yaml");
    let sync_text = std::fs::read_to_string(&sync).unwrap();
    assert!(sync_text.contains("state: master"), "{sync_text}");
    assert!(sync_text.contains("127.0.0.1:27080"), "{sync_text}");
    for file in [&yaml, &before, &sync] {
        let check = Command::new(env!("CARGO_BIN_EXE_rvs"))
            .args(["check", "-c"])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "rvs check {}: {}",
            file.display(),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    // The peers' files are written beside it.
    for peer in ["haproxy.cfg", "haproxy-splice.cfg", "nginx-stream.conf"] {
        assert!(dir.join(peer).is_file(), "{peer}");
    }
    let splice = std::fs::read_to_string(dir.join("haproxy-splice.cfg")).unwrap();
    assert!(splice.contains("option splice-response"), "{splice}");
}

#[test]
fn bad_options_stop_it_before_anything_runs() {
    let out = bench().args(["--rows", "stream,nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown rows: nope"), "{err}");

    let out = bench()
        .args(["--write", "--rows", "newconn"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--write needs every row"), "{err}");

    let out = bench()
        .args(["--before", "/nonexistent/rvs", "--rows", "newconn"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not an executable file"), "{err}");
}

/// The samples behind docs/benchmarks.md are kept with it, and the report
/// is drawn again from them without measuring.
#[test]
fn the_published_run_can_be_redrawn() {
    let out = bench()
        .arg("--replot")
        .arg(root().join("docs/benchmarks-load.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let report = String::from_utf8_lossy(&out.stdout);
    let doc = std::fs::read_to_string(root().join("docs/benchmarks.md")).unwrap();
    // The published tables are what the samples give.
    for row in report.lines() {
        assert!(doc.contains(row), "docs/benchmarks.md lacks {row}");
    }
    assert!(
        report.contains("| TCP stream, Gbit/s (iperf3) |"),
        "{report}"
    );
    assert!(report.contains("| 1000 servers, mh |"), "{report}");
}
