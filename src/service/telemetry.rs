//! Every metric the service exports, in one place. Label values are bounded:
//! event types the model knows (others count as `other`), reason codes,
//! stages, partitions — never a lead id or profile data.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::change::StatusChange;
use crate::config::LogFormat;
use crate::engine::Outcome;

pub const EVENTS: &str = "leadscore_events_total";
pub const DUPLICATES: &str = "leadscore_duplicate_events_total";
pub const DEAD_LETTERS: &str = "leadscore_dead_letters_total";
pub const CHANGES: &str = "leadscore_changes_total";
pub const FOLD_SECONDS: &str = "leadscore_fold_seconds";
pub const EMIT_LATENCY: &str = "leadscore_event_to_emit_seconds";
pub const CONSUMER_LAG: &str = "leadscore_consumer_lag";
pub const LEADS: &str = "leadscore_leads";
pub const TIMERS: &str = "leadscore_timers_pending";
pub const WATERMARK: &str = "leadscore_watermark_seconds";
pub const RESTORE_SECONDS: &str = "leadscore_restore_seconds";
pub const RESTORED_LEADS: &str = "leadscore_restored_leads_total";
pub const TRANSACTIONS: &str = "leadscore_transactions_total";
pub const REBALANCES: &str = "leadscore_rebalances_total";
pub const READY: &str = "leadscore_ready";
pub const ASSIGNED: &str = "leadscore_assigned_partitions";
pub const BROKER_ERRORS: &str = "leadscore_broker_errors_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process; returns its handle for `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets(&buckets)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may be installed in tests; the handle still renders ours.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            // Series that alerts take a rate of exist from the start, at 0.
            for reason in crate::codec::DecodeError::CODES {
                counter!(DEAD_LETTERS, "reason" => reason).absolute(0);
            }
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        EVENTS,
        "Valid events folded, by type and outcome (applied, late, stale, duplicate)"
    );
    describe_counter!(
        DUPLICATES,
        "Events whose event_id the lead had seen recently"
    );
    describe_counter!(
        DEAD_LETTERS,
        "Invalid messages sent to the dead-letter topic, by reason"
    );
    describe_counter!(CHANGES, "Status changes emitted, by from and to stage");
    describe_histogram!(
        FOLD_SECONDS,
        Unit::Seconds,
        "Time to fold one event (sampled 1 in 64)"
    );
    describe_histogram!(
        EMIT_LATENCY,
        Unit::Seconds,
        "From a change's event time to the commit that published it"
    );
    describe_gauge!(
        CONSUMER_LAG,
        "Messages behind the end of each input partition"
    );
    describe_gauge!(LEADS, "Leads held in state, by partition");
    describe_gauge!(TIMERS, "Timers pending, by partition");
    describe_gauge!(
        WATERMARK,
        Unit::Seconds,
        "Event-time watermark of each partition (Unix seconds)"
    );
    describe_histogram!(
        RESTORE_SECONDS,
        Unit::Seconds,
        "Time to restore a partition's state from the changelog"
    );
    describe_counter!(RESTORED_LEADS, "Leads restored from the changelog");
    describe_counter!(
        TRANSACTIONS,
        "Kafka transactions (or at-least-once commits), by result"
    );
    describe_counter!(
        REBALANCES,
        "Consumer group rebalances, by kind (assign, revoke)"
    );
    describe_gauge!(
        READY,
        "1 when every assigned partition is restored and being processed"
    );
    describe_gauge!(ASSIGNED, "Input partitions assigned to this instance");
    describe_counter!(
        BROKER_ERRORS,
        "Errors reported by the Kafka client, by kind"
    );
}

/// A bounded label for an event type: the model's and the reserved ones, else `other`.
pub fn type_label<'a>(model: &'a crate::model::Model, event_type: &'a str) -> &'a str {
    const RESERVED: [&str; 6] = [
        "profile_updated",
        "qualification_updated",
        "sales_accepted",
        "sales_rejected",
        "deal_won",
        "deal_lost",
    ];
    if RESERVED.contains(&event_type) || !model.rules_for(event_type).is_empty() {
        event_type
    } else {
        "other"
    }
}

/// The per-event counters, by bounded type label and outcome, kept as
/// handles: counting an event (millions a second) then neither allocates a
/// label nor looks the series up in the registry.
#[derive(Default)]
pub struct EventCounters {
    /// The model's and the reserved event types (never user-chosen ones).
    by_type: std::collections::HashMap<String, [Counter; 4]>,
    other: Option<[Counter; 4]>,
    duplicates: Option<Counter>,
}

impl EventCounters {
    pub fn folded(&mut self, model: &crate::model::Model, event_type: &str, outcome: Outcome) {
        let slot = match outcome {
            Outcome::Applied => 0,
            Outcome::Late => 1,
            Outcome::Stale => 2,
            Outcome::Duplicate => 3,
        };
        let counters = match self.by_type.get(event_type) {
            Some(c) => c,
            None => {
                let label = type_label(model, event_type);
                if label == "other" {
                    self.other.get_or_insert_with(|| outcome_counters("other"))
                } else {
                    self.by_type
                        .entry(label.to_string())
                        .or_insert_with(|| outcome_counters(label))
                }
            }
        };
        counters[slot].increment(1);
        if outcome == Outcome::Duplicate {
            self.duplicates
                .get_or_insert_with(|| counter!(DUPLICATES))
                .increment(1);
        }
    }
}

fn outcome_counters(label: &str) -> [Counter; 4] {
    [
        Outcome::Applied,
        Outcome::Late,
        Outcome::Stale,
        Outcome::Duplicate,
    ]
    .map(|o| counter!(EVENTS, "type" => label.to_string(), "outcome" => o.as_str()))
}

pub fn fold_time(d: Duration) {
    histogram!(FOLD_SECONDS).record(d.as_secs_f64());
}

pub fn dead_letter(reason: &'static str) {
    counter!(DEAD_LETTERS, "reason" => reason).increment(1);
}

pub fn change_emitted(c: &StatusChange) {
    counter!(CHANGES, "from" => c.from.as_str(), "to" => c.to.as_str()).increment(1);
}

pub fn emit_latency(seconds: f64) {
    histogram!(EMIT_LATENCY).record(seconds.max(0.0));
}

pub fn partition_state(partition: i32, leads: usize, timers: usize, watermark_micros: i64) {
    let p = partition.to_string();
    gauge!(LEADS, "partition" => p.clone()).set(leads as f64);
    gauge!(TIMERS, "partition" => p.clone()).set(timers as f64);
    if watermark_micros != crate::engine::NO_TIME {
        gauge!(WATERMARK, "partition" => p).set(watermark_micros as f64 / 1e6);
    }
}

pub fn partition_dropped(partition: i32) {
    let p = partition.to_string();
    gauge!(LEADS, "partition" => p.clone()).set(0.0);
    gauge!(TIMERS, "partition" => p).set(0.0);
}

pub fn consumer_lag(topic: &str, partition: i32, lag: i64) {
    gauge!(CONSUMER_LAG, "topic" => topic.to_string(), "partition" => partition.to_string())
        .set(lag as f64);
}

pub fn restored(partition: i32, leads: u64, d: Duration) {
    histogram!(RESTORE_SECONDS).record(d.as_secs_f64());
    counter!(RESTORED_LEADS).increment(leads);
    tracing::info!(
        partition,
        leads,
        seconds = d.as_secs_f64(),
        "partition restored from changelog"
    );
}

pub fn transaction(committed: bool) {
    counter!(TRANSACTIONS, "result" => if committed { "committed" } else { "aborted" })
        .increment(1);
}

pub fn rebalance(kind: &'static str, partitions: usize) {
    counter!(REBALANCES, "kind" => kind).increment(1);
    tracing::info!(kind, partitions, "rebalance");
}

pub fn ready(ready: bool, assigned: usize) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
    gauge!(ASSIGNED).set(assigned as f64);
}

pub fn broker_error(kind: &'static str) {
    counter!(BROKER_ERRORS, "kind" => kind).increment(1);
}

/// Sets up `tracing` output (text or JSON) on stderr.
pub fn init_logging(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let filter: Targets = level
        .or(std::env::var("RUST_LOG").ok().as_deref())
        .unwrap_or("info")
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // Already initialised (tests, demo): keep the first.
    let _ = result;
}
