//! `sentimq bench`.

use std::path::PathBuf;

use anyhow::Context;
use sentimq::bench::{self, BenchOptions};
use sentimq::manifest::ModelManifest;

/// Flags of `sentimq bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory.
    #[arg(long, default_value = "models/imdb-minilm")]
    model: PathBuf,
    /// Graph files inside the model directory to measure (default: the one model.json names).
    #[arg(long)]
    graph: Vec<String>,
    /// Timed runs per latency cell.
    #[arg(long, default_value_t = 30)]
    iterations: usize,
    /// Thread counts to measure (repeatable; default: 1 and all cores).
    #[arg(long)]
    threads: Vec<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let graphs = if args.graph.is_empty() {
        let manifest = ModelManifest::read(&args.model)
            .with_context(|| format!("reading {}", args.model.display()))?;
        vec![manifest.default_graph]
    } else {
        args.graph
    };
    let mut options = BenchOptions {
        iterations: args.iterations,
        ..BenchOptions::default()
    };
    if !args.threads.is_empty() {
        options.threads = args.threads;
    }
    let mut reports = Vec::new();
    for graph in graphs {
        let path = args.model.join(&graph);
        let report = bench::run(&path, &options)
            .with_context(|| format!("benchmarking {}", path.display()))?;
        reports.push(report);
    }
    println!("{}", serde_json::to_string_pretty(&reports)?);
    Ok(())
}
