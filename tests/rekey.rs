//! Re-keying on a real broker: a topic that is not keyed by lead (keyed by
//! the lead id but not declared so, keyed by another stable id, or not keyed
//! at all) goes through the repartition topic, and the service's status
//! changes equal `leadscore score`'s on the same events, change by change.

mod broker;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use broker::{ids_per_partition, produce_timed, read_all, stream_timestamp, Broker, Record, Timed};
use leadscore::codec::encode_event_json;
use leadscore::config::Config;
use leadscore::engine::VisitorLimits;
use leadscore::gen::wire::SegmentWriter;
use leadscore::gen::{GenConfig, Generator};
use leadscore::service::{self, Shutdown};
use leadscore::time::DAY;
use leadscore::Event;

const PARTITIONS: i32 = 4;

/// What the input's message keys are.
#[derive(Clone, Copy, PartialEq)]
enum Keys {
    /// The lead id, on a topic not declared keyed by lead.
    Lead,
    /// Another stable id per lead (an account id: here the lead id reversed).
    Account,
    /// No key; the records go round the partitions, in file order, with
    /// increasing record timestamps.
    Null,
}

struct Topics {
    input: String,
    status: String,
    dlq: String,
    repartition: String,
}

fn topics(b: &Broker, name: &str) -> Topics {
    let t = Topics {
        input: format!("{name}-events"),
        status: format!("{name}-status"),
        dlq: format!("{name}-dlq"),
        repartition: format!("{name}-repartition"),
    };
    b.create_topic(&t.input, PARTITIONS, false);
    b.create_topic(&t.status, PARTITIONS, false);
    b.create_topic(&t.dlq, 1, false);
    t
}

fn config(b: &Broker, t: &Topics, name: &str, extra: &str) -> Config {
    config_as(b, t, name, extra, "keyed_by_lead = false")
}

fn config_as(b: &Broker, t: &Topics, name: &str, extra: &str, topic: &str) -> Config {
    let text = config_text(b, t, name, extra, topic);
    Config::from_toml_with_env(&text, std::iter::empty()).expect("test config is valid")
}

fn config_text(b: &Broker, t: &Topics, name: &str, extra: &str, topic: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{}"
group_id = "{name}"
instance_id = "{name}-0"
input_topics = ["{}"]
status_topic = "{}"
dead_letter_topic = "{}"
idle_advance_ms = 0
{extra}

[input.topics."{}"]
{topic}

[http]
listen = "127.0.0.1:0"
"#,
        b.bootstrap, t.input, t.status, t.dlq, t.input
    )
}

fn gen_config(seed: u64, anonymous_share: f64) -> GenConfig {
    GenConfig {
        seed,
        leads: 300,
        events: 6_000,
        late_rate: 0.0,
        span: 120 * DAY,
        anonymous_share,
        ..GenConfig::default()
    }
}

/// Generated events in time order, then one event per repartition partition
/// that moves every partition's watermark to the same final time.
fn events(seed: u64) -> Vec<Event<'static>> {
    events_of(gen_config(seed, 0.0))
}

fn events_of(cfg: GenConfig) -> Vec<Event<'static>> {
    let mut v: Vec<Event<'static>> = Generator::new(cfg).collect();
    let end = v.iter().map(|e| e.occurred_at).max().unwrap() + DAY;
    for (i, id) in ids_per_partition("tick", PARTITIONS)
        .into_iter()
        .enumerate()
    {
        v.push(Event::new(format!("tick-e{i}"), id, "tick", end));
    }
    v
}

fn records(events: &[Event<'static>], keys: Keys) -> Vec<Timed> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut body = Vec::new();
            encode_event_json(e, &mut body);
            let lead = e.lead_id.as_bytes();
            let (partition, key) = match keys {
                Keys::Lead => (None, Some(lead.to_vec())),
                Keys::Account => (None, Some(lead.iter().rev().copied().collect())),
                Keys::Null => (Some(i as i32 % PARTITIONS), None),
            };
            (partition, key, body, stream_timestamp(i))
        })
        .collect()
}

/// `leadscore score` on the same events: changes by lead, in sequence order.
fn score(name: &str, events: &[Event<'static>]) -> BTreeMap<String, Vec<serde_json::Value>> {
    score_under(name, events, None)
}

/// `score` under a model file (`None`: the default model).
fn score_under(
    name: &str,
    events: &[Event<'static>],
    model: Option<&std::path::Path>,
) -> BTreeMap<String, Vec<serde_json::Value>> {
    let path = std::env::temp_dir().join(format!("leadscore-{name}-{}.jsonl", std::process::id()));
    let mut body = Vec::new();
    for e in events {
        encode_event_json(e, &mut body);
        body.push(b'\n');
    }
    std::fs::write(&path, body).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leadscore"));
    cmd.args(["score", "--input", path.to_str().unwrap()]);
    if let Some(m) = model {
        cmd.arg("--model").arg(m);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&path);
    group(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap()),
    )
}

fn group(
    changes: impl Iterator<Item = serde_json::Value>,
) -> BTreeMap<String, Vec<serde_json::Value>> {
    let mut by_lead: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for v in changes {
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

/// Runs the service in a thread until the status topic holds `n` records;
/// returns its `/metrics` page as it stopped.
fn run_until_changes(b: &Broker, t: &Topics, cfg: Config, n: usize) -> String {
    let shutdown = Shutdown::new();
    let (tx, rx) = mpsc::channel();
    let s2 = shutdown.clone();
    let h = thread::spawn(move || service::run(cfg, s2, |r| tx.send(r.http_addr).unwrap()));
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("service started");
    broker::wait_until("the service's output", Duration::from_secs(180), || {
        read_all(
            &b.bootstrap,
            &t.status,
            Duration::from_millis(300),
            Duration::from_secs(10),
        )
        .len()
            >= n
    });
    // The last commit's metrics are reported with it.
    thread::sleep(Duration::from_millis(500));
    let metrics = get_metrics(addr);
    // With the input folded the service goes idle: no transaction without
    // input (routers' marks are written only when they change), so the
    // repartition topic stops growing (a commit marker would move its end).
    let ends = || b.watermarks(&t.repartition, PARTITIONS);
    broker::wait_until("an idle repartition topic", Duration::from_secs(30), || {
        let before = ends();
        thread::sleep(Duration::from_secs(2));
        before == ends()
    });
    shutdown.trigger();
    h.join()
        .expect("service thread")
        .expect("service ran without error");
    metrics
}

fn get_metrics(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// A counter's value on a `/metrics` page (0 when absent).
fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn read(b: &Broker, topic: &str) -> Vec<Record> {
    read_all(
        &b.bootstrap,
        topic,
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
}

fn rekeyed_equals_score(name: &str, keys: Keys, extra: &str) -> Vec<Record> {
    let b = Broker::shared();
    let t = topics(b, name);
    let evs = events(31);
    let expected = score(name, &evs);
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(total > 300, "the scenario has changes to compare ({total})");
    produce_timed(&b.producer(), &t.input, &records(&evs, keys));
    run_until_changes(b, &t, config(b, &t, name, extra), total);
    let status = read(b, &t.status);
    let got = group(status.iter().map(|r| {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(r.key, v["lead_id"].as_str().unwrap().as_bytes());
        v
    }));
    for (lead, want) in &expected {
        assert_eq!(got.get(lead), Some(want), "{name}: changes of {lead}");
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "{name}: no changes for other leads"
    );
    assert!(read(b, &t.dlq).is_empty(), "{name}: nothing dead-lettered");
    // Every event went through the repartition topic, in its lead's
    // partition (Kafka's default partitioner), keyed by the lead: in
    // batches, one Kafka record per partition and transaction at most.
    let batches = read(b, &t.repartition);
    let mut routed = 0;
    for r in &batches {
        leadscore::codec::decode_routed_records(&r.payload, |item| {
            routed += 1;
            assert_eq!(
                r.partition,
                leadscore::service::rekey::partition_for(
                    item.key().as_bytes(),
                    PARTITIONS as usize
                ),
                "{name}: routed by murmur2"
            );
        })
        .expect("routed records decode");
    }
    assert_eq!(routed, evs.len(), "{name}: one routed record per event");
    assert!(
        batches.len() * 4 < evs.len(),
        "{name}: records travel in batches ({} Kafka records)",
        batches.len()
    );
    status
}

#[test]
fn a_topic_keyed_by_lead_but_not_declared_so_is_re_keyed_exactly() {
    let status = rekeyed_equals_score(
        "rekey-lead",
        Keys::Lead,
        "output_envelope = \"cloudevents\"\ncloudevents_source = \"leadscore/test\"",
    );
    // The status records carry the CloudEvents binary-mode headers.
    for r in &status {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        let h = &r.headers;
        assert_eq!(h["ce_specversion"], "1.0");
        assert_eq!(h["ce_id"], v["change_id"].as_str().unwrap());
        assert_eq!(h["ce_subject"], v["lead_id"].as_str().unwrap());
        // An SLA breach is a record of its own kind, timed at its deadline.
        let (kind, time) = match v["kind"].as_str().unwrap() {
            "sla_breached" => ("sla_breached", "breached_at"),
            _ => ("stage_changed", "occurred_at"),
        };
        assert_eq!(h["ce_type"], format!("com.leadscore.status.{kind}"));
        assert_eq!(h["ce_source"], "leadscore/test");
        assert_eq!(h["ce_time"], v[time].as_str().unwrap());
        assert_eq!(h["content-type"], "application/json");
    }
}

#[test]
fn a_topic_keyed_by_another_id_is_re_keyed_exactly() {
    rekeyed_equals_score("rekey-account", Keys::Account, "");
}

/// At-least-once routes the same way (the routed records are flushed with
/// the changes, before the state and the offsets).
#[test]
fn a_re_keyed_topic_at_least_once_gives_the_same_changes() {
    rekeyed_equals_score("rekey-alo", Keys::Account, "guarantee = \"at_least_once\"");
}

#[test]
fn a_topic_without_keys_written_in_order_is_re_keyed_exactly() {
    rekeyed_equals_score("rekey-null", Keys::Null, "");
}

/// Equal JSON, numbers within a relative 1e-12. With visitors the native
/// stream also folds a visitor's unscored events, which the visitor does
/// not keep: they rebase the lead's decayed sum at other instants, so the
/// scores may differ in the last bits (README, "Generated streams"; stages,
/// times, ids and the order of changes are exact).
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1.0)
        }
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Every lead has exactly the changes `want` gives it (scores within
/// SPEC's 1e-9: see [`same`]), and no other lead has any.
#[track_caller]
fn same_changes(
    name: &str,
    got: &BTreeMap<String, Vec<serde_json::Value>>,
    want: &BTreeMap<String, Vec<serde_json::Value>>,
) {
    for (lead, w) in want {
        let have = got.get(lead).map(Vec::as_slice).unwrap_or_default();
        assert!(
            have.len() == w.len() && have.iter().zip(w).all(|(h, w)| same(h, w)),
            "{name}: changes of {lead}\n got {have:?}\nwant {w:?}"
        );
    }
    assert_eq!(got.len(), want.len(), "{name}: no changes for other leads");
}

/// The generator's Segment form of `evs` (made with `cfg`), keyed as a
/// browser-side pipeline keys it: by the visitor's `anonymousId`, else by
/// `userId`; record timestamps in stream order.
fn segment_records(cfg: &GenConfig, evs: &[Event<'static>]) -> Vec<Timed> {
    let mut writer = SegmentWriter::new(cfg, VisitorLimits::default());
    let mut anonymous = 0;
    let records: Vec<Timed> = evs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let m = writer.message(e);
            let key = m
                .get("anonymousId")
                .or_else(|| m.get("userId"))
                .and_then(|k| k.as_str())
                .expect("every message has an id")
                .as_bytes()
                .to_vec();
            anonymous += usize::from(m.get("userId").is_none());
            (
                None,
                Some(key),
                serde_json::to_vec(&m).unwrap(),
                stream_timestamp(i),
            )
        })
        .collect();
    assert!(
        anonymous > 50,
        "visitors browse first ({anonymous} messages)"
    );
    records
}

/// The generator's Segment form of a stream in which a share of the leads
/// browse anonymously before they identify, keyed as a browser-side
/// pipeline keys it: by the visitor's `anonymousId`, else by `userId`.
/// Visitors, identifications (across partitions) and the re-keying give
/// the native stream's changes.
#[test]
fn a_segment_topic_keyed_by_visitor_equals_the_native_stream_scored() {
    let name = "rekey-segment";
    let b = Broker::shared();
    let t = topics(b, name);
    let cfg = gen_config(37, 0.3);
    let evs = events_of(cfg.clone());
    let expected = score(name, &evs);
    let total: usize = expected.values().map(Vec::len).sum();
    let records = segment_records(&cfg, &evs);
    produce_timed(&b.producer(), &t.input, &records);
    let metrics = run_until_changes(
        b,
        &t,
        config_as(b, &t, name, "", "format = \"segment\""),
        total,
    );
    // The metrics are the process's: other tests' services count too, but
    // only this one identifies visitors or reads this topic.
    assert!(
        counter(&metrics, "leadscore_identifications_total") > 0.0,
        "{metrics}"
    );
    let routed = format!("leadscore_routed_records_total{{topic=\"{}\"}}", t.input);
    assert!(counter(&metrics, &routed) >= evs.len() as f64, "{metrics}");
    let got = group(read(b, &t.status).iter().map(|r| {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        v
    }));
    same_changes(name, &got, &expected);
    assert!(read(b, &t.dlq).is_empty(), "{name}: nothing dead-lettered");
}

/// A CloudEvents topic in binary mode (the attributes in `ce_*` headers, the
/// body the event's `data`), without keys: decoded, re-keyed, and scored
/// exactly as `leadscore score` scores the native events.
#[test]
fn a_cloudevents_topic_in_binary_mode_without_keys_is_re_keyed_exactly() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseRecord, Producer};

    let name = "rekey-ce";
    let b = Broker::shared();
    let t = topics(b, name);
    let evs = events(37);
    let expected = score(name, &evs);
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(total > 300, "the scenario has changes to compare ({total})");
    let producer = b.producer();
    for (i, e) in evs.iter().enumerate() {
        let body = serde_json::to_vec(&leadscore::codec::event_data_json(e)).unwrap();
        let ce_type = format!("com.example.leads.{}", e.event_type);
        let time = leadscore::time::format_rfc3339(e.occurred_at);
        let headers = [
            ("ce_specversion", "1.0"),
            ("ce_id", &e.event_id),
            ("ce_source", "/crm/test"),
            ("ce_type", &ce_type),
            ("ce_subject", &e.lead_id),
            ("ce_time", &time),
            ("content-type", "application/json"),
        ]
        .iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        });
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&t.input)
            .partition(i as i32 % PARTITIONS)
            .payload(&body[..])
            .headers(headers)
            .timestamp(stream_timestamp(i));
        // A full local queue hands the record back: make room and retry.
        while let Err((err, back)) = producer.send(record) {
            assert!(
                matches!(
                    err,
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull
                    )
                ),
                "{err}"
            );
            producer.poll(Duration::from_millis(10));
            record = back;
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let cfg = config_as(
        b,
        &t,
        name,
        "",
        "format = \"cloudevents\"\n\n[input.cloudevents]\ntype_prefix = \"com.example.leads.\"",
    );
    run_until_changes(b, &t, cfg, total);
    let got = group(
        read(b, &t.status)
            .iter()
            .map(|r| serde_json::from_slice(&r.payload).unwrap()),
    );
    for (lead, want) in &expected {
        assert_eq!(got.get(lead), Some(want), "{name}: changes of {lead}");
    }
    assert_eq!(
        got.len(),
        expected.len(),
        "{name}: no changes for other leads"
    );
    assert!(read(b, &t.dlq).is_empty(), "{name}: nothing dead-lettered");
}

/// `leadscore replay` of a Segment topic keyed by visitor, under another
/// model: it routes the messages as the service does (visitors,
/// identifications across partitions), without the repartition topic, and
/// the shadow topic holds what `score` gives under that model.
#[test]
fn a_segment_topic_replays_under_a_new_model_as_score_gives() {
    let name = "rekey-replay";
    let b = Broker::shared();
    let t = topics(b, name);
    let cfg = gen_config(41, 0.3);
    let evs = events_of(cfg.clone());
    let dir = std::env::temp_dir().join(format!("leadscore-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("lenient.toml");
    let text = include_str!("../src/model/default.toml")
        .replace("version = \"default-1\"", "version = \"lenient-2\"")
        .replace("mql_min_total = 50", "mql_min_total = 35");
    assert!(text.contains("mql_min_total = 35"));
    std::fs::write(&model, text).unwrap();
    let expected = score_under(name, &evs, Some(&model));
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(total > 300, "the scenario has changes to compare ({total})");
    assert_ne!(
        expected,
        score(name, &evs),
        "the new model changes the outcome"
    );
    produce_timed(&b.producer(), &t.input, &segment_records(&cfg, &evs));
    let config = dir.join("leadscore.toml");
    std::fs::write(
        &config,
        config_text(b, &t, name, "", "format = \"segment\""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["replay", "--json", "--config"])
        .arg(&config)
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["events"], evs.len() as u64, "{summary}");
    assert_eq!(summary["invalid"], 0, "{summary}");
    assert_eq!(summary["changes_written"], total as u64, "{summary}");
    let got = group(
        read(b, &format!("{}-shadow", t.status))
            .iter()
            .map(|r| serde_json::from_slice(&r.payload).unwrap()),
    );
    same_changes(name, &got, &expected);
    // Nothing went through the live service's repartition topic.
    assert!(
        read_all(
            &b.bootstrap,
            &t.repartition,
            Duration::from_millis(500),
            Duration::from_secs(5)
        )
        .is_empty(),
        "the replay writes nothing to the repartition topic"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The model switch of the README on a Segment topic keyed by visitor: the
/// service runs under the default model, stops; `replay --to-changelog`
/// rebuilds the state (leads, visitors, leads waiting for a visitor) under a
/// new model; the service goes on under it from the new changelog. The
/// status topic holds the old model's changes up to the cut and the new
/// model's after it, none twice.
#[test]
fn a_segment_topic_switches_to_a_new_model_emitting_nothing_twice() {
    let name = "rekey-switch";
    let b = Broker::shared();
    let t = topics(b, name);
    let cfg = gen_config(43, 0.3);
    let generated: Vec<Event<'static>> = Generator::new(cfg.clone()).collect();
    // The cut where the most visitors browsed before it and identify after
    // it: the rebuilt state must carry them over.
    let probe = segment_records(&cfg, &generated);
    let straddling = |cut: usize| {
        let body = |r: &Timed| serde_json::from_slice::<serde_json::Value>(&r.2).unwrap();
        let before: std::collections::BTreeSet<String> = probe[..cut]
            .iter()
            .map(body)
            .filter(|m| m.get("userId").is_none())
            .filter_map(|m| Some(m.get("anonymousId")?.as_str()?.to_string()))
            .collect();
        probe[cut..]
            .iter()
            .map(body)
            .filter(|m| m.get("userId").is_some())
            .filter_map(|m| Some(m.get("anonymousId")?.as_str()?.to_string()))
            .filter(|v| before.contains(v))
            .collect::<std::collections::BTreeSet<_>>()
    };
    let cut_at = (generated.len() / 3..generated.len() * 2 / 3)
        .step_by(97)
        .max_by_key(|&c| straddling(c).len())
        .unwrap();
    let visitors = straddling(cut_at);
    assert!(
        visitors.len() >= 3,
        "visitors straddle the cut: {visitors:?}"
    );
    // Ticks after each half move every partition's watermark to the time
    // `score` has reached there, so both see the same timers.
    let ticks = |tag: &str, at: i64| -> Vec<Event<'static>> {
        ids_per_partition("tick", PARTITIONS)
            .into_iter()
            .enumerate()
            .map(|(i, id)| Event::new(format!("tick-{tag}{i}"), id, "tick", at))
            .collect()
    };
    let mut evs = generated[..cut_at].to_vec();
    evs.extend(ticks("cut", generated[cut_at - 1].occurred_at));
    let cut = evs.len();
    evs.extend_from_slice(&generated[cut_at..]);
    evs.extend(ticks("end", generated.last().unwrap().occurred_at + DAY));
    let records = segment_records(&cfg, &evs);
    let before = &evs[..cut];

    let dir = std::env::temp_dir().join(format!("leadscore-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let new = dir.join("strict.toml");
    let text = include_str!("../src/model/default.toml")
        .replace("version = \"default-1\"", "version = \"strict-2\"")
        .replace("mql_min_total = 50", "mql_min_total = 65");
    assert!(text.contains("mql_min_total = 65"));
    std::fs::write(&new, text).unwrap();
    let live_before = score(name, before);
    let topic = "format = \"segment\"";
    let config = dir.join("leadscore.toml");
    std::fs::write(&config, config_text(b, &t, name, "", topic)).unwrap();

    // 1. The live service, stopped at the cut.
    produce_timed(&b.producer(), &t.input, &records[..cut]);
    run_until_changes(
        b,
        &t,
        config_as(b, &t, name, "", topic),
        live_before.values().map(Vec::len).sum(),
    );
    // 2. The state rebuilt under the new model, up to its offsets.
    let out = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args([
            "replay",
            "--json",
            "--to-changelog",
            "rekey-switch-changelog-2",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--model")
        .arg(&new)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["switch_ready"], true, "{summary}");
    assert_eq!(summary["events"], cut as u64, "{summary}");
    let kept: Vec<String> = read(b, "rekey-switch-changelog-2")
        .iter()
        .filter_map(|r| r.key.strip_prefix(b"\0v"))
        .map(|k| String::from_utf8(k.to_vec()).unwrap())
        .filter(|v| visitors.contains(v))
        .collect();
    assert!(
        !kept.is_empty(),
        "the rebuilt state keeps the visitors that identify after the cut"
    );
    // 3. The service under the new model and changelog.
    let switched = format!(
        "model = {:?}\n{}",
        new.to_str().unwrap(),
        config_text(
            b,
            &t,
            name,
            "changelog_topic = \"rekey-switch-changelog-2\"",
            topic
        )
    );
    let switched = Config::from_toml_with_env(&switched, std::iter::empty()).unwrap();
    produce_timed(&b.producer(), &t.input, &records[cut..]);

    // Expected: the old model's changes up to the cut, then the new model's
    // caused after it, numbered on from the live sequence.
    let new_before = score_under(name, before, Some(&new));
    let new_all = score_under(name, &evs, Some(&new));
    // (An SLA breach takes its hand-off's number.)
    let stage_changes = |by: &BTreeMap<String, Vec<serde_json::Value>>, lead: &str| {
        by.get(lead).map_or(0, |v| {
            v.iter().filter(|c| c["kind"] == "stage_changed").count()
        })
    };
    let mut want = live_before.clone();
    for (lead, changes) in &new_all {
        let skip = new_before.get(lead).map_or(0, Vec::len);
        let shift = stage_changes(&live_before, lead)
            .saturating_sub(stage_changes(&new_before, lead)) as u64;
        for c in &changes[skip..] {
            let mut c = c.clone();
            let seq = c["sequence"].as_u64().unwrap() + shift;
            c["sequence"] = seq.into();
            c["change_id"] = if c["kind"] == "sla_breached" {
                format!("{lead}:{seq}:sla")
            } else {
                format!("{lead}:{seq}")
            }
            .into();
            want.entry(lead.clone()).or_default().push(c);
        }
    }
    let want_total: usize = want.values().map(Vec::len).sum();
    assert!(
        want_total > live_before.values().map(Vec::len).sum::<usize>() + 50,
        "the new model has changes after the cut"
    );
    run_until_changes(b, &t, switched, want_total);
    let got = group(
        read(b, &t.status)
            .iter()
            .map(|r| serde_json::from_slice(&r.payload).unwrap()),
    );
    same_changes(name, &got, &want);
    let _ = std::fs::remove_dir_all(&dir);
}
