//! The score stream (issue 16): when a lead's score record is due, band
//! changes by decay at the exact microsecond, and `demote_on_score`.
//!
//! Conventions as in `tests/stages.rs`: T = Monday 2026-03-02T14:00:00Z
//! ([`t0`]), half-life h = 30 days = 2,592,000,000,000 µs, so engagement E
//! scored at T is worth E · 2^(−Δ/h) at T + Δ. A threshold "meets" within
//! 1e-9, so decay crosses a bound b at the first whole microsecond Δ with
//! fit + E · 2^(−Δ/h) < b − 1e-9, i.e. Δ > h · log2(E / (b − 1e-9 − fit)).
//! The instants below are that expression, evaluated to 50 digits (Python
//! `decimal`), rounded up to the next whole microsecond.

mod helpers;

use helpers::*;
use leadscore::engine::snapshot;
use leadscore::model::DEFAULT_MODEL_TOML;
use leadscore::time::{Micros, DAY};
use leadscore::{Engine, Model, ScoreRecord, Stage};
use serde_json::json;

/// A simulation whose engine keeps the score stream.
fn scored(toml: Option<&str>) -> Sim {
    let mut sim = match toml {
        Some(t) => Sim::with_toml(t),
        None => Sim::new(),
    };
    sim.engine.track_scores();
    sim
}

/// What a commit writes to the score topic: the due records, then the
/// changelog drain that ends the interval.
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

fn with_demote_on_score(toml: &str) -> String {
    let out = toml.replace("demote_on_score = false", "demote_on_score = true");
    assert_ne!(out, toml);
    out
}

/// The default model with `unsubscribed` worth −30 points.
fn with_negative_rule(toml: &str) -> String {
    let rule = "[[engagement.rules]]\nname = \"unsubscribed\"\nevent = \"unsubscribed\"\npoints = -30\n\n[[engagement.rules]]";
    let out = toml.replacen("[[engagement.rules]]", rule, 1);
    assert_ne!(out, toml);
    out
}

#[test]
fn first_event_writes_a_record_with_the_fields_a_crm_needs() {
    let t = t0();
    let mut sim = scored(None);
    // fit 20 (director) + pricing page 5 = 25: cold, stage lead.
    sim.profile("L", t, fit20());
    sim.pricing("L", t);
    let r = one(commit(&mut sim));
    assert_eq!(r.lead_id, "L");
    assert_eq!(r.stage, Stage::Lead);
    assert_eq!((r.fit, r.engagement, r.total), (20.0, 5.0, 25.0));
    assert_eq!(r.band, "cold");
    assert_eq!(iso(r.as_of), iso(t));
    assert_eq!(r.model_version, "default-1");
    // Warm at 50 is never reached by decay: no deadline of any kind.
    assert_eq!(r.next_deadline, None);
    let v: serde_json::Value = serde_json::from_slice(&{
        let mut b = Vec::new();
        leadscore::codec::encode_score_json(&r, &mut b);
        b
    })
    .expect("json");
    assert_eq!(v["half_life"], json!(2_592_000), "seconds: {v}");
    assert_eq!(v["as_of"], json!("2026-03-02T14:00:00Z"));
    assert_eq!(
        v["top_contributors"][0]["rule"],
        json!("title_director_of_operations")
    );
    // Nothing new: nothing due.
    assert!(commit(&mut sim).is_empty());
}

#[test]
fn min_delta_one_point_by_default() {
    let t = t0();
    let mut sim = scored(None);
    sim.profile("L", t, fit20());
    sim.pricing("L", t);
    assert_eq!(one(commit(&mut sim)).total, 25.0);
    // +1 day, an unscored event: 20 + 5 · 2^(−1/30) = 24.8856: moved 0.114 < 1.
    sim.bare("L", "page_view", t + days(1));
    assert!(commit(&mut sim).is_empty());
    // +10 days: 20 + 5 · 2^(−1/3) = 23.9685: moved 1.03 ≥ 1 since the last record.
    sim.bare("L", "page_view", t + days(10));
    let r = one(commit(&mut sim));
    close("total", r.total, 20.0 + 5.0 * 2f64.powf(-1.0 / 3.0));
    assert_eq!(iso(r.as_of), iso(t + days(10)));
    // A stage change is always due, whatever the total did: +10 days, demo
    // (+20) and webinar (+15) make an MQL.
    sim.demo("L", t + days(10));
    sim.webinar("L", t + days(10));
    let r = one(commit(&mut sim));
    assert_eq!(r.stage, Stage::Mql);
}

#[test]
fn min_delta_from_the_model() {
    let toml = DEFAULT_MODEL_TOML.replace("score_min_delta = 1", "score_min_delta = 0.1");
    assert_ne!(toml, DEFAULT_MODEL_TOML);
    let t = t0();
    let mut sim = scored(Some(&toml));
    sim.profile("L", t, fit20());
    sim.pricing("L", t);
    commit(&mut sim);
    // 0.114 ≥ 0.1: due now.
    sim.bare("L", "page_view", t + days(1));
    close(
        "total",
        one(commit(&mut sim)).total,
        20.0 + 5.0 * 2f64.powf(-1.0 / 30.0),
    );
}

#[test]
fn band_timer_fires_at_the_computed_microsecond() {
    let t = t0();
    let mut sim = scored(None);
    // fit 50 + demo 20 + webinar 15 = 85: hot (≥ 75), an MQL at T.
    sim.profile("L", t, fit50());
    sim.demo("L", t);
    sim.webinar("L", t);
    assert_eq!(sim.take().len(), 1, "lead → mql");
    // Hot until 50 + 35 · 2^(−Δ/h) < 75 − 1e-9:
    // Δ > h · log2(35 / (25 − 1e-9)) = 1,258,226,336,174.845 µs → 1,258,226,336,175.
    let due: Micros = t + 1_258_226_336_175;
    let r = one(commit(&mut sim));
    assert_eq!((r.band.as_str(), r.stage), ("hot", Stage::Mql));
    assert_eq!(
        r.next_deadline,
        Some(due),
        "{} vs {}",
        iso(r.next_deadline.unwrap_or(0)),
        iso(due)
    );

    sim.advance(due - 1);
    assert!(commit(&mut sim).is_empty(), "not due a microsecond early");
    assert_eq!(sim.explain("L", Some(due - 1)).band, "hot");

    sim.advance(due);
    let r = one(commit(&mut sim));
    assert_eq!(r.band, "warm");
    assert_eq!(r.as_of, due);
    assert!(
        r.total < 75.0 - 1e-9 && r.total > 75.0 - 1e-6,
        "{}",
        r.total
    );
    // explain at the same instant says the same.
    let x = sim.explain("L", Some(due));
    assert_eq!((x.band.as_str(), x.score.total), ("warm", r.total));
    // Nothing on the status topic, and the lead's own clock has not moved.
    sim.none();
    assert_eq!(sim.explain("L", None).at, iso(t));
    // Warm → cold would need 50 + e < 50: never. Next: the requalification at T + 30 d.
    assert_eq!(r.next_deadline, Some(t + days(30)));
}

#[test]
fn band_timer_moves_with_new_points_and_fires_once() {
    let t = t0();
    let mut sim = scored(None);
    // fit 20 + 35 = 55, warm MQL. Warm until 20 + 35 · 2^(−Δ/h) < 50 − 1e-9:
    // Δ > h · log2(35 / (30 − 1e-9)) = 576,441,156,228.722 µs → …229.
    sim.make_mql("L", t);
    sim.take_one();
    assert_eq!(
        one(commit(&mut sim)).next_deadline,
        Some(t + 576_441_156_229)
    );
    // At T + 1 d a whitepaper (+3): the band holds longer. Engagement at T + 1 d
    // is 35 · 2^(−1/30) + 3 = E; warm until E · 2^(−Δ'/h) < 30 − 1e-9 (Δ' from T + 1 d):
    // E = 37.2006... ; Δ' = h · log2(E / (30 − 1e-9)) = 804,461,795,168.908 µs
    // (python: 2592e9 * log2((35 * 2 ** (-1/30) + 3) / (30 - 1e-9))), so the
    // band changes at T + 1 d + 804,461,795,169 µs.
    sim.whitepaper("L", t + days(1));
    let later = t + days(1) + 804_461_795_169;
    let r = one(commit(&mut sim));
    assert_eq!(r.next_deadline, Some(later));
    // The old instant passes without a record; the new one writes the band.
    sim.advance(t + 576_441_156_229);
    assert!(commit(&mut sim).is_empty());
    sim.advance(later);
    let r = one(commit(&mut sim));
    assert_eq!((r.band.as_str(), r.as_of), ("cold", later));
    sim.advance(t + days(29));
    assert!(commit(&mut sim).is_empty(), "the band timer fires once");
}

#[test]
fn negative_points_change_the_band_at_once() {
    let t = t0();
    let mut sim = scored(Some(&with_negative_rule(DEFAULT_MODEL_TOML)));
    sim.make_mql("L", t);
    sim.take_one();
    assert_eq!(one(commit(&mut sim)).band, "warm");
    // +1 d: 20 + 35 · 2^(−1/30) − 30 = 24.2006: cold at the event.
    sim.bare("L", "unsubscribed", t + days(1));
    let r = one(commit(&mut sim));
    assert_eq!((r.band.as_str(), r.as_of), ("cold", t + days(1)));
    close(
        "total",
        r.total,
        20.0 + 35.0 * 2f64.powf(-1.0 / 30.0) - 30.0,
    );
    // Default: the MQL stays until its requalification.
    assert_eq!(r.stage, Stage::Mql);
    sim.none();
}

#[test]
fn demote_on_score_at_the_event_that_drops_the_total() {
    let t = t0();
    let toml = with_demote_on_score(&with_negative_rule(DEFAULT_MODEL_TOML));
    let mut sim = scored(Some(&toml));
    sim.make_mql("L", t);
    sim.take_one();
    // +1 d: total 24.2006 < 40 (the demotion threshold): home stage at once.
    sim.at(
        "L",
        "unsubscribed",
        t + days(1),
        json!({"event_id": "unsub-1"}),
    );
    let c = sim.take_one();
    assert_change(&c, "L", Stage::Mql, Stage::Recycled, t + days(1));
    assert_eq!(c.cause_event_id.as_deref(), Some("unsub-1"));
    // 35 · 2^(−1/30) − 30 = 4.2006 is also below the engagement minimum 5.
    assert_eq!(
        c.reasons,
        vec![
            "demote_on_score: engagement 4.2 < minimum 5",
            "demote_on_score: total 24.2 < demotion threshold 40"
        ]
    );
    let r = one(commit(&mut sim));
    assert_eq!(r.stage, Stage::Recycled);
}

#[test]
fn demote_on_score_at_the_decay_instant_default_at_requalification() {
    let t = t0();
    // fit 20 + 35 = 55, an MQL at T. Total below 40 once
    // 20 + 35 · 2^(−Δ/h) < 40 − 1e-9: Δ > h · log2(35 / (20 − 1e-9))
    // = 2,092,663,958,160.283 µs → 2,092,663,958,161 (24.2 days, before the
    // requalification deadline at 30 days). Engagement stays ≥ 5 until 84 days.
    let due = t + 2_092_663_958_161;
    let mut on = scored(Some(&with_demote_on_score(DEFAULT_MODEL_TOML)));
    on.make_mql("L", t);
    on.take_one();
    on.advance(due - 1);
    on.none();
    on.advance(due);
    let c = on.take_one();
    assert_change(&c, "L", Stage::Mql, Stage::Recycled, due);
    assert_eq!(c.cause_event_id, None);

    // Default: nothing until the deadline, T + 30 d (total 20 + 17.5 = 37.5 < 40).
    let mut off = Sim::new();
    off.make_mql("L", t);
    off.take_one();
    off.advance(t + days(30) - 1);
    off.none();
    off.advance(t + days(30));
    assert_change(
        &off.take_one(),
        "L",
        Stage::Mql,
        Stage::Recycled,
        t + days(30),
    );
}

#[test]
fn demote_on_score_installed_base_by_engagement() {
    let t = t0();
    // The same without a score stream: demotion is a stage timer.
    let mut sim = Sim::with_toml(&with_demote_on_score(DEFAULT_MODEL_TOML));
    // deal_won at T: customer (installed base), quiet until T + 14 d.
    sim.bare("C", "deal_won", t);
    sim.take_one();
    // T + 15 d: demo (+20) → mql on the installed-base conditions (engagement ≥ 5).
    let mql = t + days(15);
    sim.demo("C", mql);
    assert_change(&sim.take_one(), "C", Stage::Customer, Stage::Mql, mql);
    // Installed base stays while engagement ≥ 5: 20 · 2^(−Δ/h) < 5 − 1e-9 at
    // Δ > h · log2(20 / (5 − 1e-9)) = 5,184,000,000,747.893 µs → …748: 748 µs
    // after the second requalification (T+15 d + 60 d, where 20 · 2^−2 = 5
    // meets the minimum, so it requalifies then, silently).
    let due = mql + 5_184_000_000_748;
    sim.advance(due - 1);
    sim.none();
    sim.advance(due);
    assert_change(&sim.take_one(), "C", Stage::Mql, Stage::Customer, due);
}

#[test]
fn demote_on_score_needs_hysteresis() {
    let toml = with_demote_on_score(DEFAULT_MODEL_TOML)
        .replace("demotion_total = 40", "demotion_total = 60");
    let e = Model::from_toml(&toml).expect_err("demotion above the MQL threshold");
    assert!(e.to_string().contains("new_business.demotion_total"), "{e}");
}

#[test]
fn the_score_stream_does_not_change_the_status_changes() {
    use leadscore::gen::{GenConfig, Generator};
    let events = Generator::new(GenConfig {
        seed: 16,
        leads: 300,
        events: 6_000,
        late_rate: 0.05,
        duplicate_rate: 0.02,
        ..GenConfig::default()
    })
    .all();
    for toml in [
        DEFAULT_MODEL_TOML.to_string(),
        with_demote_on_score(DEFAULT_MODEL_TOML),
    ] {
        let model = std::sync::Arc::new(Model::from_toml(&toml).expect("model"));
        let mut plain = Engine::with_lateness(model.clone(), DAY);
        let mut with = Engine::with_lateness(model, DAY);
        with.track_scores();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut records = 0;
        for (i, e) in events.iter().enumerate() {
            plain.fold(e, &mut a);
            with.fold(e, &mut b);
            if i % 100 == 99 {
                with.drain_scores(|_| records += 1);
                with.drain_dirty(|_| {});
            }
        }
        let end = events.iter().map(|e| e.occurred_at).max().expect("events") + 400 * DAY;
        plain.advance_to(end, &mut a);
        with.advance_to(end, &mut b);
        if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
            panic!("change {i} differs:\n{:?}\n{:?}", a[i], b[i]);
        }
        assert_eq!(a.len(), b.len());
        assert!(records > 300, "{records} records");
    }
}

#[test]
fn restored_state_keeps_the_band_timer_and_the_last_record() {
    let t = t0();
    let mut sim = scored(None);
    sim.profile("L", t, fit50());
    sim.demo("L", t);
    sim.webinar("L", t);
    commit(&mut sim);
    let model = sim.engine.model().clone();
    let mut bytes = Vec::new();
    snapshot::encode(sim.engine.lead("L").expect("lead"), &model, &mut bytes);
    let lead = snapshot::decode(&bytes, &model).expect("decodes");
    assert_eq!(&lead, sim.engine.lead("L").expect("lead"));
    let mut engine = Engine::new(model);
    engine.track_scores();
    engine.restore(lead);
    engine.set_watermark(t);
    // The record was written before the restore: nothing due until the band changes.
    let due: Micros = t + 1_258_226_336_175;
    let mut out = Vec::new();
    engine.advance_to(due, &mut out);
    let mut records = Vec::new();
    engine.drain_scores(|r| records.push(r));
    let r = one(records);
    assert_eq!((r.band.as_str(), r.as_of), ("warm", due));
}

#[test]
fn score_writes_each_leads_final_record_equal_to_explain() {
    use leadscore::codec::encode_event_json;
    use leadscore::gen::{GenConfig, Generator};
    let events = Generator::new(GenConfig {
        seed: 7,
        leads: 40,
        events: 600,
        late_rate: 0.0,
        span: 90 * DAY,
        ..GenConfig::default()
    })
    .all();
    let dir = std::env::temp_dir().join(format!("leadscore-scores-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("events.jsonl");
    let mut body = Vec::new();
    for e in &events {
        encode_event_json(e, &mut body);
        body.push(b'\n');
    }
    std::fs::write(&input, body).unwrap();
    let out = dir.join("scores.jsonl");
    let until = events.iter().map(|e| e.occurred_at).max().unwrap() + 60 * DAY;
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args([
            "score",
            "--input",
            input.to_str().unwrap(),
            "--until",
            &iso(until),
        ])
        .args(["--scores", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let leads: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e.lead_id.as_ref()).collect();
    assert_eq!(text.lines().count(), leads.len(), "one record per lead");
    let model = Model::default_model();
    let mut by_decay = 0;
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = r["lead_id"].as_str().unwrap();
        let as_of = ts(r["as_of"].as_str().unwrap());
        let x = leadscore::cli::explain(model.clone(), input.to_str().unwrap(), id, Some(as_of))
            .unwrap();
        let own = leadscore::cli::explain(model.clone(), input.to_str().unwrap(), id, Some(until))
            .unwrap();
        assert_eq!(r["stage"], json!(x.stage), "{id}");
        assert_eq!(r["band"], json!(x.band), "{id}");
        assert_eq!(r["total"], json!(x.score.total), "{id}");
        assert_eq!(r["engagement"], json!(x.score.engagement), "{id}");
        // With every timer up to `until` fired, the band at `until` is the record's.
        assert_eq!(r["band"], json!(own.band), "{id}");
        if as_of > ts(&sim_time(&model, &input, id)) {
            by_decay += 1;
        }
    }
    assert!(
        by_decay > 0,
        "some records are written by timers after the lead's last event"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The lead's own time after folding the file (no clock advance).
fn sim_time(model: &Model, input: &std::path::Path, id: &str) -> String {
    leadscore::cli::explain(model.clone(), input.to_str().unwrap(), id, None)
        .unwrap()
        .at
}

#[test]
fn state_written_without_a_score_stream_gets_its_band_timer_at_restore() {
    let t = t0();
    // Folded by an engine without a score stream (before it was turned on).
    let mut plain = Sim::new();
    plain.profile("L", t, fit50());
    plain.demo("L", t);
    plain.webinar("L", t);
    // Sales took the hand-off at once: no SLA breach fires in between.
    plain.bare("L", "sales_contacted", t);
    let model = plain.engine.model().clone();
    let mut bytes = Vec::new();
    snapshot::encode(plain.engine.lead("L").expect("lead"), &model, &mut bytes);
    let mut engine = Engine::new(model.clone());
    engine.track_scores();
    engine.restore(snapshot::decode(&bytes, &model).expect("decodes"));
    engine.set_watermark(t);
    // The same instant as `band_timer_fires_at_the_computed_microsecond`.
    let due: Micros = t + 1_258_226_336_175;
    let mut out = Vec::new();
    engine.advance_to(due - 1, &mut out);
    let mut records = Vec::new();
    engine.drain_scores(|r| records.push(r));
    assert!(records.is_empty(), "untouched, not yet due");
    engine.advance_to(due, &mut out);
    engine.drain_scores(|r| records.push(r));
    let r = one(records);
    assert_eq!(
        (r.band.as_str(), r.as_of, r.stage),
        ("warm", due, Stage::Mql)
    );
    assert!(out.is_empty());
}
