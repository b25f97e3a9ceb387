//! The SLA clock of a hand-off: started by a change to `mql` or `sql`,
//! stopped by the first `sales_contacted`, and run out at `follow_up_by`,
//! where the engine emits an `sla_breached` record.
//!
//! One clock per lead: a change to `mql` or `sql` starts a new one (an `mql`
//! promoted to `sql` gets the SQL's `follow_up_by`), a change to any other
//! stage stops it with nothing emitted.

use super::lead::{sla, Lead, NEVER};
use super::{top_contributors, Model};
use crate::change::{ChangeKind, Score, Stage, StatusChange};
use crate::time::Micros;

/// A hand-off's first touch (a `sales_contacted` while it waited for one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    pub lead_id: String,
    /// The hand-off went to the installed base's route (else new business).
    pub installed_base: bool,
    /// When the lead changed to `mql` or `sql`.
    pub handed_off_at: Micros,
    pub follow_up_by: Micros,
    /// The `sales_contacted` event's time.
    pub touched_at: Micros,
    /// Its breach had been emitted before the touch arrived.
    pub breached: bool,
}

impl Touch {
    /// Time from the hand-off to the first touch.
    pub fn waited(&self) -> Micros {
        self.touched_at - self.handed_off_at
    }
}

/// Starts (on a change to `mql` or `sql`) or stops (on any other) the clock.
pub(super) fn hand_off(lead: &mut Lead, to: Stage, follow_up_by: Option<Micros>) {
    match follow_up_by {
        Some(due) if to.is_qualified() => {
            lead.sla = sla::OPEN
                | if lead.installed_base() {
                    sla::INSTALLED
                } else {
                    0
                };
            lead.set_sla_due(due);
        }
        _ => {
            lead.sla = 0;
            lead.set_sla_due(NEVER);
        }
    }
}

/// A `sales_contacted` at `t`: the first touch of the waiting hand-off, if
/// there is one and `t` is not before it (a contact from before the
/// hand-off, arriving late, is not its follow-up: had it arrived in order it
/// would have found no clock running).
pub(super) fn touch(lead: &mut Lead, t: Micros) -> Option<Touch> {
    if lead.sla & sla::OPEN == 0 || t < lead.stage_entered {
        return None;
    }
    let touch = Touch {
        lead_id: lead.id().to_string(),
        installed_base: lead.sla & sla::INSTALLED != 0,
        handed_off_at: lead.stage_entered,
        follow_up_by: lead.x().sla_due,
        touched_at: t,
        breached: lead.sla & sla::BREACHED != 0,
    };
    lead.sla = 0;
    lead.set_sla_due(NEVER);
    Some(touch)
}

/// The breach of the lead's hand-off, whose clock ran out at `at` (not
/// before the lead's time), with the score at `at`. Marks it emitted: one
/// per hand-off.
pub(super) fn breach(lead: &mut Lead, model: &Model, at: Micros) -> StatusChange {
    lead.sla |= sla::BREACHED;
    let lead = &*lead;
    // The score at the deadline, without moving the lead's own clock.
    let engagement = lead.engagement_at(model, at);
    let decay = lead.decay_factor(model, at);
    let fit = lead.fit(model);
    let total = fit + engagement;
    let track = model.track(lead.sla & sla::INSTALLED != 0);
    StatusChange {
        kind: ChangeKind::SlaBreached,
        change_id: breach_id(lead.id(), lead.sequence),
        lead_id: lead.id().to_string(),
        sequence: u64::from(lead.sequence),
        from: lead.stage,
        to: lead.stage,
        occurred_at: at,
        score: Score {
            total,
            fit,
            engagement,
        },
        band: model.bands[model.band(total)].name.clone(),
        reasons: Vec::new(),
        top_contributors: top_contributors(lead, model, &decay),
        route: Some(track.route.clone()),
        follow_up_by: Some(lead.x().sla_due),
        model_version: model.version.clone(),
        cause_event_id: None,
    }
}

/// `<lead_id>:<sequence>:sla`, where `sequence` is the hand-off change's: a
/// stage change's id ends in its sequence's digits, so the two never meet.
pub fn breach_id(lead: &str, sequence: u32) -> String {
    // Without `format!`, as `change_id`: one breach per hand-off.
    let mut id = String::with_capacity(lead.len() + 15);
    id.push_str(lead);
    id.push(':');
    super::stage::push_digits(&mut id, u64::from(sequence));
    id.push_str(":sla");
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breach_ids_never_equal_a_change_id() {
        // A lead id with a colon: "a:1" at sequence 2 is "a:1:2", never
        // "a:1:sla" (the breach of lead "a"'s change 1).
        assert_eq!(breach_id("a", 1), "a:1:sla");
        assert_ne!(breach_id("a", 1), "a:1:2");
        assert!(!breach_id("a", 1).ends_with(|c: char| c.is_ascii_digit()));
    }
}
