//! Each fused op (f32) against candle's autograd of the composed reference graph run in f64
//! on the same values: outputs and every gradient within relative 1e-4, absolute 1e-5.

use candle_core::{DType, Device, Tensor, Var};

use super::*;
use crate::rng::SplitMix64;
use crate::train::dropout::DropoutMasks;

/// A test input: its values, and whether it is trained (a `Var`) or frozen.
struct Input {
    values: Tensor,
    trained: bool,
}

fn input(shape: &[usize], trained: bool, rng: &mut SplitMix64) -> Input {
    scaled_input(shape, trained, 1.0, rng)
}

/// Normal values times `scale`.
fn scaled_input(shape: &[usize], trained: bool, scale: f64, rng: &mut SplitMix64) -> Input {
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| (rng.normal() * scale) as f32).collect();
    Input {
        values: Tensor::from_vec(data, shape, &Device::Cpu).expect("tensor"),
        trained,
    }
}

/// The inputs in `dtype`, trained ones as variables.
fn leaves(inputs: &[Input], dtype: DType) -> Vec<Tensor> {
    inputs
        .iter()
        .map(|i| {
            let t = i.values.to_dtype(dtype).unwrap();
            if i.trained {
                Var::from_tensor(&t).unwrap().as_tensor().clone()
            } else {
                t
            }
        })
        .collect()
}

fn assert_close(name: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims(), "{name}: shapes");
    let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = want
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= 1e-5 + 1e-4 * w.abs(),
            "{name}[{i}]: fused {g} vs composed {w}"
        );
    }
}

/// Compares `fused` on f32 leaves with `composed` on f64 leaves of the same values: outputs,
/// and the gradients of `Σ y · w` (random `w`) for every input; frozen inputs get none from
/// the fused op.
fn check(
    name: &str,
    inputs: &[Input],
    fused: impl Fn(&[Tensor]) -> Tensor,
    composed: impl Fn(&[Tensor]) -> Tensor,
    rng: &mut SplitMix64,
) {
    let (f32s, f64s) = (leaves(inputs, DType::F32), leaves(inputs, DType::F64));
    let (y_fused, y_composed) = (fused(&f32s), composed(&f64s));
    assert_eq!(
        y_fused.dtype(),
        DType::F32,
        "{name}: the fused path was not taken"
    );
    assert_close(&format!("{name} output"), &y_fused, &y_composed);
    let w = input(y_fused.dims(), false, rng).values;
    let g_fused = y_fused
        .mul(&w)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let w64 = w.to_dtype(DType::F64).unwrap();
    let g_composed = y_composed
        .mul(&w64)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (i, input) in inputs.iter().enumerate() {
        match (g_fused.get(&f32s[i]), g_composed.get(&f64s[i])) {
            (Some(f), Some(c)) if input.trained => {
                assert_close(&format!("{name} gradient {i}"), f, c)
            }
            (None, _) if !input.trained => {}
            (f, _) => panic!(
                "{name} input {i} (trained {}): fused gradient {:?}",
                input.trained,
                f.map(|t| t.dims().to_vec())
            ),
        }
    }
}

#[test]
fn linear_matches_composed_with_trained_and_frozen_weights() {
    let mut rng = SplitMix64::new(1);
    // 600 rows: more than one of the kernel's row blocks.
    for trained in [true, false] {
        let inputs = [
            input(&[2, 300, 24], true, &mut rng),
            input(&[19, 24], trained, &mut rng),
            input(&[19], trained, &mut rng),
        ];
        check(
            "linear",
            &inputs,
            |t| linear(&t[0], &t[1], &t[2]).unwrap(),
            |t| composed::linear(&t[0], &t[1], &t[2]).unwrap(),
            &mut rng,
        );
    }
}

#[test]
fn lora_linear_matches_composed_with_dropout() {
    let mut rng = SplitMix64::new(6);
    let inputs = [
        input(&[2, 300, 24], true, &mut rng),
        input(&[19, 24], false, &mut rng),
        input(&[19], false, &mut rng),
        // Adapter scales as LoRA's initialisation gives A (Kaiming-uniform, ~1/sqrt(in)).
        scaled_input(&[4, 24], true, 0.2, &mut rng),
        scaled_input(&[19, 4], true, 0.2, &mut rng),
    ];
    for p in [0.0, 0.1] {
        let masks = || DropoutMasks::new(8, 2, &Device::Cpu).unwrap();
        let run = |t: &[Tensor], f: &dyn Fn(&[Tensor], &DropoutMasks) -> Result<Tensor>| {
            f(t, &masks()).unwrap()
        };
        check(
            &format!("lora linear (dropout {p})"),
            &inputs,
            |t| {
                run(t, &|t, m| {
                    lora_linear(&t[0], &t[1], &t[2], &t[3], &t[4], 0.5, p, Mode::Train(m))
                })
            },
            |t| {
                run(t, &|t, m| {
                    composed::lora_linear(&t[0], &t[1], &t[2], &t[3], &t[4], 0.5, p, Mode::Train(m))
                })
            },
            &mut rng,
        );
    }
}

#[test]
fn layer_norm_matches_composed() {
    let mut rng = SplitMix64::new(2);
    for trained in [true, false] {
        let inputs = [
            input(&[3, 70, 32], true, &mut rng),
            input(&[32], trained, &mut rng),
            input(&[32], trained, &mut rng),
        ];
        check(
            "layer norm",
            &inputs,
            |t| layer_norm(&t[0], &t[1], &t[2], 1e-12).unwrap(),
            |t| composed::layer_norm(&t[0], &t[1], &t[2], 1e-12).unwrap(),
            &mut rng,
        );
    }
}

#[test]
fn gelu_matches_candle() {
    let mut rng = SplitMix64::new(3);
    check(
        "gelu",
        &[input(&[5, 1000], true, &mut rng)],
        |t| gelu_erf(&t[0]).unwrap(),
        |t| t[0].gelu_erf().unwrap(),
        &mut rng,
    );
}

#[test]
fn dropout_matches_composed() {
    let mut rng = SplitMix64::new(4);
    let mask = DropoutMask::new(77, 0.1);
    check(
        "dropout",
        &[input(&[7, 4099], true, &mut rng)],
        |t| dropout(&t[0], mask).unwrap(),
        |t| composed::dropout(&t[0], mask).unwrap(),
        &mut rng,
    );
}

#[test]
fn attention_matches_composed_with_padding_and_dropout() {
    let mut rng = SplitMix64::new(5);
    let (batch, seq, heads, head_dim) = (3, 9, 4, 8);
    // The second sequence has 5 tokens, the third 1.
    let mut keep = vec![1f32; batch * seq];
    keep[seq + 5..2 * seq].fill(0.0);
    keep[2 * seq + 1..].fill(0.0);
    let keep = Tensor::from_vec(keep, (batch, seq), &Device::Cpu).unwrap();
    let (mask32, mask64) = (
        AttentionMask::new(&keep, DType::F32).unwrap(),
        AttentionMask::new(&keep, DType::F64).unwrap(),
    );
    for (p, k_trained) in [(0.0, true), (0.1, true), (0.1, false)] {
        let inputs = [
            input(&[batch, seq, heads * head_dim], true, &mut rng),
            input(&[batch, seq, heads * head_dim], k_trained, &mut rng),
            input(&[batch, seq, heads * head_dim], true, &mut rng),
        ];
        let settings = AttentionSettings {
            heads,
            head_dim,
            dropout: p,
        };
        let masks = || DropoutMasks::new(3, 1, &Device::Cpu).unwrap();
        check(
            &format!("attention (dropout {p}, key trained {k_trained})"),
            &inputs,
            |t| {
                attention(
                    &t[0],
                    &t[1],
                    &t[2],
                    &mask32,
                    &settings,
                    Mode::Train(&masks()),
                )
                .unwrap()
            },
            |t| {
                composed::attention(
                    &t[0],
                    &t[1],
                    &t[2],
                    &mask64.bias,
                    &settings,
                    Mode::Train(&masks()),
                )
                .unwrap()
            },
            &mut rng,
        );
    }
}

#[test]
fn residual_layer_norm_matches_composed() {
    let mut rng = SplitMix64::new(7);
    let inputs = [
        input(&[3, 70, 32], true, &mut rng),
        input(&[3, 70, 32], true, &mut rng),
        input(&[32], false, &mut rng),
        input(&[32], false, &mut rng),
    ];
    for p in [0.0, 0.1] {
        let masks = || DropoutMasks::new(5, 3, &Device::Cpu).unwrap();
        let run = |t: &[Tensor]| {
            residual_layer_norm(&t[0], &t[1], &t[2], &t[3], 1e-12, p, Mode::Train(&masks()))
                .unwrap()
        };
        check(
            &format!("residual layer norm (dropout {p})"),
            &inputs,
            run,
            |t| {
                let m = masks();
                let sum = (Mode::Train(&m).dropout(&t[0], p).unwrap() + &t[1]).unwrap();
                composed::layer_norm(&sum, &t[2], &t[3], 1e-12).unwrap()
            },
            &mut rng,
        );
    }
}
