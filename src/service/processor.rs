//! The processing shell around the engines: one engine per assigned
//! partition, the open transaction (status changes, dead letters, changelog,
//! offsets), restore from the changelog, and rewinding after an abort.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::kafka::{client_config, is_fatal, CALL_TIMEOUT};
use super::telemetry as tm;
use crate::change::StatusChange;
use crate::codec::{decode_keyed, encode_change_json, encode_change_proto, Format};
use crate::config::{Config, Guarantee};
use crate::engine::{snapshot, Engine, NO_TIME};
use crate::model::Model;
use crate::time::Micros;

/// Counts failed deliveries, so a commit can tell that a write was lost.
#[derive(Default)]
pub struct ProducerCtx {
    pub failures: AtomicU64,
}

impl ClientContext for ProducerCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        tm::broker_error("producer");
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

/// What went wrong with a commit, and what the caller must do.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The transaction was aborted (or writes were lost): state must be
    /// rebuilt from the changelog and the input re-read from the committed offsets.
    #[error("commit failed, rewinding to the last commit: {0}")]
    Rewind(KafkaError),
    /// This instance must stop (fenced by a newer instance, not authorised).
    #[error("fatal Kafka error: {0}")]
    Fatal(KafkaError),
}

/// The key of a partition's checkpoint record in the changelog: empty, which
/// no lead id is (lead ids are required to be non-empty).
pub(crate) const CHECKPOINT_KEY: &[u8] = b"";

/// One assigned partition (of every input topic).
pub struct Partition {
    pub engine: Engine,
    /// Next offset to process, per input topic; -1 while unknown.
    next: Vec<i64>,
    /// Messages below these offsets are already in the restored state.
    skip_below: Vec<i64>,
    /// At the end of its log since (for wall-clock advance).
    pub eof_since: Option<Instant>,
    /// Processed something since the last commit.
    active: bool,
}

impl Partition {
    fn new(engine: Engine, topics: usize) -> Partition {
        Partition {
            engine,
            next: vec![-1; topics],
            skip_below: vec![-1; topics],
            eof_since: None,
            active: false,
        }
    }
}

/// A transaction whose commit has started.
struct Committing {
    offsets: TopicPartitionList,
    /// Event times of its changes (for the emit-latency metric).
    times: Vec<Micros>,
    since: Instant,
}

/// A write made while the previous transaction commits.
struct Held {
    topic: String,
    partition: Option<i32>,
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
}

/// A commit waits at most this long for its writes to be acknowledged
/// while processing goes on; then it blocks until they are.
const COMMIT_OVERLAP: Duration = Duration::from_secs(1);
/// ... or until this many writes are held for the next transaction.
const HOLD_LIMIT: usize = 200_000;

pub struct Processor {
    cfg: Arc<Config>,
    model: Arc<Model>,
    lateness: Micros,
    changelog: String,
    pub partitions: BTreeMap<i32, Partition>,
    pub producer: BaseProducer<ProducerCtx>,
    txn_open: bool,
    /// Event times of the changes written since the last commit.
    pending_times: Vec<Micros>,
    /// Exactly-once: the open transaction is being committed (its changelog
    /// written, its offsets fixed) while processing goes on, its writes held
    /// in `held` for the next transaction.
    committing: Option<Committing>,
    held: Vec<Held>,
    /// Input was processed while committing: the next transaction has work
    /// (offsets at least) even if nothing was written.
    held_work: bool,
    changes: Vec<StatusChange>,
    buf: Vec<u8>,
    folds: u64,
    counters: tm::EventCounters,
}

impl Processor {
    /// Creates the producer (and, for exactly-once, initialises transactions,
    /// which fences any older instance with the same `instance_id`).
    pub fn new(cfg: Arc<Config>, model: Arc<Model>) -> Result<Processor, KafkaError> {
        let mut pc = client_config(&cfg);
        pc.set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Back-to-back transactions stall on CONCURRENT_TRANSACTIONS for
            // retry.backoff.ms; the default (100 ms) would set the pace.
            .set("retry.backoff.ms", "10");
        if cfg.kafka.guarantee == Guarantee::ExactlyOnce {
            pc.set("transactional.id", cfg.transactional_id())
                .set("transaction.timeout.ms", "60000")
                .set("message.timeout.ms", "60000");
        }
        for (k, v) in &cfg.kafka.properties {
            pc.set(k, v);
        }
        let producer: BaseProducer<ProducerCtx> = pc.create_with_context(ProducerCtx::default())?;
        if cfg.kafka.guarantee == Guarantee::ExactlyOnce {
            super::kafka::retry("init transactions", || {
                producer.init_transactions(CALL_TIMEOUT).map_err(|e| {
                    if is_fatal(&e) {
                        e
                    } else {
                        tracing::warn!(error = %e, "init_transactions failed");
                        e
                    }
                })
            })?;
        }
        Ok(Processor {
            lateness: cfg.allowed_lateness().unwrap_or(0),
            changelog: cfg.changelog_topic(),
            cfg,
            model,
            partitions: BTreeMap::new(),
            producer,
            txn_open: false,
            pending_times: Vec::new(),
            committing: None,
            held: Vec::new(),
            held_work: false,
            changes: Vec::new(),
            buf: Vec::with_capacity(1024),
            folds: 0,
            counters: tm::EventCounters::default(),
        })
    }

    fn exactly_once(&self) -> bool {
        self.cfg.kafka.guarantee == Guarantee::ExactlyOnce
    }

    pub fn txn_open(&self) -> bool {
        self.txn_open
    }

    fn ensure_txn(&mut self) -> Result<(), CommitError> {
        if self.committing.is_some() {
            self.held_work = true;
            return Ok(());
        }
        if self.exactly_once() && !self.txn_open {
            self.producer.begin_transaction().map_err(classify)?;
        }
        self.txn_open = true;
        Ok(())
    }

    /// True while a commit overlaps processing.
    pub fn committing(&self) -> bool {
        self.committing.is_some()
    }

    /// Sends a record (or holds it while the previous transaction commits).
    fn send(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) {
        if self.committing.is_some() {
            self.held.push(Held {
                topic: topic.to_string(),
                partition,
                key: key.to_vec(),
                payload: payload.to_vec(),
                headers,
            });
            return;
        }
        produce(&self.producer, topic, partition, key, payload, headers);
    }

    fn emit_changes(&mut self) {
        let topic = self.cfg.kafka.status_topic.clone();
        let changes = std::mem::take(&mut self.changes);
        let mut buf = std::mem::take(&mut self.buf);
        for c in &changes {
            buf.clear();
            match self.cfg.kafka.output_format {
                Format::Json => encode_change_json(c, &mut buf),
                Format::Protobuf => encode_change_proto(c, &mut buf),
            }
            self.send(&topic, None, c.lead_id.as_bytes(), &buf, None);
            tm::change_emitted(c);
            self.pending_times.push(c.occurred_at);
        }
        self.buf = buf;
        self.changes = changes;
        self.changes.clear();
    }

    /// Processes one input message: fold it, or dead-letter it.
    pub fn process(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), CommitError> {
        let p = msg.partition();
        let Some(ti) = self
            .cfg
            .kafka
            .input_topics
            .iter()
            .position(|t| t == msg.topic())
        else {
            return Ok(());
        };
        let Some(part) = self.partitions.get(&p) else {
            tracing::warn!(
                partition = p,
                "message for a partition not assigned here; skipped"
            );
            return Ok(());
        };
        if msg.offset() < part.skip_below[ti] {
            return Ok(());
        }
        self.ensure_txn()?;
        let payload = msg.payload().unwrap_or(&[]);
        let decoded = decode_keyed(
            self.cfg.kafka.input_format,
            msg.key(),
            payload,
            self.cfg.kafka.max_event_bytes,
        );
        match decoded {
            Ok(event) => {
                let part = self.partitions.get_mut(&p).expect("checked above");
                self.folds += 1;
                let outcome = if self.folds % 64 == 0 {
                    let t = Instant::now();
                    let o = part.engine.fold(&event, &mut self.changes);
                    tm::fold_time(t.elapsed());
                    o
                } else {
                    part.engine.fold(&event, &mut self.changes)
                };
                self.counters
                    .folded(&self.model, &event.event_type, outcome);
                if !self.changes.is_empty() {
                    self.emit_changes();
                }
            }
            Err(e) => {
                let code = e.code();
                tm::dead_letter(code);
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "leadscore.reason",
                        value: Some(code),
                    })
                    .insert(Header {
                        key: "leadscore.error",
                        value: Some(&e.to_string()),
                    })
                    .insert(Header {
                        key: "leadscore.source.topic",
                        value: Some(msg.topic()),
                    })
                    .insert(Header {
                        key: "leadscore.source.partition",
                        value: Some(&p.to_string()),
                    })
                    .insert(Header {
                        key: "leadscore.source.offset",
                        value: Some(&msg.offset().to_string()),
                    });
                let dlq = self.cfg.kafka.dead_letter_topic.clone();
                self.send(&dlq, None, msg.key().unwrap_or(&[]), payload, Some(headers));
            }
        }
        let part = self.partitions.get_mut(&p).expect("checked above");
        part.next[ti] = msg.offset() + 1;
        part.eof_since = None;
        part.active = true;
        Ok(())
    }

    /// Advances idle partitions (at the end of their log for the configured
    /// time) to the wall clock, so timers fall due with no new traffic.
    pub fn idle_advance(&mut self, now: Instant) -> Result<(), CommitError> {
        let idle = Duration::from_millis(self.cfg.kafka.idle_advance_ms);
        if idle.is_zero() {
            return Ok(());
        }
        let wall = wall_micros() - self.lateness;
        let due: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(_, part)| {
                part.eof_since
                    .is_some_and(|t| now.duration_since(t) >= idle)
                    && part.engine.watermark() < wall
            })
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            self.ensure_txn()?;
            let part = self.partitions.get_mut(&p).expect("listed above");
            part.engine.advance_to(wall, &mut self.changes);
            part.active = true;
            if !self.changes.is_empty() {
                self.emit_changes();
            }
        }
        Ok(())
    }

    /// Writes the leads changed since the last commit, and a checkpoint per
    /// active partition, to the changelog.
    fn write_changelog(&mut self) {
        let topics = self.cfg.kafka.input_topics.clone();
        let changelog = self.changelog.clone();
        let mut records: Vec<(i32, Vec<u8>, Vec<u8>)> = Vec::new();
        for (&p, part) in &mut self.partitions {
            let model = Arc::clone(&self.model);
            part.engine.drain_dirty(|lead| {
                let mut v = Vec::with_capacity(256);
                snapshot::encode(lead, &model, &mut v);
                records.push((p, lead.id().as_bytes().to_vec(), v));
            });
            if part.active {
                records.push((p, CHECKPOINT_KEY.to_vec(), encode_checkpoint(part, &topics)));
                part.active = false;
                tm::partition_state(
                    p,
                    part.engine.lead_count(),
                    part.engine.timers_pending(),
                    part.engine.watermark(),
                );
            }
        }
        for (p, k, v) in records {
            self.send(&changelog, Some(p), &k, &v, None);
        }
    }

    fn offsets(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (&p, part) in &self.partitions {
            for (ti, &next) in part.next.iter().enumerate() {
                if next >= 0 {
                    let _ = tpl.add_partition_offset(
                        &self.cfg.kafka.input_topics[ti],
                        p,
                        Offset::Offset(next),
                    );
                }
            }
        }
        tpl
    }

    /// Commits everything processed so far and waits for it: one
    /// transaction (exactly-once) or writes-then-offsets (at-least-once).
    /// For rebalances and shutdown; the loop uses [`Processor::commit_step`].
    pub fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), CommitError> {
        if !self.exactly_once() {
            return self.commit_alo(consumer);
        }
        if self.committing.is_some() {
            self.finish_commit(consumer)?;
        }
        if self.txn_open {
            self.start_commit();
            self.finish_commit(consumer)?;
        }
        Ok(())
    }

    /// The loop's commit: when `due`, an exactly-once commit starts (the
    /// changelog is written and the offsets fixed) and processing goes on
    /// while its writes are acknowledged; a later step finishes it with the
    /// offsets and the commit, which are then quick. Returns true when a
    /// commit finished (or was due with nothing to commit): the next
    /// interval starts then.
    pub fn commit_step<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        due: bool,
    ) -> Result<bool, CommitError> {
        if !self.exactly_once() {
            if due {
                self.commit_alo(consumer)?;
            }
            return Ok(due);
        }
        if let Some(c) = &self.committing {
            self.producer.poll(Duration::ZERO);
            let ready = self.producer.in_flight_count() == 0
                || c.since.elapsed() >= COMMIT_OVERLAP
                || self.held.len() >= HOLD_LIMIT;
            if ready {
                self.finish_commit(consumer)?;
            }
            return Ok(ready);
        }
        if due && self.txn_open {
            self.start_commit();
            return Ok(false);
        }
        Ok(due)
    }

    fn start_commit(&mut self) {
        self.write_changelog();
        self.committing = Some(Committing {
            offsets: self.offsets(),
            times: std::mem::take(&mut self.pending_times),
            since: Instant::now(),
        });
    }

    /// Sends the offsets and commits the transaction started by
    /// `start_commit`; then opens the next one with the writes held meanwhile.
    fn finish_commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), CommitError> {
        let Some(c) = self.committing.take() else {
            return Ok(());
        };
        let attempt = || -> Result<(), KafkaError> {
            if c.offsets.count() > 0 {
                let meta = consumer.group_metadata().ok_or(KafkaError::Subscription(
                    "no consumer group metadata".into(),
                ))?;
                self.producer
                    .send_offsets_to_transaction(&c.offsets, &meta, CALL_TIMEOUT)?;
            }
            self.producer.commit_transaction(CALL_TIMEOUT)
        };
        let result = match attempt() {
            Ok(()) if self.producer.context().failures.swap(0, Ordering::Relaxed) == 0 => Ok(()),
            Ok(()) => Err(CommitError::Rewind(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            ))),
            Err(e) if is_fatal(&e) => Err(CommitError::Fatal(e)),
            Err(e) => {
                self.abort()?;
                Err(CommitError::Rewind(e))
            }
        };
        self.txn_open = false;
        match &result {
            Ok(()) => {
                tm::transaction(true);
                let now = wall_micros();
                for t in c.times {
                    tm::emit_latency((now - t) as f64 / 1e6);
                }
            }
            Err(e) => {
                tm::transaction(false);
                self.drop_held();
                tracing::warn!(error = %e, "commit failed");
                return result;
            }
        }
        // The next transaction: what was processed while this one committed.
        if self.held_work || !self.held.is_empty() {
            self.held_work = false;
            self.ensure_txn()?;
            for h in std::mem::take(&mut self.held) {
                produce(
                    &self.producer,
                    &h.topic,
                    h.partition,
                    &h.key,
                    &h.payload,
                    h.headers,
                );
            }
        }
        Ok(())
    }

    fn drop_held(&mut self) {
        self.committing = None;
        self.held.clear();
        self.held_work = false;
        self.pending_times.clear();
    }

    fn commit_alo<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), CommitError> {
        if !self.txn_open {
            return Ok(());
        }
        let result = self.commit_at_least_once(consumer);
        self.txn_open = false;
        match &result {
            Ok(()) => {
                tm::transaction(true);
                let now = wall_micros();
                for t in self.pending_times.drain(..) {
                    tm::emit_latency((now - t) as f64 / 1e6);
                }
            }
            Err(e) => {
                tm::transaction(false);
                self.pending_times.clear();
                tracing::warn!(error = %e, "commit failed");
            }
        }
        result
    }

    /// Aborts the open transaction, retrying while the broker is away.
    pub fn abort(&mut self) -> Result<(), CommitError> {
        if !self.exactly_once() {
            return Ok(());
        }
        // The abort purges what is still queued and waits until every record
        // is reported; the reports reach this thread's event queue only when
        // the producer is polled, so the abort is retried with short timeouts
        // and the queue served in between.
        let started = Instant::now();
        let mut warned = false;
        loop {
            self.producer.poll(Duration::ZERO);
            match self.producer.abort_transaction(Duration::from_millis(500)) {
                Ok(()) => break,
                Err(e) if is_fatal(&e) => return Err(CommitError::Fatal(e)),
                Err(KafkaError::Transaction(t)) if t.code() == RDKafkaErrorCode::State => break,
                Err(e) => {
                    if !warned && started.elapsed() > Duration::from_secs(5) {
                        tracing::warn!(error = %e, "abort not finished; retrying");
                        warned = true;
                    }
                    self.producer.poll(Duration::from_millis(100));
                }
            }
        }
        self.producer.context().failures.store(0, Ordering::Relaxed);
        self.txn_open = false;
        self.drop_held();
        tm::transaction(false);
        Ok(())
    }

    fn commit_at_least_once<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), CommitError> {
        // Changes and dead letters first, then the state that reflects them,
        // then the offsets: a crash in between re-emits identical changes.
        let flush = |p: &Self| -> Result<(), CommitError> {
            super::kafka::flush(&p.producer, CALL_TIMEOUT).map_err(CommitError::Rewind)?;
            if p.producer.context().failures.swap(0, Ordering::Relaxed) > 0 {
                return Err(CommitError::Rewind(KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageTimedOut,
                )));
            }
            Ok(())
        };
        flush(self)?;
        self.write_changelog();
        flush(self)?;
        let offsets = self.offsets();
        if offsets.count() > 0 {
            consumer
                .commit(&offsets, rdkafka::consumer::CommitMode::Sync)
                .map_err(classify)?;
        }
        Ok(())
    }

    /// Restores a partition's state from the changelog.
    pub fn restore(&self, p: i32) -> Result<Partition, KafkaError> {
        let (engine, checkpoint) = restore_engine(&self.cfg, &self.model, &self.changelog, p)?;
        let topics = self.cfg.kafka.input_topics.len();
        let mut part = Partition::new(engine, topics);
        if let Some(cp) = checkpoint {
            for (ti, t) in self.cfg.kafka.input_topics.iter().enumerate() {
                if let Some((_, off)) = cp.offsets.iter().find(|(name, _)| name == t) {
                    part.skip_below[ti] = *off;
                }
            }
        }
        Ok(part)
    }

    /// Restores several partitions, on as many threads as there are cores
    /// (decoding the state is the work; each partition has its own reader).
    /// Each is retried on transient errors.
    pub fn restore_all(&self, partitions: &[i32]) -> Result<Vec<(i32, Partition)>, KafkaError> {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(partitions.len());
        if threads <= 1 {
            return partitions
                .iter()
                .map(|&p| {
                    Ok((
                        p,
                        super::kafka::retry("restore partition", || self.restore(p))?,
                    ))
                })
                .collect();
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = std::sync::Mutex::new(Vec::with_capacity(partitions.len()));
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&p) = partitions.get(i) else { break };
                    let r = super::kafka::retry("restore partition", || self.restore(p));
                    results.lock().expect("results lock").push((p, r));
                });
            }
        });
        let mut out = Vec::with_capacity(partitions.len());
        for (p, r) in results.into_inner().expect("results lock") {
            out.push((p, r?));
        }
        Ok(out)
    }

    /// After an abort: rebuilds every partition from the changelog and moves
    /// the consumer back to the committed offsets.
    pub fn rewind<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), KafkaError> {
        let assigned: Vec<i32> = self.partitions.keys().copied().collect();
        tracing::warn!(partitions = assigned.len(), "rewinding to the last commit");
        for (p, part) in self.restore_all(&assigned)? {
            self.partitions.insert(p, part);
        }
        let mut tpl = TopicPartitionList::new();
        for &p in &assigned {
            for t in &self.cfg.kafka.input_topics {
                tpl.add_partition(t, p);
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        let committed = super::kafka::retry("fetch committed offsets", || {
            consumer.committed_offsets(tpl.clone(), CALL_TIMEOUT)
        })?;
        let mut seek = TopicPartitionList::new();
        for e in committed.elements() {
            let off = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            seek.add_partition_offset(e.topic(), e.partition(), off)?;
        }
        super::kafka::retry("seek", || {
            consumer
                .seek_partitions(seek.clone(), CALL_TIMEOUT)
                .map(|_| ())
        })?;
        Ok(())
    }
}

/// Sends a record, waiting for room in the local queue if it is full; a
/// record that cannot be queued is counted as a lost write (the commit
/// then rewinds).
pub(crate) fn produce(
    producer: &BaseProducer<ProducerCtx>,
    topic: &str,
    partition: Option<i32>,
    key: &[u8],
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
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

fn classify(e: KafkaError) -> CommitError {
    if is_fatal(&e) {
        CommitError::Fatal(e)
    } else {
        CommitError::Rewind(e)
    }
}

/// The wall clock, in event-time units. Only the idle advance and latency
/// metrics read it; the engine never does.
pub fn wall_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as Micros)
        .unwrap_or(0)
}

/// A partition's checkpoint: its watermark and the next input offsets that
/// its state reflects.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub watermark: Micros,
    pub offsets: Vec<(String, i64)>,
}

fn encode_checkpoint(part: &Partition, topics: &[String]) -> Vec<u8> {
    checkpoint_bytes(part.engine.watermark(), topics, &part.next)
}

/// A checkpoint record: the watermark, then the next offset of each input
/// topic whose offset is known (`next[i] >= 0`).
pub(crate) fn checkpoint_bytes(watermark: Micros, topics: &[String], next: &[i64]) -> Vec<u8> {
    let mut v = vec![1u8];
    v.extend_from_slice(&watermark.to_le_bytes());
    let known: Vec<_> = topics.iter().zip(next).filter(|(_, &n)| n >= 0).collect();
    v.extend_from_slice(&(known.len() as u16).to_le_bytes());
    for (t, &n) in known {
        v.extend_from_slice(&(t.len() as u16).to_le_bytes());
        v.extend_from_slice(t.as_bytes());
        v.extend_from_slice(&n.to_le_bytes());
    }
    v
}

pub fn decode_checkpoint(b: &[u8]) -> Option<Checkpoint> {
    let take = |b: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h.to_vec())
    };
    let mut b = b;
    if take(&mut b, 1)?[0] != 1 {
        return None;
    }
    let watermark = i64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?);
    let n = u16::from_le_bytes(take(&mut b, 2)?.try_into().ok()?);
    let mut offsets = Vec::new();
    for _ in 0..n {
        let len = u16::from_le_bytes(take(&mut b, 2)?.try_into().ok()?) as usize;
        let t = String::from_utf8(take(&mut b, len)?).ok()?;
        let off = i64::from_le_bytes(take(&mut b, 8)?.try_into().ok()?);
        offsets.push((t, off));
    }
    Some(Checkpoint { watermark, offsets })
}

/// The restore consumer's context: the end of the changelog partition is how
/// a restore ends, not an error worth a log line.
pub struct RestoreCtx;

impl ClientContext for RestoreCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::warn!(%error, reason, "changelog consumer error");
        }
    }
}

impl ConsumerContext for RestoreCtx {}

/// Reads a changelog partition from the beginning to its end (committed
/// records only) into a fresh engine. Returns the engine and the last checkpoint.
pub fn restore_engine(
    cfg: &Config,
    model: &Arc<Model>,
    changelog: &str,
    p: i32,
) -> Result<(Engine, Option<Checkpoint>), KafkaError> {
    let started = Instant::now();
    let mut cc = client_config(cfg);
    cc.set("group.id", format!("{}-restore", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        // A changelog written in transactions ends with a commit marker, so
        // the end is only known from an empty fetch: don't wait long on one.
        .set("fetch.wait.max.ms", "10")
        // Decoding is slower than fetching: with the default 1 s back-off
        // after a full prefetch queue the restore waited most of its time.
        .set("fetch.queue.backoff.ms", "10");
    let consumer: BaseConsumer<RestoreCtx> = cc.create_with_context(RestoreCtx)?;
    let (low, high) = consumer.fetch_watermarks(changelog, p, CALL_TIMEOUT)?;
    let mut engine = Engine::with_lateness(Arc::clone(model), cfg.allowed_lateness().unwrap_or(0));
    let mut checkpoint = None;
    let mut leads = 0u64;
    if high > low {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(changelog, p, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let mut last_progress = Instant::now();
        loop {
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    let key = m.key().unwrap_or(&[]);
                    let Some(value) = m.payload() else { continue };
                    if key.is_empty() {
                        checkpoint = decode_checkpoint(value);
                    } else {
                        match snapshot::decode(value, model) {
                            Ok(lead) => {
                                engine.restore(lead);
                                leads += 1;
                            }
                            Err(e) => {
                                // A state written under another rule layout cannot be used.
                                tracing::error!(partition = p, offset = m.offset(), error = %e, "cannot restore lead state");
                                return Err(KafkaError::MessageConsumptionFatal(
                                    RDKafkaErrorCode::InvalidRecord,
                                ));
                            }
                        }
                    }
                    if m.offset() + 1 >= high {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, partition = p, "changelog read error; retrying");
                    if last_progress.elapsed() > Duration::from_secs(120) {
                        return Err(e);
                    }
                }
                None => {
                    if last_progress.elapsed() > Duration::from_secs(120) {
                        return Err(KafkaError::MessageConsumption(
                            RDKafkaErrorCode::OperationTimedOut,
                        ));
                    }
                }
            }
        }
    }
    super::kafka::close(consumer);
    if let Some(cp) = &checkpoint {
        if cp.watermark != NO_TIME {
            engine.set_watermark(cp.watermark);
        }
    }
    tm::restored(p, leads, started.elapsed());
    tm::partition_state(
        p,
        engine.lead_count(),
        engine.timers_pending(),
        engine.watermark(),
    );
    Ok((engine, checkpoint))
}
