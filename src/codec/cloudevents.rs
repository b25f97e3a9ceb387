//! CloudEvents 1.0 (Kafka protocol binding) as leadscore events.
//!
//! - **Structured mode**: the body is a JSON CloudEvent with `specversion`
//!   (the `content-type` header, when there, is
//!   `application/cloudevents+json`).
//! - **Binary mode** (a `ce_specversion` header): the attributes are `ce_*`
//!   headers (UTF-8), `content-type` is `datacontenttype`, the body is
//!   `data`.
//!
//! Required: `specversion` = `1.0`, `id` (→ `event_id`), `source`, `type`
//! (→ the event type, after `[input.cloudevents] type_prefix` when it starts
//! with it), `subject` (→ the lead) and `time` (→ `occurred_at`).
//! `datacontenttype`, when given, must be JSON (`application/json` or
//! `*/*+json`). `data`, a JSON object, holds `attributes`, `profile`,
//! `criteria` and `reason` as the native JSON event does.

use std::borrow::Cow;

use serde::Deserialize;

use super::json::WireValue;
use super::{lead_id, parse_time, required, CloudEventsMapping, DecodeError};
use crate::event::{Event, Fields, Value};

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    specversion: Option<WireValue<'a>>,
    #[serde(borrow, default)]
    id: Option<WireValue<'a>>,
    #[serde(borrow, default)]
    source: Option<WireValue<'a>>,
    #[serde(borrow, default, rename = "type")]
    event_type: Option<WireValue<'a>>,
    #[serde(borrow, default)]
    subject: Option<WireValue<'a>>,
    #[serde(borrow, default)]
    time: Option<WireValue<'a>>,
    #[serde(borrow, default)]
    datacontenttype: Option<WireValue<'a>>,
    #[serde(borrow, default)]
    data: Option<WireValue<'a>>,
    #[serde(default)]
    data_base64: Option<serde::de::IgnoredAny>,
}

/// The context attributes, from the body or the headers.
struct Attributes<'a> {
    specversion: Option<Cow<'a, str>>,
    id: Option<Cow<'a, str>>,
    source: Option<Cow<'a, str>>,
    event_type: Option<Cow<'a, str>>,
    subject: Option<Cow<'a, str>>,
    time: Option<Cow<'a, str>>,
    datacontenttype: Option<Cow<'a, str>>,
}

use super::segment::{bad, text};

/// Decodes one CloudEvent: binary mode when the headers carry
/// `ce_specversion`, else structured mode.
pub fn decode_cloudevent<'a>(
    body: &'a [u8],
    headers: &[(&str, &'a [u8])],
    mapping: &CloudEventsMapping,
) -> Result<Event<'a>, DecodeError> {
    let header = |name: &'static str| -> Result<Option<Cow<'a, str>>, DecodeError> {
        match headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            None => Ok(None),
            Some((_, v)) => std::str::from_utf8(v)
                .map(|s| Some(Cow::Borrowed(s)))
                .map_err(|_| bad(name, "header is not UTF-8")),
        }
    };
    let (attrs, data) = if header("ce_specversion")?.is_some() {
        let attrs = Attributes {
            specversion: header("ce_specversion")?,
            id: header("ce_id")?,
            source: header("ce_source")?,
            event_type: header("ce_type")?,
            subject: header("ce_subject")?,
            time: header("ce_time")?,
            datacontenttype: match header("content-type")? {
                Some(c) => Some(c),
                None => header("ce_datacontenttype")?,
            },
        };
        let data = if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let v: WireValue<'a> =
                serde_json::from_slice(body).map_err(|e| DecodeError::BadJson(e.to_string()))?;
            Some(v.0)
        };
        (attrs, data)
    } else {
        let w: Wire<'a> =
            serde_json::from_slice(body).map_err(|e| DecodeError::BadJson(e.to_string()))?;
        if w.data_base64.is_some() {
            return Err(bad(
                "data_base64",
                "binary data is not an event; send `data` as JSON",
            ));
        }
        let attrs = Attributes {
            specversion: text("specversion", w.specversion)?,
            id: text("id", w.id)?,
            source: text("source", w.source)?,
            event_type: text("type", w.event_type)?,
            subject: text("subject", w.subject)?,
            time: text("time", w.time)?,
            datacontenttype: text("datacontenttype", w.datacontenttype)?,
        };
        (attrs, w.data.map(|d| d.0))
    };
    event(attrs, data, mapping)
}

/// Whether a media type is JSON: `application/json` or any `…/…+json`.
fn is_json(media_type: &str) -> bool {
    let t = media_type.split(';').next().unwrap_or("").trim();
    t.eq_ignore_ascii_case("application/json")
        || (t.contains('/')
            && t.len() > 5
            && t.is_char_boundary(t.len() - 5)
            && t[t.len() - 5..].eq_ignore_ascii_case("+json"))
}

fn event<'a>(
    a: Attributes<'a>,
    data: Option<Value<'a>>,
    mapping: &CloudEventsMapping,
) -> Result<Event<'a>, DecodeError> {
    let specversion = required("specversion", a.specversion)?;
    if specversion != "1.0" {
        return Err(bad("specversion", "must be \"1.0\""));
    }
    let event_id = required("id", a.id)?;
    required("source", a.source)?;
    let full_type = required("type", a.event_type)?;
    let event_type = match full_type {
        Cow::Borrowed(t) => {
            Cow::Borrowed(t.strip_prefix(mapping.type_prefix.as_str()).unwrap_or(t))
        }
        Cow::Owned(t) => Cow::Owned(
            t.strip_prefix(mapping.type_prefix.as_str())
                .unwrap_or(&t)
                .to_string(),
        ),
    };
    if event_type.is_empty() {
        return Err(DecodeError::EmptyField("type"));
    }
    let subject = lead_id("subject", required("subject", a.subject)?)?;
    let occurred_at = parse_time(&required("time", a.time)?)?;
    if let Some(ct) = &a.datacontenttype {
        if !is_json(ct) {
            return Err(bad(
                "datacontenttype",
                "must be JSON (application/json or a +json type)",
            ));
        }
    }
    let mut e = Event::new(event_id, subject, event_type, occurred_at);
    let data = match data {
        None | Some(Value::Null) => return Ok(e),
        Some(Value::Map(m)) => m,
        Some(_) => return Err(bad("data", "must be a JSON object")),
    };
    for (k, v) in data {
        match k.as_ref() {
            "attributes" => e.attributes = fields("data.attributes", v)?,
            "profile" => e.profile = fields("data.profile", v)?,
            "criteria" => {
                e.criteria = fields("data.criteria", v)?
                    .into_iter()
                    .map(|(k, v)| match v {
                        Value::Bool(b) => Ok((k, b)),
                        _ => Err(bad("data.criteria", "must be an object of true/false")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "reason" => {
                e.reason = match v {
                    Value::Null => None,
                    Value::Str(s) => Some(s),
                    _ => return Err(bad("data.reason", "must be a string")),
                }
            }
            _ => {}
        }
    }
    Ok(e)
}

fn fields<'a>(field: &'static str, v: Value<'a>) -> Result<Fields<'a>, DecodeError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Map(m) => Ok(m),
        _ => Err(bad(field, "must be an object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;
    use crate::time::parse_rfc3339;

    fn prefixed() -> CloudEventsMapping {
        CloudEventsMapping {
            type_prefix: "com.example.leads.".into(),
        }
    }

    const STRUCTURED: &str = r#"{"specversion":"1.0","id":"ce-1","source":"/crm","type":"com.example.leads.webinar_attended",
        "subject":"L-1","time":"2026-03-02T14:00:00Z","datacontenttype":"application/json",
        "data":{"attributes":{"webinar":"w-7","utm":{"source":"ads"}},"profile":{"employees":300},
                "criteria":{"budget":true},"reason":"r"}}"#;

    #[test]
    fn structured_mode_maps_the_attributes_and_data() {
        let e = decode_cloudevent(STRUCTURED.as_bytes(), &[], &prefixed()).unwrap();
        assert_eq!(e.event_id, "ce-1");
        assert_eq!(e.lead_id, "L-1");
        assert_eq!(e.event_type, "webinar_attended");
        assert_eq!(
            e.occurred_at,
            parse_rfc3339("2026-03-02T14:00:00Z").unwrap()
        );
        assert_eq!(e.attribute("webinar"), Some(&Value::Str("w-7".into())));
        assert_eq!(e.attribute("utm.source"), Some(&Value::Str("ads".into())));
        assert_eq!(e.profile, vec![("employees".into(), Value::Num(300.0))]);
        assert_eq!(e.criteria, vec![("budget".into(), true)]);
        assert_eq!(e.reason.as_deref(), Some("r"));
        // Without the prefix configured, the type stays whole; a type
        // without the prefix is kept as it is.
        let e =
            decode_cloudevent(STRUCTURED.as_bytes(), &[], &CloudEventsMapping::default()).unwrap();
        assert_eq!(e.event_type, "com.example.leads.webinar_attended");
        let b = STRUCTURED.replace("com.example.leads.webinar_attended", "deal_won");
        let e = decode_cloudevent(b.as_bytes(), &[], &prefixed()).unwrap();
        assert_eq!(e.kind, Kind::DealWon);
    }

    #[test]
    fn binary_mode_reads_ce_headers_and_the_body_as_data() {
        let headers: [(&str, &[u8]); 7] = [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"ce-2"),
            ("ce_source", b"/web"),
            ("ce_type", b"com.example.leads.page_view"),
            ("ce_subject", b"L-2"),
            ("ce_time", b"2026-03-02T15:00:00+01:00"),
            ("content-type", b"application/json; charset=utf-8"),
        ];
        let body = br#"{"attributes":{"url":"/pricing"}}"#;
        let e = decode_cloudevent(body, &headers, &prefixed()).unwrap();
        assert_eq!((e.event_id.as_ref(), e.lead_id.as_ref()), ("ce-2", "L-2"));
        assert_eq!(e.event_type, "page_view");
        assert_eq!(
            e.occurred_at,
            parse_rfc3339("2026-03-02T14:00:00Z").unwrap()
        );
        assert_eq!(e.attribute("url"), Some(&Value::Str("/pricing".into())));
        // An empty body: no data.
        let e = decode_cloudevent(b"", &headers, &prefixed()).unwrap();
        assert!(e.attributes.is_empty());
        // A header that is not UTF-8, a content type that is not JSON.
        let mut h = headers;
        h[4] = ("ce_subject", b"\xff");
        assert_eq!(
            decode_cloudevent(body, &h, &prefixed()).unwrap_err().code(),
            "bad_field"
        );
        let mut h = headers;
        h[6] = ("content-type", b"application/avro");
        assert_eq!(
            decode_cloudevent(body, &h, &prefixed()).unwrap_err().code(),
            "bad_field"
        );
        let mut h = headers;
        h[6] = ("content-type", b"application/vnd.example+json");
        assert!(decode_cloudevent(body, &h, &prefixed()).is_ok());
        // A missing attribute header.
        let e = decode_cloudevent(body, &headers[..4], &prefixed()).unwrap_err();
        assert_eq!(e, DecodeError::MissingField("subject"));
        assert_eq!(
            decode_cloudevent(b"{", &headers, &prefixed())
                .unwrap_err()
                .code(),
            "bad_json"
        );
    }

    #[test]
    fn every_failure_has_its_reason() {
        let with = |from: &str, to: &str| STRUCTURED.replace(from, to);
        let cases = [
            (
                with(r#""specversion":"1.0""#, r#""specversion":"0.3""#),
                "bad_field",
            ),
            (with(r#""specversion":"1.0","#, ""), "missing_field"),
            (with(r#""id":"ce-1","#, ""), "missing_field"),
            (with(r#""source":"/crm","#, ""), "missing_field"),
            (with(r#""subject":"L-1","#, ""), "missing_field"),
            (
                with(r#""time":"2026-03-02T14:00:00Z","#, ""),
                "missing_field",
            ),
            (with(r#""id":"ce-1""#, r#""id":"""#), "empty_field"),
            (with(r#""id":"ce-1""#, r#""id":1"#), "bad_field"),
            (with("2026-03-02T14:00:00Z", "later"), "bad_timestamp"),
            (with("application/json", "text/plain"), "bad_field"),
            (
                with(r#""subject":"L-1""#, r#""subject":"\u0000L""#),
                "bad_field",
            ),
            (with(r#""data":{"#, r#""data":[1],"x":{"#), "bad_field"),
            (with(r#""budget":true"#, r#""budget":"yes""#), "bad_field"),
            (with(r#""reason":"r""#, r#""reason":1"#), "bad_field"),
            (
                with(r#""profile":{"employees":300}"#, r#""profile":3"#),
                "bad_field",
            ),
            (
                with(r#""data":{"#, r#""data_base64":"AA==","x":{"#),
                "bad_field",
            ),
            (
                with("com.example.leads.webinar_attended", "com.example.leads."),
                "empty_field",
            ),
            ("3".to_string(), "bad_json"),
        ];
        for (body, code) in cases {
            let err = decode_cloudevent(body.as_bytes(), &[], &prefixed()).unwrap_err();
            assert_eq!(err.code(), code, "{body}: {err}");
        }
    }
}
