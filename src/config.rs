//! The service configuration: one TOML file plus environment overrides
//! (`LEADSCORE_<SECTION>_<KEY>`, e.g. `LEADSCORE_KAFKA_BROKERS`), validated
//! with messages that name the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::codec::{
    CloudEventsMapping, Format, InputFormat, Mapping, SegmentMapping, TopicInput,
    DEFAULT_MAX_EVENT_BYTES,
};
use crate::time::{parse_duration, Micros};

/// Delivery guarantee of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// Changes, changelog and input offsets in one Kafka transaction.
    #[default]
    ExactlyOnce,
    /// Idempotent producer; offsets committed after the writes are acknowledged.
    AtLeastOnce,
}

/// The `[kafka]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Consumer group of all instances.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Stable per instance: the transactional id and the static group
    /// membership (`group.instance.id`) derive from it.
    pub instance_id: String,
    pub input_topics: Vec<String>,
    pub status_topic: String,
    pub dead_letter_topic: String,
    /// Compacted topic holding the leads' state; created (compacted, with the
    /// input's partition count) when missing. Default: `<group_id>-changelog`.
    pub changelog_topic: Option<String>,
    /// Compacted topic of every lead's current score (key = lead id, in
    /// `output_format`); created (compacted, with the input's partition
    /// count) when missing. Unset: no score stream.
    pub score_topic: Option<String>,
    #[serde(default)]
    pub guarantee: Guarantee,
    /// How often the open transaction is committed.
    #[serde(default = "default_commit_interval")]
    pub commit_interval_ms: u64,
    /// Format of the input topics not listed in `[input.topics]`.
    #[serde(default)]
    pub input_format: InputFormat,
    #[serde(default)]
    pub output_format: Format,
    /// How far behind the largest event time the watermark trails (e.g.
    /// "5m"), as written in the file; parsed into `allowed_lateness` on load.
    #[serde(default = "default_lateness", rename = "allowed_lateness")]
    pub allowed_lateness_text: String,
    /// `allowed_lateness`, parsed.
    #[serde(skip)]
    pub allowed_lateness: Micros,
    /// A partition at the end of its log for this long is advanced by the
    /// wall clock; 0 disables wall-clock advance.
    #[serde(default = "default_idle_advance")]
    pub idle_advance_ms: u64,
    /// Larger messages go to the dead-letter topic.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Re-keyed input partitions are routed in record-timestamp order (as
    /// Kafka Streams does with `max.task.idle.ms`): a partition with nothing
    /// buffered holds the others back until it has a message or is known to
    /// be at the end of its log, which is checked every this long; one whose
    /// end cannot be confirmed (an input written in transactions) holds
    /// them back for 20 times this at most.
    #[serde(default = "default_max_task_idle")]
    pub max_task_idle_ms: u64,
    /// The envelope of the status records: `none` (the bare change), or
    /// `cloudevents` (binary mode: the change is the body, `ce_*` headers).
    #[serde(default)]
    pub output_envelope: OutputEnvelope,
    /// The CloudEvents `source` of the status records. Default:
    /// `leadscore/<group_id>`.
    pub cloudevents_source: Option<String>,
    /// How the producers of the input topics place a key: the lead-query
    /// API finds a lead's partition with it, and the repartition topic
    /// places leads with it, so that a topic keyed by lead and a re-keyed
    /// one agree.
    #[serde(default)]
    pub partitioner: Partitioner,
    /// Passed to librdkafka as they are (security, SASL/SSL, tuning).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// A producer's partitioner, for keyed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioner {
    /// The Java clients' default: murmur2 of the key (librdkafka:
    /// `partitioner = murmur2_random`).
    #[default]
    Murmur2Random,
    /// librdkafka's default: CRC-32 of the key.
    ConsistentRandom,
}

fn default_group() -> String {
    "leadscore".into()
}
fn default_commit_interval() -> u64 {
    100
}
fn default_lateness() -> String {
    "0s".into()
}
fn default_idle_advance() -> u64 {
    5_000
}
fn default_max_event_bytes() -> usize {
    DEFAULT_MAX_EVENT_BYTES
}
fn default_max_task_idle() -> u64 {
    100
}

/// The envelope of the records on the status topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputEnvelope {
    /// The change alone (SPEC §4).
    #[default]
    None,
    /// CloudEvents 1.0 binary mode: `ce_*` headers around the change.
    Cloudevents,
}

/// The `[http]` table.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the HTTP endpoints (`/metrics`, `/healthz`, `/readyz`, and
    /// the lead endpoints `/leads`, `/leads/{id}`, `/ui`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The bearer token the lead endpoints require (`Authorization: Bearer
    /// <token>`). Without one they are served only when `listen` is a
    /// loopback address. Best set from the environment
    /// (`LEADSCORE_HTTP_TOKEN`, e.g. from a Kubernetes Secret).
    pub token: Option<String>,
    /// Serve the lead endpoints (`/leads`, `/leads/{id}`, `/ui`).
    #[serde(default = "default_lead_endpoints")]
    pub lead_endpoints: bool,
    /// The base URL other instances reach this one's endpoints at (published
    /// in the instance registry). Default: `http://<listen>`, with the
    /// host name (`HOSTNAME`) in place of an unspecified address.
    pub advertised_url: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:9464".into()
}

fn default_lead_endpoints() -> bool {
    true
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen(),
            token: None,
            lead_endpoints: true,
            advertised_url: None,
        }
    }
}

// By hand: the token must never reach a log line through `{:?}`.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("lead_endpoints", &self.lead_endpoints)
            .finish()
    }
}

/// Tokens shorter than this are refused: a bearer token is the only thing
/// between the network and the leads' data.
pub const MIN_TOKEN_LEN: usize = 16;

impl HttpConfig {
    /// The token rules: a token, when set, is long enough; without one, the
    /// lead endpoints need a loopback `listen`. Messages name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.token {
            if token.trim() != token || token.chars().any(char::is_control) {
                return Err(invalid(
                    "http.token",
                    "has white space or control characters at an end or inside",
                ));
            }
            if token.len() < MIN_TOKEN_LEN {
                return Err(invalid(
                    "http.token",
                    format!(
                        "is shorter than {MIN_TOKEN_LEN} characters (make one with `openssl rand -hex 32`)"
                    ),
                ));
            }
        }
        if self.lead_endpoints && self.token.is_none() && !is_loopback(&self.listen) {
            return Err(invalid(
                "http.token",
                format!(
                    "the lead endpoints would serve lead data on {:?}, which is not a loopback \
                     address, without a token: set `token` in [http] (or LEADSCORE_HTTP_TOKEN), \
                     listen on 127.0.0.1, or set `lead_endpoints = false`",
                    self.listen
                ),
            ));
        }
        Ok(())
    }
}

/// Whether `listen` (`host:port`) names a loopback address: `localhost`, or
/// an IP address in 127.0.0.0/8 or `::1`. Other host names count as not
/// loopback (what they resolve to may change).
pub fn is_loopback(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    host.eq_ignore_ascii_case("localhost")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `leadscore=debug,rdkafka=warn`.
    pub level: Option<String>,
}

/// One input topic's settings (`[input.topics."NAME"]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// Default: `kafka.input_format`.
    pub format: Option<InputFormat>,
    /// Default: true for `json` and `protobuf`, false for `segment` and `cloudevents`.
    pub keyed_by_lead: Option<bool>,
    #[serde(default)]
    pub schema_registry_framing: bool,
}

/// The `[input]` table: per-topic formats, the format mappings, visitors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    #[serde(default)]
    pub topics: BTreeMap<String, TopicSettings>,
    #[serde(default)]
    pub segment: SegmentMapping,
    #[serde(default)]
    pub cloudevents: CloudEventsMapping,
    /// Events an anonymous visitor retains (the most recent).
    #[serde(default = "default_visitor_max_events")]
    pub visitor_max_events: usize,
    /// How long a visitor is kept after its last event (event time), as written.
    #[serde(default = "default_visitor_ttl", rename = "visitor_ttl")]
    pub visitor_ttl_text: String,
    /// `visitor_ttl`, parsed.
    #[serde(skip)]
    pub visitor_ttl: Micros,
}

fn default_visitor_max_events() -> usize {
    64
}
fn default_visitor_ttl() -> String {
    "90d".into()
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            topics: BTreeMap::new(),
            segment: SegmentMapping::default(),
            cloudevents: CloudEventsMapping::default(),
            visitor_max_events: default_visitor_max_events(),
            visitor_ttl_text: default_visitor_ttl(),
            visitor_ttl: 90 * crate::time::DAY,
        }
    }
}

impl InputConfig {
    /// Parses the durations; messages name the key.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        let s = &self.visitor_ttl_text;
        self.visitor_ttl =
            parse_duration(s).map_err(|e| invalid("input.visitor_ttl", format!("{s:?}: {e}")))?;
        if self.visitor_ttl <= 0 {
            return Err(invalid("input.visitor_ttl", "must be longer than 0"));
        }
        if self.visitor_max_events == 0 {
            return Err(invalid("input.visitor_max_events", "must be at least 1"));
        }
        Ok(())
    }

    /// The mappings, for [`crate::codec::decode_message`].
    pub fn mapping(&self) -> Mapping {
        Mapping {
            segment: self.segment.clone(),
            cloudevents: self.cloudevents.clone(),
        }
    }

    /// The visitor limits, for the engine.
    pub fn visitor_limits(&self) -> crate::engine::VisitorLimits {
        crate::engine::VisitorLimits {
            max_events: self.visitor_max_events,
            ttl: self.visitor_ttl,
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Model file; the default model when absent. Relative to the config file.
    pub model: Option<PathBuf>,
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub input: InputConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub privacy: PrivacyConfig,
}

/// `[privacy]`: how erasure markers are keyed.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// The secret that keys the hash of an erased lead's id in its marker
    /// (at least 16 characters; e.g. `LEADSCORE_PRIVACY_ERASURE_KEY` from
    /// a Secret). Without it the key is leadscore's own, fixed. Markers
    /// written under another key are not recognised: set it before the
    /// first erasure, and keep it.
    pub erasure_key: Option<String>,
}

impl std::fmt::Debug for PrivacyConfig {
    /// The key never shows in a debug print of the config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivacyConfig")
            .field("erasure_key", &self.erasure_key.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// A configuration that did not load: which key, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("config is not valid TOML or has an unknown or mistyped key: {0}")]
    Toml(String),
    #[error("config key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
    #[error("environment variable {var}: {problem}")]
    Env { var: String, problem: String },
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// Keys of each section that the environment may set.
const SECTIONS: [(&str, &[&str]); 4] = [
    (
        "kafka",
        &[
            "brokers",
            "group_id",
            "instance_id",
            "input_topics",
            "status_topic",
            "dead_letter_topic",
            "changelog_topic",
            "score_topic",
            "guarantee",
            "commit_interval_ms",
            "input_format",
            "output_format",
            "allowed_lateness",
            "idle_advance_ms",
            "max_event_bytes",
            "max_task_idle_ms",
            "output_envelope",
            "cloudevents_source",
            "partitioner",
        ],
    ),
    (
        "http",
        &["listen", "token", "lead_endpoints", "advertised_url"],
    ),
    ("log", &["format", "level"]),
    ("privacy", &["erasure_key"]),
];

fn env_value(key: &str, raw: &str) -> toml::Value {
    if key == "input_topics" {
        return toml::Value::Array(
            raw.split(',')
                .map(|s| toml::Value::String(s.trim().to_string()))
                .filter(|v| v.as_str() != Some(""))
                .collect(),
        );
    }
    if key == "lead_endpoints" {
        if let Ok(b) = raw.trim().parse::<bool>() {
            return toml::Value::Boolean(b);
        }
    }
    if key.ends_with("_ms") || key == "max_event_bytes" {
        if let Ok(n) = raw.trim().parse::<i64>() {
            return toml::Value::Integer(n);
        }
    }
    toml::Value::String(raw.to_string())
}

/// Applies `LEADSCORE_*` variables to the parsed TOML tree.
fn apply_env(
    root: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (var, raw) in vars {
        let Some(rest) = var.strip_prefix("LEADSCORE_") else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        if lower == "model" {
            root.insert("model".into(), toml::Value::String(raw));
            continue;
        }
        if let Some(prop) = lower.strip_prefix("kafka_properties_") {
            // librdkafka property names are dotted: SASL_PASSWORD → sasl.password.
            let kafka = root
                .entry("kafka")
                .or_insert_with(|| toml::Value::Table(Default::default()));
            let table = kafka
                .as_table_mut()
                .ok_or_else(|| invalid("kafka", "must be a table"))?;
            let props = table
                .entry("properties")
                .or_insert_with(|| toml::Value::Table(Default::default()));
            props
                .as_table_mut()
                .ok_or_else(|| invalid("kafka.properties", "must be a table"))?
                .insert(prop.replace('_', "."), toml::Value::String(raw));
            continue;
        }
        let mut matched = false;
        for (section, keys) in SECTIONS {
            let Some(key) = lower
                .strip_prefix(section)
                .and_then(|k| k.strip_prefix('_'))
            else {
                continue;
            };
            if !keys.contains(&key) {
                return Err(ConfigError::Env {
                    var,
                    problem: format!(
                        "`{section}` has no key `{key}`; known keys: {}",
                        keys.join(", ")
                    ),
                });
            }
            let t = root
                .entry(section)
                .or_insert_with(|| toml::Value::Table(Default::default()));
            t.as_table_mut()
                .ok_or_else(|| invalid(section, "must be a table"))?
                .insert(key.to_string(), env_value(key, &raw));
            matched = true;
            break;
        }
        if !matched {
            return Err(ConfigError::Env {
                var,
                problem: "not a leadscore setting: use LEADSCORE_MODEL, LEADSCORE_KAFKA_<KEY>, \
                          LEADSCORE_KAFKA_PROPERTIES_<PROPERTY>, LEADSCORE_HTTP_<KEY>, LEADSCORE_LOG_<KEY> \
                          or LEADSCORE_PRIVACY_<KEY>"
                    .into(),
            });
        }
    }
    Ok(())
}

impl Config {
    /// How `topic` is read: its `[input.topics]` entry, else `kafka.input_format`.
    pub fn topic_input(&self, topic: &str) -> TopicInput {
        let t = self.input.topics.get(topic);
        let format = t.and_then(|t| t.format).unwrap_or(self.kafka.input_format);
        TopicInput {
            format,
            keyed_by_lead: t
                .and_then(|t| t.keyed_by_lead)
                .unwrap_or_else(|| format.keyed_by_lead_by_default()),
            schema_registry_framing: t.is_some_and(|t| t.schema_registry_framing),
        }
    }

    /// Whether the service needs the repartition topic: an input topic is
    /// re-keyed, or is in the Segment format (an `identify` on a topic keyed
    /// by lead still has to reach the visitor's partition).
    pub fn rekeys(&self) -> bool {
        self.kafka.input_topics.iter().any(|t| {
            let input = self.topic_input(t);
            !input.keyed_by_lead || input.format == InputFormat::Segment
        })
    }

    /// The internal repartition topic: `<group_id>-repartition`.
    pub fn repartition_topic(&self) -> String {
        format!("{}-repartition", self.kafka.group_id)
    }

    /// The instance registry (`<group_id>-instances`): which instance owns
    /// which partition, and its URL.
    pub fn instances_topic(&self) -> String {
        format!("{}-instances", self.kafka.group_id)
    }

    /// This instance's base URL for the others (see
    /// [`HttpConfig::advertised_url`]); `bound` is the address the
    /// endpoints are served on (its port replaces a `:0` in `listen`).
    pub fn advertised_url(&self, bound: std::net::SocketAddr) -> String {
        if let Some(u) = &self.http.advertised_url {
            return u.trim_end_matches('/').to_string();
        }
        let host = if bound.ip().is_unspecified() {
            std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into())
        } else if bound.is_ipv6() {
            format!("[{}]", bound.ip())
        } else {
            bound.ip().to_string()
        };
        format!("http://{host}:{}", bound.port())
    }

    /// Reads the file, applies the process environment, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg = Config::from_toml_with_env(&text, std::env::vars())?;
        if let (Some(model), Some(dir)) = (&cfg.model, path.parent()) {
            if model.is_relative() {
                cfg.model = Some(dir.join(model));
            }
        }
        Ok(cfg)
    }

    /// Parses `text`, applies the given `LEADSCORE_*` variables, validates.
    pub fn from_toml_with_env(
        text: &str,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut root: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        apply_env(&mut root, vars)?;
        let cfg: Config = root
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Toml(e.to_string()))?;
        let mut cfg = cfg;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every key and parses the durations (once, here).
    fn validate(&mut self) -> Result<(), ConfigError> {
        self.input.validate()?;
        let s = &self.kafka.allowed_lateness_text;
        self.kafka.allowed_lateness = parse_duration(s)
            .map_err(|e| invalid("kafka.allowed_lateness", format!("{s:?}: {e}")))?;
        let k = &self.kafka;
        let nonempty = |key: &str, v: &str| {
            if v.trim().is_empty() {
                Err(invalid(key, "must not be empty"))
            } else {
                Ok(())
            }
        };
        nonempty("kafka.brokers", &k.brokers)?;
        nonempty("kafka.group_id", &k.group_id)?;
        nonempty("kafka.instance_id", &k.instance_id)?;
        nonempty("kafka.status_topic", &k.status_topic)?;
        nonempty("kafka.dead_letter_topic", &k.dead_letter_topic)?;
        if let Some(key) = &self.privacy.erasure_key {
            if key.chars().count() < 16 {
                return Err(invalid(
                    "privacy.erasure_key",
                    "must be at least 16 characters (a secret, e.g. from `openssl rand -hex 16`)",
                ));
            }
        }
        if let Some(u) = &self.http.advertised_url {
            // Instances ask each other over plain HTTP (inside the cluster).
            let rest = u.strip_prefix("http://");
            if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
                return Err(invalid(
                    "http.advertised_url",
                    format!("{u:?} is not an http:// URL"),
                ));
            }
        }
        if k.input_topics.is_empty() {
            return Err(invalid("kafka.input_topics", "needs at least one topic"));
        }
        for (i, t) in k.input_topics.iter().enumerate() {
            nonempty(&format!("kafka.input_topics[{i}]"), t)?;
        }
        let outputs = [
            ("kafka.status_topic", &k.status_topic),
            ("kafka.dead_letter_topic", &k.dead_letter_topic),
            ("kafka.changelog_topic", &self.changelog_topic()),
        ];
        for (key, t) in outputs {
            if k.input_topics.contains(t) {
                return Err(invalid(key, format!("{t:?} is also an input topic")));
            }
        }
        if let Some(t) = &k.score_topic {
            nonempty("kafka.score_topic", t)?;
            if k.input_topics.contains(t) {
                return Err(invalid(
                    "kafka.score_topic",
                    format!("{t:?} is also an input topic"),
                ));
            }
            if let Some((other, _)) = outputs.iter().find(|(_, o)| *o == t) {
                return Err(invalid(
                    "kafka.score_topic",
                    format!("{t:?} is also {other}: the score stream needs a compacted topic of its own"),
                ));
            }
        }
        let repartition = self.repartition_topic();
        if self.rekeys() && k.input_topics.contains(&repartition) {
            return Err(invalid(
                "kafka.group_id",
                format!("the repartition topic {repartition:?} is also an input topic"),
            ));
        }
        if let Some(source) = &k.cloudevents_source {
            nonempty("kafka.cloudevents_source", source)?;
        }
        if k.commit_interval_ms == 0 {
            return Err(invalid("kafka.commit_interval_ms", "must be at least 1"));
        }
        if k.max_event_bytes == 0 {
            return Err(invalid("kafka.max_event_bytes", "must be at least 1"));
        }
        for key in [
            "group.id",
            "group.instance.id",
            "transactional.id",
            "bootstrap.servers",
        ] {
            if k.properties.contains_key(key) {
                return Err(invalid(
                    &format!("kafka.properties.{key}"),
                    "is set by leadscore itself (from brokers, group_id and instance_id)",
                ));
            }
        }
        self.http.validate()?;
        if let Some(level) = &self.log.level {
            nonempty("log.level", level)?;
        }
        Ok(())
    }

    pub fn changelog_topic(&self) -> String {
        self.kafka
            .changelog_topic
            .clone()
            .unwrap_or_else(|| format!("{}-changelog", self.kafka.group_id))
    }

    /// The CloudEvents `source` of the status records.
    pub fn cloudevents_source(&self) -> String {
        self.kafka
            .cloudevents_source
            .clone()
            .unwrap_or_else(|| format!("leadscore/{}", self.kafka.group_id))
    }

    /// The producer's `transactional.id`: stable per instance, so a restarted
    /// instance fences its predecessor.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.kafka.group_id, self.kafka.instance_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"
instance_id = "i-0"
input_topics = ["events"]
status_topic = "status"
dead_letter_topic = "dlq"
"#;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_with_env(
            text,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults() {
        let c = load(BASE, &[]).unwrap();
        assert_eq!(c.kafka.group_id, "leadscore");
        assert_eq!(c.kafka.guarantee, Guarantee::ExactlyOnce);
        assert_eq!(c.kafka.commit_interval_ms, 100);
        assert_eq!(c.changelog_topic(), "leadscore-changelog");
        assert_eq!(c.transactional_id(), "leadscore-i-0");
        assert_eq!(c.http.listen, "127.0.0.1:9464");
        assert_eq!(c.kafka.allowed_lateness, 0);
    }

    #[test]
    fn envelope_and_task_idle_defaults_and_overrides() {
        let c = load(BASE, &[]).unwrap();
        assert_eq!(c.kafka.max_task_idle_ms, 100);
        assert_eq!(c.kafka.output_envelope, OutputEnvelope::None);
        assert_eq!(c.cloudevents_source(), "leadscore/leadscore");
        let c = load(
            BASE,
            &[
                ("LEADSCORE_KAFKA_OUTPUT_ENVELOPE", "cloudevents"),
                ("LEADSCORE_KAFKA_CLOUDEVENTS_SOURCE", "crm/sync"),
                ("LEADSCORE_KAFKA_MAX_TASK_IDLE_MS", "250"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.output_envelope, OutputEnvelope::Cloudevents);
        assert_eq!(c.cloudevents_source(), "crm/sync");
        assert_eq!(c.kafka.max_task_idle_ms, 250);
        let e = load(&format!("{BASE}output_envelope = \"soap\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("soap"), "{e}");
    }

    #[test]
    fn a_re_keyed_or_segment_topic_needs_the_repartition_topic() {
        let c = load(BASE, &[]).unwrap();
        assert!(!c.rekeys(), "a JSON topic is keyed by lead by default");
        let unkeyed = format!("{BASE}\n[input.topics.events]\nkeyed_by_lead = false\n");
        let c = load(&unkeyed, &[]).unwrap();
        assert!(c.rekeys());
        assert_eq!(c.repartition_topic(), "leadscore-repartition");
        // An identify on a Segment topic keyed by lead goes to the visitor.
        let segment =
            format!("{BASE}\n[input.topics.events]\nformat = \"segment\"\nkeyed_by_lead = true\n");
        assert!(load(&segment, &[]).unwrap().rekeys());
        let clash = unkeyed.replace(
            "input_topics = [\"events\"]",
            "input_topics = [\"events\", \"leadscore-repartition\"]",
        );
        let e = load(&clash, &[]).unwrap_err().to_string();
        assert!(e.contains("repartition"), "{e}");
    }

    #[test]
    fn environment_overrides() {
        let c = load(
            BASE,
            &[
                ("LEADSCORE_KAFKA_BROKERS", "b1:9092,b2:9092"),
                ("LEADSCORE_KAFKA_INPUT_TOPICS", "a, b"),
                ("LEADSCORE_KAFKA_COMMIT_INTERVAL_MS", "250"),
                ("LEADSCORE_KAFKA_GUARANTEE", "at_least_once"),
                ("LEADSCORE_KAFKA_PROPERTIES_SASL_PASSWORD", "s3cret"),
                ("LEADSCORE_HTTP_LISTEN", "0.0.0.0:9000"),
                ("LEADSCORE_HTTP_TOKEN", "0123456789abcdef0123"),
                ("LEADSCORE_MODEL", "m.toml"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, "b1:9092,b2:9092");
        assert_eq!(c.kafka.input_topics, ["a", "b"]);
        assert_eq!(c.kafka.commit_interval_ms, 250);
        assert_eq!(c.kafka.guarantee, Guarantee::AtLeastOnce);
        assert_eq!(c.kafka.properties["sasl.password"], "s3cret");
        assert_eq!(c.http.listen, "0.0.0.0:9000");
        assert_eq!(c.model.as_deref(), Some(Path::new("m.toml")));
    }

    #[test]
    fn errors_name_the_key() {
        let e = load(&format!("{BASE}commit_interval_ms = 0\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("kafka.commit_interval_ms"), "{e}");
        let e = load(&format!("{BASE}brokrs = \"x\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("brokrs"), "{e}");
        let e = load(&format!("{BASE}allowed_lateness = \"5\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("kafka.allowed_lateness"), "{e}");
        let e = load(&format!("{BASE}guarantee = \"maybe_once\"\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("maybe_once"), "{e}");
        let e = load(BASE, &[("LEADSCORE_KAFKA_BROKRS", "x")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("LEADSCORE_KAFKA_BROKRS") && e.contains("brokrs"),
            "{e}"
        );
        let e = load(
            &BASE.replace("status_topic = \"status\"", "status_topic = \"events\""),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("kafka.status_topic") && e.contains("input topic"),
            "{e}"
        );
        let e = load(
            &format!("{BASE}[kafka.properties]\n\"transactional.id\" = \"x\"\n"),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("kafka.properties.transactional.id"), "{e}");
        let e = load("[kafka]\nbrokers = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("instance_id"), "{e}");
    }

    #[test]
    fn lead_endpoints_need_a_token_off_loopback() {
        let token = "0123456789abcdef0123";
        let c = load(BASE, &[]).unwrap();
        assert!(c.http.lead_endpoints && c.http.token.is_none());
        for listen in [
            "127.0.0.1:0",
            "[::1]:9464",
            "localhost:9464",
            "127.3.2.1:80",
        ] {
            let c = load(BASE, &[("LEADSCORE_HTTP_LISTEN", listen)]);
            assert!(c.is_ok(), "{listen}: {:?}", c.err());
        }
        for listen in [
            "0.0.0.0:9464",
            "[::]:9464",
            "10.1.2.3:9464",
            "leadscore-0:9464",
        ] {
            let e = load(BASE, &[("LEADSCORE_HTTP_LISTEN", listen)])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("http.token") && e.contains("`token`") && e.contains(listen),
                "{e}"
            );
            let c = load(
                BASE,
                &[
                    ("LEADSCORE_HTTP_LISTEN", listen),
                    ("LEADSCORE_HTTP_TOKEN", token),
                ],
            )
            .unwrap();
            assert_eq!(c.http.token.as_deref(), Some(token));
            let c = load(
                BASE,
                &[
                    ("LEADSCORE_HTTP_LISTEN", listen),
                    ("LEADSCORE_HTTP_LEAD_ENDPOINTS", "false"),
                ],
            )
            .unwrap();
            assert!(!c.http.lead_endpoints);
        }
        let in_file = format!("{BASE}[http]\nlisten = \"0.0.0.0:1\"\ntoken = \"{token}\"\n");
        assert_eq!(
            load(&in_file, &[]).unwrap().http.token.as_deref(),
            Some(token)
        );
        for bad in ["abc12", " 0123456789abcdef0123", "0123456789\nabcdef0123"] {
            let e = load(BASE, &[("LEADSCORE_HTTP_TOKEN", bad)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("http.token"), "{e}");
            assert!(
                !e.contains(bad.trim()),
                "the message repeats the token: {e}"
            );
        }
        // The token never shows in a debug print of the config.
        let c = load(BASE, &[("LEADSCORE_HTTP_TOKEN", token)]).unwrap();
        assert!(!format!("{c:?}").contains(token));
    }

    #[test]
    fn the_erasure_key_comes_from_the_file_or_the_environment_and_never_shows() {
        assert!(load(BASE, &[]).unwrap().privacy.erasure_key.is_none());
        let key = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
        let c = load(BASE, &[("LEADSCORE_PRIVACY_ERASURE_KEY", key)]).unwrap();
        assert_eq!(c.privacy.erasure_key.as_deref(), Some(key));
        assert!(!format!("{c:?}").contains(key));
        let c = load(
            &format!("{BASE}\n[privacy]\nerasure_key = \"{key}\"\n"),
            &[],
        )
        .unwrap();
        assert_eq!(c.privacy.erasure_key.as_deref(), Some(key));
        let e = load(BASE, &[("LEADSCORE_PRIVACY_ERASURE_KEY", "short")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("privacy.erasure_key") && !e.contains("short"),
            "{e}"
        );
    }

    #[test]
    fn score_topic_is_optional_and_its_own_topic() {
        assert_eq!(load(BASE, &[]).unwrap().kafka.score_topic, None);
        let c = load(BASE, &[("LEADSCORE_KAFKA_SCORE_TOPIC", "lead-scores")]).unwrap();
        assert_eq!(c.kafka.score_topic.as_deref(), Some("lead-scores"));
        for (topic, problem) in [
            ("status", "status_topic"),
            ("events", "input topic"),
            (" ", "empty"),
        ] {
            let e = load(BASE, &[("LEADSCORE_KAFKA_SCORE_TOPIC", topic)])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("kafka.score_topic") && e.contains(problem),
                "{e}"
            );
        }
    }

    /// The project's own scripts (the local broker, the benchmarks) read
    /// variables of their own; none may be one that `leadscore run` refuses,
    /// or the service would not start in a shell where the scripts' README
    /// suggests exporting them.
    #[test]
    fn the_project_scripts_variables_stay_out_of_the_service_namespace() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut scripts = Vec::new();
        let mut dirs: Vec<_> = ["deploy", "benches", ".ci"]
            .iter()
            .map(|d| root.join(d))
            .collect();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let ext = path.extension().and_then(|e| e.to_str());
                if path.is_dir() {
                    dirs.push(path);
                } else if matches!(ext, Some("sh" | "md" | "rs" | "toml" | "yaml") | None) {
                    scripts.push(path);
                }
            }
        }
        assert!(scripts.len() >= 3, "found the scripts: {scripts:?}");
        for path in scripts {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for (i, _) in text.match_indices("LEADSCORE_") {
                let var: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if var.ends_with('_') {
                    // The prefix itself, in prose ("LEADSCORE_<SECTION>_<KEY>").
                    continue;
                }
                let refused = match load(BASE, &[(var.as_str(), "1")]) {
                    Err(ConfigError::Env { problem, .. }) => Some(problem),
                    _ => None,
                };
                assert!(
                    refused.is_none(),
                    "{} uses {var}, which `leadscore run` refuses: {refused:?}",
                    path.display()
                );
            }
        }
    }
}
