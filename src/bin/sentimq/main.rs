//! `sentimq`: the workstation tool — build, classify, evaluate and benchmark sentiment models.
//!
//! Each subcommand parses its flags, calls one library entry point and prints the result.

mod bench;
mod build;
mod classify;
mod eval;
#[cfg(feature = "train")]
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sentimq::classifier::Classifier;

/// Fine-tuned BERT sentiment models for small devices: build, check and measure them.
#[derive(Parser)]
#[command(name = "sentimq", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Merge a LoRA adapter into a base checkpoint and write f32 + int8 ONNX graphs.
    Build(build::Args),
    /// Classify texts given as arguments, or one per line on stdin; prints JSON lines.
    Classify(classify::Args),
    /// Accuracy, precision, recall, F1 and confusion matrix on a labelled dataset.
    Eval(eval::Args),
    /// Load time, latency per sequence length and throughput of a model's graph.
    Bench(bench::Args),
    /// Fine-tune a BERT checkpoint on IMDB with LoRA (or fully) and write a PEFT adapter.
    #[cfg(feature = "train")]
    Train(train::Args),
    /// Fine-tune a BERT checkpoint on IMDB (needs the `train` feature).
    #[cfg(not(feature = "train"))]
    Train {
        /// Whatever flags were given: this build cannot train, and says so.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
}

/// `--model` and `--graph`: the built model `classify` and `eval` load.
#[derive(clap::Args)]
struct ModelArgs {
    /// Model directory (model.json, tokenizer.json, graphs).
    #[arg(long = "model", default_value = "models/imdb-minilm")]
    dir: PathBuf,
    /// Graph file inside the model directory (default: the one model.json names).
    #[arg(long)]
    graph: Option<String>,
    /// Read at most this many word pieces per text, [CLS] and [SEP] included (head+tail, the
    /// head at most half), instead of the model's window (default: model.json's; at most that).
    #[arg(long, value_name = "TOKENS")]
    max_tokens: Option<usize>,
}

impl ModelArgs {
    /// Loads the model directory with the chosen graph.
    fn load(&self) -> anyhow::Result<Classifier> {
        let classifier = Classifier::load(&self.dir, self.graph.as_deref())
            .with_context(|| format!("loading model from {}", self.dir.display()))?;
        match self.max_tokens {
            Some(max_tokens) => classifier
                .with_max_tokens(max_tokens)
                .context("--max-tokens"),
            None => Ok(classifier),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Inference reuses each run's activations instead of faulting them in again (training sets
    // its own allocator tunables).
    sentimq::allocator::keep_freed_memory();
    let result = match cli.command {
        Command::Build(args) => build::run(args),
        Command::Classify(args) => classify::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        #[cfg(feature = "train")]
        Command::Train(args) => train::run(args),
        #[cfg(not(feature = "train"))]
        Command::Train { .. } => Err(anyhow::anyhow!(
            "this sentimq was built without training; rebuild with `cargo build --release --features train`"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", sentimq::error_text::describe(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}
