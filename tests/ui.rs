//! The call-list page (`/ui`) in headless Chromium, against the service on
//! a real Kafka broker: it shows nothing until given the token, then the
//! leads in call order with the overdue ones highlighted, and a lead's
//! breakdown when its row is clicked.
//!
//! Chromium is driven through chromedriver's W3C WebDriver API (JSON over
//! HTTP, with ureq): real clicks and key presses, waiting on what the page
//! renders. A WebDriver crate would bring an async HTTP client and TLS to
//! build for a dozen commands; `--dump-dom` cannot click.

mod broker;
mod helpers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use broker::{produce, tools, Broker};
use helpers::*;
use leadscore::config::Config;
use leadscore::service::{self, Shutdown};
use serde_json::{json, Value};

const TOKEN: &str = "ui-test-token-5d1c0f9e";
const PARTITIONS: i32 = 2;

/// One HTTP exchange: the status code and the body (any status).
fn http(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    try_http(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// `headers`: `Name: value` lines, each ended by CRLF.
fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Result<(u16, String), ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for line in headers.split("\r\n").filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(':').expect("a `Name: value` header");
        req = req.header(k.trim(), v.trim());
    }
    let mut resp = if body.is_empty() {
        agent.run(req.body(()).expect("a request"))?
    } else {
        let req = req.header("content-type", "application/json");
        agent.run(req.body(body.to_string()).expect("a request"))?
    };
    let code = resp.status().as_u16();
    Ok((code, resp.body_mut().read_to_string()?))
}

/// A chromedriver process and one browser session in it.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: PathBuf,
}

impl Browser {
    fn start() -> Browser {
        let chromium = tools::program("chromium");
        let chromedriver = tools::program("chromedriver");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // Killed with the test if it fails before the session exists.
        struct Guard(Option<Child>);
        impl Drop for Guard {
            fn drop(&mut self) {
                if let Some(c) = &mut self.0 {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        let mut guard = Guard(Some(driver));
        wait("chromedriver to listen", Duration::from_secs(30), || {
            matches!(try_http(addr, "GET", "/status", "", ""), Ok((200, _)))
        });
        let profile = std::env::temp_dir().join(format!("leadscore-ui-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        // This machine's network may be closed: without these, a fresh
        // profile reaches out (sync, updates, QUIC) and stalls.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--window-size=1400,900",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args}
        }}});
        let (code, body) = http(addr, "POST", "/session", "", &caps.to_string());
        assert_eq!(code, 200, "new session: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let session = v["value"]["sessionId"].as_str().unwrap().to_string();
        Browser {
            driver: guard.0.take().expect("the driver"),
            addr,
            session,
            profile,
        }
    }

    /// A WebDriver command on the session; its `value`.
    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let (code, text) = http(
            self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            "",
            &body.to_string(),
        );
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(code, 200, "{method} {path}: {text}");
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body) in the page; its return value.
    fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }

    fn element(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            json!({"using": "css selector", "value": css}),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    fn click(&self, css: &str) {
        let e = self.element(css);
        self.cmd("POST", &format!("/element/{e}/click"), json!({}));
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.element(css);
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            json!({ "text": text }),
        );
    }

    /// Polls `script` until it returns something other than null or false.
    fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.js(script);
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            assert!(Instant::now() < deadline, "waited 30 s for {what}");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            "",
            "",
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn wait(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// The rows of the call list: lead id, row classes, follow-up cell.
const ROWS: &str = "return [...document.querySelectorAll('#leads tbody tr')]\
    .map(tr => [tr.dataset.leadId, tr.className, tr.querySelector('.follow-up').textContent]);";

#[test]
fn the_call_list_page_shows_the_leads_in_order_after_the_token() {
    let broker = Broker::shared();
    let name = "ui";
    let (input, status, dlq) = (
        format!("{name}-events"),
        format!("{name}-status"),
        format!("{name}-dlq"),
    );
    broker.create_topic(&input, PARTITIONS, false);
    broker.create_topic(&status, PARTITIONS, false);
    broker.create_topic(&dlq, 1, false);

    // The scenario of tests/calllist.rs (hand-computed there): at t0 + 2 d,
    // B (83.4, hot MQL, due t0 + 24 h) and C (54.1, SQL, due t0 + 25 h) are
    // overdue, A (69.1, warm MQL, due Thursday 14:00) is not; D is a lead.
    let t0 = t0();
    let mut n = 0;
    let mut e = |lead: &str, ty: &str, at: i64, extra: Value| {
        n += 1;
        let v = ev(&format!("ui-{n}"), lead, ty, at, extra);
        (
            None,
            lead.as_bytes().to_vec(),
            serde_json::to_vec(&v).unwrap(),
        )
    };
    let demo = json!({});
    let events = vec![
        e("A", "profile_updated", t0, json!({ "profile": fit50() })),
        e("A", "demo_requested", t0, demo.clone()),
        e("B", "demo_requested", t0, demo.clone()),
        e(
            "B",
            "webinar_attended",
            t0,
            json!({"attributes": {"webinar": "w-7"}}),
        ),
        e("B", "profile_updated", t0, json!({ "profile": fit50() })),
        e("C", "demo_requested", t0, demo),
        e("C", "profile_updated", t0, json!({ "profile": fit35() })),
        e(
            "C",
            "qualification_updated",
            t0 + hours(1),
            json!({"criteria": {"budget": true, "authority": true, "need": true, "timing": true}}),
        ),
        e("D", "profile_updated", t0, json!({ "profile": fit20() })),
        e(
            "D",
            "page_view",
            t0 + days(2),
            json!({"attributes": {"url": "/blog"}}),
        ),
    ];
    produce(&broker.producer(), &input, &events);

    let text = format!(
        r#"
[kafka]
brokers = "{}"
group_id = "{name}"
instance_id = "{name}-0"
input_topics = ["{input}"]
status_topic = "{status}"
dead_letter_topic = "{dlq}"
idle_advance_ms = 0

[http]
listen = "127.0.0.1:0"
token = "{TOKEN}"
"#,
        broker.bootstrap
    );
    let cfg = Config::from_toml_with_env(&text, std::iter::empty()).expect("valid config");
    let shutdown = Shutdown::new();
    let (tx, rx) = mpsc::channel();
    let stop = shutdown.clone();
    let service = thread::spawn(move || service::run(cfg, stop, |r| tx.send(r.http_addr).unwrap()));
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("service started");
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    wait(
        "the service to fold the scenario",
        Duration::from_secs(120),
        || {
            let (code, body) = http(addr, "GET", "/leads", &auth, "");
            code == 200
                && serde_json::from_str::<Value>(&body).unwrap()["leads"]
                    .as_array()
                    .unwrap()
                    .len()
                    == 3
        },
    );
    assert_eq!(http(addr, "GET", "/leads", "", "").0, 401);

    let browser = Browser::start();
    let page = format!("http://{addr}/ui");
    browser.go(&page);
    // No token yet: the form, and no lead data in the page.
    browser.wait_for(
        "the token form",
        "return document.body.dataset.state === 'login';",
    );
    assert_eq!(browser.js(ROWS), json!([]));
    assert_eq!(
        browser.js("return document.getElementById('app').hidden;"),
        json!(true)
    );

    // A wrong token is refused and forgotten.
    browser.type_into("#token", "not-the-token-at-all");
    browser.click("#login button[type=submit]");
    browser.wait_for(
        "the refusal",
        "return !document.getElementById('login-error').hidden \
         && document.getElementById('login-error').textContent;",
    );
    assert_eq!(browser.js(ROWS), json!([]));
    assert_eq!(
        browser.js("return sessionStorage.getItem('leadscore.token');"),
        Value::Null
    );

    browser.type_into("#token", TOKEN);
    browser.click("#login button[type=submit]");
    browser.wait_for(
        "the rows",
        "return document.querySelectorAll('#leads tbody tr').length === 3;",
    );
    let rows = browser.js(ROWS);
    assert_eq!(
        rows,
        json!([
            ["B", "overdue", "overdue by 1d 0h"],
            ["A", "", "due in 1d 0h"],
            ["C", "overdue", "overdue by 23h 0m"],
        ]),
        "leads by score, the overdue ones highlighted"
    );
    // The highlight is visible, not only a class name.
    let colors = browser.js("return ['B', 'A'].map(id => getComputedStyle(\
           document.querySelector(`#leads tr[data-lead-id=\"${id}\"]`)).backgroundColor);");
    assert_ne!(
        colors[0], colors[1],
        "an overdue row looks different: {colors}"
    );
    let cells = browser.js(
        "return [...document.querySelector('#leads tr[data-lead-id=\"B\"]').cells].map(c => c.textContent);",
    );
    assert_eq!(
        cells,
        json!([
            "B",
            "mql",
            "hot",
            "83.4",
            "new_business",
            "overdue by 1d 0h"
        ])
    );

    // A click shows the lead's breakdown: rules matched, points, decay.
    browser.click("#leads tr[data-lead-id=\"A\"]");
    browser.wait_for(
        "A's breakdown",
        "const b = document.getElementById('breakdown'); return !b.hidden && b.dataset.leadId === 'A';",
    );
    let fit = browser.js(
        "return [...document.querySelectorAll('#b-fit tr.fit-rule')].map(tr => [tr.cells[0].textContent, tr.cells[3].textContent]);",
    );
    // fit50: 300 employees (+15), food (+15), director of operations (+20).
    assert_eq!(fit.as_array().unwrap().len(), 3, "{fit}");
    let points: f64 = fit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(points, 50.0, "{fit}");
    let engagement = browser.js(
        "return [...document.querySelectorAll('#b-engagement tr.engagement-rule')].map(tr => [tr.cells[1].textContent, tr.cells[3].textContent]);",
    );
    // The demo request's 20 points, two days into a 30-day half-life:
    // 20 × 2^(−2/30) = 19.10.
    assert_eq!(engagement, json!([["demo_requested", "19.10"]]));
    let decay = browser.js("return document.getElementById('b-decay').textContent;");
    assert!(decay.as_str().unwrap().contains("30 days"), "{decay}");
    assert!(browser
        .js("return document.getElementById('b-summary').textContent;")
        .as_str()
        .unwrap()
        .contains("69.10 = fit 50.00 + engagement 19.10"));

    // The page refreshes itself: a new lead appears without a reload.
    let more = vec![
        e(
            "E",
            "profile_updated",
            t0 + days(2),
            json!({ "profile": fit50() }),
        ),
        e("E", "demo_requested", t0 + days(2), json!({})),
        e(
            "E",
            "webinar_attended",
            t0 + days(2),
            json!({"attributes": {"webinar": "w-8"}}),
        ),
    ];
    produce(&broker.producer(), &input, &more);
    browser.wait_for(
        "the refreshed list",
        "return document.querySelectorAll('#leads tbody tr').length === 4;",
    );
    // E: 50 + 20 + 15 = 85 at t0 + 2 d, undecayed: above B's 83.4.
    assert_eq!(browser.js(ROWS)[0][0], "E");

    // The URL `leadscore demo` prints: the token in the fragment, which the
    // page keeps for the session and takes out of the address bar.
    browser.js("sessionStorage.clear(); return null;");
    browser.go("about:blank");
    browser.go(&format!("{page}#token={TOKEN}"));
    browser.wait_for(
        "the rows",
        "return document.querySelectorAll('#leads tbody tr').length === 4;",
    );
    assert_eq!(browser.js("return location.hash;"), json!(""));
    assert_eq!(
        browser.js("return sessionStorage.getItem('leadscore.token');"),
        json!(TOKEN)
    );

    drop(browser);
    shutdown.trigger();
    service
        .join()
        .expect("service thread")
        .expect("service ran");
}
