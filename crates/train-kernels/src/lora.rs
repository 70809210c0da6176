//! A frozen linear layer with a LoRA update, as one op:
//! `y = x·Wᵀ + b + s · (dropout(x)·Aᵀ)·Bᵀ` (PEFT's `lora.Linear.forward`), and the gradients
//! of `x`, `A` and `B`. Row blocks in parallel; the dropped input and the rank-`r`
//! projection are recomputed in the backward pass rather than kept.

use rayon::prelude::*;

use crate::blas::{sgemm, Operand};
use crate::dropout::DropoutMask;
use crate::linear::LinearShape;

/// Rows per parallel block (fixed: results do not depend on the thread count).
const ROW_BLOCK: usize = 256;

/// The frozen layer and its adapter.
#[derive(Clone, Copy)]
pub struct LoraLayer<'a> {
    /// `(outputs, inputs)`.
    pub weight: &'a [f32],
    /// `(outputs)`.
    pub bias: &'a [f32],
    /// `(rank, inputs)`.
    pub a: &'a [f32],
    /// `(outputs, rank)`.
    pub b: &'a [f32],
    /// `alpha / rank`.
    pub scale: f32,
    /// Dropout on the adapter's input (element index = flat index in `x`).
    pub dropout: Option<DropoutMask>,
}

impl LoraLayer<'_> {
    fn check(&self, shape: LinearShape) -> usize {
        let rank = self.a.len() / shape.inputs.max(1);
        assert_eq!(
            self.weight.len(),
            shape.outputs * shape.inputs,
            "lora: weight"
        );
        assert_eq!(self.bias.len(), shape.outputs, "lora: bias");
        assert_eq!(self.a.len(), rank * shape.inputs, "lora: A");
        assert_eq!(self.b.len(), shape.outputs * rank, "lora: B");
        rank
    }

    /// `dropout(x_block)` for the block starting at element `start` of `x`.
    fn dropped(&self, start: usize, x: &[f32]) -> Vec<f32> {
        match self.dropout {
            Some(mask) => {
                let mut out = x.to_vec();
                mask.apply_in_place_at(start, &mut out);
                out
            }
            None => x.to_vec(),
        }
    }

    /// `u = dropped · Aᵀ` for a block of `rows`.
    fn project(&self, shape: LinearShape, rank: usize, rows: usize, dropped: &[f32]) -> Vec<f32> {
        let mut u = vec![0f32; rows * rank];
        sgemm(
            rows,
            rank,
            shape.inputs,
            1.0,
            Operand::plain(dropped, shape.inputs),
            Operand::transposed(self.a, shape.inputs),
            0.0,
            &mut u,
            rank,
        );
        u
    }
}

/// `y (rows, outputs)` from `x (rows, inputs)`.
pub fn forward(shape: LinearShape, layer: LoraLayer, x: &[f32], y: &mut [f32]) {
    let rank = layer.check(shape);
    let LinearShape {
        rows,
        inputs,
        outputs,
    } = shape;
    assert_eq!(x.len(), rows * inputs, "lora: x");
    assert_eq!(y.len(), rows * outputs, "lora: y");
    if outputs == 0 || inputs == 0 {
        return;
    }
    y.par_chunks_mut(ROW_BLOCK * outputs)
        .zip(x.par_chunks(ROW_BLOCK * inputs))
        .enumerate()
        .for_each(|(i, (y, x))| {
            let block = y.len() / outputs;
            for row in y.chunks_mut(outputs) {
                row.copy_from_slice(layer.bias);
            }
            sgemm(
                block,
                outputs,
                inputs,
                1.0,
                Operand::plain(x, inputs),
                Operand::transposed(layer.weight, inputs),
                1.0,
                y,
                outputs,
            );
            let u = layer.project(
                shape,
                rank,
                block,
                &layer.dropped(i * ROW_BLOCK * inputs, x),
            );
            sgemm(
                block,
                outputs,
                rank,
                layer.scale,
                Operand::plain(&u, rank),
                Operand::transposed(layer.b, rank),
                1.0,
                y,
                outputs,
            );
        });
}

/// Gradients to compute, and where.
pub struct LoraGradients<'a> {
    /// `∂L/∂x (rows, inputs)`.
    pub x: Option<&'a mut [f32]>,
    /// `∂L/∂A (rank, inputs)`.
    pub a: Option<&'a mut [f32]>,
    /// `∂L/∂B (outputs, rank)`.
    pub b: Option<&'a mut [f32]>,
}

/// Gradients of [`forward`] for the upstream gradient `dy (rows, outputs)`.
pub fn backward(shape: LinearShape, layer: LoraLayer, x: &[f32], dy: &[f32], grads: LoraGradients) {
    let rank = layer.check(shape);
    let LinearShape {
        rows,
        inputs,
        outputs,
    } = shape;
    assert_eq!(x.len(), rows * inputs, "lora: x");
    assert_eq!(dy.len(), rows * outputs, "lora: dy");
    if outputs == 0 || inputs == 0 || rows == 0 {
        return;
    }
    let blocks = rows.div_ceil(ROW_BLOCK);
    let mut dx_blocks: Vec<Option<&mut [f32]>> = match grads.x {
        Some(dx) => {
            assert_eq!(dx.len(), rows * inputs, "lora: dx");
            dx.chunks_mut(ROW_BLOCK * inputs).map(Some).collect()
        }
        None => (0..blocks).map(|_| None).collect(),
    };
    let want_params = grads.a.is_some() || grads.b.is_some();
    // Per block: dx, and the block's partial dA (rank × inputs) and dB (outputs × rank).
    let partials: Vec<Option<(Vec<f32>, Vec<f32>)>> = dx_blocks
        .par_iter_mut()
        .enumerate()
        .map(|(i, dx)| {
            let first = i * ROW_BLOCK;
            let block = ROW_BLOCK.min(rows - first);
            let x = &x[first * inputs..(first + block) * inputs];
            let dy = &dy[first * outputs..(first + block) * outputs];
            // g = dy·B (block × rank)
            let mut g = vec![0f32; block * rank];
            sgemm(
                block,
                rank,
                outputs,
                1.0,
                Operand::plain(dy, outputs),
                Operand::plain(layer.b, rank),
                0.0,
                &mut g,
                rank,
            );
            if let Some(dx) = dx.as_deref_mut() {
                sgemm(
                    block,
                    inputs,
                    outputs,
                    1.0,
                    Operand::plain(dy, outputs),
                    Operand::plain(layer.weight, inputs),
                    0.0,
                    dx,
                    inputs,
                );
                let mut t = vec![0f32; block * inputs];
                sgemm(
                    block,
                    inputs,
                    rank,
                    1.0,
                    Operand::plain(&g, rank),
                    Operand::plain(layer.a, inputs),
                    0.0,
                    &mut t,
                    inputs,
                );
                if let Some(mask) = layer.dropout {
                    mask.apply_in_place_at(first * inputs, &mut t);
                }
                dx.iter_mut()
                    .zip(&t)
                    .for_each(|(d, t)| *d += layer.scale * t);
            }
            if !want_params {
                return None;
            }
            let dropped = layer.dropped(first * inputs, x);
            let u = layer.project(shape, rank, block, &dropped);
            let (mut da, mut db) = (vec![0f32; rank * inputs], vec![0f32; outputs * rank]);
            sgemm(
                rank,
                inputs,
                block,
                layer.scale,
                Operand::transposed(&g, rank),
                Operand::plain(&dropped, inputs),
                0.0,
                &mut da,
                inputs,
            );
            sgemm(
                outputs,
                rank,
                block,
                layer.scale,
                Operand::transposed(dy, outputs),
                Operand::plain(&u, rank),
                0.0,
                &mut db,
                rank,
            );
            Some((da, db))
        })
        .collect();
    if let Some(da) = grads.a {
        assert_eq!(da.len(), rank * inputs, "lora: dA");
        sum_blocks(da, partials.iter().flatten().map(|p| &p.0[..]));
    }
    if let Some(db) = grads.b {
        assert_eq!(db.len(), outputs * rank, "lora: dB");
        sum_blocks(db, partials.iter().flatten().map(|p| &p.1[..]));
    }
}

/// `target = Σ blocks`, added in block order (the same bits whatever the thread count).
fn sum_blocks<'a>(target: &mut [f32], blocks: impl Iterator<Item = &'a [f32]>) {
    target.fill(0.0);
    for block in blocks {
        target.iter_mut().zip(block).for_each(|(t, v)| *t += v);
    }
}
