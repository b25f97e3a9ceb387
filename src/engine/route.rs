//! Anonymous visitors, identification, and the records that carry them
//! between partitions.
//!
//! A decoded [`Message`] becomes one or two [`Routed`] records, each for the
//! engine that owns its [`Routed::key`] (a lead id or a visitor id). An
//! engine that folds a routed record may have to send records on to other
//! keys (a visitor's events handed to the lead it identified as). In the
//! service these travel through the repartition topic; `leadscore score`
//! feeds them back into its one engine at once ([`Local`]), in the same
//! order, so the offline result is the reference for the service.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use fnv::{FnvHashMap, FnvHashSet};
use prost::encoding::{decode_varint, encode_varint};

use super::snapshot::SnapshotError;
use super::{hash64, Engine, Outcome};
use crate::change::StatusChange;
use crate::codec::{decode_proto, encode_event_proto};
use crate::event::{Event, Kind, Message};
use crate::time::{Micros, DAY};

/// A record for the engine that owns its key.
#[derive(Debug, Clone, PartialEq)]
pub enum Routed<'a> {
    /// An event of the lead `event.lead_id` (key: the lead).
    Lead(Event<'a>),
    /// An event of the anonymous visitor `event.lead_id` (key: the visitor).
    Visitor(Event<'a>),
    /// An identification, for the visitor (key: the visitor): its retained
    /// events go to the lead `event.lead_id` in a [`Routed::Handoff`], and
    /// the visitor is linked to that lead.
    Identify {
        visitor_id: Cow<'a, str>,
        event: Event<'a>,
        alias: bool,
    },
    /// The same identification, for the lead (key: the lead): the lead's
    /// later records wait until the visitor's handoff arrives, so they are
    /// folded after the visitor's events, in the order of the input.
    Barrier {
        visitor_id: Cow<'a, str>,
        event: Event<'a>,
    },
    /// The visitor's retained events, in the order it received them, and
    /// the identification (key: the lead `identify.lead_id`).
    Handoff {
        visitor_id: Cow<'a, str>,
        events: Vec<Event<'a>>,
        identify: Event<'a>,
        alias: bool,
    },
    /// A later event of a linked visitor, for its lead (key: the lead;
    /// `event.lead_id` is the lead).
    Forward(Event<'a>),
    /// The lead `event.lead_id` was erased (`event` is its `lead_erased`):
    /// the visitors linked to it are dropped. For every partition
    /// ([`Routed::is_broadcast`]): a visitor lives in its own id's.
    Unlink(Event<'a>),
}

impl<'a> Routed<'a> {
    /// The id of the lead or visitor whose engine takes the record.
    pub fn key(&self) -> &str {
        match self {
            Routed::Lead(e) | Routed::Visitor(e) | Routed::Forward(e) | Routed::Unlink(e) => {
                &e.lead_id
            }
            Routed::Identify { visitor_id, .. } => visitor_id,
            Routed::Barrier { event, .. } => &event.lead_id,
            Routed::Handoff { identify, .. } => &identify.lead_id,
        }
    }

    /// Whether the record goes to every partition, not its key's.
    pub fn is_broadcast(&self) -> bool {
        matches!(self, Routed::Unlink(_))
    }

    pub fn into_owned(self) -> Routed<'static> {
        let own = |s: Cow<'_, str>| Cow::Owned(s.into_owned());
        match self {
            Routed::Lead(e) => Routed::Lead(e.into_owned()),
            Routed::Visitor(e) => Routed::Visitor(e.into_owned()),
            Routed::Forward(e) => Routed::Forward(e.into_owned()),
            Routed::Unlink(e) => Routed::Unlink(e.into_owned()),
            Routed::Identify {
                visitor_id,
                event,
                alias,
            } => Routed::Identify {
                visitor_id: own(visitor_id),
                event: event.into_owned(),
                alias,
            },
            Routed::Barrier { visitor_id, event } => Routed::Barrier {
                visitor_id: own(visitor_id),
                event: event.into_owned(),
            },
            Routed::Handoff {
                visitor_id,
                events,
                identify,
                alias,
            } => Routed::Handoff {
                visitor_id: own(visitor_id),
                events: events.into_iter().map(Event::into_owned).collect(),
                identify: identify.into_owned(),
                alias,
            },
        }
    }
}

/// The records a message becomes, in the order they must be sent: an
/// identification goes to the lead (the barrier) before the visitor.
pub fn route(msg: Message<'_>) -> impl Iterator<Item = Routed<'_>> {
    let (first, second) = match msg {
        Message::Lead(e) => (Routed::Lead(e), None),
        Message::Visitor(e) => (Routed::Visitor(e), None),
        Message::Identify {
            visitor_id,
            event,
            alias,
        } => (
            Routed::Barrier {
                visitor_id: visitor_id.clone(),
                event: event.clone(),
            },
            Some(Routed::Identify {
                visitor_id,
                event,
                alias,
            }),
        ),
    };
    std::iter::once(first).chain(second)
}

/// How much of an anonymous visitor is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VisitorLimits {
    /// Retained events per visitor (the most recent are kept).
    pub max_events: usize,
    /// A visitor (and its link to a lead) is dropped this long after its
    /// last event, in event time.
    pub ttl: Micros,
}

impl Default for VisitorLimits {
    fn default() -> Self {
        VisitorLimits {
            max_events: 64,
            ttl: 90 * DAY,
        }
    }
}

/// An anonymous visitor as the engine keeps it (for `explain`).
#[derive(Debug, Clone, PartialEq)]
pub struct VisitorView<'a> {
    /// The latest event time it has seen.
    pub last_event: Micros,
    /// When it is dropped unless another event comes first.
    pub expires_at: Micros,
    /// Its retained events, in the order received.
    pub retained: Vec<&'a Event<'static>>,
    /// The lead it identified as, if any.
    pub linked_to: Option<&'a str>,
}

/// Counts of what visitors did, since the engine started (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VisitorStats {
    /// Visitors in state now.
    pub in_state: u64,
    pub identifications: u64,
    /// Events of linked visitors forwarded to their lead.
    pub forwarded: u64,
    pub expired: u64,
}

/// Changelog keys of the state that is not a lead: they start with a NUL
/// byte, which a lead id never does (the decoders refuse it).
pub fn is_aux_key(key: &[u8]) -> bool {
    key.first() == Some(&0)
}

/// Changelog key of a visitor's state.
fn visitor_key(id: &str) -> Box<[u8]> {
    [&[0, b'v'][..], id.as_bytes()].concat().into_boxed_slice()
}

/// Changelog key of the records a lead holds while it waits for handoffs.
fn waiting_key(lead: &str) -> Box<[u8]> {
    [&[0, b'w'][..], lead.as_bytes()]
        .concat()
        .into_boxed_slice()
}

/// An anonymous visitor.
#[derive(Debug, Clone, PartialEq)]
struct Visitor {
    /// The latest event time it has seen: its time to live runs from here.
    last: Micros,
    /// Events that match an engagement rule, in the order received.
    events: VecDeque<Event<'static>>,
    /// The lead it identified as: its later events go there.
    link: Option<Box<str>>,
}

/// What a waiting lead keeps, in the order it arrived.
#[derive(Debug, Clone, PartialEq)]
enum Held {
    /// An identification whose handoff has not arrived (or has, behind an
    /// earlier one that has not).
    Barrier {
        visitor_id: Box<str>,
        identify_id: Box<str>,
        /// The partition's watermark when the barrier arrived.
        watermark: Micros,
        handoff: Option<Handoff>,
    },
    /// A record of the lead that arrived while it waited, with the
    /// partition's watermark then (timers due by it fire before it).
    Record {
        forwarded: bool,
        watermark: Micros,
        event: Event<'static>,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Handoff {
    events: Vec<Event<'static>>,
    identify: Event<'static>,
    alias: bool,
}

/// The visitors of a partition, and its leads that wait for a handoff.
#[derive(Default)]
pub(super) struct Visitors {
    limits: VisitorLimits,
    map: FnvHashMap<Box<str>, Visitor>,
    /// (last + ttl, visitor): entries go stale when a visitor's last event
    /// moves; they are checked when they come due.
    expiry: BinaryHeap<Reverse<(Micros, Box<str>)>>,
    waiting: FnvHashMap<Box<str>, VecDeque<Held>>,
    /// Changelog keys changed since the last drain.
    dirty: FnvHashSet<Box<[u8]>>,
    stats: VisitorStats,
}

impl Visitors {
    /// Whether the lead waits for a visitor's handoff (one branch when no
    /// lead does: the keyed path pays nothing else).
    #[inline]
    pub(super) fn is_waiting(&self, lead: &str) -> bool {
        !self.waiting.is_empty() && self.waiting.contains_key(lead)
    }

    /// Whether any lead waits for a handoff.
    #[inline]
    pub(super) fn any_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    fn touch(&mut self, key: Box<[u8]>) {
        self.dirty.insert(key);
    }

    fn schedule(&mut self, id: &str, last: Micros) {
        self.expiry
            .push(Reverse((last.saturating_add(self.limits.ttl), id.into())));
    }

    /// Drops the visitors linked to this lead (it was removed). A lead that
    /// waits for a handoff is never removed: its events, the erasure among
    /// them, are held until the handoff arrives.
    pub(super) fn forget_lead(&mut self, lead: &str) {
        let linked: Vec<Box<str>> = self
            .map
            .iter()
            .filter(|(_, v)| v.link.as_deref() == Some(lead))
            .map(|(id, _)| id.clone())
            .collect();
        for id in linked {
            self.map.remove(&id);
            self.touch(visitor_key(&id));
        }
    }

    /// Drops the visitor if its time to live has run out by `t`.
    fn expire_if_due(&mut self, id: &str, t: Micros) {
        let ttl = self.limits.ttl;
        if self
            .map
            .get(id)
            .is_some_and(|v| v.last.saturating_add(ttl) <= t)
        {
            self.map.remove(id);
            self.stats.expired += 1;
            self.touch(visitor_key(id));
        }
    }
}

impl Engine {
    /// Sets how much of an anonymous visitor is kept.
    pub fn set_visitor_limits(&mut self, limits: VisitorLimits) {
        self.visitors.limits = limits;
    }

    pub fn visitor_limits(&self) -> VisitorLimits {
        self.visitors.limits
    }

    /// What the engine keeps of an anonymous visitor.
    pub fn visitor(&self, id: &str) -> Option<VisitorView<'_>> {
        self.visitors.map.get(id).map(|v| VisitorView {
            last_event: v.last,
            expires_at: v.last.saturating_add(self.visitors.limits.ttl),
            retained: v.events.iter().collect(),
            linked_to: v.link.as_deref(),
        })
    }

    /// Counts of what visitors did (cumulative), and how many are in state.
    pub fn visitor_stats(&self) -> VisitorStats {
        VisitorStats {
            in_state: self.visitors.map.len() as u64,
            ..self.visitors.stats
        }
    }

    /// Folds one routed record. Changes go to `out`; records for other keys
    /// (a handoff, a forwarded event) to `send`; `each` sees every event
    /// applied to a lead (or held for one), with its outcome.
    pub fn ingest(
        &mut self,
        record: Routed<'_>,
        out: &mut Vec<StatusChange>,
        send: &mut Vec<Routed<'static>>,
        each: impl FnMut(&Event<'_>, Outcome),
    ) {
        self.ingest_record(record, out, send, each);
        self.drain_unlinks(send);
    }

    fn ingest_record(
        &mut self,
        record: Routed<'_>,
        out: &mut Vec<StatusChange>,
        send: &mut Vec<Routed<'static>>,
        mut each: impl FnMut(&Event<'_>, Outcome),
    ) {
        match record {
            Routed::Lead(e) => {
                let o = self.fold(&e, out);
                each(&e, o);
            }
            Routed::Forward(e) => {
                if self.visitors.is_waiting(&e.lead_id) {
                    each(&e, Outcome::Held);
                    self.hold_record(true, e.into_owned(), out);
                } else {
                    let o = self.fold_hashed(&e, hash64(e.lead_id.as_bytes()) as u32, out);
                    each(&e, o);
                }
            }
            Routed::Visitor(e) => self.visitor_event(e, out, send),
            Routed::Unlink(e) => self.visitors.forget_lead(&e.lead_id),
            Routed::Identify {
                visitor_id,
                event,
                alias,
            } => self.identify_visitor(&visitor_id, event, alias, out, send),
            Routed::Barrier { visitor_id, event } => {
                self.advance_to(event.occurred_at.saturating_sub(self.lateness), out);
                let lead: Box<str> = event.lead_id.as_ref().into();
                let watermark = self.watermark;
                self.visitors.touch(waiting_key(&lead));
                self.visitors
                    .waiting
                    .entry(lead)
                    .or_default()
                    .push_back(Held::Barrier {
                        visitor_id: visitor_id.as_ref().into(),
                        identify_id: event.event_id.as_ref().into(),
                        watermark,
                        handoff: None,
                    });
            }
            Routed::Handoff {
                visitor_id,
                events,
                identify,
                alias,
            } => {
                let handoff = Handoff {
                    events: events.into_iter().map(Event::into_owned).collect(),
                    identify: identify.into_owned(),
                    alias,
                };
                let lead: &str = &handoff.identify.lead_id.clone();
                let slot = self.visitors.waiting.get_mut(lead).and_then(|q| {
                    q.iter_mut().find_map(|h| match h {
                        Held::Barrier {
                            visitor_id: v,
                            identify_id,
                            handoff: slot @ None,
                            ..
                        } if **v == *visitor_id && **identify_id == *handoff.identify.event_id => {
                            Some(slot)
                        }
                        _ => None,
                    })
                });
                match slot {
                    Some(slot) => *slot = Some(handoff),
                    // No barrier waits for it (it cannot be lost: the barrier
                    // is written before the identification that makes this):
                    // apply it as it comes.
                    None => {
                        self.visitors
                            .waiting
                            .entry(lead.into())
                            .or_default()
                            .push_front(Held::Barrier {
                                visitor_id: visitor_id.as_ref().into(),
                                identify_id: "".into(),
                                watermark: self.watermark,
                                handoff: Some(handoff),
                            });
                    }
                }
                self.visitors.touch(waiting_key(lead));
                self.release(lead, out, &mut each);
            }
        }
    }

    /// Keeps a record of a waiting lead (its watermark move happens now, as
    /// for any event that arrives).
    pub(super) fn hold(&mut self, record: Routed<'static>, out: &mut Vec<StatusChange>) -> Outcome {
        match record {
            Routed::Lead(e) => self.hold_record(false, e, out),
            Routed::Forward(e) => self.hold_record(true, e, out),
            _ => unreachable!("only a lead's own records are held"),
        }
    }

    fn hold_record(
        &mut self,
        forwarded: bool,
        event: Event<'static>,
        out: &mut Vec<StatusChange>,
    ) -> Outcome {
        self.advance_to(event.occurred_at.saturating_sub(self.lateness), out);
        let lead: &str = &event.lead_id;
        self.visitors.dirty.insert(waiting_key(lead));
        let watermark = self.watermark;
        if let Some(q) = self.visitors.waiting.get_mut(lead) {
            q.push_back(Held::Record {
                forwarded,
                watermark,
                event,
            });
        }
        Outcome::Held
    }

    /// Folds what the lead holds, up to the first identification whose
    /// handoff has not arrived.
    ///
    /// Each held item is folded as it would have been on arrival: under the
    /// watermark of that moment, so the lead's timers that came due while
    /// it waited fire between its records where they would have, not all
    /// before them.
    fn release(
        &mut self,
        lead: &str,
        out: &mut Vec<StatusChange>,
        each: &mut impl FnMut(&Event<'_>, Outcome),
    ) {
        let Some(mut queue) = self.visitors.waiting.remove(lead) else {
            return;
        };
        // Every other timer due by the real watermark has fired already, so
        // folding under an earlier one moves only this lead's.
        let real = self.watermark;
        while let Some(front) = queue.front() {
            if matches!(front, Held::Barrier { handoff: None, .. }) {
                break;
            }
            match queue.pop_front().expect("checked above") {
                Held::Barrier {
                    handoff: Some(h),
                    watermark,
                    ..
                } => {
                    self.watermark = watermark.min(real);
                    for e in &h.events {
                        let o = self.fold_hashed(e, hash64(e.lead_id.as_bytes()) as u32, out);
                        each(e, o);
                    }
                    if !h.alias {
                        let e = &h.identify;
                        let o = self.fold_hashed(e, hash64(e.lead_id.as_bytes()) as u32, out);
                        each(e, o);
                    }
                }
                Held::Record {
                    watermark, event, ..
                } => {
                    self.watermark = watermark.min(real);
                    self.fire_lead_due(lead, self.watermark, out);
                    let o = self.fold_hashed(&event, hash64(event.lead_id.as_bytes()) as u32, out);
                    each(&event, o);
                }
                Held::Barrier { handoff: None, .. } => unreachable!("stopped above"),
            }
        }
        self.watermark = self.watermark.max(real);
        if queue.is_empty() {
            // Timers that came due after its last record.
            self.fire_lead_due(lead, self.watermark, out);
        } else {
            self.visitors.waiting.insert(lead.into(), queue);
        }
    }

    /// Fires the lead's timers due by `by`.
    fn fire_lead_due(&mut self, lead: &str, by: Micros, out: &mut Vec<StatusChange>) {
        let Some(idx) = self.find(lead) else {
            return;
        };
        loop {
            let due = self.next_due(idx);
            if due > by {
                break;
            }
            self.fire(idx, due, out);
        }
    }

    /// An event of an anonymous visitor.
    fn visitor_event(
        &mut self,
        e: Event<'_>,
        out: &mut Vec<StatusChange>,
        send: &mut Vec<Routed<'static>>,
    ) {
        let t = e.occurred_at;
        self.advance_to(t.saturating_sub(self.lateness), out);
        let id: Box<str> = e.lead_id.as_ref().into();
        self.visitors.expire_if_due(&id, t);
        let retain = e.kind == Kind::Engagement
            && self
                .model
                .rules_for(&e.event_type)
                .iter()
                .any(|&ri| super::rule_matches(&self.model.engagement_rules[ri], &e));
        let max_events = self.visitors.limits.max_events;
        let v = match self.visitors.map.get_mut(&id) {
            Some(v) => v,
            None if retain => self.visitors.map.entry(id.clone()).or_insert(Visitor {
                last: t,
                events: VecDeque::new(),
                link: None,
            }),
            // Nothing to keep of a visitor not seen before.
            None => return,
        };
        if v.events.iter().any(|x| x.event_id == e.event_id) {
            return;
        }
        v.last = v.last.max(t);
        let last = v.last;
        if let Some(lead) = &v.link {
            let mut fwd = e.into_owned();
            fwd.lead_id = Cow::Owned(lead.to_string());
            send.push(Routed::Forward(fwd));
            self.visitors.stats.forwarded += 1;
        } else if retain {
            v.events.push_back(e.into_owned());
            if v.events.len() > max_events {
                v.events.pop_front();
            }
        }
        self.visitors.schedule(&id, last);
        self.visitors.touch(visitor_key(&id));
    }

    /// An identification, on the visitor's side: hand its events to the
    /// lead, and link it.
    fn identify_visitor(
        &mut self,
        visitor_id: &str,
        event: Event<'_>,
        alias: bool,
        out: &mut Vec<StatusChange>,
        send: &mut Vec<Routed<'static>>,
    ) {
        let t = event.occurred_at;
        self.advance_to(t.saturating_sub(self.lateness), out);
        self.visitors.expire_if_due(visitor_id, t);
        let v = self
            .visitors
            .map
            .entry(visitor_id.into())
            .or_insert(Visitor {
                last: t,
                events: VecDeque::new(),
                link: None,
            });
        let events: Vec<Event<'static>> = v
            .events
            .drain(..)
            .map(|mut e| {
                e.lead_id = Cow::Owned(event.lead_id.to_string());
                e
            })
            .collect();
        v.link = Some(event.lead_id.as_ref().into());
        v.last = v.last.max(t);
        let last = v.last;
        self.visitors.schedule(visitor_id, last);
        self.visitors.touch(visitor_key(visitor_id));
        self.visitors.stats.identifications += 1;
        send.push(Routed::Handoff {
            visitor_id: Cow::Owned(visitor_id.to_string()),
            events,
            identify: event.into_owned(),
            alias,
        });
    }

    /// Drops the visitors whose time to live has run out by `watermark`.
    pub(super) fn expire_visitors(&mut self, watermark: Micros) {
        let v = &mut self.visitors;
        while let Some(Reverse((due, _))) = v.expiry.peek() {
            if *due > watermark {
                break;
            }
            let Reverse((due, id)) = v.expiry.pop().expect("peeked");
            let ttl = v.limits.ttl;
            if v.map
                .get(&id)
                .is_some_and(|x| x.last.saturating_add(ttl) == due)
            {
                v.map.remove(&id);
                v.stats.expired += 1;
                v.dirty.insert(visitor_key(&id));
            }
        }
    }

    /// Takes the visitor and waiting-lead state changed since the last call,
    /// as changelog records (key, value; `None` is a tombstone).
    pub fn drain_dirty_aux(&mut self, mut f: impl FnMut(&[u8], Option<&[u8]>)) {
        self.drain_markers(&mut f);
        if self.visitors.dirty.is_empty() {
            return;
        }
        let mut buf = Vec::new();
        let mut keys: Vec<Box<[u8]>> = self.visitors.dirty.drain().collect();
        // A stable order: the same state writes the same records.
        keys.sort_unstable();
        for key in keys {
            let id = std::str::from_utf8(&key[2..]).expect("keys are made from ids");
            buf.clear();
            let present = match key[1] {
                b'v' => self
                    .visitors
                    .map
                    .get(id)
                    .map(|v| encode_visitor(v, &mut buf)),
                _ => self
                    .visitors
                    .waiting
                    .get(id)
                    .map(|q| encode_waiting(q, &mut buf)),
            };
            f(&key, present.map(|()| buf.as_slice()));
        }
    }

    /// Puts a restored visitor or waiting-lead state in place (from the
    /// changelog record `key` → `value`).
    pub fn restore_aux(&mut self, key: &[u8], value: &[u8]) -> Result<(), SnapshotError> {
        let bad = SnapshotError::Corrupt("not a visitor or waiting-lead record");
        if key.get(1) == Some(&b'e') {
            return self.restore_marker(key, value);
        }
        let (kind, id) = match key {
            [0, kind, id @ ..] => (*kind, std::str::from_utf8(id).map_err(|_| bad.clone())?),
            _ => return Err(bad),
        };
        match kind {
            b'v' => {
                let v = decode_visitor(value)?;
                self.visitors.schedule(id, v.last);
                self.visitors.map.insert(id.into(), v);
            }
            b'w' => {
                let q = decode_waiting(value)?;
                self.visitors.waiting.insert(id.into(), q);
            }
            _ => return Err(bad),
        }
        Ok(())
    }
}

// The visitor and waiting-lead records. Events inside are in their
// protobuf form (`proto/leadscore/v1/event.proto`).
const AUX_VERSION: u8 = 1;

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    encode_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn put_event(out: &mut Vec<u8>, e: &Event<'_>) {
    let mut b = Vec::new();
    encode_event_proto(e, &mut b);
    put_bytes(out, &b);
}

fn put_time(out: &mut Vec<u8>, t: Micros) {
    encode_varint(((t << 1) ^ (t >> 63)) as u64, out);
}

fn encode_visitor(v: &Visitor, out: &mut Vec<u8>) {
    out.push(AUX_VERSION);
    put_time(out, v.last);
    put_bytes(out, v.link.as_deref().unwrap_or("").as_bytes());
    encode_varint(v.events.len() as u64, out);
    for e in &v.events {
        put_event(out, e);
    }
}

fn encode_waiting(q: &VecDeque<Held>, out: &mut Vec<u8>) {
    out.push(AUX_VERSION);
    encode_varint(q.len() as u64, out);
    for h in q {
        match h {
            Held::Barrier {
                visitor_id,
                identify_id,
                watermark,
                handoff,
            } => {
                out.push(0);
                put_bytes(out, visitor_id.as_bytes());
                put_bytes(out, identify_id.as_bytes());
                put_time(out, *watermark);
                match handoff {
                    None => out.push(0),
                    Some(h) => {
                        out.push(if h.alias { 2 } else { 1 });
                        encode_varint(h.events.len() as u64, out);
                        for e in &h.events {
                            put_event(out, e);
                        }
                        put_event(out, &h.identify);
                    }
                }
            }
            Held::Record {
                forwarded,
                watermark,
                event,
            } => {
                out.push(if *forwarded { 2 } else { 1 });
                put_time(out, *watermark);
                put_event(out, event);
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn corrupt() -> SnapshotError {
        SnapshotError::Corrupt("visitor or waiting-lead record ends early or is malformed")
    }

    fn byte(&mut self) -> Result<u8, SnapshotError> {
        let (&b, rest) = self.0.split_first().ok_or_else(Self::corrupt)?;
        self.0 = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, SnapshotError> {
        decode_varint(&mut self.0).map_err(|_| Self::corrupt())
    }

    fn time(&mut self) -> Result<Micros, SnapshotError> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let n = usize::try_from(self.varint()?).map_err(|_| Self::corrupt())?;
        if n > self.0.len() {
            return Err(Self::corrupt());
        }
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(b)
    }

    fn text(&mut self) -> Result<&'a str, SnapshotError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Self::corrupt())
    }

    fn event(&mut self) -> Result<Event<'static>, SnapshotError> {
        decode_proto(self.bytes()?)
            .map(Event::into_owned)
            .map_err(|_| Self::corrupt())
    }

    /// A count of items that each take at least one byte.
    fn count(&mut self) -> Result<usize, SnapshotError> {
        let n = usize::try_from(self.varint()?).map_err(|_| Self::corrupt())?;
        if n > self.0.len() {
            return Err(Self::corrupt());
        }
        Ok(n)
    }

    fn version(&mut self) -> Result<(), SnapshotError> {
        match self.byte()? {
            AUX_VERSION => Ok(()),
            v => Err(SnapshotError::Version(v)),
        }
    }
}

fn decode_visitor(b: &[u8]) -> Result<Visitor, SnapshotError> {
    let mut r = Reader(b);
    r.version()?;
    let last = r.time()?;
    let link = r.text()?;
    let n = r.count()?;
    let events = (0..n).map(|_| r.event()).collect::<Result<_, _>>()?;
    Ok(Visitor {
        last,
        events,
        link: (!link.is_empty()).then(|| link.into()),
    })
}

fn decode_waiting(b: &[u8]) -> Result<VecDeque<Held>, SnapshotError> {
    let mut r = Reader(b);
    r.version()?;
    let n = r.count()?;
    let mut q = VecDeque::with_capacity(n);
    for _ in 0..n {
        q.push_back(match r.byte()? {
            0 => {
                let visitor_id = r.text()?.into();
                let identify_id = r.text()?.into();
                let watermark = r.time()?;
                let handoff = match r.byte()? {
                    0 => None,
                    tag @ (1 | 2) => {
                        let m = r.count()?;
                        let events = (0..m).map(|_| r.event()).collect::<Result<_, _>>()?;
                        Some(Handoff {
                            events,
                            identify: r.event()?,
                            alias: tag == 2,
                        })
                    }
                    _ => return Err(Reader::corrupt()),
                };
                Held::Barrier {
                    visitor_id,
                    identify_id,
                    watermark,
                    handoff,
                }
            }
            tag @ (1 | 2) => Held::Record {
                forwarded: tag == 2,
                watermark: r.time()?,
                event: r.event()?,
            },
            _ => return Err(Reader::corrupt()),
        });
    }
    Ok(q)
}

/// Drives one engine with every key local (`leadscore score`, `explain`):
/// records an engine sends are fed back to it at once, first in, first out.
#[derive(Default)]
pub struct Local {
    queue: VecDeque<Routed<'static>>,
    send: Vec<Routed<'static>>,
}

impl Local {
    pub fn ingest(
        &mut self,
        engine: &mut Engine,
        msg: Message<'_>,
        out: &mut Vec<StatusChange>,
        mut each: impl FnMut(&Event<'_>, Outcome),
    ) {
        for r in route(msg) {
            engine.ingest(r, out, &mut self.send, &mut each);
            self.queue.extend(self.send.drain(..));
            while let Some(next) = self.queue.pop_front() {
                engine.ingest(next, out, &mut self.send, &mut each);
                self.queue.extend(self.send.drain(..));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::Value;
    use crate::model::Model;
    use crate::time::HOUR;

    const T0: Micros = 1_780_000_000_000_000;

    fn pricing(id: &str, who: &str, t: Micros) -> Event<'static> {
        let mut e = Event::new(id.to_string(), who.to_string(), "page_view", t);
        e.attributes
            .push(("url".into(), Value::Str("https://x.io/pricing".into())));
        e
    }

    fn blog(id: &str, who: &str, t: Micros) -> Event<'static> {
        let mut e = Event::new(id.to_string(), who.to_string(), "page_view", t);
        e.attributes
            .push(("url".into(), Value::Str("https://x.io/blog".into())));
        e
    }

    /// A profile that fits (fit 25) and is not disqualified.
    fn profile(id: &str, lead: &str, t: Micros) -> Event<'static> {
        let mut e = Event::new(id.to_string(), lead.to_string(), "profile_updated", t);
        for (k, v) in [
            ("email", Value::Str("ana@acme.nl".into())),
            ("industry", Value::Str("food".into())),
            ("employees", Value::Num(120.0)),
        ] {
            e.profile.push((k.into(), v));
        }
        e
    }

    fn demo(id: &str, who: &str, t: Micros) -> Event<'static> {
        Event::new(id.to_string(), who.to_string(), "demo_requested", t)
    }

    fn identify(visitor: &str, e: Event<'static>) -> Message<'static> {
        Message::Identify {
            visitor_id: visitor.to_string().into(),
            event: e,
            alias: false,
        }
    }

    fn engine() -> Engine {
        Engine::new(Arc::new(Model::default_model()))
    }

    fn run(engine: &mut Engine, msgs: Vec<Message<'static>>) -> Vec<StatusChange> {
        let mut local = Local::default();
        let mut out = Vec::new();
        for m in msgs {
            local.ingest(engine, m, &mut out, |_, _| {});
        }
        out
    }

    fn native(msgs: Vec<Event<'static>>) -> (Engine, Vec<StatusChange>) {
        let mut e = engine();
        let out = run(&mut e, msgs.into_iter().map(Message::Lead).collect());
        (e, out)
    }

    #[test]
    fn an_erased_lead_s_linked_visitor_goes_with_it() {
        let h = HOUR;
        let mut e = engine();
        run(
            &mut e,
            vec![
                Message::Visitor(pricing("e1", "anon-1", T0)),
                identify("anon-1", profile("p1", "L-1", T0 + h)),
                Message::Visitor(pricing("e2", "anon-2", T0)),
            ],
        );
        assert_eq!(e.visitor("anon-1").and_then(|v| v.linked_to), Some("L-1"));
        let erase = Event::new("x1", "L-1", "lead_erased", T0 + 2 * h);
        let out = run(&mut e, vec![Message::Lead(erase)]);
        assert_eq!(out.len(), 1);
        assert!(e.visitor("anon-1").is_none(), "the linked visitor is gone");
        assert!(e.visitor("anon-2").is_some(), "another visitor stays");
        let mut aux = Vec::new();
        e.drain_dirty_aux(|k, v| aux.push((k.to_vec(), v.is_none())));
        assert!(
            aux.contains(&(visitor_key("anon-1").to_vec(), true)),
            "a tombstone"
        );
        // A later event of the visitor, within the window, and its
        // identification again: nothing reaches a lead.
        let out = run(
            &mut e,
            vec![
                Message::Visitor(demo("e3", "anon-1", T0 + 3 * h)),
                identify("anon-1", profile("p2", "L-1", T0 + 4 * h)),
            ],
        );
        assert!(out.is_empty(), "{out:#?}");
        assert!(e.lead("L-1").is_none());
    }

    #[test]
    fn a_visitor_s_scored_events_reach_the_lead_at_identification_as_if_they_had_been_its_own() {
        let h = HOUR;
        let anon = vec![
            Message::Visitor(pricing("e1", "anon-1", T0)),
            Message::Visitor(blog("e2", "anon-1", T0 + h)),
            Message::Visitor(demo("e3", "anon-1", T0 + 2 * h)),
            Message::Visitor(pricing("e4", "anon-1", T0 + 3 * h)),
            identify("anon-1", profile("p1", "L-1", T0 + 4 * h)),
        ];
        let mut e = engine();
        let got = run(&mut e, anon);
        let (n, want) = native(vec![
            pricing("e1", "L-1", T0),
            blog("e2", "L-1", T0 + h),
            demo("e3", "L-1", T0 + 2 * h),
            pricing("e4", "L-1", T0 + 3 * h),
            profile("p1", "L-1", T0 + 4 * h),
        ]);
        assert_eq!(got.len(), 1, "one change: lead → mql at the identify");
        assert_eq!(got, want);
        assert_eq!(got[0].cause_event_id.as_deref(), Some("p1"));
        let model = Model::default_model();
        let (a, b) = (e.lead("L-1").unwrap(), n.lead("L-1").unwrap());
        assert_eq!(a.engagement(&model), b.engagement(&model));
        // The visitor never emitted anything and is now linked, holding nothing.
        assert!(e.lead("anon-1").is_none());
        assert_eq!(e.visitor_stats().in_state, 1);
        assert_eq!(e.visitor_stats().identifications, 1);
    }

    #[test]
    fn a_visitor_keeps_only_scored_events_and_the_most_recent_up_to_its_limit() {
        let mut e = engine();
        e.set_visitor_limits(VisitorLimits {
            max_events: 2,
            ..VisitorLimits::default()
        });
        let mut msgs: Vec<_> = (0..5)
            .map(|i| Message::Visitor(pricing(&format!("e{i}"), "v", T0 + i * HOUR)))
            .collect();
        msgs.push(Message::Visitor(blog("b", "v", T0 + 5 * HOUR)));
        msgs.push(identify("v", profile("p", "L", T0 + 6 * HOUR)));
        run(&mut e, msgs);
        let model = Model::default_model();
        let lead = e.lead("L").unwrap();
        // Two pricing views (+5 each) kept: e3 and e4, decayed to the identify.
        let decay = |t: Micros| 2f64.powf(-((T0 + 6 * HOUR - t) as f64) / (30.0 * DAY as f64));
        let want = 5.0 * decay(T0 + 3 * HOUR) + 5.0 * decay(T0 + 4 * HOUR);
        assert!((lead.engagement(&model) - want).abs() < 1e-9);
    }

    #[test]
    fn a_visitor_quiet_for_its_time_to_live_is_dropped_with_its_events() {
        let mut e = engine();
        let ttl = VisitorLimits::default().ttl;
        run(
            &mut e,
            vec![
                Message::Visitor(demo("d", "v", T0)),
                Message::Visitor(pricing("x", "v", T0 + ttl / 2)),
            ],
        );
        assert_eq!(e.visitor_stats().in_state, 1);
        // The last event moved its time to live: at T0 + ttl it is still there.
        run(&mut e, vec![Message::Lead(blog("o", "other", T0 + ttl))]);
        assert_eq!(e.visitor_stats().in_state, 1);
        run(
            &mut e,
            vec![Message::Lead(blog("o2", "other", T0 + ttl / 2 + ttl))],
        );
        assert_eq!(e.visitor_stats().in_state, 0);
        assert_eq!(e.visitor_stats().expired, 1);
        run(&mut e, vec![identify("v", profile("p", "L", T0 + 2 * ttl))]);
        assert_eq!(
            e.lead("L").unwrap().engagement(&Model::default_model()),
            0.0
        );
    }

    #[test]
    fn a_linked_visitor_s_later_events_go_to_its_lead_and_a_second_identification_moves_the_link() {
        let mut e = engine();
        let h = HOUR;
        run(
            &mut e,
            vec![
                identify("v", profile("p", "A", T0)),
                Message::Visitor(demo("d1", "v", T0 + h)),
                identify("v", profile("q", "B", T0 + 2 * h)),
                Message::Visitor(demo("d2", "v", T0 + 3 * h)),
            ],
        );
        let m = Model::default_model();
        let a = e.lead("A").unwrap().engagement(&m);
        let b = e.lead("B").unwrap().engagement(&m);
        // d1 went to A (at its own time), d2 to B; neither went to both.
        assert_eq!((a, b), (20.0, 20.0));
        assert_eq!(e.lead("A").unwrap().time(), T0 + h);
        assert_eq!(e.lead("B").unwrap().time(), T0 + 3 * h);
        assert_eq!(e.visitor_stats().forwarded, 2);
    }

    #[test]
    fn an_alias_hands_over_the_events_without_a_profile() {
        let mut e = engine();
        run(
            &mut e,
            vec![
                Message::Visitor(demo("d", "v", T0)),
                Message::Identify {
                    visitor_id: "v".into(),
                    event: Event::new("a1", "L", "alias", T0 + HOUR),
                    alias: true,
                },
            ],
        );
        let lead = e.lead("L").unwrap();
        assert_eq!(
            lead.time(),
            T0,
            "the alias itself is not an event of the lead"
        );
        assert!(lead.engagement(&Model::default_model()) > 19.0);
    }

    /// Two engines joined by a queue that delivers each record only when
    /// asked: the lead's partition sees its own later events before the
    /// visitor's handoff, as in the service when the visitor lives elsewhere.
    #[test]
    fn a_lead_holds_its_later_events_until_the_handoff_arrives_so_the_order_is_the_input_s() {
        let h = HOUR;
        let msgs = vec![
            Message::Visitor(pricing("e1", "v", T0)),
            Message::Visitor(demo("e2", "v", T0 + h)),
            identify("v", profile("p", "L", T0 + 2 * h)),
            Message::Lead(pricing("e3", "L", T0 + 3 * h)),
            Message::Lead(demo("e4", "L", T0 + 4 * h)),
        ];
        let want = run(&mut engine(), msgs.clone());
        assert!(!want.is_empty());
        let (mut lead_side, mut visitor_side) = (engine(), engine());
        let mut out = Vec::new();
        let mut to_lead = Vec::new();
        let mut send = Vec::new();
        for m in msgs {
            for r in route(m) {
                let r = r.into_owned();
                if r.key() == "v" {
                    visitor_side.ingest(r, &mut out, &mut send, |_, _| {});
                    to_lead.append(&mut send);
                } else {
                    lead_side.ingest(r, &mut out, &mut send, |_, _| {});
                }
            }
        }
        assert!(out.is_empty(), "the lead waits: nothing yet");
        assert_eq!(to_lead.len(), 1);
        // The state survives a restart while it waits.
        let mut restored = engine();
        lead_side.drain_dirty(|l| restored.restore(l.clone()));
        lead_side.drain_dirty_aux(|k, v| restored.restore_aux(k, v.unwrap()).unwrap());
        restored.set_watermark(lead_side.watermark());
        for r in to_lead {
            restored.ingest(r, &mut out, &mut send, |_, _| {});
        }
        assert_eq!(out, want);
    }

    #[test]
    fn visitor_state_round_trips_through_its_changelog_records() {
        let mut e = engine();
        run(
            &mut e,
            vec![
                Message::Visitor(pricing("e1", "v", T0)),
                Message::Visitor(demo("e2", "v", T0 + HOUR)),
                identify("w", profile("p", "L", T0 + HOUR)),
            ],
        );
        let mut records = Vec::new();
        e.drain_dirty_aux(|k, v| records.push((k.to_vec(), v.map(<[u8]>::to_vec))));
        // Visitors v and w, and a tombstone for L's waiting records (it
        // waited for w's handoff, and has it).
        assert_eq!(records.len(), 3);
        assert!(records.iter().all(|(k, _)| is_aux_key(k)));
        assert_eq!(records.iter().filter(|(_, v)| v.is_none()).count(), 1);
        let mut r = engine();
        for (k, v) in &records {
            if let Some(v) = v {
                r.restore_aux(k, v).unwrap();
            }
        }
        assert_eq!(r.visitors.map, e.visitors.map);
        // Nothing changed since: nothing to write.
        e.drain_dirty_aux(|_, _| panic!("clean"));
        // Corrupt bytes are an error, not a panic.
        let (k, v) = records.iter().find(|(_, v)| v.is_some()).unwrap();
        let v = v.as_ref().unwrap();
        for cut in 0..v.len() {
            assert!(r.restore_aux(k, &v[..cut]).is_err());
        }
    }
}

/// The service's routing, simulated: records travel between partitions in
/// any order the scheduler picks, and every lead still gets exactly the
/// changes one engine gives in input order.
#[cfg(test)]
mod partitioned {
    use std::sync::Arc;

    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::Lead;
    use crate::gen::Rng;
    use crate::model::Model;
    use crate::time::HOUR;

    const T0: Micros = 1_780_000_000_000_000;

    fn event(rng: &mut Rng, n: &mut u64, who: &str, t: Micros) -> Event<'static> {
        *n += 1;
        let id = format!("e{n}");
        let (ty, url) = *rng.pick(&[
            ("page_view", Some("/pricing")),
            ("page_view", Some("/blog")),
            ("demo_requested", None),
            ("webinar_attended", None),
            ("email_opened", None),
        ]);
        let mut e = Event::new(id, who.to_string(), ty, t);
        if let Some(u) = url {
            e.attributes.push(("url".into(), Value::Str(u.into())));
        }
        e
    }

    fn profile(n: &mut u64, lead: &str, t: Micros, employees: f64) -> Event<'static> {
        *n += 1;
        let mut e = Event::new(format!("p{n}"), lead.to_string(), "profile_updated", t);
        e.profile
            .push(("industry".into(), Value::Str("pharma".into())));
        e.profile.push(("employees".into(), Value::Num(employees)));
        e
    }

    use crate::event::Value;

    /// A time-ordered stream: some leads browse anonymously and identify,
    /// others are known from the start; later events of known leads.
    fn stream(seed: u64) -> Vec<Message<'static>> {
        let mut rng = Rng::new(seed);
        let mut n = 0;
        let mut timed: Vec<(Micros, u64, Message<'static>)> = Vec::new();
        let mut order = 0u64;
        let mut push = |t: Micros, m: Message<'static>| {
            order += 1;
            timed.push((t, order, m));
        };
        for l in 0..(3 + rng.below(6)) {
            let lead = format!("L{l}");
            let visitor = format!("anon-{l}");
            let mut t = T0 + rng.below(10) as i64 * HOUR;
            let anonymous = rng.chance(0.6);
            if anonymous {
                for _ in 0..rng.below(6) {
                    t += rng.below(48) as i64 * HOUR;
                    let e = event(&mut rng, &mut n, &visitor, t);
                    push(t, Message::Visitor(e));
                }
            }
            t += rng.below(48) as i64 * HOUR;
            let p = profile(&mut n, &lead, t, *rng.pick(&[120.0, 300.0, 5.0]));
            push(
                t,
                if anonymous {
                    Message::Identify {
                        visitor_id: visitor.into(),
                        event: p,
                        alias: false,
                    }
                } else {
                    Message::Lead(p)
                },
            );
            for _ in 0..rng.below(8) {
                // Days apart, so requalification timers come due between them.
                t += rng.below(20 * 24) as i64 * HOUR;
                let e = event(&mut rng, &mut n, &lead, t);
                push(t, Message::Lead(e));
            }
        }
        timed.sort_by_key(|(t, o, _)| (*t, *o));
        timed.into_iter().map(|(_, _, m)| m).collect()
    }

    fn by_lead(mut c: Vec<StatusChange>) -> Vec<StatusChange> {
        c.sort_by(|a, b| (&a.lead_id, a.sequence).cmp(&(&b.lead_id, b.sequence)));
        c
    }

    #[test]
    fn any_delivery_order_between_partitions_gives_each_lead_the_changes_of_one_engine() {
        let model = Arc::new(Model::default_model());
        let end = T0 + 400 * DAY;
        let mut compared = 0;
        for seed in 0..300 {
            let msgs = stream(seed);
            let mut one = Engine::new(model.clone());
            let mut want = Vec::new();
            let mut local = Local::default();
            for m in msgs.clone() {
                local.ingest(&mut one, m, &mut want, |_, _| {});
            }
            one.advance_to(end, &mut want);

            let parts = 2 + (seed % 3) as usize;
            let of = |key: &str| (hash64(key.as_bytes()) % parts as u64) as usize;
            let mut engines: Vec<Engine> = (0..parts).map(|_| Engine::new(model.clone())).collect();
            // Each partition's changelog: leads, and visitor/waiting records.
            type Log = (BTreeMap<String, Lead>, BTreeMap<Vec<u8>, Vec<u8>>);
            let mut logs: Vec<Log> = vec![Default::default(); parts];
            let mut restarts = 0;
            let mut inbox: Vec<VecDeque<Routed<'static>>> = vec![VecDeque::new(); parts];
            let mut input = msgs.into_iter();
            let mut rng = Rng::new(seed ^ 0xABCD);
            let mut got = Vec::new();
            let mut send = Vec::new();
            loop {
                let busy: Vec<usize> = (0..parts).filter(|&p| !inbox[p].is_empty()).collect();
                // Route the next input message, or let a partition fold one record.
                if !busy.is_empty() && (input.len() == 0 || rng.chance(0.5)) {
                    let p = *rng.pick(&busy);
                    let r = inbox[p].pop_front().expect("busy");
                    engines[p].ingest(r, &mut got, &mut send, |_, _| {});
                    // A checkpoint, and now and then a restart from it.
                    let (leads, aux) = &mut logs[p];
                    engines[p].drain_dirty(|l| {
                        leads.insert(l.id().to_string(), l.clone());
                    });
                    engines[p].drain_dirty_aux(|k, v| match v {
                        Some(v) => drop(aux.insert(k.to_vec(), v.to_vec())),
                        None => drop(aux.remove(k)),
                    });
                    if rng.chance(0.05) {
                        let mut fresh = Engine::new(model.clone());
                        for l in leads.values() {
                            fresh.restore(l.clone());
                        }
                        for (k, v) in aux.iter() {
                            fresh.restore_aux(k, v).expect("own records");
                        }
                        fresh.set_watermark(engines[p].watermark());
                        engines[p] = fresh;
                        restarts += 1;
                    }
                    for s in send.drain(..) {
                        inbox[of(s.key())].push_back(s);
                    }
                } else if let Some(m) = input.next() {
                    for r in route(m) {
                        let r = r.into_owned();
                        inbox[of(r.key())].push_back(r);
                    }
                } else {
                    break;
                }
            }
            for e in &mut engines {
                e.advance_to(end, &mut got);
            }
            assert_eq!(
                by_lead(got),
                by_lead(want.clone()),
                "seed {seed}, {restarts} restarts"
            );
            compared += want.len();
        }
        assert!(
            compared > 300,
            "the streams make changes to compare ({compared})"
        );
    }
}
