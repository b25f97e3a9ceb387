//! The HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, and the lead
//! endpoints `GET /leads` (the call list), `GET /leads/{id}` (a lead's
//! breakdown) and `/ui` (the call-list page).
//!
//! Lead data is served behind a bearer token ([`LeadAccess`]): with a token
//! configured, `/leads` and `/leads/{id}` answer 401 without
//! `Authorization: Bearer <token>`; without one, the server refuses to
//! start on a non-loopback address. `/metrics`, `/healthz`, `/readyz` and
//! the page itself (which holds no lead data) are open.
//!
//! axum's router served by hyper's HTTP/1 connection on a tokio runtime of
//! the server's own. The runtime is a current-thread one driven by a
//! dedicated thread: the endpoints are few and cheap, one event loop serves
//! thousands of connections, and the service's processing loop (plain
//! threads, rdkafka) never shares a scheduler with it. The calls that may
//! block — a lead lookup waits for the processor's lock, rendering the
//! metrics walks every series — run on the runtime's small blocking pool, so
//! a slow one never stalls the event loop, and so never `/healthz`.
//!
//! Limits (see [`Limits`]): at most `max_connections` connections at once
//! (beyond that the server stops accepting, so new connections wait in the
//! kernel's listen backlog and then time out at the client, while the open
//! ones are served as before); a request head must arrive within
//! `header_read_timeout` and fit in `max_header_bytes` (else **431** and the
//! connection is closed); a request is answered within `request_timeout`
//! (else 503). Connections are not kept alive: each response ends with
//! `Connection: close`, which every probe and scraper handles and which
//! simple clients reading to end of stream rely on.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{oneshot, Semaphore};

use super::peer;
use crate::engine::{CallList, CallListQuery, QueryError};

/// What the endpoints read from the running service.
pub trait Status: Send + Sync + 'static {
    /// Alive: the processing loop is turning. Called on the server's event
    /// loop: it must return at once (read atomics, take no long-held lock).
    fn healthy(&self) -> bool;
    /// Ready: every assigned partition is restored. Must return at once, as
    /// [`Status::healthy`].
    fn ready(&self) -> bool;
    /// The lead's breakdown as JSON, if this instance owns and knows it. May
    /// block: it runs on a blocking thread, under the request timeout.
    fn lead(&self, id: &str) -> Option<String>;
    /// The lead's breakdown with its scores decayed to `at` (its own time,
    /// if later): what the call list drawn at `at` shows of it.
    fn lead_at(&self, id: &str, at: crate::time::Micros) -> Option<String> {
        let _ = at;
        self.lead(id)
    }
    /// This instance's call list for `q` (its own partitions). May block,
    /// as [`Status::lead`].
    fn call_list(&self, q: &CallListQuery) -> Result<CallList, QueryError>;
    /// Which instance serves the lead `id`. Must return at once. Default:
    /// this one (a server without a cluster).
    fn route(&self, _id: &str) -> Route {
        Route::Local
    }
    /// The other instances that own partitions, and the partitions nobody
    /// owns now. Must return at once. Default: none.
    fn peers(&self) -> Peers {
        Peers::default()
    }
}

/// Where a lead's partition is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// By this instance (or no other is known).
    Local,
    /// By another instance, per the instance registry.
    Remote(Peer),
    /// By no instance now: the partition is being moved.
    Unowned { partition: i32 },
}

/// Another instance and the partitions it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub instance_id: String,
    pub url: String,
    pub partitions: Vec<i32>,
}

/// The rest of the cluster, for a query across it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peers {
    pub others: Vec<Peer>,
    pub unowned: Vec<i32>,
}

/// The bearer token of the lead endpoints. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl Token {
    pub fn new(token: &str) -> Token {
        Token(token.as_bytes().into())
    }

    /// Compares in time that depends on the token's length and the
    /// presented one's, never on where they differ (so a wrong guess
    /// learns nothing of the token from the time of the 401).
    fn matches(&self, presented: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let expected = &self.0[..];
        let mut same = subtle::Choice::from(u8::from(presented.len() == expected.len()));
        for (i, e) in expected.iter().enumerate() {
            same &= e.ct_eq(presented.get(i).unwrap_or(&0));
        }
        same.into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Whether the lead endpoints are served, and behind which token.
#[derive(Debug, Clone)]
pub struct LeadAccess {
    /// Serve `/leads`, `/leads/{id}` and `/ui` (else they are 404).
    pub enabled: bool,
    /// Required on `/leads` and `/leads/{id}` when set. Without it the
    /// server serves them only on a loopback address.
    pub token: Option<Token>,
}

impl LeadAccess {
    /// Lead endpoints on, no token: loopback only.
    pub fn loopback() -> LeadAccess {
        LeadAccess {
            enabled: true,
            token: None,
        }
    }

    /// Lead endpoints on, behind `token`.
    pub fn token(token: &str) -> LeadAccess {
        LeadAccess {
            enabled: true,
            token: Some(Token::new(token)),
        }
    }

    /// As `[http]` says (`token`, `lead_endpoints`).
    pub fn from_config(http: &crate::config::HttpConfig) -> LeadAccess {
        LeadAccess {
            enabled: http.lead_endpoints,
            token: http.token.as_deref().map(Token::new),
        }
    }

    /// Refuses lead endpoints without a token on a non-loopback address
    /// (the address bound, so a host name that resolves elsewhere counts).
    fn check(&self, addr: SocketAddr) -> std::io::Result<()> {
        if self.enabled && self.token.is_none() && !addr.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "config key `http.token`: the lead endpoints would serve lead data on {addr}, \
                     which is not a loopback address, without a token: set `token` in [http] \
                     (or LEADSCORE_HTTP_TOKEN), listen on 127.0.0.1, or set `lead_endpoints = false`"
                ),
            ));
        }
        Ok(())
    }
}

/// The server's limits; [`Limits::default`] is what [`Server::start`] uses.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once. Idle or slow connections hold a slot
    /// until `header_read_timeout` closes them.
    pub max_connections: usize,
    /// Time for a request's head (request line and headers) to arrive.
    pub header_read_timeout: Duration,
    /// Time to answer a request once its head is read.
    pub request_timeout: Duration,
    /// Bytes of request head buffered at most (hyper's minimum is 8 KiB).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// Threads for the calls that may block ([`Status::lead`], rendering the
/// metrics). More would only queue on the processor's lock.
const BLOCKING_THREADS: usize = 4;
/// How long a stopping server lets open requests finish.
const DRAIN: Duration = Duration::from_secs(1);
/// Connections the kernel queues while the server is not accepting.
const BACKLOG: u32 = 1024;

/// The endpoints, served on a thread of their own until dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `listen` and serves in a background thread, with the default [`Limits`].
    pub fn start(
        listen: &str,
        metrics: PrometheusHandle,
        status: Arc<dyn Status>,
    ) -> std::io::Result<Server> {
        Server::start_with(listen, metrics, status, Limits::default())
    }

    /// Binds `listen` and serves in a background thread, within `limits`,
    /// with the lead endpoints open on loopback ([`LeadAccess::loopback`]).
    pub fn start_with(
        listen: &str,
        metrics: PrometheusHandle,
        status: Arc<dyn Status>,
        limits: Limits,
    ) -> std::io::Result<Server> {
        Server::start_with_access(listen, metrics, status, limits, LeadAccess::loopback())
    }

    /// Binds `listen` and serves in a background thread, within `limits`,
    /// the lead endpoints as `access` says. Fails, naming the `token` key,
    /// when lead endpoints without a token would listen off loopback.
    pub fn start_with_access(
        listen: &str,
        metrics: PrometheusHandle,
        status: Arc<dyn Status>,
        limits: Limits,
        access: LeadAccess,
    ) -> std::io::Result<Server> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(BLOCKING_THREADS)
            .thread_name("http")
            .build()?;
        let listener = {
            // Sockets register with the runtime's reactor.
            let _in_runtime = runtime.enter();
            bind(listen)?
        };
        let addr = listener.local_addr()?;
        access.check(addr)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::Builder::new().name("http".into()).spawn(move || {
            runtime.block_on(serve(listener, metrics, status, limits, access, async {
                // A dropped sender stops the server too.
                let _ = stopped.await;
            }));
            // Connections still open after the drain are dropped here; a
            // blocking call still running finishes on its own thread.
            runtime.shutdown_background();
        })?;
        tracing::info!(%addr, "http endpoints listening");
        Ok(Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds every address `listen` resolves to until one succeeds, with a
/// backlog deep enough for a burst of connections (std's is 128).
fn bind(listen: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for addr in std::net::ToSocketAddrs::to_socket_addrs(listen)? {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{listen} resolves to no address"),
        )
    }))
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    status: Arc<dyn Status>,
    request_timeout: Duration,
    token: Option<Token>,
}

/// The endpoints' routes. `get` routes answer HEAD too, without the body.
fn router(state: AppState, leads: bool) -> Router {
    let mut r = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if leads {
        r = r
            .route("/leads", get(call_list))
            .route("/leads/", get(bad_lead_id))
            .route("/leads/{id}", get(lead))
            .route("/ui", get(|| page(UI_HTML, "text/html; charset=utf-8")))
            .route(
                "/ui/app.js",
                get(|| page(UI_JS, "text/javascript; charset=utf-8")),
            )
            .route(
                "/ui/app.css",
                get(|| page(UI_CSS, "text/css; charset=utf-8")),
            );
    }
    r.fallback(not_found).with_state(state)
}

/// The call-list page: markup, script and style built into the binary, so
/// it works with no network; the CSP forbids loading anything else.
const UI_HTML: &str = include_str!("ui/index.html");
const UI_JS: &str = include_str!("ui/app.js");
const UI_CSS: &str = include_str!("ui/app.css");
const UI_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self'; form-action 'none'; \
                      base-uri 'none'; frame-ancestors 'none'";

async fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, UI_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// Proof that the request may read lead data: it carries the configured
/// token (`Authorization: Bearer <token>`), or no token is configured.
struct Authorized;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Response> {
        let Some(token) = &s.token else {
            return Ok(Authorized);
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()));
        match presented {
            Some(p) if token.matches(p) => Ok(Authorized),
            Some(_) => Err(unauthorized(
                "Bearer realm=\"leadscore\", error=\"invalid_token\"",
                "the token is not valid",
            )),
            None => Err(unauthorized(
                "Bearer realm=\"leadscore\"",
                "this endpoint needs `Authorization: Bearer <token>`",
            )),
        }
    }
}

/// The credentials of an `Authorization: Bearer <credentials>` header (the
/// scheme is case-insensitive, RFC 7235).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

fn unauthorized(challenge: &'static str, why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            ),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        format!("{}\n", serde_json::json!({ "error": why })),
    )
        .into_response()
}

/// Serves the endpoints on `listener` until `shutdown` completes, then lets
/// open requests finish for up to a second. Must run on a runtime with IO
/// and time enabled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: PrometheusHandle,
    status: Arc<dyn Status>,
    limits: Limits,
    access: LeadAccess,
    shutdown: impl Future<Output = ()>,
) {
    let service = TowerToHyperService::new(router(
        AppState {
            metrics,
            status,
            request_timeout: limits.request_timeout,
            token: access.token,
        },
        access.enabled,
    ));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(false);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // Wait for a free slot before accepting: beyond the limit, new
        // connections queue in the kernel's backlog.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: back off rather than spin.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("http connections still open after the drain; closing them");
    }
}

/// Runs `f` on the blocking pool within the request timeout.
async fn blocking<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "http handler panicked");
            Err(text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n"))
        }
        Err(_) => Err(text(StatusCode::SERVICE_UNAVAILABLE, "request timed out\n")),
    }
}

fn text(code: StatusCode, body: &'static str) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// Lead data: JSON that no cache keeps.
fn json(code: StatusCode, body: String) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    match blocking(s.request_timeout, move || s.metrics.render()).await {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            body,
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn healthz(State(s): State<AppState>) -> Response {
    if s.status.healthy() {
        text(StatusCode::OK, "ok\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "processing loop stalled\n")
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.status.ready() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "restoring state\n")
    }
}

async fn call_list(
    _: Authorized,
    State(s): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let raw = uri.query().unwrap_or("");
    let query = CallListQuery::from_pairs(
        form_urlencoded::parse(raw.as_bytes())
            .collect::<Vec<_>>()
            .iter()
            .map(|(k, v)| (&k[..], &v[..])),
    );
    let query = match query {
        Ok(q) => q,
        Err(e) => return query_error(&e),
    };
    // A forwarded request is answered from this instance's partitions.
    let peers = if headers.contains_key(peer::FORWARDED) {
        Peers::default()
    } else {
        s.status.peers()
    };
    let deadline = s.request_timeout.mul_f64(0.8);
    let auth = headers.get(header::AUTHORIZATION).cloned();
    let path = format!("/leads?{raw}");
    let mut asks = tokio::task::JoinSet::new();
    for p in peers.others {
        let (auth, path) = (auth.clone(), path.clone());
        asks.spawn(async move {
            let got = peer::get(&p.url, &path, auth.as_ref(), deadline).await;
            (p, got)
        });
    }
    let status = Arc::clone(&s.status);
    let q = query.clone();
    let mut list = match blocking(s.request_timeout, move || status.call_list(&q)).await {
        Ok(Ok(list)) => list,
        Ok(Err(e)) => return query_error(&e),
        Err(r) => return r,
    };
    let mut missing = peers.unowned;
    let mut answered = 1;
    let mut lists = vec![std::mem::take(&mut list.leads)];
    while let Some(joined) = asks.join_next().await {
        let Ok((p, got)) = joined else { continue };
        let answer = got.map_err(|e| e.to_string()).and_then(|(code, body)| {
            if code != StatusCode::OK {
                return Err(format!("answered {code}"));
            }
            serde_json::from_slice::<CallList>(&body).map_err(|e| e.to_string())
        });
        match answer {
            Ok(other) => {
                list.at = list.at.max(other.at);
                lists.push(other.leads);
                answered += 1;
            }
            Err(e) => {
                tracing::warn!(instance = %p.instance_id, error = %e, "a peer's call list is missing");
                missing.extend(&p.partitions);
            }
        }
    }
    list.leads = crate::engine::calllist::merge(&query, lists);
    missing.sort_unstable();
    let mut body = match serde_json::to_value(&list) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "call list not serialisable");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
    };
    body["instances"] = answered.into();
    body["complete"] = missing.is_empty().into();
    body["missing_partitions"] = missing.into();
    json(StatusCode::OK, format!("{body}\n"))
}

fn query_error(e: &QueryError) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        format!(
            "{}\n",
            serde_json::json!({"error": e.to_string(), "parameter": e.param})
        ),
    )
}

async fn lead(
    _: Authorized,
    State(s): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    uri: Uri,
) -> Response {
    let id = match id {
        Ok(Path(id)) if !id.is_empty() => id,
        _ => return bad_lead_id(Authorized).await,
    };
    // `?at=<RFC 3339>`: the scores decayed to that instant.
    let raw = uri.query().unwrap_or("");
    let mut at = None;
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        let t = (k == "at")
            .then(|| crate::time::parse_rfc3339(&v).ok())
            .flatten();
        match t {
            Some(t) => at = Some(t),
            None => {
                return query_error(&QueryError {
                    param: if k == "at" { "at" } else { "query" },
                    problem: format!("{k}={v:?}: the only parameter is `at`, an RFC 3339 time"),
                })
            }
        }
    }
    // A forwarded request is answered from this instance's partitions.
    let route = if headers.contains_key(peer::FORWARDED) {
        Route::Local
    } else {
        s.status.route(&id)
    };
    if let Route::Remote(p) = &route {
        let mut path = format!("/leads/{}", peer::path_segment(&id));
        if !raw.is_empty() {
            path = format!("{path}?{raw}");
        }
        let auth = headers.get(header::AUTHORIZATION);
        return match peer::get(&p.url, &path, auth, s.request_timeout.mul_f64(0.8)).await {
            Ok((code, body)) => (
                code,
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                body,
            )
                .into_response(),
            Err(e) => {
                tracing::warn!(instance = %p.instance_id, error = %e, "forwarding a lead query");
                json(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "{}\n",
                        serde_json::json!({
                            "error": format!("the instance that owns the lead did not answer: {e}"),
                            "instance": p.instance_id,
                        })
                    ),
                )
            }
        };
    }
    let status = Arc::clone(&s.status);
    let look = move || match at {
        Some(at) => status.lead_at(&id, at),
        None => status.lead(&id),
    };
    match blocking(s.request_timeout, look).await {
        Ok(Some(body)) => json(StatusCode::OK, body),
        Ok(None) => match route {
            Route::Unowned { partition } => json(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{}\n",
                    serde_json::json!({
                        "error": "the lead's partition is moving between instances; ask again",
                        "partition": partition,
                    })
                ),
            ),
            _ => json(
                StatusCode::NOT_FOUND,
                "{\"error\":\"lead not known\"}\n".into(),
            ),
        },
        Err(r) => r,
    }
}

async fn bad_lead_id(_: Authorized) -> Response {
    text(StatusCode::BAD_REQUEST, "bad lead id\n")
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_itself_only() {
        let t = Token::new("0123456789abcdef");
        assert!(t.matches(b"0123456789abcdef"));
        for wrong in [
            &b""[..],
            b"0123456789abcdeF",
            b"0123456789abcde",
            b"0123456789abcdef0",
        ] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
        assert_eq!(bearer(b"Bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bear"), None);
        assert!(!format!("{t:?}").contains("0123"));
    }

    /// A comparison that stopped at the first difference would answer a
    /// guess wrong in its first byte far sooner than one wrong in its last.
    #[test]
    fn a_wrong_token_is_refused_in_the_same_time_wherever_it_differs() {
        let secret = "s".repeat(4096);
        let t = Token::new(&secret);
        let mut early = secret.clone().into_bytes();
        early[0] = b'x';
        let mut late = secret.into_bytes();
        *late.last_mut().unwrap() = b'x';
        let once = |guess: &[u8]| {
            let start = std::time::Instant::now();
            for _ in 0..200 {
                assert!(!t.matches(std::hint::black_box(guess)));
            }
            start.elapsed()
        };
        // The two guesses in turns, the fastest of many rounds each: a
        // loaded machine slows some rounds, not the comparison. One that
        // stops at the first difference is a thousand times faster on the
        // early guess (4096 bytes); a factor of 3 either way is noise.
        let (mut e, mut l) = (std::time::Duration::MAX, std::time::Duration::MAX);
        for _ in 0..21 {
            e = e.min(once(&early));
            l = l.min(once(&late));
        }
        let ratio = e.as_secs_f64() / l.as_secs_f64();
        assert!(
            (0.33..3.0).contains(&ratio),
            "first byte wrong {e:?}, last byte wrong {l:?}"
        );
    }
}
