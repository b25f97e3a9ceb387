//! A real Apache Kafka broker for the tests: installed from Maven Central by
//! `deploy/local-kafka/kafka.sh` (cached), started on free loopback ports
//! with a fresh data directory, and killed with the test process.
#![allow(dead_code)]

pub mod scenario;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

pub struct Broker {
    pub dir: PathBuf,
    pub bootstrap: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local-kafka/kafka.sh")
}

fn kafka_sh(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("run kafka.sh");
    assert!(
        out.status.success(),
        "kafka.sh {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Broker {
    /// Installs (once, cached) and starts a fresh broker.
    pub fn start() -> Broker {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "leadscore-kafka-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let pid = std::process::id().to_string();
        let out = kafka_sh(&[
            "start",
            "--dir",
            dir.to_str().unwrap(),
            "--watch-pid",
            &pid,
            "--prop",
            "broker.session.timeout.ms=2000",
            "--prop",
            "broker.heartbeat.interval.ms=500",
            // Let changelog compaction happen within a test.
            "--prop",
            "log.cleaner.backoff.ms=1000",
            "--prop",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms=2000",
        ]);
        let bootstrap = out.lines().last().expect("bootstrap line").to_string();
        Broker { dir, bootstrap }
    }

    /// The broker shared by the tests of one test binary.
    pub fn shared() -> &'static Broker {
        static B: OnceLock<Broker> = OnceLock::new();
        B.get_or_init(Broker::start)
    }

    pub fn kill(&self) {
        kafka_sh(&["kill", "--dir", self.dir.to_str().unwrap()]);
    }

    pub fn restart(&self) {
        kafka_sh(&["restart", "--dir", self.dir.to_str().unwrap()]);
    }

    pub fn create_topic(&self, name: &str, partitions: i32, compact: bool) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        if compact {
            t = t.set("cleanup.policy", "compact");
        }
        let r =
            leadscore::service::kafka::block_on(admin.create_topics([&t], &AdminOptions::new()))
                .expect("create topics");
        for x in r {
            x.expect("topic created");
        }
    }

    pub fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()
            .unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["kill", "--dir", self.dir.to_str().unwrap()])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Produces (key, payload) records, to a given partition or by key.
pub fn produce(p: &BaseProducer, topic: &str, records: &[(Option<i32>, Vec<u8>, Vec<u8>)]) {
    for (part, k, v) in records {
        let mut r = BaseRecord::to(topic).key(k).payload(v);
        if let Some(part) = part {
            r = r.partition(*part);
        }
        let mut r = r;
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
        p.poll(Duration::ZERO);
    }
    // The broker may be away for a while (the crash tests kill it).
    let start = Instant::now();
    while let Err(e) = p.flush(Duration::from_secs(10)) {
        assert!(start.elapsed() < Duration::from_secs(180), "flush: {e}");
    }
}

/// A record as read back.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// Reads every committed record of `topic` (all partitions, from the
/// beginning), waiting until no new record has arrived for `quiet`.
pub fn read_all(bootstrap: &str, topic: &str, quiet: Duration, limit: Duration) -> Vec<Record> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let start = Instant::now();
    let mut last = Instant::now();
    while last.elapsed() < quiet && start.elapsed() < limit {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            last = Instant::now();
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_string(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().unwrap_or_default().to_vec(),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    out
}

/// Waits until `f` holds, or panics after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
