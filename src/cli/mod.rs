//! The command line: `score`, `explain`, `check`, `generate`, `backtest`
//! and `replay` (`run` and `demo` start the service), parsed by clap: each
//! command accepts only its own flags, so a flag of another command is an
//! error that names it rather than being silently ignored.

mod backtest;
mod detached;
mod erase;
mod offline;
mod replay;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

pub use backtest::{backtest, BacktestOptions};
pub use offline::{
    check, explain, explain_input, generate, score, score_input, InputOptions, ScoreStats,
};

use crate::demo::DemoOptions;
use crate::gen::wire::GenFormat;
use crate::gen::GenConfig;
use crate::time::Micros;

/// leadscore — event-sourced streaming lead scorer
#[derive(Debug, Parser)]
#[command(
    name = "leadscore",
    version,
    after_help = "\
Without --model the default model (SPEC §1) is used. TIME is RFC 3339,
e.g. 2026-06-01T00:00:00Z. `leadscore help COMMAND` for a command's options.

Examples:
  leadscore check config.toml && leadscore run --config config.toml
  leadscore generate --events 100000 --out events.jsonl
  leadscore score --input events.jsonl --until 2026-06-01T00:00:00Z
  leadscore backtest --events q1.jsonl --baseline live-model.toml --report backtest/
  leadscore replay --config config.toml --model new-model.toml"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The Kafka service (consumer group, changelog, HTTP endpoints)
    ///
    /// A consumer group, exactly-once by default, with the state in a
    /// compacted changelog, and HTTP endpoints. `check` the config first;
    /// every key can be overridden as LEADSCORE_<SECTION>_<KEY>. Exits 1
    /// when the service stops on an error, 2 when the config is not valid.
    #[command(
        verbatim_doc_comment,
        after_help = "Example:\n  leadscore run --config config.toml"
    )]
    Run(RunArgs),

    /// The whole pipeline on an in-process Kafka mock cluster; no setup
    ///
    /// Generated traffic through the service on librdkafka's mock cluster:
    /// the status changes printed, the HTTP endpoints served.
    #[command(
        verbatim_doc_comment,
        after_help = "Example:\n  leadscore demo --duration 60 --rate 1000"
    )]
    Demo(DemoArgs),

    /// Fold a JSON-lines event file and print the status changes
    ///
    /// The events are folded in file order; the status changes are written
    /// as JSON lines to stdout. Bad lines are reported on stderr with their
    /// line number and skipped. --until advances the clock at the end so
    /// that due timers fire.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Example:
  leadscore score --input events.jsonl --until 2026-06-01T00:00:00Z > changes.jsonl"
    )]
    Score(ScoreArgs),

    /// A lead's state and score breakdown, rule by rule, as JSON
    ///
    /// After folding the file, or as of TIME with --at.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Example:
  leadscore explain --input events.jsonl --lead L-4004 --at 2026-05-03T09:10:00Z"
    )]
    Explain(ExplainArgs),

    /// Validate a config or model file, naming the key and the problem
    #[command(
        verbatim_doc_comment,
        after_help = "Example:\n  leadscore check model.toml"
    )]
    Check(CheckArgs),

    /// Write a realistic, seeded event stream for tests and benchmarks
    ///
    /// JSON lines, length-delimited protobuf, Segment messages or
    /// CloudEvents, with duplicates, late events, deal outcomes and leads
    /// that browse anonymously first; the same seed writes the same stream
    /// in every format.
    #[command(
        verbatim_doc_comment,
        after_help = "\
Example:
  leadscore generate --events 1000000 --leads 100000 --seed 7 --out events.jsonl
  leadscore generate --events 100000 --format segment --anonymous-share 0.5 --out tracking.jsonl"
    )]
    Generate(GenerateArgs),

    /// Would the leads that became customers have scored high under a model?
    #[command(
        verbatim_doc_comment,
        long_about = backtest::ABOUT,
        after_help = backtest::EXAMPLE,
        after_long_help = backtest::DETAILS,
    )]
    Backtest(backtest::BacktestArgs),

    /// Rescore the input topics under a new model, beside the live service
    #[command(
        verbatim_doc_comment,
        long_about = replay::ABOUT,
        after_help = replay::EXAMPLE,
        after_long_help = replay::DETAILS,
    )]
    Replay(replay::ReplayArgs),

    /// Erase a lead (AVG/GDPR): a lead_erased event to the input topic
    #[command(
        verbatim_doc_comment,
        long_about = erase::ABOUT,
        after_help = erase::EXAMPLE,
    )]
    Erase(erase::EraseArgs),

    /// Print a shell completion script to stdout
    #[command(
        verbatim_doc_comment,
        after_help = "\
Example:
  leadscore completions bash > ~/.local/share/bash-completion/completions/leadscore"
    )]
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The service's config file (TOML).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// How long to run, in seconds (at least 1).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds,
          default_value_t = DemoOptions::default().duration.as_secs_f64())]
    duration: f64,
    /// Where to serve the HTTP endpoints (port 0: any free port). Off
    /// loopback, the lead endpoints take the token in LEADSCORE_HTTP_TOKEN,
    /// or one the demo makes up and prints in the page's URL.
    #[arg(long, value_name = "ADDR", default_value_t = DemoOptions::default().http)]
    http: String,
    /// Events produced per second.
    #[arg(long, value_name = "N", default_value_t = DemoOptions::default().rate)]
    rate: u32,
}

#[derive(Debug, Args)]
struct ScoreArgs {
    /// The model file (default: the embedded default model).
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// The event file, one event a line (`-` for stdin).
    #[arg(long, value_name = "FILE", default_value = "-")]
    input: String,
    #[command(flatten)]
    format: InputArgs,
    /// Advance the clock to TIME (RFC 3339) at the end, so that due timers fire.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<Micros>,
    /// Also write every lead's score record at the end to FILE (JSON
    /// lines): what the score topic holds after the same events.
    #[arg(long, value_name = "FILE")]
    scores: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ExplainArgs {
    /// The model file (default: the embedded default model).
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// The event file, one event a line (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    input: String,
    #[command(flatten)]
    format: InputArgs,
    /// The lead to explain.
    #[arg(long, value_name = "ID")]
    lead: String,
    /// Explain the lead as of TIME (RFC 3339), with its timers fired up to it.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    at: Option<Micros>,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The config or model file (TOML).
    #[arg(value_name = "FILE")]
    file: PathBuf,
}

/// The format of an offline command's event file.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
enum FileFormat {
    /// leadscore's JSON events, one a line.
    #[default]
    Json,
    /// Segment Spec messages (RudderStack's too), one a line.
    Segment,
    /// CloudEvents 1.0 in structured mode (JSON), one a line.
    Cloudevents,
}

/// `--input-format` and `--config`, shared by `score`, `explain` and `backtest`.
#[derive(Debug, Args)]
struct InputArgs {
    /// The event file's format.
    #[arg(long, value_enum, default_value_t = FileFormat::Json)]
    input_format: FileFormat,
    /// A service config whose `[input]` section (Segment event mapping,
    /// CloudEvents type prefix, visitor limits) applies; only that
    /// section is read.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl InputArgs {
    fn options(&self) -> Result<InputOptions> {
        let format = match self.input_format {
            FileFormat::Json => crate::codec::InputFormat::Json,
            FileFormat::Segment => crate::codec::InputFormat::Segment,
            FileFormat::Cloudevents => crate::codec::InputFormat::Cloudevents,
        };
        InputOptions::load(format, self.config.as_deref())
    }
}

/// The wire format of generated events.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum WireFormat {
    /// JSON lines.
    Json,
    /// Length-delimited protobuf.
    Protobuf,
    /// Segment messages (track, page, identify), JSON lines.
    Segment,
    /// CloudEvents 1.0, structured mode, JSON lines.
    Cloudevents,
}

impl From<WireFormat> for GenFormat {
    fn from(f: WireFormat) -> Self {
        match f {
            WireFormat::Json => GenFormat::Json,
            WireFormat::Protobuf => GenFormat::Protobuf,
            WireFormat::Segment => GenFormat::Segment,
            WireFormat::Cloudevents => GenFormat::Cloudevents,
        }
    }
}

/// `generate --anonymous-share`: a fraction in [0, 1].
fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err("expected a fraction from 0 to 1, such as 0.3".into()),
    }
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// How many events to write (duplicates come on top, unless --no-duplicates).
    #[arg(long, value_name = "N", default_value_t = GenConfig::default().events)]
    events: u64,
    /// How many distinct leads.
    #[arg(long, value_name = "N", default_value_t = GenConfig::default().leads)]
    leads: u64,
    /// The random seed: the same seed writes the same stream.
    #[arg(long, value_name = "N", default_value_t = GenConfig::default().seed)]
    seed: u64,
    /// The output format.
    #[arg(long, value_enum, default_value_t = WireFormat::Json)]
    format: WireFormat,
    /// Write to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write no duplicate events (by default 1% are sent twice, as by a retrying producer).
    #[arg(long)]
    no_duplicates: bool,
    /// Write no late events (by default some arrive after later ones).
    #[arg(long)]
    no_late: bool,
    /// Share of leads that browse anonymously before their first profile
    /// (default: 0.3 for segment, 0 otherwise). In segment, their events
    /// until then carry only an anonymousId.
    #[arg(long, value_name = "FRACTION", value_parser = parse_share)]
    anonymous_share: Option<f64>,
    /// Share of demo requests and sales acceptances that sales follow up
    /// with a sales_contacted 1 hour to 5 days later (default 0: none).
    #[arg(long, value_name = "FRACTION", value_parser = parse_share, default_value_t = 0.0)]
    contact_rate: f64,
    /// Share of events after which the lead asks to be erased: a
    /// lead_erased 1 hour to 10 days later (default 0: none).
    #[arg(long, value_name = "FRACTION", value_parser = parse_share, default_value_t = 0.0)]
    erase_rate: f64,
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// `--until`, `--at` and `--from`: an RFC 3339 time. A clap value parser,
/// so that a bad time is a usage error that names the flag.
fn parse_time(s: &str) -> Result<Micros, String> {
    crate::time::parse_rfc3339(s)
        .map_err(|e| format!("{e}: expected an RFC 3339 time such as 2026-06-01T00:00:00Z"))
}

/// `demo --duration`: seconds, at least 1 (shorter leaves the pipeline no
/// time to start), and never a value that `Duration::from_secs_f64` would
/// panic on.
fn parse_seconds(s: &str) -> Result<f64, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| "expected a number of seconds".to_string())?;
    let secs = secs.max(1.0);
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())?;
    Ok(secs)
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and --version (exit 0) go to stdout, usage errors (exit 2)
        // to stderr.
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leadscore: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load_model(path: Option<&PathBuf>) -> Result<crate::model::Model> {
    Ok(match path {
        Some(p) => crate::model::Model::from_path(p)?,
        None => crate::model::Model::default_model(),
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    let Some(command) = cli.command else {
        Cli::command().print_long_help()?;
        return Ok(ExitCode::SUCCESS);
    };
    match command {
        Command::Run(a) => {
            let cfg = crate::config::Config::load(&a.config)
                .with_context(|| format!("{} is not a valid config", a.config.display()))?;
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
        Command::Demo(a) => {
            let opts = DemoOptions {
                duration: Duration::from_secs_f64(a.duration),
                http: a.http,
                rate: a.rate,
                token: std::env::var("LEADSCORE_HTTP_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty()),
            };
            crate::demo::run(opts, &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Score(a) => {
            let stats = score_input(
                load_model(a.model.as_ref())?,
                &a.input,
                &a.format.options()?,
                a.until,
                a.scores.as_deref(),
                &mut std::io::stdout(),
            )?;
            eprintln!("leadscore score: {stats}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain(a) => {
            let e = explain_input(
                load_model(a.model.as_ref())?,
                &a.input,
                &a.format.options()?,
                &a.lead,
                a.at,
            )?;
            println!("{}", serde_json::to_string_pretty(&e)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(a) => {
            println!("{}", check(&a.file)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate(a) => {
            let format = GenFormat::from(a.format);
            let mut gen = GenConfig {
                events: a.events,
                leads: a.leads,
                seed: a.seed,
                anonymous_share: a
                    .anonymous_share
                    .unwrap_or(format.default_anonymous_share()),
                contact_rate: a.contact_rate,
                erase_rate: a.erase_rate,
                ..GenConfig::default()
            };
            if a.no_duplicates {
                gen.duplicate_rate = 0.0;
            }
            if a.no_late {
                gen.late_rate = 0.0;
            }
            let n = match &a.out {
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
        Command::Backtest(a) => backtest::main(a),
        Command::Replay(a) => replay::main(a),
        Command::Erase(a) => erase::main(a),
        Command::Completions(a) => {
            clap_complete::generate(
                a.shell,
                &mut Cli::command(),
                "leadscore",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks (duplicate flags, bad defaults, …),
    /// which it otherwise makes only in debug builds and lazily.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
