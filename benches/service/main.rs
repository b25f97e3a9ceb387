//! End-to-end benchmark of the Kafka service (`leadscore run`) on a real
//! Apache Kafka broker (the tests' harness, `tests/broker/`, which starts it
//! with `deploy/local-kafka/kafka.sh` and stops it with this process):
//!
//! 1. throughput through the service, `exactly_once` (commit every 100 ms)
//!    and `at_least_once`, on one generated stream produced once
//!    (`throughput.rs`);
//! 2. the ceiling: a pass-through consumer → producer with the same client
//!    library on the same input, plain and transactional (`throughput.rs`);
//! 3. restore speed: a fresh instance's time to `/readyz` after a run over
//!    a stream with ≥ 1M distinct leads, next to a bare read of the
//!    changelog (`restore.rs`);
//! 4. event-to-emit latency at a steady produce rate (`latency.rs`);
//! 5. `leadscore replay` against `leadscore score` on the same events
//!    (`replay.rs`);
//! 6. the consume side alone, `BaseConsumer::poll` on a thread against
//!    `StreamConsumer` on tokio, on the throughput stream (`consume.rs`);
//! 7. the re-keyed path: the throughput stream as Segment messages without
//!    keys, through the repartition topic, exactly-once (`rekey.rs`).
//!
//! Run it with `bash benches/service.sh`, which sets
//! `BENCH_SERVICE=1`. Without it (a plain `cargo bench`, or
//! `cargo test --benches`) this bench only says how to run it: it starts a
//! JVM and takes minutes. Settings are `BENCH_SVC_*` environment
//! variables, listed in `benches/service.sh`.

#[path = "../../tests/broker/mod.rs"]
mod broker;
mod consume;
mod latency;
mod machine;
mod rekey;
mod replay;
mod restore;
mod svc;
mod throughput;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use leadscore::config::LogFormat;
use leadscore::gen::{GenConfig, Generator};
use leadscore::Event;

use broker::{Broker, Stream};
use machine::{check_busy, loadavg, BUSY};

/// Everything printed at the end, in order.
pub struct Report(Vec<String>);

impl Report {
    pub fn line(&mut self, s: String) {
        println!("   {s}");
        self.0.push(s);
    }
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

pub struct Settings {
    pub partitions: i32,
    pub seed: u64,
    pub events: u64,
    pub leads: u64,
    pub restore_events: u64,
    pub restore_leads: u64,
    pub rate: u64,
    pub latency_secs: u64,
    pub latency_leads: u64,
    pub txn_passthrough: bool,
    /// Which parts to run: digits 1 to 7.
    pub phases: String,
    /// A service run stops here and reports the rate so far.
    pub run_limit: Duration,
    pub out_dir: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            partitions: env_u64("BENCH_SVC_PARTITIONS", 8) as i32,
            seed: env_u64("BENCH_SVC_SEED", 7),
            events: env_u64("BENCH_SVC_EVENTS", 1_000_000),
            leads: env_u64("BENCH_SVC_LEADS", 200_000),
            // 1.3M events over 3.5M possible leads touch about 1.05M of them.
            restore_events: env_u64("BENCH_SVC_RESTORE_EVENTS", 1_300_000),
            restore_leads: env_u64("BENCH_SVC_RESTORE_LEADS", 3_500_000),
            rate: env_u64("BENCH_SVC_RATE", 5_000),
            latency_secs: env_u64("BENCH_SVC_LATENCY_SECS", 30),
            latency_leads: env_u64("BENCH_SVC_LATENCY_LEADS", 20_000),
            txn_passthrough: env_u64("BENCH_SVC_TXN_PASSTHROUGH", 1) == 1,
            run_limit: Duration::from_secs(env_u64("BENCH_SVC_RUN_LIMIT", 300)),
            phases: std::env::var("BENCH_SVC_PHASES").unwrap_or_else(|_| "1234567".into()),
            out_dir: std::env::var_os("BENCH_SVC_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-service")
                }),
        }
    }
}

fn main() {
    if std::env::var("BENCH_SERVICE").as_deref() != Ok("1") {
        println!(
            "service bench: skipped (it starts a Kafka broker and takes minutes); run `bash benches/service.sh`"
        );
        return;
    }
    let s = Settings::from_env();
    std::fs::create_dir_all(&s.out_dir).expect("output dir");
    leadscore::service::telemetry::init_logging(LogFormat::Text, Some("warn"));
    let started = Instant::now();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let mut r = Report(Vec::new());
    println!(
        "== service bench: {cores} cores, load average {}",
        loadavg()
    );
    r.0.push(format!(
        "machine: {cores} cores (nproc); the broker, the service and the load generator share them; load average at start {}",
        loadavg()
    ));

    println!("== starting Kafka (deploy/local-kafka/kafka.sh)");
    let t = Instant::now();
    let b = Broker::start_with(&[]).keep_log_at(s.out_dir.join("broker.log"));
    println!(
        "   broker at {} in {:.1} s",
        b.bootstrap,
        t.elapsed().as_secs_f64()
    );
    b.create_topic("bench-dlq", 1, false);
    let t = Instant::now();
    b.warm_up_coordinators();
    println!(
        "   transaction and group coordinators ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    check_busy("start");
    if s.phases.contains('1') || s.phases.contains('2') {
        throughput::throughput_phases(&b, &s, &mut r);
        check_busy("throughput");
    }
    if s.phases.contains('3') {
        restore::restore_phase(&b, &s, &mut r);
        check_busy("restore");
    }
    if s.phases.contains('4') {
        latency::latency_phase(&b, &s, &mut r);
        check_busy("latency");
    }
    if s.phases.contains('5') {
        replay::replay_phase(&b, &s, &mut r);
        check_busy("replay");
    }
    if s.phases.contains('6') {
        consume::consume_phase(&b, &s, &mut r);
        check_busy("consume");
    }
    if s.phases.contains('7') {
        rekey::rekey_phase(&b, &s, &mut r);
        check_busy("re-keyed");
    }
    let busy = BUSY.lock().unwrap();
    if busy.is_empty() {
        r.0.push("machine not busy: no other cargo bench/test or test binary seen during the run (checked at each phase and every few seconds of each service run)".into());
    }
    for (cmd, during) in busy.iter() {
        r.0.push(format!(
            "MACHINE BUSY: seen during {during} (figures from then on are low): {cmd}"
        ));
    }

    r.0.push(format!(
        "total bench time {:.0} s; load average at end {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    ));
    drop(b);
    println!("\n== summary");
    for l in &r.0 {
        println!("{l}");
    }
}

/// The throughput stream: the settings' events and leads, no late events.
pub fn throughput_events(s: &Settings) -> Generator {
    Generator::new(GenConfig {
        seed: s.seed,
        leads: s.leads,
        events: s.events,
        late_rate: 0.0,
        ..GenConfig::default()
    })
}

/// Produces a generated stream into a new topic, keyed by lead id, as JSON.
pub fn produce(
    b: &Broker,
    topic: &str,
    partitions: i32,
    events: impl Iterator<Item = Event<'static>>,
) -> Stream {
    let s = b.produce_generated(topic, partitions, events);
    println!(
        "   produced {} events ({} MiB, {} B/event) over {} distinct leads into {topic} ({partitions} partitions) in {:.1} s",
        s.total,
        s.bytes >> 20,
        s.bytes / (s.total as u64).max(1),
        s.distinct_leads,
        s.secs
    );
    s
}
