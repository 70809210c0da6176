//! `y = x·Wᵀ + b` and its gradients, row blocks of `x` in parallel, one BLAS call each.
//!
//! Blocks are a fixed number of rows, not one per thread, so results do not depend on the
//! thread count (BLAS may round an edge block differently from a full one).

use rayon::prelude::*;

use crate::blas::{sgemm, Operand};

/// Rows per parallel BLAS call.
const ROW_BLOCK: usize = 256;

/// Shape of a linear layer applied to `rows` vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    /// Vectors (batch × sequence).
    pub rows: usize,
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
}

/// `y (rows, outputs) = x (rows, inputs) · weight (outputs, inputs)ᵀ + bias (outputs)`.
pub fn forward(shape: LinearShape, x: &[f32], weight: &[f32], bias: &[f32], y: &mut [f32]) {
    let LinearShape {
        rows,
        inputs,
        outputs,
    } = shape;
    assert_eq!(x.len(), rows * inputs, "linear: x");
    assert_eq!(weight.len(), outputs * inputs, "linear: weight");
    assert_eq!(bias.len(), outputs, "linear: bias");
    assert_eq!(y.len(), rows * outputs, "linear: y");
    if outputs == 0 {
        return;
    }
    y.par_chunks_mut(ROW_BLOCK * outputs)
        .zip(x.par_chunks(ROW_BLOCK * inputs.max(1)))
        .for_each(|(y, x)| {
            for row in y.chunks_mut(outputs) {
                row.copy_from_slice(bias);
            }
            let block = y.len() / outputs;
            sgemm(
                block,
                outputs,
                inputs,
                1.0,
                Operand::plain(x, inputs),
                Operand::transposed(weight, inputs),
                1.0,
                y,
                outputs,
            );
        });
}

/// `dx (rows, inputs) = dy (rows, outputs) · weight (outputs, inputs)`.
pub fn backward_input(shape: LinearShape, dy: &[f32], weight: &[f32], dx: &mut [f32]) {
    let LinearShape {
        rows,
        inputs,
        outputs,
    } = shape;
    assert_eq!(dy.len(), rows * outputs, "linear: dy");
    assert_eq!(weight.len(), outputs * inputs, "linear: weight");
    assert_eq!(dx.len(), rows * inputs, "linear: dx");
    if inputs == 0 {
        return;
    }
    dx.par_chunks_mut(ROW_BLOCK * inputs)
        .zip(dy.par_chunks(ROW_BLOCK * outputs.max(1)))
        .for_each(|(dx, dy)| {
            let block = dx.len() / inputs;
            sgemm(
                block,
                inputs,
                outputs,
                1.0,
                Operand::plain(dy, outputs),
                Operand::plain(weight, inputs),
                0.0,
                dx,
                inputs,
            );
        });
}

/// `dweight (outputs, inputs) = dy (rows, outputs)ᵀ · x (rows, inputs)`, blocks of output
/// features in parallel.
pub fn backward_weight(shape: LinearShape, dy: &[f32], x: &[f32], dweight: &mut [f32]) {
    let LinearShape {
        rows,
        inputs,
        outputs,
    } = shape;
    assert_eq!(dy.len(), rows * outputs, "linear: dy");
    assert_eq!(x.len(), rows * inputs, "linear: x");
    assert_eq!(dweight.len(), outputs * inputs, "linear: dweight");
    if inputs == 0 {
        return;
    }
    const FEATURE_BLOCK: usize = 128;
    dweight
        .par_chunks_mut(FEATURE_BLOCK * inputs)
        .enumerate()
        .for_each(|(i, dw)| {
            let first = i * FEATURE_BLOCK;
            let features = dw.len() / inputs;
            sgemm(
                features,
                inputs,
                rows,
                1.0,
                Operand::transposed(&dy[first..], outputs),
                Operand::plain(x, inputs),
                0.0,
                dw,
                inputs,
            );
        });
}

/// `dbias (outputs) = Σ_rows dy (rows, outputs)`.
pub fn backward_bias(shape: LinearShape, dy: &[f32], dbias: &mut [f32]) {
    assert_eq!(dy.len(), shape.rows * shape.outputs, "linear: dy");
    assert_eq!(dbias.len(), shape.outputs, "linear: dbias");
    dbias.fill(0.0);
    for row in dy.chunks(shape.outputs.max(1)) {
        for (sum, v) in dbias.iter_mut().zip(row) {
            *sum += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(shape: LinearShape, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
        let mut y = vec![0f32; shape.rows * shape.outputs];
        for r in 0..shape.rows {
            for o in 0..shape.outputs {
                y[r * shape.outputs + o] = b[o]
                    + (0..shape.inputs)
                        .map(|i| x[r * shape.inputs + i] * w[o * shape.inputs + i])
                        .sum::<f32>();
            }
        }
        y
    }

    #[test]
    fn forward_and_gradients_match_naive_loops_across_row_blocks() {
        let shape = LinearShape {
            rows: 600,
            inputs: 7,
            outputs: 5,
        };
        let x: Vec<f32> = (0..600 * 7).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let w: Vec<f32> = (0..35).map(|i| (i as f32 - 17.0) * 0.1).collect();
        let b: Vec<f32> = (0..5).map(|i| i as f32).collect();
        let mut y = vec![0f32; 600 * 5];
        forward(shape, &x, &w, &b, &mut y);
        for (got, want) in y.iter().zip(naive(shape, &x, &w, &b)) {
            assert!((got - want).abs() < 1e-4);
        }
        let dy: Vec<f32> = (0..600 * 5)
            .map(|i| ((i * 13) % 7) as f32 * 0.5 - 1.5)
            .collect();
        let mut dx = vec![0f32; 600 * 7];
        backward_input(shape, &dy, &w, &mut dx);
        for r in [0, 255, 256, 599] {
            for i in 0..7 {
                let want: f32 = (0..5).map(|o| dy[r * 5 + o] * w[o * 7 + i]).sum();
                assert!((dx[r * 7 + i] - want).abs() < 1e-4);
            }
        }
        let mut dw = vec![0f32; 35];
        backward_weight(shape, &dy, &x, &mut dw);
        let mut db = vec![0f32; 5];
        backward_bias(shape, &dy, &mut db);
        for o in 0..5 {
            for i in 0..7 {
                let want: f32 = (0..600).map(|r| dy[r * 5 + o] * x[r * 7 + i]).sum();
                assert!((dw[o * 7 + i] - want).abs() < 1e-2 * want.abs().max(1.0));
            }
            let want: f32 = (0..600).map(|r| dy[r * 5 + o]).sum();
            assert!((db[o] - want).abs() < 1e-3);
        }
    }
}
