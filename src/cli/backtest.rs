//! `leadscore backtest`: how a model (and a baseline) would have done on a
//! file of historical events. Reads the files, runs [`crate::backtest`],
//! writes the summary, the JSON and the HTML report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::backtest::{
    metrics, outcomes, report, summary, Backtest, BacktestReport, InputCounts, OutcomeCounts,
};
use crate::engine::Outcome;
use crate::model::Model;

use super::offline::{read_events, read_messages, InputOptions, ScoreStats};
use crate::codec::InputFormat;

/// `backtest --help`: what it does, before the options.
pub(super) const ABOUT: &str = "\
What a scoring model would have done on historical events.

Folds the events (JSON lines, as `leadscore score` reads them: file order,
allowed lateness 0, bad lines reported on stderr and skipped) under each
model, and asks: would the leads that became customers have scored high?
Reports MQL/SQL counts, conversions, precision and recall for won deals,
conversion by band and a threshold sweep; --report DIR writes an HTML report.";

/// The example closing both `backtest -h` and `backtest --help`.
macro_rules! example {
    () => {
        "Example:
  leadscore backtest --events q1.jsonl --baseline live-model.toml --report backtest/"
    };
}

/// `backtest -h`: after the options.
pub(super) const EXAMPLE: &str = example!();

/// `backtest --help`: after the options, how each number is defined.
pub(super) const DETAILS: &str = concat!(
    "\
Each lead is judged on its history before its outcome: up to its first
deal_won/deal_lost in the event file, or up to the outcome's `at` (events at
or after it are ignored). Won deals are the positives; lost deals and leads
without an outcome are the negatives.

  became MQL   entered mql (or entered sql meeting the MQL conditions, not
               by sales_accepted alone) before the outcome, or before the
               last event time for leads without one
  peak score   the highest total score after any event before the outcome
  precision    won deals among the leads that became MQL (= MQL→won conversion)
  recall       won deals that became MQL, of all won deals
  bands        conversion by the model's band of the peak score
  sweep        for thresholds from 0 to the highest peak: leads whose peak
               reaches it, precision, recall, F1; the suggested threshold has
               the highest F1 (ties: the higher threshold)

Exits 2 with a message for a missing or empty event file, a model that does
not validate, an unreadable outcomes file, or no outcomes (precision and
recall need won deals).

",
    example!()
);

/// `leadscore backtest`'s flags.
#[derive(Debug, clap::Args)]
pub(super) struct BacktestArgs {
    /// The model to test (default: the embedded default model).
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// A second model, reported side by side (e.g. the one live now).
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// The event file, one event a line (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    events: String,
    #[command(flatten)]
    format: super::InputArgs,
    /// Deal outcomes, one per line, JSON or CSV.
    #[arg(
        long,
        value_name = "FILE",
        long_help = "\
Deal outcomes, one per line, JSON or CSV:
  {\"lead_id\": \"L-1\", \"outcome\": \"won\", \"at\": \"2026-04-01T09:00:00Z\"}
  L-2,lost,2026-04-02T10:00:00Z
(a `lead_id,outcome,at` header line is allowed). Without it, the outcomes
are the event file's deal_won/deal_lost events."
    )]
    outcomes: Option<PathBuf>,
    /// Write DIR/index.html (charts, works offline) and DIR/backtest.json.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Write the result as JSON to stdout instead of the summary.
    #[arg(long)]
    json: bool,
}

/// What `leadscore backtest` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct BacktestOptions {
    pub model: Option<PathBuf>,
    pub baseline: Option<PathBuf>,
    pub events: String,
    pub outcomes: Option<PathBuf>,
    /// The event file's format and mappings.
    pub input: InputOptions,
}

/// A model to test: its role, the model, and where it came from.
struct Candidate {
    role: &'static str,
    model: Arc<Model>,
    source: String,
}

fn load(role: &'static str, path: Option<&Path>) -> Result<Candidate> {
    let (model, source) = match path {
        Some(p) => (
            Model::from_path(p).with_context(|| format!("{} is not a valid model", p.display()))?,
            p.display().to_string(),
        ),
        None => (Model::default_model(), "default (embedded)".into()),
    };
    Ok(Candidate {
        role,
        model: Arc::new(model),
        source,
    })
}

/// Runs the backtest; bad event lines are reported on stderr.
pub fn backtest(opts: &BacktestOptions) -> Result<BacktestReport> {
    let mut models = vec![load("model", opts.model.as_deref())?];
    if let Some(b) = &opts.baseline {
        models.push(load("baseline", Some(b))?);
    }
    let given = match &opts.outcomes {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read outcomes file {}", p.display()))?;
            let o = outcomes::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            if o.by_lead.is_empty() {
                bail!(
                    "no outcomes in {}: precision and recall need won and lost deals, \
                     one per line: lead_id,won|lost,RFC 3339 time",
                    p.display()
                );
            }
            if o.repeated > 0 {
                eprintln!(
                    "leadscore backtest: {}: {} lines repeat a lead; each lead keeps its earliest outcome",
                    p.display(),
                    o.repeated
                );
            }
            Some(o.by_lead)
        }
        None => None,
    };
    let mut bt = Backtest::new(models.iter().map(|c| c.model.clone()).collect(), given);
    let mut stats = ScoreStats::default();
    let mut duplicates = 0;
    let input = opts.events.as_str();
    let fold = |event: &crate::event::Event<'_>| {
        if bt.event(event) == Outcome::Duplicate {
            duplicates += 1;
        }
        Ok(())
    };
    let on_bad = |line, e: &dyn std::fmt::Display| eprintln!("{input}:{line}: {e}");
    if opts.input.format == InputFormat::Json {
        read_events(input, &mut stats, fold, on_bad)?;
    } else {
        read_messages(
            input,
            &opts.input,
            &mut stats,
            |msg| {
                if bt.message(msg) == Outcome::Duplicate {
                    duplicates += 1;
                }
                Ok(())
            },
            on_bad,
        )?;
    }
    if stats.events == 0 {
        bail!("no events in {input}");
    }
    let crate::backtest::Finished {
        results,
        without_events,
        sla,
        erased,
    } = bt.finish();

    // The outcomes are the same under every model.
    let all = metrics::Counts::of(&results[0]);
    let source = match &opts.outcomes {
        Some(p) => p.display().to_string(),
        None => "events".to_string(),
    };
    if erased > 0 {
        eprintln!("leadscore backtest: {erased} lead(s) erased (lead_erased) in {input}; left out");
    }
    if without_events > 0 {
        eprintln!(
            "leadscore backtest: {without_events} outcomes in {source} name a lead with no event in {input}; left out"
        );
    }
    if all.won + all.lost == 0 {
        match &opts.outcomes {
            Some(_) => bail!(
                "none of the outcomes in {source} names a lead of {input}: \
                 precision and recall need outcomes for the leads in the event file"
            ),
            None => bail!(
                "no outcomes in {input}: it has no deal_won or deal_lost event, and precision \
                 and recall need won and lost deals; add them, or give --outcomes FILE"
            ),
        }
    }
    if all.won == 0 {
        bail!(
            "no won deals among the {} outcomes: precision and recall count won deals \
             as the positives, so at least one is needed",
            all.lost
        );
    }

    let max_peak = results.iter().flatten().map(|r| r.peak).fold(0.0, f64::max);
    let step = metrics::score_step(max_peak);
    let thresholds = metrics::thresholds(max_peak, step);
    let reports = models
        .iter()
        .zip(&results)
        .enumerate()
        .map(|(m, (c, results))| {
            let mut r = metrics::evaluate(c.role, &c.source, &c.model, results, step, &thresholds);
            r.sla = sla.as_ref().map(|s| s[m].clone());
            r
        })
        .collect();
    Ok(BacktestReport {
        events_file: input.to_string(),
        outcomes_from: source,
        input: InputCounts {
            lines: stats.lines,
            events: stats.events,
            bad_lines: stats.bad_lines,
            duplicates,
        },
        outcomes: OutcomeCounts {
            leads: all.leads,
            won: all.won,
            lost: all.lost,
            open: all.open,
            without_events,
            erased,
        },
        score_step: step,
        models: reports,
    })
}

/// `leadscore backtest …`: runs, writes the output.
pub(super) fn main(args: BacktestArgs) -> Result<ExitCode> {
    let opts = BacktestOptions {
        model: args.model,
        baseline: args.baseline,
        events: args.events,
        outcomes: args.outcomes,
        input: args.format.options()?,
    };
    let (report_dir, json) = (args.report, args.json);
    let result = backtest(&opts)?;
    eprintln!(
        "leadscore backtest: {} events, {} bad lines, {} duplicates; {} leads, {} won, {} lost",
        result.input.events,
        result.input.bad_lines,
        result.input.duplicates,
        result.outcomes.leads,
        result.outcomes.won,
        result.outcomes.lost
    );
    let json_text = serde_json::to_string_pretty(&result)?;
    if let Some(dir) = &report_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create report directory {}", dir.display()))?;
        let html = dir.join("index.html");
        std::fs::write(&html, report::render(&result))
            .with_context(|| format!("cannot write {}", html.display()))?;
        let data = dir.join("backtest.json");
        std::fs::write(&data, format!("{json_text}\n"))
            .with_context(|| format!("cannot write {}", data.display()))?;
        eprintln!("leadscore backtest: report in {}", html.display());
    }
    if json {
        println!("{json_text}");
    } else {
        print!("{}", summary::render(&result));
    }
    Ok(ExitCode::SUCCESS)
}
