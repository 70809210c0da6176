//! A whole encoder layer as one custom op (`sentimq_train_kernels::layer`), for LoRA training
//! on the CPU: the layer's frozen tensors are held by the op, its adapters arrive packed in two
//! tensors (one for the `A`s, one for the `B`s), so candle's graph sees three inputs per layer
//! instead of some thirty ops.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use sentimq_train_kernels::attention::AttentionShape;
use sentimq_train_kernels::dropout::DropoutMask;
use sentimq_train_kernels::layer::{Adapter, Layer, Norm, Projection, Saved};

use super::ops::{storage_slice, tensor, HostView};
use super::{fusable, AttentionMask};
use crate::train::dropout::Mode;

/// An adapter's tensors and settings, as [`crate::train::lora`] holds them.
pub(crate) struct AdapterParts<'a> {
    /// `(r, in)`.
    pub a: &'a Tensor,
    /// `(out, r)`.
    pub b: &'a Tensor,
    /// `alpha / r`.
    pub scale: f64,
    /// Input dropout probability.
    pub dropout: f64,
}

/// One projection of the layer: frozen weight `(out, in)`, bias, optional adapter.
pub(crate) struct ProjectionParts<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub adapter: Option<AdapterParts<'a>>,
}

/// Everything an encoder layer is made of, in the order of [`Layer`]'s projections: query,
/// key, value, attention output, intermediate, output.
pub(crate) struct LayerParts<'a> {
    pub projections: [ProjectionParts<'a>; 6],
    /// `(gamma, beta)` of the attention and the output LayerNorm.
    pub norms: [(&'a Tensor, &'a Tensor); 2],
    pub eps: f64,
    pub heads: usize,
    pub head_dim: usize,
    /// Hidden-state dropout (after the attention output and the output projection).
    pub hidden_dropout: f64,
    pub attention_dropout: f64,
}

/// The layer as one op, or `None` where it does not apply (not f32 on the CPU, a trainable
/// base weight, or no adapter at all): then the caller composes the layer from ops. In
/// [`Mode::Eval`] the result carries no gradient to the adapters.
pub(crate) fn encoder_layer(
    x: &Tensor,
    parts: &LayerParts,
    mask: &AttentionMask,
    mode: Mode,
) -> Result<Option<Tensor>> {
    let frozen = parts
        .projections
        .iter()
        .flat_map(|p| [p.weight, p.bias])
        .chain(parts.norms.iter().flat_map(|(g, b)| [*g, *b]));
    let Some(keep) = &mask.keep else {
        return Ok(None);
    };
    if !fusable(x)
        || frozen.clone().any(|t| t.is_variable())
        || parts.projections.iter().all(|p| p.adapter.is_none())
    {
        return Ok(None);
    }
    // Masks drawn in the order the composed layer draws them, so both paths train alike.
    let mut adapters = [None; 6];
    let mut masks = Vec::new();
    let (mut a_offset, mut b_offset) = (0, 0);
    let (mut packed_a, mut packed_b) = (Vec::new(), Vec::new());
    let mut draw_adapter = |i: usize| -> Result<()> {
        if let Some(adapter) = &parts.projections[i].adapter {
            let rank = adapter.a.dim(0)?;
            adapters[i] = Some(Adapter {
                a_offset,
                b_offset,
                rank,
                scale: adapter.scale as f32,
                dropout: mode.host_mask(adapter.dropout)?,
            });
            a_offset += adapter.a.elem_count();
            b_offset += adapter.b.elem_count();
            packed_a.push(adapter.a.flatten_all()?);
            packed_b.push(adapter.b.flatten_all()?);
        }
        Ok(())
    };
    for i in 0..3 {
        draw_adapter(i)?;
    }
    masks.push(mode.host_mask(parts.attention_dropout)?);
    draw_adapter(3)?;
    masks.push(mode.host_mask(parts.hidden_dropout)?);
    draw_adapter(4)?;
    draw_adapter(5)?;
    masks.push(mode.host_mask(parts.hidden_dropout)?);
    let op = EncoderLayerOp {
        frozen: frozen.map(|t| t.contiguous()).collect::<Result<_>>()?,
        adapters,
        attention_dropout: masks[0],
        attention_output_dropout: masks[1],
        output_dropout: masks[2],
        eps: parts.eps as f32,
        heads: parts.heads,
        head_dim: parts.head_dim,
        intermediate: parts.projections[4].weight.dim(0)?,
        keep: keep.clone(),
        saved: Mutex::new(None),
    };
    let (mut a, mut b) = (Tensor::cat(&packed_a, 0)?, Tensor::cat(&packed_b, 0)?);
    if matches!(mode, Mode::Eval) {
        // Evaluation takes no gradients: untracked inputs keep the op (and the activations it
        // saves) out of the graph, so each layer's are freed as soon as it has run.
        (a, b) = (a.detach(), b.detach());
    }
    x.contiguous()?.apply_op3(&a, &b, op).map(Some)
}

/// The op: frozen tensors in [`Layer`]'s order (six projections' weight and bias, then the
/// two LayerNorms' gamma and beta), the pass's adapters and masks, and what the forward pass
/// saved for the backward pass.
struct EncoderLayerOp {
    frozen: Vec<Tensor>,
    adapters: [Option<Adapter>; 6],
    attention_dropout: Option<DropoutMask>,
    attention_output_dropout: Option<DropoutMask>,
    output_dropout: Option<DropoutMask>,
    eps: f32,
    heads: usize,
    head_dim: usize,
    intermediate: usize,
    keep: Arc<Vec<f32>>,
    saved: Mutex<Option<Saved>>,
}

impl EncoderLayerOp {
    fn shape(&self, dims: &[usize]) -> Result<AttentionShape> {
        match dims {
            &[batch, seq, hidden]
                if hidden == self.heads * self.head_dim && self.keep.len() == batch * seq =>
            {
                Ok(AttentionShape {
                    batch,
                    seq,
                    heads: self.heads,
                    head_dim: self.head_dim,
                })
            }
            _ => bail!(
                "fused-encoder-layer: x {dims:?} for {} heads of {}",
                self.heads,
                self.head_dim
            ),
        }
    }

    /// Runs `f` on the layer described by the frozen tensors' host views.
    fn with_layer<R>(
        &self,
        shape: AttentionShape,
        a: &[f32],
        b: &[f32],
        f: impl FnOnce(&Layer) -> R,
    ) -> Result<R> {
        let views = self
            .frozen
            .iter()
            .map(|t| HostView::new(t, "fused-encoder-layer"))
            .collect::<Result<Vec<_>>>()?;
        let slice = |i: usize| views[i].slice();
        let projection = |i: usize| Projection {
            weight: slice(2 * i),
            bias: slice(2 * i + 1),
            adapter: self.adapters[i],
        };
        let norm = |i: usize| Norm {
            gamma: slice(12 + 2 * i),
            beta: slice(13 + 2 * i),
            eps: self.eps,
        };
        let layer = Layer {
            query: projection(0),
            key: projection(1),
            value: projection(2),
            attention_output: projection(3),
            intermediate: projection(4),
            output: projection(5),
            attention_norm: norm(0),
            output_norm: norm(1),
            shape,
            intermediate_size: self.intermediate,
            keep: &self.keep,
            attention_dropout: self.attention_dropout,
            attention_output_dropout: self.attention_output_dropout,
            output_dropout: self.output_dropout,
            lora_a: a,
            lora_b: b,
        };
        Ok(f(&layer))
    }
}

impl CustomOp3 for EncoderLayerOp {
    fn name(&self) -> &'static str {
        "fused-encoder-layer"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        a: &CpuStorage,
        a_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = self.shape(x_layout.dims())?;
        let (x, a, b) = (
            storage_slice(x, x_layout, self.name())?,
            storage_slice(a, a_layout, self.name())?,
            storage_slice(b, b_layout, self.name())?,
        );
        let (y, saved) = self.with_layer(shape, a, b, |layer| layer.forward(x))?;
        match self.saved.lock() {
            Ok(mut kept) => *kept = Some(saved),
            Err(_) => bail!("fused-encoder-layer: a previous pass panicked"),
        }
        Ok((CpuStorage::F32(y), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let shape = self.shape(x.dims())?;
        let grad = grad.contiguous()?;
        let views = (
            HostView::new(x, self.name())?,
            HostView::new(a, self.name())?,
            HostView::new(b, self.name())?,
            HostView::new(&grad, self.name())?,
        );
        let Ok(saved) = self.saved.lock() else {
            bail!("fused-encoder-layer: a previous pass panicked");
        };
        let Some(saved) = saved.as_ref() else {
            bail!("fused-encoder-layer: backward pass before the forward pass");
        };
        let (dx, da, db) = self.with_layer(shape, views.1.slice(), views.2.slice(), |layer| {
            layer.backward(views.0.slice(), saved, views.3.slice(), x.track_op())
        })?;
        Ok((
            dx.map(|d| tensor(d, x.shape())).transpose()?,
            a.track_op().then(|| tensor(da, a.shape())).transpose()?,
            b.track_op().then(|| tensor(db, b.shape())).transpose()?,
        ))
    }
}
