//! The HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `GET /leads/{id}`.
//!
//! A small HTTP/1.1 server on std threads: the endpoints are few, read-only
//! and cheap, so an async stack would cost more build time than it saves.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;

/// What the endpoints read from the running service.
pub trait Status: Send + Sync + 'static {
    /// Alive: the processing loop is turning.
    fn healthy(&self) -> bool;
    /// Ready: every assigned partition is restored.
    fn ready(&self) -> bool;
    /// The lead's breakdown as JSON, if this instance owns and knows it.
    fn lead(&self, id: &str) -> Option<String>;
}

pub struct Server {
    pub addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `listen` and serves in a background thread.
    pub fn start(
        listen: &str,
        metrics: PrometheusHandle,
        status: Arc<dyn Status>,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = thread::Builder::new().name("http".into()).spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let metrics = metrics.clone();
                        let status = Arc::clone(&status);
                        let _ = thread::Builder::new()
                            .name("http-conn".into())
                            .spawn(move || handle(stream, &metrics, &*status));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "http accept failed");
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
        tracing::info!(%addr, "http endpoints listening");
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(stream: &mut TcpStream, code: u16, content_type: &str, body: &str) {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Bad Request",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

/// Percent-decodes a path segment (lead ids may hold reserved characters).
fn decode_segment(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn handle(mut stream: TcpStream, metrics: &PrometheusHandle, status: &dyn Status) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Drain the headers; no endpoint takes a body.
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
        line.clear();
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "only GET\n");
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => respond(
            &mut stream,
            200,
            "text/plain; version=0.0.4",
            &metrics.render(),
        ),
        "/healthz" if status.healthy() => respond(&mut stream, 200, "text/plain", "ok\n"),
        "/healthz" => respond(&mut stream, 503, "text/plain", "processing loop stalled\n"),
        "/readyz" if status.ready() => respond(&mut stream, 200, "text/plain", "ready\n"),
        "/readyz" => respond(&mut stream, 503, "text/plain", "restoring state\n"),
        p if p.starts_with("/leads/") => match decode_segment(&p["/leads/".len()..]) {
            Some(id) if !id.is_empty() => match status.lead(&id) {
                Some(json) => respond(&mut stream, 200, "application/json", &json),
                None => respond(
                    &mut stream,
                    404,
                    "application/json",
                    "{\"error\":\"lead not known to this instance\"}\n",
                ),
            },
            _ => respond(&mut stream, 400, "text/plain", "bad lead id\n"),
        },
        _ => respond(&mut stream, 404, "text/plain", "not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::decode_segment;

    #[test]
    fn percent_decoding() {
        assert_eq!(decode_segment("L-1042").as_deref(), Some("L-1042"));
        assert_eq!(decode_segment("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(decode_segment("bad%zz"), None);
        assert_eq!(decode_segment("cut%2"), None);
    }
}
