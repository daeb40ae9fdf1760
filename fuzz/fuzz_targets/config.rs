//! The YAML configuration loader: any text is a configuration or an error,
//! never a panic, a hang or a blow-up.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(mut c) = rvs_proxy::Config::parse(text, "fuzz.yaml") {
            // What is accepted is written back and read again the same
            // (but for the admin token, which is never written).
            c.admin.token = None;
            let again = rvs_proxy::Config::parse(&c.to_yaml(), "again.yaml");
            assert_eq!(again.as_ref().ok(), Some(&c), "{}", c.to_yaml());
        }
    }
});
