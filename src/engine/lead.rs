//! One lead's state, and the pure updates on it: decay, profile merge, fit
//! and disqualification, rule slots, the recent-id set.

use prost::encoding::{decode_varint, encode_varint, encoded_len_varint};

use crate::change::Stage;
use crate::event::Value;
use crate::model::{
    at_least, profile_field, FitRule, Model, Track, ValueRef, MAX_RATES, PROFILE_FIELDS,
};
use crate::time::Micros;

/// No time yet (a lead before its first event, or never recycled).
pub const NO_TIME: Micros = Micros::MIN;
/// No deadline.
pub const NEVER: Micros = Micros::MAX;

/// What each rate's contributions are multiplied by between two instants
/// (one factor per entry of [`Model::half_lives`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decay(pub [f64; MAX_RATES]);

impl Decay {
    /// No decay: every factor 1.
    pub const NONE: Decay = Decay([1.0; MAX_RATES]);

    /// The factor of an engagement rule's contribution.
    #[inline]
    pub fn of(&self, model: &Model, rule: usize) -> f64 {
        self.0[model.engagement_rules[rule].rate]
    }
}

/// What a contribution decaying with half-life `hl` is multiplied by from
/// `from` to `to` (1 unless `to` is later and `from` a time).
#[inline]
fn factor(hl: Option<f64>, from: Micros, to: Micros) -> f64 {
    match hl {
        Some(hl) if to > from && from != NO_TIME => (-((to - from) as f64) / hl).exp2(),
        _ => 1.0,
    }
}

/// The half-life of a rule (the model's own when it has one rate).
#[inline]
fn rule_half_life(model: &Model, rule: usize) -> Option<f64> {
    if model.multi_rate() {
        model.rule_half_life(rule)
    } else {
        model.half_life
    }
}

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

/// The SLA clock of the lead's current hand-off (its last change to `mql`
/// or `sql`), as bits of [`Lead::sla`].
pub(crate) mod sla {
    /// The hand-off waits for its first `sales_contacted`.
    pub const OPEN: u8 = 1;
    /// Its `follow_up_by` passed untouched and the breach was emitted.
    pub const BREACHED: u8 = 2;
    /// It went to the installed base's route (as the hand-off said).
    pub const INSTALLED: u8 = 4;
}

/// Disqualification rules that match, as bits.
pub mod disq {
    pub const TOO_SMALL: u8 = 1;
    pub const FREE_MAIL: u8 = 2;
    pub const ACADEMIC_DOMAIN: u8 = 4;
    pub const ACADEMIC_TITLE: u8 = 8;
    pub const COMPETITOR: u8 = 16;
    /// The company name is a competitor's (`competitor_names`).
    pub const COMPETITOR_NAME: u8 = 32;
    /// A named rule of `disqualify.rules` holds.
    pub const RULE: u8 = 64;
}

/// A profile value as stored, borrowed from the lead. `Other` is an array
/// or object: present, matched by no rule.
pub type ProfileValue<'a> = ValueRef<'a>;

pub fn value_ref<'a>(v: &'a Value<'_>) -> ValueRef<'a> {
    match v {
        Value::Str(s) => ValueRef::Str(s),
        Value::Num(n) => ValueRef::Num(*n),
        Value::Bool(b) => ValueRef::Bool(*b),
        Value::Null | Value::Other | Value::Map(_) => ValueRef::Other,
    }
}

/// A stable 64-bit hash of a string (lead ids in the table, event ids in the
/// recent set). Stable across builds: fingerprints are kept in the changelog.
///
/// Hand-written for that reason, not for speed: the changelog's recent-id
/// fingerprints are these values, so a crate's hash (whose values differ, or
/// may change between its versions, as foldhash's and rustc-hash's may)
/// would stop restored leads from recognising redelivered events.
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
///
/// The fixed-size state is in the struct; everything whose size varies
/// shares one heap block, `data`:
///
/// ```text
/// | id | recent event ids | rule slots | profile |
/// ```
///
/// - the id, `id_len` bytes of UTF-8;
/// - the fingerprints of recent event ids, 8 bytes each (little-endian),
///   with room for [`recent_capacity`] of them: the block grows in steps of
///   four ids, not on every event;
/// - the model's per-rule slots, 8 bytes each: engagement contributions at
///   `time` (f64 bits), then `every` counters, then cap timestamps;
/// - the profile, from `profile_at` to the end: one entry per field, in the
///   order the fields arrived (see [`put_entry`]).
///
/// One block rather than one allocation per part (and per profile string)
/// keeps a lead at two cache lines and one allocation after its table entry,
/// which is what bounds the fold on millions of leads.
///
/// `repr(C)` keeps the fields in the order written: what every fold reads
/// first, the score stream's fields last (read only when it is on).
#[derive(Debug, Clone, PartialEq)]
#[repr(C)]
pub struct Lead {
    /// The lead's clock: the latest `occurred_at` it has seen, or a fired timer's deadline.
    pub(crate) time: Micros,
    /// When it last entered `recycled` or `customer` (R), or [`NO_TIME`].
    pub(crate) fresh_start: Micros,
    pub(crate) stage_entered: Micros,
    /// Requalification deadline while `mql` or `sql`, else [`NEVER`].
    pub(crate) deadline: Micros,
    /// The fit rules the current profile matches, bit `i` for rule `i`
    /// (recomputed on profile change): fit is their sum, and explanations
    /// and contributors list them, without reading the profile again.
    pub(crate) fit_hits: u64,
    data: Box<[u8]>,
    id_len: u32,
    /// Where the profile starts in `data`.
    profile_at: u32,
    pub(crate) sequence: u32,
    /// Required criteria known true, one bit per `model.criteria` entry.
    pub(crate) criteria: u32,
    pub(crate) stage: Stage,
    pub(crate) flags: u8,
    /// Matching disqualification rules ([`disq`] bits), cached with `fit`.
    pub(crate) disq: u8,
    /// The SLA clock's state ([`sla`] bits; 0: no hand-off waiting).
    pub(crate) sla: u8,
    /// How many recent ids are remembered (up to [`RECENT_IDS`]).
    recent_len: u8,
    /// Once the recent ids are a full ring: the oldest, replaced next.
    pub(crate) recent_pos: u8,
    /// What few leads need, out of line ([`Extra`]); `None`: its defaults.
    extra: Option<Box<Extra>>,
}

/// A lead's state that only some leads need: the SLA clock of a hand-off
/// waiting for sales, and the score stream's (when it is on). Kept out of
/// line, so that the lead itself stays at 88 bytes: folding a million
/// leads is bound by memory, and with these fields in line (112 bytes) the
/// fold bench ran 14% slower (`fold/1M_leads`, 660-676k against 745-787k
/// events/s). Moving the requalification deadline out as well (80 bytes)
/// made the fold of leads that fit in cache slower still (`fold/10k_leads`
/// 1.14-1.22M against 1.77-2.06M events/s): it is read at every timer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Extra {
    /// `follow_up_by` of the current hand-off while it is [`sla::OPEN`],
    /// else [`NEVER`]. Its timer runs until the breach or the first touch.
    pub(crate) sla_due: Micros,
    /// The total of the last score record written.
    pub(crate) scored_total: f64,
    /// The score stream's clock: the lead's time, or a later instant at
    /// which a band timer fired (band timers do not move the lead's time,
    /// so that the status changes do not depend on the score stream).
    pub(crate) score_time: Micros,
    /// When decay alone next changes the lead's band, or [`NEVER`] (always
    /// [`NEVER`] while the engine does not track scores).
    pub(crate) band_deadline: Micros,
    /// The band of the last score record written ([`NO_BAND`]: none yet).
    pub(crate) scored_band: u8,
    /// The stage of the last score record written.
    pub(crate) scored_stage: Stage,
    /// The engagement events remembered for the model's window conditions
    /// (only a model with windows has any), oldest first.
    pub(crate) log: Option<Box<super::window::Log>>,
    /// The latest time of the lead's events, kept only under a model with
    /// `retention.inactive_after` (else [`NO_TIME`]): it expires that long after.
    pub(crate) last_event: Micros,
}

/// [`Extra`] of a lead that has none.
pub(crate) const NO_EXTRA: Extra = Extra {
    sla_due: NEVER,
    scored_total: 0.0,
    score_time: NO_TIME,
    band_deadline: NEVER,
    scored_band: NO_BAND,
    scored_stage: Stage::Lead,
    log: None,
    last_event: NO_TIME,
};

/// [`NO_EXTRA`] in a static, to lend out.
static NO_EXTRA_REF: Extra = NO_EXTRA;

/// [`Lead::scored_band`] before the lead's first score record.
pub const NO_BAND: u8 = u8::MAX;

/// Room for `len` recent ids: a multiple of four, at least four.
fn recent_capacity(len: usize) -> usize {
    len.max(1).next_multiple_of(4)
}

impl Lead {
    pub fn new(id: &str, model: &Model) -> Lead {
        let recent = 8 * recent_capacity(0);
        let slots = 8 * model.slots;
        let mut data = vec![0u8; id.len() + recent + slots];
        data[..id.len()].copy_from_slice(id.as_bytes());
        let mut lead = Lead {
            id_len: u32::try_from(id.len()).expect("a lead id under 4 GiB"),
            profile_at: u32::try_from(data.len()).expect("lead state under 4 GiB"),
            data: data.into_boxed_slice(),
            ..Lead::vacant()
        };
        for rule in &model.engagement_rules {
            if let Some(cap) = rule.cap {
                for s in cap.slot..cap.slot + cap.max as usize {
                    lead.set_slot(s, NO_TIME as u64);
                }
            }
        }
        lead
    }

    /// The state of a freed position in the engine (a removed lead's): no
    /// id, no block, no timers. Also every field's starting value for
    /// [`Lead::new`].
    pub(crate) fn vacant() -> Lead {
        Lead {
            time: NO_TIME,
            fresh_start: NO_TIME,
            stage_entered: NO_TIME,
            deadline: NEVER,
            fit_hits: 0,
            id_len: 0,
            profile_at: 0,
            data: Box::default(),
            sequence: 0,
            criteria: 0,
            stage: Stage::Lead,
            flags: 0,
            disq: 0,
            sla: 0,
            recent_len: 0,
            recent_pos: 0,
            extra: None,
        }
    }

    /// Whether this is a freed position (lead ids are never empty).
    #[inline]
    pub(crate) fn is_vacant(&self) -> bool {
        self.id_len == 0
    }

    pub fn id(&self) -> &str {
        std::str::from_utf8(self.id_bytes()).expect("a lead id is UTF-8")
    }

    /// The id as bytes (for comparisons: no UTF-8 check).
    #[inline]
    pub(crate) fn id_bytes(&self) -> &[u8] {
        &self.data[..self.id_len as usize]
    }

    /// Whether this is the lead with this id. Every event asks it once, of
    /// ids that are mostly 8 to 16 bytes: two word compares, not a `memcmp` call.
    #[inline]
    pub(crate) fn has_id(&self, id: &[u8]) -> bool {
        let mine = self.id_bytes();
        let n = id.len();
        if mine.len() != n {
            return false;
        }
        if (8..=16).contains(&n) {
            let word = |b: &[u8], at: usize| {
                u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
            };
            return word(mine, 0) == word(id, 0) && word(mine, n - 8) == word(id, n - 8);
        }
        mine == id
    }

    /// Where the block is (reading it loads the lead itself; for reading ahead).
    #[inline]
    pub(crate) fn block_addr(&self) -> usize {
        self.data.as_ptr() as usize
    }

    /// Reads one byte of each cache line of the block the fold reads first
    /// (the id, recent ids and rule slots; for reading ahead).
    #[inline]
    pub(crate) fn touch_block(&self) -> usize {
        let end = self.data.len().min(self.profile_at as usize + 64);
        (0..end)
            .step_by(64)
            .map(|i| usize::from(self.data[i]))
            .sum()
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    pub fn time(&self) -> Micros {
        self.time
    }

    /// Fit: the points of the fit rules the profile matches, summed in model order.
    #[inline]
    pub fn fit(&self, model: &Model) -> f64 {
        let mut fit = 0.0;
        self.for_each_fit_hit(model, |_, p| fit += p);
        fit
    }

    /// Calls `hit` with each fit rule the profile matches and its points, in model order.
    #[inline]
    pub fn for_each_fit_hit(&self, model: &Model, mut hit: impl FnMut(usize, f64)) {
        let mut bits = self.fit_hits;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            hit(i, model.fit_rules[i].points);
            bits &= bits - 1;
        }
    }

    #[inline]
    fn slots_at(&self) -> usize {
        self.id_len as usize + 8 * recent_capacity(usize::from(self.recent_len))
    }

    /// Per-rule slot `i` in the model's layout.
    #[inline]
    pub fn slot(&self, i: usize) -> u64 {
        let at = self.slots_at() + 8 * i;
        u64::from_le_bytes(self.data[at..at + 8].try_into().expect("8 bytes"))
    }

    #[inline]
    pub(crate) fn set_slot(&mut self, i: usize, v: u64) {
        let at = self.slots_at() + 8 * i;
        self.data[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// The first `n` slots (the engagement contributions, for `n` rules).
    #[inline]
    fn leading_slots(&self, n: usize) -> impl Iterator<Item = u64> + '_ {
        let at = self.slots_at();
        self.data[at..at + 8 * n]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
    }

    /// Engagement at the lead's time: the sum of the rules' contributions.
    #[inline]
    pub fn engagement(&self, model: &Model) -> f64 {
        self.leading_slots(model.engagement_rules.len())
            .map(f64::from_bits)
            .sum()
    }

    pub fn contribution(&self, rule: usize) -> f64 {
        f64::from_bits(self.slot(rule))
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

    /// The next instant a timer of this lead falls due, or [`NEVER`]: a
    /// stage timer ([`Lead::stage_due`]), the SLA clock's, the band timer
    /// of the score stream, or its expiry by retention.
    #[inline]
    pub fn next_due(&self, model: &Model) -> Micros {
        self.stage_due(model)
            .min(self.sla_timer())
            .min(self.x().band_deadline)
            .min(super::forget::expiry(self, model))
    }

    /// When the lead expires by the model's retention, or [`NEVER`].
    pub fn expires_at(&self, model: &Model) -> Option<Micros> {
        Some(super::forget::expiry(self, model)).filter(|&t| t != NEVER)
    }

    /// The next instant a timer that re-evaluates the stage falls due: the
    /// requalification deadline, the end of the quiet period, or (with
    /// `demote_on_score`) the instant decay takes an MQL below the
    /// requalification conditions.
    #[inline]
    pub fn stage_due(&self, model: &Model) -> Micros {
        let requal = if self.stage.is_qualified() {
            self.deadline
        } else {
            NEVER
        };
        let mut due = self.quiet_until(model).map_or(requal, |q| q.min(requal));
        if model.windows.any() {
            due = due.min(super::window::due(self, model));
        }
        if model.demote_on_score && self.stage == Stage::Mql {
            due.min(super::decay::demotion_due(self, model))
        } else {
            due
        }
    }

    /// Engagement at `at` (at or after the lead's time), decayed exactly as
    /// [`Lead::advance_time`] would, without moving the lead's clock.
    pub fn engagement_at(&self, model: &Model, at: Micros) -> f64 {
        let n = model.engagement_rules.len();
        if model.multi_rate() {
            let decay = self.decay_factor(model, at);
            return self
                .leading_slots(n)
                .zip(&model.engagement_rules)
                .map(|(v, r)| f64::from_bits(v) * decay.0[r.rate])
                .sum();
        }
        let factor = factor(model.half_life, self.time, at);
        self.leading_slots(n)
            .map(|v| f64::from_bits(v) * factor)
            .sum()
    }

    /// Engagement at `at` (at or after the lead's time) by rate: the
    /// contributions of the rules of each entry of [`Model::half_lives`],
    /// decayed with it.
    pub fn engagement_by_rate(&self, model: &Model, at: Micros) -> [f64; MAX_RATES] {
        let decay = self.decay_factor(model, at);
        let mut sums = [0.0; MAX_RATES];
        for (v, r) in self
            .leading_slots(model.engagement_rules.len())
            .zip(&model.engagement_rules)
        {
            sums[r.rate] += f64::from_bits(v) * decay.0[r.rate];
        }
        sums
    }

    /// What each rule's contribution is multiplied by from the lead's time to `at`.
    pub(crate) fn decay_factor(&self, model: &Model, at: Micros) -> Decay {
        let mut d = Decay::NONE;
        for (f, &hl) in d.0.iter_mut().zip(&model.half_lives) {
            *f = factor(hl, self.time, at);
        }
        d
    }

    /// When the SLA clock of the current hand-off runs out, while it runs.
    #[inline]
    pub fn sla_timer(&self) -> Micros {
        if self.sla & (sla::OPEN | sla::BREACHED) == sla::OPEN {
            self.x().sla_due
        } else {
            NEVER
        }
    }

    /// The open hand-off's `follow_up_by` (run out or not), until its first touch.
    pub fn follow_up_by(&self) -> Option<Micros> {
        (self.sla & sla::OPEN != 0).then_some(self.x().sla_due)
    }

    /// The lead's [`Extra`] (its defaults when it has none).
    #[inline]
    pub(crate) fn x(&self) -> &Extra {
        self.extra.as_deref().unwrap_or(&NO_EXTRA_REF)
    }

    /// The lead's [`Extra`], to change (made when it had none).
    pub(crate) fn x_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(|| Box::new(NO_EXTRA))
    }

    /// The events remembered for window conditions, oldest first.
    pub(crate) fn log(&self) -> &[super::window::Hit] {
        self.x().log.as_deref().map_or(&[], |l| l.hits.as_slice())
    }

    /// The events remembered for window conditions, to change.
    pub(crate) fn log_mut(&mut self) -> &mut Vec<super::window::Hit> {
        &mut self.x_mut().log.get_or_insert_with(Default::default).hits
    }

    /// Sets the SLA clock's `follow_up_by`; [`NEVER`] makes no [`Extra`],
    /// and drops one left with only defaults (so that equal states compare
    /// equal, whatever their history).
    pub(crate) fn set_sla_due(&mut self, due: Micros) {
        if due != NEVER || self.extra.is_some() {
            self.x_mut().sla_due = due;
        }
        if due == NEVER {
            self.shrink_extra();
        }
    }

    /// Drops an [`Extra`] that holds only defaults again.
    pub(crate) fn shrink_extra(&mut self) {
        if let Some(x) = &mut self.extra {
            if x.log.as_ref().is_some_and(|l| l.hits.is_empty()) {
                x.log = None;
            }
        }
        if self.extra.as_deref() == Some(&NO_EXTRA) {
            self.extra = None;
        }
    }

    /// Whether the open hand-off's breach was emitted (it is overdue and
    /// still untouched).
    pub fn sla_breached(&self) -> bool {
        self.sla & (sla::OPEN | sla::BREACHED) == sla::OPEN | sla::BREACHED
    }

    /// Moves the lead's clock forward to `to`, decaying its engagement.
    #[inline]
    pub fn advance_time(&mut self, to: Micros, model: &Model) {
        if to <= self.time {
            return;
        }
        if self.time != NO_TIME && model.multi_rate() {
            let decay = self.decay_factor(model, to);
            for (i, r) in model.engagement_rules.iter().enumerate() {
                let v = f64::from_bits(self.slot(i));
                if v != 0.0 {
                    self.set_slot(i, (v * decay.0[r.rate]).to_bits());
                }
            }
        } else if self.time != NO_TIME {
            if let Some(hl) = model.half_life {
                let factor = (-((to - self.time) as f64) / hl).exp2();
                for i in 0..model.engagement_rules.len() {
                    let v = f64::from_bits(self.slot(i));
                    if v != 0.0 {
                        self.set_slot(i, (v * factor).to_bits());
                    }
                }
            }
        }
        self.time = to;
    }

    /// Adds `points` scored at `at` (≤ the lead's time), decayed to the
    /// lead's time, within the limits of the rule's group and of engagement
    /// as a whole: positive points beyond a limit (as it stands at the
    /// lead's time) do not count.
    pub fn add_limited_points(&mut self, rule: usize, points: f64, at: Micros, model: &Model) {
        let mut decayed = match rule_half_life(model, rule) {
            Some(hl) if at < self.time => points * (-((self.time - at) as f64) / hl).exp2(),
            _ => points,
        };
        if decayed > 0.0 {
            let g = model.engagement_rules[rule]
                .group
                .map(|g| &model.engagement_groups[g]);
            if let Some((g, limit)) = g.and_then(|g| g.limit.map(|l| (g, l))) {
                let sum: f64 = g.rules.iter().map(|&r| self.contribution(r)).sum();
                decayed = decayed.min(limit - sum);
            }
            if let Some(limit) = model.engagement_limit {
                decayed = decayed.min(limit - self.engagement(model));
            }
            decayed = decayed.max(0.0);
        }
        let v = f64::from_bits(self.slot(rule)) + decayed;
        self.set_slot(rule, v.to_bits());
    }

    /// Adds `points` scored at `at` (≤ the lead's time), decayed to the lead's time.
    #[inline]
    pub fn add_points(&mut self, rule: usize, points: f64, at: Micros, model: &Model) {
        let decayed = match rule_half_life(model, rule) {
            Some(hl) if at < self.time => points * (-((self.time - at) as f64) / hl).exp2(),
            _ => points,
        };
        let v = f64::from_bits(self.slot(rule)) + decayed;
        self.set_slot(rule, v.to_bits());
    }

    /// The fingerprints of the recent event ids, oldest first until the ring is full.
    pub(crate) fn recent(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
        let at = self.id_len as usize;
        self.data[at..at + 8 * usize::from(self.recent_len)]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
    }

    /// Whether this event id was seen recently; remembers it if not.
    #[inline]
    pub fn check_and_remember(&mut self, fingerprint: u64) -> bool {
        if self.recent().any(|f| f == fingerprint) {
            return true;
        }
        let len = usize::from(self.recent_len);
        let i = if len < RECENT_IDS {
            if len == recent_capacity(len) {
                self.grow_recent(len);
            }
            self.recent_len += 1;
            len
        } else {
            let i = usize::from(self.recent_pos);
            self.recent_pos = ((i + 1) % RECENT_IDS) as u8;
            i
        };
        let at = self.id_len as usize + 8 * i;
        self.data[at..at + 8].copy_from_slice(&fingerprint.to_le_bytes());
        false
    }

    /// Makes room for four more recent ids after the `len` there are.
    fn grow_recent(&mut self, len: usize) {
        let at = self.id_len as usize + 8 * len;
        let extra = 8 * (recent_capacity(len + 1) - recent_capacity(len));
        let mut data = Vec::with_capacity(self.data.len() + extra);
        data.extend_from_slice(&self.data[..at]);
        data.resize(at + extra, 0);
        data.extend_from_slice(&self.data[at..]);
        self.data = data.into_boxed_slice();
        self.profile_at += extra as u32;
    }

    /// Puts back remembered ids (restoring a snapshot).
    pub(crate) fn set_recent(&mut self, ids: &[u64], pos: u8) {
        assert!(self.recent_len == 0 && ids.len() <= RECENT_IDS);
        for &f in ids {
            let len = usize::from(self.recent_len);
            if len == recent_capacity(len) {
                self.grow_recent(len);
            }
            let at = self.id_len as usize + 8 * len;
            self.data[at..at + 8].copy_from_slice(&f.to_le_bytes());
            self.recent_len += 1;
        }
        self.recent_pos = pos;
    }

    /// The profile's fields, in the order they arrived.
    pub fn profile(&self) -> impl Iterator<Item = (&str, ProfileValue<'_>)> + '_ {
        Entries::of(self).map(|e| (e.key.name(), e.value()))
    }

    pub fn profile_value(&self, field: &str) -> Option<ProfileValue<'_>> {
        let key = Key::of(field);
        Entries::of(self).find(|e| e.key == key).map(|e| e.value())
    }

    /// Merges profile fields (`null` removes one) and recomputes fit and
    /// disqualification.
    pub fn merge_profile(
        &mut self,
        fields: &[(std::borrow::Cow<'_, str>, Value<'_>)],
        model: &Model,
    ) {
        // A new block rather than `realloc`: the merged field list borrows
        // from the old one until the new one is written.
        let mut profile = FieldList::of(self);
        profile.merge(fields);
        let data = self.with_profile(profile.as_slice());
        let derived = Derived::of(&ProfileView::of(profile.as_slice()), model);
        drop(profile);
        self.data = data;
        self.set_derived(derived);
    }

    /// Replaces the profile (restoring a snapshot); does not recompute fit.
    pub(crate) fn set_profile(&mut self, fields: &[(&str, ValueRef<'_>)]) {
        let profile: Vec<_> = fields.iter().map(|&(k, v)| (Key::of(k), v)).collect();
        self.data = self.with_profile(&profile);
    }

    /// The block with its profile replaced by `profile`.
    fn with_profile(&self, profile: &[(Key<'_>, ValueRef<'_>)]) -> Box<[u8]> {
        let at = self.profile_at as usize;
        let len: usize = profile.iter().map(|&(k, v)| entry_len(k, v)).sum();
        let mut data = Vec::with_capacity(at + len);
        data.extend_from_slice(&self.data[..at]);
        for &(k, v) in profile {
            put_entry(&mut data, k, v);
        }
        debug_assert_eq!(data.len(), at + len);
        data.into_boxed_slice()
    }

    /// Recomputes what derives from the profile: fit, disqualification, `is_customer`.
    pub fn refresh_profile(&mut self, model: &Model) {
        let profile = FieldList::of(self);
        let derived = Derived::of(&ProfileView::of(profile.as_slice()), model);
        drop(profile);
        self.set_derived(derived);
    }

    fn set_derived(&mut self, d: Derived) {
        self.fit_hits = d.fit_hits;
        self.disq = d.disq;
        if d.customer {
            self.flags |= flags::PROFILE_CUSTOMER;
        } else {
            self.flags &= !flags::PROFILE_CUSTOMER;
        }
    }

    /// The lead's e-mail domain (after the last `@`), lower-cased.
    pub fn email_domain(&self) -> Option<std::borrow::Cow<'_, str>> {
        email_domain(self.profile_value("email"))
    }

    /// Whether the MQL conditions of the lead's track hold.
    pub fn meets_mql(&self, model: &Model) -> bool {
        let t = self.track(model);
        let e = self.engagement(model);
        at_least(e, t.mql_min_engagement)
            && t.mql_min_fit.is_none_or(|m| at_least(self.fit(model), m))
            && t.mql_min_total
                .is_none_or(|m| at_least(self.fit(model) + e, m))
            && super::window::all_hold(&t.mql_gates, self, model)
    }

    /// Whether requalification keeps the lead in its stage.
    pub fn requalifies(&self, model: &Model) -> bool {
        let t = self.track(model);
        let e = self.engagement(model);
        at_least(e, t.mql_min_engagement)
            && t.demotion_total
                .is_none_or(|d| at_least(self.fit(model) + e, d))
            && super::window::all_hold(&t.stays_while, self, model)
    }

    /// Whether the criteria rule makes an SQL: every required criterion is
    /// known true and every SQL condition holds (never, if the model
    /// requires neither).
    pub fn criteria_met(&self, model: &Model) -> bool {
        let mask = model.criteria_mask();
        if mask == 0 && model.sql_conditions.is_empty() {
            return false;
        }
        self.criteria & mask == mask && super::window::all_hold(&model.sql_conditions, self, model)
    }

    /// Recycling starts afresh at `at`: engagement to zero, criteria cleared.
    pub fn fresh_start(&mut self, at: Micros, model: &Model) {
        for i in 0..model.engagement_rules.len() {
            self.set_slot(i, 0f64.to_bits());
        }
        self.criteria = 0;
        self.fresh_start = at;
        // What the lead did before counts in no window of the new cycle.
        if let Some(x) = self.extra.as_deref_mut().filter(|x| x.log.is_some()) {
            x.log = None;
            self.shrink_extra();
        }
    }
}

/// A lead stores the names of [`PROFILE_FIELDS`] as a one-byte code (their
/// index there); any other name is stored in full after [`CUSTOM_KEY`].
const KNOWN_KEYS: [&str; 7] = PROFILE_FIELDS;
/// Codes of the fields the engine reads itself.
mod known {
    pub const EMAIL: u8 = 0;
    pub const COMPANY: u8 = 1;
    pub const EMPLOYEES: u8 = 2;
    pub const JOB_TITLE: u8 = 4;
    pub const IS_CUSTOMER: u8 = 6;
}
const CUSTOM_KEY: u8 = u8::MAX;

/// Tags of profile values in the block.
mod tag {
    pub const FALSE: u8 = 0;
    pub const TRUE: u8 = 1;
    /// Followed by the f64, 8 bytes little-endian.
    pub const NUM: u8 = 2;
    /// Followed by the length (varint) and the UTF-8 bytes.
    pub const STR: u8 = 3;
    pub const OTHER: u8 = 4;
}

/// A profile field name as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key<'a> {
    Known(u8),
    Custom(&'a str),
}

impl<'a> Key<'a> {
    fn of(name: &'a str) -> Key<'a> {
        match profile_field(name) {
            Some(i) => Key::Known(i),
            None => Key::Custom(name),
        }
    }

    fn name(self) -> &'a str {
        match self {
            Key::Known(i) => KNOWN_KEYS[usize::from(i)],
            Key::Custom(name) => name,
        }
    }
}

/// Reads a varint the lead wrote at `b[*at..]`, moving `at` past it.
fn read_varint(b: &[u8], at: &mut usize) -> usize {
    let mut rest = &b[*at..];
    let v = decode_varint(&mut rest).expect("the lead wrote a valid varint here");
    *at = b.len() - rest.len();
    // The lead wrote a usize, so it fits.
    v as usize
}

/// Bytes [`put_entry`] writes for this field.
fn entry_len(k: Key<'_>, v: ValueRef<'_>) -> usize {
    let key = match k {
        Key::Known(_) => 1,
        Key::Custom(name) => 1 + encoded_len_varint(name.len() as u64) + name.len(),
    };
    let value = match v {
        ValueRef::Bool(_) | ValueRef::Other => 1,
        ValueRef::Num(_) => 9,
        ValueRef::Str(s) => 1 + encoded_len_varint(s.len() as u64) + s.len(),
    };
    key + value
}

/// One profile entry: the key (a [`KNOWN_KEYS`] index, or [`CUSTOM_KEY`],
/// length and name), then the value ([`tag`] and its bytes).
fn put_entry(out: &mut Vec<u8>, k: Key<'_>, v: ValueRef<'_>) {
    match k {
        Key::Known(i) => out.push(i),
        Key::Custom(name) => {
            out.push(CUSTOM_KEY);
            encode_varint(name.len() as u64, out);
            out.extend_from_slice(name.as_bytes());
        }
    }
    match v {
        ValueRef::Bool(false) => out.push(tag::FALSE),
        ValueRef::Bool(true) => out.push(tag::TRUE),
        ValueRef::Num(n) => {
            out.push(tag::NUM);
            out.extend_from_slice(&n.to_le_bytes());
        }
        ValueRef::Str(s) => {
            out.push(tag::STR);
            encode_varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        ValueRef::Other => out.push(tag::OTHER),
    }
}

/// One entry of a stored profile; its value is decoded on demand.
#[derive(Clone, Copy)]
struct Entry<'a> {
    key: Key<'a>,
    tag: u8,
    /// The bytes after the tag.
    body: &'a [u8],
}

impl<'a> Entry<'a> {
    fn value(&self) -> ProfileValue<'a> {
        match self.tag {
            tag::FALSE => ValueRef::Bool(false),
            tag::TRUE => ValueRef::Bool(true),
            tag::NUM => ValueRef::Num(f64::from_le_bytes(self.body.try_into().expect("8 bytes"))),
            tag::STR => ValueRef::Str(utf8(self.body)),
            _ => ValueRef::Other,
        }
    }
}

fn utf8(b: &[u8]) -> &str {
    std::str::from_utf8(b).expect("profile text is stored as UTF-8")
}

/// Walks the profile entries of a lead's block.
struct Entries<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Entries<'a> {
    fn of(lead: &'a Lead) -> Entries<'a> {
        Entries {
            b: &lead.data,
            at: lead.profile_at as usize,
        }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let b = self.b;
        let &k = b.get(self.at)?;
        self.at += 1;
        let key = if k == CUSTOM_KEY {
            let n = read_varint(b, &mut self.at);
            let name = utf8(&b[self.at..self.at + n]);
            self.at += n;
            Key::Custom(name)
        } else {
            Key::Known(k)
        };
        let tag = b[self.at];
        self.at += 1;
        let n = match tag {
            tag::NUM => 8,
            tag::STR => read_varint(b, &mut self.at),
            _ => 0,
        };
        let body = &b[self.at..self.at + n];
        self.at += n;
        Some(Entry { key, tag, body })
    }
}

fn email_domain(email: Option<ProfileValue<'_>>) -> Option<std::borrow::Cow<'_, str>> {
    match email {
        // A byte search: `@` is ASCII, so it never sits inside a multi-byte character.
        Some(ProfileValue::Str(s)) => s
            .bytes()
            .rposition(|b| b == b'@')
            .map(|i| crate::model::lower_text(&s[i + 1..])),
        _ => None,
    }
}

/// What derives from a profile, computed together.
struct Derived {
    fit_hits: u64,
    disq: u8,
    customer: bool,
}

impl Derived {
    fn of(profile: &ProfileView<'_, '_>, model: &Model) -> Derived {
        Derived {
            fit_hits: fit_hits(profile, model),
            disq: disqualifications(profile, model),
            customer: matches!(
                profile.known(known::IS_CUSTOMER),
                Some(ProfileValue::Bool(true))
            ),
        }
    }
}

/// How many fields a [`FieldList`] holds before it moves to the heap
/// (generated leads have six).
const INLINE_FIELDS: usize = 12;

/// A profile's fields, decoded, in order: on the stack for the usual few,
/// because a merge builds one for every profile event.
struct FieldList<'a> {
    inline: [(Key<'a>, ValueRef<'a>); INLINE_FIELDS],
    len: usize,
    /// All the fields, once there are more than [`INLINE_FIELDS`].
    spill: Option<Vec<(Key<'a>, ValueRef<'a>)>>,
}

impl<'a> FieldList<'a> {
    fn of(lead: &'a Lead) -> FieldList<'a> {
        let mut list = FieldList {
            inline: [(Key::Known(0), ValueRef::Other); INLINE_FIELDS],
            len: 0,
            spill: None,
        };
        for e in Entries::of(lead) {
            list.push((e.key, e.value()));
        }
        list
    }

    /// Applies an event's fields in order: a value sets the field (new
    /// fields go last), `null` removes it.
    fn merge(&mut self, fields: &'a [(std::borrow::Cow<'_, str>, Value<'_>)]) {
        for (k, v) in fields {
            let key = Key::of(k);
            let pos = self.as_slice().iter().position(|(name, _)| *name == key);
            let new = match v {
                Value::Null => None,
                Value::Bool(b) => Some(ValueRef::Bool(*b)),
                Value::Num(n) => Some(ValueRef::Num(*n)),
                Value::Str(s) => Some(ValueRef::Str(s)),
                Value::Other | Value::Map(_) => Some(ValueRef::Other),
            };
            match (pos, new) {
                (Some(i), Some(v)) => self.as_mut_slice()[i].1 = v,
                (Some(i), None) => self.remove(i),
                (None, Some(v)) => self.push((key, v)),
                (None, None) => {}
            }
        }
    }

    fn as_slice(&self) -> &[(Key<'a>, ValueRef<'a>)] {
        match &self.spill {
            Some(v) => v,
            None => &self.inline[..self.len],
        }
    }

    fn as_mut_slice(&mut self) -> &mut [(Key<'a>, ValueRef<'a>)] {
        match &mut self.spill {
            Some(v) => v,
            None => &mut self.inline[..self.len],
        }
    }

    fn push(&mut self, field: (Key<'a>, ValueRef<'a>)) {
        match &mut self.spill {
            Some(v) => v.push(field),
            None if self.len < INLINE_FIELDS => {
                self.inline[self.len] = field;
                self.len += 1;
            }
            None => {
                let mut v = self.inline.to_vec();
                v.push(field);
                self.spill = Some(v);
            }
        }
    }

    fn remove(&mut self, i: usize) {
        match &mut self.spill {
            Some(v) => {
                v.remove(i);
            }
            None => {
                self.inline.copy_within(i + 1..self.len, i);
                self.len -= 1;
            }
        }
    }
}

/// A profile's fields by name (recomputing fit and disqualification looks
/// up a dozen of them): the known fields indexed, the rest searched.
struct ProfileView<'a, 'f> {
    /// The value of each of [`KNOWN_KEYS`].
    known: [Option<ValueRef<'a>>; KNOWN_KEYS.len()],
    fields: &'f [(Key<'a>, ValueRef<'a>)],
}

impl<'a, 'f> ProfileView<'a, 'f> {
    fn of(fields: &'f [(Key<'a>, ValueRef<'a>)]) -> ProfileView<'a, 'f> {
        let mut known = [None; KNOWN_KEYS.len()];
        for &(k, v) in fields {
            if let Key::Known(i) = k {
                known[usize::from(i)].get_or_insert(v);
            }
        }
        ProfileView { known, fields }
    }

    /// The value of the field with this [`KNOWN_KEYS`] code.
    fn known(&self, code: u8) -> Option<ProfileValue<'a>> {
        self.known[usize::from(code)]
    }

    /// The value of the field a fit rule tests.
    fn of_rule(&self, rule: &FitRule) -> Option<ProfileValue<'a>> {
        match rule.known_field {
            Some(code) => self.known(code),
            None => {
                let key = Key::Custom(&rule.field);
                self.fields.iter().find(|f| f.0 == key).map(|f| f.1)
            }
        }
    }
}

/// The fit rules that match the profile, as bits; within an exclusive
/// group only the first match counts.
fn fit_hits(profile: &ProfileView<'_, '_>, model: &Model) -> u64 {
    let mut taken: u64 = 0;
    let mut hits: u64 = 0;
    for (i, r) in model.fit_rules.iter().enumerate() {
        if let Some(g) = r.group {
            if taken & (1 << g) != 0 {
                continue;
            }
        }
        if r.matcher.test(profile.of_rule(r)) {
            if let Some(g) = r.group {
                taken |= 1 << g;
            }
            hits |= 1 << i;
        }
    }
    hits
}

/// Which disqualification rules match the profile ([`disq`] bits).
fn disqualifications(profile: &ProfileView<'_, '_>, model: &Model) -> u8 {
    let d = &model.disqualify;
    let mut bits = 0;
    if let (Some(min), Some(ProfileValue::Num(n))) =
        (d.min_employees, profile.known(known::EMPLOYEES))
    {
        if n.fract() == 0.0 && n < min {
            bits |= disq::TOO_SMALL;
        }
    }
    if let Some(domain) = email_domain(profile.known(known::EMAIL)) {
        if !d.allow_free_mail
            && d.free_mail_domains.contains(domain.as_ref())
            && !d
                .free_mail_exception
                .as_ref()
                .is_some_and(|c| c.holds(profile))
        {
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
    if let Some(ProfileValue::Str(title)) = profile.known(known::JOB_TITLE) {
        let title = crate::model::lower_text(title);
        if d.job_title_contains
            .iter()
            .any(|k| title.contains(k.as_str()))
        {
            bits |= disq::ACADEMIC_TITLE;
        }
    }
    if !d.competitor_names.is_empty() {
        if let Some(ProfileValue::Str(company)) = profile.known(known::COMPANY) {
            if d.competitor_names
                .contains(&crate::model::company_key(company))
            {
                bits |= disq::COMPETITOR_NAME;
            }
        }
    }
    if d.rules.iter().any(|r| r.holds(profile)) {
        bits |= disq::RULE;
    }
    bits
}

impl crate::model::Facts for ProfileView<'_, '_> {
    fn field(&self, name: &str, known: Option<u8>) -> Option<ValueRef<'_>> {
        match known {
            Some(code) => self.known(code),
            None => {
                let key = Key::Custom(name);
                self.fields.iter().find(|f| f.0 == key).map(|f| f.1)
            }
        }
    }

    /// Profile conditions have no windows (the model refuses them there).
    fn window(&self, _: &crate::model::Window) -> f64 {
        0.0
    }
}

/// `.edu`, or `ac` as the second-to-last label (`ox.ac.uk`).
pub fn is_academic(domain: &str) -> bool {
    if domain.ends_with(".edu") {
        return true;
    }
    // The second-to-last label is what lies between the last two dots.
    let Some(last_dot) = domain.bytes().rposition(|b| b == b'.') else {
        return false;
    };
    let rest = &domain[..last_dot];
    rest == "ac" || rest.ends_with(".ac")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lead_stays_small() {
        // The fold of a million leads is bound by memory: what only some
        // leads need lives in `Extra`, out of line.
        assert_eq!(std::mem::size_of::<Lead>(), 88);
    }

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
        assert!(!is_academic("bac.uk"));
        assert!(!is_academic("ac"));
        assert!(is_academic("a..ac.uk"));
        assert!(is_academic("x.ac."));
    }

    #[test]
    fn a_lead_knows_its_id_byte_for_byte() {
        let m = Model::default_model();
        for len in 0..40 {
            let id: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            let lead = Lead::new(&id, &m);
            assert!(lead.has_id(id.as_bytes()));
            assert!(!lead.has_id(format!("{id}x").as_bytes()));
            for at in 0..len {
                let mut other = id.clone().into_bytes();
                other[at] = b'Z';
                assert!(!lead.has_id(&other), "{id} vs a change at {at}");
            }
        }
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
