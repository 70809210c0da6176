//! GELU with the exact (erf) form, as BERT's `hidden_act = "gelu"`, and its derivative.

use rayon::prelude::*;

use crate::math::{erf, exp};
use crate::simd::vectorized;

const CHUNK: usize = 1 << 14;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1 / sqrt(2π)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `y = x · Φ(x) = 0.5 · x · (1 + erf(x / √2))`.
pub fn gelu_forward(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "gelu: x and y");
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| {
            vectorized(|| {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = 0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2));
                }
            })
        });
}

/// `dx = dy · (Φ(x) + x · φ(x))`.
pub fn gelu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert!(x.len() == dy.len() && x.len() == dx.len(), "gelu: shapes");
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .zip(dy.par_chunks(CHUNK))
        .for_each(|((dx, x), dy)| {
            vectorized(|| {
                for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                    let cdf = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2));
                    let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * x * x);
                    *dx = dy * (cdf + x * pdf);
                }
            })
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_exact_form_and_its_derivative() {
        let x: Vec<f32> = (-800..=800).map(|i| i as f32 * 0.01).collect();
        let mut y = vec![0f32; x.len()];
        gelu_forward(&x, &mut y);
        let exact = |x: f64| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
        for (&x, &y) in x.iter().zip(&y) {
            assert!((y as f64 - exact(x as f64)).abs() < 2e-6, "gelu({x})");
        }
        let ones = vec![1f32; x.len()];
        let mut dx = vec![0f32; x.len()];
        gelu_backward(&x, &ones, &mut dx);
        for (&x, &d) in x.iter().zip(&dx) {
            let h = 1e-4;
            let numeric = (exact(x as f64 + h) - exact(x as f64 - h)) / (2.0 * h);
            assert!(
                (d as f64 - numeric).abs() < 1e-5,
                "gelu'({x}) {d} vs {numeric}"
            );
        }
    }
}
