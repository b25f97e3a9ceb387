//! `leadscore erase`: an operator's erasure request, produced to the input
//! topic as a `lead_erased` event of the lead (keyed by it, so it reaches
//! the partition that holds the lead's state).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::codec::{encode_event_json, encode_event_proto, InputFormat};
use crate::config::{Config, Partitioner};
use crate::event::Event;
use crate::service::kafka::ProducerCtx;
use crate::time::{format_rfc3339, Micros};

/// `erase --help`: what it does.
pub(super) const ABOUT: &str = "\
Erase a lead (AVG/GDPR): produce a lead_erased event to the input topic.

When the service folds it, the lead's state is deleted: the changelog gets
a tombstone, the status topic a lead_erased record (for CRM connectors to
delete it too) and the score topic, if any, a tombstone. For the model's
retention.erasure_window (default 30 days of event time) after the
erasure's time, events of the lead are dropped; a later one starts a new
lead. The input topic's own records of the lead are not touched: they age
out by the topic's retention.";

pub(super) const EXAMPLE: &str = "\
Example:
  leadscore erase --config config.toml --lead L-1042 --reason \"request 2026-117\"";

#[derive(Debug, clap::Args)]
pub(super) struct EraseArgs {
    /// The service's config (brokers, input topics).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The lead to erase.
    #[arg(long, value_name = "ID")]
    lead: String,
    /// Why (kept in the lead_erased record; no personal data, please).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// The input topic to write to (default: the first one in the native
    /// JSON or protobuf format).
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// The erasure's event time (RFC 3339; default: now).
    #[arg(long, value_name = "TIME", value_parser = super::parse_time)]
    at: Option<Micros>,
}

pub(super) fn main(a: EraseArgs) -> Result<ExitCode> {
    let cfg = Config::load(&a.config)
        .with_context(|| format!("{} is not a valid config", a.config.display()))?;
    if a.lead.is_empty() {
        bail!("--lead: a lead id is not empty");
    }
    let topic = match &a.topic {
        Some(t) => t.clone(),
        None => cfg
            .kafka
            .input_topics
            .iter()
            .find(|t| {
                matches!(
                    cfg.topic_input(t).format,
                    InputFormat::Json | InputFormat::Protobuf
                )
            })
            .cloned()
            .with_context(|| {
                "no input topic is in the json or protobuf format: give --topic with one the service reads in a native format"
            })?,
    };
    if !cfg.kafka.input_topics.contains(&topic) {
        bail!("--topic {topic:?} is not one of the config's kafka.input_topics");
    }
    let input = cfg.topic_input(&topic);
    if input.schema_registry_framing {
        bail!("topic {topic:?} expects Schema Registry framing: produce the lead_erased event with your serializer");
    }
    let at = a.at.unwrap_or_else(now);
    let mut event = Event::new(format!("erase-{at}"), a.lead.as_str(), "lead_erased", at);
    event.reason = a.reason.as_deref().map(Into::into);
    let mut payload = Vec::new();
    match input.format {
        InputFormat::Json => encode_event_json(&event, &mut payload),
        InputFormat::Protobuf => encode_event_proto(&event, &mut payload),
        other => bail!(
            "topic {topic:?} is in the {other:?} format: give --topic with an input topic in the json or protobuf format"
        ),
    }
    let mut client = crate::service::kafka::producer(&cfg, None, 0);
    // The same partition as the service's own keyed records.
    client.set(
        "partitioner",
        match cfg.kafka.partitioner {
            Partitioner::Murmur2Random => "murmur2_random",
            Partitioner::ConsistentRandom => "consistent_random",
        },
    );
    let producer: BaseProducer<ProducerCtx> = client
        .create_with_context(ProducerCtx::default())
        .context("cannot create a Kafka producer")?;
    producer
        .send(
            BaseRecord::to(&topic)
                .key(a.lead.as_bytes())
                .payload(&payload),
        )
        .map_err(|(e, _)| e)
        .with_context(|| format!("cannot produce to {topic}"))?;
    producer
        .flush(Duration::from_secs(30))
        .with_context(|| format!("the lead_erased event did not reach {topic}"))?;
    if producer
        .context()
        .failures
        .load(std::sync::atomic::Ordering::Relaxed)
        > 0
    {
        bail!("the lead_erased event was not delivered to {topic}");
    }
    eprintln!(
        "leadscore erase: lead_erased for the lead produced to {topic} at {}",
        format_rfc3339(at)
    );
    Ok(ExitCode::SUCCESS)
}

fn now() -> Micros {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Micros::try_from(d.as_micros()).unwrap_or(Micros::MAX)
}
