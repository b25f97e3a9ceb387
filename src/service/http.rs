//! The HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `GET /leads/{id}`.
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
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{oneshot, Semaphore};

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

    /// Binds `listen` and serves in a background thread, within `limits`.
    pub fn start_with(
        listen: &str,
        metrics: PrometheusHandle,
        status: Arc<dyn Status>,
        limits: Limits,
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
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::Builder::new().name("http".into()).spawn(move || {
            runtime.block_on(serve(listener, metrics, status, limits, async {
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
}

/// The endpoints' routes. `get` routes answer HEAD too, without the body.
fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/leads/", get(bad_lead_id))
        .route("/leads/{id}", get(lead))
        .fallback(not_found)
        .with_state(state)
}

/// Serves the endpoints on `listener` until `shutdown` completes, then lets
/// open requests finish for up to a second. Must run on a runtime with IO
/// and time enabled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: PrometheusHandle,
    status: Arc<dyn Status>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let service = TowerToHyperService::new(router(AppState {
        metrics,
        status,
        request_timeout: limits.request_timeout,
    }));
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

fn json(code: StatusCode, body: String) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
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

async fn lead(State(s): State<AppState>, id: Result<Path<String>, PathRejection>) -> Response {
    let id = match id {
        Ok(Path(id)) if !id.is_empty() => id,
        _ => return bad_lead_id().await,
    };
    let status = Arc::clone(&s.status);
    match blocking(s.request_timeout, move || status.lead(&id)).await {
        Ok(Some(body)) => json(StatusCode::OK, body),
        Ok(None) => json(
            StatusCode::NOT_FOUND,
            "{\"error\":\"lead not known to this instance\"}\n".into(),
        ),
        Err(r) => r,
    }
}

async fn bad_lead_id() -> Response {
    text(StatusCode::BAD_REQUEST, "bad lead id\n")
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n")
}
