//! The processing shell: one engine per assigned partition, input folded or
//! dead-lettered, and the [`Protocol`]'s actions performed on the Kafka
//! clients (transactions, changelog writes, offsets, restores, rewinds).
//!
//! Re-keying: a message of a topic not keyed by lead is buffered, routed in
//! timestamp order across the re-keyed partitions ([`Merge`]), and each of
//! its records written to the repartition topic, in the partition of its
//! key, inside the open transaction. The repartition topic is read by the
//! same consumer as one more input topic: its partition q is folded by the
//! engine of partition q, and its offsets commit with the input's.
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
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::changelog::{self, CHECKPOINT_KEY};
use super::dead_letter;
use super::kafka::{self, is_fatal, produce, produce_value, ProducerCtx, CALL_TIMEOUT};
use super::protocol::{Action, CheckpointAt, Failure, Mode, Positions, Protocol, Settings, Stop};
use super::rekey::{Buffered, Lane, Merge};
use super::release::{Offer, Release};
use super::restore::{self, RestoreError};
use super::telemetry as tm;
use super::wall_micros;
use crate::change::StatusChange;
use crate::codec::{
    cloudevents_headers, decode_message, decode_routed, encode_change_json, encode_change_proto,
    encode_score_json, encode_score_proto, scan_routed_batch, BatchItem, DecodeError, Format,
    InputFormat, LaneMark, Mapping, Origin, TopicInput,
};
use crate::config::{Config, Guarantee, OutputEnvelope};
use crate::engine::{route, Engine, Routed, VisitorStats};
use crate::event::Message;
use crate::model::Model;
use crate::time::Micros;

/// Messages buffered per re-keyed partition before its fetching is paused.
const MERGE_BOUND: usize = 10_000;

/// Re-keyed records waiting per partition for the routers' order before
/// the lowest goes regardless (see [`Release`]).
const MAX_HELD: usize = 200_000;

/// Marks keep being written this long after records were last routed.
const KEEP_MARKING: Duration = Duration::from_secs(30);

/// One input message, as the shell hands it over.
#[derive(Clone, Copy)]
pub struct Incoming<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// Record timestamp (ms since the epoch), if the record has one.
    pub timestamp: Option<i64>,
    pub headers: Option<&'a BorrowedHeaders>,
}

/// The repartition topic, when the service re-keys.
struct Repartition {
    topic: String,
    /// Its index among the protocol's topics (after the input topics).
    index: usize,
    partitions: usize,
    /// The records routed to each partition since the last flush, as one
    /// `RoutedBatch` per partition: one Kafka record carries many, which
    /// spares the broker and both clients most of their per-record work.
    batches: Vec<Vec<u8>>,
    scratch: Vec<u8>,
}

/// A batch is written once it reaches this size (the broker's default
/// `message.max.bytes` is 1 MiB).
const BATCH_BYTES: usize = 256 * 1024;

/// One assigned partition (of every input topic).
pub struct Partition {
    pub engine: Engine,
    /// Messages below these offsets (per input topic) are already in the
    /// restored state (at-least-once: the changelog may be ahead of the
    /// committed offsets).
    skip_below: Vec<i64>,
    /// At the end of its log since (for the wall-clock advance).
    pub eof_since: Option<Instant>,
    /// The engine's visitor counts when last reported (metrics are deltas).
    visitors: VisitorStats,
    /// Its repartition partition's records, folded in the routers' order
    /// (when the service re-keys).
    release: Option<Release>,
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
    /// The protocol's topics, by index: the input topics, then the
    /// repartition topic when the service re-keys.
    topics: Vec<String>,
    /// How each input topic is read, by index.
    inputs: Vec<TopicInput>,
    mapping: Mapping,
    repartition: Option<Repartition>,
    merge: Merge,
    /// Records an engine sends on (to the repartition topic).
    sends: Vec<Routed<'static>>,
    routed: Vec<metrics::Counter>,
    schema_ids: tm::SchemaIds,
    /// The CloudEvents `source`, when status records carry the envelope.
    ce_source: Option<String>,
    reads_headers: bool,
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
    /// The origin of the record being routed or folded: the records it
    /// sends to the repartition topic carry it.
    origin: Option<Origin>,
    /// Per partition, the repartition offset its last checkpoint was
    /// written for: the oldest record still waiting to be folded.
    rep_low: BTreeMap<i32, i64>,
    /// When each re-keyed partition routed here was last found to hold
    /// nothing unrouted (wall ms), and when it was last checked.
    confirmed: BTreeMap<Lane, (i64, Instant)>,
    /// When records routed by some instance were last seen (or a mark
    /// that moved a lane on): marks keep being written while they flow.
    routing_seen: Option<Instant>,
    /// The marks last written, per re-keyed partition routed here: a mark
    /// is written again only when it changed.
    marks_written: BTreeMap<Lane, LaneMark>,
    /// Per re-keyed partition routed here: the consumer's position at the
    /// checks in a row that found the log's end one past it (a transaction
    /// marker, or a record not fetched yet), and how many.
    refused: BTreeMap<Lane, (i64, u32)>,
}

/// Wall clock in milliseconds since the epoch.
fn wall_ms() -> i64 {
    wall_micros() / 1000
}

impl Processor {
    /// Creates the producer (and, for exactly-once, initialises transactions,
    /// which fences any older instance with the same `instance_id`).
    /// `partitions` is the input's partition count.
    pub fn new(
        cfg: Arc<Config>,
        model: Arc<Model>,
        partitions: usize,
    ) -> Result<Processor, KafkaError> {
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
        let mut topics = cfg.kafka.input_topics.clone();
        let inputs: Vec<TopicInput> = topics.iter().map(|t| cfg.topic_input(t)).collect();
        let repartition = cfg.rekeys().then(|| Repartition {
            topic: cfg.repartition_topic(),
            index: topics.len(),
            partitions,
            batches: vec![Vec::new(); partitions],
            scratch: Vec::new(),
        });
        if let Some(r) = &repartition {
            topics.push(r.topic.clone());
        }
        tm::sla_routes(&model);
        Ok(Processor {
            protocol: Protocol::new(settings, topics.len(), Duration::ZERO),
            started: Instant::now(),
            changelog: cfg.changelog_topic(),
            routed: tm::routed_counters(&topics),
            topics,
            reads_headers: inputs.iter().any(|i| i.format == InputFormat::Cloudevents),
            inputs,
            mapping: cfg.input.mapping(),
            repartition,
            merge: Merge::new(
                Duration::from_millis(cfg.kafka.max_task_idle_ms),
                MERGE_BOUND,
            ),
            sends: Vec::new(),
            schema_ids: tm::SchemaIds::default(),
            ce_source: (cfg.kafka.output_envelope == OutputEnvelope::Cloudevents)
                .then(|| cfg.cloudevents_source()),
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
            origin: None,
            rep_low: BTreeMap::new(),
            confirmed: BTreeMap::new(),
            routing_seen: None,
            marks_written: BTreeMap::new(),
            refused: BTreeMap::new(),
        })
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// How long the loop may wait for input before the next [`Processor::tick`].
    pub fn wait(&self) -> Duration {
        let now = self.now();
        let wait = self.protocol.wait(now);
        match self.merge.wake(now) {
            Some(w) => wait.min(w),
            None => wait,
        }
    }

    /// Whether an input topic's format reads the Kafka headers (CloudEvents
    /// binary mode); the native path skips them.
    pub fn reads_headers(&self) -> bool {
        self.reads_headers
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
            let headers = self
                .ce_source
                .as_deref()
                .map(|source| envelope(c, source, self.cfg.kafka.output_format));
            if self.protocol.hold() {
                self.held.push(Held {
                    topic: topic.clone(),
                    partition: None,
                    key: c.lead_id.as_bytes().to_vec(),
                    payload: buf.clone(),
                    headers,
                });
            } else {
                produce(
                    &self.producer,
                    topic,
                    None,
                    c.lead_id.as_bytes(),
                    &buf,
                    headers,
                );
            }
            tm::change_emitted(c);
            self.pending_times.push(c.occurred_at);
        }
        self.buf = buf;
        self.changes = changes;
        self.changes.clear();
    }

    /// Processes one input message: fold it, route it, or dead-letter it; a
    /// message of a re-keyed topic is buffered, and routed by
    /// [`Processor::route_ready`] in timestamp order. Call
    /// [`Processor::drive`] before the next one (a transaction may have to
    /// be opened first: the protocol queues that here, and `drive` is cheap
    /// when nothing is queued).
    pub fn process<C: ConsumerContext>(
        &mut self,
        msg: &Incoming<'_>,
        consumer: &BaseConsumer<C>,
    ) -> Option<Control> {
        let p = msg.partition;
        let ti = self.topics.iter().position(|t| t == msg.topic)?;
        let Some(part) = self.partitions.get(&p) else {
            tracing::warn!(
                partition = p,
                "message for a partition not assigned here; skipped"
            );
            return None;
        };
        if msg.offset < part.skip_below[ti] {
            return None;
        }
        let input = self.inputs.get(ti).copied();
        if input.is_some_and(|i| !i.keyed_by_lead) {
            let headers = match (input.map(|i| i.format), msg.headers) {
                (Some(InputFormat::Cloudevents), Some(h)) => h
                    .iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect(),
                _ => Vec::new(),
            };
            self.merge.push(
                (ti, p),
                Buffered {
                    offset: msg.offset,
                    timestamp: msg.timestamp.unwrap_or(i64::MIN),
                    key: msg.key.map(<[u8]>::to_vec),
                    payload: msg.payload.map(<[u8]>::to_vec),
                    headers,
                },
            );
            self.apply_flow(consumer);
            return None;
        }
        // Headers are read only for the format that needs them.
        let mut headers: Vec<(&str, &[u8])> = Vec::new();
        if let (Some(InputFormat::Cloudevents), Some(h)) = (input.map(|i| i.format), msg.headers) {
            headers.extend(h.iter().map(|h| (h.key, h.value.unwrap_or_default())));
        }
        self.handle(
            ti,
            p,
            msg.offset,
            msg.key,
            msg.payload.unwrap_or(&[]),
            &headers,
            consumer,
        )
    }

    /// Routes the buffered messages of the re-keyed partitions that may go
    /// now, oldest record timestamp first.
    pub fn route_ready<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Option<Control> {
        if self.merge.is_empty() {
            return None;
        }
        let now = self.now();
        for lane in self.merge.due_checks(now) {
            self.check_end(lane);
        }
        while let Some(((ti, p), m)) = self.merge.next(now) {
            let headers: Vec<(&str, &[u8])> = m
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            self.origin = Some(Origin {
                topic: ti as u32,
                partition: p,
                timestamp: m.timestamp,
                offset: m.offset,
                routed_at: wall_ms(),
                second_hop: false,
            });
            let c = self.handle(
                ti,
                p,
                m.offset,
                m.key.as_deref(),
                m.payload.as_deref().unwrap_or(&[]),
                &headers,
                consumer,
            );
            self.origin = None;
            self.routing_seen = Some(Instant::now());
            if c.is_some() {
                return c;
            }
        }
        self.apply_flow(consumer);
        self.keep_marking(consumer);
        None
    }

    /// Pauses the re-keyed partitions whose buffer is full, resumes those
    /// drained.
    fn apply_flow<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let (pause, resume) = self.merge.take_flow();
        let list = |lanes: &[Lane]| {
            let mut tpl = TopicPartitionList::new();
            for &(ti, p) in lanes {
                tpl.add_partition(&self.topics[ti], p);
            }
            tpl
        };
        if !pause.is_empty() {
            if let Err(e) = consumer.pause(&list(&pause)) {
                tracing::warn!(error = %e, "cannot pause a re-keyed partition");
            }
        }
        if !resume.is_empty() {
            if let Err(e) = consumer.resume(&list(&resume)) {
                tracing::warn!(error = %e, "cannot resume a re-keyed partition");
            }
        }
    }

    /// One message of topic `ti`, partition `p`: decoded, then folded here,
    /// written to the repartition topic, or dead-lettered; its offset is
    /// consumed.
    #[allow(clippy::too_many_arguments)]
    fn handle<C: ConsumerContext>(
        &mut self,
        ti: usize,
        p: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
        consumer: &BaseConsumer<C>,
    ) -> Option<Control> {
        if ti >= self.inputs.len() {
            return self.repartition_message(p, offset, payload, consumer);
        }
        self.protocol.consumed(p, ti, offset);
        // A transaction to open before the first write.
        if let Some(c) = self.drive(consumer) {
            return Some(c);
        }
        let input = self.inputs[ti];
        let result = decode_message(
            &input,
            &self.mapping,
            key,
            headers,
            payload,
            self.cfg.kafka.max_event_bytes,
        )
        .map(|d| {
            if let Some(id) = d.schema_id {
                self.schema_ids.seen(id);
            }
            if let (true, Message::Lead(e)) = (input.keyed_by_lead, &d.message) {
                // The native path: the key was checked, the event
                // is this partition's.
                return self.fold_lead(p, e);
            }
            for r in route(d.message) {
                // A record of the message's own key stays in this
                // partition (a topic keyed by lead: every record
                // but an identification's other half).
                if input.keyed_by_lead && key == Some(r.key().as_bytes()) {
                    self.ingest(p, r);
                } else {
                    self.send_routed(&r, ti);
                }
            }
        });
        if let Err(e) = result {
            self.dead_letter(&e, ti, p, offset, key, payload);
        }
        if let Some(part) = self.partitions.get_mut(&p) {
            part.eof_since = None;
        }
        None
    }

    /// Folds an event of a lead of partition `p` (as [`Processor::ingest`]
    /// does a `Routed::Lead`, without the record around it).
    fn fold_lead(&mut self, p: i32, e: &crate::Event<'_>) {
        let Some(part) = self.partitions.get_mut(&p) else {
            return;
        };
        self.folds += 1;
        let outcome = if self.folds.is_multiple_of(64) {
            let t = Instant::now();
            let o = part.engine.fold(e, &mut self.changes);
            tm::fold_time(t.elapsed());
            o
        } else {
            part.engine.fold(e, &mut self.changes)
        };
        if e.kind == crate::event::Kind::LeadErased {
            part.engine.drain_unlinks(&mut self.sends);
        }
        self.counters.folded(&self.model, &e.event_type, outcome);
        if !self.changes.is_empty() {
            self.emit_changes();
        }
        if !self.sends.is_empty() {
            let origin = self.origin.take();
            for s in std::mem::take(&mut self.sends) {
                self.send_routed(&s, 0);
            }
            self.origin = origin;
        }
    }

    /// Folds a record into partition `p`'s engine; its changes are written
    /// to the status topic, the records it sends on to the repartition topic.
    fn ingest(&mut self, p: i32, r: Routed<'_>) {
        let Some(part) = self.partitions.get_mut(&p) else {
            return;
        };
        self.folds += 1;
        let counters = &mut self.counters;
        let model = &self.model;
        let each = |e: &crate::Event<'_>, o| counters.folded(model, &e.event_type, o);
        if self.folds.is_multiple_of(64) {
            let t = Instant::now();
            part.engine
                .ingest(r, &mut self.changes, &mut self.sends, each);
            tm::fold_time(t.elapsed());
        } else {
            part.engine
                .ingest(r, &mut self.changes, &mut self.sends, each);
        }
        if !self.changes.is_empty() {
            self.emit_changes();
        }
        if !self.sends.is_empty() {
            let from = self.repartition.as_ref().map_or(0, |r| r.index);
            for s in std::mem::take(&mut self.sends) {
                self.send_routed(&s, from);
            }
        }
    }

    /// A record of repartition partition `p` at `offset`: its marks are
    /// taken, its entries offered to the partition's [`Release`], and what
    /// may go is folded. A record of marks only that lets nothing go is no
    /// work: no transaction, and the partition stays idle.
    fn repartition_message<C: ConsumerContext>(
        &mut self,
        p: i32,
        offset: i64,
        payload: &[u8],
        consumer: &BaseConsumer<C>,
    ) -> Option<Control> {
        let ti = self.repartition.as_ref().map_or(0, |r| r.index);
        let mut items = Vec::new();
        let scanned = scan_routed_batch(payload, |item| items.push(item));
        let records = items.iter().any(|i| matches!(i, BatchItem::Record { .. }));
        if scanned.is_ok() && !records {
            let ready = self
                .partitions
                .get_mut(&p)
                .and_then(|x| x.release.as_mut())
                .is_some_and(|r| {
                    for item in &items {
                        if let BatchItem::Mark(m) = item {
                            r.mark(m);
                        }
                    }
                    r.ready()
                });
            if !ready {
                return None;
            }
        }
        self.protocol.consumed(p, ti, offset);
        if let Some(c) = self.drive(consumer) {
            return Some(c);
        }
        let mut shared: Option<Arc<[u8]>> = None;
        let mut moved = false;
        for (index, item) in items.into_iter().enumerate() {
            let release = self
                .partitions
                .get_mut(&p)
                .and_then(|x| x.release.as_mut())?;
            match item {
                BatchItem::Mark(m) => moved |= release.mark(&m),
                BatchItem::Record { origin, bytes } => {
                    let pos = (offset, index as u32);
                    let offer = match origin {
                        None => release.offer_untagged(pos),
                        Some(o) if !release.knows(o.topic, o.partition) => {
                            let e = DecodeError::BadField {
                                field: "origin",
                                why: format!(
                                    "names no re-keyed input partition (topic index {}, partition {})",
                                    o.topic, o.partition
                                ),
                            };
                            self.dead_letter(&e, ti, p, offset, None, bytes);
                            continue;
                        }
                        Some(o) => {
                            moved = true;
                            let arc = shared.get_or_insert_with(|| Arc::from(payload));
                            let start = bytes.as_ptr() as usize - payload.as_ptr() as usize;
                            release.offer(pos, &o, arc, start..start + bytes.len())
                        }
                    };
                    if offer == Offer::Now {
                        match decode_routed(bytes) {
                            Ok(r) => self.ingest(p, r),
                            Err(e) => self.dead_letter(&e, ti, p, offset, None, bytes),
                        }
                    }
                }
            }
        }
        if let Err(e) = scanned {
            // The entries before the damage are taken; the record is kept.
            self.dead_letter(&e, ti, p, offset, None, payload);
        }
        if moved {
            self.routing_seen = Some(Instant::now());
        }
        self.release_ready(p);
        if let Some(part) = self.partitions.get_mut(&p) {
            part.eof_since = None;
        }
        None
    }

    /// Folds the records of repartition partition `p` that may go now.
    fn release_ready(&mut self, p: i32) {
        while let Some(item) = self
            .partitions
            .get_mut(&p)
            .and_then(|x| x.release.as_mut())
            .and_then(Release::pop)
        {
            match decode_routed(item.bytes()) {
                Ok(r) => {
                    self.origin = Some(item.cause());
                    self.ingest(p, r);
                    self.origin = None;
                }
                Err(e) => {
                    let ti = self.repartition.as_ref().map_or(0, |r| r.index);
                    self.dead_letter(&e, ti, p, item.pos.0, None, item.bytes());
                }
            }
        }
        let forced = self
            .partitions
            .get_mut(&p)
            .and_then(|x| x.release.as_mut())
            .map_or(0, Release::take_forced);
        if forced > 0 {
            tracing::warn!(
                partition = p,
                records = forced,
                "re-keyed records folded without waiting for a stalled router (too many waiting)"
            );
        }
    }

    /// Adds a record to the batch of its key's partition of the repartition
    /// topic, written at the next commit (or once it is large). `from` is
    /// the index of the topic it came from (for the metric).
    fn send_routed(&mut self, r: &Routed<'_>, from: usize) {
        let Some(rp) = &mut self.repartition else {
            // `Config::rekeys` covers every format that routes across
            // partitions; a record here would mean it does not.
            tracing::error!(
                topic = %self.topics[from],
                "a record for another partition, but the service does not re-key this topic; not routed"
            );
            return;
        };
        if r.is_broadcast() {
            for q in 0..rp.partitions {
                if let Some(o) = &self.origin {
                    crate::codec::push_origin(o, &mut rp.batches[q]);
                }
                crate::codec::push_routed(r, &mut rp.scratch, &mut rp.batches[q]);
            }
            self.routed[from].increment(1);
            return;
        }
        let q = self
            .cfg
            .kafka
            .partitioner
            .partition(r.key().as_bytes(), rp.partitions);
        let batch = &mut rp.batches[q as usize];
        if let Some(o) = &self.origin {
            crate::codec::push_origin(o, batch);
        }
        crate::codec::push_routed(r, &mut rp.scratch, batch);
        self.routed[from].increment(1);
        if batch.len() >= BATCH_BYTES {
            let batch = std::mem::take(batch);
            let topic = rp.topic.clone();
            // While the previous transaction commits, held for the next.
            self.send(&topic, Some(q), b"", &batch, None);
        }
    }

    /// Writes the routed records' batches now, into the open transaction
    /// (called as its commit starts: they are that transaction's).
    fn flush_batches(&mut self) {
        let mut marks = self.marks();
        marks.retain(|m| {
            let lane = (m.topic as usize, m.partition);
            self.marks_written.insert(lane, *m) != Some(*m)
        });
        let Some(rp) = &mut self.repartition else {
            return;
        };
        if !marks.is_empty() {
            for batch in &mut rp.batches {
                for m in &marks {
                    crate::codec::push_mark(m, batch);
                }
            }
        }
        for (q, batch) in rp.batches.iter_mut().enumerate() {
            if !batch.is_empty() {
                produce(&self.producer, &rp.topic, Some(q as i32), b"", batch, None);
                batch.clear();
            }
        }
    }

    /// What this instance's router promises about each re-keyed partition
    /// it routes, as it stands now (see [`super::release`]).
    fn marks(&self) -> Vec<LaneMark> {
        self.merge
            .lanes()
            .filter_map(|lane| {
                let (ti, p) = lane;
                let unrouted = self.partitions.get(&p)?.skip_below[ti].max(0);
                let (timestamp, offset) = self.merge.bound(lane, unrouted)?;
                Some(LaneMark {
                    topic: ti as u32,
                    partition: p,
                    timestamp,
                    offset,
                    confirmed_at: self.confirmed.get(&lane).map_or(0, |c| c.0),
                })
            })
            .collect()
    }

    /// Records waiting in a repartition partition may wait on a
    /// confirmation that a re-keyed partition's log holds nothing unrouted
    /// (another instance's, or one routed here that is empty). While
    /// records are routed anywhere in a group of several instances, or any
    /// wait here, the ends of the empty partitions routed here are checked
    /// every idle period, and a transaction carries the confirmations out
    /// if nothing else opens one.
    fn keep_marking<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let Some(rp) = &self.repartition else {
            return;
        };
        if self.merge.is_empty() {
            return;
        }
        let several = self.partitions.len() < rp.partitions
            && self
                .routing_seen
                .is_some_and(|t| t.elapsed() <= KEEP_MARKING);
        let waiting = self
            .partitions
            .values()
            .any(|x| x.release.as_ref().is_some_and(|r| r.held() > 0));
        if !several && !waiting {
            return;
        }
        let idle = Duration::from_millis(self.cfg.kafka.max_task_idle_ms.max(1));
        let now = Instant::now();
        let due: Vec<Lane> = self
            .merge
            .lanes()
            .filter(|&l| self.merge.lane_empty(l))
            .filter(|l| {
                self.confirmed
                    .get(l)
                    .is_none_or(|c| now.duration_since(c.1) >= idle)
            })
            .collect();
        if due.is_empty() {
            return;
        }
        // Where the consumer stands in each: past what it has handed over,
        // transaction markers included.
        let positions = consumer.position().ok();
        for lane in due {
            let (ti, p) = lane;
            let at = wall_ms();
            let position = positions.as_ref().and_then(|tpl| {
                match tpl.find_partition(&self.topics[ti], p)?.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                }
            });
            let next = position
                .or_else(|| self.merge.next_offset(lane))
                .or_else(|| {
                    let known = self.partitions.get(&p)?.skip_below[ti];
                    (known >= 0).then_some(known)
                });
            let end = self.producer.client().fetch_watermarks(
                &self.topics[ti],
                p,
                Duration::from_millis(500),
            );
            let was = self.confirmed.get(&lane).map_or(0, |c| c.0);
            let confirmed = match (end, next) {
                (Ok((_, high)), Some(next)) if high <= next => {
                    self.refused.remove(&lane);
                    at
                }
                // One past a position that has not moved, check after
                // check: the commit marker of an input written in
                // transactions (librdkafka's position may stop before it),
                // not a record on its way. Taken as the end then, as the
                // router gives up on such a partition.
                (Ok((_, high)), Some(next)) if position == Some(next) && high == next + 1 => {
                    let r = self.refused.entry(lane).or_insert((next, 0));
                    if r.0 != next {
                        *r = (next, 0);
                    }
                    r.1 += 1;
                    if r.1 >= super::rekey::IDLE_LIMIT {
                        at
                    } else {
                        was
                    }
                }
                _ => {
                    self.refused.remove(&lane);
                    was
                }
            };
            self.confirmed.insert(lane, (confirmed, now));
            if confirmed != was {
                self.protocol.touched(p);
            }
        }
    }

    /// Drops the batches not written (their transaction is aborted).
    fn discard_batches(&mut self) {
        // Their marks too: written again with the next transaction.
        self.marks_written.clear();
        if let Some(rp) = &mut self.repartition {
            rp.batches.iter_mut().for_each(Vec::clear);
        }
    }

    fn dead_letter(
        &mut self,
        e: &DecodeError,
        ti: usize,
        p: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: &[u8],
    ) {
        tm::dead_letter(e.code());
        let source = dead_letter::Source {
            topic: &self.topics[ti],
            partition: p,
            offset,
        };
        let headers =
            dead_letter::headers(e, source)
                .iter()
                .fold(OwnedHeaders::new(), |h, (key, value)| {
                    h.insert(Header {
                        key,
                        value: Some(value.as_bytes()),
                    })
                });
        let dlq = self.cfg.kafka.dead_letter_topic.clone();
        self.send(&dlq, None, key.unwrap_or(&[]), payload, Some(headers));
    }

    /// The consumer reached the end of partition `partition` of one of its
    /// topics (librdkafka does not say which): the wall-clock advance may
    /// start. (A re-keyed partition's end is not taken from here: the
    /// report does not name the topic, and it is old news by the time the
    /// merge asks; see [`Processor::check_end`].)
    pub fn at_end(&mut self, partition: i32) {
        if let Some(part) = self.partitions.get_mut(&partition) {
            part.eof_since.get_or_insert_with(Instant::now);
        }
    }

    /// Tells the merge whether a re-keyed partition it waits on has nothing
    /// in its log past what was buffered. A local look-up would do, but
    /// rdkafka does not expose the cached end; a query to the partition
    /// leader is rare enough (once per idle period while an empty partition
    /// holds others back).
    fn check_end(&mut self, lane: Lane) {
        let (ti, p) = lane;
        let Some(part) = self.partitions.get(&p) else {
            return;
        };
        // Asked through the producer's connection: the consumer's waits
        // behind its own long-polling fetch (up to `fetch.wait.max.ms`).
        let r =
            self.producer
                .client()
                .fetch_watermarks(&self.topics[ti], p, Duration::from_secs(2));
        match r {
            Ok((low, high)) => {
                let next = self
                    .merge
                    .next_offset(lane)
                    .unwrap_or_else(|| part.skip_below[ti].max(low));
                if high <= next {
                    self.merge.at_end(lane, self.started.elapsed());
                } else {
                    self.merge.not_at_end(lane);
                }
            }
            Err(e) => tracing::debug!(error = %e, "end of a re-keyed partition not confirmed"),
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
            Action::WriteChangelog(checkpoints) => {
                self.flush_batches();
                self.write_changelog(&checkpoints);
            }
            Action::Commit(offsets) => {
                self.committing_times = std::mem::take(&mut self.pending_times);
                let result = self.commit_transaction(&offsets, consumer);
                let result = result.map_err(|e| self.failure(&e, consumer));
                self.after_commit(result);
            }
            Action::Flush => {
                self.flush_batches();
                if self.cfg.kafka.guarantee == Guarantee::AtLeastOnce {
                    // Score records go with the status changes, acknowledged
                    // before the changelog that records them is written
                    // (at the second flush there are none left to write).
                    self.write_scores();
                }
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
                self.discard_batches();
                self.held.clear();
                self.pending_times.clear();
            }
            Action::Abort => {
                self.discard_batches();
                let result = self.abort().map_err(|e| self.failure(&e, consumer));
                tm::transaction(false);
                let now = self.now();
                self.protocol.aborted(now, result);
            }
            Action::Rewind(partitions) => {
                let result = self.rewind(&partitions, consumer);
                self.apply_flow(consumer);
                self.protocol.rewound(result);
            }
            Action::Restore(partitions) => {
                let result = self.restore(&partitions);
                self.apply_flow(consumer);
                self.protocol.restored(result);
            }
            Action::Drop(partitions) => {
                for p in partitions {
                    self.partitions.remove(&p);
                    self.rep_low.remove(&p);
                    self.confirmed.retain(|l, _| l.1 != p);
                    self.marks_written.retain(|l, _| l.1 != p);
                    self.refused.retain(|l, _| l.1 != p);
                    self.merge.drop_partition(p);
                    tm::partition_dropped(p);
                }
                self.apply_flow(consumer);
                self.report_visitors();
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
        let rep = self.repartition.as_ref().map(|r| r.index);
        for (&p, next) in offsets {
            for (ti, &n) in next.iter().enumerate() {
                // The repartition topic resumes at its oldest record not
                // folded yet (those after it that were are skipped then).
                let n = match self.rep_low.get(&p) {
                    Some(&low) if Some(ti) == rep && n >= 0 => n.min(low),
                    _ => n,
                };
                if n >= 0 {
                    let _ = tpl.add_partition_offset(&self.topics[ti], p, Offset::Offset(n));
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
        // Before the changelog, which records that they were written.
        self.write_scores();
        let topics = &self.topics;
        let mut records: Vec<(i32, Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for (&p, part) in &mut self.partitions {
            let model = &self.model;
            // Removed leads first: one removed and started again since
            // the last write has its new state written after.
            part.engine.drain_removed(|id| {
                records.push((p, id.as_bytes().to_vec(), None));
            });
            part.engine.drain_dirty(|lead| {
                let mut v = Vec::with_capacity(256);
                changelog::encode_lead(lead, model, &mut v);
                records.push((p, lead.id().as_bytes().to_vec(), Some(v)));
            });
            part.engine.drain_touches(|t| tm::first_touch(model, &t));
            // Visitors and held records; `None` deletes one.
            part.engine.drain_dirty_aux(|key, value| {
                records.push((p, key.to_vec(), value.map(<[u8]>::to_vec)));
            });
        }
        // The repartition offsets to commit: the oldest record each
        // partition still holds back, when it holds one.
        if self.repartition.is_some() {
            for (&p, part) in &self.partitions {
                match part.release.as_ref().and_then(Release::low_offset) {
                    Some(o) => self.rep_low.insert(p, o),
                    None => self.rep_low.remove(&p),
                };
            }
        }
        for cp in checkpoints {
            let Some(part) = self.partitions.get(&cp.partition) else {
                continue;
            };
            let w = part.engine.watermark();
            if let Some(r) = &part.release {
                tm::routed_waiting(cp.partition, r.held());
            }
            let mut next = cp.next.clone();
            let rekey = self.repartition.as_ref().map(|rp| {
                if let (Some(n), Some(&low)) =
                    (next.get_mut(rp.index), self.rep_low.get(&cp.partition))
                {
                    *n = (*n).min(low);
                }
                changelog::RekeyCheckpoint {
                    folded: part
                        .release
                        .as_ref()
                        .map(|r| r.folded().clone())
                        .unwrap_or_default(),

                    floors: self
                        .merge
                        .lanes()
                        .filter(|l| l.1 == cp.partition)
                        .filter_map(|l| Some((l.0 as u32, self.merge.floor(l)?)))
                        .collect(),
                }
            });
            records.push((
                cp.partition,
                CHECKPOINT_KEY.to_vec(),
                Some(changelog::encode_checkpoint_with(
                    w,
                    topics,
                    &next,
                    rekey.as_ref(),
                )),
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
            produce_value(&self.producer, &topic, Some(p), &k, v.as_deref(), None);
        }
        if self.repartition.is_some() {
            self.report_visitors();
        }
    }

    /// Writes the score records due (the score stream), in the open
    /// transaction, before the changelog records of the same leads.
    fn write_scores(&mut self) {
        let Some(topic) = self.cfg.kafka.score_topic.as_deref() else {
            return;
        };
        let format = self.cfg.kafka.output_format;
        let mut buf = std::mem::take(&mut self.buf);
        let mut written = 0u64;
        for part in self.partitions.values_mut() {
            // A removed lead's record is deleted (a tombstone), before
            // the record of a lead of the same id started since.
            for id in part.engine.removed() {
                produce_value(&self.producer, topic, None, id.as_bytes(), None, None);
                written += 1;
            }
            part.engine.drain_scores(|r| {
                buf.clear();
                match format {
                    Format::Json => encode_score_json(&r, &mut buf),
                    Format::Protobuf => encode_score_proto(&r, &mut buf),
                }
                produce(
                    &self.producer,
                    topic,
                    None,
                    r.lead_id.as_bytes(),
                    &buf,
                    None,
                );
                written += 1;
            });
        }
        self.buf = buf;
        tm::scores_written(written);
    }

    /// The visitor metrics: what the engines' counts moved by since the
    /// last report, and how many visitors are held.
    fn report_visitors(&mut self) {
        let (mut held, mut identified, mut forwarded, mut expired) = (0, 0, 0, 0);
        for part in self.partitions.values_mut() {
            let now = part.engine.visitor_stats();
            let was = std::mem::replace(&mut part.visitors, now);
            held += now.in_state;
            identified += now.identifications.saturating_sub(was.identifications);
            forwarded += now.forwarded.saturating_sub(was.forwarded);
            expired += now.expired.saturating_sub(was.expired);
        }
        tm::visitors(held, identified, forwarded, expired);
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
        let topics = &self.topics;
        let idle_ms = self.cfg.kafka.max_task_idle_ms as i64;
        for (p, r) in restored {
            let rekey = r.checkpoint.as_ref().and_then(|c| c.rekey.clone());
            // Whatever was buffered for the partition is read again.
            for (ti, input) in self.inputs.iter().enumerate() {
                if !input.keyed_by_lead {
                    let floor = rekey
                        .as_ref()
                        .and_then(|k| k.floors.iter().find(|f| f.0 == ti as u32))
                        .map_or(i64::MIN, |f| f.1);
                    self.merge.reset((ti, p), floor);
                    self.confirmed.remove(&(ti, p));
                    self.marks_written.remove(&(ti, p));
                    self.refused.remove(&(ti, p));
                }
            }
            self.rep_low.remove(&p);
            // Records read again may wait on other instances' marks: they
            // are written for a while after any rebalance.
            self.routing_seen = Some(Instant::now());
            let release = self.repartition.as_ref().map(|rp| {
                let lanes: Vec<(u32, i32)> = self
                    .inputs
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| !i.keyed_by_lead)
                    .flat_map(|(ti, _)| (0..rp.partitions as i32).map(move |q| (ti as u32, q)))
                    .collect();
                Release::new(
                    idle_ms,
                    MAX_HELD,
                    lanes,
                    rekey.map(|k| k.folded).unwrap_or_default(),
                )
            });
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
                    visitors: r.engine.visitor_stats(),
                    engine: r.engine,
                    skip_below,
                    eof_since: None,
                    release,
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
                for t in &self.topics {
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
        self.lead_json_at(id, None)
    }

    /// [`Processor::lead_json`] with the scores decayed to `at` (the lead's
    /// own time, if later).
    pub fn lead_json_at(&self, id: &str, at: Option<Micros>) -> Option<String> {
        self.partitions.iter().find_map(|(&partition, part)| {
            let mut e = serde_json::to_value(part.engine.explain(id, at)?).ok()?;
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

/// The CloudEvents binary-mode headers of a status record.
fn envelope(c: &StatusChange, source: &str, body: Format) -> OwnedHeaders {
    cloudevents_headers(c, source, body).iter().fold(
        OwnedHeaders::new_with_capacity(7),
        |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        },
    )
}
