//! A decoded event that can cross threads without its line: its strings are
//! offsets into the line (or owned, where JSON escapes made them differ from
//! the text). `score` decodes on one thread and folds on another; a
//! borrowed [`Event`] cannot leave the buffer it borrows from, so the
//! decoder detaches each event, sends the buffer along, and the folder
//! attaches the event to it again: no string is copied, and the line is not
//! checked again (the decoder checked the whole block as UTF-8 once).

use std::borrow::Cow;
use std::ops::Range;

use crate::event::{Event, Fields, Kind, Value};
use crate::time::Micros;

/// A string of the event: `line[start..end]`, or its own text.
enum Text {
    At(u32, u32),
    Own(String),
}

impl Text {
    fn of(s: Cow<'_, str>, line: &str) -> Text {
        if let Cow::Borrowed(b) = &s {
            // Where the decoder borrowed it from the line (always, for a
            // borrowed string; checked rather than assumed).
            let start = (b.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
            if start <= line.len() && b.len() <= line.len() - start {
                if let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(start + b.len()))
                {
                    return Text::At(start, end);
                }
            }
        }
        Text::Own(s.into_owned())
    }

    fn get<'a>(&'a self, line: &'a str) -> Cow<'a, str> {
        match self {
            Text::At(start, end) => Cow::Borrowed(&line[*start as usize..*end as usize]),
            Text::Own(s) => Cow::Borrowed(s),
        }
    }
}

enum Val {
    Null,
    Bool(bool),
    Num(f64),
    Str(Text),
    Other,
    Map(Vec<(Text, Val)>),
}

impl Val {
    fn of(v: Value<'_>, line: &str) -> Val {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(b),
            Value::Num(n) => Val::Num(n),
            Value::Str(s) => Val::Str(Text::of(s, line)),
            Value::Other => Val::Other,
            Value::Map(m) => Val::Map(detach_fields(m, line)),
        }
    }

    fn get<'a>(&'a self, line: &'a str) -> Value<'a> {
        match self {
            Val::Null => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Num(n) => Value::Num(*n),
            Val::Str(t) => Value::Str(t.get(line)),
            Val::Other => Value::Other,
            Val::Map(m) => Value::Map(attach_fields(m, line)),
        }
    }
}

/// An [`Event`] decoded from `text[line]` of the block it travels with.
pub(super) struct Detached {
    line: Range<usize>,
    event_id: Text,
    lead_id: Text,
    event_type: Text,
    kind: Kind,
    occurred_at: Micros,
    attributes: Vec<(Text, Val)>,
    profile: Vec<(Text, Val)>,
    criteria: Vec<(Text, bool)>,
    reason: Option<Text>,
}

fn detach_fields(fields: Fields<'_>, line: &str) -> Vec<(Text, Val)> {
    fields
        .into_iter()
        .map(|(k, v)| (Text::of(k, line), Val::of(v, line)))
        .collect()
}

fn attach_fields<'a>(fields: &'a [(Text, Val)], line: &'a str) -> Fields<'a> {
    fields
        .iter()
        .map(|(k, v)| (k.get(line), v.get(line)))
        .collect()
}

impl Detached {
    /// `event`, decoded from `line`, which is `range` of its block. A line
    /// that is not UTF-8 (given as "") can still decode (serde_json skips
    /// unknown fields unchecked); then every string is kept as its own copy.
    pub(super) fn new(event: Event<'_>, line: &str, range: Range<usize>) -> Detached {
        let l = line;
        Detached {
            event_id: Text::of(event.event_id, l),
            lead_id: Text::of(event.lead_id, l),
            event_type: Text::of(event.event_type, l),
            kind: event.kind,
            occurred_at: event.occurred_at,
            attributes: detach_fields(event.attributes, l),
            profile: detach_fields(event.profile, l),
            criteria: event
                .criteria
                .into_iter()
                .map(|(k, v)| (Text::of(k, l), v))
                .collect(),
            reason: event.reason.map(|r| Text::of(r, l)),
            line: range,
        }
    }

    /// Where its line is in the block.
    pub(super) fn line(&self) -> Range<usize> {
        self.line.clone()
    }

    /// The event again, borrowing from `line`: the same text it was
    /// decoded from ("" for a line that is not UTF-8; see `new`).
    pub(super) fn attach<'a>(&'a self, line: &'a str) -> Event<'a> {
        let l = line;
        Event {
            event_id: self.event_id.get(l),
            lead_id: self.lead_id.get(l),
            event_type: self.event_type.get(l),
            kind: self.kind,
            occurred_at: self.occurred_at,
            attributes: attach_fields(&self.attributes, l),
            profile: attach_fields(&self.profile, l),
            criteria: self.criteria.iter().map(|(k, v)| (k.get(l), *v)).collect(),
            reason: self.reason.as_ref().map(|r| r.get(l)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_json;

    #[test]
    fn an_event_attached_again_equals_the_decoded_one() {
        let text = concat!(
            "junk before\n",
            r#"{"event_id":"e\u0031","lead_id":"L-1","type":"page_view","occurred_at":"2026-03-01T00:00:00Z","#,
            r#""attributes":{"path":"/pricing","n":3,"ok":true,"x":null,"o":{"a":1},"esc":"a\"b"},"#,
            r#""profile":{"email":"a@b.example"},"criteria":{"budget":true},"reason":"r\n"}"#,
            "\n"
        )
        .as_bytes()
        .to_vec();
        let line = 12..text.len() - 1;
        let l = std::str::from_utf8(&text[line.clone()]).unwrap();
        let decoded = decode_json(l.as_bytes()).unwrap();
        let detached = Detached::new(decoded.clone(), l, line.clone());
        assert_eq!(detached.line(), line);
        // Escaped strings are owned; the others point into the line.
        assert!(matches!(detached.event_id, Text::Own(_)));
        assert!(matches!(detached.lead_id, Text::At(..)));
        let attached = detached.attach(l);
        assert_eq!(attached, decoded);
        assert!(matches!(attached.lead_id, Cow::Borrowed(_)));
    }

    #[test]
    fn multi_byte_text_and_a_line_that_is_not_utf8_attach_as_decoded() {
        let mut text = b"\xc3\xa9\n".to_vec();
        let start = text.len();
        text.extend_from_slice(
            r#"{"event_id":"é-1","lead_id":"Zoë","type":"page_view","occurred_at":"2026-03-01T00:00:00Z","attributes":{"title":"Überblick ✓"}}"#
                .as_bytes(),
        );
        let line = start..text.len();
        let l = std::str::from_utf8(&text[line.clone()]).unwrap();
        let decoded = decode_json(l.as_bytes()).unwrap();
        let detached = Detached::new(decoded.clone(), l, line);
        assert!(matches!(detached.lead_id, Text::At(..)));
        assert_eq!(detached.attach(l), decoded);

        // Invalid UTF-8 inside a field the decoder skips: the line decodes.
        let mut bad = b"{\"skip\":\"\xff\",".to_vec();
        bad.extend_from_slice(
            br#""event_id":"e","lead_id":"L","type":"page_view","occurred_at":"2026-03-01T00:00:00Z"}"#,
        );
        let decoded = decode_json(&bad).expect("serde_json skips the field unchecked");
        let detached = Detached::new(decoded.clone(), "", 0..bad.len());
        assert!(matches!(detached.lead_id, Text::Own(_)));
        assert_eq!(detached.attach(""), decoded);
    }
}
