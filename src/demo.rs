//! `leadscore demo`: the whole pipeline with nothing to install — librdkafka's
//! in-process mock cluster, generated traffic (with some bad messages), the
//! real service path, the changes printed as they are published, and the
//! HTTP endpoints served.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::{ClientConfig, Message};

use crate::codec::encode_event_json;
use crate::config::Config;
use crate::gen::{GenConfig, Generator};
use crate::service::{self, Shutdown};
use crate::time::DAY;

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the in-process Kafka mock cluster: {0}")]
    Mock(KafkaError),
    #[error("cannot create topic {topic} on the mock cluster: {source}")]
    Topic {
        topic: &'static str,
        source: KafkaError,
    },
    #[error("the service did not start: {0}")]
    NotStarted(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("cannot write the demo's output: {0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, DemoError>;

const EVENTS: &str = "lead-events";
const STATUS: &str = "lead-status";
const DLQ: &str = "lead-events-dlq";
const PARTITIONS: i32 = 4;

pub struct DemoOptions {
    pub duration: Duration,
    pub http: String,
    /// Events produced per second.
    pub rate: u32,
    /// The lead endpoints' token. Without one, the demo makes one up when
    /// `http` is not a loopback address (lead data is never served off
    /// loopback without a token).
    pub token: Option<String>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            duration: Duration::from_secs(30),
            http: "127.0.0.1:9464".into(),
            rate: 400,
            token: None,
        }
    }
}

fn config(bootstrap: &str, http: &str, token: Option<&str>) -> Result<Config> {
    let token = token.map_or(String::new(), |t| {
        // A JSON string is a TOML basic string.
        format!("token = {}", serde_json::Value::from(t))
    });
    let text = format!(
        r#"
[kafka]
brokers = "{bootstrap}"
instance_id = "demo-0"
input_topics = ["{EVENTS}"]
status_topic = "{STATUS}"
dead_letter_topic = "{DLQ}"
# Event time drives the timers: the demo's clock runs four months in its run.
idle_advance_ms = 0

[http]
listen = "{http}"
{token}
"#
    );
    Ok(Config::from_toml_with_env(&text, std::iter::empty())?)
}

/// 128 random bits in hex, from the OS (std's hasher keys are seeded from it).
fn made_up_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    (0..2)
        .map(|i| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(i);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// Runs the demo, printing to `out`.
pub fn run(opts: DemoOptions, out: &mut (dyn Write + Send)) -> Result<()> {
    service::telemetry::init_logging(crate::config::LogFormat::Text, Some("warn"));
    let mock: &'static MockCluster<'static, _> =
        Box::leak(Box::new(MockCluster::new(1).map_err(DemoError::Mock)?));
    for (t, n) in [
        (EVENTS, PARTITIONS),
        (STATUS, PARTITIONS),
        (DLQ, 1),
        ("leadscore-changelog", PARTITIONS),
        ("leadscore-instances", 1),
    ] {
        mock.create_topic(t, n, 1)
            .map_err(|source| DemoError::Topic { topic: t, source })?;
    }
    let bootstrap = mock.bootstrap_servers();
    let token = opts
        .token
        .clone()
        .or_else(|| (!crate::config::is_loopback(&opts.http)).then(made_up_token));
    let cfg = config(&bootstrap, &opts.http, token.as_deref())?;
    writeln!(
        out,
        "leadscore demo: in-process Kafka mock cluster at {bootstrap}, {} events/s for {} s",
        opts.rate,
        opts.duration.as_secs()
    )?;

    let shutdown = Shutdown::new();
    let (tx, rx) = mpsc::channel();
    let service = {
        let shutdown = shutdown.clone();
        thread::Builder::new()
            .name("service".into())
            .spawn(move || {
                service::run(cfg, shutdown, |r| {
                    let _ = tx.send(r.http_addr);
                })
            })?
    };
    let addr = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(a) => a,
        Err(_) => {
            shutdown.trigger();
            let err = service.join().ok().and_then(|r| r.err());
            return Err(DemoError::NotStarted(
                err.map_or_else(|| "timed out".into(), |e| e.to_string()),
            ));
        }
    };
    writeln!(out, "metrics at http://{addr}/metrics; lead state at http://{addr}/leads/{{id}}; /healthz, /readyz")?;
    // The token rides in the fragment, which the browser never sends: the
    // page moves it to the tab's session storage.
    let fragment = token.map_or(String::new(), |t| format!("#token={t}"));
    writeln!(out, "call list page: http://{addr}/ui{fragment}")?;
    writeln!(
        out,
        "{:<10} {:<12} {:<26} {:>7} {:<5}  route",
        "time", "lead", "change", "total", "band"
    )?;

    // Generated traffic, with one bad message in every 150.
    let stop_traffic = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let traffic = {
        let stop = Arc::clone(&stop_traffic);
        let produced = Arc::clone(&produced);
        let bootstrap = bootstrap.clone();
        let total = u64::from(opts.rate) * opts.duration.as_secs().max(1);
        let rate = opts.rate.max(1);
        thread::spawn(move || -> Result<()> {
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()?;
            let gen = Generator::new(GenConfig {
                seed: 7,
                leads: 400,
                events: total,
                span: 120 * DAY,
                // Sales follow some leads up: the SLA metrics have touches.
                contact_rate: 0.5,
                ..GenConfig::default()
            });
            let started = Instant::now();
            let mut buf = Vec::new();
            for (i, e) in gen.enumerate() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                buf.clear();
                if i % 150 == 149 {
                    buf.extend_from_slice(br#"{"event_id": "broken", "lead_id": "#);
                } else {
                    encode_event_json(&e, &mut buf);
                }
                let key = e.lead_id.as_bytes().to_vec();
                while let Err((err, _)) =
                    producer.send(BaseRecord::to(EVENTS).key(&key).payload(&buf))
                {
                    tracing::debug!(error = %err, "demo producer queue full");
                    producer.poll(Duration::from_millis(10));
                }
                producer.poll(Duration::ZERO);
                produced.fetch_add(1, Ordering::Relaxed);
                let due = started + Duration::from_secs_f64((i + 1) as f64 / f64::from(rate));
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
            }
            crate::service::kafka::flush(&producer, Duration::from_secs(10))?;
            Ok(())
        })
    };

    // Print the published changes (read_committed: what a CRM connector sees).
    let printer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "demo-printer")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create()?;
    printer.subscribe(&[STATUS, DLQ])?;
    let mut transitions: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut dead = 0u64;
    let mut breaches = 0u64;
    let end = Instant::now() + opts.duration;
    let mut drain_until = None;
    loop {
        if drain_until.is_none() && Instant::now() >= end {
            stop_traffic.store(true, Ordering::Relaxed);
            drain_until = Some(Instant::now() + Duration::from_secs(3));
        }
        if drain_until.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let Some(Ok(m)) = printer.poll(Duration::from_millis(100)) else {
            continue;
        };
        if m.topic() == DLQ {
            dead += 1;
            let reason = m
                .headers()
                .and_then(|h| {
                    use rdkafka::message::Headers;
                    h.iter()
                        .find(|x| x.key == "leadscore.reason")
                        .and_then(|x| x.value)
                })
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            writeln!(out, "{:<10} dead letter: {reason}", now_hms())?;
            continue;
        }
        let Some(Ok(c)) = m.payload().map(serde_json::from_slice::<serde_json::Value>) else {
            continue;
        };
        let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
        if c["kind"] == "sla_breached" {
            breaches += 1;
            writeln!(
                out,
                "{:<10} {:<12} {:<26} {:>7.1} {:<5}  {}, was due {}",
                now_hms(),
                s("lead_id"),
                format!("{} follow-up missed", s("stage")),
                c["score"]["total"].as_f64().unwrap_or(0.0),
                s("band"),
                s("route"),
                s("follow_up_by"),
            )?;
            continue;
        }
        *transitions.entry((s("from"), s("to"))).or_default() += 1;
        writeln!(
            out,
            "{:<10} {:<12} {:<26} {:>7.1} {:<5}  {}",
            now_hms(),
            s("lead_id"),
            format!("{} -> {}", s("from"), s("to")),
            c["score"]["total"].as_f64().unwrap_or(0.0),
            s("band"),
            match (c["route"].as_str(), c["follow_up_by"].as_str()) {
                (Some(r), Some(f)) => format!("{r}, follow up by {f}"),
                _ => String::new(),
            }
        )?;
    }
    shutdown.trigger();
    let _ = traffic.join();
    match service.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => writeln!(out, "service stopped with an error: {e}")?,
        Err(_) => writeln!(out, "service thread panicked")?,
    }
    writeln!(
        out,
        "\nsummary: {} events produced, {dead} dead letters",
        produced.load(Ordering::Relaxed)
    )?;
    for ((from, to), n) in &transitions {
        writeln!(out, "  {from:>12} -> {to:<12} {n}")?;
    }
    writeln!(out, "  {:>12}    {:<12} {breaches}", "SLA", "breaches")?;
    Ok(())
}

fn now_hms() -> String {
    let t = crate::service::wall_micros();
    let s = crate::time::format_rfc3339(t - t % 1_000_000);
    s[11..19].to_string()
}
