//! `leadscore replay` on a real broker: a shadow replay equals `leadscore
//! score` under the new model and leaves the live group alone; `--into-live`
//! writes under the new version with ids that cannot collide; `--from TIME`;
//! bad input; and the switch of a live service to a new model, which emits
//! nothing twice.

mod broker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use broker::scenario::{setup, setup_with, sigterm, spawn, total, Keying, Setup};
use broker::{produce, read_all, wait_until, Broker};
use serde_json::Value;

type ByLead = BTreeMap<String, Vec<Value>>;

/// The default model with lower MQL thresholds, heavier webinars and
/// another version.
fn lenient_model(dir: &Path) -> PathBuf {
    let text = include_str!("../src/model/default.toml")
        .replace("version = \"default-1\"", "version = \"lenient-2\"")
        .replace("mql_min_total = 50", "mql_min_total = 35")
        .replace("demotion_total = 40", "demotion_total = 30")
        .replace("points = 15", "points = 25");
    assert!(text.contains("lenient-2") && text.contains("mql_min_total = 35"));
    let path = dir.join("lenient.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The default model with a higher MQL threshold and another version: it
/// emits fewer changes than the default one.
fn strict_model(dir: &Path) -> PathBuf {
    let text = include_str!("../src/model/default.toml")
        .replace("version = \"default-1\"", "version = \"strict-2\"")
        .replace("mql_min_total = 50", "mql_min_total = 65");
    assert!(text.contains("strict-2") && text.contains("mql_min_total = 65"));
    let path = dir.join("strict.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn dir(s: &Setup) -> PathBuf {
    s.config.parent().unwrap().to_path_buf()
}

fn by_lead<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> ByLead {
    let mut out = ByLead::new();
    for p in payloads {
        let v: Value = serde_json::from_slice(p).unwrap();
        out.entry(v["lead_id"].as_str().unwrap().into())
            .or_default()
            .push(v);
    }
    out
}

/// `leadscore score --model MODEL` on the events (in the order given).
fn score_with(model: &Path, events: &[(Option<i32>, Vec<u8>, Vec<u8>)]) -> ByLead {
    let file = model.with_extension(format!("{}.jsonl", events.len()));
    let mut body = Vec::new();
    for (_, _, e) in events {
        body.extend_from_slice(e);
        body.push(b'\n');
    }
    std::fs::write(&file, body).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["score", "--model", model.to_str().unwrap(), "--input"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    by_lead(out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()))
}

fn replay(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["replay", "--config", config.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

fn replay_ok(config: &Path, args: &[&str]) -> Value {
    let out = replay(config, args);
    assert!(
        out.status.success(),
        "replay {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("replay --json prints JSON")
}

fn topic(b: &Broker, name: &str) -> ByLead {
    let records = read_all(
        &b.bootstrap,
        name,
        Duration::from_secs(2),
        Duration::from_secs(60),
    );
    by_lead(records.iter().map(|r| r.payload.as_slice()))
}

/// The lead's last stage change (SLA breaches are records of another kind).
fn last_change<'a>(changes: &'a ByLead, id: &str) -> Option<&'a serde_json::Value> {
    changes
        .get(id)
        .and_then(|c| c.iter().rev().find(|c| c["kind"] == "stage_changed"))
}

/// Leads per final stage: the last change's `to`, or `lead` without changes.
fn stages(changes: &ByLead, leads: &[String]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for id in leads {
        let stage = last_change(changes, id)
            .map(|c| c["to"].as_str().unwrap().to_string())
            .unwrap_or_else(|| "lead".into());
        *out.entry(stage).or_insert(0) += 1;
    }
    out
}

fn lead_ids(s: &Setup) -> Vec<String> {
    let mut ids: Vec<String> = s
        .events
        .iter()
        .map(|(_, k, _)| String::from_utf8(k.clone()).unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The log without terminal colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn json_counts(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

fn wait_for_changes(b: &Broker, status: &str, want: usize) {
    wait_until(
        "the live service's changes",
        Duration::from_secs(120),
        || {
            read_all(
                &b.bootstrap,
                status,
                Duration::from_millis(500),
                Duration::from_secs(20),
            )
            .len()
                >= want
        },
    );
}

#[test]
fn a_shadow_replay_equals_score_under_the_new_model_and_leaves_the_live_group_alone() {
    let b = Broker::shared();
    let s = setup(b, "replay-shadow", "exactly_once", 6_000, 51);
    let new = lenient_model(&dir(&s));
    let mut live = spawn(&s);
    produce(&b.producer(), &s.input, &s.events);
    wait_for_changes(b, &s.status, total(&s));

    let summary = replay_ok(&s.config, &["--model", new.to_str().unwrap(), "--json"]);

    // The shadow topic holds exactly what `score` gives under the new model.
    let want = score_with(&new, &s.events);
    let shadow = topic(b, &format!("{}-shadow", s.status));
    assert_eq!(shadow, want, "shadow topic == score under the new model");
    assert!(want
        .values()
        .flatten()
        .all(|c| c["model_version"] == "lenient-2"));

    // The summary compares the two models on the same events.
    let leads = lead_ids(&s);
    assert_eq!(summary["events"], s.events.len() as u64);
    assert_eq!(summary["invalid"], 0);
    assert_eq!(summary["leads"], leads.len() as u64);
    assert_eq!(
        summary["changes_written"],
        want.values().map(Vec::len).sum::<usize>() as u64
    );
    assert_eq!(
        json_counts(&summary["current"]["stages"]),
        stages(&s.expected, &leads)
    );
    assert_eq!(
        json_counts(&summary["new"]["stages"]),
        stages(&want, &leads)
    );
    let differ = leads
        .iter()
        .filter(|id| {
            let last = |c: &ByLead| last_change(c, id).map(|c| c["to"].clone());
            last(&s.expected).unwrap_or("lead".into()) != last(&want).unwrap_or("lead".into())
        })
        .count() as u64;
    assert!(differ > 0, "the lenient model changes some outcomes");
    assert_eq!(summary["different_stage"], differ);
    let examples = summary["examples"].as_array().unwrap();
    assert_eq!(examples.len() as u64, differ.min(10));
    let mut transitions = BTreeMap::new();
    for c in want
        .values()
        .flatten()
        .filter(|c| c["kind"] == "stage_changed")
    {
        *transitions
            .entry(format!(
                "{}->{}",
                c["from"].as_str().unwrap(),
                c["to"].as_str().unwrap()
            ))
            .or_insert(0u64) += 1;
    }
    assert_eq!(json_counts(&summary["new"]["transitions"]), transitions);

    // The live service saw one assignment (no rebalance caused by the
    // replay) and its output is untouched.
    let st = sigterm(&mut live);
    assert!(st.success());
    let log = strip_ansi(&std::fs::read_to_string(dir(&s).join("service.log")).unwrap());
    assert_eq!(
        log.matches("rebalance kind=\"assign\"").count(),
        1,
        "the replay must not join the live group:\n{log}"
    );
    assert_eq!(topic(b, &s.status), s.expected);
}

/// A lead erased anywhere in the replayed range: nothing of it reaches the
/// shadow topic (neither its changes before the erasure nor the erasure's
/// record); every other lead's changes are `score`'s under the new model.
#[test]
fn a_shadow_replay_writes_nothing_of_a_lead_erased_in_the_range() {
    let b = Broker::shared();
    let s = setup_with(
        b,
        "replay-erased",
        "exactly_once",
        4_000,
        53,
        Keying::Lead,
        0.003,
    );
    let new = lenient_model(&dir(&s));
    produce(&b.producer(), &s.input, &s.events);
    let summary = replay_ok(&s.config, &["--model", new.to_str().unwrap(), "--json"]);
    let all = score_with(&new, &s.events);
    let erased: Vec<&String> = all
        .iter()
        .filter(|(_, c)| c.iter().any(|c| c["kind"] == "lead_erased"))
        .map(|(id, _)| id)
        .collect();
    assert!(
        erased.iter().any(|id| all[*id].len() > 1),
        "some erased lead had changes before its erasure"
    );
    let want: ByLead = all
        .iter()
        .filter(|(id, _)| !erased.contains(id))
        .map(|(id, c)| (id.clone(), c.clone()))
        .collect();
    let shadow = topic(b, &format!("{}-shadow", s.status));
    assert_eq!(
        shadow, want,
        "shadow topic == score, without the erased leads"
    );
    assert_eq!(summary["erased_leads"], erased.len() as u64);
    assert_eq!(
        summary["erased_changes"],
        erased.iter().map(|id| all[*id].len()).sum::<usize>() as u64
    );
    assert_eq!(
        summary["changes_written"],
        want.values().map(Vec::len).sum::<usize>() as u64
    );
}

#[test]
fn into_live_writes_under_the_new_version_with_ids_that_cannot_collide() {
    let b = Broker::shared();
    let s = setup(b, "replay-live", "exactly_once", 3_000, 52);
    produce(&b.producer(), &s.input, &s.events);

    // The live model's own version cannot go into the live topic.
    let same = dir(&s).join("same.toml");
    std::fs::write(&same, include_str!("../src/model/default.toml")).unwrap();
    let out = replay(
        &s.config,
        &["--model", same.to_str().unwrap(), "--into-live"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("version") && err.contains("default-1"),
        "{err}"
    );

    let new = lenient_model(&dir(&s));
    let summary = replay_ok(
        &s.config,
        &["--model", new.to_str().unwrap(), "--into-live", "--json"],
    );
    assert_eq!(summary["mode"], "live");
    let mut got = topic(b, &s.status);
    for c in got.values_mut().flatten() {
        let id = c["change_id"].as_str().unwrap().to_string();
        let plain = id
            .strip_suffix("@lenient-2")
            .unwrap_or_else(|| panic!("change id {id} carries the model version"));
        c["change_id"] = plain.into();
    }
    assert_eq!(got, score_with(&new, &s.events));
}

#[test]
fn from_a_time_replays_only_the_records_after_it() {
    let b = Broker::shared();
    let s = setup(b, "replay-from", "exactly_once", 2_000, 53);
    let half = s.events.len() / 2;
    let p = b.producer();
    produce(&p, &s.input, &s.events[..half]);
    thread::sleep(Duration::from_millis(1500));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let from = leadscore::time::format_rfc3339(now);
    thread::sleep(Duration::from_millis(1500));
    produce(&p, &s.input, &s.events[half..]);
    let new = lenient_model(&dir(&s));
    let summary = replay_ok(
        &s.config,
        &[
            "--model",
            new.to_str().unwrap(),
            "--from",
            &from,
            "--to-topic",
            "replay-from-out",
            "--json",
        ],
    );
    assert_eq!(summary["events"], (s.events.len() - half) as u64);
    assert_eq!(summary["topic"], "replay-from-out");
}

/// Sends `records` in one transaction of `p` and commits or aborts it.
fn in_transaction(
    p: &rdkafka::producer::BaseProducer,
    topic: &str,
    records: &[(Option<i32>, Vec<u8>, Vec<u8>)],
    commit: bool,
) {
    use rdkafka::producer::Producer;
    p.begin_transaction().expect("begin");
    produce(p, topic, records);
    if commit {
        p.commit_transaction(Duration::from_secs(30))
            .expect("commit");
    } else {
        p.abort_transaction(Duration::from_secs(30)).expect("abort");
    }
}

#[test]
fn a_topic_written_in_transactions_replays_its_committed_records_to_the_end() {
    use rdkafka::producer::Producer;
    let b = Broker::shared();
    let s = setup(b, "replay-txn", "exactly_once", 2_000, 55);
    let p: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &b.bootstrap)
        .set("transactional.id", "replay-txn-upstream")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    p.init_transactions(Duration::from_secs(30)).expect("init");
    // An upstream exactly-once writer: committed transactions, one aborted
    // in between (demo requests that must not count), and a commit marker
    // after the last record of every partition.
    let half = s.events.len() / 2;
    in_transaction(&p, &s.input, &s.events[..half], true);
    let aborted: Vec<_> = s.events[..half]
        .iter()
        .filter(|(part, _, _)| part.is_none())
        .take(200)
        .enumerate()
        .map(|(i, (_, key, body))| {
            let v: Value = serde_json::from_slice(body).unwrap();
            let e = serde_json::json!({
                "event_id": format!("aborted-{i}"),
                "lead_id": v["lead_id"],
                "type": "demo_requested",
                "occurred_at": v["occurred_at"],
            });
            (None, key.clone(), serde_json::to_vec(&e).unwrap())
        })
        .collect();
    in_transaction(&p, &s.input, &aborted, false);
    in_transaction(&p, &s.input, &s.events[half..], true);
    drop(p);

    let new = lenient_model(&dir(&s));
    let out = replay(&s.config, &["--model", new.to_str().unwrap(), "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // It found the end past the markers, rather than waiting for records
    // that never come.
    assert!(!stderr.contains("no readable records"), "{stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["events"], s.events.len() as u64);
    assert_eq!(summary["invalid"], 0);
    let want = score_with(&new, &s.events);
    assert_eq!(
        topic(b, &format!("{}-shadow", s.status)),
        want,
        "shadow topic == score of the committed events"
    );
}

#[test]
fn several_input_topics_are_each_read_to_their_end() {
    // Counts only: how the records of two topics interleave in a partition
    // is up to the fetches, and the watermark (so when timers fire) follows
    // it, so the changes are not compared with `score` of one file.
    let b = Broker::shared();
    let s = setup(b, "replay-two", "exactly_once", 2_000, 56);
    // Half of the leads arrive on a second, co-partitioned topic.
    let second = format!("{}-b", s.input);
    b.create_topic(&second, broker::scenario::PARTITIONS, false);
    let on_second = |key: &[u8]| key.last().is_some_and(|c| c % 2 == 1);
    let (b_events, a_events): (Vec<_>, Vec<_>) = s
        .events
        .iter()
        .cloned()
        .partition(|(part, key, _)| part.is_none() && on_second(key));
    assert!(!a_events.is_empty() && !b_events.is_empty());
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        &format!("input_topics = [\"{}\"]", s.input),
        &format!("input_topics = [\"{}\", \"{second}\"]", s.input),
    );
    assert!(config.contains(&second));
    std::fs::write(&s.config, config).unwrap();
    let p = b.producer();
    produce(&p, &s.input, &a_events);
    produce(&p, &second, &b_events);

    let new = lenient_model(&dir(&s));
    let summary = replay_ok(&s.config, &["--model", new.to_str().unwrap(), "--json"]);
    assert_eq!(summary["events"], s.events.len() as u64);
    assert_eq!(summary["invalid"], 0);
    assert_eq!(summary["leads"], lead_ids(&s).len() as u64);
    let shadow = topic(b, &format!("{}-shadow", s.status));
    assert_eq!(
        summary["changes_written"],
        shadow.values().map(Vec::len).sum::<usize>() as u64
    );
    // Changes of leads from both topics.
    assert!(shadow.keys().any(|id| on_second(id.as_bytes())));
    assert!(shadow.keys().any(|id| !on_second(id.as_bytes())));
}

#[test]
fn bad_input_gets_a_clear_message_and_a_failing_exit() {
    let b = Broker::shared();
    let s = setup(b, "replay-bad", "exactly_once", 100, 54);
    let new = lenient_model(&dir(&s));

    let bad_model = dir(&s).join("bad.toml");
    std::fs::write(
        &bad_model,
        include_str!("../src/model/default.toml")
            .replace("half_life = \"30d\"", "half_life = \"soon\""),
    )
    .unwrap();
    let out = replay(&s.config, &["--model", bad_model.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("half_life"), "names the key: {err}");

    let unknown = dir(&s).join("unknown-topic.toml");
    std::fs::write(
        &unknown,
        std::fs::read_to_string(&s.config)
            .unwrap()
            .replace(&format!("[\"{}\"]", s.input), "[\"no-such-topic\"]"),
    )
    .unwrap();
    let out = replay(&unknown, &["--model", new.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-topic") && err.contains("not found"),
        "{err}"
    );

    let out = replay(&s.config, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model"));

    let out = replay(
        &s.config,
        &[
            "--model",
            new.to_str().unwrap(),
            "--into-live",
            "--to-topic",
            "x",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot be used with")
            && err.contains("--into-live")
            && err.contains("--to-topic"),
        "{err}"
    );
}

/// The README's procedure: stop the service, rebuild the state under the
/// new model into a new changelog up to the offsets the service committed,
/// start the service on the new model and changelog. (A rebuild run while
/// the old service is still up comes first: its state must simply be
/// replaced.) The status topic then holds the old model's changes up to the
/// switch and the new model's after it, none twice, with sequences that go on.
#[test]
fn switching_the_live_service_to_a_new_model_emits_nothing_twice() {
    let b = Broker::shared();
    let s = setup(b, "switch", "exactly_once", 6_000, 55);
    let new = strict_model(&dir(&s));
    let cut = s.events.len() * 2 / 3;
    let (before, after) = s.events.split_at(cut);
    let old_model = dir(&s).join("default.toml");
    std::fs::write(&old_model, include_str!("../src/model/default.toml")).unwrap();
    let live_before = score_with(&old_model, before);

    let mut live = spawn(&s);
    let p = b.producer();
    produce(&p, &s.input, &before[..cut / 2]);
    let rebuild = [
        "--model",
        new.to_str().unwrap(),
        "--to-changelog",
        "switch-changelog-2",
        "--json",
    ];
    replay_ok(&s.config, &rebuild);
    produce(&p, &s.input, &before[cut / 2..]);
    wait_for_changes(b, &s.status, live_before.values().map(Vec::len).sum());
    // 1. Stop the service: it commits and leaves its offsets at the cut.
    assert!(sigterm(&mut live).success());
    // 2. Rebuild up to those offsets.
    let summary = replay_ok(&s.config, &rebuild);
    assert_eq!(summary["mode"], "changelog");
    assert_eq!(summary["changes_written"], 0);
    assert_eq!(summary["switch_ready"], true);
    assert_eq!(summary["events"], cut as u64);
    // 3. Start on the new model and the new changelog.
    let config = std::fs::read_to_string(&s.config).unwrap().replace(
        "[kafka]",
        &format!(
            "model = {:?}\n\n[kafka]\nchangelog_topic = \"switch-changelog-2\"",
            new.to_str().unwrap()
        ),
    );
    std::fs::write(&s.config, config).unwrap();
    let mut live = spawn(&s);
    produce(&p, &s.input, after);

    // Expected: the old model's changes up to the cut, then the new model's
    // changes caused after the cut, numbered on from the live sequence (an
    // SLA breach takes its hand-off's number).
    let new_before = score_with(&new, before);
    let new_all = score_with(&new, &s.events);
    let stage_changes = |by: &ByLead, lead: &str| {
        by.get(lead).map_or(0, |v| {
            v.iter().filter(|c| c["kind"] == "stage_changed").count()
        })
    };
    let mut want = live_before.clone();
    let mut shifted = 0;
    for (lead, changes) in &new_all {
        let skip = new_before.get(lead).map_or(0, Vec::len);
        let shift = stage_changes(&live_before, lead)
            .saturating_sub(stage_changes(&new_before, lead)) as u64;
        if shift > 0 && changes.len() > skip {
            shifted += 1;
        }
        for c in &changes[skip..] {
            let mut c = c.clone();
            let seq = c["sequence"].as_u64().unwrap() + shift;
            c["sequence"] = seq.into();
            c["change_id"] = if c["kind"] == "sla_breached" {
                format!("{lead}:{seq}:sla")
            } else {
                format!("{lead}:{seq}")
            }
            .into();
            want.entry(lead.clone()).or_default().push(c);
        }
    }
    assert!(
        shifted > 0,
        "some leads go on from a live sequence ahead of the new model's"
    );
    let want_total: usize = want.values().map(Vec::len).sum();
    assert!(want_total > live_before.values().map(Vec::len).sum::<usize>());
    wait_for_changes(b, &s.status, want_total);
    assert!(sigterm(&mut live).success());
    let got = topic(b, &s.status);
    for (lead, w) in &want {
        assert_eq!(got.get(lead), Some(w), "changes of {lead}");
    }
    assert_eq!(got.len(), want.len(), "no changes for other leads");
}
