//! IPVS sync datagrams as a backup receives them from the multicast group,
//! where anyone on the link can send: decoded, never a panic; what decodes
//! encodes again to the same entries (version 0's as many). The same bytes, read as a SIP
//! datagram, go through the Call-ID search of the SIP engine.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rvs_proxy::sip_callid;
use rvs_proxy::sync::wire::{self, Message};

fuzz_target!(|data: &[u8]| {
    let _ = sip_callid::call_id(data, 0);
    let _ = sip_callid::call_id(data, sip_callid::search_start(false));
    let Ok(got) = wire::decode(data, 0) else {
        return;
    };
    let mut m = Message::new(got.syncid, usize::from(u16::MAX));
    for e in &got.entries {
        if m.push(e).is_err() {
            return;
        }
    }
    let again = wire::decode(m.bytes(), got.syncid).unwrap_or_else(|e| panic!("{e:?}"));
    // Version 0 entries keep flags a version 1 backup masks off.
    if got.version == 1 {
        assert_eq!(again.entries, got.entries);
    } else {
        assert_eq!(again.entries.len(), got.entries.len());
    }
});
