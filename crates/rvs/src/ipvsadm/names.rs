//! Addresses and ports as ipvsadm reads and writes them.
//!
//! Without `-n`, ipvsadm names an address by `gethostbyaddr()` and a port
//! by `getservbyport()`; it reads names with `gethostbyname()` and
//! `getservbyname()`. rvsadm answers from the same files the C library
//! reads first, `/etc/hosts` and `/etc/services`, and does not query DNS:
//! an address without a line in `/etc/hosts` is shown as a number.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TCP or UDP, as ipvsadm's `-t` and `-u`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    /// IPPROTO_TCP.
    Tcp,
    /// IPPROTO_UDP.
    Udp,
}

impl Proto {
    /// The protocol number (what ipvsadm sorts by).
    pub fn number(self) -> i32 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    /// `TCP` or `UDP`.
    pub fn upper(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        }
    }

    /// `tcp` or `udp`: rvs's config and /etc/services.
    pub fn lower(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// `-t` or `-u`.
    pub fn switch(self) -> &'static str {
        match self {
            Proto::Tcp => "-t",
            Proto::Udp => "-u",
        }
    }
}

/// The host and service names known to this machine's files.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// `/etc/hosts` lines: an address and its names, the canonical first.
    hosts: Vec<(IpAddr, Vec<String>)>,
    /// `/etc/services` lines: name, port, protocol, aliases.
    services: Vec<(String, u16, String, Vec<String>)>,
}

impl Names {
    /// From `/etc/hosts` and `/etc/services` (either may be missing).
    pub fn system() -> Names {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Names::from_text(&read("/etc/hosts"), &read("/etc/services"))
    }

    /// No names at all: everything numeric.
    pub fn none() -> Names {
        Names::default()
    }

    /// From the text of a hosts file and a services file.
    pub fn from_text(hosts: &str, services: &str) -> Names {
        let strip = |l: &str| l.split('#').next().unwrap_or("").to_owned();
        let mut h = Vec::new();
        for line in hosts.lines().map(strip) {
            let mut words = line.split_whitespace();
            let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
                continue;
            };
            let names: Vec<String> = words.map(str::to_owned).collect();
            if !names.is_empty() {
                h.push((ip, names));
            }
        }
        let mut s = Vec::new();
        for line in services.lines().map(strip) {
            let mut words = line.split_whitespace();
            let (Some(name), Some(pp)) = (words.next(), words.next()) else {
                continue;
            };
            let Some((port, proto)) = pp.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            s.push((
                name.to_owned(),
                port,
                proto.to_owned(),
                words.map(str::to_owned).collect(),
            ));
        }
        Names {
            hosts: h,
            services: s,
        }
    }

    /// `gethostbyaddr()`: the canonical name of the first line with `ip`.
    pub fn host_of(&self, ip: IpAddr) -> Option<&str> {
        self.hosts
            .iter()
            .find(|(a, _)| *a == ip)
            .and_then(|(_, n)| n.first())
            .map(String::as_str)
    }

    /// `gethostbyname()` for IPv4, as ipvsadm's `host_to_addr()`.
    pub fn v4_of(&self, name: &str) -> Option<Ipv4Addr> {
        self.hosts.iter().find_map(|(a, names)| match a {
            IpAddr::V4(v4) if names.iter().any(|n| n.eq_ignore_ascii_case(name)) => Some(*v4),
            _ => None,
        })
    }

    /// An address of `name` in the hosts file, of the family asked for.
    pub fn addr_of(&self, name: &str, v6: bool) -> Option<IpAddr> {
        self.hosts.iter().find_map(|(a, names)| {
            (a.is_ipv6() == v6 && names.iter().any(|n| n.eq_ignore_ascii_case(name))).then_some(*a)
        })
    }

    /// `getservbyport()`.
    pub fn service_of(&self, port: u16, proto: Proto) -> Option<&str> {
        self.services
            .iter()
            .find(|(_, p, pr, _)| *p == port && pr == proto.lower())
            .map(|(n, ..)| n.as_str())
    }

    /// `getservbyname()`: by name or alias.
    pub fn port_of(&self, name: &str, proto: Proto) -> Option<u16> {
        self.services
            .iter()
            .find(|(n, _, pr, aliases)| {
                pr == proto.lower() && (n == name || aliases.iter().any(|a| a == name))
            })
            .map(|(_, p, ..)| *p)
    }

    /// `addrport_to_anyname()`: `ADDR:PORT`, `[ADDR]:PORT` for IPv6, with
    /// names unless `numeric`; at most 59 characters, as ipvsadm's buffer.
    pub fn addrport(&self, ip: IpAddr, port: u16, proto: Proto, numeric: bool) -> String {
        let (open, close) = if ip.is_ipv4() { ("", "") } else { ("[", "]") };
        let mut s = if numeric {
            format!("{open}{ip}{close}:{port}")
        } else {
            let host = self
                .host_of(ip)
                .map_or_else(|| ip.to_string(), str::to_owned);
            let serv = self
                .service_of(port, proto)
                .map_or_else(|| port.to_string(), str::to_owned);
            format!("{open}{host}{close}:{serv}")
        };
        truncate(&mut s, 59);
        s
    }

    /// ipvsadm's `parse_service()`: `ADDR[:PORT]` or `[IPv6]:PORT`, names
    /// allowed. `None` when it is not an address; the port is `None` when
    /// none was written.
    pub fn parse_service(&self, buf: &str, proto: Proto) -> Option<(IpAddr, Option<u16>)> {
        if buf.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (host, port) = if let Some(rest) = buf.strip_prefix('[') {
            let (inner, after) = rest.split_once(']')?;
            let port = after.strip_prefix(':')?;
            (inner, Some(port))
        } else {
            (buf, None)
        };
        let (ip, port) = match host.parse::<Ipv6Addr>() {
            Ok(v6) => (IpAddr::V6(v6), port),
            Err(_) => {
                if port.is_some() {
                    // A bracketed name is not an address.
                    return None;
                }
                let (h, p) = match host.rsplit_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (host, None),
                };
                let v4 = inet_aton(h).or_else(|| self.v4_of(h))?;
                (IpAddr::V4(v4), p)
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(
                string_to_number(p, 0, 65_535)
                    .map_or_else(|| self.port_of(p, proto), |n| u16::try_from(n).ok())?,
            ),
        };
        Some((ip, port))
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

/// Truncates to `max` bytes, as ipvsadm writes a NUL into its buffers.
pub fn cut(mut s: String, max: usize) -> String {
    truncate(&mut s, max);
    s
}

/// ipvsadm's `string_to_number()`: a decimal `strtol` that must use the
/// whole string, within `min..=max`.
pub fn string_to_number(s: &str, min: i64, max: i64) -> Option<i64> {
    let t = s.trim_start();
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    let n = if neg { -n } else { n };
    (min..=max).contains(&n).then_some(n)
}

/// `inet_aton()`: one to four parts, each decimal, octal (`0…`) or hex
/// (`0x…`); the last part fills the remaining bytes.
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut vals = Vec::with_capacity(4);
    for p in &parts {
        let v = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            if h.is_empty() {
                0
            } else {
                u32::from_str_radix(h, 16).ok()?
            }
        } else if p.len() > 1 && p.starts_with('0') {
            u32::from_str_radix(&p[1..], 8).ok()?
        } else {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse::<u32>().ok()?
        };
        vals.push(v);
    }
    let n = vals.len();
    let mut addr: u32 = 0;
    for (i, v) in vals.iter().enumerate() {
        if i + 1 < n {
            if *v > 0xff {
                return None;
            }
            addr |= v << (8 * (3 - i));
        } else {
            let room = 8 * (4 - i as u32);
            if room < 32 && *v >= (1u32 << room) {
                return None;
            }
            addr |= v;
        }
    }
    Some(Ipv4Addr::from(addr))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn names() -> Names {
        Names::from_text(
            "127.0.0.1 localhost\n127.0.0.1 other\n::1 localhost ip6-localhost # c\n10.0.0.5 web web.example\n",
            "http 80/tcp www # WorldWideWeb\nhttp 80/udp\ndomain 53/tcp\ndomain 53/udp\nhttp-alt 8080/tcp webcache\n",
        )
    }

    #[test]
    fn addresses_are_named_as_ipvsadm_names_them() {
        let n = names();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(n.addrport(lo, 80, Proto::Tcp, false), "localhost:http");
        assert_eq!(n.addrport(lo, 80, Proto::Tcp, true), "127.0.0.1:80");
        assert_eq!(n.addrport(lo, 81, Proto::Udp, false), "localhost:81");
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(
            n.addrport(v6, 8080, Proto::Tcp, false),
            "[localhost]:http-alt"
        );
        assert_eq!(n.addrport(v6, 8080, Proto::Tcp, true), "[::1]:8080");
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(n.addrport(other, 53, Proto::Udp, false), "192.0.2.1:domain");
        let long: IpAddr = "2001:db8:1234:5678:9abc:def0:1234:5678".parse().unwrap();
        assert_eq!(n.addrport(long, 65535, Proto::Tcp, true).len(), 46);
    }

    #[test]
    fn service_addresses_parse_as_ipvsadm_parses_them() {
        let n = names();
        let p = |s: &str| n.parse_service(s, Proto::Tcp);
        assert_eq!(
            p("10.0.0.1:80"),
            Some(("10.0.0.1".parse().unwrap(), Some(80)))
        );
        assert_eq!(p("10.0.0.1"), Some(("10.0.0.1".parse().unwrap(), None)));
        assert_eq!(p("web:www"), Some(("10.0.0.5".parse().unwrap(), Some(80))));
        assert_eq!(
            p("localhost:webcache"),
            Some(("127.0.0.1".parse().unwrap(), Some(8080)))
        );
        assert_eq!(p("[::1]:80"), Some(("::1".parse().unwrap(), Some(80))));
        assert_eq!(p("::1"), Some(("::1".parse().unwrap(), None)));
        assert_eq!(p("[::1]"), None, "brackets need a port");
        assert_eq!(p("80"), None, "digits alone are not an address");
        assert_eq!(p("10.0.0.1:99999"), None);
        assert_eq!(p("10.0.0.1:nosuch"), None);
        assert_eq!(p("nosuchhost:80"), None);
        assert_eq!(p("10.1:80"), Some(("10.0.0.1".parse().unwrap(), Some(80))));
    }

    #[test]
    fn inet_aton_takes_every_form() {
        let a = |s: &str| inet_aton(s).map(|a| a.to_string());
        assert_eq!(a("255.255.255.0").as_deref(), Some("255.255.255.0"));
        assert_eq!(a("0xffffff00").as_deref(), Some("255.255.255.0"));
        assert_eq!(a("24").as_deref(), Some("0.0.0.24"));
        assert_eq!(a("010.0.0.1").as_deref(), Some("8.0.0.1"));
        assert_eq!(a("1.2.3.4.5"), None);
        assert_eq!(a("256.1.1.1"), None);
        assert_eq!(a("x"), None);
    }

    #[test]
    fn numbers_are_whole_decimal_strings() {
        assert_eq!(string_to_number("65535", 0, 65535), Some(65535));
        assert_eq!(string_to_number("65536", 0, 65535), None);
        assert_eq!(string_to_number("-1", 0, 5), None);
        assert_eq!(string_to_number("12x", 0, 100), None);
        assert_eq!(string_to_number("", 0, 100), None);
    }
}
