//! A plain-Rust f32 forward pass of the classifier, the independent reference the build checks
//! the exported graph against (no tract, no candle: loops anyone can read).
//!
//! One unpadded sequence at a time; speed is irrelevant, clarity is the point.

use crate::checkpoint::{BertConfig, HiddenAct, Tensor, TensorMap};
use crate::pooling::Pooling;

use super::Error;

/// Outputs of the reference forward pass for one sequence.
pub struct ReferenceOutput {
    /// `(sequence, hidden)` final hidden states.
    pub hidden: Vec<f32>,
    /// `(hidden)` pooler output.
    pub pooled: Vec<f32>,
    /// `(labels)` logits.
    pub logits: Vec<f32>,
}

/// Runs the classifier on one sequence of token ids (all attended), pooling as `pooling` says.
pub fn forward(
    weights: &TensorMap,
    config: &BertConfig,
    pooling: Pooling,
    ids: &[u32],
) -> Result<ReferenceOutput, Error> {
    let get = |name: &str| {
        weights.get(name).ok_or_else(|| Error::MissingWeight {
            name: name.to_string(),
        })
    };
    let h = config.hidden_size;
    let seq = ids.len();
    let eps = config.layer_norm_eps as f32;

    let word = get("embeddings.word_embeddings.weight")?;
    let pos = get("embeddings.position_embeddings.weight")?;
    let typ = get("embeddings.token_type_embeddings.weight")?;
    let mut x = vec![0f32; seq * h];
    for (t, &id) in ids.iter().enumerate() {
        let id = id as usize;
        if id >= word.shape[0] || t >= pos.shape[0] {
            return Err(Error::TokenOutOfRange {
                id: id as u32,
                position: t,
            });
        }
        for j in 0..h {
            x[t * h + j] = word.data[id * h + j] + pos.data[t * h + j] + typ.data[j];
        }
    }
    layer_norm(
        &mut x,
        h,
        get("embeddings.LayerNorm.weight")?,
        get("embeddings.LayerNorm.bias")?,
        eps,
    );

    for layer in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{layer}");
        let w = |name: &str| get(&format!("{p}.{name}"));
        let q = linear(
            &x,
            seq,
            w("attention.self.query.weight")?,
            w("attention.self.query.bias")?,
        );
        let k = linear(
            &x,
            seq,
            w("attention.self.key.weight")?,
            w("attention.self.key.bias")?,
        );
        let v = linear(
            &x,
            seq,
            w("attention.self.value.weight")?,
            w("attention.self.value.bias")?,
        );
        let context = attention(
            &q,
            &k,
            &v,
            seq,
            config.num_attention_heads,
            config.head_dim(),
        );
        let mut attn = linear(
            &context,
            seq,
            w("attention.output.dense.weight")?,
            w("attention.output.dense.bias")?,
        );
        attn.iter_mut().zip(&x).for_each(|(a, r)| *a += r);
        layer_norm(
            &mut attn,
            h,
            w("attention.output.LayerNorm.weight")?,
            w("attention.output.LayerNorm.bias")?,
            eps,
        );
        let mut inter = linear(
            &attn,
            seq,
            w("intermediate.dense.weight")?,
            w("intermediate.dense.bias")?,
        );
        activate(&mut inter, config.hidden_act);
        let mut out = linear(
            &inter,
            seq,
            w("output.dense.weight")?,
            w("output.dense.bias")?,
        );
        out.iter_mut().zip(&attn).for_each(|(o, r)| *o += r);
        layer_norm(
            &mut out,
            h,
            w("output.LayerNorm.weight")?,
            w("output.LayerNorm.bias")?,
            eps,
        );
        x = out;
    }

    let summary = match pooling {
        Pooling::Cls => x[..h].to_vec(),
        Pooling::Mean => (0..h)
            .map(|j| (0..seq).map(|t| x[t * h + j]).sum::<f32>() / seq as f32)
            .collect(),
    };
    let mut pooled = linear(
        &summary,
        1,
        get("pooler.dense.weight")?,
        get("pooler.dense.bias")?,
    );
    pooled.iter_mut().for_each(|v| *v = v.tanh());
    let logits = linear(
        &pooled,
        1,
        get("classifier.weight")?,
        get("classifier.bias")?,
    );
    Ok(ReferenceOutput {
        hidden: x,
        pooled,
        logits,
    })
}

/// `x (rows, in) · Wᵀ + b` with PyTorch-layout `W (out, in)`.
fn linear(x: &[f32], rows: usize, weight: &Tensor, bias: &Tensor) -> Vec<f32> {
    let (out, inp) = (weight.shape[0], weight.shape[1]);
    let mut y = vec![0f32; rows * out];
    for r in 0..rows {
        let xr = &x[r * inp..(r + 1) * inp];
        for o in 0..out {
            let wr = &weight.data[o * inp..(o + 1) * inp];
            y[r * out + o] = bias.data[o] + xr.iter().zip(wr).map(|(a, b)| a * b).sum::<f32>();
        }
    }
    y
}

fn layer_norm(x: &mut [f32], h: usize, gamma: &Tensor, beta: &Tensor, eps: f32) {
    for row in x.chunks_exact_mut(h) {
        let mean = row.iter().sum::<f32>() / h as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (j, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) * inv * gamma.data[j] + beta.data[j];
        }
    }
}

fn attention(q: &[f32], k: &[f32], v: &[f32], seq: usize, heads: usize, d: usize) -> Vec<f32> {
    let h = heads * d;
    let scale = 1.0 / (d as f32).sqrt();
    let mut context = vec![0f32; seq * h];
    let mut scores = vec![0f32; seq];
    for head in 0..heads {
        let off = head * d;
        for i in 0..seq {
            for (j, score) in scores.iter_mut().enumerate() {
                let qi = &q[i * h + off..i * h + off + d];
                let kj = &k[j * h + off..j * h + off + d];
                *score = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>() * scale;
            }
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, s| m.max(*s));
            let sum: f32 = scores
                .iter_mut()
                .map(|s| {
                    *s = (*s - max).exp();
                    *s
                })
                .sum();
            for (j, p) in scores.iter().enumerate() {
                for c in 0..d {
                    context[i * h + off + c] += p / sum * v[j * h + off + c];
                }
            }
        }
    }
    context
}

fn activate(x: &mut [f32], act: HiddenAct) {
    match act {
        HiddenAct::Gelu => x
            .iter_mut()
            .for_each(|v| *v = 0.5 * *v * (1.0 + erf(*v / std::f32::consts::SQRT_2))),
        HiddenAct::GeluTanh => x.iter_mut().for_each(|v| {
            let inner = (2.0 / std::f32::consts::PI).sqrt() * (*v + 0.044715 * *v * *v * *v);
            *v = 0.5 * *v * (1.0 + inner.tanh());
        }),
        HiddenAct::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
}

/// erf via f64 (Abramowitz–Stegun 7.1.26 is too coarse for a 1e-4 reference): a series for
/// small |x| and a continued fraction for the tail, both accurate to ~1e-12.
fn erf(x: f32) -> f32 {
    let x = f64::from(x);
    let ax = x.abs();
    let value = if ax < 2.5 {
        // Maclaurin series: erf x = 2/√π Σ (−1)ⁿ x^(2n+1) / (n! (2n+1)).
        let mut term = ax;
        let mut sum = ax;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -ax * ax / n;
            sum += term / (2.0 * n + 1.0);
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc x = exp(−x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …)))), Lentz-free backward form.
        let mut frac = 0.0;
        for k in (1..60).rev() {
            frac = (k as f64 / 2.0) / (ax + frac);
        }
        1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + frac)
    };
    value.copysign(x) as f32
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_matches_known_values() {
        for (x, expected) in [
            (0.0, 0.0),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
            (3.0, 0.999_977_9),
            (-1.0, -0.842_700_8),
        ] {
            assert!(
                (super::erf(x) - expected).abs() < 1e-6,
                "erf({x}) = {}",
                super::erf(x)
            );
        }
    }
}
