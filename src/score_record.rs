//! The score record: a lead's current score, as written to the compacted
//! score topic (key = lead id) for CRM connectors that keep a live score.
//!
//! Engagement decays between records: at any time `t` after `as_of` it is
//! `engagement × 2^(−(t − as_of) / half_life)`, and the total is `fit` plus
//! that. When rule groups decay with half-lives of their own, the record
//! carries `components` (engagement by half-life) and engagement at `t` is
//! the sum of each component decayed with its half-life. A record is written again when the stage or band changes (decay
//! included: a band timer fires at the instant it does) or the total has
//! moved by the model's `score_min_delta` since the last record.

use serde::Serialize;

use crate::change::{Contribution, Stage};
use crate::time::{Micros, Rfc3339};

/// One lead's score at `as_of`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreRecord {
    pub lead_id: String,
    pub stage: Stage,
    pub fit: f64,
    /// Engagement at `as_of`.
    pub engagement: f64,
    /// `fit + engagement`.
    pub total: f64,
    pub band: String,
    /// The instant the scores are for: the lead's time (its latest event or
    /// fired timer), or the later instant a band timer fired.
    #[serde(serialize_with = "ser_time")]
    pub as_of: Micros,
    /// The engagement half-life, in seconds; `None`: engagement does not decay.
    #[serde(rename = "half_life", serialize_with = "ser_seconds")]
    pub half_life_micros: Option<f64>,
    /// The next instant the lead may change without an event: its
    /// requalification deadline, the end of its quiet period, a demotion by
    /// decay (`demote_on_score`) or a band change by decay, whichever is first.
    #[serde(serialize_with = "ser_opt_time")]
    pub next_deadline: Option<Micros>,
    pub top_contributors: Vec<Contribution>,
    pub model_version: String,
    /// Engagement at `as_of` by half-life, one per distinct half-life of
    /// the model (`half_life`'s first); empty (and not written) when every
    /// rule decays with `half_life`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Component>,
}

/// The part of a lead's engagement that decays with one half-life.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    /// In seconds; `None`: this part does not decay.
    #[serde(rename = "half_life", serialize_with = "ser_seconds")]
    pub half_life_micros: Option<f64>,
    /// At `as_of`.
    pub engagement: f64,
}

/// `e` decayed with half-life `hl` from `from` to `t`.
fn decayed(e: f64, hl: Option<f64>, from: Micros, t: Micros) -> f64 {
    match hl {
        Some(hl) if t > from => e * (-((t - from) as f64) / hl).exp2(),
        _ => e,
    }
}

impl ScoreRecord {
    /// Engagement decayed to `t` (at or after `as_of`), as a consumer computes it.
    pub fn engagement_at(&self, t: Micros) -> f64 {
        if self.components.is_empty() {
            return decayed(self.engagement, self.half_life_micros, self.as_of, t);
        }
        self.components
            .iter()
            .map(|c| decayed(c.engagement, c.half_life_micros, self.as_of, t))
            .sum()
    }
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

fn ser_seconds<S: serde::Serializer>(hl: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match hl {
        // Whole seconds print as integers (2592000, not 2592000.0).
        Some(micros) if micros % 1e6 == 0.0 && micros.abs() < 9e21 => {
            s.serialize_i64((micros / 1e6) as i64)
        }
        Some(micros) => s.serialize_f64(micros / 1e6),
        None => s.serialize_none(),
    }
}
