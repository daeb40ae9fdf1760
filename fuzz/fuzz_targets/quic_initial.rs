//! QUIC Initial packets: any datagram ends in a verdict without a panic,
//! and frames sealed into a real Initial (so that the fuzzer reaches past
//! the AEAD) are read back as the CRYPTO pieces they hold, in whatever
//! datagrams they are cut into. The first byte picks the version, the
//! second the size of the datagrams' frames.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rvs_proxy::sni::hello::{MAX_HELLO, Parse};
use rvs_proxy::sni::quic::{Assembly, V1, V2, initial_crypto, seal_initial};

fuzz_target!(|data: &[u8]| {
    let _ = initial_crypto(data);
    let [v, size, rest @ ..] = data else {
        return;
    };
    let version = if v & 1 == 0 { V1 } else { V2 };
    let step = usize::from(*size) * 8 + 1;
    let mut asm = Assembly::default();
    for (pn, frames) in rest.chunks(step).enumerate() {
        let Some(packet) = seal_initial(version, &[*v; 8], pn as u32, frames) else {
            return;
        };
        match initial_crypto(&packet) {
            Ok(pieces) => {
                let held: usize = pieces.iter().map(|p| p.data.len()).sum();
                // The frames, and the padding seal_initial adds after them.
                assert!(held <= frames.len().max(1200));
                match asm.add(pieces) {
                    Parse::Hello(h) => assert!(h.len <= MAX_HELLO),
                    Parse::NeedMore => {}
                    _ => return,
                }
            }
            Err(_) => return,
        }
    }
});
