//! `sentimqd run`: assembles the pipeline, runs it until a signal, shuts it down in order.
//!
//! ```text
//! broker ─> event loop ─intake─> batcher ─batches─> N inference threads ─replies─> outbox ─> broker
//!              ▲   (polls, forwards, acks)                                      (publishes)   │
//!              └──────────────────── PUBACK of a reply releases its input's ack ◄─────────────┘
//! ```
//!
//! Shutdown (SIGTERM/SIGINT): the event loop stops taking inputs, the batcher closes the intake
//! and batches what is queued, the workers finish and drop their reply senders, the outbox
//! publishes the last replies and `offline`, waits for the broker's acks and disconnects; the
//! event loop ends when the DISCONNECT is out. All within `pipeline.shutdown_timeout_secs`; without
//! a connection to the broker (none yet, or lost) nothing can be published or acknowledged, so
//! the daemon exits at once and the broker redelivers what was not acknowledged.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::AsyncClient;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::batcher::Batcher;
use super::broker::{self, Backoff, EventLoopTask, Link, Outbox, Topics};
use super::config::{Config, Loaded};
use super::contract::Replier;
use super::health::{self, Health, Info};
use super::stats::{DuplicateWindow, Stats};
use super::worker::{WorkerContext, Workers};
use super::{logging, tls, Error};
use crate::classifier::Classifier;
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

/// Loads `model.path`, checking the graph and tokenizer against the digests in `model.json`.
pub fn load_model(config: &Config) -> Result<LoadedModel, Error> {
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
    let mut identity = format!("{}@unknown", manifest.name);
    for file in [graph.as_str(), "tokenizer.json"] {
        let Some(expected) = manifest.files.get(file) else {
            continue;
        };
        let found = manifest::digest_file(&dir.join(file)).map_err(|source| Error::ModelFile {
            path: dir.clone(),
            file: file.to_string(),
            source,
        })?;
        if found.sha256 != expected.sha256 {
            return Err(Error::Corrupt {
                path: dir.clone(),
                file: file.to_string(),
            });
        }
        if file == graph {
            identity = format!("{}@{}", manifest.name, &found.sha256[..12]);
        }
    }
    let options = crate::engine::EngineOptions {
        plan_cache_size: usize::try_from(config.model.plans).unwrap_or(usize::MAX),
        ..Default::default()
    };
    let mut classifier = Classifier::load_with(dir, Some(&graph), options).map_err(model_error)?;
    if config.model.max_tokens > 0 {
        let max_tokens = usize::try_from(config.model.max_tokens).unwrap_or(usize::MAX);
        classifier = classifier
            .with_max_tokens(max_tokens)
            .map_err(model_error)?;
    }
    Ok(LoadedModel {
        classifier,
        graph,
        identity,
    })
}

/// Builds the plans of the length buckets up to `model.warm_up_tokens` (if not 0), so the
/// first texts wait for no plan optimization.
fn warm_up(config: &Config, model: &LoadedModel) -> Result<(), Error> {
    let tokens = usize::try_from(config.model.warm_up_tokens).unwrap_or(usize::MAX);
    if tokens == 0 {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let plans = model
        .classifier
        .warm_up(tokens)
        .map_err(|source| Error::Model {
            path: config.model.path.clone(),
            source,
        })?;
    info!(
        plans,
        up_to_tokens = tokens.min(model.classifier.max_tokens()),
        ms = started.elapsed().as_millis() as u64,
        "plans built before going online"
    );
    Ok(())
}

/// Runs the daemon until SIGTERM/SIGINT (then shuts down gracefully) or a fatal error.
pub fn run(loaded: Loaded) -> Result<(), Error> {
    run_until(loaded, shutdown_signal())
}

/// Runs the daemon until `stop` resolves (with the reason to log), then shuts down gracefully
/// as on SIGTERM; or until a fatal error.
pub fn run_until(
    loaded: Loaded,
    stop: impl std::future::Future<Output = &'static str>,
) -> Result<(), Error> {
    let config = loaded.config;
    logging::init(&config.log);
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %loaded.file.as_deref().map_or("(none)".into(), |p: &Path| p.display().to_string()),
        "sentimqd starting"
    );
    for o in &loaded.overrides {
        info!(key = %o.key, from = %o.layer, "config override");
    }
    for warning in &loaded.warnings {
        warn!("{warning}");
    }
    let model = load_model(&config)?;
    let threads = config.intra_op_threads();
    crate::engine::set_intra_op_threads(threads);
    info!(
        model = %model.identity,
        graph = %model.graph,
        path = %config.model.path.display(),
        workers = config.workers(),
        intra_op_threads = threads,
        "model loaded"
    );
    warm_up(&config, &model)?;
    let server = config.server().map_err(|e| {
        Error::Config(super::config::ConfigError::Invalid {
            key: "mqtt.server",
            message: e.to_string(),
        })
    })?;
    let tls = if server.is_tls {
        Some(tls::client_config(&config.mqtt.tls)?)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    runtime.block_on(serve(config, model, server, tls, stop))
}

async fn serve(
    config: Config,
    model: LoadedModel,
    server: super::config::ServerAddress,
    tls: Option<Arc<rustls::ClientConfig>>,
    stop: impl std::future::Future<Output = &'static str>,
) -> Result<(), Error> {
    let capacity = config.pipeline.queue_capacity as usize;
    let workers = config.workers();
    let filters = config.input_filters();
    let topics = Topics::new(&config.mqtt.base_topic);
    let client_id = config.client_id();
    let stats = Arc::new(Stats::new(&model.classifier.manifest().labels));
    let health = Arc::new(Health::default());
    let replier = Arc::new(Replier::new(
        &config.mqtt.base_topic,
        &model.identity,
        config.input.echo_text,
        &filters,
    ));
    let info = info_payload(&config, &model, &filters);
    let (stopping_tx, stopping) = watch::channel(false);
    let failed = Arc::new(watch::Sender::new(false));
    let (intake_tx, intake_rx) = mpsc::channel(capacity);
    let (batches_tx, batches_rx) = flume::bounded(workers);
    let idle_workers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (replies_tx, replies_rx) = mpsc::channel(capacity);

    let pool = Workers::spawn(
        workers,
        &WorkerContext {
            classifier: Arc::new(model.classifier),
            batches: batches_rx,
            replies: replies_tx.clone(),
            replier: replier.clone(),
            input: config.input.clone(),
            stats: stats.clone(),
            failed: failed.clone(),
            idle: idle_workers.clone(),
        },
    )?;
    let weak_replies = replies_tx.downgrade();
    drop(replies_tx);

    let options = broker::mqtt_options(&config, &server, &client_id, tls);
    let (client, eventloop) = AsyncClient::new(options, capacity.max(64));
    let link = Arc::new(Link::default());
    info!(server = %server, client_id = %client_id, inputs = ?filters, "connecting");

    let mut event_loop = tokio::spawn(
        EventLoopTask {
            eventloop,
            client: client.clone(),
            link: link.clone(),
            intake: intake_tx,
            reserved_for_qos1: config.mqtt.receive_maximum as usize,
            replies: weak_replies,
            replier,
            stats: stats.clone(),
            health: health.clone(),
            stopping: stopping.clone(),
            filters: filters.clone(),
            backoff: Backoff::new(
                Duration::from_millis(config.mqtt.reconnect_initial_ms),
                Duration::from_millis(config.mqtt.reconnect_max_ms),
            ),
            server: server.to_string(),
        }
        .run(),
    );
    let mut outbox = tokio::spawn(
        Outbox {
            client,
            link: link.clone(),
            replies: replies_rx,
            topics,
            filters,
            info,
            stats: stats.clone(),
            stats_interval: (config.stats.interval_secs > 0)
                .then(|| Duration::from_secs(config.stats.interval_secs)),
        }
        .run(),
    );
    let batcher = tokio::spawn(
        Batcher {
            intake: intake_rx,
            batches: batches_tx,
            max_batch: config.pipeline.max_batch as usize,
            window: config.batch_window(),
            idle_workers,
            duplicates: DuplicateWindow::new(config.pipeline.dedup_window as usize),
            stats,
            stopping: stopping.clone(),
        }
        .run(),
    );
    let quiet = Duration::from_secs(config.mqtt.keep_alive_secs + config.mqtt.connect_timeout_secs)
        + Duration::from_millis(config.mqtt.reconnect_max_ms);
    tokio::spawn(health::watchdog(health.clone(), quiet, stopping.clone()));

    let mut failed_rx = failed.subscribe();
    let outcome = tokio::select! {
        reason = stop => {
            info!(reason, "shutting down");
            Ok(())
        }
        _ = failed_rx.wait_for(|f| *f) => Err(Error::WorkerFailed),
        result = &mut event_loop => Err(joined(result).err().unwrap_or_else(|| Error::ClientClosed("the event loop ended".into()))),
        result = &mut outbox => Err(joined(result).err().unwrap_or_else(|| Error::ClientClosed("the outbox ended".into()))),
    };
    stopping_tx.send_replace(true);
    health::notify_stopping();
    if outcome.is_err() {
        // The Last Will publishes `offline`; unacknowledged inputs are redelivered.
        event_loop.abort();
        outbox.abort();
        return outcome;
    }
    let timeout = Duration::from_secs(config.pipeline.shutdown_timeout_secs);
    let drained = tokio::time::timeout(timeout, async {
        let drain = async {
            let _ = batcher.await;
            let published = joined((&mut outbox).await);
            let disconnected = joined((&mut event_loop).await);
            published.and(disconnected)
        };
        tokio::select! {
            result = drain => Some(result),
            // Without a connection nothing can be published or acknowledged: waiting would only
            // hold up systemd's stop. The broker redelivers unacknowledged inputs.
            () = link.disconnected() => None,
        }
    })
    .await;
    match drained {
        Ok(Some(result)) => {
            pool.join();
            result?;
            info!("stopped");
            Ok(())
        }
        Ok(None) => {
            info!("stopped without a connection to the broker; unacknowledged inputs will be redelivered");
            event_loop.abort();
            outbox.abort();
            Ok(())
        }
        Err(_) => {
            warn!(
                timeout_s = timeout.as_secs(),
                "shutdown took longer than pipeline.shutdown_timeout_secs; exiting, unacknowledged inputs will be redelivered"
            );
            event_loop.abort();
            outbox.abort();
            Ok(())
        }
    }
}

fn joined(result: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    result.map_err(|e| Error::Task(e.to_string()))?
}

fn info_payload(config: &Config, model: &LoadedModel, filters: &[String]) -> bytes::Bytes {
    let manifest = model.classifier.manifest();
    Info {
        version: env!("CARGO_PKG_VERSION"),
        model: &model.identity,
        labels: &manifest.labels,
        graph: &model.graph,
        quantization: health::quantization_of(&model.graph),
        max_tokens: model.classifier.max_tokens(),
        workers: config.workers(),
        intra_op_threads: config.intra_op_threads(),
        max_batch: config.pipeline.max_batch as usize,
        max_wait_ms: config.pipeline.max_wait_ms,
        inputs: filters,
        text_field: &config.input.text_field,
        max_payload_bytes: config.input.max_payload_bytes,
        echo_text: config.input.echo_text,
        started_at: super::contract::unix_ms(),
    }
    .to_bytes()
}

/// Resolves on SIGTERM or SIGINT with the signal's name.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}
