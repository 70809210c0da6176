//! `sentimqd`, the edge daemon: classifies text arriving over MQTT and publishes the verdicts.
//!
//! The daemon is a pipeline of owned stages joined by bounded queues (see `service` for the
//! picture and the shutdown order):
//!
//! - `broker`: the MQTT v5 session (rumqttc). One task owns the event loop and only polls and
//!   forwards; the outbox task publishes and subscribes. Inputs are QoS 1 with manual acks,
//!   acknowledged only after their reply's PUBACK (at-least-once).
//! - `batcher`: groups inputs that arrive together, up to `pipeline.max_batch` within
//!   `pipeline.max_wait_ms`, and counts redeliveries.
//! - `worker`: dedicated inference threads, each with its own session and buffers.
//! - [`contract`]: payload parsing and the JSON of results and error replies (the README's
//!   MQTT tables).
//! - [`config`], [`validate`](mod@validate): one configuration for `run` and `validate`, layered defaults <
//!   file < `SENTIMQ_*` environment < flags.
//! - `model`, `reload`, `self_test`: the served model in a slot the workers read between
//!   batches; SIGHUP or `<base>/command/reload` loads, checks and swaps in a new one.
//! - `health`, `stats`, `logging`: systemd readiness and watchdog, `<base>/info`,
//!   `<base>/stats`, log output.
//! - `demo` (feature `embedded-broker`): `sentimqd demo`, the daemon plus an in-process broker
//!   and a client that publishes sample reviews.
//!
//! The daemon never imports `export` or `train`; it builds with `--no-default-features`.
//!
//! ```no_run
//! use sentimq::daemon::{self, config::{self, Sources}};
//! let loaded = config::load(Sources { file: Some("sentimqd.toml".into()), ..Sources::default() })?;
//! daemon::run(loaded)?; // until SIGTERM
//! # Ok::<(), sentimq::daemon::Error>(())
//! ```

mod batcher;
mod broker;
pub mod config;
pub mod contract;
#[cfg(feature = "embedded-broker")]
pub mod demo;
mod error;
mod health;
mod logging;
mod message;
mod model;
mod reload;
mod self_test;
mod service;
mod stats;
mod tls;
mod topic;
pub mod validate;
mod worker;

pub use error::{Error, EX_CONFIG};
pub use service::run;
pub use validate::{validate, Report, ValidateOptions};
#[cfg(any(all(test, feature = "workstation"), feature = "fuzzing"))]
pub(crate) use {
    message::{Completion, Inbound, InputAck, ResponseRoute},
    topic::{matches as topic_matches, validate_name as validate_topic_name},
    worker::read_input,
};
