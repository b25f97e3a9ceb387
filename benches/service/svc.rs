//! The service in this process (`leadscore::service::run`), and what its
//! HTTP endpoints say.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use leadscore::config::Config;
use leadscore::service::{self, ServiceError, Shutdown};

use crate::broker::Broker;

pub fn config(
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

pub struct Svc {
    pub shutdown: Shutdown,
    pub thread: thread::JoinHandle<Result<(), ServiceError>>,
    pub addr: SocketAddr,
    pub started: Instant,
}

pub fn start_service(cfg: Config) -> Result<Svc, String> {
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
    pub fn alive(&self) -> bool {
        !self.thread.is_finished()
    }

    pub fn stop(self) -> Result<f64, String> {
        let t = Instant::now();
        self.shutdown.trigger();
        match self.thread.join() {
            Ok(Ok(())) => Ok(t.elapsed().as_secs_f64()),
            Ok(Err(e)) => Err(format!("service stopped with an error: {e}")),
            Err(_) => Err("service thread panicked".into()),
        }
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.addr, path)
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").map(|(_, b)| b).unwrap_or_default()
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
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
pub fn metric(text: &str, name: &str, filter: &str) -> f64 {
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
pub struct Counters {
    pub events: f64,
    pub changes: f64,
    pub committed: f64,
    pub aborted: f64,
    pub broker_errors: f64,
    pub rebalances: f64,
    pub dead_letters: f64,
    pub restore_secs: f64,
    pub restored_leads: f64,
}

impl Counters {
    pub fn read(text: &str) -> Counters {
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

    pub fn minus(self, o: Counters) -> Counters {
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
