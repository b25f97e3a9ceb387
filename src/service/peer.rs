//! Asking another instance: a lead query forwarded to the instance that owns
//! the lead's partition, or the call list gathered from every owner.
//!
//! One HTTP/1 request per connection over hyper's client connection (the
//! servers answer with `Connection: close` anyway), within a deadline. A
//! forwarded request carries [`FORWARDED`], and an instance answers such a
//! request from its own partitions only, so a registry that is briefly out
//! of date (during a rebalance) cannot make two instances forward a request
//! back and forth.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

/// The header that marks a request forwarded by another instance.
pub const FORWARDED: &str = "x-leadscore-forwarded";

/// Answers larger than this are refused (a call list is at most a few
/// hundred entries).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Why a peer did not answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0:?} is not an http:// URL with a host")]
    Url(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the answer is too large or broken: {0}")]
    Body(String),
}

/// `GET <base><path_and_query>` with `authorization` passed on; the status
/// and body of the answer.
pub async fn get(
    base: &str,
    path_and_query: &str,
    authorization: Option<&HeaderValue>,
    deadline: Duration,
) -> Result<(StatusCode, Bytes), PeerError> {
    tokio::time::timeout(deadline, get_inner(base, path_and_query, authorization))
        .await
        .map_err(|_| PeerError::Timeout(deadline))?
}

async fn get_inner(
    base: &str,
    path_and_query: &str,
    authorization: Option<&HeaderValue>,
) -> Result<(StatusCode, Bytes), PeerError> {
    let authority = base
        .strip_prefix("http://")
        .map(|r| r.split('/').next().unwrap_or(""))
        .filter(|a| !a.is_empty())
        .ok_or_else(|| PeerError::Url(base.to_string()))?;
    let addr = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|source| PeerError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let mut req = Request::get(path_and_query)
        .header(header::HOST, authority)
        .header(FORWARDED, "1");
    if let Some(a) = authorization {
        req = req.header(header::AUTHORIZATION, a);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| PeerError::Url(format!("{base}{path_and_query}: {e}")))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| PeerError::Body(e.to_string()))?
        .to_bytes();
    conn.abort();
    Ok((status, body))
}

/// A lead id as one path segment.
pub fn path_segment(id: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    // Unreserved characters (RFC 3986) stay as they are.
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(id, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lead_id_is_one_path_segment() {
        assert_eq!(path_segment("lead-1.a_b~"), "lead-1.a_b~");
        assert_eq!(path_segment("a/b c?d"), "a%2Fb%20c%3Fd");
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
