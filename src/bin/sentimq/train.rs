//! `sentimq train`: flags → [`TrainConfig`] → [`sentimq::train::run`] → report.

use std::path::PathBuf;

use anyhow::Context;
use sentimq::pooling::Pooling;
use sentimq::train::{self, DeviceSpec, TrainConfig};

/// Flags of `sentimq train`.
#[derive(clap::Args)]
pub struct Args {
    /// Base checkpoint: a local Hugging Face BERT directory or a hub id (e.g.
    /// huawei-noah/TinyBERT_General_4L_312D).
    #[arg(long)]
    base: String,
    /// Labelled reviews: an aclImdb directory or .tar.gz (train split; test split only for
    /// --eval-test), a .parquet/.csv/.jsonl file with text and label (0/1) fields, or `imdb`
    /// (stanfordnlp/imdb from the Hugging Face Hub, cached) or `hf:<owner/name>`.
    #[arg(long)]
    data: PathBuf,
    /// Device: cpu or cuda[:N] (build with --features cuda).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// Run directory: adapter/ (or model/ with --full), metrics.jsonl, report.json,
    /// report.txt, curve.png, reliability.png, checkpoint/.
    #[arg(long, required_unless_present = "throughput")]
    out: Option<PathBuf>,
    /// Passes over the training reviews.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Reviews per micro-batch (grouped by length, padded to the longest).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Micro-batches per optimizer update (effective batch = --batch × --grad-accum).
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Peak learning rate [default: 5e-4 with LoRA, 3e-5 with --full].
    #[arg(long)]
    lr: Option<f64>,
    /// Fraction of the updates spent in linear warm-up (then linear decay).
    #[arg(long, default_value_t = 0.1)]
    warmup_ratio: f64,
    /// AdamW decoupled weight decay (not applied to biases and LayerNorm weights).
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Clip gradients to this global L2 norm; 0 turns clipping off.
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// LoRA rank r.
    #[arg(long, default_value_t = 8)]
    lora_r: usize,
    /// LoRA alpha; updates are scaled by alpha/r.
    #[arg(long, default_value_t = 16.0)]
    lora_alpha: f64,
    /// Dropout on the LoRA input during training.
    #[arg(long, default_value_t = 0.1)]
    lora_dropout: f64,
    /// Modules to adapt, comma-separated names or suffixes (query, key, value,
    /// attention.output.dense, intermediate.dense, output.dense, dense).
    #[arg(long, value_delimiter = ',', default_value = "query,value")]
    lora_targets: Vec<String>,
    /// Train every weight instead of LoRA adapters; writes model/ instead of adapter/.
    #[arg(long)]
    full: bool,
    /// Seed of sampling, validation split, initialisation, data order and dropout.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Tokens per review including [CLS] and [SEP]; longer reviews keep head and tail.
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    /// Word pieces kept from the start of a long review; the rest of the window is its end.
    #[arg(long, default_value_t = 128)]
    head_len: usize,
    /// Train on a class-balanced, seeded sample of this many training reviews.
    #[arg(long)]
    limit: Option<usize>,
    /// Fraction of the training reviews held out for validation (stratified, evaluated after
    /// each epoch; the best epoch's model is kept). 0 keeps the last epoch's.
    #[arg(long, default_value_t = 0.1)]
    validation_fraction: f64,
    /// What the head reads: the [CLS] token's last state (BERT's pooler) or the mean of every
    /// token's (padding excluded), as sentence-embedding checkpoints are trained to be read.
    /// Recorded in the adapter; `sentimq build` builds the graph to match.
    #[arg(long, default_value_t = Pooling::Cls, value_name = "cls|mean")]
    pooling: Pooling,
    /// Add N random short spans of each training (and validation) review, labelled as the
    /// review: one sentence (1/2), two or three sentences (3/10) or 4-30 consecutive words
    /// (1/5), so the model also learns the short texts MQTT carries. 0: whole reviews only.
    #[arg(long, default_value_t = 0, value_name = "N")]
    spans_per_review: usize,
    /// Add M random openings of each training (and validation) review, labelled as the
    /// review: its first 5-60 words (uniform), as a message cut off mid-review reads. 0: none.
    #[arg(long, default_value_t = 0, value_name = "M")]
    openings_per_review: usize,
    /// Start the trainable tensors from an earlier run's kept model (its adapter/, or model/
    /// with --full) instead of a fresh initialisation: a second stage, e.g. more short spans at
    /// a lower --lr. Base, --full, --lora-r, --lora-alpha and --lora-targets must match it, and
    /// (where its run's report.json is beside it) --data, --limit, --seed and
    /// --validation-fraction too, so the validation split stays the same.
    #[arg(long, value_name = "DIR")]
    init_from: Option<PathBuf>,
    /// Write a resumable checkpoint to <out>/checkpoint/ every N optimizer updates.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Continue the run in --out from its checkpoint, with the same flags.
    #[arg(long)]
    resume: bool,
    /// CPU threads for candle's kernels [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// At the end, also evaluate the kept model on a balanced sample of N test reviews.
    #[arg(long, value_name = "N")]
    eval_test: Option<usize>,
    /// Stop after N updates, writing a checkpoint (as if interrupted; continue with --resume).
    #[arg(long, value_name = "N")]
    stop_after: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Measure the training step instead of training: N timed updates (after one warm-up) on
    /// one batch of --batch reviews that fill --max-len tokens, with this command's model,
    /// LoRA, clipping and --threads settings; prints one JSON line (samples/s, ms per step
    /// and per phase, peak RSS). Writes nothing.
    #[arg(long, value_name = "N", conflicts_with_all = ["out", "resume", "eval_test", "stop_after"])]
    throughput: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(threads) = args.threads {
        // candle sizes its kernels' thread pool from these on first use; nothing has run yet.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", threads.to_string());
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .try_init();
    let out = args.out.unwrap_or_default();
    let mut config = TrainConfig::new(args.base, args.data, out);
    config.device = args.device;
    config.epochs = args.epochs;
    config.batch = args.batch;
    config.grad_accum = args.grad_accum;
    config.lr = args.lr;
    config.warmup_ratio = args.warmup_ratio;
    config.weight_decay = args.weight_decay;
    config.max_grad_norm = args.max_grad_norm;
    config.lora.r = args.lora_r;
    config.lora.alpha = args.lora_alpha;
    config.lora.dropout = args.lora_dropout;
    config.lora.targets = args.lora_targets;
    config.full = args.full;
    config.seed = args.seed;
    config.max_len = args.max_len;
    config.head_len = args.head_len;
    config.limit = args.limit;
    config.validation_fraction = args.validation_fraction;
    config.pooling = args.pooling;
    config.spans_per_review = args.spans_per_review;
    config.openings_per_review = args.openings_per_review;
    config.init_from = args.init_from;
    config.checkpoint_every = args.checkpoint_every;
    config.resume = args.resume;
    config.eval_test = args.eval_test;
    config.stop_after = args.stop_after;
    config.progress = !args.quiet;
    if let Some(steps) = args.throughput {
        let measured = train::throughput::measure(&config, steps.max(1))
            .context("measuring the training step")?;
        println!("{}", serde_json::to_string(&measured)?);
        return Ok(());
    }

    let outcome =
        train::run(&config).with_context(|| format!("training into {}", config.out.display()))?;
    match outcome.report {
        Some(report) => println!("{report}"),
        None => eprintln!(
            "stopped after step {}; continue with the same flags and --resume",
            outcome.steps
        ),
    }
    Ok(())
}
