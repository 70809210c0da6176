//! `x·Wᵀ` for a frozen `W` whose backward pass computes only `∂L/∂x`.
//!
//! candle's matmul backward always computes both operands' gradients; for a frozen weight the
//! `xᵀ·grad` product (a third of a linear layer's training FLOPs) is computed and thrown
//! away. Here the product is computed outside the graph and re-attached to `x` through a
//! custom op whose backward returns `grad·W` for `x` and nothing for the weight. CPU only (the
//! op's forward is a copy of host storage); other devices and trainable weights take the plain
//! `matmul`.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// `x (rows, in) · weightᵀ (in, out) -> (rows, out)`; gradients flow to `x` only.
pub fn frozen_matmul(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() || weight.is_variable() {
        return x.matmul(&weight.t()?);
    }
    let product = x.detach().matmul(&weight.t()?)?;
    if !x.track_op() {
        // Nothing to differentiate (evaluation): skip the copy.
        return Ok(product);
    }
    x.apply_op2(
        &product,
        InputGradOnly {
            weight: weight.clone(),
        },
    )
}

/// Forward: the precomputed product; backward: `grad·W` for the input, none for the product.
struct InputGradOnly {
    /// `(out, in)`, frozen.
    weight: Tensor,
}

impl CustomOp2 for InputGradOnly {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        product: &CpuStorage,
        layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let stored = match product {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            _ => bail!("frozen-linear: f32 or f64 only"),
        };
        match layout.contiguous_offsets() {
            Some((0, end)) if end == stored => Ok((product.clone(), layout.shape().clone())),
            _ => bail!("frozen-linear: the product must be contiguous and whole"),
        }
    }

    fn bwd(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(&self.weight)?), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn gradient_to_input_equals_plain_matmul() {
        let device = Device::Cpu;
        let x = Var::from_slice(&[1.0f32, 2.0, 3.0, -1.0, 0.5, 2.0], (2, 3), &device).unwrap();
        let w = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 1.5, 0.0, -0.5], (2, 3), &device).unwrap();
        let plain = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        let frozen = frozen_matmul(x.as_tensor(), &w).unwrap();
        assert_eq!(
            plain.to_vec2::<f32>().unwrap(),
            frozen.to_vec2::<f32>().unwrap()
        );
        let grad = |y: Tensor| {
            let loss = y.sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            grads.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap()
        };
        assert_eq!(grad(plain), grad(frozen));
    }
}
