//! The admin listener: Prometheus metrics, health and readiness, the JSON
//! API under `/api/v1/` (reads and edits) and the status page.
//!
//! One hyper HTTP/1.1 server; each connection is its own task, so scrapes
//! and API calls are served concurrently. Reads take what they show from
//! the running proxy at the time of the request (live connections' bytes
//! are flushed into the totals first). Edits go through
//! [`crate::Proxy::edit`]: the running configuration is copied, changed,
//! checked whole and applied, or nothing changes.
//!
//! Before any route, `guard` refuses what a browser could be made to
//! send (DNS rebinding, cross-site requests): every route but the probes
//! and `/metrics` needs a `Host` naming this listener, a change needs a
//! JSON (or YAML) body and no foreign `Origin`. Edits need `Authorization:
//! Bearer TOKEN` when `admin.token` is set. Without a token they are
//! allowed only on a loopback listener: a listener reachable from
//! elsewhere without a token refuses them (403). Secrets in the
//! configuration are shown only to a request with the token.
//!
//! Routes are listed in docs/admin-api.md.

mod admission;
mod api;
mod edits;
pub(crate) mod guard;
pub mod lane;
mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::Proxy;
use crate::reload::Reloader;
use crate::throttle::Throttle;

/// A response's body: whole, or a scrape written as it is sent.
type AnyBody = Either<Full<Bytes>, metrics::Scrape>;

/// Request bodies larger than this are refused (413).
pub const MAX_BODY: usize = 1 << 20;

/// How long a client may take to send a request's body: a slower one is
/// answered 408.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a client may take to send a request's headers, and how long a
/// kept-alive connection may wait for its next request: then it is closed.
/// Short, so that idle connections cannot hold the listener's places.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// What the admin listener serves.
#[derive(Debug, Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    proxy: Proxy,
    reloader: Option<Reloader>,
    metrics: metrics::Metrics,
    /// Logging of refused requests: a flood of them logs once a second.
    refusals: Throttle,
}

/// The two ends of an admin connection.
#[derive(Clone, Copy, Debug)]
struct Peer {
    /// The client.
    addr: SocketAddr,
    /// The address it reached.
    local: SocketAddr,
}

impl Admin {
    /// The admin API of `proxy`; with a `reloader`, reloads of its file
    /// are reported and can be requested.
    pub fn new(proxy: Proxy, reloader: Option<Reloader>) -> Admin {
        let metrics = metrics::Metrics::new(proxy.clone(), reloader.as_ref().map(Reloader::status));
        Admin {
            inner: Arc::new(Inner {
                proxy,
                reloader,
                metrics,
                refusals: Throttle::per_second(),
            }),
        }
    }

    /// Serves `listener` until `stop`. Connections beyond
    /// `admin.max_connections` (or `max_connections_per_source` from one
    /// address) go to the probe lane ([`lane`]).
    pub async fn serve(self, listener: TcpListener, stop: CancellationToken) {
        let admission = Arc::new(admission::Admission::default());
        loop {
            let (stream, peer) = tokio::select! {
                () = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        debug!(error = %e, "admin: accept failed");
                        // EMFILE and the like: do not spin.
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let limits = self.inner.proxy.config().admin.limits;
            // A small descriptor limit lowers the cap (`fds::Plan`).
            let max = (limits.max_connections as usize).min(crate::fds::BUDGET.admin_connections());
            let per_source = (limits.max_connections_per_source as usize).min(max);
            let lane = crate::fds::PROBE_LANE as usize;
            let slot = match admission.admit(peer.ip(), max, per_source, lane) {
                admission::Admitted::Serve(place) => place,
                admission::Admitted::Lane(place) => {
                    if let Some(unsaid) = self.inner.refusals.allow() {
                        warn!(%peer, max, per_source, also_since = unsaid, "admin: too many connections: a new one is answered only for /healthz and /readyz");
                    }
                    let proxy = self.inner.proxy.clone();
                    tokio::spawn(async move {
                        let closed = place.closed.clone();
                        let _place = place;
                        lane::serve(stream, closed, |path| probe(&proxy, path)).await;
                    });
                    continue;
                }
            };
            let admin = self.clone();
            let stop = stop.clone();
            let peer = Peer {
                addr: peer,
                local: stream.local_addr().unwrap_or(peer),
            };
            tokio::spawn(async move {
                let _slot = slot;
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(req, peer).await) }
                });
                let conn = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            debug!(peer = %peer.addr, error = %e, "admin: connection ended");
                        }
                    }
                    () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
                }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>, peer: Peer) -> Response<AnyBody> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        if !is_open_route(&method, &path)
            && let Err(e) = self.vet(&req, peer)
        {
            return e.response().map(Either::Left);
        }
        // /metrics is written as it is sent; the rest is whole.
        let response = if method == Method::GET && path.trim_end_matches('/') == "/metrics" {
            self.inner
                .metrics
                .scrape(req.uri().query())
                .map(|r| r.map(Either::Right))
        } else {
            self.route(req, peer).await.map(|r| r.map(Either::Left))
        };
        let response = response.unwrap_or_else(|e| e.response().map(Either::Left));
        if method != Method::GET {
            debug!(peer = %peer.addr, %method, %path, status = response.status().as_u16(), "admin request");
        }
        response
    }

    /// The guard's checks ([`guard`]) on `req`; a refusal is logged (once
    /// a second at most).
    fn vet(&self, req: &Request<Incoming>, peer: Peer) -> Result<(), ApiError> {
        use hyper::body::Body as _;
        let headers = req.headers();
        // A value that is not visible ASCII is refused by every check
        // that reads it.
        let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
        let config = self.inner.proxy.config();
        let at = guard::Listener {
            listen: config.admin.listen,
            local: peer.local,
            allowed_hosts: &config.admin.allowed_hosts,
        };
        let head = guard::Head {
            change: !matches!(*req.method(), Method::GET | Method::HEAD),
            host: text(header::HOST.as_str()),
            origin: text(header::ORIGIN.as_str()),
            fetch_site: text("sec-fetch-site"),
            content_type: text(header::CONTENT_TYPE.as_str()),
            has_body: req.body().size_hint().upper() != Some(0),
        };
        let mut checked = guard::check(&head, &at);
        // An absolute-form target names a host too.
        if checked.is_ok()
            && let Some(authority) = req.uri().authority()
        {
            let target = guard::Head {
                host: Some(authority.as_str()),
                ..guard::Head::default()
            };
            checked = guard::check(&target, &at);
        }
        checked.map_err(|refused| {
            if let Some(unsaid) = self.inner.refusals.allow() {
                warn!(peer = %peer.addr, method = %req.method(), path = %crate::quote::bounded(req.uri().path()), reason = ?refused, also_refused_since = unsaid, "admin: request refused");
            }
            ApiError::from(refused)
        })
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let segments: Vec<String> = req
            .uri()
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect::<Result<_, _>>()?;
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        let method = req.method().clone();
        let p = &self.inner.proxy;
        match (&method, seg.as_slice()) {
            (&Method::GET, []) => Ok(page()),
            (&Method::GET, [name @ ("healthz" | "readyz")]) => {
                let (status, body) = probe(p, &format!("/{name}")).unwrap_or((500, ""));
                Ok(text(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    body,
                ))
            }
            (&Method::GET, ["api", "v1", rest @ ..]) => {
                let reveal = self.presents_token(&req, peer)?;
                self.read(rest, reveal)
            }
            (_, ["api", "v1", rest @ ..]) => {
                self.authorize(&req, peer)?;
                let rest: Vec<String> = rest.iter().map(|s| (*s).to_owned()).collect();
                let body = read_body(req).await?;
                let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
                self.write(&method, &rest, &body).await
            }
            (_, ["metrics" | "healthz" | "readyz"]) | (_, []) => Err(ApiError::method()),
            _ => Err(ApiError::not_found()),
        }
    }

    /// A read; the configuration's secrets are shown when `reveal`.
    fn read(&self, rest: &[&str], reveal: bool) -> Result<Response<Full<Bytes>>, ApiError> {
        let p = &self.inner.proxy;
        match rest {
            ["services"] => Ok(json(StatusCode::OK, &api::services(p, reveal))),
            ["services", name] => api::service(p, name, reveal).map(|v| json(StatusCode::OK, &v)),
            ["history"] => Ok(json(StatusCode::OK, &api::history(p, None)?)),
            ["services", name, "history"] => {
                Ok(json(StatusCode::OK, &api::history(p, Some(name))?))
            }
            ["connections"] => Ok(json(StatusCode::OK, &api::connections(p))),
            ["config"] => {
                let config = p.config();
                let yaml = if reveal {
                    config.to_yaml()
                } else {
                    config.redacted().to_yaml()
                };
                Ok(respond(
                    StatusCode::OK,
                    "application/yaml; charset=utf-8",
                    yaml,
                ))
            }
            ["reload"] => Ok(json(
                StatusCode::OK,
                &api::reload_status(p, self.inner.reloader.as_ref()),
            )),
            ["timeouts"] => Ok(json(StatusCode::OK, &api::timeouts(p))),
            ["daemon"] => Ok(json(StatusCode::OK, &api::daemons(p))),
            _ => Err(ApiError::not_found()),
        }
    }

    async fn write(
        &self,
        method: &Method,
        rest: &[&str],
        body: &[u8],
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let p = &self.inner.proxy;
        let done = |status: StatusCode, v: serde_json::Value| Ok(json(status, &v));
        match (method, rest) {
            (&Method::POST, ["services"]) => {
                done(StatusCode::CREATED, edits::add_service(p, body)?)
            }
            (&Method::DELETE, ["services"]) => done(StatusCode::OK, edits::flush(p)?),
            (&Method::PUT, ["services", name]) => {
                done(StatusCode::OK, edits::replace_service(p, name, body)?)
            }
            (&Method::DELETE, ["services", name]) => {
                done(StatusCode::OK, edits::delete_service(p, name)?)
            }
            (&Method::POST, ["services", name, "zero"]) => {
                done(StatusCode::OK, edits::zero(p, Some(name))?)
            }
            (&Method::POST, ["services", name, "real_servers"]) => {
                done(StatusCode::CREATED, edits::add_real_server(p, name, body)?)
            }
            (&Method::PATCH, ["services", name, "real_servers", addr]) => done(
                StatusCode::OK,
                edits::edit_real_server(p, name, addr, body)?,
            ),
            (&Method::DELETE, ["services", name, "real_servers", addr]) => {
                done(StatusCode::OK, edits::delete_real_server(p, name, addr)?)
            }
            (&Method::POST, ["services", name, "real_servers", addr, "drain"]) => {
                done(StatusCode::OK, edits::drain(p, name, addr)?)
            }
            (&Method::POST, ["zero"]) => done(StatusCode::OK, edits::zero(p, None)?),
            (&Method::PUT, ["timeouts"]) => done(StatusCode::OK, edits::set_timeouts(p, body)?),
            (&Method::POST, ["daemon"]) => done(StatusCode::CREATED, edits::start_daemon(p, body)?),
            (&Method::DELETE, ["daemon", state]) => {
                done(StatusCode::OK, edits::stop_daemon(p, state)?)
            }
            (&Method::POST, ["reload"]) => match &self.inner.reloader {
                Some(r) => match r.reload().await {
                    Ok(()) => done(
                        StatusCode::OK,
                        api::reload_status(p, self.inner.reloader.as_ref()),
                    ),
                    Err(e) => Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "reload_failed",
                        e,
                    )),
                },
                None => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "no_file",
                    "this proxy was not started from a file: there is nothing to reload",
                )),
            },
            _ => Err(if self.read(rest, false).is_ok() {
                ApiError::method()
            } else {
                ApiError::not_found()
            }),
        }
    }

    /// What `req` says of the token: `Ok(true)` when it presents the
    /// configured one, `Ok(false)` when it presents none (or none is
    /// configured), 401 when it presents a wrong one.
    fn presents_token(&self, req: &Request<Incoming>, peer: Peer) -> Result<bool, ApiError> {
        let config = self.inner.proxy.config();
        let Some(token) = &config.admin.token else {
            return Ok(false);
        };
        let Some(given) = req.headers().get(header::AUTHORIZATION) else {
            return Ok(false);
        };
        let given = given
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.trim().as_bytes(), token.as_bytes()) {
            return Ok(true);
        }
        if let Some(unsaid) = self.inner.refusals.allow() {
            warn!(peer = %peer.addr, also_refused_since = unsaid, "admin: a request with a wrong token was refused");
        }
        Err(ApiError::unauthorized("the bearer token is wrong"))
    }

    /// Edits need the token when one is set; without one, a loopback
    /// listener.
    fn authorize(&self, req: &Request<Incoming>, peer: Peer) -> Result<(), ApiError> {
        let admin = self.inner.proxy.config().admin.clone();
        match &admin.token {
            Some(_) => {
                if self.presents_token(req, peer)? {
                    return Ok(());
                }
                if let Some(unsaid) = self.inner.refusals.allow() {
                    warn!(peer = %peer.addr, also_refused_since = unsaid, "admin: an edit without the token was refused");
                }
                Err(ApiError::unauthorized(
                    "edits need the admin token: send Authorization: Bearer TOKEN",
                ))
            }
            None if admin.mutations_open_without_token() => Ok(()),
            None => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "edits are disabled: the admin listener {} is not on loopback and admin.token is not set",
                    admin.listen
                ),
            )),
        }
    }
}

/// The answer to a probe's `path`, `/healthz` or `/readyz`: a status and
/// a body. The probe lane answers with it too.
fn probe(p: &Proxy, path: &str) -> Option<(u16, &'static str)> {
    match path.trim_end_matches('/') {
        "/healthz" => Some((200, "ok\n")),
        "/readyz" if p.is_ready() => Some((200, "ready\n")),
        "/readyz" => Some((503, "draining\n")),
        _ => None,
    }
}

/// Routes served whatever the request's Host: probes and scrapes, which
/// the kubelet and Prometheus address as they were told to, and which show
/// no secret and change nothing.
fn is_open_route(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
        && matches!(
            path.trim_end_matches('/'),
            "/metrics" | "/healthz" | "/readyz"
        )
}

impl From<guard::Refused> for ApiError {
    fn from(r: guard::Refused) -> ApiError {
        match r {
            guard::Refused::Host(m) => ApiError::new(StatusCode::FORBIDDEN, "host_not_allowed", m),
            guard::Refused::CrossOrigin(m) => {
                ApiError::new(StatusCode::FORBIDDEN, "cross_origin", m)
            }
            guard::Refused::MediaType(m) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                m,
            ),
        }
    }
}

/// What the listener does with a request head before any route, for the
/// fuzz target `admin_request`: `data` read as a head ([`lane::parse`]),
/// the guard's rules on its headers, its path cut into segments and
/// decoded. Whatever `data` is, it returns.
#[doc(hidden)]
pub fn fuzz_request(data: &[u8]) {
    let lane::Parsed::Request(h) = lane::parse(data) else {
        return;
    };
    let allowed = ["rvs.example.com".to_owned(), "*.lb.example".to_owned()];
    let at = guard::Listener {
        listen: SocketAddr::from(([0, 0, 0, 0], 9180)),
        local: SocketAddr::from(([10, 0, 0, 1], 9180)),
        allowed_hosts: &allowed,
    };
    let head = guard::Head {
        change: !matches!(h.method, "GET" | "HEAD"),
        host: h.header("host"),
        origin: h.header("origin"),
        fetch_site: h.header("sec-fetch-site"),
        content_type: h.header("content-type"),
        has_body: h.header("content-length").is_some_and(|l| l != "0")
            || h.header("transfer-encoding").is_some(),
    };
    let _ = guard::check(&head, &at);
    for segment in h.path().split('/') {
        let _ = percent_decode(segment);
    }
}

/// Compares a presented token with the configured one (`b`) in time that
/// depends only on `b`'s length, whatever `a` holds.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, y) in b.iter().enumerate() {
        diff |= a.get(i).copied().unwrap_or(!*y) ^ y;
    }
    diff == 0
}

async fn read_body(req: Request<Incoming>) -> Result<Vec<u8>, ApiError> {
    use hyper::body::Body as _;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is over {MAX_BODY} bytes"),
        )
    };
    // A Content-Length over the limit is refused before a byte is read.
    if req.body().size_hint().lower() > MAX_BODY as u64 {
        return Err(too_large());
    }
    let collected = tokio::time::timeout(
        READ_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request body did not arrive within {READ_TIMEOUT:?}"),
        )
    })?;
    match collected {
        Ok(b) => Ok(b.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// `%XX` escapes in a path segment (an IPv6 address's brackets, typically).
fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ApiError::bad_request(format!("bad %-escape in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request(format!("{s:?} is not UTF-8")))
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body)
}

fn json<T: Serialize>(status: StatusCode, v: &T) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

/// The status page: one self-contained HTML file polling the JSON API.
fn page() -> Response<Full<Bytes>> {
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        include_str!("status.html"),
    )
}

/// An API error: an HTTP status and a JSON body `{"error": CODE,
/// "message": TEXT}`; the code is stable (clients such as rvsadm act on
/// it), the message says what was wrong.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route: see docs/admin-api.md",
        )
    }

    fn method() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        )
    }

    fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    fn response(&self) -> Response<Full<Bytes>> {
        let mut r = json(
            self.status,
            &serde_json::json!({ "error": self.code, "message": self.message }),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rvs\""),
            );
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        for wrong in [
            &b""[..],
            b"s3cre",
            b"s3cret!",
            b"S3cret",
            b"s3cres",
            b"\xff\xff\xff\xff\xff\xff",
        ] {
            assert!(!constant_time_eq(wrong, b"s3cret"), "{wrong:?}");
        }
        assert!(!constant_time_eq(b"x", b""));
        assert!(constant_time_eq(b"", b""));
    }
}
