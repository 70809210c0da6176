//! One operator for a residual sum and the layer normalization that reads it.
//!
//! Every BERT layer ends twice in `LayerNormalization(Add(a, b), γ, β)` over the last axis (the
//! embeddings once more). tract runs the normalization as its reductions (engine/operators.rs):
//! the sum, a mean, the centred values, their squares, a second mean, the inverse deviation and
//! the scaled result, each a pass over the activations. [`AddLayerNorm`] reads each row twice
//! (the sum and its mean, then the centred squares) and writes it once:
//!
//! ```text
//! s = a + b;  d = s − mean(s);  y = d · (1/√(mean(d²) + ε)) · γ + β
//! ```
//!
//! in f32, in that order. The sums run in sixteen lanes rather than in tract's order, so the
//! result can differ from the unfused graph's in the last bits (the tests bound it).

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{AttributeProto, NodeProto};
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::broadcast::multi_broadcast;
use tract_onnx::tract_hir::tract_core::ops::math;

use super::{Graph, Replacement};

/// The operator type the fused nodes get; internal to the engine, never in a file.
pub(super) const OP_TYPE: &str = "sentimq.AddLayerNorm";

/// The builder the operator register maps [`OP_TYPE`] to.
pub(super) fn build(
    _: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let epsilon = node.get_attr::<f32>("epsilon")?;
    Ok((expand(AddLayerNormExpansion { epsilon }), vec![]))
}

/// The normalization whose `Add` is node `add`, when that sum is read by nothing else and the
/// `LayerNormalization` normalizes the last axis, with scale and bias, one output.
pub(super) fn find(graph: &Graph, add: usize) -> Option<Replacement> {
    let node = graph.node(add);
    if node.op_type != "Add" || node.input.len() != 2 {
        return None;
    }
    let (norm, n) = graph.sole_consumer(&node.output[0])?;
    let attr = |name: &str| n.attribute.iter().find(|a| a.name == name);
    let last_axis = attr("axis").is_none_or(|a: &AttributeProto| a.i == -1);
    let f32_stash = attr("stash_type").is_none_or(|a: &AttributeProto| a.i == 1);
    if n.op_type != "LayerNormalization" || n.input.len() != 3 || n.output.len() != 1 {
        return None;
    }
    let channels = graph.vector_len(&n.input[1])?;
    if !last_axis || !f32_stash || graph.vector_len(&n.input[2]) != Some(channels) {
        return None;
    }
    let epsilon = attr("epsilon").map_or(1e-5, |a| a.f);
    Some(Replacement {
        nodes: vec![add, norm],
        node: NodeProto {
            name: format!("{}.add_layer_norm", n.name),
            op_type: OP_TYPE.to_string(),
            input: vec![
                node.input[0].clone(),
                node.input[1].clone(),
                n.input[1].clone(),
                n.input[2].clone(),
            ],
            output: n.output.clone(),
            attribute: vec![AttributeProto {
                name: "epsilon".into(),
                r#type: tract_onnx::pb::attribute_proto::AttributeType::Float as i32,
                f: epsilon,
                ..AttributeProto::default()
            }],
            ..NodeProto::default()
        },
    })
}

/// The fused node while tract infers types: `a`, `b` f32 (broadcastable to one shape), `γ`,
/// `β` f32 vectors over the last axis → `y` of the sum's shape.
#[derive(Debug, Clone, PartialEq)]
struct AddLayerNormExpansion {
    epsilon: f32,
}

impl std::hash::Hash for AddLayerNormExpansion {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.epsilon.to_bits().hash(state);
    }
}

impl Expansion for AddLayerNormExpansion {
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
        for input in inputs {
            s.equals(&input.datum_type, DatumType::F32)?;
        }
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, a, b| {
            s.equals(&outputs[0].shape, multi_broadcast(&[a, b])?)
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let (a, b) = (model.outlet_fact(inputs[0])?, model.outlet_fact(inputs[1])?);
        // Summands of different shapes (an embedding broadcast over the batch) are added first.
        let summands: TVec<OutletId> = if a.shape == b.shape {
            inputs[..2].into()
        } else {
            wire_with_rank_broadcast(format!("{prefix}.sum"), model, math::add(), &inputs[..2])?
        };
        let mut wires = summands;
        wires.extend_from_slice(&inputs[2..]);
        model.wire_node(
            prefix,
            AddLayerNorm {
                epsilon: self.epsilon,
            },
            &wires,
        )
    }
}

/// `LayerNorm(Σ summands) · γ + β` over the last axis; one summand or two of one shape.
#[derive(Debug, Clone)]
pub(super) struct AddLayerNorm {
    epsilon: f32,
}

/// Operators are compared and hashed (tract merges equal nodes): by ε's bits.
impl PartialEq for AddLayerNorm {
    fn eq(&self, other: &Self) -> bool {
        self.epsilon.to_bits() == other.epsilon.to_bits()
    }
}

impl Eq for AddLayerNorm {}

impl std::hash::Hash for AddLayerNorm {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.epsilon.to_bits().hash(state);
    }
}

/// Lanes of the running sums.
const LANES: usize = 16;

impl AddLayerNorm {
    /// Normalizes one row into `y`: with AVX2's 8-lane vectors where the CPU has them (x86_64
    /// binaries otherwise target SSE2's 4 lanes), else [`Self::row_on`] as compiled for the
    /// target (NEON on ARM).
    fn row(&self, a: &[f32], b: Option<&[f32]>, gamma: &[f32], beta: &[f32], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.row_avx2(a, b, gamma, beta, y) };
        }
        self.row_on(a, b, gamma, beta, y)
    }

    /// [`Self::row_on`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn row_avx2(
        &self,
        a: &[f32],
        b: Option<&[f32]>,
        gamma: &[f32],
        beta: &[f32],
        y: &mut [f32],
    ) {
        self.row_on(a, b, gamma, beta, y)
    }

    /// The row's normalization: `y` first holds the sum, then the result.
    #[inline(always)]
    fn row_on(&self, a: &[f32], b: Option<&[f32]>, gamma: &[f32], beta: &[f32], y: &mut [f32]) {
        match b {
            Some(b) => {
                for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
                    *y = a + b;
                }
            }
            None => y.copy_from_slice(a),
        }
        let count = y.len() as f32;
        let mean = lane_sum(y, |v| v) / count;
        let variance = lane_sum(y, |v| (v - mean) * (v - mean)) / count;
        let inverse = 1.0 / (variance + self.epsilon).sqrt();
        for ((y, &g), &b) in y.iter_mut().zip(gamma).zip(beta) {
            *y = (*y - mean) * inverse * g + b;
        }
    }
}

/// `Σ f(v)` over `values`, summed in [`LANES`] lanes (which vectorizes), then across them.
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    lanes.iter().sum::<f32>() + tail
}

impl Op for AddLayerNorm {
    fn name(&self) -> StaticName {
        "AddLayerNorm".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("epsilon {:e}", self.epsilon)])
    }

    op_as_typed_op!();
}

impl EvalOp for AddLayerNorm {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (summands, [gamma, beta]) = inputs.split_at(inputs.len() - 2) else {
            bail!("AddLayerNorm reads its summands, γ and β");
        };
        let a = &summands[0];
        let width = *a
            .shape()
            .last()
            .context("AddLayerNorm needs at least one axis")?;
        ensure!(width > 0, "AddLayerNorm needs rows of at least one value");
        let (gamma, beta) = (gamma.try_as_plain_ram()?, beta.try_as_plain_ram()?);
        let (gamma, beta) = (gamma.as_slice::<f32>()?, beta.as_slice::<f32>()?);
        ensure!(
            gamma.len() == width && beta.len() == width,
            "γ and β must have {width} values"
        );
        // SAFETY: every row of `y` is written (the sum) before it is read.
        let mut y = unsafe { Tensor::uninitialized::<f32>(a.shape())? };
        {
            let a = a.try_as_plain_ram()?;
            let a = a.as_slice::<f32>()?;
            let b = match summands.get(1) {
                Some(b) => {
                    ensure!(
                        b.shape() == y.shape(),
                        "AddLayerNorm's summands differ in shape"
                    );
                    Some(b.try_as_plain_ram()?)
                }
                None => None,
            };
            let b = b.as_ref().map(|b| b.as_slice::<f32>()).transpose()?;
            let mut y_view = y.try_as_plain_ram_mut()?;
            let rows = y_view.as_slice_mut::<f32>()?.chunks_exact_mut(width);
            for (index, y) in rows.enumerate() {
                let range = index * width..(index + 1) * width;
                let b = b.map(|b| &b[range.clone()]);
                self.row(&a[range], b, gamma, beta, y);
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for AddLayerNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            (3..=4).contains(&inputs.len()),
            "AddLayerNorm reads one or two summands, γ and β"
        );
        let summand = inputs[0];
        ensure!(
            inputs.iter().all(|i| i.datum_type == DatumType::F32),
            "AddLayerNorm is f32"
        );
        ensure!(summand.rank() > 0, "AddLayerNorm needs at least one axis");
        if inputs.len() == 4 {
            ensure!(
                inputs[1].shape == summand.shape,
                "AddLayerNorm's summands differ in shape"
            );
        }
        Ok(tvec!(DatumType::F32.fact(summand.shape.clone())))
    }

    as_op!();
}

#[cfg(all(test, feature = "workstation"))]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_normalized_then_scaled_and_shifted() {
        let op = AddLayerNorm { epsilon: 1e-12 };
        let (a, b) = ([1.0, 2.0, 3.0, 4.0], [1.0, 0.0, -1.0, 4.0]);
        let mut y = [0f32; 4];
        // s = [2, 2, 2, 8]: mean 3.5, deviations ±1.5 and 4.5, variance 6.75.
        op.row(
            &a,
            Some(&b),
            &[1.0, 1.0, 2.0, 1.0],
            &[0.0, 0.0, 0.0, 1.0],
            &mut y,
        );
        let inverse = 1.0 / 6.75f32.sqrt();
        let expected = [
            -1.5 * inverse,
            -1.5 * inverse,
            -3.0 * inverse,
            4.5 * inverse + 1.0,
        ];
        for (y, e) in y.iter().zip(expected) {
            assert!((y - e).abs() < 1e-6, "{y} vs {e}");
        }
        // A constant row stays finite: its deviation is zero.
        let mut y = [9f32; 40];
        op.row(&[5.0; 40], None, &[1.0; 40], &[0.5; 40], &mut y);
        assert!(y.iter().all(|&v| v == 0.5));
    }

    #[test]
    fn a_hidden_state_row_matches_a_double_precision_layer_norm() {
        let op = AddLayerNorm { epsilon: 1e-12 };
        let width = 384;
        let value = |i: usize, scale: f32| ((i * 7919 % 997) as f32 / 997.0 - 0.5) * scale;
        let a: Vec<f32> = (0..width).map(|i| value(i, 6.0)).collect();
        let b: Vec<f32> = (0..width).map(|i| value(i + 31, 2.0)).collect();
        let gamma: Vec<f32> = (0..width).map(|i| 0.5 + value(i + 7, 1.0)).collect();
        let beta: Vec<f32> = (0..width).map(|i| value(i + 3, 0.2)).collect();
        let mut y = vec![0f32; width];
        op.row(&a, Some(&b), &gamma, &beta, &mut y);
        let s: Vec<f64> = a.iter().zip(&b).map(|(a, b)| (a + b) as f64).collect();
        let mean = s.iter().sum::<f64>() / width as f64;
        let variance = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
        for i in 0..width {
            let expected =
                (s[i] - mean) / (variance + 1e-12).sqrt() * gamma[i] as f64 + beta[i] as f64;
            assert!(
                (y[i] as f64 - expected).abs() < 2e-6,
                "{i}: {} vs {expected}",
                y[i]
            );
        }
    }
}
