//! `leadscore run`: the Kafka service around the engine.
//!
//! The data path is decode → fold → emit ([`crate::codec`], [`crate::engine`]);
//! this module is the shell around it, one job per file:
//!
//! - [`protocol`]: the commit protocol (exactly-once and at-least-once) as a
//!   state machine without I/O: what to commit when, abort and rewind,
//!   revocations, rejoins, shutdown;
//! - [`processor`]: performs the protocol's actions on the Kafka clients and
//!   folds input into one engine per assigned partition;
//! - [`rekey`]: the repartition topic's partitioner and the timestamp order
//!   in which re-keyed input partitions are routed;
//! - [`changelog`]: the changelog's record formats (lead state, checkpoint);
//! - [`restore`]: a partition's state read back from the changelog;
//! - [`dead_letter`]: the headers of an invalid message's dead letter;
//! - [`kafka`]: client construction, topic administration and the broker
//!   error classes, shared by `run`, `replay`, `demo` and the benchmarks;
//! - [`replay`]: `leadscore replay`, rescoring the input under another model;
//! - [`http`] and [`telemetry`]: the endpoints and every metric.
//!
//! Threads: one thread polls the consumer (rdkafka's `BaseConsumer`) and
//! drives the processor; the consumer's rebalance callbacks run inside that
//! poll. The fold stays on this thread, not on an async runtime: it is CPU
//! work that never waits, and the blocking transaction calls of librdkafka
//! would tie up a runtime's workers. Measured, not assumed: on the service
//! bench's phase 6 (`benches/service/consume.rs`: 1M events, 8 partitions,
//! each event decoded, medians of 5 rounds), rdkafka's `StreamConsumer` on
//! tokio was no faster than this polled loop (1.04M messages/s): 0.89× the
//! messages/s on a current-thread runtime and 0.91× with one multi-thread
//! worker, for 1.07× and 1.03× the CPU. The HTTP endpoints run on their own
//! tokio runtime beside it.

pub mod changelog;
pub mod dead_letter;
pub mod http;
pub mod kafka;
pub mod peer;
pub mod processor;
pub mod protocol;
pub mod registry;
pub mod rekey;
pub mod release;
pub mod replay;
pub mod restore;
pub mod telemetry;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::ClientContext;

use crate::config::Config;
use crate::model::{Model, ModelError};
use processor::{Control, Incoming, Processor};
use protocol::Stop;
use telemetry as tm;

/// Why the service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("model {path}: {source}")]
    Model { path: String, source: ModelError },
    #[error(transparent)]
    Start(#[from] kafka::StartError),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The instance must not go on; the message says why and what to do.
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
    /// The model the partitions' engines fold under.
    model: Arc<Model>,
    ready: AtomicBool,
    /// Last turn of the processing loop (ms since `started`).
    heartbeat: AtomicU64,
    started: Instant,
    /// Set by a rebalance callback that could not finish its work.
    stop: Mutex<Option<Control>>,
    /// Which instance owns which partition; this one's entry.
    registry: registry::Registry,
}

impl Shared {
    fn beat(&self) {
        self.heartbeat
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn processor(&self) -> std::sync::MutexGuard<'_, Processor> {
        self.processor.lock().expect("processor lock")
    }

    fn control(&self, c: Option<Control>) {
        if let Some(c) = c {
            self.stop.lock().expect("stop lock").get_or_insert(c);
        }
    }
}

impl http::Status for Shared {
    fn healthy(&self) -> bool {
        let last = self.heartbeat.load(Ordering::Relaxed);
        self.started.elapsed().as_millis() as u64 - last < 30_000
            && !matches!(
                *self.stop.lock().expect("stop lock"),
                Some(Control::Stop(Stop::Fatal(_)))
            )
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn lead(&self, id: &str) -> Option<String> {
        self.processor.lock().ok()?.lead_json(id)
    }

    fn lead_at(&self, id: &str, at: crate::time::Micros) -> Option<String> {
        self.processor.lock().ok()?.lead_json_at(id, Some(at))
    }

    fn call_list(
        &self,
        q: &crate::engine::CallListQuery,
    ) -> Result<crate::engine::CallList, crate::engine::QueryError> {
        let p = self.processor();
        crate::engine::calllist::draw(p.partitions.values().map(|x| &x.engine), &self.model, q)
    }

    fn route(&self, id: &str) -> http::Route {
        self.registry.route(id)
    }

    fn peers(&self) -> http::Peers {
        self.registry.peers()
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
        tm::broker_error(tm::BROKER_CONSUMER);
        tracing::warn!(%error, reason, "consumer error");
    }
}

fn partitions_of(tpl: &rdkafka::TopicPartitionList) -> Vec<i32> {
    let mut v: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

impl ConsumerContext for ConsumerCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        tm::rebalance(tm::REVOKE, tpl.count());
        self.shared.ready.store(false, Ordering::Relaxed);
        // Finish the open transaction while the partitions are still ours.
        let mut p = self.shared.processor();
        let c = p.revoking(partitions_of(tpl), consumer);
        self.shared
            .registry
            .publish(p.partitions.keys().copied().collect());
        drop(p);
        self.shared.control(c);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tm::rebalance(tm::ASSIGN, tpl.count());
                // Restored by the loop before any of their messages is processed.
                self.shared.processor().assigned(partitions_of(tpl));
                self.shared.ready.store(false, Ordering::Relaxed);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tm::broker_error(tm::BROKER_REBALANCE);
                tracing::warn!(error = %e, "rebalance error");
            }
        }
    }
}

/// The wall clock, in event-time units. Only the idle advance, the latency
/// metrics and the demo's traffic read it; the engine never does.
pub fn wall_micros() -> crate::time::Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as crate::time::Micros)
        .unwrap_or(0)
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
    let consumer: BaseConsumer<ConsumerCtx> =
        kafka::group_consumer(cfg).create_with_context(ConsumerCtx {
            shared: Arc::clone(shared),
        })?;
    let mut topics: Vec<String> = cfg.kafka.input_topics.clone();
    if cfg.rekeys() {
        // Read back by the same group: partition q of the repartition topic
        // is assigned with partition q of the input (co-partitioned).
        topics.push(cfg.repartition_topic());
    }
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// True when the consumer stopped because the group refused its static
/// instance id.
fn instance_fenced<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> bool {
    consumer.client().fatal_error().map(|(code, _)| code)
        == Some(rdkafka::types::RDKafkaErrorCode::FencedInstanceId)
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
        Some(path) => Model::from_path(path).map_err(|source| ServiceError::Model {
            path: path.display().to_string(),
            source,
        })?,
        None => Model::default_model(),
    });
    let metrics = tm::install();
    tm::ready(false, 0);
    let partitions = kafka::ensure_topics(&cfg)?;
    let processor = Processor::new(Arc::clone(&cfg), Arc::clone(&model), partitions)?;
    let registry = registry::Registry::start(&cfg, partitions)?;
    let shared = Arc::new(Shared {
        registry,
        processor: Mutex::new(processor),
        model: Arc::clone(&model),
        ready: AtomicBool::new(false),
        heartbeat: AtomicU64::new(0),
        started: Instant::now(),
        stop: Mutex::new(None),
    });
    let server = http::Server::start_with_access(
        &cfg.http.listen,
        metrics,
        Arc::clone(&shared) as Arc<dyn http::Status>,
        http::Limits::default(),
        http::LeadAccess::from_config(&cfg.http),
    )
    .map_err(|source| ServiceError::Http {
        addr: cfg.http.listen.clone(),
        source,
    })?;
    shared.registry.set_url(cfg.advertised_url(server.addr));
    on_start(&Running {
        http_addr: server.addr,
    });

    let mut consumer = subscribe(&cfg, &shared)?;
    tracing::info!(
        instance = %cfg.kafka.instance_id,
        group = %cfg.kafka.group_id,
        guarantee = ?cfg.kafka.guarantee,
        model = %model.version,
        "leadscore running"
    );
    let result = loop {
        shared.beat();
        if shutdown.is_set() {
            break Ok(());
        }
        let control = shared.stop.lock().expect("stop lock").take();
        let control = control.or_else(|| turn(&shared, &consumer));
        match control {
            None => {}
            Some(Control::Rejoin) => {
                tracing::warn!(
                    "the group refused this instance's static id; rejoining with a new consumer"
                );
                tm::broker_error(tm::BROKER_FENCED_INSTANCE);
                shared.ready.store(false, Ordering::Relaxed);
                match subscribe(&cfg, &shared) {
                    Ok(fresh) => drop(std::mem::replace(&mut consumer, fresh)),
                    Err(e) => break Err(e.into()),
                }
            }
            Some(Control::Stop(Stop::Shutdown)) => break Ok(()),
            Some(Control::Stop(Stop::Fatal(msg))) => {
                tracing::error!(error = %msg, "stopping");
                break Err(ServiceError::Fatal(msg));
            }
        }
    };

    // Shutdown: finish (or abort) the open transaction, then leave. After
    // an error, what is open is aborted and nothing more is committed (the
    // revocation when the consumer closes included).
    match &result {
        Ok(()) => shared.processor().shutdown(&consumer),
        Err(e) => shared.processor().halt(e.to_string(), &consumer),
    }
    consumer.unsubscribe();
    drop(consumer);
    drop(server);
    tracing::info!(ok = result.is_ok(), "leadscore stopped");
    result
}

/// One turn of the loop: restores and commits the protocol asks for, one
/// poll, its message folded, idle partitions advanced, the clock ticked.
fn turn(shared: &Shared, consumer: &BaseConsumer<ConsumerCtx>) -> Option<Control> {
    let wait = {
        let mut p = shared.processor();
        if let Some(c) = p.drive(consumer) {
            return Some(c);
        }
        if !shared.ready.load(Ordering::Relaxed) && p.restored() {
            shared.ready.store(true, Ordering::Relaxed);
            tm::ready(true, p.partitions.len());
            // Restored: this instance answers for them now.
            shared
                .registry
                .publish(p.partitions.keys().copied().collect());
        }
        p.wait()
    };
    // The rebalance callbacks run inside this poll and take the processor
    // lock themselves.
    let polled = consumer.poll(wait);
    let mut p = shared.processor();
    match polled {
        Some(Ok(msg)) => {
            let headers = if p.reads_headers() {
                msg.headers()
            } else {
                None
            };
            let c = p.process(
                &Incoming {
                    topic: msg.topic(),
                    partition: msg.partition(),
                    offset: msg.offset(),
                    key: msg.key(),
                    payload: msg.payload(),
                    timestamp: msg.timestamp().to_millis(),
                    headers,
                },
                consumer,
            );
            if c.is_some() {
                return c;
            }
        }
        Some(Err(KafkaError::PartitionEOF(partition))) => p.at_end(partition),
        Some(Err(_)) if instance_fenced(consumer) => {
            if let Some(c) = p.instance_fenced(consumer) {
                return Some(c);
            }
        }
        Some(Err(e)) if kafka::is_fatal(&e) => {
            return Some(Control::Stop(Stop::Fatal(format!(
                "fatal Kafka error: {e}"
            ))))
        }
        Some(Err(e)) => {
            tm::broker_error(tm::BROKER_POLL);
            tracing::warn!(error = %e, "poll error");
        }
        None => {}
    }
    if let Some(c) = p.route_ready(consumer) {
        return Some(c);
    }
    p.idle_advance(Instant::now(), consumer);
    p.tick();
    p.drive(consumer)
}
