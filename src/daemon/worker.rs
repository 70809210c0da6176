//! Inference threads: read payloads, tokenize, classify a batch, build the replies.
//!
//! Each worker is a dedicated `std::thread` (never a runtime worker, never `spawn_blocking`)
//! owning its tract session and scratch buffers. It takes batches from a bounded MPMC queue
//! and hands replies to the outbox with `blocking_send`, so a slow broker slows the workers
//! instead of growing a queue. Where panics unwind (test builds), a panicking worker sets the
//! `failed` flag, which stops the daemon with an error; release builds abort on panic
//! (`Cargo.toml`), and the broker publishes the Last Will. Either way its batch stays
//! unacknowledged and is redelivered. Before each batch
//! (and every [`ModelSlot::POLL`] while idle) it moves to a reloaded model, with a new session.
//! A thread idle for one poll interval after work hands the memory freed since back to the
//! kernel (glibc keeps freed activations in its heaps otherwise).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tracing::error;

use super::config::InputConfig;
use super::contract::{self, ErrorCode, Rejection, Replier};
use super::message::{Inbound, Outbound};
use super::model::{ModelSlot, Served};
use super::stats::Stats;
use super::Error;
use crate::classifier::{self, Classifier};
use crate::engine::Session;
use crate::error_text::describe;
use crate::tokenizer::{Encoded, TokenBatch};

/// What every worker shares.
#[derive(Clone)]
pub struct WorkerContext {
    /// The model served (and the replier naming it); a reload replaces it.
    pub model: Arc<ModelSlot>,
    /// Batches from the batcher.
    pub batches: flume::Receiver<Vec<Inbound>>,
    /// Replies to the outbox. Full: the worker waits (the outbox is publishing).
    pub replies: mpsc::Sender<Outbound>,
    /// `[input]`.
    pub input: InputConfig,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Set when a worker panics or cannot start.
    pub failed: Arc<watch::Sender<bool>>,
    /// Workers waiting for a batch; the batcher sends at once while one is idle.
    pub idle: Arc<AtomicUsize>,
}

/// The running inference threads.
pub struct Workers {
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` threads.
    pub fn spawn(count: usize, context: &WorkerContext) -> Result<Self, Error> {
        let handles = (0..count)
            .map(|i| {
                let context = context.clone();
                std::thread::Builder::new()
                    .name(format!("sentimq-infer-{i}"))
                    .spawn(move || {
                        let _guard = FailOnPanic(context.failed.clone());
                        Worker::new(context).run();
                    })
                    .map_err(Error::Thread)
            })
            .collect::<Result<_, _>>()?;
        Ok(Workers { handles })
    }

    /// Waits for every thread (they end once the batch queue closes and drains).
    pub fn join(self) {
        for handle in self.handles {
            // A panic was already reported through `failed`.
            let _ = handle.join();
        }
    }
}

struct FailOnPanic(Arc<watch::Sender<bool>>);

impl Drop for FailOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.send_replace(true);
        }
    }
}

/// An input that passed reading and tokenizing, waiting for its batch to run.
struct Accepted {
    input: Inbound,
    id: Option<Value>,
    text: Option<String>,
}

struct Worker {
    context: WorkerContext,
    /// The model this thread serves and the slot generation it came from.
    served: Arc<Served>,
    generation: u64,
    encoded: Vec<Encoded>,
    accepted: Vec<Accepted>,
    scratch: TokenBatch,
    buffer: Vec<u8>,
    /// Whether this thread ran a batch since it last returned freed memory to the kernel.
    ran_since_trim: bool,
}

impl Worker {
    fn new(context: WorkerContext) -> Self {
        let (generation, served) = context.model.current();
        Worker {
            context,
            served,
            generation,
            encoded: Vec::new(),
            accepted: Vec::new(),
            scratch: TokenBatch::default(),
            buffer: Vec::with_capacity(1024),
            ran_since_trim: false,
        }
    }

    /// A session of `served`; `None`, with the daemon flagged as failed, if none starts.
    fn session(&self, served: &Served) -> Option<Session> {
        match served.classifier.engine().session() {
            Ok(session) => Some(session),
            Err(e) => {
                error!(
                    model = %served.identity,
                    "cannot start an inference session: {}",
                    describe(&e)
                );
                self.context.failed.send_replace(true);
                None
            }
        }
    }

    /// Moves to a reloaded model if there is one, dropping the old session (which holds the
    /// old engine) before the old model, so the model is free once its count drops; `false`
    /// when the new session cannot start.
    fn follow_reload(&mut self, session: &mut Session) -> bool {
        if self.context.model.generation() == self.generation {
            return true;
        }
        let (generation, served) = self.context.model.current();
        let Some(new) = self.session(&served) else {
            return false;
        };
        *session = new;
        self.served = served;
        self.generation = generation;
        true
    }

    /// The next batch; `None` once the queue is closed and drained (or a reload failed).
    fn next_batch(&mut self, session: &mut Session) -> Option<Vec<Inbound>> {
        self.context.idle.fetch_add(1, Ordering::AcqRel);
        let received = loop {
            match self.context.batches.recv_timeout(ModelSlot::POLL) {
                Ok(batch) => break Some(batch),
                Err(flume::RecvTimeoutError::Timeout) => {
                    if !self.follow_reload(session) {
                        break None;
                    }
                    // Idle for a poll interval after work: the activations of long texts
                    // (megabytes each) stay in glibc's heaps until trimmed.
                    if std::mem::take(&mut self.ran_since_trim) {
                        crate::allocator::return_freed_memory();
                    }
                }
                Err(flume::RecvTimeoutError::Disconnected) => break None,
            }
        };
        self.context.idle.fetch_sub(1, Ordering::AcqRel);
        let batch = received?;
        self.ran_since_trim = true;
        // A batch that waited in the queue across a swap runs on the new model.
        self.follow_reload(session).then_some(batch)
    }

    fn run(mut self) {
        let Some(mut session) = self.session(&self.served) else {
            return;
        };
        while let Some(batch) = self.next_batch(&mut session) {
            self.encoded.clear();
            self.accepted.clear();
            for input in batch {
                match self.read(&input) {
                    Ok((encoded, id, text)) => {
                        self.encoded.push(encoded);
                        self.accepted.push(Accepted { input, id, text });
                    }
                    Err(rejection) => {
                        if !self.reject(&input, &rejection) {
                            return;
                        }
                    }
                }
            }
            if self.accepted.is_empty() {
                continue;
            }
            let served = self.served.clone();
            match served
                .classifier
                .classify_encoded(&mut session, &self.encoded, &mut self.scratch)
            {
                Ok(verdicts) => {
                    let accepted = std::mem::take(&mut self.accepted);
                    for (item, verdict) in accepted.iter().zip(&verdicts) {
                        let reply = served.replier.result(
                            &item.input,
                            item.id.as_ref(),
                            item.text.as_deref().unwrap_or(""),
                            verdict,
                            &mut self.buffer,
                        );
                        match reply.error {
                            // The result did not fit the broker's packet limit.
                            Some(code) => self.context.stats.error(code),
                            None => self.context.stats.result(
                                served.replier.label(verdict),
                                item.input.received.elapsed(),
                            ),
                        }
                        if self.context.replies.blocking_send(reply).is_err() {
                            return;
                        }
                    }
                    self.accepted = accepted;
                }
                Err(e) => {
                    let detail = describe(&e);
                    error!(batch = self.accepted.len(), "inference failed: {detail}");
                    let accepted = std::mem::take(&mut self.accepted);
                    for item in &accepted {
                        let rejection = Rejection {
                            code: ErrorCode::InferenceFailed,
                            detail: detail.clone(),
                            id: item.id.clone(),
                        };
                        if !self.reject(&item.input, &rejection) {
                            return;
                        }
                    }
                    self.accepted = accepted;
                }
            }
        }
    }

    /// Reads and tokenizes one input (see [`read_input`]).
    fn read(&self, input: &Inbound) -> Result<(Encoded, Option<Value>, Option<String>), Rejection> {
        let served = &self.served;
        read_input(
            &served.replier,
            &self.context.input,
            &served.classifier,
            input,
        )
    }

    /// Sends an error reply; `false` when the outbox is gone.
    fn reject(&mut self, input: &Inbound, rejection: &Rejection) -> bool {
        let reply = self
            .served
            .replier
            .error(input, rejection, &mut self.buffer);
        self.context
            .stats
            .error(reply.error.unwrap_or(rejection.code));
        self.context.replies.blocking_send(reply).is_ok()
    }
}

/// Reads and tokenizes one input: its tokens, `id` and (with `input.echo_text`) text, or why it
/// cannot be classified (an unusable response topic first, then the payload, then the text).
pub(crate) fn read_input(
    replier: &Replier,
    input_config: &InputConfig,
    classifier: &Classifier,
    input: &Inbound,
) -> Result<(Encoded, Option<Value>, Option<String>), Rejection> {
    if let Some(rejection) = replier.check_route(input) {
        return Err(rejection);
    }
    let max_bytes = usize::try_from(input_config.max_payload_bytes).unwrap_or(usize::MAX);
    let request = contract::parse_input(&input.payload, &input_config.text_field, max_bytes)?;
    match classifier.encode(&request.text) {
        Ok(encoded) => {
            let text = input_config.echo_text.then(|| request.text.into_owned());
            Ok((encoded, request.id, text))
        }
        Err(e) => Err(Rejection {
            code: match e {
                classifier::Error::EmptyText => ErrorCode::Empty,
                _ => ErrorCode::InferenceFailed,
            },
            detail: describe(&e),
            id: request.id,
        }),
    }
}
