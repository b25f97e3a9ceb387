//! The call list (`GET /leads`) drawn from the engine: which leads, in which
//! order, scored at which time, whether their follow-up is overdue — on
//! hand-computed scenarios with exact times — and the same list after the
//! state is restored from its snapshots.

mod helpers;

use std::collections::BTreeMap;
use std::sync::Arc;

use helpers::*;
use leadscore::engine::calllist::draw;
use leadscore::engine::{snapshot, CallListEntry, CallListQuery, Order};
use leadscore::{Engine, Model, Stage};
use serde_json::json;

/// Three hand-offs on Monday 2026-03-02 14:00 (t0), and a lead that never
/// qualifies:
/// - A: fit 50, then a demo request (+20): MQL at 70, warm → follow up within
///   3 working days, by Thursday 14:00 (t0 + 3 d);
/// - B: a demo and a webinar (+35), then a profile with fit 50: MQL at 85,
///   hot → within 24 h (t0 + 24 h);
/// - C: a demo, then fit 35: MQL at 55 (warm); all criteria at t0 + 1 h:
///   SQL → within 24 h of that (t0 + 25 h);
/// - D: fit 20 and a pricing page (+5): 25, a lead. Its blog visit at
///   t0 + 2 d moves the partition's watermark there.
fn scenario() -> (Sim, BTreeMap<String, i64>) {
    let mut s = Sim::new();
    let t0 = t0();
    s.profile("A", t0, fit50());
    s.demo("A", t0);
    s.demo("B", t0);
    s.webinar("B", t0);
    s.profile("B", t0, fit50());
    s.demo("C", t0);
    s.profile("C", t0, fit35());
    s.all_criteria("C", t0 + hours(1));
    s.profile("D", t0, fit20());
    s.pricing("D", t0);
    s.blog("D", t0 + days(2));
    // The follow-up times the changes were emitted with.
    let mut due = BTreeMap::new();
    for c in s.take() {
        if let Some(t) = c.follow_up_by {
            due.insert(c.lead_id.clone(), t);
        }
    }
    (s, due)
}

fn ids(list: &[CallListEntry]) -> Vec<&str> {
    list.iter().map(|e| e.lead_id.as_str()).collect()
}

fn query(f: impl FnOnce(&mut CallListQuery)) -> CallListQuery {
    let mut q = CallListQuery::default();
    f(&mut q);
    q
}

#[test]
fn the_call_list_is_ordered_by_total_at_the_watermark_with_sla_state() {
    let (s, due) = scenario();
    let t0 = t0();
    assert_eq!(due["A"], ts("2026-03-05T14:00:00Z"));
    assert_eq!(due["B"], t0 + hours(24));
    assert_eq!(due["C"], t0 + hours(25));
    let model = Model::default_model();
    let list = draw([&s.engine], &model, &CallListQuery::default()).unwrap();
    let at = t0 + days(2);
    assert_eq!(list.at, Some(at));
    assert_eq!(list.bands, ["cold", "warm", "hot"]);
    assert_eq!(ids(&list.leads), ["B", "A", "C"]);

    // Two days of decay at a 30-day half-life: × 2^(−2/30) = 0.954842…
    let f = (-2.0f64 / 30.0).exp2();
    let [b, a, c] = &list.leads[..] else {
        panic!("three leads")
    };
    close("B total", b.total, 50.0 + 35.0 * f); // 83.42: hot
    close("A total", a.total, 50.0 + 20.0 * f); // 69.10: warm
    close("C total", c.total, 35.0 + 20.0 * f); // 54.10: warm
    assert_eq!(
        (b.band.as_str(), a.band.as_str(), c.band.as_str()),
        ("hot", "warm", "warm")
    );
    assert_eq!(
        (b.stage, a.stage, c.stage),
        (Stage::Mql, Stage::Mql, Stage::Sql)
    );
    for e in &list.leads {
        assert_eq!(e.as_of, at);
        assert_eq!(e.route.as_deref(), Some("new_business"));
        // The follow-up time the change was emitted with.
        assert_eq!(e.follow_up_by, Some(due[&e.lead_id]), "{}", e.lead_id);
        // The scores are explain's at the same time.
        let x = s.explain(&e.lead_id, Some(at));
        close(&e.lead_id, e.total, x.score.total);
        assert_eq!(e.band, x.band);
    }
    // At t0 + 2 d, B's (t0 + 24 h) and C's (t0 + 25 h) follow-ups are overdue,
    // A's (Thursday) is not.
    assert_eq!((b.overdue, a.overdue, c.overdue), (true, false, true));

    let overdue = draw([&s.engine], &model, &query(|q| q.overdue_only = true)).unwrap();
    assert_eq!(ids(&overdue.leads), ["B", "C"]);
    let hot = draw(
        [&s.engine],
        &model,
        &query(|q| q.bands = vec!["hot".into()]),
    )
    .unwrap();
    assert_eq!(ids(&hot.leads), ["B"]);
    let sql = draw([&s.engine], &model, &query(|q| q.stages = vec![Stage::Sql])).unwrap();
    assert_eq!(ids(&sql.leads), ["C"]);
    let by_due = draw([&s.engine], &model, &query(|q| q.order = Order::FollowUpBy)).unwrap();
    assert_eq!(ids(&by_due.leads), ["B", "C", "A"]);
    let two = draw([&s.engine], &model, &query(|q| q.limit = 2)).unwrap();
    assert_eq!(ids(&two.leads), ["B", "A"]);
    let e = draw(
        [&s.engine],
        &model,
        &query(|q| q.bands = vec!["tepid".into()]),
    )
    .unwrap_err();
    assert_eq!(e.param, "band");
}

#[test]
fn a_follow_up_is_overdue_from_its_follow_up_by_instant_on() {
    let (mut s, due) = scenario();
    let model = Model::default_model();
    let overdue = |s: &Sim| {
        let q = query(|q| q.overdue_only = true);
        let list = draw([&s.engine], &model, &q).unwrap();
        ids(&list.leads)
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // A is due on Thursday 14:00: not a microsecond before.
    s.blog("D", due["A"] - 1);
    assert_eq!(overdue(&s), ["B", "C"]);
    s.blog("D", due["A"]);
    assert_eq!(overdue(&s), ["B", "A", "C"]);
}

#[test]
fn leads_leave_the_list_when_they_leave_the_stage() {
    let (mut s, _) = scenario();
    let model = Model::default_model();
    let at = t0() + days(2);
    s.at("A", "sales_rejected", at, json!({"reason": "no budget"}));
    assert_eq!(s.take_one().to, Stage::Recycled);
    let list = draw([&s.engine], &model, &CallListQuery::default()).unwrap();
    assert_eq!(ids(&list.leads), ["B", "C"]);
    let recycled = draw(
        [&s.engine],
        &model,
        &query(|q| q.stages = vec![Stage::Recycled]),
    )
    .unwrap();
    assert_eq!(ids(&recycled.leads), ["A"]);
    let a = &recycled.leads[0];
    // Recycling starts afresh: engagement 0, no route, no follow-up.
    close("A total", a.total, 50.0);
    assert_eq!(
        (a.route.as_ref(), a.follow_up_by, a.overdue),
        (None, None, false)
    );
}

#[test]
fn a_restored_partition_lists_the_same_leads() {
    let (s, _) = scenario();
    let model = Arc::new(Model::default_model());
    let mut restored = Engine::new(Arc::clone(&model));
    let mut buf = Vec::new();
    for lead in s.engine.leads() {
        buf.clear();
        snapshot::encode(lead, &model, &mut buf);
        restored.restore(snapshot::decode(&buf, &model).unwrap());
    }
    restored.set_watermark(s.engine.watermark());
    for q in [
        CallListQuery::default(),
        query(|q| q.order = Order::FollowUpBy),
        query(|q| q.overdue_only = true),
    ] {
        assert_eq!(
            draw([&restored], &model, &q).unwrap(),
            draw([&s.engine], &model, &q).unwrap(),
            "{q:?}"
        );
    }
}

#[test]
fn partitions_merge_into_one_list() {
    // The same leads split over two partitions list as in one.
    let (whole, _) = scenario();
    let t0 = t0();
    let mut p1 = Sim::new();
    let mut p2 = Sim::new();
    p1.profile("A", t0, fit50());
    p1.demo("A", t0);
    p2.demo("B", t0);
    p2.webinar("B", t0);
    p2.profile("B", t0, fit50());
    p1.demo("C", t0);
    p1.profile("C", t0, fit35());
    p1.all_criteria("C", t0 + hours(1));
    p2.blog("D", t0 + days(2));
    let model = Model::default_model();
    let q = CallListQuery::default();
    // p1's watermark is t0 + 1 h, p2's t0 + 2 d: the list is drawn at the later.
    let merged = draw([&p1.engine, &p2.engine], &model, &q).unwrap();
    let single = draw([&whole.engine], &model, &q).unwrap();
    assert_eq!(merged.at, single.at);
    assert_eq!(merged.leads, single.leads);
}
