//! The model the daemon serves: loading `model.path` with its digests checked, warm-up, and the
//! slot the inference threads read it from, which a reload swaps between batches.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tracing::{info, warn};

use super::config::{Config, ConfigError};
use super::contract::Replier;
use super::Error;
use crate::classifier::{Classifier, LoadOptions, UNCERTAIN_LABEL};
use crate::manifest::{self, ModelManifest};

/// A loaded, verified model and how to name it.
pub struct LoadedModel {
    /// The classifier.
    pub classifier: Classifier,
    /// The graph file served.
    pub graph: String,
    /// `<name>@<first 12 hex of the graph's sha256>`.
    pub identity: String,
}

/// Loads `model.path`. Every file `model.json` lists that is present in the directory must match
/// its sha256 (the graph served and `tokenizer.json` must be present, or loading fails).
pub fn load_model(config: &Config) -> Result<LoadedModel, Error> {
    load(config, 0)
}

/// [`load_model`], then the plans of the length buckets up to `model.warm_up_tokens` (if not 0),
/// so the first texts wait for no plan optimization. If that is every bucket of the window, the
/// parsed model is released (every plan the daemon needs exists).
pub fn load_and_warm_up(config: &Config) -> Result<LoadedModel, Error> {
    let tokens = usize::try_from(config.model.warm_up_tokens).unwrap_or(usize::MAX);
    load(config, tokens)
}

fn load(config: &Config, warm_up_tokens: usize) -> Result<LoadedModel, Error> {
    let dir = &config.model.path;
    let model_error = |source: crate::classifier::Error| Error::Model {
        path: dir.clone(),
        source,
    };
    let manifest = ModelManifest::read(dir).map_err(|e| model_error(e.into()))?;
    let graph = config
        .model
        .graph
        .clone()
        .unwrap_or_else(|| manifest.default_graph.clone());
    check_uncertain_label(config, &manifest)?;
    let identity = check_digests(dir, &manifest, &graph)?;
    let options = LoadOptions {
        engine: crate::engine::EngineOptions {
            plan_cache_size: usize::try_from(config.model.plans).unwrap_or(usize::MAX),
            ..Default::default()
        },
        max_tokens: (config.model.max_tokens > 0)
            .then(|| usize::try_from(config.model.max_tokens).unwrap_or(usize::MAX)),
        warm_up_tokens,
    };
    let started = std::time::Instant::now();
    let (classifier, warmed) =
        Classifier::load_warmed(dir, Some(&graph), options).map_err(model_error)?;
    if warm_up_tokens > 0 {
        info!(
            plans = warmed.plans,
            up_to_tokens = warm_up_tokens.min(classifier.max_tokens()),
            ms = started.elapsed().as_millis() as u64,
            parsed_model_released = warmed.parsed_model_released,
            "model loaded and plans built before going online"
        );
    }
    Ok(LoadedModel {
        classifier,
        graph,
        identity: identity.unwrap_or_else(|| format!("{}@unknown", manifest.name)),
    })
}

/// Checks the digest of every listed file present in `dir` (the graph and the tokenizer always:
/// a missing one is an error here rather than a vaguer one from the loader); returns the
/// identity when the graph has a digest.
fn check_digests(
    dir: &Path,
    manifest: &ModelManifest,
    graph: &str,
) -> Result<Option<String>, Error> {
    let mut identity = None;
    for (file, expected) in &manifest.files {
        let path = dir.join(file);
        let is_required = file == graph || file == "tokenizer.json";
        // Only plain names inside the directory; `model.json` is outside input.
        let is_plain = Path::new(file).file_name().and_then(|n| n.to_str()) == Some(file.as_str());
        if !is_plain || (!is_required && !path.exists()) {
            continue;
        }
        let found = manifest::digest_file(&path).map_err(|source| Error::ModelFile {
            path: dir.to_path_buf(),
            file: file.clone(),
            source,
        })?;
        if found.sha256 != expected.sha256 {
            return Err(Error::Corrupt {
                path: dir.to_path_buf(),
                file: file.clone(),
            });
        }
        if file == graph {
            identity = Some(format!("{}@{}", manifest.name, &found.sha256[..12]));
        }
    }
    Ok(identity)
}

/// With `model.warm_up_background`, builds on a low-priority thread of its own the plans of the
/// length buckets past `model.warm_up_tokens`, up to the window (at most `model.plans`),
/// shortest first, so long texts find their plan built too without delaying `online`. A text
/// whose plan this thread is building waits for it rather than building it twice. It stops
/// when a reload replaces the model or shutdown starts. Done, it releases the parsed model (every
/// plan the daemon needs exists) and hands the memory freed back to the kernel.
pub fn warm_up_in_background(
    config: &Config,
    slot: &Arc<ModelSlot>,
    stopping: &watch::Receiver<bool>,
) {
    let (generation, served) = slot.current();
    let window = served.classifier.max_tokens();
    let before_online = usize::try_from(config.model.warm_up_tokens).unwrap_or(usize::MAX);
    if !config.model.warm_up_background || before_online >= window {
        return;
    }
    let slot = Arc::clone(slot);
    let stopping = stopping.clone();
    let path = config.model.path.clone();
    let spawned = std::thread::Builder::new()
        .name("sentimq-plans".into())
        .spawn(move || {
            lower_this_threads_priority();
            let started = std::time::Instant::now();
            let current = || slot.generation() == generation && !*stopping.borrow();
            match served.classifier.warm_up_while(window, current) {
                Ok(plans) if current() => {
                    let released = served.classifier.release_parsed_model();
                    info!(
                        plans,
                        up_to_tokens = window,
                        ms = started.elapsed().as_millis() as u64,
                        parsed_model_released = released,
                        "plans built in the background"
                    )
                }
                Ok(_) => {}
                Err(e) => warn!(
                    path = %path.display(),
                    "building plans in the background failed; they are built on first use: {}",
                    crate::error_text::describe(&e)
                ),
            }
            drop(served);
            crate::allocator::return_freed_memory();
        });
    if let Err(e) = spawned {
        warn!("cannot start the thread that builds plans in the background; they are built on first use: {e}");
    }
}

/// Runs the calling thread at the lowest CPU priority, so work on it never delays answers.
fn lower_this_threads_priority() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: setpriority takes no pointers; on Linux, PRIO_PROCESS with id 0 names the
        // calling thread (a thread's nice value is its own).
        let status = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
        if status != 0 {
            // A system-call filter that denies it (systemd's @resources): the plans are
            // still built, at the daemon's own priority.
            warn!(
                "the background warm-up thread cannot lower its priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// `model.uncertain_below` publishes [`UNCERTAIN_LABEL`] as a label, so it is refused for a
/// model that has a label of that name.
fn check_uncertain_label(config: &Config, manifest: &ModelManifest) -> Result<(), Error> {
    let clash =
        config.model.uncertain_below > 0.0 && manifest.labels.iter().any(|l| l == UNCERTAIN_LABEL);
    if !clash {
        return Ok(());
    }
    let message = format!(
        "is set, but the model has a label named {UNCERTAIN_LABEL:?} itself, which results could not tell apart"
    );
    Err(ConfigError::Invalid {
        key: "model.uncertain_below",
        message,
    }
    .into())
}

/// The model being served and the reply builder that names it.
pub struct Served {
    /// The classifier.
    pub classifier: Arc<Classifier>,
    /// `<name>@<sha12>`.
    pub identity: String,
    /// The graph file.
    pub graph: String,
    /// Builds results naming `identity`, and error replies.
    pub replier: Arc<Replier>,
}

impl Served {
    /// Serves `model`, with replies built as `config` says.
    pub fn new(config: &Config, model: LoadedModel) -> Self {
        let replier = Replier::new(
            &config.mqtt.base_topic,
            &model.identity,
            config.input.echo_text,
            &config.input_filters(),
        )
        .with_uncertain_below(config.model.uncertain_below as f32);
        Served {
            classifier: Arc::new(model.classifier),
            identity: model.identity,
            graph: model.graph,
            replier: Arc::new(replier),
        }
    }
}

/// Where the inference threads find the model: a reload replaces it, and each thread moves to
/// the new one before its next batch (or within [`ModelSlot::POLL`] when idle), so a batch
/// already taken finishes on the model it started with.
pub struct ModelSlot {
    served: Mutex<Arc<Served>>,
    generation: AtomicU64,
}

impl ModelSlot {
    /// How often an idle inference thread looks for a new model, so the old one is freed
    /// without waiting for traffic.
    pub const POLL: std::time::Duration = std::time::Duration::from_millis(250);

    /// A slot holding `served`.
    pub fn new(served: Served) -> Self {
        ModelSlot {
            served: Mutex::new(Arc::new(served)),
            generation: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Arc<Served>> {
        // A panic while holding the lock cannot leave the Arc half-written.
        self.served
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The model served now and its generation (incremented by every swap).
    pub fn current(&self) -> (u64, Arc<Served>) {
        let served = self.lock();
        (self.generation.load(Ordering::Acquire), served.clone())
    }

    /// The generation served now: cheap, for the threads' check between batches.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Serves `served` from now on; returns the model it replaces.
    pub fn replace(&self, served: Served) -> Arc<Served> {
        let mut current = self.lock();
        let old = std::mem::replace(&mut *current, Arc::new(served));
        self.generation.fetch_add(1, Ordering::AcqRel);
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped model's manifest with its labels replaced.
    fn manifest_with_labels(labels: &[&str]) -> ModelManifest {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/imdb-minilm");
        let mut manifest = ModelManifest::read(&shipped).expect("the shipped model.json");
        manifest.labels = labels.iter().map(|l| l.to_string()).collect();
        manifest
    }

    #[test]
    fn a_model_labelled_uncertain_is_refused_only_while_the_threshold_is_set() {
        let mut config = Config::default();
        let clashing = manifest_with_labels(&["negative", UNCERTAIN_LABEL]);
        assert!(
            check_uncertain_label(&config, &clashing).is_ok(),
            "off by default"
        );
        config.model.uncertain_below = 0.7;
        let err = check_uncertain_label(&config, &clashing).unwrap_err();
        assert!(
            matches!(&err, Error::Config(e) if e.key() == Some("model.uncertain_below")),
            "{err}"
        );
        assert!(
            err.to_string().contains("label named \"uncertain\""),
            "{err}"
        );
        let fine = manifest_with_labels(&["negative", "positive"]);
        assert!(check_uncertain_label(&config, &fine).is_ok());
    }
}
