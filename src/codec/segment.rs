//! Segment Spec messages (RudderStack sends the same) as leadscore messages.
//!
//! | Segment | leadscore |
//! |---|---|
//! | `messageId` (required) | `event_id` |
//! | `timestamp`, else `originalTimestamp` (required) | `occurred_at` |
//! | `userId` (a string, or a number as its decimal text), when non-empty | the lead |
//! | else `anonymousId` | the anonymous visitor ([`Message::Visitor`]) |
//! | `type: track` | `event` normalised: lower-cased, each run of characters other than letters and digits one `_`, trimmed of `_` (`"Demo Requested"` → `demo_requested`), unless `[input.segment.events]` maps the name (the raw name first, then the normalised one) |
//! | `type: page` / `screen` | `page_view` / `screen_view` |
//! | `type: identify` | `profile_updated`, the profile from `traits` (below); with both ids an identification ([`Message::Identify`]) |
//! | `type: group` | `profile_updated` with `company` (`traits.name`, else as for identify), `employees`, `industry`, and `account_id` = `groupId` (required) |
//! | `type: alias` | an identification of the visitor `previousId` as the lead `userId` (both required) |
//!
//! Attributes of `track`, `page` and `screen` are `properties` (an object;
//! `null` counts as absent), plus:
//! - for `page`, `url` = `context.page.url` when `properties` has no `url`;
//! - the message's `context` object as the attribute `context` when
//!   `properties` has no `context` key, so that a rule matches
//!   `context.campaign.source` (UTM parameters) or `context.page.path`.
//!
//! A `track` whose type is reserved takes its fields from `properties`:
//! `qualification_updated` its `criteria` (an object of booleans),
//! `sales_rejected` its `reason` (a string), `profile_updated` the whole of
//! `properties` as the profile.
//!
//! Identify traits to the profile: `email`; `company` (a string, or
//! `company.name`); `employees` (else `company.employee_count`); `industry`
//! (else `company.industry`); `job_title` (`title`, else `job_title`);
//! `country` (`address.country`, else `country`); `is_customer`; every other
//! top-level scalar trait under its own name. Where a field has two sources,
//! the first that is not `null` wins; a field whose sources are all `null`
//! is removed from the profile. Traits that are absent change nothing.
//!
//! A lead or visitor id that starts with a NUL byte is refused (those keys
//! are the changelog's own).

use std::borrow::Cow;

use serde::Deserialize;

use super::json::WireValue;
use super::{lead_id, parse_time, required, DecodeError, SegmentMapping};
use crate::event::{Event, Fields, Message, Value};

/// The fields of a Segment message leadscore reads; every value is taken
/// as any JSON so that a wrong type is a `bad_field` naming the field.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<WireValue<'a>>,
    #[serde(borrow, default, rename = "messageId")]
    message_id: Option<WireValue<'a>>,
    #[serde(borrow, default)]
    timestamp: Option<WireValue<'a>>,
    #[serde(borrow, default, rename = "originalTimestamp")]
    original_timestamp: Option<WireValue<'a>>,
    #[serde(borrow, default, rename = "userId")]
    user_id: Option<WireValue<'a>>,
    #[serde(borrow, default, rename = "anonymousId")]
    anonymous_id: Option<WireValue<'a>>,
    #[serde(borrow, default, rename = "previousId")]
    previous_id: Option<WireValue<'a>>,
    #[serde(borrow, default, rename = "groupId")]
    group_id: Option<WireValue<'a>>,
    #[serde(borrow, default)]
    event: Option<WireValue<'a>>,
    #[serde(borrow, default)]
    properties: Option<WireValue<'a>>,
    #[serde(borrow, default)]
    traits: Option<WireValue<'a>>,
    #[serde(borrow, default)]
    context: Option<WireValue<'a>>,
}

pub(super) fn bad(field: &'static str, why: &str) -> DecodeError {
    DecodeError::BadField {
        field,
        why: why.to_string(),
    }
}

/// A string field; `null` is absent.
pub(super) fn text<'a>(
    field: &'static str,
    v: Option<WireValue<'a>>,
) -> Result<Option<Cow<'a, str>>, DecodeError> {
    match v.map(|v| v.0) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s)),
        Some(_) => Err(bad(field, "must be a string")),
    }
}

/// An id: a string, or a whole number as its decimal text; empty or `null`
/// is absent.
fn id<'a>(
    field: &'static str,
    v: Option<WireValue<'a>>,
) -> Result<Option<Cow<'a, str>>, DecodeError> {
    let s = match v.map(|v| v.0) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Str(s)) => s,
        // Beyond 2^53 the number read is not the one sent.
        Some(Value::Num(n)) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => {
            Cow::Owned(format!("{}", n as i64))
        }
        Some(Value::Num(_)) => {
            return Err(bad(
                field,
                "a numeric id must be a whole number below 2^53; send it as a string",
            ))
        }
        Some(_) => return Err(bad(field, "must be a string or a number")),
    };
    if s.is_empty() {
        return Ok(None);
    }
    lead_id(field, s).map(Some)
}

/// An object field; `null` is absent.
fn object<'a>(
    field: &'static str,
    v: Option<WireValue<'a>>,
) -> Result<Option<Fields<'a>>, DecodeError> {
    match v.map(|v| v.0) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Map(m)) => Ok(Some(m)),
        Some(_) => Err(bad(field, "must be an object")),
    }
}

fn get<'f, 'a>(fields: &'f [(Cow<'a, str>, Value<'a>)], name: &str) -> Option<&'f Value<'a>> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn sub<'f, 'a>(
    fields: &'f [(Cow<'a, str>, Value<'a>)],
    name: &str,
) -> &'f [(Cow<'a, str>, Value<'a>)] {
    match get(fields, name) {
        Some(Value::Map(m)) => m,
        _ => &[],
    }
}

/// `"Demo Requested"` → `demo_requested`: lower-cased, each run of
/// characters other than letters and digits (of any script) one `_`,
/// trimmed of `_`. Borrows a name that is already in that form.
pub fn normalise_event_name(name: &str) -> Cow<'_, str> {
    let normal = !name.is_empty()
        && !name.starts_with('_')
        && !name.ends_with('_')
        && !name.contains("__")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if normal {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    let mut gap = false;
    for c in name.chars() {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.extend(c.to_lowercase());
        } else {
            gap = true;
        }
    }
    Cow::Owned(out)
}

/// The event type of a `track` named `name`.
fn track_type<'a>(
    name: Cow<'a, str>,
    mapping: &SegmentMapping,
) -> Result<Cow<'a, str>, DecodeError> {
    if let Some(t) = mapping.events.get(name.as_ref()) {
        return Ok(Cow::Owned(t.clone()));
    }
    let normal = match name {
        Cow::Borrowed(b) => normalise_event_name(b),
        Cow::Owned(o) => Cow::Owned(normalise_event_name(&o).into_owned()),
    };
    if normal.is_empty() {
        return Err(bad(
            "event",
            "has no letter or digit to make an event type of",
        ));
    }
    if let Some(t) = mapping.events.get(normal.as_ref()) {
        return Ok(Cow::Owned(t.clone()));
    }
    Ok(normal)
}

/// Of several sources of one profile field, the first that is not `null`;
/// `null` if all present ones are; nothing if none is present. Arrays and
/// objects are not profile values and count as absent.
fn pick<'a>(sources: &[Option<&Value<'a>>]) -> Option<Value<'a>> {
    let mut null = false;
    for v in sources.iter().flatten() {
        match v {
            Value::Null => null = true,
            Value::Other | Value::Map(_) => {}
            v => return Some((*v).clone()),
        }
    }
    null.then_some(Value::Null)
}

/// `company`: a string, or `company.name` of a company object.
fn company<'f, 'a>(traits: &'f [(Cow<'a, str>, Value<'a>)]) -> Option<&'f Value<'a>> {
    match get(traits, "company") {
        Some(Value::Map(m)) => get(m, "name"),
        other => other,
    }
}

/// The profile of an `identify`'s traits (see the module docs).
fn identify_profile(traits: Fields<'_>) -> Fields<'_> {
    const TAKEN: [&str; 9] = [
        "email",
        "company",
        "employees",
        "industry",
        "title",
        "job_title",
        "address",
        "country",
        "is_customer",
    ];
    let t = &traits;
    let c = sub(t, "company");
    let known = [
        ("email", pick(&[get(t, "email")])),
        ("company", pick(&[company(t)])),
        (
            "employees",
            pick(&[get(t, "employees"), get(c, "employee_count")]),
        ),
        ("industry", pick(&[get(t, "industry"), get(c, "industry")])),
        ("job_title", pick(&[get(t, "title"), get(t, "job_title")])),
        (
            "country",
            pick(&[get(sub(t, "address"), "country"), get(t, "country")]),
        ),
        ("is_customer", pick(&[get(t, "is_customer")])),
    ];
    let mut profile: Fields<'_> = known
        .into_iter()
        .filter_map(|(k, v)| Some((Cow::Borrowed(k), v?)))
        .collect();
    for (k, v) in t {
        if !TAKEN.contains(&k.as_ref()) && !matches!(v, Value::Other | Value::Map(_)) {
            profile.push((k.clone(), v.clone()));
        }
    }
    profile
}

/// The profile of a `group`'s traits and id.
fn group_profile<'a>(traits: &Fields<'a>, group_id: Cow<'a, str>) -> Fields<'a> {
    let t = traits.as_slice();
    let c = sub(t, "company");
    let known = [
        ("company", pick(&[get(t, "name"), company(t)])),
        (
            "employees",
            pick(&[get(t, "employees"), get(c, "employee_count")]),
        ),
        ("industry", pick(&[get(t, "industry"), get(c, "industry")])),
        ("account_id", Some(Value::Str(group_id))),
    ];
    known
        .into_iter()
        .filter_map(|(k, v)| Some((Cow::Borrowed(k), v?)))
        .collect()
}

/// The criteria of a `qualification_updated` track.
fn criteria<'a>(props: &Fields<'a>) -> Result<Vec<(Cow<'a, str>, bool)>, DecodeError> {
    const FIELD: &str = "properties.criteria";
    match get(props, "criteria") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Map(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::Bool(b) => Ok((k.clone(), *b)),
                _ => Err(bad(FIELD, "must be an object of true/false")),
            })
            .collect(),
        Some(_) => Err(bad(FIELD, "must be an object of true/false")),
    }
}

enum Kind {
    Track,
    Page,
    Screen,
    Identify,
    Group,
    Alias,
}

/// Decodes one Segment message (JSON) with `mapping`.
pub fn decode_segment<'a>(
    bytes: &'a [u8],
    mapping: &SegmentMapping,
) -> Result<Message<'a>, DecodeError> {
    let w: Wire<'a> =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::BadJson(e.to_string()))?;
    let kind = match text("type", w.kind)? {
        None => return Err(DecodeError::MissingField("type")),
        Some(t) => match t.as_ref() {
            "track" => Kind::Track,
            "page" => Kind::Page,
            "screen" => Kind::Screen,
            "identify" => Kind::Identify,
            "group" => Kind::Group,
            "alias" => Kind::Alias,
            other => {
                return Err(DecodeError::UnsupportedType(
                    other.chars().take(64).collect(),
                ))
            }
        },
    };
    let event_id = required("messageId", text("messageId", w.message_id)?)?;
    let time = match text("timestamp", w.timestamp)? {
        Some(t) => Some(t),
        None => text("originalTimestamp", w.original_timestamp)?,
    };
    let occurred_at = parse_time(&required("timestamp", time)?)?;
    let user = id("userId", w.user_id)?;
    let anonymous = id("anonymousId", w.anonymous_id)?;

    if let Kind::Alias = kind {
        let visitor =
            id("previousId", w.previous_id)?.ok_or(DecodeError::MissingField("previousId"))?;
        let user = user.ok_or(DecodeError::MissingField("userId"))?;
        return Ok(Message::Identify {
            visitor_id: visitor,
            event: Event::new(event_id, user, "alias", occurred_at),
            alias: true,
        });
    }
    // Whose message it is, checked before the body so that a message of
    // no one is `missing_field` whatever else is wrong with it.
    let (owner, is_lead, anonymous) = match (user, anonymous) {
        (Some(u), a) => (u, true, a),
        (None, Some(a)) => (a, false, None),
        (None, None) => return Err(DecodeError::MissingField("userId")),
    };

    let event = match kind {
        Kind::Identify => {
            let traits = object("traits", w.traits)?.unwrap_or_default();
            let mut e = Event::new(event_id, owner, "profile_updated", occurred_at);
            e.profile = identify_profile(traits);
            e
        }
        Kind::Group => {
            let group_id =
                id("groupId", w.group_id)?.ok_or(DecodeError::MissingField("groupId"))?;
            let traits = object("traits", w.traits)?.unwrap_or_default();
            let mut e = Event::new(event_id, owner, "profile_updated", occurred_at);
            e.profile = group_profile(&traits, group_id);
            e
        }
        Kind::Track | Kind::Page | Kind::Screen => {
            let event_type = match kind {
                Kind::Page => Cow::Borrowed("page_view"),
                Kind::Screen => Cow::Borrowed("screen_view"),
                _ => {
                    let name = required("event", text("event", w.event)?)?;
                    track_type(name, mapping)?
                }
            };
            let props = object("properties", w.properties)?.unwrap_or_default();
            let context = object("context", w.context)?;
            let mut e = Event::new(event_id, owner, event_type, occurred_at);
            match e.kind {
                crate::event::Kind::ProfileUpdated => e.profile = props,
                k => {
                    if k == crate::event::Kind::QualificationUpdated {
                        e.criteria = criteria(&props)?;
                    }
                    if k == crate::event::Kind::SalesRejected {
                        e.reason = match get(&props, "reason") {
                            None | Some(Value::Null) => None,
                            Some(Value::Str(s)) => Some(s.clone()),
                            Some(_) => return Err(bad("properties.reason", "must be a string")),
                        };
                    }
                    e.attributes = attributes(props, context, matches!(kind, Kind::Page));
                }
            }
            e
        }
        Kind::Alias => unreachable!("handled above"),
    };
    Ok(match (kind, anonymous) {
        // Other messages with both ids belong to the lead and link nothing.
        (Kind::Identify, Some(visitor_id)) => Message::Identify {
            visitor_id,
            event,
            alias: false,
        },
        _ if is_lead => Message::Lead(event),
        _ => Message::Visitor(event),
    })
}

/// `properties`, with `url` from `context.page.url` for a page, and the
/// message's `context`.
fn attributes<'a>(mut props: Fields<'a>, context: Option<Fields<'a>>, page: bool) -> Fields<'a> {
    let Some(context) = context else {
        return props;
    };
    if page && get(&props, "url").is_none() {
        if let Some(url) = get(sub(&context, "page"), "url").filter(|v| !matches!(v, Value::Null)) {
            props.push((Cow::Borrowed("url"), url.clone()));
        }
    }
    if get(&props, "context").is_none() {
        props.push((Cow::Borrowed("context"), Value::Map(context)));
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind as EventKind;
    use crate::time::parse_rfc3339;

    fn decode(json: &str) -> Result<Message<'_>, DecodeError> {
        decode_segment(json.as_bytes(), &SegmentMapping::default())
    }

    fn lead(json: &str) -> Event<'static> {
        match decode(json).unwrap() {
            Message::Lead(e) => e.into_owned(),
            other => panic!("not a lead's message: {other:?}"),
        }
    }

    const HEAD: &str = r#""messageId":"m-1","timestamp":"2026-03-02T14:00:00.000Z","userId":"L-1""#;

    #[test]
    fn track_maps_ids_time_and_normalised_name() {
        let e = lead(&format!(
            r#"{{"type":"track","event":"Demo Requested","properties":{{"plan":"pro"}},{HEAD}}}"#
        ));
        assert_eq!(e.event_id, "m-1");
        assert_eq!(e.lead_id, "L-1");
        assert_eq!(e.event_type, "demo_requested");
        assert_eq!(
            e.occurred_at,
            parse_rfc3339("2026-03-02T14:00:00Z").unwrap()
        );
        assert_eq!(e.attribute("plan"), Some(&Value::Str("pro".into())));
        // originalTimestamp when timestamp is absent.
        let e = lead(
            r#"{"type":"track","event":"x","messageId":"m","originalTimestamp":"2026-01-01T00:00:00Z","userId":"L"}"#,
        );
        assert_eq!(
            e.occurred_at,
            parse_rfc3339("2026-01-01T00:00:00Z").unwrap()
        );
    }

    #[test]
    fn event_names_normalise() {
        for (raw, want) in [
            ("Demo Requested", "demo_requested"),
            ("  Signed-Up!! (v2) ", "signed_up_v2"),
            ("already_fine", "already_fine"),
            ("__a__b__", "a_b"),
            ("Überblick Geöffnet", "überblick_geöffnet"),
            ("デモ 依頼", "デモ_依頼"),
            ("CamelCase", "camelcase"),
            ("!!", ""),
        ] {
            assert_eq!(normalise_event_name(raw), want, "{raw:?}");
        }
        assert!(matches!(
            normalise_event_name("page_view"),
            Cow::Borrowed(_)
        ));
        let err = decode(&format!(r#"{{"type":"track","event":"?!",{HEAD}}}"#)).unwrap_err();
        assert_eq!(err.code(), "bad_field");
    }

    #[test]
    fn the_events_table_maps_raw_then_normalised_names() {
        let mut m = SegmentMapping::default();
        m.events.insert("Order Completed".into(), "deal_won".into());
        m.events.insert("trial_started".into(), "signup".into());
        let body = |name: &str| format!(r#"{{"type":"track","event":"{name}",{HEAD}}}"#);
        let ty = |name: &str| {
            let b = body(name);
            decode_segment(b.as_bytes(), &m)
                .unwrap()
                .event()
                .event_type
                .to_string()
        };
        assert_eq!(ty("Order Completed"), "deal_won");
        assert_eq!(ty("Trial Started"), "signup");
        assert_eq!(ty("Order completed"), "order_completed");
    }

    #[test]
    fn reserved_types_from_track_take_their_fields_from_properties() {
        let mut m = SegmentMapping::default();
        m.events
            .insert("Qualified".into(), "qualification_updated".into());
        m.events.insert("Rejected".into(), "sales_rejected".into());
        m.events.insert("Profile".into(), "profile_updated".into());
        let dec = |name: &str, props: &str| {
            let b = format!(r#"{{"type":"track","event":"{name}","properties":{props},{HEAD}}}"#);
            decode_segment(b.as_bytes(), &m).map(|msg| msg.event().clone().into_owned())
        };
        let e = dec("Qualified", r#"{"criteria":{"budget":true,"need":false}}"#).unwrap();
        assert_eq!(e.kind, EventKind::QualificationUpdated);
        assert_eq!(
            e.criteria,
            vec![("budget".into(), true), ("need".into(), false)]
        );
        for bad in [r#"{"criteria":{"budget":"yes"}}"#, r#"{"criteria":[true]}"#] {
            assert_eq!(
                dec("Qualified", bad).unwrap_err().code(),
                "bad_field",
                "{bad}"
            );
        }
        let e = dec("Rejected", r#"{"reason":"disqualified"}"#).unwrap();
        assert_eq!(e.reason.as_deref(), Some("disqualified"));
        assert_eq!(
            dec("Rejected", r#"{"reason":3}"#).unwrap_err().code(),
            "bad_field"
        );
        let e = dec("Profile", r#"{"employees":300}"#).unwrap();
        assert_eq!(e.kind, EventKind::ProfileUpdated);
        assert_eq!(e.profile, vec![("employees".into(), Value::Num(300.0))]);
    }

    #[test]
    fn page_and_screen_with_url_and_context() {
        let e = lead(&format!(
            r#"{{"type":"page","name":"Pricing","properties":{{"path":"/pricing"}},
            "context":{{"page":{{"url":"https://x.example/pricing"}},"campaign":{{"source":"newsletter"}}}},{HEAD}}}"#
        ));
        assert_eq!(e.event_type, "page_view");
        assert_eq!(
            e.attribute("url"),
            Some(&Value::Str("https://x.example/pricing".into()))
        );
        assert_eq!(
            e.attribute("context.campaign.source"),
            Some(&Value::Str("newsletter".into()))
        );
        // properties.url wins over the context's; a `context` property wins
        // over the message's context.
        let e = lead(&format!(
            r#"{{"type":"page","properties":{{"url":"/own","context":"mine"}},"context":{{"page":{{"url":"/ctx"}}}},{HEAD}}}"#
        ));
        assert_eq!(e.attribute("url"), Some(&Value::Str("/own".into())));
        assert_eq!(e.attribute("context"), Some(&Value::Str("mine".into())));
        // A screen takes no url from the context.
        let e = lead(&format!(
            r#"{{"type":"screen","context":{{"page":{{"url":"/ctx"}}}},{HEAD}}}"#
        ));
        assert_eq!(e.event_type, "screen_view");
        assert_eq!(e.attribute("url"), None);
        assert!(e.attribute("context.page").is_some());
        for bad in [
            r#""properties":[1]"#,
            r#""properties":"x""#,
            r#""context":5"#,
        ] {
            let err = decode(&format!(r#"{{"type":"page",{bad},{HEAD}}}"#)).unwrap_err();
            assert_eq!(err.code(), "bad_field", "{bad}");
        }
    }

    #[test]
    fn the_lead_is_user_id_else_the_visitor_is_anonymous_id() {
        let body = |ids: &str| {
            format!(
                r#"{{"type":"track","event":"x","messageId":"m","timestamp":"2026-01-01T00:00:00Z",{ids}}}"#
            )
        };
        let b = body(r#""userId":"L-1","anonymousId":"a-1""#);
        assert!(matches!(decode(&b).unwrap(), Message::Lead(e) if e.lead_id == "L-1"));
        let b = body(r#""userId":12345,"anonymousId":"a-1""#);
        assert!(matches!(decode(&b).unwrap(), Message::Lead(e) if e.lead_id == "12345"));
        for ids in [
            r#""anonymousId":"a-1""#,
            r#""userId":"","anonymousId":"a-1""#,
            r#""userId":null,"anonymousId":"a-1""#,
        ] {
            let b = body(ids);
            assert!(
                matches!(decode(&b).unwrap(), Message::Visitor(e) if e.lead_id == "a-1"),
                "{ids}"
            );
        }
        for (ids, code) in [
            ("\"x\":1", "missing_field"),
            (r#""userId":"","anonymousId":"""#, "missing_field"),
            (r#""userId":1.5"#, "bad_field"),
            (r#""userId":1e300"#, "bad_field"),
            (r#""userId":["L"]"#, "bad_field"),
            (r#""userId":"\u0000L""#, "bad_field"),
            (r#""anonymousId":"\u0000v""#, "bad_field"),
        ] {
            let err = decode(&body(ids)).unwrap_err();
            assert_eq!(err.code(), code, "{ids}: {err}");
        }
        let err = decode(&body("\"x\":1")).unwrap_err();
        assert_eq!(err, DecodeError::MissingField("userId"));
    }

    #[test]
    fn required_fields_and_types() {
        let cases: [(&str, &str); 9] = [
            ("not json", "bad_json"),
            (
                r#"{"messageId":"m","timestamp":"2026-01-01T00:00:00Z","userId":"L"}"#,
                "missing_field",
            ),
            (
                r#"{"type":"flush","messageId":"m","timestamp":"2026-01-01T00:00:00Z","userId":"L"}"#,
                "unsupported_type",
            ),
            (
                r#"{"type":7,"messageId":"m","timestamp":"2026-01-01T00:00:00Z","userId":"L"}"#,
                "bad_field",
            ),
            (
                r#"{"type":"page","timestamp":"2026-01-01T00:00:00Z","userId":"L"}"#,
                "missing_field",
            ),
            (
                r#"{"type":"page","messageId":"m","userId":"L"}"#,
                "missing_field",
            ),
            (
                r#"{"type":"page","messageId":"m","timestamp":"soon","userId":"L"}"#,
                "bad_timestamp",
            ),
            (
                r#"{"type":"track","messageId":"m","timestamp":"2026-01-01T00:00:00Z","userId":"L"}"#,
                "missing_field",
            ),
            (
                r#"{"type":"group","messageId":"m","timestamp":"2026-01-01T00:00:00Z","userId":"L"}"#,
                "missing_field",
            ),
        ];
        for (body, code) in cases {
            let err = decode(body).unwrap_err();
            assert_eq!(err.code(), code, "{body}: {err}");
        }
        let err = decode(r#"{"type":"page","messageId":"m","userId":"L"}"#).unwrap_err();
        assert_eq!(err, DecodeError::MissingField("timestamp"));
        let err = decode(r#"{"type":"page","timestamp":"2026-01-01T00:00:00Z","userId":"L"}"#)
            .unwrap_err();
        assert_eq!(err, DecodeError::MissingField("messageId"));
    }

    #[test]
    fn identify_maps_traits_to_the_profile() {
        let e = lead(&format!(
            r#"{{"type":"identify","traits":{{"email":"a@b.example","company":{{"name":"Acme","employee_count":300,"industry":"Food"}},
            "title":"CTO","job_title":"ignored","address":{{"country":"DE"}},"country":"FR","is_customer":false,
            "plan":"pro","industry":null,"tags":["a"],"nested":{{"x":1}}}},{HEAD}}}"#
        ));
        assert_eq!(e.kind, EventKind::ProfileUpdated);
        let mut got = e.profile.clone();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let want: Fields<'_> = vec![
            ("company".into(), Value::Str("Acme".into())),
            ("country".into(), Value::Str("DE".into())),
            ("email".into(), Value::Str("a@b.example".into())),
            ("employees".into(), Value::Num(300.0)),
            // The trait's own null is the first source, but company.industry is not null.
            ("industry".into(), Value::Str("Food".into())),
            ("is_customer".into(), Value::Bool(false)),
            ("job_title".into(), Value::Str("CTO".into())),
            ("plan".into(), Value::Str("pro".into())),
        ];
        assert_eq!(got, want);
        // Second sources, a null that removes, and only what is present.
        let e = lead(&format!(
            r#"{{"type":"identify","traits":{{"company":"Initech","employees":12,"job_title":"VP","country":"FR","email":null}},{HEAD}}}"#
        ));
        let mut got = e.profile.clone();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("company".into(), Value::Str("Initech".into())),
                ("country".into(), Value::Str("FR".into())),
                ("email".into(), Value::Null),
                ("employees".into(), Value::Num(12.0)),
                ("job_title".into(), Value::Str("VP".into())),
            ]
        );
        let err = decode(&format!(r#"{{"type":"identify","traits":"x",{HEAD}}}"#)).unwrap_err();
        assert_eq!(err.code(), "bad_field");
    }

    #[test]
    fn identify_with_both_ids_identifies_with_one_updates_the_profile() {
        let t = r#""type":"identify","messageId":"m","timestamp":"2026-01-01T00:00:00Z","traits":{"email":"a@b.example"}"#;
        match decode(&format!(r#"{{{t},"userId":"L-1","anonymousId":"a-1"}}"#)).unwrap() {
            Message::Identify {
                visitor_id,
                event,
                alias,
            } => {
                assert_eq!(visitor_id, "a-1");
                assert_eq!(event.lead_id, "L-1");
                assert_eq!(event.kind, EventKind::ProfileUpdated);
                assert_eq!(event.profile.len(), 1);
                assert!(!alias);
            }
            other => panic!("{other:?}"),
        }
        let b = format!(r#"{{{t},"userId":"L-1"}}"#);
        assert!(
            matches!(decode(&b).unwrap(), Message::Lead(e) if e.kind == EventKind::ProfileUpdated)
        );
        let b = format!(r#"{{{t},"anonymousId":"a-1"}}"#);
        assert!(
            matches!(decode(&b).unwrap(), Message::Visitor(e) if e.kind == EventKind::ProfileUpdated && e.lead_id == "a-1")
        );
    }

    #[test]
    fn group_sets_company_fields_and_account_id() {
        let e = lead(&format!(
            r#"{{"type":"group","groupId":"acct-9","traits":{{"name":"Acme","company":"other","employees":50,"industry":"Food","plan":"x"}},{HEAD}}}"#
        ));
        assert_eq!(e.kind, EventKind::ProfileUpdated);
        assert_eq!(
            e.profile,
            vec![
                ("company".into(), Value::Str("Acme".into())),
                ("employees".into(), Value::Num(50.0)),
                ("industry".into(), Value::Str("Food".into())),
                ("account_id".into(), Value::Str("acct-9".into())),
            ]
        );
        let e = lead(&format!(
            r#"{{"type":"group","groupId":77,"traits":{{"company":{{"name":"Initech","employee_count":5}}}},{HEAD}}}"#
        ));
        assert_eq!(
            e.profile,
            vec![
                ("company".into(), Value::Str("Initech".into())),
                ("employees".into(), Value::Num(5.0)),
                ("account_id".into(), Value::Str("77".into())),
            ]
        );
    }

    #[test]
    fn alias_links_previous_id_to_user_id() {
        let b = r#"{"type":"alias","previousId":"a-1","userId":"L-1","messageId":"m","timestamp":"2026-01-01T00:00:00Z"}"#;
        match decode(b).unwrap() {
            Message::Identify {
                visitor_id,
                event,
                alias,
            } => {
                assert_eq!(visitor_id, "a-1");
                assert_eq!(event.lead_id, "L-1");
                assert_eq!(event.event_type, "alias");
                assert_eq!(event.event_id, "m");
                assert!(alias);
            }
            other => panic!("{other:?}"),
        }
        let no_prev = r#"{"type":"alias","userId":"L-1","anonymousId":"a","messageId":"m","timestamp":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(
            decode(no_prev).unwrap_err(),
            DecodeError::MissingField("previousId")
        );
        let no_user = r#"{"type":"alias","previousId":"a-1","anonymousId":"a","messageId":"m","timestamp":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(
            decode(no_user).unwrap_err(),
            DecodeError::MissingField("userId")
        );
        let nul = r#"{"type":"alias","previousId":"\u0000a","userId":"L","messageId":"m","timestamp":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(decode(nul).unwrap_err().code(), "bad_field");
    }
}
