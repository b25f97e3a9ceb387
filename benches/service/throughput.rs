//! Phases 1 and 2: the service's throughput in both guarantees, and a
//! pass-through consumer → producer on the same input as the ceiling.

use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::broker::{committed_total, send_retrying, Broker, Stream};
use crate::machine::{check_busy, Cpu};
use crate::svc::{config, start_service, Counters};
use crate::{produce, throughput_events, Report, Settings};

pub struct Throughput {
    pub secs: f64,
    /// Stream offsets committed when the run ended (all of them unless the
    /// run hit the time limit).
    pub committed: i64,
    pub first_event: Option<f64>,
    pub first_commit: Option<f64>,
    pub ready: Option<f64>,
    /// Longest time without committed progress, after the first commit.
    pub max_gap: f64,
    /// Longest time without an event folded, after the first one.
    pub max_fold_gap: f64,
    pub counters: Counters,
    pub stop_secs: f64,
    pub error: Option<String>,
}

/// Runs the service on a fresh group over `input` until the group's
/// committed offsets reach its end.
pub fn service_throughput(
    b: &Broker,
    s: &Settings,
    input: &Stream,
    name: &str,
    guarantee: &str,
) -> Throughput {
    let status = format!("{name}-status");
    b.create_topic(&status, s.partitions, false);
    let cfg = config(
        b,
        name,
        &input.topic,
        &status,
        guarantee,
        "idle_advance_ms = 0",
    );
    // read_uncommitted: no `require_stable`, so an open transaction's
    // pending offsets do not hold the answer back; only committed ones count.
    let watcher: BaseConsumer = b
        .client()
        .set("group.id", name)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    let mut out = Throughput {
        secs: f64::NAN,
        committed: 0,
        first_event: None,
        first_commit: None,
        ready: None,
        max_gap: 0.0,
        max_fold_gap: 0.0,
        counters: Counters::default(),
        stop_secs: f64::NAN,
        error: None,
    };
    let svc = match start_service(cfg) {
        Ok(svc) => svc,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let base = Counters::read(&svc.metrics());
    let mut last_total = 0i64;
    let mut last_progress = Instant::now();
    let mut last_events = 0.0;
    let mut last_fold = Instant::now();
    // t, events folded, commits, committed input offsets: one row per turn.
    let mut turns = 0u64;
    let mut timeline = String::from("seconds,events_folded,commits,committed_offsets\n");
    loop {
        let el = svc.started.elapsed().as_secs_f64();
        if out.ready.is_none() && svc.get("/readyz").is_some_and(|(c, _)| c == 200) {
            out.ready = Some(el);
        }
        let c = Counters::read(&svc.metrics()).minus(base);
        if c.events > last_events {
            let now = Instant::now();
            if out.first_event.is_none() {
                out.first_event = Some(el);
            } else {
                out.max_fold_gap = out.max_fold_gap.max((now - last_fold).as_secs_f64());
            }
            last_fold = now;
            last_events = c.events;
        }
        timeline.push_str(&format!(
            "{el:.3},{},{},{last_total}\n",
            c.events, c.committed
        ));
        if let Some(total) = committed_total(&watcher, &input.topic, s.partitions) {
            if total > last_total {
                let now = Instant::now();
                if out.first_commit.is_none() {
                    out.first_commit = Some(svc.started.elapsed().as_secs_f64());
                } else {
                    out.max_gap = out.max_gap.max((now - last_progress).as_secs_f64());
                }
                last_progress = now;
                last_total = total;
            }
            if total >= input.total {
                out.secs = svc.started.elapsed().as_secs_f64();
                break;
            }
        }
        if svc.started.elapsed() > s.run_limit {
            out.secs = svc.started.elapsed().as_secs_f64();
            break;
        }
        if !svc.alive() {
            out.error = Some("the service stopped on its own".into());
            break;
        }
        if last_progress.elapsed() > Duration::from_secs(180) {
            out.error = Some(format!(
                "no committed progress for 180 s (at {last_total} of {})",
                input.total
            ));
            break;
        }
        turns += 1;
        if turns.is_multiple_of(50) {
            check_busy(name);
        }
        thread::sleep(Duration::from_millis(50));
    }
    out.committed = last_total;
    let _ = std::fs::write(s.out_dir.join(format!("{name}.timeline.csv")), timeline);
    out.counters = Counters::read(&svc.metrics()).minus(base);
    match svc.stop() {
        Ok(t) => out.stop_secs = t,
        Err(e) => {
            out.error = Some(match out.error {
                Some(prev) => format!("{prev}; {e}"),
                None => e,
            })
        }
    }
    out
}

pub fn report_throughput(
    r: &mut Report,
    label: &str,
    input: &Stream,
    t: &Throughput,
) -> Option<f64> {
    if let Some(e) = &t.error {
        r.line(format!("{label}: FAILED: {e}"));
        return None;
    }
    let rate = t.committed as f64 / t.secs;
    let fmt = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2} s"));
    let partial = if t.committed < input.total {
        format!(
            " STOPPED AT THE TIME LIMIT with {} of {} committed;",
            t.committed, input.total
        )
    } else {
        String::new()
    };
    r.line(format!(
        "{label}: {} events in {:.2} s = {:.0} events/s (start to last offset committed){partial}",
        t.committed, t.secs, rate
    ));
    if let Some(fe) = t.first_event {
        r.line(format!(
            "{label}:   after the first event: {:.0} events/s; ready {}, first event {}, first commit {}; longest gap between committed progress {:.2} s, without an event folded {:.2} s; stop {:.2} s",
            t.committed as f64 / (t.secs - fe),
            fmt(t.ready),
            fmt(t.first_event),
            fmt(t.first_commit),
            t.max_gap,
            t.max_fold_gap,
            t.stop_secs
        ));
    }
    let c = t.counters;
    r.line(format!(
        "{label}:   events folded {}, changes {}, dead letters {}, commits {} (aborted {}; {:.0} events per commit), rebalances {}, broker errors {}",
        c.events,
        c.changes,
        c.dead_letters,
        c.committed,
        c.aborted,
        c.events / c.committed,
        c.rebalances,
        c.broker_errors
    ));
    Some(rate)
}

pub fn throughput_phases(b: &Broker, s: &Settings, r: &mut Report) {
    println!(
        "== input: {} events over {} leads, seed {}, late_rate 0",
        s.events, s.leads, s.seed
    );
    let input = produce(b, "bench-events", s.partitions, throughput_events(s));
    r.line(format!(
        "input: {} events (JSON, keyed by lead id; {} distinct leads), {} partitions",
        input.total, input.distinct_leads, s.partitions
    ));

    let mut eos_rate = None;
    let mut pass_rate = None;
    if s.phases.contains('1') {
        println!("== 1. service throughput");
        for (name, guarantee) in [
            ("bench-eos", "exactly_once"),
            ("bench-alo", "at_least_once"),
        ] {
            println!("-- {guarantee}");
            let cpu = Cpu::now(b);
            let t = service_throughput(b, s, &input, name, guarantee);
            let label = format!("service {guarantee}");
            let rate = report_throughput(r, &label, &input, &t);
            if t.secs.is_finite() {
                r.line(format!("{label}:   {}", cpu.since(b, t.secs)));
            }
            if guarantee == "exactly_once" {
                eos_rate = rate;
            }
        }
    }
    if s.phases.contains('2') {
        println!("== 2. pass-through (same client library, same input)");
        let modes: &[(&str, bool)] = if s.txn_passthrough {
            &[("bench-pass", false), ("bench-pass-txn", true)]
        } else {
            &[("bench-pass", false)]
        };
        for &(name, txn) in modes {
            let label = if txn {
                "pass-through transactional (commit every 100 ms)"
            } else {
                "pass-through"
            };
            println!("-- {label}");
            let cpu = Cpu::now(b);
            match passthrough(b, s, &input, name, txn) {
                Ok(p) => {
                    let rate = input.total as f64 / p.secs;
                    r.line(format!(
                    "{label}: {} events in {:.2} s = {rate:.0} events/s (first record after {:.2} s, {} commits)",
                    input.total, p.secs, p.first, p.commits
                ));
                    r.line(format!("{label}:   {}", cpu.since(b, p.secs)));
                    if !txn {
                        pass_rate = Some(rate);
                    }
                }
                Err(e) => r.line(format!("{label}: FAILED: {e}")),
            }
        }
    }
    if let (Some(e), Some(p)) = (eos_rate, pass_rate) {
        r.line(format!(
            "exactly_once / pass-through: {:.0}% (target >= 70%)",
            100.0 * e / p
        ));
    }
}

pub struct Pass {
    pub secs: f64,
    pub first: f64,
    pub commits: u64,
}

/// Consumer → producer with the service's client settings: every record's
/// key and value to an output topic. Transactional: offsets and a commit
/// every 100 ms.
pub fn passthrough(
    b: &Broker,
    s: &Settings,
    input: &Stream,
    name: &str,
    transactional: bool,
) -> Result<Pass, String> {
    let out_topic = format!("{name}-out");
    b.create_topic(&out_topic, s.partitions, false);
    let consumer: BaseConsumer = b
        .client()
        .set("group.id", name)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "10000")
        .create()
        .map_err(|e| e.to_string())?;
    let mut pc = b.client();
    pc.set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("retry.backoff.ms", "10");
    if transactional {
        pc.set("transactional.id", format!("{name}-tx"))
            .set("transaction.timeout.ms", "60000")
            .set("message.timeout.ms", "60000");
    }
    let producer: BaseProducer = pc.create().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let call = Duration::from_secs(30);
    if transactional {
        producer
            .init_transactions(call)
            .map_err(|e| e.to_string())?;
        producer.begin_transaction().map_err(|e| e.to_string())?;
    }
    consumer
        .subscribe(&[&input.topic])
        .map_err(|e| e.to_string())?;
    let mut next = vec![-1i64; s.partitions as usize];
    let done = |next: &[i64]| next.iter().zip(&input.ends).all(|(n, e)| *e == 0 || n >= e);
    let offsets = |next: &[i64]| {
        let mut tpl = TopicPartitionList::new();
        for (p, &n) in next.iter().enumerate() {
            if n >= 0 {
                tpl.add_partition_offset(&input.topic, p as i32, Offset::Offset(n))
                    .unwrap();
            }
        }
        tpl
    };
    let commit = |next: &[i64]| -> Result<(), String> {
        let meta = consumer
            .group_metadata()
            .ok_or("no consumer group metadata")?;
        producer
            .send_offsets_to_transaction(&offsets(next), &meta, call)
            .map_err(|e| format!("send offsets: {e}"))?;
        producer
            .commit_transaction(call)
            .map_err(|e| format!("commit: {e}"))
    };
    let mut first = None;
    let mut n = 0u64;
    let mut commits = 0u64;
    let interval = Duration::from_millis(100);
    let mut next_commit = Instant::now() + interval;
    let mut dirty = false;
    let mut last_progress = Instant::now();
    while !done(&next) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.map_err(|e| e.to_string())?;
            first.get_or_insert_with(|| t0.elapsed().as_secs_f64());
            let mut r = BaseRecord::to(&out_topic).payload(m.payload().unwrap_or(&[]));
            if let Some(k) = m.key() {
                r = r.key(k);
            }
            send_retrying(&producer, r);
            next[m.partition() as usize] = m.offset() + 1;
            n += 1;
            dirty = true;
            last_progress = Instant::now();
            if n.is_multiple_of(1024) {
                producer.poll(Duration::ZERO);
            }
        }
        if transactional && dirty && Instant::now() >= next_commit {
            commit(&next)?;
            commits += 1;
            producer.begin_transaction().map_err(|e| e.to_string())?;
            dirty = false;
            next_commit = Instant::now() + interval;
        }
        if last_progress.elapsed() > Duration::from_secs(120) {
            return Err(format!("no progress for 120 s at {n} records"));
        }
    }
    if transactional {
        commit(&next)?;
        commits += 1;
    } else {
        producer.flush(call).map_err(|e| e.to_string())?;
        consumer
            .commit(&offsets(&next), rdkafka::consumer::CommitMode::Sync)
            .map_err(|e| e.to_string())?;
        commits += 1;
    }
    Ok(Pass {
        secs: t0.elapsed().as_secs_f64(),
        first: first.unwrap_or(f64::NAN),
        commits,
    })
}
