//! An int8 matrix-product kernel for aarch64 cores without the dot-product instructions (a
//! Raspberry Pi 4's Cortex-A72), registered in tract-linalg's kernel inventory (`MmmRoutine`)
//! with a dispatch tier (`MmmTier`) that names it for the products it serves.
//!
//! tract's kernel for these cores widens both operands to 16 bits and multiplies by element
//! (`smlal`/`smlal2` by lane): 64 multiply-adds take 16 multiplies, 2 loads, 2 widenings and
//! the loop's 2 instructions. This kernel multiplies 16 `k` of one feature and one token at a
//! time, bytes against bytes: `smull` (8 products as int16), `smlal2` (8 more into the same
//! int16 lanes) and `sadalp` (pairs of them into int32): 256 multiply-adds of a 4 × 4 block take
//! 48 instructions, one 4-register load per operand and the loop's 2 — 12.5 instructions per 64
//! multiply-adds instead of 22, and half the multiplies (the A72 issues them on one pipe).
//!
//! Two int8 products share an int16 lane, exact unless both are −128 · −128: a weight panel
//! flagged as holding −128 (`int8_blocks`) is computed one product per lane instead (`smull`,
//! `sadalp`, `smull2`, `sadalp`: 4 instructions per 16 `k` instead of 3), so every graph's sums
//! stay exact.
//!
//! Both operands are packed in `int8_blocks`' blocks of 16 `k`, so one `ld1` of four registers
//! reads four rows' block. One call computes an 8 × 8 tile (8 features, 8 tokens) as four 4 × 4
//! quarters, each over the whole of `k`. Results are exact int32 sums, bit-identical to tract's
//! kernels.
//!
//! The tier applies where tract's isa has no `dotprod` (a Pi 5's Cortex-A76 keeps tract's SDOT
//! kernel) and names this kernel for int8 × int8 products of more than one column; one-column
//! products keep tract's 64 × 1 kernel.

use std::arch::asm;

use tract_linalg::isa::{Arch, Isa, IsaReq, IsaSet};
use tract_linalg::mmm::{FusedKerSpec, MatMatMul, Query, Suitable};
use tract_linalg::mmm_routines::MmmRoutine;
use tract_linalg::mmm_tiers::MmmTier;
use tract_onnx::prelude::*;

use super::int8_blocks::{self, Tile};

/// The kernel's name in tract's kernel list (and in profiles).
const NAME: &str = "sentimq_neon_i8_8x8";

/// `k` values one `smull` + `smlal2` pair consumes: the packings' block of `k`.
const K_BLOCK: usize = 16;

/// Bytes between a row's block and its next (a panel's block: 8 rows of 16 bytes).
const BLOCK_BYTES: usize = int8_blocks::PANEL_ROWS * K_BLOCK;

inventory::submit! {
    MmmRoutine { make: make_kernel }
}

inventory::submit! {
    MmmTier {
        arch: Some(Arch::Aarch64),
        // Above tract's own aarch64 tiers (1 to 8), and unique among them.
        precedence: 40,
        name: "sentimq-neon-int8",
        applies: |isa| !isa.has(Isa::Aarch64DotProd),
        preferred,
    }
}

fn make_kernel() -> Box<dyn MatMatMul> {
    int8_blocks::declare(NAME, Arch::Aarch64, IsaReq::ANY, K_BLOCK, run)
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
/// The pointers in `specs` are tract's panels (packed by `int8_blocks::Blocks` with blocks of
/// 16) and output for this tile.
unsafe fn run(specs: &[FusedKerSpec<i32>]) -> isize {
    // SAFETY: per the contract; NEON is part of aarch64.
    unsafe { int8_blocks::run_tile(specs, K_BLOCK, add_product) }
}

/// Adds the product of a weight panel and a token panel to the tile, a quarter at a time.
///
/// # Safety
/// As `int8_blocks::AddProduct`.
unsafe fn add_product(
    holds_min: bool,
    blocks: usize,
    features: *const u8,
    tokens: *const u8,
    tile: &mut Tile,
) {
    let add_quarter = if holds_min {
        add_quarter_single
    } else {
        add_quarter_paired
    };
    for (feature_half, token_half) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        // SAFETY: the panels hold `blocks` blocks of 8 rows; the quarter's rows are 4 of each.
        unsafe {
            add_quarter(
                blocks,
                features.add(feature_half * 4 * K_BLOCK),
                tokens.add(token_half * 4 * K_BLOCK),
                tile.0[token_half * 4].as_mut_ptr().add(feature_half * 4),
            )
        };
    }
}

/// One 4 × 4 quarter of a tile: zeroes the accumulators, runs the loop body (the given lines,
/// after the block's loads: features' rows in v0–v3, tokens' in v4–v7) once per block, then
/// folds the accumulators into four tokens' four features and adds them to `out`.
///
/// Accumulator `v(16 + 4f + t)` holds four partial sums of feature `f` and token `t`; three
/// `addp` per token fold them into the token's four features.
macro_rules! quarter {
    ($blocks:expr, $features:expr, $tokens:expr, $out:expr, [$($body:literal),* $(,)?]) => {
        asm!(
            "movi v16.4s, #0", "movi v17.4s, #0", "movi v18.4s, #0", "movi v19.4s, #0",
            "movi v20.4s, #0", "movi v21.4s, #0", "movi v22.4s, #0", "movi v23.4s, #0",
            "movi v24.4s, #0", "movi v25.4s, #0", "movi v26.4s, #0", "movi v27.4s, #0",
            "movi v28.4s, #0", "movi v29.4s, #0", "movi v30.4s, #0", "movi v31.4s, #0",
            "2:",
            "ld1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{features}], {stride}",
            "ld1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [{tokens}], {stride}",
            $($body,)*
            "subs {blocks}, {blocks}, #1",
            "b.ne 2b",
            // Token t: features 0–3 of accumulators v(16 + t), v(20 + t), v(24 + t), v(28 + t).
            "addp v0.4s, v16.4s, v20.4s",
            "addp v1.4s, v24.4s, v28.4s",
            "addp v2.4s, v17.4s, v21.4s",
            "addp v3.4s, v25.4s, v29.4s",
            "addp v4.4s, v18.4s, v22.4s",
            "addp v5.4s, v26.4s, v30.4s",
            "addp v6.4s, v19.4s, v23.4s",
            "addp v7.4s, v27.4s, v31.4s",
            "addp v0.4s, v0.4s, v1.4s",
            "addp v2.4s, v2.4s, v3.4s",
            "addp v4.4s, v4.4s, v5.4s",
            "addp v6.4s, v6.4s, v7.4s",
            "ldr q8, [{out}]",
            "ldr q9, [{out}, #32]",
            "ldr q10, [{out}, #64]",
            "ldr q11, [{out}, #96]",
            "add v0.4s, v0.4s, v8.4s",
            "add v2.4s, v2.4s, v9.4s",
            "add v4.4s, v4.4s, v10.4s",
            "add v6.4s, v6.4s, v11.4s",
            "str q0, [{out}]",
            "str q2, [{out}, #32]",
            "str q4, [{out}, #64]",
            "str q6, [{out}, #96]",
            features = inout(reg) $features => _,
            tokens = inout(reg) $tokens => _,
            blocks = inout(reg) $blocks => _,
            stride = in(reg) BLOCK_BYTES,
            out = in(reg) $out,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v4") _, out("v5") _, out("v6") _, out("v7") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            out("v24") _, out("v25") _, out("v26") _, out("v27") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack),
        )
    };
}

/// Adds to `out` (4 tokens of 4 int32 features, tokens 8 int32 apart) the products
/// of 4 feature rows (`features`) and 4 token rows (`tokens`) over `blocks` blocks of 16 `k`,
/// the rows' blocks [`BLOCK_BYTES`] apart: per feature and token and block, `smull` of the
/// first 8 bytes, `smlal2` of the last 8 into the same int16 lanes, `sadalp` into int32. Exact
/// unless both operands hold −128 (see the module's documentation).
///
/// # Safety
/// `features` and `tokens` address `blocks` blocks of 4 rows of 16 bytes, [`BLOCK_BYTES`] apart;
/// `out` 4 rows of 4 int32, 8 int32 apart. `blocks > 0`.
unsafe fn add_quarter_paired(blocks: usize, features: *const u8, tokens: *const u8, out: *mut i32) {
    // SAFETY: per the contract; NEON is part of aarch64.
    unsafe {
        quarter!(
            blocks,
            features,
            tokens,
            out,
            [
                // Feature 0 (temporaries v8–v11), feature 1 (v12–v15), alternating so that one's
                // multiplies run while the other's sums are added.
                "smull v8.8h, v0.8b, v4.8b",
                "smull v9.8h, v0.8b, v5.8b",
                "smull v10.8h, v0.8b, v6.8b",
                "smull v11.8h, v0.8b, v7.8b",
                "smlal2 v8.8h, v0.16b, v4.16b",
                "smlal2 v9.8h, v0.16b, v5.16b",
                "smlal2 v10.8h, v0.16b, v6.16b",
                "smlal2 v11.8h, v0.16b, v7.16b",
                "smull v12.8h, v1.8b, v4.8b",
                "smull v13.8h, v1.8b, v5.8b",
                "smull v14.8h, v1.8b, v6.8b",
                "smull v15.8h, v1.8b, v7.8b",
                "sadalp v16.4s, v8.8h",
                "sadalp v17.4s, v9.8h",
                "sadalp v18.4s, v10.8h",
                "sadalp v19.4s, v11.8h",
                "smlal2 v12.8h, v1.16b, v4.16b",
                "smlal2 v13.8h, v1.16b, v5.16b",
                "smlal2 v14.8h, v1.16b, v6.16b",
                "smlal2 v15.8h, v1.16b, v7.16b",
                "smull v8.8h, v2.8b, v4.8b",
                "smull v9.8h, v2.8b, v5.8b",
                "smull v10.8h, v2.8b, v6.8b",
                "smull v11.8h, v2.8b, v7.8b",
                "sadalp v20.4s, v12.8h",
                "sadalp v21.4s, v13.8h",
                "sadalp v22.4s, v14.8h",
                "sadalp v23.4s, v15.8h",
                "smlal2 v8.8h, v2.16b, v4.16b",
                "smlal2 v9.8h, v2.16b, v5.16b",
                "smlal2 v10.8h, v2.16b, v6.16b",
                "smlal2 v11.8h, v2.16b, v7.16b",
                "smull v12.8h, v3.8b, v4.8b",
                "smull v13.8h, v3.8b, v5.8b",
                "smull v14.8h, v3.8b, v6.8b",
                "smull v15.8h, v3.8b, v7.8b",
                "sadalp v24.4s, v8.8h",
                "sadalp v25.4s, v9.8h",
                "sadalp v26.4s, v10.8h",
                "sadalp v27.4s, v11.8h",
                "smlal2 v12.8h, v3.16b, v4.16b",
                "smlal2 v13.8h, v3.16b, v5.16b",
                "smlal2 v14.8h, v3.16b, v6.16b",
                "smlal2 v15.8h, v3.16b, v7.16b",
                "sadalp v28.4s, v12.8h",
                "sadalp v29.4s, v13.8h",
                "sadalp v30.4s, v14.8h",
                "sadalp v31.4s, v15.8h",
            ]
        )
    };
}

/// [`add_quarter_paired`] for weights holding −128: each int16 product is added to the int32
/// sums on its own (`smull`, `sadalp`, `smull2`, `sadalp`), exact for any int8.
///
/// # Safety
/// As [`add_quarter_paired`].
unsafe fn add_quarter_single(blocks: usize, features: *const u8, tokens: *const u8, out: *mut i32) {
    // SAFETY: per the contract; NEON is part of aarch64.
    unsafe {
        quarter!(
            blocks,
            features,
            tokens,
            out,
            [
                "smull v8.8h, v0.8b, v4.8b",
                "smull v9.8h, v0.8b, v5.8b",
                "smull v10.8h, v0.8b, v6.8b",
                "smull v11.8h, v0.8b, v7.8b",
                "smull2 v12.8h, v0.16b, v4.16b",
                "smull2 v13.8h, v0.16b, v5.16b",
                "smull2 v14.8h, v0.16b, v6.16b",
                "smull2 v15.8h, v0.16b, v7.16b",
                "sadalp v16.4s, v8.8h",
                "sadalp v17.4s, v9.8h",
                "sadalp v18.4s, v10.8h",
                "sadalp v19.4s, v11.8h",
                "sadalp v16.4s, v12.8h",
                "sadalp v17.4s, v13.8h",
                "sadalp v18.4s, v14.8h",
                "sadalp v19.4s, v15.8h",
                "smull v8.8h, v1.8b, v4.8b",
                "smull v9.8h, v1.8b, v5.8b",
                "smull v10.8h, v1.8b, v6.8b",
                "smull v11.8h, v1.8b, v7.8b",
                "smull2 v12.8h, v1.16b, v4.16b",
                "smull2 v13.8h, v1.16b, v5.16b",
                "smull2 v14.8h, v1.16b, v6.16b",
                "smull2 v15.8h, v1.16b, v7.16b",
                "sadalp v20.4s, v8.8h",
                "sadalp v21.4s, v9.8h",
                "sadalp v22.4s, v10.8h",
                "sadalp v23.4s, v11.8h",
                "sadalp v20.4s, v12.8h",
                "sadalp v21.4s, v13.8h",
                "sadalp v22.4s, v14.8h",
                "sadalp v23.4s, v15.8h",
                "smull v8.8h, v2.8b, v4.8b",
                "smull v9.8h, v2.8b, v5.8b",
                "smull v10.8h, v2.8b, v6.8b",
                "smull v11.8h, v2.8b, v7.8b",
                "smull2 v12.8h, v2.16b, v4.16b",
                "smull2 v13.8h, v2.16b, v5.16b",
                "smull2 v14.8h, v2.16b, v6.16b",
                "smull2 v15.8h, v2.16b, v7.16b",
                "sadalp v24.4s, v8.8h",
                "sadalp v25.4s, v9.8h",
                "sadalp v26.4s, v10.8h",
                "sadalp v27.4s, v11.8h",
                "sadalp v24.4s, v12.8h",
                "sadalp v25.4s, v13.8h",
                "sadalp v26.4s, v14.8h",
                "sadalp v27.4s, v15.8h",
                "smull v8.8h, v3.8b, v4.8b",
                "smull v9.8h, v3.8b, v5.8b",
                "smull v10.8h, v3.8b, v6.8b",
                "smull v11.8h, v3.8b, v7.8b",
                "smull2 v12.8h, v3.16b, v4.16b",
                "smull2 v13.8h, v3.16b, v5.16b",
                "smull2 v14.8h, v3.16b, v6.16b",
                "smull2 v15.8h, v3.16b, v7.16b",
                "sadalp v28.4s, v8.8h",
                "sadalp v29.4s, v9.8h",
                "sadalp v30.4s, v10.8h",
                "sadalp v31.4s, v11.8h",
                "sadalp v28.4s, v12.8h",
                "sadalp v29.4s, v13.8h",
                "sadalp v30.4s, v14.8h",
                "sadalp v31.4s, v15.8h",
            ]
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_are_exact_integer_sums_in_every_store_layout() {
        int8_blocks::checks::tiles_are_exact(run, K_BLOCK);
    }

    #[test]
    fn the_tier_applies_without_dot_products() {
        let isa = tract_linalg::isa::native();
        let tier = tract_linalg::mmm_tiers::declared()
            .find(|tier| tier.name == "sentimq-neon-int8")
            .expect("declared");
        assert_eq!((tier.applies)(&isa), !isa.has(Isa::Aarch64DotProd));
    }
}
