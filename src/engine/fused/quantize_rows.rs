//! One operator for the int8 graph's per-token activation quantization.
//!
//! Before each `MatMulInteger`, `sentimq build` writes the dynamic quantization of its input as
//! eight standard ONNX nodes (so every runtime reads the file):
//!
//! ```text
//! m = Max(ReduceMax(Abs(x), axes=[-1], keepdims=1), 1e-12)
//! q = Cast<int8>(Sub(Add(Mul(x, Div(127, m)), 1.5·2²³), 1.5·2²³))   // round half to even
//! ```
//!
//! and `m` again for the scale that dequantizes the product. tract runs that as five passes
//! over the activations (abs, reduce, scale-and-round, cast, and the reduce's broadcast). When
//! the engine loads a graph it replaces each such chain, found by its exact shape and
//! constants, with one [`QuantizeRows`] node that reads each row twice (its largest magnitude,
//! then the rounded int8 values) and writes `q` and `m`. The arithmetic is tract's own for
//! that chain (`127 · (1/m)`, then multiply, add and subtract the rounding constant in f32), so
//! the plan's outputs do not change by a bit.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{tensor_proto::DataType, AttributeProto, NodeProto};
use tract_onnx::tract_hir::internal::*;

use super::{Graph, Replacement};

/// The operator type the fused nodes get; internal to the engine, never in a file.
pub(super) const OP_TYPE: &str = "sentimq.QuantizeRows";

/// Quantization levels on each side of zero.
const LEVELS: f32 = 127.0;
/// The floor that keeps an all-zero row's scale finite.
const FLOOR: f32 = 1e-12;
/// Adding and removing 1.5·2²³ rounds an f32 of magnitude below 2²² to the nearest integer,
/// ties to even.
const ROUNDING: f32 = 12_582_912.0;

/// The builder the operator register maps [`OP_TYPE`] to.
pub(super) fn build(
    _: &ParsingContext,
    _: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(QuantizeRowsExpansion), vec![]))
}

/// The quantization chain starting at node `abs`, when every node and constant is exactly as
/// `sentimq build` writes it and no intermediate value is used elsewhere.
pub(super) fn find(graph: &Graph, abs: usize) -> Option<Replacement> {
    let is_constant = |name: &str, value: f32| graph.scalar(name) == Some(value);
    let node = graph.node(abs);
    if node.op_type != "Abs" || node.input.len() != 1 {
        return None;
    }
    let x = node.input[0].as_str();
    let (reduce, n) = graph.sole_consumer(&node.output[0])?;
    let attr = |name: &str| n.attribute.iter().find(|a| a.name == name);
    let last_axis = attr("axes").is_some_and(|a| a.ints == [-1]);
    let keep_dims = attr("keepdims").is_none_or(|a: &AttributeProto| a.i == 1);
    if n.op_type != "ReduceMax" || !last_axis || !keep_dims {
        return None;
    }
    let (max, n) = graph.sole_consumer(&n.output[0])?;
    if n.op_type != "Max" || n.input.len() != 2 || !is_constant(&n.input[1], FLOOR) {
        return None;
    }
    let max_abs = n.output[0].clone();
    // `m` has a second use (the dequantization scale): the inverse is the one Div(127, m).
    let (div, n) = (0..graph.graph.node.len())
        .map(|i| (i, graph.node(i)))
        .find(|(_, n)| n.op_type == "Div" && n.input.len() == 2 && n.input[1] == max_abs)?;
    if !is_constant(&n.input[0], LEVELS) {
        return None;
    }
    let (mul, n) = graph.sole_consumer(&n.output[0])?;
    if n.op_type != "Mul" || n.input.first().map(String::as_str) != Some(x) {
        return None;
    }
    let (add, n) = graph.sole_consumer(&n.output[0])?;
    if n.op_type != "Add" || n.input.len() != 2 || !is_constant(&n.input[1], ROUNDING) {
        return None;
    }
    let (sub, n) = graph.sole_consumer(&n.output[0])?;
    if n.op_type != "Sub" || n.input.len() != 2 || !is_constant(&n.input[1], ROUNDING) {
        return None;
    }
    let (cast, n) = graph.sole_consumer(&n.output[0])?;
    let to_int8 = n
        .attribute
        .iter()
        .any(|a| a.name == "to" && a.i == DataType::Int8 as i64);
    if n.op_type != "Cast" || !to_int8 {
        return None;
    }
    Some(Replacement {
        nodes: vec![abs, reduce, max, div, mul, add, sub, cast],
        node: NodeProto {
            name: format!("{}.quantize_rows", node.name),
            op_type: OP_TYPE.to_string(),
            input: vec![x.to_string()],
            output: vec![n.output[0].clone(), max_abs],
            ..NodeProto::default()
        },
    })
}

/// The fused node while tract infers types: `x` f32 → (`q` int8 of `x`'s shape, `m` f32 with
/// the last axis 1).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct QuantizeRowsExpansion;

impl Expansion for QuantizeRowsExpansion {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(2)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 2)?;
        s.equals(&inputs[0].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].datum_type, DatumType::I8)?;
        s.equals(&outputs[1].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        s.equals(&outputs[1].rank, &inputs[0].rank)?;
        s.given(&inputs[0].shape, move |s, shape| {
            s.equals(&outputs[1].shape, QuantizeRows::scale_shape(&shape))
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, QuantizeRows, inputs)
    }
}

/// Each row (last axis) of `x`: `m = max(max |x|, 1e-12)`, `q = round(x · 127 · (1/m))`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub(super) struct QuantizeRows;

impl QuantizeRows {
    fn scale_shape<D: DimLike>(shape: &[D]) -> TVec<D> {
        let mut scale: TVec<D> = shape.iter().cloned().collect();
        if let Some(last) = scale.last_mut() {
            *last = D::one();
        }
        scale
    }

    /// Quantizes one row into `q`, returning its `m`: with AVX2's 8-lane vectors where the
    /// CPU has them (x86_64 binaries otherwise target SSE2's 4 lanes), else [`Self::row_on`]
    /// as compiled for the target (NEON on ARM).
    fn row(x: &[f32], q: &mut [i8]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { Self::row_avx2(x, q) };
        }
        Self::row_on(x, q)
    }

    /// [`Self::row_on`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn row_avx2(x: &[f32], q: &mut [i8]) -> f32 {
        Self::row_on(x, q)
    }

    /// The row's quantization; both loops vectorize on whatever vector unit the caller is
    /// compiled for.
    #[inline(always)]
    fn row_on(x: &[f32], q: &mut [i8]) -> f32 {
        // Sixteen running maxima; `a > m ? a : m` is one vector max instruction per lane group.
        let mut lanes = [0f32; 16];
        let mut chunks = x.chunks_exact(lanes.len());
        for chunk in &mut chunks {
            for (lane, v) in lanes.iter_mut().zip(chunk) {
                let a = v.abs();
                *lane = if a > *lane { a } else { *lane };
            }
        }
        let largest = |m: f32, &v: &f32| if v.abs() > m { v.abs() } else { m };
        let max_abs = lanes.iter().chain(chunks.remainder()).fold(0f32, largest);
        let max_abs = if max_abs > FLOOR { max_abs } else { FLOOR };
        let inverse = LEVELS * (1.0 / max_abs);
        for (q, &v) in q.iter_mut().zip(x) {
            // v · inverse is within ±127 (plus rounding); adding 1.5·2²³ rounds it to an integer,
            // ties to even, and leaves that integer in the low bits of the sum's encoding, as
            // an offset from 1.5·2²³'s own (0x4B40_0000). Same value as subtracting the constant
            // again and converting.
            let sum = v * inverse + ROUNDING;
            *q = (sum.to_bits().wrapping_sub(ROUNDING.to_bits()) as i32) as i8;
        }
        max_abs
    }
}

impl Op for QuantizeRows {
    fn name(&self) -> StaticName {
        "QuantizeRows".into()
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizeRows {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let shape = x.shape();
        let width = *shape
            .last()
            .context("QuantizeRows needs at least one axis")?;
        ensure!(width > 0, "QuantizeRows needs rows of at least one value");
        // SAFETY: every element of both tensors is written below before anything reads them:
        // the rows of `width` cover `q` and there is one `m` per row. (Zero-filling them first
        // cost as much as the quantization.)
        let (mut q, mut m) = unsafe {
            (
                Tensor::uninitialized::<i8>(shape)?,
                Tensor::uninitialized::<f32>(&Self::scale_shape(shape))?,
            )
        };
        {
            let x = x.try_as_plain_ram()?;
            let x = x.as_slice::<f32>()?;
            let mut q_view = q.try_as_plain_ram_mut()?;
            let mut m_view = m.try_as_plain_ram_mut()?;
            let rows = x
                .chunks_exact(width)
                .zip(q_view.as_slice_mut::<i8>()?.chunks_exact_mut(width));
            for ((x, q), m) in rows.zip(m_view.as_slice_mut::<f32>()?) {
                *m = Self::row(x, q);
            }
        }
        Ok(tvec!(q.into_tvalue(), m.into_tvalue()))
    }
}

impl TypedOp for QuantizeRows {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs[0].datum_type == DatumType::F32,
            "QuantizeRows reads f32"
        );
        ensure!(inputs[0].rank() > 0, "QuantizeRows needs at least one axis");
        let scale = Self::scale_shape(&inputs[0].shape.to_tvec());
        Ok(tvec!(
            DatumType::I8.fact(inputs[0].shape.clone()),
            DatumType::F32.fact(scale)
        ))
    }

    as_op!();
}

#[cfg(all(test, feature = "workstation"))]
mod tests {
    use super::super::replace;
    use super::*;
    use crate::engine::operators::tests::shipped_graph;

    #[test]
    fn rows_round_half_to_even_and_an_all_zero_row_stays_finite() {
        let mut q = [0i8; 5];
        // 127 · (1/2) · 1 = 63.5 → 64 (even); 0.5 · 63.5 = 31.75 → 32; −2 → −127.
        assert_eq!(QuantizeRows::row(&[1.0, 0.5, -2.0, 2.0, 0.0], &mut q), 2.0);
        assert_eq!(q, [64, 32, -127, 127, 0]);
        let mut q = [1i8; 3];
        assert_eq!(QuantizeRows::row(&[0.0; 3], &mut q), FLOOR);
        assert_eq!(q, [0, 0, 0]);
        // Longer than one vector of lanes, with the largest magnitude in the remainder.
        let x: Vec<f32> = (0..37).map(|i| i as f32 - 18.0).chain([-40.0]).collect();
        let mut q = vec![0i8; x.len()];
        assert_eq!(QuantizeRows::row(&x, &mut q), 40.0);
        assert_eq!((q[0], q[18], q[37]), (-57, 0, -127));
    }

    #[test]
    fn a_chain_whose_intermediate_is_used_elsewhere_is_left_alone() {
        let mut proto = shipped_graph();
        let graph = proto.graph.as_mut().expect("a graph");
        let abs = graph
            .node
            .iter()
            .position(|n| n.op_type == "Abs")
            .expect("an Abs");
        let mut extra = graph.node[abs].clone();
        extra.name = "extra_use".into();
        extra.input = vec![graph.node[abs].output[0].clone()];
        extra.output = vec!["extra_use_output".into()];
        graph.node.push(extra);
        assert_eq!(replace(graph, find), 6 * 4);
    }
}
