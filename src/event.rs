//! The input event, as the engine sees it after decoding (JSON or protobuf).
//!
//! Strings borrow from the message bytes where they can (`Cow`), so decoding
//! a JSON event without escapes allocates only its small field vectors.

use std::borrow::Cow;

use crate::time::Micros;

/// A profile field or event attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// `null`: in a profile update it removes the field.
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    /// An array (or, in a profile, nothing a rule can test): kept as
    /// present, never matched by a text, number or bool test.
    Other,
    /// A JSON object (protobuf `struct_value`): its fields, in message order.
    /// A rule reaches inside it by a dotted path ([`Event::attribute`]); the
    /// map itself matches only `exists`.
    Map(Fields<'a>),
}

impl Value<'_> {
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Num(n) => Value::Num(n),
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
            Value::Other => Value::Other,
            Value::Map(m) => Value::Map(own_fields(m)),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A list of named values, in message order.
pub type Fields<'a> = Vec<(Cow<'a, str>, Value<'a>)>;

fn own_fields(f: Fields<'_>) -> Fields<'static> {
    f.into_iter()
        .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
        .collect()
}

/// The value named `name` among `fields` (the first, as the decoders keep
/// one per name).
fn field<'f, 'a>(fields: &'f [(Cow<'a, str>, Value<'a>)], name: &str) -> Option<&'f Value<'a>> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// What an event does, from its `type`: the reserved CRM and profile types,
/// or engagement (an open set, scored by the model's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    ProfileUpdated,
    QualificationUpdated,
    SalesAccepted,
    SalesRejected,
    DealWon,
    DealLost,
    /// Sales followed the lead up (a call, a meeting): stops the SLA clock of
    /// its current hand-off.
    SalesContacted,
    /// The lead is to be forgotten (a data subject's erasure request):
    /// its state is deleted, and its events for a while after are dropped.
    LeadErased,
    Engagement,
}

impl Kind {
    pub fn of(event_type: &str) -> Kind {
        match event_type {
            "profile_updated" => Kind::ProfileUpdated,
            "qualification_updated" => Kind::QualificationUpdated,
            "sales_accepted" => Kind::SalesAccepted,
            "sales_rejected" => Kind::SalesRejected,
            "deal_won" => Kind::DealWon,
            "deal_lost" => Kind::DealLost,
            "sales_contacted" => Kind::SalesContacted,
            "lead_erased" => Kind::LeadErased,
            _ => Kind::Engagement,
        }
    }
}

/// One valid input event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    pub lead_id: Cow<'a, str>,
    pub event_type: Cow<'a, str>,
    pub kind: Kind,
    pub occurred_at: Micros,
    pub attributes: Fields<'a>,
    /// `profile_updated`: fields to merge; `Value::Null` removes a field.
    pub profile: Fields<'a>,
    /// `qualification_updated`: criterion → known true/false.
    pub criteria: Vec<(Cow<'a, str>, bool)>,
    /// `sales_rejected`: why (`disqualified` disqualifies).
    pub reason: Option<Cow<'a, str>>,
}

impl<'a> Event<'a> {
    /// A bare event of the given type; fields are filled in by the caller.
    pub fn new(
        event_id: impl Into<Cow<'a, str>>,
        lead_id: impl Into<Cow<'a, str>>,
        event_type: impl Into<Cow<'a, str>>,
        occurred_at: Micros,
    ) -> Self {
        let event_type = event_type.into();
        Event {
            event_id: event_id.into(),
            lead_id: lead_id.into(),
            kind: Kind::of(&event_type),
            event_type,
            occurred_at,
            attributes: Vec::new(),
            profile: Vec::new(),
            criteria: Vec::new(),
            reason: None,
        }
    }

    /// The attribute at `path`: a name, or a dotted path
    /// (`context.campaign.source`) that descends through nested objects.
    ///
    /// An attribute whose own name is the whole path (a flat key with dots,
    /// as events had before nested values) is found first, so rules written
    /// for those keep matching; the descent costs nothing for a path
    /// without a dot.
    pub fn attribute(&self, path: &str) -> Option<&Value<'a>> {
        if let Some(v) = field(&self.attributes, path) {
            return Some(v);
        }
        if !path.contains('.') {
            return None;
        }
        let mut segments = path.split('.');
        let mut v = field(&self.attributes, segments.next()?)?;
        for s in segments {
            match v {
                Value::Map(m) => v = field(m, s)?,
                _ => return None,
            }
        }
        Some(v)
    }

    pub fn into_owned(self) -> Event<'static> {
        let own = |s: Cow<'_, str>| Cow::Owned(s.into_owned());
        Event {
            event_id: own(self.event_id),
            lead_id: own(self.lead_id),
            event_type: own(self.event_type),
            kind: self.kind,
            occurred_at: self.occurred_at,
            attributes: own_fields(self.attributes),
            profile: own_fields(self.profile),
            criteria: self
                .criteria
                .into_iter()
                .map(|(k, v)| (own(k), v))
                .collect(),
            reason: self.reason.map(own),
        }
    }
}

/// A decoded input message, in any input format: an event of a lead, an
/// event of an anonymous visitor, or an identification that ties a visitor
/// to a lead.
#[derive(Debug, Clone, PartialEq)]
pub enum Message<'a> {
    /// An event of the lead `event.lead_id`.
    Lead(Event<'a>),
    /// An event of an anonymous visitor: `event.lead_id` holds the
    /// visitor's (anonymous) id.
    Visitor(Event<'a>),
    /// The visitor `visitor_id` is the lead `event.lead_id` (Segment's
    /// `identify` with both ids, or `alias`). For an `identify`, `event` is a
    /// `profile_updated` carrying the traits, applied to the lead after the
    /// visitor's events; for an `alias` (`alias == true`) the event only
    /// carries the message's id and time, and is not applied.
    Identify {
        visitor_id: Cow<'a, str>,
        event: Event<'a>,
        alias: bool,
    },
}

impl<'a> Message<'a> {
    /// The event the message carries.
    pub fn event(&self) -> &Event<'a> {
        match self {
            Message::Lead(e) | Message::Visitor(e) | Message::Identify { event: e, .. } => e,
        }
    }

    pub fn into_owned(self) -> Message<'static> {
        match self {
            Message::Lead(e) => Message::Lead(e.into_owned()),
            Message::Visitor(e) => Message::Visitor(e.into_owned()),
            Message::Identify {
                visitor_id,
                event,
                alias,
            } => Message::Identify {
                visitor_id: Cow::Owned(visitor_id.into_owned()),
                event: event.into_owned(),
                alias,
            },
        }
    }
}
