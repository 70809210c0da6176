//! One operator for a layer's scaled dot-product attention, every head.
//!
//! `sentimq build` writes each layer's attention as standard ONNX: the fused projection's
//! output reshaped to heads and transposed, split into queries, keys and values, the keys
//! transposed, `MatMul`, the padding mask added, `Softmax`, `MatMul` with the values, and the
//! heads transposed and reshaped back (the last layer takes its one query row from its own
//! projection). tract runs that as copies of every head (the transposes), a packing of each
//! product's operands, two generic products, a broadcast sum and the softmax. [`Attention`]
//! reads the projection's rows where they are, once per head:
//!
//! ```text
//! for each head: p = softmax(q·kᵀ + mask) over the keys;  y[query row, head] = p · v
//! ```
//!
//! in f32 (the query projection already carries 1/√d). Four query rows at a time share each
//! key and value load; the products run in vector-wide blocks of columns (sixteen lanes, or
//! thirty-two with AVX-512) with fused multiply-adds; the softmax is the engine's
//! (`softmax_rows`). Sums run in another order than tract's products, so outputs can differ
//! in the last bits (the tests bound it). Only graphs whose mask is f32 (the f32 and int8
//! graphs) are fused; f16 graphs keep tract's operators.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{attribute_proto::AttributeType, AttributeProto, NodeProto};
use tract_onnx::tract_hir::internal::*;

use super::{Graph, Replacement};

mod kernel;

/// The operator type the fused nodes get; internal to the engine, never in a file.
pub(super) const OP_TYPE: &str = "sentimq.Attention";

/// The attribute names of the fused node, in [`Attention`]'s field order.
const ATTRIBUTES: [&str; 5] = ["heads", "head_dim", "q_offset", "k_offset", "v_offset"];

/// The builder the operator register maps [`OP_TYPE`] to.
pub(super) fn build(
    _: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let [heads, head_dim, q_offset, k_offset, v_offset] =
        ATTRIBUTES.map(|name| node.get_attr::<usize>(name));
    let op = Attention {
        heads: heads?,
        head_dim: head_dim?,
        q_offset: q_offset?,
        k_offset: k_offset?,
        v_offset: v_offset?,
    };
    ensure!(
        op.heads > 0 && op.head_dim > 0,
        "{OP_TYPE} needs heads of at least one value"
    );
    Ok((expand(AttentionExpansion(op)), vec![]))
}

/// Where a product's heads come from: `Reshape(source, [0, 0, n, d])` transposed to
/// `(batch, n, rows, d)`, all `n` heads, or one of a `Split`'s equal parts along the heads.
struct Heads {
    source: String,
    /// The first head's column in `source`'s rows.
    offset: usize,
    heads: usize,
    head_dim: usize,
    /// The reshape, the transpose and (third) the split.
    nodes: Vec<usize>,
}

/// The heads of value `name`, when it is exactly such a reshape/transpose(/split) whose
/// values are read by nothing else (the caller checks the split's other parts).
fn heads_of(graph: &Graph, name: &str) -> Option<Heads> {
    let (index, node) = graph.producer_index(name)?;
    let (part, parts, split) = if node.op_type == "Split" {
        let axis = node
            .attribute
            .iter()
            .find(|a| a.name == "axis")
            .map(|a| a.i);
        let equal = node.input.len() == 1 && node.attribute.iter().all(|a| a.name == "axis");
        if axis != Some(1) || !equal {
            return None;
        }
        let part = node.output.iter().position(|o| o == name)?;
        (part, node.output.len(), Some(index))
    } else {
        (0, 1, None)
    };
    let transposed = match split {
        Some(_) => &node.input[0],
        None => name,
    };
    let (transpose_index, transpose) = graph.producer_index(transposed)?;
    if !is_transpose(transpose, &[0, 2, 1, 3]) || graph.sole_consumer(transposed).is_none() {
        return None;
    }
    let (reshape_index, reshape) = graph.producer_index(&transpose.input[0])?;
    if reshape.op_type != "Reshape" || graph.sole_consumer(&transpose.input[0]).is_none() {
        return None;
    }
    let [0, 0, n, d] = graph.i64_initializer(reshape.input.get(1)?)?[..] else {
        return None;
    };
    let (n, d) = (usize::try_from(n).ok()?, usize::try_from(d).ok()?);
    if d == 0
        || n == 0
        || n % parts != 0
        || split.is_some_and(|_| graph.sole_consumer(name).is_none())
    {
        return None;
    }
    let heads = n / parts;
    let mut nodes = vec![reshape_index, transpose_index];
    nodes.extend(split);
    Some(Heads {
        source: reshape.input[0].clone(),
        offset: part * heads * d,
        heads,
        head_dim: d,
        nodes,
    })
}

/// Whether `node` is a one-input, one-output `Transpose` by `perm`.
fn is_transpose(node: &NodeProto, perm: &[i64]) -> bool {
    node.op_type == "Transpose"
        && node.input.len() == 1
        && node.output.len() == 1
        && node
            .attribute
            .iter()
            .any(|a| a.name == "perm" && a.ints == perm)
}

/// Whether `mask` is `sentimq build`'s f32 padding bias: `Unsqueeze(Mul(Sub(1, Cast(mask,
/// FLOAT)), big), [1, 2])`, shaped `(batch, 1, 1, keys)`, with `big` ≤ −10⁴ (so that padded
/// keys weigh exactly nothing, which lets the kernel skip them).
fn is_f32_mask_bias(graph: &Graph, mask: &str) -> Option<()> {
    let unsqueeze = graph.producer(mask)?;
    let axes = graph.i64_initializer(unsqueeze.input.get(1)?)?;
    if unsqueeze.op_type != "Unsqueeze" || axes != [1, 2] {
        return None;
    }
    let mul = graph.producer(&unsqueeze.input[0])?;
    let big = mul.input.iter().find_map(|i| graph.scalar(i))?;
    if big > -10_000.0 {
        return None;
    }
    let sub = mul
        .input
        .iter()
        .find_map(|i| graph.producer(i).filter(|n| n.op_type == "Sub"))?;
    let cast = sub
        .input
        .iter()
        .find_map(|i| graph.producer(i).filter(|n| n.op_type == "Cast"))?;
    let to_f32 = cast.attribute.iter().any(|a| a.name == "to" && a.i == 1);
    (mul.op_type == "Mul" && to_f32).then_some(())
}

/// The attention whose `Softmax` is node `softmax`, from the heads' reshapes to the merged
/// context, when each step is exactly as `sentimq build` writes it and no intermediate value
/// is read elsewhere.
pub(super) fn find(graph: &Graph, softmax: usize) -> Option<Replacement> {
    let node = graph.node(softmax);
    let axis = node
        .attribute
        .iter()
        .find(|a| a.name == "axis")
        .map(|a| a.i);
    let unary = node.input.len() == 1 && node.output.len() == 1;
    if node.op_type != "Softmax" || !unary || !matches!(axis, Some(-1) | Some(3)) {
        return None;
    }
    let (add_index, add) = graph.producer_index(&node.input[0])?;
    graph.sole_consumer(&node.input[0])?;
    if add.op_type != "Add" || add.input.len() != 2 {
        return None;
    }
    let (scores_index, scores) = graph.producer_index(&add.input[0])?;
    graph.sole_consumer(&add.input[0])?;
    let mask = &add.input[1];
    is_f32_mask_bias(graph, mask)?;
    if scores.op_type != "MatMul" || scores.input.len() != 2 {
        return None;
    }
    let (keys_t_index, keys_t) = graph.producer_index(&scores.input[1])?;
    graph.sole_consumer(&scores.input[1])?;
    if !is_transpose(keys_t, &[0, 1, 3, 2]) {
        return None;
    }
    let (context_index, context) = graph.sole_consumer(&node.output[0])?;
    let binary = context.input.len() == 2 && context.output.len() == 1;
    if context.op_type != "MatMul" || !binary || context.input[0] != node.output[0] {
        return None;
    }
    let (merge_t_index, merge_t) = graph.sole_consumer(&context.output[0])?;
    if !is_transpose(merge_t, &[0, 2, 1, 3]) {
        return None;
    }
    let (merge_index, merge) = graph.sole_consumer(&merge_t.output[0])?;
    if merge.op_type != "Reshape" {
        return None;
    }
    let (q, k, v) = (
        heads_of(graph, &scores.input[0])?,
        heads_of(graph, &keys_t.input[0])?,
        heads_of(graph, &context.input[1])?,
    );
    let (heads, head_dim) = (q.heads, q.head_dim);
    let same = |h: &Heads| h.heads == heads && h.head_dim == head_dim;
    let merged = graph.i64_initializer(merge.input.get(1)?)?;
    if !same(&k) || !same(&v) || k.source != v.source || merged != [0, 0, (heads * head_dim) as i64]
    {
        return None;
    }
    // A split goes with the attention only if the attention reads each of its parts.
    let parts = [&scores.input[0], &keys_t.input[0], &context.input[1]];
    let splits = [&q.nodes, &k.nodes, &v.nodes].map(|nodes| nodes.get(2).copied());
    let whole = |split: usize| graph.node(split).output.iter().all(|o| parts.contains(&o));
    if !splits.into_iter().flatten().all(whole) {
        return None;
    }
    let mut nodes: Vec<usize> = [q.nodes, k.nodes, v.nodes].concat();
    nodes.extend([
        keys_t_index,
        scores_index,
        add_index,
        softmax,
        context_index,
        merge_t_index,
    ]);
    nodes.sort_unstable();
    nodes.dedup();
    // The merge, which the fused node replaces, comes after every other node.
    if nodes.last().is_some_and(|&last| last > merge_index) {
        return None;
    }
    nodes.push(merge_index);
    let attribute = |name: &str, value: usize| AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value as i64,
        ..AttributeProto::default()
    };
    let values = [heads, head_dim, q.offset, k.offset, v.offset];
    Some(Replacement {
        nodes,
        node: NodeProto {
            name: format!("{}.attention", merge.name),
            op_type: OP_TYPE.to_string(),
            input: vec![q.source, k.source, mask.clone()],
            output: merge.output.clone(),
            attribute: ATTRIBUTES
                .iter()
                .zip(values)
                .map(|(name, value)| attribute(name, value))
                .collect(),
            ..NodeProto::default()
        },
    })
}

/// The fused node while tract infers types: queries' source `(batch, rows, ·)`, keys' and
/// values' source `(batch, keys, ·)`, mask bias `(batch, 1, 1, keys)`, all f32 → the context
/// `(batch, rows, heads · head_dim)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AttentionExpansion(Attention);

impl Expansion for AttentionExpansion {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 1)?;
        for input in inputs {
            s.equals(&input.datum_type, DatumType::F32)?;
        }
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&inputs[0].rank, 3)?;
        s.equals(&inputs[1].rank, 3)?;
        s.equals(&inputs[2].rank, 4)?;
        s.equals(&outputs[0].rank, 3)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], &inputs[0].shape[1])?;
        s.equals(
            &outputs[0].shape[2],
            (self.0.heads * self.0.head_dim).to_dim(),
        )
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, self.0.clone(), inputs)
    }
}

/// Multi-head attention over a projection's rows: head `h`'s queries are columns
/// `q_offset + h·head_dim ..` of the first input's rows, its keys and values columns
/// `k_offset + h·head_dim ..` and `v_offset + h·head_dim ..` of the second's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Attention {
    heads: usize,
    head_dim: usize,
    q_offset: usize,
    k_offset: usize,
    v_offset: usize,
}

/// One batch row's operands.
#[derive(Clone, Copy)]
pub(super) struct Operands<'a> {
    pub queries: &'a [f32],
    pub query_width: usize,
    pub keys_values: &'a [f32],
    pub key_width: usize,
    /// The mask bias, one per key.
    pub mask: &'a [f32],
}

/// Where head 0's columns start; head `h`'s are `h · head_dim` further.
#[derive(Clone, Copy)]
pub(super) struct HeadColumns {
    pub query: usize,
    pub key: usize,
    pub value: usize,
}

impl Attention {
    /// One batch row's attention into `y` (`rows × heads·head_dim`).
    fn run(&self, x: Operands, y: &mut [f32]) {
        let first = HeadColumns {
            query: self.q_offset,
            key: self.k_offset,
            value: self.v_offset,
        };
        kernel::heads(x, self.heads, self.head_dim, first, y)
    }
}

impl Op for Attention {
    fn name(&self) -> StaticName {
        "Attention".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} heads of {}, columns q {} k {} v {}",
            self.heads, self.head_dim, self.q_offset, self.k_offset, self.v_offset
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Attention {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let [queries, keys_values, mask] = &inputs[..] else {
            bail!("Attention reads queries, keys and values, and the mask");
        };
        let (&[batch, rows, query_width], &[kv_batch, keys, key_width]) =
            (queries.shape(), keys_values.shape())
        else {
            bail!("Attention's projections are (batch, rows, columns)");
        };
        let width = self.heads * self.head_dim;
        ensure!(
            kv_batch == batch && mask.shape() == [batch, 1, 1, keys],
            "Attention's inputs disagree: {:?}, {:?}, mask {:?}",
            queries.shape(),
            keys_values.shape(),
            mask.shape()
        );
        ensure!(
            self.q_offset + width <= query_width
                && self.k_offset.max(self.v_offset) + width <= key_width,
            "Attention's heads reach past the projections' {query_width} and {key_width} columns"
        );
        let mut y = Tensor::zero::<f32>(&[batch, rows, width])?;
        if batch * rows * keys > 0 {
            let (queries, keys_values, mask) = (
                queries.try_as_plain_ram()?,
                keys_values.try_as_plain_ram()?,
                mask.try_as_plain_ram()?,
            );
            let (queries, keys_values, mask) = (
                queries.as_slice::<f32>()?,
                keys_values.as_slice::<f32>()?,
                mask.as_slice::<f32>()?,
            );
            let mut y_view = y.try_as_plain_ram_mut()?;
            let y_rows = y_view.as_slice_mut::<f32>()?.chunks_exact_mut(rows * width);
            for (b, y) in y_rows.enumerate() {
                let operands = Operands {
                    queries: &queries[b * rows * query_width..][..rows * query_width],
                    query_width,
                    keys_values: &keys_values[b * keys * key_width..][..keys * key_width],
                    key_width,
                    mask: &mask[b * keys..][..keys],
                };
                self.run(operands, y);
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for Attention {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3, "Attention reads three inputs");
        ensure!(
            inputs.iter().all(|i| i.datum_type == DatumType::F32),
            "Attention is f32"
        );
        ensure!(
            inputs[0].rank() == 3 && inputs[1].rank() == 3 && inputs[2].rank() == 4,
            "Attention's projections are (batch, rows, columns), its mask (batch, 1, 1, keys)"
        );
        let shape = [
            inputs[0].shape[0].clone(),
            inputs[0].shape[1].clone(),
            (self.heads * self.head_dim).to_dim(),
        ];
        Ok(tvec!(DatumType::F32.fact(shape)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [−scale/2, scale/2).
    fn values(n: usize, seed: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919 % 997) as f32 / 997.0 - 0.5) * scale)
            .collect()
    }

    /// The attention in f64, head by head, straight from its definition.
    fn reference(op: &Attention, x: Operands) -> Vec<f64> {
        let (d, keys) = (op.head_dim, x.mask.len());
        let rows = x.queries.len() / x.query_width;
        let mut y = vec![0f64; rows * op.heads * d];
        for h in 0..op.heads {
            for i in 0..rows {
                let q = &x.queries[i * x.query_width + op.q_offset + h * d..][..d];
                let scores: Vec<f64> = (0..keys)
                    .map(|j| {
                        let k = &x.keys_values[j * x.key_width + op.k_offset + h * d..][..d];
                        let dot: f64 = q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum();
                        dot + x.mask[j] as f64
                    })
                    .collect();
                let max = scores.iter().fold(f64::NEG_INFINITY, |m, &s| m.max(s));
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for (j, e) in exps.iter().enumerate() {
                    let v = &x.keys_values[j * x.key_width + op.v_offset + h * d..][..d];
                    for c in 0..d {
                        y[i * op.heads * d + h * d + c] += e / sum * v[c] as f64;
                    }
                }
            }
        }
        y
    }

    /// Against [`reference`]; where the queries are the keys' rows, padded rows stay zero.
    fn check(op: &Attention, x: Operands) {
        let rows = x.queries.len() / x.query_width;
        let width = op.heads * op.head_dim;
        let mut y = vec![0f32; rows * width];
        op.run(x, &mut y);
        let mut expected = reference(op, x);
        if rows == x.mask.len() {
            for (row, &m) in expected.chunks_exact_mut(width).zip(x.mask) {
                if m <= -10_000.0 {
                    row.fill(0.0);
                }
            }
        }
        for (i, (ours, expected)) in y.iter().zip(expected).enumerate() {
            assert!(
                (*ours as f64 - expected).abs() < 2e-6,
                "{op:?}, value {i}: {ours} vs {expected}"
            );
        }
    }

    /// Heads of every width, in one fused projection (queries, keys, values) with padded
    /// keys, and with one query row of its own (the last layer's), against the f64 definition.
    #[test]
    fn every_head_matches_the_definition() {
        for (heads, head_dim, keys) in [(3, 26, 37), (2, 32, 16), (1, 64, 5), (4, 8, 130)] {
            let width = heads * head_dim;
            let projection = values(keys * 3 * width, heads, 2.0);
            let mut mask = vec![0f32; keys];
            mask[keys - keys / 4..].fill(-10_000.0);
            let fused = Attention {
                heads,
                head_dim,
                q_offset: 0,
                k_offset: width,
                v_offset: 2 * width,
            };
            check(
                &fused,
                Operands {
                    queries: &projection,
                    query_width: 3 * width,
                    keys_values: &projection,
                    key_width: 3 * width,
                    mask: &mask,
                },
            );
            let query = values(width, 11, 2.0);
            let last_layer = Attention {
                heads,
                head_dim,
                q_offset: 0,
                k_offset: 0,
                v_offset: width,
            };
            check(
                &last_layer,
                Operands {
                    queries: &query,
                    query_width: width,
                    keys_values: &projection[..keys * 2 * width],
                    key_width: 2 * width,
                    mask: &mask,
                },
            );
        }
    }
}
