//! The ClientHello of a QUIC connection, read from its client's Initial
//! packets without terminating QUIC. Sans-io: datagrams in, the hello out.
//!
//! An Initial packet is encrypted, but with keys anyone can derive from
//! the packet itself: HKDF over the Destination Connection ID the client
//! chose, with a salt the version fixes (RFC 9001 §5.2; QUIC v2, RFC 9369
//! §3.3, has its own salt and labels). A load balancer that derives them
//! removes the header protection (§5.4), opens the AES-128-GCM payload
//! (§5.3) and finds CRYPTO frames that carry the TLS handshake as a byte
//! stream without TLS records (§4.1). A ClientHello may span several
//! Initial packets (post-quantum key shares do not fit in one), in one
//! datagram (coalesced) or several: [`Assembly`] puts a flow's CRYPTO
//! bytes back in order until they hold the whole hello.
//!
//! The cryptography is ring's (HKDF-SHA256, AES-128-GCM, and its QUIC
//! header protection).

use std::fmt;

use ring::aead::quic::{AES_128, HeaderProtectionKey};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, KeyType, Prk, Salt};

use super::hello::{self, MAX_HELLO, Parse};

/// QUIC version 1 (RFC 9000).
pub const V1: u32 = 0x0000_0001;
/// QUIC version 2 (RFC 9369).
pub const V2: u32 = 0x6b33_43cf;

/// The Initial salts (RFC 9001 §5.2, RFC 9369 §3.3.1).
const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];

/// A connection ID is at most 20 bytes in versions 1 and 2.
const MAX_CID: usize = 20;
/// The AEAD tag after each payload.
const TAG: usize = 16;
/// The header protection sample, 4 bytes after the packet number's start.
const SAMPLE: usize = 16;

/// Why a datagram's Initial packets give no hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotRead {
    /// Not a QUIC long-header packet (another protocol, or a short header
    /// of a connection already under way).
    NotQuic,
    /// A QUIC version whose Initial this reads not (neither 1 nor 2).
    Version,
    /// A long header that is not an Initial packet first.
    NotInitial,
    /// A length that runs past the datagram, or a field out of range.
    Malformed,
    /// The payload does not open with the keys its header gives.
    Undecryptable,
    /// Frames an Initial packet may not carry, or that do not parse.
    Frames,
}

impl fmt::Display for NotRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotRead::NotQuic => "not a QUIC long header",
            NotRead::Version => "a QUIC version other than 1 and 2",
            NotRead::NotInitial => "not an Initial packet",
            NotRead::Malformed => "a malformed QUIC header",
            NotRead::Undecryptable => "an Initial packet that does not decrypt",
            NotRead::Frames => "an Initial packet with frames it may not carry",
        })
    }
}

/// A piece of the CRYPTO stream: its offset and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crypto {
    /// Where in the stream it goes.
    pub offset: u64,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// The CRYPTO stream pieces of the Initial packets in one datagram (the
/// client's first datagrams hold little else: padding, pings, acks).
pub fn initial_crypto(datagram: &[u8]) -> Result<Vec<Crypto>, NotRead> {
    let mut out = Vec::new();
    let mut rest = datagram;
    let mut first = true;
    while !rest.is_empty() {
        let b0 = rest[0];
        // A short header (or padding after the last packet) ends the
        // coalesced long-header packets.
        if b0 & 0x80 == 0 {
            if first {
                return Err(NotRead::NotQuic);
            }
            break;
        }
        if b0 & 0x40 == 0 {
            return Err(NotRead::NotQuic);
        }
        let version = u32::from_be_bytes(
            rest.get(1..5)
                .ok_or(NotRead::Malformed)?
                .try_into()
                .map_err(|_| NotRead::Malformed)?,
        );
        let initial_type = match version {
            V1 => 0,
            V2 => 1,
            _ if first => return Err(NotRead::Version),
            _ => break,
        };
        let ty = (b0 >> 4) & 0x03;
        let header = LongHeader::read(rest, ty == initial_type)?;
        let packet = &rest[..header.end];
        if ty == initial_type {
            let plain = open(version, &header, packet)?;
            frames(&plain, &mut out)?;
        } else if first {
            return Err(NotRead::NotInitial);
        }
        rest = &rest[header.end..];
        first = false;
    }
    Ok(out)
}

/// A long header's fields, up to its (protected) packet number.
struct LongHeader<'a> {
    dcid: &'a [u8],
    /// Where the packet number starts.
    pn_at: usize,
    /// Where the packet ends (its Length counted from `pn_at`).
    end: usize,
}

impl<'a> LongHeader<'a> {
    fn read(p: &'a [u8], initial: bool) -> Result<LongHeader<'a>, NotRead> {
        let mut r = Cursor { p, at: 5 };
        let dcid_len = usize::from(r.u8()?);
        if dcid_len > MAX_CID {
            return Err(NotRead::Malformed);
        }
        let dcid = r.take(dcid_len)?;
        let scid_len = usize::from(r.u8()?);
        if scid_len > MAX_CID {
            return Err(NotRead::Malformed);
        }
        r.take(scid_len)?;
        if initial {
            let token = r.varint()?;
            r.take(usize::try_from(token).map_err(|_| NotRead::Malformed)?)?;
        }
        let len = usize::try_from(r.varint()?).map_err(|_| NotRead::Malformed)?;
        let pn_at = r.at;
        let end = pn_at.checked_add(len).ok_or(NotRead::Malformed)?;
        if end > p.len() {
            return Err(NotRead::Malformed);
        }
        Ok(LongHeader { dcid, pn_at, end })
    }
}

/// The client's Initial keys of `version` for the connection ID `dcid`.
struct Keys {
    key: LessSafeKey,
    iv: [u8; 12],
    hp: HeaderProtectionKey,
}

/// A length for ring's HKDF output.
struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// TLS 1.3's HKDF-Expand-Label with an empty context (RFC 8446 §7.1).
fn expand_label(prk: &Prk, label: &[u8], out: &mut [u8]) -> Result<(), NotRead> {
    let len = (out.len() as u16).to_be_bytes();
    let label_len = [(b"tls13 ".len() + label.len()) as u8];
    let info: [&[u8]; 5] = [&len, &label_len, b"tls13 ", label, &[0]];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| NotRead::Undecryptable)
}

impl Keys {
    fn client(version: u32, dcid: &[u8]) -> Result<Keys, NotRead> {
        let (salt, key_label, iv_label, hp_label): (&[u8], &[u8], &[u8], &[u8]) = match version {
            V2 => (&SALT_V2, b"quicv2 key", b"quicv2 iv", b"quicv2 hp"),
            _ => (&SALT_V1, b"quic key", b"quic iv", b"quic hp"),
        };
        let initial = Salt::new(HKDF_SHA256, salt).extract(dcid);
        let mut secret = [0u8; 32];
        expand_label(&initial, b"client in", &mut secret)?;
        let client = Prk::new_less_safe(HKDF_SHA256, &secret);
        let (mut key, mut iv, mut hp) = ([0u8; 16], [0u8; 12], [0u8; 16]);
        expand_label(&client, key_label, &mut key)?;
        expand_label(&client, iv_label, &mut iv)?;
        expand_label(&client, hp_label, &mut hp)?;
        let bad = |_| NotRead::Undecryptable;
        Ok(Keys {
            key: LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).map_err(bad)?),
            iv,
            hp: HeaderProtectionKey::new(&AES_128, &hp).map_err(bad)?,
        })
    }
}

/// Removes an Initial packet's protection: its payload, decrypted.
fn open(version: u32, h: &LongHeader<'_>, packet: &[u8]) -> Result<Vec<u8>, NotRead> {
    let keys = Keys::client(version, h.dcid)?;
    let sample = packet
        .get(h.pn_at + 4..h.pn_at + 4 + SAMPLE)
        .ok_or(NotRead::Malformed)?;
    let mask = keys
        .hp
        .new_mask(sample)
        .map_err(|_| NotRead::Undecryptable)?;
    let b0 = packet[0] ^ (mask[0] & 0x0f);
    let pn_len = usize::from(b0 & 0x03) + 1;
    let payload_at = h.pn_at + pn_len;
    if payload_at + TAG > packet.len() {
        return Err(NotRead::Malformed);
    }
    let mut header = packet[..payload_at].to_vec();
    header[0] = b0;
    let mut pn: u64 = 0;
    for (i, byte) in header[h.pn_at..].iter_mut().enumerate() {
        *byte ^= mask[1 + i];
        pn = pn << 8 | u64::from(*byte);
    }
    // The client's first packets: the truncated number is the number.
    let mut nonce = keys.iv;
    for (n, p) in nonce[4..].iter_mut().zip(pn.to_be_bytes()) {
        *n ^= p;
    }
    let mut payload = packet[payload_at..].to_vec();
    let plain = keys
        .key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&header[..]),
            &mut payload,
        )
        .map_err(|_| NotRead::Undecryptable)?;
    let n = plain.len();
    payload.truncate(n);
    Ok(payload)
}

/// The client's side of [`initial_crypto`], for tests and fuzzing: an
/// Initial packet of `version` to the connection ID `dcid` (no source
/// connection ID, no token) numbered `pn`, carrying the frames `payload`,
/// padded to 1200 bytes as clients pad theirs. `None` for an unknown
/// version, a connection ID over 20 bytes or a payload over 16000 bytes.
pub fn seal_initial(version: u32, dcid: &[u8], pn: u32, payload: &[u8]) -> Option<Vec<u8>> {
    let ty: u8 = match version {
        V1 => 0,
        V2 => 1,
        _ => return None,
    };
    if dcid.len() > MAX_CID || payload.len() > 16_000 {
        return None;
    }
    let keys = Keys::client(version, dcid).ok()?;
    // Header: form, fixed bit, type, a 4-byte packet number.
    let mut p = vec![0xc0 | ty << 4 | 0x03];
    p.extend_from_slice(&version.to_be_bytes());
    p.push(dcid.len() as u8);
    p.extend_from_slice(dcid);
    p.extend_from_slice(&[0, 0]); // no source connection ID, no token
    let header_len = p.len() + 2 + 4;
    let mut plain = payload.to_vec();
    plain.resize(
        plain.len().max(1200usize.saturating_sub(header_len + TAG)),
        0,
    );
    let len = (4 + plain.len() + TAG) as u16;
    p.extend_from_slice(&(0x4000 | len).to_be_bytes());
    let pn_at = p.len();
    p.extend_from_slice(&pn.to_be_bytes());
    let mut nonce = keys.iv;
    for (n, b) in nonce[4..].iter_mut().zip(u64::from(pn).to_be_bytes()) {
        *n ^= b;
    }
    keys.key
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&p[..]),
            &mut plain,
        )
        .ok()?;
    p.extend_from_slice(&plain);
    let mask = keys.hp.new_mask(&p[pn_at + 4..pn_at + 4 + SAMPLE]).ok()?;
    p[0] ^= mask[0] & 0x0f;
    for (b, m) in p[pn_at..pn_at + 4].iter_mut().zip(&mask[1..]) {
        *b ^= m;
    }
    Some(p)
}

/// The CRYPTO frames of a decrypted Initial payload (RFC 9000 §12.4: it
/// may hold PADDING, PING, ACK, CRYPTO and CONNECTION_CLOSE).
fn frames(plain: &[u8], out: &mut Vec<Crypto>) -> Result<(), NotRead> {
    let mut r = Cursor { p: plain, at: 0 };
    let bad = |_| NotRead::Frames;
    while r.at < plain.len() {
        match r.varint().map_err(bad)? {
            0x00 | 0x01 => {}
            ty @ (0x02 | 0x03) => {
                r.varint().map_err(bad)?; // largest acknowledged
                r.varint().map_err(bad)?; // delay
                let ranges = r.varint().map_err(bad)?;
                r.varint().map_err(bad)?; // first range
                for _ in 0..ranges {
                    r.varint().map_err(bad)?;
                    r.varint().map_err(bad)?;
                }
                if ty == 0x03 {
                    for _ in 0..3 {
                        r.varint().map_err(bad)?;
                    }
                }
            }
            0x06 => {
                let offset = r.varint().map_err(bad)?;
                let len = usize::try_from(r.varint().map_err(bad)?).map_err(|_| NotRead::Frames)?;
                let data = r.take(len).map_err(bad)?;
                out.push(Crypto {
                    offset,
                    data: data.to_vec(),
                });
            }
            // CONNECTION_CLOSE: the client gives up; nothing after counts.
            0x1c => return Ok(()),
            _ => return Err(NotRead::Frames),
        }
    }
    Ok(())
}

/// A bounds-checked reader.
struct Cursor<'a> {
    p: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NotRead> {
        let end = self.at.checked_add(n).ok_or(NotRead::Malformed)?;
        let s = self.p.get(self.at..end).ok_or(NotRead::Malformed)?;
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, NotRead> {
        Ok(self.take(1)?[0])
    }

    /// A variable-length integer (RFC 9000 §16).
    fn varint(&mut self) -> Result<u64, NotRead> {
        let first = self.u8()?;
        let extra = (1usize << (first >> 6)) - 1;
        let mut v = u64::from(first & 0x3f);
        for b in self.take(extra)? {
            v = v << 8 | u64::from(*b);
        }
        Ok(v)
    }
}

/// A flow's CRYPTO stream so far, put in order from its start, at most
/// [`MAX_HELLO`] bytes of it.
#[derive(Clone, Debug, Default)]
pub struct Assembly {
    /// The stream's bytes from offset 0, as far as they are contiguous.
    start: Vec<u8>,
    /// Pieces beyond a gap, kept until the gap fills.
    later: Vec<Crypto>,
    /// Bytes held in `later`.
    held: usize,
}

impl Assembly {
    /// Adds the pieces of one datagram; what the stream then holds.
    pub fn add(&mut self, pieces: Vec<Crypto>) -> Parse {
        for piece in pieces {
            let end = piece.offset.saturating_add(piece.data.len() as u64);
            if end > MAX_HELLO as u64 || self.held + piece.data.len() > MAX_HELLO {
                return Parse::TooLarge;
            }
            self.held += piece.data.len();
            self.later.push(piece);
        }
        // Whatever now touches the contiguous start joins it, retransmitted
        // or overlapping bytes included (the first copy stands).
        loop {
            let have = self.start.len() as u64;
            let Some(i) = self.later.iter().position(|c| c.offset <= have) else {
                break;
            };
            let piece = self.later.swap_remove(i);
            self.held -= piece.data.len();
            let skip = (have - piece.offset) as usize;
            if let Some(new) = piece.data.get(skip..) {
                self.start.extend_from_slice(new);
            }
        }
        hello::parse_handshake(&self.start)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The keys of RFC 9001's and RFC 9369's examples (Appendix A.1):
    /// the client's Initial key, IV and header protection key for the
    /// connection ID 0x8394c8f03e515708.
    #[test]
    fn initial_keys_are_the_rfcs() {
        let dcid = hex("8394c8f03e515708");
        for (version, key, iv, hp) in [
            (
                V1,
                "1f369613dd76d5467730efcbe3b1a22d",
                "fa044b2f42a3fd3b46fb255c",
                "9f50449e04a0e810283a1e9933adedd2",
            ),
            (
                V2,
                "8b1a0bc121284290a29e0971b5cd045d",
                "91f73e2351d8fa91660e909f",
                "45b95e15235d6f45a6b19cbcb0294ba9",
            ),
        ] {
            let (salt, labels): (&[u8], [&[u8]; 3]) = match version {
                V2 => (&SALT_V2, [b"quicv2 key", b"quicv2 iv", b"quicv2 hp"]),
                _ => (&SALT_V1, [b"quic key", b"quic iv", b"quic hp"]),
            };
            let initial = Salt::new(HKDF_SHA256, salt).extract(&dcid);
            let mut secret = [0u8; 32];
            expand_label(&initial, b"client in", &mut secret).unwrap();
            let client = Prk::new_less_safe(HKDF_SHA256, &secret);
            for (label, want) in labels.iter().zip([key, iv, hp]) {
                let mut out = vec![0u8; want.len() / 2];
                expand_label(&client, label, &mut out).unwrap();
                assert_eq!(
                    out,
                    hex(want),
                    "{version:x} {}",
                    String::from_utf8_lossy(label)
                );
            }
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/src/sni/testdata/{name}.bin",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn read(datagrams: &[&str]) -> Vec<Parse> {
        let mut asm = Assembly::default();
        datagrams
            .iter()
            .map(|d| asm.add(initial_crypto(&fixture(d)).unwrap()))
            .collect()
    }

    /// Initial datagrams captured from aioquic 1.7 (PyPI), QUIC v1 and v2,
    /// and a hello over two Initial packets in two datagrams.
    #[test]
    fn real_initials_give_their_hello() {
        for (files, sni) in [
            (&["aioquic-v1-1"][..], "api.example.com"),
            (&["aioquic-v2-1"][..], "rpc.example.com"),
            (
                &["aioquic-large-1", "aioquic-large-2"][..],
                "big.example.com",
            ),
        ] {
            let got = read(files);
            let (last, before) = got.split_last().unwrap();
            assert!(
                before.iter().all(|p| *p == Parse::NeedMore),
                "{files:?}: {got:?}"
            );
            let Parse::Hello(h) = last else {
                panic!("{files:?}: {last:?}")
            };
            assert_eq!(h.sni.as_deref(), Some(sni));
            assert!(h.offers(b"h3"), "{:?}", h.alpn);
        }
        // The second datagram first: nothing until the first comes.
        assert!(matches!(
            read(&["aioquic-large-2", "aioquic-large-1"])[..],
            [Parse::NeedMore, Parse::Hello(_)]
        ));
    }

    #[test]
    fn a_changed_byte_or_another_version_does_not_decrypt() {
        // A byte of the payload (its packet may end before the datagram).
        let mut d = fixture("aioquic-v1-1");
        d[100] ^= 1;
        assert_eq!(initial_crypto(&d), Err(NotRead::Undecryptable));
        // v1's packet read as v2's (its version field rewritten): another
        // packet type and other keys.
        let mut d = fixture("aioquic-v1-1");
        d[1..5].copy_from_slice(&V2.to_be_bytes());
        assert!(initial_crypto(&d).is_err());
        // A changed connection ID derives other keys.
        let mut d = fixture("aioquic-v2-1");
        d[6] ^= 0xff;
        assert_eq!(initial_crypto(&d), Err(NotRead::Undecryptable));
    }

    /// Frames as an Initial may carry them: ACK (with ECN), PING and
    /// PADDING around CRYPTO frames, read back; frames it may not carry
    /// are refused.
    #[test]
    fn sealed_initials_open_to_their_frames() {
        let frames = [
            &[
                0x01, 0x00, 0x03, 0x05, 0x00, 0x01, 0x02, 0x02, 0x01, 0x01, 0x00, 0x00,
            ][..],
            &[0x06, 0x00, 0x03, b'a', b'b', b'c'],
            &[0x06, 0x40, 0x64, 0x02, b'x', b'y'],
        ]
        .concat();
        for version in [V1, V2] {
            let p = seal_initial(version, &[7; 8], 2, &frames).unwrap();
            assert_eq!(p.len(), 1200);
            assert_eq!(
                initial_crypto(&p).unwrap(),
                [
                    Crypto {
                        offset: 0,
                        data: b"abc".to_vec()
                    },
                    Crypto {
                        offset: 100,
                        data: b"xy".to_vec()
                    },
                ]
            );
            // STREAM frames have no place in an Initial.
            let stream = seal_initial(version, &[7; 8], 3, &[0x08, 0x00, 0x01, b'z']).unwrap();
            assert_eq!(initial_crypto(&stream), Err(NotRead::Frames));
            // Two packets coalesced in one datagram: both read.
            let mut two = seal_initial(version, &[7; 8], 0, &[0x06, 0x00, 0x01, b'1']).unwrap();
            two.extend(seal_initial(version, &[7; 8], 1, &[0x06, 0x01, 0x01, b'2']).unwrap());
            assert_eq!(initial_crypto(&two).unwrap().len(), 2);
        }
        assert_eq!(seal_initial(0xff00_001d, &[1], 0, &[]), None);
    }

    #[test]
    fn the_stream_is_put_back_in_order() {
        let hello = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/sni/testdata/openssl-sni-alpn.bin"
        ))
        .unwrap();
        // The handshake message without its record header, in three
        // pieces given last first, one twice.
        let msg = hello[5..].to_vec();
        let (a, b, c) = (&msg[..100], &msg[100..300], &msg[300..]);
        let piece = |offset: usize, data: &[u8]| Crypto {
            offset: offset as u64,
            data: data.to_vec(),
        };
        let mut asm = Assembly::default();
        assert_eq!(asm.add(vec![piece(300, c)]), Parse::NeedMore);
        assert_eq!(asm.add(vec![piece(100, b), piece(300, c)]), Parse::NeedMore);
        let Parse::Hello(h) = asm.add(vec![piece(0, a)]) else {
            panic!("no hello")
        };
        assert!(h.sni.is_some());
        // A piece far past any hello is refused, not kept.
        let mut asm = Assembly::default();
        assert_eq!(asm.add(vec![piece(MAX_HELLO, b"x")]), Parse::TooLarge);
    }

    #[test]
    fn other_datagrams_are_named() {
        assert_eq!(initial_crypto(b"\x16\x03\x01"), Err(NotRead::NotQuic));
        assert_eq!(initial_crypto(&[0x40, 1, 2, 3]), Err(NotRead::NotQuic));
        let mut other = vec![0xc0, 0xff, 0, 0, 0x1d, 0];
        other.resize(1200, 0);
        assert_eq!(initial_crypto(&other), Err(NotRead::Version));
        // A v1 Initial whose length runs past the datagram.
        let cut = [
            0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x44, 0xd0, 0,
        ];
        assert_eq!(initial_crypto(&cut), Err(NotRead::Malformed));
        // A v1 Handshake packet first.
        let mut hs = vec![0xe0, 0, 0, 0, 1, 0, 0, 0x40, 40];
        hs.resize(9 + 40, 0);
        assert_eq!(initial_crypto(&hs), Err(NotRead::NotInitial));
        // A well-formed Initial whose payload was not sealed with its keys.
        let mut forged = vec![
            0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x44, 0x80,
        ];
        forged.resize(18 + 0x480, 0xaa);
        assert_eq!(initial_crypto(&forged), Err(NotRead::Undecryptable));
    }
}
