//! `sentimq train --device cuda` (feature `cuda`): the same run on the GPU and on the CPU ends
//! with the same adapter, and the GPU's training throughput.
//!
//! Built only with `--features cuda` (needs `nvcc`), which asks for them: without a CUDA device
//! at run time they fail, naming the device error (the throughput measurement is `#[ignore]`d
//! and runs with `--ignored`). `scripts/gpu-check.sh` runs them on a GPU machine with bases and
//! data given by environment, since a GPU machine need not have `../shared`:
//! - `SENTIMQ_CUDA_BASES`: base checkpoint directories separated by `:` (default: the
//!   TinyBERT-format fixture and MiniLM from `../shared`);
//! - `SENTIMQ_CUDA_DATA`: labelled reviews as JSON Lines (default: 64 from IMDB's train split).

use std::path::PathBuf;

use sentimq::train::{self, DeviceSpec, TrainConfig};

use crate::train::{adapter_tensors, imdb_sample, step_losses, training_throughput};
use crate::util::shared;

/// Panics, naming the error, when CUDA device 0 cannot be opened.
fn require_cuda() {
    if let Err(error) = DeviceSpec::Cuda(0).open() {
        panic!(
            "no CUDA device ({error}): the `cuda` feature's tests need an NVIDIA GPU with the \
             CUDA libraries; run them there (scripts/gpu-check.sh)"
        );
    }
}

fn bases() -> Vec<PathBuf> {
    match std::env::var_os("SENTIMQ_CUDA_BASES") {
        Some(list) => std::env::split_paths(&list).collect(),
        None => ["fixtures/tinybert-format", "models/all-MiniLM-L6-v2"]
            .into_iter()
            .map(shared)
            .collect(),
    }
}

/// The reviews to train on, after checking there is a CUDA device (see [`require_cuda`]).
fn cuda_and_reviews(default_count: usize) -> PathBuf {
    require_cuda();
    match std::env::var_os("SENTIMQ_CUDA_DATA") {
        Some(path) => PathBuf::from(path),
        None => imdb_sample(default_count),
    }
}

/// Relative distance ‖a − b‖ / ‖b‖.
fn relative_distance(a: &[f32], b: &[f32]) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        diff += (f64::from(x) - f64::from(y)).powi(2);
        norm += f64::from(y).powi(2);
    }
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// One epoch of LoRA training (dropout on, with the CPU's masks on both; validation each epoch)
/// on the GPU and on the CPU from the same seed: every step's loss within 1e-3 relative, every
/// adapter tensor within 1e-3 (relative Frobenius distance), the same validation verdicts but
/// at most one.
/// Float sums run in another order on the GPU, so the two runs are close, not bit-equal.
#[test]
fn cuda_training_matches_cpu() {
    let data = cuda_and_reviews(64);
    for base in bases() {
        let dir = tempfile::tempdir().unwrap();
        let run = |device: DeviceSpec| {
            let out = dir.path().join(device.to_string().replace(':', "-"));
            let mut config = TrainConfig::new(base.to_string_lossy(), &data, &out);
            config.device = device;
            config.limit = Some(64);
            config.max_len = 128;
            config.head_len = 64;
            config.batch = 8;
            config.validation_fraction = 0.25;
            config.progress = false;
            config.host_dropout_masks = true;
            let started = std::time::Instant::now();
            let report = train::run(&config)
                .expect("training run")
                .report
                .expect("a finished run has a report");
            (out, report, started.elapsed().as_secs_f64())
        };
        let (cpu_dir, cpu, cpu_s) = run(DeviceSpec::Cpu);
        let (gpu_dir, gpu, gpu_s) = run(DeviceSpec::Cuda(0));

        let (cpu_losses, gpu_losses) = (step_losses(&cpu_dir), step_losses(&gpu_dir));
        assert_eq!(cpu_losses.len(), gpu_losses.len());
        let worst_loss = cpu_losses
            .iter()
            .zip(&gpu_losses)
            .map(|(c, g)| (c - g).abs() / c.abs())
            .fold(0.0, f64::max);
        let (cpu_tensors, gpu_tensors) = (adapter_tensors(&cpu_dir), adapter_tensors(&gpu_dir));
        assert_eq!(cpu_tensors.len(), gpu_tensors.len());
        let mut worst_tensor = (0.0, String::new());
        for ((name, c), (gpu_name, g)) in cpu_tensors.iter().zip(&gpu_tensors) {
            assert_eq!(name, gpu_name);
            let distance = relative_distance(g, c);
            if distance > worst_tensor.0 {
                worst_tensor = (distance, name.clone());
            }
        }
        println!(
            "{}: {} steps, loss rel diff ≤ {worst_loss:.2e}, adapter rel diff ≤ {:.2e} ({}), \
             validation accuracy cpu {:.4} cuda {:.4}; {cpu_s:.1} s on cpu, {gpu_s:.1} s on cuda",
            base.display(),
            cpu_losses.len(),
            worst_tensor.0,
            worst_tensor.1,
            cpu.validation.as_ref().map_or(f64::NAN, |v| v.accuracy),
            gpu.validation.as_ref().map_or(f64::NAN, |v| v.accuracy),
        );
        assert!(worst_loss <= 1e-3, "step losses differ by {worst_loss:e}");
        assert!(
            worst_tensor.0 <= 1e-3,
            "adapter tensor {} differs by {:e}",
            worst_tensor.1,
            worst_tensor.0
        );
        // A review the model scores at the boundary may fall either way: at most one differs.
        let validation = cpu.examples.validation as f64;
        let (cpu_accuracy, gpu_accuracy) = (
            cpu.validation.map_or(0.0, |v| v.accuracy),
            gpu.validation.map_or(0.0, |v| v.accuracy),
        );
        assert!(
            ((cpu_accuracy - gpu_accuracy) * validation).abs() <= 1.0 + 1e-9,
            "validation accuracy {cpu_accuracy} on cpu, {gpu_accuracy} on cuda"
        );
    }
}

/// Training throughput on the GPU at the setting (LoRA r=8 q+v, batch 16 × 128
/// tokens, f32), for each base.
/// `scripts/gpu-check.sh`, or `cargo test --features cuda --test it cuda_training_throughput
/// -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement"]
fn cuda_training_throughput() {
    let data = cuda_and_reviews(200);
    for base in bases() {
        let (samples_per_s, seconds_per_step) =
            training_throughput(&base, &data, DeviceSpec::Cuda(0), 30);
        println!(
            "{}: LoRA r=8 q+v, batch 16 × 128 tokens on cuda:0: {samples_per_s:.1} samples/s \
             ({:.1} ms per step)",
            base.display(),
            seconds_per_step * 1e3
        );
    }
}
