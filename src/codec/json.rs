//! JSON events in, JSON status changes out.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use super::{lead_id, parse_time, required, DecodeError};
use crate::change::StatusChange;
use crate::event::{Event, Fields, Kind, Value};

/// The wire shape; fields are optional here so that a missing one gets our
/// own error rather than serde's.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    event_id: Option<CowStr<'a>>,
    #[serde(borrow, default)]
    lead_id: Option<CowStr<'a>>,
    #[serde(borrow, default, rename = "type")]
    event_type: Option<CowStr<'a>>,
    #[serde(borrow, default)]
    occurred_at: Option<CowStr<'a>>,
    #[serde(borrow, default)]
    attributes: Option<FieldMap<'a>>,
    #[serde(borrow, default)]
    profile: Option<FieldMap<'a>>,
    #[serde(borrow, default)]
    criteria: Option<CriteriaMap<'a>>,
    #[serde(borrow, default)]
    reason: Option<CowStr<'a>>,
}

struct FieldMap<'a>(Fields<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for FieldMap<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = FieldMap<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(2));
                while let Some(k) = m.next_key::<CowStr<'a>>()? {
                    let v: WireValue<'a> = m.next_value()?;
                    out.push((k.0, v.0));
                }
                Ok(FieldMap(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

struct CriteriaMap<'a>(Vec<(Cow<'a, str>, bool)>);

impl<'de: 'a, 'a> Deserialize<'de> for CriteriaMap<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = CriteriaMap<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of criterion: true/false")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<CowStr<'a>>()? {
                    out.push((k.0, m.next_value::<bool>()?));
                }
                Ok(CriteriaMap(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A string that borrows from the input when it has no escapes.
pub(super) struct CowStr<'a>(pub(super) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = CowStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// Any JSON value; objects become [`Value::Map`], arrays [`Value::Other`].
pub(super) struct WireValue<'a>(pub(super) Value<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for WireValue<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = WireValue<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(WireValue(Value::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(WireValue(Value::Null))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(WireValue(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(WireValue(Value::Num(v as f64)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(WireValue(Value::Num(v as f64)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(WireValue(Value::Num(v)))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(WireValue(Value::Str(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WireValue(Value::Str(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(WireValue(Value::Str(Cow::Owned(v))))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(WireValue(Value::Other))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                // serde_json's recursion limit bounds the nesting.
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(2));
                while let Some(k) = m.next_key::<CowStr<'a>>()? {
                    let v: WireValue<'a> = m.next_value()?;
                    out.push((k.0, v.0));
                }
                Ok(WireValue(Value::Map(out)))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Decodes one JSON event. Strings without escapes borrow from `bytes`.
pub fn decode_json(bytes: &[u8]) -> Result<Event<'_>, DecodeError> {
    // One validation of the whole line, which is fast, rather than one per
    // string inside serde_json; invalid UTF-8 goes the slow way for its
    // error message.
    match std::str::from_utf8(bytes) {
        Ok(text) => decode_json_str(text),
        Err(_) => event_of(serde_json::from_slice(bytes)),
    }
}

/// [`decode_json`] of text already known to be UTF-8 (`score` checks a
/// whole block of lines at once).
pub fn decode_json_str(text: &str) -> Result<Event<'_>, DecodeError> {
    event_of(serde_json::from_str(text))
}

fn event_of(parsed: serde_json::Result<Wire<'_>>) -> Result<Event<'_>, DecodeError> {
    let w: Wire<'_> = parsed.map_err(|e| {
        let msg = e.to_string();
        // serde names the field for a wrong type; keep its words.
        DecodeError::BadJson(msg)
    })?;
    let event_id = required("event_id", w.event_id.map(|s| s.0))?;
    let lead_id = lead_id("lead_id", required("lead_id", w.lead_id.map(|s| s.0))?)?;
    let event_type = required("type", w.event_type.map(|s| s.0))?;
    let occurred_at = parse_time(&required("occurred_at", w.occurred_at.map(|s| s.0))?)?;
    Ok(Event {
        kind: Kind::of(&event_type),
        event_id,
        lead_id,
        event_type,
        occurred_at,
        attributes: w.attributes.map(|m| m.0).unwrap_or_default(),
        profile: w.profile.map(|m| m.0).unwrap_or_default(),
        criteria: w.criteria.map(|m| m.0).unwrap_or_default(),
        reason: w.reason.map(|s| s.0),
    })
}

/// Encodes a change as one line of JSON (no trailing newline).
pub fn encode_change_json(change: &StatusChange, out: &mut Vec<u8>) {
    // Serialising plain structs into a Vec cannot fail.
    serde_json::to_writer(out, change).expect("status change serialises");
}

/// Encodes a score record as one JSON object (the score topic's JSON form).
pub fn encode_score_json(record: &crate::ScoreRecord, out: &mut Vec<u8>) {
    // Serialising plain structs into a Vec cannot fail.
    serde_json::to_writer(out, record).expect("score record serialises");
}

/// A field value as JSON, whole numbers as integers (300, not 300.0), as
/// the native JSON writes them.
pub fn value_json(v: &Value<'_>) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Num(n) => serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, |n| {
            // Whole numbers print as integers (300, not 300.0).
            if n.as_f64()
                .is_some_and(|f| f.fract() == 0.0 && f.abs() < 9e15)
            {
                serde_json::Value::from(n.as_f64().unwrap_or_default() as i64)
            } else {
                n.into()
            }
        }),
        Value::Str(s) => s.as_ref().into(),
        // An array decodes as `Other`, so `[]` reads back as what it was.
        Value::Other => serde_json::Value::Array(Vec::new()),
        Value::Map(m) => fields_json(m).into(),
    }
}

/// Named values as a JSON object.
pub fn fields_json(f: &[(Cow<'_, str>, Value<'_>)]) -> serde_json::Map<String, serde_json::Value> {
    f.iter()
        .map(|(k, v)| (k.to_string(), value_json(v)))
        .collect()
}

/// Criteria as a JSON object of booleans.
pub fn criteria_json(e: &Event<'_>) -> serde_json::Map<String, serde_json::Value> {
    e.criteria
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).into()))
        .collect()
}

/// The event's own fields, those present: `attributes`, `profile`,
/// `criteria`, `reason` (what a CloudEvent's `data` holds).
pub fn event_data_json(e: &Event<'_>) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    if !e.attributes.is_empty() {
        m.insert("attributes".into(), fields_json(&e.attributes).into());
    }
    if !e.profile.is_empty() {
        m.insert("profile".into(), fields_json(&e.profile).into());
    }
    if !e.criteria.is_empty() {
        m.insert("criteria".into(), criteria_json(e).into());
    }
    if let Some(r) = &e.reason {
        m.insert("reason".into(), r.as_ref().into());
    }
    m
}

/// Encodes an event as one line of JSON (no trailing newline), the inverse
/// of [`decode_json`]; used by the generator.
pub fn encode_event_json(e: &Event<'_>, out: &mut Vec<u8>) {
    let mut m = serde_json::Map::new();
    m.insert("event_id".into(), e.event_id.as_ref().into());
    m.insert("lead_id".into(), e.lead_id.as_ref().into());
    m.insert("type".into(), e.event_type.as_ref().into());
    m.insert(
        "occurred_at".into(),
        crate::time::format_rfc3339(e.occurred_at).into(),
    );
    m.extend(event_data_json(e));
    serde_json::to_writer(out, &serde_json::Value::Object(m)).expect("JSON values serialise");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_rfc3339;

    #[test]
    fn decodes_the_spec_example_without_copying() {
        let body = br#"{"event_id": "evt-8f2c", "lead_id": "L-1042", "type": "webinar_attended",
 "occurred_at": "2026-03-02T14:00:00Z", "attributes": {"webinar": "w-7"}}"#;
        let e = decode_json(body).unwrap();
        assert_eq!(e.event_id, "evt-8f2c");
        assert!(matches!(e.lead_id, Cow::Borrowed(_)));
        assert_eq!(e.kind, Kind::Engagement);
        assert_eq!(
            e.occurred_at,
            parse_rfc3339("2026-03-02T14:00:00Z").unwrap()
        );
        assert_eq!(e.attribute("webinar"), Some(&Value::Str("w-7".into())));
    }

    #[test]
    fn decodes_reserved_fields() {
        let body = br#"{"event_id":"e1","lead_id":"L","type":"profile_updated","occurred_at":"2026-03-02T14:00:00Z",
            "profile":{"email":"a\u0040b.com","employees":300.0,"is_customer":true,"industry":null,"tags":[1,2]},
            "criteria":{"budget":true,"need":false},"reason":"disqualified"}"#;
        let e = decode_json(body).unwrap();
        assert_eq!(e.kind, Kind::ProfileUpdated);
        assert_eq!(
            e.profile,
            vec![
                ("email".into(), Value::Str("a@b.com".into())),
                ("employees".into(), Value::Num(300.0)),
                ("is_customer".into(), Value::Bool(true)),
                ("industry".into(), Value::Null),
                ("tags".into(), Value::Other),
            ]
        );
        assert_eq!(
            e.criteria,
            vec![("budget".into(), true), ("need".into(), false)]
        );
        assert_eq!(e.reason.as_deref(), Some("disqualified"));
    }

    #[test]
    fn every_invalid_class_has_its_reason() {
        let cases: [(&[u8], &str); 9] = [
            (b"not json", "bad_json"),
            (b"[1,2]", "bad_json"),
            (br#"{"lead_id":"L","type":"x","occurred_at":"2026-01-01T00:00:00Z"}"#, "missing_field"),
            (br#"{"event_id":"","lead_id":"L","type":"x","occurred_at":"2026-01-01T00:00:00Z"}"#, "empty_field"),
            (br#"{"event_id":"e","lead_id":"L","type":"","occurred_at":"2026-01-01T00:00:00Z"}"#, "empty_field"),
            (br#"{"event_id":"e","lead_id":"L","type":"x"}"#, "missing_field"),
            (br#"{"event_id":"e","lead_id":"L","type":"x","occurred_at":"yesterday"}"#, "bad_timestamp"),
            (br#"{"event_id":7,"lead_id":"L","type":"x","occurred_at":"2026-01-01T00:00:00Z"}"#, "bad_json"),
            (br#"{"event_id":"e","lead_id":"L","type":"x","occurred_at":"2026-01-01T00:00:00Z","criteria":{"budget":"yes"}}"#, "bad_json"),
        ];
        for (body, code) in cases {
            let err = decode_json(body).unwrap_err();
            assert_eq!(err.code(), code, "{}: {err}", String::from_utf8_lossy(body));
        }
    }
}
