//! Backtest: what a scoring model would have done on historical events.
//!
//! "Would the leads that became customers have scored high?" The events are
//! folded through the ordinary [`Engine`](crate::Engine) — one per model, in
//! file order, allowed lateness 0, as `leadscore score` does — and for each
//! lead we keep what the model made of it *before its outcome*:
//!
//! - [`track`] drives the engines and records, per model and lead, the peak
//!   total score, whether and when it became MQL and SQL, and its stage
//!   just before the outcome. It is pure, like the engine: events in,
//!   results out.
//! - [`outcomes`] parses a separate outcomes file (JSON lines or CSV).
//! - [`metrics`] turns the per-lead results into counts, conversions,
//!   precision and recall, bands, a histogram and a threshold sweep.
//! - [`sla`] counts, by route, the hand-offs sales touched before their
//!   `follow_up_by`, the breaches and the time to first touch.
//! - [`summary`] prints them as a table, [`report`] as an HTML page with
//!   charts drawn by a small inline script.
//!
//! The definitions (what "became MQL" means, which leads are positives) are
//! on [`metrics::LeadResult`] and in the README's "Backtest" section.

pub mod metrics;
pub mod outcomes;
pub mod report;
pub mod sla;
pub mod summary;
pub mod track;

use serde::Serialize;

pub use metrics::{Deal, LeadResult, ModelReport};
pub use track::{Backtest, Finished};

/// The whole result of a backtest, as written by `--json` and to
/// `backtest.json`.
#[derive(Debug, Clone, Serialize)]
pub struct BacktestReport {
    pub events_file: String,
    /// `"events"` (the event file's `deal_won`/`deal_lost`) or the outcomes file.
    pub outcomes_from: String,
    pub input: InputCounts,
    pub outcomes: OutcomeCounts,
    /// Step of the threshold sweep and width of the histogram bins (shared by
    /// all models so that they compare point by point).
    pub score_step: f64,
    /// The `--model` first, then the `--baseline` if given.
    pub models: Vec<ModelReport>,
}

/// What was read from the event file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InputCounts {
    pub lines: u64,
    pub events: u64,
    pub bad_lines: u64,
    pub duplicates: u64,
}

/// The leads by outcome (the same for every model).
#[derive(Debug, Clone, Default, Serialize)]
pub struct OutcomeCounts {
    pub leads: u64,
    pub won: u64,
    pub lost: u64,
    /// Leads with no outcome.
    pub open: u64,
    /// Outcomes (from an outcomes file) for leads that have no event: left out.
    pub without_events: u64,
    /// Leads erased in the events (`lead_erased`): left out.
    pub erased: u64,
}
