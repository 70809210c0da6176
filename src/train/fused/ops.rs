//! The candle custom ops behind [`super`]'s functions: shape checks, host views of the
//! tensors, and calls into `sentimq_train_kernels`.

use std::sync::{Arc, Mutex};

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Storage,
    StorageRef, Tensor,
};
use sentimq_train_kernels::attention::{
    self, AttentionGradients, AttentionParams, AttentionShape, Probabilities,
};
use sentimq_train_kernels::dropout::DropoutMask;
use sentimq_train_kernels::linear::{self, LinearShape};
use sentimq_train_kernels::lora::{self, LoraGradients, LoraLayer};
use sentimq_train_kernels::{activation, norm};

use super::AttentionSettings;

/// The elements of a contiguous `f32` CPU storage.
pub(super) fn storage_slice<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    match (storage, layout.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        (CpuStorage::F32(_), None) => bail!("{op}: the input is not contiguous"),
        _ => bail!("{op}: f32 only"),
    }
}

/// A read-locked view of a contiguous `f32` CPU tensor's elements.
pub(super) struct HostView<'a> {
    storage: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> HostView<'a> {
    pub(super) fn new(t: &'a Tensor, op: &str) -> Result<Self> {
        let (storage, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("{op}: a backward input is not contiguous");
        };
        if !matches!(&*storage, Storage::Cpu(CpuStorage::F32(_))) {
            bail!("{op}: f32 CPU tensors only");
        }
        Ok(HostView {
            storage,
            start,
            end,
        })
    }

    pub(super) fn slice(&self) -> &[f32] {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(data)) => &data[self.start..self.end],
            _ => &[],
        }
    }
}

/// A new CPU tensor of `shape` from `data`.
pub(super) fn tensor(data: Vec<f32>, shape: &Shape) -> Result<Tensor> {
    Tensor::from_vec(data, shape.clone(), &Device::Cpu)
}

/// `x (rows, in) · weight (out, in)ᵀ + bias (out)`.
pub(super) struct LinearOp;

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, inputs) = x_layout.shape().dims2()?;
        let (outputs, weight_inputs) = weight_layout.shape().dims2()?;
        if weight_inputs != inputs || bias_layout.shape().dims1()? != outputs {
            bail!(
                "fused-linear: x {:?}, weight {:?}, bias {:?}",
                x_layout.dims(),
                weight_layout.dims(),
                bias_layout.dims()
            );
        }
        let shape = LinearShape {
            rows,
            inputs,
            outputs,
        };
        let mut y = vec![0f32; rows * outputs];
        linear::forward(
            shape,
            storage_slice(x, x_layout, self.name())?,
            storage_slice(weight, weight_layout, self.name())?,
            storage_slice(bias, bias_layout, self.name())?,
            &mut y,
        );
        Ok((CpuStorage::F32(y), Shape::from((rows, outputs))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, inputs) = x.dims2()?;
        let outputs = weight.dim(0)?;
        let shape = LinearShape {
            rows,
            inputs,
            outputs,
        };
        let grad = grad.contiguous()?;
        let dy = HostView::new(&grad, self.name())?;
        let dx = if x.track_op() {
            let w = HostView::new(weight, self.name())?;
            let mut dx = vec![0f32; rows * inputs];
            linear::backward_input(shape, dy.slice(), w.slice(), &mut dx);
            Some(tensor(dx, x.shape())?)
        } else {
            None
        };
        let dweight = if weight.track_op() {
            let xs = HostView::new(x, self.name())?;
            let mut dw = vec![0f32; outputs * inputs];
            linear::backward_weight(shape, dy.slice(), xs.slice(), &mut dw);
            Some(tensor(dw, weight.shape())?)
        } else {
            None
        };
        let dbias = if bias.track_op() {
            let mut db = vec![0f32; outputs];
            linear::backward_bias(shape, dy.slice(), &mut db);
            Some(tensor(db, bias.shape())?)
        } else {
            None
        };
        Ok((dx, dweight, dbias))
    }
}

/// LayerNorm of `x (.., width)` with `gamma`, `beta (width)`.
pub(super) struct LayerNormOp {
    pub eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        gamma: &CpuStorage,
        gamma_layout: &Layout,
        beta: &CpuStorage,
        beta_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let width = gamma_layout.shape().dims1()?;
        if x_layout.dims().last() != Some(&width) || beta_layout.shape().dims1()? != width {
            bail!(
                "fused-layer-norm: x {:?}, gamma {:?}, beta {:?}",
                x_layout.dims(),
                gamma_layout.dims(),
                beta_layout.dims()
            );
        }
        let x = storage_slice(x, x_layout, self.name())?;
        let mut y = vec![0f32; x.len()];
        norm::forward(
            x,
            storage_slice(gamma, gamma_layout, self.name())?,
            storage_slice(beta, beta_layout, self.name())?,
            self.eps,
            &mut y,
        );
        Ok((CpuStorage::F32(y), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let width = gamma.elem_count();
        let grad = grad.contiguous()?;
        let (xs, g, dy) = (
            HostView::new(x, self.name())?,
            HostView::new(gamma, self.name())?,
            HostView::new(&grad, self.name())?,
        );
        let mut dx = x.track_op().then(|| vec![0f32; x.elem_count()]);
        let mut dgamma = gamma.track_op().then(|| vec![0f32; width]);
        let mut dbeta = beta.track_op().then(|| vec![0f32; width]);
        norm::backward(
            xs.slice(),
            g.slice(),
            self.eps,
            dy.slice(),
            norm::NormGradients {
                x: dx.as_deref_mut(),
                gamma: dgamma.as_deref_mut(),
                beta: dbeta.as_deref_mut(),
            },
        );
        Ok((
            dx.map(|d| tensor(d, x.shape())).transpose()?,
            dgamma.map(|d| tensor(d, gamma.shape())).transpose()?,
            dbeta.map(|d| tensor(d, beta.shape())).transpose()?,
        ))
    }
}

/// Exact GELU.
pub(super) struct GeluOp;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "fused-gelu"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = storage_slice(x, layout, self.name())?;
        let mut y = vec![0f32; x.len()];
        activation::gelu_forward(x, &mut y);
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let (xs, dy) = (
            HostView::new(x, self.name())?,
            HostView::new(&grad, self.name())?,
        );
        let mut dx = vec![0f32; x.elem_count()];
        activation::gelu_backward(xs.slice(), dy.slice(), &mut dx);
        Ok(Some(tensor(dx, x.shape())?))
    }
}

/// `x ∘ mask`; the backward pass redraws the same mask.
pub(super) struct DropoutOp {
    pub mask: DropoutMask,
}

impl CustomOp1 for DropoutOp {
    fn name(&self) -> &'static str {
        "fused-dropout"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = storage_slice(x, layout, self.name())?;
        let mut y = vec![0f32; x.len()];
        self.mask.apply(x, &mut y);
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let dy = HostView::new(&grad, self.name())?;
        let mut dx = vec![0f32; grad.elem_count()];
        self.mask.apply(dy.slice(), &mut dx);
        Ok(Some(tensor(dx, x.shape())?))
    }
}

/// Multi-head attention over `q`, `k`, `v (batch, seq, hidden)`; keeps the probabilities of
/// its forward pass (after the softmax, and after dropout) for the backward pass.
pub(super) struct AttentionOp {
    heads: usize,
    head_dim: usize,
    dropout: Option<DropoutMask>,
    keep: Arc<Vec<f32>>,
    probs: Mutex<Option<KeptProbabilities>>,
}

/// What the forward pass keeps.
struct KeptProbabilities {
    probs: Vec<f32>,
    dropped: Option<Vec<f32>>,
}

impl AttentionOp {
    pub fn new(
        settings: &AttentionSettings,
        dropout: Option<DropoutMask>,
        keep: Arc<Vec<f32>>,
    ) -> Self {
        AttentionOp {
            heads: settings.heads,
            head_dim: settings.head_dim,
            dropout,
            keep,
            probs: Mutex::new(None),
        }
    }

    fn shape(&self, dims: &[usize]) -> Result<AttentionShape> {
        let &[batch, seq, hidden] = dims else {
            bail!("fused-attention: q, k, v must be (batch, seq, hidden), got {dims:?}");
        };
        if hidden != self.heads * self.head_dim || self.keep.len() != batch * seq {
            bail!(
                "fused-attention: hidden {hidden} vs {} heads × {}, mask of {} for {batch} × {seq}",
                self.heads,
                self.head_dim,
                self.keep.len()
            );
        }
        Ok(AttentionShape {
            batch,
            seq,
            heads: self.heads,
            head_dim: self.head_dim,
        })
    }

    fn params(&self) -> AttentionParams<'_> {
        AttentionParams {
            keep: &self.keep,
            scale: 1.0 / (self.head_dim as f32).sqrt(),
            dropout: self.dropout,
        }
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        q: &CpuStorage,
        q_layout: &Layout,
        k: &CpuStorage,
        k_layout: &Layout,
        v: &CpuStorage,
        v_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = self.shape(q_layout.dims())?;
        if k_layout.dims() != q_layout.dims() || v_layout.dims() != q_layout.dims() {
            bail!("fused-attention: q, k, v shapes differ");
        }
        let mut probs = vec![0f32; shape.probabilities()];
        let mut dropped = self.dropout.map(|_| vec![0f32; shape.probabilities()]);
        let mut context = vec![0f32; shape.activations()];
        attention::forward(
            shape,
            storage_slice(q, q_layout, self.name())?,
            storage_slice(k, k_layout, self.name())?,
            storage_slice(v, v_layout, self.name())?,
            self.params(),
            Probabilities {
                probs: &mut probs,
                dropped: dropped.as_deref_mut(),
            },
            &mut context,
        );
        match self.probs.lock() {
            Ok(mut kept) => *kept = Some(KeptProbabilities { probs, dropped }),
            Err(_) => bail!("fused-attention: a previous pass panicked"),
        }
        Ok((CpuStorage::F32(context), q_layout.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let shape = self.shape(q.dims())?;
        let grad = grad.contiguous()?;
        let views = (
            HostView::new(q, self.name())?,
            HostView::new(k, self.name())?,
            HostView::new(v, self.name())?,
            HostView::new(&grad, self.name())?,
        );
        let Ok(probs) = self.probs.lock() else {
            bail!("fused-attention: a previous pass panicked");
        };
        let Some(kept) = probs.as_ref() else {
            bail!("fused-attention: backward pass before the forward pass");
        };
        let wanted = |t: &Tensor| t.track_op().then(|| vec![0f32; shape.activations()]);
        let (mut dq, mut dk, mut dv) = (wanted(q), wanted(k), wanted(v));
        attention::backward(
            shape,
            views.0.slice(),
            views.1.slice(),
            views.2.slice(),
            self.params(),
            &kept.probs,
            kept.dropped.as_deref(),
            views.3.slice(),
            AttentionGradients {
                q: dq.as_deref_mut(),
                k: dk.as_deref_mut(),
                v: dv.as_deref_mut(),
            },
        );
        Ok((
            dq.map(|d| tensor(d, q.shape())).transpose()?,
            dk.map(|d| tensor(d, k.shape())).transpose()?,
            dv.map(|d| tensor(d, v.shape())).transpose()?,
        ))
    }
}

/// A frozen linear layer plus its LoRA update, over `x (rows, in)`, `A (r, in)`, `B (out, r)`;
/// the frozen weight and bias are held by the op (they need no gradient).
pub(super) struct LoraOp {
    pub weight: Tensor,
    pub bias: Tensor,
    pub scale: f32,
    pub dropout: Option<DropoutMask>,
}

impl LoraOp {
    fn shape(&self, x: &[usize], a: &[usize], b: &[usize]) -> Result<LinearShape> {
        let (outputs, inputs) = self.weight.dims2()?;
        match (x, a, b) {
            (&[rows, xi], &[ra, ai], &[bo, rb])
                if xi == inputs && ai == inputs && bo == outputs && ra == rb =>
            {
                Ok(LinearShape {
                    rows,
                    inputs,
                    outputs,
                })
            }
            _ => bail!(
                "fused-lora: x {x:?}, A {a:?}, B {b:?} for weight {:?}",
                self.weight.dims()
            ),
        }
    }
}

impl CustomOp3 for LoraOp {
    fn name(&self) -> &'static str {
        "fused-lora-linear"
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
        let shape = self.shape(x_layout.dims(), a_layout.dims(), b_layout.dims())?;
        let (weight, bias) = (
            HostView::new(&self.weight, self.name())?,
            HostView::new(&self.bias, self.name())?,
        );
        let layer = LoraLayer {
            weight: weight.slice(),
            bias: bias.slice(),
            a: storage_slice(a, a_layout, self.name())?,
            b: storage_slice(b, b_layout, self.name())?,
            scale: self.scale,
            dropout: self.dropout,
        };
        let mut y = vec![0f32; shape.rows * shape.outputs];
        lora::forward(
            shape,
            layer,
            storage_slice(x, x_layout, self.name())?,
            &mut y,
        );
        Ok((CpuStorage::F32(y), Shape::from((shape.rows, shape.outputs))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let shape = self.shape(x.dims(), a.dims(), b.dims())?;
        let grad = grad.contiguous()?;
        let views = (
            HostView::new(&self.weight, self.name())?,
            HostView::new(&self.bias, self.name())?,
            HostView::new(a, self.name())?,
            HostView::new(b, self.name())?,
            HostView::new(x, self.name())?,
            HostView::new(&grad, self.name())?,
        );
        let layer = LoraLayer {
            weight: views.0.slice(),
            bias: views.1.slice(),
            a: views.2.slice(),
            b: views.3.slice(),
            scale: self.scale,
            dropout: self.dropout,
        };
        let wanted = |t: &Tensor| t.track_op().then(|| vec![0f32; t.elem_count()]);
        let (mut dx, mut da, mut db) = (wanted(x), wanted(a), wanted(b));
        lora::backward(
            shape,
            layer,
            views.4.slice(),
            views.5.slice(),
            LoraGradients {
                x: dx.as_deref_mut(),
                a: da.as_deref_mut(),
                b: db.as_deref_mut(),
            },
        );
        Ok((
            dx.map(|d| tensor(d, x.shape())).transpose()?,
            da.map(|d| tensor(d, a.shape())).transpose()?,
            db.map(|d| tensor(d, b.shape())).transpose()?,
        ))
    }
}

/// `LayerNorm(dropout(a) + b)` with a frozen `gamma`, `beta` held by the op: BERT's residual
/// connections. The sum is recomputed in the backward pass rather than kept.
pub(super) struct ResidualNormOp {
    pub gamma: Tensor,
    pub beta: Tensor,
    pub eps: f32,
    pub dropout: Option<DropoutMask>,
}

impl ResidualNormOp {
    /// `dropout(a) + b`.
    fn sum(&self, a: &[f32], b: &[f32]) -> Result<Vec<f32>> {
        if a.len() != b.len() || !a.len().is_multiple_of(self.gamma.elem_count().max(1)) {
            bail!(
                "fused-residual-norm: a of {}, b of {}, width {}",
                a.len(),
                b.len(),
                self.gamma.elem_count()
            );
        }
        let mut x = vec![0f32; a.len()];
        norm::residual(a, b, self.dropout, &mut x);
        Ok(x)
    }
}

impl CustomOp2 for ResidualNormOp {
    fn name(&self) -> &'static str {
        "fused-residual-norm"
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        a_layout: &Layout,
        b: &CpuStorage,
        b_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if a_layout.dims() != b_layout.dims() {
            bail!(
                "fused-residual-norm: {:?} + {:?}",
                a_layout.dims(),
                b_layout.dims()
            );
        }
        let x = self.sum(
            storage_slice(a, a_layout, self.name())?,
            storage_slice(b, b_layout, self.name())?,
        )?;
        let (gamma, beta) = (
            HostView::new(&self.gamma, self.name())?,
            HostView::new(&self.beta, self.name())?,
        );
        let mut y = vec![0f32; x.len()];
        norm::forward(&x, gamma.slice(), beta.slice(), self.eps, &mut y);
        Ok((CpuStorage::F32(y), a_layout.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let views = (
            HostView::new(a, self.name())?,
            HostView::new(b, self.name())?,
            HostView::new(&self.gamma, self.name())?,
            HostView::new(&grad, self.name())?,
        );
        let x = self.sum(views.0.slice(), views.1.slice())?;
        let mut dx = vec![0f32; x.len()];
        norm::backward(
            &x,
            views.2.slice(),
            self.eps,
            views.3.slice(),
            norm::NormGradients {
                x: Some(&mut dx),
                gamma: None,
                beta: None,
            },
        );
        let da = match (a.track_op(), self.dropout) {
            (false, _) => None,
            (true, None) => Some(dx.clone()),
            (true, Some(mask)) => {
                let mut da = vec![0f32; dx.len()];
                mask.apply(&dx, &mut da);
                Some(da)
            }
        };
        Ok((
            da.map(|d| tensor(d, a.shape())).transpose()?,
            b.track_op().then(|| tensor(dx, b.shape())).transpose()?,
        ))
    }
}
