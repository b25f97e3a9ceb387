//! End-to-end benchmark of the Kafka service (`leadscore run`) on a real
//! Apache Kafka broker (`deploy/local-kafka/kafka.sh`, started and stopped
//! here):
//!
//! 1. throughput through the service, `exactly_once` (commit every 100 ms)
//!    and `at_least_once`, on one generated stream produced once;
//! 2. the ceiling: a pass-through consumer → producer with the same client
//!    library on the same input, plain and transactional;
//! 3. restore speed: `restore_engine` over every changelog partition after a
//!    run over a stream with ≥ 1M distinct leads, and a fresh instance's
//!    time to `/readyz`;
//! 4. event-to-emit latency at a steady produce rate.
//!
//! Run it with `bash benches/service.sh`, which sets
//! `LEADSCORE_SERVICE_BENCH=1`. Without it (a plain `cargo bench`, or
//! `cargo test --benches`) this bench only says how to run it: it starts a
//! JVM and takes minutes. Settings are `LEADSCORE_SVC_*` environment
//! variables, listed in `benches/service.sh`.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use leadscore::codec::encode_event_json;
use leadscore::config::{Config, LogFormat};
use leadscore::gen::{GenConfig, Generator};
use leadscore::service::processor::restore_engine;
use leadscore::service::{self, ServiceError, Shutdown};
use leadscore::time::SECOND;
use leadscore::{Event, Model};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Everything printed at the end, in order.
struct Report(Vec<String>);

impl Report {
    fn line(&mut self, s: String) {
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

struct Settings {
    partitions: i32,
    seed: u64,
    events: u64,
    leads: u64,
    restore_events: u64,
    restore_leads: u64,
    rate: u64,
    latency_secs: u64,
    latency_leads: u64,
    txn_passthrough: bool,
    /// Which parts to run: digits 1 to 5.
    phases: String,
    /// A service run stops here and reports the rate so far.
    run_limit: Duration,
    out_dir: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            partitions: env_u64("LEADSCORE_SVC_PARTITIONS", 8) as i32,
            seed: env_u64("LEADSCORE_SVC_SEED", 7),
            events: env_u64("LEADSCORE_SVC_EVENTS", 1_000_000),
            leads: env_u64("LEADSCORE_SVC_LEADS", 200_000),
            // 1.3M events over 3.5M possible leads touch about 1.05M of them.
            restore_events: env_u64("LEADSCORE_SVC_RESTORE_EVENTS", 1_300_000),
            restore_leads: env_u64("LEADSCORE_SVC_RESTORE_LEADS", 3_500_000),
            rate: env_u64("LEADSCORE_SVC_RATE", 5_000),
            latency_secs: env_u64("LEADSCORE_SVC_LATENCY_SECS", 30),
            latency_leads: env_u64("LEADSCORE_SVC_LATENCY_LEADS", 20_000),
            txn_passthrough: env_u64("LEADSCORE_SVC_TXN_PASSTHROUGH", 1) == 1,
            run_limit: Duration::from_secs(env_u64("LEADSCORE_SVC_RUN_LIMIT", 300)),
            phases: std::env::var("LEADSCORE_SVC_PHASES").unwrap_or_else(|_| "12345".into()),
            out_dir: std::env::var_os("LEADSCORE_SVC_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-service")
                }),
        }
    }
}

// ---------------------------------------------------------------- broker

struct Broker {
    dir: PathBuf,
    bootstrap: String,
    keep_log: PathBuf,
}

fn kafka_sh(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local-kafka/kafka.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .expect("run kafka.sh");
    assert!(
        out.status.success(),
        "kafka.sh {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Broker {
    fn start(out_dir: &Path) -> Broker {
        let dir =
            std::env::temp_dir().join(format!("leadscore-bench-kafka-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pid = std::process::id().to_string();
        let out = kafka_sh(&["start", "--dir", dir.to_str().unwrap(), "--watch-pid", &pid]);
        let bootstrap = out.lines().last().expect("bootstrap line").to_string();
        Broker {
            dir,
            bootstrap,
            keep_log: out_dir.join("broker.log"),
        }
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("log_level", "4");
        c
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.client().create().unwrap();
        let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let r =
            leadscore::service::kafka::block_on(admin.create_topics([&t], &AdminOptions::new()))
                .expect("create topics");
        for x in r {
            x.expect("topic created");
        }
    }

    /// CPU seconds used so far by the broker's JVM.
    fn cpu_secs(&self) -> f64 {
        std::fs::read_to_string(self.dir.join("broker.pid"))
            .ok()
            .and_then(|p| cpu_secs_of(p.trim()))
            .unwrap_or(f64::NAN)
    }

    /// (low, high) of each partition.
    fn watermarks(&self, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
        let c: BaseConsumer = self.client().create().unwrap();
        (0..partitions)
            .map(|p| {
                c.fetch_watermarks(topic, p, Duration::from_secs(30))
                    .expect("watermarks")
            })
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = std::fs::copy(self.dir.join("broker.log"), &self.keep_log);
        let _ = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local-kafka/kafka.sh"))
            .args(["stop", "--dir", self.dir.to_str().unwrap()])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// utime + stime of a process, in seconds (`/proc/PID/stat`, 100 ticks/s).
fn cpu_secs_of(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// CPU used by this process and by the broker between two points.
struct Cpu {
    me: f64,
    broker: f64,
}

impl Cpu {
    fn now(b: &Broker) -> Cpu {
        Cpu {
            me: cpu_secs_of("self").unwrap_or(f64::NAN),
            broker: b.cpu_secs(),
        }
    }

    fn since(&self, b: &Broker, wall: f64) -> String {
        let now = Cpu::now(b);
        format!(
            "cpu: bench process {:.1} s ({:.0}% of one core), broker {:.1} s ({:.0}%)",
            now.me - self.me,
            100.0 * (now.me - self.me) / wall,
            now.broker - self.broker,
            100.0 * (now.broker - self.broker) / wall
        )
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Other builds, tests and benches seen running during the bench (they share
/// the 2 cores), with the part of the bench that saw them first.
static BUSY: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Looks for other `cargo bench`/`cargo test` processes and test or bench
/// binaries (`target/*/deps/*`), and remembers any new one.
fn check_busy(during: &str) {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    let mut seen = BUSY.lock().unwrap();
    for entry in dir.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
        let cmd = cmd.trim();
        let cargo = cmd.contains("cargo bench") || cmd.contains("cargo test");
        let binary = cmd.contains("target/") && cmd.contains("/deps/");
        let ours = cmd.contains("--bench service") || cmd.contains("/deps/service-");
        if (cargo || binary) && !ours {
            let cmd: String = cmd.chars().take(120).collect();
            if !seen.iter().any(|(c, _)| *c == cmd) {
                println!("   NOTE: the machine is busy: {cmd}");
                seen.push((cmd, during.to_string()));
            }
        }
    }
}

// ---------------------------------------------------------------- input

struct Input {
    topic: String,
    /// High watermark of each partition (the input is not transactional,
    /// so this is also the message count).
    ends: Vec<i64>,
    total: i64,
    distinct_leads: usize,
}

fn send_retrying(p: &BaseProducer, mut r: BaseRecord<'_, [u8], [u8]>) {
    loop {
        match p.send(r) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                r = back;
                p.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("produce: {e}"),
        }
    }
}

/// Produces a generated stream, keyed by lead id, as JSON.
fn produce_stream(
    b: &Broker,
    topic: &str,
    partitions: i32,
    events: impl Iterator<Item = Event<'static>>,
) -> Input {
    b.create_topic(topic, partitions);
    let p: BaseProducer = b
        .client()
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let t = Instant::now();
    let mut leads: HashSet<String> = HashSet::with_capacity(1 << 20);
    let mut buf = Vec::with_capacity(512);
    let mut n = 0u64;
    let mut bytes = 0u64;
    for e in events {
        buf.clear();
        encode_event_json(&e, &mut buf);
        bytes += buf.len() as u64;
        send_retrying(
            &p,
            BaseRecord::to(topic)
                .key(e.lead_id.as_bytes())
                .payload(&buf[..]),
        );
        if !leads.contains(e.lead_id.as_ref()) {
            leads.insert(e.lead_id.into_owned());
        }
        n += 1;
        if n % 1024 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(120)).expect("flush");
    let ends: Vec<i64> = b
        .watermarks(topic, partitions)
        .into_iter()
        .map(|(_, h)| h)
        .collect();
    let total: i64 = ends.iter().sum();
    assert_eq!(total as u64, n, "every event is in the topic");
    println!(
        "   produced {n} events ({} MiB, {} B/event) over {} distinct leads into {topic} ({partitions} partitions) in {:.1} s",
        bytes >> 20,
        bytes / n.max(1),
        leads.len(),
        t.elapsed().as_secs_f64()
    );
    Input {
        topic: topic.to_string(),
        ends,
        total,
        distinct_leads: leads.len(),
    }
}

// ---------------------------------------------------------------- service

fn config(
    b: &Broker,
    name: &str,
    input: &str,
    status: &str,
    guarantee: &str,
    extra: &str,
) -> Config {
    let text = format!(
        r#"
[kafka]
brokers = "{}"
group_id = "{name}"
instance_id = "{name}-0"
input_topics = ["{input}"]
status_topic = "{status}"
dead_letter_topic = "bench-dlq"
guarantee = "{guarantee}"
commit_interval_ms = 100
{extra}

[http]
listen = "127.0.0.1:0"

[log]
level = "warn"
"#,
        b.bootstrap
    );
    Config::from_toml_with_env(&text, std::iter::empty()).expect("bench config is valid")
}

struct Svc {
    shutdown: Shutdown,
    thread: thread::JoinHandle<Result<(), ServiceError>>,
    addr: SocketAddr,
    started: Instant,
}

fn start_service(cfg: Config) -> Result<Svc, String> {
    let shutdown = Shutdown::new();
    let (tx, rx) = mpsc::channel();
    let s2 = shutdown.clone();
    let started = Instant::now();
    let thread = thread::Builder::new()
        .name("service".into())
        .spawn(move || {
            service::run(cfg, s2, |r| {
                let _ = tx.send(r.http_addr);
            })
        })
        .unwrap();
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(addr) => Ok(Svc {
            shutdown,
            thread,
            addr,
            started,
        }),
        Err(_) => {
            shutdown.trigger();
            Err(match thread.join() {
                Ok(Err(e)) => format!("service did not start: {e}"),
                _ => "service did not start".into(),
            })
        }
    }
}

impl Svc {
    fn alive(&self) -> bool {
        !self.thread.is_finished()
    }

    fn stop(self) -> Result<f64, String> {
        let t = Instant::now();
        self.shutdown.trigger();
        match self.thread.join() {
            Ok(Ok(())) => Ok(t.elapsed().as_secs_f64()),
            Ok(Err(e)) => Err(format!("service stopped with an error: {e}")),
            Err(_) => Err("service thread panicked".into()),
        }
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.addr, path)
    }

    fn metrics(&self) -> String {
        self.get("/metrics").map(|(_, b)| b).unwrap_or_default()
    }
}

fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// Sum of a metric's samples whose labels contain `filter`.
fn metric(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let metric_name = key.split('{').next()?;
            (metric_name == name && key.contains(filter)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Counters read from `/metrics` (they add up over the runs in this process).
#[derive(Clone, Copy, Default)]
struct Counters {
    events: f64,
    changes: f64,
    committed: f64,
    aborted: f64,
    broker_errors: f64,
    rebalances: f64,
    dead_letters: f64,
    restore_secs: f64,
    restored_leads: f64,
}

impl Counters {
    fn read(text: &str) -> Counters {
        Counters {
            events: metric(text, "leadscore_events_total", ""),
            changes: metric(text, "leadscore_changes_total", ""),
            committed: metric(text, "leadscore_transactions_total", "committed"),
            aborted: metric(text, "leadscore_transactions_total", "aborted"),
            broker_errors: metric(text, "leadscore_broker_errors_total", ""),
            rebalances: metric(text, "leadscore_rebalances_total", ""),
            dead_letters: metric(text, "leadscore_dead_letters_total", ""),
            restore_secs: metric(text, "leadscore_restore_seconds_sum", ""),
            restored_leads: metric(text, "leadscore_restored_leads_total", ""),
        }
    }

    fn minus(self, o: Counters) -> Counters {
        Counters {
            events: self.events - o.events,
            changes: self.changes - o.changes,
            committed: self.committed - o.committed,
            aborted: self.aborted - o.aborted,
            broker_errors: self.broker_errors - o.broker_errors,
            rebalances: self.rebalances - o.rebalances,
            dead_letters: self.dead_letters - o.dead_letters,
            restore_secs: self.restore_secs - o.restore_secs,
            restored_leads: self.restored_leads - o.restored_leads,
        }
    }
}

/// Sum of a group's committed offsets on `topic` (0 where none). Uses
/// `committed_offsets` only: this consumer shares the service's group id and
/// must not join the group.
fn committed_total(c: &BaseConsumer, topic: &str, partitions: i32) -> Option<i64> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    Some(
        got.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum(),
    )
}

struct Throughput {
    secs: f64,
    /// Input offsets committed when the run ended (all of them unless the
    /// run hit the time limit).
    committed: i64,
    first_event: Option<f64>,
    first_commit: Option<f64>,
    ready: Option<f64>,
    /// Longest time without committed progress, after the first commit.
    max_gap: f64,
    /// Longest time without an event folded, after the first one.
    max_fold_gap: f64,
    counters: Counters,
    stop_secs: f64,
    error: Option<String>,
}

/// Runs the service on a fresh group over `input` until the group's
/// committed offsets reach its end.
fn service_throughput(
    b: &Broker,
    s: &Settings,
    input: &Input,
    name: &str,
    guarantee: &str,
) -> Throughput {
    let status = format!("{name}-status");
    b.create_topic(&status, s.partitions);
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
        if turns % 50 == 0 {
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

fn report_throughput(r: &mut Report, label: &str, input: &Input, t: &Throughput) -> Option<f64> {
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

// ---------------------------------------------------------------- pass-through

struct Pass {
    secs: f64,
    first: f64,
    commits: u64,
}

/// Consumer → producer with the service's client settings: every record's
/// key and value to an output topic. Transactional: offsets and a commit
/// every 100 ms.
fn passthrough(
    b: &Broker,
    s: &Settings,
    input: &Input,
    name: &str,
    transactional: bool,
) -> Result<Pass, String> {
    let out_topic = format!("{name}-out");
    b.create_topic(&out_topic, s.partitions);
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
            if n % 1024 == 0 {
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

/// A consumer context that does not log end-of-partition as an error (the
/// default one does), so the service's log holds only the service's lines.
struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            eprintln!("bench consumer error: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// Reads each partition of `topic` from the beginning to end-of-partition
/// with `restore_engine`'s consumer settings and nothing else: the records,
/// the seconds until the last record arrived, and until end-of-partition
/// (summed over the partitions).
fn read_only(b: &Broker, topic: &str, partitions: i32, extra: &[(&str, &str)]) -> (u64, f64, f64) {
    let (mut n, mut to_last, mut to_eof) = (0u64, 0.0, 0.0);
    for p in 0..partitions {
        let t = Instant::now();
        let mut cc = b.client();
        for (k, v) in extra {
            cc.set(*k, *v);
        }
        let c: BaseConsumer<Quiet> = cc
            .set("group.id", "bench-read-only")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .set("fetch.max.bytes", "52428800")
            .set("max.partition.fetch.bytes", "10485760")
            .create_with_context(Quiet)
            .unwrap();
        // As restore_engine does; it also gives the consumer the metadata it
        // needs to start fetching at once.
        c.fetch_watermarks(topic, p, Duration::from_secs(30))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
        c.assign(&tpl).unwrap();
        let mut last = t;
        loop {
            match c.poll(Duration::from_millis(500)) {
                Some(Ok(_)) => {
                    n += 1;
                    last = Instant::now();
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => panic!("changelog read: {e}"),
                None if t.elapsed() > Duration::from_secs(120) => panic!("changelog read stalled"),
                None => {}
            }
        }
        to_last += (last - t).as_secs_f64();
        to_eof += t.elapsed().as_secs_f64();
    }
    (n, to_last, to_eof)
}

// ---------------------------------------------------------------- latency

struct Latency {
    sent: usize,
    produce_secs: f64,
    changes: usize,
    timer_changes: usize,
    unmatched: usize,
    ms: Vec<f64>,
}

fn latency(b: &Broker, s: &Settings) -> Result<Latency, String> {
    let input = "lat-events";
    let status = "lat-status";
    b.create_topic(input, s.partitions);
    b.create_topic(status, s.partitions);
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
    let now_micros = leadscore::service::processor::wall_micros();
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

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

// ---------------------------------------------------------------- main

fn main() {
    if std::env::var("LEADSCORE_SERVICE_BENCH").as_deref() != Ok("1") {
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
    let b = Broker::start(&s.out_dir);
    println!(
        "   broker at {} in {:.1} s",
        b.bootstrap,
        t.elapsed().as_secs_f64()
    );
    b.create_topic("bench-dlq", 1);
    let t = Instant::now();
    warm_up_coordinators(&b);
    println!(
        "   transaction and group coordinators ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    check_busy("start");
    if s.phases.contains('1') || s.phases.contains('2') {
        throughput_phases(&b, &s, &mut r);
        check_busy("throughput");
    }
    if s.phases.contains('3') {
        restore_phase(&b, &s, &mut r);
        check_busy("restore");
    }
    if s.phases.contains('4') {
        latency_phase(&b, &s, &mut r);
        check_busy("latency");
    }
    if s.phases.contains('5') {
        replay_phase(&b, &s, &mut r);
        check_busy("replay");
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
fn throughput_events(s: &Settings) -> Generator {
    Generator::new(GenConfig {
        seed: s.seed,
        leads: s.leads,
        events: s.events,
        late_rate: 0.0,
        ..GenConfig::default()
    })
}

/// On a fresh broker the first transaction and the first consumer group wait
/// for their coordinators to load (`Coordinator load in progress`, seconds
/// at times). One of each, untimed, so the first timed run does not pay for it.
fn warm_up_coordinators(b: &Broker) {
    b.create_topic("bench-warm-up", 1);
    let wait = Duration::from_secs(60);
    let mut pc = b.client();
    pc.set("transactional.id", "bench-warm-up");
    let producer: BaseProducer = pc.create().expect("warm-up producer");
    producer.init_transactions(wait).expect("init_transactions");
    producer.begin_transaction().expect("begin_transaction");
    producer
        .send(BaseRecord::to("bench-warm-up").key("k").payload("warm-up"))
        .map_err(|(e, _)| e)
        .expect("send");
    producer
        .commit_transaction(wait)
        .expect("commit_transaction");
    let mut cc = b.client();
    cc.set("group.id", "bench-warm-up");
    let consumer: BaseConsumer = cc.create().expect("warm-up consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("bench-warm-up", 0, Offset::Offset(1))
        .expect("partition");
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("commit offsets");
}

fn throughput_phases(b: &Broker, s: &Settings, r: &mut Report) {
    println!(
        "== input: {} events over {} leads, seed {}, late_rate 0",
        s.events, s.leads, s.seed
    );
    let input = produce_stream(b, "bench-events", s.partitions, throughput_events(s));
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

fn restore_phase(b: &Broker, s: &Settings, r: &mut Report) {
    println!(
        "== 3. restore: {} events over up to {} leads",
        s.restore_events, s.restore_leads
    );
    let rinput = produce_stream(
        b,
        "bench-restore-events",
        s.partitions,
        Generator::new(GenConfig {
            seed: s.seed + 2,
            leads: s.restore_leads,
            events: s.restore_events,
            late_rate: 0.0,
            ..GenConfig::default()
        }),
    );
    r.line(format!(
        "restore input: {} events over {} distinct leads",
        rinput.total, rinput.distinct_leads
    ));
    let cpu = Cpu::now(b);
    let t = service_throughput(b, s, &rinput, "bench-restore", "exactly_once");
    let ok = report_throughput(r, "service exactly_once (restore input)", &rinput, &t);
    if t.secs.is_finite() {
        r.line(format!(
            "service exactly_once (restore input):   {}",
            cpu.since(b, t.secs)
        ));
    }
    if ok.is_some() {
        let cfg = config(
            b,
            "bench-restore",
            &rinput.topic,
            "bench-restore-status",
            "exactly_once",
            "idle_advance_ms = 0",
        );
        let changelog = cfg.changelog_topic();
        let records: i64 = b
            .watermarks(&changelog, s.partitions)
            .iter()
            .map(|(l, h)| h - l)
            .sum();
        for (what, extra) in [
            ("restore_engine's consumer settings", &[][..]),
            (
                "the same and fetch.wait.max.ms=10",
                &[("fetch.wait.max.ms", "10")][..],
            ),
        ] {
            let (n, to_last, to_eof) = read_only(b, &changelog, s.partitions, extra);
            r.line(format!(
                "changelog read only (no decoding), {what}, {} partitions one after another: {n} records, {to_last:.2} s to the last record, {to_eof:.2} s to end-of-partition ({:.0} records/s)",
                s.partitions,
                n as f64 / to_eof
            ));
        }
        let model = Arc::new(Model::default_model());
        let mut leads = 0usize;
        let mut secs = 0.0;
        let mut per = Vec::new();
        let mut failed = None;
        for p in 0..s.partitions {
            let t = Instant::now();
            match restore_engine(&cfg, &model, &changelog, p) {
                Ok((engine, _)) => {
                    let d = t.elapsed().as_secs_f64();
                    secs += d;
                    leads += engine.lead_count();
                    drop(engine);
                    per.push(format!("{d:.2}"));
                }
                Err(e) => {
                    failed = Some(format!("partition {p}: {e}"));
                    break;
                }
            }
        }
        match failed {
            Some(e) => r.line(format!("restore_engine: FAILED: {e}")),
            None => {
                r.line(format!(
                    "restore_engine, {} partitions one after another: {leads} leads in {secs:.2} s = {:.0} leads/s (target >= 200k); changelog {records} offsets (records + transaction markers); per partition [{}] s",
                    s.partitions,
                    leads as f64 / secs,
                    per.join(", ")
                ));
            }
        }
        let distinct = leads;
        // A fresh instance of the same group: restore all partitions, then ready.
        match start_service(cfg) {
            Ok(svc) => {
                let base = Counters::read(&svc.metrics());
                let mut ready = None;
                while svc.started.elapsed() < Duration::from_secs(300) && svc.alive() {
                    if svc.get("/readyz").is_some_and(|(c, _)| c == 200) {
                        ready = Some(svc.started.elapsed().as_secs_f64());
                        break;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
                let c = Counters::read(&svc.metrics()).minus(base);
                let stopped = svc.stop();
                match ready {
                    Some(t) => r.line(format!(
                        "fresh service instance (partitions restored in parallel): ready after {t:.2} s = {:.0} leads/s by wall time including start-up (target >= 200k); leadscore_restore_seconds sum over partitions {:.2} s ({:.0} leads/s per restoring thread; {} distinct leads; leadscore_restored_leads_total says {}: it counts changelog records)",
                        distinct as f64 / t,
                        c.restore_secs,
                        distinct as f64 / c.restore_secs,
                        distinct,
                        c.restored_leads
                    )),
                    None => r.line(format!(
                        "fresh service instance: not ready ({})",
                        stopped.err().unwrap_or_default()
                    )),
                }
            }
            Err(e) => r.line(format!("fresh service instance: FAILED: {e}")),
        }
    }
}

fn latency_phase(b: &Broker, s: &Settings, r: &mut Report) {
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

/// `leadscore replay` of a topic under another model, next to `leadscore
/// score` on the same events read from a file (both the release binary,
/// wall time including start-up, the faster of two runs each).
fn replay_phase(b: &Broker, s: &Settings, r: &mut Report) {
    println!("== 5. replay vs score on the same {} events", s.events);
    let input = produce_stream(b, "bench-replay-events", s.partitions, throughput_events(s));
    b.create_topic("bench-replay-status", s.partitions);
    let file = s.out_dir.join("replay-events.jsonl");
    let mut body = Vec::with_capacity(200 << 20);
    for e in throughput_events(s) {
        encode_event_json(&e, &mut body);
        body.push(b'\n');
    }
    std::fs::write(&file, &body).expect("write the event file");
    drop(body);
    let model = s.out_dir.join("replay-model.toml");
    std::fs::write(
        &model,
        include_str!("../src/model/default.toml")
            .replace("version = \"default-1\"", "version = \"bench-2\"")
            .replace("mql_min_total = 50", "mql_min_total = 40"),
    )
    .expect("write the model");
    let config = s.out_dir.join("replay.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\ngroup_id = \"bench-replay\"\ninstance_id = \"bench-replay-0\"\n\
             input_topics = [\"bench-replay-events\"]\nstatus_topic = \"bench-replay-status\"\n\
             dead_letter_topic = \"bench-dlq\"\n",
            b.bootstrap
        ),
    )
    .expect("write the config");
    let bin = env!("CARGO_BIN_EXE_leadscore");
    // The bench's own LEADSCORE_* settings are not leadscore config keys.
    let cmd = |args: &[&str]| {
        let mut c = Command::new(bin);
        c.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("LEADSCORE_") {
                c.env_remove(k);
            }
        }
        c
    };

    // Each runs twice, in turn, and its faster run counts: the broker has
    // just taken the input and is still busy with it (and its JIT) at first.
    let (mut score_secs, mut replay_secs) = (f64::MAX, f64::MAX);
    let mut replayed = None;
    let mut cpu_line = String::new();
    for _ in 0..2 {
        let t = Instant::now();
        let out = cmd(&["score", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .output()
            .expect("run leadscore score");
        score_secs = score_secs.min(t.elapsed().as_secs_f64());
        assert!(
            out.status.success(),
            "score: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let cpu = Cpu::now(b);
        let t = Instant::now();
        let out = cmd(&["replay", "--config"])
            .arg(&config)
            .arg("--model")
            .arg(&model)
            .arg("--json")
            .output()
            .expect("run leadscore replay");
        let secs = t.elapsed().as_secs_f64();
        if !out.status.success() {
            r.line(format!(
                "replay: FAILED: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            return;
        }
        if secs < replay_secs {
            replay_secs = secs;
            cpu_line = cpu.since(b, secs);
            replayed = Some(out);
        }
    }
    let out = replayed.expect("two replays ran");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("replay JSON");
    let n = input.total as f64;
    r.line(format!(
        "score (file, new model): {} events in {score_secs:.2} s = {:.0} events/s",
        input.total,
        n / score_secs
    ));
    r.line(format!(
        "replay (topic, new model + live model for the summary, {} changes written): {} events in {replay_secs:.2} s = {:.0} events/s; {:.0}% of score (target >= 100%)",
        summary["changes_written"],
        summary["events"],
        n / replay_secs,
        100.0 * score_secs / replay_secs
    ));
    r.line(format!("replay:   {cpu_line}"));
}
