//! One operator for turning an int8 product back into f32: after each `MatMulInteger`,
//! `sentimq build` writes
//!
//! ```text
//! y = Add(Mul(Mul(Cast<float>(acc), w_scale), x_scale), bias)
//! ```
//!
//! with `w_scale` and `bias` constant vectors (one value per output channel) and `x_scale` one
//! value per token. tract cannot fold that into its int8 matrix product (its kernels store
//! i32), so it runs a cast (after zero-filling its output) and an element-wise chain: three
//! passes over the product. [`DequantizeRows`] does it in one, `((acc · w) · s) + b` in f32
//! in that order, as tract does.
//!
//! The intermediate layer's product then goes through the exact GELU as `sentimq build`
//! writes it, `y · (erf(y · c) + 1)` (`c` = 1/√2; the ½ is folded into the next weights):
//! four more passes in tract, and a copy of `y` (read twice). [`find_gelu`] folds it into
//! the same operator, row by row, with tract's own erf kernel and tract's order of
//! operations, so its outputs stay bit-identical too.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{attribute_proto::AttributeType, tensor_proto::DataType};
use tract_onnx::pb::{AttributeProto, NodeProto};
use tract_onnx::tract_hir::internal::*;

use tract_linalg::element_wise::ElementWise;

use super::{Graph, Replacement};

/// The operator type the fused nodes get; internal to the engine, never in a file.
pub(super) const OP_TYPE: &str = "sentimq.DequantizeRows";

/// The attribute holding the GELU's `c`, when the node ends in one.
const GELU_SCALE: &str = "gelu_scale";

/// The builder the operator register maps [`OP_TYPE`] to.
pub(super) fn build(
    _: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let gelu = node.get_attr_opt::<f32>(GELU_SCALE)?.map(f32::to_bits);
    Ok((
        expand(DequantizeRowsExpansion(DequantizeRows { gelu })),
        vec![],
    ))
}

/// The dequantization chain whose cast is node `cast`, when it reads a `MatMulInteger`, its
/// scale and bias are constant vectors of one length, and no intermediate value is used
/// elsewhere.
pub(super) fn find(graph: &Graph, cast: usize) -> Option<Replacement> {
    let node = graph.node(cast);
    let to_float = node
        .attribute
        .iter()
        .any(|a| a.name == "to" && a.i == DataType::Float as i64);
    if node.op_type != "Cast" || !to_float || node.input.len() != 1 {
        return None;
    }
    let acc = node.input[0].as_str();
    if graph.producer(acc)?.op_type != "MatMulInteger" {
        return None;
    }
    let (per_channel, n) = graph.sole_consumer(&node.output[0])?;
    if n.op_type != "Mul" || n.input.len() != 2 || n.input[0] != node.output[0] {
        return None;
    }
    let w_scale = n.input[1].as_str();
    let channels = graph.vector_len(w_scale)?;
    let (per_token, n) = graph.sole_consumer(&n.output[0])?;
    if n.op_type != "Mul" || n.input.len() != 2 || n.input[0] != graph.node(per_channel).output[0] {
        return None;
    }
    let x_scale = n.input[1].as_str();
    let (bias_add, n) = graph.sole_consumer(&n.output[0])?;
    let reads_product = n.input.first() == Some(&graph.node(per_token).output[0]);
    if n.op_type != "Add" || n.input.len() != 2 || !reads_product {
        return None;
    }
    if graph.vector_len(&n.input[1]) != Some(channels) {
        return None;
    }
    Some(Replacement {
        nodes: vec![cast, per_channel, per_token, bias_add],
        node: NodeProto {
            name: format!("{}.dequantize_rows", node.name),
            op_type: OP_TYPE.to_string(),
            input: vec![acc, w_scale, x_scale, &n.input[1]]
                .into_iter()
                .map(String::from)
                .collect(),
            output: vec![n.output[0].clone()],
            ..NodeProto::default()
        },
    })
}

/// The GELU reading fused node `dequantize`'s output `y`: `Mul(y, Add(Erf(Mul(y, c)), 1))`
/// with `c` a constant scalar, when nothing else reads `y` or the steps between.
pub(super) fn find_gelu(graph: &Graph, dequantize: usize) -> Option<Replacement> {
    let node = graph.node(dequantize);
    let has_gelu = node.attribute.iter().any(|a| a.name == GELU_SCALE);
    if node.op_type != OP_TYPE || has_gelu {
        return None;
    }
    let y = node.output.first()?;
    // `y · c` (c a constant scalar) and the product `y · (…)`, in either order of use.
    let is_scaling = |n: &NodeProto| {
        n.op_type == "Mul"
            && n.input.len() == 2
            && n.input[0] == *y
            && graph.scalar(&n.input[1]).is_some()
    };
    let [first, second] = graph.consumers(y)?;
    let ((scaled_index, scaled), (product_index, product)) = if is_scaling(first.1) {
        (first, second)
    } else {
        (second, first)
    };
    if !is_scaling(scaled) || graph.is_output(y) {
        return None;
    }
    let c = graph.scalar(&scaled.input[1])?;
    let (erf_index, erf) = graph.sole_consumer(scaled.output.first()?)?;
    let (one_index, one) = graph.sole_consumer(erf.output.first()?)?;
    let adds_one = one.input.len() == 2
        && one.input[0] == erf.output[0]
        && graph.scalar(&one.input[1]) == Some(1.0);
    if erf.op_type != "Erf" || erf.output.len() != 1 || one.op_type != "Add" || !adds_one {
        return None;
    }
    let multiplies = one.output.len() == 1 && product.input == [y.clone(), one.output[0].clone()];
    if product.op_type != "Mul"
        || !multiplies
        || graph.sole_consumer(&one.output[0])?.0 != product_index
    {
        return None;
    }
    let mut nodes = vec![
        dequantize,
        scaled_index,
        erf_index,
        one_index,
        product_index,
    ];
    nodes.sort_unstable();
    if nodes.last() != Some(&product_index) {
        return None;
    }
    let mut fused = node.clone();
    fused.output = product.output.clone();
    fused.attribute.push(AttributeProto {
        name: GELU_SCALE.into(),
        r#type: AttributeType::Float as i32,
        f: c,
        ..AttributeProto::default()
    });
    Some(Replacement { nodes, node: fused })
}

/// The fused node while tract infers types: (`acc` i32, `w_scale` f32 `[n]`, `x_scale` f32,
/// `bias` f32 `[n]`) → f32 of `acc`'s shape.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct DequantizeRowsExpansion(DequantizeRows);

impl Expansion for DequantizeRowsExpansion {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 4)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, DatumType::I32)?;
        for input in &inputs[1..] {
            s.equals(&input.datum_type, DatumType::F32)?;
        }
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)
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

/// Each row (last axis) `r` of `acc`: `y[r, j] = ((acc[r, j] as f32 · w[j]) · s[r]) + b[j]`,
/// then, with `gelu` (`c`'s bits), `y · (erf(y · c) + 1)`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct DequantizeRows {
    gelu: Option<u32>,
}

impl DequantizeRows {
    /// One row: with AVX2's 8-lane vectors where the CPU has them, else [`Self::row_on`] as
    /// compiled for the target.
    fn row(acc: &[i32], w: &[f32], s: f32, b: &[f32], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { Self::row_avx2(acc, w, s, b, y) };
        }
        Self::row_on(acc, w, s, b, y)
    }

    /// [`Self::row_on`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn row_avx2(acc: &[i32], w: &[f32], s: f32, b: &[f32], y: &mut [f32]) {
        Self::row_on(acc, w, s, b, y)
    }

    #[inline(always)]
    fn row_on(acc: &[i32], w: &[f32], s: f32, b: &[f32], y: &mut [f32]) {
        for (((y, &a), &w), &b) in y.iter_mut().zip(acc).zip(w).zip(b) {
            *y = ((a as f32 * w) * s) + b;
        }
    }

    /// One row, then its GELU: `scaled = y · c` in the same pass, tract's `erf` kernel on
    /// `scaled`, then `y · (scaled + 1)`.
    fn gelu_row(
        (acc, w, s, b): (&[i32], &[f32], f32, &[f32]),
        c: f32,
        erf: &dyn ElementWise<f32>,
        scaled: &mut [f32],
        y: &mut [f32],
    ) -> TractResult<()> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { Self::scaled_row_avx2(acc, w, s, b, c, scaled, y) };
            erf.run(scaled)?;
            // SAFETY: as above.
            unsafe { Self::times_one_plus_avx2(y, scaled) };
            return Ok(());
        }
        Self::scaled_row_on(acc, w, s, b, c, scaled, y);
        erf.run(scaled)?;
        Self::times_one_plus_on(y, scaled);
        Ok(())
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn scaled_row_avx2(
        acc: &[i32],
        w: &[f32],
        s: f32,
        b: &[f32],
        c: f32,
        scaled: &mut [f32],
        y: &mut [f32],
    ) {
        Self::scaled_row_on(acc, w, s, b, c, scaled, y)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn times_one_plus_avx2(y: &mut [f32], e: &[f32]) {
        Self::times_one_plus_on(y, e)
    }

    /// [`Self::row_on`], also writing `scaled = y · c`.
    #[inline(always)]
    fn scaled_row_on(
        acc: &[i32],
        w: &[f32],
        s: f32,
        b: &[f32],
        c: f32,
        scaled: &mut [f32],
        y: &mut [f32],
    ) {
        let rows = y.iter_mut().zip(scaled).zip(acc).zip(w).zip(b);
        for ((((y, scaled), &a), &w), &b) in rows {
            *y = ((a as f32 * w) * s) + b;
            *scaled = *y * c;
        }
    }

    /// `y = y · (e + 1)`.
    #[inline(always)]
    fn times_one_plus_on(y: &mut [f32], e: &[f32]) {
        for (y, &e) in y.iter_mut().zip(e) {
            *y *= e + 1.0;
        }
    }
}

impl Op for DequantizeRows {
    fn name(&self) -> StaticName {
        "DequantizeRows".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(self.gelu.map_or_else(Vec::new, |c| {
            vec![format!("then GELU, c = {}", f32::from_bits(c))]
        }))
    }

    op_as_typed_op!();
}

impl EvalOp for DequantizeRows {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (acc, w, s, b) = args_4!(inputs);
        let shape = acc.shape();
        let width = *shape
            .last()
            .context("DequantizeRows needs at least one axis")?;
        ensure!(width > 0, "DequantizeRows needs rows of at least one value");
        let rows = acc.len() / width;
        ensure!(
            w.len() == width && b.len() == width && s.len() == rows,
            "DequantizeRows: {rows} rows of {width} with {} scales, {} token scales, {} biases",
            w.len(),
            s.len(),
            b.len()
        );
        // SAFETY: every element is written below before anything reads it (the rows of
        // `width` cover the output).
        let mut y = unsafe { Tensor::uninitialized::<f32>(shape)? };
        {
            let (acc, w, s, b) = (
                acc.try_as_plain_ram()?,
                w.try_as_plain_ram()?,
                s.try_as_plain_ram()?,
                b.try_as_plain_ram()?,
            );
            let (w, b) = (w.as_slice::<f32>()?, b.as_slice::<f32>()?);
            let mut y_view = y.try_as_plain_ram_mut()?;
            let rows = acc
                .as_slice::<i32>()?
                .chunks_exact(width)
                .zip(y_view.as_slice_mut::<f32>()?.chunks_exact_mut(width));
            match self.gelu.map(f32::from_bits) {
                None => {
                    for ((acc, y), &s) in rows.zip(s.as_slice::<f32>()?) {
                        Self::row(acc, w, s, b, y);
                    }
                }
                Some(c) => {
                    let erf = tract_linalg::Func::Erf.ew_f32()?;
                    let mut scaled = vec![0f32; width];
                    for ((acc, y), &s) in rows.zip(s.as_slice::<f32>()?) {
                        Self::gelu_row((acc, w, s, b), c, erf.as_ref(), &mut scaled, y)?;
                    }
                }
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for DequantizeRows {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs[0].datum_type == DatumType::I32,
            "DequantizeRows reads i32"
        );
        ensure!(
            inputs[0].rank() > 0,
            "DequantizeRows needs at least one axis"
        );
        Ok(tvec!(DatumType::F32.fact(inputs[0].shape.clone())))
    }

    as_op!();
}

#[cfg(all(test, feature = "workstation"))]
mod tests {
    use super::*;

    #[test]
    fn each_value_gets_its_channels_scale_and_bias_and_its_rows_scale() {
        let acc: Vec<i32> = (0..20).map(|i| i * 1000 - 7000).collect();
        let w: Vec<f32> = (0..10).map(|j| 0.001 * (j + 1) as f32).collect();
        let b: Vec<f32> = (0..10).map(|j| j as f32 - 5.0).collect();
        let mut y = [0f32; 20];
        for (row, s) in [0.5f32, 2.0].into_iter().enumerate() {
            let cols = row * 10..row * 10 + 10;
            DequantizeRows::row(&acc[cols.clone()], &w, s, &b, &mut y[cols]);
        }
        for (i, y) in y.iter().enumerate() {
            let (row, j) = (i / 10, i % 10);
            let s = [0.5f32, 2.0][row];
            assert_eq!(*y, ((acc[i] as f32 * w[j]) * s) + b[j]);
        }
    }
}
