//! When decay alone changes what a lead's score means: the instant its band
//! changes (the score stream's band timer) and, with `demote_on_score`, the
//! instant an MQL stops meeting the requalification conditions.
//!
//! Between events a lead's engagement is `E × 2^(−(t − t₀)/h)` (E at the
//! lead's time t₀, h the half-life): it moves monotonically towards 0, so a
//! threshold is crossed at most once, at `t₀ + h × log2(E / k)` where k is
//! the engagement at the threshold. That instant is a real number; the
//! timer is set to the first whole microsecond at which the crossing has
//! really happened in the engine's own arithmetic ([`Lead::engagement_at`],
//! the sum that the fold, `explain` and the score record compute), with the
//! model's tolerance: a total within 1e-9 below a bound still meets it, so
//! the timer is the first microsecond at which it is more than 1e-9 below.
//! The closed form lands within a microsecond or two of it; a short search
//! around it makes it exact.
//!
//! When rule groups decay with half-lives of their own, engagement is a sum
//! `Σ cᵢ × 2^(−(t − t₀)/hᵢ)`, one term per half-life. With mixed signs it
//! need not be monotone (a positive group with a long half-life and a
//! negative one with a short one rises, then falls), so a threshold may be
//! crossed more than once. [`sign_changes`] finds every real crossing in
//! order: the derivative of such a sum, times the positive `2^(r₁s)` of its
//! slowest rate, is a sum with one term fewer, whose crossings (found the
//! same way) split time into intervals on which the sum is monotone; each
//! holds at most one crossing, found by bisection. The timer is then the
//! first whole microsecond, near the first crossing, at which the engine's
//! own arithmetic has changed, as above.

use super::lead::{Lead, NEVER, NO_TIME};
use crate::model::{at_least, Model, TOLERANCE};
use crate::time::Micros;

/// The first whole microsecond after `from` at which `holds(base +
/// engagement)` stops being what it is at `from`, engagement decaying from
/// the lead's time; [`NEVER`] if decay alone never changes it. `threshold`
/// is the value `base + engagement` crosses (for the closed-form estimate).
fn first_change(
    lead: &Lead,
    model: &Model,
    from: Micros,
    base: f64,
    threshold: f64,
    holds: impl Fn(f64) -> bool,
) -> Micros {
    if model.multi_rate() {
        return first_change_multi(lead, model, from, base, threshold, holds);
    }
    let Some(hl) = model.half_life else {
        return NEVER;
    };
    let e0 = lead.engagement(model);
    // The engagement at which the total sits on the threshold, tolerance included.
    let k = threshold - TOLERANCE - base;
    // Decay moves engagement towards 0 from either side: it reaches k only
    // if k lies strictly between 0 and e0.
    if e0 == 0.0 || k == 0.0 || k.signum() != e0.signum() || k.abs() >= e0.abs() {
        return NEVER;
    }
    let at = |t: Micros| holds(base + lead.engagement_at(model, t));
    let start = at(from);
    let changed = |t: Micros| at(t) != start;
    let estimate = hl * (e0 / k).log2();
    if !estimate.is_finite() || estimate > 1e17 {
        return NEVER;
    }
    let mut hi = lead
        .time
        .saturating_add(estimate.ceil() as Micros)
        .max(from.saturating_add(1));
    // Up until it has changed (a step or two; doubling in case the estimate
    // was far off).
    let mut lo = from;
    let mut step: Micros = 1;
    while !changed(hi) {
        lo = hi;
        hi = match hi.checked_add(step) {
            Some(h) if h < NEVER => h,
            _ => return NEVER,
        };
        step = step.saturating_mul(2);
    }
    // Down to the first microsecond at which it has: usually `hi` itself.
    if hi - 1 <= lo || !changed(hi - 1) {
        return hi;
    }
    hi -= 1;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if changed(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// [`first_change`] for a model whose rules decay at several rates.
fn first_change_multi(
    lead: &Lead,
    model: &Model,
    from: Micros,
    base: f64,
    threshold: f64,
    holds: impl Fn(f64) -> bool,
) -> Micros {
    if lead.time == NO_TIME || from < lead.time {
        return NEVER;
    }
    // Time s in microseconds since the lead's time: the total minus the
    // threshold (tolerance included) is c₀ + Σ cᵢ·2^(−s/hᵢ).
    let sums = lead.engagement_by_rate(model, lead.time);
    let mut terms = vec![Term {
        coefficient: base - (threshold - TOLERANCE),
        rate: 0.0,
    }];
    for (&hl, &c) in model.half_lives.iter().zip(&sums) {
        terms.push(Term {
            coefficient: c,
            rate: hl.map_or(0.0, |h| 1.0 / h),
        });
    }
    let roots = sign_changes(&terms, (from - lead.time) as f64, f64::INFINITY);
    let at = |t: Micros| holds(base + lead.engagement_at(model, t));
    let start = at(from);
    let changed = |t: Micros| at(t) != start;
    // The last instant known not to have changed.
    let mut unchanged = from;
    for (k, &root) in roots.iter().enumerate() {
        let Some(near) = micros_after(lead.time, root) else {
            break;
        };
        let lo = near.saturating_sub(2).max(unchanged);
        if lo > unchanged && changed(lo) {
            // Rounding moved the change a little before the real crossing.
            return first_in(unchanged, lo, &changed);
        }
        // Up from just before the crossing: a step or two, doubling in case
        // rounding moved it further (up to the next crossing, or ~1 s).
        let limit = roots
            .get(k + 1)
            .and_then(|&r| micros_after(lead.time, r))
            .map_or(near.saturating_add(1 << 20), |n| n.saturating_sub(2))
            .min(near.saturating_add(1 << 20));
        let (mut lo, mut hi, mut step) = (lo, lo + 1, 1);
        while hi <= limit && hi < NEVER {
            if changed(hi) {
                return first_in(lo, hi, &changed);
            }
            lo = hi;
            hi = hi.saturating_add(step);
            step = step.saturating_mul(2);
        }
        // Crossed and crossed back within a microsecond: no whole
        // microsecond saw it; on to the next crossing.
        unchanged = lo;
    }
    NEVER
}

/// `time + s` rounded up to a whole microsecond, if it is a time.
fn micros_after(time: Micros, s: f64) -> Option<Micros> {
    let t = time as f64 + s.ceil();
    (t.is_finite() && t < 9.0e18).then(|| time.saturating_add(s.ceil() as Micros))
}

/// The first instant in `(lo, hi]` at which `changed` holds, given that it
/// does not at `lo` and does at `hi` (bisection).
fn first_in(mut lo: Micros, mut hi: Micros, changed: &impl Fn(Micros) -> bool) -> Micros {
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if changed(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// One term `coefficient × 2^(−rate × s)` of a sum of exponentials.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Term {
    coefficient: f64,
    rate: f64,
}

/// The terms of a sum with equal rates merged and zero coefficients
/// dropped, slowest rate first, all rates lowered by the slowest (the sum
/// times a positive factor: the same sign everywhere, the same crossings).
/// The first term is then the sum's limit as s grows.
fn normalized(terms: &[Term]) -> Vec<Term> {
    let mut out: Vec<Term> = Vec::with_capacity(terms.len());
    for t in terms {
        match out.iter_mut().find(|o| o.rate == t.rate) {
            Some(o) => o.coefficient += t.coefficient,
            None => out.push(*t),
        }
    }
    out.retain(|t| t.coefficient != 0.0);
    out.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    if let Some(slowest) = out.first().map(|t| t.rate) {
        for t in &mut out {
            t.rate -= slowest;
        }
    }
    out
}

/// The value of a normalized sum at `s` (its limit at infinity).
fn value(terms: &[Term], s: f64) -> f64 {
    if s == f64::INFINITY {
        return terms.first().map_or(0.0, |t| t.coefficient);
    }
    terms
        .iter()
        .map(|t| t.coefficient * (-t.rate * s).exp2())
        .sum()
}

/// The instants in `(lo, hi)` (`hi` may be infinite) at which the sum of
/// `terms` changes sign, ascending: each the first instant (to f64
/// precision) with the new sign.
fn sign_changes(terms: &[Term], lo: f64, hi: f64) -> Vec<f64> {
    let terms = normalized(terms);
    // A constant, or one exponential: never changes sign.
    if terms.len() <= 1 {
        return Vec::new();
    }
    // The derivative (all but the constant term, each times −rate·ln 2):
    // the sum is monotone between its sign changes.
    let derivative: Vec<Term> = terms[1..]
        .iter()
        .map(|t| Term {
            coefficient: -t.coefficient * t.rate * std::f64::consts::LN_2,
            rate: t.rate,
        })
        .collect();
    let mut points = vec![lo];
    points.extend(sign_changes(&derivative, lo, hi));
    points.push(hi);
    let mut roots = Vec::new();
    // The last point with a sign (exact zeros, e.g. a touch, have none).
    let mut last: Option<(f64, f64)> = None;
    for &p in &points {
        let v = value(&terms, p);
        if v == 0.0 || v.is_nan() {
            continue;
        }
        if let Some((a, va)) = last {
            if va.signum() != v.signum() {
                if let Some(r) = bisect(&terms, a, va, p) {
                    roots.push(r);
                }
            }
        }
        last = Some((p, v));
    }
    roots
}

/// The instant in `(a, b]` at which the sum, of sign `va` at `a` and the
/// other sign at `b`, changes sign; `b` may be infinite (then `None` if the
/// change is beyond any time).
fn bisect(terms: &[Term], mut a: f64, va: f64, b: f64) -> Option<f64> {
    let mut b = b;
    if b == f64::INFINITY {
        // A finite bound with the limit's sign, doubling the distance.
        let mut d = 1.0f64;
        loop {
            b = a + d;
            if b > 1e19 {
                return None;
            }
            if value(terms, b).signum() != va.signum() && value(terms, b) != 0.0 {
                break;
            }
            d *= 2.0;
        }
    }
    for _ in 0..200 {
        let mid = a + (b - a) / 2.0;
        if mid <= a || mid >= b {
            break;
        }
        let v = value(terms, mid);
        if v != 0.0 && v.signum() == va.signum() {
            a = mid;
        } else {
            b = mid;
        }
    }
    Some(b)
}

/// When decay alone next changes the lead's band, seen from `from` (the
/// score stream's clock, at or after the lead's time); [`NEVER`] if it
/// never does (no decay, no engagement, or a fit that keeps the band).
pub fn band_deadline(lead: &Lead, model: &Model, from: Micros) -> Micros {
    let fit = lead.fit(model);
    let e = lead.engagement_at(model, from);
    let band = model.band(fit + e);
    if model.multi_rate() {
        // Rules decaying at several rates can move the total either way:
        // the first crossing of either bound of the band.
        let mut due = NEVER;
        for b in [band, band + 1] {
            if b > 0 && b < model.bands.len() {
                let bound = model.bands[b].at_least;
                due = due.min(first_change(lead, model, from, fit, bound, |total| {
                    at_least(total, bound)
                }));
            }
        }
        return due;
    }
    // Positive engagement decays down towards the band's lower bound;
    // negative engagement rises towards the next band's.
    let bound = if e > 0.0 && band > 0 {
        model.bands[band].at_least
    } else if e < 0.0 && band + 1 < model.bands.len() {
        model.bands[band + 1].at_least
    } else {
        return NEVER;
    };
    first_change(lead, model, from, fit, bound, |total| {
        at_least(total, bound)
    })
}

/// With `demote_on_score`: when decay alone takes the lead (an MQL) below
/// the requalification conditions of its track (new business: total below
/// the demotion threshold, or engagement below the MQL minimum; installed
/// base: engagement below its minimum); [`NEVER`] if it never does.
pub fn demotion_due(lead: &Lead, model: &Model) -> Micros {
    // Negative engagement only rises with decay: it never demotes (with
    // several rates a negative sum may still fall).
    if lead.engagement(model) <= 0.0 && !model.multi_rate() {
        return NEVER;
    }
    let track = lead.track(model);
    let min_e = track.mql_min_engagement;
    let by_engagement = first_change(lead, model, lead.time, 0.0, min_e, |e| at_least(e, min_e));
    match track.demotion_total {
        Some(d) => {
            let fit = lead.fit(model);
            by_engagement.min(first_change(lead, model, lead.time, fit, d, |t| {
                at_least(t, d)
            }))
        }
        None => by_engagement,
    }
}
