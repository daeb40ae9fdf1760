//! The PROXY protocol parsers (v1 line, v2 header, v2 before a datagram).
#![no_main]
use libfuzzer_sys::fuzz_target;
use rvs_proxy::proxy_proto::{Transport, V2Header, parse_v1, parse_v2, split_v2_datagram};

fuzz_target!(|data: &[u8]| {
    let _ = parse_v1(data);
    let _ = parse_v2(data);
    if let Ok(Some((addrs, len))) = split_v2_datagram(data) {
        assert!(len <= data.len(), "a header longer than its datagram");
        // A header read back from what rvs writes for the same addresses.
        if let Some((src, dst)) = addrs {
            let h = V2Header::new(src, dst, Transport::Udp);
            let mut d = h.as_bytes().to_vec();
            d.extend_from_slice(&data[len..]);
            let (back, l2) = split_v2_datagram(&d).ok().flatten().unwrap_or((None, 0));
            assert_eq!(&d[l2..], &data[len..]);
            assert!(back.is_some());
        }
    }
});
