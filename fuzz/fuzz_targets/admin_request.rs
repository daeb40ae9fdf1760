//! The admin listener before any route: a request head as the probe lane
//! reads it, the guard's Host/Origin/Content-Type rules on its headers,
//! its path cut into segments and decoded.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rvs_proxy::admin::fuzz_request(data);
});
