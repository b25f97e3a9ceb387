//! Decoding events and encoding status changes.
//!
//! Input topics carry the native JSON or protobuf events (`json.rs`,
//! `proto.rs`), Segment Spec messages (`segment.rs`) or CloudEvents
//! (`cloudevents.rs`), optionally behind Confluent Schema Registry framing
//! (`framing.rs`); [`decode_message`] takes any of them to a
//! [`Message`](crate::event::Message). Status changes go out in JSON or
//! protobuf.
//!
//! A message that is not a valid event is a value, not a failure: a
//! [`DecodeError`] carries a short reason code (the dead-letter header) and a
//! message that says what is wrong. No byte string makes a decoder panic.

mod cloudevents;
mod envelope;
mod framing;
mod json;
mod pbwire;
mod proto;
mod routed;
mod segment;

use std::fmt;

pub use cloudevents::decode_cloudevent;
pub use envelope::{cloudevents_headers, STAGE_CHANGED_TYPE};
pub use framing::strip as strip_framing;
pub use json::{
    criteria_json, decode_json, encode_change_json, encode_event_json, encode_score_json,
    event_data_json, fields_json, value_json,
};
pub use proto::{decode_proto, encode_change_proto, encode_event_proto, encode_score_proto, pb};
pub use routed::{
    decode_routed, decode_routed_records, encode_routed, push_mark, push_origin, push_routed,
    scan_routed_batch, BatchItem, LaneMark, Origin,
};
pub use segment::{decode_segment, normalise_event_name};

use crate::event::Event;

/// Messages larger than this are rejected unless the caller sets a limit.
/// (Kafka's default maximum message size.)
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Wire format of events in or changes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Protobuf,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "json",
            Format::Protobuf => "protobuf",
        })
    }
}

/// Wire format of an input topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// SPEC §2's JSON events.
    #[default]
    Json,
    /// SPEC §2's protobuf events (`proto/leadscore/v1/event.proto`).
    Protobuf,
    /// Segment Spec messages (RudderStack sends the same).
    Segment,
    /// CloudEvents 1.0, structured or binary mode.
    Cloudevents,
}

impl InputFormat {
    /// The native format this is, if it is one.
    pub fn native(self) -> Option<Format> {
        match self {
            InputFormat::Json => Some(Format::Json),
            InputFormat::Protobuf => Some(Format::Protobuf),
            _ => None,
        }
    }

    /// Whether a topic in this format is keyed by the lead id unless the
    /// config says otherwise.
    pub fn keyed_by_lead_by_default(self) -> bool {
        matches!(self, InputFormat::Json | InputFormat::Protobuf)
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputFormat::Json => "json",
            InputFormat::Protobuf => "protobuf",
            InputFormat::Segment => "segment",
            InputFormat::Cloudevents => "cloudevents",
        })
    }
}

/// How one input topic is read (resolved from the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicInput {
    pub format: InputFormat,
    /// The message key is the lead id (checked), so the topic's partitions
    /// are the leads' partitions. When false, events are re-keyed through
    /// the repartition topic.
    pub keyed_by_lead: bool,
    /// Bodies start with Confluent Schema Registry framing.
    pub schema_registry_framing: bool,
}

impl Default for TopicInput {
    fn default() -> Self {
        TopicInput {
            format: InputFormat::Json,
            keyed_by_lead: true,
            schema_registry_framing: false,
        }
    }
}

/// How Segment messages map to events (the config's `[input.segment]`).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentMapping {
    /// `track` event name → event type, before the default normalisation.
    #[serde(default)]
    pub events: std::collections::BTreeMap<String, String>,
}

/// How CloudEvents map to events (the config's `[input.cloudevents]`).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudEventsMapping {
    /// Removed from the front of `type` (e.g. `com.example.leads.`).
    #[serde(default)]
    pub type_prefix: String,
}

/// The mappings of the formats that need one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    pub segment: SegmentMapping,
    pub cloudevents: CloudEventsMapping,
}

/// A decoded message, with the Schema Registry schema id when framed.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<'a> {
    pub message: crate::event::Message<'a>,
    pub schema_id: Option<u32>,
}

/// Decodes one Kafka message of an input topic: strips the framing,
/// decodes the format, maps it to a [`crate::event::Message`], and, for a
/// topic keyed by lead, checks the key. `headers` are the message's
/// (CloudEvents binary mode reads `ce_*`).
pub fn decode_message<'a>(
    input: &TopicInput,
    mapping: &Mapping,
    key: Option<&[u8]>,
    headers: &[(&str, &'a [u8])],
    bytes: &'a [u8],
    max_bytes: usize,
) -> Result<Decoded<'a>, DecodeError> {
    use crate::event::Message;
    within_limit(bytes.len(), max_bytes)?;
    let (schema_id, body) = if input.schema_registry_framing {
        let (id, body) = framing::strip(bytes, input.format == InputFormat::Protobuf)?;
        (Some(id), body)
    } else {
        (None, bytes)
    };
    let message = match input.format {
        InputFormat::Json => Message::Lead(decode_json(body)?),
        InputFormat::Protobuf => Message::Lead(decode_proto(body)?),
        InputFormat::Segment => decode_segment(body, &mapping.segment)?,
        InputFormat::Cloudevents => {
            Message::Lead(decode_cloudevent(body, headers, &mapping.cloudevents)?)
        }
    };
    if input.keyed_by_lead {
        // The lead, or the visitor of a visitor's message: the id the
        // message is routed by, which a keyed topic is partitioned by.
        check_key(key, &message.event().lead_id)?;
    }
    Ok(Decoded { message, schema_id })
}

fn check_key(key: Option<&[u8]>, lead_id: &str) -> Result<(), DecodeError> {
    if key != Some(lead_id.as_bytes()) {
        return Err(DecodeError::KeyMismatch {
            key: key.map_or_else(
                || "<none>".into(),
                |k| String::from_utf8_lossy(k).into_owned(),
            ),
            lead_id: lead_id.to_string(),
        });
    }
    Ok(())
}

/// Why a message is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("not valid JSON: {0}")]
    BadJson(String),
    #[error("not a valid protobuf Event: {0}")]
    BadProtobuf(String),
    #[error("required field `{0}` is missing")]
    MissingField(&'static str),
    #[error("required field `{0}` is empty")]
    EmptyField(&'static str),
    #[error("field `{field}` is invalid: {why}")]
    BadField { field: &'static str, why: String },
    #[error("`occurred_at` {value:?} is not an RFC 3339 timestamp: {why}")]
    BadTimestamp { value: String, why: String },
    #[error("message key {key:?} does not equal lead_id {lead_id:?}")]
    KeyMismatch { key: String, lead_id: String },
    #[error("Segment message type {0:?} is not one leadscore takes (track, page, screen, identify, group, alias)")]
    UnsupportedType(String),
    #[error("Schema Registry framing is invalid: {0}")]
    BadFraming(String),
}

impl DecodeError {
    /// A short, stable code for metrics labels and the dead-letter header.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::BadJson(_) => "bad_json",
            DecodeError::BadProtobuf(_) => "bad_protobuf",
            DecodeError::MissingField(_) => "missing_field",
            DecodeError::EmptyField(_) => "empty_field",
            DecodeError::BadField { .. } => "bad_field",
            DecodeError::BadTimestamp { .. } => "bad_timestamp",
            DecodeError::KeyMismatch { .. } => "key_mismatch",
            DecodeError::UnsupportedType(_) => "unsupported_type",
            DecodeError::BadFraming(_) => "bad_framing",
        }
    }

    /// All reason codes, for pre-registering metrics.
    pub const CODES: [&'static str; 10] = [
        "too_large",
        "bad_json",
        "bad_protobuf",
        "missing_field",
        "empty_field",
        "bad_field",
        "bad_timestamp",
        "key_mismatch",
        "unsupported_type",
        "bad_framing",
    ];
}

/// Decodes one event in `format`, enforcing the size limit.
pub fn decode(format: Format, bytes: &[u8], max_bytes: usize) -> Result<Event<'_>, DecodeError> {
    within_limit(bytes.len(), max_bytes)?;
    match format {
        Format::Json => decode_json(bytes),
        Format::Protobuf => decode_proto(bytes),
    }
}

/// Decodes one JSON event from text already known to be UTF-8, enforcing
/// the size limit.
pub fn decode_json_text(text: &str, max_bytes: usize) -> Result<Event<'_>, DecodeError> {
    within_limit(text.len(), max_bytes)?;
    json::decode_json_str(text)
}

fn within_limit(size: usize, limit: usize) -> Result<(), DecodeError> {
    if size > limit {
        return Err(DecodeError::TooLarge { size, limit });
    }
    Ok(())
}

/// Decodes a Kafka message: as [`decode`], and the key must equal `lead_id`.
pub fn decode_keyed<'a>(
    format: Format,
    key: Option<&[u8]>,
    bytes: &'a [u8],
    max_bytes: usize,
) -> Result<Event<'a>, DecodeError> {
    let event = decode(format, bytes, max_bytes)?;
    check_key(key, &event.lead_id)?;
    Ok(event)
}

/// Checks the required fields and parses the time: shared by both decoders.
pub(crate) fn required<'a>(
    field: &'static str,
    v: Option<std::borrow::Cow<'a, str>>,
) -> Result<std::borrow::Cow<'a, str>, DecodeError> {
    match v {
        None => Err(DecodeError::MissingField(field)),
        Some(s) if s.is_empty() => Err(DecodeError::EmptyField(field)),
        Some(s) => Ok(s),
    }
}

/// A lead or visitor id, checked: one that starts with a NUL byte is
/// refused, as the changelog keeps its own state under such keys.
pub(crate) fn lead_id<'a>(
    field: &'static str,
    id: std::borrow::Cow<'a, str>,
) -> Result<std::borrow::Cow<'a, str>, DecodeError> {
    if id.starts_with('\0') {
        return Err(DecodeError::BadField {
            field,
            why: "starts with a NUL byte (reserved for internal state)".into(),
        });
    }
    Ok(id)
}

pub(crate) fn parse_time(s: &str) -> Result<crate::time::Micros, DecodeError> {
    crate::time::parse_rfc3339(s).map_err(|e| DecodeError::BadTimestamp {
        value: s.chars().take(64).collect(),
        why: e.0.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_limit_applies_before_parsing() {
        let err = decode(Format::Json, b"{}", 1).unwrap_err();
        assert_eq!(err, DecodeError::TooLarge { size: 2, limit: 1 });
        assert_eq!(err.code(), "too_large");
    }

    #[test]
    fn key_must_equal_lead_id() {
        let body =
            br#"{"event_id":"e","lead_id":"L-1","type":"x","occurred_at":"2026-01-01T00:00:00Z"}"#;
        assert!(decode_keyed(Format::Json, Some(b"L-1"), body, 1024).is_ok());
        let err = decode_keyed(Format::Json, Some(b"L-2"), body, 1024).unwrap_err();
        assert_eq!(err.code(), "key_mismatch");
        let err = decode_keyed(Format::Json, None, body, 1024).unwrap_err();
        assert_eq!(err.code(), "key_mismatch");
    }
}

#[cfg(test)]
mod message_tests {
    use super::*;
    use crate::event::{Message, Value};
    use prost::Message as _;

    fn input(format: InputFormat, keyed_by_lead: bool, framing: bool) -> TopicInput {
        TopicInput {
            format,
            keyed_by_lead,
            schema_registry_framing: framing,
        }
    }

    const NATIVE: &[u8] =
        br#"{"event_id":"e","lead_id":"L-1","type":"page_view","occurred_at":"2026-01-01T00:00:00Z"}"#;
    const SEGMENT_VISITOR: &[u8] = br#"{"type":"page","messageId":"m","timestamp":"2026-01-01T00:00:00Z","anonymousId":"a-1"}"#;
    const SEGMENT_IDENTIFY: &[u8] = br#"{"type":"identify","messageId":"m","timestamp":"2026-01-01T00:00:00Z","userId":"L-1","anonymousId":"a-1"}"#;

    fn dec<'a>(
        input: TopicInput,
        key: Option<&[u8]>,
        headers: &[(&str, &'a [u8])],
        bytes: &'a [u8],
    ) -> Result<Decoded<'a>, DecodeError> {
        decode_message(&input, &Mapping::default(), key, headers, bytes, 1024)
    }

    #[test]
    fn every_format_decodes_and_keyed_topics_check_the_key() {
        let json = input(InputFormat::Json, true, false);
        assert!(matches!(
            dec(json, Some(b"L-1"), &[], NATIVE).unwrap().message,
            Message::Lead(_)
        ));
        assert_eq!(
            dec(json, Some(b"L-2"), &[], NATIVE).unwrap_err().code(),
            "key_mismatch"
        );
        assert!(dec(input(InputFormat::Json, false, false), None, &[], NATIVE).is_ok());

        let mut proto = Vec::new();
        encode_event_proto(&decode_json(NATIVE).unwrap(), &mut proto);
        let d = dec(
            input(InputFormat::Protobuf, true, false),
            Some(b"L-1"),
            &[],
            &proto,
        )
        .unwrap();
        assert_eq!(d.message.event().lead_id, "L-1");

        // Segment: a visitor's message is keyed by the anonymous id, an
        // identification by the userId.
        let seg = input(InputFormat::Segment, true, false);
        assert!(matches!(
            dec(seg, Some(b"a-1"), &[], SEGMENT_VISITOR)
                .unwrap()
                .message,
            Message::Visitor(_)
        ));
        assert_eq!(
            dec(seg, Some(b"L-1"), &[], SEGMENT_VISITOR)
                .unwrap_err()
                .code(),
            "key_mismatch"
        );
        assert!(matches!(
            dec(seg, Some(b"L-1"), &[], SEGMENT_IDENTIFY)
                .unwrap()
                .message,
            Message::Identify { .. }
        ));
        assert_eq!(
            dec(seg, Some(b"a-1"), &[], SEGMENT_IDENTIFY)
                .unwrap_err()
                .code(),
            "key_mismatch"
        );
        assert!(dec(
            input(InputFormat::Segment, false, false),
            None,
            &[],
            SEGMENT_VISITOR
        )
        .is_ok());

        let ce = input(InputFormat::Cloudevents, true, false);
        let h: [(&str, &[u8]); 6] = [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"c"),
            ("ce_source", b"s"),
            ("ce_type", b"page_view"),
            ("ce_subject", b"L-1"),
            ("ce_time", b"2026-01-01T00:00:00Z"),
        ];
        assert!(matches!(
            dec(ce, Some(b"L-1"), &h, b"").unwrap().message,
            Message::Lead(_)
        ));
        assert_eq!(dec(ce, None, &h, b"").unwrap_err().code(), "key_mismatch");
    }

    #[test]
    fn size_limit_comes_first_then_framing() {
        let big = vec![b' '; 2000];
        for f in [
            InputFormat::Json,
            InputFormat::Protobuf,
            InputFormat::Segment,
            InputFormat::Cloudevents,
        ] {
            let e = dec(input(f, false, true), None, &[], &big).unwrap_err();
            assert_eq!(e.code(), "too_large", "{f}");
            let e = dec(input(f, false, true), None, &[], b"{}").unwrap_err();
            assert_eq!(e.code(), "bad_framing", "{f}");
        }
    }

    #[test]
    fn framing_gives_the_schema_id_for_every_format() {
        let framed = |body: &[u8], protobuf: bool| {
            let mut b = vec![0, 0, 0, 1, 44];
            if protobuf {
                b.push(0);
            }
            b.extend_from_slice(body);
            b
        };
        let b = framed(NATIVE, false);
        let d = dec(input(InputFormat::Json, false, true), None, &[], &b).unwrap();
        assert_eq!(d.schema_id, Some(300));
        let mut proto = Vec::new();
        encode_event_proto(&decode_json(NATIVE).unwrap(), &mut proto);
        let b = framed(&proto, true);
        let d = dec(input(InputFormat::Protobuf, false, true), None, &[], &b).unwrap();
        assert_eq!(
            (d.schema_id, d.message.event().event_id.as_ref()),
            (Some(300), "e")
        );
        let b = framed(SEGMENT_VISITOR, false);
        assert_eq!(
            dec(input(InputFormat::Segment, false, true), None, &[], &b)
                .unwrap()
                .schema_id,
            Some(300)
        );
        // Unframed: no schema id.
        assert_eq!(
            dec(input(InputFormat::Json, false, false), None, &[], NATIVE)
                .unwrap()
                .schema_id,
            None
        );
    }

    #[test]
    fn native_lead_ids_starting_with_nul_are_refused() {
        let body = br#"{"event_id":"e","lead_id":"\u0000x","type":"t","occurred_at":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(decode_json(body).unwrap_err().code(), "bad_field");
        let mut proto = Vec::new();
        pb::Event {
            event_id: "e".into(),
            lead_id: "\0x".into(),
            r#type: "t".into(),
            occurred_at: "2026-01-01T00:00:00Z".into(),
            ..Default::default()
        }
        .encode(&mut proto)
        .unwrap();
        assert_eq!(decode_proto(&proto).unwrap_err().code(), "bad_field");
    }

    #[test]
    fn nested_objects_round_trip_and_resolve_by_path() {
        let body = br#"{"event_id":"e","lead_id":"L","type":"page_view","occurred_at":"2026-01-01T00:00:00Z",
            "attributes":{"context":{"campaign":{"source":"news","n":3},"tags":[1]},"a.b":"flat","url":"/x"}}"#;
        let e = decode_json(body).unwrap();
        assert_eq!(
            e.attribute("context.campaign.source"),
            Some(&Value::Str("news".into()))
        );
        assert_eq!(e.attribute("context.campaign.n"), Some(&Value::Num(3.0)));
        assert!(matches!(
            e.attribute("context.campaign"),
            Some(Value::Map(_))
        ));
        assert_eq!(e.attribute("context.tags"), Some(&Value::Other));
        assert_eq!(e.attribute("context.tags.0"), None);
        assert_eq!(e.attribute("url.x"), None);
        assert_eq!(e.attribute("context.missing"), None);
        // A flat key with a dot is found by its whole name.
        assert_eq!(e.attribute("a.b"), Some(&Value::Str("flat".into())));

        let sorted = |e: &crate::event::Event<'_>| {
            fn sort(f: &mut crate::event::Fields<'_>) {
                f.sort_by(|a, b| a.0.cmp(&b.0));
                for (_, v) in f.iter_mut() {
                    if let Value::Map(m) = v {
                        sort(m);
                    }
                }
            }
            let mut e = e.clone().into_owned();
            sort(&mut e.attributes);
            e
        };
        let mut json = Vec::new();
        encode_event_json(&e, &mut json);
        assert_eq!(sorted(&decode_json(&json).unwrap()), sorted(&e));
        let mut proto = Vec::new();
        encode_event_proto(&e, &mut proto);
        let back = decode_proto(&proto).unwrap();
        // Arrays have no protobuf form.
        let mut want = sorted(&e);
        if let Some((_, Value::Map(ctx))) = want.attributes.iter_mut().find(|(k, _)| k == "context")
        {
            ctx.retain(|(k, _)| k != "tags");
        }
        assert_eq!(sorted(&back), want);
        // prost decodes it the same (the borrowing decoder's reference).
        let m = pb::Event::decode(proto.as_slice()).unwrap();
        assert!(matches!(
            m.attributes["context"].kind,
            Some(pb::value::Kind::StructValue(_))
        ));
    }
}
