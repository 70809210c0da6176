//! CI's share of fuzzing: every committed input of `fuzz/corpus/<target>/` (seeds, inputs
//! libFuzzer kept for their coverage, and every crash found, once fixed), then a fixed number of
//! mutations of them. Coverage-guided runs are `scripts/fuzz.sh`'s.

use std::path::{Path, PathBuf};

use super::{SEPARATOR, TARGETS};
use crate::rng::SplitMix64;

/// Mutated inputs run per target on every test run (a few seconds each).
const MUTATIONS: usize = 2_000;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// The committed inputs of `target`, by file name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: the fuzz corpus is missing ({e})", dir.display()));
    let mut inputs: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry.expect("a readable corpus directory").path();
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: unreadable ({e})", path.display()));
            (path.display().to_string(), bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{}: no seed inputs", dir.display());
    inputs
}

/// One random edit of `input`: flip, insert, delete, duplicate, splice with `other`, or insert
/// a byte string parsers treat specially.
fn mutate(rng: &mut SplitMix64, input: &mut Vec<u8>, other: &[u8]) {
    const SPECIAL: &[&[u8]] = &[
        &[SEPARATOR],
        b"{",
        b"}",
        b"[",
        b"\"",
        b"\\u0000",
        b"\\ud800",
        b"\xc3",
        b"\xf0\x9f\x98",
        b"\x00",
        b"1e999",
        b"-1",
        b"18446744073709551616",
        b"=",
        b"\n",
        b"#",
        b"+",
        b"/",
        b"  ",
        b"\x80\x02",
    ];
    let at = |rng: &mut SplitMix64, len: usize| rng.below(len + 1);
    match rng.below(6) {
        0 if !input.is_empty() => {
            let i = rng.below(input.len());
            input[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = at(rng, input.len());
            input.insert(i, rng.next_u64() as u8);
        }
        2 if !input.is_empty() => {
            let start = rng.below(input.len());
            let end = (start + 1 + rng.below(16)).min(input.len());
            input.drain(start..end);
        }
        3 if !input.is_empty() => {
            let start = rng.below(input.len());
            let end = (start + 1 + rng.below(64)).min(input.len());
            let copy = input[start..end].to_vec();
            let i = at(rng, input.len());
            input.splice(i..i, copy);
        }
        4 if !other.is_empty() => {
            let start = rng.below(other.len());
            let end = (start + 1 + rng.below(256)).min(other.len());
            let i = at(rng, input.len());
            input.splice(i..i, other[start..end].iter().copied());
        }
        _ => {
            let special = SPECIAL[rng.below(SPECIAL.len())];
            let i = at(rng, input.len());
            input.splice(i..i, special.iter().copied());
        }
    }
}

/// Runs `target` on `input`, naming the input and a way to reproduce it if it panics.
fn run(name: &str, target: fn(&[u8]), label: &str, input: &[u8]) {
    let result = std::panic::catch_unwind(|| target(input));
    if result.is_err() {
        let path = std::env::temp_dir().join(format!("sentimq-fuzz-{name}-failure"));
        let _ = std::fs::write(&path, input);
        panic!(
            "fuzz target {name} failed on {label}; the input is in {} (add it to fuzz/corpus/{name}/ once fixed)",
            path.display()
        );
    }
}

fn replay_and_mutate(name: &str) {
    let target = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
        .expect("a known target");
    let inputs = corpus(name);
    for (label, input) in &inputs {
        run(name, target, label, input);
    }
    let mut rng = SplitMix64::new(0x5E47_1F00_u64.wrapping_add(name.len() as u64));
    for round in 0..MUTATIONS {
        let (_, seed) = &inputs[rng.below(inputs.len())];
        let (_, other) = &inputs[rng.below(inputs.len())];
        let mut input = seed.clone();
        for _ in 0..1 + rng.below(8) {
            mutate(&mut rng, &mut input, other);
        }
        run(name, target, &format!("mutation {round}"), &input);
    }
}

#[test]
fn every_target_has_a_corpus_and_a_cargo_fuzz_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, _) in TARGETS {
        corpus(name);
        let source = root.join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&source)
            .unwrap_or_else(|e| panic!("{}: missing ({e})", source.display()));
        assert!(
            text.contains(&format!("fuzzing::{name}(")),
            "{}",
            source.display()
        );
    }
}

#[test]
fn mqtt_input_corpus_and_mutations() {
    replay_and_mutate("mqtt_input");
}

#[test]
fn config_file_corpus_and_mutations() {
    replay_and_mutate("config_file");
}

#[test]
fn model_manifest_corpus_and_mutations() {
    replay_and_mutate("model_manifest");
}

#[test]
fn tokenizer_text_corpus_and_mutations() {
    replay_and_mutate("tokenizer_text");
}

#[test]
fn checkpoint_file_corpus_and_mutations() {
    replay_and_mutate("checkpoint_file");
}
