//! The outcomes file: one deal outcome per line, as JSON or CSV.
//!
//! ```text
//! {"lead_id": "L-1042", "outcome": "won", "at": "2026-04-01T09:00:00Z"}
//! L-1043,lost,2026-04-02T10:00:00Z
//! ```
//!
//! A line that starts with `{` is JSON, any other is CSV (`lead_id,outcome,at`,
//! no quoting, so a lead id cannot contain a comma); a CSV header line
//! `lead_id,outcome,at` and blank lines are skipped. `outcome` is `won` or
//! `lost`. A lead listed more than once keeps its earliest outcome.

use std::collections::HashMap;

use serde::Deserialize;

use crate::time::{parse_rfc3339, Micros};

use super::metrics::Deal;

/// The outcomes by lead id, and how many lines repeated a lead.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcomes {
    pub by_lead: HashMap<String, (Deal, Micros)>,
    pub repeated: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    lead_id: String,
    outcome: String,
    at: String,
}

/// Parses the text of an outcomes file; an error names the line (from 1).
pub fn parse(text: &str) -> Result<Outcomes, String> {
    let mut out = Outcomes::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let (lead_id, outcome, at) = if line.starts_with('{') {
            let l: Line = serde_json::from_str(line).map_err(|e| format!("line {n}: {e}"))?;
            (l.lead_id, l.outcome, l.at)
        } else {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [lead_id, outcome, at] = fields[..] else {
                return Err(format!(
                    "line {n}: expected 3 comma-separated fields lead_id,outcome,at, found {}",
                    fields.len()
                ));
            };
            if [lead_id, outcome, at] == ["lead_id", "outcome", "at"] {
                continue;
            }
            (lead_id.to_string(), outcome.to_string(), at.to_string())
        };
        if lead_id.is_empty() {
            return Err(format!("line {n}: lead_id is empty"));
        }
        let deal = match outcome.as_str() {
            "won" => Deal::Won,
            "lost" => Deal::Lost,
            other => return Err(format!("line {n}: outcome {other:?}: use won or lost")),
        };
        let at = parse_rfc3339(&at)
            .map_err(|e| format!("line {n}: at {at:?} is not an RFC 3339 time: {e}"))?;
        match out.by_lead.entry(lead_id) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((deal, at));
            }
            std::collections::hash_map::Entry::Occupied(mut o) => {
                out.repeated += 1;
                if at < o.get().1 {
                    o.insert((deal, at));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_csv_lines() {
        let text = "lead_id,outcome,at\n\
                    {\"lead_id\": \"A\", \"outcome\": \"won\", \"at\": \"2026-03-12T14:00:00Z\"}\n\
                    \n\
                    B, lost ,2026-03-07T14:00:00Z\n\
                    A,lost,2026-03-10T00:00:00Z\n";
        let o = parse(text).unwrap();
        assert_eq!(o.by_lead.len(), 2);
        assert_eq!(o.repeated, 1);
        // A's earliest outcome wins.
        assert_eq!(
            o.by_lead["A"],
            (Deal::Lost, parse_rfc3339("2026-03-10T00:00:00Z").unwrap())
        );
        assert_eq!(o.by_lead["B"].0, Deal::Lost);
    }

    #[test]
    fn errors_name_the_line() {
        let bad = |t: &str| parse(t).unwrap_err();
        assert!(
            bad("A,won,2026-03-01T00:00:00Z\nB,maybe,2026-03-01T00:00:00Z")
                .starts_with("line 2: outcome \"maybe\"")
        );
        assert!(bad("A,won").contains("line 1: expected 3"));
        assert!(bad("A,won,yesterday").contains("not an RFC 3339 time"));
        assert!(bad("{\"lead_id\": \"A\", \"outcome\": \"won\"}").contains("missing field `at`"));
        assert!(bad(",won,2026-03-01T00:00:00Z").contains("lead_id is empty"));
    }
}
