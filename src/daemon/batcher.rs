//! Micro-batching: inputs that arrive together are classified together.
//!
//! The batcher takes the first input and whatever else is already queued, up to
//! `pipeline.max_batch`. If an inference thread is idle the batch goes at once, so a lone input
//! never waits; only while every thread is busy does it wait up to `pipeline.max_wait_ms` for
//! more inputs to share the next run. Under load batches fill from the backlog without
//! waiting. It also counts inputs and recognises redeliveries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::message::Inbound;
use super::stats::{DuplicateWindow, Stats};

/// The batcher's settings and queues.
pub struct Batcher {
    /// From the event loop.
    pub intake: mpsc::Receiver<Inbound>,
    /// To the inference threads; bounded (one batch per worker), so a busy pool makes the
    /// batcher wait and the intake queue fill, which the event loop answers by flow control.
    pub batches: flume::Sender<Vec<Inbound>>,
    /// `pipeline.max_batch`.
    pub max_batch: usize,
    /// `pipeline.max_wait_ms`.
    pub window: Duration,
    /// Inference threads waiting for a batch (kept by the workers).
    pub idle_workers: Arc<AtomicUsize>,
    /// Redelivery recognition.
    pub duplicates: DuplicateWindow,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Set on SIGTERM: close the intake, batch what is queued, finish.
    pub stopping: watch::Receiver<bool>,
}

impl Batcher {
    /// Runs until shutdown has drained the intake queue; dropping `batches` then lets the
    /// workers finish.
    pub async fn run(mut self) {
        let mut is_draining = false;
        loop {
            let first = if is_draining {
                self.intake.recv().await
            } else {
                tokio::select! {
                    biased;
                    _ = self.stopping.wait_for(|s| *s) => {
                        self.intake.close();
                        is_draining = true;
                        continue;
                    }
                    input = self.intake.recv() => input,
                }
            };
            let Some(first) = first else { break };
            let mut batch = Vec::with_capacity(self.max_batch);
            self.push(&mut batch, first);
            let deadline = Instant::now() + self.window;
            while batch.len() < self.max_batch {
                match self.intake.try_recv() {
                    Ok(input) => {
                        self.push(&mut batch, input);
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
                if is_draining
                    || self.window.is_zero()
                    || self.idle_workers.load(Ordering::Acquire) > 0
                {
                    break;
                }
                // A stop ends the window at once: the batch goes out and the drain begins.
                let next = tokio::select! {
                    biased;
                    _ = self.stopping.wait_for(|s| *s) => break,
                    next = tokio::time::timeout_at(deadline, self.intake.recv()) => next,
                };
                match next {
                    Ok(Some(input)) => self.push(&mut batch, input),
                    _ => break,
                }
            }
            if self.batches.send_async(batch).await.is_err() {
                break;
            }
        }
    }

    fn push(&mut self, batch: &mut Vec<Inbound>, input: Inbound) {
        self.stats.received(&input);
        if self.duplicates.observe(&input) {
            self.stats.duplicate();
        }
        batch.push(input);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn input(n: usize) -> Inbound {
        Inbound {
            topic: "t".into(),
            payload: Bytes::from(n.to_string()),
            response: None,
            ack: None,
            received: std::time::Instant::now(),
            is_redelivery: false,
            reply_limit: None,
        }
    }

    #[tokio::test]
    async fn queued_inputs_form_full_batches_and_shutdown_drains() {
        let (intake_tx, intake) = mpsc::channel(64);
        let (batches, batches_rx) = flume::bounded(16);
        let (stop_tx, stopping) = watch::channel(false);
        let stats = Arc::new(Stats::new(&["a".into(), "b".into()]));
        for n in 0..10 {
            intake_tx.send(input(n)).await.unwrap();
        }
        intake_tx.send(input(0)).await.unwrap(); // a duplicate
        let batcher = Batcher {
            intake,
            batches,
            max_batch: 4,
            window: Duration::from_millis(1),
            idle_workers: Arc::default(),
            duplicates: DuplicateWindow::new(100),
            stats: stats.clone(),
            stopping,
        };
        let task = tokio::spawn(batcher.run());
        let mut sizes = Vec::new();
        for _ in 0..3 {
            sizes.push(batches_rx.recv_async().await.unwrap().len());
        }
        assert_eq!(sizes, [4, 4, 3]);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        assert!(
            batches_rx.recv_async().await.is_err(),
            "the batcher closed its side"
        );
        let snapshot = stats.snapshot(0);
        assert_eq!((snapshot.received, snapshot.duplicates), (11, 1));
    }
}
