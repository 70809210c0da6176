//! `config.json` of a Hugging Face BERT checkpoint.
//!
//! The file is foreign, so it is read tolerantly: field names are Hugging Face's, absent keys
//! take `transformers`' `BertConfig` defaults, and unknown keys (TinyBERT's `cell`,
//! `emb_size`, `structure`, ...) are ignored. Parsing refuses what no forward pass implements
//! (an unknown `hidden_act`, relative position embeddings) and turns `hidden_act` into a
//! [`HiddenAct`]; [`BertConfig::validate`] then checks what the model code relies on, naming
//! the offending key.

use std::collections::HashMap;
use std::path::Path;

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::Error;

/// The feed-forward activation, `hidden_act` in `config.json`; every forward pass (the export
/// reference, the ONNX graph writer, the training model) matches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// `gelu`: exact, `0.5·x·(1 + erf(x/√2))`.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    GeluTanh,
    /// `relu`.
    Relu,
}

impl HiddenAct {
    /// The `hidden_act` spellings this crate implements.
    pub const NAMES: [&'static str; 5] =
        ["gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu"];

    /// The activation `hidden_act` names, if this crate implements it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(HiddenAct::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(HiddenAct::GeluTanh),
            "relu" => Some(HiddenAct::Relu),
            _ => None,
        }
    }
}

/// The architecture hyper-parameters of a BERT checkpoint, from its `config.json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "ConfigFile")]
pub struct BertConfig {
    /// Rows of the word-embedding table.
    pub vocab_size: usize,
    /// Width of every hidden state.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; divides `hidden_size`.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Rows of the position-embedding table: the longest input, in tokens.
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) embedding table.
    pub type_vocab_size: usize,
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f64,
    /// Feed-forward activation.
    pub hidden_act: HiddenAct,
    /// Dropout on hidden states during training.
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities during training.
    pub attention_probs_dropout_prob: f64,
    /// Id of the padding token.
    pub pad_token_id: u32,
    /// `model_type`, absent in old checkpoints such as TinyBERT's.
    pub model_type: Option<String>,
    /// Classes of a fine-tuned classification head: the size of `id2label`, else `num_labels`,
    /// else unknown.
    pub num_labels: Option<usize>,
}

/// The raw file; defaults are those of `transformers.BertConfig`.
#[derive(Deserialize)]
#[serde(default)]
struct ConfigFile {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    layer_norm_eps: f64,
    hidden_act: String,
    hidden_dropout_prob: f64,
    attention_probs_dropout_prob: f64,
    /// `null` in some configs.
    pad_token_id: Option<u32>,
    model_type: Option<String>,
    id2label: Option<HashMap<String, IgnoredAny>>,
    num_labels: Option<usize>,
    position_embedding_type: Option<String>,
}

impl Default for ConfigFile {
    fn default() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".to_string(),
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            pad_token_id: Some(0),
            model_type: None,
            id2label: None,
            num_labels: None,
            position_embedding_type: None,
        }
    }
}

impl TryFrom<ConfigFile> for BertConfig {
    type Error = String;

    fn try_from(file: ConfigFile) -> Result<Self, String> {
        // Relative position embeddings add tensors and change attention; refusing them here
        // beats loading a model that silently computes something else.
        if let Some(kind) = file
            .position_embedding_type
            .as_deref()
            .filter(|&kind| kind != "absolute")
        {
            return Err(format!(
                "position_embedding_type \"{kind}\" is not supported, only \"absolute\""
            ));
        }
        // An activation no forward pass implements is refused here too, naming the key.
        let hidden_act = HiddenAct::from_name(&file.hidden_act).ok_or_else(|| {
            format!(
                "hidden_act \"{}\" is not supported, only {}",
                file.hidden_act,
                HiddenAct::NAMES.join(", ")
            )
        })?;
        Ok(BertConfig {
            vocab_size: file.vocab_size,
            hidden_size: file.hidden_size,
            num_hidden_layers: file.num_hidden_layers,
            num_attention_heads: file.num_attention_heads,
            intermediate_size: file.intermediate_size,
            max_position_embeddings: file.max_position_embeddings,
            type_vocab_size: file.type_vocab_size,
            layer_norm_eps: file.layer_norm_eps,
            hidden_act,
            hidden_dropout_prob: file.hidden_dropout_prob,
            attention_probs_dropout_prob: file.attention_probs_dropout_prob,
            pad_token_id: file.pad_token_id.unwrap_or(0),
            model_type: file.model_type,
            num_labels: file.id2label.map(|labels| labels.len()).or(file.num_labels),
        })
    }
}

impl Default for BertConfig {
    /// `bert-base-uncased`: the defaults of `transformers.BertConfig`.
    fn default() -> Self {
        Self::try_from(ConfigFile::default()).expect("transformers' defaults are supported")
    }
}

impl BertConfig {
    /// Reads `config.json` at `path`, without validating it.
    ///
    /// Errors: [`Error::MissingConfig`] if the file does not exist, [`Error::Read`] if it cannot
    /// be read, [`Error::ParseConfig`] if it is not JSON or a field has the wrong type.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::MissingConfig {
                path: path.to_path_buf(),
            },
            _ => Error::Read {
                path: path.to_path_buf(),
                source,
            },
        })?;
        serde_json::from_str(&text).map_err(|source| Error::ParseConfig {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks what the model code relies on: non-zero sizes, `hidden_size` divisible by
    /// `num_attention_heads`, a positive `layer_norm_eps`, dropout probabilities in `[0, 1)`,
    /// `pad_token_id` inside the vocabulary. (An unsupported `hidden_act` or
    /// `position_embedding_type` is refused earlier, when the file is parsed.)
    ///
    /// Errors: [`Error::InvalidConfig`] naming the first offending field.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |field, expected: &str, found: String| {
            Err(Error::InvalidConfig {
                field,
                expected: expected.to_string(),
                found,
            })
        };
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((field, _)) = sizes.iter().find(|(_, size)| *size == 0) {
            return invalid(field, "a positive integer", "0".to_string());
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return invalid(
                "hidden_size",
                &format!(
                    "a multiple of num_attention_heads ({})",
                    self.num_attention_heads
                ),
                self.hidden_size.to_string(),
            );
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return invalid(
                "layer_norm_eps",
                "a small positive number",
                self.layer_norm_eps.to_string(),
            );
        }
        let dropouts = [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ];
        if let Some((field, p)) = dropouts.iter().find(|(_, p)| !(0.0..1.0).contains(p)) {
            return invalid(field, "a probability in [0, 1)", p.to_string());
        }
        if self.pad_token_id as usize >= self.vocab_size {
            return invalid(
                "pad_token_id",
                &format!("an id below vocab_size ({})", self.vocab_size),
                self.pad_token_id.to_string(),
            );
        }
        if self.num_labels == Some(0) {
            return invalid("id2label", "at least one label", "none".to_string());
        }
        Ok(())
    }

    /// Width of one attention head: `hidden_size / num_attention_heads` (0 if there are no
    /// heads, which [`BertConfig::validate`] refuses).
    pub fn head_dim(&self) -> usize {
        self.hidden_size
            .checked_div(self.num_attention_heads)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> BertConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn tinybert_extras_are_ignored_and_defaults_filled() {
        let config = parse(
            r#"{"attention_probs_dropout_prob": 0.1, "cell": {}, "emb_size": 312, "hidden_act": "gelu",
                "hidden_dropout_prob": 0.1, "hidden_size": 312, "initializer_range": 0.02,
                "intermediate_size": 1200, "max_position_embeddings": 512, "num_attention_heads": 12,
                "num_hidden_layers": 4, "pre_trained": "", "structure": [], "training": "",
                "type_vocab_size": 2, "vocab_size": 30522}"#,
        );
        assert_eq!(config.hidden_size, 312);
        assert_eq!(config.layer_norm_eps, 1e-12);
        assert_eq!(config.pad_token_id, 0);
        assert_eq!(config.model_type, None);
        assert_eq!(config.num_labels, None);
        assert_eq!(config.head_dim(), 26);
        config.validate().unwrap();
    }

    #[test]
    fn labels_come_from_id2label_first() {
        let config = parse(
            r#"{"id2label": {"0": "NEGATIVE", "1": "NEUTRAL", "2": "POSITIVE"}, "num_labels": 7}"#,
        );
        assert_eq!(config.num_labels, Some(3));
        assert_eq!(
            parse(r#"{"num_labels": 5, "pad_token_id": null}"#).num_labels,
            Some(5)
        );
        assert_eq!(parse("{}"), BertConfig::default());
    }

    #[test]
    fn validate_names_the_field() {
        let cases = [
            (
                r#"{"hidden_size": 30, "num_attention_heads": 4}"#,
                "hidden_size",
            ),
            (r#"{"num_attention_heads": 0}"#, "num_attention_heads"),
            (r#"{"intermediate_size": 0}"#, "intermediate_size"),
            (r#"{"layer_norm_eps": 0.0}"#, "layer_norm_eps"),
            (r#"{"hidden_dropout_prob": 1.5}"#, "hidden_dropout_prob"),
            (r#"{"pad_token_id": 40000}"#, "pad_token_id"),
            (r#"{"id2label": {}}"#, "id2label"),
        ];
        for (json, expected_field) in cases {
            match parse(json).validate() {
                Err(Error::InvalidConfig { field, .. }) => {
                    assert_eq!(field, expected_field, "{json}")
                }
                other => panic!("{json}: {other:?}"),
            }
        }
        let message = parse(r#"{"hidden_size": 30, "num_attention_heads": 4}"#)
            .validate()
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "config.json: hidden_size is 30, expected a multiple of num_attention_heads (4)"
        );
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert!(matches!(
            BertConfig::from_file(&path),
            Err(Error::MissingConfig { .. })
        ));
        std::fs::write(&path, r#"{"hidden_size": "wide"}"#).unwrap();
        let error = BertConfig::from_file(&path).unwrap_err();
        assert!(
            matches!(&error, Error::ParseConfig { path: p, .. } if p == &path),
            "{error}"
        );
        std::fs::write(&path, r#"{"position_embedding_type": "relative_key"}"#).unwrap();
        let error = BertConfig::from_file(&path).unwrap_err();
        let cause = std::error::Error::source(&error)
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(cause.contains("relative_key"), "{cause}");
        std::fs::write(&path, r#"{"hidden_act": "swiglu"}"#).unwrap();
        let error = BertConfig::from_file(&path).unwrap_err();
        assert!(
            matches!(&error, Error::ParseConfig { path: p, .. } if p == &path),
            "{error}"
        );
        let cause = std::error::Error::source(&error)
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(cause.contains("hidden_act \"swiglu\""), "{cause}");
    }

    #[test]
    fn hidden_act_names_map_to_activations() {
        let act = |name: &str| parse(&format!(r#"{{"hidden_act": "{name}"}}"#)).hidden_act;
        assert_eq!(act("gelu"), HiddenAct::Gelu);
        for name in ["gelu_new", "gelu_pytorch_tanh", "gelu_fast"] {
            assert_eq!(act(name), HiddenAct::GeluTanh, "{name}");
        }
        assert_eq!(act("relu"), HiddenAct::Relu);
        assert!(HiddenAct::NAMES
            .iter()
            .all(|name| HiddenAct::from_name(name).is_some()));
    }
}
