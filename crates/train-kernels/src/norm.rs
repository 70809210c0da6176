//! LayerNorm over the last dimension and its gradients, rows in parallel.

use rayon::prelude::*;

use crate::dropout::DropoutMask;
use crate::math::{dot, sum};
use crate::simd::vectorized;

/// Rows per parallel task; fixed, so sums of parameter gradients do not depend on the thread
/// count.
const ROW_BLOCK: usize = 64;

#[inline(always)]
/// Mean and `1/sqrt(var + eps)` of one row (two passes, as PyTorch does in f32).
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let mut partial = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for x in chunks {
        for lane in 0..8 {
            partial[lane] += (x[lane] - mean) * (x[lane] - mean);
        }
    }
    let var = (partial.iter().sum::<f32>() + tail) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `Σ a[i] · b[i] · c[i]` in 8 partial sums.
#[inline(always)]
fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut partial = [0f32; 8];
    let (ac, bc, cc) = (a.chunks_exact(8), b.chunks_exact(8), c.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .zip(cc.remainder())
        .map(|((a, b), c)| a * b * c)
        .sum();
    for ((a, b), c) in ac.zip(bc).zip(cc) {
        for lane in 0..8 {
            partial[lane] += a[lane] * b[lane] * c[lane];
        }
    }
    partial.iter().sum::<f32>() + tail
}

/// `y = (x - mean) / sqrt(var + eps) · gamma + beta` for each row of `width` elements.
pub fn forward(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32]) {
    let width = gamma.len();
    assert!(
        width > 0 && beta.len() == width,
        "layer norm: gamma and beta"
    );
    assert!(
        x.len() == y.len() && x.len().is_multiple_of(width),
        "layer norm: x and y"
    );
    y.par_chunks_mut(ROW_BLOCK * width)
        .zip(x.par_chunks(ROW_BLOCK * width))
        .for_each(|(y, x)| {
            vectorized(|| {
                for (y, x) in y.chunks_mut(width).zip(x.chunks(width)) {
                    let (mean, rstd) = moments(x, eps);
                    for (((y, x), g), b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                        *y = (x - mean) * rstd * g + b;
                    }
                }
            })
        });
}

/// `x = dropout(a) + b`, the residual connection in front of BERT's LayerNorms (element index
/// of the mask = flat index in `a`).
pub fn residual(a: &[f32], b: &[f32], dropout: Option<DropoutMask>, x: &mut [f32]) {
    assert!(a.len() == b.len() && a.len() == x.len(), "residual: shapes");
    const CHUNK: usize = 1 << 14;
    x.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK))
        .zip(b.par_chunks(CHUNK))
        .enumerate()
        .for_each(|(i, ((x, a), b))| {
            x.copy_from_slice(a);
            if let Some(mask) = dropout {
                mask.apply_in_place_at(i * CHUNK, x);
            }
            x.iter_mut().zip(b).for_each(|(x, b)| *x += b);
        });
}

/// Which gradients to compute besides the input's.
pub struct NormGradients<'a> {
    /// `∂L/∂x`, same shape as `x`.
    pub x: Option<&'a mut [f32]>,
    /// `∂L/∂gamma` (`width`).
    pub gamma: Option<&'a mut [f32]>,
    /// `∂L/∂beta` (`width`).
    pub beta: Option<&'a mut [f32]>,
}

/// Gradients of [`forward`] for the upstream gradient `dy`.
pub fn backward(x: &[f32], gamma: &[f32], eps: f32, dy: &[f32], grads: NormGradients) {
    let width = gamma.len();
    assert!(
        width > 0 && x.len() == dy.len() && x.len().is_multiple_of(width),
        "layer norm: shapes"
    );
    if let Some(dx) = grads.x {
        assert_eq!(dx.len(), x.len(), "layer norm: dx");
        dx.par_chunks_mut(ROW_BLOCK * width)
            .zip(x.par_chunks(ROW_BLOCK * width))
            .zip(dy.par_chunks(ROW_BLOCK * width))
            .for_each(|((dx, x), dy)| {
                vectorized(|| {
                    for ((dx, x), dy) in dx
                        .chunks_mut(width)
                        .zip(x.chunks(width))
                        .zip(dy.chunks(width))
                    {
                        let (mean, rstd) = moments(x, eps);
                        let n = width as f32;
                        // Σ dy·γ and Σ dy·γ·x̂ = rstd · (Σ dy·γ·x − mean · Σ dy·γ).
                        let sum_g = dot(dy, gamma);
                        let sum_gx = rstd * (dot3(dy, gamma, x) - mean * sum_g);
                        let (mean_g, mean_gx) = (sum_g / n, sum_gx / n);
                        for (((dx, x), dy), g) in dx.iter_mut().zip(x).zip(dy).zip(gamma) {
                            let xhat = (x - mean) * rstd;
                            *dx = rstd * (dy * g - mean_g - xhat * mean_gx);
                        }
                    }
                })
            });
    }
    if grads.gamma.is_none() && grads.beta.is_none() {
        return;
    }
    // Per-block partial sums, added in block order.
    let partials: Vec<(Vec<f32>, Vec<f32>)> = x
        .par_chunks(ROW_BLOCK * width)
        .zip(dy.par_chunks(ROW_BLOCK * width))
        .map(|(x, dy)| {
            let (mut dg, mut db) = (vec![0f32; width], vec![0f32; width]);
            for (x, dy) in x.chunks(width).zip(dy.chunks(width)) {
                let (mean, rstd) = moments(x, eps);
                for (((dg, db), x), dy) in dg.iter_mut().zip(db.iter_mut()).zip(x).zip(dy) {
                    *dg += dy * (x - mean) * rstd;
                    *db += dy;
                }
            }
            (dg, db)
        })
        .collect();
    if let Some(dgamma) = grads.gamma {
        dgamma.fill(0.0);
        for (dg, _) in &partials {
            dgamma.iter_mut().zip(dg).for_each(|(s, v)| *s += v);
        }
    }
    if let Some(dbeta) = grads.beta {
        dbeta.fill(0.0);
        for (_, db) in &partials {
            dbeta.iter_mut().zip(db).for_each(|(s, v)| *s += v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loss `Σ y · w` for fixed weights `w`: its gradient in `y` is `w`.
    fn loss(x: &[f32], gamma: &[f32], beta: &[f32], w: &[f32]) -> f64 {
        let mut y = vec![0f32; x.len()];
        forward(x, gamma, beta, 1e-5, &mut y);
        y.iter()
            .zip(w)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    }

    #[test]
    fn gradients_match_finite_differences() {
        let width = 6;
        let x: Vec<f32> = (0..3 * width)
            .map(|i| ((i * 7) % 5) as f32 * 0.7 - 1.0)
            .collect();
        let gamma: Vec<f32> = (0..width).map(|i| 0.5 + i as f32 * 0.1).collect();
        let beta: Vec<f32> = (0..width).map(|i| i as f32 * -0.2).collect();
        let w: Vec<f32> = (0..3 * width).map(|i| ((i * 5) % 7) as f32 - 3.0).collect();
        let (mut dx, mut dg, mut db) = (vec![0f32; x.len()], vec![0f32; width], vec![0f32; width]);
        backward(
            &x,
            &gamma,
            1e-5,
            &w,
            NormGradients {
                x: Some(&mut dx),
                gamma: Some(&mut dg),
                beta: Some(&mut db),
            },
        );
        let h = 1e-2f32;
        let numeric = |f: &dyn Fn(f32) -> f64| (f(h) - f(-h)) / (2.0 * h as f64);
        for i in 0..x.len() {
            let d = numeric(&|e| {
                let mut x2 = x.clone();
                x2[i] += e;
                loss(&x2, &gamma, &beta, &w)
            });
            assert!(
                (dx[i] as f64 - d).abs() < 2e-2 * d.abs().max(1.0),
                "dx[{i}] {} vs {d}",
                dx[i]
            );
        }
        for i in 0..width {
            let d = numeric(&|e| {
                let mut g2 = gamma.clone();
                g2[i] += e;
                loss(&x, &g2, &beta, &w)
            });
            assert!(
                (dg[i] as f64 - d).abs() < 2e-2 * d.abs().max(1.0),
                "dgamma[{i}]"
            );
            let d = numeric(&|e| {
                let mut b2 = beta.clone();
                b2[i] += e;
                loss(&x, &gamma, &b2, &w)
            });
            assert!(
                (db[i] as f64 - d).abs() < 2e-2 * d.abs().max(1.0),
                "dbeta[{i}]"
            );
        }
    }
}
