//! `sentimq bench`: load time, latency per sequence length and batch throughput of one graph.
//!
//! Inputs are synthetic but deterministic token ids (`bench_ids`), so `benches/ort_compare.py`
//! feeds onnxruntime exactly the same tensors and the two runtimes can be compared as a ratio
//! from one run. Times are wall-clock on this process, after warm-up.

pub mod daemon;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::engine::{self, Engine};
use crate::metrics::percentile;
use crate::tokenizer::TokenBatch;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Sequence lengths for the batch-1 latency table.
    pub latency_sequences: Vec<usize>,
    /// Batch sizes for the throughput table.
    pub throughput_batches: Vec<usize>,
    /// Sequence lengths of the throughput runs.
    pub throughput_sequences: Vec<usize>,
    /// Thread counts to measure (intra-op threads of tract's matmuls).
    pub threads: Vec<usize>,
    /// Timed runs per cell (after warm-up).
    pub iterations: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let mut threads = vec![1];
        if cores > 1 {
            threads.push(cores);
        }
        BenchOptions {
            latency_sequences: vec![16, 32, 64, 128, 256],
            throughput_batches: vec![8, 32],
            throughput_sequences: vec![32, 128],
            threads,
            iterations: 30,
        }
    }
}

/// Measured figures.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// The graph measured.
    pub model: PathBuf,
    /// Parse + optimize + plan time.
    pub load_ms: f64,
    /// Batch-1 latency rows.
    pub latency: Vec<LatencyRow>,
    /// Throughput rows.
    pub throughput: Vec<ThroughputRow>,
}

/// Batch-1 latency at one sequence length.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyRow {
    /// Intra-op threads.
    pub threads: usize,
    /// Tokens per sequence.
    pub sequence: usize,
    /// Median latency.
    pub p50_ms: f64,
    /// 95th percentile latency.
    pub p95_ms: f64,
}

/// Throughput at one batch size: each text run alone, as the daemon does, against the whole
/// batch run as one `(rows, sequence)` plan.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputRow {
    /// Intra-op threads.
    pub threads: usize,
    /// Texts per batch.
    pub batch: usize,
    /// Tokens per text.
    pub sequence: usize,
    /// Texts classified per second, each text run alone (`Session::classify`).
    pub texts_per_second: f64,
    /// Texts per second with the batch run as one plan of its shape (`Engine::run_all`).
    pub one_plan_texts_per_second: f64,
}

/// Deterministic token ids of length `sequence`: `[CLS]`, ordinary word pieces, `[SEP]`.
/// `benches/ort_compare.py` computes the same formula.
pub fn bench_ids(sequence: usize, row: usize) -> Vec<i64> {
    let mut ids = vec![101];
    ids.extend(
        (0..sequence.saturating_sub(2))
            .map(|i| 1000 + ((i * 7919 + row * 104_729) % 20_000) as i64),
    );
    ids.push(102);
    ids
}

/// A full (unpadded) batch of `rows` bench sequences.
pub fn bench_batch(rows: usize, sequence: usize) -> TokenBatch {
    TokenBatch {
        input_ids: (0..rows).flat_map(|r| bench_ids(sequence, r)).collect(),
        attention_mask: vec![1; rows * sequence],
        batch: rows,
        sequence,
        pad_id: 0,
    }
}

/// Runs the benchmark on one graph file.
pub fn run(graph: &Path, options: &BenchOptions) -> Result<BenchReport, engine::Error> {
    let start = Instant::now();
    let engine = Engine::load(graph)?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let mut latency = Vec::new();
    let mut throughput = Vec::new();
    for &threads in &options.threads {
        engine::set_intra_op_threads(threads);
        let mut session = engine.session()?;
        for &sequence in &options.latency_sequences {
            let batch = bench_batch(1, sequence);
            let times = time_runs(&mut session, &batch, options.iterations)?;
            latency.push(LatencyRow {
                threads,
                sequence,
                p50_ms: percentile(&times, 0.5).unwrap_or(f64::NAN),
                p95_ms: percentile(&times, 0.95).unwrap_or(f64::NAN),
            });
        }
        for &sequence in &options.throughput_sequences {
            for &rows in &options.throughput_batches {
                let batch = bench_batch(rows, sequence);
                let runs = (options.iterations / 3).max(3);
                let alone = time(runs, || session.classify(&batch).map(drop))?;
                let one_plan = time(runs, || engine.run_all(&batch).map(drop))?;
                let per_second = |times: &[f64]| {
                    rows as f64 / (percentile(times, 0.5).unwrap_or(f64::NAN) / 1e3)
                };
                throughput.push(ThroughputRow {
                    threads,
                    batch: rows,
                    sequence,
                    texts_per_second: per_second(&alone),
                    one_plan_texts_per_second: per_second(&one_plan),
                });
            }
        }
    }
    engine::set_intra_op_threads(1);
    Ok(BenchReport {
        model: graph.to_path_buf(),
        load_ms,
        latency,
        throughput,
    })
}

fn time_runs(
    session: &mut engine::Session,
    batch: &TokenBatch,
    iterations: usize,
) -> Result<Vec<f64>, engine::Error> {
    time(iterations, || session.classify(batch).map(drop))
}

/// Sorted milliseconds of `iterations` calls of `run`, after 3 untimed ones.
fn time(
    iterations: usize,
    mut run: impl FnMut() -> Result<(), engine::Error>,
) -> Result<Vec<f64>, engine::Error> {
    for _ in 0..3 {
        run()?;
    }
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        run()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}
