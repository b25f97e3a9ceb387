//! The status record: what the engine emits when a lead changes stage
//! (SPEC §4), or when a hand-off's follow-up deadline passes untouched.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::{Micros, Rfc3339};

/// A lead's lifecycle stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Lead = 0,
    Mql = 1,
    Sql = 2,
    Recycled = 3,
    Disqualified = 4,
    Customer = 5,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Lead,
        Stage::Mql,
        Stage::Sql,
        Stage::Recycled,
        Stage::Disqualified,
        Stage::Customer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Lead => "lead",
            Stage::Mql => "mql",
            Stage::Sql => "sql",
            Stage::Recycled => "recycled",
            Stage::Disqualified => "disqualified",
            Stage::Customer => "customer",
        }
    }

    pub fn from_u8(v: u8) -> Option<Stage> {
        Stage::ALL.get(usize::from(v)).copied()
    }

    /// `mql` and `sql`: the stages with a requalification deadline and a route.
    pub fn is_qualified(self) -> bool {
        matches!(self, Stage::Mql | Stage::Sql)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lead's score after a change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Score {
    pub total: f64,
    pub fit: f64,
    pub engagement: f64,
}

/// One rule's share of the score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contribution {
    pub rule: String,
    pub points: f64,
}

/// What a status record reports (`"kind"` in every record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The lead moved `from` one stage `to` another.
    #[default]
    StageChanged,
    /// The hand-off to `to` (`mql` or `sql`) reached its `follow_up_by`
    /// without a `sales_contacted`. `from` equals `to`, `occurred_at` and
    /// `follow_up_by` are the deadline, `sequence` is the hand-off change's.
    SlaBreached,
    /// The lead was erased (`lead_erased`): its state is gone. `from` and
    /// `to` are its stage then, `occurred_at` the erasure's time, `sequence`
    /// its last change's, `reasons` the erasure's reason (if it gave one).
    LeadErased,
    /// The lead had no event for the model's `retention.inactive_after`
    /// and was removed: as [`ChangeKind::LeadErased`], `occurred_at` is the
    /// instant it expired.
    LeadExpired,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::StageChanged => "stage_changed",
            ChangeKind::SlaBreached => "sla_breached",
            ChangeKind::LeadErased => "lead_erased",
            ChangeKind::LeadExpired => "lead_expired",
        }
    }
}

/// One status record of one lead: a stage change, or an SLA breach (see
/// [`ChangeKind`]). `change_id` makes every record idempotent for consumers.
///
/// One type for both kinds, because they travel together in event-time order
/// to the same topic and share most fields; the JSON of a breach has its own
/// shape (`stage` and `breached_at` instead of `from`, `to`, `occurred_at`).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    pub kind: ChangeKind,
    pub change_id: String,
    pub lead_id: String,
    pub sequence: u64,
    pub from: Stage,
    pub to: Stage,
    pub occurred_at: Micros,
    pub score: Score,
    pub band: String,
    pub reasons: Vec<String>,
    pub top_contributors: Vec<Contribution>,
    pub route: Option<String>,
    pub follow_up_by: Option<Micros>,
    pub model_version: String,
    pub cause_event_id: Option<String>,
}

impl StatusChange {
    pub fn is_breach(&self) -> bool {
        self.kind == ChangeKind::SlaBreached
    }

    /// A `lead_erased` or `lead_expired`: the lead's state was deleted.
    pub fn is_removal(&self) -> bool {
        matches!(self.kind, ChangeKind::LeadErased | ChangeKind::LeadExpired)
    }

    /// A stage change (not a breach or a removal).
    pub fn is_stage_change(&self) -> bool {
        self.kind == ChangeKind::StageChanged
    }
}

/// An instant as RFC 3339 text.
struct Time(Micros);

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // As one string, not through `collect_str` (`fmt` and its escaping adapter).
        s.serialize_str(Rfc3339(self.0).write_to(&mut [0; 32]))
    }
}

impl Serialize for StatusChange {
    /// A stage change: SPEC §4's record with `"kind": "stage_changed"` first.
    /// A breach: `kind`, `change_id`, `lead_id`, `sequence` (the hand-off's),
    /// `stage`, `route`, `follow_up_by`, `breached_at`, the `score`, `band` and
    /// `top_contributors` at `breached_at`, and `model_version`.
    /// A removal: `kind`, `change_id`, `lead_id`, `sequence` (the last
    /// change's), `stage`, `erased_at` (with `reason` and `cause_event_id`)
    /// or `expired_at`, and `model_version`: no score, the lead is gone.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        if self.is_removal() {
            let erased = self.kind == ChangeKind::LeadErased;
            let mut m = s.serialize_struct("LeadRemoved", if erased { 9 } else { 7 })?;
            m.serialize_field("kind", &self.kind)?;
            m.serialize_field("change_id", &self.change_id)?;
            m.serialize_field("lead_id", &self.lead_id)?;
            m.serialize_field("sequence", &self.sequence)?;
            m.serialize_field("stage", &self.to)?;
            if erased {
                m.serialize_field("erased_at", &Time(self.occurred_at))?;
                m.serialize_field("reason", &self.reasons.first())?;
                m.serialize_field("cause_event_id", &self.cause_event_id)?;
            } else {
                m.serialize_field("expired_at", &Time(self.occurred_at))?;
            }
            m.serialize_field("model_version", &self.model_version)?;
            return m.end();
        }
        if self.kind == ChangeKind::SlaBreached {
            let mut m = s.serialize_struct("SlaBreached", 12)?;
            m.serialize_field("kind", &self.kind)?;
            m.serialize_field("change_id", &self.change_id)?;
            m.serialize_field("lead_id", &self.lead_id)?;
            m.serialize_field("sequence", &self.sequence)?;
            m.serialize_field("stage", &self.to)?;
            m.serialize_field("route", &self.route)?;
            m.serialize_field("follow_up_by", &self.follow_up_by.map(Time))?;
            m.serialize_field("breached_at", &Time(self.occurred_at))?;
            m.serialize_field("score", &self.score)?;
            m.serialize_field("band", &self.band)?;
            m.serialize_field("top_contributors", &self.top_contributors)?;
            m.serialize_field("model_version", &self.model_version)?;
            return m.end();
        }
        let mut m = s.serialize_struct("StatusChange", 15)?;
        m.serialize_field("kind", &self.kind)?;
        m.serialize_field("change_id", &self.change_id)?;
        m.serialize_field("lead_id", &self.lead_id)?;
        m.serialize_field("sequence", &self.sequence)?;
        m.serialize_field("from", &self.from)?;
        m.serialize_field("to", &self.to)?;
        m.serialize_field("occurred_at", &Time(self.occurred_at))?;
        m.serialize_field("score", &self.score)?;
        m.serialize_field("band", &self.band)?;
        m.serialize_field("reasons", &self.reasons)?;
        m.serialize_field("top_contributors", &self.top_contributors)?;
        m.serialize_field("route", &self.route)?;
        m.serialize_field("follow_up_by", &self.follow_up_by.map(Time))?;
        m.serialize_field("model_version", &self.model_version)?;
        m.serialize_field("cause_event_id", &self.cause_event_id)?;
        m.end()
    }
}
