//! leadscore: an event-sourced streaming lead scorer.
//!
//! Events pass through the modules in this order:
//!
//! - [`codec`] decodes an event (JSON or protobuf) into an [`event::Event`],
//!   or says why it is not one (the dead-letter reason);
//! - [`engine`] folds events into per-lead state under a [`model::Model`] —
//!   fit, decaying engagement, stage, timers — and emits
//!   [`change::StatusChange`]s; it is pure: no I/O, no wall clock;
//! - [`codec`] encodes the changes for the status topic or stdout.
//!
//! [`time`] holds event-time arithmetic, [`gen`] the seedable generator of
//! realistic traffic used by tests, benchmarks and the demo, and [`cli`] the
//! offline commands (`score`, `explain`, `check`, `backtest`), [`config`] the
//! service's configuration. [`backtest`] measures a model on historical
//! events: would the leads that became customers have scored high?

pub mod backtest;
pub mod change;
pub mod cli;
pub mod codec;
pub mod config;
pub mod demo;
pub mod engine;
pub mod event;
pub mod gen;
pub mod model;
pub mod service;
pub mod time;

pub use change::{Stage, StatusChange};
pub use engine::{Engine, Outcome};
pub use event::Event;
pub use model::Model;
