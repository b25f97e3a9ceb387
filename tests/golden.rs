//! Golden scenario: runs the real `leadscore score` binary on the hand-written
//! `tests/golden/scenario.jsonl` and compares its output with
//! `tests/golden/expected.jsonl`, which was computed by hand from SPEC.md
//! (the arithmetic is in `tests/golden/README.md`).
//!
//! Compared exactly: kind, change_id, lead_id, sequence, from, to,
//! occurred_at, band, route, follow_up_by, model_version, cause_event_id (an
//! `sla_breached` record: kind, change_id, lead_id, sequence, stage, route,
//! follow_up_by, breached_at, band, model_version). Within 1e-6:
//! score.{total,fit,engagement}. Loosely: reasons (an array of strings) and
//! top_contributors (an array of {rule, points}, largest |points| first).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const SCENARIO: &str = "tests/golden/scenario.jsonl";
const EXPECTED: &str = "tests/golden/expected.jsonl";
const UNTIL: &str = "2026-05-20T00:00:00Z";
/// Records in `expected.jsonl` that only `--until` makes due (the last ones).
const FIRED_BY_UNTIL: usize = 3;

const EXACT_BREACH: [&str; 10] = [
    "kind",
    "change_id",
    "lead_id",
    "sequence",
    "stage",
    "route",
    "follow_up_by",
    "breached_at",
    "band",
    "model_version",
];

const EXACT: [&str; 12] = [
    "kind",
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
    if v["kind"] == "sla_breached" {
        return format!(
            "{} {} breached at {}",
            v["change_id"], v["stage"], v["breached_at"]
        );
    }
    format!(
        "{} {}->{} at {}",
        v["change_id"], v["from"], v["to"], v["occurred_at"]
    )
}

/// Compares one change with its expectation; returns the differences.
fn diff(got: &Value, want: &Value) -> Vec<String> {
    let mut d = Vec::new();
    let breach = want["kind"] == "sla_breached";
    let exact: &[&str] = if breach { &EXACT_BREACH } else { &EXACT };
    for &k in exact {
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
        None if breach => {}
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

// The command around the scenario: stdin, a closed output, a missing file,
// and bad lines far apart in a file of many read blocks.

fn leadscore() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leadscore"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

/// `leadscore score --input PATH`, run to its end.
fn score_file(path: &Path) -> std::process::Output {
    leadscore()
        .args(["score", "--input"])
        .arg(path)
        .output()
        .expect("run leadscore")
}

/// `score` on `path`, which must succeed, name exactly the bad lines
/// `bad_at` and count `events` valid events.
fn score_with_bad_lines(path: &Path, bad_at: &[usize], events: usize) -> std::process::Output {
    let out = score_file(path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(bad_lines_reported(&stderr, path), bad_at, "{stderr}");
    let summary = format!("{events} events, {} bad lines", bad_at.len());
    assert!(stderr.contains(&summary), "{stderr}");
    out
}

/// The line numbers `score` reported as bad for `path` on stderr
/// (`PATH:LINE: reason`).
fn bad_lines_reported(stderr: &str, path: &Path) -> Vec<usize> {
    let prefix = format!("{}:", path.display());
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            rest.split(':')
                .next()
                .unwrap()
                .parse()
                .expect("a line number")
        })
        .collect()
}

/// A generated file of `events` JSON lines, removed on drop.
struct Generated(std::path::PathBuf);

impl Generated {
    fn new(name: &str, events: u32) -> Generated {
        let path = std::env::temp_dir().join(format!(
            "leadscore-golden-{name}-{}.jsonl",
            std::process::id()
        ));
        let out = leadscore()
            .args([
                "generate",
                "--events",
                &events.to_string(),
                "--leads",
                "20000",
            ])
            .arg("--out")
            .arg(&path)
            .output()
            .expect("run leadscore generate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Generated(path)
    }
}

impl Drop for Generated {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn score_reads_stdin_as_it_reads_a_file() {
    let from_file = leadscore()
        .args(["score", "--input", SCENARIO, "--until", UNTIL])
        .output()
        .expect("run leadscore");
    let input = std::fs::File::open(Path::new(env!("CARGO_MANIFEST_DIR")).join(SCENARIO))
        .expect("open scenario");
    let from_stdin = leadscore()
        .args(["score", "--input", "-", "--until", UNTIL])
        .stdin(input)
        .output()
        .expect("run leadscore");
    assert!(from_stdin.status.success());
    assert!(!from_file.stdout.is_empty());
    assert_eq!(from_stdin.stdout, from_file.stdout);
}

#[test]
fn score_stops_with_an_error_when_its_output_is_closed() {
    use std::io::{BufRead, BufReader};
    let input = Generated::new("closed", 200_000);
    let mut child = leadscore()
        .args(["score", "--input"])
        .arg(&input.0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start leadscore score");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read a change");
    assert!(first.starts_with("{\"kind\":\""), "{first}");
    // The reader is gone: the next writes fail. The three threads of score
    // must all stop, not wait on each other.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("score did not stop within 60 s of its output closing");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success());
    assert!(stderr.contains("cannot write to stdout"), "{stderr}");
}

#[test]
fn score_names_a_missing_input_file() {
    let out = leadscore()
        .args(["score", "--input", "no/such/events.jsonl"])
        .output()
        .expect("run leadscore");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot open input file no/such/events.jsonl"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn score_numbers_bad_lines_across_read_blocks_and_folds_the_rest() {
    // About 9 MiB: the decoder reads it in many 1 MiB blocks.
    let input = Generated::new("blocks", 50_000);
    let text = std::fs::read_to_string(&input.0).expect("read generated file");
    let lines: Vec<&str> = text.lines().collect();
    // Bad lines first, far inside, and last (line numbers in the new file).
    let mut with_bad: Vec<&str> = lines.clone();
    const BAD: &str = "{\"event_id\": broken";
    for at in [0, 7_776, 25_000] {
        with_bad.insert(at, BAD);
    }
    with_bad.push(BAD);
    let bad_at: Vec<usize> = (1..=with_bad.len())
        .filter(|&n| with_bad[n - 1] == BAD)
        .collect();
    assert_eq!(bad_at, [1, 7_777, 25_001, lines.len() + 4]);
    std::fs::write(&input.0, with_bad.join("\n") + "\n").expect("write");

    let out = score_with_bad_lines(&input.0, &bad_at, lines.len());

    // The valid lines alone give the same changes.
    std::fs::write(&input.0, lines.join("\n") + "\n").expect("write");
    let expected = score_file(&input.0);
    assert!(!expected.stdout.is_empty());
    assert_eq!(out.stdout, expected.stdout);
}

#[test]
fn score_folds_the_lines_beside_bytes_that_are_not_utf8() {
    // About 3.5 MiB: some read blocks hold a non-UTF-8 line, others do not.
    let input = Generated::new("utf8", 20_000);
    let text = std::fs::read_to_string(&input.0).expect("read generated file");
    let mut lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
    // Multi-byte text in a few events, in both kinds of block.
    for at in [10, 5_000, 15_000] {
        let line = String::from_utf8(lines[at].clone()).unwrap();
        lines[at] = line
            .replacen("\"event_id\":\"", "\"event_id\":\"Zoë-Überblick-✓-", 1)
            .into_bytes();
    }
    let valid = lines.clone();
    // A valid event with a field the decoder skips, holding invalid UTF-8:
    // it still folds as it does without that field.
    let mut odd = b"{\"note\":\"\xff\xfe\",".to_vec();
    odd.extend_from_slice(&lines[4_000][1..]);
    lines[4_000] = odd;
    // Lines that are neither UTF-8 nor JSON, and one that is UTF-8 (in a
    // block that is UTF-8 throughout) but not JSON.
    const BAD: [&[u8]; 3] = [
        b"\xff\xfe not an event",
        "not an event either \u{2713}".as_bytes(),
        b"\xff\xfe not an event",
    ];
    for (at, bad) in [3, 12_000, 19_000].into_iter().zip(BAD) {
        lines.insert(at, bad.to_vec());
    }
    let bad_at: Vec<usize> = (1..=lines.len())
        .filter(|&n| BAD.contains(&lines[n - 1].as_slice()))
        .collect();
    assert_eq!(bad_at, [4, 12_001, 19_001]);
    let join = |ls: &[Vec<u8>]| {
        let mut out = Vec::new();
        for l in ls {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        out
    };
    std::fs::write(&input.0, join(&lines)).expect("write");
    let out = score_with_bad_lines(&input.0, &bad_at, valid.len());

    std::fs::write(&input.0, join(&valid)).expect("write");
    let expected = score_file(&input.0);
    assert!(!expected.stdout.is_empty());
    assert_eq!(out.stdout, expected.stdout);
    // The multi-byte ids made it through to the changes.
    assert!(String::from_utf8(expected.stdout)
        .unwrap()
        .contains("Zoë-Überblick-✓-"));
}
