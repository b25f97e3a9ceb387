//! Scenarios with the service as its own process: a generated stream with
//! its expected output (`leadscore score` on the same events), the process
//! started, killed and stopped, and the read_committed output checked.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use leadscore::codec::encode_event_json;
use leadscore::gen::{GenConfig, Generator};
use leadscore::time::DAY;
use leadscore::Event;

use super::{ids_per_partition, produce_timed, read_all, stream_timestamp, wait_until, Broker};

pub const PARTITIONS: i32 = 4;

/// How a scenario's input is keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keying {
    /// By lead id (the native form).
    Lead,
    /// By another stable id per lead (an account id: the lead id reversed),
    /// on a topic the service re-keys through its repartition topic.
    Account,
    /// Not at all (null keys), each event in the next partition in turn:
    /// a lead's events are spread over every partition.
    Null,
}

pub struct Setup {
    pub name: String,
    pub input: String,
    pub status: String,
    pub config: PathBuf,
    /// (partition, key, value) in file order; produced with increasing
    /// record timestamps. An empty key is none.
    pub events: Vec<(Option<i32>, Vec<u8>, Vec<u8>)>,
    pub expected: BTreeMap<String, Vec<serde_json::Value>>,
}

pub fn setup(b: &Broker, name: &str, guarantee: &str, n: u64, seed: u64) -> Setup {
    setup_keyed(b, name, guarantee, n, seed, Keying::Lead)
}

pub fn setup_keyed(
    b: &Broker,
    name: &str,
    guarantee: &str,
    n: u64,
    seed: u64,
    keying: Keying,
) -> Setup {
    setup_with(b, name, guarantee, n, seed, keying, 0.0)
}

/// [`setup_keyed`] with a share of events after which the lead asks to be
/// erased (a `lead_erased` of theirs; see `GenConfig::erase_rate`).
pub fn setup_with(
    b: &Broker,
    name: &str,
    guarantee: &str,
    n: u64,
    seed: u64,
    keying: Keying,
    erase_rate: f64,
) -> Setup {
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
{}"#,
            b.bootstrap,
            match keying {
                Keying::Lead => String::new(),
                Keying::Account | Keying::Null => {
                    format!("\n[input.topics.\"{input}\"]\nkeyed_by_lead = false\n")
                }
            }
        ),
    )
    .unwrap();
    let mut evs: Vec<(Option<i32>, Event<'static>)> = Generator::new(GenConfig {
        seed,
        leads: 400,
        events: n,
        late_rate: 0.0,
        span: 150 * DAY,
        erase_rate,
        ..GenConfig::default()
    })
    .map(|e| (None, e))
    .collect();
    let end = evs.iter().map(|(_, e)| e.occurred_at).max().unwrap() + DAY;
    // One last event per partition of the engines (the input's, or the
    // repartition topic's) moves every watermark to the same final time.
    let ticks: Vec<String> = match keying {
        Keying::Lead => (0..PARTITIONS).map(|p| format!("tick-{p}")).collect(),
        Keying::Account | Keying::Null => ids_per_partition("tick", PARTITIONS),
    };
    for (p, id) in ticks.into_iter().enumerate() {
        evs.push((
            Some(p as i32),
            Event::new(format!("tick-{p}"), id, "tick", end),
        ));
    }
    // The uninterrupted output: `leadscore score` on the same events.
    let file = dir.join("events.jsonl");
    let mut body = Vec::new();
    let mut events = Vec::new();
    for (i, (p, e)) in evs.iter().enumerate() {
        let mut b = Vec::new();
        encode_event_json(e, &mut b);
        body.extend_from_slice(&b);
        body.push(b'\n');
        let key = match keying {
            Keying::Lead => e.lead_id.as_bytes().to_vec(),
            Keying::Account => e.lead_id.as_bytes().iter().rev().copied().collect(),
            Keying::Null => Vec::new(),
        };
        let p = match keying {
            Keying::Null => Some(p.unwrap_or(i as i32 % PARTITIONS)),
            _ => *p,
        };
        events.push((p, key, b));
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

/// A running `leadscore run`, killed when dropped: a failing test must not
/// leave its instances running after it.
pub struct Service(Child);

impl std::ops::Deref for Service {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Service {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl From<Child> for Service {
    fn from(c: Child) -> Service {
        Service(c)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // A child already waited for is not signalled again.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn(s: &Setup) -> Service {
    spawn_as(s, &format!("{}-0", s.name))
}

/// Starts `leadscore run` with the given instance id.
pub fn spawn_as(s: &Setup, instance: &str) -> Service {
    spawn_config(&s.config, Some(instance))
}

/// Starts `leadscore run --config CONFIG` (as `instance`, or the config's
/// own `instance_id`); its log goes to `service.log` beside the config,
/// for a failing test's reader.
pub fn spawn_config(config: &std::path::Path, instance: Option<&str>) -> Service {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_file_name("service.log"))
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leadscore"));
    cmd.args(["run", "--config", config.to_str().unwrap()]);
    if let Some(i) = instance {
        cmd.env("LEADSCORE_KAFKA_INSTANCE_ID", i);
    }
    Service(
        cmd.stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start leadscore run"),
    )
}

pub fn sigkill(c: &mut Child) {
    c.kill().unwrap();
    c.wait().unwrap();
}

pub fn sigterm(c: &mut Child) -> std::process::ExitStatus {
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
pub fn feed(b: &Broker, s: &Setup, over: Duration) -> thread::JoinHandle<()> {
    let producer = b.producer();
    let input = s.input.clone();
    let events = s.events.clone();
    thread::spawn(move || {
        let chunks = 40;
        let size = events.len().div_ceil(chunks);
        for (i, chunk) in events.chunks(size).enumerate() {
            let timed: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(j, (p, k, v))| {
                    (
                        *p,
                        (!k.is_empty()).then(|| k.clone()),
                        v.clone(),
                        stream_timestamp(i * size + j),
                    )
                })
                .collect();
            produce_timed(&producer, &input, &timed);
            thread::sleep(over / chunks as u32);
        }
    })
}

pub fn output(b: &Broker, s: &Setup) -> BTreeMap<String, Vec<(serde_json::Value, Vec<u8>)>> {
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

pub fn total(s: &Setup) -> usize {
    s.expected.values().map(Vec::len).sum()
}

/// Lets a last instance finish the stream, then stops it with SIGTERM (exit 0).
pub fn finish(b: &Broker, s: &Setup, mut c: Service) {
    let want = total(s);
    // Distinct change ids: at-least-once may repeat a change, and a repeat
    // must not count towards the end of the stream.
    wait_until("all changes", Duration::from_secs(180), || {
        let records = read_all(
            &b.bootstrap,
            &s.status,
            Duration::from_millis(500),
            Duration::from_secs(20),
        );
        let ids: std::collections::BTreeSet<Vec<u8>> = records
            .iter()
            .filter_map(|r| {
                let v: serde_json::Value = serde_json::from_slice(&r.payload).ok()?;
                Some(v["change_id"].as_str()?.as_bytes().to_vec())
            })
            .collect();
        ids.len() >= want
    });
    let st = sigterm(&mut c);
    assert!(st.success(), "graceful shutdown exits 0, got {st}");
}

pub fn assert_exact(b: &Broker, s: &Setup) {
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
