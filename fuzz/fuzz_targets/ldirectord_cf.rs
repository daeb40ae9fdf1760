//! `rvs import ldirectord`: ldirectord.cf's globals, virtual blocks,
//! ranges and checks, with names from a small hosts and services file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rvs::ipvsadm::names::Names;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let names = Names::from_text(
        "192.168.6.2 web1\n192.168.6.3 web2\n",
        "http 80/tcp\nhttps 443/tcp\ndomain 53/udp\n",
    );
    if let Ok(imp) = rvs::import::ldirectord::import_text(text, "ldirectord.cf", &names) {
        // What an import writes is a configuration rvs reads.
        if let Ok(yaml) = imp.render() {
            assert!(
                rvs_proxy::Config::parse(&yaml, "out.yaml").is_ok(),
                "{yaml}"
            );
        }
    }
});
