//! `leadscore backtest`, run as the real binary: a hand-computed scenario
//! (with outcomes in the event file and in a separate file), the default
//! model against one that scores the wrong signals on generated traffic,
//! a baseline side by side, bad input, and the HTML report drawn by
//! headless Chromium.

mod helpers;
mod tools;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use helpers::{days, ev, fit35, fit50, iso, t0};
use serde_json::{json, Value};

/// A scratch directory for one test, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("leadscore-backtest-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn leadscore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(args)
        .output()
        .expect("run leadscore")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `leadscore backtest ARGS --json` and parses stdout.
fn backtest_json(args: &[&str]) -> (Value, String) {
    let mut all = vec!["backtest", "--json"];
    all.extend_from_slice(args);
    let out = leadscore(&all);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "leadscore backtest failed: {}\n{stderr}",
        out.status
    );
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", text(&out.stdout)));
    (v, stderr)
}

/// Runs `leadscore ARGS`, expects it to fail, returns stderr.
fn fails(args: &[&str]) -> String {
    let out = leadscore(args);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure from {args:?}, got success:\n{}",
        text(&out.stdout)
    );
    stderr
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").expect("write file");
}

fn close(what: &str, actual: &Value, expected: f64) {
    let a = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {actual}"));
    assert!(
        (a - expected).abs() < 1e-9,
        "{what}: got {a}, expected {expected}"
    );
}

/// The default model with one engagement rule only: a view of /careers.
/// Same fit, thresholds and stages: only the engagement signal is wrong.
fn careers_model() -> String {
    let default = leadscore::model::DEFAULT_MODEL_TOML;
    let start = default.find("[[engagement.rules]]").expect("rules");
    let end = default.find("# ---- Stages").expect("stages");
    format!(
        "{}[[engagement.rules]]\nname = \"careers_page\"\nevent = \"page_view\"\n\
         attributes = {{ url = {{ contains = \"/careers\" }} }}\npoints = 10\n\n{}",
        &default[..start],
        &default[end..]
    )
    .replace("version = \"default-1\"", "version = \"careers-1\"")
}

// ---------------------------------------------------------------------------
// The hand-computed scenario (default model; T = Monday 2026-03-02 14:00Z).
//
// lead  events                                        outcome      peak  MQL
// A     fit 35 @T, webinar @T+2d (35+15 = 50: MQL),   won  @T+10d   50   yes, after 2 days
//       demo @T+11d (after the outcome: ignored)
// B     fit 35 @T, /pricing @T+1d (40)                won  @T+5d    40   no
// C     fit 50 @T, webinar @T+1d (65: MQL)            lost @T+5d    65   yes, after 1 day
// D     fit 35 @T, demo @T+3d (55: MQL), all criteria none          55   yes, after 3 days; SQL
//       @T+4d (SQL; 35 + 20·2^(-1/30) < 55)
// E     fit 10 @T, /pricing @T (15), sales_accepted   lost @T+6d    15   no (SQL by sales only)
//       @T+2d (lead → sql)
// G     fit 35 @T                                     won  @T+1d    35   no; the move to customer
//       webinar @T+2d (after: installed-base MQL at                      and the later MQL after
//       the end of the quiet period, T+15d)                              the outcome don't count
// H     a profile with fit 0 @T+30d                   none           0   no
//
// 7 leads: 3 won (A B G), 2 lost (C E), 2 open (D H).
// Became MQL: A C D → precision 1/3 (= MQL→won), recall 1/3, F1 1/3.
// SQL: D E; after MQL: D → MQL→SQL 1/3. Median days to MQL: (1, 2, 3) → 2.
// Bands of the peak: cold (< 50) B E G H: 2 won of 4; warm A C D: 1 of 3; hot none.
// Sweep: max peak 65 → step 2, thresholds 0…64. Thresholds 16–34 select
// A B C D G: precision 3/5, recall 1, F1 0.75, the best (0 → 0.6, 2–14 →
// 2/3, 36 → 4/7); the highest of them is suggested: 34.
// ---------------------------------------------------------------------------

fn fit10() -> Value {
    json!({"email": "eve@acme-industrial.com", "industry": "automotive"})
}

fn pricing() -> Value {
    json!({"attributes": {"url": "/pricing"}})
}

fn criteria() -> Value {
    json!({"criteria": {"budget": true, "authority": true, "need": true, "timing": true}})
}

/// The scenario's events in file order, and whether each is an outcome.
fn scenario() -> Vec<(Value, bool)> {
    let t = t0();
    let p = |profile: Value| json!({ "profile": profile });
    let e = |id: &str, lead: &str, ty: &str, at, extra| (ev(id, lead, ty, at, extra), false);
    let outcome = |id: &str, lead: &str, ty: &str, at| (ev(id, lead, ty, at, json!({})), true);
    vec![
        e("a1", "A", "profile_updated", t, p(fit35())),
        e("b1", "B", "profile_updated", t, p(fit35())),
        e("c1", "C", "profile_updated", t, p(fit50())),
        e("d1", "D", "profile_updated", t, p(fit35())),
        e("e1", "E", "profile_updated", t, p(fit10())),
        e("e2", "E", "page_view", t, pricing()),
        e("g1", "G", "profile_updated", t, p(fit35())),
        e("b2", "B", "page_view", t + days(1), pricing()),
        e("c2", "C", "webinar_attended", t + days(1), json!({})),
        outcome("g2", "G", "deal_won", t + days(1)),
        e("a2", "A", "webinar_attended", t + days(2), json!({})),
        e("e3", "E", "sales_accepted", t + days(2), json!({})),
        e("g3", "G", "webinar_attended", t + days(2), json!({})),
        e("d2", "D", "demo_requested", t + days(3), json!({})),
        e("d3", "D", "qualification_updated", t + days(4), criteria()),
        outcome("b3", "B", "deal_won", t + days(5)),
        outcome("c3", "C", "deal_lost", t + days(5)),
        outcome("e4", "E", "deal_lost", t + days(6)),
        outcome("a3", "A", "deal_won", t + days(10)),
        e("a4", "A", "demo_requested", t + days(11), json!({})),
        e(
            "h1",
            "H",
            "profile_updated",
            t + days(30),
            p(json!({"industry": "software"})),
        ),
    ]
}

/// Writes the scenario's events (with a bad third line); without the
/// outcome events if `with_outcomes` is false.
fn write_scenario(path: &Path, with_outcomes: bool) {
    let mut lines: Vec<String> = scenario()
        .into_iter()
        .filter(|(_, is_outcome)| with_outcomes || !is_outcome)
        .map(|(v, _)| v.to_string())
        .collect();
    lines.insert(2, "{\"event_id\": \"x\", \"lead_id\": \"A\"".into());
    write_lines(path, &lines);
}

/// The numbers of the scenario, under the default model.
fn assert_scenario(m: &Value) {
    assert_eq!(m["role"], "model");
    assert_eq!(m["version"], "default-1");
    assert_eq!(
        m["leads"],
        json!({"leads": 7, "won": 3, "lost": 2, "open": 2})
    );
    assert_eq!(
        m["became_mql"],
        json!({"leads": 3, "won": 1, "lost": 1, "open": 1})
    );
    assert_eq!(m["became_sql"], 2);
    assert_eq!(m["became_sql_after_mql"], 1);
    close("mql_to_sql", &m["mql_to_sql"], 1.0 / 3.0);
    close("mql_to_won", &m["mql_to_won"], 1.0 / 3.0);
    let c = &m["became_mql_classifier"];
    close("precision", &c["precision"], 1.0 / 3.0);
    close("recall", &c["recall"], 1.0 / 3.0);
    close("f1", &c["f1"], 1.0 / 3.0);
    close("median days to MQL", &m["median_days_to_mql"], 2.0);
    assert_eq!(
        m["stages_before_outcome"],
        json!({"won": {"lead": 2, "mql": 1}, "lost": {"mql": 1, "sql": 1}})
    );

    let bands = m["bands"].as_array().expect("bands");
    assert_eq!(bands.len(), 3);
    assert_eq!(
        bands[0],
        json!({"band": "cold", "from": null, "to": 50.0, "leads": 4, "won": 2, "lost": 1,
               "open": 1, "won_share": 0.5})
    );
    assert_eq!(
        (&bands[1]["band"], &bands[1]["leads"], &bands[1]["won"]),
        (&json!("warm"), &json!(3), &json!(1))
    );
    close("warm won share", &bands[1]["won_share"], 1.0 / 3.0);
    assert_eq!(bands[2]["leads"], 0);
    assert_eq!(bands[2]["won_share"], Value::Null);

    let sweep = m["threshold_sweep"].as_array().expect("sweep");
    assert_eq!(sweep.len(), 33, "thresholds 0, 2, … 64");
    let at = |t: f64| {
        sweep
            .iter()
            .find(|p| p["threshold"].as_f64() == Some(t))
            .unwrap_or_else(|| panic!("no threshold {t}"))
    };
    assert_eq!((&at(0.0)["leads"], &at(0.0)["won"]), (&json!(7), &json!(3)));
    close("f1 at 0", &at(0.0)["f1"], 0.6);
    assert_eq!(at(14.0)["leads"], 6);
    close("f1 at 14", &at(14.0)["f1"], 2.0 / 3.0);
    assert_eq!(at(34.0)["leads"], 5);
    close("precision at 34", &at(34.0)["precision"], 0.6);
    close("recall at 34", &at(34.0)["recall"], 1.0);
    close("f1 at 36", &at(36.0)["f1"], 4.0 / 7.0);
    assert_eq!(
        (&at(64.0)["leads"], &at(64.0)["won"]),
        (&json!(1), &json!(0))
    );
    let best = &m["suggested_threshold"];
    assert_eq!(best["threshold"], 34.0);
    assert_eq!(best["leads"], 5);
    close("suggested f1", &best["f1"], 0.75);

    // Peaks by bin (width 2): H 0, E 15, G 35, B 40, A 50, D 55, C 65.
    let hist = m["score_histogram"].as_array().expect("histogram");
    assert_eq!(hist.len(), 33);
    let bin = |k: usize| {
        (
            hist[k]["won"].as_u64().unwrap(),
            hist[k]["lost"].as_u64().unwrap(),
            hist[k]["open"].as_u64().unwrap(),
        )
    };
    let expected = [
        (0, (0, 0, 1)),
        (7, (0, 1, 0)),
        (17, (1, 0, 0)),
        (20, (1, 0, 0)),
        (25, (1, 0, 0)),
        (27, (0, 0, 1)),
        (32, (0, 1, 0)),
    ];
    for k in 0..hist.len() {
        let want = expected
            .iter()
            .find(|(i, _)| *i == k)
            .map_or((0, 0, 0), |(_, c)| *c);
        assert_eq!(bin(k), want, "histogram bin {k}");
    }
}

#[test]
fn hand_computed_scenario_with_outcomes_in_the_events() {
    let dir = scratch("scenario");
    let events = dir.join("events.jsonl");
    write_scenario(&events, true);
    let (v, stderr) = backtest_json(&["--events", events.to_str().unwrap()]);
    assert!(
        stderr.contains("events.jsonl:3: "),
        "the bad line is reported with its number:\n{stderr}"
    );
    assert_eq!(v["outcomes_from"], "events");
    assert_eq!(v["input"]["bad_lines"], 1);
    assert_eq!(v["input"]["events"], 21);
    assert_eq!(
        v["outcomes"],
        json!({"leads": 7, "won": 3, "lost": 2, "open": 2, "without_events": 0, "erased": 0})
    );
    assert_eq!(v["score_step"], 2.0);
    assert_eq!(v["models"].as_array().unwrap().len(), 1);
    assert_scenario(&v["models"][0]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn outcomes_from_a_file_give_the_same_numbers_and_later_events_do_not_count() {
    let dir = scratch("outcomes-file");
    let events = dir.join("events.jsonl");
    // Without the deal events, A's demo on day 11 would raise its peak to
    // 35 + 15·2^(-9/30) + 20 and G's webinar would make it an MQL: both come
    // after the outcome's time, so neither may count.
    write_scenario(&events, false);
    let t = t0();
    let outcomes = dir.join("outcomes.csv");
    write_lines(
        &outcomes,
        &[
            "lead_id,outcome,at".into(),
            format!("A,won,{}", iso(t + days(10))),
            format!("B,won,{}", iso(t + days(5))),
            json!({"lead_id": "C", "outcome": "lost", "at": iso(t + days(5))}).to_string(),
            format!("E,lost,{}", iso(t + days(6))),
            format!("G,won,{}", iso(t + days(1))),
            // No event of this lead: reported and left out.
            format!("Z,won,{}", iso(t)),
        ],
    );
    let (v, stderr) = backtest_json(&[
        "--events",
        events.to_str().unwrap(),
        "--outcomes",
        outcomes.to_str().unwrap(),
    ]);
    assert!(
        stderr.contains("1 outcomes in") && stderr.contains("no event"),
        "{stderr}"
    );
    assert_eq!(v["outcomes_from"], outcomes.to_str().unwrap());
    assert_eq!(
        v["outcomes"],
        json!({"leads": 7, "won": 3, "lost": 2, "open": 2, "without_events": 1, "erased": 0})
    );
    assert_scenario(&v["models"][0]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_summary_is_a_readable_table() {
    let dir = scratch("summary");
    let events = dir.join("events.jsonl");
    write_scenario(&events, true);
    let out = leadscore(&["backtest", "--events", events.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    for needle in [
        "7 leads: 3 won, 2 lost, 2 without outcome",
        "became MQL (before outcome)          3 (1 won)",
        "MQL→won conversion = precision       33.3%",
        "median time from first event to MQL  2.0 days",
        "suggested threshold (max F1)         34 (F1 0.750, 5 leads, precision 60.0%, recall 100.0%)",
    ] {
        assert!(summary.contains(needle), "{needle:?} not in:\n{summary}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn baseline_side_by_side() {
    let dir = scratch("baseline");
    let events = dir.join("events.jsonl");
    write_scenario(&events, true);
    let careers = dir.join("careers.toml");
    std::fs::write(&careers, careers_model()).unwrap();
    let (v, _) = backtest_json(&[
        "--events",
        events.to_str().unwrap(),
        "--baseline",
        careers.to_str().unwrap(),
    ]);
    let models = v["models"].as_array().expect("models");
    assert_eq!(models.len(), 2);
    assert_scenario(&models[0]);
    let b = &models[1];
    assert_eq!(b["role"], "baseline");
    assert_eq!(b["version"], "careers-1");
    assert_eq!(b["source"], careers.to_str().unwrap());
    // Nobody views /careers: the baseline scores fit only and makes no MQL.
    assert_eq!(b["became_mql"]["leads"], 0);
    assert_eq!(b["became_mql_classifier"]["precision"], Value::Null);
    assert_eq!(b["became_mql_classifier"]["recall"], 0.0);
    // The same thresholds as the model, for a point-by-point comparison.
    let thresholds = |m: &Value| -> Vec<Value> {
        m["threshold_sweep"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["threshold"].clone())
            .collect()
    };
    assert_eq!(thresholds(b), thresholds(&models[0]));
    // Peaks are the fits: A B D G 35, C 50, E 10, H 0.
    let at = |t: f64| {
        b["threshold_sweep"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["threshold"].as_f64() == Some(t))
            .cloned()
            .unwrap()
    };
    assert_eq!(at(34.0)["leads"], 5);
    assert_eq!(at(36.0)["leads"], 1);

    let out = leadscore(&[
        "backtest",
        "--events",
        events.to_str().unwrap(),
        "--baseline",
        careers.to_str().unwrap(),
    ]);
    let summary = text(&out.stdout);
    assert!(
        summary.contains("default-1") && summary.contains("careers-1"),
        "both models in the summary:\n{summary}"
    );
    assert!(summary.contains("baseline careers-1"), "{summary}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The generator gives high-intent leads more engagement (pricing pages,
/// demos) and a higher chance to win (0.1 + 0.8 × intent). The default model
/// scores those signals; a model that scores only /careers page views does
/// not. The backtest must tell them apart.
#[test]
fn the_default_model_beats_one_that_scores_the_wrong_signals() {
    let dir = scratch("generated");
    let events = dir.join("generated.jsonl");
    let out = leadscore(&[
        "generate",
        "--events",
        "200000",
        "--leads",
        "20000",
        "--seed",
        "7",
        "--out",
        events.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let careers = dir.join("careers.toml");
    std::fs::write(&careers, careers_model()).unwrap();
    let (v, _) = backtest_json(&[
        "--events",
        events.to_str().unwrap(),
        "--baseline",
        careers.to_str().unwrap(),
    ]);
    let good = &v["models"][0];
    let bad = &v["models"][1];
    let won = v["outcomes"]["won"].as_u64().unwrap();
    let lost = v["outcomes"]["lost"].as_u64().unwrap();
    assert!(
        won > 500 && lost > 500,
        "enough outcomes: {won} won, {lost} lost"
    );
    let f = |m: &Value, path: &[&str]| -> f64 {
        let mut x = m;
        for p in path {
            x = &x[*p];
        }
        x.as_f64()
            .unwrap_or_else(|| panic!("{path:?} of {}: {x}", m["version"]))
    };
    let base_rate = won as f64 / v["outcomes"]["leads"].as_f64().unwrap();
    let report = format!(
        "base rate {base_rate:.3}; MQL→won {:.3} vs {:.3}; recall {:.3} vs {:.3}; \
         suggested threshold {} (precision {:.3}, F1 {:.3}) vs {} (precision {:.3}, F1 {:.3})",
        f(good, &["mql_to_won"]),
        f(bad, &["mql_to_won"]),
        f(good, &["became_mql_classifier", "recall"]),
        f(bad, &["became_mql_classifier", "recall"]),
        f(good, &["suggested_threshold", "threshold"]),
        f(good, &["suggested_threshold", "precision"]),
        f(good, &["suggested_threshold", "f1"]),
        f(bad, &["suggested_threshold", "threshold"]),
        f(bad, &["suggested_threshold", "precision"]),
        f(bad, &["suggested_threshold", "f1"]),
    );
    eprintln!("{report}");
    // MQLs of the right model convert clearly better than the base rate and
    // than the wrong model's; it also finds far more of the won deals.
    assert!(
        f(good, &["mql_to_won"]) > 1.3 * base_rate,
        "default MQLs convert above the base rate: {report}"
    );
    assert!(
        f(good, &["mql_to_won"]) > f(bad, &["mql_to_won"]) + 0.03,
        "MQL→won: {report}"
    );
    assert!(
        f(good, &["became_mql_classifier", "recall"])
            > 3.0 * f(bad, &["became_mql_classifier", "recall"]),
        "recall: {report}"
    );
    // At each model's own suggested threshold the right one is more precise
    // and has the better F1.
    assert!(
        f(good, &["suggested_threshold", "precision"])
            > f(bad, &["suggested_threshold", "precision"]) + 0.03,
        "precision at the suggested threshold: {report}"
    );
    assert!(
        f(good, &["suggested_threshold", "f1"]) > f(bad, &["suggested_threshold", "f1"]),
        "F1 at the suggested threshold: {report}"
    );
    // The won share rises with the default model's band.
    let share: Vec<f64> = good["bands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["won_share"].as_f64().unwrap())
        .collect();
    assert!(
        share.windows(2).all(|w| w[0] < w[1]),
        "won share by band (cold, warm, hot) rises: {share:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_input_fails_with_a_message_that_names_the_problem() {
    let dir = scratch("bad-input");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let events = p("events.jsonl");
    write_scenario(Path::new(&events), true);

    // An empty event file, one with only bad lines, a missing one.
    std::fs::write(p("empty.jsonl"), "").unwrap();
    let err = fails(&["backtest", "--events", &p("empty.jsonl")]);
    assert!(
        err.contains("no events in") && err.contains("empty.jsonl"),
        "{err}"
    );
    std::fs::write(p("garbage.jsonl"), "not json\n{}\n").unwrap();
    let err = fails(&["backtest", "--events", &p("garbage.jsonl")]);
    assert!(
        err.contains("garbage.jsonl:1:"),
        "bad lines reported: {err}"
    );
    assert!(err.contains("no events in"), "{err}");
    let err = fails(&["backtest", "--events", &p("missing.jsonl")]);
    assert!(err.contains("missing.jsonl"), "{err}");
    let err = fails(&["backtest"]);
    assert!(err.contains("--events <FILE>"), "{err}");

    // A model (or baseline) that does not validate: the loader names the key.
    std::fs::write(
        p("bad-model.toml"),
        "version = \"x\"\n[[engagement.rules]]\nname = \"a\"\nevent = \"e\"\npoints = 1\nevery = 0\n",
    )
    .unwrap();
    for flag in ["--model", "--baseline"] {
        let err = fails(&["backtest", "--events", &events, flag, &p("bad-model.toml")]);
        assert!(
            err.contains("bad-model.toml is not a valid model")
                && err.contains("engagement.rules[0].every"),
            "{flag}: {err}"
        );
    }

    // An unknown flag.
    let err = fails(&["backtest", "--events", &events, "--bogus"]);
    assert!(err.contains("--bogus"), "{err}");

    // No outcomes at all: precision and recall need them.
    let no_deals = p("no-deals.jsonl");
    write_scenario(Path::new(&no_deals), false);
    let err = fails(&["backtest", "--events", &no_deals]);
    assert!(
        err.contains("no outcomes in")
            && err.contains("deal_won")
            && err.contains("precision and recall"),
        "{err}"
    );
    // Outcomes only for leads that have no event.
    std::fs::write(p("strangers.csv"), "Q,won,2026-03-05T00:00:00Z\n").unwrap();
    let err = fails(&[
        "backtest",
        "--events",
        &no_deals,
        "--outcomes",
        &p("strangers.csv"),
    ]);
    assert!(err.contains("none of the outcomes"), "{err}");
    // Only lost deals: no positives.
    std::fs::write(p("lost.csv"), "A,lost,2026-03-05T00:00:00Z\n").unwrap();
    let err = fails(&[
        "backtest",
        "--events",
        &no_deals,
        "--outcomes",
        &p("lost.csv"),
    ]);
    assert!(err.contains("no won deals"), "{err}");

    // An unreadable, empty or malformed outcomes file.
    let err = fails(&[
        "backtest",
        "--events",
        &events,
        "--outcomes",
        &p("nope.csv"),
    ]);
    assert!(
        err.contains("cannot read outcomes file") && err.contains("nope.csv"),
        "{err}"
    );
    std::fs::write(p("empty.csv"), "lead_id,outcome,at\n").unwrap();
    let err = fails(&[
        "backtest",
        "--events",
        &events,
        "--outcomes",
        &p("empty.csv"),
    ]);
    assert!(
        err.contains("no outcomes in") && err.contains("empty.csv"),
        "{err}"
    );
    std::fs::write(
        p("malformed.csv"),
        "A,won,2026-03-05T00:00:00Z\nB,maybe,2026-03-05T00:00:00Z\n",
    )
    .unwrap();
    let err = fails(&[
        "backtest",
        "--events",
        &events,
        "--outcomes",
        &p("malformed.csv"),
    ]);
    assert!(
        err.contains("malformed.csv: line 2: outcome \"maybe\""),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn help_documents_the_outcomes_format() {
    let out = leadscore(&["backtest", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for needle in [
        "--outcomes <FILE>",
        "lead_id,outcome,at",
        "\"outcome\": \"won\"",
        "--report <DIR>",
    ] {
        assert!(help.contains(needle), "{needle:?} not in:\n{help}");
    }
    let top = text(&leadscore(&["--help"]).stdout);
    assert!(top.contains("leadscore backtest"), "{top}");
}

// ---------------------------------------------------------------------------
// The HTML report, in a real browser.
// ---------------------------------------------------------------------------

/// Headless Chromium (Debian's `chromium`), installed when missing. The
/// test fails without it: a report whose charts were never drawn must not
/// pass.
fn chromium() -> PathBuf {
    tools::program("chromium")
}

/// The DOM of `page` after its scripts ran, as Chromium dumps it.
fn rendered_dom(page: &Path, profile: &Path) -> String {
    let mut child = Command::new(chromium())
        // --no-sandbox: the tests may run as root, where Chromium's sandbox
        // refuses to start; the rest keeps a fresh profile from reaching
        // out to the network or setting itself up.
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    // Read stdout on a thread so that a large DOM cannot block the browser.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).map(|_| s)
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            assert!(status.success(), "chromium --dump-dom failed: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium --dump-dom did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader
        .join()
        .expect("reader thread")
        .expect("chromium stdout is UTF-8")
}

/// The markup inside the chart container `id` (it holds no `<div>`).
fn container<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element #{id} in the page"));
    let rest = &dom[start..];
    &rest[..rest.find("</div>").expect("the container closes")]
}

#[test]
fn the_html_report_draws_its_charts_in_a_browser() {
    let dir = scratch("report");
    let events = dir.join("events.jsonl");
    write_scenario(&events, true);
    let careers = dir.join("careers.toml");
    std::fs::write(&careers, careers_model()).unwrap();
    let report = dir.join("report");
    let out = leadscore(&[
        "backtest",
        "--events",
        events.to_str().unwrap(),
        "--baseline",
        careers.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = report.join("index.html");
    let html = std::fs::read_to_string(&page).expect("index.html written");
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(report.join("backtest.json")).expect("backtest.json written"),
    )
    .expect("backtest.json is JSON");
    assert_scenario(&data["models"][0]);

    // Self-contained: nothing is fetched, and no chart is in the markup
    // before the script runs.
    for remote in ["src=", "<link", "@import", "url("] {
        assert!(!html.contains(remote), "the report references {remote}");
    }
    for id in ["histogram-0", "bands-1", "sweep-0"] {
        assert!(
            !container(&html, id).contains("<svg"),
            "#{id} is empty until the script runs"
        );
    }

    let dom = rendered_dom(&page, &dir.join("chromium-profile"));
    let bins = data["models"][0]["score_histogram"]
        .as_array()
        .unwrap()
        .len();
    for (i, model) in ["default-1", "careers-1"].iter().enumerate() {
        let hist = container(&dom, &format!("histogram-{i}"));
        assert!(hist.contains("<svg"), "histogram of {model} drawn:\n{hist}");
        assert_eq!(
            hist.matches("<rect").count(),
            2 * bins,
            "a won and a lost bar per bin for {model}"
        );
        let bands = container(&dom, &format!("bands-{i}"));
        assert_eq!(
            bands.matches("<rect").count(),
            3,
            "a bar per band for {model}"
        );
        let sweep = container(&dom, &format!("sweep-{i}"));
        assert_eq!(
            sweep.matches("<path").count(),
            3,
            "precision, recall and volume lines for {model}"
        );
        assert!(
            sweep.contains(" d=\"M"),
            "the lines have points for {model}"
        );
    }
    assert!(
        container(&dom, "bands-0").contains("33.3% of 3"),
        "the warm band is labelled"
    );
    assert!(
        container(&dom, "sweep-0").contains("suggested 34"),
        "the suggested threshold is marked"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A Segment stream in which some leads browse anonymously before they
/// identify: the backtest sees the same qualifications and outcomes as on
/// the native stream, because each visitor's scored events reach its lead.
#[test]
fn a_segment_stream_with_visitors_backtests_as_the_native_one() {
    let dir = scratch("segment");
    let generate = |format: &str| {
        let out = leadscore(&[
            "generate",
            "--events",
            "20000",
            "--leads",
            "1000",
            "--seed",
            "11",
            "--anonymous-share",
            "0.3",
            "--format",
            format,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let path = dir.join(format!("{format}.jsonl"));
        std::fs::write(&path, &out.stdout).expect("write events");
        path
    };
    let (native, segment) = (generate("json"), generate("segment"));
    let (want, _) = backtest_json(&["--events", native.to_str().unwrap()]);
    let (got, _) = backtest_json(&[
        "--events",
        segment.to_str().unwrap(),
        "--input-format",
        "segment",
    ]);
    assert_eq!(got["outcomes"], want["outcomes"]);
    for key in ["became_mql", "became_sql"] {
        assert_eq!(got["models"][0][key], want["models"][0][key], "{key}");
    }
    assert!(want["models"][0]["became_mql"]["leads"].as_u64().unwrap() > 50);
}

/// SLA compliance, when the events hold `sales_contacted`. A, B and C: fit
/// 35 + webinar 15 = 50, warm MQLs at T (Monday 14:00), due Thursday 14:00
/// (3 working days). A is touched after 2 h, in time; B never (a breach); C
/// on Friday, after its breach (96 h). A wins, B loses at T + 10 d.
/// New business: 3 hand-offs, 1 in time, 2 breaches, 1 touched late,
/// compliance 1 / (1 + 2) = 33.3%, median of 2 h and 96 h = 49 h.
#[test]
fn sla_compliance_is_reported_when_the_events_hold_sales_contacted() {
    let dir = scratch("sla");
    let t = t0();
    let p = || json!({ "profile": fit35() });
    let mut lines = Vec::new();
    for l in ["A", "B", "C"] {
        lines.push(ev(&format!("{l}1"), l, "profile_updated", t, p()).to_string());
        lines.push(ev(&format!("{l}2"), l, "webinar_attended", t, json!({})).to_string());
    }
    let hours = |h: i64| h * 3_600_000_000;
    lines.push(ev("A3", "A", "sales_contacted", t + hours(2), json!({})).to_string());
    lines.push(ev("C3", "C", "sales_contacted", t + days(4), json!({})).to_string());
    lines.push(ev("A4", "A", "deal_won", t + days(10), json!({})).to_string());
    lines.push(ev("B4", "B", "deal_lost", t + days(10), json!({})).to_string());
    let events = dir.join("events.jsonl");
    write_lines(&events, &lines);
    let (v, _) = backtest_json(&["--events", events.to_str().unwrap()]);
    assert_eq!(
        v["models"][0]["sla"],
        json!([{
            "route": "new_business", "handoffs": 3, "touched_in_time": 1, "breaches": 2,
            "touched_after_breach": 1, "compliance": 1.0 / 3.0,
            "median_hours_to_first_touch": 49.0
        }])
    );
    let out = leadscore(&["backtest", "--events", events.to_str().unwrap()]);
    let summary = text(&out.stdout);
    assert!(summary.contains("SLA compliance by route"), "{summary}");
    assert!(
        summary.contains("new_business          3        1         2             1       33.3%               49.0"),
        "{summary}"
    );
    let report = dir.join("report");
    let out = leadscore(&[
        "backtest",
        "--events",
        events.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = std::fs::read_to_string(report.join("index.html")).unwrap();
    assert!(page.contains("Follow-up SLA by route") && page.contains("33.3%"));

    // Without a sales_contacted: no SLA section (every hand-off would breach).
    let without: Vec<String> = lines
        .iter()
        .filter(|l| !l.contains("sales_contacted"))
        .cloned()
        .collect();
    write_lines(&events, &without);
    let (v, _) = backtest_json(&["--events", events.to_str().unwrap()]);
    assert!(v["models"][0].get("sla").is_none(), "{}", v["models"][0]);
    let _ = std::fs::remove_dir_all(dir);
}
