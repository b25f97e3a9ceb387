//! Kafka clients: their configuration, topic checks, and how broker errors
//! are classified (retry, abort and rewind, or stop).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};

use crate::config::Config;

/// How long a blocking client call may take before it is retried.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A client configuration with the user's pass-through properties applied last
/// (except the ones leadscore owns, which `Config` refuses).
pub fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers);
    // Keep the client's own log lines at warning level and above.
    c.set("log_level", "4");
    for (k, v) in &cfg.kafka.properties {
        c.set(k, v);
    }
    c
}

/// Runs a future to completion on this thread (the admin API is the only
/// async part of rdkafka that leadscore uses).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Why the service cannot start or must stop.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("topic(s) missing on the broker: {0}; create them (the changelog topic is created automatically)")]
    MissingTopics(String),
    #[error("input topics have different partition counts ({0}); they must be co-partitioned by lead id")]
    Partitions(String),
    #[error("changelog topic {topic} has {actual} partitions, the input has {expected}")]
    ChangelogPartitions {
        topic: String,
        actual: usize,
        expected: usize,
    },
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Checks that the topics exist, creates the changelog (compacted, with the
/// input's partition count) if missing; returns the input partition count.
pub fn ensure_topics(cfg: &Config) -> Result<usize, StartError> {
    let probe: BaseConsumer = client_config(cfg).create()?;
    let md = retry("fetch metadata", || {
        probe.fetch_metadata(None, CALL_TIMEOUT)
    })?;
    let partitions = |name: &str| {
        md.topics()
            .iter()
            .find(|t| t.name() == name)
            .map(|t| t.partitions().len())
    };
    let mut missing = Vec::new();
    let mut counts = Vec::new();
    for t in &cfg.kafka.input_topics {
        match partitions(t) {
            Some(n) if n > 0 => counts.push((t.clone(), n)),
            _ => missing.push(t.clone()),
        }
    }
    for t in [&cfg.kafka.status_topic, &cfg.kafka.dead_letter_topic] {
        if partitions(t).is_none() {
            missing.push(t.clone());
        }
    }
    if !missing.is_empty() {
        return Err(StartError::MissingTopics(missing.join(", ")));
    }
    let n = counts[0].1;
    if counts.iter().any(|(_, c)| *c != n) {
        let list: Vec<_> = counts.iter().map(|(t, c)| format!("{t}: {c}")).collect();
        return Err(StartError::Partitions(list.join(", ")));
    }
    let changelog = cfg.changelog_topic();
    match partitions(&changelog) {
        Some(actual) if actual == n => {}
        Some(actual) => {
            return Err(StartError::ChangelogPartitions {
                topic: changelog,
                actual,
                expected: n,
            })
        }
        None => {
            tracing::info!(topic = %changelog, partitions = n, "creating compacted changelog topic");
            let admin: AdminClient<DefaultClientContext> = client_config(cfg).create()?;
            // Replication factor -1: the broker's default.
            let topic = NewTopic::new(&changelog, n as i32, TopicReplication::Fixed(-1))
                .set("cleanup.policy", "compact");
            let opts = AdminOptions::new().operation_timeout(Some(CALL_TIMEOUT));
            let results = block_on(admin.create_topics([&topic], &opts))?;
            for r in results {
                match r {
                    Ok(_) => {}
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((t, code)) => {
                        tracing::error!(topic = %t, error = %code, "cannot create the changelog topic");
                        return Err(StartError::Kafka(KafkaError::AdminOp(code)));
                    }
                }
            }
        }
    }
    Ok(n)
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
                super::telemetry::broker_error("retried");
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
