//! `sentimq bench`.

use std::path::PathBuf;

use anyhow::Context;
use sentimq::bench::daemon::DaemonBenchOptions;
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
    /// Sequence lengths (tokens) of the batch-1 latency table, comma-separated (default:
    /// 16,32,64,128,256), e.g. up to 512 for a model with that window.
    #[arg(long, value_delimiter = ',', conflicts_with = "mqtt")]
    sequences: Vec<usize>,
    /// Thread counts to measure (repeatable; default: 1 and all cores). With --mqtt the first
    /// one (default: all cores) is the daemon's intra-op thread count.
    #[arg(long)]
    threads: Vec<usize>,
    /// Measure the daemon end to end through an MQTT broker instead: throughput against the
    /// engine alone, added latency, memory and start-up time.
    #[arg(long)]
    mqtt: bool,
    /// With --mqtt: the sentimqd binary (default: next to this one).
    #[arg(long, requires = "mqtt")]
    sentimqd: Option<PathBuf>,
    /// With --mqtt: a running broker, `host:port` (default: start a private mosquitto).
    #[arg(long, requires = "mqtt")]
    server: Option<String>,
    /// With --mqtt: the mosquitto binary to start.
    #[arg(long, requires = "mqtt", default_value = "mosquitto")]
    mosquitto: PathBuf,
    /// With --mqtt: texts to send, from an aclImdb directory/.tar.gz, .parquet/.csv/.jsonl
    /// or `imdb` (test split); default: built-in sample reviews.
    #[arg(long, requires = "mqtt")]
    data: Option<PathBuf>,
    /// With --mqtt: messages in the throughput run.
    #[arg(long, requires = "mqtt", default_value_t = 2000)]
    messages: usize,
    /// With --mqtt: messages sent one at a time for latency.
    #[arg(long, requires = "mqtt", default_value_t = 200)]
    latency_samples: usize,
    /// With --mqtt: the daemon's pipeline.max_batch (and the engine's batch size).
    #[arg(long, requires = "mqtt", default_value_t = 16)]
    max_batch: usize,
}

/// Reviews for `--mqtt` runs without `--data`.
const SAMPLE_REVIEWS: &[&str] = &[
    "A wonderful, moving film. The cast is superb and the final act had me in tears.",
    "Dull, far too long, and the plot makes no sense. I checked my watch every ten minutes.",
    "I went in expecting little and came out delighted: sharp writing, great pacing, real heart.",
    "The acting is wooden and the dialogue is painful. A waste of two hours and a good premise.",
    "Not perfect, but the performances carry it, and the soundtrack is gorgeous.",
    "Predictable from the first scene; even the twist was telegraphed. Skip it.",
];

fn run_mqtt(args: &Args) -> anyhow::Result<()> {
    let sentimqd = match &args.sentimqd {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .with_file_name("sentimqd"),
    };
    let server = match &args.server {
        Some(server) => {
            let (host, port) = server
                .rsplit_once(':')
                .with_context(|| format!("--server {server:?}: expected host:port"))?;
            let port = port
                .parse()
                .with_context(|| format!("--server {server:?}: bad port"))?;
            Some((host.to_string(), port))
        }
        None => None,
    };
    let texts = match &args.data {
        Some(path) => {
            let examples = sentimq::data::load(path, sentimq::data::Split::Test)
                .with_context(|| format!("reading {}", path.display()))?;
            let examples = sentimq::data::take_balanced(examples, args.messages.max(1), 0);
            examples
                .iter()
                .map(|e| sentimq::data::clean_text(&e.text))
                .collect()
        }
        None => SAMPLE_REVIEWS.iter().map(|t| t.to_string()).collect(),
    };
    let options = DaemonBenchOptions {
        model: args.model.clone(),
        sentimqd,
        server,
        mosquitto: args.mosquitto.clone(),
        texts,
        messages: args.messages,
        latency_samples: args.latency_samples,
        threads: args
            .threads
            .first()
            .copied()
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        max_batch: args.max_batch.max(1),
    };
    let report = bench::daemon::run(&options).context("daemon benchmark")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.mqtt {
        return run_mqtt(&args);
    }
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
    if !args.sequences.is_empty() {
        options.latency_sequences = args.sequences;
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
