//! Folds the events through one engine per model and records, per lead,
//! what each model made of it before its outcome.
//!
//! A lead's history ends at its outcome (the *cut-off*):
//!
//! - outcomes from the event file: at its first `deal_won`/`deal_lost` in
//!   file order. That event and everything of the lead after it in the file
//!   are ignored, so the move to `customer` a `deal_won` causes never counts
//!   as the model's success;
//! - outcomes from a separate file (`lead_id`, won/lost, `at`): at the first
//!   event of the lead with `occurred_at` ≥ `at`. Changes stamped after `at`
//!   (timers) are ignored too.
//!
//! Timers of the lead that fire before the cut-off event (a requalification
//! deadline or the end of a quiet period at or before it) still count: the
//! engine fires them before the event.

use std::collections::HashMap;
use std::sync::Arc;

use crate::change::{Stage, StatusChange};
use crate::engine::{Engine, Local, Outcome};
use crate::event::{Event, Kind, Message};
use crate::model::Model;
use crate::time::{Micros, DAY};

use super::metrics::{Deal, LeadResult};
use super::sla::{SlaRoute, SlaTally};

/// What is known of a lead regardless of the model.
#[derive(Debug, Clone)]
struct LeadInfo {
    /// Earliest `occurred_at` among its events before the cut-off
    /// (`Micros::MAX` if none).
    first_at: Micros,
    outcome: Option<(Deal, Micros)>,
    /// Past the cut-off: nothing more of this lead counts.
    closed: bool,
    /// Erased (`lead_erased`): left out of the results.
    erased: bool,
}

/// One model's view of a lead before the cut-off.
#[derive(Debug, Clone)]
struct Track {
    /// A lead starts at 0.
    peak: f64,
    mql_at: Option<Micros>,
    sql: bool,
    sql_after_mql: bool,
    stage: Stage,
}

impl Track {
    const NEW: Track = Track {
        peak: 0.0,
        mql_at: None,
        sql: false,
        sql_after_mql: false,
        stage: Stage::Lead,
    };

    /// Records a change that happened before the cut-off.
    /// `by_sales_accepted`: the change was caused by a `sales_accepted` event
    /// (sales promoted the lead, not the model).
    fn record(&mut self, c: &StatusChange, by_sales_accepted: bool) {
        self.stage = c.to;
        match c.to {
            Stage::Mql => {
                self.mql_at.get_or_insert(c.occurred_at);
            }
            Stage::Sql => {
                self.sql = true;
                // Outside `sales_accepted`, a lead reaches `sql` from a
                // stage other than `mql` only when it meets the MQL
                // conditions in the same event (SPEC §3): the model
                // qualified it.
                if self.mql_at.is_none() && c.from != Stage::Mql && !by_sales_accepted {
                    self.mql_at = Some(c.occurred_at);
                }
                if self.mql_at.is_some() {
                    self.sql_after_mql = true;
                }
            }
            _ => {}
        }
    }
}

/// A backtest in progress: feed it every valid event in file order with
/// [`Backtest::event`], then call [`Backtest::finish`].
pub struct Backtest {
    models: Vec<Arc<Model>>,
    engines: Vec<Engine>,
    /// Outcomes from a separate file, by lead id; `None`: from the events.
    given: Option<HashMap<String, (Deal, Micros)>>,
    index: HashMap<Box<str>, u32>,
    leads: Vec<LeadInfo>,
    /// `tracks[model][lead]`.
    tracks: Vec<Vec<Track>>,
    changes: Vec<StatusChange>,
    last_time: Micros,
    /// `sla[model]`: hand-offs, breaches and first touches before the outcomes.
    sla: Vec<SlaTally>,
    /// `sales_contacted` events seen (SLA compliance is reported if any).
    contacts: u64,
}

/// What a backtest found, per model (in the order given).
pub struct Finished {
    pub results: Vec<Vec<LeadResult>>,
    /// Given outcomes that name a lead with no event.
    pub without_events: u64,
    /// SLA compliance by route, when the events hold a `sales_contacted`.
    pub sla: Option<Vec<Vec<SlaRoute>>>,
    /// Leads erased (`lead_erased`) in the events: left out of the results.
    pub erased: u64,
}

impl Backtest {
    /// A backtest of `models` (at least one). `given`: outcomes from a
    /// separate file (lead id → deal and time); `None` takes them from the
    /// events' `deal_won`/`deal_lost`.
    pub fn new(models: Vec<Arc<Model>>, given: Option<HashMap<String, (Deal, Micros)>>) -> Self {
        assert!(!models.is_empty(), "a backtest needs a model");
        Backtest {
            engines: models
                .iter()
                .map(|m| {
                    let mut e = Engine::new(m.clone());
                    e.record_touches(true);
                    e
                })
                .collect(),
            sla: vec![SlaTally::default(); models.len()],
            contacts: 0,
            tracks: vec![Vec::new(); models.len()],
            models,
            given,
            index: HashMap::new(),
            leads: Vec::new(),
            changes: Vec::new(),
            last_time: Micros::MIN,
        }
    }

    fn lead_index(&mut self, id: &str) -> usize {
        if let Some(&i) = self.index.get(id) {
            return i as usize;
        }
        let i = self.leads.len();
        let outcome = self.given.as_ref().and_then(|g| g.get(id).copied());
        self.leads.push(LeadInfo {
            first_at: Micros::MAX,
            outcome,
            closed: false,
            erased: false,
        });
        for t in &mut self.tracks {
            t.push(Track::NEW);
        }
        self.index.insert(id.into(), i as u32);
        i
    }

    /// Folds one valid event into every model's engine; returns what the
    /// first model's engine made of it.
    pub fn event(&mut self, event: &Event<'_>) -> Outcome {
        let t = event.occurred_at;
        self.last_time = self.last_time.max(t);
        let idx = self.lead_index(&event.lead_id);
        let info = &mut self.leads[idx];
        // Does this event end the lead's history?
        let closing = !info.closed
            && match (&self.given, event.kind) {
                (None, Kind::DealWon | Kind::DealLost) => {
                    let deal = if event.kind == Kind::DealWon {
                        Deal::Won
                    } else {
                        Deal::Lost
                    };
                    info.outcome = Some((deal, t));
                    true
                }
                (None, _) => false,
                (Some(_), _) => info.outcome.is_some_and(|(_, at)| t >= at),
            };
        let counts = !info.closed && !closing;
        if counts {
            info.first_at = info.first_at.min(t);
        }
        if event.kind == Kind::SalesContacted {
            self.contacts += 1;
        }
        if event.kind == Kind::LeadErased {
            self.leads[idx].erased = true;
        }
        let mut first = Outcome::Applied;
        for m in 0..self.engines.len() {
            let mut changes = std::mem::take(&mut self.changes);
            changes.clear();
            let outcome = self.engines[m].fold(event, &mut changes);
            if m == 0 {
                first = outcome;
            }
            // The cut-off event's own change, and anything of the lead
            // after it, belong to the outcome.
            let mut past_cutoff = false;
            for c in &changes {
                let j = if *c.lead_id == *event.lead_id {
                    idx
                } else {
                    self.index[c.lead_id.as_str()] as usize
                };
                let caused_here = c.cause_event_id.as_deref() == Some(&*event.event_id);
                if j == idx && closing && (past_cutoff || caused_here) {
                    past_cutoff = true;
                    continue;
                }
                self.record(m, j, c, caused_here && event.kind == Kind::SalesAccepted);
            }
            self.changes = changes;
            let (engine, tally) = (&mut self.engines[m], &mut self.sla[m]);
            let model = &*self.models[m];
            engine.drain_touches(|touch| {
                if counts {
                    tally.touch(&model.track(touch.installed_base).route, &touch);
                }
            });
            if counts && outcome != Outcome::Duplicate {
                let model = &*self.models[m];
                // None: erased, or expired by the model's retention.
                if let Some(lead) = self.engines[m].lead(&event.lead_id) {
                    let total = lead.fit(model) + lead.engagement(model);
                    let track = &mut self.tracks[m][idx];
                    track.peak = track.peak.max(total);
                }
            }
        }
        if closing {
            self.leads[idx].closed = true;
        }
        first
    }

    /// Folds one decoded message (any input format) into every model's
    /// engine; returns what the first model's engine made of its event.
    ///
    /// A lead's own events go through [`Backtest::event`]. A visitor's
    /// events and identifications go through each engine's visitor logic:
    /// what each model retains of a visitor is its own (only events its
    /// engagement rules score), and the events handed to a lead count as
    /// the lead's (its first event, its peak), but never close its history.
    pub fn message(&mut self, msg: Message<'_>) -> Outcome {
        let msg = match msg {
            Message::Lead(e) => return self.event(&e),
            other => other,
        };
        self.last_time = self.last_time.max(msg.event().occurred_at);
        let mut first = Outcome::Applied;
        let mut local = Local::default();
        for m in 0..self.engines.len() {
            let mut changes = std::mem::take(&mut self.changes);
            changes.clear();
            let mut folded: Vec<(String, Micros, Outcome)> = Vec::new();
            local.ingest(&mut self.engines[m], msg.clone(), &mut changes, |e, o| {
                folded.push((e.lead_id.to_string(), e.occurred_at, o));
            });
            if m == 0 {
                first = folded.last().map_or(Outcome::Applied, |f| f.2);
            }
            for (lead, t, outcome) in folded {
                let idx = self.lead_index(&lead);
                if self.leads[idx].closed {
                    continue;
                }
                self.leads[idx].first_at = self.leads[idx].first_at.min(t);
                if outcome != Outcome::Duplicate {
                    let model = &*self.models[m];
                    if let Some(l) = self.engines[m].lead(&lead) {
                        let total = l.fit(model) + l.engagement(model);
                        let track = &mut self.tracks[m][idx];
                        track.peak = track.peak.max(total);
                    }
                }
            }
            for c in &changes {
                let j = self.lead_index(&c.lead_id);
                self.record(m, j, c, false);
            }
            self.changes = changes;
            let model = self.models[m].clone();
            let mut touches = Vec::new();
            self.engines[m].drain_touches(|t| touches.push(t));
            for touch in touches {
                let j = self.lead_index(&touch.lead_id);
                if !self.leads[j].closed {
                    self.sla[m].touch(&model.track(touch.installed_base).route, &touch);
                }
            }
        }
        first
    }

    fn record(&mut self, m: usize, j: usize, c: &StatusChange, by_sales_accepted: bool) {
        let info = &self.leads[j];
        if info.closed || info.outcome.is_some_and(|(_, at)| c.occurred_at > at) {
            return;
        }
        let route = c.route.as_deref().unwrap_or_default();
        if c.is_breach() {
            self.sla[m].breach(route);
            return;
        }
        if c.is_removal() {
            return;
        }
        if c.to.is_qualified() {
            self.sla[m].hand_off(route);
        }
        self.tracks[m][j].record(c, by_sales_accepted);
    }

    /// Advances to the last event time (firing the timers due by then) and
    /// returns one result per lead for each model, leads in order of first
    /// appearance, how many given outcomes name a lead with no event, and
    /// the SLA compliance.
    pub fn finish(mut self) -> Finished {
        for m in 0..self.engines.len() {
            let mut changes = std::mem::take(&mut self.changes);
            changes.clear();
            self.engines[m].advance_to(self.last_time, &mut changes);
            for c in &changes {
                let j = self.index[c.lead_id.as_str()] as usize;
                self.record(m, j, c, false);
            }
            self.changes = changes;
        }
        let results = self
            .tracks
            .iter()
            .map(|tracks| {
                tracks
                    .iter()
                    .zip(&self.leads)
                    .filter(|(_, info)| !info.erased)
                    .map(|(t, info)| LeadResult {
                        deal: info.outcome.map(|(d, _)| d),
                        peak: t.peak,
                        days_to_mql: t
                            .mql_at
                            .map(|at| (at - info.first_at.min(at)) as f64 / DAY as f64),
                        sql: t.sql,
                        sql_after_mql: t.sql_after_mql,
                        stage_before_outcome: info.outcome.map(|_| t.stage),
                    })
                    .collect()
            })
            .collect();
        let without_events = self.given.as_ref().map_or(0, |g| {
            g.keys()
                .filter(|id| !self.index.contains_key(id.as_str()))
                .count() as u64
        });
        let sla = (self.contacts > 0).then(|| self.sla.iter().map(SlaTally::report).collect());
        let erased = self.leads.iter().filter(|l| l.erased).count() as u64;
        // The process is about to exit: freeing every lead one by one would
        // only cost time (as in `leadscore score`).
        std::mem::forget(self.engines);
        Finished {
            results,
            without_events,
            sla,
            erased,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{parse_rfc3339, HOUR};
    use serde_json::json;

    fn at(day: i64) -> Micros {
        parse_rfc3339("2026-03-02T14:00:00Z").unwrap() + day * DAY
    }

    fn ev(id: &str, lead: &str, ty: &str, t: Micros, extra: serde_json::Value) -> Event<'static> {
        let mut v = json!({"event_id": id, "lead_id": lead, "type": ty,
                           "occurred_at": crate::time::format_rfc3339(t)});
        if let serde_json::Value::Object(m) = extra {
            for (k, x) in m {
                v[k] = x;
            }
        }
        let bytes = serde_json::to_vec(&v).unwrap();
        crate::codec::decode_json(&bytes).unwrap().into_owned()
    }

    fn fit35() -> serde_json::Value {
        json!({"profile": {"email": "a@acme-industrial.com", "industry": "food",
                           "job_title": "Director of Operations"}})
    }

    fn run(
        events: &[Event<'static>],
        given: Option<HashMap<String, (Deal, Micros)>>,
    ) -> Vec<LeadResult> {
        let mut bt = Backtest::new(vec![Arc::new(Model::default_model())], given);
        for e in events {
            bt.event(e);
        }
        bt.finish().results.remove(0)
    }

    #[test]
    fn deal_won_is_not_counted_as_the_models_success() {
        // Fit 35, won at day 1, then a webinar: the lead becomes customer and
        // later an installed-base MQL, none of which counts.
        let events = [
            ev("1", "G", "profile_updated", at(0), fit35()),
            ev("2", "G", "deal_won", at(1), json!({})),
            ev("3", "G", "webinar_attended", at(2), json!({})),
            ev("4", "G", "demo_requested", at(2) + HOUR, json!({})),
            ev("5", "X", "page_view", at(30), json!({})),
        ];
        let r = &run(&events, None)[0];
        assert_eq!(r.deal, Some(Deal::Won));
        assert_eq!(r.peak, 35.0);
        assert_eq!(r.days_to_mql, None);
        assert_eq!(r.stage_before_outcome, Some(Stage::Lead));
    }

    #[test]
    fn a_given_outcome_cuts_the_history_at_its_time() {
        // MQL at day 2 (35 + 15), won at day 10; the demo on day 11 is after it.
        let events = [
            ev("1", "A", "profile_updated", at(0), fit35()),
            ev("2", "A", "webinar_attended", at(2), json!({})),
            ev("3", "A", "demo_requested", at(11), json!({})),
        ];
        let given = HashMap::from([("A".to_string(), (Deal::Won, at(10)))]);
        let r = &run(&events, Some(given))[0];
        assert_eq!(r.peak, 50.0);
        assert_eq!(r.days_to_mql, Some(2.0));
        assert_eq!(r.stage_before_outcome, Some(Stage::Mql));
    }

    #[test]
    fn sla_compliance_by_route() {
        // A and B: fit 35 + webinar 15 = 50, warm MQLs on Monday 14:00, due
        // Thursday 14:00 (3 working days). A is touched 2 h later; B's
        // contact on Friday comes after its breach (waited 96 h). C: an
        // installed-base MQL (demo 20 ≥ 5), due in 4 h, touched after 1 h.
        let events = [
            ev("a1", "A", "profile_updated", at(0), fit35()),
            ev("a2", "A", "webinar_attended", at(0), json!({})),
            ev("b1", "B", "profile_updated", at(0), fit35()),
            ev("b2", "B", "webinar_attended", at(0), json!({})),
            ev(
                "c1",
                "C",
                "profile_updated",
                at(0),
                json!({"profile": {"is_customer": true}}),
            ),
            ev("c2", "C", "demo_requested", at(0), json!({})),
            ev("c3", "C", "sales_contacted", at(0) + HOUR, json!({})),
            ev("a3", "A", "sales_contacted", at(0) + 2 * HOUR, json!({})),
            ev("b3", "B", "sales_contacted", at(4), json!({})),
            // A second contact is no first touch.
            ev("a4", "A", "sales_contacted", at(5), json!({})),
            ev("x1", "X", "page_view", at(10), json!({})),
        ];
        let mut bt = Backtest::new(vec![Arc::new(Model::default_model())], None);
        for e in &events {
            bt.event(e);
        }
        let sla = bt.finish().sla.expect("the events hold sales_contacted");
        assert_eq!(
            sla[0],
            vec![
                SlaRoute {
                    route: "account_management".into(),
                    handoffs: 1,
                    touched_in_time: 1,
                    breaches: 0,
                    touched_after_breach: 0,
                    compliance: Some(1.0),
                    median_hours_to_first_touch: Some(1.0),
                },
                SlaRoute {
                    route: "new_business".into(),
                    handoffs: 2,
                    touched_in_time: 1,
                    breaches: 1,
                    touched_after_breach: 1,
                    compliance: Some(0.5),
                    // (2 + 96) / 2
                    median_hours_to_first_touch: Some(49.0),
                },
            ]
        );
        // Without a sales_contacted in the events: no SLA report.
        let mut bt = Backtest::new(vec![Arc::new(Model::default_model())], None);
        bt.event(&events[0]);
        assert!(bt.finish().sla.is_none());
    }

    #[test]
    fn sql_by_sales_accepted_is_not_an_mql() {
        let events = [
            ev("1", "E", "profile_updated", at(0), fit35()),
            ev("2", "E", "sales_accepted", at(1), json!({})),
        ];
        let r = &run(&events, None)[0];
        assert!(r.sql);
        assert!(!r.sql_after_mql);
        assert_eq!(r.days_to_mql, None);
        assert_eq!(r.deal, None);
        assert_eq!(r.stage_before_outcome, None);
    }
}
