//! Replay of a configuration that re-keys (a topic not keyed by lead, or a
//! Segment topic): one reader takes every input partition, merges them in
//! the order the service's router does ([`crate::service::rekey::Merge`]:
//! record timestamp, then partition, topic and offset), and routes each
//! message in process to the engines that own its records' keys, as the
//! service does through its repartition topic. Nothing is written to that
//! topic: a replay must not disturb the live service.
//!
//! The whole range is there to read, so the merge needs no idle waits: it
//! goes on whenever every partition not yet at its end has a message
//! buffered.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message as _, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use super::{count_current, nothing_readable, Counts, Fold, Part, Result, Worker};
use crate::codec::{decode_message, InputFormat};
use crate::config::Partitioner;
use crate::engine::{route, Engine, Routed};
use crate::event::Message;
use crate::service::kafka::{self, ReaderCtx};

/// Messages buffered per partition before its fetching is paused.
const BOUND: usize = 5_000;

/// (input topic index, partition).
type Lane = (usize, i32);

/// A partition's buffered messages and whether its fetching is paused.
#[derive(Default)]
struct LaneBuf {
    buf: VecDeque<OwnedMessage>,
    paused: bool,
    /// The running maximum of the timestamps routed: a message ranks at
    /// it at least, as the service's router ranks it.
    floor: i64,
}

impl Worker<'_> {
    /// Reads every partition of `parts` (all of them, by index) to its end
    /// offsets in merge order, routing each message under both models.
    pub(super) fn fold_merged(&self, parts: &mut [&mut Part]) -> Result<Counts> {
        let topics = &self.cfg.kafka.input_topics;
        let consumer: BaseConsumer<ReaderCtx> = self.consumer.create_with_context(ReaderCtx)?;
        let mut tpl = TopicPartitionList::new();
        let mut lanes: BTreeMap<Lane, LaneBuf> = BTreeMap::new();
        for (p, part) in parts.iter().enumerate() {
            for (ti, t) in topics.iter().enumerate() {
                if part.next[ti] < part.end[ti] {
                    tpl.add_partition_offset(t, p as i32, Offset::Offset(part.next[ti]))?;
                    lanes.insert((ti, p as i32), LaneBuf::default());
                }
            }
        }
        if lanes.is_empty() {
            kafka::close(consumer);
            return Ok(Counts::default());
        }
        consumer.assign(&tpl)?;
        let mut fold = Fold::default();
        let mut router = Router::default();
        let mut idle_since = None;
        loop {
            // Route while every lane not at its end has a message.
            loop {
                let mut best: Option<(Lane, (i64, i32, usize, i64))> = None;
                let mut starved = false;
                for (&lane, l) in &lanes {
                    match l.buf.front() {
                        Some(m) => {
                            let ts = m.timestamp().to_millis().unwrap_or(i64::MIN);
                            let rank = (ts.max(l.floor), lane.1, lane.0, m.offset());
                            if best.is_none_or(|(_, b)| rank < b) {
                                best = Some((lane, rank));
                            }
                        }
                        None => {
                            let part = &parts[lane.1 as usize];
                            starved |= part.next[lane.0] < part.end[lane.0];
                        }
                    }
                }
                let (Some((lane, rank)), false) = (best, starved) else {
                    break;
                };
                let l = lanes.get_mut(&lane).expect("found above");
                let msg = l.buf.pop_front().expect("non-empty");
                l.floor = l.floor.max(rank.0);
                if l.paused && l.buf.len() <= BOUND / 2 {
                    l.paused = false;
                    let mut t = TopicPartitionList::new();
                    t.add_partition(&topics[lane.0], lane.1);
                    consumer.resume(&t)?;
                }
                self.route_message(parts, lane, &msg, &mut router, &mut fold);
            }
            let done = lanes.iter().all(|(&(ti, p), l)| {
                let part = &parts[p as usize];
                l.buf.is_empty() && part.next[ti] >= part.end[ti]
            });
            if done {
                break;
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    idle_since = None;
                    let Some(ti) = topics.iter().position(|t| t == m.topic()) else {
                        continue;
                    };
                    let p = m.partition();
                    let part = &mut parts[p as usize];
                    if m.offset() >= part.end[ti] {
                        part.next[ti] = part.end[ti];
                        continue;
                    }
                    part.next[ti] = m.offset() + 1;
                    let l = lanes.entry((ti, p)).or_default();
                    l.buf.push_back(m.detach());
                    if !l.paused && l.buf.len() >= BOUND {
                        l.paused = true;
                        let mut t = TopicPartitionList::new();
                        t.add_partition(&topics[ti], p);
                        consumer.pause(&t)?;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    parts[p as usize].at_end(topics, &consumer.position()?, p);
                }
                Some(Err(e)) => tracing::warn!(error = %e, "read error; retrying"),
                None => nothing_readable(&mut idle_since, parts),
            }
        }
        kafka::close(consumer);
        Ok(fold.counts)
    }

    /// Decodes one message and routes it under the new model (its changes
    /// written) and, unless the live state was read, the live one.
    fn route_message(
        &self,
        parts: &mut [&mut Part],
        (ti, p): Lane,
        msg: &OwnedMessage,
        router: &mut Router,
        fold: &mut Fold,
    ) {
        self.done.fetch_add(1, Ordering::Relaxed);
        let (_, input) = &self.inputs[ti];
        let headers: Vec<(&str, &[u8])> = match (input.format, msg.headers()) {
            (InputFormat::Cloudevents, Some(h)) => h
                .iter()
                .map(|h| (h.key, h.value.unwrap_or_default()))
                .collect(),
            _ => Vec::new(),
        };
        let decoded = decode_message(
            input,
            &self.mapping,
            msg.key(),
            &headers,
            msg.payload().unwrap_or(&[]),
            self.cfg.kafka.max_event_bytes,
        );
        let Ok(decoded) = decoded else {
            fold.counts.invalid += 1;
            return;
        };
        fold.counts.events += 1;
        // The partition a record goes to, as the service sends it: a record
        // of the message's own key stays in the message's partition on a
        // topic keyed by lead.
        let n = parts.len();
        let partitioner = self.cfg.kafka.partitioner;
        let own = |r: &Routed<'_>| {
            if input.keyed_by_lead && msg.key() == Some(r.key().as_bytes()) {
                p
            } else {
                partitioner.partition(r.key().as_bytes(), n)
            }
        };
        if self.fold_current {
            router.run(
                decoded.message.clone(),
                own,
                partitioner,
                parts,
                |p| &mut p.current,
                fold,
            );
            count_current(fold);
        }
        router.run(
            decoded.message,
            own,
            partitioner,
            parts,
            |p| &mut p.new,
            fold,
        );
        self.write_new(fold);
    }
}

/// The repartition topic, in process: records waiting for their engine.
#[derive(Default)]
struct Router {
    queue: VecDeque<(usize, Routed<'static>)>,
    send: Vec<Routed<'static>>,
}

impl Router {
    /// Folds a message's records in the engines `pick` chooses, and the
    /// records their folding sends on, until none is left; changes go to
    /// `fold.changes`.
    fn run(
        &mut self,
        msg: Message<'_>,
        own: impl Fn(&Routed<'_>) -> i32,
        partitioner: Partitioner,
        parts: &mut [&mut Part],
        pick: fn(&mut Part) -> &mut Engine,
        fold: &mut Fold,
    ) {
        let n = parts.len();
        for r in route(msg) {
            let q = own(&r) as usize;
            pick(parts[q]).ingest(r, &mut fold.changes, &mut self.send, |_, _| {});
            self.forward(partitioner, n);
            while let Some((q, next)) = self.queue.pop_front() {
                pick(parts[q]).ingest(next, &mut fold.changes, &mut self.send, |_, _| {});
                self.forward(partitioner, n);
            }
        }
    }

    /// Queues what the last fold sent on, for the partitions of its keys
    /// (the service writes them to the repartition topic by key).
    fn forward(&mut self, partitioner: Partitioner, partitions: usize) {
        for r in self.send.drain(..) {
            if r.is_broadcast() {
                for q in 0..partitions {
                    self.queue.push_back((q, r.clone()));
                }
                continue;
            }
            let q = partitioner.partition(r.key().as_bytes(), partitions) as usize;
            self.queue.push_back((q, r));
        }
    }
}
