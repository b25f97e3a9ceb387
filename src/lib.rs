//! leadscore: an event-sourced streaming lead scorer.
//!
//! # A tour, in the order data flows
//!
//! **Decode.** [`codec`] turns a message (JSON or protobuf, `codec/json.rs`,
//! `codec/proto.rs`) into an [`event::Event`], or says why it is not one
//! ([`codec::DecodeError`], whose code becomes the dead-letter reason).
//!
//! **Fold.** [`engine`] folds events into per-lead state under a
//! [`model::Model`] and emits [`change::StatusChange`]s. It is pure — no
//! I/O, no wall clock — and takes time from the events:
//! `engine/lead.rs` holds a lead's state and computes decay, `stage.rs` the
//! stage machine, `mod.rs` the partition's leads and timers (the watermark),
//! `snapshot.rs` the binary state form, `explain.rs` the breakdown.
//! [`model`] reads and validates the model file (`model/default.toml` is
//! SPEC §1's default model); [`time`] is event-time arithmetic (RFC 3339,
//! durations, working days).
//!
//! **Emit.** [`codec`] encodes the changes (JSON lines or protobuf) for the
//! status topic or stdout.
//!
//! **The shell around them.** [`service`] is the Kafka service (`leadscore
//! run`, `replay`): the commit protocol as a state machine without I/O
//! (`service/protocol.rs`), the processor that performs it on rdkafka,
//! the changelog and checkpoint formats, restore, dead letters, client and
//! topic administration, HTTP on axum and every metric. [`config`] is its
//! configuration file. [`demo`] runs it all on an in-process mock broker.
//! [`cli`] is the command line (`score`, `explain`, `check`, `generate`,
//! `backtest`, `replay`, `run`, `demo`), [`backtest`] measures a model on
//! historical events, and [`gen`] generates realistic, seeded traffic for
//! tests, benchmarks and the demo.
//!
//! # Features
//!
//! `kafka` (on by default) builds the service, the demo and the command
//! line, with librdkafka. Without it (`default-features = false`) the crate
//! is the pure core — codec, engine, model, backtest, generator — with no
//! C dependency, for a library user who wants only the engine.

pub mod backtest;
pub mod change;
#[cfg(feature = "kafka")]
pub mod cli;
pub mod codec;
pub mod config;
#[cfg(feature = "kafka")]
pub mod demo;
pub mod engine;
pub mod event;
pub mod gen;
pub mod model;
pub mod score_record;
#[cfg(feature = "kafka")]
pub mod service;
pub mod time;

pub use change::{ChangeKind, Stage, StatusChange};
pub use engine::{Engine, Outcome};
pub use event::Event;
pub use model::Model;
pub use score_record::ScoreRecord;
