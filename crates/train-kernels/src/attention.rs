//! Multi-head self-attention as one op: `softmax(Q·Kᵀ·scale + mask)` with dropout, times `V`,
//! and its backward pass, on the `(batch, seq, heads · head_dim)` layout the linear layers
//! produce, so heads are never split into copies. Sequences run in parallel; each head is
//! a handful of BLAS calls on strided views.

use rayon::prelude::*;

use crate::blas::{sgemm, Operand};
use crate::dropout::DropoutMask;
use crate::math::{dot, exp, masked_max, sum};
use crate::simd::vectorized;

/// Shape of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// Sequences.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Heads.
    pub heads: usize,
    /// Features per head.
    pub head_dim: usize,
}

impl AttentionShape {
    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Elements of `q`, `k`, `v` or the context: `batch · seq · hidden`.
    pub fn activations(&self) -> usize {
        self.batch * self.seq * self.hidden()
    }

    /// Elements of the attention probabilities: `batch · heads · seq · seq`.
    pub fn probabilities(&self) -> usize {
        self.batch * self.heads * self.seq * self.seq
    }
}

/// What the forward pass needs besides `q`, `k`, `v`.
#[derive(Clone, Copy)]
pub struct AttentionParams<'a> {
    /// `(batch, seq)`: 1 where a key may be attended, 0 for padding.
    pub keep: &'a [f32],
    /// Multiplies `Q·Kᵀ` (`1/sqrt(head_dim)`).
    pub scale: f32,
    /// Dropout on the probabilities (training), element `((b·heads + h)·seq + i)·seq + j`.
    pub dropout: Option<DropoutMask>,
}

/// The attention probabilities [`forward`] writes for [`backward`], `(batch, heads, seq, seq)`
/// each.
pub struct Probabilities<'a> {
    /// After the softmax.
    pub probs: &'a mut [f32],
    /// After dropout (`probs ∘ mask`), when the params have dropout.
    pub dropped: Option<&'a mut [f32]>,
}

/// `context (batch, seq, hidden)` from `q`, `k`, `v (batch, seq, hidden)`.
pub fn forward(
    shape: AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    params: AttentionParams,
    kept: Probabilities,
    context: &mut [f32],
) {
    let Probabilities { probs, dropped } = kept;
    let AttentionShape {
        batch,
        seq,
        heads,
        head_dim,
    } = shape;
    let hidden = shape.hidden();
    for (t, name) in [(q, "q"), (k, "k"), (v, "v")] {
        assert_eq!(t.len(), shape.activations(), "attention: {name}");
    }
    assert_eq!(context.len(), shape.activations(), "attention: context");
    assert_eq!(probs.len(), shape.probabilities(), "attention: probs");
    assert_eq!(params.keep.len(), batch * seq, "attention: keep");
    assert_eq!(
        dropped.as_ref().map(|d| d.len()),
        params.dropout.map(|_| shape.probabilities()),
        "attention: dropped probabilities (exactly when there is dropout)"
    );
    if shape.activations() == 0 {
        return;
    }
    let per_seq = seq * hidden;
    let per_seq_probs = heads * seq * seq;
    let mut dropped: Vec<Option<&mut [f32]>> = match dropped {
        Some(d) => d.chunks_mut(per_seq_probs).map(Some).collect(),
        None => (0..batch).map(|_| None).collect(),
    };
    context
        .par_chunks_mut(per_seq)
        .zip(probs.par_chunks_mut(per_seq_probs))
        .zip(dropped.par_iter_mut())
        .enumerate()
        .for_each(|(b, ((context, probs), dropped))| {
            let (q, k, v) = (
                &q[b * per_seq..(b + 1) * per_seq],
                &k[b * per_seq..(b + 1) * per_seq],
                &v[b * per_seq..(b + 1) * per_seq],
            );
            let keep = &params.keep[b * seq..(b + 1) * seq];
            for (h, p) in probs.chunks_mut(seq * seq).enumerate() {
                let col = h * head_dim;
                sgemm(
                    seq,
                    seq,
                    head_dim,
                    params.scale,
                    Operand::plain(&q[col..], hidden),
                    Operand::transposed(&k[col..], hidden),
                    0.0,
                    p,
                    seq,
                );
                vectorized(|| {
                    for row in p.chunks_mut(seq) {
                        softmax_row(row, keep);
                    }
                });
                let weights: &[f32] = match (params.dropout, dropped.as_deref_mut()) {
                    (Some(mask), Some(dropped)) => {
                        let dropped = &mut dropped[h * seq * seq..(h + 1) * seq * seq];
                        mask.apply_at((b * heads + h) * seq * seq, p, dropped);
                        dropped
                    }
                    _ => p,
                };
                sgemm(
                    seq,
                    head_dim,
                    seq,
                    1.0,
                    Operand::plain(weights, seq),
                    Operand::plain(&v[col..], hidden),
                    0.0,
                    &mut context[col..],
                    hidden,
                );
            }
        });
}

#[inline(always)]
/// In place: `row = softmax(row)` over the keys with `keep` 1, exactly 0 where `keep` is 0.
/// Branch-free, so it vectorises: masked scores are excluded from the maximum and their
/// (finite, `exp` clamps) exponentials multiplied by 0.
fn softmax_row(row: &mut [f32], keep: &[f32]) {
    let max = masked_max(row, keep);
    for (v, &k) in row.iter_mut().zip(keep) {
        *v = exp(*v - max) * k;
    }
    let total = sum(row);
    let inverse = if total > 0.0 { 1.0 / total } else { 0.0 };
    row.iter_mut().for_each(|v| *v *= inverse);
}

/// Gradients of [`forward`] to compute, and where.
pub struct AttentionGradients<'a> {
    /// `∂L/∂q`, or `None` when `q` needs none.
    pub q: Option<&'a mut [f32]>,
    /// `∂L/∂k`.
    pub k: Option<&'a mut [f32]>,
    /// `∂L/∂v`.
    pub v: Option<&'a mut [f32]>,
}

/// Gradients of [`forward`] for the upstream gradient `dcontext`, from the same inputs and
/// the probabilities it wrote. The dropout mask is read off the dropped probabilities (an
/// element that is 0 there contributes nothing either way), not drawn again.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    shape: AttentionShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    params: AttentionParams,
    probs: &[f32],
    dropped: Option<&[f32]>,
    dcontext: &[f32],
    grads: AttentionGradients,
) {
    let AttentionShape {
        batch: _,
        seq,
        heads,
        head_dim,
    } = shape;
    let hidden = shape.hidden();
    assert_eq!(dcontext.len(), shape.activations(), "attention: dcontext");
    assert_eq!(probs.len(), shape.probabilities(), "attention: probs");
    assert_eq!(
        dropped.map(|d| d.len()),
        params.dropout.map(|_| shape.probabilities()),
        "attention: dropped probabilities (exactly when there is dropout)"
    );
    if shape.activations() == 0 {
        return;
    }
    let per_seq = seq * hidden;
    let (dq, dk, dv) = (
        per_sequence(grads.q, shape),
        per_sequence(grads.k, shape),
        per_sequence(grads.v, shape),
    );
    dq.into_par_iter()
        .zip(dk)
        .zip(dv)
        .enumerate()
        .for_each(|(b, ((mut dq, mut dk), mut dv))| {
            let range = b * per_seq..(b + 1) * per_seq;
            let (q, k, v, dout) = (
                &q[range.clone()],
                &k[range.clone()],
                &v[range.clone()],
                &dcontext[range],
            );
            let mut dscores = vec![0f32; seq * seq];
            for h in 0..heads {
                let col = h * head_dim;
                let first = (b * heads + h) * seq * seq;
                let p = &probs[first..first + seq * seq];
                let dropped = dropped.map(|d| &d[first..first + seq * seq]);
                if let Some(dv) = dv.as_deref_mut() {
                    let weights = dropped.unwrap_or(p);
                    sgemm(
                        seq,
                        head_dim,
                        seq,
                        1.0,
                        Operand::transposed(weights, seq),
                        Operand::plain(&dout[col..], hidden),
                        0.0,
                        &mut dv[col..],
                        hidden,
                    );
                }
                if dq.is_none() && dk.is_none() {
                    continue;
                }
                // dP = dO·Vᵀ, through the dropout mask, then the softmax's Jacobian.
                sgemm(
                    seq,
                    seq,
                    head_dim,
                    1.0,
                    Operand::plain(&dout[col..], hidden),
                    Operand::transposed(&v[col..], hidden),
                    0.0,
                    &mut dscores,
                    seq,
                );
                if let (Some(mask), Some(dropped)) = (params.dropout, dropped) {
                    let scale = mask.scale();
                    dscores
                        .iter_mut()
                        .zip(dropped)
                        .for_each(|(d, &kept)| *d *= (kept != 0.0) as u32 as f32 * scale);
                }
                vectorized(|| {
                    for (ds, p) in dscores.chunks_mut(seq).zip(p.chunks(seq)) {
                        let along = dot(ds, p);
                        ds.iter_mut()
                            .zip(p)
                            .for_each(|(d, p)| *d = p * (*d - along));
                    }
                });
                if let Some(dq) = dq.as_deref_mut() {
                    sgemm(
                        seq,
                        head_dim,
                        seq,
                        params.scale,
                        Operand::plain(&dscores, seq),
                        Operand::plain(&k[col..], hidden),
                        0.0,
                        &mut dq[col..],
                        hidden,
                    );
                }
                if let Some(dk) = dk.as_deref_mut() {
                    sgemm(
                        seq,
                        head_dim,
                        seq,
                        params.scale,
                        Operand::transposed(&dscores, seq),
                        Operand::plain(&q[col..], hidden),
                        0.0,
                        &mut dk[col..],
                        hidden,
                    );
                }
            }
        });
}

/// A gradient buffer cut into one slice per sequence (all `None` when not wanted).
fn per_sequence(buffer: Option<&mut [f32]>, shape: AttentionShape) -> Vec<Option<&mut [f32]>> {
    match buffer {
        Some(buffer) => {
            assert_eq!(
                buffer.len(),
                shape.activations(),
                "attention: gradient buffer"
            );
            buffer
                .chunks_mut(shape.seq * shape.hidden())
                .map(Some)
                .collect()
        }
        None => (0..shape.batch).map(|_| None).collect(),
    }
}
