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
/// single `Routed`, and hands each record to `f` in order. Stops at the
/// first that does not decode (those before it have been handed over).
pub fn decode_routed_records<'a>(
    bytes: &'a [u8],
    mut f: impl FnMut(Routed<'a>),
) -> Result<(), DecodeError> {
    if bytes.first() != Some(&BATCH_KEY) {
        return decode_routed(bytes).map(f);
    }
    let mut r = crate::codec::pbwire::Reader::new(bytes);
    while r.more() {
        match r.key() {
            Some((15, crate::codec::pbwire::LEN)) => {}
            _ => return Err(bad("not a batch of routed records")),
        }
        let item = r.bytes().ok_or_else(|| bad("a truncated batch"))?;
        f(decode_routed(item)?);
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
