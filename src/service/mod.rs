//! `leadscore run`: the Kafka service around the engine.
//!
//! One thread polls the consumer and drives the [`processor::Processor`]; the
//! consumer's rebalance callbacks (which run inside `poll`) commit the open
//! transaction before partitions are revoked and restore state from the
//! changelog when partitions are assigned. The HTTP endpoints run beside it.

pub mod http;
pub mod kafka;
pub mod processor;
pub mod replay;
pub mod telemetry;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;

use crate::config::Config;
use crate::model::Model;
use processor::{CommitError, Processor};
use telemetry as tm;

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Start(#[from] kafka::StartError),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Fatal(String),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: String,
        source: std::io::Error,
    },
}

/// State shared by the processing loop, the rebalance callbacks and HTTP.
pub struct Shared {
    processor: Mutex<Processor>,
    ready: AtomicBool,
    /// Last turn of the processing loop (ms since `started`).
    heartbeat: AtomicU64,
    started: Instant,
    fatal: Mutex<Option<String>>,
    /// Partitions assigned but not yet restored.
    restoring: Mutex<BTreeSet<i32>>,
}

impl Shared {
    fn beat(&self) {
        self.heartbeat
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn fail(&self, msg: String) {
        tracing::error!(error = %msg, "stopping");
        self.fatal.lock().expect("fatal lock").get_or_insert(msg);
    }
}

impl http::Status for Shared {
    fn healthy(&self) -> bool {
        let last = self.heartbeat.load(Ordering::Relaxed);
        self.started.elapsed().as_millis() as u64 - last < 30_000
            && self.fatal.lock().map(|f| f.is_none()).unwrap_or(false)
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn lead(&self, id: &str) -> Option<String> {
        let p = self.processor.lock().ok()?;
        p.partitions.iter().find_map(|(&partition, part)| {
            let mut e = serde_json::to_value(part.engine.explain(id, None)?).ok()?;
            let next = part
                .engine
                .lead(id)
                .map(|l| l.next_due(part.engine.model()));
            if let Some(obj) = e.as_object_mut() {
                obj.insert("partition".into(), partition.into());
                obj.insert(
                    "next_timer".into(),
                    match next {
                        Some(t) if t != crate::engine::NEVER => {
                            crate::time::format_rfc3339(t).into()
                        }
                        _ => serde_json::Value::Null,
                    },
                );
            }
            serde_json::to_string_pretty(&e).ok()
        })
    }
}

/// The consumer's context: rebalances, statistics, errors.
pub struct ConsumerCtx {
    shared: Arc<Shared>,
}

impl ClientContext for ConsumerCtx {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (&p, part) in &t.partitions {
                if p < 0 {
                    continue;
                }
                // librdkafka's own `consumer_lag` counts from the consumer's
                // committed offset, which it never learns when offsets are
                // committed in transactions: measure from what was consumed.
                let end = if part.ls_offset >= 0 {
                    part.ls_offset
                } else {
                    part.hi_offset
                };
                if end >= 0 && part.app_offset >= 0 {
                    tm::consumer_lag(topic, p, (end - part.app_offset).max(0));
                } else if part.consumer_lag >= 0 {
                    tm::consumer_lag(topic, p, part.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition is news, not an error (it arrives here too).
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        tm::broker_error("consumer");
        tracing::warn!(%error, reason, "consumer error");
    }
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        tm::rebalance("revoke", tpl.count());
        self.shared.ready.store(false, Ordering::Relaxed);
        let mut p = self.shared.processor.lock().expect("processor lock");
        // Finish the open transaction while the partitions are still ours.
        match p.commit(consumer) {
            Ok(()) | Err(CommitError::Rewind(_)) => {}
            Err(CommitError::Fatal(e)) => self
                .shared
                .fail(format!("while committing before a rebalance: {e}")),
        }
        let revoked: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        for r in &revoked {
            p.partitions.remove(r);
            tm::partition_dropped(*r);
        }
        tm::ready(false, p.partitions.len());
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tm::rebalance("assign", tpl.count());
                let assigned: BTreeSet<i32> =
                    tpl.elements().iter().map(|e| e.partition()).collect();
                // Restored by the loop before any of their messages is processed.
                self.shared
                    .restoring
                    .lock()
                    .expect("restoring lock")
                    .extend(assigned);
                self.shared.ready.store(false, Ordering::Relaxed);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tm::broker_error("rebalance");
                tracing::warn!(error = %e, "rebalance error");
            }
        }
    }
}

/// Restores the partitions waiting for it; the consumer is paused meanwhile
/// by not being polled (restores are bounded by `max.poll.interval.ms`).
fn restore_pending(shared: &Shared) -> Result<(), ServiceError> {
    let pending: Vec<i32> = std::mem::take(&mut *shared.restoring.lock().expect("restoring lock"))
        .into_iter()
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let mut p = shared.processor.lock().expect("processor lock");
    for (partition, part) in p.restore_all(&pending)? {
        p.partitions.insert(partition, part);
    }
    tm::ready(true, p.partitions.len());
    shared.ready.store(true, Ordering::Relaxed);
    Ok(())
}

/// A handle to stop a running service (SIGTERM/SIGINT set it too).
#[derive(Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    pub fn trigger(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets this flag on SIGTERM and SIGINT.
    pub fn on_signals(&self) -> std::io::Result<()> {
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(sig, Arc::clone(&self.0))?;
        }
        Ok(())
    }
}

/// What a running service exposes to its caller (tests, the demo).
pub struct Running {
    pub http_addr: std::net::SocketAddr,
}

/// Creates the group consumer and subscribes it to the input topics.
fn subscribe(cfg: &Config, shared: &Arc<Shared>) -> Result<BaseConsumer<ConsumerCtx>, KafkaError> {
    let mut cc = kafka::client_config(cfg);
    cc.set("group.id", &cfg.kafka.group_id)
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
    for (k, v) in &cfg.kafka.properties {
        cc.set(k, v);
    }
    let consumer: BaseConsumer<ConsumerCtx> = cc.create_with_context(ConsumerCtx {
        shared: Arc::clone(shared),
    })?;
    let topics: Vec<&str> = cfg.kafka.input_topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// True when the consumer stopped because the group refused its static
/// instance id.
fn instance_fenced<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> bool {
    consumer.client().fatal_error().map(|(code, _)| code)
        == Some(rdkafka::types::RDKafkaErrorCode::FencedInstanceId)
}

/// Rejoins after the group fenced this instance's static id. librdkafka
/// fences a static member by its own id when its session times out locally
/// while the coordinator is away (a broker restart) and the rejoin races an
/// older heartbeat; a new consumer with the same id simply takes the
/// membership back. A real duplicate instance is stopped by the producer
/// fencing (exactly-once) or by this budget.
#[derive(Default)]
struct Rejoins(Vec<Instant>);

impl Rejoins {
    const MAX: usize = 5;
    const WINDOW: Duration = Duration::from_secs(600);

    fn allow(&mut self) -> bool {
        let now = Instant::now();
        self.0.retain(|t| now.duration_since(*t) < Self::WINDOW);
        self.0.push(now);
        self.0.len() <= Self::MAX
    }
}

/// Runs the service until `shutdown` is set or a fatal error occurs.
/// `on_start` is called once the HTTP endpoints are up.
pub fn run(
    cfg: Config,
    shutdown: Shutdown,
    on_start: impl FnOnce(&Running),
) -> Result<(), ServiceError> {
    let cfg = Arc::new(cfg);
    let model = Arc::new(match &cfg.model {
        Some(path) => Model::from_path(path).map_err(|e| ServiceError::Fatal(e.to_string()))?,
        None => Model::default_model(),
    });
    let metrics = tm::install();
    tm::ready(false, 0);
    kafka::ensure_topics(&cfg)?;
    let processor = Processor::new(Arc::clone(&cfg), Arc::clone(&model))?;
    let shared = Arc::new(Shared {
        processor: Mutex::new(processor),
        ready: AtomicBool::new(false),
        heartbeat: AtomicU64::new(0),
        started: Instant::now(),
        fatal: Mutex::new(None),
        restoring: Mutex::new(BTreeSet::new()),
    });
    let server = http::Server::start(
        &cfg.http.listen,
        metrics,
        Arc::clone(&shared) as Arc<dyn http::Status>,
    )
    .map_err(|source| ServiceError::Http {
        addr: cfg.http.listen.clone(),
        source,
    })?;
    on_start(&Running {
        http_addr: server.addr,
    });

    let mut consumer = subscribe(&cfg, &shared)?;
    let mut rejoins = Rejoins::default();
    let mut suspect = false;
    let mut committing = false;
    tracing::info!(
        instance = %cfg.kafka.instance_id,
        group = %cfg.kafka.group_id,
        guarantee = ?cfg.kafka.guarantee,
        model = %model.version,
        "leadscore running"
    );

    let interval = Duration::from_millis(cfg.kafka.commit_interval_ms);
    let mut next_commit = Instant::now() + interval;
    let result = loop {
        shared.beat();
        if let Some(msg) = shared.fatal.lock().expect("fatal lock").clone() {
            break Err(ServiceError::Fatal(msg));
        }
        if shutdown.is_set() {
            break Ok(());
        }
        // A failed poll or commit may mean the group refused our static id.
        if std::mem::take(&mut suspect) && instance_fenced(&consumer) {
            if !rejoins.allow() {
                break Err(ServiceError::Fatal(format!(
                    "the group fenced instance id {} {} times in {} s: is another instance running with this instance_id?",
                    cfg.kafka.instance_id,
                    Rejoins::MAX + 1,
                    Rejoins::WINDOW.as_secs()
                )));
            }
            tracing::warn!(
                "the group fenced this instance's static id; rejoining with a new consumer"
            );
            tm::broker_error("fenced_instance");
            {
                let mut p = shared.processor.lock().expect("processor lock");
                if p.txn_open() {
                    if let Err(CommitError::Fatal(e)) = p.abort() {
                        break Err(ServiceError::Fatal(e.to_string()));
                    }
                }
                for r in std::mem::take(&mut p.partitions).into_keys() {
                    tm::partition_dropped(r);
                }
                tm::ready(false, 0);
            }
            shared.restoring.lock().expect("restoring lock").clear();
            shared.ready.store(false, Ordering::Relaxed);
            let fresh = match subscribe(&cfg, &shared) {
                Ok(c) => c,
                Err(e) => break Err(e.into()),
            };
            drop(std::mem::replace(&mut consumer, fresh));
            continue;
        }
        if let Err(e) = restore_pending(&shared) {
            break Err(e);
        }
        let wait = if committing {
            // Back soon to finish the commit once its writes are acknowledged.
            Duration::from_millis(2)
        } else {
            next_commit
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100))
        };
        let polled = consumer.poll(wait);
        suspect |= matches!(polled, Some(Err(_)));
        let mut p = shared.processor.lock().expect("processor lock");
        let step = match polled {
            Some(Ok(msg)) => p.process(&msg),
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                if let Some(part) = p.partitions.get_mut(&partition) {
                    part.eof_since.get_or_insert_with(Instant::now);
                }
                Ok(())
            }
            // A refused static id is handled at the top of the loop.
            Some(Err(e)) if kafka::is_fatal(&e) && !instance_fenced(&consumer) => {
                Err(CommitError::Fatal(e))
            }
            Some(Err(e)) => {
                tm::broker_error("poll");
                tracing::warn!(error = %e, "poll error");
                Ok(())
            }
            None => Ok(()),
        };
        let step = step.and_then(|()| p.idle_advance(Instant::now()));
        let step = step.and_then(|()| {
            // The interval runs from the end of a commit: a commit takes a
            // broker round trip or two, and must not eat the next interval.
            if p.commit_step(&consumer, Instant::now() >= next_commit)? {
                next_commit = Instant::now() + interval;
            }
            Ok(())
        });
        // Only `commit_step` starts a commit (a rebalance finishes its own).
        committing = p.committing();
        match step {
            Ok(()) => {}
            Err(CommitError::Fatal(e)) => break Err(ServiceError::Fatal(e.to_string())),
            Err(CommitError::Rewind(e)) => {
                if instance_fenced(&consumer) {
                    // Nothing to rewind: the partitions are dropped on rejoining.
                    suspect = true;
                    continue;
                }
                tracing::warn!(error = %e, "rewinding after a failed commit");
                if p.txn_open() {
                    if let Err(CommitError::Fatal(e)) = p.abort() {
                        break Err(ServiceError::Fatal(e.to_string()));
                    }
                }
                if let Err(e) = p.rewind(&consumer) {
                    if kafka::is_fatal(&e) {
                        break Err(ServiceError::Fatal(e.to_string()));
                    }
                    tracing::warn!(error = %e, "rewind failed; retrying");
                    shared
                        .restoring
                        .lock()
                        .expect("restoring lock")
                        .extend(p.partitions.keys().copied());
                }
            }
        }
    };

    // Shutdown: finish (or abort) the open transaction, then leave.
    {
        let mut p = shared.processor.lock().expect("processor lock");
        if result.is_ok() {
            if let Err(e) = p.commit(&consumer) {
                tracing::warn!(error = %e, "final commit failed; aborted");
                let _ = p.abort();
            }
        } else if p.txn_open() {
            let _ = p.abort();
        }
    }
    consumer.unsubscribe();
    drop(consumer);
    drop(server);
    tracing::info!(ok = result.is_ok(), "leadscore stopped");
    result
}
