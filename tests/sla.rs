//! SLA tracking (issue 16, item 3): the `sla_breached` record at a
//! hand-off's `follow_up_by`, `sales_contacted` stopping the clock, one
//! breach per hand-off, and the business calendar (time zone, holidays,
//! business hours, daylight saving) through the real `score` command.
//!
//! Every expected time is worked out by hand in the comments. T = Monday
//! 2026-03-02T14:00:00Z ([`t0`]); `make_mql` gives a warm MQL (fit 20 +
//! demo 20 + webinar 15 = 55), due 3 working days later: Thursday 14:00.

mod helpers;

use helpers::*;
use leadscore::codec::encode_change_json;
use leadscore::engine::snapshot;
use leadscore::model::DEFAULT_MODEL_TOML;
use leadscore::time::Micros;
use leadscore::{ChangeKind, Stage, StatusChange};
use serde_json::{json, Value};

fn thursday() -> Micros {
    ts("2026-03-05T14:00:00Z")
}

#[track_caller]
fn assert_breach(b: &StatusChange, lead: &str, sequence: u64, stage: Stage, route: &str, at: &str) {
    assert_eq!(b.kind, ChangeKind::SlaBreached, "{b:#?}");
    assert_eq!(b.lead_id, lead, "{b:#?}");
    assert_eq!(b.change_id, format!("{lead}:{sequence}:sla"), "{b:#?}");
    assert_eq!(b.sequence, sequence, "{b:#?}");
    assert_eq!((b.from, b.to), (stage, stage), "{b:#?}");
    assert_eq!(b.route.as_deref(), Some(route), "{b:#?}");
    assert_eq!(iso(b.occurred_at), at, "breached_at of {b:#?}");
    assert_eq!(b.follow_up_by.map(iso).as_deref(), Some(at), "{b:#?}");
}

#[test]
fn the_breach_fires_at_follow_up_by_exactly_once() {
    let mut sim = Sim::new();
    sim.make_mql("W", t0());
    let c = sim.take_one();
    assert_follow_up(&c, "new_business", "2026-03-05T14:00:00Z");
    // One microsecond before: nothing.
    sim.advance(thursday() - 1);
    assert!(sim.take_all().is_empty());
    let lead = sim.engine.lead("W").unwrap();
    assert_eq!(lead.follow_up_by(), Some(thursday()));
    assert!(!lead.sla_breached());
    sim.advance(thursday());
    let all = sim.take_all();
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_breach(
        &all[0],
        "W",
        1,
        Stage::Mql,
        "new_business",
        "2026-03-05T14:00:00Z",
    );
    // The score at the deadline: fit 20 + 35 × 2^(−3/30) = 20 + 32.65615...
    close("fit", all[0].score.fit, 20.0);
    close(
        "engagement",
        all[0].score.engagement,
        35.0 * 2f64.powf(-3.0 / 30.0),
    );
    assert_eq!(all[0].band, "warm");
    assert!(all[0].cause_event_id.is_none());
    // The breach is an observation: the lead is still an MQL, its own time
    // unchanged, and nothing more comes for this hand-off.
    assert_eq!(sim.stage("W"), Stage::Mql);
    assert_eq!(sim.engine.lead("W").unwrap().time(), t0());
    // Overdue and untouched, as a call list shows it.
    assert!(sim.engine.lead("W").unwrap().sla_breached());
    sim.advance(thursday() + days(20));
    assert!(sim.take_all().is_empty());
}

#[test]
fn the_breach_record_has_its_own_json_shape() {
    let mut sim = Sim::new();
    sim.make_mql("W", t0());
    sim.advance(thursday());
    let b = sim.take_breaches().pop().expect("a breach");
    let mut buf = Vec::new();
    encode_change_json(&b, &mut buf);
    let v: Value = serde_json::from_slice(&buf).unwrap();
    let keys: std::collections::BTreeSet<&str> =
        v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        std::collections::BTreeSet::from([
            "kind",
            "change_id",
            "lead_id",
            "sequence",
            "stage",
            "route",
            "follow_up_by",
            "breached_at",
            "score",
            "band",
            "top_contributors",
            "model_version"
        ])
    );
    assert_eq!(v["kind"], "sla_breached");
    assert_eq!(v["stage"], "mql");
    assert_eq!(v["breached_at"], "2026-03-05T14:00:00Z");
    assert_eq!(v["follow_up_by"], "2026-03-05T14:00:00Z");
    // And every stage change says what it is.
    let mut c = Vec::new();
    sim.make_mql("V", thursday());
    encode_change_json(&sim.take_one(), &mut c);
    let v: Value = serde_json::from_slice(&c).unwrap();
    assert_eq!(v["kind"], "stage_changed");
}

#[test]
fn sales_contacted_before_the_deadline_stops_the_clock() {
    let mut sim = Sim::new();
    sim.make_mql("A", t0());
    sim.bare("A", "sales_contacted", t0() + hours(1));
    assert_eq!(sim.engine.lead("A").unwrap().follow_up_by(), None);
    sim.advance(thursday() + days(40));
    // The requalification at T + 30 d may move the stage; no breach ever.
    assert!(sim.take_breaches().is_empty());
}

#[test]
fn a_touch_leaves_the_requalification_timer_in_place() {
    // The clock was the lead's earliest timer; once stopped, the 30-day
    // requalification must still fire with no further event of the lead:
    // 35 × 2^(−1) = 17.5, total 37.5 < 40 → recycled at T + 30 d.
    let mut sim = Sim::new();
    sim.make_mql("A", t0());
    sim.take_one();
    sim.bare("A", "sales_contacted", t0() + hours(1));
    sim.advance(t0() + days(31));
    let c = sim.take_one();
    assert_change(&c, "A", Stage::Mql, Stage::Recycled, t0() + days(30));
}

#[test]
fn a_contact_at_the_deadline_itself_is_too_late() {
    // SPEC §3: a timer due at an event's instant fires before the event.
    let mut sim = Sim::new();
    sim.make_mql("A", t0());
    sim.bare("A", "sales_contacted", thursday());
    let all = sim.take_all();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_breach(
        &all[1],
        "A",
        1,
        Stage::Mql,
        "new_business",
        "2026-03-05T14:00:00Z",
    );
}

#[test]
fn a_contact_from_before_the_hand_off_does_not_stop_it() {
    // Arriving late, a contact of Sunday is not the follow-up of Monday's
    // MQL: in order, it would have found no clock running.
    let mut sim = Sim::new();
    sim.make_mql("A", t0());
    sim.bare("A", "sales_contacted", t0() - days(1));
    sim.advance(thursday());
    assert_eq!(sim.take_breaches().len(), 1);
}

#[test]
fn one_breach_per_hand_off_and_mql_to_sql_starts_a_new_clock() {
    let mut sim = Sim::new();
    // MQL Monday 14:00 (due Thursday 14:00), breached; SQL by criteria on
    // Friday 10:00 (+24 h: Saturday 10:00), breached too: two hand-offs.
    sim.make_mql("S", t0());
    sim.advance(thursday());
    sim.all_criteria("S", ts("2026-03-06T10:00:00Z"));
    sim.advance(ts("2026-03-10T00:00:00Z"));
    let all = sim.take_all();
    assert_eq!(all.len(), 4, "{all:#?}");
    assert_breach(
        &all[1],
        "S",
        1,
        Stage::Mql,
        "new_business",
        "2026-03-05T14:00:00Z",
    );
    assert_change(
        &all[2],
        "S",
        Stage::Mql,
        Stage::Sql,
        ts("2026-03-06T10:00:00Z"),
    );
    assert_breach(
        &all[3],
        "S",
        2,
        Stage::Sql,
        "new_business",
        "2026-03-07T10:00:00Z",
    );

    // MQL Monday, SQL Tuesday 14:00 before the MQL's deadline: the MQL's
    // clock is replaced; only the SQL's (Wednesday 14:00) runs out.
    let mut sim = Sim::new();
    sim.make_mql("Q", t0());
    sim.all_criteria("Q", t0() + days(1));
    sim.advance(ts("2026-03-12T00:00:00Z"));
    let b = sim.take_breaches();
    assert_eq!(b.len(), 1, "{b:#?}");
    assert_breach(
        &b[0],
        "Q",
        2,
        Stage::Sql,
        "new_business",
        "2026-03-04T14:00:00Z",
    );
}

#[test]
fn no_breach_once_the_lead_left_mql_or_sql() {
    let mut sim = Sim::new();
    // Rejected on Tuesday: recycled, the clock stops with nothing emitted.
    sim.make_mql("R", t0());
    sim.rejected("R", t0() + days(1), "no_budget");
    assert_eq!(sim.stage("R"), Stage::Recycled);
    // Won on Tuesday: customer.
    sim.make_mql("D", t0());
    sim.bare("D", "deal_won", t0() + days(1));
    sim.advance(thursday() + days(1));
    assert!(sim.take_breaches().is_empty());
}

#[test]
fn installed_base_breaches_after_four_hours_on_its_route() {
    let mut sim = Sim::new();
    // is_customer + a demo (20 ≥ 5): installed-base MQL at T, due T + 4 h.
    sim.profile("I", t0(), json!({"is_customer": true}));
    sim.demo("I", t0());
    sim.take_one();
    sim.advance(t0() + hours(4));
    let b = sim.take_breaches();
    assert_eq!(b.len(), 1);
    assert_breach(
        &b[0],
        "I",
        1,
        Stage::Mql,
        "account_management",
        "2026-03-02T18:00:00Z",
    );
}

#[test]
fn a_restored_clock_breaches_once_and_an_old_state_has_none() {
    let model = leadscore::Model::default_model();
    let mut sim = Sim::new();
    sim.make_mql("W", t0());
    let mut bytes = Vec::new();
    snapshot::encode(sim.engine.lead("W").unwrap(), &model, &mut bytes);
    // Another instance takes the partition over.
    let mut other = Sim::new();
    other
        .engine
        .restore(snapshot::decode(&bytes, &model).unwrap());
    other.engine.set_watermark(t0());
    other.advance(thursday());
    let b = other.take_breaches();
    assert_eq!(b.len(), 1);
    assert_breach(
        &b[0],
        "W",
        1,
        Stage::Mql,
        "new_business",
        "2026-03-05T14:00:00Z",
    );
    // After the breach, the state says so: restored again, nothing more.
    bytes.clear();
    snapshot::encode(other.engine.lead("W").unwrap(), &model, &mut bytes);
    let mut third = Sim::new();
    third
        .engine
        .restore(snapshot::decode(&bytes, &model).unwrap());
    third.engine.set_watermark(thursday());
    third.advance(thursday() + days(5));
    assert!(third.take_breaches().is_empty());
}

// ---------------------------------------------------------------------------
// The business calendar, through `leadscore score`
// ---------------------------------------------------------------------------

/// The default model with a calendar for new business: Amsterdam time,
/// 09:00–17:00, Easter Monday 2026 (April 6) a holiday.
fn amsterdam_model() -> String {
    format!(
        "{DEFAULT_MODEL_TOML}\n[new_business.calendar]\ntime_zone = \"Europe/Amsterdam\"\n\
         hours = \"09:00-17:00\"\nholidays = [\"2026-04-06\"]\n"
    )
}

/// A warm MQL event set at `at` for `lead`: fit 20 + demo 20 + webinar 15.
fn warm_mql_lines(lead: &str, at: Micros) -> Vec<String> {
    vec![
        ev(
            &format!("{lead}-p"),
            lead,
            "profile_updated",
            at,
            json!({"profile": fit20()}),
        )
        .to_string(),
        ev(&format!("{lead}-d"), lead, "demo_requested", at, json!({})).to_string(),
        ev(
            &format!("{lead}-w"),
            lead,
            "webinar_attended",
            at,
            json!({}),
        )
        .to_string(),
    ]
}

fn score(model: &str, lines: &[String], until: &str) -> Vec<Value> {
    // Tests run in parallel in this process: a directory each.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("leadscore-sla-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model_path = dir.join("model.toml");
    let input = dir.join("events.jsonl");
    std::fs::write(&model_path, model).unwrap();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["score", "--model"])
        .arg(&model_path)
        .arg("--input")
        .arg(&input)
        .args(["--until", until])
        .output()
        .expect("run leadscore score");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn working_days_on_a_calendar_with_a_zone_a_holiday_and_daylight_saving() {
    let mut lines = Vec::new();
    // DST: Fri 2026-03-27 16:00 CET (15:00Z), in hours. Amsterdam moves to
    // CEST on Sun 03-29. Mon, Tue, Wed → Wed 04-01 16:00 CEST = 14:00Z (UTC
    // counting would say 15:00Z).
    lines.extend(warm_mql_lines("dst", ts("2026-03-27T15:00:00Z")));
    // Holiday: Thu 04-02 10:00 CEST (08:00Z). Fri 04-03, (Mon 04-06 is a
    // holiday), Tue 04-07, Wed 04-08 → Wed 10:00 CEST = 08:00Z.
    lines.extend(warm_mql_lines("hol", ts("2026-04-02T08:00:00Z")));
    // After hours: Fri 04-03 20:00 CEST (18:00Z). The clock starts at the
    // next opening, Sat 04-04 09:00; Tue 04-07, Wed, Thu 04-09 → Thu 09:00
    // CEST = 07:00Z.
    lines.extend(warm_mql_lines("late", ts("2026-04-03T18:00:00Z")));
    // Before hours: Tue 04-07 07:30 CEST (05:30Z). Starts at 09:00 → Fri
    // 04-10 09:00 CEST = 07:00Z.
    lines.extend(warm_mql_lines("early", ts("2026-04-07T05:30:00Z")));
    let out = score(&amsterdam_model(), &lines, "2026-04-20T00:00:00Z");
    let due = |lead: &str| -> Vec<(String, String)> {
        out.iter()
            .filter(|r| r["lead_id"] == lead && r["follow_up_by"].is_string())
            .map(|r| {
                (
                    r["kind"].as_str().unwrap().to_string(),
                    r["follow_up_by"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let pair = |kind: &str, at: &str| (kind.to_string(), at.to_string());
    for (lead, at) in [
        ("dst", "2026-04-01T14:00:00Z"),
        ("hol", "2026-04-08T08:00:00Z"),
        ("late", "2026-04-09T07:00:00Z"),
        ("early", "2026-04-10T07:00:00Z"),
    ] {
        assert_eq!(
            due(lead),
            [pair("stage_changed", at), pair("sla_breached", at)],
            "{lead}: {out:#?}"
        );
    }
    // Each breach at its deadline.
    for r in out.iter().filter(|r| r["kind"] == "sla_breached") {
        assert_eq!(r["breached_at"], r["follow_up_by"], "{r}");
    }
}

#[test]
fn business_hours_slas_count_only_open_time() {
    // SQLs get "8 business hours" in Amsterdam 09:00–17:00: sales_accepted
    // on Fri 2026-04-03 15:00 CEST (13:00Z): 2 h on Friday, the holiday
    // Monday skipped, 6 h on Tuesday → Tue 04-07 15:00 CEST = 13:00Z.
    let model = amsterdam_model().replace("sla_sql = \"24h\"", "sla_sql = \"8 business hours\"");
    let lines = [ev(
        "s1",
        "S",
        "sales_accepted",
        ts("2026-04-03T13:00:00Z"),
        json!({}),
    )
    .to_string()];
    let out = score(&model, &lines, "2026-04-20T00:00:00Z");
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(out[0]["follow_up_by"], "2026-04-07T13:00:00Z");
    assert_eq!(out[1]["kind"], "sla_breached");
    assert_eq!(out[1]["breached_at"], "2026-04-07T13:00:00Z");
}

#[test]
fn bad_calendar_entries_are_model_errors_naming_the_key() {
    for (entry, key) in [
        (
            "time_zone = \"Europe/Atlantis\"",
            "new_business.calendar.time_zone",
        ),
        ("hours = \"09:00-25:00\"", "new_business.calendar.hours"),
        (
            "holidays = [\"2026-02-30\"]",
            "new_business.calendar.holidays[0]",
        ),
    ] {
        let toml = format!("{DEFAULT_MODEL_TOML}\n[new_business.calendar]\n{entry}\n");
        let e = leadscore::Model::from_toml(&toml).unwrap_err().to_string();
        assert!(e.contains(key), "{entry}: {e}");
    }
    let e = leadscore::Model::from_toml("version = \"x\"\n[calendar]\ntime_zone = \"Nowhere\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("calendar.time_zone") && e.contains("Nowhere"),
        "{e}"
    );
}

/// `explain` (and `GET /leads/{id}`) show the open hand-off's follow-up,
/// overdue or not, and when decay alone moves the lead to another band.
#[test]
fn explain_shows_the_follow_up_and_the_next_band_change() {
    let mut sim = Sim::new();
    sim.make_mql("L", t0());
    let x = serde_json::to_value(sim.explain("L", None)).unwrap();
    assert_eq!(
        x["follow_up"],
        json!({"route": "new_business", "follow_up_by": iso(thursday()), "overdue": false})
    );
    // Total 55 = fit 20 + engagement 35 (warm, ≥ 50): below 50 when
    // 35 · 2^(−d/30) < 30, d = 30 · log2(7/6) = 6.67177 days = 576,441 s.
    let at = ts(x["band_changes_at"].as_str().unwrap());
    let want = t0() as f64 + 30.0 * (7.0f64 / 6.0).log2() * 86_400e6;
    assert!((at as f64 - want).abs() < 1e6, "{at} vs {want}");
    // Friday: overdue. After sales' first touch: no follow-up any more.
    let x = serde_json::to_value(sim.explain("L", Some(thursday() + 86_400_000_000))).unwrap();
    assert_eq!(x["follow_up"]["overdue"], true);
    sim.bare("L", "sales_contacted", thursday() + 86_400_000_000);
    let x = serde_json::to_value(sim.explain("L", None)).unwrap();
    assert!(x.get("follow_up").is_none(), "{x:#}");
}
