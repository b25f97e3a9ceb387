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
    /// An array or object: kept as present, never matched by a rule.
    Other,
}

impl Value<'_> {
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Num(n) => Value::Num(n),
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
            Value::Other => Value::Other,
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

    pub fn attribute(&self, name: &str) -> Option<&Value<'a>> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    pub fn into_owned(self) -> Event<'static> {
        let own = |s: Cow<'_, str>| Cow::Owned(s.into_owned());
        Event {
            event_id: own(self.event_id),
            lead_id: own(self.lead_id),
            event_type: own(self.event_type),
            kind: self.kind,
            occurred_at: self.occurred_at,
            attributes: self
                .attributes
                .into_iter()
                .map(|(k, v)| (own(k), v.into_owned()))
                .collect(),
            profile: self
                .profile
                .into_iter()
                .map(|(k, v)| (own(k), v.into_owned()))
                .collect(),
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
