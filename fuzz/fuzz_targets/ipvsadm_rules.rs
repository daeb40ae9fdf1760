//! `rvs import ipvsadm`: ipvsadm-save rules (and so rvsadm's argument parser).
#![no_main]
use libfuzzer_sys::fuzz_target;
use rvs::ipvsadm::names::Names;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(imp) = rvs::import::ipvsadm::import(text, "rules", &Names::none()) {
            // What an import writes is a configuration rvs reads.
            if let Ok(yaml) = imp.render() {
                assert!(
                    rvs_proxy::Config::parse(&yaml, "out.yaml").is_ok(),
                    "{yaml}"
                );
            }
        }
    }
});
