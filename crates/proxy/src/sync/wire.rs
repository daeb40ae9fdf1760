//! The Linux kernel's connection synchronisation messages
//! (`net/netfilter/ipvs/ip_vs_sync.c`): what an IPVS master director
//! multicasts and its backups apply. Version 1 is written; versions 1 and
//! 0 are read, with every check the kernel's backup makes, so that a
//! datagram it would drop is dropped here too. No I/O.
//!
//! A version 1 message: an 8-byte header (a zero byte, the sync ID, the
//! message's size, the entry count, the version 1 and two zero bytes),
//! then entries, each starting on a 4-byte boundary. An entry: type (bit 0:
//! IPv6), protocol, a 4-bit version (0) and 12-bit size, flags, state, the
//! client, virtual and destination ports, the firewall mark, the timeout
//! in seconds, then the three addresses, then options of a type byte and
//! a length byte: sequence data, persistence-engine data and name.
//! Integers are big-endian.
//!
//! A version 0 message (`sync_version = 0`): a 4-byte header (count, sync
//! ID, size) and IPv4 entries of 24 bytes, 48 with sequence data; no
//! timeout, no firewall mark.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The kernel's `IP_VS_SYNC_GROUP`: 224.0.0.81.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// The IPv6 group ipvsadm documents for `--mcast-group`: ff02::8:8848.
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 8, 0x8848);
/// `IP_VS_SYNC_PORT`.
pub const PORT: u16 = 8848;

/// `IP_VS_CONN_F_*`: the flags an entry carries.
pub mod flags {
    /// The forwarding method's bits; 0 is masquerading, what rvs's
    /// FULLNAT is closest to.
    pub const FWD_MASK: u32 = 0x0007;
    /// Made by synchronisation (set on receipt).
    pub const SYNC: u32 = 0x0020;
    /// Hashed (never sent).
    pub const HASHED: u32 = 0x0040;
    /// No output packets.
    pub const NOOUTPUT: u32 = 0x0080;
    /// Not established.
    pub const INACTIVE: u32 = 0x0100;
    /// Sequence numbers adjusted (both ways).
    pub const SEQ_MASK: u32 = 0x0600;
    /// No client port yet.
    pub const NO_CPORT: u32 = 0x0800;
    /// A persistence template, not a connection.
    pub const TEMPLATE: u32 = 0x1000;
    /// One-packet scheduling (never synced).
    pub const ONE_PACKET: u32 = 0x2000;
    /// `IP_VS_CONN_F_BACKUP_MASK`: what a backup keeps of a received entry.
    pub const BACKUP_MASK: u32 = FWD_MASK | NOOUTPUT | INACTIVE | SEQ_MASK | NO_CPORT | TEMPLATE;
}

/// `IPPROTO_*` of an entry.
pub mod proto {
    /// A firewall-mark service's template.
    pub const IP: u8 = 0;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// SCTP.
    pub const SCTP: u8 = 132;
    /// AH.
    pub const AH: u8 = 51;
    /// ESP.
    pub const ESP: u8 = 50;
}

/// `IP_VS_TCP_S_*`: the TCP states an entry carries.
pub mod tcp_state {
    /// Established.
    pub const ESTABLISHED: u16 = 1;
    /// The client sent its FIN.
    pub const FIN_WAIT: u16 = 4;
    /// Both sent FINs.
    pub const TIME_WAIT: u16 = 5;
    /// Closed (a reset).
    pub const CLOSE: u16 = 6;
    /// The server sent its FIN.
    pub const CLOSE_WAIT: u16 = 7;
    /// `IP_VS_TCP_S_LAST`: states are below it.
    pub const LAST: u16 = 11;
}

/// `IP_VS_PEDATA_MAXLEN`.
pub const PE_DATA_MAX: usize = 255;
/// `IP_VS_PENAME_MAXLEN`.
pub const PE_NAME_MAX: usize = 16;

const HEADER_V1: usize = 8;
const HEADER_V0: usize = 4;
const ENTRY_V4: usize = 36;
const ENTRY_V6: usize = 72;
const ENTRY_V0: usize = 24;
/// Two `struct ip_vs_seq` of three 32-bit words.
const SEQ_LEN: usize = 24;
const OPT_SEQ: u8 = 1;
const OPT_PE_DATA: u8 = 2;
const OPT_PE_NAME: u8 = 3;
/// A parameter type with this bit may be ignored by a receiver that does
/// not know it; one without it must not.
const OPT_F_PARAM: u8 = 1 << 6;

/// One connection or template.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// `IPPROTO_*` ([`proto`]).
    pub protocol: u8,
    /// `IP_VS_CONN_F_*` ([`flags`]).
    pub flags: u32,
    /// The protocol's state (templates: 0).
    pub state: u16,
    /// The client's address (a template: under the netmask).
    pub caddr: IpAddr,
    /// The client's port (a template: 0).
    pub cport: u16,
    /// The virtual address (a firewall-mark template: the mark).
    pub vaddr: IpAddr,
    /// The virtual port.
    pub vport: u16,
    /// The real server's address.
    pub daddr: IpAddr,
    /// The real server's port.
    pub dport: u16,
    /// The firewall mark of the packets.
    pub fwmark: u32,
    /// Seconds the entry lives on the backup, restarted on receipt; 0 in
    /// version 0, where the backup uses its own timeouts.
    pub timeout: u32,
    /// The persistence engine's name and data (a SIP Call-ID).
    pub pe: Option<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// Whether it is a persistence template.
    pub fn is_template(&self) -> bool {
        self.flags & flags::TEMPLATE != 0
    }

    /// Its encoded length, padding excluded; `None` when it cannot be
    /// encoded (addresses of two families, engine data too long).
    fn encoded_len(&self) -> Option<usize> {
        let base = match (self.caddr, self.vaddr, self.daddr) {
            (IpAddr::V4(_), IpAddr::V4(_), IpAddr::V4(_)) => ENTRY_V4,
            (IpAddr::V6(_), IpAddr::V6(_), IpAddr::V6(_)) => ENTRY_V6,
            _ => return None,
        };
        let pe = match &self.pe {
            None => 0,
            Some((name, data)) => {
                if data.is_empty()
                    || data.len() > PE_DATA_MAX
                    || name.is_empty()
                    || name.len() > PE_NAME_MAX
                {
                    return None;
                }
                2 + data.len() + 2 + name.len()
            }
        };
        Some(base + pe)
    }
}

/// Why an entry cannot go in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The message has no room left for it: send it and start another.
    Full,
    /// It cannot be encoded at all (mixed families, engine data too long).
    Invalid,
}

/// A version 1 message being filled: [`Message::push`] entries until it
/// is full, then send [`Message::bytes`].
#[derive(Debug)]
pub struct Message {
    buf: Vec<u8>,
    max: usize,
    count: u8,
}

impl Message {
    /// An empty message of `syncid` holding at most `maxlen` bytes (the
    /// daemon's `sync_maxlen`).
    pub fn new(syncid: u8, maxlen: usize) -> Message {
        let max = maxlen.clamp(HEADER_V1, usize::from(u16::MAX));
        let mut buf = Vec::with_capacity(max);
        buf.extend_from_slice(&[0, syncid, 0, HEADER_V1 as u8, 0, 1, 0, 0]);
        Message { buf, max, count: 0 }
    }

    /// Entries in it.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends `e`, after padding to 4 bytes, as `ip_vs_sync_conn()` does.
    pub fn push(&mut self, e: &Entry) -> Result<(), Refused> {
        let len = e.encoded_len().ok_or(Refused::Invalid)?;
        let pad = (4 - self.buf.len() % 4) % 4;
        // An empty message takes one entry whatever its size, as the
        // kernel sizes a new buffer to hold at least the entry.
        if self.count > 0 && (self.buf.len() + pad + len > self.max || self.count == u8::MAX) {
            return Err(Refused::Full);
        }
        self.buf.extend(std::iter::repeat_n(0, pad));
        let v6 = e.caddr.is_ipv6();
        self.buf.push(u8::from(v6));
        self.buf.push(e.protocol);
        // Version 0 in the top 4 bits; `len` is below 4096 by construction.
        self.buf
            .extend_from_slice(&(len as u16 & 0x0fff).to_be_bytes());
        self.buf
            .extend_from_slice(&(e.flags & !flags::HASHED).to_be_bytes());
        self.buf.extend_from_slice(&e.state.to_be_bytes());
        self.buf.extend_from_slice(&e.cport.to_be_bytes());
        self.buf.extend_from_slice(&e.vport.to_be_bytes());
        self.buf.extend_from_slice(&e.dport.to_be_bytes());
        self.buf.extend_from_slice(&e.fwmark.to_be_bytes());
        self.buf.extend_from_slice(&e.timeout.to_be_bytes());
        for a in [e.caddr, e.vaddr, e.daddr] {
            match a {
                IpAddr::V4(a) => self.buf.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => self.buf.extend_from_slice(&a.octets()),
            }
        }
        if let Some((name, data)) = &e.pe {
            // Lengths checked by `encoded_len`.
            self.buf.extend_from_slice(&[OPT_PE_DATA, data.len() as u8]);
            self.buf.extend_from_slice(data);
            self.buf.extend_from_slice(&[OPT_PE_NAME, name.len() as u8]);
            self.buf.extend_from_slice(name);
        }
        self.count += 1;
        let size = self.buf.len() as u16;
        self.buf[2..4].copy_from_slice(&size.to_be_bytes());
        self.buf[4] = self.count;
        Ok(())
    }

    /// The datagram.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Why a received datagram, or the rest of it, was dropped: the kernel's
/// reasons, named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Shorter than a header.
    TooShort,
    /// The header's size is not the datagram's.
    BadSize,
    /// Another sync ID than the backup's (which is not 0).
    OtherSyncId,
    /// An entry runs past the end of the datagram.
    Truncated,
    /// An entry of a version other than 0, or of an unknown type.
    UnknownVersion,
    /// An option is malformed: empty, too long, past the entry, or twice.
    BadOption,
}

impl Dropped {
    /// Every reason, in a fixed order.
    pub const ALL: [Dropped; 6] = [
        Dropped::TooShort,
        Dropped::BadSize,
        Dropped::OtherSyncId,
        Dropped::Truncated,
        Dropped::UnknownVersion,
        Dropped::BadOption,
    ];

    /// Its place in [`Dropped::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short name (for logs and metric labels).
    pub fn name(self) -> &'static str {
        match self {
            Dropped::TooShort => "too_short",
            Dropped::BadSize => "bad_size",
            Dropped::OtherSyncId => "other_syncid",
            Dropped::Truncated => "truncated",
            Dropped::UnknownVersion => "unknown_version",
            Dropped::BadOption => "bad_option",
        }
    }
}

/// A received datagram, read: the entries to apply, in order, and why
/// reading stopped early, if it did. As in the kernel, the entries before
/// a fault are applied; an entry the backup cannot use (an unsupported
/// protocol or state, an unknown mandatory option, an unknown persistence
/// engine) is skipped and counted alone.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// The message's sync ID.
    pub syncid: u8,
    /// The protocol version read (0 or 1).
    pub version: u8,
    /// The entries to apply.
    pub entries: Vec<Entry>,
    /// Entries skipped one by one.
    pub skipped: u32,
    /// Why the rest of the datagram was dropped.
    pub dropped: Option<Dropped>,
}

/// `ip_vs_process_message()`: reads `buf` as a backup of `syncid` (0:
/// every sync ID) does. `Err` when the whole datagram is dropped.
pub fn decode(buf: &[u8], syncid: u8) -> Result<Received, Dropped> {
    if buf.len() < HEADER_V0 {
        return Err(Dropped::TooShort);
    }
    if usize::from(u16::from_be_bytes([buf[2], buf[3]])) != buf.len() {
        return Err(Dropped::BadSize);
    }
    let theirs = buf[1];
    if syncid != 0 && theirs != syncid {
        return Err(Dropped::OtherSyncId);
    }
    let v1 = buf.len() >= HEADER_V1 && buf[0] == 0 && buf[5] == 1 && buf[6] == 0 && buf[7] == 0;
    let mut got = Received {
        syncid: theirs,
        version: u8::from(v1),
        ..Received::default()
    };
    if v1 {
        decode_v1(buf, &mut got);
    } else {
        decode_v0(buf, &mut got);
    }
    Ok(got)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn v4(b: &[u8], at: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]))
}

fn v6(b: &[u8], at: usize) -> IpAddr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    IpAddr::V6(Ipv6Addr::from(o))
}

/// Whether the kernel's backup takes an entry of `protocol` in `state`
/// (`ip_vs_proto_get()` and the protocol's `num_states`). rvs keeps only
/// TCP and UDP of what it takes.
fn known_state(protocol: u8, state: u16) -> bool {
    match protocol {
        proto::TCP => state < tcp_state::LAST,
        // UDP, AH and ESP have one state.
        proto::UDP | proto::AH | proto::ESP => state < 1,
        proto::SCTP => state < 13,
        _ => false,
    }
}

fn decode_v1(buf: &[u8], got: &mut Received) {
    let count = buf[4];
    let mut at = HEADER_V1;
    for _ in 0..count {
        if at + ENTRY_V4 > buf.len() {
            got.dropped = Some(Dropped::Truncated);
            return;
        }
        let ver_size = be16(buf, at + 2);
        let size = usize::from(ver_size & 0x0fff);
        if at + size > buf.len() {
            got.dropped = Some(Dropped::Truncated);
            return;
        }
        if ver_size >> 12 != 0 {
            got.dropped = Some(Dropped::UnknownVersion);
            return;
        }
        match entry_v1(&buf[at..], size) {
            Ok(Some(e)) => got.entries.push(e),
            Ok(None) => got.skipped += 1,
            Err(why) => {
                got.dropped = Some(why);
                return;
            }
        }
        at += (size + 3) & !3;
    }
}

/// `ip_vs_proc_sync_conn()` on the entry of `size` bytes at the start of
/// `rest` (which holds at least an IPv4 entry's fixed part): `Ok(None)`
/// when it is skipped.
fn entry_v1(rest: &[u8], size: usize) -> Result<Option<Entry>, Dropped> {
    let (is_v6, fixed) = match rest.first() {
        Some(0) => (false, ENTRY_V4),
        Some(1) => (true, ENTRY_V6),
        _ => return Err(Dropped::UnknownVersion),
    };
    if fixed > size || size > rest.len() {
        return Err(Dropped::Truncated);
    }
    let b = &rest[..size];
    let mut p = fixed;
    let (mut seq, mut pe_data, mut pe_name) = (false, None, None);
    let mut skip = false;
    while p < b.len() {
        if p + 2 > b.len() {
            return Err(Dropped::BadOption);
        }
        let (kind, len) = (b[p], usize::from(b[p + 1]));
        p += 2;
        if len == 0 || p + len > b.len() {
            return Err(Dropped::BadOption);
        }
        let value = &b[p..p + len];
        match kind & !OPT_F_PARAM {
            OPT_SEQ => {
                if len != SEQ_LEN || seq {
                    return Err(Dropped::BadOption);
                }
                seq = true;
            }
            OPT_PE_DATA => {
                if len > PE_DATA_MAX || pe_data.is_some() {
                    return Err(Dropped::BadOption);
                }
                pe_data = Some(value);
            }
            OPT_PE_NAME => {
                if len > PE_NAME_MAX || pe_name.is_some() {
                    return Err(Dropped::BadOption);
                }
                pe_name = Some(value);
            }
            // An unknown mandatory parameter: the entry is skipped.
            _ if kind & OPT_F_PARAM == 0 => skip = true,
            _ => {}
        }
        if skip {
            return Ok(None);
        }
        p += len;
    }
    let flags = (be32(b, 4) & flags::BACKUP_MASK) | flags::SYNC;
    let protocol = b[1];
    let state = be16(b, 8);
    if flags & flags::TEMPLATE == 0 && !known_state(protocol, state) {
        return Ok(None);
    }
    let pe = match (pe_data, pe_name) {
        (None, _) => None,
        // Engine data without its name: the kernel skips the entry, as it
        // does for an engine it has not loaded (sip is the one it has).
        (Some(_), None) => return Ok(None),
        (Some(data), Some(name)) if name == b"sip" => Some((name.to_vec(), data.to_vec())),
        (Some(_), Some(_)) => return Ok(None),
    };
    let addr = |i: usize| {
        if is_v6 {
            v6(b, 24 + 16 * i)
        } else {
            v4(b, 24 + 4 * i)
        }
    };
    Ok(Some(Entry {
        protocol,
        flags,
        state,
        caddr: addr(0),
        cport: be16(b, 10),
        vaddr: addr(1),
        vport: be16(b, 12),
        daddr: addr(2),
        dport: be16(b, 14),
        fwmark: be32(b, 16),
        timeout: be32(b, 20),
        pe,
    }))
}

/// `ip_vs_process_message_v0()`.
fn decode_v0(buf: &[u8], got: &mut Received) {
    let count = buf[0];
    let mut at = HEADER_V0;
    for _ in 0..count {
        if at + ENTRY_V0 > buf.len() {
            got.dropped = Some(Dropped::Truncated);
            return;
        }
        let b = &buf[at..];
        let raw = u32::from(be16(b, 20));
        let flags = (raw | flags::SYNC) & !flags::HASHED;
        at += if flags & flags::SEQ_MASK != 0 {
            ENTRY_V0 + SEQ_LEN
        } else {
            ENTRY_V0
        };
        if at > buf.len() {
            got.dropped = Some(Dropped::Truncated);
            return;
        }
        let protocol = b[1];
        let state = be16(b, 22);
        if flags & flags::TEMPLATE == 0 && !known_state(protocol, state) {
            got.skipped += 1;
            continue;
        }
        got.entries.push(Entry {
            protocol,
            flags,
            state,
            caddr: v4(b, 8),
            cport: be16(b, 2),
            vaddr: v4(b, 12),
            vport: be16(b, 4),
            daddr: v4(b, 16),
            dport: be16(b, 6),
            fwmark: 0,
            timeout: 0,
            pe: None,
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn template() -> Entry {
        Entry {
            protocol: proto::TCP,
            flags: flags::TEMPLATE,
            state: 0,
            caddr: "198.51.100.0".parse().unwrap(),
            cport: 0,
            vaddr: "192.0.2.1".parse().unwrap(),
            vport: 80,
            daddr: "10.0.0.2".parse().unwrap(),
            dport: 8080,
            fwmark: 0,
            timeout: 300,
            pe: None,
        }
    }

    fn call() -> Entry {
        Entry {
            protocol: proto::UDP,
            caddr: "2001:db8::7".parse().unwrap(),
            vaddr: "2001:db8::1".parse().unwrap(),
            daddr: "2001:db8:1::2".parse().unwrap(),
            vport: 5060,
            dport: 5060,
            timeout: 60,
            pe: Some((b"sip".to_vec(), b"a84b4c76e66710@pc33".to_vec())),
            ..template()
        }
    }

    #[test]
    fn entries_go_through_and_back() {
        let mut m = Message::new(7, 1472);
        let conn = Entry {
            flags: 0,
            state: tcp_state::ESTABLISHED,
            cport: 40000,
            caddr: "198.51.100.7".parse().unwrap(),
            timeout: 900,
            ..template()
        };
        for e in [template(), call(), conn.clone()] {
            m.push(&e).unwrap();
        }
        let bytes = m.bytes();
        // Header: 0, syncid, size, count, version 1, spare.
        assert_eq!(&bytes[..2], &[0, 7]);
        assert_eq!(
            usize::from(u16::from_be_bytes([bytes[2], bytes[3]])),
            bytes.len()
        );
        assert_eq!(&bytes[4..8], &[3, 1, 0, 0]);
        // The first entry: 36 bytes, at 8; the IPv6 one with its options
        // (72 + 2 + 19 + 2 + 3 = 98 bytes) at 44; the third after 2 bytes
        // of padding, at 144.
        assert_eq!(u16::from_be_bytes([bytes[10], bytes[11]]), 36);
        assert_eq!(u16::from_be_bytes([bytes[46], bytes[47]]), 98);
        assert_eq!(&bytes[142..144], &[0, 0]);
        assert_eq!(bytes.len(), 144 + 36);
        let got = decode(bytes, 7).unwrap();
        assert_eq!(got.dropped, None);
        let sync = |mut e: Entry| {
            e.flags |= flags::SYNC;
            e
        };
        assert_eq!(got.entries, [sync(template()), sync(call()), sync(conn)]);
        // A backup of sync ID 0 takes every ID; of another, none.
        assert!(decode(bytes, 0).is_ok());
        assert_eq!(decode(bytes, 8), Err(Dropped::OtherSyncId));
    }

    #[test]
    fn a_full_message_refuses_the_next_entry() {
        let mut m = Message::new(1, 8 + 36 * 2);
        m.push(&template()).unwrap();
        m.push(&template()).unwrap();
        assert_eq!(m.push(&template()), Err(Refused::Full));
        assert_eq!(m.len(), 2);
        // A message smaller than an entry still takes one, as the kernel's.
        let mut tiny = Message::new(1, 1);
        tiny.push(&call()).unwrap();
        assert_eq!(tiny.push(&template()), Err(Refused::Full));
        let mixed = Entry {
            daddr: "2001:db8::2".parse().unwrap(),
            ..template()
        };
        assert_eq!(Message::new(1, 1472).push(&mixed), Err(Refused::Invalid));
    }

    #[test]
    fn what_the_kernel_drops_is_dropped() {
        let mut m = Message::new(1, 1472);
        m.push(&template()).unwrap();
        m.push(&template()).unwrap();
        let good = m.bytes().to_vec();
        assert_eq!(decode(&good[..3], 0), Err(Dropped::TooShort));
        assert_eq!(decode(&good[..good.len() - 1], 0), Err(Dropped::BadSize));
        // A count above what is there: the entries there are taken, then
        // the rest is dropped.
        let mut more = good.clone();
        more[4] = 3;
        let got = decode(&more, 0).unwrap();
        assert_eq!(
            (got.entries.len(), got.dropped),
            (2, Some(Dropped::Truncated))
        );
        // An entry of size 0, or shorter than its fixed part, drops it.
        let mut empty = good.clone();
        empty[10..12].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(decode(&empty, 0).unwrap().dropped, Some(Dropped::Truncated));
        // An entry version other than 0 drops the rest.
        let mut ver = good.clone();
        ver[10] |= 0x10;
        assert_eq!(
            decode(&ver, 0).unwrap().dropped,
            Some(Dropped::UnknownVersion)
        );
        // A TCP state beyond the last is skipped alone.
        let mut state = good.clone();
        state[8 + 4..8 + 8].copy_from_slice(&0u32.to_be_bytes());
        state[8 + 9] = 40;
        let got = decode(&state, 0).unwrap();
        assert_eq!((got.entries.len(), got.skipped, got.dropped), (1, 1, None));
    }

    #[test]
    fn version_0_messages_are_read() {
        // nr_conns 1, syncid 3, size 28; one IPv4 UDP entry.
        let mut b = vec![1, 3, 0, 28];
        b.extend_from_slice(&[0, proto::UDP]);
        b.extend_from_slice(&5353u16.to_be_bytes());
        b.extend_from_slice(&53u16.to_be_bytes());
        b.extend_from_slice(&5300u16.to_be_bytes());
        b.extend_from_slice(&[198, 51, 100, 7, 192, 0, 2, 1, 10, 0, 0, 2]);
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
        let got = decode(&b, 3).unwrap();
        assert_eq!(got.version, 0);
        let e = &got.entries[0];
        assert_eq!(
            (e.protocol, e.cport, e.vport, e.dport),
            (proto::UDP, 5353, 53, 5300)
        );
        assert_eq!(e.daddr, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(e.flags, flags::SYNC);
    }
}
