//! Test directories under the system's temporary directory, removed when
//! the test process exits, passed or failed: a suite run many times (CI,
//! a loop hunting a flaky test) must not fill the disk with configs, logs
//! and copies of the binaries.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// Every directory `temp_dir` made in this process.
static MADE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

unsafe extern "C" {
    /// The C library's: runs `f` when the process exits through `exit`,
    /// which is how the test harness ends, whatever the verdict.
    fn atexit(f: extern "C" fn()) -> i32;
}

extern "C" fn remove_made() {
    // Never panic here: a panic cannot unwind out of an exit handler.
    let made = std::mem::take(&mut *MADE.lock().unwrap_or_else(PoisonError::into_inner));
    for d in made {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// A fresh, empty directory of this test process, named after `tag`.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("rvs-test-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
    if n == 0 {
        // SAFETY: registers a plain function with no captured state.
        let _ = unsafe { atexit(remove_made) };
    }
    made.push(d.clone());
    d
}
