//! The model file as written (TOML), before validation.
//!
//! Every table rejects unknown keys, so a typo is an error that names the key
//! instead of a rule that silently never fires.

use std::collections::BTreeMap;

use serde::Deserialize;

pub use super::calendar::CalendarFile;
pub use super::condition::ConditionFile;

/// One string or a list of strings (`equals = "food"` or `equals = ["food", "pharma"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The tests a value can be put to. Exactly one kind per matcher: text
/// (`equals`, `contains`, `starts_with`, `ends_with`; case-insensitive, any of
/// a list), numeric (`at_least`, `above`, `at_most`, `below`, optionally
/// `whole`), boolean (`is`) or presence (`exists`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    pub equals: Option<OneOrMany>,
    pub contains: Option<OneOrMany>,
    pub starts_with: Option<OneOrMany>,
    pub ends_with: Option<OneOrMany>,
    pub at_least: Option<f64>,
    pub above: Option<f64>,
    pub at_most: Option<f64>,
    pub below: Option<f64>,
    /// Numeric tests only count whole numbers (300 or 300.0).
    pub whole: Option<bool>,
    pub is: Option<bool>,
    pub exists: Option<bool>,
}

/// A fit rule: a test on one profile field, worth `points`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitRuleFile {
    pub name: String,
    pub field: String,
    pub points: f64,
    /// Rules sharing a group are exclusive: the first that matches, in file order, counts.
    pub group: Option<String>,
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
}

impl FitRuleFile {
    pub fn matcher(&self) -> MatchFile {
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
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FitFile {
    #[serde(default)]
    pub rules: Vec<FitRuleFile>,
}

/// At most `max` scoring occurrences of a rule in any rolling `window`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapFile {
    pub max: u32,
    pub window: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngagementRuleFile {
    pub name: String,
    /// The event `type` this rule scores (exact match).
    pub event: String,
    pub points: f64,
    /// All of these attribute tests must hold.
    #[serde(default)]
    pub attributes: BTreeMap<String, MatchFile>,
    /// Score only every Nth matching event of the lead (in arrival order).
    pub every: Option<u32>,
    pub cap: Option<CapFile>,
    /// The `[[engagement.groups]]` entry whose limit this rule counts
    /// towards and whose half-life (if it has one) it decays with.
    pub group: Option<String>,
}

/// A group of engagement rules with a score limit (HubSpot's score group
/// limit) and/or a half-life of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngagementGroupFile {
    pub name: String,
    /// The group's rules together contribute at most this many points.
    pub limit: Option<f64>,
    /// The half-life of the group's rules (`"7d"`, or `"none"` for no
    /// decay) instead of `[engagement] half_life`.
    pub half_life: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngagementFile {
    /// `"30d"`, or `"none"` for no decay.
    pub half_life: Option<String>,
    /// Engagement as a whole is at most this many points.
    pub limit: Option<f64>,
    #[serde(default)]
    pub groups: Vec<EngagementGroupFile>,
    #[serde(default)]
    pub rules: Vec<EngagementRuleFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisqualifyFile {
    /// Fewer employees than this disqualifies (whole numbers only).
    pub min_employees: Option<f64>,
    #[serde(default)]
    pub free_mail_domains: Vec<String>,
    /// Targets sole proprietors: free-mail addresses do not disqualify.
    #[serde(default)]
    pub allow_free_mail: bool,
    /// E-mail domains ending in `.edu` or with `ac` as second-to-last label.
    #[serde(default)]
    pub academic_domains: bool,
    /// Job titles containing any of these disqualify (e.g. "student").
    #[serde(default)]
    pub job_title_contains: Vec<String>,
    /// E-mail domains (and their subdomains) of competitors.
    #[serde(default)]
    pub competitor_domains: Vec<String>,
    /// Company names of competitors, compared with the profile's `company`
    /// in the normal form of [`super::condition::company_key`].
    #[serde(default)]
    pub competitor_names: Vec<String>,
    /// A free-mail address does not disqualify a lead for which this
    /// condition holds (e.g. `{ field = "legal_form", equals = "eenmanszaak" }`).
    pub free_mail_exception: Option<ConditionFile>,
    /// Named conditions on the profile: any that holds disqualifies, its
    /// `name` the reason.
    #[serde(default)]
    pub rules: Vec<ConditionFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandFile {
    pub name: String,
    /// Lower bound (inclusive); the first band has none.
    pub at_least: Option<f64>,
}

/// Thresholds, route and SLAs of one kind of lead (new business or installed base).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackFile {
    pub mql_min_total: Option<f64>,
    pub mql_min_fit: Option<f64>,
    pub mql_min_engagement: Option<f64>,
    /// At requalification the lead stays while its total is at least this.
    pub demotion_total: Option<f64>,
    pub route: Option<String>,
    /// Shorthand for all three SLAs below.
    pub sla: Option<String>,
    pub sla_sql: Option<String>,
    pub sla_hot_mql: Option<String>,
    pub sla_mql: Option<String>,
    /// This route's business calendar (replaces the model's `[calendar]`).
    pub calendar: Option<CalendarFile>,
    /// Conditions that must all hold for an MQL, besides the thresholds.
    #[serde(default)]
    pub mql_gates: Vec<ConditionFile>,
    /// Conditions that must all hold, besides the thresholds, for
    /// requalification to keep the lead.
    #[serde(default)]
    pub stays_while: Vec<ConditionFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlFile {
    /// All must be known true for the criteria rule to make an SQL.
    #[serde(default)]
    pub criteria: Vec<String>,
    /// Conditions that must all hold (with the criteria, if any) for the
    /// criteria rule to make an SQL.
    #[serde(default)]
    pub conditions: Vec<ConditionFile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequalifyFile {
    pub mql_window: Option<String>,
    pub sql_window: Option<String>,
    pub quiet_period: Option<String>,
    /// An MQL whose requalification conditions fail (its total below the
    /// demotion threshold, or its engagement below the minimum) goes to its
    /// home stage at once, at the event or the decay instant, instead of at
    /// the requalification deadline.
    #[serde(default)]
    pub demote_on_score: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub version: String,
    #[serde(default)]
    pub fit: FitFile,
    #[serde(default)]
    pub engagement: EngagementFile,
    #[serde(default)]
    pub disqualify: DisqualifyFile,
    #[serde(default)]
    pub bands: Vec<BandFile>,
    #[serde(default)]
    pub sql: SqlFile,
    #[serde(default)]
    pub requalify: RequalifyFile,
    #[serde(default)]
    pub new_business: TrackFile,
    #[serde(default)]
    pub installed_base: TrackFile,
    /// Which band makes an MQL "hot" for the fast SLA.
    pub hot_band: Option<String>,
    /// The business calendar of every route without one of its own.
    pub calendar: Option<CalendarFile>,
    /// The score stream writes a lead's record again when its total has
    /// moved by at least this many points since the last one (default 1).
    pub score_min_delta: Option<f64>,
    /// How long leads and erasure markers are kept.
    #[serde(default)]
    pub retention: RetentionFile,
}

/// `[retention]`: forgetting leads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    /// A lead with no event for this long (event time) is removed
    /// (`"730d"`); absent or `"none"`: leads are kept.
    pub inactive_after: Option<String>,
    /// Leads of the installed base are kept however long they are quiet.
    #[serde(default)]
    pub keep_customers: bool,
    /// After a `lead_erased`, events of the lead up to this long after the
    /// erasure's time are dropped (default `"30d"`).
    pub erasure_window: Option<String>,
}
