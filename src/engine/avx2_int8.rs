//! An int8 matrix-product kernel for x86_64 cores with AVX2 but no VNNI dot products (AMD
//! EPYC before Zen 4, Intel before Ice Lake), registered in tract-linalg's kernel inventory
//! (`MmmRoutine`) with a dispatch tier (`MmmTier`) that names it for the products it serves.
//!
//! tract's AVX2 int8 kernel widens the operands and multiplies 32-bit lanes: about 46
//! instructions per 64 multiply-adds (83 % of an inference's instructions at 16 tokens on an
//! AVX2-only EPYC, issue 16). This one multiplies 32 `k` of a feature and a token per four
//! instructions, bytes against bytes: `vpsignb` gives the feature's bytes the token's signs,
//! `vpmaddubsw` multiplies them by the token's magnitudes (unsigned) and adds pairs into int16,
//! `vpmaddwd` by ones adds pairs of those into int32, `vpaddd` accumulates — with the loads and
//! the magnitudes shared by a 4 features × 2 tokens block, 40 instructions per 256
//! multiply-adds. A pair of products fits an int16 lane unless a weight is −128 (|−128| · 128 ·
//! 2 overflows): a weight panel flagged as holding −128 (`int8_blocks`) is computed by
//! widening both operands to int16 instead (`vpmovsxbw`, `vpmaddwd`), so every graph's sums
//! stay exact and bit-identical to tract's kernels.
//!
//! One call computes an 8 × 8 tile (8 features, 8 tokens) as eight 4 × 2 blocks, each over the
//! whole of `k`, both operands packed in `int8_blocks`' blocks of 32 `k`. The tier applies where
//! tract's isa has AVX2 and neither AVX-512 VNNI nor AVX-VNNI (where tract's `vpdpbusd` kernels
//! and the engine's AMX kernels are faster) and names this kernel for int8 × int8 products of
//! more than one column; one-column products keep tract's kernels.

use std::arch::x86_64::*;

use tract_linalg::isa::{Arch, Isa, IsaReq, IsaSet};
use tract_linalg::mmm::{FusedKerSpec, MatMatMul, Query, Suitable};
use tract_linalg::mmm_routines::MmmRoutine;
use tract_linalg::mmm_tiers::MmmTier;
use tract_onnx::prelude::*;

use super::int8_blocks::{self, Tile, PANEL_ROWS};

/// The kernel's name in tract's kernel list (and in profiles).
const NAME: &str = "sentimq_avx2_i8_8x8";

/// `k` values of one row in one AVX2 register: the packings' block of `k`.
const K_BLOCK: usize = 32;

/// Bytes between a row's block and its next (a panel's block: 8 rows of 32 bytes).
const BLOCK_BYTES: usize = PANEL_ROWS * K_BLOCK;

inventory::submit! {
    MmmRoutine { make: make_kernel }
}

inventory::submit! {
    MmmTier {
        arch: Some(Arch::X86_64),
        // Above tract's own x86 tiers (up to 8), below the engine's AMX tier (40), which never
        // applies where this one does.
        precedence: 39,
        name: "sentimq-avx2-int8",
        applies,
        preferred,
    }
}

fn applies(isa: &IsaSet) -> bool {
    isa.has(Isa::X86_64Avx2) && !isa.has(Isa::X86_64Avx512Vnni) && !isa.has(Isa::X86_64AvxVnni)
}

fn make_kernel() -> Box<dyn MatMatMul> {
    let isa = IsaReq::ANY.needing(&[Isa::X86_64Avx2]);
    int8_blocks::declare(NAME, Arch::X86_64, isa, K_BLOCK, run)
}

fn preferred(
    _: &IsaSet,
    accumulator: DatumType,
    query: &Query,
    _: &[Suitable],
) -> Option<&'static str> {
    int8_blocks::claims(accumulator, query).then_some(NAME)
}

/// The kernel tract calls once per output tile.
///
/// # Safety
/// The CPU has AVX2 (the kernel's `isa` requirement, which tract checks before listing it); the
/// pointers in `specs` are tract's panels (packed by `int8_blocks::Blocks` with blocks of 32)
/// and output for this tile.
unsafe fn run(specs: &[FusedKerSpec<i32>]) -> isize {
    // SAFETY: per the contract.
    unsafe { int8_blocks::run_tile(specs, K_BLOCK, add_product) }
}

/// Adds the product of a weight panel and a token panel to the tile.
///
/// # Safety
/// As `int8_blocks::AddProduct`, on a CPU with AVX2.
unsafe fn add_product(
    holds_min: bool,
    blocks: usize,
    features: *const u8,
    tokens: *const u8,
    tile: &mut Tile,
) {
    // SAFETY: per the contract.
    unsafe {
        if holds_min {
            add_blocks::<true>(blocks, features, tokens, tile)
        } else {
            add_blocks::<false>(blocks, features, tokens, tile)
        }
    }
}

/// The tile's eight blocks of 4 features × 2 tokens, each over all `blocks` of `k`; `WIDE`:
/// through int16 operands (exact for any int8), else through `vpmaddubsw` (exact for weights
/// without −128).
///
/// # Safety
/// As [`add_product`].
#[target_feature(enable = "avx2")]
unsafe fn add_blocks<const WIDE: bool>(
    blocks: usize,
    features: *const u8,
    tokens: *const u8,
    tile: &mut Tile,
) {
    let ones = _mm256_set1_epi16(1);
    for feature_quad in 0..2 {
        for token_pair in 0..4 {
            let mut sums = [[_mm256_setzero_si256(); 2]; 4];
            let mut weights = features.wrapping_add(feature_quad * 4 * K_BLOCK);
            let mut rows = tokens.wrapping_add(token_pair * 2 * K_BLOCK);
            for _ in 0..blocks {
                // SAFETY: each panel holds `blocks` blocks of 8 rows of 32 bytes; these are 4
                // and 2 of them.
                let load = |p: *const u8, row: usize| unsafe {
                    _mm256_loadu_si256(p.add(row * K_BLOCK).cast::<__m256i>())
                };
                let x = [load(rows, 0), load(rows, 1)];
                if WIDE {
                    let widen = |v: __m256i| {
                        [
                            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)),
                            _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(v)),
                        ]
                    };
                    let x = [widen(x[0]), widen(x[1])];
                    for (f, sums) in sums.iter_mut().enumerate() {
                        let w = widen(load(weights, f));
                        for (sum, x) in sums.iter_mut().zip(&x) {
                            let low = _mm256_madd_epi16(w[0], x[0]);
                            let high = _mm256_madd_epi16(w[1], x[1]);
                            *sum = _mm256_add_epi32(*sum, _mm256_add_epi32(low, high));
                        }
                    }
                } else {
                    let magnitudes = [_mm256_abs_epi8(x[0]), _mm256_abs_epi8(x[1])];
                    for (f, sums) in sums.iter_mut().enumerate() {
                        let w = load(weights, f);
                        for (t, sum) in sums.iter_mut().enumerate() {
                            let signed = _mm256_sign_epi8(w, x[t]);
                            let pairs = _mm256_maddubs_epi16(magnitudes[t], signed);
                            *sum = _mm256_add_epi32(*sum, _mm256_madd_epi16(pairs, ones));
                        }
                    }
                }
                weights = weights.wrapping_add(BLOCK_BYTES);
                rows = rows.wrapping_add(BLOCK_BYTES);
            }
            for (t, token) in (token_pair * 2..token_pair * 2 + 2).enumerate() {
                // Features 0–3 of this token: each sum's eight lanes added up.
                let pairs = _mm256_hadd_epi32(sums[0][t], sums[1][t]);
                let quads = _mm256_hadd_epi32(pairs, _mm256_hadd_epi32(sums[2][t], sums[3][t]));
                let four = _mm_add_epi32(
                    _mm256_castsi256_si128(quads),
                    _mm256_extracti128_si256::<1>(quads),
                );
                let out = &mut tile.0[token][feature_quad * 4..feature_quad * 4 + 4];
                // SAFETY: `out` is four int32 of the tile.
                unsafe {
                    let before = _mm_loadu_si128(out.as_ptr().cast::<__m128i>());
                    _mm_storeu_si128(
                        out.as_mut_ptr().cast::<__m128i>(),
                        _mm_add_epi32(before, four),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_are_exact_integer_sums_in_every_store_layout() {
        if !is_x86_feature_detected!("avx2") {
            // Without AVX2 tract never lists the kernel: nothing of it can run here.
            assert!(!make_kernel().runnable());
            return;
        }
        int8_blocks::checks::tiles_are_exact(run, K_BLOCK);
    }

    #[test]
    fn the_tier_applies_with_avx2_and_without_vnni() {
        use tract_linalg::isa::IsaSet;
        let base = IsaSet::of_arch(Arch::X86_64)
            .with(Isa::X86_64Avx)
            .with(Isa::X86_64Fma);
        assert!(applies(&base.with(Isa::X86_64Avx2)));
        assert!(!applies(&base));
        assert!(!applies(
            &base.with(Isa::X86_64Avx2).with(Isa::X86_64Avx512Vnni)
        ));
        assert!(!applies(
            &base.with(Isa::X86_64Avx2).with(Isa::X86_64AvxVnni)
        ));
    }
}
