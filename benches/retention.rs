//! State that stops growing: a steady stream of new leads folded with and
//! without `retention.inactive_after`.
//!
//! 10M events over 5M distinct leads, spread evenly over a year of event
//! time; new leads keep arriving (lead j has its two events a few days apart
//! around its arrival), as on a site with steady traffic. With retention
//! set to a tenth of the span (36.5 days), a lead is removed 36.5 days
//! after its last event, so the leads in state, the memory and the
//! changelog (one record per lead in state after compaction) level off;
//! without it they grow with every lead. Every million events it prints
//! the event time, the leads in state, the timers queued, the resident
//! memory now and its peak so far (`VmRSS`, `VmHWM` of /proc/self/status).
//!
//! Each run is a process of its own (the peak is per process):
//! `cargo bench --bench retention` runs both, one after the other;
//! `cargo bench --bench retention -- on` (or `off`) runs one, `EVENTS=N`
//! scales the stream (leads = N / 2).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use leadscore::event::Value;
use leadscore::time::{Micros, DAY};
use leadscore::{Engine, Event, Model};

/// The allocator of the `leadscore` binary, so the figures are its figures.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SPAN: Micros = 365 * DAY;
const START: Micros = 1_772_323_200_000_000; // 2026-03-01T00:00:00Z

fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Event `k` of `n`: lead `k / 2`'s first (a profile with an e-mail
/// address and a page view's worth of attributes) or second (a content
/// download, 0 to 7 days later).
fn event(k: u64, n: u64) -> Event<'static> {
    let lead = k / 2;
    // Leads arrive evenly over the span; the second event follows the
    // first by 0-7 days (a spread that keeps the stream in time order up
    // to a few days: the engine takes late events as they come).
    let born = START + (SPAN as f64 * lead as f64 / (n / 2) as f64) as Micros;
    let id = format!("lead-{lead:08}");
    let mut e = if k.is_multiple_of(2) {
        let mut e = Event::new(format!("e{k}"), id.clone(), "profile_updated", born);
        e.profile = vec![
            (
                Cow::Borrowed("email"),
                Value::Str(format!("{id}@example.com").into()),
            ),
            (Cow::Borrowed("company"), Value::Str("Example BV".into())),
            (Cow::Borrowed("employees"), Value::Num(120.0)),
            (Cow::Borrowed("industry"), Value::Str("food".into())),
        ];
        e
    } else {
        let later = born + (lead.wrapping_mul(0x9E37_79B9) % 7) as Micros * DAY;
        let mut e = Event::new(format!("e{k}"), id, "content_download", later);
        e.attributes = vec![(Cow::Borrowed("asset_type"), Value::Str("whitepaper".into()))];
        e
    };
    e.kind = leadscore::event::Kind::of(&e.event_type);
    e
}

fn run(retention: bool, n: u64) {
    let extra = if retention {
        format!("\n[retention]\ninactive_after = \"{}d\"\n", SPAN / DAY / 10)
    } else {
        String::new()
    };
    let text = leadscore::model::DEFAULT_MODEL_TOML.to_string() + &extra;
    let model = Arc::new(Model::from_toml(&text).expect("the bench model is valid"));
    // As the service: a watermark that trails by a week, so that a lead's
    // second event (up to 7 days after its first) is never behind it.
    let mut engine = Engine::with_lateness(model, 7 * DAY);
    let mut out = Vec::new();
    let mut removed = 0u64;
    let started = Instant::now();
    println!(
        "\nretention {}: {n} events over {} leads, {} days",
        if retention {
            format!("on (inactive_after = {} days)", SPAN / DAY / 10)
        } else {
            "off".into()
        },
        n / 2,
        SPAN / DAY
    );
    println!(
        "{:>10} {:>6} {:>14} {:>12} {:>10} {:>11} {:>9}",
        "events", "day", "leads in state", "timers", "RSS MiB", "peak MiB", "removed"
    );
    let step = (n / 10).max(1);
    let mut batch = Vec::with_capacity(256);
    for k in 0..n {
        batch.push(event(k, n));
        if batch.len() == 256 || k + 1 == n {
            engine.fold_batch(&batch, &mut out, |_| {});
            batch.clear();
            removed += out.iter().filter(|c| c.is_removal()).count() as u64;
            out.clear();
            // The service writes the changelog here; the bench drops it.
            engine.drain_removed(|_| {});
            engine.drain_dirty(|_| {});
        }
        if (k + 1).is_multiple_of(step) {
            println!(
                "{:>10} {:>6} {:>14} {:>12} {:>10.0} {:>11.0} {:>9}",
                k + 1,
                (engine.watermark() - START) / DAY,
                engine.lead_count(),
                engine.timers_pending(),
                status_kb("VmRSS:") as f64 / 1024.0,
                status_kb("VmHWM:") as f64 / 1024.0,
                removed
            );
        }
    }
    println!(
        "{:.1} s, {:.0} events/s",
        started.elapsed().as_secs_f64(),
        n as f64 / started.elapsed().as_secs_f64()
    );
}

fn main() {
    let n: u64 = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let which = std::env::args().skip(1).find(|a| a == "on" || a == "off");
    match which.as_deref() {
        Some("on") => run(true, n),
        Some("off") => run(false, n),
        _ => {
            // Each in a process of its own, so each peak is its own.
            let me = std::env::current_exe().expect("the bench binary");
            for arg in ["on", "off"] {
                let status = std::process::Command::new(&me)
                    .arg(arg)
                    .status()
                    .expect("runs the bench binary");
                assert!(status.success(), "the {arg} run failed");
            }
        }
    }
}
