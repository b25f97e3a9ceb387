//! Phase 6: the consume side alone, polled or async. The service polls a
//! `BaseConsumer` on a thread of its own; rdkafka's `StreamConsumer` on
//! tokio is the other way to drive the same client. Both read the
//! throughput stream from its start to its end as a member of a fresh
//! group, with the service's consumer settings, and decode every event as
//! the processor does, so the only difference left is how the loop waits
//! for the next message.

use std::hint::black_box;
use std::time::{Duration, Instant};

use leadscore::codec::decode_keyed;
use leadscore::config::Config;
use leadscore::service::kafka::group_consumer;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};

use crate::broker::{Broker, QuietEof, Stream};
use crate::machine::{check_busy, cpu_secs_of};
use crate::svc::config;
use crate::{produce, throughput_events, Report, Settings};

/// Each variant runs this many times, the variants taking turns, so that a
/// slow spell of the machine or the broker does not land on one of them.
const ROUNDS: usize = 5;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// `BaseConsumer::poll` in a loop on a plain thread, as the service does.
    Poll,
    /// `StreamConsumer::recv().await` on a current-thread runtime.
    CurrentThread,
    /// The same on a multi-thread runtime with one worker (the task runs on
    /// the worker, not on the thread that waits for it).
    OneWorker,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Poll, Variant::CurrentThread, Variant::OneWorker];

    fn tag(self) -> &'static str {
        match self {
            Variant::Poll => "poll",
            Variant::CurrentThread => "stream-ct",
            Variant::OneWorker => "stream-mt1",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Variant::Poll => "BaseConsumer::poll on a thread",
            Variant::CurrentThread => "StreamConsumer, tokio current-thread",
            Variant::OneWorker => "StreamConsumer, tokio multi-thread (1 worker)",
        }
    }
}

/// One read of the input, first message to last.
#[derive(Clone, Copy)]
struct Read {
    secs: f64,
    rate: f64,
    /// CPU of this process (all its threads: librdkafka's fetchers too).
    cpu: f64,
    broker_cpu: f64,
    /// From subscribing to the first message (the group join).
    first_after: f64,
}

/// The per-message work, the same in every variant: the processor's decode
/// (`processor.rs`, `process()`), and where each partition has got to.
struct Tally {
    broker_pid: Option<String>,
    ends: Vec<i64>,
    next: Vec<i64>,
    decoded: u64,
    failed: u64,
    subscribed: Instant,
    first: Option<(Instant, f64, f64)>,
    last_progress: Instant,
    limit: Duration,
}

impl Tally {
    fn new(ends: Vec<i64>, broker_pid: Option<String>, limit: Duration) -> Tally {
        Tally {
            broker_pid,
            next: vec![0; ends.len()],
            ends,
            decoded: 0,
            failed: 0,
            subscribed: Instant::now(),
            first: None,
            last_progress: Instant::now(),
            limit,
        }
    }

    fn take(&mut self, cfg: &Config, m: &BorrowedMessage<'_>) {
        if self.first.is_none() {
            self.first = Some((Instant::now(), process_cpu(), self.broker_cpu()));
        }
        match decode_keyed(
            cfg.kafka
                .input_format
                .native()
                .unwrap_or(leadscore::codec::Format::Json),
            m.key(),
            m.payload().unwrap_or(&[]),
            cfg.kafka.max_event_bytes,
        ) {
            Ok(event) => {
                black_box(&event);
                self.decoded += 1;
            }
            Err(_) => self.failed += 1,
        }
        self.next[m.partition() as usize] = m.offset() + 1;
        self.last_progress = Instant::now();
    }

    fn broker_cpu(&self) -> f64 {
        self.broker_pid
            .as_deref()
            .and_then(cpu_secs_of)
            .unwrap_or(f64::NAN)
    }

    fn done(&self) -> bool {
        self.next.iter().zip(&self.ends).all(|(n, e)| n >= e)
    }

    /// An error other than end-of-partition, or no progress for too long.
    fn check(&self, polled: Option<&KafkaError>) -> Result<(), String> {
        match polled {
            Some(KafkaError::PartitionEOF(_)) | None => {}
            Some(e) => return Err(format!("consumer error: {e}")),
        }
        if self.subscribed.elapsed() > self.limit {
            return Err(format!(
                "time limit reached at {} records",
                self.decoded + self.failed
            ));
        }
        if self.last_progress.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "no progress for 120 s at {} records",
                self.decoded + self.failed
            ));
        }
        Ok(())
    }

    /// Called right after the last message's work.
    fn finish(self) -> Result<Read, String> {
        let (cpu, broker) = (process_cpu(), self.broker_cpu());
        let total: i64 = self.ends.iter().sum();
        let (t0, cpu0, broker0) = self.first.ok_or("no message")?;
        let secs = t0.elapsed().as_secs_f64();
        if self.failed > 0 || self.decoded != total as u64 {
            return Err(format!(
                "decoded {} and failed {} of {total}",
                self.decoded, self.failed
            ));
        }
        Ok(Read {
            secs,
            rate: total as f64 / secs,
            cpu: cpu - cpu0,
            broker_cpu: broker - broker0,
            first_after: (t0 - self.subscribed).as_secs_f64(),
        })
    }
}

fn process_cpu() -> f64 {
    cpu_secs_of("self").unwrap_or(f64::NAN)
}

fn read_polled(
    cfg: &Config,
    input: &Stream,
    broker_pid: Option<String>,
    limit: Duration,
) -> Result<Read, String> {
    let consumer: BaseConsumer<QuietEof> = group_consumer(cfg)
        .create_with_context(QuietEof)
        .map_err(|e| e.to_string())?;
    consumer
        .subscribe(&[&input.topic])
        .map_err(|e| e.to_string())?;
    let mut tally = Tally::new(input.ends.clone(), broker_pid, limit);
    while !tally.done() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => tally.take(cfg, &m),
            Some(Err(e)) => tally.check(Some(&e))?,
            None => tally.check(None)?,
        }
    }
    tally.finish()
}

async fn read_stream(
    cfg: Config,
    topic: String,
    ends: Vec<i64>,
    broker_pid: Option<String>,
    limit: Duration,
) -> Result<Read, String> {
    // Created inside the runtime: it spawns its wake-up task there.
    let consumer: StreamConsumer<QuietEof> = group_consumer(&cfg)
        .create_with_context(QuietEof)
        .map_err(|e| e.to_string())?;
    consumer.subscribe(&[&topic]).map_err(|e| e.to_string())?;
    let mut tally = Tally::new(ends, broker_pid, limit);
    while !tally.done() {
        // recv() waits as long as nothing comes: the timeout keeps the
        // limits checked on a stalled read.
        match tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await {
            Ok(Ok(m)) => tally.take(&cfg, &m),
            Ok(Err(e)) => tally.check(Some(&e))?,
            Err(_) => tally.check(None)?,
        }
    }
    tally.finish()
}

fn read(
    b: &Broker,
    cfg: Config,
    input: &Stream,
    v: Variant,
    limit: Duration,
) -> Result<Read, String> {
    let fut = || {
        read_stream(
            cfg.clone(),
            input.topic.clone(),
            input.ends.clone(),
            b.pid(),
            limit,
        )
    };
    match v {
        Variant::Poll => read_polled(&cfg, input, b.pid(), limit),
        Variant::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(fut()),
        Variant::OneWorker => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_time()
                .build()
                .map_err(|e| e.to_string())?;
            let task = rt.spawn(fut());
            rt.block_on(task).map_err(|e| e.to_string())?
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

pub fn consume_phase(b: &Broker, s: &Settings, r: &mut Report) {
    println!(
        "== 6. consume only: BaseConsumer::poll against StreamConsumer on tokio, {} events",
        s.events
    );
    let input = produce(
        b,
        "bench-consume-events",
        s.partitions,
        throughput_events(s),
    );
    let mut reads: Vec<Vec<Read>> = vec![Vec::new(); Variant::ALL.len()];
    for round in 0..ROUNDS {
        for (i, v) in Variant::ALL.into_iter().enumerate() {
            let name = format!("bench-consume-{}-{round}", v.tag());
            let cfg = config(
                b,
                &name,
                &input.topic,
                "bench-consume-status",
                "at_least_once",
                "",
            );
            match read(b, cfg, &input, v, s.run_limit) {
                Ok(x) => {
                    println!(
                        "   {:<46} round {round}: {:>8.0} msg/s ({:.2} s), cpu {:.2} s, broker cpu {:.2} s, first message after {:.2} s",
                        v.label(),
                        x.rate,
                        x.secs,
                        x.cpu,
                        x.broker_cpu,
                        x.first_after
                    );
                    reads[i].push(x);
                }
                Err(e) => r.line(format!("consume {}: round {round} FAILED: {e}", v.label())),
            }
            check_busy("consume");
        }
    }
    let mut rates = Vec::new();
    for (v, xs) in Variant::ALL.into_iter().zip(&reads) {
        if xs.is_empty() {
            rates.push(None);
            continue;
        }
        let rate = median(xs.iter().map(|x| x.rate).collect());
        let cpu = median(xs.iter().map(|x| x.cpu).collect());
        r.line(format!(
            "consume {}: median of {}: {rate:.0} msg/s (first message to last, {} messages, decoded), process cpu {cpu:.2} s ({:.2} µs/msg), broker cpu {:.2} s",
            v.label(),
            xs.len(),
            input.total,
            cpu * 1e6 / input.total as f64,
            median(xs.iter().map(|x| x.broker_cpu).collect()),
        ));
        rates.push(Some((rate, cpu)));
    }
    if let Some((poll_rate, poll_cpu)) = rates[0] {
        for (v, other) in Variant::ALL.into_iter().zip(&rates).skip(1) {
            if let Some((rate, cpu)) = other {
                r.line(format!(
                    "consume {} / poll: rate {:.2}x, process cpu {:.2}x",
                    v.label(),
                    rate / poll_rate,
                    cpu / poll_cpu
                ));
            }
        }
    }
}
