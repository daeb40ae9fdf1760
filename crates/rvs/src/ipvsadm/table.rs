//! The IPVS table as ipvsadm prints it: built from the admin API's JSON,
//! sorted with ipvsadm's comparators, and written in its formats, byte
//! for byte (ipvsadm 1.31's `print_title`, `print_service_entry`,
//! `print_largenum`, `list_conn`, `list_timeout`).
//!
//! An rvs service listening on several addresses is several IPVS virtual
//! services, one per address, each showing the same real servers and the
//! rvs service's counters.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;

use super::names::{Names, Proto, cut};

/// IPVS's version and connection table size, as the kernel reports them.
pub const VERSION_LINE: &str = "IP Virtual Server version 1.2.1 (size=4096)";

/// What a listing shows (ipvsadm's `FMT_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Format {
    /// `-n`.
    pub numeric: bool,
    /// `-S`: the rules.
    pub rule: bool,
    /// `--stats`.
    pub stats: bool,
    /// `--rate`.
    pub rate: bool,
    /// `--thresholds`.
    pub thresholds: bool,
    /// `--persistent-conn`.
    pub persistent_conn: bool,
    /// `--nosort`.
    pub nosort: bool,
    /// `--exact`.
    pub exact: bool,
}

/// The five counters of `--stats` or the five rates of `--rate`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Counters {
    /// Conns.
    pub conns: u64,
    /// InPkts.
    pub in_pkts: u64,
    /// OutPkts.
    pub out_pkts: u64,
    /// InBytes.
    pub in_bytes: u64,
    /// OutBytes.
    pub out_bytes: u64,
}

/// CPS and the rest.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Rates {
    /// CPS.
    pub cps: u64,
    /// InPPS.
    pub in_pps: u64,
    /// OutPPS.
    pub out_pps: u64,
    /// InBPS.
    pub in_bps: u64,
    /// OutBPS.
    pub out_bps: u64,
}

/// A real server as the API lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct ApiDest {
    /// Its address.
    pub address: SocketAddr,
    /// Weight.
    pub weight: i32,
    /// Upper threshold.
    #[serde(default)]
    pub u_threshold: u32,
    /// Lower threshold.
    #[serde(default)]
    pub l_threshold: u32,
    /// ActiveConn.
    #[serde(default)]
    pub active_conns: u32,
    /// InActConn.
    #[serde(default)]
    pub inactive_conns: u32,
    /// PersistConn.
    #[serde(default)]
    pub persist_conns: u32,
    /// Totals since the last zeroing.
    #[serde(default)]
    pub stats: Counters,
    /// Rates.
    #[serde(default)]
    pub rates: Rates,
    /// In the scheduler's table (a server down and out of it is not).
    #[serde(default = "yes")]
    pub in_table: bool,
}

fn yes() -> bool {
    true
}

/// Persistence as the API lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct ApiPersistence {
    /// Seconds.
    pub timeout: u32,
    /// The IPv4 netmask.
    pub netmask: std::net::Ipv4Addr,
    /// The IPv6 prefix length.
    pub ipv6_prefix: u8,
    /// The persistence engine (`--pe`).
    #[serde(default)]
    pub pe: Option<String>,
}

/// A service as the API lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct ApiService {
    /// rvs's name of it.
    pub name: String,
    /// `tcp` or `udp`.
    pub proto: String,
    /// Its addresses (as bound).
    pub listen: Vec<SocketAddr>,
    /// Scheduler name.
    pub scheduler: String,
    /// Scheduler flags.
    #[serde(default)]
    pub flags: Vec<String>,
    /// Persistence.
    #[serde(default)]
    pub persistence: Option<ApiPersistence>,
    /// One-packet scheduling.
    #[serde(default)]
    pub ops: bool,
    /// Which connections of a shared address it takes (`match`): present
    /// on every service of an address routed by SNI.
    #[serde(default, rename = "match")]
    pub matching: Option<serde_json::Value>,
    /// Totals since the last zeroing.
    #[serde(default)]
    pub stats: Counters,
    /// Rates.
    #[serde(default)]
    pub rates: Rates,
    /// Real servers in IPVS's list order.
    #[serde(default)]
    pub real_servers: Vec<ApiDest>,
    /// The service as the configuration file would say it.
    #[serde(default)]
    pub config: serde_json::Value,
}

impl ApiService {
    /// TCP or UDP.
    pub fn protocol(&self) -> Proto {
        if self.proto.eq_ignore_ascii_case("udp") {
            Proto::Udp
        } else {
            Proto::Tcp
        }
    }
}

/// `GET /api/v1/services`.
#[derive(Clone, Debug, Deserialize)]
pub struct ApiServices {
    /// In configuration order.
    pub services: Vec<ApiService>,
}

/// One IPVS virtual service: an address of an rvs service.
#[derive(Clone, Debug)]
pub struct VirtualService<'a> {
    /// TCP or UDP.
    pub proto: Proto,
    /// The virtual address.
    pub addr: SocketAddr,
    /// The rvs service.
    pub svc: &'a ApiService,
}

/// Every virtual service of the table, in configuration order.
pub fn virtual_services(list: &ApiServices) -> Vec<VirtualService<'_>> {
    let mut out = Vec::new();
    for s in &list.services {
        for a in &s.listen {
            out.push(VirtualService {
                proto: s.protocol(),
                addr: *a,
                svc: s,
            });
        }
    }
    out
}

fn af(ip: IpAddr) -> i32 {
    if ip.is_ipv4() { 2 } else { 10 }
}

/// The address as IPVS's comparators see it: one big-endian word for
/// IPv4, four for IPv6.
fn words(ip: IpAddr) -> Vec<u32> {
    match ip {
        IpAddr::V4(a) => vec![u32::from(a)],
        IpAddr::V6(a) => a
            .octets()
            .chunks(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

/// `ntohl(a) - ntohl(b)` as libipvs computes it: unsigned, then int.
fn addr_cmp(a: IpAddr, b: IpAddr) -> i32 {
    let (wa, wb) = (words(a), words(b));
    let mut r = 0i32;
    for (x, y) in wa.iter().zip(&wb) {
        r = x.wrapping_sub(*y) as i32;
        if r != 0 {
            break;
        }
    }
    r
}

/// `ipvs_cmp_services()`.
fn cmp_services(a: &VirtualService<'_>, b: &VirtualService<'_>) -> i32 {
    let r = af(a.addr.ip()) - af(b.addr.ip());
    if r != 0 {
        return r;
    }
    let r = a.proto.number() - b.proto.number();
    if r != 0 {
        return r;
    }
    if a.addr.is_ipv4() == b.addr.is_ipv4() {
        let r = addr_cmp(a.addr.ip(), b.addr.ip());
        if r != 0 {
            return r;
        }
    }
    i32::from(a.addr.port()) - i32::from(b.addr.port())
}

/// `ipvs_cmp_dests()`.
fn cmp_dests(a: &ApiDest, b: &ApiDest) -> i32 {
    if a.address.is_ipv4() == b.address.is_ipv4() {
        let r = addr_cmp(a.address.ip(), b.address.ip());
        if r != 0 {
            return r;
        }
    }
    i32::from(a.address.port()) - i32::from(b.address.port())
}

/// glibc's `qsort()` (a top-down merge sort, stable) with a C comparator,
/// so that even comparators that are not transitive (libipvs's wrapping
/// differences) order things as ipvsadm does.
pub fn msort<T: Clone>(v: &mut [T], cmp: &impl Fn(&T, &T) -> i32) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    msort(&mut v[..n1], cmp);
    msort(&mut v[n1..], cmp);
    let mut out = Vec::with_capacity(n);
    let (mut i, mut j) = (0, n1);
    while i < n1 && j < n {
        if cmp(&v[i], &v[j]) <= 0 {
            out.push(v[i].clone());
            i += 1;
        } else {
            out.push(v[j].clone());
            j += 1;
        }
    }
    out.extend_from_slice(&v[i..n1]);
    out.extend_from_slice(&v[j..n]);
    v.clone_from_slice(&out);
}

/// `print_largenum()`.
fn largenum(out: &mut String, i: u64, f: Format) {
    if f.exact {
        let len = i.to_string().len();
        let width = if len <= 8 { 9 } else { len + 1 };
        let _ = write!(out, "{i:>width$}");
        return;
    }
    let _ = if i < 100_000_000 {
        write!(out, "{i:>9}")
    } else if i < 1_000_000_000 {
        write!(out, "{:>8}K", i / 1000)
    } else if i < 100_000_000_000 {
        write!(out, "{:>8}M", i / 1_000_000)
    } else if i < 100_000_000_000_000 {
        write!(out, "{:>8}G", i / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", i / 1_000_000_000_000)
    };
}

/// `print_title()`.
pub fn title(f: Format) -> &'static str {
    if f.stats {
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  -> RemoteAddress:Port\n"
    } else if f.rate {
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n  -> RemoteAddress:Port\n"
    } else if f.thresholds {
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n  -> RemoteAddress:Port\n"
    } else if f.persistent_conn {
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n  -> RemoteAddress:Port\n"
    } else if f.rule {
        ""
    } else {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    }
}

/// The netmask as a 32-bit value in network order, as ipvsadm compares it.
fn mask_is_host(p: &ApiPersistence) -> bool {
    p.netmask == std::net::Ipv4Addr::BROADCAST
}

/// `print_service_entry()`.
pub fn service_entry(out: &mut String, vs: &VirtualService<'_>, names: &Names, f: Format) {
    let s = vs.svc;
    let v6 = vs.addr.is_ipv6();
    let vname = names.addrport(vs.addr.ip(), vs.addr.port(), vs.proto, f.numeric);
    let svc_name = if f.rule {
        format!("{} {vname}", vs.proto.switch())
    } else {
        let n = format!("{:<4} {vname}", vs.proto.upper());
        if v6 { n } else { cut(n, 33) }
    };
    let flags = s.flags.join(",");
    if f.rule {
        let _ = write!(out, "-A {svc_name} -s {}", s.scheduler);
        if let Some(p) = &s.persistence {
            let _ = write!(out, " -p {}", p.timeout);
            if !v6 && !mask_is_host(p) {
                let _ = write!(out, " -M {}", p.netmask);
            }
            if v6 && p.ipv6_prefix != 128 {
                let _ = write!(out, " -M {}", p.ipv6_prefix);
            }
            if let Some(pe) = &p.pe {
                let _ = write!(out, " --pe {pe}");
            }
        }
        if s.ops {
            out.push_str(" -o");
        }
        if !flags.is_empty() {
            let _ = write!(out, " -b {flags}");
        }
    } else if f.stats {
        let _ = write!(out, "{svc_name:<33}");
        for n in [
            s.stats.conns,
            s.stats.in_pkts,
            s.stats.out_pkts,
            s.stats.in_bytes,
            s.stats.out_bytes,
        ] {
            largenum(out, n, f);
        }
    } else if f.rate {
        let _ = write!(out, "{svc_name:<33}");
        for n in [
            s.rates.cps,
            s.rates.in_pps,
            s.rates.out_pps,
            s.rates.in_bps,
            s.rates.out_bps,
        ] {
            largenum(out, n, f);
        }
    } else {
        let _ = write!(out, "{svc_name} {}", s.scheduler);
        if !flags.is_empty() {
            let _ = write!(out, " ({flags})");
        }
        if let Some(p) = &s.persistence {
            let _ = write!(out, " persistent {}", p.timeout);
            if !v6 && !mask_is_host(p) {
                let _ = write!(out, " mask {}", p.netmask);
            }
            if v6 && p.ipv6_prefix != 128 {
                let _ = write!(out, " mask {}", p.ipv6_prefix);
            }
            if let Some(pe) = &p.pe {
                let _ = write!(out, " pe {pe}");
            }
        }
        if s.ops {
            out.push_str(" ops");
        }
    }
    out.push('\n');

    // What IPVS has: servers out of the table (down) are not in it.
    let mut dests: Vec<ApiDest> = s
        .real_servers
        .iter()
        .filter(|d| d.in_table)
        .cloned()
        .collect();
    if !f.nosort {
        msort(&mut dests, &cmp_dests);
    }
    for d in &dests {
        let dname = names.addrport(d.address.ip(), d.address.port(), vs.proto, f.numeric);
        let dname = if !f.rule && d.address.is_ipv4() {
            cut(dname, 28)
        } else {
            dname
        };
        if f.rule {
            let _ = writeln!(out, "-a {svc_name} -r {dname} -m -w {}", d.weight);
        } else if f.stats {
            let _ = write!(out, "  -> {dname:<28}");
            for n in [
                d.stats.conns,
                d.stats.in_pkts,
                d.stats.out_pkts,
                d.stats.in_bytes,
                d.stats.out_bytes,
            ] {
                largenum(out, n, f);
            }
            out.push('\n');
        } else if f.rate {
            let _ = write!(
                out,
                "  -> {dname:<28} {:>8} {:>8} {:>8}",
                d.rates.cps, d.rates.in_pps, d.rates.out_pps
            );
            largenum(out, d.rates.in_bps, f);
            largenum(out, d.rates.out_bps, f);
            out.push('\n');
        } else if f.thresholds {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
                d.u_threshold, d.l_threshold, d.active_conns, d.inactive_conns
            );
        } else if f.persistent_conn {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
                d.weight, d.persist_conns, d.active_conns, d.inactive_conns
            );
        } else {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
                "FullNat", d.weight, d.active_conns, d.inactive_conns
            );
        }
    }
}

/// `list_all()`: the version line (not for rules), the title and every
/// virtual service, sorted unless `--nosort`.
pub fn list_all(list: &ApiServices, names: &Names, f: Format) -> String {
    let mut out = String::new();
    if !f.rule {
        out.push_str(VERSION_LINE);
        out.push('\n');
    }
    let mut all = virtual_services(list);
    if !f.nosort {
        msort(&mut all, &cmp_services);
    }
    out.push_str(title(f));
    for vs in &all {
        service_entry(&mut out, vs, names, f);
    }
    out
}

/// `list_service()`: the title and one virtual service (or, for an
/// address services share by SNI, each of them in turn).
pub fn list_one(shared: &[&VirtualService<'_>], names: &Names, f: Format) -> String {
    let mut out = String::from(title(f));
    for vs in shared {
        service_entry(&mut out, vs, names, f);
    }
    out
}

/// A connection as the API lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct ApiConn {
    /// `TCP` or `UDP`.
    pub proto: String,
    /// The client.
    pub client: SocketAddr,
    /// The virtual address.
    pub vip: SocketAddr,
    /// The real server.
    pub server: SocketAddr,
    /// IPVS's state name.
    pub state: String,
    /// Seconds left.
    pub expires: u64,
    /// The persistence engine's name (`sip`), for an entry that has its
    /// data.
    #[serde(default)]
    pub pe_name: Option<String>,
    /// The engine's data (the SIP Call-ID).
    #[serde(default)]
    pub pe_data: Option<String>,
}

/// `GET /api/v1/connections`.
#[derive(Clone, Debug, Deserialize)]
pub struct ApiConns {
    /// Connections and templates.
    pub connections: Vec<ApiConn>,
}

/// `list_conn()`.
pub fn list_conns(list: &ApiConns, names: &Names, f: Format) -> String {
    let mut out = String::from("IPVS connection entries\n");
    if f.persistent_conn {
        out.push_str(
            "pro expire state       source             virtual            destination        pe name          pe_data\n",
        );
    } else {
        out.push_str("pro expire state       source             virtual            destination\n");
    }
    for c in &list.connections {
        let proto = if c.proto.eq_ignore_ascii_case("udp") {
            Proto::Udp
        } else {
            Proto::Tcp
        };
        let name = |a: SocketAddr| names.addrport(a.ip(), a.port(), proto, f.numeric);
        let expire = format!("{:02}:{:02}", c.expires / 60, c.expires % 60);
        if f.persistent_conn {
            // ipvsadm's row, whose widths are not its title's.
            let _ = writeln!(
                out,
                "{:<3} {:<6} {:<11} {:<18} {:<18} {:<16} {:<18} {}",
                proto.upper(),
                expire,
                c.state,
                name(c.client),
                name(c.vip),
                name(c.server),
                c.pe_name.as_deref().unwrap_or(""),
                c.pe_data.as_deref().unwrap_or("")
            );
        } else {
            let _ = writeln!(
                out,
                "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
                proto.upper(),
                expire,
                c.state,
                name(c.client),
                name(c.vip),
                name(c.server)
            );
        }
    }
    out
}

/// `GET /api/v1/daemon`.
#[derive(Clone, Debug, Deserialize)]
pub struct ApiDaemons {
    /// The running daemons, master first.
    pub daemons: Vec<ApiDaemon>,
}

/// A sync daemon as the API lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct ApiDaemon {
    /// `master` or `backup`.
    pub state: String,
    /// Its interface.
    pub mcast_interface: String,
    /// Its sync ID.
    pub syncid: u8,
    /// The largest message.
    pub sync_maxlen: u16,
    /// The group.
    pub mcast_group: String,
    /// The port.
    pub mcast_port: u16,
    /// The TTL.
    pub mcast_ttl: u8,
}

/// `list_daemon()`: a line per daemon, master first, with what the kernel
/// reports (its defaults filled in when the daemon started).
pub fn daemons(list: &ApiDaemons) -> String {
    let mut out = String::new();
    for d in &list.daemons {
        let _ = write!(
            out,
            "{} sync daemon (mcast={}, syncid={}",
            d.state, d.mcast_interface, d.syncid
        );
        if d.sync_maxlen > 0 {
            let _ = write!(out, ", maxlen={}", d.sync_maxlen);
        }
        let _ = write!(out, ", group={}", d.mcast_group);
        if d.mcast_port > 0 {
            let _ = write!(out, ", port={}", d.mcast_port);
        }
        if d.mcast_ttl > 0 {
            let _ = write!(out, ", ttl={}", d.mcast_ttl);
        }
        out.push_str(")\n");
    }
    out
}

/// `list_timeout()`.
pub fn timeouts(tcp: u64, tcpfin: u64, udp: u64) -> String {
    format!("Timeout (tcp tcpfin udp): {tcp} {tcpfin} {udp}\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn connection_headers_have_ipvsadms_widths() {
        let names = Names::none();
        let empty = ApiConns {
            connections: Vec::new(),
        };
        let plain = list_conns(&empty, &names, Format::default());
        assert_eq!(
            plain.lines().nth(1).unwrap(),
            format!(
                "pro expire {:<11} {:<18} {:<18} {}",
                "state", "source", "virtual", "destination"
            )
        );
        let pc = list_conns(
            &empty,
            &names,
            Format {
                persistent_conn: true,
                ..Format::default()
            },
        );
        assert_eq!(
            pc.lines().nth(1).unwrap(),
            format!(
                "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} {}",
                "state", "source", "virtual", "destination", "pe name", "pe_data"
            )
        );
    }

    #[test]
    fn largenum_is_ipvsadms() {
        let f = Format::default();
        let s = |n: u64, f: Format| {
            let mut o = String::new();
            largenum(&mut o, n, f);
            o
        };
        assert_eq!(s(0, f), "        0");
        assert_eq!(s(99_999_999, f), " 99999999");
        assert_eq!(s(100_000_000, f), "  100000K");
        assert_eq!(s(1_234_567_890, f), "    1234M");
        assert_eq!(s(123_456_789_012, f), "     123G");
        assert_eq!(s(123_456_789_012_345, f), "     123T");
        let x = Format { exact: true, ..f };
        assert_eq!(s(5, x), "        5");
        assert_eq!(s(1_234_567_890, x), " 1234567890");
    }

    #[test]
    fn titles_have_ipvsadms_widths() {
        let t = title(Format {
            stats: true,
            ..Format::default()
        });
        assert_eq!(
            t.lines().next().unwrap(),
            format!(
                "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
            )
        );
        let t = title(Format {
            thresholds: true,
            ..Format::default()
        });
        assert_eq!(
            t.lines().next().unwrap(),
            format!(
                "{:<33} {:<10} {:<10} {:<10} {:<10}",
                "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
            )
        );
        let t = title(Format {
            persistent_conn: true,
            ..Format::default()
        });
        assert_eq!(
            t.lines().next().unwrap(),
            format!(
                "{:<33} {:<9} {:<11} {:<10} {:<10}",
                "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"
            )
        );
        let t = title(Format {
            rate: true,
            ..Format::default()
        });
        assert_eq!(
            t.lines().next().unwrap(),
            format!(
                "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
                "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
            )
        );
    }

    /// libipvs subtracts addresses as unsigned 32-bit words read as int:
    /// 10.x minus 200.x wraps to a positive number, so 200.x lists first.
    #[test]
    fn sorting_wraps_as_libipvs_does() {
        let d = |a: &str| ApiDest {
            address: a.parse().unwrap(),
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            active_conns: 0,
            inactive_conns: 0,
            persist_conns: 0,
            stats: Counters::default(),
            rates: Rates::default(),
            in_table: true,
        };
        let mut v = vec![
            d("10.0.0.1:80"),
            d("200.0.0.1:80"),
            d("10.0.0.1:79"),
            d("127.0.0.1:1"),
        ];
        msort(&mut v, &cmp_dests);
        let got: Vec<String> = v.iter().map(|d| d.address.to_string()).collect();
        assert_eq!(
            got,
            ["200.0.0.1:80", "10.0.0.1:79", "10.0.0.1:80", "127.0.0.1:1"]
        );
    }
}
