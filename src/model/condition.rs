//! The condition language of a model: one small language for every place a
//! model states a condition (MQL gates, the requalification "stays while"
//! rule, SQL conditions, disqualification rules, the free-mail exception).
//!
//! A condition is a TOML table with exactly one of:
//!
//! - a **field test**: `field = "industry"` and one test of a fit rule
//!   (`equals`, `contains`, `starts_with`, `ends_with`, `at_least`/`above`/
//!   `at_most`/`below` with `whole`, `is`, `exists`), on the lead's profile;
//! - `all = [ … ]`, `any = [ … ]` (lists of conditions), `not = { … }`;
//! - a **window** over the lead's engagement events of the last `within`
//!   (`"30d"`) of event time, at the lead's time `t` (events at `t − within`
//!   or before no longer count; the event at `t` does):
//!   - `events = { within, rules, at_least }`: how many events matched the
//!     engagement rules `rules` (every rule if omitted), scoring or not;
//!   - `touchpoints = { within, rules, at_least }`: how many *distinct*
//!     rules (kinds of touchpoint) matched at least one event;
//!   - `points = { within, rules, at_least }`: the points those rules
//!     scored, undecayed.
//!
//! Any condition may carry a `name`, shown in explanations and reasons.

use std::fmt::Write as _;

use super::file::{MatchFile, OneOrMany};
use super::matcher::{Matcher, ValueRef};
use super::{invalid, profile_field, EngagementRule, ModelError};
use crate::time::{parse_duration, Micros};

/// A window condition as written.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowFile {
    /// `"30d"`: how far back from the lead's time events count.
    pub within: String,
    /// Engagement rule names; every rule if omitted.
    pub rules: Option<Vec<String>>,
    pub at_least: f64,
}

/// A condition as written (see the module documentation).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionFile {
    pub name: Option<String>,
    pub field: Option<String>,
    pub equals: Option<OneOrMany>,
    pub contains: Option<OneOrMany>,
    pub starts_with: Option<OneOrMany>,
    pub ends_with: Option<OneOrMany>,
    pub at_least: Option<f64>,
    pub above: Option<f64>,
    pub at_most: Option<f64>,
    pub below: Option<f64>,
    pub whole: Option<bool>,
    pub is: Option<bool>,
    pub exists: Option<bool>,
    pub all: Option<Vec<ConditionFile>>,
    pub any: Option<Vec<ConditionFile>>,
    pub not: Option<Box<ConditionFile>>,
    pub events: Option<WindowFile>,
    pub touchpoints: Option<WindowFile>,
    pub points: Option<WindowFile>,
}

impl ConditionFile {
    fn matcher(&self) -> MatchFile {
        MatchFile {
            equals: self.equals.clone(),
            contains: self.contains.clone(),
            starts_with: self.starts_with.clone(),
            ends_with: self.ends_with.clone(),
            at_least: self.at_least,
            above: self.above,
            at_most: self.at_most,
            below: self.below,
            whole: self.whole,
            is: self.is,
            exists: self.exists,
        }
    }

    fn has_test(&self) -> bool {
        self.equals.is_some()
            || self.contains.is_some()
            || self.starts_with.is_some()
            || self.ends_with.is_some()
            || self.at_least.is_some()
            || self.above.is_some()
            || self.at_most.is_some()
            || self.below.is_some()
            || self.whole.is_some()
            || self.is.is_some()
            || self.exists.is_some()
    }
}

/// What a window condition measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Matching events.
    Events,
    /// Distinct rules matched.
    Touchpoints,
    /// Points scored, undecayed.
    Points,
}

impl Measure {
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Events => "events",
            Measure::Touchpoints => "touchpoints",
            Measure::Points => "points",
        }
    }
}

/// A window over the lead's engagement events.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub measure: Measure,
    pub within: Micros,
    /// `within` as written.
    pub within_text: String,
    /// Engagement rule indices, ascending.
    pub rules: Vec<usize>,
    pub at_least: f64,
}

impl Window {
    pub fn counts(&self, rule: usize) -> bool {
        self.rules.binary_search(&rule).is_ok()
    }
}

#[derive(Debug, Clone)]
pub enum Test {
    Field {
        field: String,
        /// `field`'s index in [`super::PROFILE_FIELDS`], if it is one.
        known: Option<u8>,
        matcher: Matcher,
    },
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Window(Window),
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub struct Condition {
    pub name: Option<String>,
    pub test: Test,
}

/// What a condition is evaluated against: a lead's profile and, for
/// windows, its engagement events.
pub trait Facts {
    fn field(&self, name: &str, known: Option<u8>) -> Option<ValueRef<'_>>;
    /// The window's value at the lead's time (a count, or points).
    fn window(&self, w: &Window) -> f64;
}

/// How deep `all`/`any`/`not` may nest.
const MAX_DEPTH: usize = 8;

impl Condition {
    /// Compiles a condition written at `key`. `windows`: whether window
    /// conditions are allowed there.
    pub fn compile(
        key: &str,
        f: &ConditionFile,
        rules: &[EngagementRule],
        windows: bool,
    ) -> Result<Condition, ModelError> {
        Condition::compile_at(key, f, rules, windows, 0)
    }

    fn compile_at(
        key: &str,
        f: &ConditionFile,
        rules: &[EngagementRule],
        windows: bool,
        depth: usize,
    ) -> Result<Condition, ModelError> {
        if depth > MAX_DEPTH {
            return Err(invalid(
                key,
                format!("conditions nest at most {MAX_DEPTH} deep"),
            ));
        }
        if let Some(n) = &f.name {
            if n.trim().is_empty() {
                return Err(invalid(format!("{key}.name"), "must not be empty"));
            }
        }
        let kinds = usize::from(f.field.is_some())
            + usize::from(f.all.is_some())
            + usize::from(f.any.is_some())
            + usize::from(f.not.is_some())
            + usize::from(f.events.is_some())
            + usize::from(f.touchpoints.is_some())
            + usize::from(f.points.is_some());
        if kinds != 1 {
            return Err(invalid(
                key,
                if kinds == 0 {
                    "needs one of: field (with a test), all, any, not, events, touchpoints, points"
                } else {
                    "has more than one of field, all, any, not, events, touchpoints, points; combine them with all or any"
                },
            ));
        }
        if f.field.is_none() && f.has_test() {
            return Err(invalid(
                key,
                "a test (equals, at_least, ...) needs a `field` to test",
            ));
        }
        let list = |v: &Vec<ConditionFile>, what: &str| -> Result<Vec<Condition>, ModelError> {
            if v.is_empty() {
                return Err(invalid(
                    format!("{key}.{what}"),
                    "needs at least one condition",
                ));
            }
            v.iter()
                .enumerate()
                .map(|(i, c)| {
                    Condition::compile_at(
                        &format!("{key}.{what}[{i}]"),
                        c,
                        rules,
                        windows,
                        depth + 1,
                    )
                })
                .collect()
        };
        let test = if let Some(field) = &f.field {
            if field.trim().is_empty() {
                return Err(invalid(format!("{key}.field"), "must not be empty"));
            }
            Test::Field {
                field: field.clone(),
                known: profile_field(field),
                matcher: Matcher::compile(key, f.matcher())?,
            }
        } else if let Some(v) = &f.all {
            Test::All(list(v, "all")?)
        } else if let Some(v) = &f.any {
            Test::Any(list(v, "any")?)
        } else if let Some(c) = &f.not {
            Test::Not(Box::new(Condition::compile_at(
                &format!("{key}.not"),
                c,
                rules,
                windows,
                depth + 1,
            )?))
        } else {
            let (measure, w) = [
                (Measure::Events, &f.events),
                (Measure::Touchpoints, &f.touchpoints),
                (Measure::Points, &f.points),
            ]
            .into_iter()
            .find_map(|(m, w)| w.as_ref().map(|w| (m, w)))
            .expect("one kind");
            let wkey = format!("{key}.{}", measure.as_str());
            if !windows {
                return Err(invalid(
                    wkey,
                    "window conditions are not allowed here: it depends on the profile only",
                ));
            }
            Test::Window(window(&wkey, measure, w, rules)?)
        };
        Ok(Condition {
            name: f.name.clone(),
            test,
        })
    }

    /// Whether the condition holds.
    pub fn holds(&self, facts: &impl Facts) -> bool {
        match &self.test {
            Test::Field {
                field,
                known,
                matcher,
            } => matcher.test(facts.field(field, *known)),
            Test::All(v) => v.iter().all(|c| c.holds(facts)),
            Test::Any(v) => v.iter().any(|c| c.holds(facts)),
            Test::Not(c) => !c.holds(facts),
            Test::Window(w) => super::at_least(facts.window(w), w.at_least),
        }
    }

    /// Calls `f` with every window in the condition.
    pub fn for_each_window<'a>(&'a self, f: &mut impl FnMut(&'a Window)) {
        match &self.test {
            Test::Field { .. } => {}
            Test::All(v) | Test::Any(v) => v.iter().for_each(|c| c.for_each_window(f)),
            Test::Not(c) => c.for_each_window(f),
            Test::Window(w) => f(w),
        }
    }

    /// A short text of the test, with rule names from `rules`: `industry
    /// equals one of ["food", "pharma"]`, `touchpoints in the last 30d >= 2
    /// of [webinar, demo]`.
    pub fn describe(&self, rules: &[EngagementRule]) -> String {
        match &self.test {
            Test::Field { field, matcher, .. } => format!("{field} {}", matcher.describe()),
            Test::All(v) => join("all of", v, rules),
            Test::Any(v) => join("any of", v, rules),
            Test::Not(c) => format!("not ({})", c.label(rules)),
            Test::Window(w) => {
                let mut s = format!(
                    "{} in the last {} >= {}",
                    w.measure.as_str(),
                    w.within_text,
                    w.at_least
                );
                if w.rules.len() < rules.len() {
                    s.push_str(" of ");
                    for (i, &r) in w.rules.iter().enumerate() {
                        if i > 0 {
                            s.push_str(", ");
                        }
                        let _ = write!(s, "{}", rules[r].name);
                    }
                }
                s
            }
        }
    }

    /// The name, or else the description.
    pub fn label(&self, rules: &[EngagementRule]) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => self.describe(rules),
        }
    }
}

fn join(head: &str, v: &[Condition], rules: &[EngagementRule]) -> String {
    let parts: Vec<String> = v.iter().map(|c| c.label(rules)).collect();
    format!("{head} ({})", parts.join("; "))
}

fn window(
    key: &str,
    measure: Measure,
    w: &WindowFile,
    rules: &[EngagementRule],
) -> Result<Window, ModelError> {
    let within = parse_duration(&w.within)
        .map_err(|e| invalid(format!("{key}.within"), format!("{:?}: {e}", w.within)))?;
    if within <= 0 {
        return Err(invalid(
            format!("{key}.within"),
            format!("{:?}: must be longer than zero", w.within),
        ));
    }
    let mut idx: Vec<usize> = match &w.rules {
        None => (0..rules.len()).collect(),
        Some(names) => {
            if names.is_empty() {
                return Err(invalid(
                    format!("{key}.rules"),
                    "needs at least one engagement rule name (or leave it out for every rule)",
                ));
            }
            names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    rules.iter().position(|r| r.name == *n).ok_or_else(|| {
                        invalid(
                            format!("{key}.rules[{i}]"),
                            format!("{n:?} is not the name of an engagement rule"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        }
    };
    idx.sort_unstable();
    idx.dedup();
    if idx.is_empty() {
        return Err(invalid(
            format!("{key}.rules"),
            "the model has no engagement rules to count",
        ));
    }
    let a = w.at_least;
    let ok = match measure {
        Measure::Events | Measure::Touchpoints => a.fract() == 0.0 && (1.0..=256.0).contains(&a),
        Measure::Points => a.is_finite() && a > 0.0,
    };
    if !ok {
        return Err(invalid(
            format!("{key}.at_least"),
            match measure {
                Measure::Points => "must be a finite number of points above 0",
                _ => "must be a whole number from 1 to 256",
            },
        ));
    }
    if measure == Measure::Touchpoints && a > idx.len() as f64 {
        return Err(invalid(
            format!("{key}.at_least"),
            format!(
                "{a} distinct rules can never match: the window counts {} rules",
                idx.len()
            ),
        ));
    }
    Ok(Window {
        measure,
        within,
        within_text: w.within.trim().to_string(),
        rules: idx,
        at_least: a,
    })
}

/// The competitor-name normal form: lower case; every character that is
/// not a letter or digit becomes a space; runs of spaces collapse; a last
/// word that is a legal form ([`LEGAL_FORMS`]) is dropped. "ACME B.V." and
/// "Acme bv" are both "acme"; "Acme-Tools GmbH" is "acme tools".
pub fn company_key(name: &str) -> String {
    let lower = name.to_lowercase();
    let mut words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    // "b v" (from "B.V.") is one legal form written with dots.
    let joined_tail = |words: &[&str], n: usize| -> String { words[words.len() - n..].concat() };
    for n in [3, 2, 1] {
        if words.len() > n && LEGAL_FORMS.contains(&joined_tail(&words, n).as_str()) {
            words.truncate(words.len() - n);
            break;
        }
    }
    words.join(" ")
}

/// Legal forms dropped from the end of a company name by [`company_key`]
/// (written without dots or spaces).
pub const LEGAL_FORMS: [&str; 22] = [
    "bv", "nv", "vof", "cv", "gmbh", "ag", "kg", "sa", "sas", "sarl", "srl", "spa", "ab", "as",
    "oy", "inc", "llc", "ltd", "plc", "corp", "co", "limited",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn company_names_normalise() {
        assert_eq!(company_key("ACME B.V."), "acme");
        assert_eq!(company_key("Acme bv"), "acme");
        assert_eq!(company_key("  acme   "), "acme");
        assert_eq!(company_key("Acme-Tools GmbH"), "acme tools");
        assert_eq!(company_key("Acme Tools"), "acme tools");
        assert_ne!(company_key("Acme Tools"), company_key("Acme"));
        // A name that is only a legal form keeps it.
        assert_eq!(company_key("B.V."), "b v");
        assert_eq!(company_key("Bäckerei Müller GmbH"), "bäckerei müller");
    }
}
