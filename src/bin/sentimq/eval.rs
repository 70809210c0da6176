//! `sentimq eval`.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sentimq::classifier::Classifier;
use sentimq::data::{self, Split};
use std::io::Write;

use sentimq::metrics::{BinaryMetrics, LengthBucketReport, MetricsByLength, MetricsReport};
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
    /// Labelled data: an aclImdb directory or .tar.gz, a .parquet/.csv/.jsonl file, or `imdb`
    /// (stanfordnlp/imdb from the Hugging Face Hub, cached) or `hf:<owner/name>`.
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
    /// Also write one JSON line per review (index in the data, truth, prediction, positive
    /// probability, words, truncated) to this file, e.g. to compare two graphs.
    #[arg(long, value_name = "FILE")]
    predictions: Option<PathBuf>,
}

/// The JSON report: overall metrics, accuracy by review length, and what was evaluated.
#[derive(serde::Serialize)]
struct Report {
    model: String,
    graph: String,
    #[serde(flatten)]
    overall: MetricsReport,
    /// Reviews cut to the model's window (head+tail truncation).
    truncated: usize,
    by_length: Vec<LengthBucketReport>,
}

#[derive(serde::Serialize)]
struct Prediction {
    index: usize,
    truth: u8,
    predicted: u8,
    positive_probability: f32,
    words: usize,
    truncated: bool,
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
    let texts: Vec<String> = examples.iter().map(|e| data::clean_text(&e.text)).collect();
    let encoded = texts
        .iter()
        .map(|text| classifier.encode(text))
        .collect::<Result<Vec<_>, _>>()
        .context("tokenizing")?;
    let mut predictions = Vec::with_capacity(examples.len());
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| encoded[i].ids.len());
    let positive = classifier.manifest().labels.len() - 1;
    let mut metrics = BinaryMetrics::default();
    let mut by_length = MetricsByLength::default();
    let mut session = classifier.engine().session()?;
    let mut scratch = TokenBatch::default();
    for chunk in order.chunks(args.batch.max(1)) {
        let items: Vec<_> = chunk.iter().map(|&i| encoded[i].clone()).collect();
        let results = classifier.classify_encoded(&mut session, &items, &mut scratch)?;
        for (&i, result) in chunk.iter().zip(&results) {
            let predicted = u8::from(result.label == classifier.manifest().labels[positive]);
            let words = texts[i].split_whitespace().count();
            metrics.record(examples[i].label, predicted);
            by_length.record(words, examples[i].label, predicted);
            predictions.push(Prediction {
                index: i,
                truth: examples[i].label,
                predicted,
                positive_probability: result.scores[positive].1,
                words,
                truncated: result.truncated,
            });
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    if let Some(path) = &args.predictions {
        predictions.sort_by_key(|p| p.index);
        write_predictions(path, &predictions)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let report = Report {
        model: args.model.display().to_string(),
        graph: classifier.engine().path().display().to_string(),
        overall: metrics.report(),
        truncated: predictions.iter().filter(|p| p.truncated).count(),
        by_length: by_length.report(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("model      {} ({})", report.model, report.graph);
        println!("{}", report.overall);
        println!(
            "truncated  {} of {} reviews (head+tail)",
            report.truncated, report.overall.examples
        );
        println!("by length (words): accuracy");
        for bucket in &report.by_length {
            println!(
                "  {:>8}  {:.4}  ({} reviews)",
                bucket.words, bucket.accuracy, bucket.examples
            );
        }
    }
    Ok(())
}

fn write_predictions(path: &std::path::Path, predictions: &[Prediction]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for prediction in predictions {
        serde_json::to_writer(&mut out, prediction)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
