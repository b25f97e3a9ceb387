//! The scoring engine of one partition: folds events into lead state and
//! fires event-time timers, emitting status changes.
//!
//! `fold` and `advance_to` are synchronous and deterministic: no I/O, no wall
//! clock. The Kafka service, `leadscore score` and replay all drive this.

pub mod calllist;
mod decay;
mod explain;
mod forget;
mod index;
mod lead;
mod leads;
mod route;
mod sla;
pub mod snapshot;
mod stage;
mod timers;
mod window;

use std::sync::Arc;

pub use calllist::{CallList, CallListEntry, CallListQuery, Order, QueryError};
pub use explain::{half_life_text, Explanation};
pub use forget::Marker;
pub use lead::{disq, hash64, Lead, ProfileValue, NEVER, NO_TIME, RECENT_IDS};
pub use route::{is_aux_key, route, Local, Routed, VisitorLimits, VisitorStats, VisitorView};
pub use sla::Touch;
pub use stage::num as format_number;
pub use window::ConditionLine;

use crate::change::{ChangeKind, Contribution, Score, Stage, StatusChange};
use crate::event::{Event, Kind};
use crate::model::{self, Model};
use crate::score_record::ScoreRecord;
use crate::time::Micros;
use lead::{flags, value_ref};
use stage::{Cause, EventCause, Why};

/// What folding one event did (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Applied at or after the lead's time.
    Applied,
    /// Applied, older than the lead's time: its points were decayed to the lead's time.
    Late,
    /// Older than the lead's last fresh start: only a profile or `deal_won` counted.
    Stale,
    /// Its `event_id` was seen recently: nothing changed.
    Duplicate,
    /// Its lead waits for an anonymous visitor's events (an identification
    /// in flight between partitions): kept, and folded when they arrive.
    Held,
    /// Its lead was erased at most `retention.erasure_window` before it:
    /// dropped.
    Erased,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Late => "late",
            Outcome::Stale => "stale",
            Outcome::Duplicate => "duplicate",
            Outcome::Held => "held",
            Outcome::Erased => "erased",
        }
    }
}

/// How many events [`Engine::fold_batch`] reads ahead.
pub const LOOKAHEAD: usize = 16;

/// How many contributors a change lists.
pub const TOP_CONTRIBUTORS: usize = 3;

/// The state of one partition's leads, with its watermark and timers.
pub struct Engine {
    model: Arc<Model>,
    /// Subtracted from the largest event time seen to make the watermark.
    lateness: Micros,
    watermark: Micros,
    leads: leads::Leads,
    /// Lead id (its hash) → index into `leads`.
    index: index::Index,
    /// Pending timers, earliest first. Entries go stale when a lead's timer
    /// moves; they are checked against the lead when they come due.
    timers: timers::Timers,
    /// Leads changed since the last [`Engine::drain_dirty`].
    dirty: Vec<u32>,
    scratch: Vec<u32>,
    /// Anonymous visitors, and leads waiting for a visitor's handoff.
    visitors: route::Visitors,
    /// Leads by stage, for the call list.
    stages: calllist::StageIndex,
    /// First touches of hand-offs since the last [`Engine::drain_touches`],
    /// kept only when asked for ([`Engine::record_touches`]).
    touches: Option<Vec<Touch>>,
    /// Whether the score stream is kept: band timers and
    /// [`Engine::drain_scores`]. Off, it costs a branch per event.
    scores: bool,
    /// Whether the model removes quiet leads (`retention.inactive_after`):
    /// each lead keeps its last event's time, and has an expiry timer.
    retain: bool,
    /// Erasure markers, and the leads removed since the last changelog write.
    forget: forget::Forget,
}

impl Engine {
    pub fn new(model: Arc<Model>) -> Engine {
        Engine::with_lateness(model, 0)
    }

    /// An engine whose watermark trails the largest event time by `lateness`.
    pub fn with_lateness(model: Arc<Model>, lateness: Micros) -> Engine {
        let model_retains = model.retention.inactive_after.is_some();
        let mut engine = Engine {
            model,
            lateness,
            watermark: NO_TIME,
            leads: leads::Leads::default(),
            index: index::Index::default(),
            timers: timers::Timers::default(),
            dirty: Vec::new(),
            scratch: Vec::new(),
            visitors: route::Visitors::default(),
            stages: calllist::StageIndex::default(),
            touches: None,
            scores: false,
            retain: model_retains,
            forget: forget::Forget::default(),
        };
        engine.set_marker_key("leadscore");
        engine
    }

    /// Keeps each hand-off's first touch for [`Engine::drain_touches`] (the
    /// service's metrics, the backtest); off by default, so that nothing
    /// piles up where no one drains.
    pub fn record_touches(&mut self, on: bool) {
        self.touches = on.then(Vec::new);
    }

    /// Takes the first touches recorded since the last call.
    pub fn drain_touches(&mut self, f: impl FnMut(Touch)) {
        if let Some(t) = &mut self.touches {
            t.drain(..).for_each(f);
        }
    }

    /// Keeps the score stream: band timers, and the records that
    /// [`Engine::drain_scores`] hands out. Call it before folding or
    /// restoring anything.
    pub fn track_scores(&mut self) {
        self.scores = true;
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn watermark(&self) -> Micros {
        self.watermark
    }

    pub fn lead_count(&self) -> usize {
        self.leads.len()
    }

    /// Timers waiting (including entries that went stale and will be skipped).
    pub fn timers_pending(&self) -> usize {
        self.timers.len()
    }

    pub fn lead(&self, id: &str) -> Option<&Lead> {
        self.find(id).map(|i| &self.leads[i as usize])
    }

    pub fn leads(&self) -> impl Iterator<Item = &Lead> {
        self.leads.iter()
    }

    fn find(&self, id: &str) -> Option<u32> {
        self.find_hashed(id, hash64(id.as_bytes()) as u32)
    }

    #[inline]
    fn find_hashed(&self, id: &str, hash: u32) -> Option<u32> {
        let leads = &self.leads;
        self.index
            .find(hash, |i| leads[i as usize].has_id(id.as_bytes()))
    }

    fn find_or_insert(&mut self, id: &str) -> u32 {
        self.find_or_insert_hashed(id, hash64(id.as_bytes()) as u32)
    }

    #[inline]
    fn find_or_insert_hashed(&mut self, id: &str, hash: u32) -> u32 {
        if let Some(idx) = self.find_hashed(id, hash) {
            return idx;
        }
        self.insert_new(id, hash)
    }

    /// Adds a lead that is not in the engine yet.
    fn insert_new(&mut self, id: &str, hash: u32) -> u32 {
        let idx = u32::try_from(self.leads.push(Lead::new(id, &self.model)))
            .expect("fewer than 4 billion leads per partition");
        self.index.insert(hash, idx);
        idx
    }

    /// Folds one valid event: fires the timers it makes due, applies it to its
    /// lead, and appends any status changes to `out`.
    pub fn fold(&mut self, event: &Event<'_>, out: &mut Vec<StatusChange>) -> Outcome {
        if self.visitors.is_waiting(&event.lead_id) {
            return self.hold(Routed::Lead(event.clone().into_owned()), out);
        }
        self.fold_hashed(event, hash64(event.lead_id.as_bytes()) as u32, out)
    }

    /// Folds `events` in order, exactly as [`Engine::fold`] one by one would,
    /// calling `each` with each event's outcome; changes go to `out`.
    ///
    /// On millions of leads a fold mostly waits for memory: the index slot,
    /// the lead, then its block, each depending on the one before. Here the
    /// leads of [`LOOKAHEAD`] events are read ahead, one level at a time
    /// for all of them, so those reads overlap instead of queueing.
    pub fn fold_batch(
        &mut self,
        events: &[Event<'_>],
        out: &mut Vec<StatusChange>,
        mut each: impl FnMut(Outcome),
    ) {
        let mut hashes = [0u32; LOOKAHEAD];
        for chunk in events.chunks(LOOKAHEAD) {
            for (h, e) in hashes.iter_mut().zip(chunk) {
                *h = hash64(e.lead_id.as_bytes()) as u32;
            }
            self.read_ahead(&hashes[..chunk.len()]);
            for (e, &h) in chunk.iter().zip(&hashes) {
                if self.visitors.is_waiting(&e.lead_id) {
                    each(self.hold(Routed::Lead(e.clone().into_owned()), out));
                    continue;
                }
                each(self.fold_hashed(e, h, out));
            }
        }
    }

    /// Reads the memory the leads with these id hashes live in (plain safe
    /// loads: the CPU overlaps independent ones), so the folds that follow
    /// find it in cache. A lead not in the index yet, or a slot of another
    /// lead with the same hash bits, only costs a wasted read.
    fn read_ahead(&self, hashes: &[u32]) {
        let mut found = [u32::MAX; LOOKAHEAD];
        for (f, &h) in found.iter_mut().zip(hashes) {
            *f = self.index.first_with(h).unwrap_or(u32::MAX);
        }
        let mut sink = 0usize;
        for &f in &found[..hashes.len()] {
            if let Some(lead) = self.leads.get(f as usize) {
                sink ^= lead.block_addr();
            }
        }
        for &f in &found[..hashes.len()] {
            if let Some(lead) = self.leads.get(f as usize) {
                sink ^= lead.touch_block();
            }
        }
        std::hint::black_box(sink);
    }

    pub(crate) fn fold_hashed(
        &mut self,
        event: &Event<'_>,
        hash: u32,
        out: &mut Vec<StatusChange>,
    ) -> Outcome {
        let t = event.occurred_at;
        // Every valid event moves the watermark, duplicates included.
        self.advance_to(t.saturating_sub(self.lateness), out);
        if event.kind == Kind::LeadErased {
            return self.erase(event, hash, out);
        }
        let mut idx = match self.find_hashed(&event.lead_id, hash) {
            Some(idx) => idx,
            None => match self.create(&event.lead_id, hash, t) {
                Some(idx) => idx,
                None => return Outcome::Erased,
            },
        };
        // A duplicate changes nothing but the watermark (moved above).
        let fingerprint = hash64(event.event_id.as_bytes());
        if self.leads[idx as usize].check_and_remember(fingerprint) {
            return Outcome::Duplicate;
        }
        // The lead's own timers fire before any of its events past (or at) their deadline.
        loop {
            let due = self.next_due(idx);
            if due > t {
                break;
            }
            self.fire(idx, due, out);
        }
        if self.retain && self.leads[idx as usize].is_vacant() {
            // It expired by retention before this event: a new lead starts.
            idx = self.insert_new(&event.lead_id, hash);
            self.leads[idx as usize].check_and_remember(fingerprint);
        }
        // Timers that move with every event (band, demotion by decay) are
        // queued lazily: see `requeue`.
        let lazy = self.lazy_timers();
        let due_before = if lazy {
            self.leads[idx as usize].next_due(&self.model)
        } else {
            NEVER
        };
        self.touch(idx);
        let model = &*self.model;
        let lead = &mut self.leads[idx as usize];
        let outcome = if t < lead.fresh_start {
            Outcome::Stale
        } else if t < lead.time {
            Outcome::Late
        } else {
            Outcome::Applied
        };
        lead.advance_time(t, model);
        if self.retain {
            let x = lead.x_mut();
            x.last_event = x.last_event.max(t);
        }
        let stale = outcome == Outcome::Stale;
        let mut cause = EventCause::default();
        let mut stopped_clock = false;
        match event.kind {
            Kind::ProfileUpdated => lead.merge_profile(&event.profile, model),
            Kind::DealWon => {
                lead.flags |= flags::DEAL_WON;
                cause.deal_won = true;
            }
            // Everything else of an event older than the fresh start belongs
            // to the cycle that ended.
            _ if stale => {}
            Kind::QualificationUpdated => {
                for (name, known) in &event.criteria {
                    if let Some(i) = model.criterion_index(name) {
                        if *known {
                            lead.criteria |= 1 << i;
                        } else {
                            lead.criteria &= !(1 << i);
                        }
                    }
                }
            }
            Kind::SalesAccepted => cause.sales_accepted = true,
            Kind::SalesRejected => {
                let reason = event.reason.as_deref().unwrap_or("");
                if reason.eq_ignore_ascii_case("disqualified") && !lead.installed_base() {
                    lead.flags |= flags::REJECTED_DISQ;
                }
                cause.sales_rejected = Some(reason);
            }
            Kind::DealLost => cause.deal_lost = true,
            Kind::SalesContacted => {
                if let Some(touch) = sla::touch(lead, t) {
                    stopped_clock = true;
                    if let Some(v) = &mut self.touches {
                        v.push(touch);
                    }
                }
            }
            Kind::Engagement => {}
            Kind::LeadErased => unreachable!("folded by `erase`"),
        }
        if !stale {
            score_engagement(lead, model, event);
        }
        if lead.installed_base() {
            // The sticky rejection lasts until the lead becomes installed base.
            lead.flags &= !flags::REJECTED_DISQ;
        }
        let at = lead.time;
        if let Some((to, why)) = stage::decide(lead, model, Cause::Event(cause), at) {
            let from = lead.stage;
            out.push(transition(
                lead,
                model,
                to,
                why,
                at,
                Some(&event.event_id),
                cause.sales_rejected,
            ));
            self.stages.moved(idx, from, to);
            self.schedule(idx);
            // A lead far behind its partition can get a deadline the watermark
            // has already passed: it is due now.
            loop {
                let due = self.next_due(idx);
                if due > self.watermark {
                    break;
                }
                self.fire(idx, due, out);
            }
        } else if stopped_clock {
            // The heap may hold only the clock's (now stale) entry, the
            // lead's earliest: its next timer needs an entry of its own.
            self.schedule(idx);
        }
        if lazy {
            self.requeue(idx, due_before);
        }
        outcome
    }

    /// After an event, with timers that move with every event (the band
    /// timer of the score stream, the demotion by decay of
    /// `demote_on_score`): recomputes the band timer, and queues the lead's
    /// next timer if it moved earlier than `before` (its next timer before
    /// the event, which has an entry in the queue at or before it). One
    /// that moved later is queued again when that entry comes due
    /// ([`Engine::advance_to`]), so that a busy lead does not leave an entry
    /// per event in the queue.
    fn requeue(&mut self, idx: u32, before: Micros) {
        let model = &*self.model;
        let lead = &mut self.leads[idx as usize];
        if self.scores {
            let at = lead.x().score_time.max(lead.time);
            let due = decay::band_deadline(lead, model, at);
            let x = lead.x_mut();
            x.score_time = at;
            x.band_deadline = due;
        }
        let next = lead.next_due(model);
        if next < before {
            self.timers.push(next, idx);
        }
    }

    /// Whether a lead's timers move with every event (the band timer, the
    /// retention expiry, the demotion by decay, the windows of conditions)
    /// and are queued lazily.
    #[inline]
    fn lazy_timers(&self) -> bool {
        self.scores || self.retain || self.model.demote_on_score || self.model.windows.any()
    }

    /// The lead's next timer. Without a score stream its band timer is
    /// never set, so only the stage timers and the SLA clock are read (the
    /// fold then does not touch the score fields at the end of the lead).
    #[inline(always)]
    fn next_due(&self, idx: u32) -> Micros {
        let lead = &self.leads[idx as usize];
        if self.scores || self.retain {
            lead.next_due(&self.model)
        } else {
            lead.stage_due(&self.model).min(lead.sla_timer())
        }
    }

    fn touch(&mut self, idx: u32) {
        let lead = &mut self.leads[idx as usize];
        if lead.flags & flags::DIRTY == 0 {
            lead.flags |= flags::DIRTY;
            self.dirty.push(idx);
        }
    }

    /// Moves the watermark to `watermark` (never back) and fires every timer
    /// due by then, in deadline order, then lead id.
    pub fn advance_to(&mut self, watermark: Micros, out: &mut Vec<StatusChange>) {
        if watermark <= self.watermark {
            return;
        }
        self.watermark = watermark;
        while let Some((due, _)) = self.timers.peek() {
            if due > watermark {
                break;
            }
            let mut batch = std::mem::take(&mut self.scratch);
            batch.clear();
            while let Some((d, idx)) = self.timers.peek() {
                if d != due {
                    break;
                }
                self.timers.pop();
                batch.push(idx);
            }
            batch.sort_unstable_by(|&a, &b| {
                let leads = &self.leads;
                leads[a as usize]
                    .id_bytes()
                    .cmp(leads[b as usize].id_bytes())
            });
            batch.dedup();
            for &idx in &batch {
                let next = self.next_due(idx);
                // A lead waiting for a visitor's handoff fires once it has it.
                // (`any_waiting` first: the id's UTF-8 check costs every
                // timer a few percent on millions of leads otherwise.)
                if next == due
                    && !(self.visitors.any_waiting()
                        && self.visitors.is_waiting(self.leads[idx as usize].id()))
                {
                    self.fire(idx, due, out);
                } else if self.lazy_timers() && next > due && next != NEVER {
                    // A timer that moved later (see `requeue`).
                    self.timers.push(next, idx);
                }
            }
            self.scratch = batch;
        }
        self.expire_visitors(watermark);
    }

    /// Fires the lead's timers due at `due`.
    fn fire(&mut self, idx: u32, due: Micros, out: &mut Vec<StatusChange>) {
        self.touch(idx);
        let model = &*self.model;
        let lead = &mut self.leads[idx as usize];
        // The follow-up was due while the lead was still handed off: the
        // breach comes before anything the same instant does to the stage.
        if lead.sla_timer() <= due {
            out.push(sla::breach(lead, model, due));
        }
        // The SLA clock and a band timer only watch: alone, they neither
        // move the lead's time nor re-evaluate its stage, so that stage
        // changes are what they would be without them. The SLA clock alone
        // does not move the score stream's clock either (a breach changes
        // no score).
        let stage_timer = lead.stage_due(model) <= due;
        let score_timer = stage_timer || lead.x().band_deadline <= due;
        if stage_timer {
            lead.advance_time(due, model);
            let requal = lead.stage.is_qualified() && lead.deadline <= due;
            match stage::decide(lead, model, Cause::Timer { requal }, due) {
                Some((to, why)) => {
                    let from = lead.stage;
                    out.push(transition(lead, model, to, why, due, None, None));
                    self.stages.moved(idx, from, to);
                }
                None if requal => {
                    // Requalified: same stage, next deadline one window later.
                    lead.deadline = lead.deadline.saturating_add(window(model, lead.stage));
                }
                None => {}
            }
        }
        if self.scores && score_timer {
            let at = lead.x().score_time.max(due);
            let next = decay::band_deadline(lead, model, at);
            let x = lead.x_mut();
            x.score_time = at;
            x.band_deadline = next;
        }
        // Last: whatever else fell due at the same instant fired first.
        if self.retain && forget::expiry(lead, model) <= due {
            self.expire(idx, due, out);
            return;
        }
        self.schedule(idx);
    }

    fn schedule(&mut self, idx: u32) {
        let due = self.next_due(idx);
        if due != NEVER {
            self.timers.push(due, idx);
        }
    }

    /// Hands out the score records due among the leads changed since the
    /// last [`Engine::drain_dirty`]: a lead's first, then one whenever its
    /// stage or band differs from the last record's, or its total has moved
    /// by at least the model's `score_min_delta`. Each record is of the
    /// lead's state at the score stream's clock (its time, or a later band
    /// timer). Call it before `drain_dirty` (which ends the interval), in
    /// the transaction that writes the changelog: the lead's state remembers
    /// the record written. Nothing without [`Engine::track_scores`].
    pub fn drain_scores(&mut self, mut f: impl FnMut(ScoreRecord)) {
        if !self.scores {
            return;
        }
        let model = &*self.model;
        for &idx in &self.dirty {
            let lead = &mut self.leads[idx as usize];
            if lead.time == NO_TIME {
                continue;
            }
            let at = lead.x().score_time.max(lead.time);
            let decay = lead.decay_factor(model, at);
            let engagement = lead.engagement_at(model, at);
            let fit = lead.fit(model);
            let total = fit + engagement;
            let band = model.band(total);
            let x = lead.x();
            let due = x.scored_band == lead::NO_BAND
                || usize::from(x.scored_band) != band
                || x.scored_stage != lead.stage
                || model::at_least((total - x.scored_total).abs(), model.score_min_delta);
            if !due {
                continue;
            }
            let stage = lead.stage;
            let x = lead.x_mut();
            x.score_time = at;
            x.scored_band = band as u8;
            x.scored_stage = stage;
            x.scored_total = total;
            // The SLA clock is not among them: a breach changes no score.
            let next = lead.stage_due(model).min(lead.x().band_deadline);
            f(ScoreRecord {
                lead_id: lead.id().to_string(),
                stage: lead.stage,
                fit,
                engagement,
                total,
                band: model.bands[band].name.clone(),
                as_of: at,
                half_life_micros: model.half_life,
                next_deadline: (next != NEVER).then_some(next),
                top_contributors: top_contributors(lead, model, &decay),
                model_version: model.version.clone(),
                components: components(lead, model, at),
            });
        }
    }

    /// Takes the leads changed since the last call (each once), for the changelog.
    pub fn drain_dirty(&mut self, mut f: impl FnMut(&Lead)) {
        for idx in self.dirty.drain(..) {
            let lead = &mut self.leads[idx as usize];
            // Removed since (vacant), or listed twice after its position
            // was reused: written once, or not at all.
            if lead.flags & flags::DIRTY == 0 {
                continue;
            }
            lead.flags &= !flags::DIRTY;
            f(lead);
        }
    }

    /// Puts a restored lead in place (from the changelog), replacing any
    /// state of the same id, and schedules its timer.
    pub fn restore(&mut self, mut lead: Lead) {
        lead.flags &= !flags::DIRTY;
        if self.scores && lead.x().band_deadline == NEVER && lead.time != NO_TIME {
            // State written without a score stream (before it was turned
            // on, or by an engine that does not keep it): its band timer
            // starts now; a first record follows its next event or timer.
            let at = lead.x().score_time.max(lead.time);
            let due = decay::band_deadline(&lead, &self.model, at);
            let x = lead.x_mut();
            x.score_time = at;
            x.band_deadline = due;
        }
        if self.retain && lead.x().last_event == NO_TIME && lead.time != NO_TIME {
            // Written before the model removed quiet leads: its quiet
            // period counts from its time.
            lead.x_mut().last_event = lead.time;
        } else if !self.retain && lead.x().last_event != NO_TIME {
            lead.x_mut().last_event = NO_TIME;
            lead.shrink_extra();
        }
        if !self.scores {
            // Written with a score stream that is now off: no band timer.
            if lead.x().band_deadline != NEVER {
                lead.x_mut().band_deadline = NEVER;
                lead.shrink_extra();
            }
        }
        let idx = self.find_or_insert(lead.id());
        self.stages
            .moved(idx, self.leads[idx as usize].stage, lead.stage);
        self.leads[idx as usize] = lead;
        self.schedule(idx);
    }

    /// Sets the watermark without firing timers (after a restore: what was
    /// due then has already fired before the state was written).
    pub fn set_watermark(&mut self, watermark: Micros) {
        self.watermark = self.watermark.max(watermark);
    }

    /// A breakdown of the lead's state and score at `at` (its own time if
    /// `None` or earlier), rule by rule.
    pub fn explain(&self, id: &str, at: Option<Micros>) -> Option<Explanation> {
        self.lead(id).map(|l| explain::explain(l, &self.model, at))
    }
}

/// Moves the lead to `to` at `at` and builds the change.
fn transition(
    lead: &mut Lead,
    model: &Model,
    to: Stage,
    why: Why,
    at: Micros,
    cause_event_id: Option<&str>,
    rejected_reason: Option<&str>,
) -> StatusChange {
    let reasons = stage::reasons(lead, model, why, rejected_reason);
    let from = lead.stage;
    lead.stage = to;
    lead.stage_entered = at;
    lead.sequence += 1;
    lead.deadline = if to.is_qualified() {
        at.saturating_add(window(model, to))
    } else {
        NEVER
    };
    if matches!(to, Stage::Recycled | Stage::Customer) {
        lead.fresh_start(at, model);
    }
    let engagement = lead.engagement(model);
    let fit = lead.fit(model);
    let total = fit + engagement;
    let band = model.band(total);
    let (route, follow_up_by) = if to.is_qualified() {
        let track = lead.track(model);
        let sla = if to == Stage::Sql {
            track.sla_sql
        } else if band == model.hot_band {
            track.sla_hot_mql
        } else {
            track.sla_mql
        };
        (
            Some(track.route.clone()),
            Some(sla.due(at, &track.calendar)),
        )
    } else {
        (None, None)
    };
    sla::hand_off(lead, to, follow_up_by);
    StatusChange {
        kind: ChangeKind::StageChanged,
        change_id: change_id(lead.id(), lead.sequence),
        lead_id: lead.id().to_string(),
        sequence: u64::from(lead.sequence),
        from,
        to,
        occurred_at: at,
        score: Score {
            total,
            fit,
            engagement,
        },
        band: model.bands[band].name.clone(),
        reasons,
        top_contributors: top_contributors(lead, model, &lead::Decay::NONE),
        route,
        follow_up_by,
        model_version: model.version.clone(),
        cause_event_id: cause_event_id.map(str::to_string),
    }
}

/// `<lead_id>:<sequence>` (without `format!`: a change is built for one
/// event in four).
fn change_id(lead: &str, sequence: u32) -> String {
    let mut id = String::with_capacity(lead.len() + 11);
    id.push_str(lead);
    id.push(':');
    stage::push_digits(&mut id, u64::from(sequence));
    id
}

fn window(model: &Model, stage: Stage) -> Micros {
    if stage == Stage::Sql {
        model.sql_window
    } else {
        model.mql_window
    }
}

/// Whether the rule's attribute tests pass on the event.
fn rule_matches(rule: &crate::model::EngagementRule, event: &Event<'_>) -> bool {
    rule.attributes
        .iter()
        .all(|(name, m)| m.test(event.attribute(name).map(value_ref)))
}

/// Applies the engagement rules of the event's type.
fn score_engagement(lead: &mut Lead, model: &Model, event: &Event<'_>) {
    for &ri in model.rules_for(&event.event_type) {
        let rule = &model.engagement_rules[ri];
        if !rule_matches(rule, event) {
            continue;
        }
        let t = event.occurred_at;
        let scored = score_rule(lead, model, rule, ri, t);
        if model.windows.any() {
            window::record(lead, model, ri, t, scored);
        }
    }
}

/// Scores one matching rule's event at `t` (its `every` and `cap`
/// permitting); whether it scored.
#[inline]
fn score_rule(
    lead: &mut Lead,
    model: &Model,
    rule: &crate::model::EngagementRule,
    ri: usize,
    t: Micros,
) -> bool {
    if let Some((every, slot)) = rule.every {
        let n = lead.slot(slot) + 1;
        lead.set_slot(slot, n);
        if !n.is_multiple_of(u64::from(every)) {
            return false;
        }
    }
    if let Some(cap) = rule.cap {
        let ring = cap.slot..cap.slot + cap.max as usize;
        let in_window = ring
            .clone()
            .filter(|&i| {
                let s = lead.slot(i) as i64;
                s != NO_TIME && s <= t && t - s < cap.window
            })
            .count();
        if in_window >= cap.max as usize {
            return false;
        }
        // Replace the oldest remembered occurrence.
        let oldest = ring
            .min_by_key(|&i| lead.slot(i) as i64)
            .expect("cap.max >= 1");
        lead.set_slot(oldest, t as u64);
    }
    if model.has_limits() {
        lead.add_limited_points(ri, rule.points, t, model);
    } else {
        lead.add_points(ri, rule.points, t, model);
    }
    true
}

/// The record's engagement by half-life, when the model has several.
fn components(lead: &Lead, model: &Model, at: Micros) -> Vec<crate::score_record::Component> {
    if !model.multi_rate() {
        return Vec::new();
    }
    let sums = lead.engagement_by_rate(model, at);
    model
        .half_lives
        .iter()
        .zip(sums)
        .map(
            |(&half_life_micros, engagement)| crate::score_record::Component {
                half_life_micros,
                engagement,
            },
        )
        .collect()
}

/// The rules that weigh most in the lead's score now (fit and engagement),
/// largest first, ties by name.
/// `decay` scales the engagement contributions, each by its rule's factor
/// (to show them at a later instant than the lead's time).
fn top_contributors(lead: &Lead, model: &Model, decay: &lead::Decay) -> Vec<Contribution> {
    // The best few so far, in order (no list of all of them to sort).
    let mut top = Top::default();
    lead.for_each_fit_hit(model, |i, p| top.offer(p, &model.fit_rules[i].name));
    for (i, r) in model.engagement_rules.iter().enumerate() {
        top.offer(lead.contribution(i) * decay.of(model, i), &r.name);
    }
    top.best[..top.len]
        .iter()
        .map(|&(points, rule)| Contribution {
            rule: rule.to_string(),
            points,
        })
        .collect()
}

/// The [`TOP_CONTRIBUTORS`] largest contributions offered: by size
/// (absolute), then name.
#[derive(Default)]
struct Top<'m> {
    best: [(f64, &'m str); TOP_CONTRIBUTORS],
    len: usize,
}

impl<'m> Top<'m> {
    fn offer(&mut self, points: f64, rule: &'m str) {
        if points == 0.0 {
            return;
        }
        let ahead = |b: &(f64, &str)| {
            points
                .abs()
                .total_cmp(&b.0.abs())
                .then_with(|| b.1.cmp(rule))
                .is_gt()
        };
        let at = self.best[..self.len]
            .iter()
            .position(ahead)
            .unwrap_or(self.len);
        if at < TOP_CONTRIBUTORS {
            let end = self.len.min(TOP_CONTRIBUTORS - 1);
            self.best.copy_within(at..end, at + 1);
            self.best[at] = (points, rule);
            self.len = (self.len + 1).min(TOP_CONTRIBUTORS);
        }
    }
}
