//! The sched-replay trace parser and the scheduler behind it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let _ = rvs::replay::replay(data, &mut out);
});
