//! The commit rvs is built from, for `rvs --version`, `rvsadm --version`
//! and `rvs_build_info`: `RVS_COMMIT` when the build sets it (a package
//! built from a tarball), else git's, else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=RVS_COMMIT");
    // A new commit or checkout changes HEAD or the ref it names.
    for f in [
        "../../.git/HEAD",
        "../../.git/refs/heads",
        "../../.git/packed-refs",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    let commit = std::env::var("RVS_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            let c = String::from_utf8(out.stdout).ok()?.trim().to_owned();
            (out.status.success() && !c.is_empty()).then_some(c)
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=RVS_COMMIT={commit}");
}
