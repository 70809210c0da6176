//! Train vs eval, and seeded dropout masks.
//!
//! A run must be reproducible from its seed, and `--resume` exact, so every micro-batch's masks
//! are a function of the run seed and the micro-batch's position in the schedule:
//! - on the CPU they are counter-based draws on the host (`sentimq_train_kernels::dropout`):
//!   the micro-batch's stream seed and the draw's number give a key, and whether an element is
//!   kept is a hash of the key and its index, so the fused ops redraw a mask in the backward
//!   pass instead of storing it (candle's CPU backend cannot seed a generator anyway:
//!   `Device::set_seed` fails there);
//! - on a GPU, the device's own generator (cuRAND on CUDA) is re-seeded for each micro-batch and
//!   draws them where they are used. Drawing on the host costs a GPU run most of its step time:
//!   BERT-base at batch 16 × 128 tokens needs about 130 million draws per update, while a
//!   whole PyTorch update of it takes ~30 ms on an H200. `DropoutMasks::on_host` still draws the CPU's masks on
//!   any device, which makes a GPU run comparable with a CPU run, mask for mask.

use std::cell::Cell;

use candle_core::{Device, Result, Tensor};
use sentimq_train_kernels::dropout::DropoutMask;

use super::fused;
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

    /// The next host-drawn mask for probability `p`, for an op that applies it itself
    /// (the fused attention): `None` in eval mode or for `p = 0`.
    ///
    /// Errors: the masks are drawn on a device, which such an op cannot use.
    pub(crate) fn host_mask(&self, p: f64) -> Result<Option<DropoutMask>> {
        match self {
            Mode::Train(masks) if p > 0.0 => masks.next_host_mask(p).map(Some),
            _ => Ok(None),
        }
    }
}

/// A seeded stream of dropout masks for one micro-batch.
pub struct DropoutMasks {
    source: Source,
    device: Device,
}

enum Source {
    /// Counter-based draws on the host: the stream seed and the number of draws so far.
    Host { stream: u64, draws: Cell<u64> },
    /// The device's generator, seeded for this micro-batch.
    Device,
}

impl DropoutMasks {
    /// Masks for the micro-batch at `position` (any value unique within the run) of a run
    /// seeded with `seed`, drawn on `device` where it has a seedable generator (GPUs), else on
    /// the host.
    ///
    /// Errors: seeding the device's generator failed.
    pub fn new(seed: u64, position: u64, device: &Device) -> Result<Self> {
        if device.is_cpu() {
            return Ok(Self::on_host(seed, position, device));
        }
        device.set_seed(stream_seed(seed, position))?;
        Ok(DropoutMasks {
            source: Source::Device,
            device: device.clone(),
        })
    }

    /// The same masks as [`DropoutMasks::new`] gives on the CPU, drawn on the host and uploaded
    /// to `device`.
    pub(crate) fn on_host(seed: u64, position: u64, device: &Device) -> Self {
        DropoutMasks {
            source: Source::Host {
                stream: stream_seed(seed, position),
                draws: Cell::new(0),
            },
            device: device.clone(),
        }
    }

    /// The next draw's mask, for host-drawn masks.
    fn next_host_mask(&self, p: f64) -> Result<DropoutMask> {
        let Source::Host { stream, draws } = &self.source else {
            candle_core::bail!("dropout: masks drawn on the device cannot feed a fused CPU op");
        };
        let number = draws.get();
        draws.set(number + 1);
        let key = SplitMix64::new(stream.wrapping_add(number.wrapping_mul(0xA076_1D64_78BD_642F)))
            .next_u64();
        Ok(DropoutMask::new(key, p))
    }

    fn apply(&self, xs: &Tensor, p: f64) -> Result<Tensor> {
        match &self.source {
            Source::Host { .. } => fused::dropout(xs, self.next_host_mask(p)?),
            Source::Device => {
                let mask = Tensor::rand(0f32, 1f32, xs.shape(), &self.device)?
                    .ge(p as f32)?
                    .to_dtype(xs.dtype())?
                    .affine(1.0 / (1.0 - p), 0.0)?;
                xs.mul(&mask)
            }
        }
    }
}

/// The generator seed of the micro-batch at `position`: mixed so that neighbouring positions
/// get unrelated streams.
fn stream_seed(seed: u64, position: u64) -> u64 {
    SplitMix64::new(seed ^ 0xD1B5_4A32_D192_ED03)
        .next_u64()
        .wrapping_add(position.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_drop_about_p_and_repeat_with_the_position() {
        let xs = Tensor::ones((100, 100), candle_core::DType::F32, &Device::Cpu).unwrap();
        let draw = |position| {
            let masks = DropoutMasks::new(7, position, &Device::Cpu).unwrap();
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
