//! AdamW (decoupled weight decay, Loshchilov & Hutter 2019) with global-norm gradient clipping
//! and gradient accumulation.
//!
//! Own code rather than `candle_nn::AdamW` because a resumable run must save and restore the
//! moment estimates, which candle's optimizer keeps private. The update is PyTorch's
//! `torch.optim.AdamW` (bias-corrected moments, `eps` outside the square root). As in the
//! Hugging Face `Trainer`, biases and LayerNorm weights get no weight decay.

use candle_core::{backprop::GradStore, Result, Tensor, Var};

use crate::checkpoint::TensorMap;

use super::adamw_cpu;
use super::params::{download, upload};
use super::RestoreError;

/// AdamW hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to `√v̂`.
    pub eps: f64,
    /// Decoupled weight decay, as a fraction of the learning rate.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// One trainable tensor with its moments and its accumulated gradient.
struct Slot {
    name: String,
    var: Var,
    first_moment: Tensor,
    second_moment: Tensor,
    gradient: Option<Tensor>,
    decays: bool,
}

/// AdamW over an explicit list of variables.
pub struct AdamW {
    slots: Vec<Slot>,
    config: AdamWConfig,
    /// Updates applied so far.
    step: usize,
}

impl AdamW {
    /// An optimizer for `vars` (name, variable), moments at zero.
    pub fn new<'a>(
        vars: impl IntoIterator<Item = (&'a String, &'a Var)>,
        config: AdamWConfig,
    ) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                Ok(Slot {
                    name: name.clone(),
                    var: var.clone(),
                    first_moment: var.zeros_like()?,
                    second_moment: var.zeros_like()?,
                    gradient: None,
                    decays: !(name.ends_with(".bias") || name.contains("LayerNorm")),
                })
            })
            .collect::<Result<_>>()?;
        Ok(AdamW {
            slots,
            config,
            step: 0,
        })
    }

    /// Adds this micro-batch's gradients to the accumulated ones. A variable the loss does not
    /// reach gets no gradient and is left alone.
    pub fn accumulate(&mut self, grads: &GradStore) -> Result<()> {
        for slot in &mut self.slots {
            if let Some(grad) = grads.get(slot.var.as_tensor()) {
                slot.gradient = Some(match slot.gradient.take() {
                    Some(sum) => (sum + grad)?,
                    None => grad.clone(),
                });
            }
        }
        Ok(())
    }

    /// The accumulated gradient of `name`, if any (tests).
    pub fn gradient(&self, name: &str) -> Option<&Tensor> {
        self.slots
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.gradient.as_ref())
    }

    /// L2 norm of all accumulated gradients together.
    pub(crate) fn gradient_norm(&self) -> Result<f64> {
        let mut sum = 0f64;
        for grad in self.slots.iter().filter_map(|s| s.gradient.as_ref()) {
            sum += grad
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
        Ok(sum.sqrt())
    }

    /// Clips the accumulated gradients to global norm `max_norm` (as
    /// `torch.nn.utils.clip_grad_norm_`), applies one AdamW update at `lr` and clears the
    /// gradients. Returns the norm before clipping. Contiguous f32 tensors on the CPU are
    /// updated in place ([`adamw_cpu`]), others through candle's tensor ops.
    pub fn step(&mut self, lr: f64, max_norm: Option<f64>) -> Result<f64> {
        let norm = self.gradient_norm()?;
        let clip = match max_norm {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        self.step += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let t = self.step as i32;
        let correction1 = 1.0 - beta1.powi(t);
        let correction2 = 1.0 - beta2.powi(t);
        for slot in &mut self.slots {
            let Some(grad) = slot.gradient.take() else {
                continue;
            };
            let theta = slot.var.as_tensor();
            let decay = if slot.decays { weight_decay } else { 0.0 };
            let grad = grad.contiguous()?;
            if adamw_cpu::applies(&[theta, &grad, &slot.first_moment, &slot.second_moment]) {
                adamw_cpu::MovingAverage::new(beta1, clip, false)
                    .apply(&slot.first_moment, &grad)?;
                adamw_cpu::MovingAverage::new(beta2, clip, true)
                    .apply(&slot.second_moment, &grad)?;
                adamw_cpu::Update {
                    keep: (1.0 - lr * decay) as f32,
                    step: (lr / correction1) as f32,
                    inv_root_correction2: (1.0 / correction2.sqrt()) as f32,
                    eps: eps as f32,
                }
                .apply(theta, &slot.first_moment, &slot.second_moment)?;
                continue;
            }
            let grad = if clip < 1.0 { (grad * clip)? } else { grad };
            slot.first_moment = ((&slot.first_moment * beta1)? + (&grad * (1.0 - beta1))?)?;
            slot.second_moment = ((&slot.second_moment * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;
            let m_hat = (&slot.first_moment / correction1)?;
            let v_hat = (&slot.second_moment / correction2)?;
            let update = (m_hat / (v_hat.sqrt()? + eps)?)?;
            let decayed = if decay > 0.0 {
                (theta * (1.0 - lr * decay))?
            } else {
                theta.clone()
            };
            slot.var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(norm)
    }

    /// The moments as host tensors, `m.<name>` and `v.<name>` (checkpoints).
    pub(crate) fn moments_to_host(&self) -> Result<TensorMap> {
        let mut map = TensorMap::new();
        for slot in &self.slots {
            map.insert(format!("m.{}", slot.name), download(&slot.first_moment)?);
            map.insert(format!("v.{}", slot.name), download(&slot.second_moment)?);
        }
        Ok(map)
    }

    /// Restores moments saved by [`AdamW::moments_to_host`] and the update count.
    pub(crate) fn restore(
        &mut self,
        moments: &TensorMap,
        step: usize,
    ) -> std::result::Result<(), RestoreError> {
        for slot in &mut self.slots {
            let dtype = slot.var.dtype();
            let device = slot.var.device().clone();
            let get = |key: String| -> std::result::Result<Tensor, RestoreError> {
                let Some(host) = moments.get(&key) else {
                    return Err(RestoreError::Missing { name: key });
                };
                if host.shape != slot.var.dims() {
                    return Err(RestoreError::Shape {
                        name: key,
                        found: host.shape.clone(),
                        expected: slot.var.dims().to_vec(),
                    });
                }
                upload(host, dtype, &device)
                    .map_err(|source| RestoreError::Upload { name: key, source })
            };
            slot.first_moment = get(format!("m.{}", slot.name))?;
            slot.second_moment = get(format!("v.{}", slot.name))?;
            slot.gradient = None;
        }
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Two AdamW steps on `f(w) = Σ w²` against values computed by hand from PyTorch's formula.
    #[test]
    fn matches_torch_adamw_update() {
        let var = Var::from_slice(&[1.0f32, -2.0], 2, &Device::Cpu).unwrap();
        let name = "w.weight".to_string();
        let mut adam = AdamW::new([(&name, &var)], AdamWConfig::default()).unwrap();
        let lr = 0.1;
        let mut expected = [1.0f64, -2.0];
        let (mut m, mut v) = ([0.0f64; 2], [0.0f64; 2]);
        for t in 1..=2 {
            let loss = var.as_tensor().sqr().unwrap().sum_all().unwrap();
            adam.accumulate(&loss.backward().unwrap()).unwrap();
            adam.step(lr, None).unwrap();
            for i in 0..2 {
                let g = 2.0 * expected[i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                let update = (m[i] / (1.0 - 0.9f64.powi(t)))
                    / ((v[i] / (1.0 - 0.999f64.powi(t))).sqrt() + 1e-8);
                expected[i] = expected[i] * (1.0 - lr * 0.01) - lr * update;
            }
        }
        let found = var
            .as_tensor()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for (f, e) in found.iter().zip(expected) {
            assert!((f - e).abs() < 1e-6, "{found:?} vs {expected:?}");
        }
    }

    /// The in-place f32 path (taken for f32 on the CPU) gives candle's tensor-op path's
    /// parameters and moments (taken here for f64) over several clipped, decayed updates.
    #[test]
    fn in_place_update_matches_the_tensor_ops() {
        let values: Vec<f64> = (0..257)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 17.0)
            .collect();
        let run = |dtype: DType| {
            let init = Tensor::from_slice(&values, (257,), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let var = Var::from_tensor(&init).unwrap();
            let name = "w.weight".to_string();
            let mut adam = AdamW::new([(&name, &var)], AdamWConfig::default()).unwrap();
            for _ in 0..3 {
                let loss = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
                adam.accumulate(&loss.backward().unwrap()).unwrap();
                adam.step(0.05, Some(10.0)).unwrap();
            }
            let as_f64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
            let moments = adam.moments_to_host().unwrap();
            (as_f64(var.as_tensor()), moments["v.w.weight"].data.clone())
        };
        let (fast, fast_v) = run(DType::F32);
        let (ops, ops_v) = run(DType::F64);
        for (f, o) in fast.iter().zip(&ops) {
            assert!((f - o).abs() < 1e-5, "{f} vs {o}");
        }
        for (f, o) in fast_v.iter().zip(&ops_v) {
            assert!((f - o).abs() < 1e-5 * o.abs().max(1.0), "{f} vs {o}");
        }
    }

    #[test]
    fn clipping_scales_to_the_global_norm() {
        let var = Var::from_slice(&[3.0f32, 4.0], 2, &Device::Cpu).unwrap();
        let name = "w.bias".to_string();
        let mut adam = AdamW::new([(&name, &var)], AdamWConfig::default()).unwrap();
        // loss = 0.5·|w|² → gradient = w, norm 5.
        let loss = (var.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
        adam.accumulate(&loss.backward().unwrap()).unwrap();
        adam.accumulate(&loss.backward().unwrap()).unwrap();
        assert!((adam.gradient_norm().unwrap() - 10.0).abs() < 1e-5);
        let norm = adam.step(0.01, Some(1.0)).unwrap();
        assert!((norm - 10.0).abs() < 1e-5);
        assert!(adam.gradient("w.bias").is_none());
        assert_eq!(adam.step, 1);
        let moments = adam.moments_to_host().unwrap();
        // m = 0.1 · clipped gradient = 0.1 · (0.6, 0.8).
        assert!((moments["m.w.bias"].data[0] - 0.06).abs() < 1e-6);
    }
}
