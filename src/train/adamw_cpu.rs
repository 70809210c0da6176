//! AdamW's update as in-place passes over f32 tensors in host memory (candle's `InplaceOp2` and
//! `InplaceOp3`): the moments and the parameter are rewritten where they lie. Built from
//! candle's tensor ops the same update allocates about ten temporaries the size of each
//! parameter, which for full fine-tuning (22.7 M parameters in MiniLM) took a quarter of a
//! training step on two cores. [`AdamW::step`](super::optimizer::AdamW::step) takes this path
//! for contiguous f32 tensors on the CPU and candle's ops everywhere else; the arithmetic is the
//! same, in f32.

use candle_core::{bail, CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor};

/// Whether the fast path applies: every tensor contiguous, f32, in host memory.
pub(super) fn applies(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous())
}

/// `moment = beta · moment + rest · (scale · gradient)^p`, p = 1 or 2, `rest = 1 − beta`
/// (computed in f64: `1 − 0.999` in f32 is off by 1e-5).
pub(super) struct MovingAverage {
    beta: f32,
    rest: f32,
    scale: f32,
    squared: bool,
}

/// `θ = θ · keep − step · m / (√v · inv_root_c₂ + eps)`, as PyTorch's AdamW arranges it:
/// `keep = 1 − lr · decay`, `step = lr / c₁`, `inv_root_c₂ = 1 / √c₂` (cᵢ the bias corrections),
/// the factors computed once in f64.
pub(super) struct Update {
    pub keep: f32,
    pub step: f32,
    pub inv_root_correction2: f32,
    pub eps: f32,
}

impl MovingAverage {
    /// Decay `beta`, gradients scaled by `scale`, squared or not; `1 − beta` taken in f64.
    pub(super) fn new(beta: f64, scale: f64, squared: bool) -> Self {
        MovingAverage {
            beta: beta as f32,
            rest: (1.0 - beta) as f32,
            scale: scale as f32,
            squared,
        }
    }

    pub(super) fn apply(&self, moment: &Tensor, gradient: &Tensor) -> Result<()> {
        moment.inplace_op2(gradient, self)
    }
}

impl Update {
    pub(super) fn apply(&self, theta: &Tensor, first: &Tensor, second: &Tensor) -> Result<()> {
        theta.inplace_op3(first, second, self)
    }
}

fn slice<'a>(storage: &'a CpuStorage, layout: &Layout, name: &str) -> Result<&'a [f32]> {
    let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
        bail!("{name}: needs a contiguous f32 tensor")
    };
    Ok(&data[start..end])
}

fn slice_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    name: &str,
) -> Result<&'a mut [f32]> {
    let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets()) else {
        bail!("{name}: needs a contiguous f32 tensor")
    };
    Ok(&mut data[start..end])
}

impl InplaceOp2 for MovingAverage {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let moment = slice_mut(s1, l1, self.name())?;
        let gradient = slice(s2, l2, self.name())?;
        if moment.len() != gradient.len() {
            bail!(
                "adamw-moment: {} moments for {} gradients",
                moment.len(),
                gradient.len()
            )
        }
        let (beta, rest) = (self.beta, self.rest);
        for (m, &g) in moment.iter_mut().zip(gradient) {
            let g = g * self.scale;
            *m = beta * *m + rest * if self.squared { g * g } else { g };
        }
        Ok(())
    }
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let theta = slice_mut(s1, l1, self.name())?;
        let (first, second) = (slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        if theta.len() != first.len() || theta.len() != second.len() {
            bail!("adamw-update: parameter and moments differ in length")
        }
        for ((w, &m), &v) in theta.iter_mut().zip(first).zip(second) {
            let denominator = v.sqrt() * self.inv_root_correction2 + self.eps;
            *w = *w * self.keep - self.step * m / denominator;
        }
        Ok(())
    }
}
