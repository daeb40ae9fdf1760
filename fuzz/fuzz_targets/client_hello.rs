//! The ClientHello parser: whatever a client sends, in whatever pieces,
//! it ends in a verdict without a panic, every prefix of a hello asks for
//! more or already knows, and a hello found is found again in its own
//! bytes. The first byte sets the size of the pieces.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rvs_proxy::sni::hello::{MAX_HELLO, Parse, parse};

fuzz_target!(|data: &[u8]| {
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(size % 64) + 1;
    let mut n = 0;
    while n < rest.len() {
        n = (n + step).min(rest.len());
        match parse(&rest[..n]) {
            Parse::NeedMore => assert!(n <= MAX_HELLO),
            Parse::Hello(h) => {
                assert!(h.len <= n && h.len <= MAX_HELLO);
                assert_eq!(parse(&rest[..h.len]), Parse::Hello(h));
                return;
            }
            _ => return,
        }
    }
});
