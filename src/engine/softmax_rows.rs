//! The softmax over rows that tract's `Softmax` runs, registered as a tract-linalg routine.
//!
//! tract's `Softmax` over the trailing axis asks tract-linalg for a `softmax_rows` routine and,
//! finding none for x86_64 or ARM in 0.23.9, runs each row through three generic kernel calls
//! (maximum, exponentials and their sum, scaling), whose per-call wrappers cost more than the
//! arithmetic on rows this short (an attention row is one sequence bucket long, 16–512): the
//! softmax took 15 % of an x86 inference at 128 tokens (perf, 2-core Xeon). This module
//! submits a routine through tract-linalg's inventory (its public extension point for
//! kernels), so tract's own `Softmax` calls [`softmax_rows`] on its buffer of rows.
//!
//! Each row is `e = exp(x − max x)`, then `e · (1 / Σ e)`, as tract computes it; the
//! exponential is a Cephes-style polynomial (below 2·10⁻⁷ relative error), the sums run in
//! sixteen lanes. Compiled and registered for x86_64 (with AVX2 where the CPU has it) and
//! aarch64 (NEON) only (`engine/mod.rs`); 32-bit ARM keeps tract's kernels.

/// Lanes of the running maximum and sum.
const LANES: usize = 16;

#[cfg(target_arch = "x86_64")]
const ARCH: tract_linalg::isa::Arch = tract_linalg::isa::Arch::X86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: tract_linalg::isa::Arch = tract_linalg::isa::Arch::Aarch64;

inventory::submit! {
    tract_linalg::routines::Routine {
        func: tract_linalg::Func::SoftmaxRows,
        arch: Some(ARCH),
        isa: tract_linalg::isa::IsaReq::ANY,
        boost: 0,
        round_trip: false,
        factory: tract_linalg::routines::RoutineFactory::SoftmaxRowsF32 {
            name: NAME,
            run: softmax_rows,
        },
    }
}

/// The name tract-linalg knows the routine by.
const NAME: &str = "sentimq_softmax_rows_f32";

/// Softmax of each row of `row_len` values of `rows`, in place.
fn softmax_rows(rows: &mut [f32], row_len: usize) {
    if row_len == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { rows_avx2(rows, row_len) };
    }
    rows_on(rows, row_len)
}

/// [`rows_on`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rows_avx2(rows: &mut [f32], row_len: usize) {
    rows_on(rows, row_len)
}

/// Every row's softmax; the loops vectorize on whatever vector unit the caller is compiled for
/// (also the fused attention's, inlined into its kernels).
#[inline(always)]
pub(super) fn rows_on(rows: &mut [f32], row_len: usize) {
    for row in rows.chunks_exact_mut(row_len) {
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane = if v > *lane { v } else { *lane };
            }
        }
        let larger = |m: f32, &v: &f32| if v > m { v } else { m };
        let max = lanes
            .iter()
            .chain(chunks.remainder())
            .fold(f32::NEG_INFINITY, larger);
        let mut sums = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for chunk in &mut chunks {
            for (sum, v) in sums.iter_mut().zip(chunk) {
                *v = exp_non_positive(*v - max);
                *sum += *v;
            }
        }
        let mut sum: f32 = sums.iter().sum();
        for v in chunks.into_remainder() {
            *v = exp_non_positive(*v - max);
            sum += *v;
        }
        let inverse = 1.0 / sum;
        for v in row.iter_mut() {
            *v *= inverse;
        }
    }
}

/// `exp(x)` for `x ≤ 0` (differences from a row's maximum), flushing below e⁻⁸⁷ to e⁻⁸⁷
/// (1.6·10⁻³⁸, nothing against a sum of at least 1). `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`,
/// `exp(r)` by Cephes' `expf` polynomial, `2ⁿ` written into the exponent bits. Straight-line
/// arithmetic and selects, so it vectorizes.
#[inline(always)]
fn exp_non_positive(x: f32) -> f32 {
    const FLOOR: f32 = -87.0;
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts (Cody and Waite), so n · LN2_HIGH is exact.
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    // Adding and removing 1.5·2²³ rounds to the nearest integer, which is left in the low bits.
    const ROUNDING: f32 = 12_582_912.0;
    let x = if x > FLOOR { x } else { FLOOR };
    let shifted = x * LOG2_E + ROUNDING;
    let n = shifted - ROUNDING;
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let polynomial =
        ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
            + 1.666_666_5e-1)
            * r
            + 0.5;
    let exp_r = polynomial * r * r + r + 1.0;
    // n is in −126..=0, so 2ⁿ is a normal number: its biased exponent n + 127, mantissa 0.
    let n = shifted.to_bits().wrapping_sub(ROUNDING.to_bits()) as i32;
    let two_to_n = f32::from_bits(((n + 127) as u32) << 23);
    exp_r * two_to_n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exponential_is_within_two_ulps_of_the_standard_one() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (ours, std) = (exp_non_positive(x), x.exp());
            assert!(
                ((ours - std) / std).abs() < 2.5e-7,
                "exp({x}) = {ours}, std {std}"
            );
            x += 0.0137;
        }
        assert_eq!(exp_non_positive(0.0), 1.0);
        assert_eq!(exp_non_positive(-1e30), exp_non_positive(-87.0));
        assert!(exp_non_positive(f32::NEG_INFINITY) > 0.0);
    }

    #[test]
    fn rows_sum_to_one_and_match_a_double_precision_softmax() {
        for row_len in [1, 4, 16, 37, 128] {
            let mut rows: Vec<f32> = (0..row_len * 3)
                .map(|i| ((i * 7919) % 1000) as f32 / 50.0 - 10.0)
                .collect();
            // A masked position, as an attention mask adds.
            rows[0] = -10_000.0;
            let reference: Vec<f64> = rows
                .chunks(row_len)
                .flat_map(|row| {
                    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                    let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
                    let sum: f64 = exps.iter().sum();
                    exps.into_iter().map(move |e| e / sum)
                })
                .collect();
            softmax_rows(&mut rows, row_len);
            for (ours, reference) in rows.iter().zip(&reference) {
                assert!(
                    (*ours as f64 - reference).abs() < 1e-6,
                    "{row_len}: {ours} vs {reference}"
                );
            }
        }
    }

    #[test]
    fn tracts_softmax_runs_this_routine() {
        let isa = tract_linalg::isa::native();
        let chosen = tract_linalg::routines::best_for(
            tract_linalg::Func::SoftmaxRows,
            tract_onnx::prelude::DatumType::F32,
            &isa,
        );
        assert_eq!(chosen.map(|r| r.name()), Some(NAME));
    }
}
