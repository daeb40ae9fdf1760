//! `rvs import keepalived`: keepalived.conf, its parameters, conditions,
//! includes and globs.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(imp) = rvs::import::keepalived::import_text(text, "keepalived.conf", "main") {
            if let Ok(yaml) = imp.render() {
                assert!(
                    rvs_proxy::Config::parse(&yaml, "out.yaml").is_ok(),
                    "{yaml}"
                );
            }
        }
    }
});
