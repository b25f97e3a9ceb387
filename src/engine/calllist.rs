//! The call list: which leads sales should call first (`GET /leads`).
//!
//! A partition keeps its leads by stage ([`StageIndex`]), maintained where a
//! lead changes stage, so a query reads only the leads of the stages it asks
//! for. Everything else — the band, the total, whether the follow-up is
//! overdue — depends on the time the list is drawn at (engagement decays), so
//! it is computed at query time from those candidates, not indexed.
//!
//! [`Engine::call_list`] draws one partition's list; [`merge`] combines the
//! lists of several partitions (or, later, of several instances) into one,
//! in the same order, so a merged list equals the list drawn over all the
//! leads at once.

use std::cmp::Ordering;

use fixedbitset::FixedBitSet;
use serde::{Deserialize, Serialize};

use super::lead::{Lead, NEVER, NO_TIME};
use super::Engine;
use crate::change::Stage;
use crate::model::Model;
use crate::time::{Micros, Rfc3339};

fn ser_time<S: serde::Serializer>(t: &Micros, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Rfc3339(*t))
}

fn ser_opt_time<S: serde::Serializer>(t: &Option<Micros>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&Rfc3339(*t)),
        None => s.serialize_none(),
    }
}

// Read back when another instance's list is merged in.
fn de_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Micros, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    crate::time::parse_rfc3339(&s).map_err(serde::de::Error::custom)
}

fn de_opt_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Micros>, D::Error> {
    match <Option<std::borrow::Cow<'de, str>>>::deserialize(d)? {
        Some(s) => crate::time::parse_rfc3339(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
        None => Ok(None),
    }
}

/// The leads of each stage but `lead`, by position in the engine.
///
/// `lead` is left out: every new lead starts there without a transition, so
/// indexing it would cost every new lead a set insert, and it holds the
/// leads nobody calls yet. The sets change only when a lead changes stage
/// (one event in several), so the fold pays nothing on other events.
///
/// Each set is a bitset over lead positions (at most a bit per lead and
/// stage): a change of stage sets and clears a bit, where a hash set cost
/// the fold a hash, a probe and, as it grew, rehashing (about 160
/// instructions per change of stage on a generated stream). A query reads
/// the stage's bits in order of position.
#[derive(Debug, Default)]
pub(crate) struct StageIndex {
    sets: [FixedBitSet; Stage::ALL.len()],
}

impl StageIndex {
    /// Records that the lead at `idx` went from `from` to `to`.
    #[inline]
    pub(crate) fn moved(&mut self, idx: u32, from: Stage, to: Stage) {
        if from == to {
            return;
        }
        let idx = idx as usize;
        if from != Stage::Lead {
            let set = &mut self.sets[from as usize];
            if idx < set.len() {
                set.set(idx, false);
            }
        }
        if to != Stage::Lead {
            self.sets[to as usize].grow_and_insert(idx);
        }
    }

    /// The positions of the leads in `stage`, ascending.
    fn of(&self, stage: Stage) -> impl Iterator<Item = u32> + '_ {
        self.sets[stage as usize]
            .ones()
            .map(|i| u32::try_from(i).expect("lead positions are u32"))
    }
}

/// How a call list is ordered. Ties are broken by lead id (ascending), so
/// the order is total and the same on every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Highest total first.
    #[default]
    Total,
    /// Earliest `follow_up_by` first (leads without one last), then highest total.
    FollowUpBy,
}

impl Order {
    pub fn parse(s: &str) -> Option<Order> {
        match s {
            "total" => Some(Order::Total),
            "follow_up_by" => Some(Order::FollowUpBy),
            _ => None,
        }
    }
}

/// The most leads one call list returns.
pub const MAX_LIMIT: usize = 1000;
/// Leads returned when the query does not say.
pub const DEFAULT_LIMIT: usize = 50;

/// What to list. [`CallListQuery::default`] is `GET /leads` without
/// parameters: MQLs and SQLs of any band, highest total first, 50 of them.
#[derive(Debug, Clone, PartialEq)]
pub struct CallListQuery {
    /// Stages to list (never `lead`: see [`StageIndex`]).
    pub stages: Vec<Stage>,
    /// Band names to keep; empty keeps every band.
    pub bands: Vec<String>,
    /// Only leads whose follow-up is overdue.
    pub overdue_only: bool,
    pub order: Order,
    /// At most this many leads, 1 to [`MAX_LIMIT`].
    pub limit: usize,
}

impl Default for CallListQuery {
    fn default() -> Self {
        CallListQuery {
            stages: vec![Stage::Mql, Stage::Sql],
            bands: Vec::new(),
            overdue_only: false,
            order: Order::Total,
            limit: DEFAULT_LIMIT,
        }
    }
}

/// A query the engine cannot answer: the parameter and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter `{param}`: {problem}")]
pub struct QueryError {
    pub param: &'static str,
    pub problem: String,
}

impl CallListQuery {
    /// Reads a URL query string (`stage=mql,sql&band=hot&sla=overdue&order=total&limit=50`),
    /// already split into decoded pairs. Band names are checked against the
    /// model by [`CallListQuery::check`].
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<CallListQuery, QueryError> {
        let mut q = CallListQuery::default();
        let bad = |param, problem: String| QueryError { param, problem };
        for (k, v) in pairs {
            let list = || v.split(',').map(str::trim).filter(|s| !s.is_empty());
            match k {
                "stage" => {
                    q.stages.clear();
                    for s in list() {
                        let stage = Stage::ALL
                            .into_iter()
                            .find(|st| st.as_str() == s)
                            .ok_or_else(|| {
                                bad("stage", format!("unknown stage {s:?}; stages: mql, sql, recycled, disqualified, customer"))
                            })?;
                        if stage == Stage::Lead {
                            return Err(bad(
                                "stage",
                                "`lead` is not listed: it holds every lead not yet qualified; \
                                 list mql, sql, recycled, disqualified or customer"
                                    .into(),
                            ));
                        }
                        if !q.stages.contains(&stage) {
                            q.stages.push(stage);
                        }
                    }
                    if q.stages.is_empty() {
                        return Err(bad("stage", "names no stage".into()));
                    }
                }
                "band" => {
                    q.bands = list().map(str::to_string).collect();
                    if q.bands.is_empty() {
                        return Err(bad("band", "names no band".into()));
                    }
                }
                "sla" => match v {
                    "overdue" => q.overdue_only = true,
                    "any" | "" => q.overdue_only = false,
                    _ => return Err(bad("sla", format!("{v:?}: use `overdue` or `any`"))),
                },
                "order" => {
                    q.order = Order::parse(v).ok_or_else(|| {
                        bad("order", format!("{v:?}: use `total` or `follow_up_by`"))
                    })?
                }
                "limit" => {
                    q.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            bad(
                                "limit",
                                format!("{v:?}: a whole number from 1 to {MAX_LIMIT}"),
                            )
                        })?
                }
                _ => {
                    return Err(QueryError {
                        param: "query",
                        problem: format!(
                            "unknown parameter {k:?}; parameters: stage, band, sla, order, limit"
                        ),
                    })
                }
            }
        }
        Ok(q)
    }

    /// Checks the band names against the model's bands.
    pub fn check(&self, model: &Model) -> Result<(), QueryError> {
        for b in &self.bands {
            if !model.bands.iter().any(|band| &band.name == b) {
                let names: Vec<&str> = model.bands.iter().map(|b| b.name.as_str()).collect();
                return Err(QueryError {
                    param: "band",
                    problem: format!("unknown band {b:?}; bands: {}", names.join(", ")),
                });
            }
        }
        Ok(())
    }
}

/// One lead on the call list, scored at the list's time. Holds no profile
/// field: the list is what sales sees at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallListEntry {
    pub lead_id: String,
    pub stage: Stage,
    pub band: String,
    pub total: f64,
    pub fit: f64,
    pub engagement: f64,
    /// The team the hand-off goes to (`mql` and `sql`; null in other stages).
    pub route: Option<String>,
    /// When sales must have followed up (`mql` and `sql`; null in other stages).
    #[serde(serialize_with = "ser_opt_time", deserialize_with = "de_opt_time")]
    pub follow_up_by: Option<Micros>,
    /// `follow_up_by` has passed at the list's time.
    pub overdue: bool,
    #[serde(serialize_with = "ser_opt_time", deserialize_with = "de_opt_time")]
    pub stage_entered: Option<Micros>,
    /// The time the scores are computed at.
    #[serde(serialize_with = "ser_time", deserialize_with = "de_time")]
    pub as_of: Micros,
    /// Engagement by half-life, one per distinct half-life of the model
    /// (the list's `half_life_seconds` first); empty (not written) when
    /// every rule decays alike.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<EngagementComponent>,
}

/// The part of a lead's engagement that decays with one half-life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngagementComponent {
    /// `None`: this part does not decay.
    pub half_life_seconds: Option<f64>,
    pub engagement: f64,
}

impl CallListEntry {
    fn follow_up_micros(&self) -> Micros {
        self.follow_up_by.unwrap_or(NEVER)
    }
}

/// A drawn call list: the leads, and the time they are scored at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallList {
    /// The event time the list is drawn at (the instance's watermark; see
    /// [`Engine::call_list`]), or null before any event.
    #[serde(serialize_with = "ser_opt_time", deserialize_with = "de_opt_time")]
    pub at: Option<Micros>,
    pub model_version: String,
    /// The engagement half-life, for a reader who decays the scores
    /// further (`[engagement] half_life`; with rule groups of other
    /// half-lives, each entry's `components` decay separately).
    pub half_life_seconds: Option<f64>,
    /// The model's band names, lowest first (what `band=` takes).
    pub bands: Vec<String>,
    pub leads: Vec<CallListEntry>,
}

/// The call list over several partitions' engines (one instance's), drawn
/// at the largest of their watermarks: the event time this instance has
/// reached. A lead is scored at that time or at its own, if later.
pub fn draw<'a>(
    engines: impl IntoIterator<Item = &'a Engine>,
    model: &Model,
    q: &CallListQuery,
) -> Result<CallList, QueryError> {
    q.check(model)?;
    let engines: Vec<&Engine> = engines.into_iter().collect();
    let at = engines
        .iter()
        .map(|e| e.watermark())
        .filter(|&w| w != NO_TIME)
        .max();
    let leads = merge(
        q,
        engines
            .iter()
            .map(|e| e.call_list(q, at.unwrap_or(NO_TIME))),
    );
    Ok(CallList {
        at,
        model_version: model.version.clone(),
        half_life_seconds: model.half_life.map(|hl| hl / 1e6),
        bands: model.bands.iter().map(|b| b.name.clone()).collect(),
        leads,
    })
}

/// The order of `q` between two entries: a total order (ties by lead id).
pub fn compare(order: Order, a: &CallListEntry, b: &CallListEntry) -> Ordering {
    let by_total = || b.total.total_cmp(&a.total);
    let first = match order {
        Order::Total => by_total(),
        Order::FollowUpBy => a
            .follow_up_micros()
            .cmp(&b.follow_up_micros())
            .then_with(by_total),
    };
    first.then_with(|| a.lead_id.cmp(&b.lead_id))
}

/// Merges lists drawn with the same query into one: ordered, at most
/// `q.limit` long.
pub fn merge(
    q: &CallListQuery,
    lists: impl IntoIterator<Item = Vec<CallListEntry>>,
) -> Vec<CallListEntry> {
    let mut all: Vec<CallListEntry> = lists.into_iter().flatten().collect();
    top(q, &mut all);
    all
}

/// Keeps the first `q.limit` entries of `all` in `q`'s order.
fn top(q: &CallListQuery, all: &mut Vec<CallListEntry>) {
    let cmp = |a: &CallListEntry, b: &CallListEntry| compare(q.order, a, b);
    if all.len() > q.limit {
        all.select_nth_unstable_by(q.limit - 1, cmp);
        all.truncate(q.limit);
    }
    all.sort_unstable_by(cmp);
}

impl Lead {
    /// Whether the lead's follow-up is overdue at `t`: the open hand-off's
    /// `follow_up_by` ([`Lead::follow_up_by`], the SLA clock's) has been
    /// reached (as the SLA timer fires, at `follow_up_by` itself) and sales
    /// has not touched it (`sales_contacted` stops the clock).
    pub fn overdue_at(&self, t: Micros) -> bool {
        self.follow_up_by().is_some_and(|due| due <= t)
    }
}

impl Engine {
    /// This partition's call list for `q`, with each lead scored at
    /// `at` (or at its own time, if later: a lead's time never goes back).
    /// The query's band names must be the model's ([`CallListQuery::check`];
    /// an unknown one matches no lead).
    pub fn call_list(&self, q: &CallListQuery, at: Micros) -> Vec<CallListEntry> {
        let model = &*self.model;
        let bands: Vec<usize> = q
            .bands
            .iter()
            .filter_map(|name| model.bands.iter().position(|b| &b.name == name))
            .collect();
        let mut out = Vec::new();
        for &stage in &q.stages {
            for idx in self.stages.of(stage) {
                let lead = &self.leads[idx as usize];
                let t = at.max(lead.time);
                let overdue = lead.overdue_at(t);
                if q.overdue_only && !overdue {
                    continue;
                }
                let engagement = decayed_engagement(lead, model, t);
                let fit = lead.fit(model);
                let total = fit + engagement;
                let band = model.band(total);
                if !bands.is_empty() && !bands.contains(&band) {
                    continue;
                }
                let time = |t: Micros| (t != NO_TIME && t != NEVER).then_some(t);
                out.push(CallListEntry {
                    lead_id: lead.id().to_string(),
                    stage,
                    band: model.bands[band].name.clone(),
                    total,
                    fit,
                    engagement,
                    route: stage
                        .is_qualified()
                        .then(|| lead.track(model).route.clone()),
                    follow_up_by: lead.follow_up_by(),
                    overdue,
                    stage_entered: time(lead.stage_entered),
                    as_of: t,
                    components: components(lead, model, t),
                });
            }
        }
        top(q, &mut out);
        out
    }
}

/// The lead's engagement at `t` ≥ its time (what `advance_time` would
/// leave, without cloning the lead): when every rule decays alike, the sum
/// decays by one factor.
fn decayed_engagement(lead: &Lead, model: &Model, t: Micros) -> f64 {
    if model.multi_rate() {
        return lead.engagement_at(model, t.max(lead.time));
    }
    let e = lead.engagement(model);
    match model.half_life {
        Some(hl) if lead.time != NO_TIME && t > lead.time => {
            e * (-((t - lead.time) as f64) / hl).exp2()
        }
        _ => e,
    }
}

/// The entry's engagement by half-life, when the model has several.
fn components(lead: &Lead, model: &Model, t: Micros) -> Vec<EngagementComponent> {
    if !model.multi_rate() {
        return Vec::new();
    }
    let sums = lead.engagement_by_rate(model, t.max(lead.time));
    model
        .half_lives
        .iter()
        .zip(sums)
        .map(|(hl, engagement)| EngagementComponent {
            half_life_seconds: hl.map(|hl| hl / 1e6),
            engagement,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &str) -> Result<CallListQuery, QueryError> {
        CallListQuery::from_pairs(
            s.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| p.split_once('=').unwrap_or((p, ""))),
        )
    }

    #[test]
    fn queries_parse_and_errors_name_the_parameter() {
        assert_eq!(pairs("").unwrap(), CallListQuery::default());
        let q = pairs("stage=sql,mql,sql&band=hot,warm&sla=overdue&order=follow_up_by&limit=7")
            .unwrap();
        assert_eq!(q.stages, [Stage::Sql, Stage::Mql]);
        assert_eq!(q.bands, ["hot", "warm"]);
        assert!(q.overdue_only);
        assert_eq!(q.order, Order::FollowUpBy);
        assert_eq!(q.limit, 7);
        for (query, param) in [
            ("stage=lead", "stage"),
            ("stage=mq", "stage"),
            ("stage=", "stage"),
            ("band=", "band"),
            ("sla=late", "sla"),
            ("order=score", "order"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=x", "limit"),
            ("email=a", "query"),
        ] {
            assert_eq!(pairs(query).unwrap_err().param, param, "{query}");
        }
        let model = Model::default_model();
        assert!(pairs("band=hot").unwrap().check(&model).is_ok());
        let e = pairs("band=tepid").unwrap().check(&model).unwrap_err();
        assert!(e.to_string().contains("cold, warm, hot"), "{e}");
    }

    #[test]
    fn the_stage_index_follows_moves_and_leaves_out_lead() {
        let mut s = StageIndex::default();
        s.moved(1, Stage::Lead, Stage::Mql);
        s.moved(2, Stage::Lead, Stage::Mql);
        s.moved(1, Stage::Mql, Stage::Sql);
        s.moved(2, Stage::Mql, Stage::Lead);
        s.moved(3, Stage::Recycled, Stage::Recycled);
        assert_eq!(s.of(Stage::Mql).count(), 0);
        assert_eq!(s.of(Stage::Sql).collect::<Vec<_>>(), [1]);
        assert_eq!(s.of(Stage::Lead).count(), 0);
        assert_eq!(s.of(Stage::Recycled).count(), 0);
    }

    fn entry(id: &str, total: f64, due: Option<Micros>) -> CallListEntry {
        CallListEntry {
            lead_id: id.into(),
            stage: Stage::Mql,
            band: "warm".into(),
            total,
            fit: 0.0,
            engagement: total,
            route: None,
            follow_up_by: due,
            overdue: false,
            stage_entered: None,
            as_of: 0,
            components: Vec::new(),
        }
    }

    #[test]
    fn merged_lists_are_ordered_with_ties_by_lead_id() {
        let q = CallListQuery {
            limit: 3,
            ..CallListQuery::default()
        };
        let a = vec![entry("b", 60.0, Some(5)), entry("d", 90.0, None)];
        let b = vec![entry("a", 60.0, Some(9)), entry("c", 10.0, Some(1))];
        let ids = |v: Vec<CallListEntry>| v.into_iter().map(|e| e.lead_id).collect::<Vec<_>>();
        assert_eq!(ids(merge(&q, [a.clone(), b.clone()])), ["d", "a", "b"]);
        let q = CallListQuery {
            order: Order::FollowUpBy,
            limit: 10,
            ..q
        };
        assert_eq!(ids(merge(&q, [a, b])), ["c", "b", "a", "d"]);
    }
}
