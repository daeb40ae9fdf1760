//! Configuration values that check themselves when they are read, so that
//! a bad one is reported at its own position: durations, addresses, CIDRs,
//! scheduler names.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A duration written with units: `"300s"`, `"5m"`, `"1h30m"`, `"250ms"`,
/// `"1.5s"`. Units: `ms`, `s`, `m`, `h`, `d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Dur(pub(crate) Duration);

impl FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{s:?} is not a duration: write a number and a unit (ms, s, m, h, d), as \"300s\", \"5m\" or \"1h30m\""
            )
        };
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total = 0f64;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let (num, tail) = rest.split_at(num_len);
            let unit_len = tail
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let value: f64 = num.parse().map_err(|_| bad())?;
            let scale = match unit {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                _ => return Err(bad()),
            };
            total += value * scale;
            rest = tail.trim_start();
        }
        Duration::try_from_secs_f64(total)
            .map(Dur)
            .map_err(|_| format!("{s:?} is out of range"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if !d.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}s", d.as_secs_f64())
        } else if d.subsec_millis() != 0 {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}s", d.as_secs())
        }
    }
}

/// Deserializes `T` from a YAML string through `FromStr`, keeping the
/// position of the string for the error; other YAML types get a clear
/// message naming what was expected.
struct FromStrVisitor<T>(&'static str, std::marker::PhantomData<T>);

impl<T> Visitor<'_> for FromStrVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Err(E::custom(format!("{v} needs to be written as {}", self.0)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Err(E::custom(format!("{v} needs to be written as {}", self.0)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Err(E::custom(format!("{v} needs to be written as {}", self.0)))
    }
}

macro_rules! deserialize_from_str {
    ($t:ty, $what:expr) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(FromStrVisitor::<$t>($what, std::marker::PhantomData))
            }
        }
    };
}

deserialize_from_str!(Dur, "a duration with a unit, as \"300s\" or \"5m\"");

/// A duration, or `off`: for a setting a service may turn off when
/// `global` turns it on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum DurOrOff {
    Dur(Dur),
    Off,
}

impl FromStr for DurOrOff {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "off" {
            return Ok(DurOrOff::Off);
        }
        s.parse::<Dur>()
            .map(DurOrOff::Dur)
            .map_err(|e| format!("{e}, or off"))
    }
}

deserialize_from_str!(DurOrOff, "a duration with a unit, as \"10s\", or off");

/// `IP:PORT`, `[IPv6]:PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Addr(pub(crate) SocketAddr);

impl FromStr for Addr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse()
            .map(Addr)
            .map_err(|_| format!("{s:?} is not an address: write IP:PORT, or [IPv6]:PORT"))
    }
}

deserialize_from_str!(Addr, "an address, as \"127.0.0.1:8080\" or \"[::1]:8080\"");

/// A network, `10.0.0.0/8`, or a single address (a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr(pub(crate) IpNet);

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(|a| Cidr(IpNet::from(a)))
            .map_err(|_| {
                format!("{s:?} is not a network: write 10.0.0.0/8, 2001:db8::/32 or one address")
            })
    }
}

deserialize_from_str!(Cidr, "a network, as \"10.0.0.0/8\"");

/// `listen`: one address, or a list of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Listen(pub(crate) Vec<SocketAddr>);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Listen;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address, as \"127.0.0.1:8080\", or a list of addresses")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Listen, E> {
                let a: Addr = v.parse().map_err(E::custom)?;
                Ok(Listen(vec![a.0]))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Listen, A::Error> {
                let mut v = Vec::new();
                while let Some(a) = seq.next_element::<Addr>()? {
                    v.push(a.0);
                }
                Ok(Listen(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// An IP address alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ip(pub(crate) IpAddr);

impl FromStr for Ip {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse()
            .map(Ip)
            .map_err(|_| format!("{s:?} is not an IP address"))
    }
}

deserialize_from_str!(Ip, "an IP address, as \"10.0.0.1\"");

/// HTTP status codes: `200`, `"200-299"`, or a list of those.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StatusList(pub(crate) Vec<(u16, u16)>);

fn status_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not a status code or range, as 200 or \"200-299\"");
    let code = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(bad)
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (code(a)?, code(b)?);
            if a > b {
                return Err(bad());
            }
            Ok((a, b))
        }
        None => code(s).map(|c| (c, c)),
    }
}

impl<'de> Deserialize<'de> for StatusList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct One((u16, u16));
        impl<'de> Deserialize<'de> for One {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = One;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a status code or range, as 200 or \"200-299\"")
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<One, E> {
                        status_range(&v.to_string()).map(One).map_err(E::custom)
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<One, E> {
                        status_range(&v.to_string()).map(One).map_err(E::custom)
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<One, E> {
                        status_range(v).map(One).map_err(E::custom)
                    }
                }
                d.deserialize_any(V)
            }
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StatusList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("status codes: 200, \"200-299\", or a list of them")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusList, E> {
                status_range(&v.to_string())
                    .map(|r| StatusList(vec![r]))
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusList, E> {
                status_range(&v.to_string())
                    .map(|r| StatusList(vec![r]))
                    .map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusList, E> {
                v.split_whitespace()
                    .map(status_range)
                    .collect::<Result<Vec<_>, _>>()
                    .map(StatusList)
                    .map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<StatusList, A::Error> {
                let mut v = Vec::new();
                while let Some(One(r)) = seq.next_element()? {
                    v.push(r);
                }
                Ok(StatusList(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Hex bytes, keepalived's free form: each word is read in pairs of
/// digits, a last lone digit being a byte of its own (`"Ab12f 3"` is AB 12
/// 0F 03). With `wildcards`, `x` nibbles match anything: each byte comes
/// with its mask.
pub(crate) fn hex_bytes(s: &str, wildcards: bool) -> Result<Vec<(u8, u8)>, String> {
    let mut out = Vec::new();
    for word in s.split_whitespace() {
        let chars: Vec<char> = word.chars().collect();
        for pair in chars.chunks(2) {
            out.push(match pair {
                [hi, lo] => nibble_pair(*hi, *lo, wildcards, s)?,
                [lo] => nibble_pair('0', *lo, wildcards, s)?,
                _ => continue,
            });
        }
    }
    Ok(out)
}

fn nibble_pair(hi: char, lo: char, wildcards: bool, all: &str) -> Result<(u8, u8), String> {
    let nib = |c: char| -> Result<(u8, u8), String> {
        if wildcards && (c == 'x' || c == 'X') {
            return Ok((0, 0));
        }
        c.to_digit(16)
            .map(|d| (d as u8, 0xf))
            .ok_or_else(|| format!("{all:?} is not hex bytes (as \"0a1b 2c\")"))
    };
    let (h, hm) = nib(hi)?;
    let (l, lm) = nib(lo)?;
    Ok(((h << 4) | l, (hm << 4) | lm))
}

/// `require_reply`: `true` (any reply), or the hex bytes it must start with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReplyMatch(pub(crate) Option<Vec<(u8, u8)>>);

impl<'de> Deserialize<'de> for ReplyMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ReplyMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, or the hex bytes the reply starts with")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ReplyMatch, E> {
                if v {
                    Ok(ReplyMatch(Some(Vec::new())))
                } else {
                    Ok(ReplyMatch(None))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ReplyMatch, E> {
                hex_bytes(v, true)
                    .map(|b| ReplyMatch(Some(b)))
                    .map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges_and_hex() {
        assert_eq!(status_range("200-299"), Ok((200, 299)));
        assert_eq!(status_range("503"), Ok((503, 503)));
        assert!(status_range("299-200").is_err());
        assert!(status_range("99").is_err());
        assert_eq!(
            hex_bytes("Ab12f 3 456 546443123", false)
                .unwrap()
                .iter()
                .map(|b| b.0)
                .collect::<Vec<_>>(),
            [
                0xab, 0x12, 0x0f, 0x03, 0x45, 0x06, 0x54, 0x64, 0x43, 0x12, 0x03
            ]
        );
        assert_eq!(hex_bytes("1x", true).unwrap(), [(0x10, 0xf0)]);
        assert!(hex_bytes("1x", false).is_err());
        assert!(hex_bytes("zz", false).is_err());
    }

    #[test]
    fn durations() {
        let d = |s: &str| s.parse::<Dur>().map(|d| d.0);
        assert_eq!(d("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(d("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "300", "5 minutes", "s", "-1s", "1.2.3s", "3x"] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1500ms");
        assert_eq!(Dur(Duration::from_secs(90)).to_string(), "90s");
    }

    #[test]
    fn cidrs_and_addresses() {
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().0.to_string(),
            "10.0.0.0/8"
        );
        assert_eq!("::1".parse::<Cidr>().unwrap().0.to_string(), "::1/128");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("[::1]:80".parse::<Addr>().is_ok());
        assert!("::1:80".parse::<Addr>().is_err());
    }
}

/// An argument of a misc check's `command`: a string, or `{secret:
/// STRING}` for one that the admin API and `rvs show-config` must not show
/// (a password, a key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Arg {
    pub(crate) value: String,
    pub(crate) secret: bool,
}

impl<'de> Deserialize<'de> for Arg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Arg, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Arg;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an argument: a string, or {secret: STRING} for one never shown")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Arg, E> {
                Ok(Arg {
                    value: v.to_owned(),
                    secret: false,
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Arg, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Arg, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Arg, A::Error> {
                let mut value: Option<String> = None;
                while let Some(k) = m.next_key::<String>()? {
                    if k != "secret" {
                        return Err(de::Error::unknown_field(&k, &["secret"]));
                    }
                    if value.is_some() {
                        return Err(de::Error::duplicate_field("secret"));
                    }
                    value = Some(m.next_value()?);
                }
                value
                    .map(|value| Arg {
                        value,
                        secret: true,
                    })
                    .ok_or_else(|| de::Error::missing_field("secret"))
            }
        }
        d.deserialize_any(V)
    }
}
