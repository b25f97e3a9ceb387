//! Forgetting leads (issue 17): erasure on request, its window, the change
//! ids of a lead that comes back, and retention of quiet leads. Every
//! expectation is worked out by hand in the comments.
//!
//! Conventions as in `tests/stages.rs`: T = Monday 2026-03-02T14:00:00Z
//! ([`t0`]); the default model (MQL at total ≥ 50 and fit ≥ 20, warm MQL
//! follow-up 3 working days, erasure window 30 days).

mod helpers;

use helpers::*;
use leadscore::codec::encode_change_json;
use leadscore::engine::snapshot;
use leadscore::time::{Micros, DAY};
use leadscore::{ChangeKind, Engine, Model, Outcome, Stage, StatusChange};
use serde_json::{json, Value};

fn erase(sim: &mut Sim, lead: &str, at: Micros, reason: Option<&str>) -> Outcome {
    let extra = match reason {
        Some(r) => json!({ "reason": r }),
        None => json!({}),
    };
    sim.at(lead, "lead_erased", at, extra)
}

fn as_json(c: &StatusChange) -> Value {
    let mut buf = Vec::new();
    encode_change_json(c, &mut buf);
    serde_json::from_slice(&buf).expect("a record is JSON")
}

const RETAIN_10D: &str = r#"
version = "retain-10d"
[retention]
inactive_after = "10d"
"#;

/// The default model with retention (its rules are the default's).
fn default_with(retention: &str) -> Model {
    let text = format!(
        "{}\n{retention}",
        leadscore::model::DEFAULT_MODEL_TOML
            .replace("version = \"default-1\"", "version = \"retain\"")
    );
    Model::from_toml(&text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn an_erasure_deletes_the_lead_and_says_so_once() {
    let mut sim = Sim::new();
    // T: fit 20 + demo 20 + webinar 15 = 55 → mql (L:1).
    sim.make_mql("L", t0());
    assert_change(&sim.take_one(), "L", Stage::Lead, Stage::Mql, t0());
    // T + 1 d: erased, with a reason.
    assert_eq!(
        erase(&mut sim, "L", t0() + DAY, Some("request 2026-117")),
        Outcome::Applied
    );
    let all = sim.take_all();
    assert_eq!(all.len(), 1, "{all:#?}");
    let r = &all[0];
    assert_eq!(r.kind, ChangeKind::LeadErased);
    // The record: the lead's last sequence (1), its stage then, the
    // erasure's time; no score (the lead is gone).
    let j = as_json(r);
    assert_eq!(
        j,
        json!({
            "kind": "lead_erased",
            "change_id": "L:1:erased",
            "lead_id": "L",
            "sequence": 1,
            "stage": "mql",
            "erased_at": iso(t0() + DAY),
            "reason": "request 2026-117",
            "cause_event_id": r.cause_event_id.clone().expect("the erasure's id"),
            "model_version": "default-1",
        })
    );
    // Nothing of it is left.
    assert!(sim.engine.lead("L").is_none());
    assert_eq!(sim.engine.lead_count(), 0);
    assert!(sim.engine.explain("L", None).is_none());
    let m = sim.engine.erased("L").expect("a marker");
    assert_eq!(m.erased_at, t0() + DAY);
    // The same erasure again (a redelivery): nothing.
    let first = r.cause_event_id.clone().unwrap();
    let again = sim.send(ev(&first, "L", "lead_erased", t0() + DAY, json!({})));
    assert_eq!(again, Outcome::Duplicate);
    assert!(sim.take_all().is_empty());
}

#[test]
fn events_within_the_window_are_dropped_and_a_later_one_starts_a_new_lead_with_new_ids() {
    let mut sim = Sim::new();
    sim.make_mql("L", t0()); // L:1, lead → mql
    sim.take();
    let erased_at = t0() + DAY;
    erase(&mut sim, "L", erased_at, None);
    sim.take_all();
    // A late event (before the erasure), a redelivered one, a new one two
    // days later, and one at exactly erased_at + 30 d: all at most the
    // window after the erasure → dropped, counted as erased.
    assert_eq!(sim.demo("L", t0()), Outcome::Erased);
    assert_eq!(sim.demo("L", t0() + 2 * DAY), Outcome::Erased);
    assert_eq!(
        sim.profile("L", erased_at + 30 * DAY, fit50()),
        Outcome::Erased
    );
    assert!(sim.engine.lead("L").is_none(), "no lead came back");
    assert_eq!(sim.engine.erased_events_dropped(), 3);
    assert!(sim.take_all().is_empty());
    // One microsecond later: a new lead. Its sequence continues the former
    // one's (1), so its first change is L:2, never L:1 again.
    let later = erased_at + 30 * DAY + 1;
    assert_eq!(sim.profile("L", later, fit20()), Outcome::Applied);
    assert_eq!(sim.demo("L", later), Outcome::Applied);
    sim.none(); // fit 20 + 20 = 40 < 50
    sim.webinar("L", later); // 55 → mql
    let c = sim.take_one();
    assert_eq!(c.change_id, "L:2");
    assert_eq!((c.from, c.to, c.sequence), (Stage::Lead, Stage::Mql, 2));
    // Its profile is the new one only: fit 20, not the former 50 (dropped).
    assert_eq!(sim.fit("L"), 20.0);
}

#[test]
fn timers_due_by_the_erasure_fire_first() {
    let mut sim = Sim::new();
    // Monday T: warm MQL (55), follow_up_by three working days later,
    // Thursday T + 3 d. Erased Friday T + 4 d: the breach (Thursday) comes
    // first, then the erasure.
    sim.make_mql("L", t0());
    sim.take();
    erase(&mut sim, "L", t0() + 4 * DAY, None);
    let all = sim.take_all();
    let kinds: Vec<(ChangeKind, String, Micros)> = all
        .iter()
        .map(|c| (c.kind, c.change_id.clone(), c.occurred_at))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (ChangeKind::SlaBreached, "L:1:sla".into(), t0() + 3 * DAY),
            (ChangeKind::LeadErased, "L:1:erased".into(), t0() + 4 * DAY),
        ]
    );
    // The erased lead's timers are gone: its requalification (T + 30 d)
    // never fires.
    sim.advance(t0() + 100 * DAY);
    assert!(sim.take_all().is_empty());
}

#[test]
fn an_erasure_of_an_unknown_lead_still_drops_its_events_for_the_window() {
    let mut sim = Sim::new();
    assert_eq!(erase(&mut sim, "X", t0(), None), Outcome::Applied);
    assert!(
        sim.take_all().is_empty(),
        "nothing to delete, nothing to say"
    );
    assert_eq!(sim.demo("X", t0() + DAY), Outcome::Erased);
    assert!(sim.engine.lead("X").is_none());
    // After the window: a new lead, from sequence 0.
    sim.make_mql("X", t0() + 31 * DAY);
    assert_eq!(sim.take_one().change_id, "X:1");
}

#[test]
fn erasing_one_lead_leaves_the_others_and_their_positions_are_reused() {
    let mut sim = Sim::new();
    for i in 0..50 {
        sim.make_mql(&format!("L{i}"), t0());
    }
    sim.take();
    for i in (0..50).step_by(2) {
        erase(&mut sim, &format!("L{i}"), t0() + DAY, None);
    }
    assert_eq!(sim.take_all().len(), 25);
    assert_eq!(sim.engine.lead_count(), 25);
    for i in 0..50 {
        let id = format!("L{i}");
        assert_eq!(sim.engine.lead(&id).is_some(), i % 2 == 1, "{id}");
    }
    // New leads take the freed positions; every lead is still found.
    for i in 0..25 {
        sim.make_mql(&format!("N{i}"), t0() + 2 * DAY);
    }
    assert_eq!(sim.engine.lead_count(), 50);
    for i in 0..25 {
        assert_eq!(sim.stage(&format!("N{i}")), Stage::Mql);
        assert_eq!(sim.stage(&format!("L{}", 2 * i + 1)), Stage::Mql);
    }
}

#[test]
fn a_quiet_lead_expires_exactly_inactive_after_its_last_event() {
    let mut sim = Sim::with_model(default_with("[retention]\ninactive_after = \"10d\""), 0);
    // Events at T and T + 3 d: expires at T + 13 d, not a microsecond before.
    sim.demo("L", t0());
    sim.blog("L", t0() + 3 * DAY);
    sim.advance(t0() + 13 * DAY - 1);
    assert!(sim.take_all().is_empty());
    assert!(sim.engine.lead("L").is_some());
    sim.advance(t0() + 13 * DAY);
    let all = sim.take_all();
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(
        as_json(&all[0]),
        json!({
            "kind": "lead_expired",
            "change_id": "L:0:expired",
            "lead_id": "L",
            "sequence": 0,
            "stage": "lead",
            "expired_at": iso(t0() + 13 * DAY),
            "model_version": "retain",
        })
    );
    assert!(sim.engine.lead("L").is_none());
    assert!(sim.engine.erased("L").is_none(), "no marker");
    // It may come back at once: a new lead.
    assert_eq!(sim.demo("L", t0() + 14 * DAY), Outcome::Applied);
    assert!(sim.engine.lead("L").is_some());
}

#[test]
fn an_event_at_the_expiry_instant_finds_the_lead_expired_and_starts_a_new_one() {
    let mut sim = Sim::with_model(default_with("[retention]\ninactive_after = \"10d\""), 0);
    // MQL at T (L:1), quiet; its own event at exactly T + 10 d: the lead's
    // timers at or before an event's time fire first: its SLA breach
    // (T + 3 d, three working days), then it expires (stage mql); then the
    // event starts a new lead (from sequence 0: no marker).
    sim.make_mql("L", t0());
    sim.take();
    sim.demo("L", t0() + 10 * DAY);
    let all = std::mem::take(&mut sim.out);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(
        (all[0].kind, all[0].occurred_at),
        (ChangeKind::SlaBreached, t0() + 3 * DAY)
    );
    let all = &all[1..];
    assert_eq!(all[0].kind, ChangeKind::LeadExpired);
    assert_eq!(all[0].change_id, "L:1:expired");
    assert_eq!(all[0].to, Stage::Mql);
    assert_eq!(all[0].occurred_at, t0() + 10 * DAY);
    assert_eq!(sim.stage("L"), Stage::Lead);
    assert_eq!(sim.engagement("L", None), 20.0);
}

#[test]
fn customers_can_be_kept() {
    let keep = default_with("[retention]\ninactive_after = \"10d\"\nkeep_customers = true");
    let drop = default_with("[retention]\ninactive_after = \"10d\"");
    for (model, kept) in [(keep, true), (drop, false)] {
        let mut sim = Sim::with_model(model, 0);
        sim.bare("C", "deal_won", t0()); // C:1 lead → customer
        sim.demo("P", t0()); // a prospect
        sim.take();
        sim.advance(t0() + 100 * DAY);
        let expired: Vec<String> = sim
            .take_all()
            .into_iter()
            .filter(|c| c.kind == ChangeKind::LeadExpired)
            .map(|c| c.lead_id)
            .collect();
        let want: Vec<String> = if kept {
            vec!["P".into()]
        } else {
            vec!["C".into(), "P".into()]
        };
        assert_eq!(expired, want, "keep_customers = {kept}");
        assert_eq!(sim.engine.lead("C").is_some(), kept);
    }
}

#[test]
fn the_retention_keys_are_checked() {
    let e = Model::from_toml(&format!("{RETAIN_10D}\nkeep_customers = true\n"))
        .err()
        .map(|e| e.to_string());
    assert_eq!(e, None, "keep_customers with inactive_after is valid");
    let e = Model::from_toml("version = \"x\"\n[retention]\ninactive_after = \"ten days\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("retention.inactive_after"), "{e}");
    let e = Model::from_toml("version = \"x\"\n[retention]\nkeep_customers = true")
        .unwrap_err()
        .to_string();
    assert!(e.contains("retention.keep_customers"), "{e}");
    let e = Model::from_toml("version = \"x\"\n[retention]\nforget_after = \"1d\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("forget_after"), "{e}");
}

/// What the service writes to the changelog: removed leads' tombstones,
/// then leads, then markers and visitors.
#[derive(Debug, Default)]
struct Changelog {
    records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Changelog {
    fn write(&mut self, engine: &mut Engine) {
        let model = engine.model().clone();
        engine.drain_removed(|id| self.records.push((id.as_bytes().to_vec(), None)));
        engine.drain_dirty(|lead| {
            let mut v = Vec::new();
            snapshot::encode(lead, &model, &mut v);
            self.records.push((lead.id().as_bytes().to_vec(), Some(v)));
        });
        engine.drain_dirty_aux(|k, v| self.records.push((k.to_vec(), v.map(<[u8]>::to_vec))));
    }

    /// A restore, record by record, as the service reads the topic.
    fn restore(&self, model: Model) -> Engine {
        let mut e = Engine::new(std::sync::Arc::new(model.clone()));
        let mut aux = std::collections::BTreeMap::new();
        for (k, v) in &self.records {
            if leadscore::engine::is_aux_key(k) {
                aux.insert(k.clone(), v.clone());
            } else if let Some(v) = v {
                e.restore(snapshot::decode(v, &model).expect("decodes"));
            } else {
                e.drop_restored(std::str::from_utf8(k).unwrap());
            }
        }
        for (k, v) in aux {
            if let Some(v) = v {
                e.restore_aux(&k, &v).expect("restores");
            }
        }
        e
    }
}

#[test]
fn a_restore_holds_neither_the_erased_lead_nor_lets_it_back_within_the_window() {
    let model = default_with("[retention]\ninactive_after = \"10d\"");
    let mut sim = Sim::with_model(model.clone(), 0);
    let mut log = Changelog::default();
    sim.make_mql("L", t0());
    sim.make_mql("K", t0());
    log.write(&mut sim.engine);
    erase(&mut sim, "L", t0() + DAY, None);
    log.write(&mut sim.engine);
    // The last record of L is its tombstone; no record after it holds its id.
    let last_l = log.records.iter().rposition(|(k, _)| k == b"L").unwrap();
    assert_eq!(log.records[last_l].1, None, "a tombstone");
    let mut restored = log.restore(model);
    assert!(restored.lead("L").is_none());
    assert!(restored.lead("K").is_some());
    assert_eq!(restored.erased("L").map(|m| m.erased_at), Some(t0() + DAY));
    // A redelivered event of L within the window is dropped after the restore too.
    let mut out = Vec::new();
    let bytes = serde_json::to_vec(&ev("again", "L", "demo_requested", t0(), json!({}))).unwrap();
    let e = leadscore::codec::decode_json(&bytes).unwrap();
    assert_eq!(restored.fold(&e, &mut out), Outcome::Erased);
    // K's last event time came back with it: it expires at T + 10 d.
    restored.advance_to(t0() + 10 * DAY, &mut out);
    assert_eq!(
        out.iter()
            .filter(|c| !c.is_breach())
            .map(|c| (c.kind, c.change_id.as_str()))
            .collect::<Vec<_>>(),
        vec![(ChangeKind::LeadExpired, "K:1:expired")]
    );
}

/// `leadscore score` on a file: the erasure, the window and retention as
/// records among the changes, in the order the service writes them to the
/// status topic, and `explain` of an erased lead.
#[test]
fn score_writes_erasures_and_expiries_among_the_changes() {
    let dir = std::env::temp_dir().join(format!("leadscore-forget-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model.toml");
    std::fs::write(
        &model,
        format!(
            "{}\n[retention]\ninactive_after = \"20d\"\nerasure_window = \"10d\"\n",
            leadscore::model::DEFAULT_MODEL_TOML.replace("default-1", "forget-1")
        ),
    )
    .unwrap();
    let d = |n: i64| t0() + n * DAY;
    let demo = |id: &str, lead: &str, at| ev(id, lead, "demo_requested", at, json!({}));
    let webinar = |id: &str, lead: &str, at| ev(id, lead, "webinar_attended", at, json!({}));
    let events = [
        // A: MQL at T (A:1); erased at T + 2 d; a demo at T + 12 d is at
        // the window's end (dropped); one at T + 12 d + 1 s starts A anew.
        ev(
            "a1",
            "A",
            "profile_updated",
            d(0),
            json!({ "profile": fit20() }),
        ),
        demo("a2", "A", d(0)),
        webinar("a3", "A", d(0)),
        ev(
            "a4",
            "A",
            "lead_erased",
            d(2),
            json!({"reason": "request 1"}),
        ),
        demo("a5", "A", d(12)),
        demo("a6", "A", d(12) + 1_000_000),
        // B: one demo at T + 1 d; quiet for 20 days → expires at T + 21 d.
        demo("b1", "B", d(1)),
        // C moves the clock to T + 25 d (the new A, quiet since T + 12 d,
        // expires only at T + 32 d).
        demo("c1", "C", d(25)),
    ];
    let input = dir.join("events.jsonl");
    let body: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&input, body).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["score", "--model", model.to_str().unwrap(), "--input"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let short: Vec<(String, String, String)> = lines
        .iter()
        .map(|v| {
            let at = ["occurred_at", "erased_at", "expired_at", "breached_at"]
                .iter()
                .find_map(|k| v[*k].as_str())
                .unwrap()
                .to_string();
            (
                v["kind"].as_str().unwrap().into(),
                v["change_id"].as_str().unwrap().into(),
                at,
            )
        })
        .collect();
    let s = |k: &str, id: &str, at: Micros| (k.to_string(), id.to_string(), iso(at));
    assert_eq!(
        short,
        vec![
            // T: fit 20 + 20 + 15 = 55 ≥ 50 → mql.
            s("stage_changed", "A:1", d(0)),
            // T + 2 d, before its follow-up (Thursday T + 3 d): erased.
            s("lead_erased", "A:1:erased", d(2)),
            // B's expiry fires when C's event moves the clock past T + 21 d.
            s("lead_expired", "B:0:expired", d(21)),
        ],
        "{lines:#?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 events of erased leads dropped"),
        "{stderr}"
    );
    // A came back (a6): a lead of 20 points; `explain` shows it. B is gone.
    let explain = |lead: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_leadscore"))
            .args([
                "explain",
                "--model",
                model.to_str().unwrap(),
                "--lead",
                lead,
                "--input",
            ])
            .arg(&input)
            .output()
            .unwrap()
    };
    let a = explain("A");
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    // An erased lead that did not come back: `explain` says when.
    let only_erased = dir.join("erased.jsonl");
    std::fs::write(
        &only_erased,
        events[..4]
            .iter()
            .map(|e| format!("{e}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args([
            "explain",
            "--model",
            model.to_str().unwrap(),
            "--lead",
            "A",
            "--input",
        ])
        .arg(&only_erased)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains(&format!("was erased at {}", iso(d(2)))),
        "{msg}"
    );
}

#[test]
fn markers_are_keyed_by_the_configured_secret() {
    let mut sim = Sim::new();
    sim.engine
        .set_marker_key("0f1e2d3c4b5a69788796a5b4c3d2e1f0");
    sim.make_mql("L", t0());
    erase(&mut sim, "L", t0() + DAY, None);
    let mut log = Changelog::default();
    log.write(&mut sim.engine);
    // One marker: its key is 0, `e` and a 16-byte hash, not the id.
    let markers: Vec<&(Vec<u8>, Option<Vec<u8>>)> = log
        .records
        .iter()
        .filter(|(k, _)| k.starts_with(&[0, b'e']))
        .collect();
    assert_eq!(markers.len(), 1);
    assert_eq!(markers[0].0.len(), 18);
    // Restored under the same secret: recognised; under another: not.
    let restore = |secret: &str| {
        let mut e = Engine::new(std::sync::Arc::new(Model::default_model()));
        e.set_marker_key(secret);
        for (k, v) in &log.records {
            if let (true, Some(v)) = (leadscore::engine::is_aux_key(k), v) {
                e.restore_aux(k, v).unwrap();
            }
        }
        e.erased("L").map(|m| m.erased_at)
    };
    assert_eq!(
        restore("0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
        Some(t0() + DAY)
    );
    assert_eq!(restore("another secret, 32 characters.."), None);
}
