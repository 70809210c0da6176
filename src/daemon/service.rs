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
//!
//! SIGHUP (and, with `mqtt.reload_command`, a message on `<base>/command/reload`) reloads the
//! model without a restart: see `reload`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::AsyncClient;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::batcher::Batcher;
use super::broker::{self, Backoff, EventLoopTask, Link, Outbox, Topics};
use super::config::{Config, Loaded};
use super::health::{self, Health, Info};
use super::model::{self, ModelSlot, Served};
use super::reload::{self, Reloader, Trigger};
use super::stats::{DuplicateWindow, Stats};
use super::worker::{WorkerContext, Workers};
use super::{logging, tls, Error};

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
    // Loading returns what it frees at once (a lower peak); serving, below, keeps it.
    crate::allocator::return_freed_memory_while_loading();
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    // Listening from here on: a SIGHUP while the model loads asks for a reload once serving,
    // instead of killing the process (SIGHUP's default action).
    let hangups = {
        let _entered = runtime.enter();
        hangup_signal()
    };
    let threads = config.intra_op_threads();
    crate::engine::set_intra_op_threads(threads);
    let model = model::load_and_warm_up(&config)?;
    info!(
        model = %model.identity,
        graph = %model.graph,
        path = %config.model.path.display(),
        workers = config.workers(),
        intra_op_threads = threads,
        "model loaded"
    );
    match super::self_test::run(&model.classifier) {
        Ok(passed) => info!(model = %model.identity, "self-test passed: {}", passed.describe()),
        // There is no other model to serve instead: say so loudly and serve this one.
        Err(problem) => {
            warn!(model = %model.identity, "self-test failed, serving the model anyway: {problem}")
        }
    }
    crate::allocator::return_freed_memory();
    // Each run's activations are reused by the next; the inference threads trim when idle.
    // (Plans built later, in the background or on first use, are built under this setting.)
    crate::allocator::keep_freed_memory();
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
    runtime.block_on(serve(config, model, server, tls, stop, hangups))
}

async fn serve(
    config: Config,
    model: model::LoadedModel,
    server: super::config::ServerAddress,
    tls: Option<Arc<rustls::ClientConfig>>,
    stop: impl std::future::Future<Output = &'static str>,
    mut hangups: Option<tokio::signal::unix::Signal>,
) -> Result<(), Error> {
    let capacity = config.pipeline.queue_capacity as usize;
    let workers = config.workers();
    let filters = config.input_filters();
    let topics = Topics::new(&config.mqtt.base_topic);
    let client_id = config.client_id();
    let mut labels = model.classifier.manifest().labels.clone();
    if config.model.uncertain_below > 0.0 {
        labels.push(crate::classifier::UNCERTAIN_LABEL.into());
    }
    let stats = Arc::new(Stats::new(&labels));
    let health = Arc::new(Health::default());
    let served = Served::new(&config, model);
    // The event loop's `overloaded` replies name no model, so the first replier serves it for good.
    let replier = served.replier.clone();
    let info_for = info_builder(&config, &filters);
    let (info_tx, info) = watch::channel(info_for(&served));
    let slot = Arc::new(ModelSlot::new(served));
    let (reload_tx, reload_rx) = mpsc::channel(1);
    let (stopping_tx, stopping) = watch::channel(false);
    let failed = Arc::new(watch::Sender::new(false));
    let (intake_tx, intake_rx) = mpsc::channel(capacity);
    let (batches_tx, batches_rx) = flume::bounded(workers);
    let idle_workers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (replies_tx, replies_rx) = mpsc::channel(capacity);

    let pool = Workers::spawn(
        workers,
        &WorkerContext {
            model: slot.clone(),
            batches: batches_rx,
            replies: replies_tx.clone(),
            input: config.input.clone(),
            stats: stats.clone(),
            failed: failed.clone(),
            idle: idle_workers.clone(),
        },
    )?;
    model::warm_up_in_background(&config, &slot, &stopping);
    let weak_replies = replies_tx.downgrade();
    drop(replies_tx);
    let command_topic = config
        .mqtt
        .reload_command
        .then(|| topics.reload_command.clone());
    tokio::spawn(
        Reloader {
            config: config.clone(),
            slot,
            requests: reload_rx,
            info: info_tx,
            info_for,
            outbox: weak_replies.clone(),
            topic: topics.reload.clone(),
            health: health.clone(),
            stopping: stopping.clone(),
        }
        .run(),
    );

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
            command_topic: topics.reload_command.clone(),
            reload_command: config.mqtt.reload_command,
            reloads: reload_tx.clone(),
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
            command_topic,
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
    tokio::pin!(stop);
    let outcome = loop {
        tokio::select! {
            reason = &mut stop => {
                info!(reason, "shutting down");
                break Ok(());
            }
            Some(()) = hangup(&mut hangups) => reload::request(&reload_tx, Trigger::Signal),
            _ = failed_rx.wait_for(|f| *f) => break Err(Error::WorkerFailed),
            result = &mut event_loop => break Err(joined(result).err().unwrap_or_else(|| Error::ClientClosed("the event loop ended".into()))),
            result = &mut outbox => break Err(joined(result).err().unwrap_or_else(|| Error::ClientClosed("the outbox ended".into()))),
        }
    };
    // Ends the reloader once the event loop's sender is gone too; a reload in progress is
    // abandoned with the process.
    drop(reload_tx);
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
    result.map_err(Error::TaskFailed)?
}

/// Makes the `<base>/info` payload of a served model (the start time stays the daemon's).
fn info_builder(config: &Config, filters: &[String]) -> reload::InfoBuilder {
    let config = config.clone();
    let filters = filters.to_vec();
    let started_at = super::contract::unix_ms();
    Box::new(move |served: &Served| {
        let classifier = &served.classifier;
        Info {
            version: env!("CARGO_PKG_VERSION"),
            model: &served.identity,
            labels: &classifier.manifest().labels,
            graph: &served.graph,
            quantization: health::quantization_of(&served.graph),
            max_tokens: classifier.max_tokens(),
            workers: config.workers(),
            intra_op_threads: config.intra_op_threads(),
            max_batch: config.pipeline.max_batch as usize,
            max_wait_ms: config.pipeline.max_wait_ms,
            inputs: &filters,
            text_field: &config.input.text_field,
            max_payload_bytes: config.input.max_payload_bytes,
            echo_text: config.input.echo_text,
            uncertain_below: config.model.uncertain_below,
            started_at,
        }
        .to_bytes()
    })
}

/// The SIGHUP stream, or `None` (with a warning) when it cannot be set up.
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup())
        .inspect_err(|e| {
            warn!("cannot listen for SIGHUP, so `systemctl reload` will not work: {e}")
        })
        .ok()
}

/// The next SIGHUP; never, without a stream.
async fn hangup(hangups: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangups {
        Some(stream) => stream.recv().await,
        None => std::future::pending().await,
    }
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
