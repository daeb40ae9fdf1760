//! The kernel's hash primitives, bit for bit.
//!
//! sh, dh, lblc and lblcr bucket with `hash_32()` of include/linux/hash.h; mh
//! permutes with `hsiphash()` of lib/siphash.c, which on 64-bit kernels is
//! SipHash-1-3 over 64-bit words. Addresses are folded to 32 bits as the
//! schedulers' `*_hashkey()` functions do: an IPv4 address is its own value,
//! an IPv6 address the XOR of its four 32-bit words, both in host order.

use std::net::IpAddr;

/// `GOLDEN_RATIO_32` of include/linux/hash.h.
pub const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// `hash_32(val, bits)`: the top `bits` bits of `val * GOLDEN_RATIO_32`.
pub fn hash_32(val: u32, bits: u32) -> u32 {
    debug_assert!((1..=32).contains(&bits));
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// `ntohl(addr_fold)` of the IPVS hash-key functions.
pub fn addr_fold(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let o = a.octets();
            let word = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            word(0) ^ word(4) ^ word(8) ^ word(12)
        }
    }
}

/// An `hsiphash_key_t` of a 64-bit kernel: two `unsigned long` words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HsipKey(pub u64, pub u64);

const SIPHASH_CONST_0: u64 = 0x736f_6d65_7073_6575;
const SIPHASH_CONST_1: u64 = 0x646f_7261_6e64_6f6d;
const SIPHASH_CONST_2: u64 = 0x6c79_6765_6e65_7261;
const SIPHASH_CONST_3: u64 = 0x7465_6462_7974_6573;

#[inline(always)]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// `hsiphash(&v, sizeof(u32), key)` on a little-endian 64-bit kernel
/// (SipHash-1-3: one compression round, three finalization rounds).
pub fn hsiphash_u32(v: u32, key: HsipKey) -> u32 {
    let mut s = [
        SIPHASH_CONST_0 ^ key.0,
        SIPHASH_CONST_1 ^ key.1,
        SIPHASH_CONST_2 ^ key.0,
        SIPHASH_CONST_3 ^ key.1,
    ];
    // Four message bytes: no full 64-bit word, so all of them go into the
    // final block together with the length in the top byte.
    let b: u64 = (4u64 << 56) | u64::from(v);
    s[3] ^= b;
    sipround(&mut s);
    s[0] ^= b;
    s[2] ^= 0xff;
    sipround(&mut s);
    sipround(&mut s);
    sipround(&mut s);
    ((s[0] ^ s[1]) ^ (s[2] ^ s[3])) as u32
}

/// Greatest common divisor, as lib/math/gcd.c (both arguments positive).
pub fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        let r = a % b;
        a = b;
        b = r;
    }
    a
}

/// `fls()`: the 1-based index of the most significant set bit, 0 for 0.
pub fn fls(x: u32) -> u32 {
    32 - x.leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_32_matches_hand_derived_buckets() {
        // Worked out in the sched-examples (sh_weight.jsonl).
        let ip = |s: &str| addr_fold(s.parse().unwrap());
        assert_eq!(hash_32(ip("192.0.2.1"), 8), 50);
        assert_eq!(hash_32(ip("192.0.2.3"), 8), 246);
        assert_eq!(hash_32(ip("192.0.2.4"), 8), 88);
        assert_eq!(hash_32(ip("198.51.100.7"), 8), 171);
        assert_eq!(hash_32(ip("203.0.113.9"), 8), 64);
    }

    #[test]
    fn ipv6_fold_is_xor_of_words() {
        let a: IpAddr = "2001:db8:aa::1".parse().unwrap();
        assert_eq!(addr_fold(a), 0x20ab_0db9);
        // sh_port_v6.jsonl: port 1234 lands in bucket 194.
        assert_eq!(hash_32(addr_fold(a).wrapping_add(1234), 8), 194);
    }

    #[test]
    fn hsiphash_vectors() {
        // Values from tests/tools/ipvs_hash_model.py, an independent
        // implementation of lib/siphash.c's 64-bit hsiphash.
        let key = HsipKey(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        assert_eq!(hsiphash_u32(0x0302_0100, key), 0x88d3_8328);
        // ip_vs_mh_permutate() of 10.0.0.1:80 under the two fixed keys.
        let v = 0x0a00_0001u32 + 80;
        assert_eq!(
            hsiphash_u32(v, HsipKey(2_654_435_761, 2_654_435_761)),
            0x439c_0cbe
        );
        assert_eq!(
            hsiphash_u32(v, HsipKey(2_654_446_892, 2_654_446_892)),
            0x97b3_dc47
        );
    }

    #[test]
    fn gcd_and_fls() {
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(7, 1), 1);
        assert_eq!(fls(0), 0);
        assert_eq!(fls(1), 1);
        assert_eq!(fls(64), 7);
        assert_eq!(fls(u32::MAX), 32);
    }
}
