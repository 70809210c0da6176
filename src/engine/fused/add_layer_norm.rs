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
//!
//! The embeddings' normalization adds the first `sequence` rows of a table (positions plus
//! token type): `Add(a, Slice(table, 0, sequence))`. Left to tract, each shape's plan folds the
//! slice into a constant of its own (4.7 MB over the 16 plans of a 512-token MiniLM); the fused
//! node reads the rows from the whole table instead, one copy shared by every plan.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::attribute_proto::AttributeType;
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
    let rows_from_table = node.get_attr_opt::<i64>(ROWS_FROM_TABLE)? == Some(1);
    Ok((
        expand(AddLayerNormExpansion {
            epsilon,
            rows_from_table,
        }),
        vec![],
    ))
}

/// The attribute (1) of a fused node whose second summand is the first rows of a table: its
/// inputs are then `a`, the table, the row count, `γ` and `β`.
const ROWS_FROM_TABLE: &str = "rows_from_table";

/// The table and row count when `value` is `Slice(table, [0], ends, [0])` of a rank-2 f32
/// table `channels` wide, read only by the sum; with the slice's index.
fn table_rows<'a>(graph: &Graph<'a>, value: &str, channels: usize) -> Option<(usize, [String; 2])> {
    let (index, slice) = graph.producer_index(value)?;
    if slice.op_type != "Slice" || slice.input.len() != 4 || graph.sole_consumer(value).is_none() {
        return None;
    }
    let (dims, _) = graph.f32_initializer(&slice.input[0])?;
    let zero = |name: &str| graph.i64_initializer(name).is_some_and(|v| v == [0]);
    (dims.len() == 2
        && dims[1] == channels as i64
        && zero(&slice.input[1])
        && zero(&slice.input[3]))
    .then(|| (index, [slice.input[0].clone(), slice.input[2].clone()]))
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
    let mut attribute = vec![AttributeProto {
        name: "epsilon".into(),
        r#type: AttributeType::Float as i32,
        f: epsilon,
        ..AttributeProto::default()
    }];
    let mut nodes = vec![add, norm];
    let mut input = vec![node.input[0].clone(), node.input[1].clone()];
    let from_table = [(1, 0), (0, 1)]
        .into_iter()
        .find_map(|(t, other)| Some((table_rows(graph, &node.input[t], channels)?, other)));
    if let Some(((slice, table_and_ends), other)) = from_table {
        nodes.insert(0, slice);
        input = vec![node.input[other].clone()];
        input.extend(table_and_ends);
        attribute.push(AttributeProto {
            name: ROWS_FROM_TABLE.into(),
            r#type: AttributeType::Int as i32,
            i: 1,
            ..AttributeProto::default()
        });
    }
    input.extend([n.input[1].clone(), n.input[2].clone()]);
    Some(Replacement {
        nodes,
        node: NodeProto {
            name: format!("{}.add_layer_norm", n.name),
            op_type: OP_TYPE.to_string(),
            input,
            output: n.output.clone(),
            attribute,
            ..NodeProto::default()
        },
    })
}

/// The fused node while tract infers types: `a`, `b` f32 (broadcastable to one shape), `γ`,
/// `β` f32 vectors over the last axis → `y` of the sum's shape. With `rows_from_table`, `b` is
/// a table and a row count instead (`a`, table, count, `γ`, `β`), and `y` has `a`'s shape.
#[derive(Debug, Clone, PartialEq)]
struct AddLayerNormExpansion {
    epsilon: f32,
    rows_from_table: bool,
}

impl std::hash::Hash for AddLayerNormExpansion {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.epsilon.to_bits().hash(state);
        self.rows_from_table.hash(state);
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
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        if self.rows_from_table {
            check_input_arity(inputs, 5)?;
            for input in [0, 1, 3, 4] {
                s.equals(&inputs[input].datum_type, DatumType::F32)?;
            }
            s.equals(&inputs[1].rank, 2)?;
            return s.equals(&outputs[0].shape, &inputs[0].shape);
        }
        check_input_arity(inputs, 4)?;
        for input in inputs {
            s.equals(&input.datum_type, DatumType::F32)?;
        }
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
        if self.rows_from_table {
            let op = AddLayerNorm {
                epsilon: self.epsilon,
                rows_from_table: true,
            };
            return model.wire_node(prefix, op, inputs);
        }
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
                rows_from_table: false,
            },
            &wires,
        )
    }
}

/// `LayerNorm(Σ summands) · γ + β` over the last axis; one summand or two of one shape, or
/// (`rows_from_table`) `a` `[.., sequence, width]` plus the first `sequence` rows of a
/// `[rows, width]` table, given as the table and the row count (inputs `a`, table, count, `γ`,
/// `β`; a count of 1 adds the table's first row to every row).
#[derive(Debug, Clone)]
pub(super) struct AddLayerNorm {
    epsilon: f32,
    rows_from_table: bool,
}

/// Operators are compared and hashed (tract merges equal nodes): by ε's bits and the form.
impl PartialEq for AddLayerNorm {
    fn eq(&self, other: &Self) -> bool {
        self.epsilon.to_bits() == other.epsilon.to_bits()
            && self.rows_from_table == other.rows_from_table
    }
}

impl Eq for AddLayerNorm {}

impl std::hash::Hash for AddLayerNorm {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.epsilon.to_bits().hash(state);
        self.rows_from_table.hash(state);
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
        // The second summand, if any, and the period of its rows: row `i` of `a` adds its row
        // `i % period`.
        let (b, period) = if self.rows_from_table {
            let [_, table, count] = summands else {
                bail!("AddLayerNorm reads a, a table, its row count, γ and β");
            };
            (Some(table), table_period(a, table, count, width)?)
        } else {
            let b = summands.get(1);
            if let Some(b) = b {
                ensure!(
                    b.shape() == a.shape(),
                    "AddLayerNorm's summands differ in shape"
                );
            }
            (b, usize::MAX)
        };
        // SAFETY: every row of `y` is written (the sum) before it is read.
        let mut y = unsafe { Tensor::uninitialized::<f32>(a.shape())? };
        {
            let a = a.try_as_plain_ram()?;
            let a = a.as_slice::<f32>()?;
            let b = b.map(|b| b.try_as_plain_ram()).transpose()?;
            let b = b.as_ref().map(|b| b.as_slice::<f32>()).transpose()?;
            let mut y_view = y.try_as_plain_ram_mut()?;
            let rows = y_view.as_slice_mut::<f32>()?.chunks_exact_mut(width);
            for (index, y) in rows.enumerate() {
                let b_row = index % period;
                let b = b.map(|b| &b[b_row * width..(b_row + 1) * width]);
                self.row(&a[index * width..(index + 1) * width], b, gamma, beta, y);
            }
        }
        Ok(tvec!(y.into_tvalue()))
    }
}

/// The period of the table rows `rows_from_table` adds to `a`'s rows: its sequence length when
/// `count` rows are that many, 1 when `count` is 1 (the first row to all); else an error.
fn table_period(a: &TValue, table: &TValue, count: &TValue, width: usize) -> TractResult<usize> {
    let rank = a.rank();
    ensure!(
        rank >= 2,
        "AddLayerNorm needs a sequence axis to add table rows to"
    );
    let sequence = a.shape()[rank - 2];
    let count = count.cast_to_scalar::<i64>()?;
    ensure!(
        table.rank() == 2 && table.shape()[1] == width,
        "AddLayerNorm's table must be {width} wide, not {:?}",
        table.shape()
    );
    ensure!(
        (count == sequence as i64 || count == 1) && count as usize <= table.shape()[0],
        "AddLayerNorm adds {count} table rows to sequences of {sequence} (the table has {})",
        table.shape()[0]
    );
    Ok(count as usize)
}

impl TypedOp for AddLayerNorm {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        if self.rows_from_table {
            ensure!(
                inputs.len() == 5,
                "AddLayerNorm reads a, a table, its row count, γ and β"
            );
            let (a, table) = (inputs[0], inputs[1]);
            ensure!(
                [a, table, inputs[3], inputs[4]]
                    .iter()
                    .all(|i| i.datum_type == DatumType::F32),
                "AddLayerNorm is f32"
            );
            ensure!(
                a.rank() >= 2 && table.rank() == 2,
                "AddLayerNorm adds rows of a [rows, width] table along a sequence axis"
            );
            return Ok(tvec!(DatumType::F32.fact(a.shape.clone())));
        }
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
        let op = AddLayerNorm {
            epsilon: 1e-12,
            rows_from_table: false,
        };
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
    fn table_rows_are_added_by_position_in_the_sequence() {
        let op = AddLayerNorm {
            epsilon: 1e-12,
            rows_from_table: true,
        };
        let width = 4;
        // Two sequences of three positions; a table of five rows.
        let a: Vec<f32> = (0..2 * 3 * width).map(|i| (i * 37 % 11) as f32).collect();
        let table: Vec<f32> = (0..5 * width).map(|i| (i * 13 % 7) as f32 - 3.0).collect();
        let (gamma, beta) = ([1.0, 2.0, 0.5, 1.0], [0.0, 0.1, 0.2, 0.3]);
        let run = |count: i64| {
            let outputs = op.eval(
                &EvalContext::out_of_plan(),
                tvec![
                    tensor1(&a).into_shape(&[2, 3, width])?.into_tvalue(),
                    tensor1(&table).into_shape(&[5, width])?.into_tvalue(),
                    tensor0(count).into_tvalue(),
                    tensor1(&gamma).into_tvalue(),
                    tensor1(&beta).into_tvalue(),
                ],
            )?;
            Ok::<_, TractError>(outputs[0].try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
        };
        for (count, table_row) in [(3, (|r: usize| r % 3) as fn(usize) -> usize), (1, |_| 0)] {
            let y = run(count).expect("the sum's rows normalized");
            for r in 0..6 {
                let t = table_row(r);
                let mut expected = [0f32; 4];
                op.row(
                    &a[r * width..][..width],
                    Some(&table[t * width..][..width]),
                    &gamma,
                    &beta,
                    &mut expected,
                );
                assert_eq!(
                    &y[r * width..][..width],
                    &expected,
                    "row {r}, count {count}"
                );
            }
        }
        // Rows that do not match the sequence, or more than the table holds, are refused.
        let error = run(2).expect_err("2 rows for sequences of 3").to_string();
        assert!(
            error.contains("adds 2 table rows to sequences of 3"),
            "{error}"
        );
        assert!(run(6).is_err());
    }

    #[test]
    fn a_hidden_state_row_matches_a_double_precision_layer_norm() {
        let op = AddLayerNorm {
            epsilon: 1e-12,
            rows_from_table: false,
        };
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
