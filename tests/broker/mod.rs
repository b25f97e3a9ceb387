//! A real Apache Kafka broker for the tests and the service bench
//! (`benches/service/`): installed from Maven Central by
//! `deploy/local-kafka/kafka.sh` (cached), started on free loopback ports
//! with a fresh data directory, and killed with the process that started it.
//! Java, Maven and python3, which kafka.sh runs, are installed first when
//! missing (`deploy/test-tools.sh`).
#![allow(dead_code)]

pub mod scenario;
#[path = "../tools/mod.rs"]
pub mod tools;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use leadscore::codec::encode_event_json;
use leadscore::Event;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

pub struct Broker {
    pub dir: PathBuf,
    pub bootstrap: String,
    /// Where the broker's log is copied when the broker goes (the bench keeps it).
    keep_log: Option<PathBuf>,
}

/// The tests' broker settings, on top of kafka.sh's.
pub const TEST_PROPS: &[&str] = &[
    // A killed and restarted broker registers again within seconds.
    "broker.session.timeout.ms=2000",
    "broker.heartbeat.interval.ms=500",
    // Let changelog compaction happen within a test.
    "log.cleaner.backoff.ms=1000",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms=2000",
];

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
    /// Installs (once, cached) and starts a fresh broker with the tests' settings.
    pub fn start() -> Broker {
        Broker::start_with(TEST_PROPS)
    }

    /// A fresh broker with kafka.sh's settings and `props` (`key=value`) on top.
    pub fn start_with(props: &[&str]) -> Broker {
        tools::require(&["java", "mvn", "python3"]);
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "leadscore-kafka-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let pid = std::process::id().to_string();
        let mut args = vec!["start", "--dir", dir.to_str().unwrap(), "--watch-pid", &pid];
        for p in props {
            args.extend(["--prop", p]);
        }
        let out = kafka_sh(&args);
        let bootstrap = out.lines().last().expect("bootstrap line").to_string();
        Broker {
            dir,
            bootstrap,
            keep_log: None,
        }
    }

    /// The broker shared by the tests of one test binary.
    pub fn shared() -> &'static Broker {
        static B: OnceLock<Broker> = OnceLock::new();
        B.get_or_init(Broker::start)
    }

    /// Copies the broker's log to `path` when the broker goes.
    pub fn keep_log_at(mut self, path: PathBuf) -> Broker {
        self.keep_log = Some(path);
        self
    }

    pub fn kill(&self) {
        kafka_sh(&["kill", "--dir", self.dir.to_str().unwrap()]);
    }

    pub fn restart(&self) {
        kafka_sh(&["restart", "--dir", self.dir.to_str().unwrap()]);
    }

    /// The broker JVM's process id, while it runs.
    pub fn pid(&self) -> Option<String> {
        let pid = std::fs::read_to_string(self.dir.join("broker.pid")).ok()?;
        Some(pid.trim().to_string())
    }

    /// A client configuration for this broker. librdkafka logs warnings and
    /// errors only: its informational lines would bury the output.
    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("log_level", "4");
        c
    }

    pub fn create_topic(&self, name: &str, partitions: i32, compact: bool) {
        let admin: AdminClient<DefaultClientContext> = self.client().create().unwrap();
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
        self.client()
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()
            .unwrap()
    }

    /// (low, high) watermark of each partition.
    pub fn watermarks(&self, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
        let c: BaseConsumer = self.client().create().unwrap();
        (0..partitions)
            .map(|p| {
                c.fetch_watermarks(topic, p, Duration::from_secs(30))
                    .expect("watermarks")
            })
            .collect()
    }

    /// Creates `topic` and produces `events` into it as JSON, keyed by lead
    /// id, as fast as the broker takes them.
    pub fn produce_generated(
        &self,
        topic: &str,
        partitions: i32,
        events: impl Iterator<Item = Event<'static>>,
    ) -> Stream {
        self.create_topic(topic, partitions, false);
        let p: BaseProducer = self
            .client()
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("queue.buffering.max.messages", "1000000")
            .set("enable.idempotence", "true")
            .create()
            .unwrap();
        let t = Instant::now();
        let mut leads: HashSet<String> = HashSet::new();
        let mut buf = Vec::with_capacity(512);
        let mut n = 0u64;
        let mut bytes = 0u64;
        for e in events {
            buf.clear();
            encode_event_json(&e, &mut buf);
            bytes += buf.len() as u64;
            send_retrying(
                &p,
                BaseRecord::to(topic)
                    .key(e.lead_id.as_bytes())
                    .payload(&buf[..]),
            );
            if !leads.contains(e.lead_id.as_ref()) {
                leads.insert(e.lead_id.into_owned());
            }
            n += 1;
            if n.is_multiple_of(1024) {
                p.poll(Duration::ZERO);
            }
        }
        p.flush(Duration::from_secs(120)).expect("flush");
        let ends: Vec<i64> = self
            .watermarks(topic, partitions)
            .into_iter()
            .map(|(_, h)| h)
            .collect();
        let total: i64 = ends.iter().sum();
        assert_eq!(total as u64, n, "every event is in the topic");
        Stream {
            topic: topic.to_string(),
            ends,
            total,
            distinct_leads: leads.len(),
            bytes,
            secs: t.elapsed().as_secs_f64(),
        }
    }

    /// On a fresh broker the first transaction and the first consumer group
    /// wait for their coordinators to load (`Coordinator load in progress`,
    /// seconds at times). One of each, so that what comes next does not pay
    /// for it.
    pub fn warm_up_coordinators(&self) {
        let topic = "warm-up";
        self.create_topic(topic, 1, false);
        let wait = Duration::from_secs(60);
        let producer: BaseProducer = self
            .client()
            .set("transactional.id", "warm-up")
            .create()
            .expect("warm-up producer");
        producer.init_transactions(wait).expect("init_transactions");
        producer.begin_transaction().expect("begin_transaction");
        producer
            .send(BaseRecord::to(topic).key("k").payload("warm-up"))
            .map_err(|(e, _)| e)
            .expect("send");
        producer
            .commit_transaction(wait)
            .expect("commit_transaction");
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", "warm-up")
            .create()
            .expect("warm-up consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(1))
            .expect("partition");
        consumer
            .commit(&tpl, CommitMode::Sync)
            .expect("commit offsets");
    }

    /// Reads each partition of `topic` from the beginning to end-of-partition
    /// (read_committed, large fetches, `extra` settings on top), one
    /// partition after another, counting records without decoding them.
    pub fn read_to_end(&self, topic: &str, partitions: i32, extra: &[(&str, &str)]) -> ReadToEnd {
        let mut out = ReadToEnd::default();
        for p in 0..partitions {
            let t = Instant::now();
            let mut cc = self.client();
            for (k, v) in extra {
                cc.set(*k, *v);
            }
            let c: BaseConsumer<QuietEof> = cc
                .set("group.id", "read-to-end")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true")
                .set("isolation.level", "read_committed")
                .set("auto.offset.reset", "earliest")
                .set("fetch.max.bytes", "52428800")
                .set("max.partition.fetch.bytes", "10485760")
                .create_with_context(QuietEof)
                .unwrap();
            // Gives the consumer the metadata it needs to start fetching at once.
            c.fetch_watermarks(topic, p, Duration::from_secs(30))
                .unwrap();
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
            c.assign(&tpl).unwrap();
            let mut last = t;
            loop {
                match c.poll(Duration::from_millis(500)) {
                    Some(Ok(_)) => {
                        out.records += 1;
                        last = Instant::now();
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => break,
                    Some(Err(e)) => panic!("read {topic}: {e}"),
                    None if t.elapsed() > Duration::from_secs(120) => {
                        panic!("read {topic}: stalled")
                    }
                    None => {}
                }
            }
            out.to_last += (last - t).as_secs_f64();
            out.to_eof += t.elapsed().as_secs_f64();
        }
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(keep) = &self.keep_log {
            let _ = std::fs::copy(self.dir.join("broker.log"), keep);
        }
        let _ = Command::new("bash")
            .arg(script())
            .args(["kill", "--dir", self.dir.to_str().unwrap()])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A generated stream as produced into its topic.
pub struct Stream {
    pub topic: String,
    /// High watermark of each partition (the topic is not transactional, so
    /// this is also the record count).
    pub ends: Vec<i64>,
    pub total: i64,
    pub distinct_leads: usize,
    /// JSON bytes produced.
    pub bytes: u64,
    /// Seconds to produce and flush.
    pub secs: f64,
}

/// What [`Broker::read_to_end`] read.
#[derive(Debug, Default)]
pub struct ReadToEnd {
    pub records: u64,
    /// Seconds until the last record arrived, summed over the partitions.
    pub to_last: f64,
    /// Seconds until end-of-partition, summed over the partitions.
    pub to_eof: f64,
}

/// A consumer context that does not log end-of-partition as an error (the
/// default one does).
pub struct QuietEof;

impl ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            eprintln!("consumer error: {error}: {reason}");
        }
    }
}

impl ConsumerContext for QuietEof {}

/// Sends a record, waiting while the producer's queue is full.
pub fn send_retrying(p: &BaseProducer, mut r: BaseRecord<'_, [u8], [u8]>) {
    loop {
        match p.send(r) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                r = back;
                p.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("produce: {e}"),
        }
    }
}

/// Sum of a group's committed offsets on `topic` (0 where none), through a
/// consumer configured with that group id. `committed_offsets` only: the
/// consumer does not join the group, so it does not disturb its members.
pub fn committed_total(c: &BaseConsumer, topic: &str, partitions: i32) -> Option<i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    Some(
        got.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum(),
    )
}

/// Produces (key, payload) records, to a given partition or by key.
pub fn produce(p: &BaseProducer, topic: &str, records: &[(Option<i32>, Vec<u8>, Vec<u8>)]) {
    for (part, k, v) in records {
        let mut r = BaseRecord::to(topic).key(&k[..]).payload(&v[..]);
        if let Some(part) = part {
            r = r.partition(*part);
        }
        send_retrying(p, r);
        p.poll(Duration::ZERO);
    }
    // The broker may be away for a while (the crash tests kill it).
    let start = Instant::now();
    while let Err(e) = p.flush(Duration::from_secs(10)) {
        assert!(start.elapsed() < Duration::from_secs(180), "flush: {e}");
    }
}

/// A record to produce with its own timestamp: partition (else by key), key
/// (else none), value, record timestamp (ms).
pub type Timed = (Option<i32>, Option<Vec<u8>>, Vec<u8>, i64);

/// Produces records in order, each with its given timestamp.
pub fn produce_timed(p: &BaseProducer, topic: &str, records: &[Timed]) {
    for (n, (part, k, v, ts)) in records.iter().enumerate() {
        let mut r: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(topic).payload(&v[..]).timestamp(*ts);
        if let Some(k) = k {
            r = r.key(&k[..]);
        }
        if let Some(part) = part {
            r = r.partition(*part);
        }
        send_retrying(p, r);
        if n % 1024 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    let start = Instant::now();
    while let Err(e) = p.flush(Duration::from_secs(10)) {
        assert!(start.elapsed() < Duration::from_secs(180), "flush: {e}");
    }
}

/// A record timestamp (ms) for the `i`-th record of a stream: the wall
/// clock an hour ago plus `i` ms, so that a stream of a million records
/// stays within what a broker accepts and keeps (its retention counts from
/// record timestamps).
pub fn stream_timestamp(i: usize) -> i64 {
    static BASE: OnceLock<i64> = OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        now - 3_600_000
    });
    base + i as i64
}

/// One lead id per partition of the repartition topic (`prefix-N` ids
/// whose murmur2 partition is each of `0..partitions`), for the events that
/// move every partition's watermark to the same final time.
pub fn ids_per_partition(prefix: &str, partitions: i32) -> Vec<String> {
    let mut ids = vec![None; partitions as usize];
    let mut i = 0;
    while ids.iter().any(Option::is_none) {
        let id = format!("{prefix}-{i}");
        let q = leadscore::service::rekey::partition_for(id.as_bytes(), partitions as usize);
        ids[q as usize].get_or_insert(id);
        i += 1;
    }
    ids.into_iter().map(Option::unwrap).collect()
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
