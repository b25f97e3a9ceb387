//! `leadscore demo` on librdkafka's in-process mock cluster: it runs with
//! nothing installed, serves its endpoints and prints the changes it emits.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the demo's HTTP server");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let code = body
        .split_whitespace()
        .nth(1)
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    (code, body)
}

#[test]
fn demo_runs_serves_endpoints_and_emits_changes() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args([
            "demo",
            "--duration",
            "12",
            "--http",
            "127.0.0.1:0",
            "--rate",
            "300",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addr = None;
    let mut printed = Vec::new();
    let start = Instant::now();
    // The banner names the HTTP address.
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("metrics at http://") {
            addr = Some(rest.split('/').next().unwrap().to_string());
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60));
    }
    let addr = addr.expect("the demo prints its HTTP address");
    // While it runs: metrics, health and readiness.
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut ready = false;
    while Instant::now() < deadline && !ready {
        ready = get(&addr, "/readyz").0 == 200;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ready, "/readyz turns ready");
    assert_eq!(get(&addr, "/healthz").0, 200);
    std::thread::sleep(Duration::from_secs(3));
    let (code, metrics) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    for m in [
        "leadscore_events_total",
        "leadscore_changes_total",
        "leadscore_transactions_total",
    ] {
        assert!(metrics.contains(m), "/metrics exports {m}");
    }
    // The lead of the first printed change is served by /leads/{id}.
    let mut first = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let is_change = line.contains(" -> ");
        printed.push(line.clone());
        if is_change {
            first = Some(line.split_whitespace().nth(1).unwrap().to_string());
            break;
        }
    }
    let lead = first.expect("a change is printed");
    let (code, body) = get(&addr, &format!("/leads/{lead}"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&format!("\"lead_id\": \"{lead}\"")), "{body}");
    assert!(
        body.contains("\"fit\"") && body.contains("\"engagement\""),
        "a breakdown: {body}"
    );
    assert_eq!(get(&addr, "/leads/no-such-lead").0, 404);
    // The page's URL was printed, and it serves the page and its call list
    // (on loopback the demo needs no token).
    let page = printed
        .iter()
        .find_map(|l| l.strip_prefix("call list page: "))
        .expect("the demo prints the page's URL")
        .to_string();
    assert_eq!(page, format!("http://{addr}/ui"));
    let (code, html) = get(&addr, "/ui");
    assert_eq!(code, 200);
    assert!(html.contains("/ui/app.js"), "{html}");
    let (code, list) = get(&addr, "/leads");
    assert_eq!(code, 200, "{list}");
    assert!(list.contains("\"leads\":["), "{list}");
    for line in lines {
        printed.push(line.unwrap());
    }
    assert!(child.wait().unwrap().success(), "the demo exits 0");
    let changes: Vec<&String> = printed.iter().filter(|l| l.contains(" -> ")).collect();
    assert!(
        changes.len() >= 20,
        "the demo prints the changes it emits: {printed:?}"
    );
    assert!(
        printed.iter().any(|l| l.contains("dead letter: bad_json")),
        "bad messages are dead-lettered"
    );
    assert!(
        printed.iter().any(|l| l.starts_with("summary:")),
        "a summary at the end"
    );
}
