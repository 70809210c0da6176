//! Gradient tests on the tiny TinyBERT-format fixture (`../shared/fixtures/tinybert-format`):
//! gradients reach every LoRA tensor through LayerNorm and softmax, agree with finite
//! differences, move every trainable tensor and never a frozen one.

use candle_core::{DType, Tensor, Var};

use super::batches::{to_device, DeviceBatch, EncodedSet};
use super::dropout::{DropoutMasks, Mode};
use super::optimizer::{AdamW, AdamWConfig};
use super::{build_model, cross_entropy_sum, Setup, TrainConfig};
use crate::test_inputs::shared;
use crate::tokenizer::TokenBatch;

fn tiny(dtype: DType) -> (Setup, DeviceBatch) {
    tiny_with(dtype, &["query", "value", "dense"])
}

/// The fixture with adapters on `targets`, and a batch of four reviews of different lengths.
fn tiny_with(dtype: DType, targets: &[&str]) -> (Setup, DeviceBatch) {
    let dir = shared("fixtures/tinybert-format");
    let mut config = TrainConfig::new(dir.to_string_lossy(), "unused", "unused");
    config.max_len = 32;
    config.head_len = 16;
    config.lora.targets = targets.iter().map(|t| t.to_string()).collect();
    let setup = build_model(&config, dtype).expect("building the tiny model");
    let texts = [
        ("A wonderful, moving film with a great cast.", 1),
        ("Dull, far too long and badly acted.", 0),
        ("I loved it.", 1),
        ("The worst film I have seen in years <br /> avoid.", 0),
    ];
    let mut set = EncodedSet::default();
    for (text, label) in texts {
        set.items
            .push(setup.tokenizer.encode(text).expect("encoding"));
        set.labels.push(label);
    }
    let batch = to_device(
        &set,
        &[0, 1, 2, 3],
        setup.tokenizer.pad_id(),
        &mut TokenBatch::default(),
        &setup.device,
    )
    .expect("batch");
    (setup, batch)
}

fn loss(setup: &Setup, batch: &DeviceBatch, masks: &DropoutMasks) -> Tensor {
    let logits = setup
        .model
        .forward_t(&batch.ids, &batch.mask, Mode::Train(masks))
        .expect("forward");
    cross_entropy_sum(&logits, &batch.labels).expect("loss")
}

fn values(var: &Var) -> Vec<f64> {
    var.as_tensor()
        .to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f64>())
        .expect("values")
}

#[test]
fn every_trainable_tensor_moves_and_frozen_ones_do_not() {
    let (setup, batch) = tiny(DType::F32);
    let trainable = setup.params.trainable();
    let lora_count = trainable.keys().filter(|k| k.contains(".lora_")).count();
    // 2 layers × (query, value, attention.output.dense, intermediate.dense, output.dense) × (A, B).
    assert_eq!(lora_count, 20);
    let before: Vec<(String, Vec<f64>)> = trainable
        .iter()
        .map(|(name, var)| (name.clone(), values(var)))
        .collect();
    let frozen_before: Vec<(String, Vec<f32>)> = setup
        .params
        .frozen_names()
        .map(|name| {
            let t = setup.params.frozen(name).expect("frozen");
            (
                name.to_string(),
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        })
        .collect();
    let config = AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    };
    let mut optimizer = AdamW::new(trainable, config).expect("optimizer");
    for step in 0..2 {
        let masks = DropoutMasks::new(1, step, &setup.device).expect("masks");
        let grads = loss(&setup, &batch, &masks).backward().expect("backward");
        optimizer.accumulate(&grads).expect("accumulate");
        if step == 0 {
            // B starts at zero, so only B (and the head) get a gradient at first; that B
            // gets one in layer 0 proves gradients cross every LayerNorm and softmax above.
            for (name, _) in trainable.iter().filter(|(n, _)| !n.contains("lora_A")) {
                let grad = optimizer
                    .gradient(name)
                    .unwrap_or_else(|| panic!("no gradient for {name}"));
                let norm = grad
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(norm > 0.0, "zero gradient for {name}");
            }
        }
        optimizer.step(1e-3, Some(1.0)).expect("step");
    }
    for ((name, old), var) in before.iter().zip(trainable.values()) {
        assert_ne!(old, &values(var), "{name} did not change");
    }
    for (name, old) in frozen_before {
        let now = setup
            .params
            .frozen(&name)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(old == now, "frozen {name} changed");
    }
}

#[test]
fn lora_gradient_matches_finite_differences() {
    let (setup, batch) = tiny(DType::F64);
    let trainable = setup.params.trainable();
    // Give every B a non-zero value, so A matters too and the point is generic.
    let mut rng = crate::rng::SplitMix64::new(5);
    for (name, var) in trainable.iter().filter(|(n, _)| n.contains("lora_B")) {
        let random: Vec<f64> = (0..var.elem_count()).map(|_| rng.normal() * 0.05).collect();
        var.set(&Tensor::from_vec(random, var.shape(), var.device()).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for name in [
        "encoder.layer.0.attention.self.query.lora_B.weight",
        "encoder.layer.0.attention.self.value.lora_A.weight",
    ] {
        let var = &trainable[name];
        let masks = || DropoutMasks::new(9, 0, &setup.device).expect("masks");
        let grads = loss(&setup, &batch, &masks()).backward().expect("backward");
        let analytic = grads
            .get(var.as_tensor())
            .expect("gradient")
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let original = values(var);
        let magnitudes: Vec<f64> = analytic.iter().map(|g| g.abs()).collect();
        let index = crate::metrics::argmax(&magnitudes);
        let eps = 1e-6;
        let at = |delta: f64| {
            let mut shifted = original.clone();
            shifted[index] += delta;
            var.set(&Tensor::from_vec(shifted, var.shape(), var.device()).unwrap())
                .unwrap();
            loss(&setup, &batch, &masks()).to_scalar::<f64>().unwrap()
        };
        let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
        var.set(&Tensor::from_vec(original, var.shape(), var.device()).unwrap())
            .unwrap();
        let relative = (numeric - analytic[index]).abs() / analytic[index].abs().max(1e-12);
        assert!(
            relative < 1e-2,
            "{name}[{index}]: analytic {} numeric {numeric} (relative {relative:e})",
            analytic[index]
        );
    }
}

/// The whole model: the fused CPU ops (f32: one op per encoder layer) against the composed
/// graph (f64) on the same weights, batch (with padding) and dropout masks: the loss, and
/// every trainable tensor's gradient within 1e-4 of its norm; with the key unadapted (its
/// gradient is skipped inside the layer op) and with every projection adapted.
#[test]
fn fused_f32_step_matches_the_composed_graph_in_f64() {
    for targets in [
        &["query", "value", "dense"][..],
        &["query", "key", "value", "dense"],
    ] {
        fused_step_matches(targets);
    }
}

fn fused_step_matches(targets: &[&str]) {
    let ((s32, b32), (s64, b64)) = (
        tiny_with(DType::F32, targets),
        tiny_with(DType::F64, targets),
    );
    // Non-zero B everywhere, the same values in both models, so every path carries gradient.
    let mut rng = crate::rng::SplitMix64::new(11);
    let (t32, t64) = (s32.params.trainable(), s64.params.trainable());
    for (name, var) in t32.iter().filter(|(n, _)| n.contains("lora_B")) {
        let random: Vec<f32> = (0..var.elem_count())
            .map(|_| (rng.normal() * 0.05) as f32)
            .collect();
        let t = Tensor::from_vec(random, var.shape(), var.device()).unwrap();
        var.set(&t).unwrap();
        t64[name].set(&t.to_dtype(DType::F64).unwrap()).unwrap();
    }
    let masks = || DropoutMasks::new(4, 0, &s32.device).expect("masks");
    let (l32, l64) = (loss(&s32, &b32, &masks()), loss(&s64, &b64, &masks()));
    let (v32, v64) = (
        l32.to_scalar::<f32>().unwrap() as f64,
        l64.to_scalar::<f64>().unwrap(),
    );
    assert!((v32 - v64).abs() < 1e-4 * v64.abs(), "loss {v32} vs {v64}");
    let (g32, g64) = (l32.backward().unwrap(), l64.backward().unwrap());
    for (name, var) in t32.iter() {
        let fused = g32
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let composed = g64
            .get(t64[name].as_tensor())
            .unwrap_or_else(|| panic!("{name}: none in f64"));
        let difference = (fused.to_dtype(DType::F64).unwrap() - composed)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let norm = composed
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(
            difference <= 1e-4 * norm + 1e-7,
            "{name}: |fused - composed| {difference:e}, |composed| {norm:e}"
        );
    }
}
