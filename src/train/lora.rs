//! Linear layers with an optional low-rank adapter, and the adapter's initialisation.
//!
//! `y = x·Wᵀ + b + (dropout(x)·Aᵀ·Bᵀ)·(α/r)`, as PEFT's `lora.Linear.forward` computes it
//! (<https://github.com/huggingface/peft/blob/v0.13.2/src/peft/tuners/lora/layer.py>): `W`
//! and `b` frozen, `A (r, in)` initialised like PyTorch's `kaiming_uniform_(a=√5)` (uniform in
//! `±1/√in`, from the run's seed), `B (out, r)` zeros, so training starts from the base model.
//! Whether a layer is adapted is decided by the parameters it is loaded from: a
//! `lora_A.weight` next to its `weight` makes it a LoRA layer.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::dropout::Mode;
use super::fused;
use crate::checkpoint::{BertConfig, Tensor as HostTensor, TensorMap};
use crate::rng::SplitMix64;

/// The linear layers of one encoder layer that LoRA may target, by their name inside the layer.
pub const LAYER_LINEARS: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

/// Rank, scaling and targets of the adapters.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraSettings {
    /// Rank `r` of each update.
    pub r: usize,
    /// Scaling numerator `α`; updates are scaled by `α/r`.
    pub alpha: f64,
    /// Dropout on the adapter's input during training.
    pub dropout: f64,
    /// Module names or suffixes, PEFT-style: `query` adapts every `...attention.self.query`.
    pub targets: Vec<String>,
}

impl LoraSettings {
    /// The scaling `α/r` applied to `B·A`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }

    /// The canonical module names (`encoder.layer.0.attention.self.query`) these settings adapt,
    /// following PEFT's rule: a module is targeted when its name equals a target or ends with
    /// `.target`.
    ///
    /// Errors: the first target matching no linear layer of the encoder.
    pub fn modules(&self, config: &BertConfig) -> std::result::Result<Vec<String>, String> {
        let matches = |module: &str, target: &str| {
            module == target || module.ends_with(&format!(".{target}"))
        };
        if let Some(unknown) = self
            .targets
            .iter()
            .find(|t| !LAYER_LINEARS.iter().any(|m| matches(m, t)))
        {
            return Err(unknown.clone());
        }
        Ok((0..config.num_hidden_layers)
            .flat_map(|layer| {
                LAYER_LINEARS
                    .iter()
                    .filter(|m| self.targets.iter().any(|t| matches(m, t)))
                    .map(move |m| format!("encoder.layer.{layer}.{m}"))
            })
            .collect())
    }
}

/// Adds `{module}.lora_A.weight` (seeded Kaiming-uniform) and `{module}.lora_B.weight` (zeros)
/// for each module to `weights`, whose `{module}.weight` gives the shapes.
pub fn init_adapters(weights: &mut TensorMap, modules: &[String], r: usize, seed: u64) {
    let mut rng = SplitMix64::new(seed ^ 0x4C6F_5241);
    for module in modules {
        let Some(base) = weights.get(&format!("{module}.weight")) else {
            continue;
        };
        let (out, inp) = (base.shape[0], base.shape[1]);
        let bound = 1.0 / (inp as f64).sqrt();
        let a = (0..r * inp)
            .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
            .collect();
        weights.insert(
            format!("{module}.lora_A.weight"),
            HostTensor {
                shape: vec![r, inp],
                data: a,
            },
        );
        weights.insert(
            format!("{module}.lora_B.weight"),
            HostTensor {
                shape: vec![out, r],
                data: vec![0.0; out * r],
            },
        );
    }
}

/// The low-rank part of an adapted layer.
struct LowRank {
    /// `(r, in)`.
    a: Tensor,
    /// `(out, r)`.
    b: Tensor,
    scale: f64,
    dropout: f64,
}

/// `nn.Linear`, optionally with a LoRA update.
pub struct LoraLinear {
    /// `(out, in)`, PyTorch layout.
    weight: Tensor,
    /// `(out)`.
    bias: Tensor,
    lora: Option<LowRank>,
}

impl LoraLinear {
    /// Loads `weight (out, in)` and `bias (out)` from `vb`, plus `lora_A.weight (r, in)` and
    /// `lora_B.weight (out, r)` where `vb` has them.
    pub fn load(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        lora: &LoraSettings,
    ) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = vb.get(out_dim, "bias")?;
        let lora = if vb.contains_tensor("lora_A.weight") {
            Some(LowRank {
                a: vb.get((lora.r, in_dim), "lora_A.weight")?,
                b: vb.get((out_dim, lora.r), "lora_B.weight")?,
                scale: lora.scale(),
                dropout: lora.dropout,
            })
        } else {
            None
        };
        Ok(LoraLinear { weight, bias, lora })
    }

    /// The frozen weight `(out, in)` and bias, and the adapter's `A (r, in)`, `B (out, r)`,
    /// scale and input dropout, if adapted.
    pub(super) fn parts(&self) -> (&Tensor, &Tensor, Option<fused::AdapterParts<'_>>) {
        let adapter = self.lora.as_ref().map(|l| fused::AdapterParts {
            a: &l.a,
            b: &l.b,
            scale: l.scale,
            dropout: l.dropout,
        });
        (&self.weight, &self.bias, adapter)
    }

    /// `xs (.., in) -> (.., out)`; LoRA dropout only in training.
    pub fn forward_t(&self, xs: &Tensor, mode: Mode) -> Result<Tensor> {
        match &self.lora {
            Some(lora) => fused::lora_linear(
                xs,
                &self.weight,
                &self.bias,
                &lora.a,
                &lora.b,
                lora.scale,
                lora.dropout,
                mode,
            ),
            None => fused::linear(xs, &self.weight, &self.bias),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    fn settings(targets: &[&str]) -> LoraSettings {
        LoraSettings {
            r: 2,
            alpha: 4.0,
            dropout: 0.0,
            targets: targets.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn targets_follow_peft_suffix_rule() {
        let config = BertConfig {
            num_hidden_layers: 2,
            ..BertConfig::default()
        };
        let modules = settings(&["query", "value"]).modules(&config).unwrap();
        assert_eq!(
            modules,
            [
                "encoder.layer.0.attention.self.query",
                "encoder.layer.0.attention.self.value",
                "encoder.layer.1.attention.self.query",
                "encoder.layer.1.attention.self.value"
            ]
        );
        let dense = settings(&["dense"]).modules(&config).unwrap();
        assert_eq!(dense.len(), 6);
        assert_eq!(settings(&["qkv"]).modules(&config), Err("qkv".into()));
    }

    #[test]
    fn lora_adds_scaled_low_rank_update() {
        let device = Device::Cpu;
        let t = |data: Vec<f32>, shape: &[usize]| Tensor::from_vec(data, shape, &device).unwrap();
        let tensors = HashMap::from([
            ("weight".to_string(), t(vec![1., 0., 0., 1.], &[2, 2])),
            ("bias".to_string(), t(vec![0.5, -0.5], &[2])),
            (
                "lora_A.weight".to_string(),
                t(vec![1., 1., 0., 1.], &[2, 2]),
            ),
            (
                "lora_B.weight".to_string(),
                t(vec![1., 0., 0., 2.], &[2, 2]),
            ),
        ]);
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let layer = LoraLinear::load(vb, 2, 2, &settings(&["query"])).unwrap();
        assert!(layer.lora.is_some());
        let x = t(vec![1., 2.], &[1, 1, 2]);
        let y = layer.forward_t(&x, Mode::Eval).unwrap();
        // x·Wᵀ + b = [1.5, 1.5]; x·Aᵀ = [3, 2]; ·Bᵀ = [3, 4]; × α/r = 2 → [6, 8].
        assert_eq!(y.dims(), [1, 1, 2]);
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [7.5, 9.5]
        );
    }

    #[test]
    fn init_is_seeded_kaiming_uniform_and_zero_b() {
        let mut weights = TensorMap::new();
        weights.insert(
            "m.weight".into(),
            HostTensor {
                shape: vec![3, 16],
                data: vec![0.0; 48],
            },
        );
        let mut again = weights.clone();
        init_adapters(&mut weights, &["m".into()], 4, 1);
        init_adapters(&mut again, &["m".into()], 4, 1);
        let a = &weights["m.lora_A.weight"];
        assert_eq!(a.shape, [4, 16]);
        assert!(a.data.iter().all(|v| v.abs() <= 0.25) && a.data.iter().any(|v| *v != 0.0));
        assert_eq!(a, &again["m.lora_A.weight"]);
        assert!(weights["m.lora_B.weight"].data.iter().all(|&v| v == 0.0));
    }
}
