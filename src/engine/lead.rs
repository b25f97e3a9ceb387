//! One lead's state, and the pure updates on it: decay, profile merge, fit
//! and disqualification, rule slots, the recent-id set.

use crate::change::Stage;
use crate::event::Value;
use crate::model::{at_least, Model, Track, ValueRef};
use crate::time::Micros;

/// No time yet (a lead before its first event, or never recycled).
pub const NO_TIME: Micros = Micros::MIN;
/// No deadline.
pub const NEVER: Micros = Micros::MAX;

/// How many recent event ids a lead remembers for de-duplication.
pub const RECENT_IDS: usize = 16;

pub(crate) mod flags {
    /// The lead has had `deal_won`: installed base, home stage `customer`.
    pub const DEAL_WON: u8 = 1;
    /// Sales rejected it as `disqualified` (sticky while new business).
    pub const REJECTED_DISQ: u8 = 2;
    /// The profile says `is_customer: true`.
    pub const PROFILE_CUSTOMER: u8 = 4;
    /// Changed since the last [`crate::engine::Engine::drain_dirty`].
    pub const DIRTY: u8 = 8;
}

/// Disqualification rules that match, as bits.
pub mod disq {
    pub const TOO_SMALL: u8 = 1;
    pub const FREE_MAIL: u8 = 2;
    pub const ACADEMIC_DOMAIN: u8 = 4;
    pub const ACADEMIC_TITLE: u8 = 8;
    pub const COMPETITOR: u8 = 16;
}

/// A profile value as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum ProfileValue {
    Bool(bool),
    Num(f64),
    Str(Box<str>),
    /// An array or object: present, matched by no rule.
    Other,
}

impl ProfileValue {
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            ProfileValue::Bool(b) => ValueRef::Bool(*b),
            ProfileValue::Num(n) => ValueRef::Num(*n),
            ProfileValue::Str(s) => ValueRef::Str(s),
            ProfileValue::Other => ValueRef::Other,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ProfileValue::Bool(b) => (*b).into(),
            ProfileValue::Num(n) if n.fract() == 0.0 && n.abs() < 9e15 => (*n as i64).into(),
            ProfileValue::Num(n) => {
                serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into)
            }
            ProfileValue::Str(s) => s.as_ref().into(),
            ProfileValue::Other => "<object or array>".into(),
        }
    }
}

pub fn value_ref<'a>(v: &'a Value<'_>) -> ValueRef<'a> {
    match v {
        Value::Str(s) => ValueRef::Str(s),
        Value::Num(n) => ValueRef::Num(*n),
        Value::Bool(b) => ValueRef::Bool(*b),
        Value::Null | Value::Other => ValueRef::Other,
    }
}

/// A stable 64-bit hash of a string (lead ids in the table, event ids in the
/// recent set). Stable across builds: fingerprints are kept in the changelog.
#[inline]
pub fn hash64(b: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (b.len() as u64).wrapping_mul(K) ^ 0x2545_F491_4F6C_DD1D;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let rem = chunks.remainder();
    if !rem.is_empty() {
        let mut buf = [0u8; 8];
        buf[..rem.len()].copy_from_slice(rem);
        h = (h ^ u64::from_le_bytes(buf))
            .wrapping_mul(K)
            .rotate_left(29);
    }
    // murmur3's finaliser: every input bit reaches every output bit.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// One lead. Kept small: millions of these live in memory and in the changelog.
#[derive(Debug, Clone, PartialEq)]
pub struct Lead {
    pub(crate) id: Box<str>,
    /// The lead's clock: the latest `occurred_at` it has seen, or a fired timer's deadline.
    pub(crate) time: Micros,
    /// When it last entered `recycled` or `customer` (R), or [`NO_TIME`].
    pub(crate) fresh_start: Micros,
    pub(crate) stage_entered: Micros,
    /// Requalification deadline while `mql` or `sql`, else [`NEVER`].
    pub(crate) deadline: Micros,
    /// Fit of the current profile (cached; recomputed on profile change).
    pub(crate) fit: f64,
    /// Per-rule state in the model's layout: engagement contributions at
    /// `time` (f64 bits), then `every` counters, then cap timestamps.
    pub(crate) slots: Box<[u64]>,
    pub(crate) profile: Vec<(Box<str>, ProfileValue)>,
    /// Fingerprints of recent event ids: a ring once it holds [`RECENT_IDS`].
    pub(crate) recent: Vec<u64>,
    pub(crate) sequence: u32,
    /// Required criteria known true, one bit per `model.criteria` entry.
    pub(crate) criteria: u32,
    pub(crate) stage: Stage,
    pub(crate) flags: u8,
    /// Matching disqualification rules ([`disq`] bits), cached with `fit`.
    pub(crate) disq: u8,
    pub(crate) recent_pos: u8,
}

impl Lead {
    pub fn new(id: &str, model: &Model) -> Lead {
        let mut slots = vec![0u64; model.slots].into_boxed_slice();
        for rule in &model.engagement_rules {
            if let Some(cap) = rule.cap {
                for s in &mut slots[cap.slot..cap.slot + cap.max as usize] {
                    *s = NO_TIME as u64;
                }
            }
        }
        Lead {
            id: id.into(),
            time: NO_TIME,
            fresh_start: NO_TIME,
            stage_entered: NO_TIME,
            deadline: NEVER,
            fit: 0.0,
            slots,
            profile: Vec::new(),
            recent: Vec::new(),
            sequence: 0,
            criteria: 0,
            stage: Stage::Lead,
            flags: 0,
            disq: 0,
            recent_pos: 0,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    pub fn time(&self) -> Micros {
        self.time
    }

    pub fn fit(&self) -> f64 {
        self.fit
    }

    /// Engagement at the lead's time: the sum of the rules' contributions.
    #[inline]
    pub fn engagement(&self, model: &Model) -> f64 {
        self.slots[..model.engagement_rules.len()]
            .iter()
            .map(|&b| f64::from_bits(b))
            .sum()
    }

    pub fn contribution(&self, rule: usize) -> f64 {
        f64::from_bits(self.slots[rule])
    }

    pub fn installed_base(&self) -> bool {
        self.flags & (flags::DEAL_WON | flags::PROFILE_CUSTOMER) != 0
    }

    pub fn home_stage(&self) -> Stage {
        if self.flags & flags::DEAL_WON != 0 {
            Stage::Customer
        } else {
            Stage::Recycled
        }
    }

    /// Whether a disqualification applies now (new business only).
    pub fn disqualified(&self) -> bool {
        !self.installed_base() && (self.disq != 0 || self.flags & flags::REJECTED_DISQ != 0)
    }

    pub fn track<'m>(&self, model: &'m Model) -> &'m Track {
        model.track(self.installed_base())
    }

    /// When the quiet period after the last fresh start ends, if it has not yet.
    pub fn quiet_until(&self, model: &Model) -> Option<Micros> {
        if self.fresh_start == NO_TIME || model.quiet_period == 0 {
            return None;
        }
        let end = self.fresh_start.saturating_add(model.quiet_period);
        (self.time < end).then_some(end)
    }

    /// The next instant a timer of this lead falls due, or [`NEVER`].
    pub fn next_due(&self, model: &Model) -> Micros {
        let requal = if self.stage.is_qualified() {
            self.deadline
        } else {
            NEVER
        };
        self.quiet_until(model).map_or(requal, |q| q.min(requal))
    }

    /// Moves the lead's clock forward to `to`, decaying its engagement.
    #[inline]
    pub fn advance_time(&mut self, to: Micros, model: &Model) {
        if to <= self.time {
            return;
        }
        if self.time != NO_TIME {
            if let Some(hl) = model.half_life {
                let factor = (-((to - self.time) as f64) / hl).exp2();
                for s in &mut self.slots[..model.engagement_rules.len()] {
                    let v = f64::from_bits(*s);
                    if v != 0.0 {
                        *s = (v * factor).to_bits();
                    }
                }
            }
        }
        self.time = to;
    }

    /// Adds `points` scored at `at` (≤ the lead's time), decayed to the lead's time.
    #[inline]
    pub fn add_points(&mut self, rule: usize, points: f64, at: Micros, model: &Model) {
        let decayed = match model.half_life {
            Some(hl) if at < self.time => points * (-((self.time - at) as f64) / hl).exp2(),
            _ => points,
        };
        let s = &mut self.slots[rule];
        *s = (f64::from_bits(*s) + decayed).to_bits();
    }

    /// Whether this event id was seen recently; remembers it if not.
    #[inline]
    pub fn check_and_remember(&mut self, fingerprint: u64) -> bool {
        if self.recent.contains(&fingerprint) {
            return true;
        }
        if self.recent.len() < RECENT_IDS {
            self.recent.push(fingerprint);
        } else {
            self.recent[usize::from(self.recent_pos)] = fingerprint;
            self.recent_pos = ((usize::from(self.recent_pos) + 1) % RECENT_IDS) as u8;
        }
        false
    }

    pub fn profile_value(&self, field: &str) -> Option<&ProfileValue> {
        self.profile
            .iter()
            .find(|(k, _)| &**k == field)
            .map(|(_, v)| v)
    }

    /// Merges profile fields (`null` removes one) and recomputes fit and
    /// disqualification.
    pub fn merge_profile(
        &mut self,
        fields: &[(std::borrow::Cow<'_, str>, Value<'_>)],
        model: &Model,
    ) {
        for (k, v) in fields {
            let pos = self.profile.iter().position(|(name, _)| **name == **k);
            let new = match v {
                Value::Null => None,
                Value::Bool(b) => Some(ProfileValue::Bool(*b)),
                Value::Num(n) => Some(ProfileValue::Num(*n)),
                Value::Str(s) => Some(ProfileValue::Str(s.as_ref().into())),
                Value::Other => Some(ProfileValue::Other),
            };
            match (pos, new) {
                (Some(i), Some(v)) => self.profile[i].1 = v,
                (Some(i), None) => {
                    self.profile.remove(i);
                }
                (None, Some(v)) => self.profile.push((k.as_ref().into(), v)),
                (None, None) => {}
            }
        }
        self.refresh_profile(model);
    }

    /// Recomputes what derives from the profile: fit, disqualification, `is_customer`.
    pub fn refresh_profile(&mut self, model: &Model) {
        let mut fit = 0.0;
        for_each_fit_hit(self, model, |_, p| fit += p);
        self.fit = fit;
        self.disq = disqualifications(self, model);
        if matches!(
            self.profile_value("is_customer"),
            Some(ProfileValue::Bool(true))
        ) {
            self.flags |= flags::PROFILE_CUSTOMER;
        } else {
            self.flags &= !flags::PROFILE_CUSTOMER;
        }
    }

    /// The lead's e-mail domain (after the last `@`), lower-cased.
    pub fn email_domain(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self.profile_value("email") {
            Some(ProfileValue::Str(s)) => {
                s.rfind('@').map(|i| crate::model::lower_text(&s[i + 1..]))
            }
            _ => None,
        }
    }

    /// Whether the MQL conditions of the lead's track hold.
    pub fn meets_mql(&self, model: &Model) -> bool {
        let t = self.track(model);
        let e = self.engagement(model);
        at_least(e, t.mql_min_engagement)
            && t.mql_min_fit.is_none_or(|m| at_least(self.fit, m))
            && t.mql_min_total.is_none_or(|m| at_least(self.fit + e, m))
    }

    /// Whether requalification keeps the lead in its stage.
    pub fn requalifies(&self, model: &Model) -> bool {
        let t = self.track(model);
        let e = self.engagement(model);
        at_least(e, t.mql_min_engagement)
            && t.demotion_total.is_none_or(|d| at_least(self.fit + e, d))
    }

    /// Whether every required criterion is known true (never, if the model requires none).
    pub fn criteria_met(&self, model: &Model) -> bool {
        let mask = model.criteria_mask();
        mask != 0 && self.criteria & mask == mask
    }

    /// Recycling starts afresh at `at`: engagement to zero, criteria cleared.
    pub fn fresh_start(&mut self, at: Micros, model: &Model) {
        for s in &mut self.slots[..model.engagement_rules.len()] {
            *s = 0f64.to_bits();
        }
        self.criteria = 0;
        self.fresh_start = at;
    }
}

/// Calls `hit` for each fit rule that matches the lead's profile, in model
/// order; within an exclusive group only the first match counts.
pub fn for_each_fit_hit(lead: &Lead, model: &Model, mut hit: impl FnMut(usize, f64)) {
    let mut taken: u64 = 0;
    for (i, r) in model.fit_rules.iter().enumerate() {
        if let Some(g) = r.group {
            if taken & (1 << g) != 0 {
                continue;
            }
        }
        let v = lead.profile_value(&r.field).map(ProfileValue::as_ref);
        if r.matcher.test(v) {
            if let Some(g) = r.group {
                taken |= 1 << g;
            }
            hit(i, r.points);
        }
    }
}

/// Which disqualification rules match the profile ([`disq`] bits).
pub fn disqualifications(lead: &Lead, model: &Model) -> u8 {
    let d = &model.disqualify;
    let mut bits = 0;
    if let (Some(min), Some(ProfileValue::Num(n))) =
        (d.min_employees, lead.profile_value("employees"))
    {
        if n.fract() == 0.0 && *n < min {
            bits |= disq::TOO_SMALL;
        }
    }
    if let Some(domain) = lead.email_domain() {
        if !d.allow_free_mail && d.free_mail_domains.contains(domain.as_ref()) {
            bits |= disq::FREE_MAIL;
        }
        if d.academic_domains && is_academic(&domain) {
            bits |= disq::ACADEMIC_DOMAIN;
        }
        if d.competitor_domains.iter().any(|c| {
            *domain == **c
                || domain
                    .strip_suffix(c.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        }) {
            bits |= disq::COMPETITOR;
        }
    }
    if let Some(ProfileValue::Str(title)) = lead.profile_value("job_title") {
        let title = crate::model::lower_text(title);
        if d.job_title_contains
            .iter()
            .any(|k| title.contains(k.as_str()))
        {
            bits |= disq::ACADEMIC_TITLE;
        }
    }
    bits
}

/// `.edu`, or `ac` as the second-to-last label (`ox.ac.uk`).
pub fn is_academic(domain: &str) -> bool {
    if domain.ends_with(".edu") {
        return true;
    }
    let mut labels = domain.rsplit('.');
    labels.next();
    labels.next() == Some("ac")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn academic_domains() {
        assert!(is_academic("mit.edu"));
        assert!(is_academic("cs.stanford.edu"));
        assert!(is_academic("ox.ac.uk"));
        assert!(is_academic("ac.uk"));
        assert!(!is_academic("edu"));
        assert!(!is_academic("acme.com"));
        assert!(!is_academic("uk"));
        assert!(!is_academic("mac.com"));
    }

    #[test]
    fn recent_ids_remember_the_last_sixteen() {
        let m = Model::default_model();
        let mut l = Lead::new("L", &m);
        for i in 0..40u64 {
            assert!(!l.check_and_remember(i));
        }
        for i in 24..40u64 {
            assert!(l.check_and_remember(i), "{i} is among the last 16");
        }
        assert!(!l.check_and_remember(23));
    }

    #[test]
    fn hash_is_stable() {
        // Fingerprints live in the changelog: this value must never change.
        assert_eq!(hash64(b"evt-8f2c"), hash64(b"evt-8f2c"));
        assert_ne!(hash64(b"evt-8f2c"), hash64(b"evt-8f2d"));
        assert_ne!(hash64(b""), hash64(b"\0"));
        assert_ne!(hash64(b"abcdefgh"), hash64(b"abcdefgh\0"));
    }
}
