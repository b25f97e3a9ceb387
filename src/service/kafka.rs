//! Kafka clients: their configuration, topic checks, and how broker errors
//! are classified (retry, abort and rewind, or stop).

use std::future::Future;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Config;

/// How long a blocking client call may take before it is retried.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The base of every client's configuration. Each builder below adds its
/// own settings and then [`user_properties`], so a `[kafka.properties]`
/// entry always has the last word (except the keys leadscore owns, which
/// `Config` refuses).
pub fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers);
    // Keep the client's own log lines at warning level and above.
    c.set("log_level", "4");
    c
}

/// Applies the user's `[kafka.properties]` (security, SASL/SSL, tuning).
pub fn user_properties<'a>(cfg: &Config, c: &'a mut ClientConfig) -> &'a mut ClientConfig {
    for (k, v) in &cfg.kafka.properties {
        c.set(k, v);
    }
    c
}

/// A client with nothing but the connection settings (metadata, admin).
pub fn plain(cfg: &Config) -> ClientConfig {
    let mut c = client_config(cfg);
    user_properties(cfg, &mut c);
    c
}

/// The service's group consumer: static membership, offsets committed by
/// the service (in transactions, or after the writes), committed records only.
pub fn group_consumer(cfg: &Config) -> ClientConfig {
    let mut c = client_config(cfg);
    c.set("group.id", &cfg.kafka.group_id)
        .set("group.instance.id", &cfg.kafka.instance_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("session.timeout.ms", "10000")
        .set("statistics.interval.ms", "5000")
        // When the prefetch queue is over its threshold librdkafka waits this
        // long before fetching that partition again (default 1 s): the loop
        // then ran dry for up to a second at a time.
        .set("fetch.queue.backoff.ms", "10");
    user_properties(cfg, &mut c);
    c
}

/// What a reader of assigned partitions is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// A changelog partition, to its end, into an engine.
    Restore,
    /// Input partitions, for `leadscore replay`.
    Replay,
    /// The instance registry, followed for as long as the service runs.
    Registry,
}

/// A consumer of explicitly assigned partitions (committed records only),
/// which never joins or commits to a group; it has a group id of its own
/// because librdkafka refuses an assignment without one.
pub fn reader(cfg: &Config, reading: Reading) -> ClientConfig {
    let mut c = client_config(cfg);
    let suffix = match reading {
        Reading::Restore => "restore",
        Reading::Replay => "replay",
        Reading::Registry => "registry",
    };
    c.set("group.id", format!("{}-{suffix}", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "52428800")
        // Decoding and folding are slower than fetching: with the default
        // 1 s back-off after a full prefetch queue, readers waited most of
        // their time.
        .set("fetch.queue.backoff.ms", "10");
    match reading {
        Reading::Restore => {
            c.set("max.partition.fetch.bytes", "10485760")
                // A changelog written in transactions ends with a commit
                // marker, so the end is only known from an empty fetch:
                // don't wait long on one.
                .set("fetch.wait.max.ms", "10");
        }
        Reading::Replay => {
            // 1 MiB per partition and 64 MiB queued: with 10 MiB and 256 MiB
            // the replay was no faster and 150 MB larger.
            c.set("max.partition.fetch.bytes", "1048576")
                .set("queued.max.messages.kbytes", "65536");
        }
        Reading::Registry => {
            // A few entries, followed as they change.
            c.set("enable.partition.eof", "false")
                .set("fetch.wait.max.ms", "100");
        }
    }
    user_properties(cfg, &mut c);
    c
}

/// A producer: idempotent, with a local queue large enough for a commit
/// interval's writes (a full queue makes `send` wait); transactional when
/// given a `transactional.id`.
pub fn producer(cfg: &Config, transactional_id: Option<&str>, linger_ms: u32) -> ClientConfig {
    let mut c = client_config(cfg);
    c.set("linger.ms", linger_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Back-to-back transactions stall on CONCURRENT_TRANSACTIONS for
        // retry.backoff.ms; the default (100 ms) would set the pace.
        .set("retry.backoff.ms", "10");
    if let Some(id) = transactional_id {
        c.set("transactional.id", id)
            .set("transaction.timeout.ms", "60000")
            .set("message.timeout.ms", "60000");
    }
    user_properties(cfg, &mut c);
    c
}

/// Counts failed deliveries, so a commit can tell that a write was lost.
#[derive(Default)]
pub struct ProducerCtx {
    pub failures: AtomicU64,
}

impl ClientContext for ProducerCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        super::telemetry::broker_error(super::telemetry::BROKER_PRODUCER);
        tracing::warn!(%error, reason, "producer error");
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            if self.failures.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(error = %e, "a write was not delivered");
            }
        }
    }
}

/// Sends a record, waiting for room in the local queue if it is full; a
/// record that cannot be queued is counted as a lost write (the commit
/// then rewinds).
pub fn produce(
    producer: &BaseProducer<ProducerCtx>,
    topic: &str,
    partition: Option<i32>,
    key: &[u8],
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) {
    produce_value(producer, topic, partition, key, Some(payload), headers)
}

/// As [`produce`]; a record without a value (`None`) is a tombstone, which
/// deletes the key from a compacted topic.
pub fn produce_value(
    producer: &BaseProducer<ProducerCtx>,
    topic: &str,
    partition: Option<i32>,
    key: &[u8],
    payload: Option<&[u8]>,
    headers: Option<OwnedHeaders>,
) {
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(key);
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    if let Some(h) = headers {
        record = record.headers(h);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => {
                producer.context().failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, topic, "cannot queue a write");
                return;
            }
        }
    }
}

/// A reader's context: the end of a partition is how a read ends, not an
/// error worth a log line.
pub struct ReaderCtx;

impl ClientContext for ReaderCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::warn!(%error, reason, "reader error");
        }
    }
}

impl ConsumerContext for ReaderCtx {}

/// Runs an admin call's future to completion on this thread, on a
/// current-thread tokio runtime (the admin API is the only async part of
/// rdkafka that leadscore uses; its futures are woken by librdkafka's own
/// threads).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        // Without an I/O driver there is nothing that can fail to start.
        .expect("a current-thread runtime without I/O builds")
        .block_on(fut)
}

/// Why the service cannot start or must stop.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("topic(s) not found on the broker: {0}; create them (the changelog topic is created automatically)")]
    MissingTopics(String),
    #[error("input topics have different partition counts ({0}); they must be co-partitioned by lead id")]
    Partitions(String),
    #[error("changelog topic {topic} has {actual} partitions, the input has {expected}")]
    ChangelogPartitions {
        topic: String,
        actual: usize,
        expected: usize,
    },
    #[error("repartition topic {topic} has {actual} partitions, the input has {expected}; delete it (the service creates it) or give it {expected}")]
    RepartitionPartitions {
        topic: String,
        actual: usize,
        expected: usize,
    },
    #[error("cannot create topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Checks that the topics exist, creates the changelog and the score topic
/// (compacted, with the input's partition count) if missing; returns the
/// input partition count.
pub fn ensure_topics(cfg: &Config) -> Result<usize, StartError> {
    let probe: BaseConsumer = plain(cfg).create()?;
    let n = input_partitions(cfg, &probe)?;
    let outputs = [
        cfg.kafka.status_topic.as_str(),
        cfg.kafka.dead_letter_topic.as_str(),
    ];
    existing(&outputs, &partition_counts(&probe, &outputs)?)?;
    let changelog = cfg.changelog_topic();
    match partition_counts(&probe, &[&changelog])?[0] {
        Some(actual) if actual == n => {}
        Some(actual) => {
            return Err(StartError::ChangelogPartitions {
                topic: changelog,
                actual,
                expected: n,
            })
        }
        None => create_topic(cfg, &changelog, n, Cleanup::Compact)?,
    }
    // Entries of a few hundred bytes per instance, compacted.
    let instances = cfg.instances_topic();
    if partition_counts(&probe, &[&instances])?[0].is_none() {
        create_topic(cfg, &instances, 1, Cleanup::Compact)?;
    }
    if let Some(scores) = &cfg.kafka.score_topic {
        // Keyed by lead like the status topic; any partition count works.
        if partition_counts(&probe, &[scores])?[0].is_none() {
            create_topic(cfg, scores, n, Cleanup::Compact)?;
        }
    }
    if cfg.rekeys() {
        // Partition q of the repartition topic is folded with partition q
        // of the input: the same partition count, like the changelog's.
        let repartition = cfg.repartition_topic();
        match partition_counts(&probe, &[&repartition])?[0] {
            Some(actual) if actual == n => {}
            Some(actual) => {
                return Err(StartError::RepartitionPartitions {
                    topic: repartition,
                    actual,
                    expected: n,
                })
            }
            None => create_topic(cfg, &repartition, n, Cleanup::Delete)?,
        }
    }
    close(probe);
    Ok(n)
}

/// An error naming the topics of `names` that `counts` says do not exist.
fn existing(names: &[&str], counts: &[Option<usize>]) -> Result<(), StartError> {
    let missing: Vec<&str> = names
        .iter()
        .zip(counts)
        .filter(|(_, c)| c.is_none())
        .map(|(t, _)| *t)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StartError::MissingTopics(missing.join(", ")))
    }
}

/// Checks that the input topics exist and are co-partitioned; returns their
/// partition count.
pub fn input_partitions<C: ConsumerContext>(
    cfg: &Config,
    probe: &BaseConsumer<C>,
) -> Result<usize, StartError> {
    let names: Vec<&str> = cfg.kafka.input_topics.iter().map(String::as_str).collect();
    let counts = partition_counts(probe, &names)?;
    existing(&names, &counts)?;
    let n = counts[0].expect("checked above");
    if counts.iter().any(|c| *c != Some(n)) {
        let list: Vec<_> = names
            .iter()
            .zip(&counts)
            .map(|(t, c)| format!("{t}: {}", c.unwrap_or(0)))
            .collect();
        return Err(StartError::Partitions(list.join(", ")));
    }
    Ok(n)
}

/// How a created topic is cleaned up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Old records are deleted by the topic's retention.
    Delete,
    /// Only the latest record per key is kept (state, changelogs).
    Compact,
}

/// Creates a topic with `partitions` partitions and the broker's default
/// replication; one that already exists is fine.
pub fn create_topic(
    cfg: &Config,
    name: &str,
    partitions: usize,
    cleanup: Cleanup,
) -> Result<(), StartError> {
    tracing::info!(topic = name, partitions, ?cleanup, "creating topic");
    let admin: AdminClient<DefaultClientContext> = plain(cfg).create()?;
    // Replication factor -1: the broker's default.
    let mut topic = NewTopic::new(name, partitions as i32, TopicReplication::Fixed(-1));
    if cleanup == Cleanup::Compact {
        topic = topic.set("cleanup.policy", "compact");
    }
    let opts = AdminOptions::new().operation_timeout(Some(CALL_TIMEOUT));
    for r in block_on(admin.create_topics([&topic], &opts))? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => return Err(StartError::CreateTopic { topic: t, code }),
        }
    }
    Ok(())
}

/// The partition count of each of `names` that exists (and has partitions).
pub fn partition_counts<C: ConsumerContext>(
    client: &BaseConsumer<C>,
    names: &[&str],
) -> Result<Vec<Option<usize>>, KafkaError> {
    let md = retry("fetch metadata", || {
        client.fetch_metadata(None, CALL_TIMEOUT)
    })?;
    Ok(names
        .iter()
        .map(|name| {
            md.topics()
                .iter()
                .find(|t| t.name() == *name && t.error().is_none())
                .map(|t| t.partitions().len())
                .filter(|&n| n > 0)
        })
        .collect())
}

/// Retries a broker call that failed for a transient reason, with backoff, up
/// to about a minute.
pub fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T, KafkaError>) -> Result<T, KafkaError> {
    let mut delay = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if waited < Duration::from_secs(60) && !is_fatal(&e) => {
                tracing::warn!(error = %e, what, "broker call failed; retrying");
                super::telemetry::broker_error(super::telemetry::BROKER_RETRIED);
                std::thread::sleep(delay);
                waited += delay;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits until every queued record is delivered (or failed) and its report
/// served, up to `timeout`. `BaseProducer::flush` polls in steps of 100 ms
/// that always run to their end, so each flush with anything in flight took
/// at least 100 ms; this one returns within a millisecond of the last report.
pub fn flush<C: ProducerContext>(p: &BaseProducer<C>, timeout: Duration) -> Result<(), KafkaError> {
    let deadline = Instant::now() + timeout;
    loop {
        p.poll(Duration::ZERO);
        if p.in_flight_count() == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        p.poll(Duration::from_millis(1));
    }
}

/// Closes a consumer and drops it. Dropping a consumer that has a group id
/// closes it in polls of 100 ms that run to their end when no event comes,
/// so each drop took at least 100 ms; this one waits in steps of 1 ms.
/// (The drop then finds it closed: its second close only fails, which
/// rust-rdkafka reports through the `log` crate, not wired up here.)
pub fn close<C: ConsumerContext>(consumer: BaseConsumer<C>) {
    if consumer.close_queue().is_ok() {
        let deadline = Instant::now() + CALL_TIMEOUT;
        while !consumer.closed() && Instant::now() < deadline {
            let _ = consumer.poll(Duration::from_millis(1));
        }
    }
}

/// Errors after which this instance must stop: it was fenced by a newer
/// instance with the same id, or it is not authorised.
pub fn is_fatal(e: &KafkaError) -> bool {
    if let KafkaError::Transaction(t) = e {
        if t.is_fatal() {
            return true;
        }
    }
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::Authentication
        )
    ) || matches!(e, KafkaError::MessageConsumptionFatal(_))
}
