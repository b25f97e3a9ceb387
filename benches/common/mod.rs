//! Shared setup for the benches: the generated streams, encoded once,
//! outside the timed code.
//!
//! Not a bench target itself: cargo only auto-discovers `benches/*.rs` and
//! `benches/*/main.rs`.

use std::sync::Arc;

use leadscore::gen::{GenConfig, Generator};
use leadscore::{Event, Model};

/// The seed of every generated stream, so runs are comparable:
/// `BENCH_SEED`, default 7.
pub fn seed() -> u64 {
    env_u64("BENCH_SEED", 7)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?}: not a number"))
        })
        .unwrap_or(default)
}

/// The large stream: 2M events over 1M distinct leads (the working set does
/// not fit in any cache). `BENCH_EVENTS` / `BENCH_LEADS`
/// override it; outside `cargo bench` (`cargo test --benches` runs each
/// bench once as a smoke test) a small stream is used instead.
pub fn large_size() -> (u64, u64) {
    if !bench_mode() {
        return (10_000, 5_000);
    }
    (
        env_u64("BENCH_EVENTS", 2_000_000),
        env_u64("BENCH_LEADS", 1_000_000),
    )
}

/// Whether criterion will measure (`cargo bench` passes `--bench`) rather
/// than run each bench once as a test.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The default model, or the model file `BENCH_MODEL` names (to measure
/// what a model's features cost, e.g. the windows of
/// `deploy/examples/good-lead-model.toml`).
pub fn model() -> Arc<Model> {
    match std::env::var_os("BENCH_MODEL") {
        Some(path) => Arc::new(
            Model::from_path(std::path::Path::new(&path))
                .unwrap_or_else(|e| panic!("BENCH_MODEL: {e}")),
        ),
        None => Arc::new(Model::default_model()),
    }
}

/// The seeded generator's stream, with its default duplicate, late and
/// outcome rates.
pub fn stream(events: u64, leads: u64) -> Vec<Event<'static>> {
    let t = std::time::Instant::now();
    let v = Generator::new(GenConfig {
        seed: seed(),
        leads,
        events,
        ..GenConfig::default()
    })
    .all();
    eprintln!(
        "generated {} events over {leads} leads in {:.1?}",
        v.len(),
        t.elapsed()
    );
    v
}

/// Events encoded back to back in one buffer, with their end offsets.
#[allow(dead_code)] // used by decode.rs only
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub ends: Vec<usize>,
}

#[allow(dead_code)]
impl Encoded {
    pub fn new(events: &[Event<'_>], encode: impl Fn(&Event<'_>, &mut Vec<u8>)) -> Encoded {
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(events.len());
        for e in events {
            encode(e, &mut bytes);
            ends.push(bytes.len());
        }
        Encoded { bytes, ends }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(s, e)| &self.bytes[s..e])
    }
}

/// 1000000 → "1M", 10000 → "10k".
pub fn count(n: u64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}
