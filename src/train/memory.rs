//! A rough estimate of training memory, to refuse a `--batch` that cannot fit before hours of
//! tokenizing and loading, instead of being killed by the OOM killer mid-run.

use crate::checkpoint::BertConfig;

/// Bytes of activations kept for the backward pass of one micro-batch at full length, f32.
///
/// Per layer: about 16 `(batch, seq, hidden)` tensors (projections, residuals, LayerNorm
/// intermediates, dropout masks), 4 `(batch, seq, intermediate)` (dense, GELU, mask) and 4
/// `(batch, heads, seq, seq)` (scores, biased scores, probabilities, dropout mask); doubled for
/// the gradients alive at the peak of the backward pass.
pub fn activation_bytes(config: &BertConfig, batch: usize, seq: usize) -> u64 {
    let (b, s) = (batch as u64, seq as u64);
    let h = config.hidden_size as u64;
    let inter = config.intermediate_size as u64;
    let heads = config.num_attention_heads as u64;
    let per_layer = 16 * b * s * h + 4 * b * s * inter + 4 * b * heads * s * s;
    2 * 4 * per_layer * config.num_hidden_layers as u64
}

/// `MemAvailable` of `/proc/meminfo`, in bytes; `None` where it cannot be read.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_grows_with_batch_and_quadratically_with_length() {
        let config = BertConfig::default();
        let base = activation_bytes(&config, 8, 128);
        assert_eq!(activation_bytes(&config, 16, 128), 2 * base);
        assert!(activation_bytes(&config, 8, 256) > 2 * base);
        // bert-base, batch 32 at 512 tokens: tens of GiB, as experience says.
        assert!(activation_bytes(&config, 32, 512) > 20 << 30);
    }
}
