//! The HTTP endpoints, served by `service::http::Server` over a `Status` of
//! the test's own: routes, methods, HEAD, percent-decoded lead ids, the
//! limits (connections, slow and oversized request heads), and the token in
//! front of the lead data. No broker; all traffic on 127.0.0.1.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leadscore::engine::{CallList, CallListEntry, CallListQuery, QueryError};
use leadscore::service::http::{LeadAccess, Limits, Server, Status};
use leadscore::service::telemetry;
use leadscore::Stage;

#[derive(Default)]
struct Fake {
    unhealthy: AtomicBool,
    ready: AtomicBool,
    leads: HashMap<String, String>,
    asked: Mutex<Vec<String>>,
    /// The call-list queries received.
    lists: Mutex<Vec<CallListQuery>>,
    /// How long a lead lookup blocks (a processor holding its lock).
    lookup: Duration,
}

impl Status for Fake {
    fn healthy(&self) -> bool {
        !self.unhealthy.load(Ordering::Relaxed)
    }
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    fn lead(&self, id: &str) -> Option<String> {
        self.asked.lock().unwrap().push(id.to_string());
        std::thread::sleep(self.lookup);
        self.leads.get(id).cloned()
    }
    fn call_list(&self, q: &CallListQuery) -> Result<CallList, QueryError> {
        self.lists.lock().unwrap().push(q.clone());
        if q.bands.iter().any(|b| b == "tepid") {
            return Err(QueryError {
                param: "band",
                problem: "unknown band \"tepid\"".into(),
            });
        }
        Ok(CallList {
            at: Some(1_000_000),
            model_version: "m-1".into(),
            half_life_seconds: None,
            bands: vec!["cold".into(), "hot".into()],
            leads: vec![CallListEntry {
                lead_id: "L-1".into(),
                stage: Stage::Sql,
                band: "hot".into(),
                total: 80.0,
                fit: 30.0,
                engagement: 50.0,
                route: Some("new_business".into()),
                follow_up_by: Some(2_000_000),
                overdue: false,
                stage_entered: Some(0),
                as_of: 1_000_000,
                components: Vec::new(),
            }],
        })
    }
}

fn start(status: Arc<Fake>, limits: Limits) -> Server {
    Server::start_with("127.0.0.1:0", telemetry::install(), status, limits)
        .expect("bind 127.0.0.1:0")
}

struct Reply {
    code: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn parse(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        code,
        head,
        body: raw[end + 4..].to_vec(),
    }
}

/// Sends `request` and reads the reply to the end of the stream: the server
/// closes every connection after its response.
fn send(addr: SocketAddr, request: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .expect("the server answers and closes");
    parse(&raw)
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"))
}

/// GET with an `Authorization` header.
fn get_as(addr: SocketAddr, path: &str, authorization: &str) -> Reply {
    send(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {authorization}\r\n\r\n"),
    )
}

const TOKEN: &str = "7f3c9a41d2e8b6055a1c";

fn start_with_token(status: Arc<Fake>) -> Server {
    Server::start_with_access(
        "127.0.0.1:0",
        telemetry::install(),
        status,
        Limits::default(),
        LeadAccess::token(TOKEN),
    )
    .expect("bind 127.0.0.1:0")
}

/// True when the peer closed the connection (end of stream or reset);
/// false when it is open with nothing to read.
fn closed(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let closed = match s.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn endpoints_answer_with_status_and_content_type() {
    let fake = Arc::new(Fake::default());
    let server = start(Arc::clone(&fake), Limits::default());

    let r = get(server.addr, "/metrics");
    assert_eq!(r.code, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    let body = String::from_utf8(r.body).unwrap();
    assert!(body.contains("leadscore_ready 0"), "{body}");

    let r = get(server.addr, "/healthz");
    assert_eq!((r.code, &r.body[..]), (200, &b"ok\n"[..]));
    assert_eq!(r.header("connection"), Some("close"));
    fake.unhealthy.store(true, Ordering::Relaxed);
    assert_eq!(get(server.addr, "/healthz").code, 503);

    assert_eq!(get(server.addr, "/readyz").code, 503);
    fake.ready.store(true, Ordering::Relaxed);
    assert_eq!(get(server.addr, "/readyz").code, 200);

    assert_eq!(get(server.addr, "/nowhere").code, 404);
    // A query string does not change the route.
    assert_eq!(get(server.addr, "/readyz?verbose=1").code, 200);
}

#[test]
fn head_has_the_headers_but_no_body() {
    let server = start(Arc::new(Fake::default()), Limits::default());
    let get = get(server.addr, "/healthz");
    let head = send(server.addr, "HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(head.code, 200);
    assert_eq!(head.header("content-length"), Some("3"));
    assert_eq!(head.header("content-type"), get.header("content-type"));
    // The connection closes after the response: whatever followed the head
    // would have been read.
    assert!(head.body.is_empty(), "HEAD sent a body: {:?}", head.body);
    assert_eq!(get.body, b"ok\n");
}

#[test]
fn lead_ids_are_percent_decoded_and_unknown_leads_are_404() {
    let fake = Arc::new(Fake {
        leads: HashMap::from([("a/b c".to_string(), "{\"lead_id\":\"a/b c\"}".to_string())]),
        ..Fake::default()
    });
    let server = start(Arc::clone(&fake), Limits::default());

    let r = get(server.addr, "/leads/a%2Fb%20c");
    assert_eq!(r.code, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, b"{\"lead_id\":\"a/b c\"}");

    let r = get(server.addr, "/leads/L-404");
    assert_eq!(r.code, 404);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let err: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert!(err["error"].is_string(), "{err}");

    assert_eq!(*fake.asked.lock().unwrap(), ["a/b c", "L-404"]);

    // Empty and undecodable (not UTF-8) ids never reach the status.
    assert_eq!(get(server.addr, "/leads/").code, 400);
    assert_eq!(get(server.addr, "/leads/%FF%FE").code, 400);
    assert_eq!(fake.asked.lock().unwrap().len(), 2);
}

#[test]
fn other_methods_are_405() {
    let fake = Arc::new(Fake::default());
    let server = start(Arc::clone(&fake), Limits::default());
    for (method, path) in [
        ("POST", "/healthz"),
        ("PUT", "/metrics"),
        ("DELETE", "/leads/L-1"),
    ] {
        let r = send(
            server.addr,
            &format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"),
        );
        assert_eq!(r.code, 405, "{method} {path}");
        assert!(r.header("allow").is_some_and(|a| a.contains("GET")));
    }
    assert!(fake.asked.lock().unwrap().is_empty());
}

#[test]
fn an_oversized_request_head_gets_431_and_the_connection_is_closed() {
    let server = start(Arc::new(Fake::default()), Limits::default());
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(64 * 1024));
    // The server may stop reading part way; what it answers is what counts.
    let _ = s.write_all(line.as_bytes());
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let eof = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(e) => panic!("no answer, no close: {e}"),
        }
    };
    assert_eq!(parse(&raw).code, 431);
    assert!(eof, "the connection is closed");
    // The server goes on serving.
    assert_eq!(get(server.addr, "/healthz").code, 200);
}

#[test]
fn a_lookup_that_blocks_times_out_without_stalling_the_other_endpoints() {
    let fake = Arc::new(Fake {
        lookup: Duration::from_secs(3),
        ..Fake::default()
    });
    let limits = Limits {
        request_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let server = start(Arc::clone(&fake), limits);
    let addr = server.addr;
    // More blocked lookups than the blocking pool has threads.
    let lookups: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let t = Instant::now();
                (get(addr, &format!("/leads/L-{i}")), t.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    assert_eq!(get(addr, "/healthz").code, 200);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    for l in lookups {
        let (reply, took) = l.join().unwrap();
        assert_eq!(reply.code, 503);
        assert!(String::from_utf8_lossy(&reply.body).contains("timed out"));
        assert!(took < Duration::from_secs(2), "answered after {took:?}");
    }
}

#[test]
fn a_thousand_slow_connections_do_not_starve_the_endpoints() {
    const SLOW: usize = 1000;
    // Both ends of every connection are in this process.
    rlimit::increase_nofile_limit(4 * SLOW as u64).unwrap();
    let nofile = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap().0;
    assert!(nofile >= 2 * SLOW as u64 + 100, "open-file limit {nofile}");
    let server = start(Arc::new(Fake::default()), Limits::default());

    let head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: 1234567";
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    let started = Instant::now();
    let mut asked = 0;
    let mut worst = Duration::ZERO;
    // One header byte a second on every slow connection, for 7 seconds
    // (within the 10 s header read timeout); /healthz asked in between.
    for byte in &head[..7] {
        for s in &mut slow {
            s.write_all(&[*byte]).unwrap();
        }
        let next = Instant::now() + Duration::from_secs(1);
        while Instant::now() < next {
            let t = Instant::now();
            let r = get(server.addr, "/healthz");
            let took = t.elapsed();
            assert_eq!(r.code, 200);
            assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
            worst = worst.max(took);
            asked += 1;
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(asked >= 50, "asked /healthz only {asked} times");
    for (i, s) in slow.iter_mut().enumerate() {
        assert!(!closed(s), "slow connection {i} was closed");
    }
    // Each slow connection was being served: its request completes.
    for s in &mut slow {
        s.write_all(&head[7..]).unwrap();
        s.write_all(b"\r\n\r\n").unwrap();
    }
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        assert_eq!(parse(&raw).code, 200);
    }
    eprintln!(
        "{SLOW} slow connections for {:?}: /healthz answered {asked} times, slowest {worst:?}",
        started.elapsed()
    );
}

#[test]
fn a_request_head_too_slow_is_cut_off() {
    let limits = Limits {
        header_read_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let server = start(Arc::new(Fake::default()), limits);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = Instant::now();
    let mut raw = Vec::new();
    // Closed (with or without a 408) after the timeout, not before.
    let _ = s.read_to_end(&mut raw);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    assert!(raw.is_empty() || parse(&raw).code == 408, "{raw:?}");
}

#[test]
fn beyond_the_connection_limit_new_connections_wait_for_a_free_slot() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let server = start(Arc::new(Fake::default()), limits);
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // Both are accepted (they hold the slots) before the third connects.
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(server.addr).unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 256];
    let waited = third.read(&mut buf);
    assert!(
        matches!(&waited, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "the third connection was served over the limit: {waited:?}"
    );
    // A slot frees: the waiting connection is served.
    held[0].write_all(b"GET /readyz HTTP/1.1\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    held[0].read_to_end(&mut raw).unwrap();
    assert_eq!(parse(&raw).code, 503);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut raw = Vec::new();
    third.read_to_end(&mut raw).unwrap();
    assert_eq!(parse(&raw).code, 200);
    assert!(!closed(&mut held[1]));
}

#[test]
fn dropping_the_server_stops_it_promptly() {
    let server = start(Arc::new(Fake::default()), Limits::default());
    let addr = server.addr;
    assert_eq!(get(addr, "/healthz").code, 200);
    // An idle connection and one part way through its head stay open.
    let mut idle = TcpStream::connect(addr).unwrap();
    let mut partial = TcpStream::connect(addr).unwrap();
    partial.write_all(b"GET /hea").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    drop(server);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "drop took {took:?}");
    assert!(TcpStream::connect(addr).is_err(), "still listening");
    // Both are closed, not left hanging.
    for s in [&mut idle, &mut partial] {
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = Vec::new();
        let read = s.read_to_end(&mut buf);
        assert!(
            !matches!(&read, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
            "a connection outlived the server: {read:?}"
        );
    }
    eprintln!("drop took {took:?}");
}

fn lead_fake() -> Arc<Fake> {
    Arc::new(Fake {
        leads: HashMap::from([("L-1".to_string(), "{\"lead_id\":\"L-1\"}".to_string())]),
        ..Fake::default()
    })
}

#[test]
fn with_a_token_lead_endpoints_answer_401_without_it_and_200_with_it() {
    let fake = lead_fake();
    let server = start_with_token(Arc::clone(&fake));
    let addr = server.addr;
    for path in [
        "/leads",
        "/leads?stage=sql",
        "/leads/L-1",
        "/leads/",
        "/leads/L-404",
    ] {
        let r = get(addr, path);
        assert_eq!(r.code, 401, "{path} without a token");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"leadscore\""),
            "{path}"
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(body["error"].is_string(), "{body}");
        for wrong in [
            "Bearer 7f3c9a41d2e8b6055a1d".to_string(), // the last character differs
            "Bearer 7f3c9a41d2e8b6055a1".to_string(),  // a prefix
            format!("Bearer {TOKEN}x"),
            "Bearer ".to_string(),
            format!("Basic {TOKEN}"),
            TOKEN.to_string(),
        ] {
            let r = get_as(addr, path, &wrong);
            assert_eq!(r.code, 401, "{path} with {wrong:?}");
            let challenge = r.header("www-authenticate").unwrap();
            assert!(
                challenge.starts_with("Bearer realm=\"leadscore\""),
                "{challenge}"
            );
        }
    }
    // Nothing of the lead data was looked up for a refused request.
    assert!(fake.asked.lock().unwrap().is_empty());
    assert!(fake.lists.lock().unwrap().is_empty());

    let r = get_as(addr, "/leads/L-1", &format!("Bearer {TOKEN}"));
    assert_eq!(r.code, 200);
    assert_eq!(r.body, b"{\"lead_id\":\"L-1\"}");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // The scheme is case-insensitive (RFC 7235).
    let r = get_as(addr, "/leads?stage=sql", &format!("bearer {TOKEN}"));
    assert_eq!(r.code, 200);
    let list: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(list["leads"][0]["lead_id"], "L-1");
    assert_eq!(list["leads"][0]["follow_up_by"], "1970-01-01T00:00:02Z");
    assert_eq!(list["at"], "1970-01-01T00:00:01Z");
    assert_eq!(*fake.asked.lock().unwrap(), ["L-1"]);
    assert_eq!(fake.lists.lock().unwrap()[0].stages, [Stage::Sql]);

    // The open endpoints stay open.
    assert_eq!(get(addr, "/metrics").code, 200);
    assert_eq!(get(addr, "/healthz").code, 200);
    assert_eq!(get(addr, "/readyz").code, 503);
    assert_eq!(get(addr, "/ui").code, 200);
    assert_eq!(get(addr, "/ui/app.js").code, 200);
}

#[test]
fn without_a_token_lead_endpoints_are_refused_off_loopback() {
    let err = match Server::start_with_access(
        "0.0.0.0:0",
        telemetry::install(),
        Arc::new(Fake::default()),
        Limits::default(),
        LeadAccess::loopback(),
    ) {
        Ok(_) => panic!("lead endpoints without a token started on 0.0.0.0"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("`http.token`") && err.contains("`token`"),
        "{err}"
    );

    // With a token, or with the lead endpoints off, it starts.
    let with_token = Server::start_with_access(
        "0.0.0.0:0",
        telemetry::install(),
        Arc::new(Fake::default()),
        Limits::default(),
        LeadAccess::token(TOKEN),
    )
    .expect("with a token");
    drop(with_token);
    let fake = lead_fake();
    let off = Server::start_with_access(
        "0.0.0.0:0",
        telemetry::install(),
        Arc::clone(&fake) as Arc<dyn Status>,
        Limits::default(),
        LeadAccess {
            enabled: false,
            token: None,
        },
    )
    .expect("with the lead endpoints off");
    let addr = SocketAddr::from(([127, 0, 0, 1], off.addr.port()));
    for path in ["/leads", "/leads/L-1", "/ui", "/ui/app.js"] {
        assert_eq!(get(addr, path).code, 404, "{path}");
    }
    assert_eq!(get(addr, "/healthz").code, 200);
    assert_eq!(get(addr, "/metrics").code, 200);
    assert!(fake.asked.lock().unwrap().is_empty());
}

#[test]
fn on_loopback_without_a_token_lead_endpoints_are_served() {
    let fake = lead_fake();
    let server = start(Arc::clone(&fake), Limits::default());
    assert_eq!(get(server.addr, "/leads/L-1").code, 200);
    assert_eq!(get(server.addr, "/leads").code, 200);
}

#[test]
fn call_list_queries_are_parsed_and_bad_ones_are_400_naming_the_parameter() {
    let fake = lead_fake();
    let server = start(Arc::clone(&fake), Limits::default());
    let r = get(
        server.addr,
        "/leads?stage=mql%2Csql&band=hot&sla=overdue&order=follow_up_by&limit=7",
    );
    assert_eq!(r.code, 200);
    let q = fake.lists.lock().unwrap().pop().unwrap();
    assert_eq!(q.stages, [Stage::Mql, Stage::Sql]);
    assert_eq!(q.bands, ["hot"]);
    assert!(q.overdue_only);
    assert_eq!(q.limit, 7);
    for (path, param) in [
        ("/leads?stage=lead", "stage"),
        ("/leads?limit=0", "limit"),
        ("/leads?band=tepid", "band"),
        ("/leads?email=x", "query"),
    ] {
        let r = get(server.addr, path);
        assert_eq!(r.code, 400, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["parameter"], param, "{path}: {body}");
    }
    assert_eq!(get(server.addr, "/leads?stage=%FF").code, 400);
    // A lead's breakdown at a time: `at`, in RFC 3339.
    assert_eq!(
        get(server.addr, "/leads/L-1?at=2026-03-04T14%3A00%3A00Z").code,
        200
    );
    for bad in ["/leads/L-1?at=yesterday", "/leads/L-1?when=now"] {
        let r = get(server.addr, bad);
        assert_eq!(r.code, 400, "{bad}");
    }
}

#[test]
fn the_page_loads_nothing_from_elsewhere() {
    let server = start(Arc::new(Fake::default()), Limits::default());
    let r = get(server.addr, "/ui");
    assert_eq!(r.code, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = r.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let html = String::from_utf8(r.body).unwrap();
    // Every resource it names is one of its own.
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let url = &html[i + attr.len()..];
            assert!(
                url.starts_with("/ui/"),
                "{}",
                &url[..url.find('"').unwrap()]
            );
        }
    }
    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = get(server.addr, path);
        assert_eq!(r.code, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(kind));
        let body = String::from_utf8(r.body).unwrap();
        assert!(
            !body.contains("http://") && !body.contains("https://") && !body.contains("@import"),
            "{path}"
        );
    }
}
