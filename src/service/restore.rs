//! Restore: a partition's state read back from its changelog partition into
//! a fresh engine, on partition assignment and after an aborted transaction:
//! its leads, its checkpoint, and the state that is not a lead's (visitors,
//! records held for an identification; keys that start with a NUL byte).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::changelog::{self, ChangelogError, Checkpoint, Record};
use super::kafka::{self, ReaderCtx, CALL_TIMEOUT};
use super::telemetry as tm;
use crate::config::Config;
use crate::engine::{is_aux_key, Engine, NO_TIME};
use crate::model::Model;

/// Why a partition could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The state was written under a model with another rule layout (or is
    /// damaged): the operator must rebuild it, the service cannot go on.
    #[error("cannot restore partition {partition} of changelog {topic} (offset {offset}) under model {model:?}: {source}")]
    Unreadable {
        topic: String,
        partition: i32,
        offset: i64,
        model: String,
        source: ChangelogError,
    },
    #[error("reading changelog {topic} partition {partition}: {source}")]
    Kafka {
        topic: String,
        partition: i32,
        source: KafkaError,
    },
}

/// A restored partition: its engine and its last checkpoint.
pub struct Restored {
    pub engine: Engine,
    pub checkpoint: Option<Checkpoint>,
}

/// A changelog read stalls this long without progress: give up.
const STALL: Duration = Duration::from_secs(120);

/// Reads changelog partition `p` from the beginning to its end (committed
/// records only) into a fresh engine under `model`.
pub fn restore_partition(
    cfg: &Config,
    model: &Arc<Model>,
    changelog: &str,
    p: i32,
) -> Result<Restored, RestoreError> {
    let started = Instant::now();
    let kafka_err = |source| RestoreError::Kafka {
        topic: changelog.to_string(),
        partition: p,
        source,
    };
    let consumer: BaseConsumer<ReaderCtx> = kafka::reader(cfg, kafka::Reading::Restore)
        .create_with_context(ReaderCtx)
        .map_err(kafka_err)?;
    let (low, high) = consumer
        .fetch_watermarks(changelog, p, CALL_TIMEOUT)
        .map_err(kafka_err)?;
    let mut engine = Engine::with_lateness(Arc::clone(model), cfg.kafka.allowed_lateness);
    engine.set_visitor_limits(cfg.input.visitor_limits());
    // An erasure unlinks the lead's visitors in every partition.
    engine.unlink_elsewhere(cfg.rekeys());
    if let Some(key) = &cfg.privacy.erasure_key {
        engine.set_marker_key(key);
    }
    // For the time-to-first-touch metric, drained at each changelog write.
    engine.record_touches(true);
    if cfg.kafka.score_topic.is_some() {
        engine.track_scores();
    }
    let mut checkpoint = None;
    let mut leads = 0u64;
    let mut aux: BTreeMap<Vec<u8>, (i64, Option<Vec<u8>>)> = BTreeMap::new();
    if high > low {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(changelog, p, Offset::Beginning)
            .map_err(kafka_err)?;
        consumer.assign(&tpl).map_err(kafka_err)?;
        let mut last_progress = Instant::now();
        loop {
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    let key = m.key().unwrap_or(&[]);
                    if is_aux_key(key) {
                        // Visitors and held records can be deleted (a
                        // tombstone): only each key's last record counts.
                        aux.insert(key.to_vec(), (m.offset(), m.payload().map(<[u8]>::to_vec)));
                    } else if m.payload().is_none() {
                        // A removed lead (erased, or expired by retention).
                        if let Ok(id) = std::str::from_utf8(key) {
                            engine.drop_restored(id);
                        }
                    } else if let Some(value) = m.payload() {
                        match changelog::decode(m.key().unwrap_or(&[]), value, model) {
                            Ok(Record::Checkpoint(cp)) => checkpoint = Some(cp),
                            Ok(Record::Lead(lead)) => {
                                engine.restore(lead);
                                leads += 1;
                            }
                            Err(source) => {
                                return Err(RestoreError::Unreadable {
                                    topic: changelog.to_string(),
                                    partition: p,
                                    offset: m.offset(),
                                    model: model.version.clone(),
                                    source,
                                })
                            }
                        }
                    }
                    if m.offset() + 1 >= high {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, partition = p, "changelog read error; retrying");
                    if last_progress.elapsed() > STALL {
                        return Err(kafka_err(e));
                    }
                }
                None if last_progress.elapsed() > STALL => {
                    return Err(kafka_err(KafkaError::MessageConsumption(
                        rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                    )))
                }
                None => {}
            }
        }
    }
    kafka::close(consumer);
    for (key, (offset, value)) in aux {
        if let Some(value) = value {
            engine
                .restore_aux(&key, &value)
                .map_err(|source| RestoreError::Unreadable {
                    topic: changelog.to_string(),
                    partition: p,
                    offset,
                    model: model.version.clone(),
                    source: source.into(),
                })?;
        }
    }
    if let Some(cp) = &checkpoint {
        if cp.watermark != NO_TIME {
            engine.set_watermark(cp.watermark);
        }
    }
    tm::restored(p, leads, started.elapsed());
    tm::partition_state(
        p,
        engine.lead_count(),
        engine.timers_pending(),
        engine.watermark(),
    );
    Ok(Restored { engine, checkpoint })
}

/// Restores a partition, retrying transient broker errors.
fn restore_retrying(
    cfg: &Config,
    model: &Arc<Model>,
    changelog: &str,
    p: i32,
) -> Result<Restored, RestoreError> {
    let mut delay = Duration::from_millis(100);
    let started = Instant::now();
    loop {
        match restore_partition(cfg, model, changelog, p) {
            Err(RestoreError::Kafka { source, .. })
                if !kafka::is_fatal(&source) && started.elapsed() < Duration::from_secs(60) =>
            {
                tracing::warn!(error = %source, partition = p, "restore failed; retrying");
                tm::broker_error(tm::BROKER_RETRIED);
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// Restores several partitions, on as many threads as there are cores
/// (decoding the state is the work; each partition has its own reader).
pub fn restore_all(
    cfg: &Config,
    model: &Arc<Model>,
    changelog: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, Restored)>, RestoreError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(partitions.len());
    if threads <= 1 {
        return partitions
            .iter()
            .map(|&p| Ok((p, restore_retrying(cfg, model, changelog, p)?)))
            .collect();
    }
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(partitions.len()));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&p) = partitions.get(i) else { break };
                let r = restore_retrying(cfg, model, changelog, p);
                results.lock().expect("results lock").push((p, r));
            });
        }
    });
    let mut out = Vec::with_capacity(partitions.len());
    for (p, r) in results.into_inner().expect("results lock") {
        out.push((p, r?));
    }
    out.sort_by_key(|(p, _)| *p);
    Ok(out)
}
