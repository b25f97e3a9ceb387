//! The scoring model: fit and disqualification rules on the profile,
//! engagement rules on events, thresholds, windows, routes and SLAs.
//!
//! A model is read from TOML ([`Model::from_toml`]), validated with errors
//! that name the key, and compiled into the form the engine uses on its hot
//! path (lower-cased needles, rules indexed by event type, a slot layout for
//! per-lead rule state). The default model of SPEC §1 is embedded.

mod calendar;
mod condition;
mod file;
mod matcher;

use std::collections::HashSet;
use std::hash::Hasher as _;
use std::path::Path;

pub use calendar::Calendar;
pub use condition::{company_key, Condition, Facts, Measure, Test, Window, LEGAL_FORMS};
pub use matcher::{lower as lower_text, Matcher, TextOp, ValueRef};

use crate::time::{parse_duration, Micros, DAY, HOUR};
use file::{ModelFile, TrackFile};

/// The default model's TOML, embedded in the binary.
pub const DEFAULT_MODEL_TOML: &str = include_str!("default.toml");

/// Thresholds are compared with this tolerance: a decayed score within 1e-9
/// of a threshold meets it.
pub const TOLERANCE: f64 = 1e-9;

/// How many bands a model may have.
pub const MAX_BANDS: usize = 255;

/// The profile fields SPEC §2 names, in a fixed order: a lead stores these
/// names as their index here, and a fit rule on one of them knows it.
pub const PROFILE_FIELDS: [&str; 7] = [
    "email",
    "company",
    "employees",
    "industry",
    "job_title",
    "country",
    "is_customer",
];

/// The index of `name` in [`PROFILE_FIELDS`].
#[inline]
pub fn profile_field(name: &str) -> Option<u8> {
    Some(match name {
        "email" => 0,
        "company" => 1,
        "employees" => 2,
        "industry" => 3,
        "job_title" => 4,
        "country" => 5,
        "is_customer" => 6,
        _ => return None,
    })
}

/// The most fit rules a model may have.
pub const MAX_FIT_RULES: usize = 64;

/// `a ≥ b`, within [`TOLERANCE`].
#[inline]
pub fn at_least(a: f64, b: f64) -> bool {
    a >= b - TOLERANCE
}

/// A model that did not load: which key, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("model is not valid TOML or has an unknown or mistyped key: {0}")]
    Toml(String),
    #[error("model key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ModelError {
    ModelError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// How long a follow-up may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sla {
    /// Elapsed time, whatever the calendar.
    Duration(Micros),
    /// Working days of the route's calendar (by default Monday to Friday
    /// after the change's day, same time of day, UTC).
    WorkingDays(u32),
    /// Business time of the route's calendar: only time within business
    /// hours on working days counts.
    BusinessHours(Micros),
}

impl Sla {
    pub fn parse(s: &str) -> Result<Sla, String> {
        let t = s.trim();
        for suffix in ["working days", "working day", "wd"] {
            if let Some(n) = t.strip_suffix(suffix) {
                return n.trim().parse::<u32>().map(Sla::WorkingDays).map_err(|_| {
                    format!("{s:?}: working days must be a whole number (e.g. \"3 working days\")")
                });
            }
        }
        for suffix in ["business hours", "business hour", "bh"] {
            if let Some(n) = t.strip_suffix(suffix) {
                return match n.trim().parse::<f64>() {
                    Ok(h) if h > 0.0 && h <= 1e6 => {
                        Ok(Sla::BusinessHours((h * HOUR as f64).round() as Micros))
                    }
                    _ => Err(format!(
                        "{s:?}: business hours must be a positive number (e.g. \"8 business hours\")"
                    )),
                };
            }
        }
        match parse_duration(t) {
            Ok(d) if d > 0 => Ok(Sla::Duration(d)),
            Ok(_) => Err(format!("{s:?}: must be longer than zero")),
            Err(e) => Err(format!(
                "{s:?}: {e}; or \"N working days\", or \"N business hours\""
            )),
        }
    }

    /// The follow-up deadline of a hand-off at `from`, on `calendar`.
    pub fn due(self, from: Micros, calendar: &Calendar) -> Micros {
        match self {
            Sla::Duration(d) => from.saturating_add(d),
            Sla::WorkingDays(n) => calendar.add_working_days(from, n),
            Sla::BusinessHours(d) => calendar.add_business_time(from, d),
        }
    }
}

/// Thresholds, route and SLAs of new business or of the installed base.
#[derive(Debug, Clone)]
pub struct Track {
    pub mql_min_total: Option<f64>,
    pub mql_min_fit: Option<f64>,
    pub mql_min_engagement: f64,
    /// Requalification keeps the lead while total ≥ this (and engagement ≥ the MQL minimum).
    pub demotion_total: Option<f64>,
    pub route: String,
    pub sla_sql: Sla,
    pub sla_hot_mql: Sla,
    pub sla_mql: Sla,
    /// Counts the working-day and business-hour SLAs.
    pub calendar: Calendar,
    /// Conditions that must all hold for an MQL, besides the thresholds.
    pub mql_gates: Vec<Condition>,
    /// Conditions that must all hold for requalification to keep the lead.
    pub stays_while: Vec<Condition>,
}

/// A fit rule on one profile field.
#[derive(Debug, Clone)]
pub struct FitRule {
    pub name: String,
    pub field: String,
    /// `field`'s index in [`PROFILE_FIELDS`], if it is one of them.
    pub known_field: Option<u8>,
    pub points: f64,
    /// Exclusive group index: the first matching rule of a group counts.
    pub group: Option<usize>,
    pub matcher: Matcher,
}

/// Disqualification rules (new business only).
#[derive(Debug, Clone, Default)]
pub struct Disqualify {
    pub min_employees: Option<f64>,
    pub free_mail_domains: HashSet<String>,
    pub allow_free_mail: bool,
    pub academic_domains: bool,
    pub job_title_contains: Vec<String>,
    pub competitor_domains: Vec<String>,
    /// Competitor company names, in [`company_key`] form.
    pub competitor_names: HashSet<String>,
    /// A free-mail address does not disqualify a lead for which this holds.
    pub free_mail_exception: Option<Condition>,
    /// Named profile conditions; any that holds disqualifies.
    pub rules: Vec<Condition>,
}

#[derive(Debug, Clone, Copy)]
pub struct Cap {
    pub max: u32,
    pub window: Micros,
    /// First of `max` timestamp slots.
    pub slot: usize,
}

/// An engagement rule: events of one type whose attributes pass the tests.
#[derive(Debug, Clone)]
pub struct EngagementRule {
    pub name: String,
    pub event: String,
    pub points: f64,
    pub attributes: Vec<(String, Matcher)>,
    /// Every Nth occurrence scores; the counter lives in `counter_slot`.
    pub every: Option<(u32, usize)>,
    pub cap: Option<Cap>,
    /// Index into [`Model::engagement_groups`].
    pub group: Option<usize>,
    /// Index into [`Model::half_lives`]: the rate the rule's contribution
    /// decays with (0: `[engagement] half_life`).
    pub rate: usize,
}

/// Engagement rules whose contributions together are limited, or decay
/// with a half-life of their own.
#[derive(Debug, Clone)]
pub struct EngagementGroup {
    pub name: String,
    pub limit: Option<f64>,
    /// The group's half-life (microseconds, `None`: no decay), if it sets
    /// one; its rules decay with `[engagement] half_life` otherwise.
    pub half_life: Option<Option<f64>>,
    /// The rules of the group, ascending.
    pub rules: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Band {
    pub name: String,
    pub at_least: f64,
}

/// The window conditions of a model, and what a lead remembers of its
/// engagement events for them (nothing, for a model without any).
#[derive(Debug, Clone, Default)]
pub struct Windows {
    /// Every window of the stage conditions (gates, stays_while, SQL).
    pub list: Vec<Window>,
    /// The longest `within`.
    pub longest: Micros,
    /// Per engagement rule: how many of its most recent matching events,
    /// and how many of its most recent scoring events, a lead keeps (0, 0:
    /// the rule is in no window).
    pub keep: Vec<(u16, u16)>,
}

/// Scoring events of one rule a lead remembers at most for a `points`
/// window of a rule with points ≤ 0 (a positive rule needs only as many as
/// reach the window's `at_least`).
pub const MAX_KEPT_EVENTS: u16 = 256;

impl Windows {
    fn of(list: Vec<Window>, rules: &[EngagementRule]) -> Windows {
        let mut keep = vec![(0u16, 0u16); rules.len()];
        for w in &list {
            for &r in &w.rules {
                let k = &mut keep[r];
                match w.measure {
                    Measure::Events => k.0 = k.0.max(w.at_least as u16),
                    Measure::Touchpoints => k.0 = k.0.max(1),
                    Measure::Points => {
                        let p = rules[r].points;
                        let n = if p > 0.0 {
                            ((w.at_least / p).ceil() as u16).clamp(1, MAX_KEPT_EVENTS)
                        } else {
                            MAX_KEPT_EVENTS
                        };
                        k.1 = k.1.max(n);
                    }
                }
            }
        }
        Windows {
            longest: list.iter().map(|w| w.within).max().unwrap_or(0),
            list,
            keep,
        }
    }

    /// Whether the model has window conditions (leads remember events).
    #[inline]
    pub fn any(&self) -> bool {
        !self.list.is_empty()
    }
}

/// At most this many distinct half-lives in one model.
pub const MAX_RATES: usize = 8;

/// A validated, compiled model.
#[derive(Debug, Clone)]
pub struct Model {
    pub version: String,
    /// `[engagement] half_life` in microseconds; `None`: engagement does
    /// not decay. The half-life of every rule outside a group that sets one.
    pub half_life: Option<f64>,
    /// The distinct half-lives of the engagement rules, `half_life` first
    /// (at most [`MAX_RATES`]); a model whose groups set none has only it.
    pub half_lives: Vec<Option<f64>>,
    pub fit_rules: Vec<FitRule>,
    pub fit_groups: usize,
    pub disqualify: Disqualify,
    pub engagement_rules: Vec<EngagementRule>,
    /// Groups of engagement rules with a score limit.
    pub engagement_groups: Vec<EngagementGroup>,
    /// The limit on engagement as a whole.
    pub engagement_limit: Option<f64>,
    /// Whether there is any limit (the whole's or a group's).
    limited: bool,
    /// Event type → indices of the rules that score it.
    by_type: Vec<(String, Vec<usize>)>,
    pub bands: Vec<Band>,
    pub hot_band: usize,
    /// Criteria that must all be known true for the criteria rule (≤ 32).
    pub criteria: Vec<String>,
    /// Conditions that must all hold (with the criteria) for the criteria rule.
    pub sql_conditions: Vec<Condition>,
    /// What the windows of the model's conditions need a lead to remember.
    pub windows: Windows,
    pub new_business: Track,
    pub installed_base: Track,
    pub mql_window: Micros,
    pub sql_window: Micros,
    pub quiet_period: Micros,
    /// `requalify.demote_on_score`: an MQL that stops meeting the
    /// requalification conditions goes home at once, not at its deadline.
    pub demote_on_score: bool,
    /// The score stream writes a lead's record again once its total has
    /// moved this much (points) since the last record.
    pub score_min_delta: f64,
    /// `[retention]`: when quiet leads are removed, and how long an
    /// erasure's marker drops the lead's events.
    pub retention: Retention,
    /// Per-lead rule state: one contribution per engagement rule, then
    /// counters and cap timestamps.
    pub slots: usize,
    /// Identifies the slot layout, so state written under another layout is refused.
    pub layout_id: u64,
}

impl Model {
    /// The default model of SPEC §1.
    pub fn default_model() -> Model {
        Model::from_toml(DEFAULT_MODEL_TOML).expect("the embedded default model is valid")
    }

    pub fn from_path(path: &Path) -> Result<Model, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Model::from_toml(&text)
    }

    pub fn from_toml(text: &str) -> Result<Model, ModelError> {
        let file: ModelFile = toml::from_str(text).map_err(|e| ModelError::Toml(e.to_string()))?;
        compile(file)
    }

    /// How many conditions the model states (gates, stays_while, SQL
    /// conditions, disqualification rules, the free-mail exception).
    pub fn condition_count(&self) -> usize {
        [&self.new_business, &self.installed_base]
            .iter()
            .map(|t| t.mql_gates.len() + t.stays_while.len())
            .sum::<usize>()
            + self.sql_conditions.len()
            + self.disqualify.rules.len()
            + usize::from(self.disqualify.free_mail_exception.is_some())
    }

    /// Whether engagement has limits (a group's or the whole's).
    #[inline]
    pub fn has_limits(&self) -> bool {
        self.limited
    }

    /// Whether rules decay at different rates (a group sets a half-life
    /// other than `[engagement] half_life`).
    #[inline]
    pub fn multi_rate(&self) -> bool {
        self.half_lives.len() > 1
    }

    /// The half-life of an engagement rule (microseconds; `None`: no decay).
    #[inline]
    pub fn rule_half_life(&self, rule: usize) -> Option<f64> {
        self.half_lives[self.engagement_rules[rule].rate]
    }

    /// Indices of the engagement rules for an event type.
    #[inline]
    pub fn rules_for(&self, event_type: &str) -> &[usize] {
        for (t, rules) in &self.by_type {
            if t == event_type {
                return rules;
            }
        }
        &[]
    }

    pub fn criterion_index(&self, name: &str) -> Option<usize> {
        self.criteria.iter().position(|c| c == name)
    }

    /// Bit mask with one bit per required criterion.
    pub fn criteria_mask(&self) -> u32 {
        if self.criteria.len() == 32 {
            u32::MAX
        } else {
            (1u32 << self.criteria.len()) - 1
        }
    }

    /// The band a total falls in.
    pub fn band(&self, total: f64) -> usize {
        let mut b = 0;
        for (i, band) in self.bands.iter().enumerate().skip(1) {
            if at_least(total, band.at_least) {
                b = i;
            }
        }
        b
    }

    pub fn track(&self, installed_base: bool) -> &Track {
        if installed_base {
            &self.installed_base
        } else {
            &self.new_business
        }
    }
}

/// How leads are forgotten (`[retention]` in the model file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// A lead with no event for this long is removed (`lead_expired`);
    /// `None`: leads are kept for ever.
    pub inactive_after: Option<Micros>,
    /// The installed base is exempt from `inactive_after`.
    pub keep_customers: bool,
    /// Events of an erased lead up to this long after the erasure's time
    /// are dropped.
    pub erasure_window: Micros,
}

fn retention(f: &file::RetentionFile) -> Result<Retention, ModelError> {
    let inactive_after = match f.inactive_after.as_deref() {
        None | Some("none") => None,
        Some(s) => Some(duration("retention.inactive_after", Some(s), 0, false)?),
    };
    if f.keep_customers && inactive_after.is_none() {
        return Err(invalid(
            "retention.keep_customers",
            "exempts customers from retention.inactive_after, which is not set",
        ));
    }
    Ok(Retention {
        inactive_after,
        keep_customers: f.keep_customers,
        erasure_window: duration(
            "retention.erasure_window",
            f.erasure_window.as_deref(),
            30 * DAY,
            true,
        )?,
    })
}

fn duration(
    key: &str,
    v: Option<&str>,
    default: Micros,
    allow_zero: bool,
) -> Result<Micros, ModelError> {
    let Some(s) = v else { return Ok(default) };
    let d = parse_duration(s).map_err(|e| invalid(key, format!("{s:?}: {e}")))?;
    if d < 0 || (d == 0 && !allow_zero) {
        return Err(invalid(key, format!("{s:?}: must be longer than zero")));
    }
    Ok(d)
}

fn finite(key: &str, v: f64) -> Result<f64, ModelError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(invalid(key, "must be a finite number"))
    }
}

fn opt_finite(key: &str, v: Option<f64>) -> Result<Option<f64>, ModelError> {
    v.map(|v| finite(key, v)).transpose()
}

fn nonempty(key: &str, s: &str) -> Result<(), ModelError> {
    if s.trim().is_empty() {
        Err(invalid(key, "must not be empty"))
    } else {
        Ok(())
    }
}

/// An attribute name, or a dotted path into nested objects
/// (`context.campaign.source`): no empty segment.
fn attribute_path(key: &str, path: &str) -> Result<(), ModelError> {
    if path.is_empty() {
        return Err(invalid(key, "an attribute name must not be empty"));
    }
    if path.split('.').any(str::is_empty) {
        return Err(invalid(
            key,
            "a dotted attribute path must not start or end with a dot, nor have two dots in a row",
        ));
    }
    Ok(())
}

struct TrackDefaults {
    route: &'static str,
    sla_sql: Sla,
    sla_hot_mql: Sla,
    sla_mql: Sla,
}

fn calendar(prefix: &str, f: Option<&file::CalendarFile>) -> Result<Calendar, ModelError> {
    match f {
        None => Ok(Calendar::default()),
        Some(f) => Calendar::compile(prefix, f).map_err(|(key, problem)| invalid(key, problem)),
    }
}

fn track(
    prefix: &str,
    f: TrackFile,
    d: TrackDefaults,
    shared: &Calendar,
    rules: &[EngagementRule],
) -> Result<Track, ModelError> {
    let key = |k: &str| format!("{prefix}.{k}");
    let mql_gates = conditions(&key("mql_gates"), &f.mql_gates, rules, true)?;
    let stays_while = conditions(&key("stays_while"), &f.stays_while, rules, true)?;
    let sla = |k: &str, v: &Option<String>, default: Sla| -> Result<Sla, ModelError> {
        match v.as_ref().or(f.sla.as_ref()) {
            None => Ok(default),
            Some(s) => {
                Sla::parse(s).map_err(|p| invalid(key(if v.is_some() { k } else { "sla" }), p))
            }
        }
    };
    let route = f.route.clone().unwrap_or_else(|| d.route.to_string());
    nonempty(&key("route"), &route)?;
    let mql_min_engagement =
        opt_finite(&key("mql_min_engagement"), f.mql_min_engagement)?.unwrap_or(0.0);
    let mql_min_total = opt_finite(&key("mql_min_total"), f.mql_min_total)?;
    Ok(Track {
        mql_min_fit: opt_finite(&key("mql_min_fit"), f.mql_min_fit)?,
        demotion_total: opt_finite(&key("demotion_total"), f.demotion_total)?.or(mql_min_total),
        mql_min_total,
        mql_min_engagement,
        sla_sql: sla("sla_sql", &f.sla_sql, d.sla_sql)?,
        sla_hot_mql: sla("sla_hot_mql", &f.sla_hot_mql, d.sla_hot_mql)?,
        sla_mql: sla("sla_mql", &f.sla_mql, d.sla_mql)?,
        calendar: match &f.calendar {
            Some(c) => calendar(&key("calendar"), Some(c))?,
            None => shared.clone(),
        },
        route,
        mql_gates,
        stays_while,
    })
}

/// A list of conditions written at `key` (`key[i]` each).
fn conditions(
    key: &str,
    v: &[condition::ConditionFile],
    rules: &[EngagementRule],
    windows: bool,
) -> Result<Vec<Condition>, ModelError> {
    v.iter()
        .enumerate()
        .map(|(i, c)| Condition::compile(&format!("{key}[{i}]"), c, rules, windows))
        .collect()
}

/// FNV-1a 64 of `bytes`, continuing from `h`: a hash that is the same in
/// every build, as the slot layout id (kept in the changelog) must be.
fn fnv(bytes: &[u8], h: u64) -> u64 {
    let mut hasher = fnv::FnvHasher::with_key(h);
    hasher.write(bytes);
    hasher.finish()
}

fn compile(f: ModelFile) -> Result<Model, ModelError> {
    nonempty("version", &f.version)?;
    let mut names = HashSet::new();

    // Fit.
    let mut groups: Vec<String> = Vec::new();
    let mut fit_rules = Vec::with_capacity(f.fit.rules.len());
    if f.fit.rules.len() > MAX_FIT_RULES {
        return Err(invalid(
            "fit.rules",
            format!(
                "{} rules; at most {MAX_FIT_RULES} (a lead keeps which ones match as bits)",
                f.fit.rules.len()
            ),
        ));
    }
    for (i, r) in f.fit.rules.iter().enumerate() {
        let k = |s: &str| format!("fit.rules[{i}].{s}");
        nonempty(&k("name"), &r.name)?;
        if !names.insert(r.name.clone()) {
            return Err(invalid(
                k("name"),
                format!("{:?} is used by another rule", r.name),
            ));
        }
        nonempty(&k("field"), &r.field)?;
        finite(&k("points"), r.points)?;
        if groups.len() >= 64 && r.group.as_ref().is_some_and(|g| !groups.contains(g)) {
            return Err(invalid(k("group"), "at most 64 exclusive groups"));
        }
        let group = r.group.as_ref().map(|g| {
            groups.iter().position(|x| x == g).unwrap_or_else(|| {
                groups.push(g.clone());
                groups.len() - 1
            })
        });
        fit_rules.push(FitRule {
            name: r.name.clone(),
            field: r.field.clone(),
            known_field: profile_field(&r.field),
            points: r.points,
            group,
            matcher: Matcher::compile(&format!("fit.rules[{i}]"), r.matcher())?,
        });
    }

    // Engagement.
    let half_life = match f.engagement.half_life.as_deref() {
        Some("none") => None,
        other => Some(duration("engagement.half_life", other, 30 * DAY, false)? as f64),
    };
    let limit = |key: &str, v: Option<f64>| -> Result<Option<f64>, ModelError> {
        match v {
            Some(l) if !(l.is_finite() && l > 0.0) => {
                Err(invalid(key, "must be a finite number of points above 0"))
            }
            v => Ok(v),
        }
    };
    let engagement_limit = limit("engagement.limit", f.engagement.limit)?;
    let mut engagement_groups: Vec<EngagementGroup> = Vec::new();
    let mut half_lives = vec![half_life];
    for (i, g) in f.engagement.groups.iter().enumerate() {
        let k = |s: &str| format!("engagement.groups[{i}].{s}");
        nonempty(&k("name"), &g.name)?;
        if engagement_groups.iter().any(|x| x.name == g.name) {
            return Err(invalid(
                k("name"),
                format!("{:?} is used by another group", g.name),
            ));
        }
        let own_half_life = match g.half_life.as_deref() {
            None => None,
            Some("none") => Some(None),
            Some(s) => Some(Some(duration(&k("half_life"), Some(s), 0, false)? as f64)),
        };
        engagement_groups.push(EngagementGroup {
            name: g.name.clone(),
            limit: limit(&k("limit"), g.limit)?,
            half_life: own_half_life,
            rules: Vec::new(),
        });
    }
    let n = f.engagement.rules.len();
    let mut slots = n;
    let mut layout = fnv(b"leadscore-slots-v1", 0xcbf2_9ce4_8422_2325);
    let mut engagement_rules = Vec::with_capacity(n);
    let mut by_type: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, r) in f.engagement.rules.into_iter().enumerate() {
        let k = |s: &str| format!("engagement.rules[{i}].{s}");
        nonempty(&k("name"), &r.name)?;
        if !names.insert(r.name.clone()) {
            return Err(invalid(
                k("name"),
                format!("{:?} is used by another rule", r.name),
            ));
        }
        nonempty(&k("event"), &r.event)?;
        finite(&k("points"), r.points)?;
        let every = match r.every {
            None => None,
            Some(0) => return Err(invalid(k("every"), "must be at least 1")),
            Some(e) => {
                slots += 1;
                Some((e, slots - 1))
            }
        };
        let cap = match r.cap {
            None => None,
            Some(c) => {
                if c.max == 0 || c.max > 64 {
                    return Err(invalid(k("cap.max"), "must be between 1 and 64"));
                }
                let window = duration(&k("cap.window"), Some(&c.window), 0, false)?;
                slots += c.max as usize;
                Some(Cap {
                    max: c.max,
                    window,
                    slot: slots - c.max as usize,
                })
            }
        };
        let mut attributes = Vec::new();
        for (name, m) in r.attributes {
            attribute_path(&k(&format!("attributes.{name:?}")), &name)?;
            let m = Matcher::compile(&k(&format!("attributes.{name}")), m)?;
            attributes.push((name, m));
        }
        layout = fnv(&(every.map_or(0, |e| e.0) as u64).to_le_bytes(), layout);
        layout = fnv(&(cap.map_or(0, |c| c.max) as u64).to_le_bytes(), layout);
        let group = match &r.group {
            None => None,
            Some(g) => {
                let gi = engagement_groups
                    .iter()
                    .position(|x| x.name == *g)
                    .ok_or_else(|| {
                        invalid(
                            k("group"),
                            format!("{g:?} is not the name of an [[engagement.groups]] entry"),
                        )
                    })?;
                engagement_groups[gi].rules.push(i);
                Some(gi)
            }
        };
        match by_type.iter_mut().find(|(t, _)| *t == r.event) {
            Some((_, v)) => v.push(i),
            None => by_type.push((r.event.clone(), vec![i])),
        }
        // The first rule of a group with a half-life of its own adds its rate.
        let rate = match group.and_then(|g| Some((g, engagement_groups[g].half_life?))) {
            None => 0,
            Some((g, hl)) => match half_lives.iter().position(|&x| x == hl) {
                Some(r) => r,
                None if half_lives.len() == MAX_RATES => {
                    return Err(invalid(
                        format!("engagement.groups[{g}].half_life"),
                        format!("at most {MAX_RATES} distinct half-lives in a model"),
                    ))
                }
                None => {
                    half_lives.push(hl);
                    half_lives.len() - 1
                }
            },
        };
        engagement_rules.push(EngagementRule {
            name: r.name,
            event: r.event,
            points: r.points,
            attributes,
            every,
            cap,
            group,
            rate,
        });
    }
    layout = fnv(&(n as u64).to_le_bytes(), layout);

    // Disqualification.
    let d = f.disqualify;
    let lower = |v: Vec<String>, key: &str| -> Result<Vec<String>, ModelError> {
        v.into_iter()
            .enumerate()
            .map(|(i, s)| {
                nonempty(&format!("disqualify.{key}[{i}]"), &s)?;
                Ok(s.trim().to_lowercase())
            })
            .collect()
    };
    let disqualify = Disqualify {
        min_employees: opt_finite("disqualify.min_employees", d.min_employees)?,
        free_mail_domains: lower(d.free_mail_domains, "free_mail_domains")?
            .into_iter()
            .collect(),
        allow_free_mail: d.allow_free_mail,
        academic_domains: d.academic_domains,
        job_title_contains: lower(d.job_title_contains, "job_title_contains")?,
        competitor_domains: lower(d.competitor_domains, "competitor_domains")?,
        competitor_names: d
            .competitor_names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let k = company_key(n);
                if k.is_empty() {
                    Err(invalid(
                        format!("disqualify.competitor_names[{i}]"),
                        "must have a letter or digit",
                    ))
                } else {
                    Ok(k)
                }
            })
            .collect::<Result<_, _>>()?,
        free_mail_exception: d
            .free_mail_exception
            .as_ref()
            .map(|c| {
                Condition::compile(
                    "disqualify.free_mail_exception",
                    c,
                    &engagement_rules,
                    false,
                )
            })
            .transpose()?,
        rules: {
            let rules = conditions("disqualify.rules", &d.rules, &engagement_rules, false)?;
            for (i, r) in rules.iter().enumerate() {
                if r.name.is_none() {
                    return Err(invalid(
                        format!("disqualify.rules[{i}].name"),
                        "is required: it is the reason the lead is disqualified",
                    ));
                }
            }
            rules
        },
    };

    // Bands.
    let bands_in = if f.bands.is_empty() {
        vec![
            file::BandFile {
                name: "cold".into(),
                at_least: None,
            },
            file::BandFile {
                name: "warm".into(),
                at_least: Some(50.0),
            },
            file::BandFile {
                name: "hot".into(),
                at_least: Some(75.0),
            },
        ]
    } else {
        f.bands
    };
    if bands_in.len() > MAX_BANDS {
        return Err(invalid(
            "bands",
            format!(
                "{} bands; at most {MAX_BANDS} (a lead remembers the band of its last score record in a byte)",
                bands_in.len()
            ),
        ));
    }
    let mut bands: Vec<Band> = Vec::new();
    for (i, b) in bands_in.into_iter().enumerate() {
        let k = |s: &str| format!("bands[{i}].{s}");
        nonempty(&k("name"), &b.name)?;
        if bands.iter().any(|x| x.name == b.name) {
            return Err(invalid(
                k("name"),
                format!("{:?} is used by another band", b.name),
            ));
        }
        let at =
            match (i, b.at_least) {
                (0, None) => f64::NEG_INFINITY,
                (0, Some(_)) => return Err(invalid(
                    k("at_least"),
                    "the first band takes every total below the next one and has no lower bound",
                )),
                (_, None) => {
                    return Err(invalid(
                        k("at_least"),
                        "is required for every band after the first",
                    ))
                }
                (_, Some(v)) => finite(&k("at_least"), v)?,
            };
        if let Some(prev) = bands.last() {
            if at <= prev.at_least {
                return Err(invalid(
                    k("at_least"),
                    "bands must be in ascending order of at_least",
                ));
            }
        }
        bands.push(Band {
            name: b.name,
            at_least: at,
        });
    }
    let hot_name = f
        .hot_band
        .unwrap_or_else(|| bands.last().map(|b| b.name.clone()).unwrap_or_default());
    let hot_band = bands
        .iter()
        .position(|b| b.name == hot_name)
        .ok_or_else(|| {
            invalid(
                "hot_band",
                format!("{hot_name:?} is not the name of a band"),
            )
        })?;

    let sql_conditions = conditions("sql.conditions", &f.sql.conditions, &engagement_rules, true)?;

    // SQL criteria.
    if f.sql.criteria.len() > 32 {
        return Err(invalid("sql.criteria", "at most 32 criteria"));
    }
    for (i, c) in f.sql.criteria.iter().enumerate() {
        nonempty(&format!("sql.criteria[{i}]"), c)?;
        if f.sql.criteria[..i].contains(c) {
            return Err(invalid(
                format!("sql.criteria[{i}]"),
                format!("{c:?} is listed twice"),
            ));
        }
    }

    let shared = calendar("calendar", f.calendar.as_ref())?;
    let score_min_delta = match f.score_min_delta {
        None => 1.0,
        Some(d) if d.is_finite() && d >= 0.0 => d,
        Some(_) => {
            return Err(invalid(
                "score_min_delta",
                "must be a finite number of points, 0 or more",
            ))
        }
    };

    let new_business = track(
        "new_business",
        f.new_business,
        TrackDefaults {
            route: "new_business",
            sla_sql: Sla::Duration(24 * HOUR),
            sla_hot_mql: Sla::Duration(24 * HOUR),
            sla_mql: Sla::WorkingDays(3),
        },
        &shared,
        &engagement_rules,
    )?;
    let installed_base = track(
        "installed_base",
        f.installed_base,
        TrackDefaults {
            route: "account_management",
            sla_sql: Sla::Duration(4 * HOUR),
            sla_hot_mql: Sla::Duration(4 * HOUR),
            sla_mql: Sla::Duration(4 * HOUR),
        },
        &shared,
        &engagement_rules,
    )?;

    if f.requalify.demote_on_score {
        for (name, t) in [
            ("new_business", &new_business),
            ("installed_base", &installed_base),
        ] {
            if let (Some(d), Some(m)) = (t.demotion_total, t.mql_min_total) {
                if d > m {
                    return Err(invalid(
                        format!("{name}.demotion_total"),
                        format!("{d} is above mql_min_total {m}: with requalify.demote_on_score a new MQL would be demoted at its next event"),
                    ));
                }
            }
        }
    }

    let mut windows = Vec::new();
    for c in new_business
        .mql_gates
        .iter()
        .chain(&new_business.stays_while)
        .chain(&installed_base.mql_gates)
        .chain(&installed_base.stays_while)
        .chain(&sql_conditions)
    {
        c.for_each_window(&mut |w| {
            if !windows.contains(w) {
                windows.push(w.clone());
            }
        });
    }
    let windows = Windows::of(windows, &engagement_rules);

    Ok(Model {
        version: f.version,
        half_life,
        half_lives,
        fit_rules,
        fit_groups: groups.len(),
        disqualify,
        engagement_rules,
        limited: engagement_limit.is_some() || engagement_groups.iter().any(|g| g.limit.is_some()),
        engagement_groups,
        engagement_limit,
        by_type,
        bands,
        hot_band,
        criteria: f.sql.criteria,
        sql_conditions,
        windows,
        new_business,
        installed_base,
        mql_window: duration(
            "requalify.mql_window",
            f.requalify.mql_window.as_deref(),
            30 * DAY,
            false,
        )?,
        sql_window: duration(
            "requalify.sql_window",
            f.requalify.sql_window.as_deref(),
            90 * DAY,
            false,
        )?,
        quiet_period: duration(
            "requalify.quiet_period",
            f.requalify.quiet_period.as_deref(),
            14 * DAY,
            true,
        )?,
        demote_on_score: f.requalify.demote_on_score,
        score_min_delta,
        retention: retention(&f.retention)?,
        slots,
        layout_id: fnv(&(slots as u64).to_le_bytes(), layout),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_field_codes_are_positions_in_profile_fields() {
        // Leads store these codes (in memory and in the changelog).
        for (i, name) in PROFILE_FIELDS.iter().enumerate() {
            assert_eq!(profile_field(name), Some(i as u8), "{name}");
        }
        assert_eq!(profile_field("Email"), None);
        assert_eq!(profile_field("segment"), None);
    }

    #[test]
    fn default_model_loads_with_spec_values() {
        let m = Model::default_model();
        assert_eq!(m.version, "default-1");
        assert_eq!(m.half_life, Some((30 * DAY) as f64));
        assert_eq!(m.new_business.mql_min_total, Some(50.0));
        assert_eq!(m.new_business.mql_min_fit, Some(10.0));
        assert_eq!(m.new_business.mql_min_engagement, 5.0);
        assert_eq!(m.new_business.demotion_total, Some(40.0));
        assert_eq!(m.installed_base.mql_min_engagement, 5.0);
        assert_eq!(m.installed_base.mql_min_total, None);
        assert_eq!(m.installed_base.route, "account_management");
        assert_eq!(m.installed_base.sla_mql, Sla::Duration(4 * HOUR));
        assert_eq!(m.new_business.sla_mql, Sla::WorkingDays(3));
        assert_eq!(m.mql_window, 30 * DAY);
        assert_eq!(m.sql_window, 90 * DAY);
        assert_eq!(m.quiet_period, 14 * DAY);
        assert_eq!(m.criteria, ["budget", "authority", "need", "timing"]);
        assert_eq!(m.bands[m.band(49.999)].name, "cold");
        assert_eq!(m.bands[m.band(50.0 - 1e-10)].name, "warm");
        assert_eq!(m.bands[m.band(75.0)].name, "hot");
        assert!(m.disqualify.free_mail_domains.contains("gmail.com"));
        assert_eq!(m.rules_for("page_view").len(), 1);
        assert!(m.rules_for("unknown").is_empty());
    }

    fn err(toml: &str) -> String {
        Model::from_toml(toml).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        let e = err("version = \"x\"\n[engagement]\nhalf_lif = \"3d\"\n");
        assert!(e.contains("half_lif"), "{e}");
        let e = err("version = \"x\"\n[engagement]\nhalf_life = \"30\"\n");
        assert!(
            e.contains("engagement.half_life") && e.contains("unit"),
            "{e}"
        );
        let e = err(
            "version = \"x\"\n[[fit.rules]]\nname = \"a\"\nfield = \"employees\"\npoints = 1\n",
        );
        assert!(e.contains("fit.rules[0]") && e.contains("one test"), "{e}");
        let e = err("version = \"x\"\n[[fit.rules]]\nname = \"a\"\nfield = \"f\"\npoints = 1\nequals = \"x\"\nat_least = 3\n");
        assert!(e.contains("fit.rules[0]") && e.contains("one kind"), "{e}");
        let e = err("version = \"x\"\n[[engagement.rules]]\nname = \"a\"\nevent = \"e\"\npoints = 1\nevery = 0\n");
        assert!(e.contains("engagement.rules[0].every"), "{e}");
        let e = err("version = \"x\"\nhot_band = \"scorching\"\n");
        assert!(e.contains("hot_band") && e.contains("scorching"), "{e}");
        let e = err("version = \"x\"\n[new_business]\nsla_mql = \"3 workdays\"\n");
        assert!(e.contains("new_business.sla_mql"), "{e}");
        let e = err("version = \"\"\n");
        assert!(e.contains("`version`"), "{e}");
        let e = err("version = \"x\"\n[[fit.rules]]\nname = \"a\"\nfield = \"f\"\npoints = 1\nat_least = 5\nbelow = 5\n");
        assert!(e.contains("fit.rules[0]") && e.contains("empty"), "{e}");
    }

    #[test]
    fn attribute_paths_are_checked() {
        let rule = |attr: &str| {
            format!(
                "version = \"x\"\n[[engagement.rules]]\nname = \"a\"\nevent = \"e\"\npoints = 1\n\
                 [engagement.rules.attributes]\n\"{attr}\" = {{ equals = \"x\" }}\n"
            )
        };
        let m = Model::from_toml(&rule("context.campaign.source")).unwrap();
        assert_eq!(
            m.engagement_rules[0].attributes[0].0,
            "context.campaign.source"
        );
        assert!(Model::from_toml(&rule("url")).is_ok());
        for bad in ["", ".a", "a.", "a..b", "."] {
            let e = err(&rule(bad));
            assert!(
                e.contains("engagement.rules[0].attributes") && e.contains(&format!("{bad:?}")),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn at_most_64_fit_rules() {
        let rules = |n: usize| {
            let mut t = String::from("version = \"x\"\n");
            for i in 0..n {
                t += &format!(
                    "[[fit.rules]]\nname = \"r{i}\"\nfield = \"f{i}\"\npoints = 1\nexists = true\n"
                );
            }
            t
        };
        assert_eq!(Model::from_toml(&rules(64)).unwrap().fit_rules.len(), 64);
        let e = err(&rules(65));
        assert!(e.contains("fit.rules") && e.contains("at most 64"), "{e}");
    }

    #[test]
    fn minimal_model_takes_spec_defaults() {
        let m = Model::from_toml("version = \"tiny\"\n").unwrap();
        assert_eq!(m.bands.len(), 3);
        assert_eq!(m.new_business.sla_sql, Sla::Duration(24 * HOUR));
        assert_eq!(m.quiet_period, 14 * DAY);
        assert_eq!(m.criteria_mask(), 0);
    }

    #[test]
    fn sla_forms() {
        assert_eq!(Sla::parse("3 working days"), Ok(Sla::WorkingDays(3)));
        assert_eq!(Sla::parse("1 working day"), Ok(Sla::WorkingDays(1)));
        assert_eq!(Sla::parse("2wd"), Ok(Sla::WorkingDays(2)));
        assert_eq!(Sla::parse("4h"), Ok(Sla::Duration(4 * HOUR)));
        assert!(Sla::parse("0h").is_err());
        assert!(Sla::parse("soon").is_err());
    }
}
