//! The PROXY protocol (HAProxy's spec, versions 1 and 2): headers sent to
//! real servers so they learn the client's address, and headers read from an
//! upstream balancer so rvs learns it.
//!
//! Parsing never reads past the header: it peeks to find the header's length
//! and then consumes exactly that many bytes, so the client's first bytes
//! stay in the socket for the real server.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const SIG_V2: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;

/// Why a header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The connection closed or failed before a whole header arrived.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a PROXY header.
    #[error("not a PROXY protocol header: {0}")]
    Invalid(&'static str),
}

/// Appends a header for a connection from `src` to `dst` to `out`. Mixed
/// families are written as IPv6 with the IPv4 address mapped.
pub fn encode_v1(src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    use std::io::Write;
    let (s, d) = same_family(src, dst);
    let fam = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "PROXY {fam} {} {} {} {}\r\n",
        s.ip(),
        d.ip(),
        s.port(),
        d.port()
    );
}

/// Appends a v2 header (command PROXY, TCP) to `out`.
pub fn encode_v2(src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    encode_v2_with(src, dst, None, out);
}

/// Appends a v2 header (command PROXY, TCP) to `out`, with the server
/// name the client asked for (its TLS SNI) as a `PP2_TYPE_AUTHORITY` TLV
/// when there is one, as HAProxy sends it.
pub fn encode_v2_with(
    src: SocketAddr,
    dst: SocketAddr,
    authority: Option<&str>,
    out: &mut Vec<u8>,
) {
    let h = V2Header::new(src, dst, Transport::Tcp);
    let start = out.len();
    out.extend_from_slice(h.as_bytes());
    // A host name is at most 253 bytes: the length always fits.
    if let Some(name) = authority.filter(|n| n.len() <= 255) {
        out.push(PP2_TYPE_AUTHORITY);
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        let body = (out.len() - start - 16) as u16;
        out[start + 14..start + 16].copy_from_slice(&body.to_be_bytes());
    }
}

/// The TLV type of the host name the client asked for (the spec's §2.2.2).
const PP2_TYPE_AUTHORITY: u8 = 0x02;

/// The transport a v2 header names (the low nibble of its family byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `STREAM`: 0x11 over IPv4, 0x21 over IPv6.
    Tcp,
    /// `DGRAM`: 0x12 over IPv4, 0x22 over IPv6.
    Udp,
}

/// A v2 header with addresses, kept inline (at most 52 bytes): a UDP
/// session keeps its own, and one-packet scheduling writes one per datagram
/// without allocating.
#[derive(Clone, Copy, Debug)]
pub struct V2Header {
    buf: [u8; 52],
    len: u8,
}

impl V2Header {
    /// The header of a flow from `src` to `dst`. Mixed families are written
    /// as IPv6 with the IPv4 address mapped.
    pub fn new(src: SocketAddr, dst: SocketAddr, transport: Transport) -> V2Header {
        let (s, d) = same_family(src, dst);
        let mut buf = [0u8; 52];
        buf[..12].copy_from_slice(&SIG_V2);
        buf[12] = 0x21; // version 2, command PROXY
        let proto = match transport {
            Transport::Tcp => 0x1,
            Transport::Udp => 0x2,
        };
        let at = match (s.ip(), d.ip()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                buf[13] = 0x10 | proto;
                buf[14..16].copy_from_slice(&12u16.to_be_bytes());
                buf[16..20].copy_from_slice(&a.octets());
                buf[20..24].copy_from_slice(&b.octets());
                24
            }
            (a, b) => {
                buf[13] = 0x20 | proto;
                buf[14..16].copy_from_slice(&36u16.to_be_bytes());
                buf[16..32].copy_from_slice(&v6(a).octets());
                buf[32..48].copy_from_slice(&v6(b).octets());
                48
            }
        };
        buf[at..at + 2].copy_from_slice(&s.port().to_be_bytes());
        buf[at + 2..at + 4].copy_from_slice(&d.port().to_be_bytes());
        V2Header {
            buf,
            len: (at + 4) as u8,
        }
    }

    /// The header's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// The source and destination a header names; `None` for LOCAL, UNKNOWN or
/// an unspecified family (the connection's own addresses stand).
pub type Addresses = Option<(SocketAddr, SocketAddr)>;

/// A datagram that may start with a v2 header (`accept_proxy_protocol` on a
/// UDP service): `Ok(None)` when it does not start with the v2 signature;
/// else the header's addresses (`None` for LOCAL or an unspecified family)
/// and the header's length, which the payload follows. A datagram that
/// starts with the signature but holds no valid header is an error.
pub fn split_v2_datagram(data: &[u8]) -> Result<Option<(Addresses, usize)>, HeaderError> {
    if data.len() < 12 || data[..12] != SIG_V2 {
        return Ok(None);
    }
    if data.len() < 16 {
        return Err(HeaderError::Invalid("v2 header is truncated"));
    }
    let len = 16 + usize::from(u16::from_be_bytes([data[14], data[15]]));
    let addrs = parse_v2(data)?;
    Ok(Some((addrs, len)))
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a.is_ipv4() == b.is_ipv4() {
        return (a, b);
    }
    (
        SocketAddr::new(IpAddr::V6(v6(a.ip())), a.port()),
        SocketAddr::new(IpAddr::V6(v6(b.ip())), b.port()),
    )
}

/// What a header read from a balancer in front says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// The client and the destination it connected to; `None` for a
    /// header without addresses (v1 `UNKNOWN`, v2 `LOCAL` or `UNSPEC`),
    /// after which the connection's own addresses stand.
    pub addrs: Addresses,
    /// The host name the client asked for (v2's `PP2_TYPE_AUTHORITY`).
    pub authority: Option<String>,
}

/// Reads one header from `stream`.
pub async fn read_header(stream: &mut TcpStream) -> Result<Header, HeaderError> {
    let mut peek = [0u8; 232];
    let have = peek_at_least(stream, &mut peek, 16).await?;
    if peek[..12] == SIG_V2 {
        let len = usize::from(u16::from_be_bytes([peek[14], peek[15]]));
        let mut header = vec![0u8; 16 + len];
        stream.read_exact(&mut header).await?;
        return Ok(Header {
            addrs: parse_v2(&header)?,
            authority: authority(&header),
        });
    }
    if &peek[..6] != b"PROXY " {
        return Err(HeaderError::Invalid("no PROXY signature"));
    }
    let mut have = have;
    let end = loop {
        if let Some(i) = peek[..have].windows(2).position(|w| w == b"\r\n") {
            break i + 2;
        }
        if have >= V1_MAX {
            return Err(HeaderError::Invalid("v1 header longer than 107 bytes"));
        }
        have = peek_at_least(stream, &mut peek, have + 1).await?;
    };
    let mut header = vec![0u8; end];
    stream.read_exact(&mut header).await?;
    Ok(Header {
        addrs: parse_v1(&header)?,
        authority: None,
    })
}

/// The `PP2_TYPE_AUTHORITY` TLV of a whole v2 header (one that
/// [`parse_v2`] accepts), when it holds a DNS host name (lower-cased).
pub fn authority(h: &[u8]) -> Option<String> {
    let len = usize::from(u16::from_be_bytes([*h.get(14)?, *h.get(15)?]));
    let body = h.get(16..16 + len)?;
    // The address block's length by family: TLVs follow it.
    let skip = match h.get(13)? >> 4 {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    let mut tlvs = body.get(skip..)?;
    while let [kind, hi, lo, rest @ ..] = tlvs {
        let n = usize::from(u16::from_be_bytes([*hi, *lo]));
        let value = rest.get(..n)?;
        if *kind == PP2_TYPE_AUTHORITY {
            return crate::sni::hello::host_name(value);
        }
        tlvs = &rest[n..];
    }
    None
}

async fn peek_at_least(
    stream: &mut TcpStream,
    buf: &mut [u8],
    want: usize,
) -> Result<usize, HeaderError> {
    loop {
        let n = stream.peek(buf).await?;
        if n >= want.min(buf.len()) {
            return Ok(n);
        }
        if n == 0 {
            return Err(HeaderError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        // Less than wanted: wait for more to arrive.
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// Parses a whole v1 header line, CRLF included.
pub fn parse_v1(line: &[u8]) -> Result<Option<(SocketAddr, SocketAddr)>, HeaderError> {
    let text =
        std::str::from_utf8(line).map_err(|_| HeaderError::Invalid("v1 header is not text"))?;
    let text = text
        .strip_suffix("\r\n")
        .ok_or(HeaderError::Invalid("v1 header does not end with CRLF"))?;
    let mut parts = text.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(HeaderError::Invalid("no PROXY signature"));
    }
    match parts.next() {
        Some("UNKNOWN") => return Ok(None),
        Some("TCP4") | Some("TCP6") => {}
        _ => {
            return Err(HeaderError::Invalid(
                "v1 protocol is not TCP4, TCP6 or UNKNOWN",
            ));
        }
    }
    let mut field = || {
        parts
            .next()
            .ok_or(HeaderError::Invalid("v1 header has too few fields"))
    };
    let (src, dst, sport, dport) = (field()?, field()?, field()?, field()?);
    if parts.next().is_some() {
        return Err(HeaderError::Invalid("v1 header has too many fields"));
    }
    let ip = |s: &str| {
        s.parse::<IpAddr>()
            .map_err(|_| HeaderError::Invalid("v1 address is not an IP"))
    };
    let port = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| HeaderError::Invalid("v1 port is not a port"))
    };
    Ok(Some((
        SocketAddr::new(ip(src)?, port(sport)?),
        SocketAddr::new(ip(dst)?, port(dport)?),
    )))
}

/// Parses a whole v2 header (16 bytes plus its length).
pub fn parse_v2(h: &[u8]) -> Result<Option<(SocketAddr, SocketAddr)>, HeaderError> {
    if h.len() < 16 || h[..12] != SIG_V2 {
        return Err(HeaderError::Invalid("no v2 signature"));
    }
    if h[12] >> 4 != 2 {
        return Err(HeaderError::Invalid("v2 version is not 2"));
    }
    let len = usize::from(u16::from_be_bytes([h[14], h[15]]));
    let body = h
        .get(16..16 + len)
        .ok_or(HeaderError::Invalid("v2 header is truncated"))?;
    match h[12] & 0x0F {
        0 => return Ok(None), // LOCAL: the connection's own addresses
        1 => {}
        _ => return Err(HeaderError::Invalid("v2 command is not LOCAL or PROXY")),
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match h[13] >> 4 {
        0 => Ok(None),
        1 => {
            let b = body
                .get(..12)
                .ok_or(HeaderError::Invalid("v2 IPv4 addresses are truncated"))?;
            let ip = |o: usize| IpAddr::from([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            Ok(Some((
                SocketAddr::new(ip(0), port(&b[8..])),
                SocketAddr::new(ip(4), port(&b[10..])),
            )))
        }
        2 => {
            let b = body
                .get(..36)
                .ok_or(HeaderError::Invalid("v2 IPv6 addresses are truncated"))?;
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&b[o..o + 16]);
                IpAddr::from(a)
            };
            Ok(Some((
                SocketAddr::new(ip(0), port(&b[32..])),
                SocketAddr::new(ip(16), port(&b[34..])),
            )))
        }
        _ => Ok(None), // AF_UNIX: no IP address to learn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v2_udp_headers_name_dgram_and_split_from_their_payload() {
        let h = V2Header::new(a("192.0.2.1:5000"), a("198.51.100.2:53"), Transport::Udp);
        let b = h.as_bytes();
        assert_eq!(b.len(), 28);
        assert_eq!(&b[12..16], &[0x21, 0x12, 0, 12]);
        let mut dgram = b.to_vec();
        dgram.extend_from_slice(b"query");
        let (addrs, len) = split_v2_datagram(&dgram).unwrap().unwrap();
        assert_eq!(addrs, Some((a("192.0.2.1:5000"), a("198.51.100.2:53"))));
        assert_eq!(&dgram[len..], b"query");
        let h6 = V2Header::new(
            a("[2001:db8::1]:5000"),
            a("[2001:db8::2]:53"),
            Transport::Udp,
        );
        assert_eq!(&h6.as_bytes()[12..16], &[0x21, 0x22, 0, 36]);
        assert_eq!(h6.as_bytes().len(), 52);
        assert!(split_v2_datagram(b"plain dns query").unwrap().is_none());
        let mut bad = b[..20].to_vec();
        bad[13] = 0x12;
        assert!(split_v2_datagram(&bad).is_err(), "truncated");
        let mut tcp = Vec::new();
        encode_v2(a("192.0.2.1:5000"), a("198.51.100.2:80"), &mut tcp);
        assert_eq!(tcp[13], 0x11, "TCP keeps STREAM");
    }

    #[test]
    fn v1_bytes_match_the_spec() {
        let mut out = Vec::new();
        encode_v1(a("192.0.2.1:56324"), a("10.0.0.1:443"), &mut out);
        assert_eq!(out, b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 443\r\n");
        out.clear();
        encode_v1(a("[2001:db8::1]:1"), a("10.0.0.1:443"), &mut out);
        assert_eq!(out, b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 1 443\r\n");
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.1 10.0.0.1 56324 443\r\n").unwrap(),
            Some((a("192.0.2.1:56324"), a("10.0.0.1:443")))
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n").unwrap(), None);
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(parse_v1(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_authority_tlv_carries_the_sni_both_ways() {
        let mut out = Vec::new();
        encode_v2_with(
            a("192.0.2.1:56324"),
            a("10.0.0.1:443"),
            Some("api.example.com"),
            &mut out,
        );
        let mut want = SIG_V2.to_vec();
        want.extend_from_slice(&[
            0x21, 0x11, 0, 30, 192, 0, 2, 1, 10, 0, 0, 1, 0xDC, 0x04, 0x01, 0xBB, 0x02, 0, 15,
        ]);
        want.extend_from_slice(b"api.example.com");
        assert_eq!(out, want);
        assert_eq!(
            parse_v2(&out).unwrap(),
            Some((a("192.0.2.1:56324"), a("10.0.0.1:443")))
        );
        assert_eq!(authority(&out).as_deref(), Some("api.example.com"));
        // After another TLV (a NOOP), over IPv6, upper-cased: found, lowered.
        let mut v6 = Vec::new();
        encode_v2(a("[2001:db8::1]:1"), a("[2001:db8::2]:443"), &mut v6);
        v6.extend_from_slice(&[0x04, 0, 2, 0, 0, 0x02, 0, 6]);
        v6.extend_from_slice(b"A.Test");
        let len = (v6.len() - 16) as u16;
        v6[14..16].copy_from_slice(&len.to_be_bytes());
        assert_eq!(authority(&v6).as_deref(), Some("a.test"));
        // Without the TLV, or with one that runs past the header: none.
        let mut plain = Vec::new();
        encode_v2(a("192.0.2.1:1"), a("10.0.0.1:443"), &mut plain);
        assert_eq!(authority(&plain), None);
        let mut cut = plain.clone();
        cut.extend_from_slice(&[0x02, 0, 40, b'a']);
        let len = (cut.len() - 16) as u16;
        cut[14..16].copy_from_slice(&len.to_be_bytes());
        assert_eq!(authority(&cut), None);
        // encode_v2 with no name is the plain header.
        let mut none = Vec::new();
        encode_v2_with(a("192.0.2.1:1"), a("10.0.0.1:443"), None, &mut none);
        assert_eq!(none, plain);
    }

    #[test]
    fn v2_bytes_match_the_spec() {
        let mut out = Vec::new();
        encode_v2(a("192.0.2.1:56324"), a("10.0.0.1:443"), &mut out);
        let mut want = SIG_V2.to_vec();
        want.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 1, 10, 0, 0, 1, 0xDC, 0x04, 0x01, 0xBB,
        ]);
        assert_eq!(out, want);
        assert_eq!(
            parse_v2(&out).unwrap(),
            Some((a("192.0.2.1:56324"), a("10.0.0.1:443")))
        );
        out.clear();
        encode_v2(a("[2001:db8::1]:1"), a("[2001:db8::2]:2"), &mut out);
        assert_eq!(out.len(), 16 + 36);
        assert_eq!(
            parse_v2(&out).unwrap(),
            Some((a("[2001:db8::1]:1"), a("[2001:db8::2]:2")))
        );
        // LOCAL, and a truncated header.
        let mut local = SIG_V2.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse_v2(&local).unwrap(), None);
        assert!(parse_v2(&want[..20]).is_err());
    }
}
