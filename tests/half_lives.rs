//! Per-group half-lives (issue 18, item 3): a rule group may decay with a
//! half-life of its own ("a demo request may matter longer than a page
//! view"). Every expectation is computed by hand from the model below; the
//! arithmetic is in the comments.
//!
//! The model: page views of /pricing +10 with `[engagement] half_life`
//! 30 days; demo requests +60 in group `sales_touch` (90 days); an
//! unsubscribe −40 in group `opt_out` (1 day, a short-lived penalty).
//! T = Monday 2026-03-02T14:00:00Z, D = 1 day = 86,400,000,000 µs. A bound
//! b is met within 1e-9, so decay crosses it at the first whole
//! microsecond Δ at which fit + E(Δ) is on the other side of b − 1e-9.
//! The instants below are that root, found with Python `mpmath` at 60
//! digits (`findroot`), rounded up to the next whole microsecond.

mod helpers;

use helpers::*;
use leadscore::codec::{encode_score_json, encode_score_proto, pb};
use leadscore::engine::calllist::{self, CallListQuery};
use leadscore::engine::snapshot;
use leadscore::time::Micros;
use leadscore::{Engine, Model, ScoreRecord, Stage};
use prost::Message;
use serde_json::json;

const MODEL: &str = r#"
version = "half-lives-1"

[[bands]]
name = "cold"

[[bands]]
name = "warm"
at_least = 50

[[bands]]
name = "hot"
at_least = 75

[engagement]
half_life = "30d"

[[engagement.groups]]
name = "sales_touch"
half_life = "90d"

[[engagement.groups]]
name = "opt_out"
half_life = "1d"

[[engagement.rules]]
name = "pricing"
event = "page_view"
attributes = { url = { contains = "/pricing" } }
points = 10

[[engagement.rules]]
name = "demo"
event = "demo_requested"
points = 60
group = "sales_touch"

[[engagement.rules]]
name = "unsubscribed"
event = "unsubscribed"
points = -40
group = "opt_out"

[new_business]
mql_min_total = 1000
mql_min_fit = 0
mql_min_engagement = 0
"#;

/// A simulation whose engine keeps the score stream.
fn scored(toml: &str) -> Sim {
    let mut sim = Sim::with_toml(toml);
    sim.engine.track_scores();
    sim
}

/// What a commit writes to the score topic.
fn commit(sim: &mut Sim) -> Vec<ScoreRecord> {
    let mut records = Vec::new();
    sim.engine.drain_scores(|r| records.push(r));
    sim.engine.drain_dirty(|_| {});
    records
}

#[track_caller]
fn one(records: Vec<ScoreRecord>) -> ScoreRecord {
    assert_eq!(records.len(), 1, "expected one record, got {records:#?}");
    records.into_iter().next().expect("one")
}

fn pow2(x: f64) -> f64 {
    x.exp2()
}

#[test]
fn each_group_decays_with_its_own_half_life() {
    let t = t0();
    let mut sim = Sim::with_toml(MODEL);
    sim.demo("L", t);
    sim.pricing("L", t);
    close("at T", sim.engagement("L", None), 70.0);
    // T + 30 d: demo 60 · 2^(−30/90) = 47.6220, pricing 10 · 2^(−1) = 5.
    close(
        "T+30d",
        sim.engagement("L", Some(t + days(30))),
        60.0 * pow2(-1.0 / 3.0) + 5.0,
    );
    // T + 90 d: demo 30, pricing 10 · 2^(−3) = 1.25: 31.25.
    close("T+90d", sim.engagement("L", Some(t + days(90))), 31.25);
    // An event at T + 90 d moves the lead's clock: the same sum, each rule
    // decayed by its own factor (demo 30, pricing 1.25), then +10.
    sim.pricing("L", t + days(90));
    let x = sim.explain("L", None);
    close("pricing", x.engagement[0].points, 11.25);
    close("demo", x.engagement[1].points, 30.0);
    close("engagement", x.score.engagement, 41.25);
    // explain names each group's half-life where it differs from the model's.
    assert_eq!(x.engagement[0].group, None);
    assert_eq!(
        x.engagement[1].group.as_deref(),
        Some("sales_touch (half-life 90 days)")
    );
    assert_eq!(
        x.engagement[2].group.as_deref(),
        Some("opt_out (half-life 1 day)")
    );
}

#[test]
fn late_points_decay_with_their_rules_half_life() {
    let t = t0();
    let model = Model::from_toml(MODEL).expect("valid");
    let mut sim = Sim::with_model(model, days(30));
    sim.blog("L", t + days(20));
    // Both scored at T + 10 d, arriving after the lead's time T + 20 d:
    // demo 60 · 2^(−10/90), pricing 10 · 2^(−10/30) at T + 20 d.
    sim.demo("L", t + days(10));
    sim.pricing("L", t + days(10));
    let x = sim.explain("L", None);
    close("demo", x.engagement[1].points, 60.0 * pow2(-10.0 / 90.0));
    close("pricing", x.engagement[0].points, 10.0 * pow2(-10.0 / 30.0));
    // The same as in time order.
    let mut ordered = Sim::with_toml(MODEL);
    ordered.demo("L", t + days(10));
    ordered.pricing("L", t + days(10));
    close(
        "in order",
        ordered.engagement("L", Some(t + days(20))),
        x.score.engagement,
    );
}

#[test]
fn a_band_timer_fires_on_the_way_up_then_on_the_way_down() {
    let t = t0();
    let mut sim = scored(MODEL);
    // At T: demo +60 (90 d) and an unsubscribe −40 (1 d): 20, cold.
    // E(Δ) = 60 · 2^(−Δ/90D) − 40 · 2^(−Δ/D) rises as the penalty fades
    // (39.54 at T + 1 d, 56.48 at T + 5 d), then falls with the demo.
    sim.demo("L", t);
    sim.bare("L", "unsubscribed", t);
    let r = one(commit(&mut sim));
    assert_eq!((r.band.as_str(), r.engagement), ("cold", 20.0));
    // Warm once E(Δ) ≥ 50 − 1e-9: root Δ = 185,727,715,553.499 µs → …554.
    let up: Micros = t + 185_727_715_554;
    assert_eq!(
        r.next_deadline,
        Some(up),
        "{}",
        iso(r.next_deadline.unwrap())
    );
    // The record carries the engagement by half-life: a consumer projects
    // each with its own half-life and gets the engine's engagement.
    let v: serde_json::Value = serde_json::from_slice(&{
        let mut b = Vec::new();
        encode_score_json(&r, &mut b);
        b
    })
    .expect("json");
    assert_eq!(v["half_life"], json!(2_592_000));
    assert_eq!(
        v["components"],
        json!([
            { "half_life": 2_592_000, "engagement": 0.0 },
            { "half_life": 7_776_000, "engagement": 60.0 },
            { "half_life": 86_400, "engagement": -40.0 },
        ])
    );
    // The same in protobuf.
    let mut buf = Vec::new();
    encode_score_proto(&r, &mut buf);
    let m = pb::ScoreRecord::decode(buf.as_slice()).expect("decodes");
    assert_eq!(m.half_life_seconds, Some(2_592_000.0));
    let parts: Vec<(Option<f64>, f64)> = m
        .components
        .iter()
        .map(|c| (c.half_life_seconds, c.engagement))
        .collect();
    assert_eq!(
        parts,
        [
            (Some(2_592_000.0), 0.0),
            (Some(7_776_000.0), 60.0),
            (Some(86_400.0), -40.0)
        ]
    );
    for d in [1, 5, 20, 60] {
        close(
            "projected",
            r.engagement_at(t + days(d)),
            sim.engagement("L", Some(t + days(d))),
        );
    }
    close(
        "projected at T + 5 d",
        r.engagement_at(t + days(5)),
        60.0 * pow2(-5.0 / 90.0) - 40.0 * pow2(-5.0),
    );

    sim.advance(up - 1);
    assert!(commit(&mut sim).is_empty(), "not due a microsecond early");
    sim.advance(up);
    let r = one(commit(&mut sim));
    assert_eq!((r.band.as_str(), r.as_of), ("warm", up));
    assert!(
        r.total >= 50.0 - 1e-9 && r.total < 50.0 + 1e-6,
        "{}",
        r.total
    );
    // Cold again once E(Δ) < 50 − 1e-9 on the way down: root
    // Δ = 2,045,354,869,005.813 µs → …006 (about T + 23.67 d).
    let down: Micros = t + 2_045_354_869_006;
    assert_eq!(
        r.next_deadline,
        Some(down),
        "{}",
        iso(r.next_deadline.unwrap())
    );
    sim.advance(down - 1);
    assert!(commit(&mut sim).is_empty());
    assert_eq!(sim.explain("L", Some(down - 1)).band, "warm");
    sim.advance(down);
    let r = one(commit(&mut sim));
    assert_eq!((r.band.as_str(), r.as_of), ("cold", down));
    // From here on E only falls towards 0: no band change, no deadline.
    assert_eq!(r.next_deadline, None);
    sim.none();
}

#[test]
fn demote_on_score_at_the_instant_a_turning_sum_falls_below_the_threshold() {
    // The demo in a 20-day group, the penalty −20: an MQL at 40 (≥ 40) that
    // stays while its total is at least 35.
    let toml = MODEL
        .replace("half_life = \"90d\"", "half_life = \"20d\"")
        .replace("points = -40", "points = -20")
        .replace(
            "mql_min_total = 1000",
            "mql_min_total = 40\ndemotion_total = 35",
        )
        + "[requalify]\ndemote_on_score = true\n";
    let t = t0();
    let mut sim = Sim::with_toml(&toml);
    sim.demo("L", t);
    assert_change(&sim.take_one(), "L", Stage::Lead, Stage::Mql, t);
    // The penalty at T: 40, still at least 35. E(Δ) = 60 · 2^(−Δ/20D) −
    // 20 · 2^(−Δ/D) first rises (the penalty fades), then falls below
    // 35 − 1e-9 at Δ = 1,343,676,239,709.713 µs → …710 (T + 15.55 d, before
    // the requalification deadline at T + 30 d).
    sim.bare("L", "unsubscribed", t);
    sim.none();
    // The call list carries the same split: 0 at 30 d, 60 at 20 d, −20 at 1 d.
    let list = calllist::draw([&sim.engine], sim.engine.model(), &CallListQuery::default())
        .expect("default query");
    assert_eq!(list.half_life_seconds, Some(2_592_000.0));
    let [entry] = &list.leads[..] else {
        panic!("{list:#?}")
    };
    assert_eq!(entry.engagement, 40.0);
    let parts: Vec<(Option<f64>, f64)> = entry
        .components
        .iter()
        .map(|c| (c.half_life_seconds, c.engagement))
        .collect();
    assert_eq!(
        parts,
        [
            (Some(2_592_000.0), 0.0),
            (Some(1_728_000.0), 60.0),
            (Some(86_400.0), -20.0)
        ]
    );
    let due: Micros = t + 1_343_676_239_710;
    sim.advance(due - 1);
    sim.none();
    // The engine's own sums on either side of the instant.
    let before = sim.explain("L", Some(due - 1)).score.total;
    let at = sim.explain("L", Some(due)).score.total;
    assert!(before >= 35.0 - 1e-9 && at < 35.0 - 1e-9, "{before} {at}");
    sim.advance(due);
    assert_change(&sim.take_one(), "L", Stage::Mql, Stage::Recycled, due);
}

#[test]
fn a_restored_lead_keeps_its_rates_and_timer() {
    let t = t0();
    let mut sim = scored(MODEL);
    sim.demo("L", t);
    sim.bare("L", "unsubscribed", t);
    sim.pricing("L", t + days(2));
    commit(&mut sim);
    let model = sim.engine.model().clone();
    let lead = sim.engine.lead("L").expect("lead");
    let mut bytes = Vec::new();
    snapshot::encode(lead, &model, &mut bytes);
    let restored = snapshot::decode(&bytes, &model).expect("decodes");
    assert_eq!(&restored, lead);
    let mut engine = Engine::new(model);
    engine.track_scores();
    engine.restore(restored);
    engine.set_watermark(sim.engine.watermark());
    // Both engines write the same records at the same instants, to T + 60 d.
    let mut a = Vec::new();
    let mut b = Vec::new();
    let mut out = Vec::new();
    for d in 3..=60 {
        sim.advance(t + days(d));
        a.extend(commit(&mut sim));
        engine.advance_to(t + days(d), &mut out);
        engine.drain_scores(|r| b.push(r));
        engine.drain_dirty(|_| {});
    }
    assert_eq!(a, b);
    // At T + 2 d: 60 · 2^(−2/90) − 40 · 2^(−2) + 10 = 59.08, warm; warm
    // until the demo and the page view have decayed below 50, some days on.
    let [r] = &a[..] else { panic!("{a:#?}") };
    assert_eq!(r.band, "cold");
    assert!(
        r.as_of > t + days(3) && r.as_of < t + days(60),
        "{}",
        iso(r.as_of)
    );
}

#[test]
fn group_half_lives_are_checked_with_the_key_named() {
    let err = |groups: &str| {
        Model::from_toml(&format!(
            "version = \"x\"\n{groups}\n[[engagement.rules]]\nname = \"a\"\nevent = \"e\"\npoints = 1\ngroup = \"g0\"\n"
        ))
        .unwrap_err()
        .to_string()
    };
    let e = err("[[engagement.groups]]\nname = \"g0\"\nhalf_life = \"7\"\n");
    assert!(
        e.contains("engagement.groups[0].half_life") && e.contains("unit"),
        "{e}"
    );
    let e = err("[[engagement.groups]]\nname = \"g0\"\nhalf_life = \"0d\"\n");
    assert!(e.contains("engagement.groups[0].half_life"), "{e}");
    // At most 8 distinct half-lives: the model's and 7 of groups.
    let mut groups = String::new();
    let mut rules = String::new();
    for i in 0..8 {
        groups += &format!(
            "[[engagement.groups]]\nname = \"g{i}\"\nhalf_life = \"{}d\"\n",
            i + 1
        );
        rules += &format!(
            "[[engagement.rules]]\nname = \"r{i}\"\nevent = \"e\"\npoints = 1\ngroup = \"g{i}\"\n"
        );
    }
    let e = Model::from_toml(&format!("version = \"x\"\n{groups}{rules}"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("engagement.groups[7].half_life") && e.contains("at most 8"),
        "{e}"
    );
    // "none" and a group with the model's own half-life are fine; the
    // latter adds no rate.
    let m = Model::from_toml(
        "version = \"x\"\n[[engagement.groups]]\nname = \"g0\"\nhalf_life = \"30d\"\n[[engagement.groups]]\nname = \"g1\"\nhalf_life = \"none\"\n[[engagement.rules]]\nname = \"a\"\nevent = \"e\"\npoints = 1\ngroup = \"g0\"\n",
    )
    .expect("valid");
    assert!(!m.multi_rate());
}

#[test]
fn check_names_the_groups_with_their_own_half_life() {
    let dir = std::env::temp_dir().join(format!("leadscore-half-lives-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.toml");
    std::fs::write(&path, MODEL).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .arg("check")
        .arg(&path)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("half-life 30 days (sales_touch: 90 days, opt_out: 1 day)"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
