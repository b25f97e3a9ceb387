//! The repartition topic's records: [`Routed`] in the internal protobuf of
//! `proto/leadscore/internal/v1/routed.proto` (not a public format).
//!
//! The engine on the other side must fold exactly what this side routed, so
//! an event goes through unchanged: fields in their order, the time in
//! microseconds, the kind as it was decided at decoding.

use std::borrow::Cow;

use prost::Message as _;

use super::DecodeError;
use crate::engine::Routed;
use crate::event::{Event, Fields, Kind, Value};

/// Types generated from `proto/leadscore/internal/v1/routed.proto`.
mod ipb {
    // `RoutedBatch` is written and read by hand; prost's type serves the tests.
    #![allow(clippy::all, rust_2018_idioms, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/leadscore.internal.v1.rs"));
}

fn kind_to(k: Kind) -> ipb::Kind {
    match k {
        Kind::ProfileUpdated => ipb::Kind::ProfileUpdated,
        Kind::QualificationUpdated => ipb::Kind::QualificationUpdated,
        Kind::SalesAccepted => ipb::Kind::SalesAccepted,
        Kind::SalesRejected => ipb::Kind::SalesRejected,
        Kind::DealWon => ipb::Kind::DealWon,
        Kind::DealLost => ipb::Kind::DealLost,
        Kind::SalesContacted => ipb::Kind::SalesContacted,
        Kind::LeadErased => ipb::Kind::LeadErased,
        Kind::Engagement => ipb::Kind::Engagement,
    }
}

fn kind_from(k: i32, event_type: &str) -> Kind {
    match ipb::Kind::try_from(k) {
        Ok(ipb::Kind::ProfileUpdated) => Kind::ProfileUpdated,
        Ok(ipb::Kind::QualificationUpdated) => Kind::QualificationUpdated,
        Ok(ipb::Kind::SalesAccepted) => Kind::SalesAccepted,
        Ok(ipb::Kind::SalesRejected) => Kind::SalesRejected,
        Ok(ipb::Kind::DealWon) => Kind::DealWon,
        Ok(ipb::Kind::DealLost) => Kind::DealLost,
        Ok(ipb::Kind::SalesContacted) => Kind::SalesContacted,
        Ok(ipb::Kind::LeadErased) => Kind::LeadErased,
        Ok(ipb::Kind::Engagement) => Kind::Engagement,
        // Not written by this version: decide from the type, as a decoder does.
        Ok(ipb::Kind::Unspecified) | Err(_) => Kind::of(event_type),
    }
}

#[cfg(test)]
fn value_to(v: &Value<'_>) -> ipb::Value {
    use ipb::value::Kind as K;
    ipb::Value {
        kind: Some(match v {
            Value::Null => K::NullValue(true),
            Value::Bool(b) => K::BoolValue(*b),
            Value::Num(n) => K::NumberValue(*n),
            Value::Str(s) => K::StringValue(s.to_string()),
            Value::Other => K::Other(true),
            Value::Map(f) => K::Map(ipb::Fields {
                fields: fields_to(f),
            }),
        }),
    }
}

fn value_from(v: Option<ipb::Value>) -> Value<'static> {
    use ipb::value::Kind as K;
    match v.and_then(|v| v.kind) {
        None | Some(K::NullValue(_)) => Value::Null,
        Some(K::BoolValue(b)) => Value::Bool(b),
        Some(K::NumberValue(n)) => Value::Num(n),
        Some(K::StringValue(s)) => Value::Str(Cow::Owned(s)),
        Some(K::Other(_)) => Value::Other,
        Some(K::Map(f)) => Value::Map(fields_from(f.fields)),
    }
}

#[cfg(test)]
fn fields_to(f: &Fields<'_>) -> Vec<ipb::Field> {
    f.iter()
        .map(|(name, v)| ipb::Field {
            name: name.to_string(),
            value: Some(value_to(v)),
        })
        .collect()
}

fn fields_from(f: Vec<ipb::Field>) -> Fields<'static> {
    f.into_iter()
        .map(|f| (Cow::Owned(f.name), value_from(f.value)))
        .collect()
}

#[cfg(test)]
fn event_to(e: &Event<'_>) -> ipb::Event {
    ipb::Event {
        event_id: e.event_id.to_string(),
        lead_id: e.lead_id.to_string(),
        r#type: e.event_type.to_string(),
        occurred_at: e.occurred_at,
        attributes: fields_to(&e.attributes),
        profile: fields_to(&e.profile),
        criteria: e
            .criteria
            .iter()
            .map(|(name, known)| ipb::Criterion {
                name: name.to_string(),
                known: *known,
            })
            .collect(),
        reason: e.reason.as_ref().map(|r| r.to_string()),
        kind: kind_to(e.kind) as i32,
    }
}

fn event_from(e: ipb::Event) -> Event<'static> {
    Event {
        kind: kind_from(e.kind, &e.r#type),
        event_id: Cow::Owned(e.event_id),
        lead_id: Cow::Owned(e.lead_id),
        event_type: Cow::Owned(e.r#type),
        occurred_at: e.occurred_at,
        attributes: fields_from(e.attributes),
        profile: fields_from(e.profile),
        criteria: e
            .criteria
            .into_iter()
            .map(|c| (Cow::Owned(c.name), c.known))
            .collect(),
        reason: e.reason.map(Cow::Owned),
    }
}

/// Appends the record's bytes to `out`: the protobuf encoding prost gives
/// (the tests hold the two equal), written straight from the record. Every
/// re-keyed event is encoded once, so this skips prost's owned copy of each
/// string and its repeated length passes over nested messages. Measured on
/// the re-keyed path (`PHASES=7 bash benches/service.sh`, 1M Segment
/// messages): 46,300-46,800 events/s with prost encoding and decoding,
/// 50,700-51,600 with this encoder and the borrowing decoder below (about
/// 9% more), well over the 3% that warrants leaving the crate.
pub fn encode_routed(r: &Routed<'_>, out: &mut Vec<u8>) {
    use wire::*;
    let (tag, body) = match r {
        Routed::Lead(e) => (1, event_len(e)),
        Routed::Visitor(e) => (2, event_len(e)),
        Routed::Forward(e) => (6, event_len(e)),
        Routed::Unlink(e) => (7, event_len(e)),
        Routed::Identify {
            visitor_id,
            event,
            alias,
        } => (
            3,
            str_len(visitor_id) + msg_len(event_len(event)) + bool_len(*alias),
        ),
        Routed::Barrier { visitor_id, event } => {
            (4, str_len(visitor_id) + msg_len(event_len(event)))
        }
        Routed::Handoff {
            visitor_id,
            events,
            identify,
            alias,
        } => (
            5,
            str_len(visitor_id)
                + events.iter().map(|e| msg_len(event_len(e))).sum::<usize>()
                + msg_len(event_len(identify))
                + bool_len(*alias),
        ),
    };
    out.reserve(msg_len(body));
    key(out, tag, LEN);
    varint(out, body as u64);
    match r {
        Routed::Lead(e) | Routed::Visitor(e) | Routed::Forward(e) | Routed::Unlink(e) => {
            event(out, e)
        }
        Routed::Identify {
            visitor_id,
            event: e,
            alias,
        } => {
            string(out, 1, visitor_id);
            nested_event(out, 2, e);
            boolean(out, 3, *alias);
        }
        Routed::Barrier {
            visitor_id,
            event: e,
        } => {
            string(out, 1, visitor_id);
            nested_event(out, 2, e);
        }
        Routed::Handoff {
            visitor_id,
            events,
            identify,
            alias,
        } => {
            string(out, 1, visitor_id);
            for e in events {
                nested_event(out, 2, e);
            }
            nested_event(out, 3, identify);
            boolean(out, 4, *alias);
        }
    }
}

/// The key byte of [`RoutedBatch`]'s field 15 (length-delimited).
const BATCH_KEY: u8 = (15 << 3) | 2;

/// Appends `r` to `batch`, a `RoutedBatch` being written (empty at first).
/// `scratch` is a buffer to reuse.
pub fn push_routed(r: &Routed<'_>, scratch: &mut Vec<u8>, batch: &mut Vec<u8>) {
    scratch.clear();
    encode_routed(r, scratch);
    batch.push(BATCH_KEY);
    wire::varint(batch, scratch.len() as u64);
    batch.extend_from_slice(scratch);
}

/// Reads a Kafka record of the repartition topic, a `RoutedBatch` or a
/// single `Routed`, and hands each record to `f` in order (origins and
/// marks are passed over). Stops at the first that does not decode (those
/// before it have been handed over).
pub fn decode_routed_records<'a>(
    bytes: &'a [u8],
    mut f: impl FnMut(Routed<'a>),
) -> Result<(), DecodeError> {
    let mut records = Vec::new();
    let scanned = scan_routed_batch(bytes, |item| {
        if let BatchItem::Record { bytes, .. } = item {
            records.push(bytes);
        }
    });
    for r in records {
        f(decode_routed(r)?);
    }
    scanned
}

/// Where a routed record comes from (`Origin` in `routed.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The input topic's index among the configured input topics.
    pub topic: u32,
    pub partition: i32,
    /// The effective record timestamp (ms).
    pub timestamp: i64,
    pub offset: i64,
    /// Wall clock (ms since the epoch) when it was routed.
    pub routed_at: i64,
    /// Sent on by an engine while it folded the record of this origin.
    pub second_hop: bool,
}

/// A router's promise about one input partition (`LaneMark`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneMark {
    pub topic: u32,
    pub partition: i32,
    pub timestamp: i64,
    pub offset: i64,
    /// Wall clock (ms) when its log was last found to hold nothing
    /// unrouted; 0 if never.
    pub confirmed_at: i64,
}

/// One entry of a repartition record, as [`scan_routed_batch`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchItem<'a> {
    /// A `Routed`, still encoded (for [`decode_routed`]), with the origin
    /// written before it, if any.
    Record {
        origin: Option<Origin>,
        bytes: &'a [u8],
    },
    Mark(LaneMark),
}

/// The key bytes of `RoutedBatch`'s fields 14 (origins) and 13 (marks).
const ORIGIN_KEY: u8 = (14 << 3) | 2;
const MARK_KEY: u8 = (13 << 3) | 2;

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends the five numeric fields shared by `Origin` and `LaneMark`
/// (zero values left out, as protobuf writes them).
fn push_numbers(batch: &mut Vec<u8>, key: u8, f: [(u8, u64); 5], flag: bool) {
    let mut body = [0u8; 64];
    let mut n = 0;
    let mut put = |b: u8| {
        body[n] = b;
        n += 1;
    };
    for (tag, v) in f.into_iter().filter(|(_, v)| *v != 0) {
        put(tag << 3);
        let mut v = v;
        while v >= 0x80 {
            put((v as u8) | 0x80);
            v >>= 7;
        }
        put(v as u8);
    }
    if flag {
        put(6 << 3);
        put(1);
    }
    batch.push(key);
    batch.push(n as u8);
    batch.extend_from_slice(&body[..n]);
}

/// Appends the origin of the record pushed next.
pub fn push_origin(o: &Origin, batch: &mut Vec<u8>) {
    push_numbers(
        batch,
        ORIGIN_KEY,
        [
            (1, u64::from(o.topic)),
            (2, o.partition as i64 as u64),
            (3, zigzag(o.timestamp)),
            (4, o.offset as u64),
            (5, o.routed_at as u64),
        ],
        o.second_hop,
    );
}

/// Appends a lane mark.
pub fn push_mark(m: &LaneMark, batch: &mut Vec<u8>) {
    push_numbers(
        batch,
        MARK_KEY,
        [
            (1, u64::from(m.topic)),
            (2, m.partition as i64 as u64),
            (3, zigzag(m.timestamp)),
            (4, m.offset as u64),
            (5, m.confirmed_at as u64),
        ],
        false,
    );
}

/// The numeric fields 1-5 and the flag 6 of an `Origin` or `LaneMark`.
fn read_numbers(body: &[u8]) -> Option<([u64; 5], bool)> {
    use crate::codec::pbwire::{Reader, VARINT};
    let mut r = Reader::new(body);
    let mut f = [0u64; 5];
    let mut flag = false;
    while r.more() {
        match r.key()? {
            (n @ 1..=5, VARINT) => f[n as usize - 1] = r.varint()?,
            (6, VARINT) => flag = r.varint()? != 0,
            (1..=6, _) => return None,
            (_, wire) => r.skip(wire)?,
        }
    }
    Some((f, flag))
}

/// Reads a Kafka record of the repartition topic (a `RoutedBatch`, or a
/// single `Routed` written by an earlier version) entry by entry, without
/// decoding the records. Stops at the first entry that does not read.
pub fn scan_routed_batch<'a>(
    bytes: &'a [u8],
    mut f: impl FnMut(BatchItem<'a>),
) -> Result<(), DecodeError> {
    use crate::codec::pbwire::{Reader, LEN};
    if !matches!(bytes.first(), Some(&(BATCH_KEY | ORIGIN_KEY | MARK_KEY))) {
        f(BatchItem::Record {
            origin: None,
            bytes,
        });
        return Ok(());
    }
    let mut r = Reader::new(bytes);
    let mut origin = None;
    while r.more() {
        let field = match r.key() {
            Some((n @ 13..=15, LEN)) => n,
            _ => return Err(bad("not a batch of routed records")),
        };
        let item = r.bytes().ok_or_else(|| bad("a truncated batch"))?;
        match field {
            15 => f(BatchItem::Record {
                origin: origin.take(),
                bytes: item,
            }),
            14 => {
                let ([topic, partition, ts, offset, at], second_hop) =
                    read_numbers(item).ok_or_else(|| bad("a bad origin"))?;
                origin = Some(Origin {
                    topic: u32::try_from(topic).map_err(|_| bad("a bad origin"))?,
                    partition: partition as i32,
                    timestamp: unzigzag(ts),
                    offset: offset as i64,
                    routed_at: at as i64,
                    second_hop,
                });
            }
            _ => {
                let ([topic, partition, ts, offset, at], _) =
                    read_numbers(item).ok_or_else(|| bad("a bad mark"))?;
                f(BatchItem::Mark(LaneMark {
                    topic: u32::try_from(topic).map_err(|_| bad("a bad mark"))?,
                    partition: partition as i32,
                    timestamp: unzigzag(ts),
                    offset: offset as i64,
                    confirmed_at: at as i64,
                }));
            }
        }
    }
    Ok(())
}

/// The protobuf wire format of `routed.proto`, by hand: sizes first (a
/// nested message is preceded by its length), then the bytes. Field
/// numbers are all below 16, so every key is one byte.
mod wire {
    use super::kind_to;
    use crate::event::{Event, Fields, Value};

    pub const VARINT: u8 = 0;
    pub const I64: u8 = 1;
    pub const LEN: u8 = 2;

    pub fn varint_len(v: u64) -> usize {
        // 1 byte per 7 bits, at least one.
        (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
    }

    pub fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    pub fn key(out: &mut Vec<u8>, tag: u8, wire: u8) {
        out.push((tag << 3) | wire);
    }

    /// A length-delimited field of `body` bytes, key included.
    pub fn msg_len(body: usize) -> usize {
        1 + varint_len(body as u64) + body
    }

    /// A proto3 string field: absent when empty.
    pub fn str_len(s: &str) -> usize {
        if s.is_empty() {
            0
        } else {
            msg_len(s.len())
        }
    }

    pub fn bool_len(b: bool) -> usize {
        if b {
            2
        } else {
            0
        }
    }

    pub fn string(out: &mut Vec<u8>, tag: u8, s: &str) {
        if !s.is_empty() {
            key(out, tag, LEN);
            varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
    }

    pub fn boolean(out: &mut Vec<u8>, tag: u8, b: bool) {
        if b {
            key(out, tag, VARINT);
            out.push(1);
        }
    }

    fn zigzag(v: i64) -> u64 {
        ((v << 1) ^ (v >> 63)) as u64
    }

    fn value_len(v: &Value<'_>) -> usize {
        match v {
            Value::Null | Value::Bool(_) | Value::Other => 2,
            Value::Num(_) => 9,
            Value::Str(s) => msg_len(s.len()),
            Value::Map(f) => msg_len(fields_len(f)),
        }
    }

    fn field_len(name: &str, v: &Value<'_>) -> usize {
        str_len(name) + msg_len(value_len(v))
    }

    fn fields_len(f: &Fields<'_>) -> usize {
        f.iter().map(|(n, v)| msg_len(field_len(n, v))).sum()
    }

    pub fn event_len(e: &Event<'_>) -> usize {
        let kind = kind_to(e.kind) as i32;
        str_len(&e.event_id)
            + str_len(&e.lead_id)
            + str_len(&e.event_type)
            + if e.occurred_at == 0 {
                0
            } else {
                1 + varint_len(zigzag(e.occurred_at))
            }
            + fields_len(&e.attributes)
            + fields_len(&e.profile)
            + e.criteria
                .iter()
                .map(|(n, known)| msg_len(str_len(n) + bool_len(*known)))
                .sum::<usize>()
            + e.reason.as_ref().map_or(0, |r| msg_len(r.len()))
            + if kind == 0 {
                0
            } else {
                1 + varint_len(kind as u64)
            }
    }

    fn value(out: &mut Vec<u8>, v: &Value<'_>) {
        match v {
            Value::Null => {
                key(out, 1, VARINT);
                out.push(1);
            }
            Value::Bool(b) => {
                key(out, 2, VARINT);
                out.push(u8::from(*b));
            }
            Value::Num(n) => {
                key(out, 3, I64);
                out.extend_from_slice(&n.to_le_bytes());
            }
            Value::Str(s) => {
                key(out, 4, LEN);
                varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Other => {
                key(out, 5, VARINT);
                out.push(1);
            }
            Value::Map(f) => {
                key(out, 6, LEN);
                varint(out, fields_len(f) as u64);
                fields(out, 1, f);
            }
        }
    }

    /// Each field as a repeated `Field` message under `tag`.
    fn fields(out: &mut Vec<u8>, tag: u8, f: &Fields<'_>) {
        for (name, v) in f {
            key(out, tag, LEN);
            varint(out, field_len(name, v) as u64);
            string(out, 1, name);
            key(out, 2, LEN);
            varint(out, value_len(v) as u64);
            value(out, v);
        }
    }

    pub fn event(out: &mut Vec<u8>, e: &Event<'_>) {
        string(out, 1, &e.event_id);
        string(out, 2, &e.lead_id);
        string(out, 3, &e.event_type);
        if e.occurred_at != 0 {
            key(out, 4, VARINT);
            varint(out, zigzag(e.occurred_at));
        }
        fields(out, 5, &e.attributes);
        fields(out, 6, &e.profile);
        for (name, known) in &e.criteria {
            key(out, 7, LEN);
            varint(out, (str_len(name) + bool_len(*known)) as u64);
            string(out, 1, name);
            boolean(out, 2, *known);
        }
        if let Some(r) = &e.reason {
            key(out, 8, LEN);
            varint(out, r.len() as u64);
            out.extend_from_slice(r.as_bytes());
        }
        let kind = kind_to(e.kind) as i32;
        if kind != 0 {
            key(out, 9, VARINT);
            varint(out, kind as u64);
        }
    }

    pub fn nested_event(out: &mut Vec<u8>, tag: u8, e: &Event<'_>) {
        key(out, tag, LEN);
        varint(out, event_len(e) as u64);
        event(out, e);
    }
}

/// The record as prost encodes it (the reference the hand-written encoder
/// is held to).
#[cfg(test)]
fn encode_with_prost(r: &Routed<'_>, out: &mut Vec<u8>) {
    use ipb::routed::Record as R;
    let record = match r {
        Routed::Lead(e) => R::Lead(event_to(e)),
        Routed::Visitor(e) => R::Visitor(event_to(e)),
        Routed::Forward(e) => R::Forward(event_to(e)),
        Routed::Unlink(e) => R::Unlink(event_to(e)),
        Routed::Identify {
            visitor_id,
            event,
            alias,
        } => R::Identify(ipb::Identify {
            visitor_id: visitor_id.to_string(),
            event: Some(event_to(event)),
            alias: *alias,
        }),
        Routed::Barrier { visitor_id, event } => R::Barrier(ipb::Barrier {
            visitor_id: visitor_id.to_string(),
            event: Some(event_to(event)),
        }),
        Routed::Handoff {
            visitor_id,
            events,
            identify,
            alias,
        } => R::Handoff(ipb::Handoff {
            visitor_id: visitor_id.to_string(),
            events: events.iter().map(event_to).collect(),
            identify: Some(event_to(identify)),
            alias: *alias,
        }),
    };
    ipb::Routed {
        record: Some(record),
    }
    .encode(out)
    .expect("a Vec grows to take whatever is encoded");
}

fn bad(why: &str) -> DecodeError {
    DecodeError::BadProtobuf(format!("not a repartition record: {why}"))
}

fn required(e: Option<ipb::Event>, what: &str) -> Result<Event<'static>, DecodeError> {
    e.map(event_from)
        .ok_or_else(|| bad(&format!("{what} without its event")))
}

/// Reads a record written by [`encode_routed`], its strings borrowed from
/// `bytes` where it can. Bytes that are not one are a
/// [`DecodeError::BadProtobuf`] (dead-lettered), never a panic.
pub fn decode_routed(bytes: &[u8]) -> Result<Routed<'_>, DecodeError> {
    let r = match borrowed::routed(bytes) {
        Some(r) => r,
        // What the borrowing decoder does not take on (invalid bytes
        // included) goes through prost, which has the final word and the
        // error messages.
        None => decode_with_prost(bytes)?,
    };
    if r.key().is_empty() {
        return Err(bad("empty key"));
    }
    Ok(r)
}

fn decode_with_prost(bytes: &[u8]) -> Result<Routed<'static>, DecodeError> {
    use ipb::routed::Record as R;
    let m = ipb::Routed::decode(bytes).map_err(|e| bad(&e.to_string()))?;
    Ok(match m.record.ok_or_else(|| bad("no record"))? {
        R::Lead(e) => Routed::Lead(event_from(e)),
        R::Visitor(e) => Routed::Visitor(event_from(e)),
        R::Forward(e) => Routed::Forward(event_from(e)),
        R::Unlink(e) => Routed::Unlink(event_from(e)),
        R::Identify(i) => Routed::Identify {
            visitor_id: Cow::Owned(i.visitor_id),
            event: required(i.event, "an identify")?,
            alias: i.alias,
        },
        R::Barrier(b) => Routed::Barrier {
            visitor_id: Cow::Owned(b.visitor_id),
            event: required(b.event, "a barrier")?,
        },
        R::Handoff(h) => Routed::Handoff {
            visitor_id: Cow::Owned(h.visitor_id),
            events: h.events.into_iter().map(event_from).collect(),
            identify: required(h.identify, "a handoff")?,
            alias: h.alias,
        },
    })
}

/// A decoder of the records that borrows their strings, so a routed event
/// costs no allocation but its field vectors. It takes on only what it
/// reads exactly as prost does: the fields with the wire types the schema
/// declares, each message field and oneof at most once (prost would merge
/// repeats), unknown fields of the common wire types. On anything else it
/// returns `None` and the caller decodes with prost.
mod borrowed {
    use std::borrow::Cow;

    use super::kind_from;
    use crate::engine::Routed;
    use crate::event::{Event, Fields, Value};

    use crate::codec::pbwire::{Reader, I64, LEN, VARINT};

    /// At most once: a second message field or oneof is prost's to merge.
    fn once<T>(slot: &mut Option<T>, v: T) -> Option<()> {
        if slot.is_some() {
            return None;
        }
        *slot = Some(v);
        Some(())
    }

    pub(super) fn routed(bytes: &[u8]) -> Option<Routed<'_>> {
        let mut r = Reader::new(bytes);
        let mut record = None;
        while r.more() {
            match r.key()? {
                (tag @ 1..=7, LEN) => once(&mut record, (tag, r.bytes()?))?,
                (1..=7, _) => return None,
                (_, wire) => r.skip(wire)?,
            }
        }
        let (tag, body) = record?;
        Some(match tag {
            1 => Routed::Lead(event(body)?),
            2 => Routed::Visitor(event(body)?),
            6 => Routed::Forward(event(body)?),
            7 => Routed::Unlink(event(body)?),
            3 => {
                let (mut visitor_id, mut e, mut alias) = ("", None, false);
                let mut r = Reader::new(body);
                while r.more() {
                    match r.key()? {
                        (1, LEN) => visitor_id = r.str()?,
                        (2, LEN) => once(&mut e, event(r.bytes()?)?)?,
                        (3, VARINT) => alias = r.varint()? != 0,
                        (1..=3, _) => return None,
                        (_, wire) => r.skip(wire)?,
                    }
                }
                Routed::Identify {
                    visitor_id: Cow::Borrowed(visitor_id),
                    event: e?,
                    alias,
                }
            }
            4 => {
                let (mut visitor_id, mut e) = ("", None);
                let mut r = Reader::new(body);
                while r.more() {
                    match r.key()? {
                        (1, LEN) => visitor_id = r.str()?,
                        (2, LEN) => once(&mut e, event(r.bytes()?)?)?,
                        (1..=2, _) => return None,
                        (_, wire) => r.skip(wire)?,
                    }
                }
                Routed::Barrier {
                    visitor_id: Cow::Borrowed(visitor_id),
                    event: e?,
                }
            }
            _ => {
                let (mut visitor_id, mut events, mut identify, mut alias) =
                    ("", Vec::new(), None, false);
                let mut r = Reader::new(body);
                while r.more() {
                    match r.key()? {
                        (1, LEN) => visitor_id = r.str()?,
                        (2, LEN) => events.push(event(r.bytes()?)?),
                        (3, LEN) => once(&mut identify, event(r.bytes()?)?)?,
                        (4, VARINT) => alias = r.varint()? != 0,
                        (1..=4, _) => return None,
                        (_, wire) => r.skip(wire)?,
                    }
                }
                Routed::Handoff {
                    visitor_id: Cow::Borrowed(visitor_id),
                    events,
                    identify: identify?,
                    alias,
                }
            }
        })
    }

    fn event(body: &[u8]) -> Option<Event<'_>> {
        let mut r = Reader::new(body);
        let (mut id, mut lead, mut ty, mut at, mut kind) = ("", "", "", 0i64, 0i32);
        let mut e = Event::new("", "", "", 0);
        while r.more() {
            match r.key()? {
                (1, LEN) => id = r.str()?,
                (2, LEN) => lead = r.str()?,
                (3, LEN) => ty = r.str()?,
                (4, VARINT) => {
                    let v = r.varint()?;
                    at = ((v >> 1) as i64) ^ -((v & 1) as i64);
                }
                (5, LEN) => e.attributes.push(field(r.bytes()?)?),
                (6, LEN) => e.profile.push(field(r.bytes()?)?),
                (7, LEN) => {
                    let mut c = Reader::new(r.bytes()?);
                    let (mut name, mut known) = ("", false);
                    while c.more() {
                        match c.key()? {
                            (1, LEN) => name = c.str()?,
                            (2, VARINT) => known = c.varint()? != 0,
                            (1..=2, _) => return None,
                            (_, wire) => c.skip(wire)?,
                        }
                    }
                    e.criteria.push((Cow::Borrowed(name), known));
                }
                (8, LEN) => e.reason = Some(Cow::Borrowed(r.str()?)),
                (9, VARINT) => kind = r.varint()? as i32,
                (1..=9, _) => return None,
                (_, wire) => r.skip(wire)?,
            }
        }
        e.event_id = Cow::Borrowed(id);
        e.lead_id = Cow::Borrowed(lead);
        e.event_type = Cow::Borrowed(ty);
        e.occurred_at = at;
        e.kind = kind_from(kind, ty);
        Some(e)
    }

    fn field(body: &[u8]) -> Option<(Cow<'_, str>, Value<'_>)> {
        let mut r = Reader::new(body);
        let (mut name, mut v) = ("", None);
        while r.more() {
            match r.key()? {
                (1, LEN) => name = r.str()?,
                (2, LEN) => once(&mut v, value(r.bytes()?)?)?,
                (1..=2, _) => return None,
                (_, wire) => r.skip(wire)?,
            }
        }
        Some((Cow::Borrowed(name), v.unwrap_or(Value::Null)))
    }

    fn value(body: &[u8]) -> Option<Value<'_>> {
        let mut r = Reader::new(body);
        let mut v = None;
        while r.more() {
            let x = match r.key()? {
                (1, VARINT) => {
                    r.varint()?;
                    Value::Null
                }
                (2, VARINT) => Value::Bool(r.varint()? != 0),
                (3, I64) => Value::Num(f64::from_le_bytes(r.take(8)?.try_into().ok()?)),
                (4, LEN) => Value::Str(Cow::Borrowed(r.str()?)),
                (5, VARINT) => {
                    r.varint()?;
                    Value::Other
                }
                (6, LEN) => Value::Map(fields(r.bytes()?)?),
                (1..=6, _) => return None,
                (_, wire) => {
                    r.skip(wire)?;
                    continue;
                }
            };
            once(&mut v, x)?;
        }
        Some(v.unwrap_or(Value::Null))
    }

    fn fields(body: &[u8]) -> Option<Fields<'_>> {
        let mut r = Reader::new(body);
        let mut out = Vec::new();
        while r.more() {
            match r.key()? {
                (1, LEN) => out.push(field(r.bytes()?)?),
                (1, _) => return None,
                (_, wire) => r.skip(wire)?,
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, lead: &str, t: &str) -> Event<'static> {
        let mut e = Event::new(
            id.to_string(),
            lead.to_string(),
            t.to_string(),
            1_780_000_000_123_456,
        );
        e.attributes = vec![
            ("url".into(), Value::Str("https://x.example/pricing".into())),
            ("n".into(), Value::Num(0.1 + 0.2)),
            ("flag".into(), Value::Bool(false)),
            ("gone".into(), Value::Null),
            ("list".into(), Value::Other),
            (
                "context".into(),
                Value::Map(vec![
                    (
                        "page".into(),
                        Value::Map(vec![("url".into(), Value::Str("/pricing".into()))]),
                    ),
                    ("empty".into(), Value::Map(Vec::new())),
                ]),
            ),
            // Repeated and unsorted names stay as they came.
            ("n".into(), Value::Num(-0.0)),
        ];
        e
    }

    fn profile(id: &str, lead: &str) -> Event<'static> {
        let mut e = Event::new(id.to_string(), lead.to_string(), "profile_updated", -5);
        e.profile = vec![
            ("employees".into(), Value::Num(300.0)),
            ("email".into(), Value::Str("ops@acme.example".into())),
            ("industry".into(), Value::Null),
        ];
        e.criteria = vec![("budget".into(), true), ("authority".into(), false)];
        e.reason = Some("disqualified".into());
        e
    }

    fn all() -> Vec<Routed<'static>> {
        vec![
            Routed::Lead(event("e1", "L-1", "page_view")),
            Routed::Visitor(event("e2", "anon-7", "webinar_attended")),
            Routed::Forward(event("e3", "L-1", "demo_requested")),
            Routed::Unlink(event("e9", "L-1", "lead_erased")),
            Routed::Identify {
                visitor_id: "anon-7".into(),
                event: profile("e4", "L-1"),
                alias: false,
            },
            Routed::Barrier {
                visitor_id: "anon-7".into(),
                event: profile("e4", "L-1"),
            },
            Routed::Handoff {
                visitor_id: "anon-7".into(),
                events: vec![
                    event("e2", "anon-7", "webinar_attended"),
                    event("e5", "anon-7", "x"),
                ],
                identify: Event::new("e6", "L-1", "", 7),
                alias: true,
            },
            Routed::Handoff {
                visitor_id: "anon-8".into(),
                events: Vec::new(),
                identify: profile("e7", "L-2"),
                alias: false,
            },
        ]
    }

    #[test]
    fn a_batch_holds_its_records_in_order_as_prost_reads_it() {
        let records = all();
        let (mut scratch, mut batch) = (Vec::new(), Vec::new());
        for r in &records {
            push_routed(r, &mut scratch, &mut batch);
        }
        let mut got = Vec::new();
        decode_routed_records(&batch, |r| got.push(r.into_owned())).unwrap();
        assert_eq!(got, records);
        // prost reads the same batch as a `RoutedBatch`.
        let pb = ipb::RoutedBatch::decode(&batch[..]).unwrap();
        assert_eq!(pb.records.len(), records.len());
        for (m, r) in pb.records.iter().zip(&records) {
            let mut one = Vec::new();
            encode_routed(r, &mut one);
            assert_eq!(m.encode_to_vec(), one);
        }
        // A single record, as earlier versions wrote it, still reads.
        let mut one = Vec::new();
        encode_routed(&records[0], &mut one);
        let mut got = Vec::new();
        decode_routed_records(&one, |r| got.push(r.into_owned())).unwrap();
        assert_eq!(got, records[..1]);
        // A cut batch is an error after the records before the cut.
        let mut n = 0;
        assert!(decode_routed_records(&batch[..batch.len() - 1], |_| n += 1).is_err());
        assert_eq!(n, records.len() - 1);
    }

    #[test]
    fn origins_and_marks_go_with_their_records_and_read_as_prost_does() {
        let records = all();
        let marks = [
            LaneMark {
                topic: 1,
                partition: 7,
                timestamp: -5,
                offset: i64::MAX,
                confirmed_at: 0,
            },
            LaneMark {
                topic: 0,
                partition: 0,
                timestamp: i64::MIN,
                offset: 0,
                confirmed_at: 1_780_000_000_999,
            },
        ];
        let (mut scratch, mut batch) = (Vec::new(), Vec::new());
        for (i, r) in records.iter().enumerate() {
            // Every other record has none.
            if i % 2 == 0 || i == 1 {
                push_origin(&origin_of(i), &mut batch);
            }
            push_routed(r, &mut scratch, &mut batch);
        }
        for m in &marks {
            push_mark(m, &mut batch);
        }
        let mut got = Vec::new();
        scan_routed_batch(&batch, |item| got.push(item)).unwrap();
        let mut want_origins = Vec::new();
        let mut want_marks = Vec::new();
        for item in &got {
            match item {
                BatchItem::Record { origin, bytes } => {
                    let i = want_origins.len();
                    assert_eq!(decode_routed(bytes).unwrap(), records[i]);
                    assert_eq!(*origin, (i % 2 == 0 || i == 1).then(|| origin_of(i)));
                    want_origins.push(*origin);
                }
                BatchItem::Mark(m) => want_marks.push(*m),
            }
        }
        fn origin_of(i: usize) -> Origin {
            Origin {
                topic: i as u32 % 3,
                partition: i as i32,
                timestamp: if i == 1 {
                    i64::MIN
                } else {
                    1_780_000_000_000 - i as i64
                },
                offset: 1 << (i * 5),
                routed_at: 1_780_000_000_123,
                second_hop: i % 2 == 1,
            }
        }
        assert_eq!(want_origins.len(), records.len());
        assert_eq!(want_marks, marks);
        // prost reads the same fields.
        let pb = ipb::RoutedBatch::decode(&batch[..]).unwrap();
        assert_eq!(pb.records.len(), records.len());
        let pb_origins: Vec<Origin> = pb
            .origins
            .iter()
            .map(|o| Origin {
                topic: o.topic,
                partition: o.partition,
                timestamp: o.timestamp,
                offset: o.offset,
                routed_at: o.routed_at,
                second_hop: o.second_hop,
            })
            .collect();
        let want: Vec<Origin> = want_origins.into_iter().flatten().collect();
        assert_eq!(pb_origins, want);
        let pb_marks: Vec<LaneMark> = pb
            .marks
            .iter()
            .map(|m| LaneMark {
                topic: m.topic,
                partition: m.partition,
                timestamp: m.timestamp,
                offset: m.offset,
                confirmed_at: m.confirmed_at,
            })
            .collect();
        assert_eq!(pb_marks, marks);
        // Damaged origins and marks are errors, never panics.
        for cut in 0..batch.len() {
            let _ = scan_routed_batch(&batch[..cut], |_| {});
        }
    }

    #[test]
    fn every_record_round_trips_exactly() {
        for r in all() {
            let mut bytes = Vec::new();
            encode_routed(&r, &mut bytes);
            let back = decode_routed(&bytes).unwrap();
            assert_eq!(back, r);
            let owned = decode_with_prost(&bytes).unwrap();
            assert_eq!(owned, r, "prost reads the same");
            // -0.0 == 0.0 for PartialEq: the bits must survive too.
            if let Routed::Lead(e) = &back {
                let Value::Num(z) = e.attributes[6].1 else {
                    panic!("a number")
                };
                assert!(z.is_sign_negative());
            }
            let mut again = Vec::new();
            encode_routed(&back, &mut again);
            assert_eq!(again, bytes, "byte for byte");
        }
    }

    #[test]
    fn the_encoder_writes_what_prost_writes() {
        let mut records = all();
        // Defaults that proto3 leaves out, and values at the edges.
        let mut bare = Event::new("", "L-9", "", 0);
        bare.reason = Some("".into());
        bare.criteria = vec![("".into(), false)];
        bare.attributes = vec![
            ("".into(), Value::Str("".into())),
            ("big".into(), Value::Num(f64::MAX)),
            ("t".into(), Value::Bool(true)),
        ];
        records.push(Routed::Lead(bare));
        let mut long = Event::new("e".repeat(300), "L-1", "x".repeat(20_000), i64::MIN);
        long.profile = vec![(
            "p".into(),
            Value::Map(vec![("q".into(), Value::Map(Vec::new()))]),
        )];
        records.push(Routed::Forward(long));
        for r in records {
            let (mut ours, mut theirs) = (vec![7u8], vec![7u8]);
            encode_routed(&r, &mut ours);
            encode_with_prost(&r, &mut theirs);
            assert_eq!(ours, theirs, "{r:?}");
        }
    }

    #[test]
    fn the_kind_survives_even_when_the_type_would_say_otherwise() {
        let mut e = event("e1", "L-1", "profile_updated");
        e.kind = Kind::Engagement;
        let mut bytes = Vec::new();
        encode_routed(&Routed::Lead(e.clone()), &mut bytes);
        assert_eq!(decode_routed(&bytes).unwrap(), Routed::Lead(e));
    }

    #[test]
    fn bytes_that_are_not_a_record_are_bad_protobuf() {
        for bytes in [
            &b""[..],
            b"\xff\xff\xff",
            b"{\"event_id\":\"e1\"}",
            // A barrier without its event.
            &[0x22, 0x03, 0x0a, 0x01, b'v'],
        ] {
            let e = decode_routed(bytes).unwrap_err();
            assert_eq!(e.code(), "bad_protobuf", "{bytes:?}: {e}");
        }
        // A record whose key is empty cannot be routed.
        let mut bytes = Vec::new();
        encode_routed(&Routed::Lead(Event::new("e", "", "x", 0)), &mut bytes);
        assert_eq!(decode_routed(&bytes).unwrap_err().code(), "bad_protobuf");
    }

    #[test]
    fn the_borrowing_decoder_agrees_with_prost() {
        let mut taken = 0;
        for r in all() {
            let mut bytes = Vec::new();
            encode_routed(&r, &mut bytes);
            let back = borrowed::routed(&bytes).expect("takes on what the encoder writes");
            assert_eq!(back, r);
            assert!(matches!(back.key(), k if !k.is_empty()));
            // Damaged copies: whatever it takes on, prost reads the same.
            for i in 0..bytes.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut b = bytes.clone();
                    b[i] ^= flip;
                    if let Some(ours) = borrowed::routed(&b) {
                        taken += 1;
                        assert_eq!(Ok(ours), decode_with_prost(&b), "byte {i} ^ {flip:#x}");
                    }
                }
                if let Some(ours) = borrowed::routed(&bytes[..i]) {
                    assert_eq!(Ok(ours), decode_with_prost(&bytes[..i]), "cut at {i}");
                }
            }
        }
        assert!(taken > 100, "damaged copies it read: {taken}");
    }

    #[test]
    fn truncated_records_never_panic() {
        for r in all() {
            let mut bytes = Vec::new();
            encode_routed(&r, &mut bytes);
            for cut in 0..bytes.len() {
                let _ = decode_routed(&bytes[..cut]);
            }
        }
    }
}
