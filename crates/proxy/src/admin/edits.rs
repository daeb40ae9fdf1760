//! The API's edits: services and real servers added, replaced, edited,
//! drained and deleted; counters zeroed; timeouts set.
//!
//! Each edit changes a copy of the running configuration, which is checked
//! whole as a file would be and applied ([`Proxy::edit`]); a refused edit
//! changes nothing. Edits last until the configuration file is reloaded.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::ApiError;
use super::api::no_such_service;
use crate::config::{Config, Proto, ServiceSpec};
use crate::discovery::Override;
use crate::proxy::{ApplyError, Proxy};
use rvs_sched::DestParams;

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> ApiError {
        match e {
            ApplyError::Bind { .. } => {
                ApiError::new(StatusCode::CONFLICT, "bind_failed", e.to_string())
            }
            // Only at start, never from an edit.
            ApplyError::Workers(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
            ApplyError::Invalid(c) => {
                // The edited configuration is written by rvs: its
                // positions mean nothing to the client; the reasons do.
                let message = match &c {
                    crate::config::ConfigError::Invalid { problems, .. } => problems
                        .iter()
                        .map(|p| p.reason.clone())
                        .collect::<Vec<_>>()
                        .join("; "),
                    other => other.to_string(),
                };
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
            }
        }
    }
}

/// [`Proxy::edit`] with the API's errors.
fn edit<T>(p: &Proxy, f: impl FnOnce(&mut Config) -> Result<T, ApiError>) -> Result<T, ApiError> {
    p.edit(f)
}

fn text(body: &[u8]) -> Result<&str, ApiError> {
    let t = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    if t.trim().is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    Ok(t)
}

/// A body in JSON (or YAML) into `T`, refusing unknown keys.
fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let t = text(body)?;
    Config::check_depth(t).map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    serde_yaml::from_str(t).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

/// A service as the body writes it; the secrets it sends back as
/// `<redacted>` (as it read them without the token) keep the values of
/// the service running under that name.
fn parse_service(config: &Config, body: &[u8]) -> Result<ServiceSpec, ApiError> {
    let invalid = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m);
    let mut spec = config
        .parse_service(text(body)?, "request body")
        .map_err(|e| invalid(e.to_string()))?;
    spec.keep_secrets(config.service(&spec.name))
        .map_err(|m| invalid(format!("request body: {m}")))?;
    Ok(spec)
}

fn find<'a>(config: &'a mut Config, name: &str) -> Result<&'a mut ServiceSpec, ApiError> {
    config
        .services
        .iter_mut()
        .find(|s| s.name == name)
        .ok_or_else(|| no_such_service(name))
}

fn find_real_server<'a>(
    config: &'a mut Config,
    name: &str,
    addr: SocketAddr,
) -> Result<&'a mut crate::config::RealServerSpec, ApiError> {
    find(config, name)?
        .real_servers
        .iter_mut()
        .find(|r| r.address == addr)
        .ok_or_else(|| no_such_dest(name, addr))
}

fn address(s: &str) -> Result<SocketAddr, ApiError> {
    s.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "{s:?} is not an address: write IP:PORT or [IPv6]:PORT"
        ))
    })
}

fn no_such_dest(service: &str, addr: SocketAddr) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_destination",
        format!("service {service:?} has no real server {addr}"),
    )
}

/// `POST /api/v1/services`: a new service, written as in the file.
pub(super) fn add_service(p: &Proxy, body: &[u8]) -> Result<Value, ApiError> {
    let name = edit(p, |c| {
        let spec = parse_service(c, body)?;
        if c.service(&spec.name).is_some() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "service_exists",
                format!("a service named {:?} exists", spec.name),
            ));
        }
        // An address another service has is IPVS's "service exists",
        // unless they share it by their `match` (checked with the rest).
        for s in &c.services {
            if s.proto == spec.proto
                && (s.matching.is_none() && spec.matching.is_none() || s.proto == Proto::Udp)
                && let Some(a) = spec.listen.iter().find(|a| s.listen.contains(a))
            {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "service_exists",
                    format!(
                        "{} {a} is already the address of service {:?}",
                        spec.proto, s.name
                    ),
                ));
            }
        }
        let name = spec.name.clone();
        c.services.push(spec);
        Ok(name)
    })?;
    info!(service = %name, "admin: service added");
    Ok(json!({ "added": name }))
}

/// `PUT /api/v1/services/NAME`: the service replaced whole.
pub(super) fn replace_service(p: &Proxy, name: &str, body: &[u8]) -> Result<Value, ApiError> {
    edit(p, |c| {
        let spec = parse_service(c, body)?;
        if spec.name != name {
            return Err(ApiError::bad_request(format!(
                "the body names service {:?}, the path {name:?}: a service is not renamed",
                spec.name
            )));
        }
        *find(c, name)? = spec;
        Ok(())
    })?;
    info!(service = %name, "admin: service replaced");
    Ok(json!({ "replaced": name }))
}

/// `DELETE /api/v1/services/NAME`.
pub(super) fn delete_service(p: &Proxy, name: &str) -> Result<Value, ApiError> {
    edit(p, |c| {
        let before = c.services.len();
        c.services.retain(|s| s.name != name);
        if c.services.len() == before {
            return Err(no_such_service(name));
        }
        Ok(())
    })?;
    info!(service = %name, "admin: service deleted");
    Ok(json!({ "deleted": name }))
}

/// `DELETE /api/v1/services`: every service (`ipvsadm -C`).
pub(super) fn flush(p: &Proxy) -> Result<Value, ApiError> {
    let n = edit(p, |c| {
        let n = c.services.len();
        c.services.clear();
        Ok::<_, ApiError>(n)
    })?;
    info!(services = n, "admin: every service deleted");
    Ok(json!({ "deleted": n }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRealServer {
    address: String,
    weight: Option<i64>,
    u_threshold: Option<u32>,
    l_threshold: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RealServerEdit {
    weight: Option<i64>,
    u_threshold: Option<u32>,
    l_threshold: Option<u32>,
}

fn weight(w: i64) -> Result<i32, ApiError> {
    if (0..=65_535).contains(&w) {
        Ok(w as i32)
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("weight {w} is out of range: 0 (quiescent) to 65535"),
        ))
    }
}

/// The thresholds' order, as the file's check has it.
fn thresholds(p: DestParams) -> Result<(), ApiError> {
    if p.l_threshold > p.u_threshold {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "l_threshold {} is above u_threshold {} (a lower threshold needs an upper one above it)",
                p.l_threshold, p.u_threshold
            ),
        ));
    }
    Ok(())
}

/// `POST /api/v1/services/NAME/real_servers`.
pub(super) fn add_real_server(p: &Proxy, name: &str, body: &[u8]) -> Result<Value, ApiError> {
    let new: NewRealServer = parse(body)?;
    let addr = address(&new.address)?;
    let params = DestParams {
        weight: weight(new.weight.unwrap_or(1))?,
        u_threshold: new.u_threshold.unwrap_or(0),
        l_threshold: new.l_threshold.unwrap_or(0),
    };
    edit(p, |c| {
        let s = find(c, name)?;
        if s.real_servers.iter().any(|r| r.address == addr) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "destination_exists",
                format!("service {name:?} has real server {addr} already"),
            ));
        }
        s.real_servers.push(crate::config::RealServerSpec {
            address: addr,
            params,
            checks: None,
            alpha: None,
            inhibit_on_failure: None,
            discovered: None,
        });
        Ok(())
    })?;
    info!(service = %name, real_server = %addr, weight = params.weight, "admin: real server added");
    Ok(json!({ "added": addr.to_string() }))
}

/// `PATCH /api/v1/services/NAME/real_servers/ADDR`: weight and thresholds,
/// each one given.
pub(super) fn edit_real_server(
    p: &Proxy,
    name: &str,
    addr: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    let addr = address(addr)?;
    let e: RealServerEdit = parse(body)?;
    let w = e.weight.map(weight).transpose()?;
    let discovered = p.edit_discovered(name, addr, |cur| {
        let params = DestParams {
            weight: w.unwrap_or(cur.weight),
            u_threshold: e.u_threshold.unwrap_or(cur.u_threshold),
            l_threshold: e.l_threshold.unwrap_or(cur.l_threshold),
        };
        thresholds(params).map(|()| Override::Params(params))
    });
    if let Some(done) = discovered {
        done?;
        info!(service = %name, real_server = %addr, "admin: discovered real server edited (until its DNS record changes)");
        return Ok(json!({ "edited": addr.to_string() }));
    }
    edit(p, |c| {
        let r = find_real_server(c, name, addr)?;
        if let Some(w) = w {
            r.params.weight = w;
        }
        if let Some(u) = e.u_threshold {
            r.params.u_threshold = u;
        }
        if let Some(l) = e.l_threshold {
            r.params.l_threshold = l;
        }
        Ok(())
    })?;
    info!(service = %name, real_server = %addr, "admin: real server edited");
    Ok(json!({ "edited": addr.to_string() }))
}

/// `DELETE /api/v1/services/NAME/real_servers/ADDR`.
pub(super) fn delete_real_server(p: &Proxy, name: &str, addr: &str) -> Result<Value, ApiError> {
    let addr = address(addr)?;
    if let Some(done) = p.edit_discovered(name, addr, |_| Ok::<_, ApiError>(Override::Deleted)) {
        done?;
        info!(service = %name, real_server = %addr, "admin: discovered real server deleted (until its DNS record changes)");
        return Ok(json!({ "deleted": addr.to_string() }));
    }
    edit(p, |c| {
        let s = find(c, name)?;
        let before = s.real_servers.len();
        s.real_servers.retain(|r| r.address != addr);
        if s.real_servers.len() == before {
            return Err(no_such_dest(name, addr));
        }
        Ok(())
    })?;
    info!(service = %name, real_server = %addr, "admin: real server deleted");
    Ok(json!({ "deleted": addr.to_string() }))
}

/// `POST /api/v1/services/NAME/real_servers/ADDR/drain`: weight 0, so
/// that it takes no new connections while its open ones finish.
pub(super) fn drain(p: &Proxy, name: &str, addr: &str) -> Result<Value, ApiError> {
    let addr = address(addr)?;
    let discovered = p.edit_discovered(name, addr, |cur| {
        Ok::<_, ApiError>(Override::Params(DestParams { weight: 0, ..cur }))
    });
    if let Some(done) = discovered {
        done?;
        info!(service = %name, real_server = %addr, "admin: discovered real server drained (until its DNS record changes)");
        return Ok(json!({ "drained": addr.to_string() }));
    }
    edit(p, |c| {
        find_real_server(c, name, addr)?.params.weight = 0;
        Ok(())
    })?;
    info!(service = %name, real_server = %addr, "admin: real server drained (weight 0)");
    Ok(json!({ "drained": addr.to_string() }))
}

/// `POST /api/v1/zero` and `POST /api/v1/services/NAME/zero`.
pub(super) fn zero(p: &Proxy, name: Option<&str>) -> Result<Value, ApiError> {
    if !p.zero(name) {
        return Err(no_such_service(name.unwrap_or_default()));
    }
    info!(service = name.unwrap_or("*"), "admin: counters zeroed");
    Ok(json!({ "zeroed": name.unwrap_or("*") }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetTimeouts {
    tcp: Option<u64>,
    tcpfin: Option<u64>,
    udp: Option<u64>,
}

/// `PUT /api/v1/timeouts` (`ipvsadm --set tcp tcpfin udp`): seconds; 0 or
/// absent leaves a timeout as it is. The global timeouts and every
/// service's change.
pub(super) fn set_timeouts(p: &Proxy, body: &[u8]) -> Result<Value, ApiError> {
    let t: SetTimeouts = parse(body)?;
    const MAX: u64 = 31 * 24 * 3600;
    for (k, v) in [("tcp", t.tcp), ("tcpfin", t.tcpfin), ("udp", t.udp)] {
        if v.is_some_and(|v| v > MAX) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("{k}: at most {MAX} seconds"),
            ));
        }
    }
    let set = |v: Option<u64>| v.filter(|&v| v > 0).map(Duration::from_secs);
    let (tcp, tcpfin, udp) = (set(t.tcp), set(t.tcpfin), set(t.udp));
    edit(p, |c| {
        let all = std::iter::once(&mut c.global.timeouts)
            .chain(c.services.iter_mut().map(|s| &mut s.timeouts));
        for to in all {
            if let Some(v) = tcp {
                to.tcp = v;
            }
            if let Some(v) = tcpfin {
                to.tcpfin = v;
            }
            if let Some(v) = udp {
                to.udp = v;
            }
        }
        Ok::<_, ApiError>(())
    })?;
    info!(?tcp, ?tcpfin, ?udp, "admin: timeouts set");
    Ok(super::api::timeouts(p))
}

/// `POST /api/v1/daemon` (`ipvsadm --start-daemon`): a body of
/// `global.sync_daemon`'s keys starts that daemon. One of each state runs
/// at a time; the interface must exist.
pub(super) fn start_daemon(p: &Proxy, body: &[u8]) -> Result<Value, ApiError> {
    let raw: crate::config::sync::RawSyncDaemon = parse(body)?;
    let mut problems = Vec::new();
    let Some(d) = crate::config::sync::daemon(raw, "daemon", &mut problems) else {
        let why: Vec<String> = problems
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.reason))
            .collect();
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            why.join("; "),
        ));
    };
    if !std::path::Path::new("/sys/class/net")
        .join(&d.mcast_interface)
        .exists()
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_such_device",
            format!("No such device: {}", d.mcast_interface),
        ));
    }
    edit(p, |c| {
        if c.global.sync.daemons.iter().any(|o| o.state == d.state) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "daemon_running",
                "Daemon has already run",
            ));
        }
        c.global.sync.daemons.push(d.clone());
        Ok(())
    })?;
    info!(state = d.state.name(), interface = %d.mcast_interface, "admin: sync daemon started");
    Ok(super::api::daemons(p))
}

/// `DELETE /api/v1/daemon/STATE` (`ipvsadm --stop-daemon STATE`).
pub(super) fn stop_daemon(p: &Proxy, state: &str) -> Result<Value, ApiError> {
    let state: crate::config::sync::SyncState = state.parse().map_err(|()| {
        ApiError::bad_request(format!("{state:?} is not a daemon state: master or backup"))
    })?;
    edit(p, |c| {
        let before = c.global.sync.daemons.len();
        c.global.sync.daemons.retain(|d| d.state != state);
        if c.global.sync.daemons.len() == before {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_daemon",
                "No daemon is running",
            ));
        }
        Ok(())
    })?;
    info!(state = state.name(), "admin: sync daemon stopped");
    Ok(super::api::daemons(p))
}
