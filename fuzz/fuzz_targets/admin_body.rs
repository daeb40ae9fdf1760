//! The admin API's request bodies: a service as POST/PUT take it (YAML or
//! JSON), and the depth check every body passes first.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rvs_proxy::Config;

fuzz_target!(|data: &[u8]| {
    static BASE: OnceLock<Config> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        Config::parse("services: []\n", "base.yaml").unwrap_or_else(|e| panic!("{e}"))
    });
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::check_depth(text);
        let _ = base.parse_service(text, "request body");
    }
});
