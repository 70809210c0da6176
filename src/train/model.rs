//! BERT for sequence classification in candle, written to train: dropout is an argument
//! ([`Mode`]), every op has a backward pass, and linear layers may carry LoRA updates.
//!
//! Ports `BertForSequenceClassification` of Hugging Face `transformers`, file
//! <https://github.com/huggingface/transformers/blob/8ec58104181bfb34d824d89bccc009b4f6be6e0e/src/transformers/models/bert/modeling_bert.py>
//! (each struct names the class it ports). Tensor names are the canonical ones of
//! [`crate::checkpoint`]; `vb.pp(..)` mirrors them.
//!
//! Linear layers, attention, LayerNorm, GELU and dropout go through [`super::fused`]: on the
//! CPU in f32 they are fused ops with hand-written backward passes, elsewhere candle's
//! differentiable primitives (never candle's own fused `LayerNorm` or `softmax_last_dim`,
//! which have no backward pass and would silently train only the head); `tests` proves
//! gradients reach LoRA tensors in layer 0 on both paths.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::dropout::Mode;
use super::fused::{self, AttentionMask, AttentionSettings, LayerParts, ProjectionParts};
use super::lora::{LoraLinear, LoraSettings};
use crate::checkpoint::{BertConfig, HiddenAct};
use crate::pooling::Pooling;

/// What the model is built from: the checkpoint's config, the LoRA settings (used where
/// adapter tensors exist) and the number of classes.
#[derive(Clone, Debug)]
pub struct BertClassifierConfig {
    /// The base checkpoint's `config.json`, validated.
    pub bert: BertConfig,
    /// Rank, scaling and dropout of adapted layers.
    pub lora: LoraSettings,
    /// Output classes.
    pub labels: usize,
    /// Which rows of the last hidden states reach the pooler.
    pub pooling: Pooling,
}

/// `nn.LayerNorm` over the last dimension, differentiable.
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(vb: VarBuilder, cfg: &BertClassifierConfig) -> Result<Self> {
        let h = cfg.bert.hidden_size;
        Ok(LayerNorm {
            weight: vb.get(h, "weight")?,
            bias: vb.get(h, "bias")?,
            eps: cfg.bert.layer_norm_eps,
        })
    }

    /// `xs (.., hidden) -> (.., hidden)`.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        fused::layer_norm(xs, &self.weight, &self.bias, self.eps)
    }
}

/// Ports `BertEmbeddings`: word + position + token type (all 0), LayerNorm, dropout.
pub struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    layer_norm: LayerNorm,
    dropout: f64,
}

impl Embeddings {
    /// Loads `word_embeddings`, `position_embeddings`, `token_type_embeddings`, `LayerNorm`.
    pub fn load(vb: VarBuilder, cfg: &BertClassifierConfig) -> Result<Self> {
        let b = &cfg.bert;
        Ok(Embeddings {
            word: vb.get((b.vocab_size, b.hidden_size), "word_embeddings.weight")?,
            position: vb.get(
                (b.max_position_embeddings, b.hidden_size),
                "position_embeddings.weight",
            )?,
            token_type: vb.get(
                (b.type_vocab_size, b.hidden_size),
                "token_type_embeddings.weight",
            )?,
            layer_norm: LayerNorm::load(vb.pp("LayerNorm"), cfg)?,
            dropout: b.hidden_dropout_prob,
        })
    }

    /// `ids (batch, seq) u32 -> (batch, seq, hidden)`.
    pub fn forward_t(&self, ids: &Tensor, mode: Mode) -> Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        let hidden = self.word.dim(1)?;
        if seq > self.position.dim(0)? {
            candle_core::bail!(
                "sequence of {seq} tokens exceeds max_position_embeddings ({})",
                self.position.dim(0)?
            );
        }
        let words = self
            .word
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((batch, seq, hidden))?;
        let positions = self.position.narrow(0, 0, seq)?;
        let token_types = self.token_type.narrow(0, 0, 1)?;
        let xs = words
            .broadcast_add(&positions)?
            .broadcast_add(&token_types)?;
        mode.dropout(&self.layer_norm.forward(&xs)?, self.dropout)
    }
}

/// Ports `BertSelfAttention` (absolute positions, no cache).
pub struct SelfAttention {
    query: LoraLinear,
    key: LoraLinear,
    value: LoraLinear,
    heads: usize,
    head_dim: usize,
    dropout: f64,
}

impl SelfAttention {
    /// Loads `query`, `key`, `value`.
    pub fn load(vb: VarBuilder, cfg: &BertClassifierConfig) -> Result<Self> {
        let h = cfg.bert.hidden_size;
        let linear = |name| LoraLinear::load(vb.pp(name), h, h, &cfg.lora);
        Ok(SelfAttention {
            query: linear("query")?,
            key: linear("key")?,
            value: linear("value")?,
            heads: cfg.bert.num_attention_heads,
            head_dim: cfg.bert.head_dim(),
            dropout: cfg.bert.attention_probs_dropout_prob,
        })
    }

    /// `xs (batch, seq, hidden)` `-> context (batch, seq, hidden)`.
    pub fn forward_t(&self, xs: &Tensor, mask: &AttentionMask, mode: Mode) -> Result<Tensor> {
        let q = self.query.forward_t(xs, mode)?;
        let k = self.key.forward_t(xs, mode)?;
        let v = self.value.forward_t(xs, mode)?;
        let settings = AttentionSettings {
            heads: self.heads,
            head_dim: self.head_dim,
            dropout: self.dropout,
        };
        fused::attention(&q, &k, &v, mask, &settings, mode)
    }
}

/// Ports `BertSelfOutput` and `BertOutput`: dense, dropout, residual, LayerNorm.
pub struct ResidualOutput {
    dense: LoraLinear,
    layer_norm: LayerNorm,
    dropout: f64,
}

impl ResidualOutput {
    /// Loads `dense (hidden, in_dim)` and `LayerNorm`.
    pub fn load(vb: VarBuilder, cfg: &BertClassifierConfig, in_dim: usize) -> Result<Self> {
        Ok(ResidualOutput {
            dense: LoraLinear::load(vb.pp("dense"), in_dim, cfg.bert.hidden_size, &cfg.lora)?,
            layer_norm: LayerNorm::load(vb.pp("LayerNorm"), cfg)?,
            dropout: cfg.bert.hidden_dropout_prob,
        })
    }

    /// `xs (batch, seq, in_dim)`, `residual (batch, seq, hidden) -> (batch, seq, hidden)`.
    pub fn forward_t(&self, xs: &Tensor, residual: &Tensor, mode: Mode) -> Result<Tensor> {
        let ln = &self.layer_norm;
        fused::residual_layer_norm(
            &self.dense.forward_t(xs, mode)?,
            residual,
            &ln.weight,
            &ln.bias,
            ln.eps,
            self.dropout,
            mode,
        )
    }
}

/// Ports `BertLayer`: attention (`BertAttention`), intermediate (`BertIntermediate`), output.
pub struct Layer {
    attention: SelfAttention,
    attention_output: ResidualOutput,
    intermediate: LoraLinear,
    activation: HiddenAct,
    output: ResidualOutput,
}

impl Layer {
    /// Loads `attention.self`, `attention.output`, `intermediate.dense`, `output`.
    pub fn load(vb: VarBuilder, cfg: &BertClassifierConfig) -> Result<Self> {
        let b = &cfg.bert;
        Ok(Layer {
            attention: SelfAttention::load(vb.pp("attention").pp("self"), cfg)?,
            attention_output: ResidualOutput::load(
                vb.pp("attention").pp("output"),
                cfg,
                b.hidden_size,
            )?,
            intermediate: LoraLinear::load(
                vb.pp("intermediate").pp("dense"),
                b.hidden_size,
                b.intermediate_size,
                &cfg.lora,
            )?,
            activation: b.hidden_act,
            output: ResidualOutput::load(vb.pp("output"), cfg, b.intermediate_size)?,
        })
    }

    /// `xs (batch, seq, hidden) -> (batch, seq, hidden)`.
    pub fn forward_t(&self, xs: &Tensor, mask: &AttentionMask, mode: Mode) -> Result<Tensor> {
        if self.activation == HiddenAct::Gelu {
            if let Some(ys) = fused::encoder_layer(xs, &self.parts(), mask, mode)? {
                return Ok(ys);
            }
        }
        let context = self.attention.forward_t(xs, mask, mode)?;
        let attended = self.attention_output.forward_t(&context, xs, mode)?;
        let inner = activate(
            self.activation,
            &self.intermediate.forward_t(&attended, mode)?,
        )?;
        self.output.forward_t(&inner, &attended, mode)
    }
}

impl Layer {
    /// The layer's tensors and settings for the one-op layer.
    fn parts(&self) -> LayerParts<'_> {
        fn projection(linear: &LoraLinear) -> ProjectionParts<'_> {
            let (weight, bias, adapter) = linear.parts();
            ProjectionParts {
                weight,
                bias,
                adapter,
            }
        }
        let (attention, ao, out) = (&self.attention, &self.attention_output, &self.output);
        LayerParts {
            projections: [
                projection(&attention.query),
                projection(&attention.key),
                projection(&attention.value),
                projection(&ao.dense),
                projection(&self.intermediate),
                projection(&out.dense),
            ],
            norms: [
                (&ao.layer_norm.weight, &ao.layer_norm.bias),
                (&out.layer_norm.weight, &out.layer_norm.bias),
            ],
            eps: ao.layer_norm.eps,
            heads: attention.heads,
            head_dim: attention.head_dim,
            hidden_dropout: ao.dropout,
            attention_dropout: attention.dropout,
        }
    }
}

/// `hidden_act` applied element-wise; candle's `gelu` is the tanh approximation.
fn activate(act: HiddenAct, xs: &Tensor) -> Result<Tensor> {
    match act {
        HiddenAct::Gelu => fused::gelu_erf(xs),
        HiddenAct::GeluTanh => xs.gelu(),
        HiddenAct::Relu => xs.relu(),
    }
}

/// Ports `BertEncoder`: the stack of layers.
pub struct Encoder {
    layers: Vec<Layer>,
}

impl Encoder {
    /// Loads `layer.{i}` for each of `num_hidden_layers`.
    pub fn load(vb: VarBuilder, cfg: &BertClassifierConfig) -> Result<Self> {
        let layers = (0..cfg.bert.num_hidden_layers)
            .map(|i| Layer::load(vb.pp("layer").pp(i), cfg))
            .collect::<Result<_>>()?;
        Ok(Encoder { layers })
    }

    /// `xs (batch, seq, hidden) -> (batch, seq, hidden)`.
    pub fn forward_t(&self, xs: &Tensor, mask: &AttentionMask, mode: Mode) -> Result<Tensor> {
        self.layers
            .iter()
            .try_fold(xs.clone(), |xs, layer| layer.forward_t(&xs, mask, mode))
    }
}

/// Ports `BertPooler`: tanh of a dense layer over the `[CLS]` state, or (with
/// [`Pooling::Mean`]) over the mean of the real tokens' states.
pub struct Pooler {
    dense: LoraLinear,
    pooling: Pooling,
}

impl Pooler {
    /// Loads `dense`.
    pub fn load(vb: VarBuilder, cfg: &BertClassifierConfig) -> Result<Self> {
        let h = cfg.bert.hidden_size;
        Ok(Pooler {
            dense: LoraLinear::load(vb.pp("dense"), h, h, &cfg.lora)?,
            pooling: cfg.pooling,
        })
    }

    /// `hidden (batch, seq, hidden)`, `mask (batch, seq)` 1 = token, 0 = pad
    /// `-> (batch, hidden)`.
    pub fn forward_t(&self, hidden: &Tensor, mask: &Tensor, mode: Mode) -> Result<Tensor> {
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let weights = mask.to_dtype(hidden.dtype())?;
                let tokens = weights.sum_keepdim(1)?;
                hidden
                    .broadcast_mul(&weights.unsqueeze(2)?)?
                    .sum(1)?
                    .broadcast_div(&tokens)?
            }
        };
        self.dense.forward_t(&pooled, mode)?.tanh()
    }
}

/// Ports the head of `BertForSequenceClassification`: dropout, then a dense layer to logits.
pub struct ClassificationHead {
    dense: LoraLinear,
    dropout: f64,
}

impl ClassificationHead {
    /// Loads `weight (labels, hidden)` and `bias (labels)` from `vb` (the `classifier` prefix).
    pub fn load(vb: VarBuilder, cfg: &BertClassifierConfig) -> Result<Self> {
        Ok(ClassificationHead {
            dense: LoraLinear::load(vb, cfg.bert.hidden_size, cfg.labels, &cfg.lora)?,
            dropout: cfg.bert.hidden_dropout_prob,
        })
    }

    /// `pooled (batch, hidden) -> logits (batch, labels)`.
    pub fn forward_t(&self, pooled: &Tensor, mode: Mode) -> Result<Tensor> {
        self.dense
            .forward_t(&mode.dropout(pooled, self.dropout)?, mode)
    }
}

/// Ports `BertForSequenceClassification`: embeddings, encoder, pooler, classifier.
pub struct BertClassifier {
    embeddings: Embeddings,
    encoder: Encoder,
    pooler: Pooler,
    classifier: ClassificationHead,
}

/// Hidden states and pooler output of one forward pass (golden checks).
pub struct HiddenStates {
    /// `(batch, seq, hidden)`.
    pub hidden: Tensor,
    /// `(batch, hidden)`.
    pub pooled: Tensor,
}

impl BertClassifier {
    /// Loads `embeddings`, `encoder`, `pooler`, `classifier` from the canonical names.
    pub(crate) fn load(vb: VarBuilder, cfg: &BertClassifierConfig) -> Result<Self> {
        Ok(BertClassifier {
            embeddings: Embeddings::load(vb.pp("embeddings"), cfg)?,
            encoder: Encoder::load(vb.pp("encoder"), cfg)?,
            pooler: Pooler::load(vb.pp("pooler"), cfg)?,
            classifier: ClassificationHead::load(vb.pp("classifier"), cfg)?,
        })
    }

    /// `ids (batch, seq) u32`, `mask (batch, seq)` 1 = token, 0 = pad `-> hidden, pooled`.
    pub fn encode(&self, ids: &Tensor, mask: &Tensor, mode: Mode) -> Result<HiddenStates> {
        let (batch, seq) = ids.dims2()?;
        if mask.dims2()? != (batch, seq) {
            candle_core::bail!("mask is {:?}, ids are {:?}", mask.dims(), ids.dims());
        }
        let xs = self.embeddings.forward_t(ids, mode)?;
        let attention = AttentionMask::new(mask, xs.dtype())?;
        let hidden = self.encoder.forward_t(&xs, &attention, mode)?;
        let pooled = self.pooler.forward_t(&hidden, mask, mode)?;
        Ok(HiddenStates { hidden, pooled })
    }

    /// `ids (batch, seq) u32`, `mask (batch, seq)` 1 = token, 0 = pad `-> logits (batch, labels)`.
    pub fn forward_t(&self, ids: &Tensor, mask: &Tensor, mode: Mode) -> Result<Tensor> {
        let encoded = self.encode(ids, mask, mode)?;
        self.classifier.forward_t(&encoded.pooled, mode)
    }
}
