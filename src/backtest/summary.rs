//! The terminal summary: the report as plain-text tables, models side by side.

use std::fmt::Write;

use super::metrics::{ModelReport, SweepPoint};
use super::BacktestReport;

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

fn num(x: f64) -> String {
    crate::engine::format_number(x)
}

/// Writes rows of cells, each column as wide as its widest cell; the first
/// column left-aligned, the others right-aligned if `numbers`.
fn table(out: &mut String, indent: &str, rows: &[Vec<String>], numbers: bool) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::from(indent);
        for (c, cell) in row.iter().enumerate() {
            let pad = width[c] - cell.chars().count();
            if c > 0 {
                line.push_str("  ");
            }
            if c > 0 && numbers {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn suggested(p: &Option<SweepPoint>) -> String {
    match p {
        Some(p) => format!(
            "{} (F1 {:.3}, {} leads, precision {}, recall {})",
            num(p.threshold),
            p.f1.unwrap_or(0.0),
            p.leads,
            pct(p.precision),
            pct(p.recall)
        ),
        None => "-".into(),
    }
}

fn title(m: &ModelReport) -> String {
    format!("{} {}", m.role, m.version)
}

/// The summary of a backtest, as text.
pub fn render(r: &BacktestReport) -> String {
    let mut out = String::new();
    let o = &r.outcomes;
    let _ = writeln!(
        out,
        "leadscore backtest: {} — outcomes from {}",
        r.events_file,
        if r.outcomes_from == "events" {
            "the event file's deal_won/deal_lost".to_string()
        } else {
            r.outcomes_from.clone()
        }
    );
    let _ = writeln!(
        out,
        "{} leads: {} won, {} lost, {} without outcome (won = positive; lost and no outcome = negative)\n",
        o.leads, o.won, o.lost, o.open
    );

    let ms = &r.models;
    let row = |label: &str, f: &dyn Fn(&ModelReport) -> String| -> Vec<String> {
        std::iter::once(label.to_string())
            .chain(ms.iter().map(f))
            .collect()
    };
    let rows = vec![
        row("", &|m| m.role.clone()),
        row("model version", &|m| m.version.clone()),
        row("model file", &|m| m.source.clone()),
        row("leads", &|m| m.leads.leads.to_string()),
        row("became MQL (before outcome)", &|m| {
            format!("{} ({} won)", m.became_mql.leads, m.became_mql.won)
        }),
        row("became SQL", &|m| m.became_sql.to_string()),
        row("MQL→SQL conversion", &|m| pct(m.mql_to_sql)),
        row("MQL→won conversion = precision", &|m| pct(m.mql_to_won)),
        row("recall (won deals that became MQL)", &|m| {
            pct(m.became_mql_classifier.recall)
        }),
        row("F1", &|m| {
            m.became_mql_classifier
                .f1
                .map_or("-".into(), |f| format!("{f:.3}"))
        }),
        row("median time from first event to MQL", &|m| {
            m.median_days_to_mql
                .map_or("-".into(), |d| format!("{d:.1} days"))
        }),
        row("suggested threshold (max F1)", &|m| {
            suggested(&m.suggested_threshold)
        }),
    ];
    table(&mut out, "", &rows, false);

    out.push_str("\nconversion by band (band of the peak score before the outcome)\n");
    for m in ms {
        let _ = writeln!(out, "  {}", title(m));
        let mut rows = vec![
            ["band", "score", "leads", "won", "lost", "open", "won share"]
                .map(String::from)
                .to_vec(),
        ];
        for b in &m.bands {
            let range = match (b.from, b.to) {
                (None, Some(to)) => format!("< {}", num(to)),
                (Some(from), Some(to)) => format!("{}–{}", num(from), num(to)),
                (Some(from), None) => format!("≥ {}", num(from)),
                (None, None) => "all".into(),
            };
            rows.push(vec![
                b.band.clone(),
                range,
                b.leads.to_string(),
                b.won.to_string(),
                b.lost.to_string(),
                b.open.to_string(),
                pct(b.won_share),
            ]);
        }
        table(&mut out, "    ", &rows, true);
    }

    if ms.iter().any(|m| m.sla.is_some()) {
        out.push_str(
            "\nSLA compliance by route (hand-offs to mql/sql before the outcome; in time = sales_contacted before follow_up_by)\n",
        );
        for m in ms {
            let _ = writeln!(out, "  {}", title(m));
            let mut rows = vec![[
                "route",
                "hand-offs",
                "in time",
                "breaches",
                "touched late",
                "compliance",
                "median h to touch",
            ]
            .map(String::from)
            .to_vec()];
            for r in m.sla.iter().flatten() {
                rows.push(vec![
                    r.route.clone(),
                    r.handoffs.to_string(),
                    r.touched_in_time.to_string(),
                    r.breaches.to_string(),
                    r.touched_after_breach.to_string(),
                    pct(r.compliance),
                    r.median_hours_to_first_touch
                        .map_or("-".into(), |h| format!("{h:.1}")),
                ]);
            }
            table(&mut out, "    ", &rows, true);
        }
    }

    out.push_str(
        "\nthreshold sweep (leads whose peak score before the outcome reaches the threshold; * = suggested)\n",
    );
    let mut header = vec!["threshold".to_string()];
    for m in ms {
        header.extend([
            format!("{} leads", m.role),
            "precision".into(),
            "recall".into(),
            "F1".into(),
        ]);
    }
    let mut rows = vec![header];
    let points = ms.first().map_or(0, |m| m.threshold_sweep.len());
    for i in 0..points {
        let mut row = vec![num(ms[0].threshold_sweep[i].threshold)];
        for m in ms {
            let p = &m.threshold_sweep[i];
            let star = if m.suggested_threshold.map(|s| s.threshold) == Some(p.threshold) {
                "*"
            } else {
                ""
            };
            row.extend([
                format!("{star}{}", p.leads),
                pct(p.precision),
                pct(p.recall),
                p.f1.map_or("-".into(), |f| format!("{f:.3}")),
            ]);
        }
        rows.push(row);
    }
    table(&mut out, "  ", &rows, true);
    out
}
