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
    #![allow(clippy::all, rust_2018_idioms)]
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
        Ok(ipb::Kind::Engagement) => Kind::Engagement,
        // Not written by this version: decide from the type, as a decoder does.
        Ok(ipb::Kind::Unspecified) | Err(_) => Kind::of(event_type),
    }
}

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

/// Appends the record's bytes to `out`.
pub fn encode_routed(r: &Routed<'_>, out: &mut Vec<u8>) {
    use ipb::routed::Record as R;
    let record = match r {
        Routed::Lead(e) => R::Lead(event_to(e)),
        Routed::Visitor(e) => R::Visitor(event_to(e)),
        Routed::Forward(e) => R::Forward(event_to(e)),
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
    let m = ipb::Routed {
        record: Some(record),
    };
    out.reserve(m.encoded_len());
    m.encode(out)
        .expect("a Vec grows to take whatever is encoded");
}

fn bad(why: &str) -> DecodeError {
    DecodeError::BadProtobuf(format!("not a repartition record: {why}"))
}

fn required(e: Option<ipb::Event>, what: &str) -> Result<Event<'static>, DecodeError> {
    e.map(event_from)
        .ok_or_else(|| bad(&format!("{what} without its event")))
}

/// Reads a record written by [`encode_routed`]. Bytes that are not one are
/// a [`DecodeError::BadProtobuf`] (dead-lettered), never a panic.
pub fn decode_routed(bytes: &[u8]) -> Result<Routed<'static>, DecodeError> {
    use ipb::routed::Record as R;
    let m = ipb::Routed::decode(bytes).map_err(|e| bad(&e.to_string()))?;
    let r = match m.record.ok_or_else(|| bad("no record"))? {
        R::Lead(e) => Routed::Lead(event_from(e)),
        R::Visitor(e) => Routed::Visitor(event_from(e)),
        R::Forward(e) => Routed::Forward(event_from(e)),
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
    };
    if r.key().is_empty() {
        return Err(bad("empty key"));
    }
    Ok(r)
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
    fn every_record_round_trips_exactly() {
        for r in all() {
            let mut bytes = Vec::new();
            encode_routed(&r, &mut bytes);
            let back = decode_routed(&bytes).unwrap();
            assert_eq!(back, r);
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
