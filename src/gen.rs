//! A seedable generator of realistic event streams: profiles, the engagement
//! mix, CRM feedback, outcomes, duplicates and a few late events. Used by the
//! tests, the benchmarks and the demo; the same seed gives the same stream.
//!
//! Each lead has a hidden *intent* in [0, 1): it drives how often the lead
//! engages, what it does (pricing pages and demos for high intent), and how
//! sales and deals turn out, so a model that scores the right signals
//! separates won from lost deals.
//!
//! A share of leads (`anonymous_share`) first browse the site before they
//! fill in a form: a few page views and downloads, then their first
//! profile. [`wire`] writes the stream in each input format; in Segment's,
//! those first events carry only the visitor's anonymous id.

pub mod wire;

use std::borrow::Cow;

use crate::event::{Event, Kind, Value};
use crate::time::{Micros, DAY, HOUR, SECOND};

/// SplitMix64: small, fast, and good enough for synthetic traffic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub seed: u64,
    /// Distinct leads.
    pub leads: u64,
    /// Events in total (approximately: CRM follow-ups are added as they arise).
    pub events: u64,
    /// Time of the first event.
    pub start: Micros,
    /// The events spread over this long.
    pub span: Micros,
    /// Share of events sent twice (same `event_id`).
    pub duplicate_rate: f64,
    /// Share of events that arrive late (up to `late_by` after their time).
    pub late_rate: f64,
    pub late_by: Micros,
    /// Emit `deal_won`/`deal_lost` outcomes.
    pub outcomes: bool,
    /// Share of leads, in [0, 1], that browse (page views, downloads)
    /// before their first profile. At 0 the stream is what it always was.
    pub anonymous_share: f64,
    /// Share, in [0, 1], of `demo_requested` and `sales_accepted` events that
    /// sales follow up with a `sales_contacted` of the lead, 1 hour to 5
    /// days later (so some in time for the SLA, some late). At 0 the stream
    /// is what it always was.
    pub contact_rate: f64,
    /// Share, in [0, 1], of events after which the lead asks to be erased:
    /// a `lead_erased` of the lead 1 hour to 10 days later. At 0 the stream
    /// is what it always was.
    pub erase_rate: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 42,
            leads: 1_000,
            events: 20_000,
            start: 1_772_323_200 * SECOND, // 2026-03-01T00:00:00Z
            span: 180 * DAY,
            duplicate_rate: 0.01,
            late_rate: 0.01,
            late_by: 6 * 3600 * SECOND,
            outcomes: true,
            anonymous_share: 0.0,
            contact_rate: 0.0,
            erase_rate: 0.0,
        }
    }
}

/// The longest a lead browses before its first profile, in event time: well
/// within a visitor's time to live (`VisitorLimits::ttl`, 90 days by
/// default), so that the visitor is still there when it identifies.
const BROWSE_SPAN: Micros = 45 * DAY;

#[derive(Debug, Clone, Default)]
struct LeadSim {
    intent: f64,
    engaged: u32,
    qualified: bool,
    accepted: bool,
    closed: bool,
    profiled: bool,
    /// Chosen to browse before its first profile.
    anonymous: bool,
    /// Browsing events still to come before the first profile.
    browse_left: u32,
    /// When it first browsed.
    first_browse: Option<Micros>,
}

const INDUSTRIES: [&str; 8] = [
    "automotive",
    "Food",
    "pharma",
    "logistics",
    "retail",
    "software",
    "finance",
    "construction",
];
const TITLES: [&str; 8] = [
    "Director of Operations",
    "Operations Manager",
    "CFO",
    "Plant Manager",
    "Marketing Assistant",
    "Student",
    "Head of Procurement",
    "Senior Operations Manager",
];
const DOMAINS: [&str; 10] = [
    "acme.example",
    "globex.example",
    "initech.example",
    "umbrella.example",
    "gmail.com",
    "hotmail.com",
    "tu.ac.uk",
    "state.edu",
    "hooli.example",
    "vandelay.example",
];
const COUNTRIES: [&str; 5] = ["NL", "BE", "DE", "FR", "UK"];
const URLS: [&str; 6] = [
    "/pricing",
    "/blog/decay",
    "/product",
    "/pricing/enterprise",
    "/about",
    "/careers",
];
const ASSETS: [&str; 3] = ["whitepaper", "case_study", "checklist"];

/// The generated stream, as an iterator of events in arrival order.
pub struct Generator {
    cfg: GenConfig,
    rng: Rng,
    sims: Vec<LeadSim>,
    produced: u64,
    seq: u64,
    /// Events held back to arrive later than their time, or to be re-sent.
    pending: Vec<(Micros, Event<'static>)>,
    queue: std::collections::VecDeque<Event<'static>>,
    last_at: Micros,
    /// Draws the follow-ups (`contact_rate`), apart from the main generator
    /// so that it draws the same numbers whatever the rate.
    contact_rng: Rng,
    contacts: u64,
    /// Draws the erasures (`erase_rate`), apart from the others.
    erase_rng: Rng,
    erasures: u64,
}

impl Generator {
    pub fn new(cfg: GenConfig) -> Generator {
        let mut rng = Rng::new(cfg.seed);
        let mut sims: Vec<LeadSim> = (0..cfg.leads)
            .map(|_| LeadSim {
                // Skewed: most leads browse, a few are ready to buy.
                intent: rng.f64().powi(2),
                ..LeadSim::default()
            })
            .collect();
        if cfg.anonymous_share > 0.0 {
            // A generator of its own, so that the main one draws the same
            // numbers whatever the share.
            let mut anon = Rng::new(cfg.seed ^ 0xA404_5EED_0B5E_55ED);
            for s in &mut sims {
                if anon.chance(cfg.anonymous_share) {
                    s.anonymous = true;
                    s.browse_left = 1 + anon.below(8) as u32;
                }
            }
        }
        let contact_rng = Rng::new(cfg.seed ^ 0xC0_47AC_7ED5_A1E5);
        let cfg_seed = cfg.seed;
        Generator {
            cfg,
            rng,
            sims,
            produced: 0,
            seq: 0,
            pending: Vec::new(),
            queue: Default::default(),
            last_at: Micros::MIN,
            contact_rng,
            contacts: 0,
            erase_rng: Rng::new(cfg_seed ^ 0x0E7A_5E0F_1EAD),
            erasures: 0,
        }
    }

    /// Holds back a `sales_contacted` of the event's lead, if sales follow
    /// this event up.
    fn follow_up(&mut self, e: &Event<'static>) {
        if self.cfg.contact_rate <= 0.0
            || !matches!(e.kind, Kind::SalesAccepted) && e.event_type != "demo_requested"
            || !self.contact_rng.chance(self.cfg.contact_rate)
        {
            return;
        }
        let at = e.occurred_at + HOUR + self.contact_rng.below((5 * DAY - HOUR) as u64) as Micros;
        self.contacts += 1;
        let mut c = Event::new(
            Cow::Owned(format!("e-{:x}-c{}", self.cfg.seed, self.contacts)),
            e.lead_id.clone(),
            Cow::Borrowed("sales_contacted"),
            at,
        );
        c.kind = Kind::SalesContacted;
        self.pending.push((at, c));
    }

    /// Holds back a `lead_erased` of the event's lead, if it asks to be
    /// erased after this event.
    fn erasure(&mut self, e: &Event<'static>) {
        if self.cfg.erase_rate <= 0.0 || !self.erase_rng.chance(self.cfg.erase_rate) {
            return;
        }
        let at = e.occurred_at + HOUR + self.erase_rng.below((10 * DAY - HOUR) as u64) as Micros;
        self.erasures += 1;
        let mut c = Event::new(
            Cow::Owned(format!("e-{:x}-x{}", self.cfg.seed, self.erasures)),
            e.lead_id.clone(),
            Cow::Borrowed("lead_erased"),
            at,
        );
        c.kind = Kind::LeadErased;
        self.pending.push((at, c));
    }

    fn event(&mut self, lead: u64, event_type: &'static str, at: Micros) -> Event<'static> {
        self.seq += 1;
        let mut e = Event::new(
            Cow::Owned(format!("e-{:x}-{}", self.cfg.seed, self.seq)),
            Cow::Owned(lead_id(lead)),
            Cow::Borrowed(event_type),
            at,
        );
        e.kind = Kind::of(event_type);
        e
    }

    fn profile(&mut self, lead: u64, at: Micros) -> Event<'static> {
        let mut e = self.event(lead, "profile_updated", at);
        let r = &mut self.rng;
        let employees = match r.below(10) {
            0 => r.below(10) as f64,
            1..=4 => (50 + r.below(150)) as f64,
            5..=7 => (200 + r.below(301)) as f64,
            _ => (10 + r.below(2000)) as f64,
        };
        let domain = *r.pick(&DOMAINS);
        let name = format!("p{}@{domain}", lead);
        let mut p: Vec<(Cow<'static, str>, Value<'static>)> = vec![
            ("email".into(), Value::Str(name.into())),
            (
                "company".into(),
                Value::Str(format!("Company {}", lead % 997).into()),
            ),
            ("employees".into(), Value::Num(employees)),
            ("industry".into(), Value::Str((*r.pick(&INDUSTRIES)).into())),
            ("job_title".into(), Value::Str((*r.pick(&TITLES)).into())),
            ("country".into(), Value::Str((*r.pick(&COUNTRIES)).into())),
        ];
        if r.chance(0.05) {
            p.push(("is_customer".into(), Value::Bool(true)));
        }
        e.profile = p;
        e
    }

    fn page_view(&mut self, lead: u64, at: Micros) -> Event<'static> {
        let intent = self.sims[lead as usize].intent;
        let mut e = self.event(lead, "page_view", at);
        let url = if self.rng.chance(0.1 + 0.6 * intent) {
            "/pricing"
        } else {
            *self.rng.pick(&URLS)
        };
        e.attributes = vec![("url".into(), Value::Str(url.into()))];
        e
    }

    fn content_download(&mut self, lead: u64, at: Micros) -> Event<'static> {
        let mut e = self.event(lead, "content_download", at);
        let a = *self.rng.pick(&ASSETS);
        e.attributes = vec![("asset_type".into(), Value::Str(a.into()))];
        e
    }

    /// What a lead does on the site before it gives its name: only what a
    /// browser sees (no e-mail opens, no webinars, nothing from the CRM).
    fn browse(&mut self, lead: u64, at: Micros) -> Event<'static> {
        let e = if self.rng.chance(0.75) {
            self.page_view(lead, at)
        } else {
            self.content_download(lead, at)
        };
        let s = &mut self.sims[lead as usize];
        s.engaged += 1;
        s.browse_left -= 1;
        s.first_browse.get_or_insert(at);
        e
    }

    /// The next engagement event of a lead, chosen by its intent.
    fn engagement(&mut self, lead: u64, at: Micros) -> Event<'static> {
        let intent = self.sims[lead as usize].intent;
        let roll = self.rng.f64();
        let e = if roll < 0.35 {
            self.page_view(lead, at)
        } else if roll < 0.65 {
            self.event(lead, "email_opened", at)
        } else if roll < 0.80 {
            self.content_download(lead, at)
        } else if roll < 0.88 {
            let mut e = self.event(lead, "webinar_attended", at);
            e.attributes = vec![(
                "webinar".into(),
                Value::Str(format!("w-{}", self.rng.below(9)).into()),
            )];
            e
        } else if roll < 0.88 + 0.07 * intent {
            self.event(lead, "demo_requested", at)
        } else {
            let mut e = self.event(lead, "form_submitted", at);
            e.attributes = vec![("form".into(), Value::Str("newsletter".into()))];
            e
        };
        self.sims[lead as usize].engaged += 1;
        e
    }

    /// CRM feedback a lead may draw after enough engagement.
    fn crm(&mut self, lead: u64, at: Micros) -> Option<Event<'static>> {
        let s = self.sims[lead as usize].clone();
        if s.closed || s.engaged < 4 {
            return None;
        }
        let r = self.rng.f64();
        if !s.qualified && r < 0.15 {
            let mut e = self.event(lead, "qualification_updated", at);
            let known = |rng: &mut Rng| rng.chance(0.3 + 0.7 * s.intent);
            e.criteria = ["budget", "authority", "need", "timing"]
                .iter()
                .map(|c| (Cow::Borrowed(*c), known(&mut self.rng)))
                .collect();
            self.sims[lead as usize].qualified = true;
            return Some(e);
        }
        if !s.accepted && r < 0.20 {
            self.sims[lead as usize].accepted = true;
            if self.rng.chance(0.3 + 0.6 * s.intent) {
                return Some(self.event(lead, "sales_accepted", at));
            }
            let mut e = self.event(lead, "sales_rejected", at);
            let reason = *self
                .rng
                .pick(&["no_budget", "timing", "disqualified", "no_response"]);
            e.reason = Some(reason.into());
            return Some(e);
        }
        if self.cfg.outcomes && s.accepted && r < 0.25 {
            self.sims[lead as usize].closed = true;
            let won = self.rng.chance(0.1 + 0.8 * s.intent);
            return Some(self.event(lead, if won { "deal_won" } else { "deal_lost" }, at));
        }
        None
    }

    /// Generates all events into a vector.
    pub fn all(self) -> Vec<Event<'static>> {
        self.collect()
    }

    /// The ids of the leads chosen to browse before their first profile.
    pub fn anonymous_leads(&self) -> impl Iterator<Item = String> + '_ {
        self.sims
            .iter()
            .enumerate()
            .filter(|(_, s)| s.anonymous)
            .map(|(n, _)| lead_id(n as u64))
    }
}

/// The generator's lead id for a lead number.
pub fn lead_id(n: u64) -> String {
    format!("L-{n:07}")
}

impl Iterator for Generator {
    type Item = Event<'static>;

    fn next(&mut self) -> Option<Event<'static>> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.produced >= self.cfg.events {
                // Flush what was held back, in arrival order.
                if self.pending.is_empty() {
                    return None;
                }
                self.pending
                    .sort_by_key(|(arrive, _)| std::cmp::Reverse(*arrive));
                let (_, e) = self.pending.pop().expect("not empty");
                return Some(e);
            }
            let i = self.produced;
            self.produced += 1;
            let mut at = self.cfg.start
                + (i as i128 * self.cfg.span as i128 / self.cfg.events.max(1) as i128) as Micros
                + self.rng.below(SECOND as u64) as Micros;
            if self.cfg.late_rate == 0.0 {
                // No late events asked for: keep event time in arrival order.
                at = at.max(self.last_at);
            }
            self.last_at = at;
            // Release held-back events whose arrival time has come.
            let mut k = 0;
            while k < self.pending.len() {
                if self.pending[k].0 <= at {
                    let (_, e) = self.pending.swap_remove(k);
                    self.queue.push_back(e);
                } else {
                    k += 1;
                }
            }
            // Pick a lead: high-intent leads are more active.
            let lead = loop {
                let l = self.rng.below(self.cfg.leads.max(1));
                if self.rng.chance(0.25 + 0.75 * self.sims[l as usize].intent) {
                    break l;
                }
            };
            let s = &self.sims[lead as usize];
            // The profile that ends a lead's browsing arrives on time: held
            // back, the lead's later events would come before it.
            let mut on_time = false;
            let e = if !s.profiled {
                if s.browse_left > 0 && s.first_browse.is_none_or(|t| at - t < BROWSE_SPAN) {
                    self.browse(lead, at)
                } else {
                    on_time = s.anonymous;
                    self.sims[lead as usize].profiled = true;
                    self.profile(lead, at)
                }
            } else if self.rng.chance(0.03) {
                self.profile(lead, at)
            } else {
                match self.crm(lead, at) {
                    Some(e) => e,
                    None => self.engagement(lead, at),
                }
            };
            self.follow_up(&e);
            self.erasure(&e);
            if self.rng.chance(self.cfg.duplicate_rate) {
                let again = at + self.rng.below(3600 * SECOND as u64) as Micros;
                self.pending.push((again, e.clone()));
            }
            if self.rng.chance(self.cfg.late_rate) && !on_time {
                let arrive = at + 1 + self.rng.below(self.cfg.late_by.max(1) as u64) as Micros;
                self.pending.push((arrive, e));
                continue;
            }
            self.queue.push_back(e);
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn follow_ups_leave_the_rest_of_the_stream_as_it_was() {
        let cfg = GenConfig {
            leads: 300,
            events: 6_000,
            ..GenConfig::default()
        };
        let plain = Generator::new(cfg.clone()).all();
        let with = Generator::new(GenConfig {
            contact_rate: 0.5,
            ..cfg
        })
        .all();
        let contacts: Vec<&Event<'_>> = with
            .iter()
            .filter(|e| e.kind == Kind::SalesContacted)
            .collect();
        assert!(contacts.len() > 20, "{}", contacts.len());
        let rest: Vec<Event<'static>> = with
            .iter()
            .filter(|e| e.kind != Kind::SalesContacted)
            .cloned()
            .collect();
        assert_eq!(rest, plain);
        // Each follows a demo request or a sales acceptance of its lead by 1 h to 5 d.
        for c in contacts {
            assert!(plain.iter().any(|e| e.lead_id == c.lead_id
                && (e.event_type == "demo_requested" || e.kind == Kind::SalesAccepted)
                && (HOUR..5 * DAY).contains(&(c.occurred_at - e.occurred_at))));
        }
    }
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let cfg = GenConfig {
            events: 2_000,
            leads: 100,
            ..GenConfig::default()
        };
        let a = Generator::new(cfg.clone()).all();
        let b = Generator::new(cfg.clone()).all();
        assert_eq!(a, b);
        let c = Generator::new(GenConfig { seed: 7, ..cfg }).all();
        assert_ne!(a, c);
    }

    #[test]
    fn stream_has_the_expected_mix() {
        let events = Generator::new(GenConfig {
            events: 20_000,
            leads: 500,
            ..GenConfig::default()
        })
        .all();
        let count = |t: &str| events.iter().filter(|e| e.event_type == t).count();
        assert!(
            count("profile_updated") >= 400,
            "every active lead gets a profile"
        );
        for t in [
            "page_view",
            "email_opened",
            "content_download",
            "webinar_attended",
            "demo_requested",
        ] {
            assert!(count(t) > 100, "{t}: {}", count(t));
        }
        for t in [
            "qualification_updated",
            "sales_accepted",
            "sales_rejected",
            "deal_won",
            "deal_lost",
        ] {
            assert!(count(t) > 0, "{t}");
        }
        let mut ids = std::collections::HashSet::new();
        let dups = events
            .iter()
            .filter(|e| !ids.insert(e.event_id.clone()))
            .count();
        assert!(dups > 50, "duplicates: {dups}");
        let late = events
            .windows(2)
            .filter(|w| w[1].occurred_at < w[0].occurred_at)
            .count();
        assert!(late > 50, "late events: {late}");
    }

    /// The leads chosen to browse first do so: only page views and
    /// downloads come before their first profile, at most 8 of them, all
    /// within 45 days of the first; the other leads start with their
    /// profile.
    #[test]
    fn a_share_of_leads_browse_before_their_first_profile() {
        let cfg = GenConfig {
            events: 20_000,
            leads: 500,
            anonymous_share: 0.3,
            late_rate: 0.0,
            duplicate_rate: 0.0,
            ..GenConfig::default()
        };
        let gen = Generator::new(cfg);
        let chosen: std::collections::HashSet<String> = gen.anonymous_leads().collect();
        assert!((100..200).contains(&chosen.len()), "{}", chosen.len());
        let mut before: std::collections::HashMap<String, Vec<Event<'static>>> = Default::default();
        let mut profiled = std::collections::HashSet::new();
        for e in gen {
            let lead = e.lead_id.to_string();
            if profiled.contains(&lead) {
                continue;
            }
            if e.kind == Kind::ProfileUpdated {
                profiled.insert(lead);
            } else {
                before.entry(lead).or_default().push(e);
            }
        }
        let browsed: std::collections::HashSet<_> = before.keys().cloned().collect();
        assert_eq!(browsed, chosen);
        for events in before.values() {
            assert!((1..=8).contains(&events.len()));
            for e in events {
                assert!(e.occurred_at - events[0].occurred_at < BROWSE_SPAN);
                assert!(
                    ["page_view", "content_download"].contains(&e.event_type.as_ref()),
                    "{e:?}"
                );
            }
        }
    }
}
