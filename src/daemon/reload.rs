//! Model reload without a restart: SIGHUP (`systemctl reload sentimqd`) or a message on
//! `<base>/command/reload` (with `mqtt.reload_command`) loads `model.path` afresh.
//!
//! The new model is prepared on its own thread while the old one keeps serving: digests from
//! `model.json` checked, labels compared with the served model's (a change is refused unless
//! `model.allow_label_change`), plans warmed up as at start, and the self-test run. Only then is
//! it swapped into the [`ModelSlot`]; every inference thread moves to it before its next batch,
//! so each input is answered once, by one model. A refused model changes nothing. Either way the
//! outcome is logged and published on `<base>/reload`; a swap also republishes `<base>/info`.
//! Triggers that arrive during a reload are merged into one more reload after it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::config::Config;
use super::health::{self, Health};
use super::message::{Completion, Outbound};
use super::model::{self, ModelSlot, Served};
use super::self_test;
use crate::error_text::describe;

/// What asked for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP (`systemctl reload`).
    Signal,
    /// A message on `<base>/command/reload`.
    Command,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Command => "mqtt",
        }
    }
}

/// Asks for a reload; a request made while one is already waiting joins it.
pub fn request(requests: &mpsc::Sender<Trigger>, trigger: Trigger) {
    match requests.try_send(trigger) {
        Ok(()) => info!(trigger = trigger.name(), "model reload requested"),
        Err(mpsc::error::TrySendError::Full(_)) => {
            info!(
                trigger = trigger.name(),
                "model reload requested; one is already pending"
            )
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            warn!(
                trigger = trigger.name(),
                "model reload requested, but the reloader has stopped (shutting down)"
            )
        }
    }
}

/// Builds the retained `<base>/info` payload for the model served.
pub type InfoBuilder = Box<dyn Fn(&Served) -> Bytes + Send + Sync>;

/// The task that reloads; see the module docs.
pub struct Reloader {
    /// The configuration the daemon runs with (the model is reloaded, not the file).
    pub config: Config,
    /// What the inference threads serve.
    pub slot: Arc<ModelSlot>,
    /// Reload requests.
    pub requests: mpsc::Receiver<Trigger>,
    /// The retained `<base>/info` payload; the outbox republishes it when it changes.
    pub info: watch::Sender<Bytes>,
    /// Makes `<base>/info` for a model.
    pub info_for: InfoBuilder,
    /// The outbox's queue, for the outcome; weak so it closes when the workers finish.
    pub outbox: mpsc::WeakSender<Outbound>,
    /// `<base>/reload`.
    pub topic: String,
    /// Readiness, for systemd's reload notifications.
    pub health: Arc<Health>,
    /// Set when shutdown starts: no reload starts or swaps in after it.
    pub stopping: watch::Receiver<bool>,
}

/// The `<base>/reload` payload.
#[derive(Debug, Serialize)]
struct Outcome<'a> {
    ok: bool,
    trigger: &'static str,
    /// The model serving after the reload.
    model: &'a str,
    /// The model served before it.
    previous: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    self_test: Option<&'static str>,
    ms: u64,
    ts: u64,
}

impl Reloader {
    /// Runs until shutdown starts (or the request channel closes).
    pub async fn run(mut self) {
        loop {
            let trigger = tokio::select! {
                biased;
                _ = self.stopping.wait_for(|s| *s) => break,
                trigger = self.requests.recv() => match trigger {
                    Some(trigger) => trigger,
                    None => break,
                },
            };
            let is_ready = self.health.is_ready();
            if is_ready {
                health::notify_reloading();
            }
            self.reload(trigger).await;
            if is_ready && !*self.stopping.borrow() {
                health::notify_reloaded();
            }
        }
    }

    async fn reload(&mut self, trigger: Trigger) {
        let started = Instant::now();
        let (_, current) = self.slot.current();
        let (done, prepared) = oneshot::channel();
        let config = self.config.clone();
        let labels = current.classifier.manifest().labels.clone();
        let spawned = std::thread::Builder::new()
            .name("sentimq-reload".into())
            .spawn(move || {
                let _ = done.send(prepare(&config, &labels));
            });
        let mut result = match spawned {
            Ok(_) => prepared
                .await
                .unwrap_or_else(|_| Err("the reload thread panicked".into())),
            Err(e) => Err(format!("cannot start the reload thread: {e}")),
        };
        if *self.stopping.borrow() && result.is_ok() {
            result = Err("the daemon is shutting down".into());
        }
        let ms = started.elapsed().as_millis() as u64;
        let payload = match result {
            Ok((loaded, passed)) => {
                let served = Served::new(&self.config, loaded);
                self.info.send_replace((self.info_for)(&served));
                let outcome = Outcome {
                    ok: true,
                    trigger: trigger.name(),
                    model: &served.identity,
                    previous: &current.identity,
                    error: None,
                    self_test: Some(passed.describe()),
                    ms,
                    ts: super::contract::unix_ms(),
                };
                info!(
                    trigger = trigger.name(),
                    model = %served.identity,
                    previous = %current.identity,
                    graph = %served.graph,
                    ms,
                    self_test = passed.describe(),
                    "model reloaded; serving it from the next batch"
                );
                let payload = to_bytes(&outcome);
                drop(current);
                let old = self.slot.replace(served);
                tokio::spawn(release(old));
                model::warm_up_in_background(&self.config, &self.slot, &self.stopping);
                payload
            }
            Err(problem) => {
                warn!(
                    trigger = trigger.name(),
                    model = %current.identity,
                    "model reload refused, still serving the old model: {problem}"
                );
                // A refusal after loading freed a whole model.
                tokio::task::spawn_blocking(crate::allocator::return_freed_memory);
                to_bytes(&Outcome {
                    ok: false,
                    trigger: trigger.name(),
                    model: &current.identity,
                    previous: &current.identity,
                    error: Some(&problem),
                    self_test: None,
                    ms,
                    ts: super::contract::unix_ms(),
                })
            }
        };
        // Not awaited here: with the broker away the reply queue can stay full for long, and
        // systemd's READY=1 must not wait for it.
        if let Some(outbox) = self.outbox.upgrade() {
            let outcome = Outbound {
                topic: self.topic.clone(),
                payload,
                correlation: None,
                completion: Completion::Nothing,
                error: None,
            };
            tokio::spawn(async move {
                let _ = outbox.send(outcome).await;
            });
        }
    }
}

/// Waits (a while) for the inference threads to let go of the replaced model, then drops it
/// and hands its memory back to the kernel, off the runtime's thread. A thread busy with a
/// long batch may hold it longer; then it is freed when that thread moves on, without the trim.
async fn release(old: Arc<Served>) {
    let deadline = Instant::now() + RELEASE_WAIT;
    while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
        tokio::time::sleep(ModelSlot::POLL / 5).await;
    }
    if Arc::strong_count(&old) == 1 {
        tokio::task::spawn_blocking(move || {
            drop(old);
            crate::allocator::return_freed_memory();
        });
    }
}

/// How long [`release`] waits for the threads to move to the new model.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

fn to_bytes(outcome: &Outcome<'_>) -> Bytes {
    serde_json::to_vec(outcome)
        .expect("the outcome serializes to memory")
        .into()
}

/// Loads and checks the model at `model.path` (on the reload thread); the error is the reason
/// for refusing it, for the log and `<base>/reload`.
fn prepare(
    config: &Config,
    served_labels: &[String],
) -> Result<(model::LoadedModel, self_test::Passed), String> {
    // The labels first: refusing them needs only model.json.
    let manifest = crate::manifest::ModelManifest::read(&config.model.path).map_err(|e| {
        format!(
            "model.path {}: {}",
            config.model.path.display(),
            describe(&e)
        )
    })?;
    let labels = &manifest.labels;
    if labels != served_labels && !config.model.allow_label_change {
        return Err(format!(
            "its labels {labels:?} differ from the served model's {served_labels:?}, and consumers parse labels; set model.allow_label_change = true to accept it"
        ));
    }
    let loaded = model::load_and_warm_up(config).map_err(|e| describe(&e))?;
    let passed =
        self_test::run(&loaded.classifier).map_err(|e| format!("self-test failed: {e}"))?;
    Ok((loaded, passed))
}
