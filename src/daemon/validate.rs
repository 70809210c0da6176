//! `sentimqd validate`: the start-up loading plus the checks that touch the world.
//!
//! Loads the configuration exactly as `run` does, then loads and verifies the model, reads the
//! TLS files and (unless offline) connects to the broker with a throw-away clean session. Every
//! problem names its key; [`Report::is_ok`] decides the exit status (0 or 78).

use std::fmt;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event};

use super::broker;
use super::config::{self, Config, Sources};
use super::model;
use super::tls;

/// What `validate` should do beyond loading.
#[derive(Clone, Copy, Debug, Default)]
pub struct ValidateOptions {
    /// Skip the broker connection.
    pub is_offline: bool,
    /// Treat warnings as errors.
    pub deny_warnings: bool,
}

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// `run` would refuse to start (or could not work).
    Error,
    /// Works, but is probably a mistake.
    Warning,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The key path it is about (`mqtt.tls.ca_file`), or `config`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// Everything `validate` found.
#[derive(Debug, Default)]
pub struct Report {
    /// The findings, errors and warnings.
    pub problems: Vec<Problem>,
    /// The merged configuration, when it loaded.
    pub config: Option<Config>,
    /// The model identity, when it loaded.
    pub model: Option<String>,
}

impl Report {
    /// Whether `run` can start: no errors (and no warnings with `deny_warnings`).
    pub fn is_ok(&self, deny_warnings: bool) -> bool {
        self.problems
            .iter()
            .all(|p| p.severity == Severity::Warning && !deny_warnings)
    }

    fn error(&mut self, key: &str, error: &dyn std::error::Error) {
        self.problems.push(Problem {
            severity: Severity::Error,
            key: key.to_string(),
            message: chain(error),
        });
    }

    fn error_text(&mut self, key: &str, message: String) {
        self.problems.push(Problem {
            severity: Severity::Error,
            key: key.to_string(),
            message,
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            let level = match p.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            writeln!(f, "{level}: {}: {}", p.key, p.message)?;
        }
        if let Some(model) = &self.model {
            writeln!(f, "model: {model}")?;
        }
        let errors = self
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count();
        let warnings = self.problems.len() - errors;
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        if errors == 0 {
            write!(f, "config ok ({})", plural(warnings, "warning"))
        } else {
            write!(
                f,
                "config invalid: {}, {}",
                plural(errors, "error"),
                plural(warnings, "warning")
            )
        }
    }
}

/// An error and its causes on one line, `outer: inner: innermost`.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Runs every check and returns what it found.
pub fn validate(sources: Sources, options: ValidateOptions) -> Report {
    let mut report = Report::default();
    let loaded = match config::load(sources) {
        Ok(loaded) => loaded,
        Err(e) => {
            let key = e.key().unwrap_or("config");
            // `error: <key>: <message>`, not the key twice when the message starts with it.
            let text = chain(&e);
            let message = text
                .strip_prefix(key)
                .and_then(|rest| rest.strip_prefix(": "));
            report.error_text(key, message.map_or_else(|| text.clone(), str::to_string));
            return report;
        }
    };
    for warning in &loaded.warnings {
        let key = config::keys::KEYS
            .iter()
            .map(|k| k.path)
            .find(|k| warning.starts_with(k))
            .unwrap_or("config");
        report.problems.push(Problem {
            severity: Severity::Warning,
            key: key.into(),
            message: warning.clone(),
        });
    }
    let config = loaded.config;

    match model::load_model(&config) {
        Ok(model) => report.model = Some(model.identity),
        Err(
            e @ super::Error::Model {
                source: crate::classifier::Error::Window { .. },
                ..
            },
        ) => report.error("model.max_tokens", &e),
        Err(e) => report.error("model.path", &e),
    }

    let server = match config.server() {
        Ok(server) => server,
        Err(e) => {
            report.error("mqtt.server", &e);
            report.config = Some(config);
            return report;
        }
    };
    let mut tls_config = None;
    if server.is_tls {
        let files = &config.mqtt.tls;
        let mut files_ok = true;
        let mut check = |result: Result<(), tls::TlsError>| {
            if let Err(e) = result {
                report.error(e.key(), &e);
                files_ok = false;
            }
        };
        if let Some(path) = &files.ca_file {
            check(tls::read_certificates("mqtt.tls.ca_file", path).map(drop));
        }
        if let Some(path) = &files.cert_file {
            check(tls::read_certificates("mqtt.tls.cert_file", path).map(drop));
        }
        if let Some(path) = &files.key_file {
            check(tls::read_private_key(path).map(drop));
        }
        if files_ok {
            match tls::client_config(files) {
                Ok(c) => tls_config = Some(c),
                Err(e) => report.error(e.key(), &e),
            }
        }
    }

    let tls_usable = !server.is_tls || tls_config.is_some();
    if !options.is_offline && tls_usable {
        if let Err(message) = probe_broker(&config, &server, tls_config) {
            report.error_text("mqtt.server", message);
        }
    }
    report.config = Some(config);
    report
}

/// Connects with a clean session under `<client_id>-validate` (so the daemon's own session is
/// left alone), waits for CONNACK, disconnects.
fn probe_broker(
    config: &Config,
    server: &config::ServerAddress,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
) -> Result<(), String> {
    let client_id = format!("{}-validate", config.client_id());
    let options = broker::connect_options(config, server, &client_id, tls);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime for the broker check: {e}"))?;
    let timeout = Duration::from_secs(config.mqtt.connect_timeout_secs + 1);
    runtime.block_on(async {
        let (client, mut eventloop) = AsyncClient::new(options, 10);
        let connected = tokio::time::timeout(timeout, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(broker::describe_connection_error(&e, &server.to_string()).1)
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from {server} within {} s",
                timeout.as_secs()
            ))
        });
        if connected.is_ok() {
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
        }
        connected
    })
}

/// The merged configuration as TOML, secrets left out (the password is shown as `***`).
pub fn print_config(config: &Config) -> String {
    let mut text = toml::to_string(config).unwrap_or_else(|e| format!("# cannot print: {e}\n"));
    if config.mqtt.password.is_some() {
        text.push_str(
            "\n# mqtt password: *** (from mqtt.password_file or SENTIMQ_MQTT_PASSWORD)\n",
        );
    }
    text
}
