//! The processing shell: one engine per assigned partition, input folded or
//! dead-lettered, and the [`Protocol`]'s actions performed on the Kafka
//! clients (transactions, changelog writes, offsets, restores, rewinds).
//!
//! The protocol decides; this module only does. Each action's result goes
//! back to the protocol, which may queue more: [`Processor::drive`] runs
//! them until none is left, and hands back what only the loop can do
//! (replace the consumer, stop).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::changelog::{self, CHECKPOINT_KEY};
use super::dead_letter;
use super::kafka::{self, is_fatal, produce, ProducerCtx, CALL_TIMEOUT};
use super::protocol::{Action, CheckpointAt, Failure, Mode, Positions, Protocol, Settings, Stop};
use super::restore::{self, RestoreError};
use super::telemetry as tm;
use super::wall_micros;
use crate::change::StatusChange;
use crate::codec::{decode_keyed, encode_change_json, encode_change_proto, Format};
use crate::config::{Config, Guarantee};
use crate::engine::Engine;
use crate::model::Model;
use crate::time::Micros;

/// One input message, as the shell hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
}

/// One assigned partition (of every input topic).
pub struct Partition {
    pub engine: Engine,
    /// Messages below these offsets (per input topic) are already in the
    /// restored state (at-least-once: the changelog may be ahead of the
    /// committed offsets).
    skip_below: Vec<i64>,
    /// At the end of its log since (for the wall-clock advance).
    pub eof_since: Option<Instant>,
}

/// A write made while the previous transaction commits.
struct Held {
    topic: String,
    partition: Option<i32>,
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
}

/// What the loop must do after [`Processor::drive`].
#[derive(Debug, PartialEq, Eq)]
pub enum Control {
    /// Replace the consumer (the group refused the static id).
    Rejoin,
    Stop(Stop),
}

pub struct Processor {
    cfg: Arc<Config>,
    model: Arc<Model>,
    changelog: String,
    pub partitions: BTreeMap<i32, Partition>,
    producer: BaseProducer<ProducerCtx>,
    protocol: Protocol,
    /// The protocol's clock: time since the processor started.
    started: Instant,
    held: Vec<Held>,
    /// Event times of the changes written since the last commit, and of
    /// those of the committing transaction (for the emit-latency metric).
    pending_times: Vec<Micros>,
    committing_times: Vec<Micros>,
    changes: Vec<StatusChange>,
    buf: Vec<u8>,
    folds: u64,
    counters: tm::EventCounters,
}

impl Processor {
    /// Creates the producer (and, for exactly-once, initialises transactions,
    /// which fences any older instance with the same `instance_id`).
    pub fn new(cfg: Arc<Config>, model: Arc<Model>) -> Result<Processor, KafkaError> {
        let mode = match cfg.kafka.guarantee {
            Guarantee::ExactlyOnce => Mode::ExactlyOnce,
            Guarantee::AtLeastOnce => Mode::AtLeastOnce,
        };
        let txn_id = cfg.transactional_id();
        let producer: BaseProducer<ProducerCtx> = kafka::producer(
            &cfg,
            (mode == Mode::ExactlyOnce).then_some(txn_id.as_str()),
            5,
        )
        .create_with_context(ProducerCtx::default())?;
        if mode == Mode::ExactlyOnce {
            kafka::retry("init transactions", || {
                producer.init_transactions(CALL_TIMEOUT)
            })?;
        }
        let settings = Settings::new(mode, Duration::from_millis(cfg.kafka.commit_interval_ms));
        Ok(Processor {
            protocol: Protocol::new(settings, cfg.kafka.input_topics.len(), Duration::ZERO),
            started: Instant::now(),
            changelog: cfg.changelog_topic(),
            cfg,
            model,
            partitions: BTreeMap::new(),
            producer,
            held: Vec::new(),
            pending_times: Vec::new(),
            committing_times: Vec::new(),
            changes: Vec::new(),
            buf: Vec::with_capacity(1024),
            folds: 0,
            counters: tm::EventCounters::default(),
        })
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// How long the loop may wait for input before the next [`Processor::tick`].
    pub fn wait(&self) -> Duration {
        self.protocol.wait(self.now())
    }

    /// Sends a record, or holds it while the previous transaction commits.
    fn send(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) {
        if self.protocol.hold() {
            self.held.push(Held {
                topic: topic.to_string(),
                partition,
                key: key.to_vec(),
                payload: payload.to_vec(),
                headers,
            });
        } else {
            produce(&self.producer, topic, partition, key, payload, headers);
        }
    }

    fn emit_changes(&mut self) {
        let changes = std::mem::take(&mut self.changes);
        let mut buf = std::mem::take(&mut self.buf);
        for c in &changes {
            buf.clear();
            match self.cfg.kafka.output_format {
                Format::Json => encode_change_json(c, &mut buf),
                Format::Protobuf => encode_change_proto(c, &mut buf),
            }
            let topic = &self.cfg.kafka.status_topic;
            if self.protocol.hold() {
                self.held.push(Held {
                    topic: topic.clone(),
                    partition: None,
                    key: c.lead_id.as_bytes().to_vec(),
                    payload: buf.clone(),
                    headers: None,
                });
            } else {
                produce(
                    &self.producer,
                    topic,
                    None,
                    c.lead_id.as_bytes(),
                    &buf,
                    None,
                );
            }
            tm::change_emitted(c);
            self.pending_times.push(c.occurred_at);
        }
        self.buf = buf;
        self.changes = changes;
        self.changes.clear();
    }

    /// Processes one input message: fold it, or dead-letter it. Call
    /// [`Processor::drive`] before the next one (a transaction may have to
    /// be opened first: the protocol queues that here, and `drive` is cheap
    /// when nothing is queued).
    pub fn process<C: ConsumerContext>(&mut self, msg: &Incoming<'_>, consumer: &BaseConsumer<C>) {
        let p = msg.partition;
        let Some(ti) = self
            .cfg
            .kafka
            .input_topics
            .iter()
            .position(|t| t == msg.topic)
        else {
            return;
        };
        let Some(part) = self.partitions.get(&p) else {
            tracing::warn!(
                partition = p,
                "message for a partition not assigned here; skipped"
            );
            return;
        };
        if msg.offset < part.skip_below[ti] {
            return;
        }
        self.protocol.consumed(p, ti, msg.offset);
        // A transaction to open before the first write.
        if self.drive(consumer).is_some() {
            return;
        }
        let payload = msg.payload.unwrap_or(&[]);
        match decode_keyed(
            self.cfg.kafka.input_format.native().unwrap_or(Format::Json),
            msg.key,
            payload,
            self.cfg.kafka.max_event_bytes,
        ) {
            Ok(event) => {
                let part = self.partitions.get_mut(&p).expect("checked above");
                self.folds += 1;
                let outcome = if self.folds.is_multiple_of(64) {
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
                tm::dead_letter(e.code());
                let source = dead_letter::Source {
                    topic: msg.topic,
                    partition: p,
                    offset: msg.offset,
                };
                let headers = dead_letter::headers(&e, source).iter().fold(
                    OwnedHeaders::new(),
                    |h, (key, value)| {
                        h.insert(Header {
                            key,
                            value: Some(value.as_bytes()),
                        })
                    },
                );
                let dlq = self.cfg.kafka.dead_letter_topic.clone();
                self.send(&dlq, None, msg.key.unwrap_or(&[]), payload, Some(headers));
            }
        }
        if let Some(part) = self.partitions.get_mut(&p) {
            part.eof_since = None;
        }
    }

    /// The consumer reached the end of `partition`'s log.
    pub fn at_end(&mut self, partition: i32) {
        if let Some(part) = self.partitions.get_mut(&partition) {
            part.eof_since.get_or_insert_with(Instant::now);
        }
    }

    /// Advances idle partitions (at the end of their log for the configured
    /// time) to the wall clock, so timers fall due with no new traffic.
    pub fn idle_advance<C: ConsumerContext>(&mut self, now: Instant, consumer: &BaseConsumer<C>) {
        let idle = Duration::from_millis(self.cfg.kafka.idle_advance_ms);
        if idle.is_zero() {
            return;
        }
        let wall = wall_micros() - self.cfg.kafka.allowed_lateness;
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
            self.protocol.touched(p);
            if self.drive(consumer).is_some() {
                return;
            }
            let part = self.partitions.get_mut(&p).expect("listed above");
            part.engine.advance_to(wall, &mut self.changes);
            if !self.changes.is_empty() {
                self.emit_changes();
            }
        }
    }

    /// Lets the protocol see the time (a commit may be due, or its writes
    /// acknowledged).
    pub fn tick(&mut self) {
        // Only a committing transaction waits for acknowledgements; the
        // count takes a lock inside librdkafka, too dear for every message.
        let in_flight = if matches!(
            self.protocol.phase(),
            super::protocol::Phase::Committing { .. }
        ) {
            self.producer.poll(Duration::ZERO);
            self.producer.in_flight_count().max(0) as usize
        } else {
            0
        };
        let now = self.now();
        self.protocol.tick(now, in_flight);
    }

    /// Partitions were assigned (a rebalance callback): they are restored
    /// by the next [`Processor::drive`], before their input.
    pub fn assigned(&mut self, partitions: Vec<i32>) {
        self.protocol.assigned(partitions);
    }

    /// Partitions are being revoked (a rebalance callback): everything open
    /// is committed while they are still ours, then they are dropped.
    pub fn revoking<C: ConsumerContext>(
        &mut self,
        partitions: Vec<i32>,
        consumer: &BaseConsumer<C>,
    ) -> Option<Control> {
        let now = self.now();
        self.protocol.revoking(now, partitions);
        self.drive(consumer)
    }

    /// The group refused the static id.
    pub fn instance_fenced<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Option<Control> {
        let now = self.now();
        self.protocol.instance_fenced(now);
        self.drive(consumer)
    }

    /// Commits what is open (aborts it if that fails) and stops.
    pub fn shutdown<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let now = self.now();
        self.protocol.shutdown(now);
        let _ = self.drive(consumer);
    }

    /// Stops on an error the protocol did not see: aborts what is open.
    pub fn halt<C: ConsumerContext>(&mut self, why: String, consumer: &BaseConsumer<C>) {
        self.protocol.halt(why);
        let _ = self.drive(consumer);
    }

    /// True when every assigned partition is restored.
    pub fn restored(&self) -> bool {
        self.protocol
            .partitions()
            .iter()
            .all(|p| self.partitions.contains_key(p))
    }

    /// Performs the protocol's actions until none is left; returns what the
    /// loop must do, if anything.
    pub fn drive<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Option<Control> {
        while let Some(action) = self.protocol.poll_action() {
            if let Some(c) = self.perform(action, consumer) {
                return Some(c);
            }
        }
        None
    }

    /// How a failed broker call must be taken. A producer in a fatal state
    /// (fenced by a newer instance with the same id, not authorised) can
    /// never commit again, whatever else failed at the same time: that
    /// comes first, before a refused static id, which a new consumer mends.
    fn failure<C: ConsumerContext>(&self, e: &KafkaError, consumer: &BaseConsumer<C>) -> Failure {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            Failure::Fatal(format!("the producer cannot go on ({code}: {reason})"))
        } else if is_fatal(e) {
            Failure::Fatal(format!("fatal Kafka error: {e}"))
        } else if consumer.client().fatal_error().map(|(code, _)| code)
            == Some(RDKafkaErrorCode::FencedInstanceId)
        {
            Failure::InstanceFenced(e.to_string())
        } else {
            Failure::Retriable(e.to_string())
        }
    }

    fn perform<C: ConsumerContext>(
        &mut self,
        action: Action,
        consumer: &BaseConsumer<C>,
    ) -> Option<Control> {
        match action {
            Action::Begin => {
                if let Err(e) = self.producer.begin_transaction() {
                    // A transaction that cannot begin cannot commit either:
                    // report it as the commit's failure.
                    let f = self.failure(&e, consumer);
                    let now = self.now();
                    self.protocol.committed(now, Err(f));
                }
            }
            Action::WriteChangelog(checkpoints) => self.write_changelog(&checkpoints),
            Action::Commit(offsets) => {
                self.committing_times = std::mem::take(&mut self.pending_times);
                let result = self.commit_transaction(&offsets, consumer);
                let result = result.map_err(|e| self.failure(&e, consumer));
                self.after_commit(result);
            }
            Action::Flush => {
                let result = kafka::flush(&self.producer, CALL_TIMEOUT)
                    .and_then(|()| self.lost_writes())
                    .map_err(|e| self.failure(&e, consumer));
                let now = self.now();
                self.protocol.flushed(now, result);
            }
            Action::CommitOffsets(offsets) => {
                self.committing_times = std::mem::take(&mut self.pending_times);
                let result = consumer
                    .commit(&self.offset_list(&offsets), CommitMode::Sync)
                    .map_err(|e| self.failure(&e, consumer));
                self.after_commit(result);
            }
            Action::ReleaseHeld => {
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
            Action::DiscardHeld => {
                self.held.clear();
                self.pending_times.clear();
            }
            Action::Abort => {
                let result = self.abort().map_err(|e| self.failure(&e, consumer));
                tm::transaction(false);
                let now = self.now();
                self.protocol.aborted(now, result);
            }
            Action::Rewind(partitions) => {
                let result = self.rewind(&partitions, consumer);
                self.protocol.rewound(result);
            }
            Action::Restore(partitions) => {
                let result = self.restore(&partitions);
                self.protocol.restored(result);
            }
            Action::Drop(partitions) => {
                for p in partitions {
                    self.partitions.remove(&p);
                    tm::partition_dropped(p);
                }
                tm::ready(self.restored(), self.partitions.len());
            }
            Action::Rejoin => return Some(Control::Rejoin),
            Action::Stop(why) => return Some(Control::Stop(why)),
        }
        None
    }

    /// The commit's result, to the protocol and the metrics.
    fn after_commit(&mut self, result: Result<(), Failure>) {
        let ok = result.is_ok();
        tm::transaction(ok);
        if ok {
            let wall = wall_micros();
            for t in self.committing_times.drain(..) {
                tm::emit_latency((wall - t) as f64 / 1e6);
            }
        } else {
            self.committing_times.clear();
            if let Err(f) = &result {
                tracing::warn!(error = ?f, "commit failed");
            }
        }
        let now = self.now();
        self.protocol.committed(now, result);
    }

    fn lost_writes(&self) -> Result<(), KafkaError> {
        if self.producer.context().failures.swap(0, Ordering::Relaxed) > 0 {
            return Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            ));
        }
        Ok(())
    }

    fn offset_list(&self, offsets: &Positions) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (&p, next) in offsets {
            for (ti, &n) in next.iter().enumerate() {
                if n >= 0 {
                    let _ = tpl.add_partition_offset(
                        &self.cfg.kafka.input_topics[ti],
                        p,
                        Offset::Offset(n),
                    );
                }
            }
        }
        tpl
    }

    fn commit_transaction<C: ConsumerContext>(
        &self,
        offsets: &Positions,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), KafkaError> {
        let tpl = self.offset_list(offsets);
        if tpl.count() > 0 {
            let meta = consumer.group_metadata().ok_or(KafkaError::Subscription(
                "no consumer group metadata".into(),
            ))?;
            self.producer
                .send_offsets_to_transaction(&tpl, &meta, CALL_TIMEOUT)?;
        }
        self.producer.commit_transaction(CALL_TIMEOUT)?;
        self.lost_writes()
    }

    /// Writes the leads changed since the last write, and the given
    /// partitions' checkpoints, to the changelog.
    fn write_changelog(&mut self, checkpoints: &[CheckpointAt]) {
        let topics = &self.cfg.kafka.input_topics;
        let mut records: Vec<(i32, Vec<u8>, Vec<u8>)> = Vec::new();
        for (&p, part) in &mut self.partitions {
            let model = &self.model;
            part.engine.drain_dirty(|lead| {
                let mut v = Vec::with_capacity(256);
                changelog::encode_lead(lead, model, &mut v);
                records.push((p, lead.id().as_bytes().to_vec(), v));
            });
        }
        for cp in checkpoints {
            let Some(part) = self.partitions.get(&cp.partition) else {
                continue;
            };
            let w = part.engine.watermark();
            records.push((
                cp.partition,
                CHECKPOINT_KEY.to_vec(),
                changelog::encode_checkpoint(w, topics, &cp.next),
            ));
            tm::partition_state(
                cp.partition,
                part.engine.lead_count(),
                part.engine.timers_pending(),
                w,
            );
        }
        let topic = self.changelog.clone();
        for (p, k, v) in records {
            produce(&self.producer, &topic, Some(p), &k, &v, None);
        }
    }

    /// Aborts the open transaction, retrying while the broker is away.
    fn abort(&mut self) -> Result<(), KafkaError> {
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
                Err(e) if is_fatal(&e) || self.producer.client().fatal_error().is_some() => {
                    return Err(e)
                }
                // No transaction open (it never began, or was already aborted).
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
        Ok(())
    }

    /// Restores partitions from the changelog into engines.
    fn restore(&mut self, partitions: &[i32]) -> Result<(), Failure> {
        tm::ready(false, self.partitions.len());
        let restored = restore::restore_all(&self.cfg, &self.model, &self.changelog, partitions)
            .map_err(|e| match e {
                // The operator must act: say what and how.
                RestoreError::Unreadable { .. } => Failure::Fatal(e.to_string()),
                RestoreError::Kafka { ref source, .. } if is_fatal(source) => {
                    Failure::Fatal(e.to_string())
                }
                RestoreError::Kafka { .. } => Failure::Retriable(e.to_string()),
            })?;
        let topics = &self.cfg.kafka.input_topics;
        for (p, r) in restored {
            let skip_below = topics
                .iter()
                .map(|t| {
                    r.checkpoint
                        .as_ref()
                        .and_then(|c| c.offset(t))
                        .unwrap_or(-1)
                })
                .collect();
            self.partitions.insert(
                p,
                Partition {
                    engine: r.engine,
                    skip_below,
                    eof_since: None,
                },
            );
        }
        tm::ready(self.restored(), self.partitions.len());
        Ok(())
    }

    /// After an abort: rebuilds the partitions from the changelog and moves
    /// the consumer back to the committed offsets.
    fn rewind<C: ConsumerContext>(
        &mut self,
        partitions: &[i32],
        consumer: &BaseConsumer<C>,
    ) -> Result<(), Failure> {
        if partitions.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            partitions = partitions.len(),
            "rewinding to the last commit"
        );
        self.restore(partitions)?;
        let seek = || -> Result<(), KafkaError> {
            let mut tpl = TopicPartitionList::new();
            for &p in partitions {
                for t in &self.cfg.kafka.input_topics {
                    tpl.add_partition(t, p);
                }
            }
            let committed = kafka::retry("fetch committed offsets", || {
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
            kafka::retry("seek", || {
                consumer
                    .seek_partitions(seek.clone(), CALL_TIMEOUT)
                    .map(|_| ())
            })
        };
        seek().map_err(|e| {
            tracing::warn!(error = %e, "rewind failed; retrying");
            self.failure(&e, consumer)
        })
    }

    /// The lead's breakdown as JSON, with its partition and next timer, if
    /// this instance holds it.
    pub fn lead_json(&self, id: &str) -> Option<String> {
        self.partitions.iter().find_map(|(&partition, part)| {
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
