//! Protobuf events in, protobuf status changes out (`proto/leadscore/v1`).

use std::borrow::Cow;

use prost::Message;

use super::{parse_time, required, DecodeError};
use crate::change::StatusChange;
use crate::event::{Event, Kind, Value};
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

fn nonempty(s: String) -> Option<Cow<'static, str>> {
    (!s.is_empty()).then_some(Cow::Owned(s))
}

/// Decodes one protobuf `leadscore.v1.Event`.
pub fn decode_proto(bytes: &[u8]) -> Result<Event<'static>, DecodeError> {
    let m = pb::Event::decode(bytes).map_err(|e| DecodeError::BadProtobuf(e.to_string()))?;
    // proto3 cannot tell a missing string from an empty one: both are "missing".
    let event_id = required("event_id", nonempty(m.event_id))?;
    let lead_id = required("lead_id", nonempty(m.lead_id))?;
    let event_type = required("type", nonempty(m.r#type))?;
    let occurred_at = parse_time(&required("occurred_at", nonempty(m.occurred_at))?)?;
    let mut criteria: Vec<_> = m
        .criteria
        .into_iter()
        .map(|(k, v)| (Cow::Owned(k), v))
        .collect();
    criteria.sort();
    Ok(Event {
        kind: Kind::of(&event_type),
        event_id,
        lead_id,
        event_type,
        occurred_at,
        attributes: fields(m.attributes),
        profile: fields(m.profile),
        criteria,
        reason: m.reason.map(Cow::Owned),
    })
}

fn pb_value(v: &Value<'_>) -> Option<pb::Value> {
    let kind = match v {
        Value::Null => pb::value::Kind::NullValue(true),
        Value::Bool(b) => pb::value::Kind::BoolValue(*b),
        Value::Num(n) => pb::value::Kind::NumberValue(*n),
        Value::Str(s) => pb::value::Kind::StringValue(s.to_string()),
        Value::Other => return None,
    };
    Some(pb::Value { kind: Some(kind) })
}

/// Encodes an event as protobuf (for the generator, tests and benchmarks).
/// Array and object values have no protobuf form and are left out.
pub fn encode_event_proto(e: &Event<'_>, out: &mut Vec<u8>) {
    let map = |f: &[(Cow<'_, str>, Value<'_>)]| {
        f.iter()
            .filter_map(|(k, v)| Some((k.to_string(), pb_value(v)?)))
            .collect()
    };
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
    let m = pb::StatusChange {
        change_id: c.change_id.clone(),
        lead_id: c.lead_id.clone(),
        sequence: c.sequence,
        from: c.from.as_str().to_string(),
        to: c.to.as_str().to_string(),
        occurred_at: format_rfc3339(c.occurred_at),
        score: Some(pb::Score {
            total: c.score.total,
            fit: c.score.fit,
            engagement: c.score.engagement,
        }),
        band: c.band.clone(),
        reasons: c.reasons.clone(),
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
}
