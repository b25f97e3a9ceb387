//! A lead's state and score, rule by rule (`leadscore explain`, `GET /leads/{id}`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::lead::{Lead, ProfileValue, NEVER};
use super::stage::disqualification_reasons;
use crate::change::{Score, Stage};
use crate::model::Model;
use crate::time::{format_rfc3339, Micros};

#[derive(Debug, Clone, Serialize)]
pub struct FitLine {
    pub rule: String,
    pub field: String,
    pub test: String,
    pub value: Option<serde_json::Value>,
    pub matched: bool,
    pub points: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EngagementLine {
    pub rule: String,
    pub event: String,
    /// The rule's contribution now, decayed.
    pub points: f64,
    /// Matching events counted so far (rules scored every Nth time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occurrences: Option<u64>,
    /// The rule's `[[engagement.groups]]` entry, and its limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// A hand-off waiting for sales' first touch (`sales_contacted`).
#[derive(Debug, Clone, Serialize)]
pub struct FollowUp {
    pub route: String,
    pub follow_up_by: String,
    /// `follow_up_by` has passed (the breach was emitted).
    pub overdue: bool,
}

/// The breakdown of one lead at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub lead_id: String,
    pub model_version: String,
    pub at: String,
    pub stage: Stage,
    pub stage_entered: Option<String>,
    pub installed_base: bool,
    pub home_stage: Stage,
    pub score: Score,
    pub band: String,
    pub meets_mql_conditions: bool,
    pub disqualified: bool,
    pub disqualification_reasons: Vec<String>,
    pub fit: Vec<FitLine>,
    pub engagement: Vec<EngagementLine>,
    pub criteria: BTreeMap<String, bool>,
    /// The model's conditions (gates, stays_while, SQL conditions,
    /// disqualification rules), each with its value now.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<super::window::ConditionLine>,
    pub requalification_deadline: Option<String>,
    pub quiet_until: Option<String>,
    /// The follow-up SLA of the current hand-off, until sales' first touch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follow_up: Option<FollowUp>,
    /// When decay alone next moves the lead to another band (its total
    /// crosses a band's bound), if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub band_changes_at: Option<String>,
    /// When the model's retention removes the lead if it has no event before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub changes_emitted: u32,
    pub profile: BTreeMap<String, serde_json::Value>,
}

/// A half-life as people read it: `"7 days"`, `"1 day"`, or `"none"` (no decay).
pub fn half_life_text(hl: Option<f64>) -> String {
    match hl {
        Some(h) if h == crate::time::DAY as f64 => "1 day".into(),
        Some(h) => format!("{} days", super::format_number(h / crate::time::DAY as f64)),
        None => "none".into(),
    }
}

pub fn explain(lead: &Lead, model: &Model, at: Option<Micros>) -> Explanation {
    // Show the scores decayed to `at` without moving the lead's own clock.
    let mut view = lead.clone();
    if let Some(at) = at {
        view.advance_time(at, model);
    }
    let lead = &view;
    let mut hits = vec![false; model.fit_rules.len()];
    lead.for_each_fit_hit(model, |i, _| hits[i] = true);
    let fit = model
        .fit_rules
        .iter()
        .zip(&hits)
        .map(|(r, &matched)| FitLine {
            rule: r.name.clone(),
            field: r.field.clone(),
            test: r.matcher.describe(),
            value: lead.profile_value(&r.field).map(profile_json),
            matched,
            points: if matched { r.points } else { 0.0 },
        })
        .collect();
    let engagement = model
        .engagement_rules
        .iter()
        .enumerate()
        .map(|(i, r)| EngagementLine {
            rule: r.name.clone(),
            event: r.event.clone(),
            points: lead.contribution(i),
            occurrences: r.every.map(|(_, slot)| lead.slot(slot)),
            group: r.group.map(|g| {
                let g = &model.engagement_groups[g];
                let mut notes = Vec::new();
                if let Some(l) = g.limit {
                    notes.push(format!("limit {}", super::stage::num(l)));
                }
                // Its half-life, where it differs from `[engagement] half_life`.
                match g.half_life {
                    Some(hl) if hl != model.half_life => {
                        notes.push(format!("half-life {}", half_life_text(hl)));
                    }
                    _ => {}
                }
                if notes.is_empty() {
                    g.name.clone()
                } else {
                    format!("{} ({})", g.name, notes.join(", "))
                }
            }),
        })
        .collect();
    let e = lead.engagement(model);
    let total = lead.fit(model) + e;
    let conditions = condition_lines(lead, model);
    let time = |t: Micros| (t != NEVER && t != super::NO_TIME).then(|| format_rfc3339(t));
    Explanation {
        lead_id: lead.id().to_string(),
        model_version: model.version.clone(),
        at: time(lead.time).unwrap_or_default(),
        stage: lead.stage,
        stage_entered: time(lead.stage_entered),
        installed_base: lead.installed_base(),
        home_stage: lead.home_stage(),
        score: Score {
            total,
            fit: lead.fit(model),
            engagement: e,
        },
        band: model.bands[model.band(total)].name.clone(),
        meets_mql_conditions: !lead.disqualified() && lead.meets_mql(model),
        disqualified: lead.disqualified(),
        disqualification_reasons: if lead.installed_base() {
            Vec::new()
        } else {
            disqualification_reasons(lead, model)
        },
        fit,
        engagement,
        criteria: model
            .criteria
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), lead.criteria & (1 << i) != 0))
            .collect(),
        conditions,
        requalification_deadline: if lead.stage.is_qualified() {
            time(lead.deadline)
        } else {
            None
        },
        quiet_until: lead.quiet_until(model).and_then(time),
        follow_up: lead.follow_up_by().map(|by| FollowUp {
            route: model
                .track(lead.sla & super::lead::sla::INSTALLED != 0)
                .route
                .clone(),
            follow_up_by: format_rfc3339(by),
            overdue: by <= lead.time,
        }),
        band_changes_at: time(super::decay::band_deadline(lead, model, lead.time)),
        expires_at: lead.expires_at(model).and_then(time),
        changes_emitted: lead.sequence,
        profile: lead
            .profile()
            .map(|(k, v)| (k.to_string(), profile_json(v)))
            .collect(),
    }
}

/// Every condition of the model, with its value for the lead at its time.
fn condition_lines(lead: &Lead, model: &Model) -> Vec<super::window::ConditionLine> {
    use super::window::{lines, LeadFacts};
    let facts = LeadFacts {
        lead,
        model,
        at: lead.time,
    };
    let mut v = Vec::new();
    for (name, t) in [
        ("new_business", &model.new_business),
        ("installed_base", &model.installed_base),
    ] {
        v.extend(lines(&format!("{name}.mql_gates"), &t.mql_gates, &facts));
        v.extend(lines(
            &format!("{name}.stays_while"),
            &t.stays_while,
            &facts,
        ));
    }
    v.extend(lines("sql.conditions", &model.sql_conditions, &facts));
    v.extend(lines("disqualify.rules", &model.disqualify.rules, &facts));
    if let Some(c) = &model.disqualify.free_mail_exception {
        v.extend(lines(
            "disqualify.free_mail_exception",
            std::slice::from_ref(c),
            &facts,
        ));
    }
    v
}

fn profile_json(v: ProfileValue<'_>) -> serde_json::Value {
    match v {
        ProfileValue::Bool(b) => b.into(),
        ProfileValue::Num(n) if n.fract() == 0.0 && n.abs() < 9e15 => (n as i64).into(),
        ProfileValue::Num(n) => {
            serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, Into::into)
        }
        ProfileValue::Str(s) => s.into(),
        ProfileValue::Other => "<object or array>".into(),
    }
}
