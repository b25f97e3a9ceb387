//! Every metric the service exports, in one place. Label values are bounded:
//! event types the model knows (others count as `other`), reason codes,
//! stages, partitions — never a lead id or profile data.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::change::{Stage, StatusChange};
use crate::config::LogFormat;
use crate::engine::Outcome;

pub const EVENTS: &str = "leadscore_events_total";
pub const DUPLICATES: &str = "leadscore_duplicate_events_total";
pub const DEAD_LETTERS: &str = "leadscore_dead_letters_total";
pub const CHANGES: &str = "leadscore_changes_total";
pub const SCORE_RECORDS: &str = "leadscore_score_records_total";
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
pub const ROUTED: &str = "leadscore_routed_records_total";
pub const SCHEMA_IDS: &str = "leadscore_schema_ids_total";
pub const VISITORS: &str = "leadscore_visitors";
pub const ROUTED_WAITING: &str = "leadscore_routed_waiting";
pub const IDENTIFICATIONS: &str = "leadscore_identifications_total";
pub const FORWARDED: &str = "leadscore_forwarded_events_total";
pub const VISITORS_EXPIRED: &str = "leadscore_visitors_expired_total";
pub const SLA_BREACHES: &str = "leadscore_sla_breaches_total";
pub const FIRST_TOUCH: &str = "leadscore_sla_first_touch_seconds";
pub const REMOVED: &str = "leadscore_leads_removed_total";

/// Buckets of [`FIRST_TOUCH`], in seconds: 15 min to 2 weeks, with the
/// default SLAs (4 h, 24 h, 3 working days ≤ 5 days) among the bounds.
pub const FIRST_TOUCH_BUCKETS: [f64; 12] = [
    900.0,
    1800.0,
    3600.0,
    7200.0,
    14_400.0,
    28_800.0,
    86_400.0,
    172_800.0,
    259_200.0,
    432_000.0,
    604_800.0,
    1_209_600.0,
];

/// `leadscore_schema_ids_total{schema_id}`: at most this many distinct ids
/// get a series of their own; the others count under [`OTHER_SCHEMA`].
pub const SCHEMA_ID_LABELS: usize = 100;
pub const OTHER_SCHEMA: &str = "other";

/// `leadscore_transactions_total{result}`.
pub const COMMITTED: &str = "committed";
pub const ABORTED: &str = "aborted";
/// `leadscore_rebalances_total{kind}`.
pub const ASSIGN: &str = "assign";
pub const REVOKE: &str = "revoke";
pub const REBALANCE_KINDS: [&str; 2] = [ASSIGN, REVOKE];
/// `leadscore_broker_errors_total{kind}`: where the Kafka client's error surfaced.
pub const BROKER_CONSUMER: &str = "consumer";
pub const BROKER_REBALANCE: &str = "rebalance";
pub const BROKER_FENCED_INSTANCE: &str = "fenced_instance";
pub const BROKER_POLL: &str = "poll";
pub const BROKER_PRODUCER: &str = "producer";
pub const BROKER_RETRIED: &str = "retried";
pub const BROKER_ERROR_KINDS: [&str; 6] = [
    BROKER_CONSUMER,
    BROKER_REBALANCE,
    BROKER_FENCED_INSTANCE,
    BROKER_POLL,
    BROKER_PRODUCER,
    BROKER_RETRIED,
];
/// The event types every model knows (`leadscore_events_total{type}`), and
/// the label of the types no rule reads.
pub const RESERVED_TYPES: [&str; 7] = [
    "profile_updated",
    "qualification_updated",
    "sales_accepted",
    "sales_rejected",
    "deal_won",
    "deal_lost",
    "sales_contacted",
];
pub const OTHER_TYPE: &str = "other";
/// Gauges labelled by partition: their series appear with the first
/// partition assigned (no partition is known before), and stay, at 0 once
/// the partition is revoked.
pub const PER_PARTITION: [&str; 4] = [CONSUMER_LAG, LEADS, TIMERS, WATERMARK];
/// Counters labelled by input topic: their series are created, at 0, when
/// the processor is (from the config, before the endpoints serve).
pub const PER_TOPIC: [&str; 1] = [ROUTED];
/// Labelled by the model's routes: created, at 0, when the processor is
/// (from the model, before the endpoints serve; see [`sla_routes`]).
pub const PER_ROUTE: [&str; 2] = [SLA_BREACHES, FIRST_TOUCH];

const OUTCOMES: [Outcome; 6] = [
    Outcome::Applied,
    Outcome::Late,
    Outcome::Stale,
    Outcome::Duplicate,
    Outcome::Held,
    Outcome::Erased,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process; returns its handle for `/metrics`.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = recorder();
            let handle = recorder.handle();
            // Registered on our recorder itself: another recorder may be
            // the global one in tests, and the handle renders ours.
            metrics::with_local_recorder(&recorder, register);
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

fn recorder() -> metrics_exporter_prometheus::PrometheusRecorder {
    let buckets = [
        0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0, 60.0, 300.0,
    ];
    PrometheusBuilder::new()
        .set_buckets(&buckets)
        .expect("bucket list is not empty")
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(FIRST_TOUCH.to_string()),
            &FIRST_TOUCH_BUCKETS,
        )
        .expect("bucket list is not empty")
        .build_recorder()
}

/// Describes every metric and creates every series whose labels are known
/// before anything happens, at 0 (counters, histograms) or at the initial
/// value (gauges): a rate, an increase or a "== 0" over a series that does
/// not exist yet is "no data", which neither an alert nor a panel can tell
/// from "nothing happened". A histogram is registered without an
/// observation; the exporter renders it with empty buckets, `_sum` 0 and
/// `_count` 0.
fn register() {
    describe();
    for t in RESERVED_TYPES.into_iter().chain([OTHER_TYPE]) {
        for o in OUTCOMES {
            counter!(EVENTS, "type" => t, "outcome" => o.as_str()).increment(0);
        }
    }
    counter!(DUPLICATES).increment(0);
    for reason in crate::codec::DecodeError::CODES {
        counter!(DEAD_LETTERS, "reason" => reason).increment(0);
    }
    for from in Stage::ALL {
        for to in Stage::ALL.into_iter().filter(|&to| to != from) {
            counter!(CHANGES, "from" => from.as_str(), "to" => to.as_str()).increment(0);
        }
    }
    for result in [COMMITTED, ABORTED] {
        counter!(TRANSACTIONS, "result" => result).increment(0);
    }
    for kind in REBALANCE_KINDS {
        counter!(REBALANCES, "kind" => kind).increment(0);
    }
    for kind in BROKER_ERROR_KINDS {
        counter!(BROKER_ERRORS, "kind" => kind).increment(0);
    }
    counter!(RESTORED_LEADS).increment(0);
    counter!(SCHEMA_IDS, "schema_id" => OTHER_SCHEMA).increment(0);
    gauge!(VISITORS).set(0.0);
    for c in [IDENTIFICATIONS, FORWARDED, VISITORS_EXPIRED] {
        counter!(c).increment(0);
    }
    for h in [FOLD_SECONDS, EMIT_LATENCY, RESTORE_SECONDS] {
        let _ = histogram!(h);
    }
    ready(false, 0);
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
    describe_counter!(
        SCORE_RECORDS,
        "Records written to the score topic (a lead's current score)"
    );
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
    describe_counter!(
        ROUTED,
        "Records written to the repartition topic, by the topic they came from"
    );
    describe_counter!(
        SCHEMA_IDS,
        "Schema Registry-framed messages, by schema id (past 100 ids: other)"
    );
    describe_gauge!(VISITORS, "Anonymous visitors held in state");
    describe_gauge!(
        ROUTED_WAITING,
        "Re-keyed records read from the repartition topic and waiting for the routers' order, by partition"
    );
    describe_counter!(
        IDENTIFICATIONS,
        "Visitors identified as a lead (identify or alias)"
    );
    describe_counter!(
        FORWARDED,
        "Events of identified visitors forwarded to their lead"
    );
    describe_counter!(
        VISITORS_EXPIRED,
        "Visitors dropped after their time to live"
    );
    describe_counter!(
        SLA_BREACHES,
        "Hand-offs to mql/sql whose follow_up_by passed without sales_contacted, by route"
    );
    describe_histogram!(
        FIRST_TOUCH,
        Unit::Seconds,
        "From a lead's change to mql/sql to its first sales_contacted (event time), by route"
    );
    describe_counter!(
        REMOVED,
        "Leads whose state was deleted: reason=erased (lead_erased) or expired (retention.inactive_after)"
    );
    for reason in ["erased", "expired"] {
        counter!(REMOVED, "reason" => reason).increment(0);
    }
}

/// Creates the SLA series of the model's routes at 0 (route names come from
/// the model: bounded).
pub fn sla_routes(model: &crate::model::Model) {
    for track in [&model.new_business, &model.installed_base] {
        counter!(SLA_BREACHES, "route" => track.route.clone()).increment(0);
        let _ = histogram!(FIRST_TOUCH, "route" => track.route.clone());
    }
}

/// A hand-off's first touch: its wait, in event time.
pub fn first_touch(model: &crate::model::Model, touch: &crate::engine::Touch) {
    let route = model.track(touch.installed_base).route.clone();
    histogram!(FIRST_TOUCH, "route" => route).record(touch.waited().max(0) as f64 / 1e6);
}

/// The routing counters of the given topics, at 0 (the input topics'
/// names are bounded: they come from the config).
pub fn routed_counters(topics: &[String]) -> Vec<Counter> {
    topics
        .iter()
        .map(|t| {
            let c = counter!(ROUTED, "topic" => t.clone());
            c.increment(0);
            c
        })
        .collect()
}

/// Counts a Schema Registry schema id; ids past the first
/// [`SCHEMA_ID_LABELS`] seen count as [`OTHER_SCHEMA`].
#[derive(Default)]
pub struct SchemaIds {
    seen: std::collections::HashMap<u32, Counter>,
    other: Option<Counter>,
}

impl SchemaIds {
    pub fn seen(&mut self, id: u32) {
        if let Some(c) = self.seen.get(&id) {
            return c.increment(1);
        }
        if self.seen.len() < SCHEMA_ID_LABELS {
            let c = counter!(SCHEMA_IDS, "schema_id" => id.to_string());
            c.increment(1);
            self.seen.insert(id, c);
        } else {
            self.other
                .get_or_insert_with(|| counter!(SCHEMA_IDS, "schema_id" => OTHER_SCHEMA))
                .increment(1);
        }
    }
}

/// What the visitors did since the last call (differences of the engines'
/// counts), and how many are held now.
pub fn visitors(in_state: u64, identifications: u64, forwarded: u64, expired: u64) {
    gauge!(VISITORS).set(in_state as f64);
    counter!(IDENTIFICATIONS).increment(identifications);
    counter!(FORWARDED).increment(forwarded);
    counter!(VISITORS_EXPIRED).increment(expired);
}

/// A bounded label for an event type: the model's and the reserved ones, else `other`.
pub fn type_label<'a>(model: &'a crate::model::Model, event_type: &'a str) -> &'a str {
    if RESERVED_TYPES.contains(&event_type) || !model.rules_for(event_type).is_empty() {
        event_type
    } else {
        OTHER_TYPE
    }
}

/// The per-event counters, by bounded type label and outcome, kept as
/// handles: counting an event (millions a second) then neither allocates a
/// label nor looks the series up in the registry.
#[derive(Default)]
pub struct EventCounters {
    /// The model's and the reserved event types (never user-chosen ones).
    by_type: std::collections::HashMap<String, [Counter; 6]>,
    other: Option<[Counter; 6]>,
    duplicates: Option<Counter>,
}

impl EventCounters {
    pub fn folded(&mut self, model: &crate::model::Model, event_type: &str, outcome: Outcome) {
        let slot = match outcome {
            Outcome::Applied => 0,
            Outcome::Late => 1,
            Outcome::Stale => 2,
            Outcome::Duplicate => 3,
            Outcome::Held => 4,
            Outcome::Erased => 5,
        };
        let counters = match self.by_type.get(event_type) {
            Some(c) => c,
            None => {
                let label = type_label(model, event_type);
                if label == OTHER_TYPE {
                    self.other
                        .get_or_insert_with(|| outcome_counters(OTHER_TYPE))
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

fn outcome_counters(label: &str) -> [Counter; 6] {
    OUTCOMES.map(|o| counter!(EVENTS, "type" => label.to_string(), "outcome" => o.as_str()))
}

pub fn fold_time(d: Duration) {
    histogram!(FOLD_SECONDS).record(d.as_secs_f64());
}

pub fn dead_letter(reason: &'static str) {
    counter!(DEAD_LETTERS, "reason" => reason).increment(1);
}

/// Counts a status record: a stage change by its stages, a breach by route.
pub fn change_emitted(c: &StatusChange) {
    if c.is_removal() {
        let reason = if c.kind == crate::change::ChangeKind::LeadErased {
            "erased"
        } else {
            "expired"
        };
        counter!(REMOVED, "reason" => reason).increment(1);
        return;
    }
    if c.is_breach() {
        let route = c.route.clone().unwrap_or_default();
        counter!(SLA_BREACHES, "route" => route).increment(1);
        return;
    }
    counter!(CHANGES, "from" => c.from.as_str(), "to" => c.to.as_str()).increment(1);
}

pub fn scores_written(n: u64) {
    if n > 0 {
        counter!(SCORE_RECORDS).increment(n);
    }
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
    gauge!(TIMERS, "partition" => p.clone()).set(0.0);
    gauge!(ROUTED_WAITING, "partition" => p).set(0.0);
}

/// Re-keyed records of a partition waiting for the routers' order.
pub fn routed_waiting(partition: i32, n: usize) {
    gauge!(ROUTED_WAITING, "partition" => partition.to_string()).set(n as f64);
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
    counter!(TRANSACTIONS, "result" => if committed { COMMITTED } else { ABORTED }).increment(1);
}

/// `kind` is one of [`REBALANCE_KINDS`] (those series exist from the start).
pub fn rebalance(kind: &'static str, partitions: usize) {
    debug_assert!(REBALANCE_KINDS.contains(&kind), "unregistered kind {kind}");
    counter!(REBALANCES, "kind" => kind).increment(1);
    tracing::info!(kind, partitions, "rebalance");
}

pub fn ready(ready: bool, assigned: usize) {
    gauge!(READY).set(if ready { 1.0 } else { 0.0 });
    gauge!(ASSIGNED).set(assigned as f64);
}

/// `kind` is one of [`BROKER_ERROR_KINDS`] (those series exist from the start).
pub fn broker_error(kind: &'static str) {
    debug_assert!(
        BROKER_ERROR_KINDS.contains(&kind),
        "unregistered kind {kind}"
    );
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every `leadscore_[a-z_]+` identifier in the text.
    fn identifiers(text: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut rest = text;
        while let Some(pos) = rest.find("leadscore_") {
            let name: String = rest[pos..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let boundary = !rest[..pos].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
            if boundary && name.len() > "leadscore_".len() {
                out.insert(name.clone());
            }
            rest = &rest[pos + name.len().max(1)..];
        }
        out
    }

    /// The series names of an exposition: histograms as `_bucket`, `_sum`, `_count`.
    fn series(rendered: &str) -> BTreeSet<String> {
        rendered
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_string)
            .collect()
    }

    /// A metric is present by its name or, a histogram, by its three series.
    fn present(name: &str, series: &BTreeSet<String>) -> bool {
        series.contains(name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .all(|s| series.contains(&format!("{name}{s}")))
    }

    fn read(rel: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// What `install()` exports before anything happens. A recorder of the
    /// test's own, registered as `install()` registers the global one: other
    /// tests in this binary count events on the global recorder, which would
    /// create series this test must see created by `register` alone.
    fn at_start() -> (metrics_exporter_prometheus::PrometheusRecorder, String) {
        let recorder = recorder();
        metrics::with_local_recorder(&recorder, register);
        let rendered = recorder.handle().render();
        (recorder, rendered)
    }

    #[test]
    fn every_metric_the_dashboard_and_alerts_read_exists_from_the_start() {
        let (recorder, rendered) = at_start();
        let exported = series(&rendered);
        let mut referenced = identifiers(&read("deploy/grafana/dashboards/leadscore.json"));
        referenced.extend(identifiers(&read("deploy/prometheus/alerts.yml")));
        assert!(
            referenced.contains(BROKER_ERRORS) && referenced.contains(TRANSACTIONS),
            "the files name the metrics this test is about: {referenced:?}"
        );
        let missing: Vec<&String> = referenced
            .iter()
            .filter(|n| {
                !PER_PARTITION.contains(&n.as_str())
                    && !PER_TOPIC.contains(&n.as_str())
                    && !PER_ROUTE.iter().any(|m| {
                        n.strip_prefix(m)
                            .is_some_and(|s| ["", "_bucket", "_sum", "_count"].contains(&s))
                    })
                    && !present(n, &exported)
            })
            .collect();
        assert!(
            missing.is_empty(),
            "not exported at start: {missing:?}\n{rendered}"
        );

        // The per-partition gauges are the only exception, and appear with
        // the first partition.
        for p in PER_PARTITION {
            assert!(
                !present(p, &exported),
                "{p} has a series before any partition"
            );
        }
        metrics::with_local_recorder(&recorder, || {
            partition_state(0, 5, 2, 1_700_000_000_000_000);
            consumer_lag("lead-events", 0, 3);
            routed_counters(&["lead-events".to_string()]);
            sla_routes(&crate::Model::default_model());
        });
        let after = series(&recorder.handle().render());
        for p in PER_PARTITION.into_iter().chain(PER_TOPIC).chain(PER_ROUTE) {
            assert!(
                present(p, &after),
                "{p} missing once a partition is assigned"
            );
        }
    }

    #[test]
    fn schema_ids_past_the_cap_count_as_other() {
        let recorder = recorder();
        metrics::with_local_recorder(&recorder, || {
            register();
            let mut ids = SchemaIds::default();
            for id in 0..(SCHEMA_ID_LABELS as u32 + 5) {
                ids.seen(id);
            }
            ids.seen(3);
        });
        let rendered = recorder.handle().render();
        let lines: Vec<&str> = rendered
            .lines()
            .filter(|l| l.starts_with(SCHEMA_IDS))
            .collect();
        assert_eq!(lines.len(), SCHEMA_ID_LABELS + 1, "{rendered}");
        assert!(lines.contains(&"leadscore_schema_ids_total{schema_id=\"other\"} 5"));
        assert!(lines.contains(&"leadscore_schema_ids_total{schema_id=\"3\"} 2"));
    }

    #[test]
    fn series_start_at_zero_with_every_known_label_value() {
        let (_recorder, rendered) = at_start();
        let line = |prefix: &str| {
            rendered
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{rendered}"))
                .to_string()
        };
        for kind in BROKER_ERROR_KINDS {
            assert_eq!(
                line(&format!("{BROKER_ERRORS}{{kind=\"{kind}\"}}")),
                format!("{BROKER_ERRORS}{{kind=\"{kind}\"}} 0")
            );
        }
        for result in [COMMITTED, ABORTED] {
            assert!(line(&format!("{TRANSACTIONS}{{result=\"{result}\"}}")).ends_with(" 0"));
        }
        for kind in REBALANCE_KINDS {
            assert!(line(&format!("{REBALANCES}{{kind=\"{kind}\"}}")).ends_with(" 0"));
        }
        for reason in crate::codec::DecodeError::CODES {
            assert!(line(&format!("{DEAD_LETTERS}{{reason=\"{reason}\"}}")).ends_with(" 0"));
        }
        assert!(line(&format!("{CHANGES}{{from=\"lead\",to=\"mql\"}}")).ends_with(" 0"));
        assert_eq!(line(&format!("{READY} ")), format!("{READY} 0"));
        assert_eq!(line(&format!("{ASSIGNED} ")), format!("{ASSIGNED} 0"));
        assert_eq!(
            line(&format!("{EMIT_LATENCY}_count")),
            format!("{EMIT_LATENCY}_count 0")
        );
        assert!(line(&format!("{RESTORE_SECONDS}_bucket{{le=\"+Inf\"}}")).ends_with(" 0"));
    }
}
