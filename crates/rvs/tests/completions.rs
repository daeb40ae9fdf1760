//! `rvs completions SHELL [rvs|rvsadm]` and `--version`: the completions
//! a real bash offers from the generated scripts, and the version line
//! with the commit the binaries were built from.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

fn rvs(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rvs"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rvs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What bash's completion function for `words` (the last one being
/// completed) puts in COMPREPLY, with both scripts loaded.
fn complete(words: &[&str]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("rvs-completions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("rvs.bash"), dir.join("rvsadm.bash"));
    std::fs::write(&a, rvs(&["completions", "bash"])).unwrap();
    std::fs::write(&b, rvs(&["completions", "bash", "rvsadm"])).unwrap();
    let line = words.join(" ");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "source {a}\nsource {b}\nCOMP_WORDS=({all})\nCOMP_CWORD={cword}\nCOMP_LINE='{line}'\nCOMP_POINT=${{#COMP_LINE}}\n_{cmd} {cmd} '{cur}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        all = quoted.join(" "),
        a = a.display(),
        b = b.display(),
        cword = words.len() - 1,
        cmd = words[0],
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_both_commands() {
    let sta = complete(&["rvsadm", "--sta"]);
    assert!(sta.contains(&"--start-daemon".to_owned()), "{sta:?}");
    assert!(sta.iter().all(|w| w.starts_with("--sta")), "{sta:?}");
    assert_eq!(complete(&["rvsadm", "--start-d"]), ["--start-daemon"]);
    assert_eq!(complete(&["rvsadm", "--start-daemon", "m"]), ["master"]);
    assert_eq!(complete(&["rvs", "im"]), ["import"]);
    let import = complete(&["rvs", "import", ""]);
    for want in ["ipvsadm", "keepalived", "ldirectord"] {
        assert!(import.contains(&want.to_owned()), "{import:?}");
    }
}

#[test]
fn zsh_and_fish_have_every_command() {
    for shell in ["zsh", "fish"] {
        let of_rvs = rvs(&["completions", shell]);
        for sub in ["run", "check", "import", "completions", "show-config"] {
            assert!(of_rvs.contains(sub), "{shell}: {sub}");
        }
        let of_rvsadm = rvs(&["completions", shell, "rvsadm"]);
        for opt in [
            "start-daemon",
            "persistent-conn",
            "mcast-group",
            "sched-flags",
        ] {
            assert!(of_rvsadm.contains(opt), "{shell}: {opt}");
        }
    }
}

#[test]
fn versions_name_the_commit() {
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let version = env!("CARGO_PKG_VERSION");
    let commit = head.as_deref().unwrap_or("unknown");
    assert_eq!(
        rvs(&["--version"]),
        format!("rvs {version} (commit {commit})\n")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rvsadm"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "rvsadm v{version} (commit {commit}) (ipvsadm v1.31 commands and tables, for rvs)\n"
        )
    );
}
