//! Scenario helpers for the integration tests: events are built as JSON
//! (SPEC §2), decoded with the crate's own decoder, folded through an
//! [`Engine`], and the status changes collected.

#![allow(dead_code)]

use std::sync::Arc;

use leadscore::codec::decode_json;
use leadscore::engine::Explanation;
use leadscore::time::{format_rfc3339, parse_rfc3339, Micros, DAY, HOUR};
use leadscore::{Engine, Model, Outcome, Stage, StatusChange};
use serde_json::{json, Value};

/// Tolerance for comparing decayed scores.
pub const EPS: f64 = 1e-6;

pub fn ts(s: &str) -> Micros {
    parse_rfc3339(s).unwrap_or_else(|e| panic!("bad test timestamp {s:?}: {e}"))
}

pub fn iso(t: Micros) -> String {
    format_rfc3339(t)
}

pub fn days(n: i64) -> Micros {
    n * DAY
}

pub fn hours(n: i64) -> Micros {
    n * HOUR
}

/// Monday 2026-03-02 14:00:00 UTC: the start of most scenarios.
pub fn t0() -> Micros {
    ts("2026-03-02T14:00:00Z")
}

/// `|a - b| < 1e-6`, with a message naming what is compared.
#[track_caller]
pub fn close(what: &str, actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < EPS,
        "{what}: got {actual}, expected {expected} (±{EPS})"
    );
}

/// An event as JSON: the required fields plus `extra` merged in at the top
/// level (`attributes`, `profile`, `criteria`, `reason`).
pub fn ev(id: &str, lead: &str, ty: &str, at: Micros, extra: Value) -> Value {
    let mut v = json!({"event_id": id, "lead_id": lead, "type": ty, "occurred_at": iso(at)});
    if let Value::Object(m) = extra {
        for (k, x) in m {
            v[k] = x;
        }
    }
    v
}

/// A profile with fit 20: the title "Director of Operations" (+20), a company
/// e-mail address.
pub fn fit20() -> Value {
    json!({"email": "ann@acme-industrial.com", "job_title": "Director of Operations"})
}

/// A profile with fit 35: industry food (+15), "Director of Operations" (+20).
pub fn fit35() -> Value {
    json!({"email": "ann@acme-industrial.com", "industry": "food", "job_title": "Director of Operations"})
}

/// A profile with fit 50: 300 employees (+15), food (+15), director (+20).
pub fn fit50() -> Value {
    json!({"email": "ann@acme-industrial.com", "employees": 300, "industry": "food",
           "job_title": "Director of Operations"})
}

/// One partition's engine and the status records it emitted.
pub struct Sim {
    pub engine: Engine,
    pub out: Vec<StatusChange>,
    /// SLA breaches set aside by [`Sim::take`], for [`Sim::take_breaches`].
    breaches: Vec<StatusChange>,
    next_id: u64,
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

impl Sim {
    /// The default model, allowed lateness 0 (like `leadscore score`).
    pub fn new() -> Sim {
        Sim::with_model(Model::default_model(), 0)
    }

    pub fn with_toml(toml: &str) -> Sim {
        let model =
            Model::from_toml(toml).unwrap_or_else(|e| panic!("test model does not load: {e}"));
        Sim::with_model(model, 0)
    }

    pub fn with_model(model: Model, lateness: Micros) -> Sim {
        Sim {
            engine: Engine::with_lateness(Arc::new(model), lateness),
            out: Vec::new(),
            breaches: Vec::new(),
            next_id: 0,
        }
    }

    /// Folds one event given as JSON.
    pub fn send(&mut self, event: Value) -> Outcome {
        let bytes = serde_json::to_vec(&event).expect("json");
        let e = decode_json(&bytes)
            .unwrap_or_else(|err| panic!("test event {event} does not decode: {err}"));
        self.engine.fold(&e, &mut self.out)
    }

    /// A fresh event id (`auto-N`).
    pub fn fresh_id(&mut self) -> String {
        self.next_id += 1;
        format!("auto-{}", self.next_id)
    }

    /// Sends an event with a fresh id.
    pub fn at(&mut self, lead: &str, ty: &str, at: Micros, extra: Value) -> Outcome {
        let id = self.fresh_id();
        self.send(ev(&id, lead, ty, at, extra))
    }

    pub fn profile(&mut self, lead: &str, at: Micros, profile: Value) -> Outcome {
        self.at(lead, "profile_updated", at, json!({ "profile": profile }))
    }

    pub fn criteria(&mut self, lead: &str, at: Micros, criteria: Value) -> Outcome {
        self.at(
            lead,
            "qualification_updated",
            at,
            json!({ "criteria": criteria }),
        )
    }

    pub fn all_criteria(&mut self, lead: &str, at: Micros) -> Outcome {
        self.criteria(
            lead,
            at,
            json!({"budget": true, "authority": true, "need": true, "timing": true}),
        )
    }

    /// `page_view` of `/pricing`: +5.
    pub fn pricing(&mut self, lead: &str, at: Micros) -> Outcome {
        self.at(
            lead,
            "page_view",
            at,
            json!({"attributes": {"url": "/pricing"}}),
        )
    }

    /// `page_view` of a page no rule scores: moves the lead's time only.
    pub fn blog(&mut self, lead: &str, at: Micros) -> Outcome {
        self.at(
            lead,
            "page_view",
            at,
            json!({"attributes": {"url": "/blog/post-1"}}),
        )
    }

    /// `demo_requested`: +20.
    pub fn demo(&mut self, lead: &str, at: Micros) -> Outcome {
        self.at(lead, "demo_requested", at, json!({}))
    }

    /// `webinar_attended`: +15.
    pub fn webinar(&mut self, lead: &str, at: Micros) -> Outcome {
        self.at(
            lead,
            "webinar_attended",
            at,
            json!({"attributes": {"webinar": "w-7"}}),
        )
    }

    /// `content_download` of a whitepaper: +3.
    pub fn whitepaper(&mut self, lead: &str, at: Micros) -> Outcome {
        self.at(
            lead,
            "content_download",
            at,
            json!({"attributes": {"asset_type": "whitepaper"}}),
        )
    }

    pub fn open(&mut self, lead: &str, at: Micros) -> Outcome {
        self.at(lead, "email_opened", at, json!({}))
    }

    pub fn bare(&mut self, lead: &str, ty: &str, at: Micros) -> Outcome {
        self.at(lead, ty, at, json!({}))
    }

    pub fn rejected(&mut self, lead: &str, at: Micros, reason: &str) -> Outcome {
        self.at(lead, "sales_rejected", at, json!({ "reason": reason }))
    }

    /// Profile fit 20 + demo (20) + webinar (15), all at `at`: the lead
    /// becomes an MQL at `at` with total 55, fit 20, engagement 35 (warm).
    pub fn make_mql(&mut self, lead: &str, at: Micros) {
        self.profile(lead, at, fit20());
        self.demo(lead, at);
        self.webinar(lead, at);
    }

    /// Moves the watermark (fires due timers).
    pub fn advance(&mut self, t: Micros) {
        self.engine.advance_to(t, &mut self.out);
    }

    /// The stage changes emitted since the last call. SLA breaches are set
    /// aside for [`Sim::take_breaches`]: the stage tests are about stages.
    pub fn take(&mut self) -> Vec<StatusChange> {
        let (breaches, changes) = std::mem::take(&mut self.out)
            .into_iter()
            .partition(StatusChange::is_breach);
        self.breaches.extend::<Vec<_>>(breaches);
        changes
    }

    /// Every record emitted since the last call, breaches included, in order.
    pub fn take_all(&mut self) -> Vec<StatusChange> {
        let mut all = std::mem::take(&mut self.breaches);
        assert!(all.is_empty(), "take_all after take: {all:#?}");
        all.append(&mut self.out);
        all
    }

    /// The SLA breaches emitted since the last call (set aside by
    /// [`Sim::take`], or still in `out`).
    pub fn take_breaches(&mut self) -> Vec<StatusChange> {
        self.take();
        std::mem::take(&mut self.breaches)
    }

    /// Exactly one change since the last call.
    #[track_caller]
    pub fn take_one(&mut self) -> StatusChange {
        let mut v = self.take();
        assert_eq!(v.len(), 1, "expected exactly one change, got {v:#?}");
        v.pop().expect("one")
    }

    /// No change since the last call.
    #[track_caller]
    pub fn none(&mut self) {
        let v = self.take();
        assert!(v.is_empty(), "expected no change, got {v:#?}");
    }

    pub fn stage(&self, lead: &str) -> Stage {
        self.engine.lead(lead).expect("lead exists").stage()
    }

    pub fn explain(&self, lead: &str, at: Option<Micros>) -> Explanation {
        self.engine.explain(lead, at).expect("lead exists")
    }

    pub fn fit(&self, lead: &str) -> f64 {
        self.explain(lead, None).score.fit
    }

    /// Engagement at the lead's own time (or at `at`, if later).
    pub fn engagement(&self, lead: &str, at: Option<Micros>) -> f64 {
        self.explain(lead, at).score.engagement
    }
}

/// Asserts the parts of a change that identify it.
#[track_caller]
pub fn assert_change(c: &StatusChange, lead: &str, from: Stage, to: Stage, at: Micros) {
    assert_eq!(c.lead_id, lead, "{c:#?}");
    assert_eq!((c.from, c.to), (from, to), "{c:#?}");
    assert_eq!(iso(c.occurred_at), iso(at), "occurred_at of {c:#?}");
    assert_eq!(c.change_id, format!("{}:{}", c.lead_id, c.sequence));
}

/// A change to a stage without route and SLA (§4: null on the others).
#[track_caller]
pub fn assert_no_route(c: &StatusChange) {
    assert_eq!(c.route, None, "{c:#?}");
    assert_eq!(c.follow_up_by, None, "{c:#?}");
}

#[track_caller]
pub fn assert_follow_up(c: &StatusChange, route: &str, by: &str) {
    assert_eq!(c.route.as_deref(), Some(route), "{c:#?}");
    assert_eq!(
        c.follow_up_by.map(iso).as_deref(),
        Some(by),
        "follow_up_by of {c:#?}"
    );
}
