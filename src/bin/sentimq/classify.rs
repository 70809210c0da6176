//! `sentimq classify`.

use std::io::{BufRead, Write};

use anyhow::Context;
use sentimq::classifier::Classification;
use sentimq::error_text::describe;
use serde::Serialize;

use crate::ModelArgs;

/// Flags of `sentimq classify`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Report `uncertain` as the label of a text whose most probable label's probability is
    /// below this (its `score` and `scores` unchanged); 0 = never. The shipped model's scores
    /// are calibrated: models/README.md lists how many texts each threshold holds back.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    uncertain_below: f32,
    /// Texts to classify; without any, one text per line is read from stdin.
    texts: Vec<String>,
}

/// A number from 0 up to (not including) 1.
fn probability(raw: &str) -> Result<f32, String> {
    raw.parse::<f32>()
        .ok()
        .filter(|p| (0.0..1.0).contains(p))
        .ok_or_else(|| format!("{raw:?}: expected a number from 0 up to (not including) 1"))
}

#[derive(Serialize)]
struct Line<'a> {
    text: &'a str,
    label: &'a str,
    score: f32,
    scores: serde_json::Map<String, serde_json::Value>,
    tokens: usize,
    truncated: bool,
}

#[derive(Serialize)]
struct ErrorLine<'a> {
    text: &'a str,
    error: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let classifier = args.model.load()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failures = 0usize;
    // A text that cannot be classified gets an error line; the others go on.
    // Returns whether the text failed.
    let classify_one = |text: &str, out: &mut dyn Write| -> anyhow::Result<bool> {
        match classifier.classify(&[text]) {
            Ok(mut results) => {
                write_line(out, text, &results.remove(0), args.uncertain_below).map(|()| false)
            }
            Err(error) => write_error(out, text, describe(&error)).map(|()| true),
        }
    };
    if args.texts.is_empty() {
        let mut reader = std::io::stdin().lock();
        let mut line = Vec::new();
        let mut number = 0;
        loop {
            line.clear();
            if reader
                .read_until(b'\n', &mut line)
                .context("reading stdin")?
                == 0
            {
                break;
            }
            number += 1;
            match std::str::from_utf8(&line) {
                Ok(text) => {
                    failures +=
                        usize::from(classify_one(text.trim_end_matches(['\n', '\r']), &mut out)?)
                }
                Err(_) => {
                    let lossy = String::from_utf8_lossy(&line);
                    write_error(
                        &mut out,
                        lossy.trim_end(),
                        format!("stdin line {number} is not valid UTF-8"),
                    )?;
                    failures += 1;
                }
            }
        }
    } else {
        for text in &args.texts {
            failures += usize::from(classify_one(text, &mut out)?);
        }
    }
    if failures > 0 {
        anyhow::bail!("{failures} text(s) could not be classified (see the error lines)");
    }
    Ok(())
}

fn write_error(out: &mut dyn Write, text: &str, error: String) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, &ErrorLine { text, error })?;
    writeln!(out)?;
    Ok(())
}

fn write_line(
    out: &mut dyn Write,
    text: &str,
    result: &Classification,
    uncertain_below: f32,
) -> anyhow::Result<()> {
    let scores = result
        .scores
        .iter()
        .map(|(label, p)| (label.clone(), serde_json::json!(p)))
        .collect();
    let line = Line {
        text,
        label: result.label_unless_below(uncertain_below),
        score: result.score,
        scores,
        tokens: result.tokens,
        truncated: result.truncated,
    };
    serde_json::to_writer(&mut *out, &line)?;
    writeln!(out)?;
    Ok(())
}
