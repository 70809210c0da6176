//! The workload `benches/arm_insns.sh` counts under qemu: loads a model directory, then
//! classifies one text cut to exactly `tokens` word pieces `runs` times on one thread, and
//! prints the last verdict.
//!
//! ```text
//! classify_repeat <model dir> <tokens> <runs>
//! ```
//!
//! The first run also builds the plan of its length; the counting script takes the difference
//! between two run counts, so loading, planning and start-up cancel out.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use sentimq::classifier::Classifier;

/// A review long enough to fill any window the shipped models have once repeated.
const REVIEW: &str = "A thoughtful, beautifully shot film: the cast is superb, the story \
    takes its time, and the ending stayed with me for days. ";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("classify_repeat: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, tokens, runs] = args.as_slice() else {
        bail!("usage: classify_repeat <model dir> <tokens> <runs>");
    };
    let dir = PathBuf::from(dir);
    let tokens: usize = tokens.parse().context("<tokens>")?;
    let runs: usize = runs.parse().context("<runs>")?;
    sentimq::engine::set_intra_op_threads(1);
    let classifier = Classifier::load(&dir, None)
        .with_context(|| format!("loading {}", dir.display()))?
        .with_max_tokens(tokens)
        .context("<tokens>")?;
    let text = REVIEW.repeat(tokens / 20 + 1);
    let mut last = None;
    for _ in 0..runs {
        last = classifier.classify(&[&text])?.pop();
    }
    let Some(verdict) = last else {
        bail!("<runs> must be at least 1");
    };
    if verdict.tokens != tokens {
        bail!("the text filled {} tokens, not {tokens}", verdict.tokens);
    }
    println!(
        "{} {:.4} tokens={}",
        verdict.label, verdict.score, verdict.tokens
    );
    Ok(())
}
