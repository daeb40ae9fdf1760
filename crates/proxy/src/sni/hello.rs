//! The TLS ClientHello, read without terminating TLS: the server name
//! (SNI, RFC 6066 §3) and the protocols offered (ALPN, RFC 7301) from the
//! first bytes a client sends. Sans-io: [`parse`] looks at the bytes read
//! so far and says whether they hold a whole hello, need more, or are not
//! TLS; the caller reads on and calls it again, and forwards every byte
//! unchanged to the real server it then chooses.
//!
//! The hello may arrive in any number of TCP segments and span several TLS
//! records (the record layer may fragment a handshake message anywhere,
//! RFC 8446 §5.1; post-quantum key shares make 1.5 KB hellos common, and
//! some clients split them). At most [`MAX_HELLO`] bytes are read: a hello
//! that needs more is refused, never waited for.

use std::fmt;

/// The most bytes read for a hello, record headers included.
pub const MAX_HELLO: usize = 16 * 1024;

/// TLS record type of a handshake (RFC 8446 §5.1).
const HANDSHAKE: u8 = 22;
/// Handshake type of a ClientHello (RFC 8446 §4).
const CLIENT_HELLO: u8 = 1;
/// Extension types (IANA): server_name, application_layer_protocol_negotiation.
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
/// The largest record payload a client may send (2^14, RFC 8446 §5.1).
const MAX_RECORD: usize = 16 * 1024;

/// What a ClientHello says of where it wants to go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The host name it asks for, lower-cased; `None` without the
    /// extension, or when the name in it is not a DNS host name.
    pub sni: Option<String>,
    /// The protocols it offers, in its order of preference; empty without
    /// the extension.
    pub alpn: Vec<Vec<u8>>,
    /// The bytes the hello took, record headers included (what was read
    /// beyond is the client's next data).
    pub len: usize,
}

impl ClientHello {
    /// Whether it offers `protocol`.
    pub fn offers(&self, protocol: &[u8]) -> bool {
        self.alpn.iter().any(|p| p == protocol)
    }
}

/// What the bytes read so far are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parse {
    /// A whole ClientHello.
    Hello(ClientHello),
    /// The start of one: read more.
    NeedMore,
    /// Not a TLS handshake (another protocol, or SSL 2's hello).
    NotTls,
    /// A handshake that is not a well-formed ClientHello.
    Invalid(Invalid),
    /// A hello that needs more than [`MAX_HELLO`] bytes.
    TooLarge,
}

/// What is wrong with a hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// A record longer than TLS allows, or empty.
    RecordLength,
    /// A record of another type before the hello ended.
    RecordType,
    /// The first handshake message is not a ClientHello.
    NotClientHello,
    /// A length that runs past its container.
    Truncated,
    /// A field with an impossible value (an odd cipher suite list, a
    /// session id over 32 bytes, an empty ALPN name).
    Field,
    /// The same extension twice (RFC 8446 §4.2).
    DuplicateExtension,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Invalid::RecordLength => "a TLS record of an impossible length",
            Invalid::RecordType => "a TLS record other than a handshake before the hello ended",
            Invalid::NotClientHello => "the first handshake message is not a ClientHello",
            Invalid::Truncated => "a length in the hello runs past its end",
            Invalid::Field => "a field of the hello has an impossible value",
            Invalid::DuplicateExtension => "an extension appears twice in the hello",
        })
    }
}

/// Looks at the first bytes of a connection.
pub fn parse(bytes: &[u8]) -> Parse {
    // The handshake bytes, gathered from the records read so far.
    let mut handshake: Vec<u8> = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = bytes.get(at..at + 5) else {
            // A partial header: what there is of it must look like TLS.
            let part = bytes.get(at..).unwrap_or_default();
            if at == 0 && !looks_like_tls(part) {
                return Parse::NotTls;
            }
            if at + 5 > MAX_HELLO {
                return Parse::TooLarge;
            }
            return need_more(&handshake);
        };
        if at == 0 && !looks_like_tls(header) {
            return Parse::NotTls;
        }
        if header[0] != HANDSHAKE {
            return Parse::Invalid(Invalid::RecordType);
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Parse::Invalid(Invalid::RecordLength);
        }
        let end = at + 5 + len;
        let Some(payload) = bytes.get(at + 5..end) else {
            if end > MAX_HELLO {
                return Parse::TooLarge;
            }
            handshake.extend_from_slice(bytes.get(at + 5..).unwrap_or_default());
            return need_more(&handshake);
        };
        handshake.extend_from_slice(payload);
        at = end;
        if handshake.len() < 4 {
            continue;
        }
        if handshake[0] != CLIENT_HELLO {
            return Parse::Invalid(Invalid::NotClientHello);
        }
        let body_len = body_len(&handshake);
        if handshake.len() < 4 + body_len {
            // The hello goes on in the next record, which needs a header
            // of its own: more than the handshake bytes still missing.
            if at + 5 + (4 + body_len - handshake.len()) > MAX_HELLO {
                return Parse::TooLarge;
            }
            continue;
        }
        return match client_hello(&handshake[4..4 + body_len]) {
            Ok(mut hello) => {
                hello.len = at;
                Parse::Hello(hello)
            }
            Err(e) => Parse::Invalid(e),
        };
    }
}

/// Looks at the first bytes of a handshake carried without TLS records:
/// QUIC's CRYPTO stream (RFC 9001 §4.1), the same messages as a TLS
/// handshake's, framed by QUIC. `len` is then the message's length.
pub fn parse_handshake(handshake: &[u8]) -> Parse {
    if handshake.len() < 4 {
        return need_more(handshake);
    }
    if handshake[0] != CLIENT_HELLO {
        return Parse::Invalid(Invalid::NotClientHello);
    }
    let body_len = body_len(handshake);
    if 4 + body_len > MAX_HELLO {
        return Parse::TooLarge;
    }
    let Some(body) = handshake.get(4..4 + body_len) else {
        return Parse::NeedMore;
    };
    match client_hello(body) {
        Ok(mut hello) => {
            hello.len = 4 + body_len;
            Parse::Hello(hello)
        }
        Err(e) => Parse::Invalid(e),
    }
}

/// More is needed, unless the handshake read so far already shows a
/// message other than a ClientHello, or one too long to wait for.
fn need_more(handshake: &[u8]) -> Parse {
    match handshake.first() {
        Some(&t) if t != CLIENT_HELLO => Parse::Invalid(Invalid::NotClientHello),
        _ if handshake.len() >= 4 => {
            // Its bytes alone, without the record headers they need.
            if 4 + body_len(handshake) + 5 > MAX_HELLO {
                Parse::TooLarge
            } else {
                Parse::NeedMore
            }
        }
        _ => Parse::NeedMore,
    }
}

/// The length of the handshake message whose 4-byte header starts
/// `handshake` (a 24-bit length after the type).
fn body_len(handshake: &[u8]) -> usize {
    usize::from(handshake[1]) << 16 | usize::from(handshake[2]) << 8 | usize::from(handshake[3])
}

/// Whether the first bytes can begin a TLS handshake record: type 22 and
/// a record version of 3.x (SSL 3.0 to TLS 1.3 all write 3.1 or 3.3 here;
/// 3.0 is accepted as the field's value, not as a protocol).
fn looks_like_tls(first: &[u8]) -> bool {
    match first {
        [] => true,
        [t] => *t == HANDSHAKE,
        [t, major, rest @ ..] => {
            *t == HANDSHAKE && *major == 3 && rest.first().is_none_or(|minor| *minor <= 4)
        }
    }
}

/// A bounds-checked reader over a hello's bytes.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Invalid> {
        if n > self.rest.len() {
            return Err(Invalid::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Invalid> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Invalid> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Result<&'a [u8], Invalid> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Result<&'a [u8], Invalid> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// The ClientHello's body (RFC 8446 §4.1.2, and TLS 1.2's, which may end
/// without extensions).
fn client_hello(body: &[u8]) -> Result<ClientHello, Invalid> {
    let mut r = Reader { rest: body };
    let _legacy_version = r.u16()?;
    let _random = r.take(32)?;
    if r.vec8()?.len() > 32 {
        return Err(Invalid::Field);
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(Invalid::Field);
    }
    if r.vec8()?.is_empty() {
        return Err(Invalid::Field);
    }
    let mut hello = ClientHello::default();
    if r.is_empty() {
        return Ok(hello);
    }
    let mut exts = Reader { rest: r.vec16()? };
    let mut seen: Vec<u16> = Vec::new();
    while !exts.is_empty() {
        let ty = exts.u16()?;
        let data = exts.vec16()?;
        if seen.contains(&ty) {
            return Err(Invalid::DuplicateExtension);
        }
        seen.push(ty);
        match ty {
            EXT_SERVER_NAME => hello.sni = server_name(data)?,
            EXT_ALPN => hello.alpn = alpn(data)?,
            _ => {}
        }
    }
    Ok(hello)
}

/// The server_name extension: the first host_name entry (there is at most
/// one of each type), if it is a DNS host name.
fn server_name(data: &[u8]) -> Result<Option<String>, Invalid> {
    let mut r = Reader { rest: data };
    let mut list = Reader { rest: r.vec16()? };
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name = list.vec16()?;
        if name_type == 0 {
            return Ok(host_name(name));
        }
    }
    Ok(None)
}

/// `name` as a lower-cased DNS host name: labels of 1 to 63 letters,
/// digits, hyphens and underscores, 253 bytes at most, no trailing dot
/// (RFC 6066 forbids it). `None` when it is not one.
pub fn host_name(name: &[u8]) -> Option<String> {
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let ok = name.split(|b| *b == b'.').all(|label| {
        (1..=63).contains(&label.len())
            && label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    });
    ok.then(|| String::from_utf8_lossy(name).to_ascii_lowercase())
}

/// The ALPN extension's protocol names.
fn alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, Invalid> {
    let mut r = Reader { rest: data };
    let mut list = Reader { rest: r.vec16()? };
    let mut out = Vec::new();
    while !list.is_empty() {
        let p = list.vec8()?;
        if p.is_empty() {
            return Err(Invalid::Field);
        }
        out.push(p.to_vec());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// ClientHellos as real clients sent them (captured from a listening
    /// socket on loopback): OpenSSL 3.0's s_client, curl 7.88 and
    /// Python 3's ssl.
    const OPENSSL: &[u8] = include_bytes!("testdata/openssl-sni-alpn.bin");
    const OPENSSL_NO_SNI: &[u8] = include_bytes!("testdata/openssl-nosni.bin");
    const OPENSSL_TLS12: &[u8] = include_bytes!("testdata/openssl-tls12.bin");
    const CURL: &[u8] = include_bytes!("testdata/curl.bin");
    const PYTHON: &[u8] = include_bytes!("testdata/python.bin");

    fn hello(bytes: &[u8]) -> ClientHello {
        match parse(bytes) {
            Parse::Hello(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn real_clients_hellos_are_read() {
        let h = hello(OPENSSL);
        assert_eq!(h.sni.as_deref(), Some("api.example.com"), "lower-cased");
        assert_eq!(h.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert!(h.offers(b"h2") && !h.offers(b"h3"));
        assert_eq!(h.len, OPENSSL.len());
        let h = hello(OPENSSL_NO_SNI);
        assert_eq!((h.sni, h.alpn.len()), (None, 0));
        assert_eq!(
            hello(OPENSSL_TLS12).sni.as_deref(),
            Some("legacy.example.net")
        );
        let h = hello(CURL);
        assert_eq!(h.sni.as_deref(), Some("www.example.org"));
        assert!(h.offers(b"h2") && h.offers(b"http/1.1"));
        let h = hello(PYTHON);
        assert_eq!(h.sni.as_deref(), Some("rpc.example.com"));
        assert_eq!(h.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    /// Every prefix of a hello asks for more; the whole says what it is;
    /// bytes after it (the client's next data) are not part of it.
    #[test]
    fn a_hello_read_in_pieces_asks_for_more_until_it_is_whole() {
        for h in [OPENSSL, CURL, PYTHON, OPENSSL_TLS12] {
            for n in 0..h.len() {
                assert_eq!(parse(&h[..n]), Parse::NeedMore, "{n} of {}", h.len());
            }
            let mut more = h.to_vec();
            more.extend_from_slice(b"\x17\x03\x03\x00\x05hello");
            assert_eq!(hello(&more).len, h.len());
        }
    }

    /// The same hello fragmented over records of `size` bytes of handshake
    /// each (the record layer may cut it anywhere).
    fn fragmented(h: &[u8], size: usize) -> Vec<u8> {
        let handshake = &h[5..];
        let mut out = Vec::new();
        for piece in handshake.chunks(size) {
            out.extend_from_slice(&[HANDSHAKE, 3, 1]);
            out.extend_from_slice(&u16::try_from(piece.len()).unwrap().to_be_bytes());
            out.extend_from_slice(piece);
        }
        out
    }

    #[test]
    fn a_hello_over_several_records_is_reassembled() {
        for size in [1, 3, 4, 5, 100, 200] {
            let f = fragmented(CURL, size);
            let h = hello(&f);
            assert_eq!(
                h.sni.as_deref(),
                Some("www.example.org"),
                "records of {size}"
            );
            assert_eq!(h.len, f.len());
            for n in 0..f.len() {
                assert_eq!(
                    parse(&f[..n]),
                    Parse::NeedMore,
                    "{n} of {} (records of {size})",
                    f.len()
                );
            }
        }
    }

    /// A hello with a large extension (a post-quantum key share's size and
    /// more): read whole up to the limit, refused beyond it as soon as its
    /// length says so.
    #[test]
    fn large_hellos_are_read_to_the_limit_and_refused_beyond() {
        let big = synthetic(Some("big.example.com"), &[b"h2"], 9000);
        assert!(big.len() > MAX_RECORD / 2);
        let f = fragmented(&big, MAX_RECORD);
        assert_eq!(hello(&f).sni.as_deref(), Some("big.example.com"));
        let huge = fragmented(&synthetic(Some("x.test"), &[], 20_000), 4000);
        // Its first record already tells: no need to wait for the rest.
        assert_eq!(parse(&huge[..4100]), Parse::TooLarge);
        assert_eq!(parse(&huge), Parse::TooLarge);
    }

    #[test]
    fn other_protocols_are_not_tls() {
        for first in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"\x80\x2e\x01\x03\x01",
            b"\x16\x02",
            b"\x16\x03\x09",
            b"P",
        ] {
            assert_eq!(parse(first), Parse::NotTls, "{first:?}");
        }
        assert_eq!(parse(b""), Parse::NeedMore);
        assert_eq!(parse(b"\x16"), Parse::NeedMore);
        assert_eq!(parse(b"\x16\x03\x01"), Parse::NeedMore);
    }

    #[test]
    fn malformed_handshakes_are_named() {
        // A record of another type (an alert) after a partial hello.
        let mut f = fragmented(CURL, 100);
        f.truncate(105);
        f.extend_from_slice(b"\x15\x03\x03\x00\x02\x02\x28");
        assert_eq!(parse(&f), Parse::Invalid(Invalid::RecordType));
        // A ServerHello where a ClientHello belongs.
        let mut s = CURL.to_vec();
        s[5] = 2;
        assert_eq!(parse(&s), Parse::Invalid(Invalid::NotClientHello));
        assert_eq!(parse(&s[..7]), Parse::Invalid(Invalid::NotClientHello));
        // An empty record.
        assert_eq!(
            parse(b"\x16\x03\x01\x00\x00"),
            Parse::Invalid(Invalid::RecordLength)
        );
        // Lengths that run past the end of the message.
        let mut t = synthetic(Some("a.test"), &[], 0);
        let n = t.len();
        t[n - 1 - "a.test".len()] = 0x7f;
        assert!(matches!(parse(&t), Parse::Invalid(Invalid::Truncated)));
        // The same extension twice.
        let d = synthetic_with(&[
            (EXT_ALPN, alpn_ext(&[b"h2"])),
            (EXT_ALPN, alpn_ext(&[b"h2"])),
        ]);
        assert_eq!(parse(&d), Parse::Invalid(Invalid::DuplicateExtension));
        // An empty protocol name.
        let e = synthetic_with(&[(EXT_ALPN, alpn_ext(&[b""]))]);
        assert_eq!(parse(&e), Parse::Invalid(Invalid::Field));
    }

    #[test]
    fn only_dns_host_names_are_names() {
        assert_eq!(
            host_name(b"A-b.Example.COM").as_deref(),
            Some("a-b.example.com")
        );
        assert_eq!(host_name(b"_srv.x.test").as_deref(), Some("_srv.x.test"));
        for bad in [
            &b""[..],
            b"a..b",
            b"trailing.dot.",
            b"sp ace.test",
            b"caf\xc3\xa9.test",
            b"192.0.2.1:443",
        ] {
            assert_eq!(host_name(bad), None, "{bad:?}");
        }
        assert_eq!(host_name(&[b'a'; 64]), None);
        let h = hello(&synthetic(Some("bad name.test"), &[], 0));
        assert_eq!(h.sni, None, "a name that is not one reads as none");
    }

    fn alpn_ext(protocols: &[&[u8]]) -> Vec<u8> {
        let mut list = Vec::new();
        for p in protocols {
            list.push(u8::try_from(p.len()).unwrap());
            list.extend_from_slice(p);
        }
        let mut out = u16::try_from(list.len()).unwrap().to_be_bytes().to_vec();
        out.extend_from_slice(&list);
        out
    }

    /// A ClientHello in one record (or more bytes than one holds: callers
    /// fragment it) with these extensions.
    fn synthetic_with(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut e = Vec::new();
        for (ty, data) in exts {
            e.extend_from_slice(&ty.to_be_bytes());
            e.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
            e.extend_from_slice(data);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&u16::try_from(e.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&e);
        let mut hs = vec![CLIENT_HELLO];
        hs.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![HANDSHAKE, 3, 1];
        // The length field of one record; a longer hello is fragmented by
        // the caller before it is parsed.
        rec.extend_from_slice(&u16::try_from(hs.len().min(0xffff)).unwrap().to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    /// A hello naming `sni`, offering `alpn`, padded with `padding` bytes.
    fn synthetic(sni: Option<&str>, alpn: &[&[u8]], padding: usize) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(name) = sni {
            let mut entry = vec![0];
            entry.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
            entry.extend_from_slice(name.as_bytes());
            let mut data = u16::try_from(entry.len()).unwrap().to_be_bytes().to_vec();
            data.extend_from_slice(&entry);
            exts.push((EXT_SERVER_NAME, data));
        }
        if !alpn.is_empty() {
            exts.push((EXT_ALPN, alpn_ext(alpn)));
        }
        if padding > 0 {
            exts.push((21, vec![0; padding]));
        }
        synthetic_with(&exts)
    }
}
