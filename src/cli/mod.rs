//! The command line: `score`, `explain`, `check`, `generate`, `backtest`
//! and `replay` (`run` and `demo` start the service).

mod backtest;
mod detached;
mod offline;
mod replay;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

pub use backtest::{backtest, BacktestOptions};
pub use offline::{check, explain, generate, score, ScoreStats};

const USAGE: &str = "\
leadscore — event-sourced streaming lead scorer

USAGE:
  leadscore run      --config FILE
  leadscore demo     [--duration SECONDS] [--http ADDR] [--rate EVENTS_PER_S]
  leadscore score    [--model FILE] [--input FILE|-] [--until TIME]
  leadscore explain  [--model FILE] --input FILE --lead ID [--at TIME]
  leadscore check    FILE
  leadscore generate [--events N] [--leads N] [--seed N] [--format json|protobuf]
                     [--out FILE] [--no-duplicates] [--no-late]
  leadscore backtest [--model FILE] [--baseline FILE] --events FILE
                     [--outcomes FILE] [--report DIR] [--json]
  leadscore replay   --config FILE --model NEW [--from earliest|TIME]
                     [--to-topic TOPIC | --into-live | --to-changelog TOPIC] [--json]

COMMANDS:
  run       The Kafka service (consumer group, exactly-once by default,
            state in a compacted changelog, HTTP endpoints). `check` the
            config first; every key can be overridden as LEADSCORE_<SECTION>_<KEY>.
  demo      The whole pipeline on an in-process Kafka mock cluster with
            generated traffic: changes printed, endpoints served. No setup.
  score     Fold a JSON-lines file of events (in file order) and write the
            status changes as JSON lines to stdout. Bad lines are reported
            on stderr with their line number and skipped. --until advances
            the clock at the end so that due timers fire.
  explain   A lead's state and score breakdown, rule by rule, after folding
            the file (at TIME with --at).
  check     Validate a config or model file; names the key and the problem.
  generate  Write a realistic, seeded event stream (JSON lines or
            length-delimited protobuf) for tests, benchmarks and demos.
  backtest  Would the leads that became customers have scored high? Folds
            historical events under a model (and a baseline) and reports
            MQL/SQL counts, conversions, precision and recall for won deals,
            conversion by band and a threshold sweep; --report DIR writes
            an HTML report. `leadscore backtest --help` for the details.
  replay    Rescore the service's input topics under a new model, without
            disturbing the live group: changes to a shadow topic (default)
            or the live one, or the rebuilt state to a new changelog to
            switch the service over. `leadscore replay --help` for more.

Without --model the default model (SPEC §1) is used. TIME is RFC 3339,
e.g. 2026-06-01T00:00:00Z.
";

fn value(parser: &mut lexopt::Parser, name: &str) -> Result<String> {
    parser
        .value()
        .with_context(|| format!("{name} needs a value"))?
        .into_string()
        .map_err(|v| anyhow::anyhow!("{name}: not valid UTF-8: {v:?}"))
}

fn parse_time(flag: &str, s: &str) -> Result<crate::time::Micros> {
    crate::time::parse_rfc3339(s)
        .map_err(|e| anyhow::anyhow!("{flag} {s:?} is not an RFC 3339 time: {e}"))
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leadscore: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Vec<OsString>) -> Result<ExitCode> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let command = match parser.next()? {
        Some(Value(v)) => v
            .into_string()
            .map_err(|_| anyhow::anyhow!("command is not UTF-8"))?,
        Some(Short('h') | Long("help")) | None => {
            print!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        Some(Long("version")) => {
            println!("leadscore {}", env!("CARGO_PKG_VERSION"));
            return Ok(ExitCode::SUCCESS);
        }
        Some(other) => bail!("{}\n\n{USAGE}", other.unexpected()),
    };
    // `backtest` has flags of its own (its `--events` is a file).
    if command == "backtest" {
        return backtest::main(parser);
    }
    if command == "replay" {
        return replay::main(parser);
    }
    let mut model: Option<PathBuf> = None;
    let mut input: Option<String> = None;
    let mut until = None;
    let mut at = None;
    let mut lead = None;
    let mut positional = Vec::new();
    let mut gen = crate::gen::GenConfig::default();
    let mut format = crate::codec::Format::Json;
    let mut out: Option<PathBuf> = None;
    let mut config: Option<PathBuf> = None;
    let mut demo = crate::demo::DemoOptions::default();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("model") => model = Some(value(&mut parser, "--model")?.into()),
            Long("input") => input = Some(value(&mut parser, "--input")?),
            Long("until") => until = Some(parse_time("--until", &value(&mut parser, "--until")?)?),
            Long("at") => at = Some(parse_time("--at", &value(&mut parser, "--at")?)?),
            Long("lead") => lead = Some(value(&mut parser, "--lead")?),
            Long("events") => {
                gen.events = value(&mut parser, "--events")?
                    .parse()
                    .context("--events")?
            }
            Long("leads") => {
                gen.leads = value(&mut parser, "--leads")?.parse().context("--leads")?
            }
            Long("seed") => gen.seed = value(&mut parser, "--seed")?.parse().context("--seed")?,
            Long("no-duplicates") => gen.duplicate_rate = 0.0,
            Long("no-late") => gen.late_rate = 0.0,
            Long("format") => {
                format = match value(&mut parser, "--format")?.as_str() {
                    "json" => crate::codec::Format::Json,
                    "protobuf" => crate::codec::Format::Protobuf,
                    f => bail!("--format {f:?}: use json or protobuf"),
                }
            }
            Long("out") => out = Some(value(&mut parser, "--out")?.into()),
            Long("config") => config = Some(value(&mut parser, "--config")?.into()),
            Long("duration") => {
                let s: f64 = value(&mut parser, "--duration")?
                    .parse()
                    .context("--duration: seconds")?;
                demo.duration = std::time::Duration::from_secs_f64(s.max(1.0));
            }
            Long("http") => demo.http = value(&mut parser, "--http")?,
            Long("rate") => {
                demo.rate = value(&mut parser, "--rate")?
                    .parse()
                    .context("--rate: events per second")?
            }
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            Value(v) => positional.push(v),
            other => bail!("{}\n\n{USAGE}", other.unexpected()),
        }
    }
    let load_model = || -> Result<crate::model::Model> {
        Ok(match &model {
            Some(p) => crate::model::Model::from_path(p)?,
            None => crate::model::Model::default_model(),
        })
    };
    match command.as_str() {
        "run" => {
            let path = config.context("run needs --config FILE")?;
            let cfg = crate::config::Config::load(&path)
                .with_context(|| format!("{} is not a valid config", path.display()))?;
            crate::service::telemetry::init_logging(cfg.log.format, cfg.log.level.as_deref());
            let shutdown = crate::service::Shutdown::new();
            shutdown
                .on_signals()
                .context("cannot install signal handlers")?;
            match crate::service::run(cfg, shutdown, |_| {}) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    tracing::error!(error = %e, "leadscore stopped");
                    eprintln!("leadscore: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        "demo" => {
            let mut out = std::io::stdout();
            crate::demo::run(demo, &mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        "score" => {
            let m = load_model()?;
            let stats = score(
                m,
                input.as_deref().unwrap_or("-"),
                until,
                &mut std::io::stdout(),
            )?;
            eprintln!("leadscore score: {stats}");
            Ok(ExitCode::SUCCESS)
        }
        "explain" => {
            let input = input.context("explain needs --input FILE")?;
            let lead = lead.context("explain needs --lead ID")?;
            let e = explain(load_model()?, &input, &lead, at)?;
            println!("{}", serde_json::to_string_pretty(&e)?);
            Ok(ExitCode::SUCCESS)
        }
        "check" => {
            let [file] = positional.as_slice() else {
                bail!("check needs exactly one FILE");
            };
            let summary = check(std::path::Path::new(file))?;
            println!("{summary}");
            Ok(ExitCode::SUCCESS)
        }
        "generate" => {
            let n = match &out {
                Some(p) => {
                    let f = std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?;
                    generate(gen, format, &mut std::io::BufWriter::new(f))?
                }
                None => generate(gen, format, &mut std::io::stdout().lock())?,
            };
            eprintln!("leadscore generate: {n} events");
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}
