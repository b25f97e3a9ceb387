//! The metrics of a backtest, from one [`LeadResult`] per lead. Pure
//! functions, no I/O.
//!
//! Won deals are the positives; lost deals *and* leads without an outcome
//! are the negatives (a lead the model flagged that did not buy within the
//! data is a false positive, whether sales closed it as lost or not). So the
//! precision of "became MQL" is the MQL→won conversion.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::change::Stage;
use crate::model::{at_least, Model};

/// A lead's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Deal {
    Won,
    Lost,
}

impl Deal {
    pub fn as_str(self) -> &'static str {
        match self {
            Deal::Won => "won",
            Deal::Lost => "lost",
        }
    }
}

/// What one model made of one lead up to its outcome (or, without one, up
/// to the last event time of the file).
#[derive(Debug, Clone, PartialEq)]
pub struct LeadResult {
    pub deal: Option<Deal>,
    /// The highest total score (fit + engagement) right after any of its
    /// events before the outcome, and at least 0 (a lead starts at 0).
    /// Engagement only rises at events and decays between them, so this is
    /// the highest the score ever was.
    pub peak: f64,
    /// `Some` if it *became MQL* before the outcome: entered `mql`, or
    /// entered `sql` meeting the MQL conditions (the criteria rule) — not
    /// through `sales_accepted` alone. The value is the time from its first
    /// event to that moment, in days.
    pub days_to_mql: Option<f64>,
    /// Entered `sql` (by any path) before the outcome.
    pub sql: bool,
    /// Entered `sql` at or after becoming MQL.
    pub sql_after_mql: bool,
    /// With an outcome: the stage just before it.
    pub stage_before_outcome: Option<Stage>,
}

impl LeadResult {
    pub fn became_mql(&self) -> bool {
        self.days_to_mql.is_some()
    }
}

/// Leads, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub leads: u64,
    pub won: u64,
    pub lost: u64,
    pub open: u64,
}

impl Counts {
    pub fn add(&mut self, deal: Option<Deal>) {
        self.leads += 1;
        match deal {
            Some(Deal::Won) => self.won += 1,
            Some(Deal::Lost) => self.lost += 1,
            None => self.open += 1,
        }
    }

    pub fn of<'a>(results: impl IntoIterator<Item = &'a LeadResult>) -> Counts {
        let mut c = Counts::default();
        for r in results {
            c.add(r.deal);
        }
        c
    }
}

/// `a / b`, or `None` when `b` is 0.
pub fn ratio(a: u64, b: u64) -> Option<f64> {
    (b != 0).then(|| a as f64 / b as f64)
}

/// Precision, recall and F1 of selecting `selected` out of `all`, won
/// deals being the positives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Classifier {
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
}

impl Classifier {
    pub fn of(selected: Counts, all: Counts) -> Classifier {
        let precision = ratio(selected.won, selected.leads);
        let recall = ratio(selected.won, all.won);
        let f1 = match (precision, recall) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        };
        Classifier {
            precision,
            recall,
            f1,
        }
    }
}

/// The median, or `None` for no values.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// A round step (1, 2 or 5 times a power of ten) that cuts `0..=max` into
/// at most about 40 pieces.
pub fn score_step(max: f64) -> f64 {
    let raw = max / 40.0;
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// The thresholds of the sweep: 0, `step`, 2 × `step`, … up to `max`.
pub fn thresholds(max: f64, step: f64) -> Vec<f64> {
    (0..)
        .map(|k| round9(k as f64 * step))
        .take_while(|&t| t == 0.0 || at_least(max, t))
        .collect()
}

/// Rounds away binary noise (0.30000000000000004 → 0.3).
fn round9(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

/// One threshold of the sweep: the leads whose peak total reaches it (≥,
/// with the model's tolerance) would be the MQLs of a model with that
/// single threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SweepPoint {
    pub threshold: f64,
    /// Leads reaching it (the MQL volume).
    pub leads: u64,
    /// Won deals among them.
    pub won: u64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
}

pub fn sweep(results: &[LeadResult], thresholds: &[f64]) -> Vec<SweepPoint> {
    let all = Counts::of(results);
    thresholds
        .iter()
        .map(|&threshold| {
            let selected = Counts::of(results.iter().filter(|r| at_least(r.peak, threshold)));
            let c = Classifier::of(selected, all);
            SweepPoint {
                threshold,
                leads: selected.leads,
                won: selected.won,
                precision: c.precision,
                recall: c.recall,
                f1: c.f1,
            }
        })
        .collect()
}

/// The threshold with the highest F1; of equal F1s the highest threshold
/// (fewer MQLs for the same balance of precision and recall).
pub fn suggest(sweep: &[SweepPoint]) -> Option<SweepPoint> {
    let mut best: Option<SweepPoint> = None;
    for p in sweep {
        let Some(f1) = p.f1 else { continue };
        if best.and_then(|b| b.f1).is_none_or(|b| f1 >= b) {
            best = Some(*p);
        }
    }
    best
}

/// One bin of the peak-score histogram: `from ≤ peak < to`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HistogramBin {
    pub from: f64,
    pub to: f64,
    pub won: u64,
    pub lost: u64,
    pub open: u64,
}

/// Peak scores in `bins` bins of width `step` from 0; higher peaks go to the
/// last bin. A peak within the model's tolerance of a bin's lower bound
/// falls in that bin, as it would meet that threshold.
pub fn histogram(results: &[LeadResult], step: f64, bins: usize) -> Vec<HistogramBin> {
    let mut out: Vec<HistogramBin> = (0..bins.max(1))
        .map(|k| HistogramBin {
            from: round9(k as f64 * step),
            to: round9((k + 1) as f64 * step),
            won: 0,
            lost: 0,
            open: 0,
        })
        .collect();
    let last = out.len() - 1;
    for r in results {
        let k = ((r.peak + crate::model::TOLERANCE) / step).floor().max(0.0) as usize;
        let bin = &mut out[k.min(last)];
        match r.deal {
            Some(Deal::Won) => bin.won += 1,
            Some(Deal::Lost) => bin.lost += 1,
            None => bin.open += 1,
        }
    }
    out
}

/// One of the model's bands, with the leads whose peak falls in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BandRow {
    pub band: String,
    /// Lower bound (inclusive); `None` for the first band.
    pub from: Option<f64>,
    /// Upper bound (exclusive); `None` for the last band.
    pub to: Option<f64>,
    pub leads: u64,
    pub won: u64,
    pub lost: u64,
    pub open: u64,
    /// `won / leads`: the conversion of the band.
    pub won_share: Option<f64>,
}

/// Conversion by the band of each lead's peak total score.
pub fn bands(model: &Model, results: &[LeadResult]) -> Vec<BandRow> {
    let mut counts = vec![Counts::default(); model.bands.len()];
    for r in results {
        counts[model.band(r.peak)].add(r.deal);
    }
    model
        .bands
        .iter()
        .enumerate()
        .zip(counts)
        .map(|((i, b), c)| BandRow {
            band: b.name.clone(),
            from: (i > 0).then_some(b.at_least),
            to: model.bands.get(i + 1).map(|n| n.at_least),
            leads: c.leads,
            won: c.won,
            lost: c.lost,
            open: c.open,
            won_share: ratio(c.won, c.leads),
        })
        .collect()
}

/// For leads with an outcome: how many were in each stage just before it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StagesBeforeOutcome {
    pub won: BTreeMap<Stage, u64>,
    pub lost: BTreeMap<Stage, u64>,
}

pub fn stages_before_outcome(results: &[LeadResult]) -> StagesBeforeOutcome {
    let mut s = StagesBeforeOutcome::default();
    for r in results {
        if let (Some(deal), Some(stage)) = (r.deal, r.stage_before_outcome) {
            let map = match deal {
                Deal::Won => &mut s.won,
                Deal::Lost => &mut s.lost,
            };
            *map.entry(stage).or_default() += 1;
        }
    }
    s
}

/// Everything the backtest says about one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelReport {
    /// `model` (the `--model`) or `baseline`.
    pub role: String,
    pub version: String,
    /// The model file, or `default (embedded)`.
    pub source: String,
    /// All leads, by outcome.
    pub leads: Counts,
    /// The leads that became MQL before their outcome, by outcome.
    pub became_mql: Counts,
    /// Leads that entered `sql` before their outcome, by any path.
    pub became_sql: u64,
    /// Leads that became MQL and then (or at once) SQL.
    pub became_sql_after_mql: u64,
    /// `became_sql_after_mql / became_mql`.
    pub mql_to_sql: Option<f64>,
    /// `became_mql.won / became_mql.leads`.
    pub mql_to_won: Option<f64>,
    /// "Became MQL" as a prediction of a won deal.
    pub became_mql_classifier: Classifier,
    /// Median time from a lead's first event to becoming MQL.
    pub median_days_to_mql: Option<f64>,
    pub stages_before_outcome: StagesBeforeOutcome,
    /// Conversion by the band of the peak score.
    pub bands: Vec<BandRow>,
    pub score_histogram: Vec<HistogramBin>,
    pub threshold_sweep: Vec<SweepPoint>,
    /// Highest F1; ties → the higher threshold.
    pub suggested_threshold: Option<SweepPoint>,
    /// SLA compliance by route; only when the events hold a `sales_contacted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sla: Option<Vec<super::sla::SlaRoute>>,
}

/// Computes every metric of one model. `step` and `thresholds` come from
/// [`score_step`] and [`thresholds`] over all models' peaks.
pub fn evaluate(
    role: &str,
    source: &str,
    model: &Model,
    results: &[LeadResult],
    step: f64,
    thresholds: &[f64],
) -> ModelReport {
    let leads = Counts::of(results);
    let became_mql = Counts::of(results.iter().filter(|r| r.became_mql()));
    let became_sql_after_mql = results.iter().filter(|r| r.sql_after_mql).count() as u64;
    let threshold_sweep = sweep(results, thresholds);
    ModelReport {
        role: role.to_string(),
        version: model.version.clone(),
        source: source.to_string(),
        leads,
        became_mql,
        became_sql: results.iter().filter(|r| r.sql).count() as u64,
        became_sql_after_mql,
        mql_to_sql: ratio(became_sql_after_mql, became_mql.leads),
        mql_to_won: ratio(became_mql.won, became_mql.leads),
        became_mql_classifier: Classifier::of(became_mql, leads),
        median_days_to_mql: median(results.iter().filter_map(|r| r.days_to_mql).collect()),
        stages_before_outcome: stages_before_outcome(results),
        bands: bands(model, results),
        score_histogram: histogram(results, step, thresholds.len()),
        suggested_threshold: suggest(&threshold_sweep),
        threshold_sweep,
        sla: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(deal: Option<Deal>, peak: f64) -> LeadResult {
        LeadResult {
            deal,
            peak,
            days_to_mql: None,
            sql: false,
            sql_after_mql: false,
            stage_before_outcome: None,
        }
    }

    const W: Option<Deal> = Some(Deal::Won);
    const L: Option<Deal> = Some(Deal::Lost);

    #[test]
    fn median_of_odd_even_and_none() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(score_step(0.0), 1.0);
        assert_eq!(score_step(40.0), 1.0);
        assert_eq!(score_step(65.0), 2.0);
        assert_eq!(score_step(150.0), 5.0);
        assert_eq!(score_step(300.0), 10.0);
        assert_eq!(score_step(3.0), 0.1);
        assert_eq!(thresholds(5.0, 2.0), vec![0.0, 2.0, 4.0]);
        assert_eq!(thresholds(0.3, 0.1), vec![0.0, 0.1, 0.2, 0.3]);
        assert_eq!(thresholds(0.0, 1.0), vec![0.0]);
    }

    #[test]
    fn classifier_counts_open_leads_as_negatives() {
        let selected = Counts {
            leads: 4,
            won: 1,
            lost: 1,
            open: 2,
        };
        let all = Counts {
            leads: 10,
            won: 2,
            lost: 3,
            open: 5,
        };
        let c = Classifier::of(selected, all);
        assert_eq!(c.precision, Some(0.25));
        assert_eq!(c.recall, Some(0.5));
        assert!((c.f1.unwrap() - 1.0 / 3.0).abs() < 1e-12);
        let none = Classifier::of(Counts::default(), all);
        assert_eq!((none.precision, none.recall), (None, Some(0.0)));
        assert_eq!(none.f1, None);
    }

    #[test]
    fn sweep_and_suggestion_prefer_the_higher_threshold_on_ties() {
        // Won at 40 and 35, lost at 65, open at 0.
        let results = [lead(W, 40.0), lead(W, 35.0), lead(L, 65.0), lead(None, 0.0)];
        let s = sweep(&results, &[0.0, 10.0, 30.0, 36.0, 50.0]);
        let at = |t: f64| s.iter().find(|p| p.threshold == t).unwrap();
        assert_eq!((at(0.0).leads, at(0.0).won), (4, 2));
        assert_eq!(at(0.0).precision, Some(0.5));
        // 10 and 30 select the same leads: the same F1 (0.8).
        assert_eq!(at(10.0).f1, at(30.0).f1);
        assert!((at(30.0).f1.unwrap() - 0.8).abs() < 1e-12);
        assert_eq!(at(36.0).recall, Some(0.5));
        assert_eq!((at(50.0).leads, at(50.0).won), (1, 0));
        assert_eq!(at(50.0).f1, Some(0.0));
        assert_eq!(suggest(&s).unwrap().threshold, 30.0);
    }

    #[test]
    fn a_peak_within_tolerance_meets_the_threshold() {
        let results = [lead(W, 50.0 - 1e-10)];
        assert_eq!(sweep(&results, &[50.0])[0].leads, 1);
        let h = histogram(&results, 10.0, 6);
        assert_eq!(h[5].won, 1);
    }

    #[test]
    fn histogram_bins_by_outcome() {
        let results = [lead(W, 12.0), lead(L, 19.9), lead(None, 0.0), lead(W, 99.0)];
        let h = histogram(&results, 10.0, 3);
        assert_eq!(h.len(), 3);
        assert_eq!((h[0].from, h[0].to), (0.0, 10.0));
        assert_eq!((h[0].won, h[0].lost, h[0].open), (0, 0, 1));
        assert_eq!((h[1].won, h[1].lost, h[1].open), (1, 1, 0));
        // Past the last bin: counted in it.
        assert_eq!(h[2].won, 1);
    }

    #[test]
    fn bands_use_the_models_bounds() {
        let model = Model::default_model();
        let results = [
            lead(W, 40.0),
            lead(L, 50.0),
            lead(W, 80.0),
            lead(None, 74.9),
        ];
        let b = bands(&model, &results);
        let names: Vec<_> = b.iter().map(|r| r.band.as_str()).collect();
        assert_eq!(names, ["cold", "warm", "hot"]);
        assert_eq!((b[0].from, b[0].to), (None, Some(50.0)));
        assert_eq!((b[2].from, b[2].to), (Some(75.0), None));
        assert_eq!((b[0].leads, b[0].won_share), (1, Some(1.0)));
        assert_eq!((b[1].leads, b[1].lost, b[1].open), (2, 1, 1));
        assert_eq!(b[1].won_share, Some(0.0));
        assert_eq!((b[2].leads, b[2].won), (1, 1));
    }

    #[test]
    fn evaluate_puts_it_together() {
        let mut a = lead(W, 50.0);
        a.days_to_mql = Some(2.0);
        a.stage_before_outcome = Some(Stage::Mql);
        let mut c = lead(L, 65.0);
        c.days_to_mql = Some(1.0);
        c.sql = true;
        c.sql_after_mql = true;
        c.stage_before_outcome = Some(Stage::Sql);
        let mut e = lead(L, 15.0);
        e.sql = true;
        e.stage_before_outcome = Some(Stage::Sql);
        let results = [a, lead(W, 40.0), c, e];
        let model = Model::default_model();
        let r = evaluate("model", "x", &model, &results, 2.0, &thresholds(65.0, 2.0));
        assert_eq!(r.became_mql.leads, 2);
        assert_eq!((r.became_sql, r.became_sql_after_mql), (2, 1));
        assert_eq!(r.mql_to_sql, Some(0.5));
        assert_eq!(r.mql_to_won, Some(0.5));
        assert_eq!(r.became_mql_classifier.recall, Some(0.5));
        assert_eq!(r.median_days_to_mql, Some(1.5));
        assert_eq!(r.stages_before_outcome.lost.get(&Stage::Sql), Some(&2));
        assert_eq!(r.score_histogram.len(), r.threshold_sweep.len());
        assert_eq!(r.threshold_sweep.last().unwrap().threshold, 64.0);
    }
}
