//! `leadscore replay`: rescore the input topics under a new model (see
//! [`crate::service::replay`]); a progress bar on a terminal, a summary at
//! the end.

use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use indicatif::{
    HumanCount, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle,
};

use crate::config::Config;
use crate::model::Model;
use crate::service::replay::{replay, Options, Start, Summary, Target};

/// `replay --help`: what it does, before the options.
pub(super) const ABOUT: &str = "\
Rescore the input topics under a new model.

Reads the service's input topics (from its config) by explicit assignment,
never joining or disturbing the live consumer group, from the beginning (or
from the first record with a Kafka timestamp at or after TIME) to the end
offsets seen at the start, and folds them under NEW, partition by partition
like the service. The same events are folded under the live model too, and
a summary says how the outcome differs. The changes go to a shadow topic
(default) or the live one, or the rebuilt state to a new changelog to switch
the service over.";

/// The example closing both `replay -h` and `replay --help`.
macro_rules! example {
    () => {
        "Examples:
  leadscore replay --config config.toml --model new-model.toml
  leadscore replay --config config.toml --model new-model.toml --to-changelog lead-state-v2"
    };
}

/// `replay -h`: after the options.
pub(super) const EXAMPLE: &str = example!();

/// `replay --help`: after the options.
pub(super) const DETAILS: &str = concat!(
    "\
A progress bar (events, events/s, time left) is drawn on stderr when it is
a terminal.

",
    example!()
);

/// `leadscore replay`'s flags.
#[derive(Debug, clap::Args)]
pub(super) struct ReplayArgs {
    /// The live service's config (brokers, topics, live model).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The model to replay under.
    #[arg(long, value_name = "NEW")]
    model: PathBuf,
    /// Where to start: earliest, or an RFC 3339 TIME
    ///
    /// With TIME, each partition is read from its first record with a Kafka
    /// timestamp at or after TIME.
    #[arg(long, value_name = "earliest|TIME", default_value = "earliest", value_parser = parse_start, verbatim_doc_comment)]
    from: Start,
    #[command(flatten)]
    target: TargetArgs,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Where the changes (or the state) go: one of these at most, each once.
#[derive(Debug, clap::Args)]
#[group(multiple = false)]
struct TargetArgs {
    /// Write the changes to TOPIC (default: <status_topic>-shadow)
    ///
    /// The topic is created when missing.
    #[arg(long, value_name = "TOPIC", verbatim_doc_comment)]
    to_topic: Option<String>,
    /// Write the changes to the live status topic, under NEW's version
    ///
    /// NEW's version must differ from the live one; change ids get the
    /// suffix @<version>, so they never collide with the live ones.
    #[arg(long, verbatim_doc_comment)]
    into_live: bool,
    /// Write no changes: write the state rebuilt under NEW to TOPIC
    ///
    /// TOPIC is a new changelog, written up to the live group's committed
    /// offsets, to switch the service to NEW. Run it after stopping the
    /// service (README: "Switching the live service to a new model").
    #[arg(long, value_name = "TOPIC", verbatim_doc_comment)]
    to_changelog: Option<String>,
}

impl TargetArgs {
    fn target(self) -> Target {
        match self {
            TargetArgs {
                to_changelog: Some(topic),
                ..
            } => Target::Changelog(topic),
            TargetArgs {
                into_live: true, ..
            } => Target::Live,
            TargetArgs { to_topic, .. } => Target::Shadow(to_topic),
        }
    }
}

/// `--from`: `earliest` or an RFC 3339 time.
fn parse_start(s: &str) -> Result<Start, String> {
    match s {
        "earliest" => Ok(Start::Earliest),
        t => super::parse_time(t).map(Start::Time),
    }
}

pub(super) fn main(args: ReplayArgs) -> Result<ExitCode> {
    let ReplayArgs {
        config,
        model,
        from: start,
        target,
        json,
    } = args;
    let cfg = Config::load(&config)
        .with_context(|| format!("{} is not a valid config", config.display()))?;
    crate::service::telemetry::init_logging(cfg.log.format, Some("warn"));
    let model = Model::from_path(&model)
        .with_context(|| format!("{} is not a valid model", model.display()))?;
    let opts = Options {
        model: Arc::new(model),
        start,
        target: target.target(),
    };
    let bar = progress_bar();
    let summary = replay(&cfg, &opts, |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    });
    // Left as last drawn (`finish` would show done = total, which
    // transaction markers in the offsets can keep the count from reaching);
    // the bar leaves the cursor on its line, so the summary or the error
    // starts on the next one.
    bar.abandon();
    if !bar.is_hidden() {
        eprintln!();
    }
    let summary = summary?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render(&summary));
    }
    Ok(ExitCode::SUCCESS)
}

/// The progress bar on stderr: indicatif draws nothing when stderr is not
/// a terminal (or TERM is dumb), so a redirected run's output stays clean.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    // The template is fixed: a test checks that it parses.
    if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
        bar.set_style(
            style
                .progress_chars("#> ")
                .with_key("rate", |s: &ProgressState, w: &mut dyn fmt::Write| {
                    let _ = write!(w, "{} events/s", HumanCount(s.per_sec() as u64));
                })
                .with_key("left", |s: &ProgressState, w: &mut dyn fmt::Write| {
                    // No estimate before the first events are counted.
                    let _ = if s.per_sec() > 0.0 {
                        write!(w, "{:#}", HumanDuration(s.eta()))
                    } else {
                        write!(w, "-")
                    };
                }),
        );
    }
    bar
}

/// `{wide_bar}` takes what the numbers leave of the terminal's width.
const TEMPLATE: &str =
    "[{wide_bar}] {percent:>3}%  {human_pos} / {human_len} events  {rate}  {left} left";

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
            if s.erased_leads > 0 {
                let _ = writeln!(
                    o,
                    "{} lead(s) erased in the range: their {} change(s) not written",
                    s.erased_leads, s.erased_changes
                );
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_template_parses() {
        ProgressStyle::with_template(TEMPLATE).expect("template parses");
    }
}
