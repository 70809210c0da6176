//! `sentimq eval`.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sentimq::classifier::Classifier;
use sentimq::data::{self, Split};
use sentimq::metrics::BinaryMetrics;
use sentimq::tokenizer::TokenBatch;

/// Flags of `sentimq eval`.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory.
    #[arg(long, default_value = "models/imdb-minilm")]
    model: PathBuf,
    /// Graph file inside the model directory (default: the one model.json names).
    #[arg(long)]
    graph: Option<String>,
    /// Labelled data: an aclImdb directory or .tar.gz, or a .csv/.jsonl file.
    #[arg(long)]
    data: PathBuf,
    /// Split of an aclImdb dataset.
    #[arg(long, default_value = "test")]
    split: Split,
    /// Evaluate on a class-balanced, seeded sample of this many examples.
    #[arg(long)]
    limit: Option<usize>,
    /// Seed of the --limit sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Texts per inference batch (sorted by length, so padding stays small).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Threads for tract's matrix products (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let classifier = Classifier::load(&args.model, args.graph.as_deref())
        .with_context(|| format!("loading model from {}", args.model.display()))?;
    let examples = data::load(&args.data, args.split)
        .with_context(|| format!("reading {}", args.data.display()))?;
    let examples = match args.limit {
        Some(limit) => data::take_balanced(examples, limit, args.seed),
        None => examples,
    };
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    sentimq::engine::set_intra_op_threads(threads);

    let progress = ProgressBar::new(examples.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} reviews  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let encoded = examples
        .iter()
        .map(|e| classifier.encode(&data::clean_text(&e.text)))
        .collect::<Result<Vec<_>, _>>()
        .context("tokenizing")?;
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| encoded[i].ids.len());
    let positive = classifier.manifest().labels.len() - 1;
    let mut metrics = BinaryMetrics::default();
    let mut session = classifier.engine().session()?;
    let mut scratch = TokenBatch::default();
    for chunk in order.chunks(args.batch.max(1)) {
        let items: Vec<_> = chunk.iter().map(|&i| encoded[i].clone()).collect();
        let results = classifier.classify_encoded(&mut session, &items, &mut scratch)?;
        for (&i, result) in chunk.iter().zip(&results) {
            let predicted = u8::from(result.label == classifier.manifest().labels[positive]);
            metrics.record(examples[i].label, predicted);
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    let report = metrics.report();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "model      {} ({})",
            args.model.display(),
            classifier.engine().path().display()
        );
        println!("{report}");
    }
    Ok(())
}
