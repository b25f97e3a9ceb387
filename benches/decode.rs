//! Decode throughput, alone and followed by the fold, for both wire formats.
//!
//! The generated stream (2M events over 1M leads, as in `fold`) is encoded
//! once, outside the timing, into one buffer per format (each event's bytes
//! back to back, with offsets: JSON without the newline, protobuf without the
//! length prefix). Then:
//!
//! - `decode/{json,protobuf}`: decode each event and drop it;
//! - `decode_fold/{json,protobuf}`: decode each event and fold it into a fresh
//!   engine per iteration (only the decode + fold loop is timed);
//!   `decode_fold/{json,protobuf}_batch`: decode 256, fold them with
//!   `Engine::fold_batch`, as `leadscore score` does.
//!
//! `cargo bench --bench decode`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use leadscore::codec::{
    decode_json, decode_proto, encode_event_json, encode_event_proto, DecodeError,
};
use leadscore::{Engine, Event, Model};

mod common;

/// The allocator of the `leadscore` binary, so the figures are its figures.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Decode = for<'a> fn(&'a [u8]) -> Result<Event<'a>, DecodeError>;

fn decode_proto_any(bytes: &[u8]) -> Result<Event<'_>, DecodeError> {
    decode_proto(bytes)
}

fn decode_all(encoded: &common::Encoded, decode: Decode) {
    for bytes in encoded.iter() {
        black_box(decode(bytes).expect("generated events decode"));
    }
}

/// Decodes and folds into a fresh engine per iteration; times only that.
/// With `batch`, the way `leadscore score` does it: decode 256 events, then
/// fold them with `Engine::fold_batch`.
fn decode_fold_fresh(
    model: &Arc<Model>,
    encoded: &common::Encoded,
    decode: Decode,
    batch: bool,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut out = Vec::new();
    let all: Vec<&[u8]> = encoded.iter().collect();
    let mut events = Vec::with_capacity(256);
    for _ in 0..iters {
        let mut engine = Engine::new(Arc::clone(model));
        let start = Instant::now();
        if batch {
            for chunk in all.chunks(256) {
                events.extend(
                    chunk
                        .iter()
                        .map(|b| decode(b).expect("generated events decode")),
                );
                engine.fold_batch(&events, &mut out, |o| {
                    black_box(o);
                });
                events.clear();
                out.clear();
            }
        } else {
            for bytes in &all {
                let event = decode(bytes).expect("generated events decode");
                black_box(engine.fold(&event, &mut out));
                out.clear();
            }
        }
        total += start.elapsed();
        black_box(engine.lead_count());
        drop(engine);
    }
    total
}

fn main() {
    let model = common::model();
    let (events, leads) = common::large_size();
    let stream = common::stream(events, leads);
    let formats: [(&str, common::Encoded, Decode); 2] = [
        (
            "json",
            common::Encoded::new(&stream, encode_event_json),
            decode_json,
        ),
        (
            "protobuf",
            common::Encoded::new(&stream, encode_event_proto),
            decode_proto_any,
        ),
    ];
    drop(stream);
    for (name, encoded, _) in &formats {
        eprintln!(
            "{name}: {} events, {:.1} MiB, {:.0} bytes/event",
            encoded.len(),
            encoded.bytes.len() as f64 / (1 << 20) as f64,
            encoded.bytes.len() as f64 / encoded.len() as f64
        );
    }

    let mut c = Criterion::default().configure_from_args();
    let leads = common::count(leads);
    for (group, with_fold) in [("decode", false), ("decode_fold", true)] {
        let mut g = c.benchmark_group(format!("{group}/{leads}_leads"));
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(if with_fold { 15 } else { 8 }));
        for (name, encoded, decode) in &formats {
            g.throughput(Throughput::Elements(encoded.len() as u64));
            if with_fold {
                for (batch, suffix) in [(false, ""), (true, "_batch")] {
                    g.bench_function(format!("{name}{suffix}"), |b| {
                        b.iter_custom(|iters| {
                            decode_fold_fresh(&model, encoded, *decode, batch, iters)
                        })
                    });
                }
            } else {
                g.bench_function(*name, |b| b.iter(|| decode_all(encoded, *decode)));
            }
        }
        g.finish();
    }
    c.final_summary();
}
