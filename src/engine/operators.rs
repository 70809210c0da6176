//! The ONNX operators the engine reads: exactly the 22 that `sentimq build` writes (opset 17,
//! int8, f16 and f32 graphs alike), each mapped onto tract's own operators.
//!
//! `tract_onnx::onnx()` registers every operator tract knows (about 170), and with them the
//! code of convolutions, FFTs, scans, resizes and the rest ends up in every binary. This
//! register names only what the classifier graphs use, so the linker leaves the rest out; a
//! graph with any other operator, or another opset, is refused by name before tract reads it.
//! The mappings follow the ONNX operator specifications at the opsets [`OPSETS`] accepts.

use std::ops::RangeInclusive;

use tract_onnx::model::{optional_outputs, OnnxOpRegister, ParsingContext};
use tract_onnx::pb::{ModelProto, NodeProto};
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::{array, binary::Nary, identity::Identity, math, nn};
use tract_onnx::tract_hir::tract_core::ops::einsum::EinSum;
use tract_onnx::Onnx;

/// The default-domain opsets whose semantics the builders below implement (Split, Unsqueeze
/// and ReduceSum take inputs from 13 on; ReduceMax's axes become an input at 18).
const OPSETS: RangeInclusive<i64> = 13..=17;

/// Builds one operator from its node.
type Builder = fn(&ParsingContext, &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// Every operator type the engine accepts, with its builder.
const OPERATORS: [(&str, Builder); 22] = [
    ("Abs", |_, _| Ok((math::abs().into_hir(), vec![]))),
    ("Add", |_, _| Ok((math::Add.into_hir(), vec![]))),
    ("Cast", cast),
    ("Div", |_, _| Ok((math::Div.into_hir(), vec![]))),
    ("Erf", |_, _| Ok((math::erf().into_hir(), vec![]))),
    ("Gather", |_, node| {
        let axis = node.get_attr_opt("axis")?.unwrap_or(0);
        Ok((expand(array::Gather::new(axis)), vec![]))
    }),
    ("Identity", |_, _| Ok((Box::new(Identity), vec![]))),
    ("LayerNormalization", layer_normalization),
    ("MatMul", |_, _| {
        Ok((
            expand(tract_onnx::tract_hir::ops::matmul::MatMulInference::default()),
            vec![],
        ))
    }),
    ("MatMulInteger", mat_mul_integer),
    ("Max", |_, _| {
        Ok((Box::new(Nary(Box::new(math::Max), false)), vec![]))
    }),
    ("Mul", |_, _| Ok((math::Mul.into_hir(), vec![]))),
    ("ReduceMax", |_, node| {
        let axes = node.get_attr_opt_vec("axes")?;
        let keep_dims = node.get_attr_opt("keepdims")?.unwrap_or(1i64) == 1;
        Ok((
            expand(nn::Reduce::new(axes, keep_dims, nn::Reducer::Max)),
            vec![],
        ))
    }),
    ("Reshape", |_, node| {
        let allow_zero = node.get_attr_opt("allowzero")?.unwrap_or(0i64) != 0;
        Ok((expand(array::Reshape::new(allow_zero)), vec![]))
    }),
    ("Shape", shape),
    ("Slice", slice),
    ("Softmax", |_, node| {
        let axis = node.get_attr_opt("axis")?.unwrap_or(-1);
        Ok((expand(nn::Softmax::new(axis)), vec![]))
    }),
    ("Split", split),
    ("Sub", |_, _| Ok((math::Sub.into_hir(), vec![]))),
    ("Tanh", |_, _| Ok((math::tanh().into_hir(), vec![]))),
    ("Transpose", |_, node| {
        let perm = node.get_attr_opt_vec("perm")?;
        Ok((
            expand(array::PermuteAxes::new(perm.map(Into::into))),
            vec![],
        ))
    }),
    ("Unsqueeze", |_, _| Ok((expand(Unsqueeze), vec![]))),
];

/// tract's ONNX front end with only [`OPERATORS`] registered, and the engine's own fused
/// operators (`fused`), which only its rewrite of a parsed file puts in a graph.
pub(super) fn framework() -> Onnx {
    let mut register = OnnxOpRegister::default();
    for (name, builder) in OPERATORS {
        register.insert(name, builder);
    }
    super::fused::register(&mut register);
    Onnx {
        op_register: register,
        ..Onnx::default()
    }
}

/// Why a parsed ONNX file is not one the engine reads, or `None` when it is.
pub(super) fn unsupported(proto: &ModelProto) -> Option<String> {
    let opset = proto
        .opset_import
        .iter()
        .find(|import| import.domain.is_empty() || import.domain == "ai.onnx")
        .map(|import| import.version);
    match opset {
        Some(version) if OPSETS.contains(&version) => {}
        Some(version) => {
            return Some(format!(
                "ONNX opset {version} (the engine reads opsets {} to {}; sentimq build writes 17)",
                OPSETS.start(),
                OPSETS.end()
            ))
        }
        None => return Some("no ONNX opset declared".to_string()),
    }
    let mut unknown: Vec<&str> = proto
        .graph
        .iter()
        .flat_map(|graph| &graph.node)
        .map(|node| node.op_type.as_str())
        .filter(|op| OPERATORS.iter().all(|(name, _)| name != op))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    if !unknown.is_empty() {
        return Some(format!(
            "operators the engine does not run: {} (it runs the {} that sentimq build writes)",
            unknown.join(", "),
            OPERATORS.len()
        ));
    }
    let node = proto
        .graph
        .iter()
        .flat_map(|graph| &graph.node)
        .find(|node| !has_valid_arity(node))?;
    let (inputs, outputs) = arity(&node.op_type);
    Some(format!(
        "node {:?} ({}) has {} inputs and {} outputs, where {} takes {} and gives {}",
        node.name,
        node.op_type,
        node.input.len(),
        node.output.len(),
        node.op_type,
        count(&inputs),
        count(&outputs)
    ))
}

/// The input and output counts ONNX allows each operator of [`OPERATORS`] at [`OPSETS`] (other
/// operators are refused by name first). Checked before anything reads a node, so the engine's
/// graph rewrites (`fused`) may index a node's first inputs and its first output freely.
fn arity(op: &str) -> (RangeInclusive<usize>, RangeInclusive<usize>) {
    const ANY: usize = usize::MAX;
    match op {
        "Add" | "Div" | "Gather" | "MatMul" | "Mul" | "Reshape" | "Sub" => (2..=2, 1..=1),
        "LayerNormalization" => (2..=3, 1..=3),
        "MatMulInteger" => (2..=4, 1..=1),
        "Max" => (1..=ANY, 1..=1),
        "ReduceMax" | "Unsqueeze" => (1..=2, 1..=1),
        "Slice" => (3..=5, 1..=1),
        "Split" => (1..=2, 1..=ANY),
        _ => (1..=1, 1..=1),
    }
}

fn has_valid_arity(node: &NodeProto) -> bool {
    let (inputs, outputs) = arity(&node.op_type);
    inputs.contains(&node.input.len()) && outputs.contains(&node.output.len())
}

/// "2", "1 to 3" or "at least 1".
fn count(range: &RangeInclusive<usize>) -> String {
    match (range.start(), range.end()) {
        (low, high) if low == high => low.to_string(),
        (low, &usize::MAX) => format!("at least {low}"),
        (low, high) => format!("{low} to {high}"),
    }
}

/// ONNX's int64 becomes tract's symbolic dimension type, as in tract's own ONNX front end, so
/// shape arithmetic stays symbolic.
fn cast(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let mut to = node.get_attr::<DatumType>("to")?;
    if to == DatumType::I64 {
        to = DatumType::TDim;
    }
    Ok((Box::new(tract_onnx::tract_hir::ops::cast::cast(to)), vec![]))
}

fn shape(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    if node.get_attr_opt::<i64>("start")?.is_some() || node.get_attr_opt::<i64>("end")?.is_some() {
        bail!("Shape with start or end is not supported (sentimq build writes neither)");
    }
    Ok((expand(array::Shape::new(DatumType::TDim)), vec![]))
}

/// Slice (opset 10 on): starts, ends and optional axes and steps are inputs.
fn slice(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let mut optional = tract_onnx::model::optional_inputs(node).skip(3);
    Ok((
        Box::new(array::StridedSlice {
            begin_mask: 0,
            end_mask: 0,
            shrink_axis_mask: 0,
            optional_axes_input: optional.next().flatten(),
            optional_steps_input: optional.next().flatten(),
        }),
        vec![],
    ))
}

/// Split into equal parts along `axis` (sentimq build gives no `split` sizes).
fn split(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    if node.input.len() > 1 {
        bail!("Split with explicit sizes is not supported (sentimq build splits equally)");
    }
    let axis = node.get_attr_opt("axis")?.unwrap_or(0);
    Ok((
        expand(array::Split::new(axis, node.output.len(), None)),
        vec![],
    ))
}

fn layer_normalization(
    _: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    if optional_outputs(node)
        .skip(1)
        .take(2)
        .any(|output| output.is_some())
    {
        bail!("LayerNormalization's mean and inverse deviation outputs are not supported");
    }
    if node
        .get_attr_opt::<DatumType>("stash_type")?
        .is_some_and(|dt| dt != DatumType::F32)
    {
        bail!("LayerNormalization computes in f32 only");
    }
    Ok((
        expand(LayerNormalization {
            axis: node.get_attr_opt("axis")?.unwrap_or(-1),
            epsilon: node.get_attr_opt("epsilon")?.unwrap_or(1e-5),
            has_bias: node.input.len() == 3,
        }),
        vec![],
    ))
}

fn mat_mul_integer(
    _: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    if node.input.len() > 2 {
        bail!("MatMulInteger with zero points is not supported (sentimq build quantizes symmetrically)");
    }
    Ok((expand(MatMulInteger), vec![]))
}

/// Unsqueeze (opset 13 on): the axes are a constant input.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Unsqueeze;

impl Unsqueeze {
    fn add_dims(axes: &Tensor) -> TractResult<array::AddDims> {
        let axes = axes.cast_to::<i64>()?;
        let axes = axes
            .try_as_plain_ram()?
            .as_slice::<i64>()?
            .iter()
            .map(|&a| a as isize);
        Ok(array::AddDims::new(axes.collect()))
    }
}

impl Expansion for Unsqueeze {
    fn name(&self) -> StaticName {
        "Unsqueeze".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.given_2(&inputs[0].shape, &inputs[1].value, move |s, shape, axes| {
            s.equals(
                &outputs[0].shape,
                Self::add_dims(&axes)?.output_shape(&shape),
            )
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let Some(axes) = model.outlet_fact(inputs[1])?.konst.clone() else {
            bail!("Unsqueeze needs constant axes");
        };
        Self::add_dims(&axes)?.wire(prefix, model, &inputs[..1])
    }
}

/// `(x − mean) / √(var + ε) · scale + bias` over the axes from `axis` on, in f32, wired as the
/// reductions and element-wise ops tract fuses.
#[derive(Debug, Clone)]
struct LayerNormalization {
    axis: isize,
    epsilon: f32,
    has_bias: bool,
}

impl Expansion for LayerNormalization {
    fn name(&self) -> StaticName {
        "LayerNormalization".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2 + self.has_bias as usize)?;
        check_output_arity(outputs, 1)?;
        for input in &inputs[1..] {
            s.equals(&inputs[0].datum_type, &input.datum_type)?;
        }
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        use tract_onnx::tract_hir::tract_core::ops::nn::{Reduce, Reducer};
        use tract_onnx::tract_hir::tract_core::ops::{cast::cast, math as ops};
        let fact = model.outlet_fact(inputs[0])?.clone();
        let rank = fact.rank();
        let axis = if self.axis < 0 {
            self.axis + rank as isize
        } else {
            self.axis
        } as usize;
        let axes: TVec<usize> = (axis..rank).collect();
        let f32_of = |model: &mut TypedModel, name: &str, wire: OutletId| {
            Ok::<_, TractError>(
                model.wire_node(format!("{prefix}.{name}"), cast(DatumType::F32), &[wire])?[0],
            )
        };
        let x = f32_of(model, "cast_x", inputs[0])?;
        let scale = f32_of(model, "cast_scale", inputs[1])?;
        let bias = if self.has_bias {
            Some(f32_of(model, "cast_bias", inputs[2])?)
        } else {
            None
        };
        let count = axes
            .iter()
            .map(|&a| fact.shape[a].clone())
            .product::<TDim>();
        let count = model.add_const(format!("{prefix}.len"), tensor0(count))?;
        let count = f32_of(model, "cast_len", count)?;
        let mean_of = |model: &mut TypedModel, name: &str, wire: OutletId| {
            let sum = model.wire_node(
                format!("{prefix}.{name}_sum"),
                Reduce {
                    axes: axes.clone(),
                    reducer: Reducer::Sum,
                },
                &[wire],
            )?[0];
            Ok::<_, TractError>(
                wire_with_rank_broadcast(
                    format!("{prefix}.{name}"),
                    model,
                    ops::div(),
                    &[sum, count],
                )?[0],
            )
        };
        let mean = mean_of(model, "mean", x)?;
        let centred = model.wire_node(format!("{prefix}.d"), ops::sub(), &[x, mean])?[0];
        let squared = model.wire_node(format!("{prefix}.dd"), ops::square(), &[centred])?[0];
        let variance = mean_of(model, "var", squared)?;
        let epsilon = model.add_const(format!("{prefix}.epsilon"), tensor0(self.epsilon))?;
        let variance = wire_with_rank_broadcast(
            format!("{prefix}.var_eps"),
            model,
            ops::add(),
            &[variance, epsilon],
        )?[0];
        let inverse =
            model.wire_node(format!("{prefix}.inv_std_dev"), ops::rsqrt(), &[variance])?;
        let normalized = model.wire_node(
            format!("{prefix}.normalized"),
            ops::mul(),
            &[centred, inverse[0]],
        )?;
        let mut y = wire_with_rank_broadcast(
            format!("{prefix}.normalized_scaled"),
            model,
            ops::mul(),
            &[normalized[0], scale],
        )?[0];
        if let Some(bias) = bias {
            y = wire_with_rank_broadcast(format!("{prefix}.y"), model, ops::add(), &[y, bias])?[0];
        }
        model.wire_node(format!("{prefix}.cast_y"), cast(fact.datum_type), &[y])
    }
}

/// `A · B` of two int8 (or uint8) tensors with no zero points, accumulated in i32: one tract
/// `EinSum` in its quantized form (unit scales, zero offsets), which tract turns into its
/// int8 matrix-product kernels.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct MatMulInteger;

impl Expansion for MatMulInteger {
    fn name(&self) -> StaticName {
        "MatMulInteger".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, DatumType::I32)?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, a, b| {
            let (_, _, c, _) =
                tract_onnx::tract_hir::ops::matmul::compute_shapes(a, b, false, false, false)?;
            s.equals(&outputs[0].shape, c)
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let mut operands = wire_rank_broadcast(prefix, model, &[inputs[0], inputs[1]])?;
        // bias, A's zero point and scale, B's, C's: EinSum's nine quantized inputs.
        let constants = [
            ("bias", tensor0(0i32)),
            ("a0", tensor0(0i32)),
            ("a_scale", tensor0(1f32)),
            ("b0", tensor0(0i32)),
            ("b_scale", tensor0(1f32)),
            ("c0", tensor0(0i32)),
            ("c_scale", tensor0(1f32)),
        ];
        for (name, value) in constants {
            operands.push(model.add_const(format!("{prefix}.{name}"), value)?);
        }
        let ranks = operands
            .iter()
            .map(|&wire| Ok(model.outlet_fact(wire)?.rank()))
            .collect::<TractResult<Vec<usize>>>()?;
        let rank = ranks[0];
        let mut axes = AxesMapping::disconnected_for_ranks(&ranks, &ranks[..1])?
            .renaming((InOut::In(0), rank - 2), 'm')?
            .linking('m', (InOut::Out(0), rank - 2))?
            .renaming((InOut::In(1), rank - 1), 'n')?
            .linking('n', (InOut::Out(0), rank - 1))?
            .renaming((InOut::In(0), rank - 1), 'k')?
            .linking('k', (InOut::In(1), rank - 2))?;
        for axis in 0..rank - 2 {
            axes = axes
                .linking((InOut::In(0), axis), (InOut::In(1), axis))?
                .linking((InOut::In(0), axis), (InOut::Out(0), axis))?;
        }
        let op = EinSum {
            axes,
            operating_dt: DatumType::I32,
            q_params: Some(DatumType::I32),
        };
        model.wire_node(prefix, op, &operands)
    }
}

#[cfg(all(test, feature = "workstation"))]
pub(super) mod tests {
    use super::*;
    use tract_onnx::pb::ModelProto;
    use tract_onnx::tract_hir::prelude::Framework;

    /// The shipped int8 graph, parsed.
    pub(crate) fn shipped_graph() -> ModelProto {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/imdb-minilm/model.int8.onnx");
        framework()
            .proto_model_for_path(path)
            .expect("the shipped graph parses")
    }

    /// Logits and probabilities for one row of `ids`, from `onnx`'s plan of `proto`.
    pub(crate) fn outputs(onnx: &Onnx, proto: &ModelProto, ids: &[i64]) -> Vec<Vec<f32>> {
        let fact = InferenceFact::dt_shape(DatumType::I64, tvec!(1, ids.len()));
        let plan = onnx
            .model_for_proto_model(proto)
            .and_then(|m| m.with_input_fact(0, fact.clone()))
            .and_then(|m| m.with_input_fact(1, fact))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .expect("the graph plans");
        let row = |values: Vec<i64>| tract_ndarray::Array2::from_shape_vec((1, ids.len()), values);
        let ids = row(ids.to_vec()).expect("shape").into_tensor();
        let mask = row(vec![1; ids.len()]).expect("shape").into_tensor();
        plan.run(tvec!(ids.into(), mask.into()))
            .expect("runs")
            .iter()
            .map(|t| {
                let values = t.try_as_plain_ram().expect("values in memory");
                values.as_slice::<f32>().expect("f32 outputs").to_vec()
            })
            .collect()
    }

    #[test]
    fn the_shipped_graph_gives_what_tracts_full_register_gives_bit_for_bit() {
        // "[CLS] a truly wonderful , moving film [SEP]" in the shipped vocabulary, and a longer row.
        let short = [101, 1037, 5621, 6919, 1010, 3048, 2143, 102];
        let long: Vec<i64> = (0..40).map(|i| 1000 + 37 * i).chain([102]).collect();
        let graph = shipped_graph();
        for ids in [&short[..], &long[..]] {
            assert_eq!(
                outputs(&framework(), &graph, ids),
                outputs(&tract_onnx::onnx(), &graph, ids)
            );
        }
    }

    #[test]
    fn the_shipped_graph_uses_only_registered_operators() {
        assert_eq!(unsupported(&shipped_graph()), None);
    }

    #[test]
    fn other_operators_and_opsets_are_refused_by_name() {
        let mut proto = shipped_graph();
        let graph = proto.graph.as_mut().expect("a graph");
        for (node, op) in graph.node.iter_mut().zip(["Relu", "Conv", "Relu"]) {
            node.op_type = op.to_string();
        }
        let reason = unsupported(&proto).expect("refused");
        assert!(
            reason.contains("operators the engine does not run: Conv, Relu ("),
            "{reason}"
        );

        let mut proto = shipped_graph();
        for import in &mut proto.opset_import {
            import.version = 18;
        }
        let reason = unsupported(&proto).expect("refused");
        assert!(reason.starts_with("ONNX opset 18 "), "{reason}");
    }

    #[test]
    fn nodes_with_missing_inputs_or_outputs_are_refused_before_anything_reads_them() {
        // The reason given for the shipped graph with the first `op` node changed by `edit`.
        let refused = |op: &str, edit: fn(&mut NodeProto)| {
            let mut proto = shipped_graph();
            let graph = proto.graph.as_mut().expect("a graph");
            let node = graph.node.iter_mut().find(|node| node.op_type == op);
            edit(node.expect("the shipped graph has one"));
            unsupported(&proto).expect("refused")
        };
        for op in ["Cast", "Add", "Abs", "Mul", "Gather"] {
            let reason = refused(op, |node| node.input.clear());
            assert!(reason.contains(&format!("({op}) has 0 inputs")), "{reason}");
            let reason = refused(op, |node| node.output.clear());
            assert!(reason.contains("and 0 outputs"), "{reason}");
        }
    }
}
