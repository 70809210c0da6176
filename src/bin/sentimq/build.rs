//! `sentimq build`.

use std::path::PathBuf;

use anyhow::Context;
use sentimq::export::{self, BuildOptions, Precision};
use sentimq::pooling::Pooling;
use sentimq::tokenizer::Truncation;

/// Flags of `sentimq build`.
#[derive(clap::Args)]
pub struct Args {
    /// Base checkpoint: a local Hugging Face directory or a Hub id (`huawei-noah/TinyBERT_General_4L_312D`).
    #[arg(long)]
    base: String,
    /// LoRA adapter directory (PEFT format: adapter_config.json + adapter_model.safetensors); not
    /// needed when --base is a fully fine-tuned checkpoint with its classifier (`train --full`).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Without an adapter, use a seeded random classifier head (tests only; recorded in model.json).
    #[arg(long)]
    random_head: bool,
    /// Output model directory, e.g. models/imdb-tinybert.
    #[arg(long)]
    out: PathBuf,
    /// Graph written besides the f32 model.onnx, and served by default.
    #[arg(long, value_enum, default_value_t = Precision::Int8)]
    precision: Precision,
    /// Maximum tokens per text, [CLS] and [SEP] included.
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    /// Tokens kept from the start of a long text; the rest of the window comes from its end.
    #[arg(long, default_value_t = 128)]
    head_len: usize,
    /// Largest allowed class-probability difference between the quantized and the f32 graph.
    #[arg(long, default_value_t = 0.1)]
    parity_tolerance: f64,
    /// Seed of --random-head.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Divide the logits by this temperature (folded into the classifier; recorded in
    /// model.json) [default: the adapter's calibration.json, which `sentimq train` writes, if
    /// present; 1 turns it off].
    #[arg(long)]
    temperature: Option<f64>,
    /// What the head reads: the [CLS] token's last state, or the mean of every token's
    /// [default: what the adapter's adapter_config.json (or a fully fine-tuned --base's
    /// config.json) records under `sentimq_pooling`, which `sentimq train --pooling` writes;
    /// else cls].
    #[arg(long, value_name = "cls|mean")]
    pooling: Option<Pooling>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut options = BuildOptions::new(args.base.clone(), args.out.clone());
    options.adapter = args.adapter;
    options.random_head = args.random_head;
    options.precision = args.precision;
    options.truncation = Truncation::head_tail(args.max_len, args.head_len);
    options.parity_tolerance = args.parity_tolerance;
    options.seed = args.seed;
    options.temperature = args.temperature;
    options.pooling = args.pooling;
    let report = export::build(&options)
        .with_context(|| format!("building {} from {}", args.out.display(), args.base))?;
    let manifest = &report.manifest;
    eprintln!("built {} ({})", args.out.display(), manifest.identity());
    if manifest.pooling != Pooling::Cls {
        eprintln!(
            "the head reads the {} of the tokens' last states",
            manifest.pooling
        );
    }
    if let Some(t) = manifest.temperature {
        eprintln!("logits divided by temperature {t:.4} (calibrated)");
    }
    eprintln!(
        "f32 graph vs reference forward pass (hidden states, logits): max diff {:.2e}",
        report.reference_diff
    );
    for parity in &manifest.parity {
        eprintln!(
            "{} vs model.onnx on {} texts: label agreement {:.3}, max probability diff {:.4}",
            parity.graph, parity.texts, parity.label_agreement, parity.max_probability_diff
        );
    }
    for (name, file) in &manifest.files {
        eprintln!(
            "  {name:<22} {:>12} bytes  sha256 {}",
            file.bytes,
            &file.sha256[..16]
        );
    }
    Ok(())
}
