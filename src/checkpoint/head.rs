//! A randomly initialised classification head, for a base checkpoint that has none.
//!
//! `sentimq train` starts from one when the base is a bare encoder, and `sentimq build
//! --random-head` builds test models with one; both want the same seeded weights.

use super::{BertConfig, Tensor, TensorMap};

/// Adds a seeded N(0, 0.02²)-like classifier with `labels` outputs (and a pooler, when the
/// base has none) to `weights`, as Hugging Face initialises them; biases are zero.
pub fn insert_random_head(weights: &mut TensorMap, config: &BertConfig, labels: usize, seed: u64) {
    let h = config.hidden_size;
    let mut rng = crate::rng::SplitMix64::new(seed);
    let mut normal = |shape: Vec<usize>| {
        let data = (0..shape.iter().product())
            .map(|_| rng.normal() as f32 * 0.02)
            .collect();
        Tensor { shape, data }
    };
    let zeros = |len: usize| Tensor {
        shape: vec![len],
        data: vec![0.0; len],
    };
    if !weights.contains_key("pooler.dense.weight") {
        weights.insert("pooler.dense.weight".into(), normal(vec![h, h]));
        weights.insert("pooler.dense.bias".into(), zeros(h));
    }
    weights.insert("classifier.weight".into(), normal(vec![labels, h]));
    weights.insert("classifier.bias".into(), zeros(labels));
}
