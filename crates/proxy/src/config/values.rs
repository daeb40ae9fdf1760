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

#[cfg(test)]
mod tests {
    use super::*;

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
