//! The fused ops' functions from candle's differentiable primitives: the path for other
//! devices and dtypes, and the reference of the gradient tests.

use candle_core::{Result, Tensor, D};

use super::AttentionSettings;
use crate::train::dropout::Mode;
use sentimq_train_kernels::dropout::DropoutMask;

/// `x·weightᵀ + bias`.
pub(crate) fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.broadcast_matmul(&weight.t()?)?.broadcast_add(bias)
}

/// `x·weightᵀ + bias + scale · (dropout(x)·aᵀ)·bᵀ`.
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
    let base = super::linear(x, weight, bias)?;
    let dropped = mode.dropout(x, dropout)?;
    let update = dropped
        .broadcast_matmul(&a.t()?)?
        .broadcast_matmul(&b.t()?)?;
    base + (update * scale)?
}

/// LayerNorm over the last dimension (candle's `layer_norm_slow`, whose ops all have a
/// backward pass; its fused `LayerNorm` has none and would silently yield no gradient).
pub(crate) fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    candle_nn::ops::layer_norm_slow(x, gamma, beta, eps as f32)
}

/// `x ∘ mask`, the mask drawn on the host and uploaded to `x`'s device.
pub(crate) fn dropout(x: &Tensor, mask: DropoutMask) -> Result<Tensor> {
    let values = Tensor::from_vec(mask.values(x.elem_count()), x.shape(), x.device())?;
    x.mul(&values.to_dtype(x.dtype())?)
}

/// Attention from `reshape`, `matmul` and `softmax` (not `softmax_last_dim`, which has no
/// backward pass).
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask_bias: &Tensor,
    settings: &AttentionSettings,
    mode: Mode,
) -> Result<Tensor> {
    let (batch, seq, hidden) = q.dims3()?;
    let split_heads = |t: &Tensor| -> Result<Tensor> {
        t.reshape((batch, seq, settings.heads, settings.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (split_heads(q)?, split_heads(k)?, split_heads(v)?);
    let scores = (q.matmul(&k.t()?)? / (settings.head_dim as f64).sqrt())?;
    let probs = candle_nn::ops::softmax(&scores.broadcast_add(mask_bias)?, D::Minus1)?;
    let probs = mode.dropout(&probs, settings.dropout)?;
    probs
        .matmul(&v)?
        .transpose(1, 2)?
        .reshape((batch, seq, hidden))
}
