//! The HTML report: one self-contained page (no network: the style and the
//! script are inline). The numbers are written into the page as tables, and
//! as a JSON data block from which a small inline script draws the charts
//! as SVG: the peak-score distribution of won and lost leads, conversion by
//! band, and the threshold sweep — one chart per model, side by side.

use std::fmt::Write;

use super::metrics::ModelReport;
use super::BacktestReport;

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON that is safe inside a `<script>` element: `<`, `>` and `&` only
/// occur in JSON strings, where their `\u` escapes mean the same.
fn script_json(r: &BacktestReport) -> String {
    serde_json::to_string(r)
        .expect("a report serialises")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |x| format!("{:.1}%", x * 100.0))
}

fn num(x: f64) -> String {
    crate::engine::format_number(x)
}

const STYLE: &str = "
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #1f2328; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
.meta { color: #59636e; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { padding: .25em .8em; border-bottom: 1px solid #eaeef2; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f6f8fa; }
.row { display: flex; flex-wrap: wrap; gap: 1.5em; }
figure { margin: 0; }
figcaption { font-weight: 600; margin-bottom: .3em; }
.chart svg { font-size: 11px; background: #fff; }
.chart .grid { stroke: #eaeef2; }
.chart .axis { stroke: #59636e; }
.chart .label { fill: #59636e; }
.chart .marker { stroke: #1f2328; stroke-dasharray: 4 3; }
dt { font-weight: 600; margin-top: .6em; }
";

const SCRIPT: &str = r##"
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("backtest-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var W = 500, H = 290, L = 52, R = 16, T = 28, B = 44;
  var COLOR = { won: "#1a7f37", lost: "#cf222e", precision: "#0969da",
                recall: "#bf8700", volume: "#8c959f", band: "#0969da" };

  function el(name, attrs, parent, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined) { e.textContent = text; }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function pct(x) { return x === null ? "–" : (100 * x).toFixed(1) + "%"; }
  function num(x) { return String(Math.round(x * 100) / 100); }
  function scale(d0, d1, r0, r1) {
    return function (v) { return d1 === d0 ? r0 : r0 + (v - d0) * (r1 - r0) / (d1 - d0); };
  }
  function svgIn(id, label) {
    return el("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H,
                       role: "img", "aria-label": label }, document.getElementById(id));
  }
  // Grid lines and labels: y ticks are values, x ticks {v, label}.
  function axes(svg, x, y, xticks, yticks, yfmt, xlabel, ylabel) {
    var g = el("g", {}, svg);
    yticks.forEach(function (v) {
      el("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), "class": "grid" }, g);
      el("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, g, yfmt(v));
    });
    xticks.forEach(function (t) {
      el("text", { x: x(t.v), y: H - B + 15, "text-anchor": "middle" }, g, t.label);
    });
    el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, "class": "axis" }, g);
    el("line", { x1: L, x2: L, y1: T, y2: H - B, "class": "axis" }, g);
    el("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle", "class": "label" }, g, xlabel);
    var my = (T + H - B) / 2;
    el("text", { x: 13, y: my, "text-anchor": "middle", "class": "label",
                 transform: "rotate(-90 13 " + my + ")" }, g, ylabel);
  }
  function legend(svg, items) {
    var x = L + 4;
    items.forEach(function (it) {
      el("circle", { cx: x + 5, cy: 12, r: 5, fill: it.color }, svg);
      el("text", { x: x + 14, y: 16 }, svg, it.label);
      x += 24 + 7 * it.label.length;
    });
  }
  function ticks(max, n) {
    var out = [];
    for (var i = 0; i <= n; i++) { out.push(max * i / n); }
    return out;
  }
  // About six labelled x ticks from a list of scores.
  function scoreTicks(scores) {
    var every = Math.max(1, Math.ceil(scores.length / 6));
    return scores.filter(function (_, i) { return i % every === 0; })
                 .map(function (v) { return { v: v, label: num(v) }; });
  }

  // Peak score distribution: share of the won leads and of the lost leads per bin.
  var histMax = 0;
  data.models.forEach(function (m) {
    var won = m.leads.won || 1, lost = m.leads.lost || 1;
    m.score_histogram.forEach(function (b) {
      histMax = Math.max(histMax, b.won / won, b.lost / lost);
    });
  });
  histMax = Math.max(0.1, Math.ceil(histMax * 10) / 10);
  data.models.forEach(function (m, i) {
    var bins = m.score_histogram;
    var svg = svgIn("histogram-" + i, "peak score of won and lost leads, " + m.version);
    var x = scale(0, bins[bins.length - 1].to, L, W - R);
    var y = scale(0, histMax, H - B, T);
    axes(svg, x, y, scoreTicks(bins.map(function (b) { return b.from; })),
         ticks(histMax, 5), function (v) { return Math.round(v * 100) + "%"; },
         "peak score before the outcome", "share of leads");
    var won = m.leads.won, lost = m.leads.lost;
    bins.forEach(function (b) {
      var w = Math.max(1, (x(b.to) - x(b.from)) / 2 - 0.5);
      [["won", b.won, won, 0], ["lost", b.lost, lost, w]].forEach(function (s) {
        var share = s[2] ? s[1] / s[2] : 0;
        var r = el("rect", { x: x(b.from) + s[3], y: y(share), width: w,
                             height: Math.max(0, y(0) - y(share)), fill: COLOR[s[0]] }, svg);
        el("title", {}, r, s[0] + " " + num(b.from) + "–" + num(b.to) + ": " + s[1] +
           " leads (" + pct(share) + ")");
      });
    });
    legend(svg, [{ label: "won (" + won + ")", color: COLOR.won },
                 { label: "lost (" + lost + ")", color: COLOR.lost }]);
  });

  // Conversion by band: the won share of the leads whose peak is in the band.
  var bandMax = 0;
  data.models.forEach(function (m) {
    m.bands.forEach(function (b) { bandMax = Math.max(bandMax, b.won_share || 0); });
  });
  bandMax = Math.max(0.1, Math.ceil(bandMax * 10) / 10);
  data.models.forEach(function (m, i) {
    var svg = svgIn("bands-" + i, "conversion by band, " + m.version);
    var n = m.bands.length, slot = (W - L - R) / n;
    var y = scale(0, bandMax, H - B, T);
    var xt = m.bands.map(function (b, k) {
      return { v: L + slot * (k + 0.5), label: b.band };
    });
    axes(svg, function (v) { return v; }, y, xt, ticks(bandMax, 5),
         function (v) { return Math.round(v * 100) + "%"; },
         "band of the peak score", "won share");
    m.bands.forEach(function (b, k) {
      var share = b.won_share || 0;
      var r = el("rect", { x: L + slot * k + slot * 0.2, y: y(share), width: slot * 0.6,
                           height: Math.max(0, y(0) - y(share)), fill: COLOR.band }, svg);
      el("title", {}, r, b.band + ": " + b.won + " won of " + b.leads + " leads");
      el("text", { x: L + slot * (k + 0.5), y: y(share) - 4, "text-anchor": "middle" }, svg,
         pct(b.won_share) + " of " + b.leads);
    });
  });

  // Threshold sweep: precision, recall and MQL volume (share of all leads).
  data.models.forEach(function (m, i) {
    var pts = m.threshold_sweep;
    var svg = svgIn("sweep-" + i, "threshold sweep, " + m.version);
    var x = scale(0, Math.max(pts[pts.length - 1].threshold, 1), L, W - R);
    var y = scale(0, 1, H - B, T);
    axes(svg, x, y, scoreTicks(pts.map(function (p) { return p.threshold; })),
         ticks(1, 4), function (v) { return Math.round(v * 100) + "%"; },
         "threshold on the peak score", "");
    var all = m.leads.leads || 1;
    [["precision", function (p) { return p.precision; }],
     ["recall", function (p) { return p.recall; }],
     ["volume", function (p) { return p.leads / all; }]].forEach(function (s) {
      var d = "", pen = "M";
      pts.forEach(function (p) {
        var v = s[1](p);
        if (v === null) { pen = "M"; return; }
        d += pen + x(p.threshold).toFixed(1) + "," + y(v).toFixed(1) + " ";
        pen = "L";
      });
      var path = el("path", { d: d.trim(), fill: "none", stroke: COLOR[s[0]], "stroke-width": 2 }, svg);
      el("title", {}, path, s[0]);
    });
    var best = m.suggested_threshold;
    if (best) {
      el("line", { x1: x(best.threshold), x2: x(best.threshold), y1: T, y2: H - B,
                   "class": "marker" }, svg);
      el("text", { x: x(best.threshold) + 4, y: T + 12 }, svg,
         "suggested " + num(best.threshold));
    }
    legend(svg, [{ label: "precision", color: COLOR.precision },
                 { label: "recall", color: COLOR.recall },
                 { label: "MQL volume", color: COLOR.volume }]);
  });
})();
"##;

fn summary_table(out: &mut String, ms: &[ModelReport]) {
    let row = |out: &mut String, label: &str, f: &dyn Fn(&ModelReport) -> String| {
        let _ = write!(out, "<tr><td>{}</td>", esc(label));
        for m in ms {
            let _ = write!(out, "<td>{}</td>", esc(&f(m)));
        }
        out.push_str("</tr>\n");
    };
    out.push_str("<table id=\"summary\"><thead><tr><th></th>");
    for m in ms {
        let _ = write!(
            out,
            "<th>{} {}<br><small>{}</small></th>",
            esc(&m.role),
            esc(&m.version),
            esc(&m.source)
        );
    }
    out.push_str("</tr></thead><tbody>\n");
    row(out, "leads", &|m| m.leads.leads.to_string());
    row(out, "became MQL before the outcome", &|m| {
        format!("{} ({} won)", m.became_mql.leads, m.became_mql.won)
    });
    row(out, "became SQL", &|m| m.became_sql.to_string());
    row(out, "MQL→SQL conversion", &|m| pct(m.mql_to_sql));
    row(out, "MQL→won conversion (precision)", &|m| {
        pct(m.mql_to_won)
    });
    row(out, "recall: won deals that became MQL", &|m| {
        pct(m.became_mql_classifier.recall)
    });
    row(out, "F1", &|m| {
        m.became_mql_classifier
            .f1
            .map_or("–".into(), |f| format!("{f:.3}"))
    });
    row(out, "median time from first event to MQL", &|m| {
        m.median_days_to_mql
            .map_or("–".into(), |d| format!("{d:.1} days"))
    });
    row(out, "suggested threshold (max F1)", &|m| {
        m.suggested_threshold.map_or("–".into(), |p| {
            format!(
                "{}: {} leads, precision {}, recall {}",
                num(p.threshold),
                p.leads,
                pct(p.precision),
                pct(p.recall)
            )
        })
    });
    out.push_str("</tbody></table>\n");
}

fn figures(out: &mut String, ms: &[ModelReport], kind: &str) {
    out.push_str("<div class=\"row\">\n");
    for (i, m) in ms.iter().enumerate() {
        let _ = writeln!(
            out,
            "<figure><figcaption>{} {}</figcaption><div class=\"chart\" id=\"{kind}-{i}\"></div></figure>",
            esc(&m.role),
            esc(&m.version)
        );
    }
    out.push_str("</div>\n");
}

/// The report page.
pub fn render(r: &BacktestReport) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let o = &r.outcomes;
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>leadscore backtest</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>leadscore backtest</h1>\n\
         <p class=\"meta\">Events: <code>{}</code> ({} events, {} bad lines). Outcomes from {}.<br>\
         {} leads: {} won, {} lost, {} without outcome{}.</p>\n",
        esc(&r.events_file),
        r.input.events,
        r.input.bad_lines,
        if r.outcomes_from == "events" {
            "the event file's <code>deal_won</code>/<code>deal_lost</code>".to_string()
        } else {
            format!("<code>{}</code>", esc(&r.outcomes_from))
        },
        o.leads,
        o.won,
        o.lost,
        o.open,
        if o.without_events > 0 {
            format!(
                "; {} outcomes name a lead with no event (left out)",
                o.without_events
            )
        } else {
            String::new()
        } + &if o.erased > 0 {
            format!("; {} erased leads left out", o.erased)
        } else {
            String::new()
        },
    );
    out.push_str("<h2>Summary</h2>\n");
    summary_table(&mut out, &r.models);
    out.push_str(
        "<noscript><p>The charts are drawn by an inline script; the numbers are in the tables.</p></noscript>\n\
         <h2>Peak score of won and lost leads</h2>\n\
         <p class=\"meta\">Each lead's highest total score before its outcome; bars are the share of the won (or lost) leads in each bin.</p>\n",
    );
    figures(&mut out, &r.models, "histogram");
    out.push_str(
        "<h2>Conversion by band</h2>\n\
         <p class=\"meta\">The share of won deals among the leads whose peak score before the outcome falls in the band.</p>\n",
    );
    figures(&mut out, &r.models, "bands");
    for m in &r.models {
        let _ = writeln!(
            out,
            "<table class=\"bands\"><thead><tr><th>{} {}</th><th>score</th><th>leads</th><th>won</th><th>lost</th><th>open</th><th>won share</th></tr></thead><tbody>",
            esc(&m.role),
            esc(&m.version)
        );
        for b in &m.bands {
            let range = match (b.from, b.to) {
                (None, Some(to)) => format!("&lt; {}", num(to)),
                (Some(from), Some(to)) => format!("{}–{}", num(from), num(to)),
                (Some(from), None) => format!("≥ {}", num(from)),
                (None, None) => "all".into(),
            };
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{range}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&b.band),
                b.leads,
                b.won,
                b.lost,
                b.open,
                pct(b.won_share)
            );
        }
        out.push_str("</tbody></table>\n");
    }
    if r.models.iter().any(|m| m.sla.is_some()) {
        out.push_str(
            "<h2>Follow-up SLA by route</h2>\n\
             <p class=\"meta\">Hand-offs to mql or sql before the outcome. In time: a sales_contacted \
             before follow_up_by. Compliance: in time of in time + breaches.</p>\n",
        );
        for m in &r.models {
            let _ = writeln!(
                out,
                "<table class=\"bands\"><thead><tr><th>{} {}</th><th>hand-offs</th><th>in time</th><th>breaches</th><th>touched late</th><th>compliance</th><th>median h to touch</th></tr></thead><tbody>",
                esc(&m.role),
                esc(&m.version)
            );
            for s in m.sla.iter().flatten() {
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&s.route),
                    s.handoffs,
                    s.touched_in_time,
                    s.breaches,
                    s.touched_after_breach,
                    pct(s.compliance),
                    s.median_hours_to_first_touch
                        .map_or("-".into(), |h| format!("{h:.1}"))
                );
            }
            out.push_str("</tbody></table>\n");
        }
    }
    let _ = write!(
        out,
        "<h2>Threshold sweep</h2>\n\
         <p class=\"meta\">For each threshold (step {}): the leads whose peak score before the outcome reaches it \
         (MQL volume, as a share of all leads), and precision and recall for won deals. \
         The suggested threshold has the highest F1; of equal F1s, the higher threshold.</p>\n",
        num(r.score_step)
    );
    figures(&mut out, &r.models, "sweep");
    out.push_str(
        "<h2>Definitions</h2>\n<dl>\n\
         <dt>Before the outcome</dt><dd>A lead's history ends at its first <code>deal_won</code>/<code>deal_lost</code> \
         (from the event file, in file order) or at the first of its events at or after the outcome's time (from an outcomes file). \
         The move to <code>customer</code> a won deal causes is never counted as the model's success.</dd>\n\
         <dt>Became MQL</dt><dd>Entered <code>mql</code> before the outcome (or, without one, by the last event time of the file), \
         or entered <code>sql</code> meeting the MQL conditions; not a lead that sales moved to <code>sql</code> with <code>sales_accepted</code> alone.</dd>\n\
         <dt>Positives and negatives</dt><dd>Won deals are positives; lost deals and leads without an outcome are negatives. \
         So precision of “became MQL” is the MQL→won conversion.</dd>\n\
         <dt>Peak score</dt><dd>The highest total (fit + engagement) right after any of the lead's events before the outcome; at least 0. \
         Bands and the sweep use it.</dd>\n\
         </dl>\n",
    );
    let _ = write!(
        out,
        "<script type=\"application/json\" id=\"backtest-data\">{}</script>\n<script>{SCRIPT}</script>\n</body>\n</html>\n",
        script_json(r)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn the_data_block_cannot_close_its_script_element() {
        let r = BacktestReport {
            events_file: "</script><script>alert(1)</script>".into(),
            outcomes_from: "events".into(),
            input: Default::default(),
            outcomes: Default::default(),
            score_step: 1.0,
            models: Vec::new(),
        };
        let json = script_json(&r);
        assert!(!json.contains('<'));
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["events_file"], r.events_file.as_str());
        let page = render(&r);
        assert_eq!(page.matches("</script>").count(), 2);
        for remote in ["src=", "<link", "url(", "@import"] {
            assert!(!page.contains(remote), "nothing from the network: {remote}");
        }
    }
}
