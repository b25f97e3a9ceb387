//! Window conditions on a lead: the engagement events it remembers for
//! them, their values at an instant, and the instant the next of them
//! changes value with time alone (a timer, like requalification's).
//!
//! Only a model with window conditions makes a lead remember events, and
//! only of the rules its windows count ([`crate::model::Windows::keep`]):
//! the most recent few per rule, newer than the longest window. A lead of
//! any other model keeps nothing and pays nothing.

use prost::encoding::encode_varint;

use super::lead::{Lead, NEVER};
use crate::model::{Condition, Facts, Measure, Model, ValueRef, Window};
use crate::time::Micros;

/// One engagement event a lead remembers for its windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub t: Micros,
    /// The engagement rule it matched.
    pub rule: u32,
    /// Whether the rule scored it (an `every` or `cap` rule may not).
    pub scored: bool,
}

/// The hits of a lead, oldest first (boxed in the lead's `Extra`, so that
/// it costs a lead of a model without windows one pointer there).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Log {
    pub hits: Vec<Hit>,
}

/// Remembers that `rule` matched an event at `t` (and whether it scored),
/// if a window of the model counts the rule; forgets what no window can
/// count any more.
pub(crate) fn record(lead: &mut Lead, model: &Model, rule: usize, t: Micros, scored: bool) {
    let w = &model.windows;
    let (any, scoring) = w.keep[rule];
    if any == 0 && (scoring == 0 || !scored) {
        return;
    }
    let now = lead.time;
    // Too old for the longest window already (a late event).
    if t <= now.saturating_sub(w.longest) {
        return;
    }
    let log = lead.log_mut();
    let at = log.partition_point(|h| h.t <= t);
    log.insert(
        at,
        Hit {
            t,
            rule: rule as u32,
            scored,
        },
    );
    prune(log, model, now);
}

/// Drops hits outside the longest window at `now`, and those beyond what
/// their rule keeps (newest first).
fn prune(log: &mut Vec<Hit>, model: &Model, now: Micros) {
    let w = &model.windows;
    let horizon = now.saturating_sub(w.longest);
    let mut seen: Vec<(u16, u16)> = vec![(0, 0); w.keep.len()];
    let mut keep = vec![false; log.len()];
    for (i, h) in log.iter().enumerate().rev() {
        if h.t <= horizon {
            break;
        }
        let r = h.rule as usize;
        let (any, scoring) = w.keep[r];
        let s = &mut seen[r];
        let mut k = false;
        if s.0 < any {
            s.0 += 1;
            k = true;
        }
        if h.scored && s.1 < scoring {
            s.1 += 1;
            k = true;
        }
        keep[i] = k;
    }
    let mut i = 0;
    log.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

/// Whether a hit at `t` is inside a window of length `within` at `at`:
/// `at − within < t ≤ at`.
#[inline]
fn inside(t: Micros, within: Micros, at: Micros) -> bool {
    t <= at && at.saturating_sub(within) < t
}

/// The window's value at `at`; `matched` gets the rules it counted.
pub(crate) fn value(lead: &Lead, model: &Model, w: &Window, at: Micros) -> (f64, Vec<usize>) {
    let mut matched: Vec<usize> = Vec::new();
    let mut v = 0.0;
    for h in lead.log() {
        let r = h.rule as usize;
        if !inside(h.t, w.within, at) || !w.counts(r) {
            continue;
        }
        match w.measure {
            Measure::Events => v += 1.0,
            Measure::Touchpoints => {}
            Measure::Points => {
                if !h.scored {
                    continue;
                }
                v += model.engagement_rules[r].points;
            }
        }
        if !matched.contains(&r) {
            matched.push(r);
        }
    }
    if w.measure == Measure::Touchpoints {
        v = matched.len() as f64;
    }
    matched.sort_unstable();
    (v, matched)
}

/// A lead's facts at an instant, for conditions.
pub(crate) struct LeadFacts<'a> {
    pub lead: &'a Lead,
    pub model: &'a Model,
    pub at: Micros,
}

impl Facts for LeadFacts<'_> {
    fn field(&self, name: &str, _known: Option<u8>) -> Option<ValueRef<'_>> {
        self.lead.profile_value(name)
    }

    fn window(&self, w: &Window) -> f64 {
        value(self.lead, self.model, w, self.at).0
    }
}

/// Whether every condition holds for the lead at its time.
pub(crate) fn all_hold(conds: &[Condition], lead: &Lead, model: &Model) -> bool {
    if conds.is_empty() {
        return true;
    }
    let facts = LeadFacts {
        lead,
        model,
        at: lead.time,
    };
    conds.iter().all(|c| c.holds(&facts))
}

/// The first instant after the lead's time at which a window of the model
/// changes value with time alone: when the oldest event inside it drops
/// out. [`NEVER`] without windows or events.
pub(crate) fn due(lead: &Lead, model: &Model) -> Micros {
    let now = lead.time;
    let mut due = NEVER;
    let log = lead.log();
    if log.is_empty() {
        return NEVER;
    }
    for w in &model.windows.list {
        if let Some(h) = log
            .iter()
            .find(|h| inside(h.t, w.within, now) && w.counts(h.rule as usize))
        {
            due = due.min(h.t.saturating_add(w.within));
        }
    }
    due
}

/// One line of an explanation: a condition, its value, whether it holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConditionLine {
    /// Where the condition is (`new_business.mql_gates[2]`).
    pub key: String,
    pub condition: String,
    /// What it found: the field's value, or the window's count or points
    /// and the rules it counted.
    pub value: String,
    pub holds: bool,
}

/// A condition's value, as text: `touchpoints in the last 30d: 2 of 2 —
/// webinar_attended, content_download`, `industry: "food"`.
pub(crate) fn value_text(c: &Condition, facts: &LeadFacts<'_>) -> String {
    use crate::model::Test;
    let model = facts.model;
    match &c.test {
        Test::Field { field, .. } => match facts.lead.profile_value(field) {
            None => format!("{field}: absent"),
            Some(ValueRef::Str(s)) => format!("{field}: {s:?}"),
            Some(ValueRef::Num(n)) => format!("{field}: {n}"),
            Some(ValueRef::Bool(b)) => format!("{field}: {b}"),
            Some(ValueRef::Other) => format!("{field}: <object or array>"),
        },
        Test::All(v) | Test::Any(v) => {
            let held = v.iter().filter(|c| c.holds(facts)).count();
            format!("{held} of {} hold", v.len())
        }
        Test::Not(inner) => value_text(inner, facts),
        Test::Window(w) => {
            let (v, matched) = value(facts.lead, model, w, facts.at);
            let mut s = format!(
                "{} in the last {}: {} of {}",
                w.measure.as_str(),
                w.within_text,
                super::stage::num(v),
                super::stage::num(w.at_least)
            );
            if !matched.is_empty() {
                s.push_str(" — ");
                let names: Vec<&str> = matched
                    .iter()
                    .map(|&r| model.engagement_rules[r].name.as_str())
                    .collect();
                s.push_str(&names.join(", "));
            }
            s
        }
    }
}

/// The lines of the conditions at `key`.
pub(crate) fn lines(key: &str, conds: &[Condition], facts: &LeadFacts<'_>) -> Vec<ConditionLine> {
    conds
        .iter()
        .enumerate()
        .map(|(i, c)| ConditionLine {
            key: format!("{key}[{i}]"),
            condition: c.label(&facts.model.engagement_rules),
            value: value_text(c, facts),
            holds: c.holds(facts),
        })
        .collect()
}

/// The conditions of `conds` that decide (hold, or fail when `failing`),
/// as reason texts: `gate sector`, `gate touchpoints: touchpoints in the
/// last 30d: 2 of 2 — webinar_attended, content_download`.
pub(crate) fn reasons(
    what: &str,
    conds: &[Condition],
    lead: &Lead,
    model: &Model,
    failing: bool,
) -> Vec<String> {
    let facts = LeadFacts {
        lead,
        model,
        at: lead.time,
    };
    conds
        .iter()
        .filter(|c| c.holds(&facts) != failing)
        .map(|c| {
            let label = c.label(&model.engagement_rules);
            // Profile values stay out of changes (they may be personal);
            // a window's count and rule names do not.
            let mut windowed = false;
            c.for_each_window(&mut |_| windowed = true);
            if windowed {
                format!("{what} {label}: {}", value_text(c, &facts))
            } else {
                format!("{what} {label}")
            }
        })
        .collect()
}

/// The log's snapshot body: the count, then each hit's time relative to
/// the lead's clock (zigzag varint), its rule (varint) and whether it
/// scored (a byte).
pub(crate) fn encode(lead: &Lead, out: &mut Vec<u8>) {
    let log = lead.log();
    encode_varint(log.len() as u64, out);
    for h in log {
        let rel = h.t.wrapping_sub(lead.time);
        encode_varint(((rel << 1) ^ (rel >> 63)) as u64, out);
        encode_varint(u64::from(h.rule), out);
        out.push(u8::from(h.scored));
    }
}

/// Reads a log written by [`encode`]; `None`: corrupt.
pub(crate) fn decode(mut b: &[u8], lead: &mut Lead, model: &Model) -> Option<()> {
    let n = prost::encoding::decode_varint(&mut b).ok()?;
    let mut hits = Vec::new();
    for _ in 0..n {
        let z = prost::encoding::decode_varint(&mut b).ok()?;
        let rel = ((z >> 1) as i64) ^ -((z & 1) as i64);
        let rule = u32::try_from(prost::encoding::decode_varint(&mut b).ok()?).ok()?;
        let (&scored, rest) = b.split_first()?;
        b = rest;
        if rule as usize >= model.engagement_rules.len() || scored > 1 {
            return None;
        }
        hits.push(Hit {
            t: lead.time.wrapping_add(rel),
            rule,
            scored: scored == 1,
        });
    }
    if !b.is_empty() || !hits.is_sorted_by_key(|h| h.t) {
        return None;
    }
    if !hits.is_empty() {
        *lead.log_mut() = hits;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::DAY;

    fn model() -> Model {
        Model::from_toml(
            "version = \"w\"\n\
             [[engagement.rules]]\nname = \"a\"\nevent = \"a\"\npoints = 5\n\
             [[engagement.rules]]\nname = \"b\"\nevent = \"b\"\npoints = 5\n\
             [[engagement.rules]]\nname = \"c\"\nevent = \"c\"\npoints = 5\n\
             [[new_business.mql_gates]]\nevents = { within = \"30d\", rules = [\"a\"], at_least = 2 }\n\
             [[new_business.mql_gates]]\ntouchpoints = { within = \"10d\", rules = [\"a\", \"b\"], at_least = 2 }\n",
        )
        .expect("valid")
    }

    fn hit(lead: &mut Lead, m: &Model, rule: usize, t: Micros) {
        lead.advance_time(t, m);
        record(lead, m, rule, t, true);
    }

    #[test]
    fn a_lead_keeps_only_what_its_windows_can_count() {
        let m = model();
        // a: counted by a window of 2 events → its 2 newest; b: by a
        // touchpoint window → its newest; c: by none → nothing.
        assert_eq!(m.windows.keep, [(2, 0), (1, 0), (0, 0)]);
        let mut lead = Lead::new("L", &m);
        for d in 0..5 {
            hit(&mut lead, &m, 0, d * DAY);
            hit(&mut lead, &m, 1, d * DAY);
            hit(&mut lead, &m, 2, d * DAY);
        }
        let kept: Vec<(u32, Micros)> = lead.log().iter().map(|h| (h.rule, h.t / DAY)).collect();
        assert_eq!(kept, [(0, 3), (0, 4), (1, 4)]);
        // At day 34 the a-hit of day 4 is 30 days old: out of every window;
        // the next record drops it and the day-3 one.
        hit(&mut lead, &m, 1, 34 * DAY);
        let kept: Vec<(u32, Micros)> = lead.log().iter().map(|h| (h.rule, h.t / DAY)).collect();
        assert_eq!(kept, [(1, 34)]);
    }

    #[test]
    fn the_next_change_is_when_the_oldest_counted_event_drops_out() {
        let m = model();
        let mut lead = Lead::new("L", &m);
        assert_eq!(due(&lead, &m), NEVER);
        hit(&mut lead, &m, 0, DAY);
        hit(&mut lead, &m, 1, 5 * DAY);
        // The touchpoint window (10d) loses the a-hit of day 1 at day 11;
        // the events window (30d) at day 31.
        assert_eq!(due(&lead, &m), 11 * DAY);
        lead.advance_time(11 * DAY, &m);
        // Then b's hit of day 5 leaves the touchpoint window at day 15.
        assert_eq!(due(&lead, &m), 15 * DAY);
        lead.advance_time(15 * DAY, &m);
        assert_eq!(due(&lead, &m), 31 * DAY);
        lead.advance_time(31 * DAY, &m);
        assert_eq!(due(&lead, &m), NEVER);
    }
}
