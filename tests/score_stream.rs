//! The score stream on a real Apache Kafka broker (issue 16): the service
//! creates the compacted score topic, and each lead's latest record on it
//! equals `leadscore explain` of the same events at the record's `as_of`,
//! band changes by decay included.

mod broker;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use broker::{produce, read_all, Broker};
use leadscore::codec::encode_event_json;
use leadscore::config::Config;
use leadscore::gen::{GenConfig, Generator};
use leadscore::model::DEFAULT_MODEL_TOML;
use leadscore::service::{self, Shutdown};
use leadscore::time::{parse_rfc3339, DAY};
use leadscore::{Event, Model};

const PARTITIONS: i32 = 4;

#[test]
fn latest_score_record_per_lead_equals_explain_at_its_as_of() {
    latest_record_equals_explain("scores-explain", "exactly_once");
}

#[test]
fn at_least_once_too() {
    latest_record_equals_explain("scores-alo", "at_least_once");
}

fn latest_record_equals_explain(name: &str, guarantee: &str) {
    let b = Broker::shared();
    let (input, status, dlq, scores) = (
        format!("{name}-events"),
        format!("{name}-status"),
        format!("{name}-dlq"),
        format!("{name}-scores"),
    );
    b.create_topic(&input, PARTITIONS, false);
    b.create_topic(&status, PARTITIONS, false);
    b.create_topic(&dlq, 1, false);

    // Every change of a touched lead is written (min delta 0), so the
    // latest record is the lead's final state, not one within a point of it.
    let toml = DEFAULT_MODEL_TOML.replace("score_min_delta = 1", "score_min_delta = 0");
    assert_ne!(toml, DEFAULT_MODEL_TOML);
    let dir = std::env::temp_dir().join(format!("leadscore-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model_path = dir.join("model.toml");
    std::fs::write(&model_path, &toml).unwrap();

    // 120 days of traffic (four half-lives: bands change by decay), then one
    // event per partition that moves every watermark to the same end.
    let mut events: Vec<(Option<i32>, Event<'static>)> = Generator::new(GenConfig {
        seed: 1616,
        leads: 80,
        events: 1_500,
        late_rate: 0.0,
        span: 120 * DAY,
        ..GenConfig::default()
    })
    .map(|e| (None, e))
    .collect();
    let end = events.iter().map(|(_, e)| e.occurred_at).max().unwrap() + 20 * DAY;
    for p in 0..PARTITIONS {
        let e = Event::new(format!("tick-{p}"), format!("tick-{p}"), "tick", end);
        events.push((Some(p), e));
    }
    let mut file = Vec::new();
    let records: Vec<_> = events
        .iter()
        .map(|(p, e)| {
            let mut body = Vec::new();
            encode_event_json(e, &mut body);
            file.extend_from_slice(&body);
            file.push(b'\n');
            (*p, e.lead_id.as_bytes().to_vec(), body)
        })
        .collect();
    let events_path = dir.join("events.jsonl");
    std::fs::write(&events_path, &file).unwrap();
    produce(&b.producer(), &input, &records);

    let text = format!(
        r#"
model = "{}"

[kafka]
brokers = "{}"
group_id = "{name}"
instance_id = "{name}-0"
input_topics = ["{input}"]
status_topic = "{status}"
dead_letter_topic = "{dlq}"
score_topic = "{scores}"
guarantee = "{guarantee}"
idle_advance_ms = 0

[http]
listen = "127.0.0.1:0"
"#,
        model_path.display(),
        b.bootstrap
    );
    let cfg = Config::from_toml_with_env(&text, std::iter::empty()).expect("config");

    // The tick of each partition is its last event: once its record is on
    // the score topic, so is everything before it (same transaction).
    let read = || {
        read_all(
            &b.bootstrap,
            &scores,
            Duration::from_millis(300),
            Duration::from_secs(10),
        )
    };
    let shutdown = Shutdown::new();
    let (tx, rx) = mpsc::channel();
    let s2 = shutdown.clone();
    let h = thread::spawn(move || service::run(cfg, s2, |r| tx.send(r.http_addr).unwrap()));
    rx.recv_timeout(Duration::from_secs(60))
        .expect("service started");
    broker::wait_until(
        "every tick's score record",
        Duration::from_secs(120),
        || {
            let got = read();
            (0..PARTITIONS).all(|p| got.iter().any(|r| r.key == format!("tick-{p}").as_bytes()))
        },
    );
    shutdown.trigger();
    h.join().expect("service thread").expect("service ran");

    // Created compacted (a changelog of leads), with the input's partitions.
    {
        use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> = b.client().create().unwrap();
        let described = leadscore::service::kafka::block_on(
            admin.describe_configs([&ResourceSpecifier::Topic(&scores)], &AdminOptions::new()),
        )
        .unwrap();
        let config = described[0].as_ref().expect("score topic exists");
        let policy = config.get("cleanup.policy").and_then(|e| e.value.clone());
        assert_eq!(policy.as_deref(), Some("compact"));
        assert_eq!(b.watermarks(&scores, PARTITIONS).len(), PARTITIONS as usize);
    }

    // The latest record per lead (one key lives in one partition: highest offset).
    let mut latest: BTreeMap<String, (i64, serde_json::Value)> = BTreeMap::new();
    let all = read();
    for r in &all {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).expect("JSON record");
        let id = String::from_utf8(r.key.clone()).unwrap();
        assert_eq!(v["lead_id"].as_str(), Some(id.as_str()), "key = lead id");
        if latest.get(&id).is_none_or(|(o, _)| r.offset > *o) {
            latest.insert(id, (r.offset, v));
        }
    }
    let leads: std::collections::BTreeSet<&str> =
        events.iter().map(|(_, e)| e.lead_id.as_ref()).collect();
    assert_eq!(latest.len(), leads.len(), "a record for every lead");

    let model = Model::from_toml(&toml).unwrap();
    let mut by_decay = 0;
    for (id, (_, r)) in &latest {
        let as_of = parse_rfc3339(r["as_of"].as_str().unwrap()).unwrap();
        let x = leadscore::cli::explain(
            model.clone(),
            events_path.to_str().unwrap(),
            id,
            Some(as_of),
        )
        .expect("explain");
        let want = serde_json::json!({
            "stage": x.stage, "fit": x.score.fit, "engagement": x.score.engagement,
            "total": x.score.total, "band": x.band, "model_version": x.model_version,
        });
        let got = serde_json::json!({
            "stage": r["stage"], "fit": r["fit"], "engagement": r["engagement"],
            "total": r["total"], "band": r["band"], "model_version": r["model_version"],
        });
        assert_eq!(got, want, "lead {id} at {as_of}");
        // Later than the lead's own clock: a band timer wrote it.
        let own = leadscore::cli::explain(model.clone(), events_path.to_str().unwrap(), id, None)
            .expect("explain");
        if as_of > parse_rfc3339(&own.at).unwrap() {
            by_decay += 1;
        }
    }
    assert!(
        by_decay > 0,
        "some latest records come from band changes by decay"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
