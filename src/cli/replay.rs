//! `leadscore replay`: rescore the input topics under a new model (see
//! [`crate::service::replay`]); a progress bar on a terminal, a summary at
//! the end.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::model::Model;
use crate::service::replay::{replay, Options, Progress, Start, Summary, Target};

pub(super) const USAGE: &str = "\
leadscore replay — rescore the input topics under a new model

USAGE:
  leadscore replay --config FILE --model NEW [--from earliest|TIME]
                   [--to-topic TOPIC | --into-live | --to-changelog TOPIC] [--json]

Reads the service's input topics (from its config) by explicit assignment,
never joining or disturbing the live consumer group, from the beginning (or
from the first record with a Kafka timestamp at or after TIME) to the end
offsets seen at the start, and folds them under NEW, partition by partition
like the service. The same events are folded under the live model too, and
a summary says how the outcome differs.

  --config FILE        the live service's config (brokers, topics, live model)
  --model NEW          the model to replay under
  --from earliest|TIME where to start (default: earliest); TIME is RFC 3339
  --to-topic TOPIC     write the changes to TOPIC (default: <status_topic>-shadow,
                       created when missing)
  --into-live          write the changes to the live status topic, under NEW's
                       version (which must differ from the live one); change
                       ids get the suffix @<version>, so they never collide
                       with the live ones
  --to-changelog TOPIC write no changes: write the state rebuilt under NEW to
                       TOPIC (a new changelog), up to the live group's committed
                       offsets, to switch the service to NEW: run it after
                       stopping the service (README: \"Switching the live
                       service to a new model\")
  --json               print the summary as JSON instead of text

A progress bar (events, events/s, time left) is drawn on stderr when it is
a terminal.
";

pub(super) fn main(mut parser: lexopt::Parser) -> Result<ExitCode> {
    use lexopt::prelude::*;
    let mut config: Option<PathBuf> = None;
    let mut model: Option<PathBuf> = None;
    let mut start = Start::Earliest;
    let mut targets = Vec::new();
    let mut json = false;
    while let Some(arg) = parser.next()? {
        match arg {
            Long("config") => config = Some(super::value(&mut parser, "--config")?.into()),
            Long("model") => model = Some(super::value(&mut parser, "--model")?.into()),
            Long("from") => {
                let v = super::value(&mut parser, "--from")?;
                start = match v.as_str() {
                    "earliest" => Start::Earliest,
                    t => Start::Time(super::parse_time("--from", t)?),
                };
            }
            Long("to-topic") => targets.push(Target::Shadow(Some(super::value(
                &mut parser,
                "--to-topic",
            )?))),
            Long("into-live") => targets.push(Target::Live),
            Long("to-changelog") => targets.push(Target::Changelog(super::value(
                &mut parser,
                "--to-changelog",
            )?)),
            Long("json") => json = true,
            Short('h') | Long("help") => {
                print!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => bail!("{}\n\n{USAGE}", other.unexpected()),
        }
    }
    let config = config.context("replay needs --config FILE (the live service's config)")?;
    let model = model.context("replay needs --model FILE (the model to replay under)")?;
    if targets.len() > 1 {
        bail!("choose one of --to-topic, --into-live and --to-changelog");
    }
    let target = targets.pop().unwrap_or(Target::Shadow(None));
    let cfg = Config::load(&config)
        .with_context(|| format!("{} is not a valid config", config.display()))?;
    crate::service::telemetry::init_logging(cfg.log.format, Some("warn"));
    let model = Model::from_path(&model)
        .with_context(|| format!("{} is not a valid model", model.display()))?;
    let opts = Options {
        model: Arc::new(model),
        start,
        target,
    };
    let mut bar = Bar::new(std::io::stderr().is_terminal());
    let summary = replay(&cfg, &opts, |p| bar.draw(p))?;
    bar.finish();
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render(&summary));
    }
    Ok(ExitCode::SUCCESS)
}

/// The progress bar on stderr; draws nothing when stderr is not a terminal.
struct Bar {
    on: bool,
    drawn: bool,
}

impl Bar {
    fn new(on: bool) -> Bar {
        Bar { on, drawn: false }
    }

    fn draw(&mut self, p: Progress) {
        if !self.on {
            return;
        }
        let secs = p.elapsed.as_secs_f64().max(1e-3);
        let rate = p.done as f64 / secs;
        let frac = if p.total == 0 {
            1.0
        } else {
            (p.done as f64 / p.total as f64).min(1.0)
        };
        const WIDTH: usize = 30;
        let filled = (frac * WIDTH as f64) as usize;
        let left = if rate > 0.0 {
            let s = (p.total.saturating_sub(p.done)) as f64 / rate;
            format!("{}:{:02}", s as u64 / 60, s as u64 % 60)
        } else {
            "-:--".into()
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{}{}] {:>3.0}%  {} / {} events  {:.0} events/s  {} left  ",
            "#".repeat(filled),
            " ".repeat(WIDTH - filled),
            frac * 100.0,
            p.done,
            p.total,
            rate,
            left
        );
        let _ = err.flush();
        self.drawn = true;
    }

    fn finish(&mut self) {
        if self.drawn {
            eprintln!();
        }
    }
}

/// The summary as text.
pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "replayed {} events ({} invalid) in {:.1} s: {:.0} events/s",
        s.events, s.invalid, s.seconds, s.events_per_second
    );
    match s.mode {
        "changelog" => {
            let _ = writeln!(o, "state of {} leads written to {}", s.leads, s.topic);
            if s.switch_ready == Some(false) {
                let _ = writeln!(
                    o,
                    "the live service is still running (its state is past the offsets it has \
                     committed): stop it, then run this again before switching"
                );
            } else {
                let _ = writeln!(
                    o,
                    "ready to switch: start the service with the new model and changelog_topic = {:?}",
                    s.topic
                );
            }
        }
        _ => {
            let _ = writeln!(
                o,
                "{} changes written to {} ({})",
                s.changes_written, s.topic, s.mode
            );
        }
    }
    let cur = format!("current ({})", s.current.version);
    let new = format!("new ({})", s.new.version);
    let w = cur.len().max(new.len()).max(14);
    let _ = writeln!(o, "\nleads per stage   {cur:>w$}  {new:>w$}");
    for stage in crate::change::Stage::ALL {
        let name = stage.as_str();
        let c = s.current.stages.get(name).copied().unwrap_or(0);
        let n = s.new.stages.get(name).copied().unwrap_or(0);
        let _ = writeln!(o, "  {name:<15} {c:>w$}  {n:>w$}");
    }
    let mut keys: Vec<&String> = s.new.transitions.iter().flatten().map(|(k, _)| k).collect();
    if let Some(t) = &s.current.transitions {
        keys.extend(t.keys());
    }
    keys.sort();
    keys.dedup();
    if !keys.is_empty() {
        let _ = writeln!(o, "\nchanges           {cur:>w$}  {new:>w$}");
        for k in keys {
            let count = |t: &Option<std::collections::BTreeMap<String, u64>>| match t {
                Some(t) => t.get(k).copied().unwrap_or(0).to_string(),
                None => "-".into(),
            };
            let _ = writeln!(
                o,
                "  {k:<15} {:>w$}  {:>w$}",
                count(&s.current.transitions),
                count(&s.new.transitions)
            );
        }
    }
    let _ = writeln!(
        o,
        "\n{} of {} leads end in a different stage",
        s.different_stage, s.leads
    );
    for d in &s.examples {
        let _ = writeln!(
            o,
            "  {}: {} ({}) -> {} ({})",
            d.lead_id, d.current, d.current_score, d.new, d.new_score
        );
    }
    o
}
