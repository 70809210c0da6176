//! The daemon's errors, and which of them are configuration errors (exit 78).

use std::path::PathBuf;

use super::config::ConfigError;
use super::tls::TlsError;
use crate::classifier;

/// Errors that stop `sentimqd`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The model directory cannot be loaded.
    #[error("model.path {path}: not a usable model directory (point model.path or --model at a directory built by `sentimq build`)")]
    Model {
        /// The model directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: classifier::Error,
    },
    /// A model file does not match the digest recorded in `model.json`.
    #[error("model.path {path}: {file} does not match its sha256 in model.json (corrupt or replaced); copy the model directory again")]
    Corrupt {
        /// The model directory.
        path: PathBuf,
        /// The file that differs.
        file: String,
    },
    /// A model file listed in `model.json` cannot be read for its digest.
    #[error("model.path {path}: cannot read {file}")]
    ModelFile {
        /// The model directory.
        path: PathBuf,
        /// The file.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// An inference thread could not start.
    #[error("cannot start an inference thread")]
    Thread(#[source] std::io::Error),
    /// An inference thread panicked or could not create its session.
    #[error(
        "an inference thread failed (see the log above); unacknowledged inputs will be redelivered"
    )]
    WorkerFailed,
    /// The broker refused an input subscription on the first connection.
    #[error("the broker refused the subscription to {filter:?} ({code:?}); check mqtt.inputs and the broker's access rules")]
    SubscriptionRefused {
        /// The filter.
        filter: String,
        /// The SUBACK reason code.
        code: rumqttc::v5::mqttbytes::v5::SubscribeReasonCode,
    },
    /// The MQTT client's request queue closed unexpectedly.
    #[error("the MQTT client stopped")]
    ClientStopped(#[source] Box<rumqttc::v5::ClientError>),
    /// The event loop or the outbox task ended while the daemon was running.
    #[error("the MQTT client stopped: {0}")]
    ClientClosed(String),
    /// A task of the daemon panicked or was cancelled.
    #[error("a daemon task failed")]
    TaskFailed(#[source] tokio::task::JoinError),
    /// A thread of the daemon panicked.
    #[error("a daemon task failed: {0}")]
    Task(String),
}

impl Error {
    /// Whether this is a configuration problem (exit 78, EX_CONFIG: restarting will not help).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Error::Config(_)
                | Error::Model { .. }
                | Error::Corrupt { .. }
                | Error::ModelFile { .. }
                | Error::Tls(_)
        )
    }
}

/// sysexits.h `EX_CONFIG`: the exit status for configuration errors.
pub const EX_CONFIG: u8 = 78;
