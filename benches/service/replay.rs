//! Phase 5: `leadscore replay` of a topic next to `leadscore score` on the
//! same events from a file.

use std::process::Command;
use std::time::Instant;

use leadscore::codec::encode_event_json;

use crate::broker::Broker;
use crate::machine::Cpu;
use crate::{produce, throughput_events, Report, Settings};

/// `leadscore replay` of a topic under another model, next to `leadscore
/// score` on the same events read from a file (both the release binary,
/// wall time including start-up, the faster of two runs each).
pub fn replay_phase(b: &Broker, s: &Settings, r: &mut Report) {
    println!("== 5. replay vs score on the same {} events", s.events);
    let input = produce(b, "bench-replay-events", s.partitions, throughput_events(s));
    b.create_topic("bench-replay-status", s.partitions, false);
    let file = s.out_dir.join("replay-events.jsonl");
    let mut body = Vec::with_capacity(200 << 20);
    for e in throughput_events(s) {
        encode_event_json(&e, &mut body);
        body.push(b'\n');
    }
    std::fs::write(&file, &body).expect("write the event file");
    drop(body);
    let model = s.out_dir.join("replay-model.toml");
    std::fs::write(
        &model,
        include_str!("../../src/model/default.toml")
            .replace("version = \"default-1\"", "version = \"bench-2\"")
            .replace("mql_min_total = 50", "mql_min_total = 40"),
    )
    .expect("write the model");
    let config = s.out_dir.join("replay.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\ngroup_id = \"bench-replay\"\ninstance_id = \"bench-replay-0\"\n\
             input_topics = [\"bench-replay-events\"]\nstatus_topic = \"bench-replay-status\"\n\
             dead_letter_topic = \"bench-dlq\"\n",
            b.bootstrap
        ),
    )
    .expect("write the config");
    let bin = env!("CARGO_BIN_EXE_leadscore");
    // The bench's own LEADSCORE_* settings are not leadscore config keys.
    let cmd = |args: &[&str]| {
        let mut c = Command::new(bin);
        c.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("LEADSCORE_") {
                c.env_remove(k);
            }
        }
        c
    };

    // Each runs twice, in turn, and its faster run counts: the broker has
    // just taken the input and is still busy with it (and its JIT) at first.
    let (mut score_secs, mut replay_secs) = (f64::MAX, f64::MAX);
    let mut replayed = None;
    let mut cpu_line = String::new();
    for _ in 0..2 {
        let t = Instant::now();
        let out = cmd(&["score", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .output()
            .expect("run leadscore score");
        score_secs = score_secs.min(t.elapsed().as_secs_f64());
        assert!(
            out.status.success(),
            "score: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let cpu = Cpu::now(b);
        let t = Instant::now();
        let out = cmd(&["replay", "--config"])
            .arg(&config)
            .arg("--model")
            .arg(&model)
            .arg("--json")
            .output()
            .expect("run leadscore replay");
        let secs = t.elapsed().as_secs_f64();
        if !out.status.success() {
            r.line(format!(
                "replay: FAILED: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            return;
        }
        if secs < replay_secs {
            replay_secs = secs;
            cpu_line = cpu.since(b, secs);
            replayed = Some(out);
        }
    }
    let out = replayed.expect("two replays ran");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("replay JSON");
    let n = input.total as f64;
    r.line(format!(
        "score (file, new model): {} events in {score_secs:.2} s = {:.0} events/s",
        input.total,
        n / score_secs
    ));
    r.line(format!(
        "replay (topic, new model + live model for the summary, {} changes written): {} events in {replay_secs:.2} s = {:.0} events/s; {:.0}% of score (target >= 100%)",
        summary["changes_written"],
        summary["events"],
        n / replay_secs,
        100.0 * score_secs / replay_secs
    ));
    r.line(format!("replay:   {cpu_line}"));
}
