//! Protobuf events in, protobuf status changes out (`proto/leadscore/v1`).

use std::borrow::Cow;

use prost::Message;

use super::{lead_id, parse_time, required, DecodeError};
use crate::change::{ChangeKind, StatusChange};
use crate::event::{Event, Fields, Kind, Value};
use crate::time::format_rfc3339;

/// Types generated from `proto/leadscore/v1/*.proto`.
pub mod pb {
    #![allow(clippy::all, rust_2018_idioms)]
    include!(concat!(env!("OUT_DIR"), "/leadscore.v1.rs"));
}

fn value(v: pb::Value) -> Value<'static> {
    match v.kind {
        None | Some(pb::value::Kind::NullValue(_)) => Value::Null,
        Some(pb::value::Kind::BoolValue(b)) => Value::Bool(b),
        Some(pb::value::Kind::NumberValue(n)) => Value::Num(n),
        Some(pb::value::Kind::StringValue(s)) => Value::Str(Cow::Owned(s)),
        Some(pb::value::Kind::StructValue(s)) => Value::Map(fields(s.fields)),
    }
}

/// A protobuf map as fields; a BTreeMap is sorted by name, so the result does
/// not depend on the order on the wire.
fn fields(
    m: std::collections::BTreeMap<String, pb::Value>,
) -> Vec<(Cow<'static, str>, Value<'static>)> {
    m.into_iter()
        .map(|(k, v)| (Cow::Owned(k), value(v)))
        .collect()
}

/// Decodes one protobuf `leadscore.v1.Event`. Strings borrow from `bytes`.
pub fn decode_proto(bytes: &[u8]) -> Result<Event<'_>, DecodeError> {
    let m = match borrowed::decode(bytes) {
        Some(m) => m,
        // Whatever the borrowing decoder does not take on (invalid input
        // included) goes through prost, which has the final word and the
        // error messages.
        None => owned(bytes)?,
    };
    // proto3 cannot tell a missing string from an empty one: both are "missing".
    let event_id = required("event_id", nonempty(m.event_id))?;
    let lead_id = lead_id("lead_id", required("lead_id", nonempty(m.lead_id))?)?;
    let event_type = required("type", nonempty(m.event_type))?;
    let occurred_at = parse_time(&required("occurred_at", nonempty(m.occurred_at))?)?;
    Ok(Event {
        kind: Kind::of(&event_type),
        event_id,
        lead_id,
        event_type,
        occurred_at,
        attributes: m.attributes,
        profile: m.profile,
        criteria: m.criteria,
        reason: m.reason,
    })
}

fn nonempty(s: Cow<'_, str>) -> Option<Cow<'_, str>> {
    (!s.is_empty()).then_some(s)
}

/// A decoded `Event` message before the checks: maps as fields sorted by
/// name (the last entry of a repeated name wins, as in a map).
#[derive(Debug, PartialEq)]
struct Decoded<'a> {
    event_id: Cow<'a, str>,
    lead_id: Cow<'a, str>,
    event_type: Cow<'a, str>,
    occurred_at: Cow<'a, str>,
    attributes: Fields<'a>,
    profile: Fields<'a>,
    criteria: Vec<(Cow<'a, str>, bool)>,
    reason: Option<Cow<'a, str>>,
}

/// Decodes with prost: the reference, for what [`borrowed`] leaves to it.
fn owned(bytes: &[u8]) -> Result<Decoded<'static>, DecodeError> {
    let m = pb::Event::decode(bytes).map_err(|e| DecodeError::BadProtobuf(e.to_string()))?;
    let mut criteria: Vec<_> = m
        .criteria
        .into_iter()
        .map(|(k, v)| (Cow::Owned(k), v))
        .collect();
    criteria.sort();
    Ok(Decoded {
        event_id: Cow::Owned(m.event_id),
        lead_id: Cow::Owned(m.lead_id),
        event_type: Cow::Owned(m.r#type),
        occurred_at: Cow::Owned(m.occurred_at),
        attributes: fields(m.attributes),
        profile: fields(m.profile),
        criteria,
        reason: m.reason.map(Cow::Owned),
    })
}

/// A decoder of `leadscore.v1.Event` that borrows its strings from the
/// message, so a typical event costs no allocation but its field vectors
/// (prost allocates every string and map node).
///
/// It takes on only what it decodes exactly as prost does: valid messages
/// with the wire types the schema declares, unknown fields of the common
/// wire types, and map entries with each of their two fields at most once.
/// On anything else (invalid messages included) it returns `None` and the
/// caller decodes with prost.
mod borrowed {
    use std::borrow::Cow;

    use super::Decoded;
    use crate::event::Value;

    use crate::codec::pbwire::{Reader, I64, LEN, VARINT};

    pub(super) fn decode(bytes: &[u8]) -> Option<Decoded<'_>> {
        let mut r = Reader { b: bytes };
        let mut m = Decoded {
            event_id: Cow::Borrowed(""),
            lead_id: Cow::Borrowed(""),
            event_type: Cow::Borrowed(""),
            occurred_at: Cow::Borrowed(""),
            attributes: Vec::new(),
            profile: Vec::new(),
            criteria: Vec::new(),
            reason: None,
        };
        while !r.b.is_empty() {
            let (field, wire) = r.key()?;
            match field {
                1 => m.event_id = Cow::Borrowed(r.str_of(wire)?),
                2 => m.lead_id = Cow::Borrowed(r.str_of(wire)?),
                3 => m.event_type = Cow::Borrowed(r.str_of(wire)?),
                4 => m.occurred_at = Cow::Borrowed(r.str_of(wire)?),
                5 => m.attributes.push(field_entry(&mut r, wire)?),
                6 => m.profile.push(field_entry(&mut r, wire)?),
                7 => m.criteria.push(criterion_entry(&mut r, wire)?),
                8 => m.reason = Some(Cow::Borrowed(r.str_of(wire)?)),
                _ => r.skip(wire)?,
            }
        }
        sort_map(&mut m.attributes);
        sort_map(&mut m.profile);
        sort_map(&mut m.criteria);
        Some(m)
    }

    /// As a map: sorted by key, the last entry of each key kept.
    fn sort_map<T>(entries: &mut Vec<(Cow<'_, str>, T)>) {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
    }

    /// A map entry message: key (1) and value (2), each at most once.
    fn entry<'a, T>(
        r: &mut Reader<'a>,
        wire: u8,
        mut value: impl FnMut(&mut Reader<'a>, u8) -> Option<T>,
        missing: T,
    ) -> Option<(Cow<'a, str>, T)> {
        if wire != LEN {
            return None;
        }
        let mut e = Reader { b: r.bytes()? };
        let (mut k, mut v) = (None, None);
        while !e.b.is_empty() {
            let (field, wire) = e.key()?;
            match field {
                1 if k.is_none() => k = Some(e.str_of(wire)?),
                2 if v.is_none() => v = Some(value(&mut e, wire)?),
                1 | 2 => return None,
                _ => e.skip(wire)?,
            }
        }
        Some((Cow::Borrowed(k.unwrap_or("")), v.unwrap_or(missing)))
    }

    fn field_entry<'a>(r: &mut Reader<'a>, wire: u8) -> Option<(Cow<'a, str>, Value<'a>)> {
        entry(r, wire, |r, wire| value(r, wire, 0), Value::Null)
    }

    /// How deep nested objects may go before this decoder leaves the
    /// message to prost (whose own recursion limit then decides): far below
    /// prost's limit, so the two never disagree on a message this one takes.
    const MAX_DEPTH: u32 = 16;

    fn criterion_entry<'a>(r: &mut Reader<'a>, wire: u8) -> Option<(Cow<'a, str>, bool)> {
        entry(
            r,
            wire,
            |e, wire| {
                (wire == VARINT)
                    .then(|| e.varint())
                    .flatten()
                    .map(|v| v != 0)
            },
            false,
        )
    }

    /// A `Value` message at nesting `depth`: the last of its `kind` fields
    /// wins; none is null.
    fn value<'a>(r: &mut Reader<'a>, wire: u8, depth: u32) -> Option<Value<'a>> {
        if wire != LEN || depth > MAX_DEPTH {
            return None;
        }
        let mut v = Reader { b: r.bytes()? };
        let mut out = Value::Null;
        while !v.b.is_empty() {
            let (field, wire) = v.key()?;
            out = match (field, wire) {
                (1, VARINT) => {
                    v.varint()?;
                    Value::Null
                }
                (2, VARINT) => Value::Bool(v.varint()? != 0),
                (3, I64) => Value::Num(f64::from_le_bytes(v.take(8)?.try_into().ok()?)),
                (4, LEN) => Value::Str(Cow::Borrowed(v.str_of(wire)?)),
                (5, LEN) => {
                    // prost merges a repeated message field of a oneof into
                    // the one before; leave that rare case to it.
                    if matches!(out, Value::Map(_)) {
                        return None;
                    }
                    Value::Map(structure(&mut v, depth)?)
                }
                (1..=5, _) => return None,
                _ => {
                    v.skip(wire)?;
                    continue;
                }
            };
        }
        Some(out)
    }

    /// The fields of a `Struct` message (a nested object), sorted as a map.
    fn structure<'a>(r: &mut Reader<'a>, depth: u32) -> Option<Vec<(Cow<'a, str>, Value<'a>)>> {
        let mut s = Reader { b: r.bytes()? };
        let mut out = Vec::new();
        while !s.b.is_empty() {
            let (field, wire) = s.key()?;
            match field {
                1 => out.push(entry(
                    &mut s,
                    wire,
                    |r, w| value(r, w, depth + 1),
                    Value::Null,
                )?),
                _ => s.skip(wire)?,
            }
        }
        sort_map(&mut out);
        Some(out)
    }
}

fn pb_value(v: &Value<'_>) -> Option<pb::Value> {
    let kind = match v {
        Value::Null => pb::value::Kind::NullValue(true),
        Value::Bool(b) => pb::value::Kind::BoolValue(*b),
        Value::Num(n) => pb::value::Kind::NumberValue(*n),
        Value::Str(s) => pb::value::Kind::StringValue(s.to_string()),
        Value::Map(m) => pb::value::Kind::StructValue(pb::Struct { fields: pb_map(m) }),
        Value::Other => return None,
    };
    Some(pb::Value { kind: Some(kind) })
}

fn pb_map(f: &[(Cow<'_, str>, Value<'_>)]) -> std::collections::BTreeMap<String, pb::Value> {
    f.iter()
        .filter_map(|(k, v)| Some((k.to_string(), pb_value(v)?)))
        .collect()
}

/// Encodes an event as protobuf (for the generator, tests and benchmarks).
/// Arrays have no protobuf form and are left out; objects are `Struct`s.
pub fn encode_event_proto(e: &Event<'_>, out: &mut Vec<u8>) {
    let map = pb_map;
    let m = pb::Event {
        event_id: e.event_id.to_string(),
        lead_id: e.lead_id.to_string(),
        r#type: e.event_type.to_string(),
        occurred_at: format_rfc3339(e.occurred_at),
        attributes: map(&e.attributes),
        profile: map(&e.profile),
        criteria: e
            .criteria
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
        reason: e.reason.as_ref().map(|r| r.to_string()),
    };
    m.encode(out).expect("a Vec grows as needed");
}

/// Encodes a change as a protobuf `leadscore.v1.StatusChange`.
pub fn encode_change_proto(c: &StatusChange, out: &mut Vec<u8>) {
    let changed = c.is_stage_change();
    let stage_changed = |s: &str| {
        if changed {
            s.to_string()
        } else {
            String::new()
        }
    };
    let at = |kind| (c.kind == kind).then(|| format_rfc3339(c.occurred_at));
    let m = pb::StatusChange {
        kind: c.kind.as_str().to_string(),
        stage: (!changed).then(|| c.to.as_str().to_string()),
        breached_at: at(ChangeKind::SlaBreached),
        erased_at: at(ChangeKind::LeadErased),
        expired_at: at(ChangeKind::LeadExpired),
        reason: c.reasons.first().filter(|_| c.is_removal()).cloned(),
        change_id: c.change_id.clone(),
        lead_id: c.lead_id.clone(),
        sequence: c.sequence,
        from: stage_changed(c.from.as_str()),
        to: stage_changed(c.to.as_str()),
        occurred_at: stage_changed(&format_rfc3339(c.occurred_at)),
        score: (!c.is_removal()).then_some(pb::Score {
            total: c.score.total,
            fit: c.score.fit,
            engagement: c.score.engagement,
        }),
        band: c.band.clone(),
        reasons: if c.is_removal() {
            Vec::new()
        } else {
            c.reasons.clone()
        },
        top_contributors: c
            .top_contributors
            .iter()
            .map(|t| pb::Contribution {
                rule: t.rule.clone(),
                points: t.points,
            })
            .collect(),
        route: c.route.clone(),
        follow_up_by: c.follow_up_by.map(format_rfc3339),
        model_version: c.model_version.clone(),
        cause_event_id: c.cause_event_id.clone(),
    };
    m.encode(out).expect("a Vec grows as needed");
}

/// Encodes a score record as a `leadscore.v1.ScoreRecord` (the score topic
/// with `output_format = "protobuf"`).
pub fn encode_score_proto(r: &crate::ScoreRecord, out: &mut Vec<u8>) {
    let m = pb::ScoreRecord {
        lead_id: r.lead_id.clone(),
        stage: r.stage.as_str().to_string(),
        fit: r.fit,
        engagement: r.engagement,
        total: r.total,
        band: r.band.clone(),
        as_of: format_rfc3339(r.as_of),
        half_life_seconds: r.half_life_micros.map(|m| m / 1e6),
        next_deadline: r.next_deadline.map(format_rfc3339),
        top_contributors: r
            .top_contributors
            .iter()
            .map(|t| pb::Contribution {
                rule: t.rule.clone(),
                points: t.points,
            })
            .collect(),
        model_version: r.model_version.clone(),
        components: r
            .components
            .iter()
            .map(|c| pb::EngagementComponent {
                half_life_seconds: c.half_life_micros.map(|m| m / 1e6),
                engagement: c.engagement,
            })
            .collect(),
    };
    m.encode(out).expect("a Vec grows as needed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_json;

    #[test]
    fn round_trips_through_protobuf() {
        let body = br#"{"event_id":"e1","lead_id":"L","type":"profile_updated","occurred_at":"2026-03-02T14:00:00.5Z",
            "attributes":{"url":"/pricing"},"profile":{"employees":300,"industry":null,"is_customer":false},
            "criteria":{"budget":true},"reason":"x"}"#;
        let e = decode_json(body).unwrap();
        let mut buf = Vec::new();
        encode_event_proto(&e, &mut buf);
        let mut back = decode_proto(&buf).unwrap();
        let mut want = e.into_owned();
        want.profile.sort_by(|a, b| a.0.cmp(&b.0));
        back.profile.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back, want);
    }

    /// The borrowing decoder either declines or agrees with prost.
    fn agrees_with_prost(bytes: &[u8]) -> bool {
        let fast = borrowed::decode(bytes);
        if let Some(m) = &fast {
            assert_eq!(Ok(m), owned(bytes).as_ref(), "{bytes:?}");
        }
        fast.is_some()
    }

    #[test]
    fn borrowing_decoder_agrees_with_prost() {
        use crate::gen::{GenConfig, Generator};
        let events = Generator::new(GenConfig {
            seed: 3,
            leads: 50,
            events: 2_000,
            ..GenConfig::default()
        });
        let mut rng = crate::gen::Rng::new(11);
        let (mut taken, mut mutated) = (0, 0);
        for e in events {
            let mut buf = Vec::new();
            encode_event_proto(&e, &mut buf);
            assert!(agrees_with_prost(&buf));
            taken += 1;
            // Damaged copies: flipped bytes, truncated, repeated.
            for _ in 0..8 {
                let mut b = buf.clone();
                let i = rng.below(b.len() as u64) as usize;
                b[i] = rng.next_u64() as u8;
                mutated += usize::from(agrees_with_prost(&b));
                mutated += usize::from(agrees_with_prost(&buf[..i]));
            }
            let twice = [buf.as_slice(), buf.as_slice()].concat();
            assert!(agrees_with_prost(&twice));
        }
        assert!(taken > 0 && mutated > 0);
        // Repeated map keys and fields, unknown fields, several value kinds.
        let cases: [&[u8]; 6] = [
            b"\x2a\x07\x0a\x01a\x12\x02\x10\x01\x2a\x07\x0a\x01a\x12\x02\x22\x00",
            b"\x2a\x06\x12\x04\x22\x02hi\x2a\x00",
            b"\x32\x0b\x0a\x01x\x12\x06\x10\x01\x08\x01\x10\x01",
            b"\x3a\x05\x0a\x01b\x10\x02\x3a\x05\x0a\x01b\x10\x00\x3a\x03\x0a\x01a",
            b"\x0a\x01e\x0a\x01f\x42\x00\x48\x07\x55\x01\x02\x03\x04\x59\x01\x02\x03\x04\x05\x06\x07\x08",
            b"\x2a\x08\x0a\x01a\x0a\x01b\x12\x00",
        ];
        for (i, b) in cases.iter().enumerate() {
            let fast = agrees_with_prost(b);
            assert_eq!(fast, i != 5, "case {i}");
        }
    }

    #[test]
    fn invalid_protobuf_has_reasons() {
        assert_eq!(
            decode_proto(b"\xff\xff\xff").unwrap_err().code(),
            "bad_protobuf"
        );
        let mut buf = Vec::new();
        pb::Event {
            event_id: "e".into(),
            lead_id: "L".into(),
            r#type: "x".into(),
            occurred_at: "soon".into(),
            ..Default::default()
        }
        .encode(&mut buf)
        .unwrap();
        assert_eq!(decode_proto(&buf).unwrap_err().code(), "bad_timestamp");
        buf.clear();
        pb::Event {
            lead_id: "L".into(),
            ..Default::default()
        }
        .encode(&mut buf)
        .unwrap();
        assert_eq!(decode_proto(&buf).unwrap_err().code(), "missing_field");
    }
    #[test]
    fn status_records_carry_their_kind() {
        use crate::engine::Engine;
        use std::sync::Arc;
        let mut engine = Engine::new(Arc::new(crate::Model::default_model()));
        let mut out = Vec::new();
        for line in [
            r#"{"event_id":"p","lead_id":"L","type":"profile_updated","occurred_at":"2026-03-02T14:00:00Z","profile":{"job_title":"Director of Operations"}}"#,
            r#"{"event_id":"s","lead_id":"L","type":"sales_accepted","occurred_at":"2026-03-02T14:00:00Z"}"#,
        ] {
            engine.fold(&decode_json(line.as_bytes()).unwrap(), &mut out);
        }
        engine.advance_to(
            crate::time::parse_rfc3339("2026-03-04T00:00:00Z").unwrap(),
            &mut out,
        );
        let decoded: Vec<pb::StatusChange> = out
            .iter()
            .map(|c| {
                let mut buf = Vec::new();
                encode_change_proto(c, &mut buf);
                pb::StatusChange::decode(buf.as_slice()).unwrap()
            })
            .collect();
        assert_eq!(decoded.len(), 2);
        let (change, breach) = (&decoded[0], &decoded[1]);
        assert_eq!(change.kind, "stage_changed");
        assert_eq!((change.from.as_str(), change.to.as_str()), ("lead", "sql"));
        assert_eq!(
            (change.stage.as_deref(), change.breached_at.as_deref()),
            (None, None)
        );
        // SQL + 24 h.
        assert_eq!(breach.kind, "sla_breached");
        assert_eq!(breach.change_id, "L:1:sla");
        assert_eq!(breach.stage.as_deref(), Some("sql"));
        assert_eq!(breach.breached_at.as_deref(), Some("2026-03-03T14:00:00Z"));
        assert_eq!(breach.follow_up_by.as_deref(), Some("2026-03-03T14:00:00Z"));
        assert_eq!(
            (
                breach.from.as_str(),
                breach.to.as_str(),
                breach.occurred_at.as_str()
            ),
            ("", "", "")
        );
        assert_eq!(breach.route.as_deref(), Some("new_business"));
    }
}
