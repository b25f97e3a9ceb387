//! Golden scenario: runs the real `leadscore score` binary on the hand-written
//! `tests/golden/scenario.jsonl` and compares its output with
//! `tests/golden/expected.jsonl`, which was computed by hand from SPEC.md
//! (the arithmetic is in `tests/golden/README.md`).
//!
//! Compared exactly: change_id, lead_id, sequence, from, to, occurred_at,
//! band, route, follow_up_by, model_version, cause_event_id. Within 1e-6:
//! score.{total,fit,engagement}. Loosely: reasons (an array of strings) and
//! top_contributors (an array of {rule, points}, largest |points| first).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const SCENARIO: &str = "tests/golden/scenario.jsonl";
const EXPECTED: &str = "tests/golden/expected.jsonl";
const UNTIL: &str = "2026-05-20T00:00:00Z";
/// Changes in `expected.jsonl` that only `--until` makes due (the last ones).
const FIRED_BY_UNTIL: usize = 2;

const EXACT: [&str; 11] = [
    "change_id",
    "lead_id",
    "sequence",
    "from",
    "to",
    "occurred_at",
    "band",
    "route",
    "follow_up_by",
    "model_version",
    "cause_event_id",
];

struct Run {
    changes: Vec<Value>,
    stderr: String,
}

fn run_score(until: Option<&str>) -> Run {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leadscore"));
    cmd.current_dir(root).args(["score", "--input", SCENARIO]);
    if let Some(t) = until {
        cmd.args(["--until", t]);
    }
    let out = cmd.output().expect("run leadscore");
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let stderr = String::from_utf8(out.stderr).expect("stderr is UTF-8");
    assert!(
        out.status.success(),
        "leadscore score failed: {}\n{stderr}",
        out.status
    );
    let changes = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect();
    Run { changes, stderr }
}

fn expected() -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join(EXPECTED))
        .expect("read expected.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("expected.jsonl line is JSON"))
        .collect()
}

fn short(v: &Value) -> String {
    format!(
        "{} {}->{} at {}",
        v["change_id"], v["from"], v["to"], v["occurred_at"]
    )
}

/// Compares one change with its expectation; returns the differences.
fn diff(got: &Value, want: &Value) -> Vec<String> {
    let mut d = Vec::new();
    for k in EXACT {
        if got.get(k) != want.get(k) {
            d.push(format!("{k}: got {:?}, want {:?}", got.get(k), want.get(k)));
        }
    }
    for k in ["total", "fit", "engagement"] {
        let g = got["score"][k].as_f64();
        let w = want["score"][k]
            .as_f64()
            .expect("expected score is a number");
        match g {
            Some(g) if (g - w).abs() <= 1e-6 => {}
            _ => d.push(format!("score.{k}: got {g:?}, want {w}")),
        }
    }
    // Loose checks: the SPEC fixes the shape, not the wording or the count.
    match got.get("reasons").and_then(Value::as_array) {
        Some(r) if r.iter().all(Value::is_string) => {}
        _ => d.push(format!(
            "reasons: not an array of strings: {:?}",
            got.get("reasons")
        )),
    }
    match got.get("top_contributors").and_then(Value::as_array) {
        Some(tc) => {
            let mut last = f64::INFINITY;
            for c in tc {
                let rule_ok = c["rule"].as_str().is_some_and(|s| !s.is_empty());
                match c["points"].as_f64() {
                    Some(p) if rule_ok && p.is_finite() && p.abs() <= last + 1e-9 => last = p.abs(),
                    _ => d.push(format!("top_contributors: bad or out-of-order entry {c}")),
                }
            }
        }
        None => d.push(format!(
            "top_contributors: not an array: {:?}",
            got.get("top_contributors")
        )),
    }
    d
}

fn compare(got: &[Value], want: &[Value]) {
    let mut problems = Vec::new();
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        for p in diff(g, w) {
            problems.push(format!("change #{} (want {}): {p}", i + 1, short(w)));
        }
    }
    if got.len() != want.len() {
        problems.push(format!("got {} changes, want {}", got.len(), want.len()));
    }
    if !problems.is_empty() {
        let got_list: Vec<String> = got.iter().map(short).collect();
        let want_list: Vec<String> = want.iter().map(short).collect();
        panic!(
            "golden mismatch:\n  {}\n\ngot:\n  {}\nwant:\n  {}",
            problems.join("\n  "),
            got_list.join("\n  "),
            want_list.join("\n  ")
        );
    }
}

#[test]
fn golden_scenario_with_until() {
    let run = run_score(Some(UNTIL));
    compare(&run.changes, &expected());
}

#[test]
fn golden_scenario_without_until_stops_before_the_last_timers() {
    let run = run_score(None);
    let want = expected();
    compare(&run.changes, &want[..want.len() - FIRED_BY_UNTIL]);
}

#[test]
fn golden_scenario_reports_exactly_the_bad_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(SCENARIO)).expect("read scenario");
    // Comment lines, and the two invalid events x-1 (no lead_id) and x-2 (bad time).
    let want: BTreeSet<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            l.starts_with('#')
                || l.contains(r#""event_id":"x-1""#)
                || l.contains(r#""event_id":"x-2""#)
        })
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(r#""event_id":"x-"#))
            .count(),
        2
    );
    let run = run_score(Some(UNTIL));
    let prefix = format!("{SCENARIO}:");
    let mut got = BTreeSet::new();
    for l in run.stderr.lines().filter(|l| l.starts_with(&prefix)) {
        let rest = &l[prefix.len()..];
        let (n, reason) = rest
            .split_once(':')
            .unwrap_or_else(|| panic!("stderr line without a reason: {l}"));
        let n: usize = n
            .parse()
            .unwrap_or_else(|_| panic!("stderr line without a line number: {l}"));
        assert!(
            !reason.trim().is_empty(),
            "stderr line without a reason: {l}"
        );
        assert!(got.insert(n), "line {n} reported twice");
    }
    assert_eq!(got, want, "reported bad lines; stderr was:\n{}", run.stderr);
}
