//! The command line as a user meets it, run as the real binary: each
//! command takes only its own flags, help per command, bad values named,
//! `--version`, shell completions. (What the commands compute is tested in
//! golden.rs, backtest.rs, replay.rs and demo.rs.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Every command of the command line.
const COMMANDS: [&str; 9] = [
    "run",
    "demo",
    "score",
    "explain",
    "check",
    "generate",
    "backtest",
    "replay",
    "completions",
];

fn leadscore(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(args)
        .output()
        .expect("run leadscore")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `leadscore ARGS`, expects a success, returns stdout.
fn succeeds(args: &[&str]) -> String {
    let out = leadscore(args);
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}",
        out.status,
        stderr(&out)
    );
    stdout(&out)
}

/// Runs `leadscore ARGS`, expects exit code 2 (a usage error, or a
/// command that failed), returns stderr.
fn usage_error(args: &[&str]) -> String {
    let out = leadscore(args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?}: expected exit code 2; stdout: {}; stderr: {}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

fn default_model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/model/default.toml")
        .to_str()
        .unwrap()
        .to_string()
}

/// A scratch directory for one test, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("leadscore-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

#[test]
fn a_flag_of_another_command_is_an_error_that_names_it() {
    let model = default_model();
    // The file is fine: only the flag is wrong.
    assert!(succeeds(&["check", &model]).contains("model"));
    let err = usage_error(&["check", "--rate", "5", &model]);
    assert!(err.contains("--rate"), "{err}");
    // `demo`'s flag on `score`, `backtest`'s on `generate`, `replay`'s on `run`.
    let err = usage_error(&["score", "--duration", "3"]);
    assert!(err.contains("--duration"), "{err}");
    let err = usage_error(&["generate", "--baseline", &model]);
    assert!(err.contains("--baseline"), "{err}");
    let err = usage_error(&["run", "--config", &model, "--into-live"]);
    assert!(err.contains("--into-live"), "{err}");
    // An unknown command, and a second FILE for `check`.
    let err = usage_error(&["frobnicate"]);
    assert!(err.contains("frobnicate"), "{err}");
    let err = usage_error(&["check", &model, "other.toml"]);
    assert!(err.contains("other.toml"), "{err}");
}

#[test]
fn the_input_format_flags_are_named_when_wrong() {
    for cmd in [
        &["score"][..],
        &["explain", "--lead", "L"],
        &["backtest", "--events", "e.jsonl"],
    ] {
        let mut args = cmd.to_vec();
        args.extend(["--input", "-", "--input-format", "avro"]);
        if cmd[0] == "backtest" {
            args.retain(|a| *a != "--input" && *a != "-");
        }
        let err = usage_error(&args);
        assert!(
            err.contains("--input-format") && err.contains("avro"),
            "{cmd:?}: {err}"
        );
    }
    let dir = scratch("input-config");
    let config = dir.join("bad.toml");
    std::fs::write(
        &config,
        "[input]
visitor_max_events = 0
",
    )
    .unwrap();
    let err = usage_error(&[
        "score",
        "--input-format",
        "segment",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(err.contains("input.visitor_max_events"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_required_flag_is_named() {
    let err = usage_error(&["run"]);
    assert!(err.contains("--config"), "{err}");
    let err = usage_error(&["explain", "--input", "events.jsonl"]);
    assert!(err.contains("--lead"), "{err}");
    let err = usage_error(&["check"]);
    assert!(err.contains("FILE"), "{err}");
}

#[test]
fn help_for_a_command_shows_its_options_and_an_example() {
    for args in [
        &["score", "--help"][..],
        &["help", "score"],
        &["score", "-h"],
    ] {
        let help = succeeds(args);
        for needle in [
            "--until",
            "--input",
            "--input-format",
            "segment",
            "cloudevents",
            "--config",
            "--model",
            "Example:",
            "leadscore score",
        ] {
            assert!(
                help.contains(needle),
                "{args:?}: {needle:?} not in:\n{help}"
            );
        }
        for other in ["--rate", "--events", "--lead", "--into-live"] {
            assert!(!help.contains(other), "{args:?}: {other:?} in:\n{help}");
        }
    }
    // Every command has its example.
    for cmd in COMMANDS {
        let help = succeeds(&["help", cmd]);
        assert!(
            help.contains("Example") && help.contains(&format!("leadscore {cmd} ")),
            "{cmd}:\n{help}"
        );
    }
    // The long explanations are kept.
    let help = succeeds(&["replay", "--help"]);
    for needle in [
        "never joining or disturbing the live consumer group",
        "--to-changelog <TOPIC>",
        "@<version>",
        "progress bar",
    ] {
        assert!(help.contains(needle), "{needle:?} not in:\n{help}");
    }
    let help = succeeds(&["generate", "--help"]);
    assert!(help.contains("json") && help.contains("protobuf"), "{help}");
    assert!(
        help.contains("--no-duplicates") && help.contains("--no-late"),
        "{help}"
    );
}

#[test]
fn the_general_help_lists_every_command() {
    // No command at all: the general help, as a success.
    for help in [succeeds(&[]), succeeds(&["--help"]), succeeds(&["help"])] {
        for cmd in COMMANDS {
            assert!(help.contains(&format!("  {cmd} ")), "{cmd} not in:\n{help}");
        }
    }
}

#[test]
fn generate_events_is_a_count_and_backtest_events_is_a_file() {
    let dir = scratch("events");
    let file = dir.join("events.jsonl");
    let file = file.to_str().unwrap();
    succeeds(&[
        "generate",
        "--events",
        "10",
        "--leads",
        "3",
        "--seed",
        "1",
        "--no-duplicates",
        "--out",
        file,
    ]);
    let text = std::fs::read_to_string(file).unwrap();
    assert_eq!(text.lines().count(), 10, "{text}");
    let err = usage_error(&["generate", "--events", "many"]);
    assert!(err.contains("--events") && err.contains("many"), "{err}");

    // The same flag on `backtest` names the file just written...
    let err = usage_error(&["backtest", "--events", file]);
    assert!(!err.contains("--events"), "the flag was accepted: {err}");
    assert!(err.contains("events.jsonl"), "the file was read: {err}");
    // ... and a count there is a file that does not exist.
    let err = usage_error(&["backtest", "--events", "10"]);
    assert!(err.contains("cannot open input file 10"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn generate_flags_keep_their_meaning() {
    let base = [
        "generate", "--events", "2000", "--leads", "20", "--seed", "7",
    ];
    let json = succeeds(&base);
    assert_eq!(
        json,
        succeeds(&base),
        "the same seed writes the same stream"
    );
    let other = succeeds(&[
        "generate", "--events", "2000", "--leads", "20", "--seed", "8",
    ]);
    assert_ne!(json, other, "another seed, another stream");

    // Duplicates (1%) repeat an event id on top of the events asked for;
    // --no-duplicates writes none.
    let ids = |text: &str| {
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                v["event_id"].as_str().expect("event_id").to_string()
            })
            .collect::<std::collections::HashSet<_>>()
    };
    let lines = json.lines().count();
    assert!((2001..2100).contains(&lines), "{lines} lines");
    assert_eq!(ids(&json).len(), 2000, "{lines} lines");
    let mut no_dup = base.to_vec();
    no_dup.push("--no-duplicates");
    let no_dup = succeeds(&no_dup);
    assert_eq!(no_dup.lines().count(), 2000);
    assert_eq!(ids(&no_dup).len(), 2000);
    let leads: std::collections::HashSet<_> = no_dup
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["lead_id"].clone())
        .collect();
    assert!(
        leads.len() <= 20 && leads.len() > 10,
        "{} leads",
        leads.len()
    );

    // Protobuf is not JSON lines; an unknown format is named with the choices.
    let mut proto = base.to_vec();
    proto.extend(["--format", "protobuf"]);
    let out = leadscore(&proto);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !out.stdout.is_empty() && serde_json::from_slice::<serde_json::Value>(&out.stdout).is_err()
    );
    let err = usage_error(&["generate", "--format", "xml"]);
    assert!(
        err.contains("--format") && err.contains("xml") && err.contains("protobuf"),
        "{err}"
    );
}

#[test]
fn a_bad_time_is_named_with_its_flag() {
    let err = usage_error(&["score", "--until", "notatime"]);
    assert!(err.contains("--until") && err.contains("notatime"), "{err}");
    assert!(err.contains("RFC 3339"), "{err}");
    let err = usage_error(&[
        "explain",
        "--input",
        "x",
        "--lead",
        "L",
        "--at",
        "2026-13-01",
    ]);
    assert!(err.contains("--at") && err.contains("2026-13-01"), "{err}");
    // Replay checks its flags before it reads the config or reaches a broker.
    let err = usage_error(&[
        "replay",
        "--config",
        "c.toml",
        "--model",
        "m.toml",
        "--from",
        "yesterday",
    ]);
    assert!(err.contains("--from") && err.contains("yesterday"), "{err}");
}

#[test]
fn replay_takes_one_target_at_most() {
    let base = ["replay", "--config", "missing.toml", "--model", "m.toml"];
    for extra in [
        &["--into-live", "--to-topic", "x"][..],
        &["--to-topic", "x", "--to-changelog", "y"],
        &["--to-topic", "x", "--to-topic", "y"],
        &["--into-live", "--into-live"],
    ] {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let err = usage_error(&args);
        assert!(err.contains(extra[0]), "{extra:?}: {err}");
        assert!(
            !err.contains("missing.toml"),
            "{extra:?} was accepted: {err}"
        );
    }
    // One target is accepted: then the missing config is the problem.
    let mut args = base.to_vec();
    args.extend(["--to-changelog", "y"]);
    let err = usage_error(&args);
    assert!(err.contains("missing.toml is not a valid config"), "{err}");
}

#[test]
fn version() {
    let out = succeeds(&["--version"]);
    assert_eq!(
        out.trim(),
        format!("leadscore {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn completion_scripts() {
    let bash = succeeds(&["completions", "bash"]);
    assert!(
        bash.contains("complete -F") && bash.contains("leadscore"),
        "{bash}"
    );
    for needle in ["backtest", "--until", "--to-changelog", "--no-duplicates"] {
        assert!(bash.contains(needle), "{needle:?} not in the bash script");
    }
    let zsh = succeeds(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef leadscore"), "{zsh}");
    assert!(zsh.contains("replay"), "{zsh}");
    let fish = succeeds(&["completions", "fish"]);
    assert!(
        fish.contains("complete -c leadscore") && fish.contains("generate"),
        "{fish}"
    );
    let err = usage_error(&["completions", "tcsh"]);
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}
