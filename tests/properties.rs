//! Property tests of the engine and codecs against SPEC.md §1–4.
//!
//! 1. Determinism: the same events give the same changes and the same state.
//! 2. Partitioning / interleaving: each lead's changes do not depend on how
//!    the leads are interleaved or partitioned, nor on the allowed lateness,
//!    for every event that arrives within it (SPEC §3, last bullet).
//! 3. A decayed engagement sum does not depend on arrival order (SPEC §3, Clock).
//! 4. Decoders never panic, on arbitrary bytes or on mutated valid events.
//! 5. Snapshots round-trip, and an engine restored from them continues exactly
//!    like the uninterrupted one; decoding arbitrary bytes never panics.
//! 6. JSON and protobuf encodings of an event decode to the same event.
//!
//! Failure persistence is off (no `proptest-regressions/` files are written).
//! `PROPTEST_CASES=N` runs N cases per property instead of the quick default.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use leadscore::codec::{
    decode_cloudevent, decode_json, decode_message, decode_proto, decode_segment,
    encode_event_json, encode_event_proto, strip_framing, CloudEventsMapping, InputFormat, Mapping,
    SegmentMapping, TopicInput,
};
use leadscore::engine::snapshot;
use leadscore::event::Value;
use leadscore::gen::{GenConfig, Generator, Rng};
use leadscore::time::{parse_rfc3339, DAY, HOUR};
use leadscore::{Engine, Event, Model, StatusChange};
use proptest::prelude::*;
use proptest::sample::{select, Index};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `cases` per property, unless `PROPTEST_CASES` asks for more (a longer soak).
fn config(cases: u32) -> ProptestConfig {
    let soak = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    ProptestConfig {
        cases: soak.unwrap_or(cases),
        failure_persistence: None,
        max_shrink_iters: 512,
        ..ProptestConfig::default()
    }
}

fn default_model() -> Arc<Model> {
    Arc::new(Model::default_model())
}

/// 2026-03-02T00:00:00Z (a Monday).
fn t0() -> i64 {
    parse_rfc3339("2026-03-02T00:00:00Z").expect("valid time")
}

/// Events of the planned streams sit on a 6-hour grid, so that ties between
/// events, and between events and timers (30 d, 90 d, 14 d are whole
/// multiples), are frequent.
const STEP: i64 = 6 * HOUR;
const HALF_LIFE: f64 = (30 * DAY) as f64;

/// Folds `events` into `engine`, then advances it to `end`; returns the changes.
fn run(engine: &mut Engine, events: &[Event<'_>], end: i64) -> Vec<StatusChange> {
    let mut out = Vec::new();
    for e in events {
        engine.fold(e, &mut out);
    }
    engine.advance_to(end, &mut out);
    out
}

/// [`run`] through `Engine::fold_batch`, `chunk` events per call; also
/// checks each event's outcome against a one-by-one fold into `reference`.
fn run_batched(
    engine: &mut Engine,
    reference: &mut Engine,
    events: &[Event<'_>],
    end: i64,
    chunk: usize,
) -> Result<Vec<StatusChange>, TestCaseError> {
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    let mut outcomes = Vec::new();
    for batch in events.chunks(chunk) {
        engine.fold_batch(batch, &mut out, |o| outcomes.push(o));
    }
    let expected: Vec<_> = events
        .iter()
        .map(|e| reference.fold(e, &mut scratch))
        .collect();
    prop_assert_eq!(outcomes, expected, "fold_batch outcomes = fold outcomes");
    engine.advance_to(end, &mut out);
    Ok(out)
}

fn by_lead(changes: Vec<StatusChange>) -> BTreeMap<String, Vec<StatusChange>> {
    let mut m: BTreeMap<String, Vec<StatusChange>> = BTreeMap::new();
    for c in changes {
        m.entry(c.lead_id.clone()).or_default().push(c);
    }
    m
}

/// SPEC §4: `change_id` = `lead_id:sequence`, sequences 1, 2, 3, … per
/// lead. An SLA breach belongs to the lead's last change, a hand-off to
/// `mql` or `sql` (`lead_id:sequence:sla`), at most once.
fn check_sequences(changes: &[StatusChange]) -> Result<(), TestCaseError> {
    let mut next: BTreeMap<&str, u64> = BTreeMap::new();
    let mut breached = std::collections::BTreeSet::new();
    for c in changes {
        let n = next.entry(c.lead_id.as_str()).or_insert(1);
        if c.is_breach() {
            prop_assert_eq!(
                c.sequence,
                *n - 1,
                "a breach of {} follows its hand-off",
                c.lead_id
            );
            prop_assert!(c.to.is_qualified(), "a breach is of an mql or sql");
            prop_assert_eq!(&c.change_id, &format!("{}:{}:sla", c.lead_id, c.sequence));
            prop_assert!(
                breached.insert(c.change_id.clone()),
                "one breach per hand-off"
            );
            continue;
        }
        prop_assert_eq!(c.sequence, *n, "sequence of {}", c.lead_id);
        prop_assert_eq!(&c.change_id, &format!("{}:{}", c.lead_id, c.sequence));
        prop_assert_ne!(c.from, c.to, "a change changes the stage");
        *n += 1;
    }
    Ok(())
}

/// The state of every lead, as `explain` shows it (JSON, by lead id).
fn explanations(engine: &Engine) -> BTreeMap<String, serde_json::Value> {
    engine
        .leads()
        .map(|l| {
            let x = engine.explain(l.id(), None).expect("lead exists");
            (
                l.id().to_string(),
                serde_json::to_value(x).expect("serialises"),
            )
        })
        .collect()
}

fn gen_config() -> impl Strategy<Value = GenConfig> {
    (
        any::<u64>(),
        3u64..60,
        100u64..1200,
        20i64..200,
        0.0f64..0.08,
        0.0f64..0.08,
        prop::bool::ANY,
    )
        .prop_map(
            |(seed, leads, events, span_days, dup, late, outcomes)| GenConfig {
                seed,
                leads,
                events,
                span: span_days * DAY,
                duplicate_rate: dup,
                late_rate: late,
                outcomes,
                ..GenConfig::default()
            },
        )
}

// ---------------------------------------------------------------------------
// Planned per-lead streams (richer than the generator: ties, CRM answers,
// profile fixes, duplicates, events near the 30-day deadlines)
// ---------------------------------------------------------------------------

type Fields = Vec<(Cow<'static, str>, Value<'static>)>;

#[derive(Debug, Clone)]
enum Action {
    Profile(Fields),
    Pricing,
    OtherPage,
    Demo,
    Webinar,
    Whitepaper,
    EmailOpen,
    Unscored,
    Criteria(Vec<(&'static str, bool)>),
    SalesAccepted,
    SalesRejected(&'static str),
    DealWon,
    DealLost,
    SalesContacted,
    /// Sends one of the lead's earlier events again (same id and time).
    Repeat(Index),
}

#[derive(Debug, Clone)]
struct LeadPlan {
    start: u32,
    profile: Fields,
    steps: Vec<(u32, Action)>,
}

fn arb_profile() -> impl Strategy<Value = Fields> {
    (
        select(vec![
            None,
            Some(5.0),
            Some(60.0),
            Some(300.0),
            Some(300.5),
            Some(2000.0),
        ]),
        select(vec!["automotive", "Food", "pharma", "retail"]),
        select(vec![
            "Director of Operations",
            "operations manager",
            "CFO",
            "PhD Student",
        ]),
        select(vec![
            "acme.example",
            "acme.example",
            "gmail.com",
            "ox.ac.uk",
        ]),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(employees, industry, title, domain, customer, drop_industry)| {
                let mut p: Fields = vec![
                    (
                        "email".into(),
                        Value::Str(format!("someone@{domain}").into()),
                    ),
                    ("job_title".into(), Value::Str(title.into())),
                ];
                p.push((
                    "industry".into(),
                    if drop_industry {
                        Value::Null
                    } else {
                        Value::Str(industry.into())
                    },
                ));
                if let Some(n) = employees {
                    p.push(("employees".into(), Value::Num(n)));
                }
                if customer {
                    p.push(("is_customer".into(), Value::Bool(true)));
                }
                p
            },
        )
}

fn arb_action() -> impl Strategy<Value = Action> {
    let criteria = prop::collection::vec(
        (
            select(vec!["budget", "authority", "need", "timing"]),
            prop::bool::weighted(0.85),
        ),
        1..5,
    );
    prop_oneof![
        3 => Just(Action::Pricing),
        1 => Just(Action::OtherPage),
        2 => Just(Action::Demo),
        2 => Just(Action::Webinar),
        2 => Just(Action::Whitepaper),
        3 => Just(Action::EmailOpen),
        1 => Just(Action::Unscored),
        1 => arb_profile().prop_map(Action::Profile),
        2 => criteria.prop_map(Action::Criteria),
        1 => Just(Action::SalesAccepted),
        1 => select(vec!["no_budget", "disqualified", "timing"]).prop_map(Action::SalesRejected),
        1 => Just(Action::DealWon),
        1 => Just(Action::DealLost),
        1 => Just(Action::SalesContacted),
        1 => any::<Index>().prop_map(Action::Repeat),
    ]
}

fn arb_gap() -> impl Strategy<Value = u32> {
    // In 6-hour steps: ties, a few days, or about 30 days (a requalification window).
    prop_oneof![2 => 0u32..2, 5 => 0u32..30, 1 => 110u32..130]
}

fn arb_plan() -> impl Strategy<Value = LeadPlan> {
    (
        0u32..120,
        arb_profile(),
        prop::collection::vec((arb_gap(), arb_action()), 0..24),
    )
        .prop_map(|(start, profile, steps)| LeadPlan {
            start,
            profile,
            steps,
        })
}

fn arb_plans() -> impl Strategy<Value = Vec<LeadPlan>> {
    prop::collection::vec(arb_plan(), 1..8)
}

fn build_lead(n: usize, plan: &LeadPlan) -> Vec<Event<'static>> {
    let lead = format!("P-{n:02}");
    let mut slot = plan.start;
    let at = |slot: u32| t0() + i64::from(slot) * STEP;
    let mut out: Vec<Event<'static>> = Vec::new();
    let mut first = Event::new(
        format!("{lead}-p"),
        lead.clone(),
        "profile_updated",
        at(slot),
    );
    first.profile = plan.profile.clone();
    out.push(first);
    for (k, (gap, action)) in plan.steps.iter().enumerate() {
        slot += gap;
        let id = format!("{lead}-{k}");
        let ev = |ty: &'static str| Event::new(id.clone(), lead.clone(), ty, at(slot));
        let attr = |mut e: Event<'static>, k: &'static str, v: &'static str| {
            e.attributes = vec![(k.into(), Value::Str(v.into()))];
            e
        };
        let e = match action {
            Action::Profile(p) => {
                let mut e = ev("profile_updated");
                e.profile = p.clone();
                e
            }
            Action::Pricing => attr(ev("page_view"), "url", "/pricing"),
            Action::OtherPage => attr(ev("page_view"), "url", "/careers"),
            Action::Demo => ev("demo_requested"),
            Action::Webinar => attr(ev("webinar_attended"), "webinar", "w-1"),
            Action::Whitepaper => attr(ev("content_download"), "asset_type", "whitepaper"),
            Action::EmailOpen => ev("email_opened"),
            Action::Unscored => ev("chat_started"),
            Action::Criteria(c) => {
                let mut e = ev("qualification_updated");
                e.criteria = c.iter().map(|&(k, v)| (k.into(), v)).collect();
                e
            }
            Action::SalesAccepted => ev("sales_accepted"),
            Action::SalesRejected(r) => {
                let mut e = ev("sales_rejected");
                e.reason = Some((*r).into());
                e
            }
            Action::DealWon => ev("deal_won"),
            Action::DealLost => ev("deal_lost"),
            Action::SalesContacted => ev("sales_contacted"),
            Action::Repeat(i) => out[i.index(out.len())].clone(),
        };
        out.push(e);
    }
    out
}

/// Merges per-lead streams into one arrival order in which every event is
/// within `lateness` of the largest time seen before it: arrival key =
/// occurred_at + jitter in [0, lateness], ties in random order. Each lead's
/// own events may then arrive out of time order, by at most `lateness`.
fn merge(leads: &[Vec<Event<'static>>], lateness: i64, seed: u64) -> Vec<Event<'static>> {
    let mut rng = Rng::new(seed);
    let mut keyed: Vec<(i64, u64, Event<'static>)> = leads
        .iter()
        .flatten()
        .map(|e| {
            let jitter = if lateness > 0 {
                rng.below(lateness as u64 + 1) as i64
            } else {
                0
            };
            (e.occurred_at + jitter, rng.next_u64(), e.clone())
        })
        .collect();
    keyed.sort_by_key(|(k, r, _)| (*k, *r));
    keyed.into_iter().map(|(_, _, e)| e).collect()
}

fn end_of(events: &[Event<'_>]) -> i64 {
    events
        .iter()
        .map(|e| e.occurred_at)
        .max()
        .unwrap_or_else(t0)
        + 400 * DAY
}

// ---------------------------------------------------------------------------
// Arbitrary events (for the codecs)
// ---------------------------------------------------------------------------

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z_]{1,10}",
        2 => "\\PC{0,12}",
        1 => any::<String>(),
        1 => Just("quote\" back\\slash\nnew\u{0}nul é 😀 \u{2028}".to_string()),
    ]
}

fn arb_required() -> impl Strategy<Value = String> {
    arb_text().prop_filter("required fields are non-empty", |s| !s.is_empty())
}

fn arb_scalar() -> impl Strategy<Value = Value<'static>> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-1_000_000i64..1_000_000).prop_map(|n| Value::Num(n as f64)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::Num),
        arb_text().prop_map(|s| Value::Str(s.into())),
    ]
}

/// A scalar, or a nested object (in name order, as both encodings keep it).
fn arb_value() -> impl Strategy<Value = Value<'static>> {
    arb_scalar().prop_recursive(3, 12, 4, |inner| {
        prop::collection::btree_map(arb_text(), inner, 0..4)
            .prop_map(|m| Value::Map(m.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect()))
    })
}

fn arb_fields() -> impl Strategy<Value = Fields> {
    // Unique keys: a JSON object holds each name once.
    prop::collection::btree_map(arb_text(), arb_value(), 0..5)
        .prop_map(|m| m.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect())
}

fn arb_event() -> impl Strategy<Value = Event<'static>> {
    // Year 0001 to 9999, to the microsecond.
    let min = parse_rfc3339("0001-01-01T00:00:00Z").expect("valid");
    let max = parse_rfc3339("9999-12-31T23:59:59.999999Z").expect("valid");
    let ty = prop_oneof![
        select(vec![
            "profile_updated",
            "qualification_updated",
            "sales_accepted",
            "sales_rejected",
            "deal_won",
            "deal_lost",
            "sales_contacted",
            "page_view",
        ])
        .prop_map(str::to_string),
        arb_required(),
    ];
    // A lead id starting with NUL is refused (the changelog's own keys).
    let lead = arb_required().prop_filter("not a NUL-prefixed id", |s| !s.starts_with('\0'));
    (
        (
            arb_required(),
            lead,
            ty,
            prop_oneof![min..=max, 0i64..3_000_000_000_000_000],
        ),
        arb_fields(),
        arb_fields(),
        prop::collection::btree_map(arb_text(), any::<bool>(), 0..4),
        prop::option::of(arb_text()),
    )
        .prop_map(
            |((id, lead, ty, at), attributes, profile, criteria, reason)| {
                let mut e = Event::new(id, lead, ty, at);
                e.attributes = attributes;
                e.profile = profile;
                e.criteria = criteria
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k), v))
                    .collect();
                e.reason = reason.map(Cow::Owned);
                e
            },
        )
}

/// The event with its maps in name order (map order on the wire is not meaningful).
fn sorted(mut e: Event<'static>) -> Event<'static> {
    e.attributes.sort_by(|a, b| a.0.cmp(&b.0));
    e.profile.sort_by(|a, b| a.0.cmp(&b.0));
    e.criteria.sort_by(|a, b| a.0.cmp(&b.0));
    e
}

fn json_of(e: &Event<'_>) -> Vec<u8> {
    let mut b = Vec::new();
    encode_event_json(e, &mut b);
    b
}

fn proto_of(e: &Event<'_>) -> Vec<u8> {
    let mut b = Vec::new();
    encode_event_proto(e, &mut b);
    b
}

/// Applies byte mutations: (what, where, byte). `what`: 0 flip bits, 1 insert, 2 delete.
fn mutate(mut bytes: Vec<u8>, edits: &[(u8, Index, u8)]) -> Vec<u8> {
    for &(what, ref at, b) in edits {
        match what {
            0 if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes[i] ^= b | 1;
            }
            1 => {
                let i = at.index(bytes.len() + 1);
                bytes.insert(i, b);
            }
            _ if !bytes.is_empty() => {
                let i = at.index(bytes.len());
                bytes.remove(i);
            }
            _ => {}
        }
    }
    bytes
}

fn arb_edits() -> impl Strategy<Value = Vec<(u8, Index, u8)>> {
    // Half of the inserted/flipped bytes are JSON punctuation or digits.
    let byte = prop_oneof![
        any::<u8>(),
        select(b"{}[]\":,\\0123456789-+.eEtfnu ".to_vec()),
    ];
    prop::collection::vec((0u8..3, any::<Index>(), byte), 1..8)
}

/// The invariants of any event a decoder accepts (SPEC §2: required fields non-empty).
fn check_decoded(e: &Event<'_>) -> Result<(), TestCaseError> {
    prop_assert!(!e.event_id.is_empty());
    prop_assert!(!e.lead_id.is_empty());
    prop_assert!(!e.event_type.is_empty());
    prop_assert_eq!(e.kind, leadscore::event::Kind::of(&e.event_type));
    Ok(())
}

// ---------------------------------------------------------------------------
// 1. Determinism
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(32))]

    /// The same generated stream, generated and folded twice in two engines,
    /// gives the same changes (in the same order) and the same final state.
    /// The second engine folds through `fold_batch`, in batches of `chunk`.
    #[test]
    fn determinism_generated(cfg in gen_config(), chunk in 1usize..40) {
        let a = Generator::new(cfg.clone()).all();
        let b = Generator::new(cfg.clone()).all();
        prop_assert_eq!(&a, &b, "the generator is deterministic");
        let end = end_of(&a);
        let mut e1 = Engine::new(default_model());
        let mut e2 = Engine::new(default_model());
        let c1 = run(&mut e1, &a, end);
        let c2 = run_batched(&mut e2, &mut Engine::new(default_model()), &b, end, chunk)?;
        check_sequences(&c1)?;
        prop_assert_eq!(&c1, &c2);
        prop_assert_eq!(explanations(&e1), explanations(&e2));
    }

    /// The same for the planned streams (ties, CRM answers, deadlines on the grid).
    #[test]
    fn determinism_planned(plans in arb_plans(), seed in any::<u64>(), chunk in 1usize..40) {
        let leads: Vec<_> = plans.iter().enumerate().map(|(n, p)| build_lead(n, p)).collect();
        let events = merge(&leads, 0, seed);
        let end = end_of(&events);
        let mut e1 = Engine::new(default_model());
        let mut e2 = Engine::new(default_model());
        let c1 = run(&mut e1, &events, end);
        let c2 = run_batched(&mut e2, &mut Engine::new(default_model()), &events, end, chunk)?;
        check_sequences(&c1)?;
        prop_assert_eq!(&c1, &c2);
        prop_assert_eq!(explanations(&e1), explanations(&e2));
    }
}

// ---------------------------------------------------------------------------
// 2. Interleaving and partitioning
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(64))]

    /// SPEC §3: "the same events and model give the same changes whatever the
    /// partitioning …, for every event that arrives within the allowed
    /// lateness". Each lead keeps the same order of its own events; the
    /// leads are interleaved in a random arrival order in which every event is
    /// within `jitter` (0, 6 h, 1 d or 3 d) of the largest time seen before it,
    /// so a lead's own events may arrive out of time order by up to `jitter`.
    /// The changes of each lead are then identical — bit for bit — whether all
    /// leads share one engine, are spread over random partitions, or each
    /// lead has an engine of its own, and whether the engines allow exactly
    /// `jitter` of lateness or two days more (every event is within the
    /// allowed lateness of both; a timer fires "always before any event of
    /// that lead with occurred_at past the deadline is applied", whatever the
    /// watermark). Every engine is finally advanced to the same time.
    #[test]
    fn per_lead_changes_do_not_depend_on_interleaving_partitioning_or_lateness(
        plans in arb_plans(),
        jitter in select(vec![0, 6 * HOUR, DAY, 3 * DAY]),
        seed in any::<u64>(),
    ) {
        let leads: Vec<_> = plans.iter().enumerate().map(|(n, p)| build_lead(n, p)).collect();
        let events = merge(&leads, jitter, seed);
        let end = end_of(&events);
        let model = default_model();
        let mut rng = Rng::new(seed ^ 0xA5A5);
        let mut reference: Option<BTreeMap<String, Vec<StatusChange>>> = None;
        for lateness in [jitter, jitter + 2 * DAY] {
            // All leads in one partition.
            let mut one = Engine::with_lateness(model.clone(), lateness);
            let together = run(&mut one, &events, end);
            check_sequences(&together)?;
            let together = by_lead(together);

            // Random partitions (1 to 4), each keeping the arrival order.
            let k = 1 + rng.below(4) as usize;
            let part: Vec<usize> = (0..leads.len()).map(|_| rng.below(k as u64) as usize).collect();
            let mut partitioned = Vec::new();
            for p in 0..k {
                let mine: Vec<Event<'static>> = events
                    .iter()
                    .filter(|e| {
                        let n: usize = e.lead_id[2..].parse().expect("planned lead id");
                        part[n] == p
                    })
                    .cloned()
                    .collect();
                let mut engine = Engine::with_lateness(model.clone(), lateness);
                partitioned.extend(run(&mut engine, &mine, end));
            }
            prop_assert_eq!(&together, &by_lead(partitioned), "partitioned, lateness {}", lateness);

            // Each lead alone, in the order its events arrived in the merged stream.
            let mut alone = Vec::new();
            for lead in &leads {
                let id = &lead[0].lead_id;
                let mine: Vec<Event<'static>> = events.iter().filter(|e| &e.lead_id == id).cloned().collect();
                let mut engine = Engine::with_lateness(model.clone(), lateness);
                alone.extend(run(&mut engine, &mine, end));
            }
            prop_assert_eq!(&together, &by_lead(alone), "alone, lateness {}", lateness);

            match &reference {
                None => reference = Some(together),
                Some(r) => prop_assert_eq!(r, &together, "lateness {} vs {}", jitter, lateness),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 3. Decayed engagement does not depend on arrival order
// ---------------------------------------------------------------------------

/// The default model with an MQL total no lead can reach, so no stage change
/// (and no fresh start) interferes with the engagement sum.
fn unreachable_mql_model() -> Arc<Model> {
    let toml = leadscore::model::DEFAULT_MODEL_TOML
        .replace("mql_min_total = 50", "mql_min_total = 1000000");
    assert_ne!(
        toml,
        leadscore::model::DEFAULT_MODEL_TOML,
        "the default model sets mql_min_total = 50"
    );
    Arc::new(Model::from_toml(&toml).expect("valid model"))
}

/// An event type, an attribute it carries, and its SPEC §1 points.
type Scored = (&'static str, Option<(&'static str, &'static str)>, f64);

/// `email_opened` is left out: its points depend on the arrival order by
/// definition ("in arrival order").
const SCORED: [Scored; 6] = [
    ("page_view", Some(("url", "/pricing/enterprise")), 5.0),
    ("page_view", Some(("url", "/blog")), 0.0),
    ("demo_requested", None, 20.0),
    ("content_download", Some(("asset_type", "Whitepaper")), 3.0),
    ("webinar_attended", None, 15.0),
    ("form_submitted", None, 0.0),
];

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-12
}

proptest! {
    #![proptest_config(config(64))]

    /// SPEC §3: "Engagement at time T is Σ points × 2^(−(T − tᵢ)/half-life)
    /// over its scored events; an event older than the lead's time still
    /// counts, decayed to the lead's time (so the sum does not depend on
    /// arrival order)". A lead's engagement events, after its profile, fed in
    /// time order and in a shuffled order, give the same engagement at a later
    /// instant T (within 1e-9 relative), and both equal the formula.
    #[test]
    fn engagement_does_not_depend_on_arrival_order(
        (mut evs, perm) in prop::collection::vec((0i64..120 * DAY, 0usize..SCORED.len()), 1..30)
            .prop_flat_map(|evs| {
                let n = evs.len();
                (Just(evs), Just((0..n).collect::<Vec<usize>>()).prop_shuffle())
            }),
        at_days in 0i64..200,
    ) {
        evs.sort();
        let model = unreachable_mql_model();
        let start = t0();
        let mut profile = Event::new("p", "L-1", "profile_updated", start);
        profile.profile = vec![
            ("email".into(), Value::Str("x@acme.example".into())),
            ("employees".into(), Value::Num(300.0)),
            ("industry".into(), Value::Str("pharma".into())),
        ];
        let scored: Vec<Event<'static>> = evs
            .iter()
            .enumerate()
            .map(|(i, &(dt, kind))| {
                let (ty, attr, _) = SCORED[kind];
                let mut e = Event::new(format!("e-{i}"), "L-1", ty, start + dt);
                if let Some((k, v)) = attr {
                    e.attributes = vec![(k.into(), Value::Str(v.into()))];
                }
                e
            })
            .collect();
        let ordered: Vec<Event<'static>> = std::iter::once(profile.clone()).chain(scored.iter().cloned()).collect();
        let shuffled: Vec<Event<'static>> =
            std::iter::once(profile).chain(perm.iter().map(|&i| scored[i].clone())).collect();

        let last = start + evs.iter().map(|x| x.0).max().unwrap_or(0);
        let at = last + at_days * DAY;
        let mut a = Engine::new(model.clone());
        let mut b = Engine::new(model);
        let ca = run(&mut a, &ordered, at);
        let cb = run(&mut b, &shuffled, at);
        prop_assert!(ca.is_empty() && cb.is_empty(), "no stage change under this model: {ca:?} {cb:?}");
        let ea = a.explain("L-1", Some(at)).expect("lead").score.engagement;
        let eb = b.explain("L-1", Some(at)).expect("lead").score.engagement;
        let want: f64 = evs
            .iter()
            .map(|&(dt, kind)| SCORED[kind].2 * (-((at - (start + dt)) as f64) / HALF_LIFE).exp2())
            .sum();
        prop_assert!(close(ea, eb), "in order {ea} vs shuffled {eb}");
        prop_assert!(close(ea, want), "engine {ea} vs formula {want}");
        // Fit is a function of the merged profile: 300 employees +15, pharma +15.
        prop_assert_eq!(b.explain("L-1", None).expect("lead").score.fit, 30.0);
    }
}

// ---------------------------------------------------------------------------
// 3b. Per-group half-lives
// ---------------------------------------------------------------------------

/// The default model with its page-view and demo rules in groups that set
/// the model's own half-life explicitly ("30d", and "720h": the same).
fn default_model_with_default_group_half_lives() -> Arc<Model> {
    let mut toml = leadscore::model::DEFAULT_MODEL_TOML.to_string();
    for (from, to) in [
        (
            "[engagement]\nhalf_life = \"30d\"\n",
            "[engagement]\nhalf_life = \"30d\"\n\n[[engagement.groups]]\nname = \"web\"\nhalf_life = \"30d\"\n\n[[engagement.groups]]\nname = \"sales\"\nhalf_life = \"720h\"\n",
        ),
        ("contains = \"/pricing\" } }\npoints = 5\n", "contains = \"/pricing\" } }\npoints = 5\ngroup = \"web\"\n"),
        ("event = \"demo_requested\"\npoints = 20\n", "event = \"demo_requested\"\npoints = 20\ngroup = \"sales\"\n"),
    ] {
        assert!(toml.contains(from), "the default model has {from:?}");
        toml = toml.replacen(from, to, 1);
    }
    let model = Model::from_toml(&toml).expect("valid model");
    assert_eq!(model.engagement_groups.len(), 2);
    Arc::new(model)
}

/// Folds `events` with the score stream on, committing every `every`
/// events; returns the changes and the score records, encoded as JSON.
fn scored_run(
    model: Arc<Model>,
    events: &[Event<'_>],
    end: i64,
    every: usize,
) -> (Vec<u8>, Vec<u8>) {
    let mut engine = Engine::new(model);
    engine.track_scores();
    let mut out = Vec::new();
    let mut records = Vec::new();
    let mut commit = |engine: &mut Engine| {
        engine.drain_scores(|r| {
            leadscore::codec::encode_score_json(&r, &mut records);
            records.push(b'\n');
        });
        engine.drain_dirty(|_| {});
    };
    for chunk in events.chunks(every) {
        for e in chunk {
            engine.fold(e, &mut out);
        }
        commit(&mut engine);
    }
    engine.advance_to(end, &mut out);
    commit(&mut engine);
    let mut changes = Vec::new();
    for c in &out {
        leadscore::codec::encode_change_json(c, &mut changes);
        changes.push(b'\n');
    }
    (changes, records)
}

/// Rules in groups of three half-lives (the model's 30 d, 90 d, 2 d) and
/// one of no decay; MQL unreachable, so nothing resets engagement.
const RATES_MODEL: &str = r#"
version = "rates"
[engagement]
half_life = "30d"
[[engagement.groups]]
name = "long"
half_life = "90d"
[[engagement.groups]]
name = "short"
half_life = "2d"
[[engagement.groups]]
name = "kept"
half_life = "none"
[[engagement.rules]]
name = "pricing"
event = "page_view"
points = 5
[[engagement.rules]]
name = "demo"
event = "demo_requested"
points = 20
group = "long"
[[engagement.rules]]
name = "unsubscribed"
event = "unsubscribed"
points = -30
group = "short"
[[engagement.rules]]
name = "signed"
event = "form_submitted"
points = 2
group = "kept"
[new_business]
mql_min_total = 1000000
"#;

/// Event type, points, half-life in days (`None`: no decay) of [`RATES_MODEL`].
const RATED: [(&str, f64, Option<f64>); 4] = [
    ("page_view", 5.0, Some(30.0)),
    ("demo_requested", 20.0, Some(90.0)),
    ("unsubscribed", -30.0, Some(2.0)),
    ("form_submitted", 2.0, None),
];

proptest! {
    #![proptest_config(config(32))]

    /// Groups that set the model's own half-life change nothing: the same
    /// stream gives byte-identical changes and score records.
    #[test]
    fn groups_with_the_default_half_life_change_nothing(cfg in gen_config(), every in 1usize..200) {
        let events = Generator::new(cfg).all();
        let end = end_of(&events) + 120 * DAY;
        let with_groups = default_model_with_default_group_half_lives();
        prop_assert!(!with_groups.multi_rate());
        let (c1, r1) = scored_run(default_model(), &events, end, every);
        let (c2, r2) = scored_run(with_groups, &events, end, every);
        prop_assert!(!c1.is_empty() && !r1.is_empty());
        prop_assert_eq!(String::from_utf8(c1).unwrap(), String::from_utf8(c2).unwrap());
        prop_assert_eq!(String::from_utf8(r1).unwrap(), String::from_utf8(r2).unwrap());
    }

    /// With rules decaying at several rates, engagement is still
    /// Σ points × 2^(−(T − tᵢ)/hᵢ), hᵢ the half-life of the event's rule,
    /// whatever the arrival order (late points decay with their own rule's
    /// half-life).
    #[test]
    fn per_rule_half_lives_do_not_depend_on_arrival_order(
        (mut evs, perm) in prop::collection::vec((0i64..60 * DAY, 0usize..RATED.len()), 1..30)
            .prop_flat_map(|evs| {
                let n = evs.len();
                (Just(evs), Just((0..n).collect::<Vec<usize>>()).prop_shuffle())
            }),
        at_days in 0i64..100,
    ) {
        evs.sort();
        let model = Arc::new(Model::from_toml(RATES_MODEL).expect("valid"));
        prop_assert!(model.multi_rate());
        let start = t0();
        let events: Vec<Event<'static>> = evs
            .iter()
            .enumerate()
            .map(|(i, &(dt, kind))| Event::new(format!("e-{i}"), "L-1", RATED[kind].0, start + dt))
            .collect();
        let shuffled: Vec<Event<'static>> = perm.iter().map(|&i| events[i].clone()).collect();
        let last = start + evs.iter().map(|x| x.0).max().unwrap_or(0);
        let at = last + at_days * DAY;
        let mut a = Engine::with_lateness(model.clone(), 60 * DAY);
        let mut b = Engine::with_lateness(model, 60 * DAY);
        let ca = run(&mut a, &events, at);
        let cb = run(&mut b, &shuffled, at);
        prop_assert!(ca.is_empty() && cb.is_empty(), "{ca:?} {cb:?}");
        let ea = a.explain("L-1", Some(at)).expect("lead").score.engagement;
        let eb = b.explain("L-1", Some(at)).expect("lead").score.engagement;
        let want: f64 = evs
            .iter()
            .map(|&(dt, kind)| {
                let (_, points, hl) = RATED[kind];
                match hl {
                    Some(d) => points * (-((at - (start + dt)) as f64) / (d * DAY as f64)).exp2(),
                    None => points,
                }
            })
            .sum();
        // Absolute: the terms have mixed signs.
        let near = |x: f64, y: f64| (x - y).abs() <= 1e-9 * (1.0 + 30.0 * evs.len() as f64);
        prop_assert!(near(ea, eb), "in order {ea} vs shuffled {eb}");
        prop_assert!(near(ea, want), "engine {ea} vs formula {want}");
    }
}

// ---------------------------------------------------------------------------
// 4. Decoders never panic
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(64))]

    /// Arbitrary bytes: both decoders return Ok or Err, never panic; whatever
    /// they accept has its required fields.
    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(e) = decode_json(&bytes) {
            check_decoded(&e)?;
        }
        if let Ok(e) = decode_proto(&bytes) {
            check_decoded(&e)?;
        }
    }

    /// JSON-looking text.
    #[test]
    fn json_decoder_never_panics_on_json_like_text(text in "[{}\\[\\]\":,0-9a-z_\\\\. -]{0,200}") {
        if let Ok(e) = decode_json(text.as_bytes()) {
            check_decoded(&e)?;
        }
    }

    /// Valid events (generated and arbitrary), with bytes flipped, inserted or
    /// deleted, through both decoders.
    #[test]
    fn decoders_never_panic_on_mutated_events(
        e in arb_event(),
        seed in any::<u64>(),
        edits in arb_edits(),
    ) {
        let generated = Generator::new(GenConfig { seed, leads: 5, events: 3, ..GenConfig::default() }).all();
        for ev in std::iter::once(&e).chain(&generated) {
            for bytes in [json_of(ev), proto_of(ev)] {
                let bad = mutate(bytes, &edits);
                if let Ok(d) = decode_json(&bad) {
                    check_decoded(&d)?;
                }
                if let Ok(d) = decode_proto(&bad) {
                    check_decoded(&d)?;
                }
            }
        }
    }
}

/// Header names a CloudEvents decoder reads, and others.
fn arb_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop_oneof![
        select(vec![
            "ce_specversion",
            "ce_id",
            "ce_source",
            "ce_type",
            "ce_subject",
            "ce_time",
            "ce_datacontenttype",
            "content-type",
            "CE_SPECVERSION",
        ])
        .prop_map(str::to_string),
        "\\PC{0,12}",
    ];
    let value = prop_oneof![
        select(vec![
            "1.0",
            "0.3",
            "",
            "L-1",
            "page_view",
            "2026-03-02T14:00:00Z",
            "application/json",
            "text/plain",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..16),
    ];
    prop::collection::vec((name, value), 0..9)
}

/// A Segment message and a structured CloudEvent carrying the event.
fn tracking_messages(e: &Event<'_>) -> [Vec<u8>; 2] {
    let j: serde_json::Value = serde_json::from_slice(&json_of(e)).expect("encoded JSON parses");
    let kind = ["track", "page", "identify", "group", "alias", "screen"][e.event_id.len() % 6];
    let seg = serde_json::json!({
        "type": kind,
        "event": e.event_type, "messageId": e.event_id, "userId": e.lead_id,
        "anonymousId": e.event_id, "previousId": e.event_id, "groupId": e.event_type,
        "timestamp": j["occurred_at"], "properties": j["attributes"],
        "traits": j["profile"], "context": {"page": {"url": j["attributes"]}},
    });
    let ce = serde_json::json!({
        "specversion": "1.0", "id": e.event_id, "source": "/s", "type": e.event_type,
        "subject": e.lead_id, "time": j["occurred_at"],
        "data": {"attributes": j["attributes"], "profile": j["profile"], "criteria": j["criteria"], "reason": j["reason"]},
    });
    [seg.to_string().into_bytes(), ce.to_string().into_bytes()]
}

/// Every decoder and every topic setting, on `bytes` with `headers`.
fn decode_every_way(bytes: &[u8], headers: &[(String, Vec<u8>)]) -> Result<(), TestCaseError> {
    let h: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    let mut mapping = Mapping::default();
    mapping
        .segment
        .events
        .insert("x".into(), "qualification_updated".into());
    mapping.cloudevents.type_prefix = "com.".into();
    if let Ok(m) = decode_segment(bytes, &SegmentMapping::default()) {
        check_decoded(m.event())?;
    }
    for h in [&h[..], &[]] {
        if let Ok(e) = decode_cloudevent(bytes, h, &CloudEventsMapping::default()) {
            check_decoded(&e)?;
        }
    }
    let _ = strip_framing(bytes, true);
    let _ = strip_framing(bytes, false);
    for format in [
        InputFormat::Json,
        InputFormat::Protobuf,
        InputFormat::Segment,
        InputFormat::Cloudevents,
    ] {
        for (keyed_by_lead, schema_registry_framing) in
            [(false, false), (true, false), (false, true)]
        {
            let input = TopicInput {
                format,
                keyed_by_lead,
                schema_registry_framing,
            };
            if let Ok(d) = decode_message(&input, &mapping, Some(b"L-1"), &h, bytes, 4096) {
                check_decoded(d.message.event())?;
                prop_assert_eq!(d.schema_id.is_some(), schema_registry_framing);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(64))]

    /// Arbitrary bytes and headers: the Segment and CloudEvents decoders
    /// (structured and binary mode), the framing and `decode_message` in
    /// every format and topic setting return Ok or Err, never panic.
    #[test]
    fn tracking_decoders_never_panic_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        headers in arb_headers(),
    ) {
        decode_every_way(&bytes, &headers)?;
        // The same behind a well-formed frame, so the body decoders see it.
        let framed = [&[0u8, 0, 0, 0, 1, 0][..], &bytes].concat();
        decode_every_way(&framed, &headers)?;
    }

    /// Segment messages and CloudEvents made from arbitrary events, mutated.
    #[test]
    fn tracking_decoders_never_panic_on_mutated_messages(
        e in arb_event(),
        edits in arb_edits(),
        headers in arb_headers(),
    ) {
        for bytes in tracking_messages(&e) {
            decode_every_way(&bytes, &headers)?;
            decode_every_way(&mutate(bytes, &edits), &headers)?;
        }
    }
}

// ---------------------------------------------------------------------------
// 5. Snapshots
// ---------------------------------------------------------------------------

/// Encodes every lead, checks decode(encode(lead)) == lead, and returns an
/// engine restored from the snapshots with the original's watermark.
fn restart(original: &mut Engine, lateness: i64) -> Result<Engine, TestCaseError> {
    // A lead's DIRTY mark is bookkeeping for the changelog writer, not state:
    // take it first, as the service does before writing the changelog.
    original.drain_dirty(|_| {});
    let model = original.model().clone();
    let mut restored = Engine::with_lateness(model.clone(), lateness);
    for lead in original.leads() {
        let mut bytes = Vec::new();
        snapshot::encode(lead, &model, &mut bytes);
        let back = snapshot::decode(&bytes, &model);
        prop_assert!(back.is_ok(), "decode failed: {:?}", back.as_ref().err());
        let back = back.expect("checked");
        prop_assert_eq!(&back, lead);
        let mut again = Vec::new();
        snapshot::encode(&back, &model, &mut again);
        prop_assert_eq!(&again, &bytes, "encoding is stable");
        restored.restore(back);
    }
    restored.set_watermark(original.watermark());
    prop_assert_eq!(restored.lead_count(), original.lead_count());
    Ok(restored)
}

/// After both engines have run to the end, their leads are equal.
fn same_leads(a: &mut Engine, b: &mut Engine) -> Result<(), TestCaseError> {
    a.drain_dirty(|_| {});
    b.drain_dirty(|_| {});
    prop_assert_eq!(a.lead_count(), b.lead_count());
    for l in a.leads() {
        prop_assert_eq!(Some(l), b.lead(l.id()));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(32))]

    /// Generated stream, cut at a random point: every lead round-trips through
    /// its snapshot, and the restored engine continues with exactly the
    /// changes of the uninterrupted one (then both are advanced to the end).
    #[test]
    fn snapshot_round_trip_and_restart_generated(cfg in gen_config(), cut in 0.0f64..=1.0) {
        let events = Generator::new(cfg).all();
        let split = ((events.len() as f64) * cut) as usize;
        let (first, rest) = events.split_at(split.min(events.len()));
        let end = end_of(&events);
        let mut a = Engine::new(default_model());
        let mut out = Vec::new();
        for e in first {
            a.fold(e, &mut out);
        }
        let mut b = restart(&mut a, 0)?;
        let ca = run(&mut a, rest, end);
        let cb = run(&mut b, rest, end);
        prop_assert_eq!(ca, cb);
        same_leads(&mut a, &mut b)?;
    }

    /// The same on planned streams, with an allowed lateness, restarted twice.
    #[test]
    fn snapshot_restart_planned(
        plans in arb_plans(),
        lateness in select(vec![0, 6 * HOUR, DAY, 3 * DAY]),
        seed in any::<u64>(),
        cuts in (0.0f64..=1.0, 0.0f64..=1.0),
    ) {
        let leads: Vec<_> = plans.iter().enumerate().map(|(n, p)| build_lead(n, p)).collect();
        let events = merge(&leads, lateness, seed);
        let end = end_of(&events);
        let (c1, c2) = (cuts.0.min(cuts.1), cuts.0.max(cuts.1));
        let i1 = (events.len() as f64 * c1) as usize;
        let i2 = ((events.len() as f64 * c2) as usize).max(i1);
        let model = default_model();
        let mut straight = Engine::with_lateness(model.clone(), lateness);
        let want = run(&mut straight, &events, end);

        let mut got = Vec::new();
        let mut e = Engine::with_lateness(model, lateness);
        for ev in &events[..i1] {
            e.fold(ev, &mut got);
        }
        let mut e = restart(&mut e, lateness)?;
        for ev in &events[i1..i2] {
            e.fold(ev, &mut got);
        }
        let mut e = restart(&mut e, lateness)?;
        got.extend(run(&mut e, &events[i2..], end));
        prop_assert_eq!(want, got);
        same_leads(&mut straight, &mut e)?;
    }

    /// Arbitrary bytes, and valid snapshots with bytes flipped, inserted or
    /// deleted or cut short: decoding never panics, and whatever decodes
    /// encodes to bytes that decode and re-encode to the same bytes.
    #[test]
    fn snapshot_decode_never_panics(
        junk in prop::collection::vec(any::<u8>(), 0..300),
        plan in arb_plan(),
        edits in arb_edits(),
        cut in any::<Index>(),
    ) {
        let model = default_model();
        let mut engine = Engine::new(model.clone());
        run(&mut engine, &build_lead(0, &plan), t0() + 200 * DAY);
        let lead = engine.leads().next().expect("one lead");
        let mut valid = Vec::new();
        snapshot::encode(lead, &model, &mut valid);
        let header = valid[..9].to_vec();
        let mut with_header = header.clone();
        with_header.extend_from_slice(&junk);
        let truncated = valid[..cut.index(valid.len())].to_vec();
        for bytes in [junk.clone(), with_header, mutate(valid.clone(), &edits), truncated] {
            if let Ok(l) = snapshot::decode(&bytes, &model) {
                let mut b1 = Vec::new();
                snapshot::encode(&l, &model, &mut b1);
                let l2 = snapshot::decode(&b1, &model);
                prop_assert!(l2.is_ok(), "re-encoded snapshot does not decode: {:?}", l2.err());
                let mut b2 = Vec::new();
                snapshot::encode(&l2.expect("checked"), &model, &mut b2);
                prop_assert_eq!(b1, b2);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 6. JSON and protobuf agree
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(64))]

    /// An arbitrary event (strings with escapes and any Unicode, numbers,
    /// booleans, nulls, times from year 1 to 9999 to the microsecond, empty
    /// reason, nested objects) encoded as JSON and as protobuf decodes to the
    /// same event both ways, equal to the original (maps compared in name
    /// order). Arrays are left out: SPEC §2's protobuf has no form for them.
    #[test]
    fn json_and_protobuf_agree_arbitrary(e in arb_event()) {
        let j = json_of(&e);
        let p = proto_of(&e);
        let from_json = decode_json(&j);
        prop_assert!(from_json.is_ok(), "JSON: {:?} for {}", from_json.as_ref().err(), String::from_utf8_lossy(&j));
        let from_proto = decode_proto(&p);
        prop_assert!(from_proto.is_ok(), "protobuf: {:?}", from_proto.as_ref().err());
        let from_json = sorted(from_json.expect("checked").into_owned());
        let from_proto = sorted(from_proto.expect("checked").into_owned());
        prop_assert_eq!(&from_json, &from_proto);
        prop_assert_eq!(&from_json, &sorted(e));
    }

    /// Every event of a generated stream: same check.
    #[test]
    fn json_and_protobuf_agree_generated(cfg in gen_config()) {
        let cfg = GenConfig { events: cfg.events.min(300), ..cfg };
        for e in Generator::new(cfg) {
            let from_json = decode_json(&json_of(&e)).map(Event::into_owned);
            let from_proto = decode_proto(&proto_of(&e)).map(Event::into_owned);
            prop_assert!(from_json.is_ok() && from_proto.is_ok(), "{:?} / {:?}", from_json.as_ref().err(), from_proto.as_ref().err());
            let from_json = sorted(from_json.expect("checked"));
            let from_proto = sorted(from_proto.expect("checked"));
            prop_assert_eq!(&from_json, &from_proto);
            prop_assert_eq!(&from_json, &sorted(e));
        }
    }
}

// ---------------------------------------------------------------------------
// 7. Erasure and retention leave every other lead as it was
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(32))]

    /// Erasing some leads (a `lead_erased` right after one of their events,
    /// at that event's time) and folding the rest gives every other lead
    /// exactly the changes it had, change by change, with or without a
    /// retention that removes quiet leads (freed positions are reused by
    /// new leads, the index shrinks and grows).
    #[test]
    fn erasing_leads_leaves_every_other_lead_exactly_its_changes(
        cfg in gen_config(),
        picks in prop::collection::vec(any::<Index>(), 1..6),
        retain in prop::bool::ANY,
    ) {
        let events = Generator::new(cfg).all();
        prop_assume!(!events.is_empty());
        let end = end_of(&events);
        let model = if retain {
            let text = format!(
                "{}\n[retention]\ninactive_after = \"20d\"\n",
                leadscore::model::DEFAULT_MODEL_TOML
            );
            Arc::new(Model::from_toml(&text).expect("valid"))
        } else {
            default_model()
        };
        let base = run(&mut Engine::new(Arc::clone(&model)), &events, end);
        let mut at: Vec<usize> = picks.iter().map(|i| i.index(events.len())).collect();
        at.sort_unstable();
        at.dedup();
        let mut with = events.clone();
        let mut victims = std::collections::BTreeSet::new();
        for (n, &i) in at.iter().enumerate().rev() {
            let e = &events[i];
            victims.insert(e.lead_id.to_string());
            let erase = Event::new(format!("erase-{n}"), e.lead_id.to_string(), "lead_erased", e.occurred_at);
            with.insert(i + 1, erase);
        }
        let changed = run(&mut Engine::new(model), &with, end);
        let erased: Vec<&StatusChange> = changed.iter().filter(|c| c.kind == leadscore::ChangeKind::LeadErased).collect();
        prop_assert!(erased.iter().all(|c| victims.contains(&c.lead_id)));
        let others = |c: Vec<StatusChange>| -> BTreeMap<String, Vec<StatusChange>> {
            by_lead(c).into_iter().filter(|(l, _)| !victims.contains(l)).collect()
        };
        prop_assert_eq!(others(base), others(changed));
    }
}
