//! A whole BERT encoder layer (post-LayerNorm, exact GELU) with frozen weights and optional
//! LoRA adapters, forward and backward, as one op: the training step's intermediate
//! activations and gradients stay inside, instead of each crossing an autograd graph that
//! allocates, zeroes and adds a gradient buffer per edge.
//!
//! Forward, for `x (rows, hidden)`:
//! `q, k, v = proj(x)`; `c = attention(q, k, v)`; `s1 = dropout(proj_ao(c)) + x`;
//! `a = LN1(s1)`; `h = proj_i(a)`; `g = gelu(h)`; `s2 = dropout(proj_o(g)) + a`; `y = LN2(s2)`,
//! where each `proj` is `x·Wᵀ + b`, plus `s · (dropout(x)·Aᵀ)·Bᵀ` where adapted.
//! [`Saved`] keeps what the backward pass reads.

use rayon::prelude::*;

use crate::activation;
use crate::attention::{self, AttentionGradients, AttentionParams, AttentionShape, Probabilities};
use crate::dropout::DropoutMask;
use crate::linear::{self, LinearShape};
use crate::lora::{self, LoraGradients, LoraLayer};
use crate::norm::{self, NormGradients};

/// A LoRA adapter of one projection: where its `A (rank, in)` and `B (out, rank)` sit in the
/// layer's packed adapter tensors, its scale and its input dropout.
#[derive(Clone, Copy, Debug)]
pub struct Adapter {
    /// Offset of `A` in the packed `A`s.
    pub a_offset: usize,
    /// Offset of `B` in the packed `B`s.
    pub b_offset: usize,
    /// `r`.
    pub rank: usize,
    /// `alpha / rank`.
    pub scale: f32,
    /// Dropout on the adapter's input in this pass.
    pub dropout: Option<DropoutMask>,
}

/// One frozen projection `(outputs, inputs)`, optionally adapted.
#[derive(Clone, Copy)]
pub struct Projection<'a> {
    /// `(outputs, inputs)`.
    pub weight: &'a [f32],
    /// `(outputs)`.
    pub bias: &'a [f32],
    /// Its LoRA adapter, if adapted.
    pub adapter: Option<Adapter>,
}

/// A frozen LayerNorm.
#[derive(Clone, Copy)]
pub struct Norm<'a> {
    /// Scale, `(hidden)`.
    pub gamma: &'a [f32],
    /// Shift, `(hidden)`.
    pub beta: &'a [f32],
    /// Added to the variance.
    pub eps: f32,
}

/// The layer: six projections (query, key, value, attention output, intermediate, output),
/// two LayerNorms, the attention's shape and the dropout masks of this pass.
#[derive(Clone, Copy)]
pub struct Layer<'a> {
    /// `attention.self.query`.
    pub query: Projection<'a>,
    /// `attention.self.key`.
    pub key: Projection<'a>,
    /// `attention.self.value`.
    pub value: Projection<'a>,
    /// `attention.output.dense`.
    pub attention_output: Projection<'a>,
    /// `intermediate.dense` (`hidden → intermediate_size`).
    pub intermediate: Projection<'a>,
    /// `output.dense` (`intermediate_size → hidden`).
    pub output: Projection<'a>,
    /// `attention.output.LayerNorm`.
    pub attention_norm: Norm<'a>,
    /// `output.LayerNorm`.
    pub output_norm: Norm<'a>,
    /// `(batch, seq, heads, head_dim)`; `hidden = heads · head_dim`.
    pub shape: AttentionShape,
    /// Width of the intermediate layer.
    pub intermediate_size: usize,
    /// `(batch, seq)`: 1 attended, 0 padding.
    pub keep: &'a [f32],
    /// Dropout on the attention probabilities.
    pub attention_dropout: Option<DropoutMask>,
    /// Dropout on the attention output before its residual sum.
    pub attention_output_dropout: Option<DropoutMask>,
    /// Dropout on the output projection before its residual sum.
    pub output_dropout: Option<DropoutMask>,
    /// All adapters' `A`s, packed (see [`Adapter`]).
    pub lora_a: &'a [f32],
    /// All adapters' `B`s, packed.
    pub lora_b: &'a [f32],
}

/// Activations the backward pass reads.
pub struct Saved {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    probs: Vec<f32>,
    dropped_probs: Option<Vec<f32>>,
    context: Vec<f32>,
    /// LayerNorm inputs.
    s1: Vec<f32>,
    s2: Vec<f32>,
    /// `LN1(s1)`, the intermediate's input.
    attended: Vec<f32>,
    /// Intermediate before and after GELU.
    h: Vec<f32>,
    g: Vec<f32>,
}

impl Layer<'_> {
    fn rows(&self) -> usize {
        self.shape.batch * self.shape.seq
    }

    fn hidden(&self) -> usize {
        self.shape.heads * self.shape.head_dim
    }

    fn params(&self) -> AttentionParams<'_> {
        AttentionParams {
            keep: self.keep,
            scale: 1.0 / (self.shape.head_dim as f32).sqrt(),
            dropout: self.attention_dropout,
        }
    }

    fn lora<'b>(
        &'b self,
        p: &Projection<'b>,
        adapter: &Adapter,
        shape: LinearShape,
    ) -> LoraLayer<'b> {
        LoraLayer {
            weight: p.weight,
            bias: p.bias,
            a: &self.lora_a[adapter.a_offset..adapter.a_offset + adapter.rank * shape.inputs],
            b: &self.lora_b[adapter.b_offset..adapter.b_offset + shape.outputs * adapter.rank],
            scale: adapter.scale,
            dropout: adapter.dropout,
        }
    }

    /// `y = proj(x)` for `x (rows, inputs)`.
    fn project(&self, p: &Projection, inputs: usize, outputs: usize, x: &[f32]) -> Vec<f32> {
        let shape = LinearShape {
            rows: self.rows(),
            inputs,
            outputs,
        };
        let mut y = vec![0f32; shape.rows * outputs];
        match &p.adapter {
            Some(adapter) => lora::forward(shape, self.lora(p, adapter, shape), x, &mut y),
            None => linear::forward(shape, x, p.weight, p.bias, &mut y),
        }
        y
    }

    /// Adds `∂L/∂x` of `proj` for `dy` to `dx` (or writes it, when `dx` is empty), and the
    /// adapter's gradients to their places in `da`, `db`.
    #[allow(clippy::too_many_arguments)]
    fn project_backward(
        &self,
        p: &Projection,
        inputs: usize,
        outputs: usize,
        x: &[f32],
        dy: &[f32],
        dx: Option<&mut Vec<f32>>,
        da: &mut [f32],
        db: &mut [f32],
    ) {
        let shape = LinearShape {
            rows: self.rows(),
            inputs,
            outputs,
        };
        let mut part = dx.as_ref().map(|_| vec![0f32; shape.rows * inputs]);
        match &p.adapter {
            Some(adapter) => {
                let layer = self.lora(p, adapter, shape);
                let (a_len, b_len) = (adapter.rank * inputs, outputs * adapter.rank);
                lora::backward(
                    shape,
                    layer,
                    x,
                    dy,
                    LoraGradients {
                        x: part.as_deref_mut(),
                        a: Some(&mut da[adapter.a_offset..adapter.a_offset + a_len]),
                        b: Some(&mut db[adapter.b_offset..adapter.b_offset + b_len]),
                    },
                );
            }
            None => {
                if let Some(part) = part.as_deref_mut() {
                    linear::backward_input(shape, dy, p.weight, part);
                }
            }
        }
        if let (Some(dx), Some(part)) = (dx, part) {
            if dx.is_empty() {
                *dx = part;
            } else {
                add_assign(dx, &part);
            }
        }
    }

    /// `y (rows, hidden)` from `x (rows, hidden)`, and what the backward pass needs.
    pub fn forward(&self, x: &[f32]) -> (Vec<f32>, Saved) {
        let (hidden, inter) = (self.hidden(), self.intermediate_size);
        assert_eq!(x.len(), self.rows() * hidden, "layer: x");
        let q = self.project(&self.query, hidden, hidden, x);
        let k = self.project(&self.key, hidden, hidden, x);
        let v = self.project(&self.value, hidden, hidden, x);
        let mut probs = vec![0f32; self.shape.probabilities()];
        let mut dropped_probs = self
            .attention_dropout
            .map(|_| vec![0f32; self.shape.probabilities()]);
        let mut context = vec![0f32; self.shape.activations()];
        attention::forward(
            self.shape,
            &q,
            &k,
            &v,
            self.params(),
            Probabilities {
                probs: &mut probs,
                dropped: dropped_probs.as_deref_mut(),
            },
            &mut context,
        );
        let ao = self.project(&self.attention_output, hidden, hidden, &context);
        let mut s1 = vec![0f32; ao.len()];
        norm::residual(&ao, x, self.attention_output_dropout, &mut s1);
        drop(ao);
        let n1 = &self.attention_norm;
        let mut attended = vec![0f32; s1.len()];
        norm::forward(&s1, n1.gamma, n1.beta, n1.eps, &mut attended);
        let h = self.project(&self.intermediate, hidden, inter, &attended);
        let mut g = vec![0f32; h.len()];
        activation::gelu_forward(&h, &mut g);
        let o = self.project(&self.output, inter, hidden, &g);
        let mut s2 = vec![0f32; o.len()];
        norm::residual(&o, &attended, self.output_dropout, &mut s2);
        drop(o);
        let n2 = &self.output_norm;
        let mut y = vec![0f32; s2.len()];
        norm::forward(&s2, n2.gamma, n2.beta, n2.eps, &mut y);
        (
            y,
            Saved {
                q,
                k,
                v,
                probs,
                dropped_probs,
                context,
                s1,
                s2,
                attended,
                h,
                g,
            },
        )
    }

    /// Gradients for `dy`: `∂L/∂x` when `want_x`, and the packed adapters' `∂L/∂A`, `∂L/∂B`
    /// (zero for projections without an adapter).
    pub fn backward(
        &self,
        x: &[f32],
        saved: &Saved,
        dy: &[f32],
        want_x: bool,
    ) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
        let (hidden, inter) = (self.hidden(), self.intermediate_size);
        let (mut da, mut db) = (vec![0f32; self.lora_a.len()], vec![0f32; self.lora_b.len()]);
        let no_grads = || NormGradients {
            x: None,
            gamma: None,
            beta: None,
        };
        // Output LayerNorm, residual and dropout.
        let n2 = &self.output_norm;
        let mut ds2 = vec![0f32; dy.len()];
        norm::backward(
            &saved.s2,
            n2.gamma,
            n2.eps,
            dy,
            NormGradients {
                x: Some(&mut ds2),
                ..no_grads()
            },
        );
        let do_pre = masked(&ds2, self.output_dropout);
        // Output projection, GELU, intermediate projection.
        let mut dg = Vec::new();
        self.project_backward(
            &self.output,
            inter,
            hidden,
            &saved.g,
            &do_pre,
            Some(&mut dg),
            &mut da,
            &mut db,
        );
        drop(do_pre);
        let mut dh = vec![0f32; dg.len()];
        activation::gelu_backward(&saved.h, &dg, &mut dh);
        drop(dg);
        let mut dattended = ds2;
        self.project_backward(
            &self.intermediate,
            hidden,
            inter,
            &saved.attended,
            &dh,
            Some(&mut dattended),
            &mut da,
            &mut db,
        );
        drop(dh);
        // Attention LayerNorm, residual and dropout.
        let n1 = &self.attention_norm;
        let mut ds1 = vec![0f32; dattended.len()];
        norm::backward(
            &saved.s1,
            n1.gamma,
            n1.eps,
            &dattended,
            NormGradients {
                x: Some(&mut ds1),
                ..no_grads()
            },
        );
        drop(dattended);
        let dao = masked(&ds1, self.attention_output_dropout);
        let mut dcontext = Vec::new();
        self.project_backward(
            &self.attention_output,
            hidden,
            hidden,
            &saved.context,
            &dao,
            Some(&mut dcontext),
            &mut da,
            &mut db,
        );
        drop(dao);
        // Attention, then the three projections of x.
        let n = self.shape.activations();
        let (mut dq, mut dk, mut dv) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        let key_needed = want_x || self.key.adapter.is_some();
        attention::backward(
            self.shape,
            &saved.q,
            &saved.k,
            &saved.v,
            self.params(),
            &saved.probs,
            saved.dropped_probs.as_deref(),
            &dcontext,
            AttentionGradients {
                q: (want_x || self.query.adapter.is_some()).then_some(&mut dq[..]),
                k: key_needed.then_some(&mut dk[..]),
                v: (want_x || self.value.adapter.is_some()).then_some(&mut dv[..]),
            },
        );
        drop(dcontext);
        let mut dx = want_x.then_some(ds1);
        for (p, d) in [(&self.query, &dq), (&self.key, &dk), (&self.value, &dv)] {
            if want_x || p.adapter.is_some() {
                self.project_backward(p, hidden, hidden, x, d, dx.as_mut(), &mut da, &mut db);
            }
        }
        (dx, da, db)
    }
}

/// `src ∘ mask` (a copy of `src` without dropout).
fn masked(src: &[f32], mask: Option<DropoutMask>) -> Vec<f32> {
    match mask {
        Some(mask) => {
            let mut out = vec![0f32; src.len()];
            mask.apply(src, &mut out);
            out
        }
        None => src.to_vec(),
    }
}

/// `a += b`, in parallel.
fn add_assign(a: &mut [f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "add: lengths differ");
    a.par_chunks_mut(1 << 14)
        .zip(b.par_chunks(1 << 14))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
}
