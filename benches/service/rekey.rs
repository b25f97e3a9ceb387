//! Phase 7: the re-keyed path. The throughput stream in Segment's form (a
//! share of the leads browsing anonymously before they identify), with no
//! message keys, round the partitions in stream order with increasing record
//! timestamps: every event goes through the repartition topic, exactly-once.
//! Reported as phase 1 is, to the last event folded (the routing commits
//! the input's offsets before the records are folded from the repartition
//! topic, so the input's committed offsets alone would end the run early).

use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use leadscore::engine::VisitorLimits;
use leadscore::gen::wire::SegmentWriter;
use leadscore::gen::{GenConfig, Generator};

use crate::broker::{committed_total, send_retrying, stream_timestamp, Broker};
use crate::machine::{check_busy, Cpu};
use crate::svc::{config, metric, start_service, Counters};
use crate::{Report, Settings};

/// The Segment stream: the throughput stream's settings, anonymous share 0.3.
fn segment_config(s: &Settings) -> GenConfig {
    GenConfig {
        seed: s.seed,
        leads: s.leads,
        events: s.events,
        late_rate: 0.0,
        anonymous_share: 0.3,
        ..GenConfig::default()
    }
}

/// Produces the Segment stream without keys; returns its message count.
fn produce_segment(b: &Broker, s: &Settings, topic: &str) -> i64 {
    b.create_topic(topic, s.partitions, false);
    let cfg = segment_config(s);
    let mut writer = SegmentWriter::new(&cfg, VisitorLimits::default());
    let p: BaseProducer = b
        .client()
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let t = Instant::now();
    let mut buf = Vec::with_capacity(1024);
    let mut n = 0usize;
    let mut bytes = 0usize;
    for e in Generator::new(cfg) {
        buf.clear();
        serde_json::to_writer(&mut buf, &writer.message(&e)).unwrap();
        bytes += buf.len();
        send_retrying(
            &p,
            BaseRecord::<[u8], [u8]>::to(topic)
                .payload(&buf[..])
                .partition(n as i32 % s.partitions)
                .timestamp(stream_timestamp(n)),
        );
        n += 1;
        if n.is_multiple_of(1024) {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(120)).expect("flush");
    println!(
        "   produced {n} Segment messages ({} MiB, {} B/message, no keys) into {topic} ({} partitions) in {:.1} s",
        bytes >> 20,
        bytes / n.max(1),
        s.partitions,
        t.elapsed().as_secs_f64()
    );
    n as i64
}

pub fn rekey_phase(b: &Broker, s: &Settings, r: &mut Report) {
    println!("== 7. re-keyed path: Segment, no keys, exactly_once");
    let topic = "bench-segment";
    let total = produce_segment(b, s, topic);
    r.line(format!(
        "re-keyed input: {total} Segment messages (anonymous share 0.3, no keys, increasing record timestamps), {} partitions",
        s.partitions
    ));
    let name = "bench-rekey";
    let status = format!("{name}-status");
    b.create_topic(&status, s.partitions, false);
    let cfg = config(
        b,
        name,
        topic,
        &status,
        "exactly_once",
        &format!("idle_advance_ms = 0\n\n[input.topics.\"{topic}\"]\nformat = \"segment\""),
    );
    let watcher: BaseConsumer = b
        .client()
        .set("group.id", name)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    let label = "service exactly_once, re-keyed Segment";
    let cpu = Cpu::now(b);
    let svc = match start_service(cfg) {
        Ok(svc) => svc,
        Err(e) => return r.line(format!("{label}: FAILED: {e}")),
    };
    let base = Counters::read(&svc.metrics());
    let routed_base = metric(&svc.metrics(), "leadscore_routed_records_total", "");
    // The run ends when the input is committed and nothing has been folded
    // for a while; its time is that of the last event folded.
    let quiet = Duration::from_secs(3);
    let mut last_events = 0.0;
    let mut last_fold = Instant::now();
    let mut end = f64::NAN;
    let mut input_done = false;
    let mut turns = 0u64;
    let mut error = None;
    loop {
        let c = Counters::read(&svc.metrics()).minus(base);
        if c.events > last_events {
            last_events = c.events;
            last_fold = Instant::now();
            end = svc.started.elapsed().as_secs_f64();
        }
        if !input_done {
            input_done = committed_total(&watcher, topic, s.partitions).is_some_and(|t| t >= total);
        }
        if input_done && last_fold.elapsed() >= quiet {
            break;
        }
        if svc.started.elapsed() > s.run_limit {
            error = Some(format!(
                "STOPPED AT THE TIME LIMIT ({} events folded)",
                last_events
            ));
            break;
        }
        if !svc.alive() {
            error = Some("the service stopped on its own".into());
            break;
        }
        turns += 1;
        if turns.is_multiple_of(50) {
            check_busy(name);
        }
        thread::sleep(Duration::from_millis(50));
    }
    let text = svc.metrics();
    let c = Counters::read(&text).minus(base);
    let routed = metric(&text, "leadscore_routed_records_total", "") - routed_base;
    let identified = metric(&text, "leadscore_identifications_total", "");
    if let Err(e) = svc.stop() {
        error.get_or_insert(e);
    }
    if let Some(e) = error {
        return r.line(format!("{label}: FAILED: {e}"));
    }
    r.line(format!(
        "{label}: {total} events in {end:.2} s = {:.0} events/s (start to last event folded)",
        total as f64 / end
    ));
    r.line(format!(
        "{label}:   events folded {}, records routed {routed}, identifications {identified}, changes {}, dead letters {}, commits {} (aborted {})",
        c.events, c.changes, c.dead_letters, c.committed, c.aborted
    ));
    r.line(format!("{label}:   {}", cpu.since(b, end)));
}
