//! The service on a real Apache Kafka broker (started by the test itself):
//! end-to-end output equals `leadscore score`, in JSON and protobuf, SLA
//! breaches come once per untouched hand-off and never after a touch, and
//! bad input reaches the dead-letter topic with its reason.

mod broker;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use broker::{produce, read_all, Broker, Record};
use leadscore::codec::{encode_event_json, encode_event_proto, pb, Format};
use leadscore::config::Config;
use leadscore::gen::{GenConfig, Generator};
use leadscore::service::{self, Shutdown};
use leadscore::time::DAY;
use leadscore::Event;
use prost::Message as _;

const PARTITIONS: i32 = 4;

struct Topics {
    input: String,
    status: String,
    dlq: String,
}

fn topics(broker: &Broker, name: &str) -> Topics {
    let t = Topics {
        input: format!("{name}-events"),
        status: format!("{name}-status"),
        dlq: format!("{name}-dlq"),
    };
    broker.create_topic(&t.input, PARTITIONS, false);
    broker.create_topic(&t.status, PARTITIONS, false);
    broker.create_topic(&t.dlq, 1, false);
    t
}

fn config(broker: &Broker, t: &Topics, name: &str, format: Format, extra: &str) -> Config {
    let text = format!(
        r#"
[kafka]
brokers = "{}"
group_id = "{name}"
instance_id = "{name}-0"
input_topics = ["{}"]
status_topic = "{}"
dead_letter_topic = "{}"
input_format = "{format}"
output_format = "{format}"
idle_advance_ms = 0
{extra}

[http]
listen = "127.0.0.1:0"
"#,
        broker.bootstrap, t.input, t.status, t.dlq
    );
    Config::from_toml_with_env(&text, std::iter::empty()).expect("test config is valid")
}

/// Runs the service in a thread until `done` says the output is complete.
fn run_service(cfg: Config, done: impl Fn() -> bool) {
    let shutdown = Shutdown::new();
    let (tx, rx) = mpsc::channel();
    let s2 = shutdown.clone();
    let h = thread::spawn(move || service::run(cfg, s2, |r| tx.send(r.http_addr).unwrap()));
    rx.recv_timeout(Duration::from_secs(60))
        .expect("service started");
    broker::wait_until("the service's output", Duration::from_secs(120), &done);
    shutdown.trigger();
    h.join()
        .expect("service thread")
        .expect("service ran without error");
}

/// Runs the service until the status topic holds `n` records.
fn run_until_changes(b: &Broker, t: &Topics, cfg: Config, n: usize) {
    let bootstrap = b.bootstrap.clone();
    let status = t.status.clone();
    run_service(cfg, || {
        read_all(
            &bootstrap,
            &status,
            Duration::from_millis(300),
            Duration::from_secs(10),
        )
        .len()
            >= n
    });
}

/// Generated events with event time in arrival order (within the allowed
/// lateness of 0), then one sentinel per partition that moves every
/// partition's watermark to the same final time.
fn events(leads: u64, n: u64, seed: u64) -> Vec<(Option<i32>, Event<'static>)> {
    let mut v: Vec<(Option<i32>, Event<'static>)> = Generator::new(GenConfig {
        seed,
        leads,
        events: n,
        late_rate: 0.0,
        span: 120 * DAY,
        ..GenConfig::default()
    })
    .map(|e| (None, e))
    .collect();
    let end = v.iter().map(|(_, e)| e.occurred_at).max().unwrap() + DAY;
    for p in 0..PARTITIONS {
        let e = Event::new(format!("tick-{p}"), format!("tick-{p}"), "tick", end);
        v.push((Some(p), e));
    }
    v
}

fn encode(
    events: &[(Option<i32>, Event<'static>)],
    format: Format,
) -> Vec<(Option<i32>, Vec<u8>, Vec<u8>)> {
    events
        .iter()
        .map(|(p, e)| {
            let mut b = Vec::new();
            match format {
                Format::Json => encode_event_json(e, &mut b),
                Format::Protobuf => encode_event_proto(e, &mut b),
            }
            (*p, e.lead_id.as_bytes().to_vec(), b)
        })
        .collect()
}

/// `leadscore score` on the same events: changes grouped by lead, in sequence order.
fn score(events: &[(Option<i32>, Event<'static>)]) -> BTreeMap<String, Vec<serde_json::Value>> {
    // Tests run in parallel in this process: one file each.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("leadscore-e2e-{}-{n}.jsonl", std::process::id()));
    let mut body = Vec::new();
    for (_, e) in events {
        encode_event_json(e, &mut body);
        body.push(b'\n');
    }
    std::fs::write(&path, body).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["score", "--input", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&path);
    let mut by_lead: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        by_lead
            .entry(v["lead_id"].as_str().unwrap().to_string())
            .or_default()
            .push(v);
    }
    by_lead
}

/// A protobuf status record in the JSON shape, for comparison.
fn proto_to_json(b: &[u8]) -> serde_json::Value {
    let c = pb::StatusChange::decode(b).expect("status change decodes");
    let s = c.score.unwrap_or_default();
    let top = c
        .top_contributors
        .iter()
        .map(|t| serde_json::json!({"rule": t.rule, "points": t.points}))
        .collect::<Vec<_>>();
    if c.kind == "sla_breached" {
        return serde_json::json!({
            "kind": c.kind, "change_id": c.change_id, "lead_id": c.lead_id,
            "sequence": c.sequence, "stage": c.stage, "route": c.route,
            "follow_up_by": c.follow_up_by, "breached_at": c.breached_at,
            "score": {"total": s.total, "fit": s.fit, "engagement": s.engagement},
            "band": c.band, "top_contributors": top, "model_version": c.model_version,
        });
    }
    serde_json::json!({
        "kind": c.kind,
        "change_id": c.change_id, "lead_id": c.lead_id, "sequence": c.sequence,
        "from": c.from, "to": c.to, "occurred_at": c.occurred_at,
        "score": {"total": s.total, "fit": s.fit, "engagement": s.engagement},
        "band": c.band, "reasons": c.reasons,
        "top_contributors": c.top_contributors.iter().map(|t| serde_json::json!({"rule": t.rule, "points": t.points})).collect::<Vec<_>>(),
        "route": c.route, "follow_up_by": c.follow_up_by,
        "model_version": c.model_version, "cause_event_id": c.cause_event_id,
    })
}

fn group(records: &[Record], format: Format) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut by_lead: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for r in records {
        let v = match format {
            Format::Json => serde_json::from_slice(&r.payload).expect("status change is JSON"),
            Format::Protobuf => proto_to_json(&r.payload),
        };
        assert_eq!(
            r.key,
            v["lead_id"].as_str().unwrap().as_bytes(),
            "key = lead_id"
        );
        by_lead
            .entry(v["lead_id"].as_str().unwrap().to_string())
            .or_default()
            .push(v);
    }
    for v in by_lead.values_mut() {
        v.sort_by_key(|c| c["sequence"].as_u64());
    }
    by_lead
}

fn end_to_end(name: &str, format: Format) {
    let b = Broker::shared();
    let t = topics(b, name);
    let evs = events(300, 6_000, 11);
    let expected = score(&evs);
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(total > 300, "the scenario has changes to compare ({total})");
    produce(&b.producer(), &t.input, &encode(&evs, format));
    run_until_changes(b, &t, config(b, &t, name, format, ""), total);
    let got = group(
        &read_all(
            &b.bootstrap,
            &t.status,
            Duration::from_secs(2),
            Duration::from_secs(30),
        ),
        format,
    );
    assert_eq!(got.len(), expected.len(), "same leads changed");
    for (lead, want) in &expected {
        assert_eq!(got.get(lead), Some(want), "changes of {lead}");
    }
}

#[test]
fn end_to_end_json_equals_score() {
    end_to_end("e2e-json", Format::Json);
}

#[test]
fn end_to_end_protobuf_equals_score() {
    end_to_end("e2e-proto", Format::Protobuf);
}

#[test]
fn every_class_of_bad_input_is_dead_lettered_with_its_reason() {
    let b = Broker::shared();
    let name = "dlq";
    let t = topics(b, name);
    let ok = br#"{"event_id":"e1","lead_id":"L-1","type":"page_view","occurred_at":"2026-03-02T14:00:00Z"}"#;
    let big = format!(
        r#"{{"event_id":"e9","lead_id":"L-1","type":"page_view","occurred_at":"2026-03-02T14:00:00Z","attributes":{{"pad":"{}"}}}}"#,
        "x".repeat(3000)
    );
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("bad_json", b"L-1".to_vec(), b"{not json".to_vec()),
        (
            "missing_field",
            b"L-1".to_vec(),
            br#"{"lead_id":"L-1","type":"x","occurred_at":"2026-03-02T14:00:00Z"}"#.to_vec(),
        ),
        (
            "empty_field",
            b"L-1".to_vec(),
            br#"{"event_id":"","lead_id":"L-1","type":"x","occurred_at":"2026-03-02T14:00:00Z"}"#
                .to_vec(),
        ),
        (
            "bad_timestamp",
            b"L-1".to_vec(),
            br#"{"event_id":"e2","lead_id":"L-1","type":"x","occurred_at":"03/02/2026"}"#.to_vec(),
        ),
        ("key_mismatch", b"L-2".to_vec(), ok.to_vec()),
        ("too_large", b"L-1".to_vec(), big.into_bytes()),
    ];
    let mut records: Vec<(Option<i32>, Vec<u8>, Vec<u8>)> = cases
        .iter()
        .map(|(_, k, v)| (None, k.clone(), v.clone()))
        .collect();
    records.push((None, b"L-1".to_vec(), ok.to_vec()));
    produce(&b.producer(), &t.input, &records);
    let cfg = config(b, &t, name, Format::Json, "max_event_bytes = 2048");
    let (bootstrap, dlq) = (b.bootstrap.clone(), t.dlq.clone());
    run_service(cfg, || {
        read_all(
            &bootstrap,
            &dlq,
            Duration::from_millis(300),
            Duration::from_secs(10),
        )
        .len()
            >= cases.len()
    });
    let dead = read_all(
        &b.bootstrap,
        &t.dlq,
        Duration::from_secs(1),
        Duration::from_secs(20),
    );
    assert_eq!(
        dead.len(),
        cases.len(),
        "one dead letter per bad message, none for the good one"
    );
    for (reason, key, body) in &cases {
        let r = dead
            .iter()
            .find(|r| r.headers.get("leadscore.reason").map(String::as_str) == Some(*reason))
            .unwrap_or_else(|| panic!("no dead letter with reason {reason}"));
        assert_eq!(&r.key, key, "{reason}: original key");
        assert_eq!(&r.payload, body, "{reason}: original bytes");
        assert_eq!(r.headers["leadscore.source.topic"], t.input);
        assert!(r.headers["leadscore.source.offset"].parse::<i64>().is_ok());
        assert!(r.headers["leadscore.source.partition"]
            .parse::<i32>()
            .is_ok());
        assert!(!r.headers["leadscore.error"].is_empty());
    }
}

/// The state in the changelog was written under one model; a service started
/// under a model with another rule layout must not restore it: it stops with
/// the engine's message, naming the model and the remedy.
#[test]
fn a_restore_under_an_incompatible_model_stops_naming_the_model_and_the_remedy() {
    let b = Broker::shared();
    let name = "incompatible";
    let t = topics(b, name);
    let evs = events(50, 400, 5);
    let expected: usize = score(&evs).values().map(Vec::len).sum();
    produce(&b.producer(), &t.input, &encode(&evs, Format::Json));
    run_until_changes(b, &t, config(b, &t, name, Format::Json, ""), expected);

    // The default model with one more counted rule: another state layout.
    let default = include_str!("../src/model/default.toml");
    let version_line = default
        .lines()
        .find(|l| l.starts_with("version"))
        .expect("the default model has a version");
    let other = default.replace(version_line, "version = \"wider-2\"")
        + "\n[[engagement.rules]]\nname = \"every_second_blog\"\nevent = \"page_view\"\nevery = 2\npoints = 1\n";
    let path = std::env::temp_dir().join(format!("leadscore-{}-wider.toml", std::process::id()));
    std::fs::write(&path, other).unwrap();
    let mut cfg = config(b, &t, name, Format::Json, "");
    cfg.model = Some(path.clone());

    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(service::run(cfg, Shutdown::new(), |_| {}));
    });
    let result = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the service stops by itself");
    let _ = std::fs::remove_file(&path);
    let err = result
        .expect_err("an incompatible state must stop the service")
        .to_string();
    assert!(err.contains("wider-2"), "names the model: {err}");
    assert!(err.contains("leadscore replay"), "names the remedy: {err}");
    assert!(err.contains("layout"), "says what is wrong: {err}");
}

/// SLA breaches on the broker: generated leads, and a `sales_contacted` one
/// hour after every other hand-off (found by a first `score` run). The
/// service's status topic equals `score`'s output, breaches included; each
/// hand-off touched in time has no breach; each untouched one has exactly
/// one, at its `follow_up_by`, if the deadline came while the lead was still
/// in that stage (its next change, if any, at or after the deadline), and
/// none otherwise.
#[test]
fn sla_breaches_come_once_per_untouched_hand_off_and_never_after_a_touch() {
    use leadscore::time::{parse_rfc3339, HOUR};
    let b = Broker::shared();
    let name = "sla";
    let t = topics(b, name);
    let mut evs = events(200, 4_000, 23);
    let end = evs.last().unwrap().1.occurred_at;

    // The hand-offs without any touch, and the next change of each lead.
    let first = score(&evs);
    let time = |v: &serde_json::Value| parse_rfc3339(v.as_str().unwrap()).unwrap();
    let mut contacts = Vec::new();
    for changes in first.values() {
        let stages: Vec<_> = changes
            .iter()
            .filter(|c| c["kind"] == "stage_changed")
            .collect();
        for (i, c) in stages.iter().enumerate() {
            if !c["follow_up_by"].is_string() || c["sequence"].as_u64().unwrap() % 2 == 1 {
                continue;
            }
            let touch = time(&c["occurred_at"]) + HOUR;
            let next_after = stages
                .get(i + 1)
                .is_none_or(|n| time(&n["occurred_at"]) > touch);
            if next_after && touch < end {
                let lead = c["lead_id"].as_str().unwrap();
                let id = format!("touch-{}", c["change_id"].as_str().unwrap());
                contacts.push(Event::new(id, lead.to_string(), "sales_contacted", touch));
            }
        }
    }
    assert!(
        contacts.len() > 20,
        "the scenario touches hand-offs ({})",
        contacts.len()
    );
    let touched: std::collections::BTreeSet<String> = contacts
        .iter()
        .map(|e| e.event_id.strip_prefix("touch-").unwrap().to_string())
        .collect();
    // In event-time order, as the allowed lateness of 0 needs.
    for e in contacts {
        let at = evs
            .iter()
            .position(|(_, x)| x.occurred_at > e.occurred_at)
            .unwrap_or(evs.len());
        evs.insert(at, (None, e));
    }

    let expected = score(&evs);
    let total: usize = expected.values().map(Vec::len).sum();
    produce(&b.producer(), &t.input, &encode(&evs, Format::Json));
    run_until_changes(b, &t, config(b, &t, name, Format::Json, ""), total);
    let records = read_all(
        &b.bootstrap,
        &t.status,
        Duration::from_secs(2),
        Duration::from_secs(30),
    );
    assert_eq!(records.len(), total, "no record twice, none missing");
    let got = group(&records, Format::Json);
    for (lead, want) in &expected {
        assert_eq!(got.get(lead), Some(want), "records of {lead}");
    }

    let (mut breached, mut in_time) = (0, 0);
    for changes in got.values() {
        let breaches: Vec<&serde_json::Value> = changes
            .iter()
            .filter(|c| c["kind"] == "sla_breached")
            .collect();
        let stages: Vec<&serde_json::Value> = changes
            .iter()
            .filter(|c| c["kind"] == "stage_changed")
            .collect();
        for (i, c) in stages.iter().enumerate() {
            let Some(due) = c["follow_up_by"].as_str() else {
                continue;
            };
            let id = c["change_id"].as_str().unwrap();
            let mine: Vec<_> = breaches
                .iter()
                .filter(|b| b["change_id"] == format!("{id}:sla"))
                .collect();
            let due = parse_rfc3339(due).unwrap();
            let still_there = stages
                .get(i + 1)
                .is_none_or(|n| time(&n["occurred_at"]) >= due);
            if touched.contains(id) {
                assert!(mine.is_empty(), "{id} was touched in time: {mine:?}");
                in_time += 1;
            } else if due <= end && still_there {
                assert_eq!(mine.len(), 1, "{id}: one breach");
                assert_eq!(time(&mine[0]["breached_at"]), due, "{id}");
                assert_eq!(mine[0]["stage"], c["to"], "{id}");
                breached += 1;
            } else {
                assert!(
                    mine.is_empty(),
                    "{id}: left its stage before {due} or not due: {mine:?}"
                );
            }
        }
        assert!(breaches.len() <= stages.len());
    }
    assert!(
        breached > 20 && in_time > 20,
        "breached {breached}, touched {in_time}"
    );
}
