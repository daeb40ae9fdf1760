//! ipvsadm's command line, read as ipvsadm 1.31 reads it (popt): the
//! command comes first; short options cluster (`-Ln`) and take their
//! argument attached or next (`-t10.0.0.1:80`, `-t 10.0.0.1:80`); long
//! options take `--opt=value` or `--opt value`; `-p` takes its timeout
//! only when the next word is not an option. Then ipvsadm's checks, with
//! its messages: which options each command needs, allows and refuses
//! (`commands_v_options`), values in range, the zero-port and one-packet
//! rules.

use std::net::{IpAddr, SocketAddr};

use super::names::{Names, Proto, inet_aton, string_to_number};

/// ipvsadm's commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// -A
    Add,
    /// -E
    Edit,
    /// -D
    Del,
    /// -C
    Flush,
    /// -L, -l
    List,
    /// -a
    AddDest,
    /// -d
    DelDest,
    /// -e
    EditDest,
    /// --set
    Timeout,
    /// --start-daemon
    StartDaemon,
    /// --stop-daemon
    StopDaemon,
    /// -R
    Restore,
    /// -S
    Save,
    /// -Z
    Zero,
}

const CMDNAMES: [&str; 14] = [
    "add-service",
    "edit-service",
    "delete-service",
    "flush",
    "list",
    "add-server",
    "delete-server",
    "edit-server",
    "set",
    "start-daemon",
    "stop-daemon",
    "restore",
    "save",
    "zero",
];

impl Cmd {
    fn index(self) -> usize {
        match self {
            Cmd::Add => 0,
            Cmd::Edit => 1,
            Cmd::Del => 2,
            Cmd::Flush => 3,
            Cmd::List => 4,
            Cmd::AddDest => 5,
            Cmd::DelDest => 6,
            Cmd::EditDest => 7,
            Cmd::Timeout => 8,
            Cmd::StartDaemon => 9,
            Cmd::StopDaemon => 10,
            Cmd::Restore => 11,
            Cmd::Save => 12,
            Cmd::Zero => 13,
        }
    }
}

/// ipvsadm's options, in its `optnames` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Opt {
    Numeric = 0,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    Mcast,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    SyncId,
    Exact,
    OnePacket,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
}

const OPTNAMES: [&str; 34] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
];

/// `commands_v_options`: '+' needed, 'x' refused, '1' one of, ' ' allowed.
const LEGAL: [&[u8; 34]; 14] = [
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx", // add-service
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx", // edit-service
    b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // delete-service
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // flush
    b" 11xxxxxxxxx11       xxxxxxx xxxxx", // list
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ", // add-server
    b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx", // delete-server
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ", // edit-server
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // set
    b"xxxxxxxxxxx xxxxxxx xxxx    xxxxxx", // start-daemon
    b"xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx", // stop-daemon
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // restore
    b" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // save
    b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // zero
];

/// The longest persistence and idle timeout ipvsadm takes: 31 days.
pub const MAX_TIMEOUT: i64 = 86_400 * 31;

/// The timeout of `-p` without a value.
pub const DEFAULT_PERSISTENT_TIMEOUT: u32 = 300;

/// How ipvsadm forwards to a real server; rvs always proxies (FULLNAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// -g (the default): the real server's port is the service's.
    Route,
    /// -i: as -g.
    Tunnel,
    /// -m: the real server's own port.
    Masq,
}

/// A command line, read and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The command.
    pub cmd: Cmd,
    /// -t/-u: protocol, address, port.
    pub service: Option<(Proto, IpAddr, u16)>,
    /// -f: a firewall-mark service (read, so that rvs can say what to do
    /// instead; rvs has none).
    pub fwmark: Option<u32>,
    /// -s.
    pub scheduler: String,
    /// -p: the timeout.
    pub persistent: Option<u32>,
    /// -M for an IPv4 service: the mask.
    pub netmask_v4: Option<std::net::Ipv4Addr>,
    /// -M for an IPv6 service: the prefix length.
    pub netmask_v6: Option<u8>,
    /// -o.
    pub ops: bool,
    /// -b.
    pub sched_flags: Vec<String>,
    /// --pe.
    pub pe: Option<String>,
    /// -r.
    pub server: Option<SocketAddr>,
    /// -g/-i/-m.
    pub forward: Forward,
    /// -w (1 by default).
    pub weight: u32,
    /// -x.
    pub u_threshold: u32,
    /// -y.
    pub l_threshold: u32,
    /// --set's three values.
    pub timeouts: Option<(u32, u32, u32)>,
    /// The listing's options.
    pub format: super::table::Format,
    /// -c.
    pub connections: bool,
    /// --timeout.
    pub list_timeout: bool,
    /// --daemon.
    pub list_daemon: bool,
    /// --start-daemon/--stop-daemon's state, and the daemon options.
    pub daemon: Daemon,
}

/// `--start-daemon STATE` and its options, `--stop-daemon STATE`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Daemon {
    /// `master` or `backup`.
    pub state: String,
    /// --mcast-interface (ipvsadm's default: eth0).
    pub mcast_interface: Option<String>,
    /// --syncid.
    pub syncid: Option<u8>,
    /// --sync-maxlen.
    pub sync_maxlen: Option<u16>,
    /// --mcast-group.
    pub mcast_group: Option<IpAddr>,
    /// --mcast-port.
    pub mcast_port: Option<u16>,
    /// --mcast-ttl.
    pub mcast_ttl: Option<u8>,
}

/// How a command line fails: ipvsadm's message and exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The exit status.
    pub code: u8,
    /// What goes to stderr (a line, without its newline).
    pub message: String,
    /// Whether stdout gets it instead (help, version).
    pub stdout: bool,
    /// Whether ipvsadm exits at once (`fail()`, `tryhelp_exit()`, help),
    /// ending a restore; a refused change does not.
    pub fatal: bool,
}

impl Exit {
    /// ipvsadm's `fail(2, …)`.
    pub fn fail(message: impl Into<String>) -> Exit {
        Exit {
            code: 2,
            message: message.into(),
            stdout: false,
            fatal: true,
        }
    }

    /// ipvsadm's `tryhelp_exit(argv[0], -1)`.
    pub fn tryhelp(program: &str) -> Exit {
        Exit {
            code: 255,
            message: format!("Try `{program} -h' or '{program} --help' for more information."),
            stdout: false,
            fatal: true,
        }
    }

    /// An operation that failed: ipvsadm prints `ipvs_strerror()` and
    /// returns -1.
    pub fn op(message: impl Into<String>) -> Exit {
        Exit {
            code: 255,
            message: message.into(),
            stdout: false,
            fatal: false,
        }
    }
}

/// Every option rvsadm reads, as ipvsadm's popt table lists them: short
/// letter (or none), long name, whether it takes an argument (`Some(true)`
/// required, `Some(false)` optional, `None` none). What the completions and
/// the manual are made from.
pub fn options() -> &'static [(Option<char>, &'static str, Option<bool>)] {
    TABLE
}

/// Options as popt sees them: a tag and its argument.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Opt(char, Option<String>),
    Long(&'static str, Option<String>),
    Bad(String, &'static str),
}

/// The options: short letter (or none), long name, whether it takes an
/// argument (`Some(true)` required, `Some(false)` optional).
const TABLE: &[(Option<char>, &str, Option<bool>)] = &[
    (Some('A'), "add-service", None),
    (Some('E'), "edit-service", None),
    (Some('D'), "delete-service", None),
    (Some('C'), "clear", None),
    (Some('L'), "list", None),
    (Some('l'), "list", None),
    (Some('Z'), "zero", None),
    (Some('a'), "add-server", None),
    (Some('e'), "edit-server", None),
    (Some('d'), "delete-server", None),
    (None, "set", None),
    (Some('h'), "help", None),
    (Some('v'), "version", None),
    (Some('R'), "restore", None),
    (Some('S'), "save", None),
    (None, "start-daemon", Some(true)),
    (None, "stop-daemon", Some(true)),
    (Some('t'), "tcp-service", Some(true)),
    (Some('u'), "udp-service", Some(true)),
    (None, "sctp-service", Some(true)),
    (Some('f'), "fwmark-service", Some(true)),
    (Some('s'), "scheduler", Some(true)),
    (Some('p'), "persistent", Some(false)),
    (Some('M'), "netmask", Some(true)),
    (Some('r'), "real-server", Some(true)),
    (Some('m'), "masquerading", None),
    (Some('i'), "ipip", None),
    (Some('g'), "gatewaying", None),
    (Some('w'), "weight", Some(true)),
    (Some('x'), "u-threshold", Some(true)),
    (Some('y'), "l-threshold", Some(true)),
    (Some('n'), "numeric", None),
    (Some('c'), "connection", None),
    (None, "mcast-interface", Some(true)),
    (None, "syncid", Some(true)),
    (None, "timeout", None),
    (None, "daemon", None),
    (None, "stats", None),
    (None, "rate", None),
    (None, "thresholds", None),
    (None, "persistent-conn", None),
    (None, "nosort", None),
    (None, "sort", None),
    (Some('X'), "exact", None),
    (Some('6'), "ipv6", None),
    (Some('o'), "ops", None),
    (None, "pe", Some(true)),
    (Some('b'), "sched-flags", Some(true)),
    (None, "mcast-group", Some(true)),
    (None, "mcast-port", Some(true)),
    (None, "mcast-ttl", Some(true)),
    (None, "sync-maxlen", Some(true)),
    (None, "tun-info", None),
    (None, "tun-type", Some(true)),
    (None, "tun-port", Some(true)),
    (None, "tun-nocsum", None),
    (None, "tun-csum", None),
    (None, "tun-remcsum", None),
];

/// Splits the words into options (with arguments) and the other words,
/// in order, as popt does.
fn tokenize(args: &[String]) -> (Vec<(Tok, String)>, Vec<String>) {
    let mut toks = Vec::new();
    let mut rest = Vec::new();
    let mut i = 0;
    let mut only_args = false;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if only_args || a == "-" || !a.starts_with('-') {
            rest.push(a.clone());
            continue;
        }
        if a == "--" {
            only_args = true;
            continue;
        }
        // An optional argument is the next word unless it is an option.
        let mut next_arg = |required: bool| -> Option<String> {
            let n = args.get(i)?;
            if !required && n.starts_with('-') {
                return None;
            }
            i += 1;
            Some(n.clone())
        };
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            match TABLE.iter().find(|(_, l, _)| *l == name) {
                None => toks.push((Tok::Bad(a.clone(), "unknown option"), a.clone())),
                Some((short, l, takes)) => {
                    let arg = match takes {
                        None => {
                            if inline.is_some() {
                                toks.push((
                                    Tok::Bad(a.clone(), "option does not take an argument"),
                                    a.clone(),
                                ));
                                continue;
                            }
                            None
                        }
                        Some(required) => match inline {
                            Some(v) => Some(v),
                            None => {
                                let v = next_arg(*required);
                                if *required && v.is_none() {
                                    toks.push((Tok::Bad(a.clone(), "missing argument"), a.clone()));
                                    continue;
                                }
                                v
                            }
                        },
                    };
                    // `--list` is -L (the table's first "list").
                    let tok = match short {
                        Some(c) => Tok::Opt(*c, arg),
                        None => Tok::Long(l, arg),
                    };
                    toks.push((tok, a.clone()));
                }
            }
            continue;
        }
        // A cluster of short options.
        let chars: Vec<char> = a[1..].chars().collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            j += 1;
            let shown = format!("-{c}");
            match TABLE.iter().find(|(s, ..)| *s == Some(c)) {
                None => {
                    toks.push((Tok::Bad(shown.clone(), "unknown option"), shown));
                    break;
                }
                Some((_, _, None)) => toks.push((Tok::Opt(c, None), shown)),
                Some((_, _, Some(required))) => {
                    let attached: String = chars[j..].iter().collect();
                    j = chars.len();
                    let arg = if !attached.is_empty() {
                        Some(attached)
                    } else {
                        let v = next_arg(*required);
                        if *required && v.is_none() {
                            toks.push((Tok::Bad(shown.clone(), "missing argument"), shown));
                            break;
                        }
                        v
                    };
                    toks.push((Tok::Opt(c, arg), shown));
                }
            }
        }
    }
    (toks, rest)
}

fn opt_index(o: Opt) -> usize {
    o as usize
}

/// Reads one command line (without the program name). Help and version
/// come back as an `Exit` with status 0 and the text for stdout.
pub fn parse(program: &str, args: &[String], names: &Names) -> Result<Command, Exit> {
    let (toks, rest) = tokenize(args);
    let mut it = toks.into_iter();
    let mut daemon_state = String::new();
    let cmd = match it.next() {
        Some((Tok::Opt(c, _), _)) => match c {
            'A' => Cmd::Add,
            'E' => Cmd::Edit,
            'D' => Cmd::Del,
            'a' => Cmd::AddDest,
            'e' => Cmd::EditDest,
            'd' => Cmd::DelDest,
            'C' => Cmd::Flush,
            'L' | 'l' => Cmd::List,
            'Z' => Cmd::Zero,
            'R' => Cmd::Restore,
            'S' => Cmd::Save,
            'h' => {
                return Err(Exit {
                    code: 0,
                    message: usage(program),
                    stdout: true,
                    fatal: true,
                });
            }
            'v' => {
                return Err(Exit {
                    code: 0,
                    message: version(),
                    stdout: true,
                    fatal: true,
                });
            }
            _ => return Err(Exit::tryhelp(program)),
        },
        Some((Tok::Long("set", _), _)) => Cmd::Timeout,
        Some((Tok::Long("start-daemon", arg), _)) => {
            daemon_state = arg.unwrap_or_default();
            if daemon_state != "master" && daemon_state != "backup" {
                return Err(Exit::fail("illegal start-daemon parameter specified"));
            }
            Cmd::StartDaemon
        }
        Some((Tok::Long("stop-daemon", arg), _)) => {
            daemon_state = arg.unwrap_or_default();
            if daemon_state != "master" && daemon_state != "backup" {
                return Err(Exit::fail("illegal start_daemon specified"));
            }
            Cmd::StopDaemon
        }
        _ => return Err(Exit::tryhelp(program)),
    };
    let mut c = Command {
        cmd,
        service: None,
        fwmark: None,
        scheduler: String::new(),
        persistent: None,
        netmask_v4: None,
        netmask_v6: None,
        ops: false,
        sched_flags: Vec::new(),
        pe: None,
        server: None,
        forward: Forward::Route,
        weight: 1,
        u_threshold: 0,
        l_threshold: 0,
        timeouts: None,
        format: super::table::Format::default(),
        connections: false,
        list_timeout: false,
        list_daemon: false,
        daemon: Daemon {
            state: daemon_state,
            ..Daemon::default()
        },
    };
    let mut options: u64 = 0;
    let mut set = |o: Opt| -> Result<(), Exit> {
        let bit = 1u64 << opt_index(o);
        if options & bit != 0 {
            return Err(Exit::fail(format!(
                "multiple '{}' options specified",
                OPTNAMES[opt_index(o)]
            )));
        }
        options |= bit;
        Ok(())
    };
    let mut sched_flags_arg: Option<String> = None;
    let mut service_af_v6 = false;
    let mut server_raw: Option<(IpAddr, Option<u16>)> = None;
    for (tok, shown) in it {
        match tok {
            Tok::Bad(opt, why) => return Err(Exit::op(format!("{opt}: {why}"))),
            Tok::Opt(ch @ ('t' | 'u'), arg) => {
                set(Opt::Service)?;
                let proto = if ch == 't' { Proto::Tcp } else { Proto::Udp };
                let arg = arg.unwrap_or_default();
                let Some((ip, port)) = names.parse_service(&arg, proto) else {
                    return Err(Exit::fail(
                        "illegal virtual server address[:port] specified",
                    ));
                };
                service_af_v6 = ip.is_ipv6();
                c.service = Some((proto, ip, port.unwrap_or(0)));
            }
            Tok::Long("sctp-service", _) => {
                return Err(Exit::fail(
                    "SCTP virtual services are not supported by rvs (TCP and UDP are)",
                ));
            }
            Tok::Opt('f', arg) => {
                set(Opt::Service)?;
                let arg = arg.unwrap_or_default();
                c.fwmark = Some(
                    string_to_number(&arg, 1, i64::from(u32::MAX))
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            Exit::fail(format!("invalid fwmark value `{arg}' specified"))
                        })?,
                );
            }
            Tok::Opt('s', arg) => {
                set(Opt::Scheduler)?;
                c.scheduler = arg.unwrap_or_default().chars().take(15).collect();
            }
            Tok::Opt('p', arg) => {
                set(Opt::Persistent)?;
                c.persistent = Some(match arg {
                    None => DEFAULT_PERSISTENT_TIMEOUT,
                    Some(a) => parse_timeout(&a, 1)?,
                });
            }
            Tok::Opt('M', arg) => {
                set(Opt::Netmask)?;
                let arg = arg.unwrap_or_default();
                if !service_af_v6 {
                    let m = inet_aton(&arg)
                        .or_else(|| names.v4_of(&arg))
                        .ok_or_else(|| {
                            Exit::fail("illegal virtual server persistent mask specified")
                        })?;
                    c.netmask_v4 = Some(m);
                } else {
                    let n = atoi(&arg);
                    if !(1..=128).contains(&n) {
                        return Err(Exit::fail("illegal ipv6 netmask specified"));
                    }
                    c.netmask_v6 = Some(n as u8);
                }
            }
            Tok::Opt('r', arg) => {
                set(Opt::Server)?;
                let proto = c.service.map_or(Proto::Tcp, |s| s.0);
                let arg = arg.unwrap_or_default();
                let Some(parsed) = names.parse_service(&arg, proto) else {
                    return Err(Exit::fail("illegal real server address[:port] specified"));
                };
                server_raw = Some(parsed);
            }
            Tok::Opt('i', _) => {
                set(Opt::Forward)?;
                c.forward = Forward::Tunnel;
            }
            Tok::Opt('g', _) => {
                set(Opt::Forward)?;
                c.forward = Forward::Route;
            }
            Tok::Opt('m', _) => {
                set(Opt::Forward)?;
                c.forward = Forward::Masq;
            }
            Tok::Opt('w', arg) => {
                set(Opt::Weight)?;
                c.weight =
                    number(arg, 0, 65_535).ok_or_else(|| Exit::fail("illegal weight specified"))?;
            }
            Tok::Opt('x', arg) => {
                set(Opt::UThreshold)?;
                c.u_threshold = number(arg, 0, i64::from(i32::MAX))
                    .ok_or_else(|| Exit::fail("illegal u_threshold specified"))?;
            }
            Tok::Opt('y', arg) => {
                set(Opt::LThreshold)?;
                c.l_threshold = number(arg, 0, i64::from(i32::MAX))
                    .ok_or_else(|| Exit::fail("illegal l_threshold specified"))?;
            }
            Tok::Opt('c', _) => {
                set(Opt::Connection)?;
                c.connections = true;
            }
            Tok::Opt('n', _) => {
                set(Opt::Numeric)?;
                c.format.numeric = true;
            }
            Tok::Long("mcast-interface", arg) => {
                set(Opt::Mcast)?;
                // IP_VS_IFNAME_MAXLEN less its NUL, as ipvsadm's strncpy.
                let mut name = arg.unwrap_or_default();
                name.truncate(15);
                c.daemon.mcast_interface = Some(name);
            }
            Tok::Long("syncid", arg) => {
                set(Opt::SyncId)?;
                let id =
                    number(arg, 0, 255).ok_or_else(|| Exit::fail("illegal syncid specified"))?;
                c.daemon.syncid = u8::try_from(id).ok();
            }
            Tok::Long("timeout", _) => {
                set(Opt::Timeout)?;
                c.list_timeout = true;
            }
            Tok::Long("daemon", _) => {
                set(Opt::Daemon)?;
                c.list_daemon = true;
            }
            Tok::Long("stats", _) => {
                set(Opt::Stats)?;
                c.format.stats = true;
            }
            Tok::Long("rate", _) => {
                set(Opt::Rate)?;
                c.format.rate = true;
            }
            Tok::Long("thresholds", _) => {
                set(Opt::Thresholds)?;
                c.format.thresholds = true;
            }
            Tok::Long("persistent-conn", _) => {
                set(Opt::PersistentConn)?;
                c.format.persistent_conn = true;
            }
            Tok::Long("nosort", _) => {
                set(Opt::NoSort)?;
                c.format.nosort = true;
            }
            Tok::Long("sort", _) => {}
            Tok::Opt('X', _) => {
                set(Opt::Exact)?;
                c.format.exact = true;
            }
            Tok::Opt('6', _) => {
                if c.fwmark.is_none() {
                    return Err(Exit::fail("-6 used before -f\n"));
                }
            }
            Tok::Opt('o', _) => {
                set(Opt::OnePacket)?;
                c.ops = true;
            }
            Tok::Long("pe", arg) => {
                set(Opt::Pe)?;
                c.pe = arg;
            }
            Tok::Opt('b', arg) => {
                set(Opt::SchedFlags)?;
                sched_flags_arg = arg;
            }
            Tok::Long("mcast-group", arg) => {
                set(Opt::McastGroup)?;
                let arg = arg.unwrap_or_default();
                let v6 = arg.contains(':');
                let group = arg
                    .parse::<IpAddr>()
                    .ok()
                    .filter(|g| g.is_multicast() && g.is_ipv6() == v6);
                let Some(group) = group else {
                    let family = if v6 { "IPv6" } else { "IPv4" };
                    return Err(Exit::fail(format!("invalid {family} mcast-group `{arg}'")));
                };
                c.daemon.mcast_group = Some(group);
            }
            Tok::Long("mcast-port", arg) => {
                set(Opt::McastPort)?;
                let p = number(arg, 1, 65535)
                    .ok_or_else(|| Exit::fail("illegal mcast-port specified"))?;
                c.daemon.mcast_port = u16::try_from(p).ok();
            }
            Tok::Long("mcast-ttl", arg) => {
                set(Opt::McastTtl)?;
                let t =
                    number(arg, 1, 255).ok_or_else(|| Exit::fail("illegal mcast-ttl specified"))?;
                c.daemon.mcast_ttl = u8::try_from(t).ok();
            }
            Tok::Long("sync-maxlen", arg) => {
                set(Opt::SyncMaxlen)?;
                let m = number(arg, 1, 65535 - 20 - 8)
                    .ok_or_else(|| Exit::fail("illegal sync-maxlen specified"))?;
                c.daemon.sync_maxlen = u16::try_from(m).ok();
            }
            Tok::Long("tun-info", _) => set(Opt::TunInfo)?,
            Tok::Long("tun-type", _) => set(Opt::TunType)?,
            Tok::Long("tun-port", _) => set(Opt::TunPort)?,
            Tok::Long("tun-nocsum", _) => set(Opt::TunNocsum)?,
            Tok::Long("tun-csum", _) => set(Opt::TunCsum)?,
            Tok::Long("tun-remcsum", _) => set(Opt::TunRemcsum)?,
            // A second command, -h or -v after the command.
            Tok::Opt(..) | Tok::Long(..) => {
                return Err(Exit::fail(format!("invalid option `{shown}'")));
            }
        }
    }
    let mut rest = rest.into_iter();
    if cmd == Cmd::Timeout {
        match (rest.next(), rest.next(), rest.next()) {
            (Some(a), Some(b), Some(d)) => {
                c.timeouts = Some((
                    parse_timeout(&a, 0)?,
                    parse_timeout(&b, 0)?,
                    parse_timeout(&d, 0)?,
                ));
            }
            _ => return Err(Exit::fail("--set option requires 3 timeout values")),
        }
    }
    if let Some(extra) = rest.next() {
        return Err(Exit::fail(format!("unexpected argument {extra}")));
    }
    if let Some(flags) = sched_flags_arg {
        c.sched_flags = parse_sched_flags(&c.scheduler, &flags)?;
    }
    if let Some((ip, port)) = server_raw {
        let svc_port = c.service.map_or(0, |s| s.2);
        c.server = Some(SocketAddr::new(ip, port.unwrap_or(svc_port)));
    }
    generic_opt_check(cmd, options)?;
    if matches!(cmd, Cmd::Add | Cmd::Edit) {
        if let Some((proto, _, port)) = c.service {
            if port == 0 && c.persistent.is_none() {
                return Err(Exit::fail("Zero port specified for non-persistent service"));
            }
            if c.ops && proto != Proto::Udp {
                return Err(Exit::fail(
                    "One-Packet Scheduling is only for UDP virtual services",
                ));
            }
        }
        if c.scheduler.is_empty() {
            c.scheduler = "wlc".to_owned();
        }
    }
    if matches!(cmd, Cmd::AddDest | Cmd::EditDest)
        && let (Some((_, vip, vport)), Some(server)) = (c.service, c.server.as_mut())
    {
        // ipvsadm: direct routing and tunnelling keep the service's port.
        if matches!(c.forward, Forward::Route | Forward::Tunnel) {
            server.set_port(vport);
        }
        if server.is_ipv4() != vip.is_ipv4() && c.forward != Forward::Tunnel {
            return Err(Exit::fail(
                "Different address family is allowed only for tunneling servers",
            ));
        }
    }
    if cmd == Cmd::List {
        let conn_like = c.connections || c.list_timeout || c.list_daemon;
        let f = c.format;
        if (conn_like && (f.stats || f.rate || f.thresholds))
            || ((c.list_timeout || c.list_daemon) && f.persistent_conn)
        {
            return Err(Exit::fail("options conflicts in the list command"));
        }
    }
    if cmd == Cmd::Save {
        c.format.rule = true;
    }
    Ok(c)
}

/// C's `atoi()`: leading digits, 0 when none.
fn atoi(s: &str) -> i64 {
    let t = s.trim_start();
    let (neg, d) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits: String = d.chars().take_while(char::is_ascii_digit).collect();
    let n: i64 = digits.parse().unwrap_or(0);
    if neg { -n } else { n }
}

fn number(arg: Option<String>, min: i64, max: i64) -> Option<u32> {
    string_to_number(&arg.unwrap_or_default(), min, max).and_then(|n| u32::try_from(n).ok())
}

fn parse_timeout(s: &str, min: i64) -> Result<u32, Exit> {
    string_to_number(s, min, MAX_TIMEOUT)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Exit::fail(format!("invalid timeout value `{s}' specified")))
}

fn parse_sched_flags(sched: &str, arg: &str) -> Result<Vec<String>, Exit> {
    let sched = if sched.is_empty() { "wlc" } else { sched };
    let mut out: Vec<String> = Vec::new();
    for flag in arg.split(',').filter(|f| !f.is_empty()) {
        let owner = match flag {
            "flag-1" | "flag-2" | "flag-3" => None,
            "sh-fallback" | "sh-port" => Some("sh"),
            "mh-fallback" | "mh-port" => Some("mh"),
            _ => return Err(Exit::fail(format!("invalid scheduler flag `{flag}'"))),
        };
        match owner {
            Some(o) if o != sched => {
                return Err(Exit::fail(format!("incompatible scheduler flag `{flag}'")));
            }
            Some(_) => {
                if !out.iter().any(|f| f == flag) {
                    out.push(flag.to_owned());
                }
            }
            // flag-N of sh is sh-fallback/sh-port, of mh mh-*: as IPVS's
            // bits are shared.
            None => {
                let named = match (sched, flag) {
                    ("sh", "flag-1") => "sh-fallback",
                    ("sh", "flag-2") => "sh-port",
                    ("mh", "flag-1") => "mh-fallback",
                    ("mh", "flag-2") => "mh-port",
                    _ => {
                        return Err(Exit::op(format!(
                            "scheduler flag `{flag}' means nothing to {sched} in rvs"
                        )));
                    }
                };
                if !out.iter().any(|f| f == named) {
                    out.push(named.to_owned());
                }
            }
        }
    }
    // IPVS prints fallback before port.
    out.sort_by_key(|f| !f.ends_with("fallback"));
    Ok(out)
}

fn generic_opt_check(cmd: Cmd, options: u64) -> Result<(), Exit> {
    let row = LEGAL[cmd.index()];
    let cname = CMDNAMES[cmd.index()];
    let mut last: Option<usize> = None;
    for (j, legal) in row.iter().enumerate() {
        let given = options & (1u64 << j) != 0;
        if !given {
            if *legal == b'+' {
                return Err(Exit::fail(format!(
                    "You need to supply the '{}' option for the '{cname}' command",
                    OPTNAMES[j]
                )));
            }
            continue;
        }
        if *legal == b'x' {
            return Err(Exit::fail(format!(
                "Illegal '{}' option with the '{cname}' command",
                OPTNAMES[j]
            )));
        }
        if *legal == b'1' {
            match last {
                None => last = Some(j),
                Some(l) => {
                    return Err(Exit::fail(format!(
                        "The option '{}' conflicts with the '{}' option in the '{cname}' command",
                        OPTNAMES[j], OPTNAMES[l]
                    )));
                }
            }
        }
    }
    Ok(())
}

/// `rvsadm -v`.
pub fn version() -> String {
    format!(
        "rvsadm v{} (commit {}) (ipvsadm v1.31 commands and tables, for rvs)",
        env!("CARGO_PKG_VERSION"),
        crate::COMMIT
    )
}

/// `rvsadm -h`.
pub fn usage(program: &str) -> String {
    format!(
        "{version}
Usage:
  {program} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe persistence_engine] [-b sched-flags] [-o]
  {program} -D virtual-service
  {program} -C
  {program} -R
  {program} -S [-n]
  {program} -a|e virtual-service -r server-address [options]
  {program} -d virtual-service -r server-address
  {program} -L|l [virtual-service] [options]
  {program} -Z [virtual-service]
  {program} --set tcp tcpfin udp
  {program} --start-daemon {{master|backup}} [daemon-options]
  {program} --stop-daemon {{master|backup}}
  {program} -h

Commands:
Either long or short options are allowed.
  --add-service     -A        add virtual service with options
  --edit-service    -E        edit virtual service with options
  --delete-service  -D        delete virtual service
  --clear           -C        clear the whole table
  --restore         -R        restore rules from stdin
  --save            -S        save rules to stdout
  --add-server      -a        add real server with options
  --edit-server     -e        edit real server with options
  --delete-server   -d        delete real server
  --list            -L|-l     list the table
  --zero            -Z        zero counters in a service or all services
  --set tcp tcpfin udp        set connection timeout values
  --start-daemon              start connection sync daemon
  --stop-daemon               stop connection sync daemon
  --help            -h        display this help message

virtual-service:
  --tcp-service|-t  service-address   service-address is host[:port]
  --udp-service|-u  service-address   service-address is host[:port]

Options:
  --scheduler    -s scheduler         one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh|twos,
                                      the default scheduler is wlc.
  --pe            engine              alternate persistence engine may be sip,
                                      not set by default.
  --persistent   -p [timeout]         persistent service
  --netmask      -M netmask           persistent granularity mask
  --real-server  -r server-address    server-address is host (and port)
  --gatewaying   -g                   accepted; rvs always proxies (FullNat), on the service's port
  --ipip         -i                   accepted; as -g
  --masquerading -m                   accepted; rvs always proxies (FullNat), on the server's port
  --weight       -w weight            capacity of real server
  --u-threshold  -x uthreshold        upper threshold of connections
  --l-threshold  -y lthreshold        lower threshold of connections
  --connection   -c                   output of current IPVS connections
  --timeout                           output of timeout (tcp tcpfin udp)
  --daemon                            output of daemon information
  --stats                             output of statistics information
  --rate                              output of rate information
  --exact                             expand numbers (display exact values)
  --thresholds                        output of thresholds information
  --persistent-conn                   output of persistent connection info
  --nosort                            disable sorting output of service/server entries
  --sort                              does nothing, for backwards compatibility
  --ops          -o                   one-packet scheduling
  --numeric      -n                   numeric output of addresses and ports
  --sched-flags  -b flags             scheduler flags (comma-separated)

Daemon Options:
  --syncid sid                        syncid for connection sync (default=0)
  --sync-maxlen length                Max sync message length (default=1472)
  --mcast-interface interface         multicast interface for connection sync
  --mcast-group address               IPv4/IPv6 group (default=224.0.0.81)
  --mcast-port port                   UDP port (default=8848)
  --mcast-ttl ttl                     Multicast TTL (default=1)

rvs:
  --admin HOST:PORT                   the admin API of rvs (else $RVS_ADMIN, else {admin})
  --token TOKEN                       the admin token for changes (else $RVS_ADMIN_TOKEN)

Changes last until rvs reloads its configuration file: keep them with
`rvs show-config > rvs.yaml`.",
        version = version(),
        admin = crate::admin_client::DEFAULT_ADMIN,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn p(line: &str) -> Result<Command, Exit> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        parse("ipvsadm", &args, &Names::from_text("", "http 80/tcp\n"))
    }

    #[test]
    fn the_legality_table_has_one_column_per_option() {
        for row in LEGAL {
            assert_eq!(row.len(), OPTNAMES.len());
        }
    }

    #[test]
    fn commands_read_as_ipvsadm_reads_them() {
        let c = p("-A -t 10.0.0.1:80 -s rr -p").unwrap();
        assert_eq!(c.cmd, Cmd::Add);
        assert_eq!(
            c.service,
            Some((Proto::Tcp, "10.0.0.1".parse().unwrap(), 80))
        );
        assert_eq!(c.scheduler, "rr");
        assert_eq!(c.persistent, Some(300));
        let c = p("-A -t10.0.0.1:http -p 600 -M 255.255.255.0").unwrap();
        assert_eq!(c.scheduler, "wlc");
        assert_eq!(c.persistent, Some(600));
        assert_eq!(c.netmask_v4, Some("255.255.255.0".parse().unwrap()));
        let c = p("-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -m -w 5 -x 10 -y 2").unwrap();
        assert_eq!(c.server, Some("10.0.0.2:8080".parse().unwrap()));
        assert_eq!((c.weight, c.u_threshold, c.l_threshold), (5, 10, 2));
        // Without -m, the server gets the service's port, as ipvsadm's -g.
        let c = p("-a -t 10.0.0.1:80 -r 10.0.0.2:8080").unwrap();
        assert_eq!(c.server, Some("10.0.0.2:80".parse().unwrap()));
        let c = p("-a -u [::1]:53 -r ::2 -m").unwrap();
        assert_eq!(c.server, Some("[::2]:53".parse().unwrap()));
        let c = p("-Ln --stats --exact").unwrap();
        assert!(c.format.numeric && c.format.stats && c.format.exact);
        let c = p("--set 900 120 300").unwrap();
        assert_eq!(c.timeouts, Some((900, 120, 300)));
        let c = p("-A -t [2001:db8::1]:443 -s sh -b sh-port,sh-fallback -p 10 -M 64").unwrap();
        assert_eq!(c.sched_flags, ["sh-fallback", "sh-port"]);
        assert_eq!(c.netmask_v6, Some(64));
        let c = p("--list --tcp-service=10.0.0.1:80 --numeric").unwrap();
        assert_eq!(c.cmd, Cmd::List);
        assert!(c.service.is_some() && c.format.numeric);
    }

    #[test]
    fn errors_are_ipvsadms() {
        let e = |l: &str| {
            let e = p(l).unwrap_err();
            (e.code, e.message)
        };
        assert_eq!(e("-n -L").0, 255, "the command comes first");
        assert_eq!(
            e("-A -t 10.0.0.1:80 -r 10.0.0.2"),
            (
                2,
                "Illegal 'real-server' option with the 'add-service' command".into()
            )
        );
        assert_eq!(
            e("-a -t 10.0.0.1:80"),
            (
                2,
                "You need to supply the 'real-server' option for the 'add-server' command".into()
            )
        );
        assert_eq!(
            e("-A -t 10.0.0.1:80 -s rr -s wrr"),
            (2, "multiple 'scheduler' options specified".into())
        );
        assert_eq!(
            e("-A -t 10.0.0.1"),
            (2, "Zero port specified for non-persistent service".into())
        );
        assert_eq!(
            e("-A -t 10.0.0.1:53 -o"),
            (
                2,
                "One-Packet Scheduling is only for UDP virtual services".into()
            )
        );
        assert_eq!(
            e("-A -t 80"),
            (2, "illegal virtual server address[:port] specified".into())
        );
        assert_eq!(
            e("-a -t 10.0.0.1:80 -r 10.0.0.2 -w 70000"),
            (2, "illegal weight specified".into())
        );
        assert_eq!(
            e("-A -t 10.0.0.1:80 -p 0"),
            (2, "invalid timeout value `0' specified".into())
        );
        assert_eq!(
            e("--set 1 2"),
            (2, "--set option requires 3 timeout values".into())
        );
        assert_eq!(
            e("-L -c --stats"),
            (2, "options conflicts in the list command".into())
        );
        assert_eq!(
            e("-L -c --timeout"),
            (
                2,
                "The option 'timeout' conflicts with the 'connection' option in the 'list' command"
                    .into()
            )
        );
        assert_eq!(
            e("-A -t 10.0.0.1:80 -s rr -b sh-port"),
            (2, "incompatible scheduler flag `sh-port'".into())
        );
        assert_eq!(
            e("-A -t 10.0.0.1:80 -b nope"),
            (2, "invalid scheduler flag `nope'".into())
        );
        assert_eq!(e("-L foo"), (2, "unexpected argument foo".into()));
        assert_eq!(e("-L -A"), (2, "invalid option `-A'".into()));
        assert_eq!(e("-L --bogus").1, "--bogus: unknown option");
        assert_eq!(
            e("-C -n"),
            (
                2,
                "Illegal 'numeric' option with the 'flush' command".into()
            )
        );
    }
}
