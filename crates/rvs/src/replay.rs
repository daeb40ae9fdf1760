//! `rvs sched-replay`: replays a scheduler trace (specs/sched-trace.md,
//! docs/sched-replay.md) through rvs-sched and prints each decision.
//!
//! Lines are read one at a time and checked strictly: unknown keys, missing
//! keys, wrong types and every operation the kernel or ipvsadm would refuse
//! are errors naming the line. Decisions of earlier lines are already
//! printed when an error stops the replay; nothing is printed for the bad
//! line.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rvs_sched::{
    Conn, DestParams, DestUpdate, Netmask, Persistence, SchedFlag, SchedFlags, SchedulerKind,
    Service, ServiceConfig, Time,
};
use serde_json::{Map, Value};

/// Why a replay stopped.
#[derive(Debug)]
pub enum ReplayError {
    /// A line of the trace is malformed or refused.
    Trace {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading the trace or writing the decisions failed.
    Io(io::Error),
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Trace { line, reason } => write!(f, "line {line}: {reason}"),
            ReplayError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReplayError {}

/// Replays the trace read from `input`, writing one line per `conn` to `out`.
pub fn replay(mut input: impl BufRead, out: &mut impl Write) -> Result<(), ReplayError> {
    let mut state = Replay::default();
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf).map_err(ReplayError::Io)? == 0 {
            return Ok(());
        }
        line_no += 1;
        let fail = |reason: String| ReplayError::Trace {
            line: line_no,
            reason,
        };
        let text = std::str::from_utf8(&buf).map_err(|_| fail("not valid UTF-8".into()))?;
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if let Some(decision) = state.step(text).map_err(fail)? {
            match decision {
                Some(addr) => writeln!(out, "{addr}"),
                None => writeln!(out, "-"),
            }
            .map_err(ReplayError::Io)?;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

/// The persistence netmask as written: it fixes the address family too.
#[derive(Clone, Copy, Debug)]
enum MaskForm {
    V4(Ipv4Addr),
    V6Prefix(u8),
}

#[derive(Debug)]
enum Slot {
    /// The `conn` printed `-`.
    Refused,
    Open(Conn),
    Closed,
}

#[derive(Debug)]
struct Svc {
    svc: Service,
    proto: Proto,
    mask: Option<MaskForm>,
}

#[derive(Debug, Default)]
struct Replay {
    svc: Option<Svc>,
    now: Time,
    /// The address family of the first address seen: `true` for IPv6.
    v6: Option<bool>,
    conns: HashMap<i128, Slot>,
}

/// twos draws random numbers; a fixed seed makes a replay reproducible.
const REPLAY_SEED: u64 = 0x7276_735f_7477_6f73;

type Fields = Map<String, Value>;

fn allow(obj: &Fields, op: &str, keys: &[&str]) -> Result<(), String> {
    match obj
        .keys()
        .find(|k| k.as_str() != "op" && !keys.contains(&k.as_str()))
    {
        Some(k) => Err(format!("unknown key {k:?} in {op}")),
        None => Ok(()),
    }
}

fn required<'a>(obj: &'a Fields, op: &str, key: &str) -> Result<&'a Value, String> {
    obj.get(key)
        .ok_or_else(|| format!("{op} needs the key {key:?}"))
}

fn int(v: &Value, key: &str) -> Result<i128, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .ok_or_else(|| format!("{key} must be an integer, not {n}")),
        other => Err(format!("{key} must be an integer, not {other}")),
    }
}

fn ranged<T: TryFrom<i128>>(v: &Value, key: &str, what: &str) -> Result<T, String> {
    let n = int(v, key)?;
    T::try_from(n).map_err(|_| format!("{key} {n} is out of range: {what}"))
}

fn threshold(v: &Value, key: &str) -> Result<u32, String> {
    ranged(v, key, "it must be 0 to 4294967295")
}

fn weight(v: &Value) -> Result<i32, String> {
    ranged(v, "weight", "it must be 0 to 2147483647")
}

fn string<'a>(v: &'a Value, key: &str) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("{key} must be a string, not {v}"))
}

fn address(v: &Value, key: &str) -> Result<SocketAddr, String> {
    let s = string(v, key)?;
    s.parse()
        .map_err(|_| format!("{key} {s:?} is not an address: write IP:PORT, or [IPv6]:PORT"))
}

fn family(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

impl Replay {
    /// One operation; `Some(decision)` for a `conn`.
    fn step(&mut self, text: &str) -> Result<Option<Option<SocketAddr>>, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
        let Value::Object(obj) = value else {
            return Err("not a JSON object".into());
        };
        let op = match obj.get("op") {
            Some(Value::String(op)) => op.as_str(),
            Some(other) => return Err(format!("op must be a string, not {other}")),
            None => return Err("the key \"op\" is missing".into()),
        };
        if op == "service" {
            self.service(&obj)?;
            return Ok(None);
        }
        if self.svc.is_none() {
            return Err(format!(
                "{op} before service: the first operation must be service"
            ));
        }
        match op {
            "add" => self.add(&obj).map(|()| None),
            "edit" => self.edit(&obj).map(|()| None),
            "del" => self.del(&obj).map(|()| None),
            "conn" => self.conn(&obj).map(Some),
            "fin" => self.fin(&obj).map(|()| None),
            "close" => self.close(&obj).map(|()| None),
            "tick" => self.tick(&obj).map(|()| None),
            other => Err(format!(
                "unknown op {other:?}: expected service, add, edit, del, conn, fin, close or tick"
            )),
        }
    }

    fn svc(&self) -> &Svc {
        self.svc.as_ref().expect("checked by step()")
    }

    /// The first address seen fixes the family; every other must match it.
    fn same_family(&mut self, a: SocketAddr, what: &str) -> Result<(), String> {
        let v6 = a.is_ipv6();
        match self.v6 {
            None => {
                if let Some(mask) = self.svc().mask {
                    let mask_v6 = matches!(mask, MaskForm::V6Prefix(_));
                    if mask_v6 != v6 {
                        return Err(format!(
                            "{what} {a} is {} but the netmask of the service is for {}",
                            family(v6),
                            family(mask_v6)
                        ));
                    }
                }
                self.v6 = Some(v6);
                Ok(())
            }
            Some(svc_v6) if svc_v6 != v6 => Err(format!(
                "{what} {a} is {} but the service's addresses are {}",
                family(v6),
                family(svc_v6)
            )),
            Some(_) => Ok(()),
        }
    }

    fn service(&mut self, obj: &Fields) -> Result<(), String> {
        if self.svc.is_some() {
            return Err("a second service: a trace has exactly one".into());
        }
        allow(
            obj,
            "service",
            &[
                "scheduler",
                "proto",
                "persistent",
                "netmask",
                "flags",
                "expire_quiescent_template",
            ],
        )?;
        let scheduler = match obj.get("scheduler") {
            Some(v) => string(v, "scheduler")?
                .parse::<SchedulerKind>()
                .map_err(|e| e.to_string())?,
            None => SchedulerKind::Wlc,
        };
        let proto = match obj.get("proto").map(|v| string(v, "proto")).transpose()? {
            None | Some("tcp") => Proto::Tcp,
            Some("udp") => Proto::Udp,
            Some(p) => return Err(format!("proto {p:?} is not tcp or udp")),
        };
        let persistent: u32 = match obj.get("persistent") {
            Some(v) => ranged(v, "persistent", "seconds, 0 to 4294967295")?,
            None => 0,
        };
        let mask = obj.get("netmask").map(netmask).transpose()?;
        let flags = match obj.get("flags") {
            None => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|f| {
                    string(f, "a flag")?
                        .parse::<SchedFlag>()
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(format!("flags must be a list of strings, not {other}")),
        };
        let flags = SchedFlags::for_scheduler(scheduler, flags).map_err(|e| e.to_string())?;
        let netmask = match mask {
            None => Ok(Netmask::HOST),
            Some(MaskForm::V4(m)) => Netmask::new(m, 128),
            Some(MaskForm::V6Prefix(p)) => Netmask::new(Ipv4Addr::BROADCAST, p),
        }
        .map_err(|e| e.to_string())?;
        let persistence = (persistent > 0).then(|| Persistence {
            timeout: Duration::from_secs(u64::from(persistent)),
            netmask,
            scope: Default::default(),
        });
        let expire_quiescent_template = match obj.get("expire_quiescent_template") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(format!(
                    "expire_quiescent_template must be true or false, not {other}"
                ));
            }
        };
        let cfg = ServiceConfig {
            scheduler,
            flags,
            persistence,
            seed: REPLAY_SEED,
            expire_quiescent_template,
        };
        self.svc = Some(Svc {
            svc: Service::new(cfg, self.now),
            proto,
            mask,
        });
        Ok(())
    }

    fn add(&mut self, obj: &Fields) -> Result<(), String> {
        allow(obj, "add", &["rs", "weight", "u_threshold", "l_threshold"])?;
        let rs = address(required(obj, "add", "rs")?, "rs")?;
        let mut p = DestParams::default();
        if let Some(v) = obj.get("weight") {
            p.weight = weight(v)?;
        }
        if let Some(v) = obj.get("u_threshold") {
            p.u_threshold = threshold(v, "u_threshold")?;
        }
        if let Some(v) = obj.get("l_threshold") {
            p.l_threshold = threshold(v, "l_threshold")?;
        }
        self.same_family(rs, "real server")?;
        self.svc().svc.add_dest(rs, p).map_err(|e| e.to_string())
    }

    fn edit(&mut self, obj: &Fields) -> Result<(), String> {
        allow(obj, "edit", &["rs", "weight", "u_threshold", "l_threshold"])?;
        let rs = address(required(obj, "edit", "rs")?, "rs")?;
        let update = DestUpdate {
            weight: obj.get("weight").map(weight).transpose()?,
            u_threshold: obj
                .get("u_threshold")
                .map(|v| threshold(v, "u_threshold"))
                .transpose()?,
            l_threshold: obj
                .get("l_threshold")
                .map(|v| threshold(v, "l_threshold"))
                .transpose()?,
        };
        self.same_family(rs, "real server")?;
        self.svc()
            .svc
            .edit_dest(rs, update)
            .map_err(|e| e.to_string())
    }

    fn del(&mut self, obj: &Fields) -> Result<(), String> {
        allow(obj, "del", &["rs"])?;
        let rs = address(required(obj, "del", "rs")?, "rs")?;
        self.same_family(rs, "real server")?;
        self.svc().svc.del_dest(rs).map_err(|e| e.to_string())
    }

    fn id(obj: &Fields, op: &str) -> Result<i128, String> {
        int(required(obj, op, "id")?, "id")
    }

    fn conn(&mut self, obj: &Fields) -> Result<Option<SocketAddr>, String> {
        allow(obj, "conn", &["id", "src", "dst"])?;
        let id = Self::id(obj, "conn")?;
        let src = address(required(obj, "conn", "src")?, "src")?;
        let dst = address(required(obj, "conn", "dst")?, "dst")?;
        if self.conns.contains_key(&id) {
            return Err(format!("connection id {id} is already used"));
        }
        self.same_family(src, "client")?;
        self.same_family(dst, "destination")?;
        let svc = self.svc();
        let conn = svc.svc.schedule(src, dst, self.now);
        let tcp = svc.proto == Proto::Tcp;
        let decision = conn.as_ref().map(Conn::addr);
        let slot = match conn {
            Some(mut c) => {
                if tcp {
                    c.established();
                }
                Slot::Open(c)
            }
            None => Slot::Refused,
        };
        self.conns.insert(id, slot);
        Ok(decision)
    }

    fn fin(&mut self, obj: &Fields) -> Result<(), String> {
        allow(obj, "fin", &["id"])?;
        let id = Self::id(obj, "fin")?;
        match self.conns.get_mut(&id) {
            None => Err(format!("fin of connection {id}, which was never opened")),
            Some(Slot::Open(c)) if c.is_active() => {
                c.fin();
                Ok(())
            }
            Some(Slot::Open(_)) => Err(format!(
                "fin of connection {id}, which is not active (already finished, or UDP)"
            )),
            Some(Slot::Refused) => Err(format!(
                "fin of connection {id}, which was refused (its conn printed -)"
            )),
            Some(Slot::Closed) => Err(format!("fin of connection {id}, which is closed")),
        }
    }

    fn close(&mut self, obj: &Fields) -> Result<(), String> {
        allow(obj, "close", &["id"])?;
        let id = Self::id(obj, "close")?;
        match self.conns.get_mut(&id) {
            None => Err(format!("close of connection {id}, which was never opened")),
            Some(Slot::Refused) => Ok(()),
            Some(Slot::Closed) => Err(format!("close of connection {id}, which is already closed")),
            Some(slot) => {
                *slot = Slot::Closed;
                Ok(())
            }
        }
    }

    fn tick(&mut self, obj: &Fields) -> Result<(), String> {
        allow(obj, "tick", &["secs"])?;
        let v = required(obj, "tick", "secs")?;
        let secs = v
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| format!("secs must be a number of seconds, 0 or more, not {v}"))?;
        let d = Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("secs {secs} is out of range"))?;
        self.now = self.now.saturating_add(d);
        self.svc().svc.advance(self.now);
        Ok(())
    }
}

fn netmask(v: &Value) -> Result<MaskForm, String> {
    let bad = || {
        format!(
            "netmask {v} is neither an IPv4 mask (\"255.255.255.0\") nor an IPv6 prefix length 1-128"
        )
    };
    let prefix = |n: i128| match u8::try_from(n) {
        Ok(p @ 1..=128) => Ok(MaskForm::V6Prefix(p)),
        _ => Err(bad()),
    };
    match v {
        Value::String(s) => match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(m)) => Ok(MaskForm::V4(m)),
            Ok(IpAddr::V6(_)) => Err(bad()),
            Err(_) => s.parse::<i128>().map_err(|_| bad()).and_then(prefix),
        },
        Value::Number(_) => prefix(int(v, "netmask")?),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(trace: &str) -> Result<String, String> {
        let mut out = Vec::new();
        replay(trace.as_bytes(), &mut out).map_err(|e| e.to_string())?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn err(trace: &str) -> String {
        run(trace).unwrap_err()
    }

    const SVC: &str = "{\"op\":\"service\",\"scheduler\":\"rr\"}\n";

    #[test]
    fn decisions_one_per_conn() {
        let t = format!(
            "{SVC}{}\n{}\n",
            r#"{"op":"add","rs":"[2001:db8::1]:80"}"#,
            r#"{"op":"conn","id":1,"src":"[2001:db8::9]:1","dst":"[2001:db8::100]:80"}"#
        );
        assert_eq!(run(&t).unwrap(), "[2001:db8::1]:80\n");
        let t = format!(
            "{SVC}{}\n",
            r#"{"op":"conn","id":1,"src":"192.0.2.1:1","dst":"10.0.0.100:80"}"#
        );
        assert_eq!(run(&t).unwrap(), "-\n");
    }

    #[test]
    fn errors_name_the_line_and_the_reason() {
        assert_eq!(
            err(&format!(
                "{SVC}\n# c\n{{\"op\":\"add\",\"rs\":\"10.0.0.1:80\",\"ttl\":1}}"
            )),
            "line 4: unknown key \"ttl\" in add"
        );
        assert_eq!(
            err(r#"{"op":"add","rs":"10.0.0.1:80"}"#),
            "line 1: add before service: the first operation must be service"
        );
        assert_eq!(
            err(&format!("{SVC}{SVC}")),
            "line 2: a second service: a trace has exactly one"
        );
        assert_eq!(
            err(&format!("{SVC}{{\"op\":\"add\",\"rs\":\"10.0.0.1\"}}")),
            "line 2: rs \"10.0.0.1\" is not an address: write IP:PORT, or [IPv6]:PORT"
        );
        assert_eq!(err(&format!("{SVC}[1,2]")), "line 2: not a JSON object");
        assert!(err(&format!("{SVC}{{\"op\":")).starts_with("line 2: not a JSON object: "));
        assert_eq!(
            err(&format!("{SVC}{{\"op\":\"jump\"}}")),
            "line 2: unknown op \"jump\": expected service, add, edit, del, conn, fin, close or tick"
        );
    }

    #[test]
    fn refusals_of_the_kernel_and_ipvsadm_are_errors() {
        let add = |rs: &str, extra: &str| format!("{{\"op\":\"add\",\"rs\":\"{rs}\"{extra}}}\n");
        let t = format!("{SVC}{}{}", add("10.0.0.1:80", ""), add("10.0.0.1:80", ""));
        assert_eq!(err(&t), "line 3: real server 10.0.0.1:80 already exists");
        let t = format!(
            "{SVC}{}",
            add("10.0.0.1:80", ",\"u_threshold\":0,\"l_threshold\":1")
        );
        assert_eq!(
            err(&t),
            "line 2: lower threshold 1 is above upper threshold 0"
        );
        let t = format!("{SVC}{}", add("10.0.0.1:80", ",\"weight\":-1"));
        assert_eq!(
            err(&t),
            "line 2: weight -1 is out of range: it must be 0 or more"
        );
        let t = format!("{SVC}{{\"op\":\"del\",\"rs\":\"10.0.0.9:80\"}}");
        assert_eq!(err(&t), "line 2: no such real server 10.0.0.9:80");
        let t = format!("{SVC}{}{}", add("10.0.0.1:80", ""), add("[::1]:80", ""));
        assert_eq!(
            err(&t),
            "line 3: real server [::1]:80 is IPv6 but the service's addresses are IPv4"
        );
        let t = "{\"op\":\"service\",\"scheduler\":\"rr\",\"flags\":[\"sh-port\"]}";
        assert_eq!(err(t), "line 1: flag sh-port belongs to sh, not to rr");
        let t = "{\"op\":\"service\",\"scheduler\":\"rr\",\"persistent\":10,\"netmask\":64}\n";
        assert_eq!(
            err(&format!("{t}{}", add("10.0.0.1:80", ""))),
            "line 2: real server 10.0.0.1:80 is IPv4 but the netmask of the service is for IPv6"
        );
    }

    #[test]
    fn connection_ids_follow_their_lifecycle() {
        let conn = |id: u32| {
            format!(
                "{{\"op\":\"conn\",\"id\":{id},\"src\":\"192.0.2.1:1\",\"dst\":\"10.0.0.100:80\"}}\n"
            )
        };
        let op = |op: &str, id: u32| format!("{{\"op\":\"{op}\",\"id\":{id}}}\n");
        let base = format!(
            "{SVC}{{\"op\":\"add\",\"rs\":\"10.0.0.1:80\"}}\n{}",
            conn(1)
        );
        assert_eq!(
            err(&format!("{base}{}", conn(1))),
            "line 4: connection id 1 is already used"
        );
        assert_eq!(
            err(&format!("{base}{}{}", op("fin", 1), op("fin", 1))),
            "line 5: fin of connection 1, which is not active (already finished, or UDP)"
        );
        assert_eq!(
            err(&format!("{base}{}", op("close", 7))),
            "line 4: close of connection 7, which was never opened"
        );
        assert_eq!(
            err(&format!("{base}{}{}", op("close", 1), op("close", 1))),
            "line 5: close of connection 1, which is already closed"
        );
        // A refused conn: close does nothing, fin is an error.
        let refused = format!("{SVC}{}", conn(5));
        assert_eq!(run(&format!("{refused}{}", op("close", 5))).unwrap(), "-\n");
        assert_eq!(
            err(&format!("{refused}{}", op("fin", 5))),
            "line 3: fin of connection 5, which was refused (its conn printed -)"
        );
    }

    #[test]
    fn numbers_are_checked() {
        let t = format!("{SVC}{{\"op\":\"tick\",\"secs\":-1}}");
        assert_eq!(
            err(&t),
            "line 2: secs must be a number of seconds, 0 or more, not -1"
        );
        let t = format!("{SVC}{{\"op\":\"add\",\"rs\":\"10.0.0.1:80\",\"weight\":1.5}}");
        assert_eq!(err(&t), "line 2: weight must be an integer, not 1.5");
        let t = format!("{SVC}{{\"op\":\"add\",\"rs\":\"10.0.0.1:80\",\"u_threshold\":-3}}");
        assert_eq!(
            err(&t),
            "line 2: u_threshold -3 is out of range: it must be 0 to 4294967295"
        );
        assert_eq!(
            err("{\"op\":\"service\",\"scheduler\":\"rr\",\"netmask\":\"255.255.0\"}"),
            "line 1: netmask \"255.255.0\" is neither an IPv4 mask (\"255.255.255.0\") nor an IPv6 prefix length 1-128"
        );
    }
}
