//! `sentimq eval`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sentimq::data::{self, Split};
use sentimq::eval::{self, Evaluation, Prediction};

use crate::ModelArgs;

/// Flags of `sentimq eval`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Labelled data: an aclImdb directory or .tar.gz, a .parquet/.csv/.jsonl file, or `imdb`
    /// (stanfordnlp/imdb from the Hugging Face Hub, cached) or `hf:<owner/name>`.
    #[arg(long)]
    data: PathBuf,
    /// Which split of the data (an aclImdb archive or a Hub dataset; a single file is one
    /// split): `test`, `train`, or `validation` — the part of the train split (or of the
    /// file) that `sentimq train` held out for model selection (the same
    /// --validation-fraction and --validation-seed as the run; runs without --limit).
    #[arg(long, default_value = "test")]
    split: EvalSplit,
    /// With `--split validation`: the run's --validation-fraction.
    #[arg(long, default_value_t = 0.1)]
    validation_fraction: f64,
    /// With `--split validation`: the run's --seed.
    #[arg(long, default_value_t = 42)]
    validation_seed: u64,
    /// Evaluate on a class-balanced, seeded sample of this many examples.
    #[arg(long)]
    limit: Option<usize>,
    /// Seed of the --limit sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Score short pieces of the reviews instead, each labelled as its review: `sentences`
    /// (every sentence of at least 3 words) or `first:<N>` (the first N characters, cut back
    /// to a whole word). Applied after --limit.
    #[arg(long, value_name = "KIND")]
    spans: Option<data::Spans>,
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

/// `--split`: a split of the data, or the validation part that training held out of train.
#[derive(Clone, Copy, clap::ValueEnum)]
enum EvalSplit {
    Test,
    Train,
    Validation,
}

/// The JSON report: what was evaluated, then the evaluation.
#[derive(serde::Serialize)]
struct Report<'a> {
    model: String,
    graph: String,
    /// `--spans`, when the reviews were cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    spans: Option<String>,
    #[serde(flatten)]
    evaluation: &'a Evaluation,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let classifier = args.model.load()?;
    let split = match args.split {
        EvalSplit::Test => Split::Test,
        EvalSplit::Train | EvalSplit::Validation => Split::Train,
    };
    let examples = data::load(&args.data, split)
        .with_context(|| format!("reading {}", args.data.display()))?;
    let examples = match args.split {
        EvalSplit::Validation => {
            data::train_validation_split(examples, args.validation_fraction, args.validation_seed).1
        }
        EvalSplit::Train | EvalSplit::Test => examples,
    };
    let examples = match args.limit {
        Some(limit) => data::take_balanced(examples, limit, args.seed),
        None => examples,
    };
    let examples = match args.spans {
        Some(spans) => spans.cut(&examples),
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
    let evaluation = eval::evaluate(&classifier, &examples, args.batch, |done| {
        progress.inc(done as u64)
    })
    .with_context(|| format!("evaluating on {}", args.data.display()))?;
    progress.finish_and_clear();
    if let Some(path) = &args.predictions {
        write_predictions(path, &evaluation.predictions)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let report = Report {
        model: args.model.dir.display().to_string(),
        graph: classifier.engine().path().display().to_string(),
        spans: args.spans.map(|s| s.to_string()),
        evaluation: &evaluation,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("model      {} ({})", report.model, report.graph);
        if let Some(spans) = &report.spans {
            println!("spans      {spans} of each review, labelled as the review");
        }
        println!("{}", evaluation.overall);
        println!(
            "truncated  {} of {} reviews (head+tail)",
            evaluation.truncated, evaluation.overall.examples
        );
        println!(
            "ece        {:.4} (15 bins, top-label probability)",
            evaluation.ece
        );
        println!("by length (words): accuracy");
        for bucket in &evaluation.by_length {
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
