//! The status change: what the engine emits when a lead changes stage (SPEC §4).

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

/// One stage change of one lead. `change_id` and `sequence` make it
/// idempotent for consumers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusChange {
    pub change_id: String,
    pub lead_id: String,
    pub sequence: u64,
    pub from: Stage,
    pub to: Stage,
    #[serde(serialize_with = "ser_time")]
    pub occurred_at: Micros,
    pub score: Score,
    pub band: String,
    pub reasons: Vec<String>,
    pub top_contributors: Vec<Contribution>,
    pub route: Option<String>,
    #[serde(serialize_with = "ser_opt_time")]
    pub follow_up_by: Option<Micros>,
    pub model_version: String,
    pub cause_event_id: Option<String>,
}

fn ser_time<S: serde::Serializer>(t: &Micros, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Rfc3339(*t))
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<Micros>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&Rfc3339(*t)),
        None => s.serialize_none(),
    }
}
