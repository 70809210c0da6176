//! The BERT sequence classifier as an ONNX graph, in f32, f16 or dynamic int8.
//!
//! Mirrors Hugging Face `BertForSequenceClassification` in eval mode
//! (<https://github.com/huggingface/transformers/blob/v4.46.0/src/transformers/models/bert/modeling_bert.py>):
//! embeddings → N × (self-attention, feed-forward, post-LayerNorm) → pooler (tanh on `[CLS]`,
//! or with [`Pooling::Mean`] on the mean of the attended tokens) → linear classifier. Inputs
//! `input_ids` and `attention_mask` are `(batch, sequence)` i64 with symbolic dims; outputs
//! `logits` and `probabilities` are `(batch, labels)` f32.
//!
//! Choices made for tract (each measured, see the engine benches):
//! - the attention scale `1/√d` is folded into the query weights, the GELU's `0.5` into the
//!   following projection, token-type row 0 into the position table: fewer elementwise ops;
//! - query, key and value are one fused projection, split after a single transpose;
//! - the padding mask becomes one additive bias `(1 − mask)·−10⁴` broadcast over heads,
//!   computed once, instead of a `Where` per layer;
//! - int8 is *dynamic* and symmetric: each token's activations get their own scale
//!   (`max|x| / 127`, zero point 0) from plain `ReduceMax`/`Mul`/`Add`/`Sub`/`Cast` (adding
//!   and removing 1.5·2²³ rounds half to even), then
//!   `MatMulInteger` against per-output-channel int8 weights and one rescale. Per-token scales
//!   make a text's result independent of what it is batched with. Never QDQ.

use crate::checkpoint::{BertConfig, HiddenAct, Tensor, TensorMap};
use crate::pooling::Pooling;

use super::onnx::{value_info, Attr, Dim, FloatType, GraphBuilder};
use super::quantize::{quantize_rows, transpose};
use super::Error;
use tract_onnx::pb::{tensor_proto::DataType, ModelProto};

/// Numeric form of the exported graph.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 everywhere: the reference.
    F32,
    /// f16 weights and arithmetic, for CPUs with fast fp16 (Cortex-A76, Pi 5).
    F16,
    /// int8 weights and dynamically quantized activations for every projection and the
    /// word-embedding table; LayerNorm, softmax, GELU and bias adds stay f32.
    Int8,
}

impl Precision {
    /// The file name a build writes for this precision.
    pub fn file_name(self) -> &'static str {
        match self {
            Precision::F32 => "model.onnx",
            Precision::F16 => "model.f16.onnx",
            Precision::Int8 => "model.int8.onnx",
        }
    }
}

/// What to put in the graph.
#[derive(Clone, Copy, Debug)]
pub struct GraphOptions {
    /// Numeric form.
    pub precision: Precision,
    /// Also output `last_hidden_state` `(batch, sequence, hidden)` and `pooler_output`
    /// `(batch, hidden)`, for checks against reference implementations.
    pub with_hidden_states: bool,
    /// Which rows of the last hidden states reach the pooler.
    pub pooling: Pooling,
}

/// 1.5·2²³: `(v + M) − M` rounds an f32 `v` with |v| < 2²² to the nearest integer, ties to even.
const ROUNDING_MAGIC: f32 = 12_582_912.0;

/// Large negative bias for padded keys; exp(−10⁴) is 0 in f32 and f16 alike.
const MASKED_BIAS: f32 = -10_000.0;

/// Writes the classifier graph for merged weights (base + adapter + head, canonical names).
pub fn classifier_graph(
    weights: &TensorMap,
    config: &BertConfig,
    options: GraphOptions,
) -> Result<ModelProto, Error> {
    let float = match options.precision {
        Precision::F16 => FloatType::F16,
        Precision::F32 | Precision::Int8 => FloatType::F32,
    };
    let labels = weights
        .get("classifier.weight")
        .map(|t| t.shape[0])
        .ok_or_else(|| missing("classifier.weight"))?;
    let mut emitter = Emitter {
        graph: GraphBuilder::new(float),
        weights,
        config,
        precision: options.precision,
    };
    let mask_bias = emitter.mask_bias("attention_mask");
    let mut hidden = emitter.embeddings("input_ids")?;
    for layer in 0..config.num_hidden_layers {
        // With `[CLS]` pooling only its row reaches the head: without hidden-state outputs, the
        // last layer computes that row alone (keys and values still come from every token).
        // Per-token activation scales make that row bit-identical to the full layer's.
        let last = layer + 1 == config.num_hidden_layers;
        let rows = if last && !options.with_hidden_states && options.pooling == Pooling::Cls {
            Rows::ClsOnly
        } else {
            Rows::All
        };
        hidden = emitter.layer(&hidden, &mask_bias, layer, rows)?;
    }
    let (pooled, logits) = emitter.head(&hidden, "attention_mask", options.pooling)?;
    let probabilities = emitter.graph.op_named(
        "Softmax",
        &[&logits],
        vec![("axis", Attr::Int(-1))],
        "probabilities",
    );

    let batch_labels = [Dim::Symbol("batch"), Dim::Fixed(labels)];
    let mut outputs = vec![
        value_info("logits", DataType::Float, &batch_labels),
        value_info(&probabilities, DataType::Float, &batch_labels),
    ];
    if options.with_hidden_states {
        let h = config.hidden_size;
        emitter.emit_f32_output(&hidden, "last_hidden_state");
        emitter.emit_f32_output(&pooled, "pooler_output");
        outputs.push(value_info(
            "last_hidden_state",
            DataType::Float,
            &[Dim::Symbol("batch"), Dim::Symbol("sequence"), Dim::Fixed(h)],
        ));
        outputs.push(value_info(
            "pooler_output",
            DataType::Float,
            &[Dim::Symbol("batch"), Dim::Fixed(h)],
        ));
    }
    let ids = [Dim::Symbol("batch"), Dim::Symbol("sequence")];
    let inputs = vec![
        value_info("input_ids", DataType::Int64, &ids),
        value_info("attention_mask", DataType::Int64, &ids),
    ];
    let metadata = [(
        "precision",
        format!("{:?}", options.precision).to_lowercase(),
    )];
    Ok(emitter.graph.finish(inputs, outputs, &metadata))
}

fn missing(name: &str) -> Error {
    Error::MissingWeight {
        name: name.to_string(),
    }
}

/// Which rows (tokens) of a layer's output the graph computes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// Every token: `(batch, sequence, hidden)`.
    All,
    /// `[CLS]` only: `(batch, 1, hidden)`.
    ClsOnly,
}

struct Emitter<'a> {
    graph: GraphBuilder,
    weights: &'a TensorMap,
    config: &'a BertConfig,
    precision: Precision,
}

impl<'a> Emitter<'a> {
    fn tensor(&self, name: &str) -> Result<&'a Tensor, Error> {
        self.weights.get(name).ok_or_else(|| missing(name))
    }

    /// `(batch, sequence)` i64 mask → `(batch, 1, 1, sequence)` additive bias.
    fn mask_bias(&mut self, mask: &str) -> String {
        let to = self.graph.float_type().onnx_type() as i64;
        let mask = self.graph.op("Cast", &[mask], vec![("to", Attr::Int(to))]);
        let one = self.graph.scalar(1.0);
        let inverted = self.graph.op("Sub", &[&one, &mask], vec![]);
        let big = self.graph.scalar(MASKED_BIAS);
        let bias = self.graph.op("Mul", &[&inverted, &big], vec![]);
        let axes = self.graph.i64_tensor("mask_unsqueeze_axes", &[2], &[1, 2]);
        self.graph.op("Unsqueeze", &[&bias, &axes], vec![])
    }

    /// Word + position (+ token type 0) embeddings, then LayerNorm: `(batch, sequence, hidden)`.
    fn embeddings(&mut self, ids: &str) -> Result<String, Error> {
        let h = self.config.hidden_size;
        let word = self.tensor("embeddings.word_embeddings.weight")?;
        let words = if self.precision == Precision::Int8 {
            let q = quantize_rows(&word.data, word.shape[0], h);
            let table = self.graph.i8_tensor(
                "embeddings.word_embeddings.weight_int8",
                &[q.rows, h],
                &q.values,
            );
            let scales =
                self.graph
                    .f32_tensor("embeddings.word_embeddings.scale", &[q.rows, 1], &q.scales);
            let rows = self
                .graph
                .op("Gather", &[&table, ids], vec![("axis", Attr::Int(0))]);
            let rows = self.graph.op(
                "Cast",
                &[&rows],
                vec![("to", Attr::Int(DataType::Float as i64))],
            );
            let row_scales = self
                .graph
                .op("Gather", &[&scales, ids], vec![("axis", Attr::Int(0))]);
            self.graph.op("Mul", &[&rows, &row_scales], vec![])
        } else {
            let table = self.graph.float_tensor(
                "embeddings.word_embeddings.weight",
                &word.shape,
                &word.data,
            );
            self.graph
                .op("Gather", &[&table, ids], vec![("axis", Attr::Int(0))])
        };
        // Token type ids are all 0 for single-text classification: fold row 0 into positions.
        let positions = self.tensor("embeddings.position_embeddings.weight")?;
        let type_row = &self.tensor("embeddings.token_type_embeddings.weight")?.data[..h];
        let folded: Vec<f32> = positions
            .data
            .chunks_exact(h)
            .flat_map(|row| row.iter().zip(type_row).map(|(p, t)| p + t))
            .collect();
        let table =
            self.graph
                .float_tensor("embeddings.position_plus_type0", &positions.shape, &folded);
        let shape = self.graph.op("Shape", &[ids], vec![]);
        let seq_index = self.graph.i64_tensor("sequence_axis", &[1], &[1]);
        let seq_len = self.graph.op(
            "Gather",
            &[&shape, &seq_index],
            vec![("axis", Attr::Int(0))],
        );
        let zero = self.graph.i64_tensor("zero_1d", &[1], &[0]);
        let pos = self
            .graph
            .op("Slice", &[&table, &zero, &seq_len, &zero], vec![]);
        let sum = self.graph.op("Add", &[&words, &pos], vec![]);
        self.layer_norm(&sum, "embeddings.LayerNorm")
    }

    fn layer_norm(&mut self, x: &str, prefix: &str) -> Result<String, Error> {
        let gamma = self.tensor(&format!("{prefix}.weight"))?;
        let beta = self.tensor(&format!("{prefix}.bias"))?;
        let gamma = self
            .graph
            .float_tensor(&format!("{prefix}.weight"), &gamma.shape, &gamma.data);
        let beta = self
            .graph
            .float_tensor(&format!("{prefix}.bias"), &beta.shape, &beta.data);
        let eps = self.config.layer_norm_eps as f32;
        Ok(self.graph.op(
            "LayerNormalization",
            &[x, &gamma, &beta],
            vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))],
        ))
    }

    /// `x · Wᵀ + b` for a PyTorch-layout weight `[out, in]`, in the graph's precision.
    fn linear(
        &mut self,
        x: &str,
        name: &str,
        weight: &[f32],
        out: usize,
        inp: usize,
        bias: &[f32],
    ) -> String {
        let product = if self.precision == Precision::Int8 {
            self.int8_matmul(x, name, weight, out, inp)
        } else {
            let wt = transpose(weight, out, inp);
            let w = self
                .graph
                .float_tensor(&format!("{name}.weight_t"), &[inp, out], &wt);
            self.graph.op("MatMul", &[x, &w], vec![])
        };
        let b = self
            .graph
            .float_tensor(&format!("{name}.bias"), &[out], bias);
        self.graph.op("Add", &[&product, &b], vec![])
    }

    /// Per-token symmetric int8 activations × per-channel int8 weights, rescaled to f32.
    fn int8_matmul(
        &mut self,
        x: &str,
        name: &str,
        weight: &[f32],
        out: usize,
        inp: usize,
    ) -> String {
        let q = quantize_rows(weight, out, inp);
        let w = self.graph.i8_tensor(
            &format!("{name}.weight_t_int8"),
            &[inp, out],
            &q.transposed_values(),
        );
        let w_scale = self
            .graph
            .f32_tensor(&format!("{name}.weight_scale"), &[out], &q.scales);
        let abs = self.graph.op("Abs", &[x], vec![]);
        let max_abs = self.graph.op(
            "ReduceMax",
            &[&abs],
            vec![("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))],
        );
        let floor = self.graph.scalar(1e-12);
        let max_abs = self.graph.op("Max", &[&max_abs, &floor], vec![]);
        let q_range = self.graph.scalar(127.0);
        let inv_scale = self.graph.op("Div", &[&q_range, &max_abs], vec![]);
        let scaled = self.graph.op("Mul", &[x, &inv_scale], vec![]);
        // Round half to even by the float trick (|v| ≤ 127 ≪ 2²²): adding and removing
        // 1.5·2²³ leaves the nearest integer. Two adds fuse with the Mul above into one
        // elementwise pass in tract, where its `Round` op is a scalar loop (12 % of the run).
        let magic = self.graph.scalar(ROUNDING_MAGIC);
        let shifted = self.graph.op("Add", &[&scaled, &magic], vec![]);
        let rounded = self.graph.op("Sub", &[&shifted, &magic], vec![]);
        let x_q = self.graph.op(
            "Cast",
            &[&rounded],
            vec![("to", Attr::Int(DataType::Int8 as i64))],
        );
        let acc = self.graph.op("MatMulInteger", &[&x_q, &w], vec![]);
        let acc = self.graph.op(
            "Cast",
            &[&acc],
            vec![("to", Attr::Int(DataType::Float as i64))],
        );
        let per_channel = self.graph.op("Mul", &[&acc, &w_scale], vec![]);
        let x_scale = self.graph.op("Div", &[&max_abs, &q_range], vec![]);
        self.graph.op("Mul", &[&per_channel, &x_scale], vec![])
    }

    fn linear_named(&mut self, x: &str, prefix: &str) -> Result<String, Error> {
        let w = self.tensor(&format!("{prefix}.weight"))?;
        let b = self.tensor(&format!("{prefix}.bias"))?;
        let (out, inp) = (w.shape[0], w.shape[1]);
        let (w, b) = (w.data.clone(), b.data.clone());
        Ok(self.linear(x, prefix, &w, out, inp, &b))
    }

    fn layer(
        &mut self,
        x: &str,
        mask_bias: &str,
        layer: usize,
        rows: Rows,
    ) -> Result<String, Error> {
        let p = format!("encoder.layer.{layer}");
        let queries = match rows {
            Rows::All => x.to_string(),
            Rows::ClsOnly => {
                let zero = self.graph.i64_tensor(&format!("{p}.cls_start"), &[1], &[0]);
                let one = self.graph.i64_tensor(&format!("{p}.cls_end"), &[1], &[1]);
                let axis = self.graph.i64_tensor(&format!("{p}.cls_axis"), &[1], &[1]);
                self.graph.op("Slice", &[x, &zero, &one, &axis], vec![])
            }
        };
        let context = self.self_attention(x, &queries, rows, mask_bias, &p)?;
        let attn_out = self.linear_named(&context, &format!("{p}.attention.output.dense"))?;
        let residual = self.graph.op("Add", &[&attn_out, &queries], vec![]);
        let attn = self.layer_norm(&residual, &format!("{p}.attention.output.LayerNorm"))?;
        let inter = self.linear_named(&attn, &format!("{p}.intermediate.dense"))?;
        let (activated, out_factor) = self.activation(&inter);
        let w = self.tensor(&format!("{p}.output.dense.weight"))?;
        let b = self.tensor(&format!("{p}.output.dense.bias"))?;
        let (out, inp) = (w.shape[0], w.shape[1]);
        let w: Vec<f32> = w.data.iter().map(|v| v * out_factor).collect();
        let b = b.data.clone();
        let ffn = self.linear(&activated, &format!("{p}.output.dense"), &w, out, inp, &b);
        let residual = self.graph.op("Add", &[&ffn, &attn], vec![]);
        self.layer_norm(&residual, &format!("{p}.output.LayerNorm"))
    }

    /// The FFN activation, and the factor folded into the next projection's weights.
    fn activation(&mut self, x: &str) -> (String, f32) {
        match self.config.hidden_act {
            // 0.5·x·(1 + erf(x/√2)); the 0.5 goes into the next weight (exact: a power of two).
            HiddenAct::Gelu => {
                let inv_sqrt2 = self.graph.scalar(std::f32::consts::FRAC_1_SQRT_2);
                let scaled = self.graph.op("Mul", &[x, &inv_sqrt2], vec![]);
                let erf = self.graph.op("Erf", &[&scaled], vec![]);
                let one = self.graph.scalar(1.0);
                let shifted = self.graph.op("Add", &[&erf, &one], vec![]);
                (self.graph.op("Mul", &[x, &shifted], vec![]), 0.5)
            }
            // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
            HiddenAct::GeluTanh => {
                let cube = self.graph.op("Mul", &[x, x], vec![]);
                let cube = self.graph.op("Mul", &[&cube, x], vec![]);
                let c = self.graph.scalar(0.044715);
                let cube = self.graph.op("Mul", &[&cube, &c], vec![]);
                let inner = self.graph.op("Add", &[x, &cube], vec![]);
                let k = self.graph.scalar((2.0 / std::f32::consts::PI).sqrt());
                let inner = self.graph.op("Mul", &[&inner, &k], vec![]);
                let tanh = self.graph.op("Tanh", &[&inner], vec![]);
                let one = self.graph.scalar(1.0);
                let shifted = self.graph.op("Add", &[&tanh, &one], vec![]);
                (self.graph.op("Mul", &[x, &shifted], vec![]), 0.5)
            }
            HiddenAct::Relu => (self.graph.op("Relu", &[x], vec![]), 1.0),
        }
    }

    /// Multi-head self-attention up to (not including) the output projection: keys and values
    /// from every token of `x`, queries from `queries` (`x` itself, or its `[CLS]` row):
    /// `(batch, rows, hidden)`.
    fn self_attention(
        &mut self,
        x: &str,
        queries: &str,
        rows: Rows,
        mask_bias: &str,
        p: &str,
    ) -> Result<String, Error> {
        let (h, heads, d) = (
            self.config.hidden_size,
            self.config.num_attention_heads,
            self.config.head_dim(),
        );
        let scale = 1.0 / (d as f32).sqrt();
        // One fused projection where queries, keys and values read the same rows; otherwise
        // the query projection alone on the query rows and a fused one for keys and values.
        let parts: &[(&str, f32)] = match rows {
            Rows::All => &[("query", scale), ("key", 1.0), ("value", 1.0)],
            Rows::ClsOnly => &[("key", 1.0), ("value", 1.0)],
        };
        let mut weight = Vec::with_capacity(parts.len() * h * h);
        let mut bias = Vec::with_capacity(parts.len() * h);
        for (part, factor) in parts {
            let w = self.tensor(&format!("{p}.attention.self.{part}.weight"))?;
            let b = self.tensor(&format!("{p}.attention.self.{part}.bias"))?;
            weight.extend(w.data.iter().map(|v| v * factor));
            bias.extend(b.data.iter().map(|v| v * factor));
        }
        let fused_name = match rows {
            Rows::All => format!("{p}.attention.self.qkv"),
            Rows::ClsOnly => format!("{p}.attention.self.kv"),
        };
        let fused = self.linear(x, &fused_name, &weight, parts.len() * h, h, &bias);
        let fused = self.split_heads(&fused, parts.len() * heads, d, &format!("{p}.heads"));
        let mut split = self.graph.op_n(
            "Split",
            &[&fused],
            vec![("axis", Attr::Int(1))],
            parts.len(),
        );
        let (query, key, value) = match rows {
            Rows::All => (split.remove(0), split.remove(0), split.remove(0)),
            Rows::ClsOnly => {
                let w = self.tensor(&format!("{p}.attention.self.query.weight"))?;
                let b = self.tensor(&format!("{p}.attention.self.query.bias"))?;
                let w: Vec<f32> = w.data.iter().map(|v| v * scale).collect();
                let b: Vec<f32> = b.data.iter().map(|v| v * scale).collect();
                let name = format!("{p}.attention.self.query");
                let query = self.linear(queries, &name, &w, h, h, &b);
                let query = self.split_heads(&query, heads, d, &format!("{p}.query_heads"));
                (query, split.remove(0), split.remove(0))
            }
        };
        let key_t = self.graph.op(
            "Transpose",
            &[&key],
            vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))],
        );
        let scores = self.graph.op("MatMul", &[&query, &key_t], vec![]);
        let scores = self.graph.op("Add", &[&scores, mask_bias], vec![]);
        let probs = self
            .graph
            .op("Softmax", &[&scores], vec![("axis", Attr::Int(-1))]);
        let context = self.graph.op("MatMul", &[&probs, &value], vec![]);
        let context = self.graph.op(
            "Transpose",
            &[&context],
            vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        );
        let merged = self
            .graph
            .i64_tensor(&format!("{p}.context_shape"), &[3], &[0, 0, h as i64]);
        Ok(self.graph.op("Reshape", &[&context, &merged], vec![]))
    }

    /// `(batch, rows, n·d)` → `(batch, n, rows, d)`.
    fn split_heads(&mut self, x: &str, n: usize, d: usize, name: &str) -> String {
        let shape = self
            .graph
            .i64_tensor(name, &[4], &[0, 0, n as i64, d as i64]);
        let x = self.graph.op("Reshape", &[x, &shape], vec![]);
        self.graph.op(
            "Transpose",
            &[&x],
            vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        )
    }

    /// Pooler (tanh on `[CLS]`, or on the tokens' mean) and classifier: returns (pooled,
    /// logits); logits are f32.
    fn head(
        &mut self,
        hidden: &str,
        mask: &str,
        pooling: Pooling,
    ) -> Result<(String, String), Error> {
        let rows = match pooling {
            Pooling::Cls => hidden.to_string(),
            Pooling::Mean => self.token_mean(hidden, mask),
        };
        let zero = self.graph.i64_tensor("cls_index", &[], &[0]);
        let cls = self
            .graph
            .op("Gather", &[&rows, &zero], vec![("axis", Attr::Int(1))]);
        // The head is tiny: it stays in float even in the int8 graph.
        let precision = std::mem::replace(&mut self.precision, Precision::F32);
        let result = self.pooler_and_classifier(&cls);
        self.precision = precision;
        let (pooled, logits) = result?;
        let logits = if self.graph.float_type() == FloatType::F16 {
            self.graph.op_named(
                "Cast",
                &[&logits],
                vec![("to", Attr::Int(DataType::Float as i64))],
                "logits",
            )
        } else {
            self.graph
                .op_named("Identity", &[&logits], vec![], "logits")
        };
        Ok((pooled, logits))
    }

    /// `(batch, sequence, hidden)` and the `(batch, sequence)` i64 mask → `(batch, 1, hidden)`:
    /// the mean of the attended rows, as `weights · hidden` with `weights = mask / Σ mask`.
    /// `Σ mask` is `mask · maskᵀ` (a 0/1 mask squares to itself), which keeps the graph within
    /// the engine's operators.
    fn token_mean(&mut self, hidden: &str, mask: &str) -> String {
        let to = self.graph.float_type().onnx_type() as i64;
        let mask = self.graph.op("Cast", &[mask], vec![("to", Attr::Int(to))]);
        let row_axis = self.graph.i64_tensor("mean_row_axis", &[1], &[1]);
        let column_axis = self.graph.i64_tensor("mean_column_axis", &[1], &[2]);
        let row = self.graph.op("Unsqueeze", &[&mask, &row_axis], vec![]);
        let column = self.graph.op("Unsqueeze", &[&mask, &column_axis], vec![]);
        let tokens = self.graph.op("MatMul", &[&row, &column], vec![]);
        let weights = self.graph.op("Div", &[&row, &tokens], vec![]);
        self.graph.op("MatMul", &[&weights, hidden], vec![])
    }

    fn pooler_and_classifier(&mut self, cls: &str) -> Result<(String, String), Error> {
        let pooled = self.linear_named(cls, "pooler.dense")?;
        let pooled = self.graph.op("Tanh", &[&pooled], vec![]);
        let logits = self.linear_named(&pooled, "classifier")?;
        Ok((pooled, logits))
    }

    fn emit_f32_output(&mut self, x: &str, name: &str) {
        if self.graph.float_type() == FloatType::F16 {
            self.graph.op_named(
                "Cast",
                &[x],
                vec![("to", Attr::Int(DataType::Float as i64))],
                name,
            );
        } else {
            self.graph.op_named("Identity", &[x], vec![], name);
        }
    }
}
