//! Phase 4: event-to-emit latency at a steady produce rate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use leadscore::codec::encode_event_json;
use leadscore::gen::{GenConfig, Generator};
use leadscore::time::SECOND;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::broker::{send_retrying, Broker};
use crate::machine::check_busy;
use crate::svc::{config, start_service};
use crate::{Report, Settings};

pub struct Latency {
    pub sent: usize,
    pub produce_secs: f64,
    pub changes: usize,
    pub timer_changes: usize,
    pub unmatched: usize,
    pub ms: Vec<f64>,
}

pub fn latency(b: &Broker, s: &Settings) -> Result<Latency, String> {
    let input = "lat-events";
    let status = "lat-status";
    b.create_topic(input, s.partitions, false);
    b.create_topic(status, s.partitions, false);
    // Event time follows the wall clock, so the default idle advance is harmless.
    let cfg = config(b, "bench-lat", input, status, "exactly_once", "");
    let svc = start_service(cfg)?;
    let t = Instant::now();
    while svc.get("/readyz").is_none_or(|(c, _)| c != 200) {
        if t.elapsed() > Duration::from_secs(120) || !svc.alive() {
            let _ = svc.stop();
            return Err("the service did not get ready".into());
        }
        thread::sleep(Duration::from_millis(50));
    }

    // The reader: every committed change on the status topic, with its arrival time.
    let stop = Arc::new(AtomicBool::new(false));
    let arrived = Arc::new(AtomicUsize::new(0));
    let reader: BaseConsumer = b
        .client()
        .set("group.id", "bench-lat-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..s.partitions {
        tpl.add_partition_offset(status, p, Offset::Beginning)
            .unwrap();
    }
    reader.assign(&tpl).map_err(|e| e.to_string())?;
    let (stop2, arrived2) = (Arc::clone(&stop), Arc::clone(&arrived));
    let reader = thread::spawn(move || {
        let mut got: Vec<(Option<String>, Instant)> = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(50)) {
                let at = Instant::now();
                let v: serde_json::Value =
                    serde_json::from_slice(m.payload().unwrap_or(b"{}")).unwrap_or_default();
                let cause = v
                    .get("cause_event_id")
                    .and_then(|c| c.as_str())
                    .map(str::to_string);
                got.push((cause, at));
                arrived2.fetch_add(1, Ordering::Relaxed);
            }
        }
        got
    });
    thread::sleep(Duration::from_secs(1));

    let producer: BaseProducer = b
        .client()
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .map_err(|e| e.to_string())?;
    let now_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_micros() as i64;
    let n = s.rate * s.latency_secs;
    let events = Generator::new(GenConfig {
        seed: s.seed + 1,
        leads: s.latency_leads,
        events: n,
        start: now_micros,
        span: s.latency_secs as i64 * SECOND,
        duplicate_rate: 0.0,
        late_rate: 0.0,
        ..GenConfig::default()
    });
    let mut sent: HashMap<String, Instant> = HashMap::with_capacity(n as usize);
    let mut buf = Vec::with_capacity(512);
    let t0 = Instant::now();
    let per_event = Duration::from_secs(1).as_secs_f64() / s.rate as f64;
    for (i, e) in events.enumerate() {
        let due = t0 + Duration::from_secs_f64(i as f64 * per_event);
        let now = Instant::now();
        if due > now + Duration::from_millis(1) {
            thread::sleep(due - now);
        }
        buf.clear();
        encode_event_json(&e, &mut buf);
        send_retrying(
            &producer,
            BaseRecord::to(input)
                .key(e.lead_id.as_bytes())
                .payload(&buf[..]),
        );
        sent.entry(e.event_id.into_owned())
            .or_insert_with(Instant::now);
        if i % 64 == 0 {
            producer.poll(Duration::ZERO);
        }
        if i % 25_000 == 0 {
            check_busy("latency");
        }
    }
    let produce_secs = t0.elapsed().as_secs_f64();
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    // Until no change has arrived for 3 s.
    let mut last = arrived.load(Ordering::Relaxed);
    let mut quiet = Instant::now();
    let t = Instant::now();
    while quiet.elapsed() < Duration::from_secs(3) && t.elapsed() < Duration::from_secs(60) {
        thread::sleep(Duration::from_millis(100));
        let a = arrived.load(Ordering::Relaxed);
        if a != last {
            last = a;
            quiet = Instant::now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let got = reader.join().map_err(|_| "reader panicked")?;
    svc.stop()?;
    let mut out = Latency {
        sent: sent.len(),
        produce_secs,
        changes: got.len(),
        timer_changes: 0,
        unmatched: 0,
        ms: Vec::new(),
    };
    for (cause, at) in got {
        match cause {
            None => out.timer_changes += 1,
            Some(id) => match sent.get(&id) {
                Some(t) => out
                    .ms
                    .push(at.saturating_duration_since(*t).as_secs_f64() * 1e3),
                None => out.unmatched += 1,
            },
        }
    }
    out.ms.sort_by(f64::total_cmp);
    Ok(out)
}

pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn latency_phase(b: &Broker, s: &Settings, r: &mut Report) {
    println!(
        "== 4. latency: {} events/s for {} s over {} fresh leads",
        s.rate, s.latency_secs, s.latency_leads
    );
    match latency(b, s) {
        Ok(l) => {
            r.line(format!(
                "latency (exactly_once, 100 ms): produced {} events in {:.1} s ({:.0}/s); {} changes read ({} by timers, {} with an unknown cause)",
                l.sent,
                l.produce_secs,
                l.sent as f64 / l.produce_secs,
                l.changes,
                l.timer_changes,
                l.unmatched
            ));
            r.line(format!(
                "latency event produced -> change read (read_committed): p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, count {}",
                percentile(&l.ms, 0.5),
                percentile(&l.ms, 0.9),
                percentile(&l.ms, 0.99),
                percentile(&l.ms, 1.0),
                l.ms.len()
            ));
        }
        Err(e) => r.line(format!("latency: FAILED: {e}")),
    }
}
