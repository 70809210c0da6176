//! Canonical tensor names, and the shapes `config.json` implies for them.
//!
//! Checkpoints name the same tensors differently: `BertForSequenceClassification` and TinyBERT
//! prefix them with `bert.`, TF-converted ones call LayerNorm parameters `gamma`/`beta`, and
//! most carry tensors a classifier does not use (`cls.*` pre-training heads, TinyBERT's
//! `fit_dense.*`, `position_ids` buffers). This module maps every key once, to Hugging Face's
//! `BertModel` names, so the rest of the crate sees one layout.

use std::collections::HashMap;
use std::path::Path;

use super::{BertConfig, Error, Tensor, TensorMap};

/// Top-level modules kept after mapping; everything else is dropped.
const KEPT_MODULES: [&str; 4] = ["embeddings.", "encoder.", "pooler.", "classifier."];

/// How many keys an [`Error::UnknownKeyLayout`] quotes.
const SAMPLE_KEYS: usize = 5;

/// Maps a key as stored in a weights file to its canonical name; `None` for a tensor the
/// encoder and classifier do not use.
pub(crate) fn canonical_name(key: &str) -> Option<String> {
    let name = key.strip_prefix("bert.").unwrap_or(key);
    let is_kept = KEPT_MODULES.iter().any(|module| name.starts_with(module));
    // Index buffers that `BertEmbeddings` registers; recomputed, never learned.
    let is_buffer = name.ends_with("position_ids") || name.ends_with("token_type_ids");
    if !is_kept || is_buffer {
        return None;
    }
    let name = if let Some(module) = name.strip_suffix("LayerNorm.gamma") {
        format!("{module}LayerNorm.weight")
    } else if let Some(module) = name.strip_suffix("LayerNorm.beta") {
        format!("{module}LayerNorm.bias")
    } else {
        name.to_string()
    };
    Some(name)
}

/// Renames `(key, tensor)` pairs (already filtered by [`canonical_name`]) into a map.
pub(crate) fn canonicalize(
    path: &Path,
    tensors: Vec<(String, Tensor)>,
) -> Result<TensorMap, Error> {
    let mut keys: HashMap<String, String> = HashMap::new();
    let mut map = TensorMap::new();
    for (key, tensor) in tensors {
        let Some(name) = canonical_name(&key) else {
            continue;
        };
        if let Some(first) = keys.get(&name) {
            return Err(Error::DuplicateTensor {
                path: path.to_path_buf(),
                name,
                first: first.clone(),
                second: key,
            });
        }
        keys.insert(name.clone(), key);
        map.insert(name, tensor);
    }
    Ok(map)
}

/// Every tensor the encoder needs, with the shape `config` implies, in checkpoint order.
///
/// Linear weights are `[out_features, in_features]`, as PyTorch stores them.
pub(crate) fn required_shapes(config: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let hidden = config.hidden_size;
    let intermediate = config.intermediate_size;
    let mut shapes = vec![
        (
            "embeddings.word_embeddings.weight".to_string(),
            vec![config.vocab_size, hidden],
        ),
        (
            "embeddings.position_embeddings.weight".to_string(),
            vec![config.max_position_embeddings, hidden],
        ),
        (
            "embeddings.token_type_embeddings.weight".to_string(),
            vec![config.type_vocab_size, hidden],
        ),
        ("embeddings.LayerNorm.weight".to_string(), vec![hidden]),
        ("embeddings.LayerNorm.bias".to_string(), vec![hidden]),
    ];
    for layer in 0..config.num_hidden_layers {
        let linears = [
            ("attention.self.query", hidden, hidden),
            ("attention.self.key", hidden, hidden),
            ("attention.self.value", hidden, hidden),
            ("attention.output.dense", hidden, hidden),
            ("intermediate.dense", intermediate, hidden),
            ("output.dense", hidden, intermediate),
        ];
        for (module, out_features, in_features) in linears {
            let prefix = format!("encoder.layer.{layer}.{module}");
            shapes.push((format!("{prefix}.weight"), vec![out_features, in_features]));
            shapes.push((format!("{prefix}.bias"), vec![out_features]));
        }
        for module in ["attention.output.LayerNorm", "output.LayerNorm"] {
            let prefix = format!("encoder.layer.{layer}.{module}");
            shapes.push((format!("{prefix}.weight"), vec![hidden]));
            shapes.push((format!("{prefix}.bias"), vec![hidden]));
        }
    }
    shapes
}

/// Checks that `tensors` holds every required tensor with its implied shape, and that the
/// optional pooler and classifier, where present, are whole and fit the hidden size.
///
/// `file_keys` are the keys of the weights file, quoted when none of the names matched.
pub(crate) fn check_layout(
    path: &Path,
    config: &BertConfig,
    tensors: &TensorMap,
    file_keys: &[String],
) -> Result<(), Error> {
    // Before the list of required tensors, whose length follows the config's layer count.
    let layers = tensors
        .keys()
        .filter_map(|name| {
            name.strip_prefix("encoder.layer.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |last| last + 1);
    if layers > 0 && layers != config.num_hidden_layers {
        return Err(Error::LayerCount {
            path: path.to_path_buf(),
            config: config.num_hidden_layers,
            weights: layers,
        });
    }
    let required = required_shapes(config);
    if !required.iter().any(|(name, _)| tensors.contains_key(name)) {
        return Err(Error::UnknownKeyLayout {
            path: path.to_path_buf(),
            sample_keys: file_keys.iter().take(SAMPLE_KEYS).cloned().collect(),
        });
    }

    let hidden = config.hidden_size;
    let mut expected = required;
    if tensors.keys().any(|name| name.starts_with("pooler.")) {
        expected.push(("pooler.dense.weight".to_string(), vec![hidden, hidden]));
        expected.push(("pooler.dense.bias".to_string(), vec![hidden]));
    }
    if tensors.keys().any(|name| name.starts_with("classifier.")) {
        // Without id2label in config.json the label count is whatever the head has.
        let labels = config
            .num_labels
            .or_else(|| {
                tensors
                    .get("classifier.weight")
                    .and_then(|w| w.shape.first().copied())
            })
            .unwrap_or(0);
        expected.push(("classifier.weight".to_string(), vec![labels, hidden]));
        expected.push(("classifier.bias".to_string(), vec![labels]));
    }

    for (name, shape) in expected {
        let Some(tensor) = tensors.get(&name) else {
            return Err(Error::MissingTensor {
                path: path.to_path_buf(),
                name,
            });
        };
        if tensor.shape != shape {
            return Err(Error::ShapeMismatch {
                path: path.to_path_buf(),
                name,
                expected: shape,
                found: tensor.shape.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_prefixes_and_tf_layer_norm_names() {
        let cases = [
            (
                "bert.embeddings.word_embeddings.weight",
                Some("embeddings.word_embeddings.weight"),
            ),
            (
                "embeddings.LayerNorm.gamma",
                Some("embeddings.LayerNorm.weight"),
            ),
            (
                "bert.encoder.layer.3.output.LayerNorm.beta",
                Some("encoder.layer.3.output.LayerNorm.bias"),
            ),
            ("bert.pooler.dense.bias", Some("pooler.dense.bias")),
            ("classifier.weight", Some("classifier.weight")),
            ("fit_dense.weight", None),
            ("cls.predictions.transform.dense.weight", None),
            ("bert.embeddings.position_ids", None),
            ("embeddings.token_type_ids", None),
            ("distilbert.embeddings.word_embeddings.weight", None),
        ];
        for (key, expected) in cases {
            assert_eq!(canonical_name(key).as_deref(), expected, "{key}");
        }
    }

    #[test]
    fn duplicate_names_after_mapping_are_refused() {
        let tensor = || Tensor {
            shape: vec![1],
            data: vec![0.0],
        };
        let tensors = vec![
            ("bert.embeddings.LayerNorm.weight".to_string(), tensor()),
            ("embeddings.LayerNorm.gamma".to_string(), tensor()),
        ];
        let error = canonicalize(Path::new("w.bin"), tensors).unwrap_err();
        assert!(
            matches!(&error, Error::DuplicateTensor { name, .. } if name == "embeddings.LayerNorm.weight"),
            "{error}"
        );
    }

    #[test]
    fn required_shapes_follow_the_config() {
        let config = BertConfig {
            num_hidden_layers: 2,
            hidden_size: 8,
            intermediate_size: 16,
            ..BertConfig::default()
        };
        let shapes: HashMap<_, _> = required_shapes(&config).into_iter().collect();
        assert_eq!(shapes.len(), 5 + 2 * 16);
        assert_eq!(shapes["encoder.layer.1.intermediate.dense.weight"], [16, 8]);
        assert_eq!(shapes["encoder.layer.1.output.dense.weight"], [8, 16]);
        assert_eq!(shapes["embeddings.position_embeddings.weight"], [512, 8]);
    }

    #[test]
    fn the_layer_count_must_match_the_weights_before_anything_is_sized_by_it() {
        let config = |layers| BertConfig {
            num_hidden_layers: layers,
            hidden_size: 4,
            intermediate_size: 8,
            vocab_size: 3,
            ..BertConfig::default()
        };
        let tensors: TensorMap = required_shapes(&config(2))
            .into_iter()
            .map(|(name, shape)| {
                let data = vec![0.0; shape.iter().product()];
                (name, Tensor { data, shape })
            })
            .collect();
        assert!(check_layout(Path::new("w"), &config(2), &tensors, &[]).is_ok());
        for layers in [1, 3, usize::MAX / 64] {
            let error = check_layout(Path::new("w"), &config(layers), &tensors, &[]).unwrap_err();
            assert!(
                matches!(error, Error::LayerCount { config, weights: 2, .. } if config == layers),
                "{error}"
            );
        }
    }

    #[test]
    fn classifier_must_match_the_label_count() {
        let config = BertConfig {
            num_hidden_layers: 0,
            hidden_size: 4,
            vocab_size: 3,
            num_labels: Some(2),
            ..BertConfig::default()
        };
        let mut tensors: TensorMap = required_shapes(&config)
            .into_iter()
            .map(|(name, shape)| {
                (
                    name,
                    Tensor {
                        data: vec![0.0; shape.iter().product()],
                        shape,
                    },
                )
            })
            .collect();
        tensors.insert(
            "classifier.weight".into(),
            Tensor {
                shape: vec![3, 4],
                data: vec![0.0; 12],
            },
        );
        tensors.insert(
            "classifier.bias".into(),
            Tensor {
                shape: vec![3],
                data: vec![0.0; 3],
            },
        );
        let error = check_layout(Path::new("w"), &config, &tensors, &[]).unwrap_err();
        assert!(
            matches!(&error, Error::ShapeMismatch { name, expected, .. } if name == "classifier.weight" && expected == &[2, 4]),
            "{error}"
        );
        tensors.remove("classifier.bias");
        tensors.insert(
            "classifier.weight".into(),
            Tensor {
                shape: vec![2, 4],
                data: vec![0.0; 8],
            },
        );
        let error = check_layout(Path::new("w"), &config, &tensors, &[]).unwrap_err();
        assert!(
            matches!(&error, Error::MissingTensor { name, .. } if name == "classifier.bias"),
            "{error}"
        );
    }
}
