//! `rvs sched-replay` against every trace in tests/traces/ and config/traces/.
//!
//! `NAME.jsonl` is replayed by the real binary. `NAME.expected` is the exact
//! standard output. With `NAME.error`, the replay must fail with exit status
//! 2 and a standard error that names the line as the file says; standard
//! output then holds the decisions of the lines before it, and nothing for
//! the bad line.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn rvs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rvs"))
}

fn traces(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    v.sort();
    v
}

fn check(trace: &Path) -> Result<(), String> {
    let out = rvs()
        .arg("sched-replay")
        .arg(trace)
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = fs::read_to_string(trace.with_extension("expected")).ok();
    match fs::read_to_string(trace.with_extension("error")) {
        Ok(error) => {
            if out.status.code() != Some(2) {
                return Err(format!("exit {:?}, expected 2", out.status.code()));
            }
            if !stderr.contains(error.trim()) {
                return Err(format!("stderr {stderr:?} does not contain {error:?}"));
            }
            if stdout != expected.unwrap_or_default() {
                return Err(format!(
                    "stdout {stdout:?} is not the decisions before the error"
                ));
            }
        }
        Err(_) => {
            if !out.status.success() {
                return Err(format!("exit {:?}: {stderr}", out.status.code()));
            }
            let expected = expected.ok_or("no .expected file")?;
            if stdout != expected {
                let diff: Vec<String> = stdout
                    .lines()
                    .zip(expected.lines())
                    .enumerate()
                    .filter(|(_, (a, b))| a != b)
                    .map(|(i, (a, b))| format!("decision {}: got {a}, expected {b}", i + 1))
                    .take(5)
                    .collect();
                return Err(format!(
                    "{} decisions, {} expected; {}",
                    stdout.lines().count(),
                    expected.lines().count(),
                    diff.join("; ")
                ));
            }
        }
    }
    Ok(())
}

fn check_dir(dir: &Path, at_least: usize) {
    let all = traces(dir);
    assert!(
        all.len() >= at_least,
        "{}: {} traces",
        dir.display(),
        all.len()
    );
    let failures: Vec<String> = all
        .iter()
        .filter_map(|t| check(t).err().map(|e| format!("{}: {e}", t.display())))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn kernel_derived_traces() {
    check_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces"),
        35,
    );
}

#[test]
fn example_traces_under_config() {
    check_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/traces"),
        2,
    );
}

#[test]
fn reads_standard_input() {
    use std::io::Write;
    let mut child = rvs()
        .args(["sched-replay", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"{\"op\":\"service\",\"scheduler\":\"sh\"}\n\
              {\"op\":\"add\",\"rs\":\"10.0.0.1:80\"}\n\
              {\"op\":\"conn\",\"id\":1,\"src\":\"192.0.2.1:1\",\"dst\":\"10.0.0.100:80\"}\n",
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "10.0.0.1:80\n");
}

#[test]
fn a_missing_file_is_an_error() {
    let out = rvs()
        .args(["sched-replay", "/nonexistent/trace.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/trace.jsonl"));
}

/// The hashing fixtures (sh, dh, mh without thresholds or persistence) agree
/// with tests/tools/ipvs_hash_model.py, an independent model of the kernel's
/// tables written from its sources: the expected files are not rvs's output.
#[test]
fn hashing_fixtures_agree_with_the_independent_model() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = root.join("tests/tools/ipvs_hash_model.py");
    let mut checked = 0;
    for trace in traces(&root.join("crates/rvs/tests/traces")) {
        let text = fs::read_to_string(&trace).unwrap();
        let hashing = ["\"sh\"", "\"dh\"", "\"mh\""]
            .iter()
            .any(|s| text.contains(&format!("\"scheduler\":{s}")));
        let thresholds = text
            .match_indices("_threshold\":")
            .any(|(i, m)| !text[i + m.len()..].starts_with('0'));
        if !hashing || thresholds || text.contains("persistent") {
            continue;
        }
        let out = Command::new("python3")
            .arg(&model)
            .arg(&trace)
            .output()
            .expect("python3 runs the model (.ci/run installs it)");
        assert!(
            out.status.success(),
            "{}: {}",
            trace.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = fs::read_to_string(trace.with_extension("expected")).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            expected,
            "{}",
            trace.display()
        );
        checked += 1;
    }
    assert!(checked >= 12, "only {checked} hashing fixtures checked");
}
