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
use crate::model::{at_least, Model, MAX_RATES, TOLERANCE};
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
    let mut terms = Terms::default();
    terms.push(Term {
        coefficient: base - (threshold - TOLERANCE),
        rate: 0.0,
    });
    for (&hl, &c) in model.half_lives.iter().zip(&sums) {
        terms.push(Term {
            coefficient: c,
            rate: hl.map_or(0.0, |h| 1.0 / h),
        });
    }
    let roots = sign_changes(terms.as_slice(), (from - lead.time) as f64, f64::INFINITY);
    let roots = roots.as_slice();
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
        // Up from just before the crossing: microsecond by microsecond to
        // just after it, then doubling in case rounding moved it further
        // (up to just before the next crossing, or ~1 s).
        let window_end = near.saturating_add(2);
        let limit = roots
            .get(k + 1)
            .and_then(|&r| micros_after(lead.time, r))
            .map_or(NEVER, |n| n.saturating_sub(2))
            .min(near.saturating_add(1 << 20))
            .max(window_end);
        let (mut lo, mut hi, mut step): (Micros, Micros, Micros) = (lo, lo + 1, 1);
        while hi <= limit && hi < NEVER {
            if changed(hi) {
                return first_in(lo, hi, &changed);
            }
            lo = hi;
            if hi >= window_end {
                step = step.saturating_mul(2);
            }
            hi = hi.saturating_add(step);
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
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Term {
    coefficient: f64,
    rate: f64,
}

/// At most this many items: a term per rate and the constant; a sum of
/// that many terms changes sign at most one time fewer.
const MAX_TERMS: usize = MAX_RATES + 1;

/// A short list on the stack (the search runs for every score record).
#[derive(Debug, Clone, Copy)]
struct Few<T: Copy + Default> {
    items: [T; MAX_TERMS],
    len: usize,
}

impl<T: Copy + Default> Default for Few<T> {
    fn default() -> Self {
        Few {
            items: [T::default(); MAX_TERMS],
            len: 0,
        }
    }
}

impl<T: Copy + Default> Few<T> {
    fn push(&mut self, t: T) {
        self.items[self.len] = t;
        self.len += 1;
    }

    fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }
}

type Terms = Few<Term>;

/// The terms of a sum with equal rates merged and zero coefficients
/// dropped, slowest rate first, all rates lowered by the slowest (the sum
/// times a positive factor: the same sign everywhere, the same crossings).
/// The first term is then the sum's limit as s grows.
fn normalized(terms: &[Term]) -> Terms {
    let mut out = Terms::default();
    for t in terms {
        match out.items[..out.len].iter_mut().find(|o| o.rate == t.rate) {
            Some(o) => o.coefficient += t.coefficient,
            None => out.push(*t),
        }
    }
    let mut kept = Terms::default();
    for t in out.as_slice() {
        if t.coefficient != 0.0 {
            kept.push(*t);
        }
    }
    let terms = &mut kept.items[..kept.len];
    terms.sort_unstable_by(|a, b| a.rate.total_cmp(&b.rate));
    if let Some(slowest) = terms.first().map(|t| t.rate) {
        for t in terms {
            t.rate -= slowest;
        }
    }
    kept
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
fn sign_changes(terms: &[Term], lo: f64, hi: f64) -> Few<f64> {
    let normal = normalized(terms);
    let terms = normal.as_slice();
    let mut roots = Few::default();
    // A constant, or one exponential: never changes sign.
    if terms.len() <= 1 {
        return roots;
    }
    // The derivative (all but the constant term, each times −rate·ln 2):
    // the sum is monotone between its sign changes.
    let mut derivative = Terms::default();
    for t in &terms[1..] {
        derivative.push(Term {
            coefficient: -t.coefficient * t.rate * std::f64::consts::LN_2,
            rate: t.rate,
        });
    }
    let mut points = Few::default();
    points.push(lo);
    for &p in sign_changes(derivative.as_slice(), lo, hi).as_slice() {
        points.push(p);
    }
    points.push(hi);
    // The last point with a sign (exact zeros, e.g. a touch, have none).
    let mut last: Option<(f64, f64)> = None;
    for &p in points.as_slice() {
        let v = value(terms, p);
        if v == 0.0 || v.is_nan() {
            continue;
        }
        if let Some((a, va)) = last {
            if va.signum() != v.signum() {
                if let Some(r) = bisect(terms, a, va, p) {
                    roots.push(r);
                }
            }
        }
        last = Some((p, v));
    }
    roots
}

/// An instant within a quarter of a microsecond after the one in `(a, b]`
/// at which the sum, of sign `va` at `a` and the other sign at `b`, changes
/// sign; `b` may be infinite (then `None` if the change is beyond any time).
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
    // To a quarter of a microsecond: the timer is then settled to the
    // microsecond in the engine's own arithmetic.
    for _ in 0..200 {
        let mid = a + (b - a) / 2.0;
        if b - a <= 0.25 || mid <= a || mid >= b {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Three rules in groups of half-lives 1 ms, 2.5 ms and none, and one
    /// outside any group (the model's 4 ms).
    const MODEL: &str = r#"
version = "rates"
[engagement]
half_life = "4ms"
[[engagement.groups]]
name = "fast"
half_life = "1ms"
[[engagement.groups]]
name = "mid"
half_life = "2.5ms"
[[engagement.groups]]
name = "kept"
half_life = "none"
[[engagement.rules]]
name = "a"
event = "a"
points = 1
group = "fast"
[[engagement.rules]]
name = "b"
event = "b"
points = 1
group = "mid"
[[engagement.rules]]
name = "c"
event = "c"
points = 1
[[engagement.rules]]
name = "d"
event = "d"
points = 1
group = "kept"
"#;

    /// Beyond this many microseconds after the lead's time no decaying
    /// term is worth more than 60 · 2^(−200000/4000) ≈ 5e-14: nothing
    /// crosses any more.
    const HORIZON: Micros = 200_000;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Uniform in [lo, hi).
        fn range(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// The first microsecond in (from, HORIZON] at which `holds` changes,
    /// microsecond by microsecond.
    fn brute(lead: &Lead, model: &Model, from: Micros, base: f64, bound: f64) -> Micros {
        let holds = |t: Micros| at_least(base + lead.engagement_at(model, t), bound);
        let start = holds(from);
        (from + 1..=lead.time + HORIZON)
            .find(|&t| holds(t) != start)
            .unwrap_or(NEVER)
    }

    fn lead_with(model: &Model, time: Micros, slots: &[f64]) -> Lead {
        let mut lead = Lead::new("L", model);
        lead.advance_time(time, model);
        for (i, &v) in slots.iter().enumerate() {
            lead.set_slot(i, v.to_bits());
        }
        lead
    }

    #[test]
    fn the_model_has_a_rate_per_half_life() {
        let m = Model::from_toml(MODEL).unwrap();
        assert_eq!(
            m.half_lives,
            [Some(4000.0), Some(1000.0), Some(2500.0), None]
        );
        let rates: Vec<usize> = m.engagement_rules.iter().map(|r| r.rate).collect();
        assert_eq!(rates, [1, 2, 0, 3]);
    }

    #[test]
    fn first_change_matches_a_microsecond_scan_on_random_sums() {
        let model = Model::from_toml(MODEL).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut crossed, mut not_first_root, mut rising_then_falling) = (0, 0, 0);
        for case in 0..300 {
            let time = 1_000_000;
            // Two to four components of either sign, some zero.
            let mut slots = [0.0; 4];
            for s in &mut slots {
                if !rng.next().is_multiple_of(4) {
                    *s = rng.range(-60.0, 60.0);
                }
            }
            if case % 2 == 1 {
                // Fast and slow parts of opposite signs: a sum that turns.
                slots[2] = if rng.next().is_multiple_of(2) {
                    1.0
                } else {
                    -1.0
                } * rng.range(5.0, 60.0);
                slots[0] = -slots[2].signum() * rng.range(20.0, 80.0);
            }
            let lead = lead_with(&model, time, &slots);
            let from = time + (rng.next() % 3000) as Micros;
            let base = rng.range(-20.0, 20.0);
            // A bound the sum passes, most of the time: between its values
            // at `from` and at the end, or its value at some instant to come
            // (a sum that turns passes that twice).
            let e_from = lead.engagement_at(&model, from);
            let e_end = lead.engagement_at(&model, time + HORIZON);
            let bound = if case % 2 == 0 {
                base + rng.range(e_from.min(e_end) - 10.0, e_from.max(e_end) + 10.0)
            } else {
                let t = from + (rng.next() % 8000) as Micros;
                base + lead.engagement_at(&model, t) + rng.range(-0.01, 0.01)
            };
            let want = brute(&lead, &model, from, base, bound);
            let got = first_change(&lead, &model, from, base, bound, |total| {
                at_least(total, bound)
            });
            assert_eq!(
                got, want,
                "case {case}: slots {slots:?}, from {from}, base {base}, bound {bound}"
            );
            if want != NEVER {
                crossed += 1;
                // The total turned before it crossed.
                let e: Vec<f64> = (0..=64)
                    .map(|i| lead.engagement_at(&model, from + (want - from) * i / 64))
                    .collect();
                let up = e.windows(2).any(|w| w[1] > w[0]);
                let down = e.windows(2).any(|w| w[1] < w[0]);
                if up && down {
                    rising_then_falling += 1;
                }
                if brute(&lead, &model, want, base, bound) != NEVER {
                    not_first_root += 1;
                }
            }
        }
        // The cases are not all trivial: many cross, some only after
        // turning, some cross again later.
        assert!(crossed > 100, "{crossed}");
        assert!(rising_then_falling > 5, "{rising_then_falling}");
        assert!(not_first_root > 5, "{not_first_root}");
    }

    #[test]
    fn a_rising_then_falling_sum_crosses_at_its_first_crossing() {
        // fast −40 (h 1 ms), c +50 (h 4 ms): with x = 2^(−s/4000) the sum is
        // 50x − 40x⁴: 10 at s = 0, rising to its peak where 160x³ = 50, i.e.
        // x³ = 5/16, s = 4000 · log2(16/5)/3 = 2237.6 µs, of 37.5x = 25.45,
        // then falling to 0.
        let model = Model::from_toml(MODEL).unwrap();
        let lead = lead_with(&model, 0, &[-40.0, 0.0, 50.0, 0.0]);
        let peak = 4000.0 * (16.0f64 / 5.0).log2() / 3.0;
        let holds = |t: f64| move |total: f64| at_least(total, t);
        // A bound of 20: crossed on the way up, before the peak...
        let up = first_change(&lead, &model, 0, 0.0, 20.0, holds(20.0));
        assert_eq!(up, brute(&lead, &model, 0, 0.0, 20.0));
        assert!(0 < up && (up as f64) < peak, "{up}");
        // ...and, seen from the peak on, on the way down.
        let down = first_change(&lead, &model, 2300, 0.0, 20.0, holds(20.0));
        assert_eq!(down, brute(&lead, &model, 2300, 0.0, 20.0));
        assert!((down as f64) > peak && down < NEVER, "{down}");
        // Seen from the start, a lower bound of 5 is crossed only on the
        // way down, long after the peak.
        let low = first_change(&lead, &model, 0, 0.0, 5.0, holds(5.0));
        assert_eq!(low, brute(&lead, &model, 0, 0.0, 5.0));
        assert!(low > down, "{low}");
        // A bound of 26 is never reached (the peak is 25.45).
        assert_eq!(
            first_change(&lead, &model, 0, 0.0, 26.0, holds(26.0)),
            NEVER
        );
    }

    #[test]
    fn sign_changes_of_a_sum_with_two_turns() {
        // Time in units of H = 1 s (1e6 µs); roots to a quarter of a µs.
        const H: f64 = 1e6;
        let t = |c: f64, r: f64| Term {
            coefficient: c,
            rate: r / H,
        };
        // 1 − 3·2^(−s) + 3·2^(−2s) − 2^(−3s) = (1 − 2^(−s))³, less 1/8:
        // (1 − x)³ = 1/8 at x = 1/2, i.e. s = 1 H; one crossing, though
        // the sum's derivative has three terms.
        let terms = [t(1.0 - 0.125, 0.0), t(-3.0, 1.0), t(3.0, 2.0), t(-1.0, 3.0)];
        let r = sign_changes(&terms, 0.0, f64::INFINITY);
        let r = r.as_slice();
        assert_eq!(r.len(), 1);
        assert!((r[0] - H).abs() <= 0.25, "{r:?}");
        // 2^(−s) − 2^(−2s) − 0.2: rises to 0.05 at s = 1 H, crosses 0
        // twice, where 2^(−s) = (1 ± √0.2)/2.
        let terms = [t(-0.2, 0.0), t(1.0, 1.0), t(-1.0, 2.0)];
        let r = sign_changes(&terms, 0.0, f64::INFINITY);
        let r = r.as_slice();
        let want =
            [(1.0 + 0.2f64.sqrt()) / 2.0, (1.0 - 0.2f64.sqrt()) / 2.0].map(|x| -x.log2() * H);
        assert_eq!(r.len(), 2, "{r:?}");
        for (a, b) in r.iter().zip(&want) {
            assert!(*a >= *b && a - b <= 0.25, "{r:?} vs {want:?}");
        }
        // From after the first crossing, only the second.
        assert_eq!(sign_changes(&terms, H, f64::INFINITY).as_slice().len(), 1);
    }
}
