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

use super::lead::{Lead, NEVER};
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

/// When decay alone next changes the lead's band, seen from `from` (the
/// score stream's clock, at or after the lead's time); [`NEVER`] if it
/// never does (no decay, no engagement, or a fit that keeps the band).
pub fn band_deadline(lead: &Lead, model: &Model, from: Micros) -> Micros {
    let fit = lead.fit(model);
    let e = lead.engagement_at(model, from);
    let band = model.band(fit + e);
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
    // Negative engagement only rises with decay: it never demotes.
    if lead.engagement(model) <= 0.0 {
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
