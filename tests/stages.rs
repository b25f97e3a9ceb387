//! An independent check of the scoring engine against SPEC §1–§4: the
//! default model's rules, the stage table, the "precise semantics" and the
//! status-change shape. Every expectation is computed by hand from the SPEC
//! text; the arithmetic is in the comments.
//!
//! Conventions: T = Monday 2026-03-02T14:00:00Z ([`t0`]); half-life 30 days,
//! so an amount p scored d days before is worth p · 2^(−d/30).

mod helpers;

use helpers::*;
use leadscore::codec::encode_change_json;
use leadscore::model::DEFAULT_MODEL_TOML;
use leadscore::time::{Micros, DAY};
use leadscore::{Model, Outcome, Stage};
use serde_json::{json, Value};

// ============================================================================
// §1 The default model: fit
// ============================================================================

#[test]
fn fit_employees_ranges_count_whole_numbers_only() {
    // 50 ≤ x < 200 → +10; 200 ≤ x ≤ 500 → +15; "counts when it is a whole
    // number (300 or 300.0); anything else leaves it unknown".
    let cases: Vec<(Value, f64)> = vec![
        (json!(49), 0.0),
        (json!(50), 10.0),
        (json!(199), 10.0),
        (json!(199.0), 10.0),
        (json!(200), 15.0),
        (json!(300.0), 15.0),
        (json!(500), 15.0),
        (json!(500.0), 15.0),
        (json!(501), 0.0),
        (json!(120.5), 0.0),
        (json!(300.5), 0.0),
        (json!("300"), 0.0),
        (json!(true), 0.0),
    ];
    let mut sim = Sim::new();
    for (i, (employees, want)) in cases.into_iter().enumerate() {
        let lead = format!("E{i}");
        sim.profile(&lead, t0(), json!({ "employees": employees.clone() }));
        assert_eq!(sim.fit(&lead), want, "employees {employees}");
    }
}

#[test]
fn fit_industry_equals_is_case_insensitive() {
    // automotive +10; food or pharma +15; "equal to", so no substring match.
    let cases: Vec<(Value, f64)> = vec![
        (json!("automotive"), 10.0),
        (json!("AUTOMOTIVE"), 10.0),
        (json!("Food"), 15.0),
        (json!("pharma"), 15.0),
        (json!("PHARMA"), 15.0),
        (json!("automotive parts"), 0.0),
        (json!("retail"), 0.0),
        (json!(7), 0.0),
    ];
    let mut sim = Sim::new();
    for (i, (industry, want)) in cases.into_iter().enumerate() {
        let lead = format!("I{i}");
        sim.profile(&lead, t0(), json!({ "industry": industry.clone() }));
        assert_eq!(sim.fit(&lead), want, "industry {industry}");
    }
}

#[test]
fn fit_job_title_group_is_exclusive() {
    // containing "director of operations" +20, ELSE containing "operations
    // manager" +10: a title containing both is worth 20, not 30.
    let cases: Vec<(Value, f64)> = vec![
        (json!("Director of Operations"), 20.0),
        (json!("director of operations, EMEA"), 20.0),
        (json!("Operations Manager"), 10.0),
        (json!("Senior OPERATIONS MANAGER"), 10.0),
        (json!("Director of Operations and Operations Manager"), 20.0),
        (json!("Operations Manager / Director of Operations"), 20.0),
        (json!("Operations"), 0.0),
        (json!("Head of Sales"), 0.0),
        (json!(20), 0.0),
    ];
    let mut sim = Sim::new();
    for (i, (title, want)) in cases.into_iter().enumerate() {
        let lead = format!("J{i}");
        sim.profile(&lead, t0(), json!({ "job_title": title.clone() }));
        assert_eq!(sim.fit(&lead), want, "job_title {title}");
    }
}

#[test]
fn fit_is_a_function_of_the_merged_profile() {
    let t = t0();
    let mut sim = Sim::new();
    // 300 employees (15) + food (15) + director (20) = 50
    sim.profile("L", t, fit50());
    assert_eq!(sim.fit("L"), 50.0);
    // industry removed (null): 15 + 20 = 35; other fields kept
    sim.profile("L", t + days(1), json!({"industry": null}));
    assert_eq!(sim.fit("L"), 35.0);
    assert!(!sim.explain("L", None).profile.contains_key("industry"));
    // title now "Operations Manager": 15 + 10 = 25
    sim.profile("L", t + days(2), json!({"job_title": "Operations Manager"}));
    assert_eq!(sim.fit("L"), 25.0);
    // 120 employees: 10 + 10 = 20
    sim.profile("L", t + days(3), json!({"employees": 120}));
    assert_eq!(sim.fit("L"), 20.0);
    sim.none();
}

// ============================================================================
// §1 The default model: engagement
// ============================================================================

#[test]
fn engagement_page_view_scores_pricing_urls() {
    // page_view whose attributes.url contains "/pricing": +5. Text matching is
    // case-insensitive; a text rule never matches a non-string.
    let cases: Vec<(Value, f64)> = vec![
        (json!({"attributes": {"url": "/pricing"}}), 5.0),
        (json!({"attributes": {"url": "/en/pricing?plan=team"}}), 5.0),
        (json!({"attributes": {"url": "/PRICING"}}), 5.0),
        (json!({"attributes": {"url": "/blog"}}), 0.0),
        (json!({"attributes": {"url": 42}}), 0.0),
        (json!({"attributes": {"path": "/pricing"}}), 0.0),
        (json!({}), 0.0),
    ];
    let mut sim = Sim::new();
    for (i, (extra, want)) in cases.into_iter().enumerate() {
        let lead = format!("P{i}");
        assert_eq!(
            sim.at(&lead, "page_view", t0(), extra.clone()),
            Outcome::Applied
        );
        assert_eq!(sim.engagement(&lead, None), want, "{extra}");
    }
}

#[test]
fn engagement_demo_webinar_whitepaper_and_unscored_types() {
    let t = t0();
    let cases: Vec<(&str, Value, f64)> = vec![
        ("demo_requested", json!({}), 20.0),
        (
            "webinar_attended",
            json!({"attributes": {"webinar": "w-7"}}),
            15.0,
        ),
        (
            "content_download",
            json!({"attributes": {"asset_type": "whitepaper"}}),
            3.0,
        ),
        (
            "content_download",
            json!({"attributes": {"asset_type": "WhitePaper"}}),
            3.0,
        ),
        (
            "content_download",
            json!({"attributes": {"asset_type": "case_study"}}),
            0.0,
        ),
        ("content_download", json!({}), 0.0),
        // "a type the model does not score is accepted and counted, not an error"
        (
            "podcast_listened",
            json!({"attributes": {"episode": 3}}),
            0.0,
        ),
    ];
    let mut sim = Sim::new();
    for (i, (ty, extra, want)) in cases.into_iter().enumerate() {
        let lead = format!("G{i}");
        assert_eq!(sim.at(&lead, ty, t, extra.clone()), Outcome::Applied);
        assert_eq!(sim.engagement(&lead, None), want, "{ty} {extra}");
        assert_eq!(sim.stage(&lead), Stage::Lead);
    }
    sim.none();
}

#[test]
fn email_opened_scores_five_every_third_open_at_that_time() {
    let t = t0();
    let mut sim = Sim::new();
    sim.open("L", t);
    sim.open("L", t + days(1));
    assert_eq!(sim.engagement("L", None), 0.0);
    // 3rd open at T+2d: +5, undecayed at the lead's time T+2d
    sim.open("L", t + days(2));
    close("after 3 opens", sim.engagement("L", None), 5.0);
    // 4th and 5th: nothing; at T+4d: 5 · 2^(−2/30) = 4.774208019552082
    sim.open("L", t + days(3));
    sim.open("L", t + days(4));
    close(
        "after 5 opens",
        sim.engagement("L", None),
        4.774_208_019_552_082,
    );
    // 6th at T+5d: 5 · 2^(−3/30) + 5 = 4.665164957684038 + 5 = 9.665164957684038
    sim.open("L", t + days(5));
    close(
        "after 6 opens",
        sim.engagement("L", None),
        9.665_164_957_684_038,
    );
    let line = sim
        .explain("L", None)
        .engagement
        .into_iter()
        .find(|l| l.event == "email_opened")
        .expect("email_opened rule");
    assert_eq!(line.occurrences, Some(6));
}

#[test]
fn email_opened_counts_in_arrival_order_without_duplicates() {
    let t = t0();
    let mut sim = Sim::new();
    // 1st open (arrival order) at T+2d
    assert_eq!(
        sim.send(ev("o1", "L", "email_opened", t + days(2), json!({}))),
        Outcome::Applied
    );
    // a duplicate is not an open
    assert_eq!(
        sim.send(ev("o1", "L", "email_opened", t + days(2), json!({}))),
        Outcome::Duplicate
    );
    // 2nd open, occurred earlier (late)
    assert_eq!(
        sim.send(ev("o2", "L", "email_opened", t + days(1), json!({}))),
        Outcome::Late
    );
    assert_eq!(sim.engagement("L", None), 0.0);
    // 3rd open in arrival order occurred at T: +5 "at that event's time",
    // decayed to the lead's time T+2d: 5 · 2^(−2/30) = 4.774208019552082
    assert_eq!(
        sim.send(ev("o3", "L", "email_opened", t, json!({}))),
        Outcome::Late
    );
    close(
        "3rd open scored at T",
        sim.engagement("L", None),
        4.774_208_019_552_082,
    );
}

#[test]
fn engagement_half_life_is_thirty_days() {
    let t = t0();
    let mut sim = Sim::new();
    sim.webinar("L", t);
    close("T", sim.engagement("L", None), 15.0);
    // 15 · 2^(−10/30) = 11.905507889761497
    close(
        "T+10d",
        sim.engagement("L", Some(t + days(10))),
        11.905_507_889_761_497,
    );
    // 15 · 2^(−1) = 7.5
    close("T+30d", sim.engagement("L", Some(t + days(30))), 7.5);
    // 15 · 2^(−40/30) = 5.952753944880748
    close(
        "T+40d",
        sim.engagement("L", Some(t + days(40))),
        5.952_753_944_880_748,
    );
    // 15 · 2^(−2) = 3.75
    close("T+60d", sim.engagement("L", Some(t + days(60))), 3.75);
}

// ============================================================================
// §1 The default model: disqualification
// ============================================================================

/// Sends `profile` for a new lead and tells whether it was disqualified
/// (checking the change emitted).
fn disqualifies(sim: &mut Sim, lead: &str, profile: Value) -> bool {
    sim.profile(lead, t0(), profile);
    let changes = sim.take();
    match sim.stage(lead) {
        Stage::Disqualified => {
            assert_eq!(changes.len(), 1, "{changes:#?}");
            let c = &changes[0];
            assert_change(c, lead, Stage::Lead, Stage::Disqualified, t0());
            assert_no_route(c);
            assert!(
                !c.reasons.is_empty(),
                "a disqualification gives reasons: {c:#?}"
            );
            true
        }
        Stage::Lead => {
            assert!(changes.is_empty(), "{changes:#?}");
            false
        }
        s => panic!("unexpected stage {s}"),
    }
}

#[test]
fn disqualify_fewer_than_ten_employees() {
    let mut sim = Sim::new();
    assert!(disqualifies(&mut sim, "S9", json!({"employees": 9})));
    assert!(disqualifies(&mut sim, "S9.0", json!({"employees": 9.0})));
    assert!(disqualifies(&mut sim, "S0", json!({"employees": 0})));
    assert!(!disqualifies(&mut sim, "S10", json!({"employees": 10})));
    assert!(!disqualifies(&mut sim, "S60", json!({"employees": 60})));
    // not a whole number / not a number: employees unknown, no rule matches
    assert!(!disqualifies(&mut sim, "S5.5", json!({"employees": 5.5})));
    assert!(!disqualifies(&mut sim, "S-str", json!({"employees": "5"})));
}

#[test]
fn disqualify_free_mail_domains() {
    let mut sim = Sim::new();
    for (i, email) in [
        "jan@gmail.com",
        "Jan@GMAIL.COM",
        "p@hotmail.com",
        "p@outlook.com",
        "p@yahoo.com",
        "p@live.com",
        "p@icloud.com",
        // the domain is the part after the LAST '@'
        "odd@name@gmail.com",
    ]
    .into_iter()
    .enumerate()
    {
        assert!(
            disqualifies(&mut sim, &format!("FM{i}"), json!({ "email": email })),
            "{email}"
        );
    }
    for (i, email) in [
        "gmail.com", // no '@': no domain
        "gmail.com@acme-industrial.com",
        "p@gmail.com.acme-industrial.com",
        "p@notgmail.com",
        "p@acme-industrial.com",
    ]
    .into_iter()
    .enumerate()
    {
        assert!(
            !disqualifies(&mut sim, &format!("OK{i}"), json!({ "email": email })),
            "{email}"
        );
    }
}

#[test]
fn disqualify_academic_domains() {
    // ".edu" at the end, or "ac" as the second-to-last label (ox.ac.uk)
    let mut sim = Sim::new();
    for (i, email) in [
        "a@mit.edu",
        "a@CS.Stanford.EDU",
        "a@ox.ac.uk",
        "a@cs.ox.ac.uk",
        "a@tue.AC.nl",
    ]
    .into_iter()
    .enumerate()
    {
        assert!(
            disqualifies(&mut sim, &format!("AC{i}"), json!({ "email": email })),
            "{email}"
        );
    }
    for (i, email) in [
        "a@mac.com",
        "a@tue.nl",
        "a@education.com",
        "a@edu.example.com",
        "a@ac.example.com",
        "a@space.com",
    ]
    .into_iter()
    .enumerate()
    {
        assert!(
            !disqualifies(&mut sim, &format!("NA{i}"), json!({ "email": email })),
            "{email}"
        );
    }
}

#[test]
fn disqualify_student_job_title() {
    let mut sim = Sim::new();
    for (i, title) in ["Student", "PhD student in chemistry", "STUDENT ASSISTANT"]
        .into_iter()
        .enumerate()
    {
        assert!(
            disqualifies(&mut sim, &format!("ST{i}"), json!({ "job_title": title })),
            "{title}"
        );
    }
    assert!(!disqualifies(
        &mut sim,
        "ST-no",
        json!({"job_title": "Studio Manager"})
    ));
}

#[test]
fn text_disqualification_rules_never_match_non_strings() {
    // "A text rule never matches a field that is not a string."
    let mut sim = Sim::new();
    assert!(!disqualifies(&mut sim, "N1", json!({"email": 12345})));
    assert!(!disqualifies(
        &mut sim,
        "N2",
        json!({"email": ["a@gmail.com"]})
    ));
    assert!(!disqualifies(
        &mut sim,
        "N3",
        json!({"job_title": {"text": "student"}})
    ));
    assert!(!disqualifies(&mut sim, "N4", json!({"email": true})));
}

#[test]
fn disqualify_competitor_domains_and_allow_free_mail() {
    // The default list of competitors is empty.
    let mut sim = Sim::new();
    assert!(!disqualifies(
        &mut sim,
        "C0",
        json!({"email": "x@rival.example"})
    ));
    // "competitors (a list of domains)": filled in.
    let toml = DEFAULT_MODEL_TOML.replace(
        "competitor_domains = []",
        "competitor_domains = [\"rival.example\"]",
    );
    assert_ne!(toml, DEFAULT_MODEL_TOML);
    let mut sim = Sim::with_toml(&toml);
    assert!(disqualifies(
        &mut sim,
        "C1",
        json!({"email": "x@rival.example"})
    ));
    assert!(disqualifies(
        &mut sim,
        "C2",
        json!({"email": "x@RIVAL.Example"})
    ));
    assert!(!disqualifies(
        &mut sim,
        "C3",
        json!({"email": "x@acme-industrial.com"})
    ));
    // "free-mail address ... unless sole proprietors are targeted"
    let toml = DEFAULT_MODEL_TOML.replace("allow_free_mail = false", "allow_free_mail = true");
    assert_ne!(toml, DEFAULT_MODEL_TOML);
    let mut sim = Sim::with_toml(&toml);
    assert!(!disqualifies(
        &mut sim,
        "F1",
        json!({"email": "x@gmail.com"})
    ));
    assert!(disqualifies(&mut sim, "F2", json!({"email": "x@mit.edu"})));
}

// ============================================================================
// §1 Bands and the 1e-9 tolerance
// ============================================================================

#[test]
fn bands_cold_warm_hot() {
    let t = t0();
    let mut sim = Sim::new();
    // fit 20 + demo 20 + whitepaper 3 + pricing 5 = 48 → cold (and no MQL: 48 < 50)
    sim.profile("B48", t, fit20());
    sim.demo("B48", t);
    sim.whitepaper("B48", t);
    sim.pricing("B48", t);
    sim.none();
    let x = sim.explain("B48", None);
    assert_eq!(
        (x.score.total, x.band.as_str(), x.stage),
        (48.0, "cold", Stage::Lead)
    );

    // fit 35 + webinar 15 = 50 → warm (inclusive), an MQL at exactly 50
    sim.profile("B50", t, fit35());
    sim.webinar("B50", t);
    let c = sim.take_one();
    assert_change(&c, "B50", Stage::Lead, Stage::Mql, t);
    assert_eq!((c.score.total, c.band.as_str()), (50.0, "warm"));

    // demo 20 + whitepaper 3 = 23 (fit 0: no MQL), then fit 50 → 73 → warm
    sim.demo("B73", t);
    sim.whitepaper("B73", t);
    sim.profile("B73", t, fit50());
    let c = sim.take_one();
    assert_eq!((c.score.total, c.band.as_str()), (73.0, "warm"));

    // demo 20 + pricing 5 = 25, then fit 50 → 75 → hot (inclusive)
    sim.demo("B75", t);
    sim.pricing("B75", t);
    sim.profile("B75", t, fit50());
    let c = sim.take_one();
    assert_eq!((c.score.total, c.band.as_str()), (75.0, "hot"));

    // a change of a lead with total 0: cold
    sim.bare("B0", "sales_accepted", t);
    let c = sim.take_one();
    assert_eq!((c.score.total, c.band.as_str()), (0.0, "cold"));
}

/// A tiny model whose thresholds sit at 1 (MQL total and engagement, warm band).
const TOLERANCE_MODEL: &str = r#"
version = "tolerance-1"

[[bands]]
name = "cold"

[[bands]]
name = "warm"
at_least = 1

[[bands]]
name = "hot"
at_least = 2

[[engagement.rules]]
name = "tick"
event = "tick"
points = 0.1

[[engagement.rules]]
name = "almost"
event = "almost"
points = 0.999999998

[new_business]
mql_min_total = 1
mql_min_fit = 0
mql_min_engagement = 1
demotion_total = 1
"#;

#[test]
fn thresholds_are_met_within_1e9() {
    let t = t0();
    let mut sim = Sim::with_toml(TOLERANCE_MODEL);
    // ten ticks of 0.1 add up (in f64) to 0.9999999999999999: 1.1e-16 below
    // the threshold 1, within 1e-9 → meets it (MQL, band warm).
    for _ in 0..9 {
        sim.bare("A", "tick", t);
    }
    sim.none();
    sim.bare("A", "tick", t);
    let c = sim.take_one();
    assert!(
        c.score.engagement < 1.0 && c.score.engagement > 1.0 - 1e-9,
        "{}",
        c.score.engagement
    );
    assert_change(&c, "A", Stage::Lead, Stage::Mql, t);
    assert_eq!(c.band, "warm");
    // 0.999999998 is 2e-9 below: not within the tolerance → not met
    sim.bare("B", "almost", t);
    sim.none();
    assert_eq!(sim.explain("B", None).band, "cold");
}

#[test]
fn a_decayed_score_within_1e9_of_the_demotion_threshold_meets_it() {
    // p = 40 · 2^(1/3) − 5e-10 scored at T; MQL window 10 days, so at the
    // deadline it is worth p · 2^(−10/30) = 40 − 5e-10 · 0.7937 = 40 − 3.97e-10:
    // within 1e-9 of the demotion threshold 40 → the lead stays.
    // q = 40 · 2^(1/3) − 5e-9 → 40 − 3.97e-9: more than 1e-9 below → demoted.
    let cube_root_2 = 2f64.powf(1.0 / 3.0);
    let p = 40.0 * cube_root_2 - 5e-10;
    let q = 40.0 * cube_root_2 - 5e-9;
    let toml = format!(
        r#"
version = "tolerance-2"

[[engagement.rules]]
name = "big"
event = "big"
points = {p:?}

[[engagement.rules]]
name = "big_q"
event = "big_q"
points = {q:?}

[new_business]
mql_min_total = 40
mql_min_fit = 0
mql_min_engagement = 0
demotion_total = 40

[requalify]
mql_window = "10d"
"#
    );
    let t = t0();
    let mut sim = Sim::with_toml(&toml);
    sim.bare("A", "big", t);
    sim.bare("B", "big_q", t);
    assert_eq!(sim.take().len(), 2, "both become MQLs at T (≈50.4 ≥ 40)");
    let a = sim.explain("A", Some(t + days(10))).score.total;
    assert!(a < 40.0 && a > 40.0 - 1e-9, "precondition: {a}");
    sim.advance(t + days(10));
    let c = sim.take_one();
    assert_change(&c, "B", Stage::Mql, Stage::Recycled, t + days(10));
    assert_eq!(sim.stage("A"), Stage::Mql);
}

#[test]
fn requalification_at_exactly_the_demotion_threshold_after_many_decay_steps() {
    // fit 20; demo 20 + webinar 15 + pricing 5 = 40 at T → MQL at T (55 at
    // the webinar), total 60. At T+30d: 40 · 2^(−1) = 20 → total 40 ≥ 40
    // (inclusive, with tolerance whatever rounding the many intermediate decay
    // steps bring) → stays. At T+60d: 10 → 30 < 40 → recycled.
    let t = t0();
    let mut sim = Sim::new();
    sim.profile("L", t, fit20());
    sim.demo("L", t);
    sim.webinar("L", t);
    sim.pricing("L", t);
    assert_eq!(sim.take_one().to, Stage::Mql);
    for minutes in [4_757_i64, 15_960, 25_551, 31_337, 43_199] {
        sim.blog("L", t + minutes * 60 * 1_000_000);
    }
    sim.advance(t + days(30));
    sim.none();
    assert_eq!(sim.stage("L"), Stage::Mql);
    close("total at T+30d", sim.explain("L", None).score.total, 40.0);
    assert_eq!(
        sim.explain("L", None).requalification_deadline.as_deref(),
        Some("2026-05-01T14:00:00Z")
    );
    sim.advance(t + days(60));
    let c = sim.take_one();
    assert_change(&c, "L", Stage::Mql, Stage::Recycled, t + days(60));
}

// ============================================================================
// §1 MQL conditions, installed base, SLA
// ============================================================================

#[test]
fn mql_needs_total_fit_and_engagement() {
    let t = t0();
    let mut sim = Sim::new();
    // fit alone never makes an MQL: fit 50, engagement 0 → total 50, no MQL
    sim.profile("F50", t, fit50());
    sim.none();
    // whitepaper: engagement 3 < 5 → total 53, still no MQL
    sim.whitepaper("F50", t);
    sim.none();
    // pricing: engagement 8 ≥ 5, total 58 → MQL
    sim.pricing("F50", t);
    let c = sim.take_one();
    assert_change(&c, "F50", Stage::Lead, Stage::Mql, t);
    assert_eq!(
        (c.score.fit, c.score.engagement, c.score.total),
        (50.0, 8.0, 58.0)
    );

    // fit 0 < 10: demo + webinar + demo = 55, no MQL
    sim.demo("F0", t);
    sim.webinar("F0", t);
    sim.demo("F0", t);
    sim.none();
    // "Operations Manager": fit 10 ≥ 10 → total 65 → MQL
    sim.profile("F0", t, json!({"job_title": "Operations Manager"}));
    let c = sim.take_one();
    assert_eq!((c.score.fit, c.score.total), (10.0, 65.0));

    // total < 50: fit 20 + demo 20 + pricing 5 = 45; + whitepaper = 48; no MQL
    sim.profile("T45", t, fit20());
    sim.demo("T45", t);
    sim.pricing("T45", t);
    sim.whitepaper("T45", t);
    sim.none();
    // + pricing = 53 → MQL
    sim.pricing("T45", t);
    assert_eq!(sim.take_one().score.total, 53.0);
}

#[test]
fn lead_to_mql_change_fields() {
    let t = t0();
    let mut sim = Sim::new();
    sim.send(ev(
        "p1",
        "L1",
        "profile_updated",
        t,
        json!({ "profile": fit20() }),
    ));
    sim.send(ev("d1", "L1", "demo_requested", t, json!({})));
    sim.none();
    sim.send(ev(
        "w1",
        "L1",
        "webinar_attended",
        t,
        json!({"attributes": {"webinar": "w-7"}}),
    ));
    // fit 20 + demo 20 + webinar 15 = 55 ≥ 50, fit 20 ≥ 10, engagement 35 ≥ 5
    let c = sim.take_one();
    assert_change(&c, "L1", Stage::Lead, Stage::Mql, t);
    assert_eq!(c.change_id, "L1:1");
    assert_eq!(c.sequence, 1);
    assert_eq!(
        (c.score.total, c.score.fit, c.score.engagement),
        (55.0, 20.0, 35.0)
    );
    assert_eq!(c.band, "warm");
    // warm MQL, new business: Monday 14:00 + 3 working days = Thursday 14:00
    assert_follow_up(&c, "new_business", "2026-03-05T14:00:00Z");
    assert_eq!(c.model_version, "default-1");
    assert_eq!(c.cause_event_id.as_deref(), Some("w1"));
    // the §4 example's wording: "total 58.5 >= mql threshold 50", "fit 25 >= 10"
    assert!(
        c.reasons
            .iter()
            .any(|r| r == "total 55 >= mql threshold 50"),
        "{:?}",
        c.reasons
    );
    assert!(
        c.reasons.iter().any(|r| r == "fit 20 >= 10"),
        "{:?}",
        c.reasons
    );
    assert!(
        c.top_contributors
            .iter()
            .any(|x| x.rule == "webinar_attended" && x.points == 15.0),
        "{:?}",
        c.top_contributors
    );
    assert!(c
        .top_contributors
        .windows(2)
        .all(|w| w[0].points >= w[1].points));
    // the requalification deadline: T + 30 days
    assert_eq!(
        sim.explain("L1", None).requalification_deadline.as_deref(),
        Some("2026-04-01T14:00:00Z")
    );
}

#[test]
fn installed_base_mql_on_one_touchpoint_with_its_route_and_sla() {
    let t = t0();
    let mut sim = Sim::new();
    // is_customer: installed base; its free-mail address does not disqualify
    sim.profile(
        "IB",
        t,
        json!({"is_customer": true, "email": "x@gmail.com"}),
    );
    sim.none();
    // whitepaper: engagement 3 < 5 → nothing
    sim.whitepaper("IB", t);
    sim.none();
    // pricing: engagement 8 ≥ 5 → MQL with no fit or total minimum (fit 0, total 8)
    sim.pricing("IB", t);
    let c = sim.take_one();
    assert_change(&c, "IB", Stage::Lead, Stage::Mql, t);
    assert_eq!(
        (c.score.fit, c.score.total, c.band.as_str()),
        (0.0, 8.0, "cold")
    );
    // route account_management, SLA 4 hours: 14:00 → 18:00
    assert_follow_up(&c, "account_management", "2026-03-02T18:00:00Z");
}

#[test]
fn installed_base_requalifies_on_engagement_alone() {
    let t = t0();
    let mut sim = Sim::new();
    sim.profile("IB", t, json!({"is_customer": true}));
    sim.webinar("IB", t);
    assert_eq!(sim.take_one().to, Stage::Mql);
    // T+30d: 15 · 2^(−1) = 7.5 ≥ 5 → stays (total 7.5 would demote new business)
    sim.advance(t + days(30));
    sim.none();
    assert_eq!(
        sim.explain("IB", None).requalification_deadline.as_deref(),
        Some("2026-05-01T14:00:00Z")
    );
    // T+60d: 3.75 < 5 → home stage (recycled: is_customer is not deal_won)
    sim.advance(t + days(60));
    let c = sim.take_one();
    assert_change(&c, "IB", Stage::Mql, Stage::Recycled, t + days(60));
    assert_no_route(&c);
    assert_eq!(c.cause_event_id, None);
}

#[test]
fn sla_three_working_days_for_a_warm_mql() {
    // "counting only Monday to Friday after the change's day, same time of
    // day: Saturday + 3 = Wednesday"
    let cases = [
        ("2026-03-02T14:00:00Z", "2026-03-05T14:00:00Z"), // Mon → Thu
        ("2026-03-04T08:00:00Z", "2026-03-09T08:00:00Z"), // Wed → Thu, Fri, Mon
        ("2026-03-06T17:00:00Z", "2026-03-11T17:00:00Z"), // Fri → Mon, Tue, Wed
        ("2026-03-07T10:15:00Z", "2026-03-11T10:15:00Z"), // Sat → Mon, Tue, Wed
        ("2026-03-08T09:00:00Z", "2026-03-11T09:00:00Z"), // Sun → Mon, Tue, Wed
    ];
    let mut sim = Sim::new();
    for (i, (at, due)) in cases.into_iter().enumerate() {
        let lead = format!("W{i}");
        sim.make_mql(&lead, ts(at));
        let c = sim.take_one();
        assert_eq!(c.band, "warm");
        assert_change(&c, &lead, Stage::Lead, Stage::Mql, ts(at));
        assert_follow_up(&c, "new_business", due);
    }
}

#[test]
fn sla_24_hours_for_a_hot_mql_and_for_an_sql() {
    let sat = ts("2026-03-07T10:15:00Z");
    let mut sim = Sim::new();
    // hot MQL (demo 20 + pricing 5 + fit 50 = 75) on a Saturday: +24h, not working days
    sim.demo("H", sat);
    sim.pricing("H", sat);
    sim.profile("H", sat, fit50());
    let c = sim.take_one();
    assert_eq!((c.to, c.band.as_str()), (Stage::Mql, "hot"));
    assert_follow_up(&c, "new_business", "2026-03-08T10:15:00Z");
    // SQL by sales_accepted on a Saturday: +24h
    sim.bare("S", "sales_accepted", sat);
    let c = sim.take_one();
    assert_change(&c, "S", Stage::Lead, Stage::Sql, sat);
    assert_follow_up(&c, "new_business", "2026-03-08T10:15:00Z");
    // SQL by criteria: MQL Monday T, criteria Tuesday T+1d → Wednesday 14:00
    let t = t0();
    sim.make_mql("C", t);
    sim.take_one();
    sim.all_criteria("C", t + days(1));
    let c = sim.take_one();
    assert_change(&c, "C", Stage::Mql, Stage::Sql, t + days(1));
    assert_follow_up(&c, "new_business", "2026-03-04T14:00:00Z");
}

#[test]
fn sla_4_hours_for_installed_base_mql_and_sql() {
    let fri = ts("2026-03-06T22:00:00Z");
    let mut sim = Sim::new();
    // Friday 22:00 + 4h = Saturday 02:00 (hours, not working days)
    sim.profile("M", fri, json!({"is_customer": true}));
    sim.pricing("M", fri);
    let c = sim.take_one();
    assert_follow_up(&c, "account_management", "2026-03-07T02:00:00Z");
    // an installed-base SQL: also 4h
    sim.profile("S", fri, json!({"is_customer": true}));
    sim.bare("S", "sales_accepted", fri);
    let c = sim.take_one();
    assert_change(&c, "S", Stage::Lead, Stage::Sql, fri);
    assert_follow_up(&c, "account_management", "2026-03-07T02:00:00Z");
    // an installed-base MQL with a hot total: still 4h. Four demos = 80 with
    // fit 0 (no new-business MQL), then is_customer → MQL at total 80 (hot)
    for _ in 0..4 {
        sim.demo("H", fri);
    }
    sim.none();
    sim.profile("H", fri, json!({"is_customer": true}));
    let c = sim.take_one();
    assert_eq!(
        (c.to, c.score.total, c.band.as_str()),
        (Stage::Mql, 80.0, "hot")
    );
    assert_follow_up(&c, "account_management", "2026-03-07T02:00:00Z");
}

// ============================================================================
// §3 Stage table, row by row
// ============================================================================

#[test]
fn table_mql_to_sql_when_all_required_criteria_are_true() {
    let t = t0();
    let mut sim = Sim::new();
    sim.make_mql("L", t);
    sim.take_one();
    sim.criteria("L", t + days(1), json!({"budget": true, "authority": true}));
    sim.none();
    // "timing" false; "urgency" is not a criterion of the default model
    sim.criteria(
        "L",
        t + days(2),
        json!({"need": true, "timing": false, "urgency": true}),
    );
    sim.none();
    // criteria merge: timing now true, but budget now false → 3 of 4
    sim.criteria("L", t + days(3), json!({"timing": true, "budget": false}));
    sim.none();
    assert_eq!(sim.stage("L"), Stage::Mql);
    // budget true again: all four → SQL
    sim.criteria("L", t + days(4), json!({"budget": true}));
    let c = sim.take_one();
    assert_change(&c, "L", Stage::Mql, Stage::Sql, t + days(4));
    // +24h from Friday T+4d
    assert_follow_up(&c, "new_business", "2026-03-07T14:00:00Z");
    // entering sql at T+4d: deadline T+94d
    assert_eq!(
        sim.explain("L", None).requalification_deadline.as_deref(),
        Some("2026-06-04T14:00:00Z")
    );
}

#[test]
fn table_sales_accepted_moves_lead_recycled_and_mql_to_sql() {
    let t = t0();
    let mut sim = Sim::new();
    // from lead, with no score at all
    sim.bare("A", "sales_accepted", t);
    let c = sim.take_one();
    assert_change(&c, "A", Stage::Lead, Stage::Sql, t);
    assert_follow_up(&c, "new_business", "2026-03-03T14:00:00Z");
    // from mql
    sim.make_mql("B", t);
    sim.take_one();
    sim.bare("B", "sales_accepted", t + days(1));
    assert_change(&sim.take_one(), "B", Stage::Mql, Stage::Sql, t + days(1));
    // from recycled (inside the quiet period, which only sales_accepted overrides)
    sim.make_mql("C", t);
    sim.bare("C", "deal_lost", t + days(1));
    assert_eq!(sim.take().len(), 2);
    sim.bare("C", "sales_accepted", t + days(2));
    assert_change(
        &sim.take_one(),
        "C",
        Stage::Recycled,
        Stage::Sql,
        t + days(2),
    );
}

#[test]
fn sales_accepted_does_not_move_customer_disqualified_or_sql() {
    let t = t0();
    let mut sim = Sim::new();
    sim.bare("CU", "deal_won", t);
    sim.take_one();
    sim.bare("CU", "sales_accepted", t + days(20));
    sim.none();
    assert_eq!(sim.stage("CU"), Stage::Customer);

    sim.profile("DQ", t, json!({"email": "x@gmail.com"}));
    sim.take_one();
    sim.bare("DQ", "sales_accepted", t);
    sim.none();
    assert_eq!(sim.stage("DQ"), Stage::Disqualified);

    sim.bare("SQ", "sales_accepted", t);
    sim.take_one();
    sim.bare("SQ", "sales_accepted", t + days(1));
    sim.none();
}

#[test]
fn table_disqualified_from_any_stage_but_customer() {
    let t = t0();
    let mut sim = Sim::new();
    // mql → disqualified (free mail)
    sim.make_mql("M", t);
    sim.take_one();
    sim.profile("M", t + days(1), json!({"email": "ann@gmail.com"}));
    let c = sim.take_one();
    assert_change(&c, "M", Stage::Mql, Stage::Disqualified, t + days(1));
    assert_no_route(&c);
    // sql → disqualified (4 employees)
    sim.make_mql("S", t);
    sim.all_criteria("S", t);
    assert_eq!(sim.take().len(), 2, "lead → mql → sql");
    sim.profile("S", t + days(1), json!({"employees": 4}));
    assert_change(
        &sim.take_one(),
        "S",
        Stage::Sql,
        Stage::Disqualified,
        t + days(1),
    );
    // sql → disqualified (sales_rejected, reason disqualified)
    sim.make_mql("S2", t);
    sim.all_criteria("S2", t);
    assert_eq!(sim.take().len(), 2);
    sim.rejected("S2", t + days(1), "disqualified");
    assert_change(
        &sim.take_one(),
        "S2",
        Stage::Sql,
        Stage::Disqualified,
        t + days(1),
    );
    // recycled → disqualified (student)
    sim.make_mql("R", t);
    sim.bare("R", "deal_lost", t + days(1));
    assert_eq!(sim.take().len(), 2);
    sim.profile("R", t + days(2), json!({"job_title": "Student"}));
    assert_change(
        &sim.take_one(),
        "R",
        Stage::Recycled,
        Stage::Disqualified,
        t + days(2),
    );
    // recycled → disqualified (sales_rejected, reason disqualified)
    sim.make_mql("R2", t);
    sim.bare("R2", "deal_lost", t + days(1));
    assert_eq!(sim.take().len(), 2);
    sim.rejected("R2", t + days(2), "disqualified");
    assert_change(
        &sim.take_one(),
        "R2",
        Stage::Recycled,
        Stage::Disqualified,
        t + days(2),
    );
    // lead → disqualified (sales_rejected, reason disqualified)
    sim.rejected("L", t, "disqualified");
    assert_change(&sim.take_one(), "L", Stage::Lead, Stage::Disqualified, t);
    // customer: never
    sim.bare("C", "deal_won", t);
    sim.take_one();
    sim.profile(
        "C",
        t + days(1),
        json!({"email": "x@gmail.com", "employees": 3}),
    );
    sim.rejected("C", t + days(1), "disqualified");
    sim.none();
    assert_eq!(sim.stage("C"), Stage::Customer);
}

#[test]
fn sales_rejected_disqualified_stays_until_installed_base() {
    let t = t0();
    let mut sim = Sim::new();
    sim.profile("R", t, fit20());
    sim.rejected("R", t, "disqualified");
    assert_change(&sim.take_one(), "R", Stage::Lead, Stage::Disqualified, t);
    // fit 20 + 35 = 55 would be an MQL; and no profile rule matches: stays
    sim.demo("R", t + days(1));
    sim.webinar("R", t + days(1));
    sim.profile("R", t + days(1), json!({"industry": "food"}));
    sim.none();
    assert_eq!(sim.stage("R"), Stage::Disqualified);
    // installed base: released at once; engagement 35 ≥ 5 → straight to mql
    sim.profile("R", t + days(1), json!({"is_customer": true}));
    let c = sim.take_one();
    assert_change(&c, "R", Stage::Disqualified, Stage::Mql, t + days(1));
    assert_follow_up(&c, "account_management", "2026-03-03T18:00:00Z");

    // without engagement: released to lead
    sim.rejected("R2", t, "disqualified");
    sim.take_one();
    sim.profile("R2", t + days(1), json!({"is_customer": true}));
    let c = sim.take_one();
    assert_change(&c, "R2", Stage::Disqualified, Stage::Lead, t + days(1));
    assert_no_route(&c);
}

#[test]
fn sales_rejected_disqualified_sticks_on_a_lead_disqualified_by_a_rule() {
    let t = t0();
    let mut sim = Sim::new();
    sim.profile("L", t, json!({"email": "x@gmail.com"}));
    sim.take_one();
    sim.rejected("L", t, "disqualified");
    sim.none();
    // the rule no longer matches, the rejection still does
    sim.profile("L", t + days(1), json!({"email": "x@acme-industrial.com"}));
    sim.none();
    assert_eq!(sim.stage("L"), Stage::Disqualified);
    assert!(sim.explain("L", None).disqualified);
}

#[test]
fn a_lead_that_stops_being_installed_base_is_screened_again() {
    // "Disqualification screens new business only": with is_customer false the
    // lead is new business again and its free-mail address disqualifies it.
    let t = t0();
    let mut sim = Sim::new();
    sim.profile("L", t, json!({"is_customer": true, "email": "x@gmail.com"}));
    sim.webinar("L", t);
    assert_eq!(sim.take_one().to, Stage::Mql);
    sim.profile("L", t + days(1), json!({"is_customer": false}));
    assert_change(
        &sim.take_one(),
        "L",
        Stage::Mql,
        Stage::Disqualified,
        t + days(1),
    );
}

#[test]
fn table_disqualified_to_lead_when_no_rule_matches_any_more() {
    let t = t0();
    let mut sim = Sim::new();
    sim.profile(
        "E",
        t,
        json!({"employees": 5, "job_title": "Director of Operations"}),
    );
    assert_change(&sim.take_one(), "E", Stage::Lead, Stage::Disqualified, t);
    // 60 employees: fit 10 + 20 = 30, engagement 0 → lead
    sim.profile("E", t + days(1), json!({"employees": 60}));
    let c = sim.take_one();
    assert_change(&c, "E", Stage::Disqualified, Stage::Lead, t + days(1));
    assert_no_route(&c);
    assert_eq!(c.score.fit, 30.0);
    // a field set to null is removed: the rule no longer matches
    sim.profile("N", t, json!({"email": "x@hotmail.com"}));
    sim.take_one();
    sim.profile("N", t + days(1), json!({"email": null}));
    assert_change(
        &sim.take_one(),
        "N",
        Stage::Disqualified,
        Stage::Lead,
        t + days(1),
    );
    // one of two rules fixed: still disqualified
    sim.profile(
        "TWO",
        t,
        json!({"email": "x@hotmail.com", "job_title": "student"}),
    );
    sim.take_one();
    sim.profile(
        "TWO",
        t + days(1),
        json!({"email": "x@acme-industrial.com"}),
    );
    sim.none();
    assert_eq!(sim.stage("TWO"), Stage::Disqualified);
}

#[test]
fn table_mql_and_sql_go_home_on_demotion_rejection_and_loss() {
    let t = t0();
    let mut sim = Sim::new();
    // mql, sales_rejected (other reason) → recycled
    sim.make_mql("MR", t);
    sim.take_one();
    sim.send(ev(
        "rej",
        "MR",
        "sales_rejected",
        t + days(1),
        json!({"reason": "no budget"}),
    ));
    let c = sim.take_one();
    assert_change(&c, "MR", Stage::Mql, Stage::Recycled, t + days(1));
    assert_no_route(&c);
    assert_eq!(c.cause_event_id.as_deref(), Some("rej"));
    // after the change: engagement 0 (fresh start), total = fit 20
    assert_eq!(
        (c.score.total, c.score.fit, c.score.engagement),
        (20.0, 20.0, 0.0)
    );
    assert_eq!(c.band, "cold");
    // sql, sales_rejected → recycled
    sim.make_mql("SR", t);
    sim.bare("SR", "sales_accepted", t);
    assert_eq!(sim.take().len(), 2);
    sim.rejected("SR", t + days(1), "timing");
    assert_change(
        &sim.take_one(),
        "SR",
        Stage::Sql,
        Stage::Recycled,
        t + days(1),
    );
    // mql, deal_lost → recycled
    sim.make_mql("ML", t);
    sim.take_one();
    sim.bare("ML", "deal_lost", t + days(1));
    assert_change(
        &sim.take_one(),
        "ML",
        Stage::Mql,
        Stage::Recycled,
        t + days(1),
    );
    // sql, deal_lost → recycled
    sim.make_mql("SL", t);
    sim.all_criteria("SL", t);
    assert_eq!(sim.take().len(), 2);
    sim.bare("SL", "deal_lost", t + days(1));
    assert_change(
        &sim.take_one(),
        "SL",
        Stage::Sql,
        Stage::Recycled,
        t + days(1),
    );
    // demotion: see the requalification tests below
}

#[test]
fn table_customer_to_mql_on_installed_base_conditions() {
    let t = t0();
    let mut sim = Sim::new();
    sim.bare("C", "deal_won", t);
    let c = sim.take_one();
    assert_change(&c, "C", Stage::Lead, Stage::Customer, t);
    assert_no_route(&c);
    // quiet until T+14d: a webinar at T+1d does not promote yet
    sim.webinar("C", t + days(1));
    sim.none();
    sim.advance(t + days(14) - 1);
    sim.none();
    // quiet timer at T+14d: engagement 15 · 2^(−13/30) = 11.108231642149232 ≥ 5
    sim.advance(t + days(14));
    let c = sim.take_one();
    assert_change(&c, "C", Stage::Customer, Stage::Mql, t + days(14));
    assert_eq!(c.cause_event_id, None);
    close("engagement", c.score.engagement, 11.108_231_642_149_232);
    // T+14d = Monday 2026-03-16 14:00, + 4h
    assert_follow_up(&c, "account_management", "2026-03-16T18:00:00Z");
    // deadline T+44d: 15 · 2^(−43/30) = 5.554115821074616 ≥ 5 → stays
    sim.advance(t + days(44));
    sim.none();
    // deadline T+74d: 15 · 2^(−73/30) = 2.777057910537308 < 5 → home = customer
    sim.advance(t + days(74));
    let c = sim.take_one();
    assert_change(&c, "C", Stage::Mql, Stage::Customer, t + days(74));
    assert_no_route(&c);
}

#[test]
fn table_deal_won_from_any_stage() {
    let t = t0();
    let mut sim = Sim::new();
    let won = |sim: &mut Sim, lead: &str, from: Stage, at: Micros| {
        sim.bare(lead, "deal_won", at);
        let c = sim.take_one();
        assert_change(&c, lead, from, Stage::Customer, at);
        assert_no_route(&c);
        assert_eq!(c.score.engagement, 0.0, "customer starts afresh");
    };
    won(&mut sim, "L", Stage::Lead, t);
    sim.make_mql("M", t);
    sim.take_one();
    won(&mut sim, "M", Stage::Mql, t + days(1));
    sim.bare("S", "sales_accepted", t);
    sim.take_one();
    won(&mut sim, "S", Stage::Sql, t + days(1));
    sim.make_mql("R", t);
    sim.bare("R", "deal_lost", t);
    assert_eq!(sim.take().len(), 2);
    won(&mut sim, "R", Stage::Recycled, t + days(1));
    sim.profile("D", t, json!({"email": "x@gmail.com"}));
    sim.take_one();
    won(&mut sim, "D", Stage::Disqualified, t + days(1));
    // already a customer: nothing
    sim.bare("D", "deal_won", t + days(2));
    sim.none();
}

// ============================================================================
// §3 Precise semantics: Clock
// ============================================================================

#[test]
fn clock_engagement_sum_does_not_depend_on_arrival_order() {
    let t = t0();
    let mut sim = Sim::new();
    // at T+10d: 15 · 2^(−10/30) + 5 · 2^(−5/30) + 20
    //         = 11.905507889761497 + 4.454493590701703 + 20 = 36.3600014804632
    let want = 36.360_001_480_463_2;
    assert_eq!(sim.webinar("A", t), Outcome::Applied);
    assert_eq!(sim.demo("A", t + days(10)), Outcome::Applied);
    assert_eq!(sim.pricing("A", t + days(5)), Outcome::Late);
    assert_eq!(sim.pricing("B", t + days(5)), Outcome::Applied);
    assert_eq!(sim.demo("B", t + days(10)), Outcome::Applied);
    assert_eq!(sim.webinar("B", t), Outcome::Late);
    close("A", sim.engagement("A", None), want);
    close("B", sim.engagement("B", None), want);
    assert_eq!(sim.explain("A", None).at, iso(t + days(10)));
    assert_eq!(sim.explain("B", None).at, iso(t + days(10)));
}

#[test]
fn clock_each_lead_has_its_own_time() {
    let t = t0();
    let mut sim = Sim::new();
    sim.webinar("A", t);
    sim.demo("B", t + days(10));
    // A has seen only T: its engagement is 15 at its own time
    let a = sim.explain("A", None);
    assert_eq!(a.at, iso(t));
    close("A at its time", a.score.engagement, 15.0);
    // 15 · 2^(−10/30) = 11.905507889761497 when asked at T+10d
    close(
        "A at T+10d",
        sim.engagement("A", Some(t + days(10))),
        11.905_507_889_761_497,
    );
}

#[test]
fn clock_a_late_event_counts_decayed_and_the_change_is_at_the_lead_time() {
    let t = t0();
    let mut sim = Sim::new();
    sim.profile("L", t, fit20());
    sim.blog("L", t + days(2));
    // demo at T, arriving at lead time T+2d: 20 · 2^(−2/30) = 19.09683207820833
    assert_eq!(sim.demo("L", t), Outcome::Late);
    sim.none();
    close("demo", sim.engagement("L", None), 19.096_832_078_208_33);
    // webinar at T: 35 · 2^(−2/30) = 33.419456136864575; total 53.419... ≥ 50
    assert_eq!(sim.webinar("L", t), Outcome::Late);
    let c = sim.take_one();
    // occurred_at is the lead's time after the event, T+2d (Wednesday)
    assert_change(&c, "L", Stage::Lead, Stage::Mql, t + days(2));
    close("total", c.score.total, 53.419_456_136_864_575);
    // Wednesday 14:00 + 3 working days = Monday 2026-03-09 14:00
    assert_follow_up(&c, "new_business", "2026-03-09T14:00:00Z");
}

// ============================================================================
// §3 Precise semantics: One change per cause
// ============================================================================

#[test]
fn one_change_disqualified_straight_to_mql() {
    let t = t0();
    let mut sim = Sim::new();
    sim.profile(
        "L",
        t,
        json!({"email": "ann@gmail.com", "job_title": "Director of Operations"}),
    );
    assert_change(&sim.take_one(), "L", Stage::Lead, Stage::Disqualified, t);
    sim.demo("L", t);
    sim.webinar("L", t);
    sim.none();
    sim.profile(
        "L",
        t + days(1),
        json!({"email": "ann@acme-industrial.com"}),
    );
    let c = sim.take_one();
    assert_change(&c, "L", Stage::Disqualified, Stage::Mql, t + days(1));
    assert_eq!(c.sequence, 2);
    // 20 + 35 · 2^(−1/30) = 20 + 34.200598895198606 = 54.200598895198606
    close("total", c.score.total, 54.200_598_895_198_6);
    // Tuesday + 3 working days = Friday
    assert_follow_up(&c, "new_business", "2026-03-06T14:00:00Z");
}

#[test]
fn one_change_straight_to_sql_when_mql_conditions_and_criteria_meet() {
    let t = t0();
    let mut sim = Sim::new();
    // criteria all true, but no MQL conditions: the criteria rule does not move a lead
    sim.all_criteria("L", t);
    sim.profile("L", t, fit20());
    sim.demo("L", t);
    sim.none();
    assert_eq!(sim.stage("L"), Stage::Lead);
    // the webinar makes the MQL conditions hold (55): lead → sql in one change
    sim.send(ev("w", "L", "webinar_attended", t, json!({})));
    let c = sim.take_one();
    assert_change(&c, "L", Stage::Lead, Stage::Sql, t);
    assert_eq!(c.cause_event_id.as_deref(), Some("w"));
    assert_follow_up(&c, "new_business", "2026-03-03T14:00:00Z");

    // a disqualified lead that is fixed and meets both: disqualified → sql
    sim.profile(
        "D",
        t,
        json!({"email": "ann@gmail.com", "job_title": "Director of Operations"}),
    );
    sim.take_one();
    sim.all_criteria("D", t);
    sim.demo("D", t);
    sim.webinar("D", t);
    sim.none();
    sim.profile("D", t, json!({"email": "ann@acme-industrial.com"}));
    assert_change(&sim.take_one(), "D", Stage::Disqualified, Stage::Sql, t);
}

#[test]
fn one_change_deal_won_comes_before_disqualification() {
    let t = t0();
    let mut sim = Sim::new();
    sim.profile("L", t, json!({"email": "x@gmail.com"}));
    sim.take_one();
    sim.bare("L", "deal_won", t + days(1));
    assert_change(
        &sim.take_one(),
        "L",
        Stage::Disqualified,
        Stage::Customer,
        t + days(1),
    );
}

#[test]
fn sales_rejected_and_deal_lost_never_promote() {
    // A model that (oddly) scores the two event types, so that each of them
    // alone makes the MQL conditions hold.
    let extra = r#"[[engagement.rules]]
name = "lost_bonus"
event = "deal_lost"
points = 30

[[engagement.rules]]
name = "rejected_bonus"
event = "sales_rejected"
points = 30

# ---- Stages"#;
    let toml = DEFAULT_MODEL_TOML.replace("# ---- Stages", extra);
    let t = t0();
    let mut sim = Sim::with_toml(&toml);
    sim.profile("L", t, fit20());
    sim.pricing("L", t);
    // fit 20 + 5 + 30 = 55: MQL conditions hold, but deal_lost never promotes
    sim.bare("L", "deal_lost", t);
    sim.none();
    assert!(sim.explain("L", None).meets_mql_conditions);
    // 85: sales_rejected never promotes either
    sim.rejected("L", t, "no budget");
    sim.none();
    assert_eq!(sim.stage("L"), Stage::Lead);
    // the next event re-evaluates: MQL
    sim.blog("L", t);
    assert_change(&sim.take_one(), "L", Stage::Lead, Stage::Mql, t);
}

#[test]
fn an_event_that_leaves_the_stage_unchanged_emits_nothing() {
    let t = t0();
    let mut sim = Sim::new();
    sim.make_mql("L", t);
    sim.take_one();
    sim.pricing("L", t + days(1));
    sim.demo("L", t + days(1));
    sim.profile("L", t + days(1), json!({"country": "NL"}));
    sim.criteria("L", t + days(1), json!({"budget": true}));
    sim.bare("L", "podcast_listened", t + days(1));
    sim.none();
    assert_eq!(sim.stage("L"), Stage::Mql);
}

// ============================================================================
// §3 Precise semantics: Home stage
// ============================================================================

#[test]
fn home_stage_is_recycled_for_is_customer_and_customer_after_deal_won() {
    let t = t0();
    let mut sim = Sim::new();
    // is_customer: installed-base thresholds, route and SLA; home stays recycled
    sim.profile("P", t, json!({"is_customer": true}));
    sim.webinar("P", t);
    let c = sim.take_one();
    assert_eq!(c.route.as_deref(), Some("account_management"));
    assert_eq!(sim.explain("P", None).home_stage, Stage::Recycled);
    sim.bare("P", "deal_lost", t + days(1));
    assert_change(
        &sim.take_one(),
        "P",
        Stage::Mql,
        Stage::Recycled,
        t + days(1),
    );

    // deal_won: home is customer
    sim.bare("W", "deal_won", t);
    sim.take_one();
    assert_eq!(sim.explain("W", None).home_stage, Stage::Customer);
    // after the quiet period a webinar promotes at once
    sim.webinar("W", t + days(20));
    assert_change(
        &sim.take_one(),
        "W",
        Stage::Customer,
        Stage::Mql,
        t + days(20),
    );
    sim.rejected("W", t + days(21), "no need");
    assert_change(
        &sim.take_one(),
        "W",
        Stage::Mql,
        Stage::Customer,
        t + days(21),
    );
    // fresh start at T+21d, quiet until T+35d
    sim.webinar("W", t + days(40));
    assert_change(
        &sim.take_one(),
        "W",
        Stage::Customer,
        Stage::Mql,
        t + days(40),
    );
    sim.bare("W", "deal_lost", t + days(41));
    assert_change(
        &sim.take_one(),
        "W",
        Stage::Mql,
        Stage::Customer,
        t + days(41),
    );
}

#[test]
fn rejection_and_loss_do_nothing_in_other_stages() {
    let t = t0();
    let mut sim = Sim::new();
    // lead
    sim.profile("L", t, fit20());
    sim.rejected("L", t, "no budget");
    sim.bare("L", "deal_lost", t);
    sim.none();
    assert_eq!(sim.stage("L"), Stage::Lead);
    // recycled
    sim.make_mql("R", t);
    sim.bare("R", "deal_lost", t + days(1));
    assert_eq!(sim.take().len(), 2);
    sim.bare("R", "deal_lost", t + days(2));
    sim.rejected("R", t + days(2), "no budget");
    sim.none();
    assert_eq!(sim.stage("R"), Stage::Recycled);
    // customer
    sim.bare("C", "deal_won", t);
    sim.take_one();
    sim.bare("C", "deal_lost", t + days(1));
    sim.rejected("C", t + days(1), "no budget");
    sim.none();
    assert_eq!(sim.stage("C"), Stage::Customer);
    // disqualified
    sim.profile("D", t, json!({"email": "x@gmail.com"}));
    sim.take_one();
    sim.bare("D", "deal_lost", t + days(1));
    sim.rejected("D", t + days(1), "no budget");
    sim.none();
    assert_eq!(sim.stage("D"), Stage::Disqualified);
}

// ============================================================================
// §3 Precise semantics: Disqualification screens new business only
// ============================================================================

#[test]
fn installed_base_is_never_disqualified_by_profile_rules() {
    let t = t0();
    let mut sim = Sim::new();
    sim.profile(
        "P",
        t,
        json!({"is_customer": true, "email": "x@gmail.com", "employees": 3, "job_title": "Student"}),
    );
    sim.none();
    let x = sim.explain("P", None);
    assert!(!x.disqualified && x.installed_base);
    sim.webinar("P", t);
    assert_change(&sim.take_one(), "P", Stage::Lead, Stage::Mql, t);
    sim.profile("P", t + days(1), json!({"email": "x@mit.edu"}));
    sim.none();
    assert_eq!(sim.stage("P"), Stage::Mql);
    // a deal_won lead
    sim.bare("W", "deal_won", t);
    sim.take_one();
    sim.profile(
        "W",
        t + days(1),
        json!({"email": "x@gmail.com", "employees": 2}),
    );
    sim.none();
    assert_eq!(sim.stage("W"), Stage::Customer);
}

#[test]
fn installed_base_rejection_as_disqualified_acts_as_any_other_rejection() {
    let t = t0();
    let mut sim = Sim::new();
    // is_customer mql → home recycled
    sim.profile("P", t, json!({"is_customer": true}));
    sim.webinar("P", t);
    sim.take_one();
    sim.rejected("P", t + days(1), "disqualified");
    let c = sim.take_one();
    assert_change(&c, "P", Stage::Mql, Stage::Recycled, t + days(1));
    assert!(!sim.explain("P", None).disqualified);
    // in stage lead it does nothing
    sim.profile("Q", t, json!({"is_customer": true}));
    sim.rejected("Q", t, "disqualified");
    sim.none();
    assert_eq!(sim.stage("Q"), Stage::Lead);
    // deal_won mql → home customer
    sim.bare("W", "deal_won", t);
    sim.webinar("W", t + days(20));
    assert_eq!(sim.take().len(), 2);
    sim.rejected("W", t + days(21), "disqualified");
    assert_change(
        &sim.take_one(),
        "W",
        Stage::Mql,
        Stage::Customer,
        t + days(21),
    );
}

#[test]
fn a_disqualified_lead_that_becomes_installed_base_is_released_at_once() {
    let t = t0();
    let mut sim = Sim::new();
    sim.profile("A", t, json!({"email": "x@gmail.com"}));
    sim.take_one();
    sim.pricing("A", t); // engagement 5, counted while disqualified
    sim.none();
    // installed base: released, and its MQL conditions (engagement 5 ≥ 5) hold
    // (at the same instant: an hour later 5 · 2^(−1/720) = 4.995 < 5)
    sim.profile("A", t, json!({"is_customer": true}));
    let c = sim.take_one();
    assert_change(&c, "A", Stage::Disqualified, Stage::Mql, t);
    assert_follow_up(&c, "account_management", "2026-03-02T18:00:00Z");
    // with no engagement: to lead
    sim.profile(
        "B",
        t,
        json!({"email": "x@gmail.com", "job_title": "student"}),
    );
    sim.take_one();
    sim.profile("B", t + hours(1), json!({"is_customer": true}));
    let c = sim.take_one();
    assert_change(&c, "B", Stage::Disqualified, Stage::Lead, t + hours(1));
    assert_no_route(&c);
}

// ============================================================================
// §3 Precise semantics: Recycling starts afresh
// ============================================================================

#[test]
fn recycling_clears_engagement_and_criteria_but_keeps_counters() {
    let t = t0();
    let mut sim = Sim::new();
    sim.profile("L", t, fit20());
    sim.open("L", t);
    sim.open("L", t); // 2 opens: no points yet
    sim.demo("L", t);
    sim.webinar("L", t);
    sim.criteria("L", t, json!({"budget": true, "authority": true}));
    assert_eq!(sim.take_one().to, Stage::Mql);
    sim.bare("L", "deal_lost", t + days(1));
    let c = sim.take_one();
    assert_change(&c, "L", Stage::Mql, Stage::Recycled, t + days(1));
    assert_eq!(
        (c.score.total, c.score.fit, c.score.engagement),
        (20.0, 20.0, 0.0)
    );
    let x = sim.explain("L", None);
    assert_eq!(x.score.engagement, 0.0);
    assert!(x.criteria.values().all(|known| !known), "{:?}", x.criteria);
    // quiet period: R + 14 days = T+15d
    assert_eq!(x.quiet_until.as_deref(), Some("2026-03-17T14:00:00Z"));
    // the count of opens is kept: the next open is the 3rd → +5
    sim.open("L", t + days(2));
    close("3rd open after recycling", sim.engagement("L", None), 5.0);
}

#[test]
fn after_a_fresh_start_an_older_event_only_updates_the_profile_or_marks_deal_won() {
    let t = t0();
    let r = t + days(5);
    let before = t + days(3);
    let mut sim = Sim::new();
    sim.make_mql("L", t);
    sim.bare("L", "deal_lost", r);
    assert_eq!(sim.take().len(), 2);
    // points: ignored
    assert_eq!(sim.webinar("L", before), Outcome::Stale);
    assert_eq!(sim.engagement("L", None), 0.0);
    // criteria: ignored
    assert_eq!(sim.all_criteria("L", before), Outcome::Stale);
    assert!(sim.explain("L", None).criteria.values().all(|k| !k));
    // sales answers: ignored (sales_accepted would otherwise promote, even when quiet)
    assert_eq!(sim.bare("L", "sales_accepted", before), Outcome::Stale);
    assert_eq!(sim.rejected("L", before, "disqualified"), Outcome::Stale);
    sim.none();
    assert_eq!(sim.stage("L"), Stage::Recycled);
    // the profile: applied (fit 20 → 35 with industry food)
    assert_eq!(
        sim.profile("L", before, json!({"industry": "food"})),
        Outcome::Stale
    );
    assert_eq!(sim.fit("L"), 35.0);
    sim.none();
    // deal_won: marked → customer, at the lead's time R
    assert_eq!(
        sim.send(ev("won", "L", "deal_won", before, json!({}))),
        Outcome::Stale
    );
    let c = sim.take_one();
    assert_change(&c, "L", Stage::Recycled, Stage::Customer, r);
    assert_eq!(c.cause_event_id.as_deref(), Some("won"));
}

#[test]
fn after_a_fresh_start_an_older_deal_lost_is_ignored() {
    let t = t0();
    let mut sim = Sim::new();
    sim.bare("L", "deal_won", t); // R = T
    sim.webinar("L", t + days(20));
    assert_eq!(
        sim.take().len(),
        2,
        "customer, then mql after the quiet period"
    );
    assert_eq!(sim.bare("L", "deal_lost", t - days(1)), Outcome::Stale);
    sim.none();
    assert_eq!(sim.stage("L"), Stage::Mql);
    sim.bare("L", "deal_lost", t + days(21));
    assert_change(
        &sim.take_one(),
        "L",
        Stage::Mql,
        Stage::Customer,
        t + days(21),
    );
}

/// MQL at T, `deal_lost` at T+1d (R = T+1d, quiet until T+15d), then at T+2d
/// demo + demo + webinar + pricing = 60 points: total 80, but quiet.
fn recycled_with_activity_in_quiet_period(sim: &mut Sim, lead: &str) {
    let t = t0();
    sim.make_mql(lead, t);
    sim.bare(lead, "deal_lost", t + days(1));
    assert_eq!(sim.take().len(), 2);
    sim.demo(lead, t + days(2));
    sim.demo(lead, t + days(2));
    sim.webinar(lead, t + days(2));
    sim.pricing(lead, t + days(2));
    sim.none();
    assert_eq!(sim.stage(lead), Stage::Recycled);
}

#[test]
fn quiet_period_blocks_mql_then_its_timer_promotes() {
    let t = t0();
    let mut sim = Sim::new();
    recycled_with_activity_in_quiet_period(&mut sim, "Q");
    sim.advance(t + days(15) - 1);
    sim.none();
    // timer at R + 14d = T+15d: 60 · 2^(−13/30) = 44.432926568596926;
    // total 64.43292656859693 → MQL, warm
    sim.advance(t + days(15));
    let c = sim.take_one();
    assert_change(&c, "Q", Stage::Recycled, Stage::Mql, t + days(15));
    assert_eq!(c.cause_event_id, None);
    close("engagement", c.score.engagement, 44.432_926_568_596_926);
    close("total", c.score.total, 64.432_926_568_596_93);
    // Tuesday T+15d + 3 working days = Friday 2026-03-20
    assert_follow_up(&c, "new_business", "2026-03-20T14:00:00Z");
}

#[test]
fn quiet_period_blocks_the_criteria_rule_then_its_timer_makes_an_sql() {
    // Reading: the quiet timer re-evaluates in the usual order, so a lead
    // meeting the MQL conditions with all criteria known goes straight to sql.
    let t = t0();
    let mut sim = Sim::new();
    recycled_with_activity_in_quiet_period(&mut sim, "Q");
    sim.all_criteria("Q", t + days(2));
    sim.none();
    sim.advance(t + days(15));
    let c = sim.take_one();
    assert_change(&c, "Q", Stage::Recycled, Stage::Sql, t + days(15));
    assert_follow_up(&c, "new_business", "2026-03-18T14:00:00Z");
}

#[test]
fn quiet_period_also_holds_a_lead_released_from_disqualification() {
    // Reading: released during the quiet period, the lead goes to `lead`
    // (the MQL conditions do not promote yet); the quiet timer promotes it.
    let t = t0();
    let mut sim = Sim::new();
    recycled_with_activity_in_quiet_period(&mut sim, "Q");
    sim.profile("Q", t + days(3), json!({"email": "x@gmail.com"}));
    assert_change(
        &sim.take_one(),
        "Q",
        Stage::Recycled,
        Stage::Disqualified,
        t + days(3),
    );
    sim.profile("Q", t + days(4), json!({"email": "x@acme-industrial.com"}));
    assert_change(
        &sim.take_one(),
        "Q",
        Stage::Disqualified,
        Stage::Lead,
        t + days(4),
    );
    // T+15d: 60 · 2^(−13/30) = 44.43 + fit 20 = 64.43 → MQL
    sim.advance(t + days(15));
    let c = sim.take_one();
    assert_change(&c, "Q", Stage::Lead, Stage::Mql, t + days(15));
    close("total", c.score.total, 64.432_926_568_596_93);
}

#[test]
fn quiet_timer_moves_the_lead_time() {
    let t = t0();
    let mut sim = Sim::new();
    sim.make_mql("Q", t);
    sim.bare("Q", "deal_lost", t + days(1)); // R = T+1d; quiet timer at T+15d
    assert_eq!(sim.take().len(), 2);
    // another lead moves the watermark to T+21d: Q's quiet timer fires (no change)
    sim.blog("X", t + days(21));
    sim.none();
    assert_eq!(sim.explain("Q", None).at, iso(t + days(15)));
    // an event at T+14d (after R: not stale) is now late for Q;
    // its 15 points are decayed to T+15d: 15 · 2^(−1/30) = 14.65739952651369
    assert_eq!(sim.webinar("Q", t + days(14)), Outcome::Late);
    close(
        "engagement",
        sim.engagement("Q", None),
        14.657_399_526_513_69,
    );
    // total 20 + 14.66 < 50: nothing
    sim.none();
}

#[test]
fn a_later_fresh_start_replaces_the_quiet_timer() {
    let t = t0();
    let mut sim = Sim::new();
    sim.make_mql("L", t);
    sim.bare("L", "deal_lost", t + days(1)); // R1 = T+1d, quiet until T+15d
    sim.bare("L", "sales_accepted", t + days(2)); // quiet: only sales_accepted promotes
    sim.rejected("L", t + days(5), "no budget"); // R2 = T+5d, quiet until T+19d
    let stages: Vec<Stage> = sim.take().iter().map(|c| c.to).collect();
    assert_eq!(
        stages,
        [Stage::Mql, Stage::Recycled, Stage::Sql, Stage::Recycled]
    );
    // 60 points at T+6d
    sim.demo("L", t + days(6));
    sim.demo("L", t + days(6));
    sim.webinar("L", t + days(6));
    sim.pricing("L", t + days(6));
    sim.advance(t + days(15));
    sim.none();
    assert_eq!(sim.stage("L"), Stage::Recycled);
    assert_eq!(
        sim.explain("L", None).quiet_until.as_deref(),
        Some("2026-03-21T14:00:00Z")
    );
    // the replaced timer did not fire: the lead's time is still T+6d, so an
    // event at T+14d is not late
    assert_eq!(sim.blog("L", t + days(14)), Outcome::Applied);
    sim.none();
    // R2 + 14d = T+19d: 60 · 2^(−13/30) = 44.43 → total 64.43 → MQL
    sim.advance(t + days(19));
    let c = sim.take_one();
    assert_change(&c, "L", Stage::Recycled, Stage::Mql, t + days(19));
    close("total", c.score.total, 64.432_926_568_596_93);
    // Saturday 2026-03-21 + 3 working days = Wednesday 2026-03-25
    assert_follow_up(&c, "new_business", "2026-03-25T14:00:00Z");
}

// ============================================================================
// §3 Precise semantics: Requalification timer
// ============================================================================

#[test]
fn requalification_demotes_at_the_deadline() {
    let t = t0();
    let mut sim = Sim::new();
    sim.make_mql("D", t); // total 55 at T, deadline T+30d
    sim.take_one();
    sim.advance(t + days(30) - 1);
    sim.none();
    // at T+30d: engagement 35 · 2^(−1) = 17.5; total 37.5 < 40 → recycled
    sim.advance(t + days(30));
    let c = sim.take_one();
    assert_change(&c, "D", Stage::Mql, Stage::Recycled, t + days(30));
    assert_eq!(iso(c.occurred_at), "2026-04-01T14:00:00Z");
    assert_eq!(c.cause_event_id, None);
    assert_no_route(&c);
    assert_eq!((c.sequence, c.change_id.as_str()), (2, "D:2"));
    // the score after the change: engagement 0 after the fresh start
    assert_eq!(
        (c.score.total, c.score.fit, c.score.engagement),
        (20.0, 20.0, 0.0)
    );
    assert_eq!(c.band, "cold");
    assert!(!c.reasons.is_empty());
}

#[test]
fn requalification_keeps_the_stage_below_the_mql_threshold_and_sets_the_next_deadline() {
    let t = t0();
    let mut sim = Sim::new();
    // fit 35 + webinar 15 = 50 → MQL at T
    sim.profile("H", t, fit35());
    sim.webinar("H", t);
    sim.take_one();
    // T+30d: 35 + 7.5 = 42.5 ≥ 40 and 7.5 ≥ 5 → stays (hysteresis: 42.5 < 50)
    sim.advance(t + days(30));
    sim.none();
    assert_eq!(sim.stage("H"), Stage::Mql);
    assert_eq!(
        sim.explain("H", None).requalification_deadline.as_deref(),
        Some("2026-05-01T14:00:00Z")
    );
    // T+60d: 35 + 3.75 = 38.75 < 40 → recycled
    sim.advance(t + days(60));
    assert_change(
        &sim.take_one(),
        "H",
        Stage::Mql,
        Stage::Recycled,
        t + days(60),
    );
}

#[test]
fn requalification_needs_the_minimum_engagement() {
    let t = t0();
    let mut sim = Sim::new();
    // fit 50 + pricing 5 = 55 → MQL
    sim.profile("E", t, fit50());
    sim.pricing("E", t);
    sim.take_one();
    // T+30d: engagement 2.5 < 5 (total 52.5 ≥ 40 does not help) → recycled
    sim.advance(t + days(30));
    assert_change(
        &sim.take_one(),
        "E",
        Stage::Mql,
        Stage::Recycled,
        t + days(30),
    );
}

#[test]
fn sql_window_is_90_days_from_entering_sql() {
    let t = t0();
    let mut sim = Sim::new();
    sim.make_mql("W", t); // MQL deadline T+30d
    sim.take_one();
    sim.all_criteria("W", t + days(10)); // SQL at T+10d: deadline T+100d
    sim.take_one();
    assert_eq!(
        sim.explain("W", None).requalification_deadline.as_deref(),
        Some("2026-06-10T14:00:00Z")
    );
    sim.advance(t + days(30));
    sim.none();
    sim.advance(t + days(100) - 1);
    sim.none();
    // T+100d: 35 · 2^(−100/30) = 3.4724398011804363 < 5 → recycled
    sim.advance(t + days(100));
    assert_change(
        &sim.take_one(),
        "W",
        Stage::Sql,
        Stage::Recycled,
        t + days(100),
    );

    // fit 50; demo + demo = 40 (MQL at the first demo); sales_accepted → SQL at T.
    // T+90d: 40 · 2^(−3) = 5 ≥ 5 and total 55 ≥ 40 → stays; next deadline T+180d
    // (a new partition: this one's watermark is already past T+90d)
    let mut sim = Sim::new();
    sim.profile("K", t, fit50());
    sim.demo("K", t);
    sim.demo("K", t);
    sim.bare("K", "sales_accepted", t);
    assert_eq!(sim.take().len(), 2);
    sim.advance(t + days(90));
    sim.none();
    assert_eq!(sim.stage("K"), Stage::Sql);
    assert_eq!(
        sim.explain("K", None).requalification_deadline.as_deref(),
        Some("2026-08-29T14:00:00Z")
    );
    // one jump of the watermark: the deadline T+180d (counted from the previous
    // deadline, not from when it fired) demotes: 40 · 2^(−6) = 0.625 < 5
    sim.advance(t + days(365));
    assert_change(
        &sim.take_one(),
        "K",
        Stage::Sql,
        Stage::Recycled,
        t + days(180),
    );
}

#[test]
fn a_timer_fires_before_a_later_event_of_its_lead_even_within_the_lateness() {
    let t = t0();
    let mut sim = Sim::with_model(Model::default_model(), 2 * DAY);
    sim.make_mql("L", t);
    sim.take_one();
    // the watermark will only be T+28d+1h, but the lead's own deadline T+30d
    // must fire before its event at T+30d+1h: 17.5 + 20 = 37.5 → demoted first
    sim.pricing("L", t + days(30) + hours(1));
    let c = sim.take_one();
    assert_change(&c, "L", Stage::Mql, Stage::Recycled, t + days(30));
    assert_eq!(c.cause_event_id, None);
    // the page view then counts in the new cycle: engagement 5
    close("engagement", sim.engagement("L", None), 5.0);
}

#[test]
fn timers_due_together_fire_in_deadline_order_then_lead_id() {
    let t = t0();
    let mut sim = Sim::new();
    sim.make_mql("Z", t);
    sim.make_mql("B", t + hours(1));
    sim.make_mql("A", t + hours(1));
    assert_eq!(sim.take().len(), 3);
    sim.advance(t + days(40));
    let order: Vec<(String, Micros)> = sim
        .take()
        .into_iter()
        .map(|c| (c.lead_id, c.occurred_at))
        .collect();
    assert_eq!(
        order,
        [
            ("Z".to_string(), t + days(30)),
            ("A".to_string(), t + days(30) + hours(1)),
            ("B".to_string(), t + days(30) + hours(1)),
        ]
    );
}

#[test]
fn a_timer_due_at_the_same_instant_as_an_event_fires_first() {
    let t = t0();
    let mut sim = Sim::new();
    sim.make_mql("L", t);
    sim.take_one();
    // demo at exactly T+30d. Timer first: 17.5 → total 37.5 → recycled at
    // T+30d; then the demo counts in the new cycle (20; quiet, no MQL).
    // (Event first would give 20 + 37.5 = 57.5 and no demotion.)
    sim.demo("L", t + days(30));
    let c = sim.take_one();
    assert_change(&c, "L", Stage::Mql, Stage::Recycled, t + days(30));
    assert_eq!(c.cause_event_id, None);
    close("engagement", sim.engagement("L", None), 20.0);
}

#[test]
fn a_timer_fires_before_another_lead_event_at_the_same_instant() {
    let t = t0();
    let mut sim = Sim::new();
    sim.make_mql("A", t);
    sim.take_one();
    // B becomes an MQL with an event at exactly A's deadline T+30d: A's
    // demotion is emitted first
    sim.make_mql("B", t + days(30));
    let order: Vec<(String, Stage)> = sim.take().into_iter().map(|c| (c.lead_id, c.to)).collect();
    assert_eq!(
        order,
        [
            ("A".to_string(), Stage::Recycled),
            ("B".to_string(), Stage::Mql)
        ]
    );
}

#[test]
fn the_watermark_trails_the_largest_event_time_by_the_allowed_lateness() {
    let t = t0();
    let mut sim = Sim::with_model(Model::default_model(), 2 * DAY);
    sim.make_mql("A", t);
    sim.take_one();
    // watermark T+31d − 2d = T+29d: A's deadline T+30d has not come
    sim.blog("X", t + days(31));
    sim.none();
    assert_eq!(sim.stage("A"), Stage::Mql);
    // watermark T+32d − 2d = T+30d: it fires
    sim.blog("X", t + days(32));
    assert_change(
        &sim.take_one(),
        "A",
        Stage::Mql,
        Stage::Recycled,
        t + days(30),
    );
}

#[test]
fn a_fired_timer_moves_the_lead_time_so_older_events_are_late() {
    let t = t0();
    let mut sim = Sim::new();
    sim.profile("L", t, fit20());
    sim.demo("L", t);
    sim.webinar("L", t);
    sim.pricing("L", t); // total 60
    sim.take_one();
    // another lead moves the watermark to T+31d: L requalifies at T+30d (total 40)
    sim.blog("X", t + days(31));
    sim.none();
    assert_eq!(sim.explain("L", None).at, iso(t + days(30)));
    // an event at T+29d is late for L: 20 + 5 · 2^(−1/30) = 24.88579984217123
    assert_eq!(sim.pricing("L", t + days(29)), Outcome::Late);
    close(
        "engagement",
        sim.engagement("L", None),
        24.885_799_842_171_23,
    );
}

#[test]
fn every_valid_event_moves_the_watermark_duplicates_included() {
    let t = t0();
    let mut sim = Sim::new();
    sim.make_mql("A", t);
    sim.take_one();
    sim.send(ev(
        "b-1",
        "B",
        "page_view",
        t,
        json!({"attributes": {"url": "/pricing"}}),
    ));
    // the same event id again, stamped T+31d: a duplicate, yet it moves the
    // watermark past A's deadline T+30d
    let outcome = sim.send(ev(
        "b-1",
        "B",
        "page_view",
        t + days(31),
        json!({"attributes": {"url": "/pricing"}}),
    ));
    assert_eq!(outcome, Outcome::Duplicate);
    assert_change(
        &sim.take_one(),
        "A",
        Stage::Mql,
        Stage::Recycled,
        t + days(30),
    );
    // and it changed nothing for B
    let b = sim.explain("B", None);
    assert_eq!(b.at, iso(t));
    assert_eq!(b.score.engagement, 5.0);
}

// ============================================================================
// §3 Precise semantics: Duplicates
// ============================================================================

#[test]
fn a_duplicate_event_changes_nothing() {
    let t = t0();
    let mut sim = Sim::new();
    assert_eq!(
        sim.send(ev("w1", "L", "webinar_attended", t, json!({}))),
        Outcome::Applied
    );
    assert_eq!(
        sim.send(ev("w1", "L", "webinar_attended", t, json!({}))),
        Outcome::Duplicate
    );
    assert_eq!(sim.engagement("L", None), 15.0);
    // same id, other content and a later time: still a duplicate
    assert_eq!(
        sim.send(ev("w1", "L", "demo_requested", t + days(1), json!({}))),
        Outcome::Duplicate
    );
    let x = sim.explain("L", None);
    assert_eq!(
        (x.score.engagement, x.at.as_str()),
        (15.0, "2026-03-02T14:00:00Z")
    );
    // a duplicate profile update is not merged
    sim.send(ev(
        "p1",
        "L",
        "profile_updated",
        t,
        json!({ "profile": fit20() }),
    ));
    let dup = ev(
        "p1",
        "L",
        "profile_updated",
        t,
        json!({"profile": {"job_title": "student"}}),
    );
    assert_eq!(sim.send(dup), Outcome::Duplicate);
    assert_eq!(sim.fit("L"), 20.0);
    assert_eq!(sim.stage("L"), Stage::Lead);
    sim.none();
}

#[test]
fn duplicates_are_recognised_among_the_last_16_event_ids() {
    let t = t0();
    let mut sim = Sim::new();
    for i in 1..=17 {
        let at = t + i * 60 * 1_000_000;
        let e = ev(
            &format!("r{i}"),
            "L",
            "page_view",
            at,
            json!({"attributes": {"url": "/blog"}}),
        );
        assert_eq!(sim.send(e), Outcome::Applied);
    }
    // the last 16 are r2..r17
    for i in [2, 9, 17] {
        let e = ev(
            &format!("r{i}"),
            "L",
            "webinar_attended",
            t + days(1),
            json!({}),
        );
        assert_eq!(sim.send(e), Outcome::Duplicate, "r{i}");
    }
    assert_eq!(sim.engagement("L", None), 0.0);
}

// ============================================================================
// §4 Status changes out
// ============================================================================

#[test]
fn change_ids_and_sequences_count_per_lead_from_one() {
    let t = t0();
    let mut sim = Sim::new();
    sim.make_mql("S", t);
    sim.bare("S", "deal_lost", t + days(1));
    sim.bare("S", "sales_accepted", t + days(2));
    sim.bare("S", "deal_won", t + days(3));
    sim.bare("O", "sales_accepted", t + days(3));
    let got: Vec<(String, u64, Stage, Stage, String)> = sim
        .take()
        .into_iter()
        .map(|c| (c.change_id, c.sequence, c.from, c.to, c.model_version))
        .collect();
    let v = "default-1".to_string();
    assert_eq!(
        got,
        [
            ("S:1".into(), 1, Stage::Lead, Stage::Mql, v.clone()),
            ("S:2".into(), 2, Stage::Mql, Stage::Recycled, v.clone()),
            ("S:3".into(), 3, Stage::Recycled, Stage::Sql, v.clone()),
            ("S:4".into(), 4, Stage::Sql, Stage::Customer, v.clone()),
            ("O:1".into(), 1, Stage::Lead, Stage::Sql, v),
        ]
    );
}

#[test]
fn change_json_has_the_spec_fields() {
    let t = t0();
    let mut sim = Sim::new();
    sim.send(ev(
        "p1",
        "L-1042",
        "profile_updated",
        t,
        json!({ "profile": fit20() }),
    ));
    sim.send(ev("d1", "L-1042", "demo_requested", t, json!({})));
    sim.send(ev("evt-8f2c", "L-1042", "webinar_attended", t, json!({})));
    sim.advance(t + days(30));
    let changes = sim.take();
    assert_eq!(changes.len(), 2);
    let json_of = |c| {
        let mut buf = Vec::new();
        encode_change_json(c, &mut buf);
        serde_json::from_slice::<Value>(&buf).expect("change is JSON")
    };
    let mql = json_of(&changes[0]);
    assert_eq!(mql["change_id"], "L-1042:1");
    assert_eq!(mql["lead_id"], "L-1042");
    assert_eq!(mql["sequence"], 1);
    assert_eq!(mql["from"], "lead");
    assert_eq!(mql["to"], "mql");
    assert_eq!(mql["occurred_at"], "2026-03-02T14:00:00Z");
    assert_eq!(
        mql["score"],
        json!({"total": 55.0, "fit": 20.0, "engagement": 35.0})
    );
    assert_eq!(mql["band"], "warm");
    assert!(mql["reasons"].is_array());
    assert!(mql["top_contributors"][0]["rule"].is_string());
    assert!(mql["top_contributors"][0]["points"].is_number());
    assert_eq!(mql["route"], "new_business");
    assert_eq!(mql["follow_up_by"], "2026-03-05T14:00:00Z");
    assert_eq!(mql["model_version"], "default-1");
    assert_eq!(mql["cause_event_id"], "evt-8f2c");
    let rec = json_of(&changes[1]);
    assert_eq!(rec["to"], "recycled");
    assert_eq!(rec["occurred_at"], "2026-04-01T14:00:00Z");
    assert_eq!(rec["route"], Value::Null);
    assert_eq!(rec["follow_up_by"], Value::Null);
    assert_eq!(rec["cause_event_id"], Value::Null);
}

#[test]
fn score_command_end_to_end_with_until() {
    let t = t0();
    let lines = [
        ev(
            "p1",
            "L1",
            "profile_updated",
            t,
            json!({ "profile": fit20() }),
        )
        .to_string(),
        ev("d1", "L1", "demo_requested", t, json!({})).to_string(),
        "{not json".to_string(),
        ev("w1", "L1", "webinar_attended", t, json!({})).to_string(),
        ev("w1", "L1", "webinar_attended", t, json!({})).to_string(),
    ];
    let path = std::env::temp_dir().join(format!("leadscore-stages-{}.jsonl", std::process::id()));
    std::fs::write(&path, lines.join("\n") + "\n").expect("write input");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadscore"))
        .args(["score", "--input"])
        .arg(&path)
        .args(["--until", "2026-04-01T14:00:00Z"])
        .output()
        .expect("run leadscore score");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The stage changes (the MQL's SLA breach, at its follow_up_by, is
    // another kind of record: the SLA tests look at it).
    let changes: Vec<Value> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|c| c["kind"] == "stage_changed")
        .collect();
    assert_eq!(changes.len(), 2, "{changes:#?}");
    assert_eq!(
        (&changes[0]["from"], &changes[0]["to"]),
        (&json!("lead"), &json!("mql"))
    );
    assert_eq!(changes[0]["cause_event_id"], "w1");
    // --until fires the deadline T+30d: 17.5 + 20 = 37.5 < 40
    assert_eq!(
        (&changes[1]["from"], &changes[1]["to"]),
        (&json!("mql"), &json!("recycled"))
    );
    assert_eq!(changes[1]["occurred_at"], "2026-04-01T14:00:00Z");
    assert_eq!(changes[1]["cause_event_id"], Value::Null);
}

/// A timer set behind the watermark (its lead's events are far later than
/// the partition's) is due at once, not at the next watermark move.
#[test]
fn timer_set_behind_the_watermark_fires_at_once() {
    use leadscore::codec::decode_json;
    use std::sync::Arc;
    let mut engine = leadscore::Engine::new(Arc::new(leadscore::Model::default_model()));
    let mut out = Vec::new();
    let fold =
        |engine: &mut leadscore::Engine, out: &mut Vec<leadscore::StatusChange>, json: &str| {
            engine.fold(&decode_json(json.as_bytes()).unwrap(), out);
        };
    // Another lead moves the watermark to June.
    fold(
        &mut engine,
        &mut out,
        r#"{"event_id":"x1","lead_id":"X","type":"page_view","occurred_at":"2026-06-01T00:00:00Z"}"#,
    );
    // L becomes an MQL on March 2 (fit 45 + webinar 15): deadline April 1, already passed.
    fold(
        &mut engine,
        &mut out,
        r#"{"event_id":"l1","lead_id":"L","type":"profile_updated","occurred_at":"2026-03-02T09:00:00Z","profile":{"employees":120,"industry":"food","job_title":"Director of Operations"}}"#,
    );
    fold(
        &mut engine,
        &mut out,
        r#"{"event_id":"l2","lead_id":"L","type":"webinar_attended","occurred_at":"2026-03-02T10:00:00Z"}"#,
    );
    let stages: Vec<_> = out
        .iter()
        .filter(|c| !c.is_breach())
        .map(|c| (c.to, leadscore::time::format_rfc3339(c.occurred_at)))
        .collect();
    // At the April 1 deadline engagement is 15 * 2^(-30/30) = 7.5 >= 5 and the total
    // 52.5 >= 40: it stays; on May 1, 3.75 < 5: recycled, emitted at that deadline.
    assert_eq!(
        stages,
        vec![
            (leadscore::Stage::Mql, "2026-03-02T10:00:00Z".to_string()),
            (
                leadscore::Stage::Recycled,
                "2026-05-01T10:00:00Z".to_string()
            ),
        ]
    );
}

/// A duplicate changes nothing: re-sent with a later time it moves the
/// watermark, but does not fire its lead's timer ahead of the watermark.
#[test]
fn duplicate_does_not_fire_its_leads_timer() {
    use leadscore::codec::decode_json;
    use leadscore::time::DAY;
    use std::sync::Arc;
    let mut engine =
        leadscore::Engine::with_lateness(Arc::new(leadscore::Model::default_model()), 2 * DAY);
    let mut out = Vec::new();
    for json in [
        // Fit 45 (120 employees, food, director of operations) + pricing 5 = 50: MQL on March 2,
        // deadline April 1 10:00.
        r#"{"event_id":"l1","lead_id":"L","type":"profile_updated","occurred_at":"2026-03-02T09:00:00Z","profile":{"employees":120,"industry":"food","job_title":"Director of Operations"}}"#,
        r#"{"event_id":"l2","lead_id":"L","type":"page_view","occurred_at":"2026-03-02T10:00:00Z","attributes":{"url":"/pricing"}}"#,
        // l2 again, re-sent with a time past the deadline: a duplicate.
        r#"{"event_id":"l2","lead_id":"L","type":"page_view","occurred_at":"2026-04-01T11:00:00Z","attributes":{"url":"/pricing"}}"#,
        // Within the allowed lateness (watermark March 30 11:00): a webinar before the deadline.
        r#"{"event_id":"l3","lead_id":"L","type":"webinar_attended","occurred_at":"2026-04-01T09:00:00Z"}"#,
    ] {
        engine.fold(&decode_json(json.as_bytes()).unwrap(), &mut out);
    }
    engine.advance_to(
        leadscore::time::parse_rfc3339("2026-04-20T00:00:00Z").unwrap(),
        &mut out,
    );
    // At April 1 10:00: 5*2^(-30/30) + 15*2^(-1h/30d) = 2.5 + 14.986 = 17.49 >= 5, total
    // 62.49 >= 40: the lead stays an MQL. Had the duplicate fired the timer, the
    // engagement would have been 2.5 < 5 and the lead recycled.
    out.retain(|c| !c.is_breach());
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].to, leadscore::Stage::Mql);
    assert_eq!(engine.lead("L").unwrap().stage(), leadscore::Stage::Mql);
}
