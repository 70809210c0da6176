//! The training step's fused CPU ops: candle custom ops over `sentimq_train_kernels`, each
//! with a hand-written backward pass that computes only the gradients the graph needs (an
//! argument that does not track gradients, a frozen weight say, gets none).
//!
//! candle composes LayerNorm, softmax, GELU and dropout from many small differentiable ops,
//! each allocating its output, and its matmul backward always computes both operands'
//! gradients; together these made most of a CPU training step. Each public function here
//! takes the fused path for contiguous-or-not `f32` tensors on the CPU and otherwise
//! computes the same function from candle's primitives ([`composed`]), which is also the
//! reference the gradient tests check the fused ops against. With LoRA and a frozen base,
//! [`encoder_layer`] goes further and runs a whole encoder layer as one op, so that its
//! activations and gradients never pass through candle's autograd bookkeeping (a zeroed
//! buffer and an add per graph edge).

pub(crate) mod composed;
mod layer;
mod ops;
#[cfg(test)]
mod tests;

use candle_core::{DType, Result, Tensor};
use sentimq_train_kernels::dropout::DropoutMask;

use super::dropout::Mode;
pub(crate) use layer::{encoder_layer, AdapterParts, LayerParts, ProjectionParts};
use ops::{AttentionOp, DropoutOp, GeluOp, LayerNormOp, LinearOp, LoraOp, ResidualNormOp};

/// Whether `t` takes the fused path: `f32` on the CPU.
pub(crate) fn fusable(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// `x (.., in) · weightᵀ (in, out) + bias (out) -> (.., out)`.
pub(crate) fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if !fusable(x) {
        return composed::linear(x, weight, bias);
    }
    let (inputs, outputs) = (x.dim(candle_core::D::Minus1)?, weight.dim(0)?);
    let mut out_dims = x.dims().to_vec();
    *out_dims.last_mut().expect("x has a last dimension") = outputs;
    let rows = x.elem_count() / inputs.max(1);
    let flat = x.contiguous()?.reshape((rows, inputs))?;
    flat.apply_op3(&weight.contiguous()?, &bias.contiguous()?, LinearOp)?
        .reshape(out_dims)
}

/// A LoRA-adapted linear layer, as PEFT's `lora.Linear.forward`:
/// `x (.., in) · weightᵀ + bias + scale · (dropout(x) · aᵀ) · bᵀ`, with `a (r, in)`,
/// `b (out, r)` and the dropout of `mode` with probability `dropout`. Fused when the base
/// weight and bias are frozen.
#[allow(clippy::too_many_arguments)]
pub(crate) fn lora_linear(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
    dropout: f64,
    mode: Mode,
) -> Result<Tensor> {
    if !fusable(x) || weight.is_variable() || bias.is_variable() {
        return composed::lora_linear(x, weight, bias, a, b, scale, dropout, mode);
    }
    let (inputs, outputs) = (x.dim(candle_core::D::Minus1)?, weight.dim(0)?);
    let mut out_dims = x.dims().to_vec();
    *out_dims.last_mut().expect("x has a last dimension") = outputs;
    let rows = x.elem_count() / inputs.max(1);
    let op = LoraOp {
        weight: weight.contiguous()?,
        bias: bias.contiguous()?,
        scale: scale as f32,
        dropout: mode.host_mask(dropout)?,
    };
    x.contiguous()?
        .reshape((rows, inputs))?
        .apply_op3(&a.contiguous()?, &b.contiguous()?, op)?
        .reshape(out_dims)
}

/// LayerNorm over the last dimension.
pub(crate) fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if !fusable(x) {
        return composed::layer_norm(x, gamma, beta, eps);
    }
    x.contiguous()?.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        LayerNormOp { eps: eps as f32 },
    )
}

/// BERT's residual connection: `LayerNorm(dropout(a) + b)`, the dropout of `mode` with
/// probability `dropout`. Fused when `gamma` and `beta` are frozen.
#[allow(clippy::too_many_arguments)]
pub(crate) fn residual_layer_norm(
    a: &Tensor,
    b: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    dropout: f64,
    mode: Mode,
) -> Result<Tensor> {
    if !fusable(a) || gamma.is_variable() || beta.is_variable() {
        let sum = (mode.dropout(a, dropout)? + b)?;
        return layer_norm(&sum, gamma, beta, eps);
    }
    let op = ResidualNormOp {
        gamma: gamma.contiguous()?,
        beta: beta.contiguous()?,
        eps: eps as f32,
        dropout: mode.host_mask(dropout)?,
    };
    a.contiguous()?.apply_op2(&b.contiguous()?, op)
}

/// GELU, exact (erf) form.
pub(crate) fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !fusable(x) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(GeluOp)
}

/// `x ∘ mask` for a seeded dropout mask (values 0 or `1/(1-p)`).
pub(crate) fn dropout(x: &Tensor, mask: DropoutMask) -> Result<Tensor> {
    if !fusable(x) {
        return composed::dropout(x, mask);
    }
    x.contiguous()?.apply_op1(DropoutOp { mask })
}

/// The attention mask in the forms both paths use.
pub(crate) struct AttentionMask {
    /// `(batch, 1, 1, seq)`: 0 where attended, the dtype's lowest value on padding (composed).
    bias: Tensor,
    /// `(batch, seq)`: 1 attended, 0 padding, on the host (fused; `None` off the fused path).
    keep: Option<std::sync::Arc<Vec<f32>>>,
}

impl AttentionMask {
    /// From `mask (batch, seq)`, 1 = token, 0 = pad, for activations of `dtype`.
    pub(crate) fn new(mask: &Tensor, dtype: DType) -> Result<Self> {
        let (batch, seq) = mask.dims2()?;
        // As `get_extended_attention_mask`: 0 where attended, the dtype's minimum on padding.
        let lowest = if dtype == DType::F64 {
            f64::MIN
        } else {
            f64::from(f32::MIN)
        };
        let mask = mask.to_dtype(dtype)?;
        let bias = ((1.0 - &mask)? * lowest)?.reshape((batch, 1, 1, seq))?;
        let keep = if fusable(&mask) {
            Some(std::sync::Arc::new(mask.flatten_all()?.to_vec1::<f32>()?))
        } else {
            None
        };
        Ok(AttentionMask { bias, keep })
    }
}

/// The shape and dropout of [`attention`].
pub(crate) struct AttentionSettings {
    pub heads: usize,
    pub head_dim: usize,
    /// Dropout probability on the attention probabilities (applied in training mode).
    pub dropout: f64,
}

/// Multi-head attention: `q`, `k`, `v (batch, seq, hidden)` → context `(batch, seq, hidden)`,
/// `softmax(Q·Kᵀ/sqrt(head_dim) + mask)` with dropout, times `V`, per head.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttentionMask,
    settings: &AttentionSettings,
    mode: Mode,
) -> Result<Tensor> {
    match &mask.keep {
        Some(keep) if fusable(q) => {
            let dropout = mode.host_mask(settings.dropout)?;
            q.contiguous()?.apply_op3(
                &k.contiguous()?,
                &v.contiguous()?,
                AttentionOp::new(settings, dropout, keep.clone()),
            )
        }
        _ => composed::attention(q, k, v, &mask.bias, settings, mode),
    }
}
