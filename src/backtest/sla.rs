//! SLA compliance in a backtest: of the hand-offs (changes to `mql` or
//! `sql`) before the leads' outcomes, how many sales touched
//! (`sales_contacted`) before their `follow_up_by`, how many breached, and
//! how long the first touch took, by route.
//!
//! Reported only when the events hold a `sales_contacted`: without one,
//! every hand-off would breach, which says nothing about the model.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::Touch;
use crate::time::{Micros, HOUR};

/// One route's counts, as they accumulate.
#[derive(Debug, Clone, Default)]
struct RouteTally {
    handoffs: u64,
    touched_in_time: u64,
    touched_late: u64,
    breaches: u64,
    /// Time from hand-off to first touch, of every touched hand-off.
    waits: Vec<Micros>,
}

/// The SLA counts of one model, by route.
#[derive(Debug, Clone, Default)]
pub struct SlaTally {
    routes: BTreeMap<String, RouteTally>,
}

impl SlaTally {
    /// A change to `mql` or `sql` (a new clock) on `route`.
    pub fn hand_off(&mut self, route: &str) {
        self.route(route).handoffs += 1;
    }

    /// An `sla_breached` record on `route`.
    pub fn breach(&mut self, route: &str) {
        self.route(route).breaches += 1;
    }

    /// A hand-off's first touch on `route`.
    pub fn touch(&mut self, route: &str, t: &Touch) {
        let r = self.route(route);
        if t.breached {
            r.touched_late += 1;
        } else {
            r.touched_in_time += 1;
        }
        r.waits.push(t.waited());
    }

    fn route(&mut self, route: &str) -> &mut RouteTally {
        if !self.routes.contains_key(route) {
            self.routes.insert(route.to_string(), RouteTally::default());
        }
        self.routes.get_mut(route).expect("inserted above")
    }

    /// The report, routes in name order.
    pub fn report(&self) -> Vec<SlaRoute> {
        self.routes
            .iter()
            .map(|(route, r)| {
                let decided = r.touched_in_time + r.breaches;
                let mut waits = r.waits.clone();
                waits.sort_unstable();
                SlaRoute {
                    route: route.clone(),
                    handoffs: r.handoffs,
                    touched_in_time: r.touched_in_time,
                    breaches: r.breaches,
                    touched_after_breach: r.touched_late,
                    compliance: (decided > 0).then(|| r.touched_in_time as f64 / decided as f64),
                    median_hours_to_first_touch: median(&waits).map(|m| m / HOUR as f64),
                }
            })
            .collect()
    }
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[Micros]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2] as f64),
        _ => Some((sorted[n / 2 - 1] as f64 + sorted[n / 2] as f64) / 2.0),
    }
}

/// SLA compliance of one route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlaRoute {
    pub route: String,
    /// Changes to `mql` or `sql` before the lead's outcome (each starts a clock).
    pub handoffs: u64,
    /// First touches strictly before `follow_up_by`.
    pub touched_in_time: u64,
    /// `sla_breached` records: `follow_up_by` passed untouched.
    pub breaches: u64,
    /// Breached hand-offs that sales touched later.
    pub touched_after_breach: u64,
    /// `touched_in_time / (touched_in_time + breaches)`: of the hand-offs
    /// whose deadline was decided, the share met. Hand-offs still waiting at
    /// the end of the events, and those that left `mql`/`sql` (or went on
    /// from `mql` to `sql`, a new clock) before their deadline untouched,
    /// count in neither.
    pub compliance: Option<f64>,
    /// Median time from hand-off to first touch, late touches included.
    pub median_hours_to_first_touch: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(waited_hours: i64, breached: bool) -> Touch {
        Touch {
            lead_id: "L".into(),
            installed_base: false,
            handed_off_at: 0,
            follow_up_by: 24 * HOUR,
            touched_at: waited_hours * HOUR,
            breached,
        }
    }

    #[test]
    fn compliance_counts_decided_hand_offs() {
        let mut t = SlaTally::default();
        for _ in 0..4 {
            t.hand_off("new_business");
        }
        t.touch("new_business", &touch(2, false));
        t.touch("new_business", &touch(10, false));
        t.breach("new_business");
        t.touch("new_business", &touch(30, true));
        // One hand-off still waits: in neither count.
        let r = t.report();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].handoffs, 4);
        assert_eq!((r[0].touched_in_time, r[0].breaches), (2, 1));
        assert_eq!(r[0].touched_after_breach, 1);
        // 2 in time of 3 decided.
        assert_eq!(r[0].compliance, Some(2.0 / 3.0));
        // Waits 2, 10, 30 h: median 10.
        assert_eq!(r[0].median_hours_to_first_touch, Some(10.0));
    }
}
