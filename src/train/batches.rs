//! Encoded examples and their batches: grouped by length so padding stays small, in a seeded
//! order that is a pure function of `(seed, epoch)` — which is what lets `--resume` rebuild the
//! exact data order from a position alone.
//!
//! Each epoch shuffles the examples, cuts them into pools of `POOL_BATCHES` batches, sorts
//! each pool by length, cuts it into batches and shuffles the batches. Each batch is padded to
//! its longest text only ([`TokenBatch`]).

use candle_core::{Device, Result, Tensor};

use crate::rng::SplitMix64;
use crate::tokenizer::{Encoded, TokenBatch};

/// Batches per length-sorting pool: large enough that neighbours have similar lengths, small
/// enough that batches still mix reviews from all over the epoch.
pub(crate) const POOL_BATCHES: usize = 50;

/// Tokenized examples with their labels.
#[derive(Clone, Debug, Default)]
pub struct EncodedSet {
    /// One per example, `[CLS] … [SEP]`.
    pub items: Vec<Encoded>,
    /// 0 or 1, one per example.
    pub labels: Vec<u8>,
}

impl EncodedSet {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Token count of each example.
    pub(crate) fn lengths(&self) -> Vec<usize> {
        self.items.iter().map(|e| e.ids.len()).collect()
    }
}

/// The batches of epoch `epoch` (0-based), as example indices.
pub(crate) fn epoch_batches(
    lengths: &[usize],
    batch: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let batch = batch.max(1);
    let mut rng =
        SplitMix64::new(seed ^ 0xBA7C_4E55 ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut order);
    let mut batches = Vec::with_capacity(lengths.len().div_ceil(batch));
    for pool in order.chunks_mut(batch * POOL_BATCHES) {
        pool.sort_by_key(|&i| (lengths[i], i));
        batches.extend(pool.chunks(batch).map(<[usize]>::to_vec));
    }
    rng.shuffle(&mut batches);
    batches
}

/// The batches of an evaluation pass: sorted by length, in order (no randomness needed).
pub(crate) fn eval_batches(lengths: &[usize], batch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
}

/// One batch on the device.
pub struct DeviceBatch {
    /// `(batch, seq)` u32 token ids, padded.
    pub ids: Tensor,
    /// `(batch, seq)` f32, 1 = token, 0 = pad.
    pub mask: Tensor,
    /// `(batch)` u32 labels.
    pub labels: Tensor,
    /// The labels on the host.
    pub host_labels: Vec<u8>,
    /// Rows.
    pub rows: usize,
    /// Padded length.
    pub sequence: usize,
}

/// Pads the examples at `indices` into one batch on `device` (`scratch` is reused).
pub fn to_device(
    set: &EncodedSet,
    indices: &[usize],
    pad_id: u32,
    scratch: &mut TokenBatch,
    device: &Device,
) -> Result<DeviceBatch> {
    scratch.fill(indices.iter().map(|&i| &set.items[i]), pad_id);
    let shape = (scratch.batch, scratch.sequence);
    // Token ids are below the vocabulary size, far inside u32.
    let ids: Vec<u32> = scratch.input_ids.iter().map(|&id| id as u32).collect();
    let mask: Vec<f32> = scratch.attention_mask.iter().map(|&m| m as f32).collect();
    let host_labels: Vec<u8> = indices.iter().map(|&i| set.labels[i]).collect();
    let labels: Vec<u32> = host_labels.iter().map(|&l| u32::from(l)).collect();
    Ok(DeviceBatch {
        ids: Tensor::from_vec(ids, shape, device)?,
        mask: Tensor::from_vec(mask, shape, device)?,
        labels: Tensor::from_vec(labels, scratch.batch, device)?,
        host_labels,
        rows: scratch.batch,
        sequence: scratch.sequence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_example_once_grouped_by_length_and_repeat_per_epoch() {
        let mut rng = SplitMix64::new(3);
        let lengths: Vec<usize> = (0..1000).map(|_| 3 + rng.below(250)).collect();
        let batches = epoch_batches(&lengths, 8, 42, 0);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 8));
        // Grouping: the padding is far below that of random batches.
        let padding = |batches: &[Vec<usize>]| -> usize {
            batches
                .iter()
                .map(|b| {
                    let max = b.iter().map(|&i| lengths[i]).max().unwrap_or(0);
                    b.iter().map(|&i| max - lengths[i]).sum::<usize>()
                })
                .sum()
        };
        let random: Vec<Vec<usize>> = (0..1000)
            .collect::<Vec<_>>()
            .chunks(8)
            .map(<[usize]>::to_vec)
            .collect();
        assert!(padding(&batches) * 5 < padding(&random));
        assert_eq!(batches, epoch_batches(&lengths, 8, 42, 0));
        assert_ne!(batches, epoch_batches(&lengths, 8, 42, 1));
        assert_ne!(batches, epoch_batches(&lengths, 8, 43, 0));
    }

    #[test]
    fn device_batch_pads_to_the_longest() {
        let set = EncodedSet {
            items: vec![
                Encoded {
                    ids: vec![101, 5, 102],
                    is_truncated: false,
                },
                Encoded {
                    ids: vec![101, 102],
                    is_truncated: false,
                },
            ],
            labels: vec![1, 0],
        };
        let batch = to_device(&set, &[1, 0], 0, &mut TokenBatch::default(), &Device::Cpu).unwrap();
        assert_eq!((batch.rows, batch.sequence), (2, 3));
        assert_eq!(
            batch.ids.to_vec2::<u32>().unwrap(),
            [[101, 102, 0], [101, 5, 102]]
        );
        assert_eq!(
            batch.mask.to_vec2::<f32>().unwrap(),
            [[1., 1., 0.], [1., 1., 1.]]
        );
        assert_eq!(batch.host_labels, [0, 1]);
    }
}
