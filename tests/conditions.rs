//! The condition language, walked through the article's own definition
//! (`deploy/examples/good-lead-model.toml`, from "Wat is een goede lead?"):
//! MQL gates met one by one, a second touchpoint within and outside 30
//! days, "andere sectoren" disqualified, an installed-base lead acting
//! within and after 30 days. Every expectation is computed by hand from
//! the model file; the arithmetic is in the comments.
//!
//! The model: no decay (half_life "none"); demo 25, webinar 15, whitepaper
//! 5, pricing page 10, email reply and contact request 0. New business: an
//! MQL needs engagement ≥ 20 and the gates (100–1000 employees; food,
//! pharma, automotive or electronics; a production/plant/operations title;
//! two distinct touchpoints within 30 days), and stays one while the two
//! touchpoints are within 30 days (`demote_on_score`: it goes home the
//! instant one drops out). Installed base: an MQL after an action (demo,
//! contact request, pricing page) within 30 days, while it lasts. A window
//! of 30 days at t holds events after t − 30d, up to t. T = Monday
//! 2026-03-02T14:00:00Z.

mod helpers;

use helpers::*;
use leadscore::engine::snapshot;
use leadscore::time::Micros;
use leadscore::{Model, Stage};
use serde_json::{json, Value};

const MODEL: &str = include_str!("../deploy/examples/good-lead-model.toml");

fn sim() -> Sim {
    Sim::with_toml(MODEL)
}

fn plant_manager() -> Value {
    json!({
        "email": "an@bakkerij-food.nl",
        "employees": 250,
        "industry": "Food",
        "job_title": "Plant Manager",
    })
}

fn webinar(sim: &mut Sim, lead: &str, at: Micros) {
    sim.webinar(lead, at);
}

/// `page_view` of `/pricing`: +10 in this model.
fn pricing(sim: &mut Sim, lead: &str, at: Micros) {
    sim.pricing(lead, at);
}

#[test]
fn the_article_model_loads() {
    let m = Model::from_toml(MODEL).expect("the example model is valid");
    assert_eq!(m.new_business.mql_gates.len(), 4);
    assert_eq!(m.disqualify.rules.len(), 1);
    // Two distinct windows: touchpoints (every rule) and actions.
    assert_eq!(m.windows.list.len(), 2);
}

#[test]
fn gates_are_met_one_by_one_and_the_mql_goes_when_a_touchpoint_drops_out() {
    let t = t0();
    let mut sim = sim();
    // T: 250 employees (gate 1 holds); no industry, no title, no touchpoint.
    sim.profile(
        "A",
        t,
        json!({"email": "an@bakkerij-food.nl", "employees": 250}),
    );
    sim.none();
    // T+1d: demo → engagement 25 ≥ 20, but one touchpoint of two.
    sim.demo("A", t + days(1));
    sim.none();
    // T+2d: sector "Food" (case-insensitive): gate 2 holds.
    sim.profile("A", t + days(2), json!({"industry": "Food"}));
    sim.none();
    // T+3d: webinar → two touchpoints (demo T+1d, webinar T+3d), engagement
    // 40; the title gate still fails.
    webinar(&mut sim, "A", t + days(3));
    sim.none();
    let x = sim.explain("A", None);
    assert!(!x.meets_mql_conditions);
    let functie = x
        .conditions
        .iter()
        .find(|c| c.key == "new_business.mql_gates[2]")
        .expect("functie gate line");
    assert_eq!(functie.condition, "functie");
    assert_eq!(functie.value, "job_title: absent");
    assert!(!functie.holds);
    let touch = &x.conditions[3];
    assert_eq!(touch.key, "new_business.mql_gates[3]");
    assert_eq!(
        touch.value,
        "touchpoints in the last 30d: 2 of 2 — demo_requested, webinar_attended"
    );
    assert!(touch.holds);
    // T+4d: "Plant Manager" → every gate holds: MQL at T+4d, follow-up
    // within 24h (T+5d), total 40 = engagement (no fit rules), band cold.
    sim.profile("A", t + days(4), json!({"job_title": "Plant Manager"}));
    let c = sim.take_one();
    assert_change(&c, "A", Stage::Lead, Stage::Mql, t + days(4));
    assert_follow_up(&c, "new_business", &iso(t + days(5)));
    close("total", c.score.total, 40.0);
    assert_eq!(
        c.reasons,
        [
            "engagement 40 >= 20",
            "gate bedrijf 100-1000 medewerkers",
            "gate sector",
            "gate functie",
            "gate twee touchpoints: touchpoints in the last 30d: 2 of 2 — demo_requested, webinar_attended",
        ]
    );
    // The demo (T+1d) leaves the month at T+31d exactly: one touchpoint is
    // left, the stays_while rule fails, and the MQL goes home (recycled)
    // at that instant, not at its requalification deadline (T+34d).
    sim.advance(t + days(31) - 1);
    sim.none();
    sim.advance(t + days(31));
    let c = sim.take_one();
    assert_change(&c, "A", Stage::Mql, Stage::Recycled, t + days(31));
    assert_eq!(
        c.reasons,
        ["demote_on_score: fails stays_while twee touchpoints: touchpoints in the last 30d: 1 of 2 — webinar_attended"]
    );
    // Recycling starts afresh: the earlier touchpoints count no more.
    let x = sim.explain("A", None);
    assert_eq!(x.conditions[3].value, "touchpoints in the last 30d: 0 of 2");
}

#[test]
fn a_second_touchpoint_counts_within_30_days_not_after() {
    let t = t0();
    let mut sim = sim();
    // B: demo at T, pricing page at T+29d: the demo is inside (T > T−1d) →
    // two touchpoints, engagement 35: MQL at T+29d.
    sim.profile("B", t, plant_manager());
    sim.demo("B", t);
    sim.none();
    pricing(&mut sim, "B", t + days(29));
    let c = sim.take_one();
    assert_change(&c, "B", Stage::Lead, Stage::Mql, t + days(29));
    close("engagement", c.score.engagement, 35.0);
    // C: demo at T, pricing page at T+30d: at T+30d the window holds events
    // after T, so the demo is out: one touchpoint, no MQL (engagement 35
    // would be enough).
    sim.profile("C", t, plant_manager());
    sim.demo("C", t);
    pricing(&mut sim, "C", t + days(30));
    // (B's demo left its month at T+30d as well: B went home then.)
    let b = sim.take_one();
    assert_change(&b, "B", Stage::Mql, Stage::Recycled, t + days(30));
    assert_eq!(sim.stage("C"), Stage::Lead);
    // C's webinar at T+31d: pricing (T+30d) and webinar → two touchpoints;
    // engagement 25 + 10 + 15 = 50, band warm.
    webinar(&mut sim, "C", t + days(31));
    let c = sim.take_one();
    assert_change(&c, "C", Stage::Lead, Stage::Mql, t + days(31));
    close("engagement", c.score.engagement, 50.0);
    assert_eq!(c.band, "warm");
    assert_eq!(
        c.reasons.last().map(String::as_str),
        Some("gate twee touchpoints: touchpoints in the last 30d: 2 of 2 — webinar_attended, pricing_page")
    );
}

#[test]
fn another_sector_a_competitor_and_free_mail_disqualify_with_their_reason() {
    let t = t0();
    let mut sim = sim();
    // D: retail is not among the four sectors: "andere sector".
    let mut p = plant_manager();
    p["industry"] = json!("Retail");
    sim.profile("D", t, p);
    let c = sim.take_one();
    assert_change(&c, "D", Stage::Lead, Stage::Disqualified, t);
    assert_eq!(c.reasons, ["disqualified: andere sector"]);
    // Electronics is one of them: released at T+1d.
    sim.profile("D", t + days(1), json!({"industry": "electronics"}));
    let c = sim.take_one();
    assert_change(&c, "D", Stage::Disqualified, Stage::Lead, t + days(1));
    // No industry at all is not "another sector" (only a gate that fails).
    sim.profile("D2", t, json!({"email": "x@fabriek.nl", "employees": 300}));
    sim.none();

    // E: the company name is a competitor's, whatever its case, dots and
    // legal form: "RIVAAL software B.V." is "rivaal software".
    let mut p = plant_manager();
    p["company"] = json!("RIVAAL software B.V.");
    sim.profile("E", t, p);
    let c = sim.take_one();
    assert_change(&c, "E", Stage::Lead, Stage::Disqualified, t);
    assert_eq!(c.reasons, ["company name is a competitor's"]);
    // "Rivaal Software Services" is another company.
    let mut p = plant_manager();
    p["company"] = json!("Rivaal Software Services");
    sim.profile("E2", t, p);
    sim.none();

    // F: a Gmail address disqualifies, unless the lead is an eenmanszaak.
    let mut p = plant_manager();
    p["email"] = json!("jan@gmail.com");
    sim.profile("F", t, p);
    let c = sim.take_one();
    assert_eq!(c.reasons, ["free-mail domain gmail.com"]);
    sim.profile("F", t + days(1), json!({"legal_form": "Eenmanszaak"}));
    let c = sim.take_one();
    assert_change(&c, "F", Stage::Disqualified, Stage::Lead, t + days(1));
    // Under 50 employees still disqualifies (the fixed checks stay).
    sim.profile("F", t + days(2), json!({"employees": 12}));
    let c = sim.take_one();
    assert_eq!(c.reasons, ["employees 12 < 50"]);
}

#[test]
fn an_installed_base_lead_acting_within_and_after_30_days() {
    let t = t0();
    let mut sim = sim();
    // G is a customer: no action yet, no MQL (0 actions of 1).
    sim.profile("G", t, json!({"email": "g@klant.nl", "is_customer": true}));
    sim.none();
    // T+1d: pricing page → MQL at once, to account management within 4h.
    pricing(&mut sim, "G", t + days(1));
    let c = sim.take_one();
    assert_change(&c, "G", Stage::Lead, Stage::Mql, t + days(1));
    assert_follow_up(&c, "account_management", &iso(t + days(1) + hours(4)));
    assert_eq!(
        c.reasons,
        [
            "installed base",
            "engagement 10 >= 0",
            "gate actie in laatste 30 dagen: events in the last 30d: 1 of 1 — pricing_page",
        ]
    );
    // T+20d: a contact request (an action within 30 days): no change.
    sim.at("G", "contact_requested", t + days(20), json!({}));
    sim.none();
    // T+31d: the pricing page leaves the month, but the contact request
    // (T+20d) is inside: the requalification at T+31d (MQL at T+1d + 30d)
    // keeps the lead; nothing is emitted.
    sim.advance(t + days(31));
    sim.none();
    // T+50d: the contact request leaves the month: no action left, the MQL
    // goes home (recycled: the profile says customer, no deal_won) then.
    sim.advance(t + days(50) - 1);
    sim.none();
    sim.advance(t + days(50));
    let c = sim.take_one();
    assert_change(&c, "G", Stage::Mql, Stage::Recycled, t + days(50));
    assert_eq!(
        c.reasons,
        ["demote_on_score: fails stays_while actie in laatste 30 dagen: events in the last 30d: 0 of 1"]
    );
    // T+55d: a demo inside the quiet period (14d, until T+64d): no change.
    sim.demo("G", t + days(55));
    sim.none();
    // T+64d: the quiet period ends with the demo (T+55d) inside the month:
    // MQL at T+64d, engagement 25 (the fresh start at T+50d cleared the rest).
    sim.advance(t + days(64));
    let c = sim.take_one();
    assert_change(&c, "G", Stage::Recycled, Stage::Mql, t + days(64));
    close("engagement", c.score.engagement, 25.0);
    assert_eq!(
        c.reasons.last().map(String::as_str),
        Some("gate actie in laatste 30 dagen: events in the last 30d: 1 of 1 — demo_requested")
    );
}

/// A lead's remembered touchpoints survive the changelog: a restored
/// engine goes on exactly as the one that wrote the state.
#[test]
fn window_state_survives_a_restore() {
    let t = t0();
    let mut a = sim();
    a.profile("B", t, plant_manager());
    a.demo("B", t);
    pricing(&mut a, "B", t + days(29));
    assert_change(&a.take_one(), "B", Stage::Lead, Stage::Mql, t + days(29));
    let model = a.engine.model().clone();
    let lead = a.engine.lead("B").expect("lead");
    let mut bytes = Vec::new();
    snapshot::encode(lead, &model, &mut bytes);
    let restored = snapshot::decode(&bytes, &model).expect("decodes");
    // The state, remembered touchpoints included, reads back as written.
    let mut again = Vec::new();
    snapshot::encode(&restored, &model, &mut again);
    assert_eq!(again, bytes);
    assert_eq!(restored.time(), lead.time());
    let mut b = sim();
    b.engine.restore(restored);
    b.engine.set_watermark(a.engine.watermark());
    // Both: the demo leaves the month at T+30d, the MQL goes home then.
    for s in [&mut a, &mut b] {
        s.advance(t + days(30));
        let c = s.take_one();
        assert_change(&c, "B", Stage::Mql, Stage::Recycled, t + days(30));
    }
}

#[test]
fn conditions_are_checked_with_the_key_named() {
    let base = "version = \"x\"\n[[engagement.rules]]\nname = \"demo\"\nevent = \"demo_requested\"\npoints = 25\n";
    let err = |extra: &str| {
        Model::from_toml(&format!("{base}{extra}"))
            .unwrap_err()
            .to_string()
    };
    let e = err("[[new_business.mql_gates]]\ntouchpoints = { within = \"30d\", rules = [\"webinar\"], at_least = 1 }\n");
    assert!(
        e.contains("new_business.mql_gates[0].touchpoints.rules[0]") && e.contains("webinar"),
        "{e}"
    );
    let e =
        err("[[disqualify.rules]]\nname = \"busy\"\nevents = { within = \"30d\", at_least = 3 }\n");
    assert!(
        e.contains("disqualify.rules[0].events") && e.contains("not allowed"),
        "{e}"
    );
    let e = err("[[disqualify.rules]]\nfield = \"industry\"\nequals = \"retail\"\n");
    assert!(e.contains("disqualify.rules[0].name"), "{e}");
    let e = err("[[new_business.mql_gates]]\nfield = \"industry\"\nequals = \"food\"\nany = [{ field = \"x\", exists = true }]\n");
    assert!(
        e.contains("new_business.mql_gates[0]") && e.contains("more than one"),
        "{e}"
    );
    let e = err("[[installed_base.stays_while]]\nevents = { within = \"30\", at_least = 1 }\n");
    assert!(
        e.contains("installed_base.stays_while[0].events.within"),
        "{e}"
    );
    let e = err("[[sql.conditions]]\npoints = { within = \"7d\", at_least = 0 }\n");
    assert!(e.contains("sql.conditions[0].points.at_least"), "{e}");
    let e = err("[[new_business.mql_gates]]\ntouchpoints = { within = \"7d\", at_least = 2 }\n");
    assert!(e.contains("at_least") && e.contains("1 rules"), "{e}");
    let e = err("[[new_business.mql_gates]]\nall = []\n");
    assert!(e.contains("new_business.mql_gates[0].all"), "{e}");
    let e = err("[[new_business.mql_gates]]\nequals = \"food\"\n");
    assert!(e.contains("new_business.mql_gates[0]"), "{e}");
    let e = err("[disqualify]\ncompetitor_names = [\"...\"]\n");
    assert!(e.contains("disqualify.competitor_names[0]"), "{e}");
}

// ============================================================================
// Score limits: a group's and engagement's as a whole
// ============================================================================

const LIMITS: &str = r#"
version = "limits"
[engagement]
half_life = "10d"
limit = 30

[[engagement.groups]]
name = "web"
limit = 12

[[engagement.rules]]
name = "pricing"
event = "page_view"
attributes = { url = { contains = "/pricing" } }
points = 5
group = "web"

[[engagement.rules]]
name = "demo"
event = "demo_requested"
points = 20
"#;

#[test]
fn a_group_limit_and_the_engagement_limit_cap_what_counts() {
    let t = t0();
    let mut sim = Sim::with_toml(LIMITS);
    // Three pricing views at T: 5, 10, then 12 (the group's limit; +2).
    for _ in 0..3 {
        sim.pricing("L", t);
    }
    close("web at T", sim.engagement("L", None), 12.0);
    // A demo at T: 12 + 20 = 32 is over the limit of 30: the demo adds 18.
    sim.demo("L", t);
    close("engagement at T", sim.engagement("L", None), 30.0);
    let x = sim.explain("L", None);
    close("pricing", x.engagement[0].points, 12.0);
    assert_eq!(x.engagement[0].group.as_deref(), Some("web (limit 12)"));
    assert_eq!(x.engagement[1].group, None);
    close("demo", x.engagement[1].points, 18.0);
    // T+10d (one half-life): web 6, demo 9, engagement 15. A pricing view
    // adds 5 (web 11 ≤ 12); another adds only 1 (web 12).
    sim.pricing("L", t + days(10));
    close("web +5", sim.explain("L", None).engagement[0].points, 11.0);
    sim.pricing("L", t + days(10));
    close("web +1", sim.explain("L", None).engagement[0].points, 12.0);
    // Engagement 12 + 9 = 21; a demo would make 41: it adds 9 (to 30).
    sim.demo("L", t + days(10));
    close("engagement", sim.engagement("L", None), 30.0);
    close("demo", sim.explain("L", None).engagement[1].points, 18.0);
}

#[test]
fn limits_are_checked_with_the_key_named() {
    let e = Model::from_toml("version = \"x\"\n[engagement]\nlimit = 0\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("engagement.limit"), "{e}");
    let e = Model::from_toml(
        "version = \"x\"\n[[engagement.rules]]\nname = \"a\"\nevent = \"e\"\npoints = 1\ngroup = \"web\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("engagement.rules[0].group") && e.contains("web"),
        "{e}"
    );
    let e =
        Model::from_toml("version = \"x\"\n[[engagement.groups]]\nname = \"web\"\nlimit = -1\n")
            .unwrap_err()
            .to_string();
    assert!(e.contains("engagement.groups[0].limit"), "{e}");
}

// ============================================================================
// SQL conditions, `any`/`not`, events and points windows
// ============================================================================

const WINDOWS: &str = r#"
version = "windows"
[engagement]
half_life = "none"

[[engagement.rules]]
name = "demo"
event = "demo_requested"
points = 20

[[engagement.rules]]
name = "pricing"
event = "page_view"
attributes = { url = { contains = "/pricing" } }
points = 10

[[engagement.rules]]
name = "opens"
event = "email_opened"
every = 3
points = 5

[[engagement.rules]]
name = "unsubscribed"
event = "unsubscribed"
points = 0

[new_business]
mql_min_engagement = 10

[[new_business.mql_gates]]
name = "no unsubscribe today"
not = { events = { within = "1d", rules = ["unsubscribed"], at_least = 1 } }

[[sql.conditions]]
name = "hot week"
any = [
  { events = { within = "7d", rules = ["demo"], at_least = 2 } },
  { points = { within = "7d", at_least = 30 } },
]
"#;

#[test]
fn sql_conditions_count_scored_points_and_events_in_their_window() {
    let t = t0();
    let mut sim = Sim::with_toml(WINDOWS);
    // T: demo (20) → engagement 20 ≥ 10: MQL. The SQL condition: 1 demo of
    // 2, 20 points of 30 → not yet.
    sim.demo("S", t);
    assert_change(&sim.take_one(), "S", Stage::Lead, Stage::Mql, t);
    // T+1d: three opens; only the third scores (every 3rd): 25 points.
    for _ in 0..3 {
        sim.open("S", t + days(1));
    }
    sim.none();
    let x = sim.explain("S", None);
    let hot = x
        .conditions
        .iter()
        .find(|c| c.key == "sql.conditions[0]")
        .expect("line");
    assert_eq!(hot.condition, "hot week");
    assert_eq!(hot.value, "0 of 2 hold");
    // T+2d: pricing (10): 35 points in 7 days ≥ 30 → SQL.
    pricing(&mut sim, "S", t + days(2));
    let c = sim.take_one();
    assert_change(&c, "S", Stage::Mql, Stage::Sql, t + days(2));
    assert_eq!(c.reasons, ["sql condition hot week: 1 of 2 hold"]);
}

#[test]
fn a_negated_window_lets_a_lead_in_the_instant_its_event_drops_out() {
    let t = t0();
    let mut sim = Sim::with_toml(WINDOWS);
    // T: unsubscribed; T+1h: demo (20 ≥ 10), but the gate fails: an
    // unsubscribe within the last day.
    sim.at("U", "unsubscribed", t, json!({}));
    sim.demo("U", t + hours(1));
    sim.none();
    // At T+1d the unsubscribe is a day old: out of the window; the timer
    // re-evaluates the lead then, and it becomes an MQL at T+1d exactly.
    sim.advance(t + days(1) - 1);
    sim.none();
    sim.advance(t + days(1));
    let c = sim.take_one();
    assert_change(&c, "U", Stage::Lead, Stage::Mql, t + days(1));
    assert_eq!(
        c.reasons,
        [
            "engagement 20 >= 10",
            "gate no unsubscribe today: events in the last 1d: 0 of 1"
        ]
    );
}
