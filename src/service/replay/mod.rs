//! `leadscore replay`: rescore the input topics under another model.
//!
//! The input is read by explicit assignment (no group is joined, so the live
//! service is not disturbed) from the beginning or from a record timestamp up
//! to the end offsets seen at the start, one engine per input partition, as
//! the service partitions its state. The same events are folded under the
//! live model too, so the summary can say how the outcome differs. A
//! configuration that re-keys is read by one reader and routed between the
//! partitions' engines in process ([`merged`]).
//!
//! Where the changes go:
//! - a shadow topic (the default), with the change ids of the new model;
//! - the live status topic (`--into-live`), under the new model's version,
//!   with change ids suffixed `@<model version>` so they cannot collide with
//!   the live ones;
//! - nowhere (`--to-changelog TOPIC`): the rebuilt state is written to a new
//!   changelog topic instead, with checkpoints at the live group's committed
//!   offsets, so the service can be switched to the new model without
//!   emitting again what it already emitted (see the README).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use super::changelog::{self, CHECKPOINT_KEY};
use super::kafka::{
    self, flush, produce, retry, Cleanup, ProducerCtx, ReaderCtx, StartError, CALL_TIMEOUT,
};
use super::restore::{restore_partition, RestoreError, Restored};
use crate::change::{Stage, StatusChange};
use crate::codec::{
    cloudevents_headers, decode_message, encode_change_json, encode_change_proto, Decoded, Format,
    Mapping, TopicInput,
};
use crate::config::Config;
use crate::engine::Engine;
use crate::model::{Model, ModelError};
use crate::time::Micros;

mod merged;

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the live model {path} is not valid: {source}")]
    LiveModel { path: String, source: ModelError },
    /// The options do not fit the config (the message says why).
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Topics(#[from] StartError),
    #[error("reading the live state: {0}")]
    LiveState(#[from] RestoreError),
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{lost} change(s) could not be written to {topic}")]
    LostWrites { lost: u64, topic: String },
    #[error("writes to {topic} failed; nothing of partition {partition} was committed, run again")]
    StateNotWritten { topic: String, partition: usize },
    #[error("committing the rebuilt state: {0}")]
    Commit(KafkaError),
}

type Result<T> = std::result::Result<T, ReplayError>;

fn options(msg: String) -> ReplayError {
    ReplayError::Options(msg)
}

/// Where to start reading the input topics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Start {
    Earliest,
    /// The first record whose Kafka timestamp is at or after this time.
    Time(Micros),
}

/// Where the replay's output goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A shadow status topic; `None`: `<status_topic>-shadow`.
    Shadow(Option<String>),
    /// The live status topic, under the new model's version.
    Live,
    /// No changes: the rebuilt state, into this changelog topic.
    Changelog(String),
}

pub struct Options {
    pub model: Arc<Model>,
    pub start: Start,
    pub target: Target,
}

/// Progress while replaying.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub elapsed: Duration,
}

/// What a model made of the replayed events.
#[derive(Debug, Serialize)]
pub struct ModelOutcome {
    pub version: String,
    /// Leads per stage at the end.
    pub stages: BTreeMap<&'static str, u64>,
    /// Changes per transition (`from->to`); absent for the live state read
    /// from its changelog.
    pub transitions: Option<BTreeMap<String, u64>>,
}

/// A lead whose stage differs between the models.
#[derive(Debug, Serialize)]
pub struct Difference {
    pub lead_id: String,
    pub current: &'static str,
    pub new: &'static str,
    pub current_score: f64,
    pub new_score: f64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    /// shadow, live or changelog.
    pub mode: &'static str,
    pub topic: String,
    pub events: u64,
    /// Messages that do not decode (the live service dead-letters them).
    pub invalid: u64,
    pub changes_written: u64,
    /// Leads erased (`lead_erased`) in the range: none of their changes
    /// was written (shadow and live).
    pub erased_leads: u64,
    /// Their changes, withheld.
    pub erased_changes: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub leads: u64,
    pub current: ModelOutcome,
    pub new: ModelOutcome,
    /// Leads whose stage at the end differs between the models.
    pub different_stage: u64,
    /// The first few of them, by lead id.
    pub examples: Vec<Difference>,
    /// `--to-changelog`: whether the rebuilt state is at the offsets the
    /// stopped live service committed (so the service can be switched now);
    /// false while the live service still runs.
    pub switch_ready: Option<bool>,
}

const EXAMPLES: usize = 10;

/// Messages folded together (see [`Engine::fold_batch`]).
const BATCH: usize = 256;

/// One input partition (of every input topic): its engines and its range.
struct Part {
    new: Engine,
    /// Folded under the live model, or the live state from its changelog.
    current: Engine,
    /// Next offset to read and end offset (exclusive), per input topic.
    next: Vec<i64>,
    end: Vec<i64>,
    /// The live state read from the changelog reflects exactly the input
    /// up to `end` (the live service is stopped at the cut).
    live_at_cut: bool,
    /// `--to-changelog` of a configuration that re-keys: the end of the
    /// repartition topic's partition. The rebuilt state holds what the
    /// records before it hold (the replay routed them in process), so the
    /// switched service starts reading there.
    routed_end: Option<i64>,
}

impl Part {
    fn engines(&mut self) -> (&mut Engine, &mut Engine) {
        (&mut self.new, &mut self.current)
    }

    fn done(&self) -> bool {
        self.next.iter().zip(&self.end).all(|(n, e)| n >= e)
    }

    /// The reader is at the end of what partition `p` holds readable, at
    /// `position`. Trailing transaction markers leave the last offsets
    /// without a message: the position tells where the partition ends.
    fn at_end(&mut self, topics: &[String], position: &TopicPartitionList, p: i32) {
        for (ti, t) in topics.iter().enumerate() {
            if let Some(Offset::Offset(o)) = position.find_partition(t, p).map(|e| e.offset()) {
                self.next[ti] = self.next[ti].max(o);
            }
        }
    }
}

/// A poll that brought nothing. Records below the end offsets that never
/// become readable (an input transaction left open) end the read there
/// after 30 s.
fn nothing_readable(idle_since: &mut Option<Instant>, parts: &mut [&mut Part]) {
    let since = *idle_since.get_or_insert_with(Instant::now);
    if since.elapsed() > Duration::from_secs(30) {
        tracing::warn!("no readable records for 30 s before the end offsets; stopping there");
        for part in parts.iter_mut() {
            part.next.clone_from(&part.end);
        }
    }
}

/// The leads with a `lead_erased` in the parts' ranges of the input topics
/// (one read of the range; only messages holding the words `lead_erased`
/// are decoded).
fn erased_in_range(
    cfg: &Config,
    inputs: &[(String, TopicInput)],
    mapping: &Mapping,
    parts: &[Part],
) -> Result<HashSet<String>> {
    let mut erased = HashSet::new();
    let consumer: BaseConsumer<ReaderCtx> =
        kafka::reader(cfg, kafka::Reading::Replay).create_with_context(ReaderCtx)?;
    let mut tpl = TopicPartitionList::new();
    // (topic index, partition) → end offset, while unread.
    let mut open: BTreeMap<(usize, i32), i64> = BTreeMap::new();
    for (p, part) in parts.iter().enumerate() {
        for (ti, (t, _)) in inputs.iter().enumerate() {
            if part.next[ti] < part.end[ti] {
                tpl.add_partition_offset(t, p as i32, Offset::Offset(part.next[ti]))?;
                open.insert((ti, p as i32), part.end[ti]);
            }
        }
    }
    if open.is_empty() {
        super::kafka::close(consumer);
        return Ok(erased);
    }
    consumer.assign(&tpl)?;
    let finder = memchr::memmem::Finder::new(b"lead_erased");
    let mut idle_since: Option<Instant> = None;
    while !open.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) => {
                idle_since = None;
                let Some(ti) = inputs.iter().position(|(t, _)| t == msg.topic()) else {
                    continue;
                };
                let key = (ti, msg.partition());
                let Some(&end) = open.get(&key) else { continue };
                if msg.offset() + 1 >= end {
                    open.remove(&key);
                }
                if msg.offset() >= end {
                    continue;
                }
                let payload = msg.payload().unwrap_or(&[]);
                let input = &inputs[ti].1;
                let mut headers: Vec<(&str, &[u8])> = Vec::new();
                if input.format == crate::codec::InputFormat::Cloudevents {
                    if let Some(h) = msg.headers() {
                        headers.extend(h.iter().map(|h| (h.key, h.value.unwrap_or_default())));
                    }
                }
                if finder.find(payload).is_none()
                    && !headers.iter().any(|(_, v)| finder.find(v).is_some())
                {
                    continue;
                }
                if let Ok(Decoded { message, .. }) = decode_message(
                    input,
                    mapping,
                    msg.key(),
                    &headers,
                    payload,
                    cfg.kafka.max_event_bytes,
                ) {
                    let e = message.event();
                    if e.kind == crate::event::Kind::LeadErased {
                        erased.insert(e.lead_id.to_string());
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                let position = consumer.position()?;
                open.retain(|&(ti, q), end| {
                    q != p
                        || !matches!(
                            position.find_partition(&inputs[ti].0, q).map(|e| e.offset()),
                            Some(Offset::Offset(o)) if o >= *end
                        )
                });
            }
            Some(Err(e)) => tracing::warn!(error = %e, "read error; retrying"),
            None => {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(30) {
                    tracing::warn!("no readable records for 30 s before the end offsets; stopping the scan for erasures there");
                    break;
                }
            }
        }
    }
    super::kafka::close(consumer);
    Ok(erased)
}

/// Runs a replay to its end offsets and returns the summary.
pub fn replay(cfg: &Config, opts: &Options, mut progress: impl FnMut(Progress)) -> Result<Summary> {
    let started = Instant::now();
    let current_model = Arc::new(match &cfg.model {
        Some(p) => Model::from_path(p).map_err(|source| ReplayError::LiveModel {
            path: p.display().to_string(),
            source,
        })?,
        None => Model::default_model(),
    });
    let new_model = Arc::clone(&opts.model);
    let lateness = cfg.kafka.allowed_lateness;
    let topics = &cfg.kafka.input_topics;
    match &opts.target {
        Target::Live if new_model.version == current_model.version => {
            return Err(options(format!(
                "--into-live needs a model version other than the live one ({:?}): \
                 the status topic must tell the new model's changes apart",
                current_model.version
            )))
        }
        Target::Changelog(t) if *t == cfg.changelog_topic() => {
            return Err(options(format!(
                "--to-changelog {t}: that is the live changelog; name a new topic"
            )))
        }
        Target::Changelog(_) if opts.start != Start::Earliest => {
            return Err(options(
                "--to-changelog rebuilds the whole state: it cannot start at --from TIME".into(),
            ))
        }
        _ => {}
    }

    // The input topics and their partition count.
    let probe: BaseConsumer = kafka::plain(cfg)
        .set("group.id", &cfg.kafka.group_id)
        .create()?;
    let n = kafka::input_partitions(cfg, &probe)?;
    let partitions =
        |name: &str| -> Result<Option<usize>> { Ok(kafka::partition_counts(&probe, &[name])?[0]) };
    let (mode, out_topic) = match &opts.target {
        Target::Shadow(t) => {
            let t = t
                .clone()
                .unwrap_or_else(|| format!("{}-shadow", cfg.kafka.status_topic));
            if partitions(&t)?.is_none() {
                kafka::create_topic(cfg, &t, n, Cleanup::Delete)?;
            }
            ("shadow", t)
        }
        Target::Live => {
            if partitions(&cfg.kafka.status_topic)?.is_none() {
                return Err(StartError::MissingTopics(cfg.kafka.status_topic.clone()).into());
            }
            ("live", cfg.kafka.status_topic.clone())
        }
        Target::Changelog(t) => {
            match partitions(t)? {
                None => kafka::create_topic(cfg, t, n, Cleanup::Compact)?,
                Some(m) if m != n => {
                    return Err(StartError::ChangelogPartitions {
                        topic: t.clone(),
                        actual: m,
                        expected: n,
                    }
                    .into())
                }
                Some(_) => {}
            }
            ("changelog", t.clone())
        }
    };
    let live_changelog = cfg.changelog_topic();
    let rekeys = cfg.rekeys();
    let repartition = cfg.repartition_topic();
    let live_state =
        matches!(opts.target, Target::Changelog(_)) && partitions(&live_changelog)?.is_some();

    // Offsets: from the start to the end seen now (or, when rebuilding the
    // state for a switch, to the live group's committed offsets).
    let committed = if let Target::Changelog(_) = opts.target {
        let mut tpl = TopicPartitionList::new();
        for t in topics {
            for p in 0..n as i32 {
                tpl.add_partition(t, p);
            }
        }
        Some(retry("fetch committed offsets", || {
            probe.committed_offsets(tpl.clone(), CALL_TIMEOUT)
        })?)
    } else {
        None
    };
    let from_time = match opts.start {
        Start::Time(t) => {
            let mut tpl = TopicPartitionList::new();
            for tn in topics {
                for p in 0..n as i32 {
                    tpl.add_partition_offset(tn, p, Offset::Offset(t / 1000))?;
                }
            }
            Some(retry("find offsets for --from", || {
                probe.offsets_for_times(tpl.clone(), CALL_TIMEOUT)
            })?)
        }
        Start::Earliest => None,
    };
    let mut parts = Vec::with_capacity(n);
    for p in 0..n as i32 {
        // Always from scratch, also for a state rebuild: a lead's sequence
        // is raised to the live one at the cut, and folding on from a state
        // raised at an earlier cut would count changes twice.
        let mut new = Engine::with_lateness(Arc::clone(&new_model), lateness);
        new.set_visitor_limits(cfg.input.visitor_limits());
        new.unlink_elsewhere(rekeys);
        if let Some(key) = &cfg.privacy.erasure_key {
            new.set_marker_key(key);
        }
        let (current, live_checkpoint) = if live_state {
            let Restored { engine, checkpoint } =
                restore_partition(cfg, &current_model, &live_changelog, p)?;
            (engine, checkpoint)
        } else {
            let mut e = Engine::with_lateness(Arc::clone(&current_model), lateness);
            e.set_visitor_limits(cfg.input.visitor_limits());
            e.unlink_elsewhere(rekeys);
            if let Some(key) = &cfg.privacy.erasure_key {
                e.set_marker_key(key);
            }
            (e, None)
        };
        let mut live_at_cut = true;
        let mut next = Vec::new();
        let mut end = Vec::new();
        for t in topics {
            let (low, high) = retry("fetch watermarks", || {
                probe.fetch_watermarks(t, p, CALL_TIMEOUT)
            })?;
            let offset_in = |tpl: &TopicPartitionList| tpl.find_partition(t, p).map(|e| e.offset());
            let start = match offset_in(from_time.as_ref().unwrap_or(&TopicPartitionList::new())) {
                Some(Offset::Offset(o)) => o,
                Some(_) => high,
                None => low,
            };
            let stop = match &committed {
                Some(c) => match offset_in(c) {
                    Some(Offset::Offset(o)) => o,
                    _ => low,
                },
                None => high,
            };
            // The live state is exactly at the cut when its checkpoint is
            // at the group's committed offset (no checkpoint: nothing done).
            let live_offset = live_checkpoint
                .as_ref()
                .and_then(|cp| cp.offset(t))
                .unwrap_or(low);
            live_at_cut &= live_offset == stop;
            next.push(start.max(low));
            end.push(stop);
        }
        let routed_end = match (&opts.target, rekeys) {
            (Target::Changelog(_), true) if partitions(&repartition)?.is_some() => Some(
                retry("fetch watermarks", || {
                    probe.fetch_watermarks(&repartition, p, CALL_TIMEOUT)
                })?
                .1,
            ),
            _ => None,
        };
        parts.push(Part {
            new,
            current,
            next,
            end,
            live_at_cut,
            routed_end,
        });
    }
    let total: u64 = parts
        .iter()
        .flat_map(|p| {
            p.next
                .iter()
                .zip(&p.end)
                .map(|(n, e)| (e - n).max(0) as u64)
        })
        .sum();

    super::kafka::close(probe);

    // The leads erased anywhere in the range: nothing of theirs is
    // written to the shadow or live topic (the rebuilt state of
    // `--to-changelog` holds only their markers anyway).
    let inputs: Vec<(String, TopicInput)> = topics
        .iter()
        .map(|t| (t.clone(), cfg.topic_input(t)))
        .collect();
    let mapping = cfg.input.mapping();
    let erased = match opts.target {
        Target::Changelog(_) => Default::default(),
        _ => erased_in_range(cfg, &inputs, &mapping, &parts)?,
    };

    // Read.
    let cc = kafka::reader(cfg, kafka::Reading::Replay);
    let producer: Option<BaseProducer<ProducerCtx>> = match opts.target {
        Target::Changelog(_) => None,
        _ => Some(kafka::producer(cfg, None, 20).create_with_context(ProducerCtx::default())?),
    };
    let suffix = match opts.target {
        Target::Live => Some(format!("@{}", new_model.version)),
        _ => None,
    };
    let fold_current = !live_state;
    // One reader per core, each with its share of the partitions (their
    // engines are independent), all writing through one producer.
    // A configuration that re-keys routes across partitions: one reader
    // takes them all, in the router's merge order.
    let workers = if rekeys {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, n)
    };
    let ce_source = (cfg.kafka.output_envelope == crate::config::OutputEnvelope::Cloudevents)
        .then(|| cfg.cloudevents_source());
    let ctx = Worker {
        cfg,
        inputs,
        mapping,
        erased: &erased,
        ce_source: ce_source.as_deref(),
        consumer: &cc,
        out_topic: &out_topic,
        suffix: suffix.as_deref(),
        producer: producer.as_ref(),
        fold_current,
        keep_state: matches!(opts.target, Target::Changelog(_)),
        workers,
        rekeys,
        done: AtomicU64::new(0),
    };
    let mut groups: Vec<Vec<&mut Part>> = (0..workers).map(|_| Vec::new()).collect();
    for (p, part) in parts.iter_mut().enumerate() {
        groups[p % workers].push(part);
    }
    // Each reader sends its counts when done; the progress is drawn while
    // waiting. (A reader that panics sends nothing, and the scope re-raises
    // its panic.)
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let results: Vec<Result<Counts>> = std::thread::scope(|s| {
        for (w, group) in groups.into_iter().enumerate() {
            let (ctx, done_tx) = (&ctx, done_tx.clone());
            s.spawn(move || {
                // The receiver only goes when the scope ends.
                let _ = done_tx.send(ctx.read(w, group));
            });
        }
        drop(done_tx);
        let mut results = Vec::with_capacity(workers);
        loop {
            progress(Progress {
                done: ctx.done.load(Ordering::Relaxed),
                total,
                elapsed: started.elapsed(),
            });
            match done_rx.recv_timeout(Duration::from_millis(250)) {
                Ok(r) => results.push(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break results,
            }
        }
    });
    let mut counts = Counts::default();
    for r in results {
        counts.add(r?);
    }
    let Counts {
        events,
        invalid,
        written,
        erased_changes,
        transitions,
        stages,
        leads,
        different_stage,
        mut examples,
    } = counts;
    progress(Progress {
        done: events + invalid,
        total,
        elapsed: started.elapsed(),
    });
    if let Some(p) = &producer {
        flush(p, Duration::from_secs(120))?;
        let lost = p
            .context()
            .failures
            .load(std::sync::atomic::Ordering::Relaxed);
        if lost > 0 {
            return Err(ReplayError::LostWrites {
                lost,
                topic: out_topic,
            });
        }
    }
    let switch_ready = match &opts.target {
        Target::Changelog(t) => Some(write_state(cfg, t, &mut parts, live_state)?),
        _ => None,
    };

    examples.sort_by(|a, b| a.lead_id.cmp(&b.lead_id));
    examples.truncate(EXAMPLES);
    let stage_counts = |counts: &[u64; Stage::ALL.len()]| -> BTreeMap<&'static str, u64> {
        Stage::ALL
            .into_iter()
            .filter(|&s| counts[s as usize] > 0)
            .map(|s| (s.as_str(), counts[s as usize]))
            .collect()
    };
    let seconds = started.elapsed().as_secs_f64();
    let [cur_stages, new_stages] = stages.each_ref().map(stage_counts);
    let [cur_transitions, new_transitions] = transitions.map(|m| transition_counts(&m));
    Ok(Summary {
        mode,
        topic: out_topic,
        events,
        invalid,
        changes_written: written,
        erased_leads: erased.len() as u64,
        erased_changes,
        seconds,
        events_per_second: events as f64 / seconds.max(1e-9),
        leads,
        current: ModelOutcome {
            version: current_model.version.clone(),
            stages: cur_stages,
            transitions: fold_current.then_some(cur_transitions),
        },
        new: ModelOutcome {
            version: new_model.version.clone(),
            stages: new_stages,
            transitions: Some(new_transitions),
        },
        different_stage,
        examples,
        switch_ready,
    })
}

/// Changes per transition, `[from][to]`.
type Matrix = [[u64; Stage::ALL.len()]; Stage::ALL.len()];

fn transition_counts(m: &Matrix) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for from in Stage::ALL {
        for to in Stage::ALL {
            let n = m[from as usize][to as usize];
            if n > 0 {
                out.insert(format!("{from}->{to}"), n);
            }
        }
    }
    out
}

/// What the readers counted and found at the end: `[0]` under the live
/// model, `[1]` under the new one.
#[derive(Default)]
struct Counts {
    events: u64,
    invalid: u64,
    written: u64,
    /// Changes of erased leads, not written.
    erased_changes: u64,
    transitions: [Matrix; 2],
    /// Leads per stage at the end, `[0]` live, `[1]` new.
    stages: [[u64; Stage::ALL.len()]; 2],
    /// Leads seen (by the new model).
    leads: u64,
    different_stage: u64,
    /// The first [`EXAMPLES`] of them, by lead id.
    examples: Vec<Difference>,
}

impl Counts {
    fn add(&mut self, mut o: Counts) {
        self.events += o.events;
        self.invalid += o.invalid;
        self.written += o.written;
        self.erased_changes += o.erased_changes;
        self.leads += o.leads;
        self.different_stage += o.different_stage;
        self.examples.append(&mut o.examples);
        for (s, os) in self.stages.iter_mut().zip(&o.stages) {
            for (x, y) in s.iter_mut().zip(os) {
                *x += y;
            }
        }
        for (m, om) in self.transitions.iter_mut().zip(&o.transitions) {
            for (row, orow) in m.iter_mut().zip(om) {
                for (x, y) in row.iter_mut().zip(orow) {
                    *x += y;
                }
            }
        }
    }
}

/// What the readers share.
struct Worker<'a> {
    cfg: &'a Config,
    /// How each input topic is read.
    inputs: Vec<(String, TopicInput)>,
    mapping: Mapping,
    /// The CloudEvents `source` of the changes written, with the envelope.
    ce_source: Option<&'a str>,
    consumer: &'a rdkafka::ClientConfig,
    out_topic: &'a str,
    suffix: Option<&'a str>,
    producer: Option<&'a BaseProducer<ProducerCtx>>,
    fold_current: bool,
    /// The engines are needed after the read (`--to-changelog`).
    keep_state: bool,
    workers: usize,
    /// Every partition is read by one reader and routed ([`merged`]).
    rekeys: bool,
    /// Messages read, for the progress bar.
    done: AtomicU64,
    /// Leads erased in the range: their changes are not written.
    erased: &'a HashSet<String>,
}

impl Worker<'_> {
    /// Reads reader `w`'s partitions (`p % workers == w`, in order) to their
    /// end offsets, folding every event under both models, then counts
    /// their leads.
    fn read(&self, w: usize, mut parts: Vec<&mut Part>) -> Result<Counts> {
        let mut counts = if self.rekeys {
            self.fold_merged(&mut parts)?
        } else {
            self.fold_all(w, &mut parts)?
        };
        for part in parts {
            tally(part, &mut counts);
            if !self.keep_state {
                // Freed here, beside the other reader, not one by one at the end.
                part.new = Engine::new(Arc::clone(part.new.model()));
                part.current = Engine::new(Arc::clone(part.current.model()));
            }
        }
        Ok(counts)
    }

    fn fold_all(&self, w: usize, parts: &mut [&mut Part]) -> Result<Counts> {
        let topics = &self.cfg.kafka.input_topics;
        let local = |p: i32| (p as usize - w) / self.workers;
        let consumer: BaseConsumer<ReaderCtx> = self.consumer.create_with_context(ReaderCtx)?;
        let mut tpl = TopicPartitionList::new();
        for (i, part) in parts.iter().enumerate() {
            let p = (i * self.workers + w) as i32;
            for (ti, t) in topics.iter().enumerate() {
                if part.next[ti] < part.end[ti] {
                    tpl.add_partition_offset(t, p, Offset::Offset(part.next[ti]))?;
                }
            }
        }
        if tpl.count() == 0 {
            super::kafka::close(consumer);
            return Ok(Counts::default());
        }
        consumer.assign(&tpl)?;
        let mut fold = Fold::default();
        // A run of messages of one partition, folded as a batch (a fetch
        // brings many of one partition in a row).
        let mut run: Vec<BorrowedMessage<'_>> = Vec::with_capacity(BATCH);
        let mut run_part = 0usize;
        let mut idle_since = None;
        while !parts.iter().all(|p| p.done()) {
            let msg = match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => m,
                other => {
                    self.fold_run(parts[run_part].engines(), &mut run, &mut fold);
                    match other {
                        Some(Err(KafkaError::PartitionEOF(p))) => {
                            // At the end of what is readable. Trailing
                            // transaction markers leave the last offsets
                            // without a message: the position tells where
                            // the partition really ends.
                            parts[local(p)].at_end(topics, &consumer.position()?, p);
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "read error; retrying"),
                        _ => nothing_readable(&mut idle_since, parts),
                    }
                    continue;
                }
            };
            idle_since = None;
            let Some(ti) = topics.iter().position(|t| t == msg.topic()) else {
                continue;
            };
            let p = local(msg.partition());
            let part = &mut parts[p];
            if msg.offset() >= part.end[ti] {
                part.next[ti] = part.end[ti];
                continue;
            }
            part.next[ti] = msg.offset() + 1;
            if p != run_part || run.len() == BATCH {
                self.fold_run(parts[run_part].engines(), &mut run, &mut fold);
                run_part = p;
            }
            run.push(msg);
        }
        self.fold_run(parts[run_part].engines(), &mut run, &mut fold);
        drop(run);
        super::kafka::close(consumer);
        Ok(fold.counts)
    }

    /// Decodes a run of one partition's messages and folds it under both
    /// models; writes the new model's changes.
    fn fold_run(
        &self,
        (new, current): (&mut Engine, &mut Engine),
        run: &mut Vec<BorrowedMessage<'_>>,
        fold: &mut Fold,
    ) {
        if run.is_empty() {
            return;
        }
        let counts = &mut fold.counts;
        let mut events = Vec::with_capacity(run.len());
        let mut headers: Vec<(&str, &[u8])> = Vec::new();
        for msg in run.iter() {
            let Some(input) = self
                .inputs
                .iter()
                .find(|(t, _)| t == msg.topic())
                .map(|(_, i)| i)
            else {
                continue;
            };
            headers.clear();
            if input.format == crate::codec::InputFormat::Cloudevents {
                if let Some(h) = msg.headers() {
                    headers.extend(h.iter().map(|h| (h.key, h.value.unwrap_or_default())));
                }
            }
            // Only topics keyed by lead get here (a configuration that
            // re-keys is read by `merged`): each message is an event of a
            // lead of this partition.
            match decode_message(
                input,
                &self.mapping,
                msg.key(),
                &headers,
                msg.payload().unwrap_or(&[]),
                self.cfg.kafka.max_event_bytes,
            ) {
                Ok(Decoded {
                    message: crate::event::Message::Lead(e),
                    ..
                }) => events.push(e),
                Ok(_) | Err(_) => counts.invalid += 1,
            }
        }
        counts.events += events.len() as u64;
        self.done.fetch_add(run.len() as u64, Ordering::Relaxed);
        new.fold_batch(&events, &mut fold.changes, |_| {});
        self.write_new(fold);
        if self.fold_current {
            current.fold_batch(&events, &mut fold.changes, |_| {});
            count_current(fold);
        }
        drop(events);
        run.clear();
    }
}

impl Worker<'_> {
    /// Counts the new model's changes in `fold.changes` and writes them
    /// (unless the replay only rebuilds the state); leaves `fold.changes`
    /// empty.
    fn write_new(&self, fold: &mut Fold) {
        let counts = &mut fold.counts;
        for mut c in fold.changes.drain(..) {
            // A breach is written like a change but is no transition.
            if c.is_stage_change() {
                counts.transitions[1][c.from as usize][c.to as usize] += 1;
            }
            if !self.erased.is_empty() && self.erased.contains(&c.lead_id) {
                counts.erased_changes += 1;
                continue;
            }
            if let Some(p) = self.producer {
                if let Some(s) = self.suffix {
                    c.change_id.push_str(s);
                }
                let buf = &mut fold.buf;
                buf.clear();
                match self.cfg.kafka.output_format {
                    Format::Json => encode_change_json(&c, buf),
                    Format::Protobuf => encode_change_proto(&c, buf),
                }
                let headers = self.ce_source.map(|source| {
                    cloudevents_headers(&c, source, self.cfg.kafka.output_format)
                        .iter()
                        .fold(OwnedHeaders::new_with_capacity(7), |h, (key, value)| {
                            h.insert(Header {
                                key,
                                value: Some(value.as_bytes()),
                            })
                        })
                });
                produce(p, self.out_topic, None, c.lead_id.as_bytes(), buf, headers);
                counts.written += 1;
            }
        }
    }
}

/// Counts the live model's changes in `fold.changes` (never written).
fn count_current(fold: &mut Fold) {
    for c in fold.changes.drain(..).filter(StatusChange::is_stage_change) {
        fold.counts.transitions[0][c.from as usize][c.to as usize] += 1;
    }
}

/// A reader's running totals and reused buffers.
#[derive(Default)]
struct Fold {
    counts: Counts,
    changes: Vec<StatusChange>,
    buf: Vec<u8>,
}

/// Adds a partition's leads per stage under both models, and the leads whose
/// stage differs, to `counts`.
fn tally(part: &Part, counts: &mut Counts) {
    let (new_model, current_model) = (part.new.model(), part.current.model());
    for lead in part.current.leads() {
        counts.stages[0][lead.stage() as usize] += 1;
    }
    for lead in part.new.leads() {
        counts.leads += 1;
        counts.stages[1][lead.stage() as usize] += 1;
        let (cur_stage, cur_score) = match part.current.lead(lead.id()) {
            Some(c) => (
                c.stage(),
                c.fit(current_model) + c.engagement(current_model),
            ),
            None => (Stage::Lead, 0.0),
        };
        if cur_stage != lead.stage() {
            counts.different_stage += 1;
            counts.examples.push(Difference {
                lead_id: lead.id().to_string(),
                current: cur_stage.as_str(),
                new: lead.stage().as_str(),
                current_score: round2(cur_score),
                new_score: round2(lead.fit(new_model) + lead.engagement(new_model)),
            });
        }
    }
    counts.examples.sort_by(|a, b| a.lead_id.cmp(&b.lead_id));
    counts.examples.truncate(EXAMPLES);
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Writes the rebuilt state of every partition, with a checkpoint at the
/// offsets it reflects, one transaction per partition. When the live state is
/// at the same offsets (the live service stopped), a lead's sequence goes on
/// from the live one, so the switched service's change ids follow the ones
/// already emitted; while the live service runs, its state is past the
/// offsets read and the sequences are left for the run after it stopped.
/// Returns whether every partition was at the cut.
fn write_state(cfg: &Config, topic: &str, parts: &mut [Part], live_state: bool) -> Result<bool> {
    let txn_id = format!("{}-rebuild-{topic}", cfg.kafka.group_id);
    let producer: BaseProducer<ProducerCtx> = kafka::producer(cfg, Some(&txn_id), 20)
        // A partition's whole state is one transaction.
        .set("transaction.timeout.ms", "600000")
        .create_with_context(ProducerCtx::default())?;
    retry("init transactions", || {
        producer.init_transactions(CALL_TIMEOUT)
    })?;
    let topics = &cfg.kafka.input_topics;
    let mut buf = Vec::with_capacity(512);
    for (p, part) in parts.iter_mut().enumerate() {
        if live_state && part.live_at_cut {
            let behind: Vec<_> = part
                .new
                .leads()
                .filter_map(|l| {
                    let live = part.current.lead(l.id())?;
                    (live.sequence > l.sequence).then(|| {
                        let mut l = l.clone();
                        l.sequence = live.sequence;
                        l
                    })
                })
                .collect();
            for lead in behind {
                part.new.restore(lead);
            }
        }
        producer.begin_transaction()?;
        for lead in part.new.leads() {
            buf.clear();
            changelog::encode_lead(lead, part.new.model(), &mut buf);
            produce(
                &producer,
                topic,
                Some(p as i32),
                lead.id().as_bytes(),
                &buf,
                None,
            );
        }
        // Visitors and leads waiting for one.
        part.new.drain_dirty_aux(|key, value| {
            if let Some(value) = value {
                produce(&producer, topic, Some(p as i32), key, value, None);
            }
        });
        let cp = match part.routed_end {
            Some(end) => {
                let mut names = topics.clone();
                names.push(cfg.repartition_topic());
                let mut next = part.end.clone();
                next.push(end);
                changelog::encode_checkpoint(part.new.watermark(), &names, &next)
            }
            None => changelog::encode_checkpoint(part.new.watermark(), topics, &part.end),
        };
        produce(&producer, topic, Some(p as i32), CHECKPOINT_KEY, &cp, None);
        commit(&producer)?;
        if producer
            .context()
            .failures
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            return Err(ReplayError::StateNotWritten {
                topic: topic.to_string(),
                partition: p,
            });
        }
    }
    Ok(!live_state || parts.iter().all(|p| p.live_at_cut))
}

/// Commits, serving delivery reports while the commit flushes.
fn commit(p: &BaseProducer<ProducerCtx>) -> Result<()> {
    let started = Instant::now();
    loop {
        p.poll(Duration::ZERO);
        match p.commit_transaction(Duration::from_millis(500)) {
            Ok(()) => return Ok(()),
            Err(KafkaError::Transaction(e))
                if e.is_retriable() && started.elapsed() < Duration::from_secs(300) =>
            {
                p.poll(Duration::from_millis(50));
            }
            Err(e) => return Err(ReplayError::Commit(e)),
        }
    }
}
