//! The service as its own process, on a real broker, killed at random
//! moments while events flow: exactly-once output stays exact; at-least-once
//! loses nothing and repeats only identical changes; broker crashes are
//! ridden out without a restart of the service.

mod broker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use broker::{produce, read_all, Broker};
use leadscore::codec::encode_event_json;
use leadscore::gen::{GenConfig, Generator, Rng};
use leadscore::time::DAY;
use leadscore::Event;

const PARTITIONS: i32 = 4;

struct Setup {
    name: String,
    input: String,
    status: String,
    config: PathBuf,
    events: Vec<(Option<i32>, Vec<u8>, Vec<u8>)>,
    expected: BTreeMap<String, Vec<serde_json::Value>>,
}

fn setup(b: &Broker, name: &str, guarantee: &str, n: u64, seed: u64) -> Setup {
    let input = format!("{name}-events");
    let status = format!("{name}-status");
    let dlq = format!("{name}-dlq");
    b.create_topic(&input, PARTITIONS, false);
    b.create_topic(&status, PARTITIONS, false);
    b.create_topic(&dlq, 1, false);
    let dir = std::env::temp_dir().join(format!("leadscore-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("leadscore.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[kafka]
brokers = "{}"
group_id = "{name}"
instance_id = "{name}-0"
input_topics = ["{input}"]
status_topic = "{status}"
dead_letter_topic = "{dlq}"
guarantee = "{guarantee}"
idle_advance_ms = 0

[http]
listen = "127.0.0.1:0"

[log]
level = "info"
"#,
            b.bootstrap
        ),
    )
    .unwrap();
    let mut evs: Vec<(Option<i32>, Event<'static>)> = Generator::new(GenConfig {
        seed,
        leads: 400,
        events: n,
        late_rate: 0.0,
        span: 150 * DAY,
        ..GenConfig::default()
    })
    .map(|e| (None, e))
    .collect();
    let end = evs.iter().map(|(_, e)| e.occurred_at).max().unwrap() + DAY;
    for p in 0..PARTITIONS {
        evs.push((
            Some(p),
            Event::new(format!("tick-{p}"), format!("tick-{p}"), "tick", end),
        ));
    }
    // The uninterrupted output: `leadscore score` on the same events.
    let file = dir.join("events.jsonl");
    let mut body = Vec::new();
    let mut events = Vec::new();
    for (p, e) in &evs {
        let mut b = Vec::new();
        encode_event_json(e, &mut b);
        body.extend_from_slice(&b);
        body.push(b'\n');
        events.push((*p, e.lead_id.as_bytes().to_vec(), b));
    }
    std::fs::write(&file, body).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["score", "--input", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut expected: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        expected
            .entry(v["lead_id"].as_str().unwrap().into())
            .or_default()
            .push(v);
    }
    Setup {
        name: name.into(),
        input,
        status,
        config,
        events,
        expected,
    }
}

fn spawn(s: &Setup) -> Child {
    // The service's log, kept beside its config for a failing test's reader.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.config.with_file_name("service.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["run", "--config", s.config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start leadscore run")
}

fn sigkill(c: &mut Child) {
    c.kill().unwrap();
    c.wait().unwrap();
}

fn sigterm(c: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no exit after SIGTERM"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Produces the events in the background at a steady pace over `over`.
fn feed(b: &Broker, s: &Setup, over: Duration) -> thread::JoinHandle<()> {
    let producer = b.producer();
    let input = s.input.clone();
    let events = s.events.clone();
    thread::spawn(move || {
        let chunks = 40;
        let size = events.len().div_ceil(chunks);
        for chunk in events.chunks(size) {
            produce(&producer, &input, chunk);
            thread::sleep(over / chunks as u32);
        }
    })
}

fn output(b: &Broker, s: &Setup) -> BTreeMap<String, Vec<(serde_json::Value, Vec<u8>)>> {
    let mut by_lead: BTreeMap<String, Vec<(serde_json::Value, Vec<u8>)>> = BTreeMap::new();
    for r in read_all(
        &b.bootstrap,
        &s.status,
        Duration::from_secs(2),
        Duration::from_secs(60),
    ) {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        by_lead
            .entry(v["lead_id"].as_str().unwrap().into())
            .or_default()
            .push((v, r.payload));
    }
    by_lead
}

fn total(s: &Setup) -> usize {
    s.expected.values().map(Vec::len).sum()
}

/// Lets a last instance finish the stream, then stops it with SIGTERM (exit 0).
fn finish(b: &Broker, s: &Setup, mut c: Child) {
    let want = total(s);
    broker::wait_until("all changes", Duration::from_secs(180), || {
        read_all(
            &b.bootstrap,
            &s.status,
            Duration::from_millis(500),
            Duration::from_secs(20),
        )
        .len()
            >= want
    });
    let st = sigterm(&mut c);
    assert!(st.success(), "graceful shutdown exits 0, got {st}");
}

fn assert_exact(b: &Broker, s: &Setup) {
    let got = output(b, s);
    for (lead, want) in &s.expected {
        let have: Vec<&serde_json::Value> = got
            .get(lead)
            .map(|v| v.iter().map(|(j, _)| j).collect())
            .unwrap_or_default();
        assert_eq!(
            have,
            want.iter().collect::<Vec<_>>(),
            "{}: changes of {lead}",
            s.name
        );
    }
    assert_eq!(got.len(), s.expected.len(), "no changes for other leads");
}

#[test]
fn exactly_once_survives_twenty_sigkills() {
    let b = Broker::shared();
    let s = setup(b, "crash-eos", "exactly_once", 20_000, 21);
    let feeder = feed(b, &s, Duration::from_secs(40));
    let mut rng = Rng::new(5);
    for _ in 0..20 {
        let mut c = spawn(&s);
        thread::sleep(Duration::from_millis(700 + rng.below(2300)));
        sigkill(&mut c);
    }
    feeder.join().unwrap();
    finish(b, &s, spawn(&s));
    assert_exact(b, &s);
}

#[test]
fn exactly_once_rides_out_broker_crashes() {
    let b = &Broker::start();
    let s = setup(b, "broker-crash", "exactly_once", 12_000, 22);
    let mut c = spawn(&s);
    let feeder = feed(b, &s, Duration::from_secs(30));
    let mut rng = Rng::new(6);
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(3000 + rng.below(4000)));
        b.kill();
        thread::sleep(Duration::from_millis(500 + rng.below(2000)));
        b.restart();
        assert!(
            c.try_wait().unwrap().is_none(),
            "the service rides out a broker crash"
        );
    }
    feeder.join().unwrap();
    finish(b, &s, c);
    assert_exact(b, &s);
}

#[test]
fn at_least_once_loses_nothing_and_repeats_identically() {
    let b = Broker::shared();
    let s = setup(b, "crash-alo", "at_least_once", 12_000, 23);
    let feeder = feed(b, &s, Duration::from_secs(25));
    let mut rng = Rng::new(7);
    for _ in 0..20 {
        let mut c = spawn(&s);
        thread::sleep(Duration::from_millis(500 + rng.below(1500)));
        sigkill(&mut c);
    }
    feeder.join().unwrap();
    finish(b, &s, spawn(&s));
    let got = output(b, &s);
    for (lead, want) in &s.expected {
        let have = got.get(lead).map(Vec::as_slice).unwrap_or_default();
        // Each change present; a repeat carries the same change_id and the same bytes.
        let mut by_id: BTreeMap<&str, &[u8]> = BTreeMap::new();
        for (v, bytes) in have {
            let id = v["change_id"].as_str().unwrap();
            if let Some(prev) = by_id.insert(id, bytes) {
                assert_eq!(
                    prev,
                    &bytes[..],
                    "{lead}: a repeated {id} is byte-identical"
                );
            }
        }
        let mut distinct: Vec<&serde_json::Value> = Vec::new();
        for (v, _) in have {
            if !distinct.iter().any(|d| d["change_id"] == v["change_id"]) {
                distinct.push(v);
            }
        }
        distinct.sort_by_key(|v| v["sequence"].as_u64());
        assert_eq!(
            distinct,
            want.iter().collect::<Vec<_>>(),
            "{lead}: every change present"
        );
    }
}
