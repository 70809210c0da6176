//! The attention's arithmetic in x86_64 vector registers: AVX-512 (16 lanes) or AVX2 with FMA
//! (8 lanes) where the CPU has them, one lane otherwise.
//!
//! For each head: its keys gathered transposed (`head_dim × keys`) and its values gathered
//! (`keys × head_dim`), each row padded with zeros to whole vectors; then [`ROWS`] query rows
//! at a time: their scores against every key in blocks of two vectors of keys (eight
//! accumulators, each key load serving four rows), the mask added, the softmax (the engine's
//! `softmax_rows`), and their context in blocks of two vectors of value columns.

use std::arch::x86_64::*;

use super::{HeadColumns, Operands};
use crate::engine::softmax_rows::rows_on as softmax_rows;

/// Query rows computed together.
const ROWS: usize = 4;

/// Every head of one batch row into `y` (`rows × heads·head_dim`); head `h`'s columns start at
/// `first`'s plus `h · head_dim`.
pub(super) fn heads(x: Operands, heads: usize, head_dim: usize, first: HeadColumns, y: &mut [f32]) {
    use std::arch::is_x86_feature_detected as has;
    if has!("avx512f") && has!("fma") {
        // SAFETY: the CPU supports AVX-512F and FMA, checked just above.
        unsafe { heads_avx512(x, heads, head_dim, first, y) }
    } else if has!("avx2") && has!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        unsafe { heads_avx2(x, heads, head_dim, first, y) }
    } else {
        heads_on::<f32>(x, heads, head_dim, first, y)
    }
}

#[target_feature(enable = "avx512f,fma")]
unsafe fn heads_avx512(x: Operands, heads: usize, d: usize, first: HeadColumns, y: &mut [f32]) {
    heads_on::<Zmm>(x, heads, d, first, y)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn heads_avx2(x: Operands, heads: usize, d: usize, first: HeadColumns, y: &mut [f32]) {
    heads_on::<Ymm>(x, heads, d, first, y)
}

/// A vector register of `LANES` f32 values. Its operations are `unsafe` because they need the
/// CPU features their type stands for; callers have checked them.
trait Vector: Copy {
    const LANES: usize;
    unsafe fn zero() -> Self;
    unsafe fn splat(value: f32) -> Self;
    /// `LANES` values from `from`.
    unsafe fn load(from: &[f32]) -> Self;
    /// Into the first `LANES` values of `to`.
    unsafe fn store(self, to: &mut [f32]);
    unsafe fn add(self, other: Self) -> Self;
    /// `self · b + c`, one rounding.
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
}

#[derive(Clone, Copy)]
struct Zmm(__m512);

impl Vector for Zmm {
    const LANES: usize = 16;
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn zero() -> Self {
        Zmm(_mm512_setzero_ps())
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn splat(value: f32) -> Self {
        Zmm(_mm512_set1_ps(value))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(from: &[f32]) -> Self {
        debug_assert!(from.len() >= Self::LANES);
        Zmm(_mm512_loadu_ps(from.as_ptr()))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store(self, to: &mut [f32]) {
        debug_assert!(to.len() >= Self::LANES);
        _mm512_storeu_ps(to.as_mut_ptr(), self.0)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn add(self, other: Self) -> Self {
        Zmm(_mm512_add_ps(self.0, other.0))
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        Zmm(_mm512_fmadd_ps(self.0, b.0, c.0))
    }
}

#[derive(Clone, Copy)]
struct Ymm(__m256);

impl Vector for Ymm {
    const LANES: usize = 8;
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn zero() -> Self {
        Ymm(_mm256_setzero_ps())
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn splat(value: f32) -> Self {
        Ymm(_mm256_set1_ps(value))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(from: &[f32]) -> Self {
        debug_assert!(from.len() >= Self::LANES);
        Ymm(_mm256_loadu_ps(from.as_ptr()))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store(self, to: &mut [f32]) {
        debug_assert!(to.len() >= Self::LANES);
        _mm256_storeu_ps(to.as_mut_ptr(), self.0)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn add(self, other: Self) -> Self {
        Ymm(_mm256_add_ps(self.0, other.0))
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        Ymm(_mm256_fmadd_ps(self.0, b.0, c.0))
    }
}

/// One lane, for CPUs without AVX2 and FMA (multiply, then add).
impl Vector for f32 {
    const LANES: usize = 1;
    unsafe fn zero() -> Self {
        0.0
    }
    unsafe fn splat(value: f32) -> Self {
        value
    }
    unsafe fn load(from: &[f32]) -> Self {
        from[0]
    }
    unsafe fn store(self, to: &mut [f32]) {
        to[0] = self;
    }
    unsafe fn add(self, other: Self) -> Self {
        self + other
    }
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        self * b + c
    }
}

/// A mask bias at or below this is padding: `exp` of it is zero in f32 for any score.
const PADDING: f32 = -5_000.0;

/// [`heads`] on vectors `V`, which the CPU must support.
///
/// Trailing padded keys (a text shorter than its plan's length) are skipped: their weight in
/// the softmax is exactly zero. Where the queries are the keys' own rows, their padded rows
/// are skipped too and left at zero (rows only ever reach other rows through attention, where
/// they are masked).
#[inline(always)]
fn heads_on<V: Vector>(x: Operands, heads: usize, d: usize, first: HeadColumns, y: &mut [f32]) {
    let all_keys = x.mask.len();
    let keys = (x.mask.iter().rposition(|&m| m > PADDING)).map_or(all_keys, |last| last + 1);
    let all_rows = x.queries.len() / x.query_width;
    let rows = if all_rows == all_keys { keys } else { all_rows };
    let key_pad = keys.next_multiple_of(V::LANES);
    let value_pad = d.next_multiple_of(V::LANES);
    let y_width = heads * d;
    let mut keys_t = vec![0f32; d * key_pad];
    let mut values = vec![0f32; keys * value_pad];
    let mut scores = vec![0f32; ROWS * key_pad];
    let mut mask = vec![0f32; key_pad];
    mask[..keys].copy_from_slice(&x.mask[..keys]);
    let mut context = vec![0f32; ROWS * value_pad];
    let mut query_t = vec![0f32; d * ROWS];
    for head in 0..heads {
        let (k, v) = (first.key + head * d, first.value + head * d);
        for (j, row) in x
            .keys_values
            .chunks_exact(x.key_width)
            .take(keys)
            .enumerate()
        {
            for (c, &value) in row[k..k + d].iter().enumerate() {
                keys_t[c * key_pad + j] = value;
            }
            values[j * value_pad..j * value_pad + d].copy_from_slice(&row[v..v + d]);
        }
        let q = first.query + head * d;
        for first_row in (0..rows).step_by(ROWS) {
            // The block's query rows interleaved (`query_t[c][r]`), zeros past the last row.
            for r in 0..ROWS {
                let row = (first_row + r < rows).then(|| first_row + r);
                for c in 0..d {
                    query_t[c * ROWS + r] =
                        row.map_or(0.0, |i| x.queries[i * x.query_width + q + c]);
                }
            }
            // SAFETY (both): `V`'s features were checked by `heads`.
            unsafe { scores_block::<V>(&query_t, &keys_t, &mask, &mut scores) };
            for row in scores.chunks_exact_mut(key_pad) {
                softmax_rows(&mut row[..keys], keys);
            }
            unsafe { context_block::<V>(&scores, keys, &values, &mut context) };
            for r in 0..ROWS.min(rows - first_row) {
                let at = (first_row + r) * y_width + head * d;
                y[at..at + d].copy_from_slice(&context[r * value_pad..][..d]);
            }
        }
    }
}

/// `scores[r][j] = Σ_c query_t[c][r] · keys_t[c][j] + mask[j]` for every padded key `j`.
#[inline(always)]
unsafe fn scores_block<V: Vector>(
    query_t: &[f32],
    keys_t: &[f32],
    mask: &[f32],
    scores: &mut [f32],
) {
    let key_pad = mask.len();
    assert!(key_pad.is_multiple_of(V::LANES) && scores.len() == ROWS * key_pad);
    assert!(keys_t.len() * ROWS == query_t.len() * key_pad);
    let mut column = 0;
    while column + 2 * V::LANES <= key_pad {
        score_columns::<V, 2>(query_t, keys_t, column, mask, scores);
        column += 2 * V::LANES;
    }
    while column < key_pad {
        score_columns::<V, 1>(query_t, keys_t, column, mask, scores);
        column += V::LANES;
    }
}

#[inline(always)]
unsafe fn score_columns<V: Vector, const N: usize>(
    query_t: &[f32],
    keys_t: &[f32],
    column: usize,
    mask: &[f32],
    scores: &mut [f32],
) {
    let key_pad = mask.len();
    let mut sums = [[V::zero(); N]; ROWS];
    for (key_row, query) in keys_t.chunks_exact(key_pad).zip(query_t.chunks_exact(ROWS)) {
        let mut k = [V::zero(); N];
        for (n, k) in k.iter_mut().enumerate() {
            *k = V::load(&key_row[column + n * V::LANES..]);
        }
        for (sums, &q) in sums.iter_mut().zip(query) {
            let q = V::splat(q);
            for (sum, &k) in sums.iter_mut().zip(&k) {
                *sum = q.mul_add(k, *sum);
            }
        }
    }
    for (sums, row) in sums.iter().zip(scores.chunks_exact_mut(key_pad)) {
        for (n, sum) in sums.iter().enumerate() {
            let at = column + n * V::LANES;
            sum.add(V::load(&mask[at..])).store(&mut row[at..]);
        }
    }
}

/// `context[r][c] = Σ_{j < keys} probabilities[r][j] · values[j][c]` for every padded value
/// column `c`.
#[inline(always)]
unsafe fn context_block<V: Vector>(
    probabilities: &[f32],
    keys: usize,
    values: &[f32],
    context: &mut [f32],
) {
    let value_pad = context.len() / ROWS;
    assert!(value_pad.is_multiple_of(V::LANES) && values.len() == keys * value_pad);
    assert!(probabilities.len().is_multiple_of(ROWS) && keys <= probabilities.len() / ROWS);
    let mut column = 0;
    while column + 2 * V::LANES <= value_pad {
        context_columns::<V, 2>(probabilities, keys, values, column, context);
        column += 2 * V::LANES;
    }
    while column < value_pad {
        context_columns::<V, 1>(probabilities, keys, values, column, context);
        column += V::LANES;
    }
}

#[inline(always)]
unsafe fn context_columns<V: Vector, const N: usize>(
    probabilities: &[f32],
    keys: usize,
    values: &[f32],
    column: usize,
    context: &mut [f32],
) {
    let (key_pad, value_pad) = (probabilities.len() / ROWS, context.len() / ROWS);
    let mut sums = [[V::zero(); N]; ROWS];
    for (j, value_row) in values.chunks_exact(value_pad).take(keys).enumerate() {
        let mut v = [V::zero(); N];
        for (n, v) in v.iter_mut().enumerate() {
            *v = V::load(&value_row[column + n * V::LANES..]);
        }
        for (r, sums) in sums.iter_mut().enumerate() {
            let p = V::splat(probabilities[r * key_pad + j]);
            for (sum, &v) in sums.iter_mut().zip(&v) {
                *sum = p.mul_add(v, *sum);
            }
        }
    }
    for (sums, row) in sums.iter().zip(context.chunks_exact_mut(value_pad)) {
        for (n, sum) in sums.iter().enumerate() {
            sum.store(&mut row[column + n * V::LANES..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 and one-lane paths give the AVX-512 path's results (the dispatching path is
    /// checked against the definition in `attention`'s tests), on heads of 26 values with
    /// padded keys and a tail of query rows.
    #[test]
    fn every_vector_width_agrees() {
        let (heads, d, keys) = (3, 26, 45);
        let width = heads * d;
        let projection: Vec<f32> = (0..keys * 3 * width)
            .map(|i| ((i * 7919 % 997) as f32 / 997.0 - 0.5) * 3.0)
            .collect();
        let mut mask = vec![0f32; keys];
        mask[40..].fill(-10_000.0);
        let x = Operands {
            queries: &projection,
            query_width: 3 * width,
            keys_values: &projection,
            key_width: 3 * width,
            mask: &mask,
        };
        let first = HeadColumns {
            query: 0,
            key: width,
            value: 2 * width,
        };
        let run = |path: fn(Operands, usize, usize, HeadColumns, &mut [f32])| {
            let mut y = vec![0f32; keys * width];
            path(x, heads, d, first, &mut y);
            y
        };
        let one_lane = run(heads_on::<f32>);
        let mut paths = vec![];
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, checked just above.
            paths.push(run(|x, h, d, f, y| unsafe { heads_avx2(x, h, d, f, y) }));
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX-512F and FMA, checked just above.
            paths.push(run(|x, h, d, f, y| unsafe { heads_avx512(x, h, d, f, y) }));
        }
        assert!(!paths.is_empty(), "this CPU has neither AVX2 nor AVX-512");
        for y in paths {
            for (a, b) in y.iter().zip(&one_lane) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
        assert!(one_lane[40 * width..].iter().all(|&v| v == 0.0));
    }
}
