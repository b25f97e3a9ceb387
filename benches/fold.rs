//! Fold throughput on pre-decoded events: the engine alone, no codec.
//!
//! - `fold/1M_leads`: 2M generated events over 1M distinct leads, folded into
//!   a fresh engine per iteration (state far larger than the caches).
//! - `fold/10k_leads`: the same mix (2 events per lead) over 10k leads, whose
//!   state fits in cache; `fold/10k_leads_x20`: 20 events per lead.
//!
//! Before measuring, it folds the large stream once and prints the state size
//! per lead (serialized snapshot and resident memory). With
//! `BENCH_STATE_ONLY=1` it prints that and exits (used by `score.sh`).
//!
//! `cargo bench --bench fold`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use leadscore::engine::{snapshot, Lead, ProfileValue};
use leadscore::{Engine, Event, Model};

mod common;

/// The allocator of the `leadscore` binary, so the figures are its figures.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Folds `events` into a fresh engine `iters` times; times only the folds
/// (not building or dropping the engine).
/// With `batch`, through [`Engine::fold_batch`] (reading leads ahead), in
/// batches of 256 events.
fn fold_fresh(model: &Arc<Model>, events: &[Event<'_>], batch: bool, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut out = Vec::new();
    for _ in 0..iters {
        let mut engine = Engine::new(Arc::clone(model));
        let start = Instant::now();
        if batch {
            for chunk in events.chunks(256) {
                engine.fold_batch(chunk, &mut out, |o| {
                    black_box(o);
                });
                out.clear();
            }
        } else {
            for e in events {
                black_box(engine.fold(e, &mut out));
                out.clear();
            }
        }
        total += start.elapsed();
        black_box(engine.lead_count());
        drop(engine);
    }
    total
}

/// Resident set size of this process, in bytes (`VmRSS` in
/// `/proc/self/status`: `/proc/self/statm`'s resident pages, in kB).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status")
        * 1024
}

/// The lead id, profile keys and string profile values, in bytes; and the
/// number of profile fields.
fn string_bytes(engine: &Engine, lead: &Lead) -> (usize, usize) {
    let explanation = engine
        .explain(lead.id(), None)
        .expect("lead is in the engine");
    let profile: usize = explanation
        .profile
        .keys()
        .map(|k| {
            k.len()
                + match lead.profile_value(k) {
                    Some(ProfileValue::Str(s)) => s.len(),
                    _ => 0,
                }
        })
        .sum();
    (lead.id().len() + profile, explanation.profile.len())
}

/// Folds the stream into a fresh engine and prints the state size per lead.
fn state_size(model: &Arc<Model>, events: &[Event<'_>]) {
    let before = rss();
    let start = Instant::now();
    let mut engine = Engine::new(Arc::clone(model));
    let mut out = Vec::new();
    let mut changes = 0usize;
    for e in events {
        engine.fold(e, &mut out);
        changes += out.len();
        out.clear();
    }
    let took = start.elapsed();
    let after = rss();
    let leads = engine.lead_count();

    let mut buf = Vec::with_capacity(1024);
    let (mut snapshot_bytes, mut strings, mut fields) = (0usize, 0usize, 0usize);
    for lead in engine.leads() {
        buf.clear();
        snapshot::encode(lead, model, &mut buf);
        snapshot_bytes += buf.len();
        let (bytes, n) = string_bytes(&engine, lead);
        strings += bytes;
        fields += n;
    }
    let per = |b: f64| b / leads as f64;
    let rss_delta = after.saturating_sub(before) as f64;
    println!(
        "state: {} events over {leads} leads folded once in {took:.2?} ({:.2} M events/s, {changes} changes, {} timers pending)",
        events.len(),
        events.len() as f64 / took.as_secs_f64() / 1e6,
        engine.timers_pending(),
    );
    println!(
        "state: strings (lead id + profile keys + string values): {:.1} bytes/lead; {:.2} profile fields/lead",
        per(strings as f64),
        per(fields as f64)
    );
    println!(
        "state: snapshot::encode: {:.1} bytes/lead; {:.1} beyond the strings",
        per(snapshot_bytes as f64),
        per(snapshot_bytes.saturating_sub(strings) as f64)
    );
    println!(
        "state: in memory (RSS delta {:.1} MiB): {:.1} bytes/lead; {:.1} beyond the strings; size_of::<Lead>() = {}",
        rss_delta / (1 << 20) as f64,
        per(rss_delta),
        per(rss_delta - strings as f64),
        std::mem::size_of::<Lead>()
    );
}

fn benches(c: &mut Criterion, model: &Arc<Model>, large: &[Event<'_>], large_leads: u64) {
    let mut g = c.benchmark_group("fold");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(12));
    g.throughput(Throughput::Elements(large.len() as u64));
    for (batch, suffix) in [(false, ""), (true, "_batch")] {
        g.bench_function(
            BenchmarkId::from_parameter(format!("{}_leads{suffix}", common::count(large_leads))),
            |b| b.iter_custom(|iters| fold_fresh(model, large, batch, iters)),
        );
    }

    g.sampling_mode(SamplingMode::Auto)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (events, leads, name) in [
        (20_000, 10_000, "10k_leads"),
        (200_000, 10_000, "10k_leads_x20"),
    ] {
        let small = common::stream(events, leads);
        g.throughput(Throughput::Elements(small.len() as u64));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| fold_fresh(model, &small, false, iters))
        });
    }
    g.finish();
}

fn main() {
    let model = common::model();
    let (events, leads) = common::large_size();
    let large = common::stream(events, leads);
    let state_only = std::env::var_os("BENCH_STATE_ONLY").is_some();
    let profiling = std::env::args().any(|a| a == "--profile-time");
    if state_only || (common::bench_mode() && !profiling) {
        state_size(&model, &large);
    }
    if state_only {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &model, &large, leads);
    c.final_summary();
}
