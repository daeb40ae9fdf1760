//! The SIP Call-ID of a datagram, found as IPVS's SIP persistence engine
//! finds it (`ip_vs_pe_sip.c`'s `get_callid()` over netfilter's
//! `ct_sip_get_header()`), so that a call reaches the server a kernel
//! director would send it to, and a datagram the kernel finds no Call-ID
//! in falls back to plain persistence here too. No I/O: bytes in, the
//! Call-ID's bytes out.
//!
//! The kernel's rules, kept here:
//!
//! - The search starts as many bytes into the payload as the IP and UDP
//!   headers take (28 for IPv4, 48 for IPv6): the kernel passes the
//!   payload's offset in the packet as an offset into the payload.
//! - A header starts a line (after CR, LF or CRLF) that is not a
//!   continuation (a line starting with a space or a tab). Its name is
//!   `Call-ID` or the compact `i` followed by a character that is not a
//!   letter, in any case.
//! - Spaces and continuation lines may stand around the colon. A name not
//!   followed by a colon ends the search: no Call-ID.
//! - The value is a word (letters, digits and ``!"%()*+,-./:<>?[\]_`{}~``,
//!   Latin-1 letters included, as the kernel's `isalnum()`), optionally
//!   `@` and a second word. An empty value moves the search on.
//! - The value must be at most 255 bytes (`IP_VS_PEDATA_MAXLEN`) and be
//!   followed by CR or LF.

/// `IP_VS_PEDATA_MAXLEN`: a longer Call-ID is not used.
pub const MAX_LEN: usize = 255;

/// The IP and UDP headers' length before a datagram's payload, where the
/// kernel's search starts: `is_v6` for an IPv6 datagram.
pub fn search_start(is_v6: bool) -> usize {
    if is_v6 { 40 + 8 } else { 20 + 8 }
}

/// The Call-ID of `payload`, searched from `start`; `None` when the kernel's
/// engine would find none (its caller then falls back).
pub fn call_id(payload: &[u8], start: usize) -> Option<&[u8]> {
    let mut from = start;
    loop {
        match header(payload, from) {
            Found::Value(at, len) => return accept(payload, at, len),
            Found::Empty(at) => from = at,
            Found::None => return None,
        }
    }
}

/// What one search for the header found.
enum Found {
    /// A value at this offset, of this length.
    Value(usize, usize),
    /// The header, with an empty value at this offset: search on from it.
    Empty(usize),
    /// No header.
    None,
}

/// `get_callid()`'s checks of a value found.
fn accept(p: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    if len > MAX_LEN || at + len >= p.len() {
        return None;
    }
    matches!(p[at + len], b'\r' | b'\n').then(|| &p[at..at + len])
}

/// `ct_sip_get_header()` for Call-ID, from offset `from`.
fn header(p: &[u8], from: usize) -> Found {
    let limit = p.len();
    let mut i = from;
    while i < limit {
        // The start of a line.
        if !matches!(p[i], b'\r' | b'\n') {
            i += 1;
            continue;
        }
        i += 1;
        if i >= limit {
            break;
        }
        if p[i - 1] == b'\r' && p[i] == b'\n' {
            i += 1;
            if i >= limit {
                break;
            }
        }
        if matches!(p[i], b' ' | b'\t') {
            continue;
        }
        const NAME: &[u8] = b"Call-Id";
        if limit - i >= NAME.len() && p[i..i + NAME.len()].eq_ignore_ascii_case(NAME) {
            i += NAME.len();
        } else if limit - i >= 2 && p[i].eq_ignore_ascii_case(&b'i') && !is_alpha(p[i + 1]) {
            i += 1;
        } else {
            continue;
        }
        let Some(at) = skip_whitespace(p, i) else {
            break;
        };
        if p[at] != b':' || at + 1 >= limit {
            break;
        }
        let Some(value) = skip_whitespace(p, at + 1) else {
            break;
        };
        return match callid_len(p, value) {
            0 => Found::Empty(value),
            len => Found::Value(value, len),
        };
    }
    Found::None
}

/// `sip_skip_whitespace()`: spaces and continuation lines; `None` at the
/// end of the data or a line break that does not continue.
fn skip_whitespace(p: &[u8], mut i: usize) -> Option<usize> {
    while i < p.len() {
        match p[i] {
            b' ' => i += 1,
            b'\r' | b'\n' => i = follow_continuation(p, i)?,
            _ => return Some(i),
        }
    }
    // The kernel returns the end itself here, which its caller then reads
    // one past: no Call-ID either way.
    None
}

/// `sip_follow_continuation()` from the line break at `i`.
fn follow_continuation(p: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    if i >= p.len() {
        return None;
    }
    if p[i - 1] == b'\r' && p[i] == b'\n' {
        i += 1;
        if i >= p.len() {
            return None;
        }
    }
    if !matches!(p[i], b' ' | b'\t') {
        return None;
    }
    while i < p.len() && matches!(p[i], b' ' | b'\t') {
        i += 1;
    }
    Some(i)
}

/// `callid_len()`: a word, and `@` and a second word if one follows.
fn callid_len(p: &[u8], at: usize) -> usize {
    let len = word_len(p, at);
    let end = at + len;
    if len == 0 || end == p.len() || p[end] != b'@' {
        return len;
    }
    match word_len(p, end + 1) {
        0 => 0,
        domain => len + 1 + domain,
    }
}

fn word_len(p: &[u8], at: usize) -> usize {
    p.get(at..)
        .map_or(0, |rest| rest.iter().take_while(|&&c| is_word(c)).count())
}

/// `iswordc()`.
fn is_word(c: u8) -> bool {
    is_alnum(c)
        || matches!(
            c,
            b'!' | b'"' | b'%' | b'('..=b'/' | b':' | b'<' | b'>' | b'?' | b'['..=b']' | b'_' | b'`' | b'{' | b'}' | b'~'
        )
}

/// The kernel's `isalpha()`: ASCII letters and Latin-1's.
fn is_alpha(c: u8) -> bool {
    c.is_ascii_alphabetic() || (c >= 0xc0 && c != 0xd7 && c != 0xf7)
}

/// The kernel's `isalnum()`.
fn is_alnum(c: u8) -> bool {
    is_alpha(c) || c.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:service@192.0.2.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1\r\n\
From: sipp <sip:sipp@198.51.100.7:5060>;tag=1\r\n\
To: service <sip:service@192.0.2.1:5060>\r\n\
Call-ID: 1-4242@198.51.100.7\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";

    fn id(p: &[u8]) -> Option<&[u8]> {
        call_id(p, search_start(false))
    }

    #[test]
    fn finds_the_call_id_as_the_kernel_does() {
        assert_eq!(id(INVITE), Some(&b"1-4242@198.51.100.7"[..]));
        // Compact form, any case, spaces around the colon, LF only.
        let compact = b"BYE sip:service@192.0.2.1:5060 SIP/2.0\ni  :  abc.def@host\nCSeq: 2 BYE\n";
        assert_eq!(id(compact), Some(&b"abc.def@host"[..]));
        let lower = b"ACK sip:service@192.0.2.1:5060 SIP/2.0\r\ncall-id:\r\n  folded-7\r\n\r\n";
        assert_eq!(id(lower), Some(&b"folded-7"[..]));
        // A word stops at a character outside the kernel's set.
        let semi = b"OPTIONS sip:service@192.0.2.1 SIP/2.0\r\nCall-ID: abc;x\r\n";
        assert_eq!(id(semi), None, "not followed by a line break");
    }

    #[test]
    fn falls_back_where_the_kernel_finds_none() {
        // None at all, a name without its colon, a value at the very end,
        // a value too long, an `@` without a domain.
        assert_eq!(
            id(b"INVITE sip:service@192.0.2.1:5060 SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n"),
            None
        );
        assert_eq!(
            id(b"INVITE sip:service@192.0.2.1:5060 SIP/2.0\r\nCall-ID abc\r\nCall-ID: x\r\n"),
            None
        );
        assert_eq!(
            id(b"INVITE sip:service@192.0.2.1:5060 SIP/2.0\r\nCall-ID: abc"),
            None
        );
        let mut long = b"INVITE sip:service@192.0.2.1:5060 SIP/2.0\r\nCall-ID: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LEN + 1));
        long.extend(b"\r\n");
        assert_eq!(id(&long), None);
        long.truncate(long.len() - 3);
        long.extend(b"\r\n");
        assert_eq!(id(&long).map(<[u8]>::len), Some(MAX_LEN));
        // An empty value moves the search on to the next header.
        let twice =
            b"INVITE sip:service@192.0.2.1:5060 SIP/2.0\r\nCall-ID: ;\r\nCall-ID: second\r\n";
        assert_eq!(id(twice), Some(&b"second"[..]));
        // The compact name needs a non-letter after it: "If" is no Call-ID.
        assert_eq!(
            id(b"INVITE sip:service@192.0.2.1:5060 SIP/2.0\r\nIf: x\r\n"),
            None
        );
        assert_eq!(id(b""), None);
        assert_eq!(
            id(b"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\ni:"),
            None
        );
    }

    #[test]
    fn starts_where_the_kernel_starts() {
        // A header line before the 28th byte is not seen: the kernel
        // starts there.
        let early = b"X\r\nCall-ID: early\r\nY: 1234567890123456789\r\n";
        assert_eq!(id(early), None);
        assert_eq!(call_id(early, 0), Some(&b"early"[..]));
    }
}
