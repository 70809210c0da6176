//! Branch-free `exp` and `erf` for f32 that the compiler vectorises (libm's are scalar calls).

/// `e^x`, relative error below 2e-7 on [-87, 88]; inputs are clamped to that range, so very
/// negative inputs give ~1e-38 rather than 0 (callers that need exact zeros mask them).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in f32 and the rest (Cody–Waite reduction).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to the nearest integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Cephes expf's minimax polynomial on [-ln2/2, ln2/2].
    let mut p = 1.987_569_2e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n from the integer in `shifted`'s low mantissa bits (ROUND's bits are 0x4B40_0000),
    // with integer ops only, so the loop around it vectorises.
    let scale = f32::from_bits(shifted.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    e * scale
}

/// The error function, absolute error below 5e-7 (a rational minimax fit on [-4, 4], where
/// |erf| reaches 1 in f32).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// Lanes of the reductions below: independent partial results the compiler keeps in one
/// vector register (a float reduction in one accumulator cannot be vectorised).
const LANES: usize = 8;

/// `Σ a[i] · b[i]`, summed in [`LANES`] interleaved partial sums.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut partial = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            partial[lane] += x[lane] * y[lane];
        }
    }
    partial.iter().sum::<f32>() + tail
}

/// `Σ a[i]`, in [`LANES`] partial sums.
#[inline(always)]
pub(crate) fn sum(a: &[f32]) -> f32 {
    let mut partial = [0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for x in chunks {
        for lane in 0..LANES {
            partial[lane] += x[lane];
        }
    }
    partial.iter().sum::<f32>() + tail
}

/// The largest `a[i]` whose `keep[i]` is not 0 (`f32::MIN` if none), in [`LANES`] partial
/// maxima.
#[inline(always)]
pub(crate) fn masked_max(a: &[f32], keep: &[f32]) -> f32 {
    let mut partial = [f32::MIN; LANES];
    let (a_chunks, k_chunks) = (a.chunks_exact(LANES), keep.chunks_exact(LANES));
    let tail = a_chunks
        .remainder()
        .iter()
        .zip(k_chunks.remainder())
        .fold(f32::MIN, |m, (&v, &k)| {
            m.max(if k != 0.0 { v } else { f32::MIN })
        });
    for (x, k) in a_chunks.zip(k_chunks) {
        for lane in 0..LANES {
            let v = if k[lane] != 0.0 { x[lane] } else { f32::MIN };
            partial[lane] = partial[lane].max(v);
        }
    }
    partial.iter().fold(tail, |m, &v| m.max(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_match_sequential_loops() {
        let a: Vec<f32> = (0..203).map(|i| ((i * 37) % 19) as f32 - 9.0).collect();
        let keep: Vec<f32> = (0..203).map(|i| (i % 3 != 0) as u8 as f32).collect();
        assert_eq!(sum(&a), a.iter().sum::<f32>());
        assert_eq!(dot(&a, &a), a.iter().map(|v| v * v).sum::<f32>());
        let want = a
            .iter()
            .zip(&keep)
            .filter(|(_, &k)| k != 0.0)
            .map(|(&v, _)| v)
            .fold(f32::MIN, f32::max);
        assert_eq!(masked_max(&a, &keep), want);
        assert_eq!(masked_max(&a[..5], &[0.0; 5]), f32::MIN);
    }

    #[test]
    fn exp_is_within_2e_7_relative() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let want = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - want) / want).abs());
        }
        assert!(worst < 2e-7, "worst relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn erf_is_within_5e_7_absolute() {
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((erf(x) as f64 - libm::erf(x as f64)).abs());
        }
        assert!(worst < 5e-7, "worst absolute error {worst:e}");
        assert_eq!(erf(0.0), 0.0);
    }
}
