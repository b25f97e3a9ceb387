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
use std::collections::VecDeque;

use crate::change::StatusChange;
use crate::event::{Event, Message};
use crate::time::{Micros, DAY};

use super::{Engine, Outcome};

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
}

impl<'a> Routed<'a> {
    /// The id of the lead or visitor whose engine takes the record.
    pub fn key(&self) -> &str {
        match self {
            Routed::Lead(e) | Routed::Visitor(e) | Routed::Forward(e) => &e.lead_id,
            Routed::Identify { visitor_id, .. } => visitor_id,
            Routed::Barrier { event, .. } => &event.lead_id,
            Routed::Handoff { identify, .. } => &identify.lead_id,
        }
    }

    pub fn into_owned(self) -> Routed<'static> {
        let own = |s: Cow<'_, str>| Cow::Owned(s.into_owned());
        match self {
            Routed::Lead(e) => Routed::Lead(e.into_owned()),
            Routed::Visitor(e) => Routed::Visitor(e.into_owned()),
            Routed::Forward(e) => Routed::Forward(e.into_owned()),
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

impl Engine {
    /// Folds one routed record. Changes go to `out`; records for other keys
    /// (a handoff, a forwarded event) to `send`; `each` sees every event
    /// folded into a lead, with its outcome.
    pub fn ingest(
        &mut self,
        record: Routed<'_>,
        out: &mut Vec<StatusChange>,
        send: &mut Vec<Routed<'static>>,
        mut each: impl FnMut(&Event<'_>, Outcome),
    ) {
        // Scaffold: visitors are being built; leads fold as before.
        let _ = send;
        match record {
            Routed::Lead(e) | Routed::Forward(e) => {
                let o = self.fold(&e, out);
                each(&e, o);
            }
            _ => {}
        }
    }

    /// Takes the visitor and held-record state changed since the last call,
    /// as changelog records (key, value; `None` is a tombstone).
    pub fn drain_dirty_aux(&mut self, mut f: impl FnMut(&[u8], Option<&[u8]>)) {
        let _ = &mut f;
    }

    /// Puts a restored visitor or held-record state in place (from the changelog).
    pub fn restore_aux(
        &mut self,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), super::snapshot::SnapshotError> {
        let _ = (key, value);
        Ok(())
    }

    /// Sets how much of an anonymous visitor is kept (the config's
    /// `visitor_max_events` and `visitor_ttl`).
    pub fn set_visitor_limits(&mut self, limits: VisitorLimits) {
        // Scaffold: stored for the visitor logic, which reads it.
        self.visitor_limits = limits;
    }

    pub fn visitor_stats(&self) -> VisitorStats {
        VisitorStats::default()
    }
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
