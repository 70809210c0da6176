//! Train vs eval, and seeded dropout masks.
//!
//! candle's CPU backend cannot seed its random generator (`Device::set_seed` fails on CPU), so
//! `candle_nn::ops::dropout` would make runs irreproducible and `--resume` inexact. Masks are
//! drawn here from the crate's [`SplitMix64`] instead, on the host, and uploaded: one generator
//! per micro-batch, seeded from the run seed and the micro-batch's position in the schedule, so
//! a resumed run draws exactly the masks the uninterrupted one would have.

use std::cell::RefCell;

use candle_core::{Device, Result, Tensor};

use crate::rng::SplitMix64;

/// Whether a forward pass trains (dropout on, masks from the given source) or evaluates.
#[derive(Clone, Copy)]
pub enum Mode<'a> {
    /// Inference: dropout is the identity.
    Eval,
    /// Training: dropout masks come from this source.
    Train(&'a DropoutMasks),
}

impl Mode<'_> {
    /// Inverted dropout with probability `p`: zeroes elements, scales the kept ones by
    /// `1/(1-p)`; the identity in eval mode or for `p = 0`.
    pub fn dropout(&self, xs: &Tensor, p: f64) -> Result<Tensor> {
        match self {
            Mode::Train(masks) if p > 0.0 => masks.apply(xs, p),
            _ => Ok(xs.clone()),
        }
    }

    /// Whether this pass trains.
    pub fn is_train(&self) -> bool {
        matches!(self, Mode::Train(_))
    }
}

/// A seeded stream of dropout masks for one micro-batch.
pub struct DropoutMasks {
    rng: RefCell<SplitMix64>,
    device: Device,
}

impl DropoutMasks {
    /// Masks for the micro-batch at `position` (any value unique within the run) of a run
    /// seeded with `seed`, built on `device`.
    pub fn new(seed: u64, position: u64, device: &Device) -> Self {
        // Mix so that neighbouring positions get unrelated streams.
        let stream = SplitMix64::new(seed ^ 0xD1B5_4A32_D192_ED03)
            .next_u64()
            .wrapping_add(position.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        DropoutMasks {
            rng: RefCell::new(SplitMix64::new(stream)),
            device: device.clone(),
        }
    }

    fn apply(&self, xs: &Tensor, p: f64) -> Result<Tensor> {
        let keep = 1.0 / (1.0 - p) as f32;
        // 32 random bits per element, two elements per draw.
        let threshold = (p * 4_294_967_296.0) as u64;
        let count = xs.elem_count();
        let mut mask = Vec::with_capacity(count);
        let mut rng = self.rng.borrow_mut();
        while mask.len() < count {
            let bits = rng.next_u64();
            for half in [bits & 0xFFFF_FFFF, bits >> 32] {
                if mask.len() < count {
                    mask.push(if half < threshold { 0.0 } else { keep });
                }
            }
        }
        let mask = Tensor::from_vec(mask, xs.shape(), &self.device)?.to_dtype(xs.dtype())?;
        xs.mul(&mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_drop_about_p_and_repeat_with_the_position() {
        let xs = Tensor::ones((100, 100), candle_core::DType::F32, &Device::Cpu).unwrap();
        let draw = |position| {
            let masks = DropoutMasks::new(7, position, &Device::Cpu);
            Mode::Train(&masks)
                .dropout(&xs, 0.1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let first = draw(3);
        let dropped = first.iter().filter(|&&v| v == 0.0).count();
        assert!((800..1200).contains(&dropped), "{dropped} of 10000 dropped");
        assert!(first
            .iter()
            .all(|&v| v == 0.0 || (v - 1.0 / 0.9).abs() < 1e-6));
        assert_eq!(first, draw(3));
        assert_ne!(first, draw(4));
        let eval = Mode::Eval.dropout(&xs, 0.1).unwrap();
        assert_eq!(
            eval.sum_all().unwrap().to_scalar::<f32>().unwrap(),
            10_000.0
        );
    }
}
