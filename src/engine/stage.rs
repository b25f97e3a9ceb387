//! The stage machine: after each event or timer, which stage the lead moves
//! to, if any (SPEC §3, "one change per cause"), and the reasons given.

use super::lead::{disq, Lead};
use crate::change::Stage;
use crate::model::Model;

/// What caused a re-evaluation.
#[derive(Debug, Clone, Copy)]
pub enum Cause<'e> {
    Event(EventCause<'e>),
    /// A timer: the requalification deadline (`requal`) or the end of a quiet period.
    Timer {
        requal: bool,
    },
}

/// The parts of an applied event that the stage machine looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct EventCause<'e> {
    pub deal_won: bool,
    pub sales_accepted: bool,
    /// `sales_rejected`, with its reason.
    pub sales_rejected: Option<&'e str>,
    pub deal_lost: bool,
}

/// Why a lead changed stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    DealWon,
    Disqualified,
    SalesRejected,
    DealLost,
    Demoted,
    /// `demote_on_score`: an MQL below the requalification conditions, before its deadline.
    ScoreDemoted,
    SalesAccepted,
    CriteriaMet,
    Mql,
    Released,
}

/// Decides the lead's next stage. The order is the spec's: `deal_won`,
/// disqualification, rejection or loss, (requalification), SQL, MQL, and last
/// the release of a disqualified lead. Returns `None` when the stage stays.
pub fn decide(
    lead: &Lead,
    model: &Model,
    cause: Cause<'_>,
    at: crate::time::Micros,
) -> Option<(Stage, Why)> {
    let stage = lead.stage;
    let ev = match cause {
        Cause::Event(e) => e,
        Cause::Timer { .. } => EventCause::default(),
    };
    if ev.deal_won {
        return (stage != Stage::Customer).then_some((Stage::Customer, Why::DealWon));
    }
    if lead.disqualified() {
        return (stage != Stage::Disqualified).then_some((Stage::Disqualified, Why::Disqualified));
    }
    if ev.sales_rejected.is_some() || ev.deal_lost {
        // These two never promote.
        let why = if ev.deal_lost {
            Why::DealLost
        } else {
            Why::SalesRejected
        };
        return stage.is_qualified().then_some((lead.home_stage(), why));
    }
    if let Cause::Timer { requal: true } = cause {
        if stage.is_qualified() && !lead.requalifies(model) {
            return Some((lead.home_stage(), Why::Demoted));
        }
    }
    if model.demote_on_score && stage == Stage::Mql && !lead.requalifies(model) {
        return Some((lead.home_stage(), Why::ScoreDemoted));
    }
    if ev.sales_accepted && matches!(stage, Stage::Lead | Stage::Recycled | Stage::Mql) {
        return Some((Stage::Sql, Why::SalesAccepted));
    }
    let quiet = lead.quiet_until(model).is_some_and(|end| at < end);
    let can_become_mql = matches!(
        stage,
        Stage::Lead | Stage::Recycled | Stage::Customer | Stage::Disqualified
    );
    let mql_now = !quiet && can_become_mql && lead.meets_mql(model);
    if !quiet && lead.criteria_met(model) && (stage == Stage::Mql || mql_now) {
        return Some((Stage::Sql, Why::CriteriaMet));
    }
    if mql_now {
        return Some((Stage::Mql, Why::Mql));
    }
    if stage == Stage::Disqualified {
        return Some((Stage::Lead, Why::Released));
    }
    None
}

/// A number for a reason text: whole numbers bare, others to two decimals.
pub fn num(x: f64) -> String {
    let mut s = String::new();
    push_num(&mut s, x);
    s
}

/// Appends [`num`]'s text for `x`. A change carries a few of these, so
/// they are written in place rather than formatted into strings of their own.
pub fn push_num(out: &mut String, x: f64) {
    let hundredths = (x * 100.0).round();
    // Below 1e12 hundredths the nearest f64 to k/100 prints as k/100's
    // digits, so the digits can come from the integer.
    if hundredths.abs() < 1e12 {
        let k = hundredths as i64;
        if k < 0 {
            out.push('-');
        }
        let k = k.unsigned_abs();
        push_digits(out, k / 100);
        let frac = k % 100;
        if frac != 0 {
            out.push('.');
            out.push(char::from(b'0' + (frac / 10) as u8));
            if !frac.is_multiple_of(10) {
                out.push(char::from(b'0' + (frac % 10) as u8));
            }
        }
    } else {
        let r = hundredths / 100.0;
        if r == r.trunc() {
            out.push_str(&(r as i64).to_string());
        } else {
            let s = format!("{r:.2}");
            out.push_str(s.trim_end_matches('0'));
        }
    }
}

/// Appends the decimal digits of `n`.
pub(super) fn push_digits(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// A piece of a reason text.
enum Part<'a> {
    Text(&'a str),
    Num(f64),
}

/// One reason, from its pieces, in one allocation.
fn reason(parts: &[Part<'_>]) -> String {
    let len = parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => t.len(),
            Part::Num(_) => 8,
        })
        .sum();
    let mut s = String::with_capacity(len);
    for p in parts {
        match *p {
            Part::Text(t) => s.push_str(t),
            Part::Num(x) => push_num(&mut s, x),
        }
    }
    s
}

/// Human-readable reasons for a change, from the state before any fresh start.
pub fn reasons(lead: &Lead, model: &Model, why: Why, rejected_reason: Option<&str>) -> Vec<String> {
    let ib = lead.installed_base();
    let track = lead.track(model);
    let e = lead.engagement(model);
    let total = lead.fit(model) + e;
    match why {
        Why::DealWon => vec!["deal won".into()],
        Why::Disqualified => disqualification_reasons(lead, model),
        Why::SalesRejected => vec![format!(
            "sales rejected: {}",
            rejected_reason.unwrap_or("no reason given")
        )],
        Why::DealLost => vec!["deal lost".into()],
        Why::Demoted | Why::ScoreDemoted => {
            let prefix = if why == Why::Demoted {
                "requalification: "
            } else {
                "demote_on_score: "
            };
            let mut r = Vec::new();
            if e < track.mql_min_engagement - crate::model::TOLERANCE {
                r.push(reason(&[
                    Part::Text(prefix),
                    Part::Text("engagement "),
                    Part::Num(e),
                    Part::Text(" < minimum "),
                    Part::Num(track.mql_min_engagement),
                ]));
            }
            if let Some(d) = track.demotion_total {
                if total < d - crate::model::TOLERANCE {
                    r.push(reason(&[
                        Part::Text(prefix),
                        Part::Text("total "),
                        Part::Num(total),
                        Part::Text(" < demotion threshold "),
                        Part::Num(d),
                    ]));
                }
            }
            if !track.stays_while.is_empty() {
                r.extend(super::window::reasons(
                    &format!("{prefix}fails stays_while"),
                    &track.stays_while,
                    lead,
                    model,
                    true,
                ));
            }
            r
        }
        Why::SalesAccepted => vec!["sales accepted".into()],
        Why::CriteriaMet => {
            let mut r = if model.criteria.is_empty() {
                Vec::new()
            } else {
                vec![format!("criteria met: {}", model.criteria.join(", "))]
            };
            r.extend(super::window::reasons(
                "sql condition",
                &model.sql_conditions,
                lead,
                model,
                false,
            ));
            if lead.stage != crate::change::Stage::Mql {
                r.extend(mql_reasons(lead, model, ib, e, total));
            }
            r
        }
        Why::Mql => mql_reasons(lead, model, ib, e, total),
        Why::Released => vec![if ib {
            "installed base: disqualification rules do not apply".into()
        } else {
            "no disqualification rule matches any more".into()
        }],
    }
}

fn mql_reasons(lead: &Lead, model: &Model, ib: bool, e: f64, total: f64) -> Vec<String> {
    let t = lead.track(model);
    let mut r = Vec::new();
    if ib {
        r.push("installed base".into());
    }
    if let Some(m) = t.mql_min_total {
        r.push(reason(&[
            Part::Text("total "),
            Part::Num(total),
            Part::Text(" >= mql threshold "),
            Part::Num(m),
        ]));
    }
    if let Some(m) = t.mql_min_fit {
        r.push(reason(&[
            Part::Text("fit "),
            Part::Num(lead.fit(model)),
            Part::Text(" >= "),
            Part::Num(m),
        ]));
    }
    r.push(reason(&[
        Part::Text("engagement "),
        Part::Num(e),
        Part::Text(" >= "),
        Part::Num(t.mql_min_engagement),
    ]));
    if !t.mql_gates.is_empty() {
        r.extend(super::window::reasons(
            "gate",
            &t.mql_gates,
            lead,
            model,
            false,
        ));
    }
    r
}

/// One line per matching disqualification rule.
pub fn disqualification_reasons(lead: &Lead, model: &Model) -> Vec<String> {
    let mut r = Vec::new();
    let domain = lead.email_domain().unwrap_or_default();
    if lead.disq & disq::TOO_SMALL != 0 {
        let n = match lead.profile_value("employees") {
            Some(super::lead::ProfileValue::Num(n)) => num(n),
            _ => "?".into(),
        };
        r.push(format!(
            "employees {n} < {}",
            num(model.disqualify.min_employees.unwrap_or(0.0))
        ));
    }
    if lead.disq & disq::FREE_MAIL != 0 {
        r.push(format!("free-mail domain {domain}"));
    }
    if lead.disq & disq::ACADEMIC_DOMAIN != 0 {
        r.push(format!("academic domain {domain}"));
    }
    if lead.disq & disq::ACADEMIC_TITLE != 0 {
        r.push("job title marks a student or academic".into());
    }
    if lead.disq & disq::COMPETITOR != 0 {
        r.push(format!("competitor domain {domain}"));
    }
    if lead.disq & disq::COMPETITOR_NAME != 0 {
        r.push("company name is a competitor's".into());
    }
    if lead.disq & disq::RULE != 0 {
        r.extend(super::window::reasons(
            "disqualified:",
            &model.disqualify.rules,
            lead,
            model,
            false,
        ));
    }
    if lead.flags & super::lead::flags::REJECTED_DISQ != 0 {
        r.push("rejected by sales as disqualified".into());
    }
    r
}

#[cfg(test)]
mod tests {
    use super::num;

    #[test]
    fn numbers_in_reasons() {
        assert_eq!(num(58.5), "58.5");
        assert_eq!(num(25.0), "25");
        assert_eq!(num(33.456), "33.46");
        assert_eq!(num(39.999_999_999_9), "40");
        assert_eq!(num(-2.5), "-2.5");
        assert_eq!(num(-0.5), "-0.5");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(0.05), "0.05");
        assert_eq!(num(1e15), "1000000000000000");
    }

    /// The text `num` gave when it was built with `format!`.
    fn by_format(x: f64) -> String {
        let r = (x * 100.0).round() / 100.0;
        if r == r.trunc() {
            format!("{}", r as i64)
        } else {
            format!("{r:.2}").trim_end_matches('0').to_string()
        }
    }

    #[test]
    fn numbers_in_reasons_match_formatting() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..200_000 {
            let scale = [1.0, 100.0, 1e4, 1e8, 1e10, 1e11][i % 6];
            let x = (next() as f64 / u64::MAX as f64 - 0.5) * scale;
            assert_eq!(num(x), by_format(x), "{x:?}");
        }
        for k in -100_000i64..100_000 {
            let x = k as f64 / 100.0;
            assert_eq!(num(x), by_format(x), "{x:?}");
            let x = k as f64 / 1000.0 + 0.005;
            assert_eq!(num(x), by_format(x), "{x:?}");
        }
    }
}
