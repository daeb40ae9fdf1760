//! `rvsadm`: ipvsadm's commands and tables against a running rvs.
//!
//! The command line is ipvsadm 1.31's ([`args`]); the tables are its
//! formats ([`table`]); names come from /etc/hosts and /etc/services
//! ([`names`]). Each command is one or two calls to the admin API: the
//! table is read from `GET /api/v1/services`; an IPVS virtual service is
//! an address of an rvs service; changes go through the API's edits, and
//! its errors come back as ipvsadm's messages and exit statuses:
//!
//! - 0: done;
//! - 1: `-L -t` of a service that does not exist;
//! - 2: a bad command line (ipvsadm's `fail()`), or rvs cannot be reached;
//! - 255: the change was refused ("Service already exists", "No such
//!   destination", …), or an unknown option.

pub mod args;
pub mod names;
pub mod table;

use std::io::{BufRead, Write};
use std::net::{IpAddr, SocketAddr};

use serde_json::{Value, json};

use crate::admin_client::{AdminClient, ClientError, Reply};
use args::{Cmd, Command, Exit};
use names::{Names, Proto};
use table::{ApiConns, ApiService, ApiServices};

/// The schedulers rvs has (IPVS's, and twos).
pub const SCHEDULERS: [&str; 14] = [
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// `rvsadm` as a process: the arguments and standard streams of this one;
/// the exit status to return.
pub fn main_from_env() -> std::process::ExitCode {
    let mut argv = std::env::args();
    let program = argv.next().unwrap_or_else(|| "rvsadm".to_owned());
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let code = main(
        &program,
        argv.collect(),
        &mut stdin.lock(),
        &mut out,
        &mut stderr.lock(),
    );
    let _ = out.flush();
    std::process::ExitCode::from(code)
}

/// Runs one `rvsadm` invocation (`argv` without the program name) and
/// returns its exit status.
pub fn main(
    program: &str,
    argv: Vec<String>,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let (argv, admin, token) = take_rvs_options(argv);
    let client = AdminClient::from_env(admin, token);
    let names = Names::system();
    let ctx = Ctx {
        client: &client,
        names: &names,
        program,
    };
    // No argument: list the table, as ipvsadm does.
    let argv = if argv.is_empty() {
        vec!["-L".to_owned()]
    } else {
        argv
    };
    match ctx.run_line(&argv, stdin, out, err, false) {
        Ok(()) => 0,
        Err(e) => report(&e, out, err),
    }
}

fn report(e: &Exit, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    if !e.message.is_empty() {
        let w: &mut dyn Write = if e.stdout { out } else { err };
        let _ = writeln!(w, "{}", e.message);
    }
    e.code
}

/// `--admin` and `--token`, wherever they are, are rvsadm's own.
fn take_rvs_options(argv: Vec<String>) -> (Vec<String>, Option<String>, Option<String>) {
    let mut rest = Vec::new();
    let (mut admin, mut token) = (None, None);
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        if a == "--" {
            rest.push(a);
            rest.extend(it.by_ref());
            break;
        }
        if let Some(v) = a.strip_prefix("--admin=") {
            admin = Some(v.to_owned());
        } else if a == "--admin" {
            admin = it.next();
        } else if let Some(v) = a.strip_prefix("--token=") {
            token = Some(v.to_owned());
        } else if a == "--token" {
            token = it.next();
        } else {
            rest.push(a);
        }
    }
    (rest, admin, token)
}

struct Ctx<'a> {
    client: &'a AdminClient,
    names: &'a Names,
    program: &'a str,
}

fn unreachable(client: &AdminClient, e: &ClientError) -> Exit {
    Exit::fail(format!(
        "Can't reach rvs: {e}\nIs rvs running, with its admin listener at {}? (--admin HOST:PORT or RVS_ADMIN)",
        client.target
    ))
}

/// An API refusal as ipvsadm says it: the codes that IPVS has errors for
/// get IPVS's message.
fn refusal(r: &Reply, not_found_service: &str) -> Exit {
    let (code, message) = r.error();
    Exit::op(match code.as_str() {
        "service_exists" => "Service already exists".to_owned(),
        "no_such_service" => not_found_service.to_owned(),
        "destination_exists" => "Destination already exists".to_owned(),
        "no_such_destination" => "No such destination".to_owned(),
        "unauthorized" | "forbidden" => format!("Permission denied: {message}"),
        _ => message,
    })
}

impl Ctx<'_> {
    fn run_line(
        &self,
        argv: &[String],
        stdin: &mut dyn BufRead,
        out: &mut dyn Write,
        err: &mut dyn Write,
        reading_stdin: bool,
    ) -> Result<(), Exit> {
        let c = args::parse(self.program, argv, self.names)?;
        match c.cmd {
            Cmd::Restore => {
                if reading_stdin {
                    return Err(Exit::tryhelp(self.program));
                }
                self.restore(stdin, out, err)
            }
            _ => self.execute(&c, out),
        }
    }

    /// `-R`: each line of standard input is a command; the word `ipvsadm`
    /// (or `rvsadm`) is skipped, as are blank and `#` lines. A bad line
    /// ends the restore (as ipvsadm's `fail()` does); a refused change is
    /// reported and the next line runs; the status is the last line's.
    fn restore(
        &self,
        stdin: &mut dyn BufRead,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Result<(), Exit> {
        let mut result = Ok(());
        let mut line = String::new();
        loop {
            line.clear();
            match stdin.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(Exit::fail(format!("reading the rules: {e}"))),
            }
            if line.trim_start().starts_with('#') {
                continue;
            }
            let words: Vec<String> = line
                .split_whitespace()
                .filter(|w| *w != "ipvsadm" && *w != "rvsadm")
                .map(str::to_owned)
                .collect();
            if words.is_empty() {
                continue;
            }
            result = match self.run_line(&words, stdin, out, err, true) {
                Ok(()) => Ok(()),
                Err(e) if !e.fatal => {
                    // Reported now; the status is kept, without a message.
                    let _ = writeln!(err, "{}", e.message);
                    Err(Exit::op(""))
                }
                Err(e) => return Err(e),
            };
        }
        result
    }

    fn services(&self) -> Result<ApiServices, Exit> {
        match self.client.get_json("/api/v1/services") {
            Err(e) => Err(unreachable(self.client, &e)),
            Ok(Err(r)) => Err(refusal(&r, "No such service")),
            Ok(Ok(v)) => serde_json::from_value(v)
                .map_err(|e| Exit::fail(format!("rvs answered a table rvsadm cannot read: {e}"))),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Reply, Exit> {
        let body = body.map(|b| serde_json::to_vec(&b).unwrap_or_default());
        self.client
            .request(method, path, body.as_deref())
            .map_err(|e| unreachable(self.client, &e))
    }

    /// Makes a change; a refusal becomes ipvsadm's message.
    fn change(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        not_found_service: &str,
    ) -> Result<(), Exit> {
        let r = self.call(method, path, body)?;
        if r.ok() {
            Ok(())
        } else {
            Err(refusal(&r, not_found_service))
        }
    }

    fn execute(&self, c: &Command, out: &mut dyn Write) -> Result<(), Exit> {
        if c.fwmark.is_some() {
            return Err(Exit::fail(
                "fwmark virtual services are not supported by rvs: it proxies addresses, not marked packets (redirect them to a listen address with iptables instead)",
            ));
        }
        let print = |out: &mut dyn Write, s: &str| {
            out.write_all(s.as_bytes())
                .map_err(|e| Exit::fail(format!("writing the output: {e}")))
        };
        match c.cmd {
            Cmd::List if c.connections => {
                let v = match self.client.get_json("/api/v1/connections") {
                    Err(e) => return Err(unreachable(self.client, &e)),
                    Ok(Err(r)) => return Err(refusal(&r, "No such service")),
                    Ok(Ok(v)) => v,
                };
                let conns: ApiConns = serde_json::from_value(v).map_err(|e| {
                    Exit::fail(format!("rvs answered a table rvsadm cannot read: {e}"))
                })?;
                print(out, &table::list_conns(&conns, self.names, c.format))
            }
            Cmd::List if c.list_timeout => {
                let v = match self.client.get_json("/api/v1/timeouts") {
                    Err(e) => return Err(unreachable(self.client, &e)),
                    Ok(Err(r)) => return Err(refusal(&r, "No such service")),
                    Ok(Ok(v)) => v,
                };
                let n = |k: &str| v[k].as_u64().unwrap_or(0);
                print(out, &table::timeouts(n("tcp"), n("tcpfin"), n("udp")))
            }
            Cmd::List if c.list_daemon => {
                let v = match self.client.get_json("/api/v1/daemon") {
                    Err(e) => return Err(unreachable(self.client, &e)),
                    Ok(Err(r)) => return Err(refusal(&r, "No such service")),
                    Ok(Ok(v)) => v,
                };
                let list: table::ApiDaemons = serde_json::from_value(v).map_err(|e| {
                    Exit::fail(format!("rvs answered a table rvsadm cannot read: {e}"))
                })?;
                print(out, &table::daemons(&list))
            }
            Cmd::List => {
                let list = self.services()?;
                match c.service {
                    Some((proto, ip, port)) => {
                        let all = table::virtual_services(&list);
                        let addr = SocketAddr::new(ip, port);
                        let shared: Vec<_> = all
                            .iter()
                            .filter(|v| v.proto == proto && v.addr == addr)
                            .collect();
                        match shared.is_empty() {
                            false => print(out, &table::list_one(&shared, self.names, c.format)),
                            true => Err(Exit {
                                code: 1,
                                message: "No such service".into(),
                                stdout: false,
                                fatal: true,
                            }),
                        }
                    }
                    None => print(out, &table::list_all(&list, self.names, c.format)),
                }
            }
            Cmd::Save => {
                let list = self.services()?;
                print(out, &table::list_all(&list, self.names, c.format))
            }
            Cmd::Flush => self.change("DELETE", "/api/v1/services", None, "No such service"),
            Cmd::Zero => match c.service {
                None => self.change("POST", "/api/v1/zero", None, "No such service"),
                Some(s) => {
                    let list = self.services()?;
                    let svc = find(&list, s)?.ok_or_else(|| Exit::op("No such service"))?;
                    self.change(
                        "POST",
                        &format!("/api/v1/services/{}/zero", svc.name),
                        None,
                        "No such service",
                    )
                }
            },
            Cmd::Timeout => {
                let (tcp, tcpfin, udp) = c.timeouts.unwrap_or_default();
                self.change(
                    "PUT",
                    "/api/v1/timeouts",
                    Some(json!({ "tcp": tcp, "tcpfin": tcpfin, "udp": udp })),
                    "No such service",
                )
            }
            Cmd::Add => self.add_service(c),
            Cmd::Edit => self.edit_service(c),
            Cmd::Del => self.del_service(c),
            Cmd::AddDest | Cmd::EditDest | Cmd::DelDest => self.dest(c),
            Cmd::StartDaemon => {
                let d = &c.daemon;
                let mut body = json!({
                    "state": d.state,
                    // ipvsadm's DEF_MCAST_IFN.
                    "mcast_interface": d.mcast_interface.as_deref().unwrap_or("eth0"),
                    "syncid": d.syncid.unwrap_or(0),
                });
                if let Some(m) = d.sync_maxlen {
                    body["sync_maxlen"] = json!(m);
                }
                if let Some(g) = d.mcast_group {
                    body["mcast_group"] = json!(g.to_string());
                }
                if let Some(p) = d.mcast_port {
                    body["mcast_port"] = json!(p);
                }
                if let Some(t) = d.mcast_ttl {
                    body["mcast_ttl"] = json!(t);
                }
                self.change("POST", "/api/v1/daemon", Some(body), "No such service")
            }
            Cmd::StopDaemon => self.change(
                "DELETE",
                &format!("/api/v1/daemon/{}", c.daemon.state),
                None,
                "No such service",
            ),
            Cmd::Restore => Err(Exit::tryhelp(self.program)),
        }
    }

    fn check_scheduler(c: &Command) -> Result<(), Exit> {
        // The one persistence engine there is, as in the kernel: sip.
        if !SCHEDULERS.contains(&c.scheduler.as_str())
            || c.pe.as_deref().is_some_and(|p| p != "sip")
        {
            return Err(Exit::op("Scheduler or persistence engine not found"));
        }
        Ok(())
    }

    fn add_service(&self, c: &Command) -> Result<(), Exit> {
        let Some(s @ (proto, ip, port)) = c.service else {
            return Err(Exit::tryhelp(self.program));
        };
        let list = self.services()?;
        if find(&list, s)?.is_some() {
            return Err(Exit::op("Service already exists"));
        }
        Self::check_scheduler(c)?;
        if port == 0 {
            return Err(Exit::op(
                "rvs listens on addresses with a port: a service on every port (port 0) is not supported",
            ));
        }
        let mut name = service_name(proto, ip, port);
        let base = name.clone();
        let mut n = 2;
        while list.services.iter().any(|x| x.name == name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        let mut body = json!({
            "name": name,
            "listen": [SocketAddr::new(ip, port).to_string()],
            "proto": proto.lower(),
            "real_servers": [],
        });
        apply_sched(&mut body, c, proto, ip.is_ipv6());
        self.change("POST", "/api/v1/services", Some(body), "No such service")
    }

    fn edit_service(&self, c: &Command) -> Result<(), Exit> {
        let Some(s @ (proto, ip, _)) = c.service else {
            return Err(Exit::tryhelp(self.program));
        };
        let list = self.services()?;
        let svc = find(&list, s)?.ok_or_else(|| Exit::op("No such service"))?;
        Self::check_scheduler(c)?;
        let mut body = svc.config.clone();
        apply_sched(&mut body, c, proto, ip.is_ipv6());
        self.change(
            "PUT",
            &format!("/api/v1/services/{}", svc.name),
            Some(body),
            "No such service",
        )
    }

    fn del_service(&self, c: &Command) -> Result<(), Exit> {
        let Some(s @ (_, ip, port)) = c.service else {
            return Err(Exit::tryhelp(self.program));
        };
        let list = self.services()?;
        let svc = find(&list, s)?.ok_or_else(|| Exit::op("No such service"))?;
        let path = format!("/api/v1/services/{}", svc.name);
        if svc.listen.len() <= 1 {
            return self.change("DELETE", &path, None, "No such service");
        }
        // One address of several: the service keeps the others.
        let vip = SocketAddr::new(ip, port);
        let mut body = svc.config.clone();
        if let Some(listen) = body.get_mut("listen").and_then(Value::as_array_mut) {
            listen.retain(|a| a.as_str().and_then(|a| a.parse::<SocketAddr>().ok()) != Some(vip));
        }
        self.change("PUT", &path, Some(body), "No such service")
    }

    fn dest(&self, c: &Command) -> Result<(), Exit> {
        let (Some(s), Some(server)) = (c.service, c.server) else {
            return Err(Exit::tryhelp(self.program));
        };
        let list = self.services()?;
        let svc = find(&list, s)?.ok_or_else(|| Exit::op("Service not defined"))?;
        let base = format!("/api/v1/services/{}/real_servers", svc.name);
        let one = format!("{base}/{}", encode(&server.to_string()));
        match c.cmd {
            Cmd::AddDest => self.change(
                "POST",
                &base,
                Some(json!({
                    "address": server.to_string(),
                    "weight": c.weight,
                    "u_threshold": c.u_threshold,
                    "l_threshold": c.l_threshold,
                })),
                "Service not defined",
            ),
            // ipvsadm sends the whole server: what is not given is reset
            // (weight 1, thresholds 0).
            Cmd::EditDest => self.change(
                "PATCH",
                &one,
                Some(json!({
                    "weight": c.weight,
                    "u_threshold": c.u_threshold,
                    "l_threshold": c.l_threshold,
                })),
                "Service not defined",
            ),
            _ => self.change("DELETE", &one, None, "Service not defined"),
        }
    }
}

/// The rvs service that has the virtual service `(proto, ip, port)`. An
/// address several services share (each taking the connections its
/// `match` chooses by SNI) is not one IPVS service: refused, naming them.
fn find(
    list: &ApiServices,
    (proto, ip, port): (Proto, IpAddr, u16),
) -> Result<Option<&ApiService>, Exit> {
    let addr = SocketAddr::new(ip, port);
    let on: Vec<&ApiService> = list
        .services
        .iter()
        .filter(|s| s.protocol() == proto && s.listen.contains(&addr))
        .collect();
    match on[..] {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => {
            let names: Vec<&str> = on.iter().map(|s| s.name.as_str()).collect();
            Err(Exit::op(format!(
                "{} {addr} is shared by services {} (routed by SNI): rvsadm cannot tell them apart; edit them by name with the admin API or in the configuration file",
                proto.lower(),
                names.join(", ")
            )))
        }
    }
}

/// The name rvsadm gives a service it adds: `tcp-10.0.0.1-80`; an IPv6
/// address's colons become `_`.
pub fn service_name(proto: Proto, ip: IpAddr, port: u16) -> String {
    format!(
        "{}-{}-{port}",
        proto.lower(),
        ip.to_string().replace(':', "_")
    )
}

/// Scheduler, flags, persistence and one-packet scheduling of `-A`/`-E`
/// into a service body: what ipvsadm sends replaces them whole.
fn apply_sched(body: &mut Value, c: &Command, proto: Proto, v6: bool) {
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    obj.insert("scheduler".into(), json!(c.scheduler));
    if c.sched_flags.is_empty() {
        obj.remove("flags");
    } else {
        obj.insert("flags".into(), json!(c.sched_flags));
    }
    match c.persistent {
        None => {
            obj.remove("persistence");
        }
        Some(t) => {
            let mut p = json!({ "timeout": format!("{t}s") });
            if !v6 && let Some(m) = c.netmask_v4 {
                p["netmask"] = json!(m.to_string());
            }
            if v6 && let Some(m) = c.netmask_v6 {
                p["ipv6_prefix"] = json!(m);
            }
            if let Some(pe) = &c.pe {
                p["engine"] = json!(pe);
            }
            obj.insert("persistence".into(), p);
        }
    }
    if proto == Proto::Udp {
        let udp = obj.entry("udp").or_insert_with(|| json!({}));
        if let Some(u) = udp.as_object_mut() {
            u.insert("ops".into(), json!(c.ops));
        }
    }
}

/// Percent-encodes what a path segment cannot hold (an IPv6 address's
/// brackets and colons are fine in HTTP paths but escaped to be safe).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'[' | b']' | b'%' | b'/' | b'?' | b'#' | b' ' => format!("%{b:02X}"),
            _ => (b as char).to_string(),
        })
        .collect()
}
