//! int8 matrix-product kernels for Intel AMX with 32 × 32 and 32 × 16 output tiles,
//! registered in tract-linalg's kernel inventory (`MmmRoutine`) with a dispatch tier (`MmmTier`)
//! that names them for the products they serve best.
//!
//! tract's own AMX kernel computes a 16×16 tile per call: one `tdpbssd` per 64 values of `k`,
//! two tile loads for each, and per call a tile configuration, an MXCSR round trip and the tile
//! moved through sixteen vector registers on its way out. At `k` = 384 (MiniLM's projections)
//! that overhead outweighs the six products, and the AMX units ran at about a tenth of their
//! peak: half of an x86 inference. These kernels compute 2 × 2 tiles per call (four `tdpbssd`
//! per four tile loads; 2 × 1 for texts of up to 16 tokens, which would leave half of the wider
//! tile empty), prefetch the weights two steps ahead (a short text streams them from memory,
//! each used by one call), and store the tiles straight from the tile registers into the
//! output.
//!
//! Its operands are swapped against tract's AMX kernel so that the tiles come out in the
//! output's layout: the weights (tract's `a`, `m` = output features) are packed
//! [`WeightSteps`] — tract's `PackedI8K4(32)` layout, four `k` of each feature side by side,
//! which is AMX's right-hand layout, with `k` padded to whole steps of 64 — and the
//! activations (`b`, `n` = tokens) `PackedAmxA(32)` (or 16), each token's `k` bytes in a row,
//! which is AMX's left-hand layout. A tile row is then one token's 16 features, contiguous in
//! the output (features are the output's innermost axis), so `tilestored` writes it where it
//! belongs.
//!
//! The tier names them for int32 products of more than one column (otherwise tract's kernels
//! answer), on machines where tract's AMX gate
//! (CPUID plus the kernel's permission for tile data) passed. It accepts only the fused
//! operations an int8 projection of this engine needs (the product and its store; scaling,
//! bias and activation run in the engine's own `DequantizeRows`): tract runs anything else
//! itself. Results are exact int32 sums, bit-identical to tract's kernels.

use std::arch::asm;

use tract_linalg::isa::{Arch, Isa, IsaReq, IsaSet};
use tract_linalg::mmm::{
    DynKernel, EagerPackedInput, FusedKerSpec, FusedSpec, MMMInputFormat, MMMInputValue, MatMatMul,
    OutputStoreKer, PackedMatrixStorage, Query, Suitable,
};
use tract_linalg::mmm_routines::MmmRoutine;
use tract_linalg::mmm_tiers::MmmTier;
use tract_linalg::x86_64::amx::PackedAmxA;
use tract_linalg::WeightType;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::weight_packs;

/// The kernels' names in tract's kernel list (and in profiles): 32 features × 32 or 16 tokens.
const NAME_32X32: &str = "sentimq_amx_i32_32x32";
const NAME_32X16: &str = "sentimq_amx_i32_32x16";

/// Output features (`m`) one call computes: two tiles of 16.
const FEATURES: usize = 32;

/// `k` values one `tdpbssd` consumes.
const K_STEP: usize = 64;

/// Bytes between two rows of four `k` in a weight panel.
const WEIGHT_ROW: usize = FEATURES * 4;

/// How far ahead of its step the kernel asks for weights (two steps): with few tokens a product
/// streams its weights from memory, each used by one call.
const PREFETCH_AHEAD: usize = 2 * K_STEP / 4 * WEIGHT_ROW;

inventory::submit! {
    MmmRoutine { make: make_kernel::<32> }
}

inventory::submit! {
    MmmRoutine { make: make_kernel::<16> }
}

inventory::submit! {
    MmmTier {
        arch: Some(Arch::X86_64),
        // Above tract's own x86 tiers (AMX int8 is 7, AMX bf16 8), and unique among them.
        precedence: 40,
        name: "sentimq-amx-int8",
        applies: |isa| isa.has(Isa::X86_64Avx512f) && isa.has(Isa::X86_64AmxInt8),
        preferred,
    }
}

/// The kernel computing `TOKENS` (16 or 32) tokens × 32 features per call.
fn make_kernel<const TOKENS: usize>() -> Box<dyn MatMatMul> {
    let packings: Vec<(Box<dyn MMMInputFormat>, Box<dyn MMMInputFormat>)> = vec![(
        Box::new(WeightSteps),
        Box::new(TokenRows(PackedAmxA::new(TOKENS))),
    )];
    let name = if TOKENS == 32 { NAME_32X32 } else { NAME_32X16 };
    Box::new(DynKernel::<FEATURES, TOKENS, i32> {
        name: name.to_string(),
        kernel: run::<TOKENS>,
        arch: Some(Arch::X86_64),
        emulated: || false,
        packings,
        stores: vec![DatumType::I32],
        built: true,
        isa: IsaReq::ANY.needing(&[Isa::X86_64Avx512f, Isa::X86_64AmxInt8]),
        boost: || 0,
        can_fuse: |spec| matches!(spec, FusedSpec::AddMatMul { .. } | FusedSpec::Store(_)),
        row_major_store: false,
    })
}

/// These kernels for int32 products of more than one column (`n`, tokens): the 16-token one up
/// to 16 tokens, the 32-token one above; no opinion otherwise, and tract's tiers answer. Both
/// pack the weights alike, so every plan of a model shares one copy whatever its length.
fn preferred(
    _: &IsaSet,
    accumulator: DatumType,
    query: &Query,
    _: &[Suitable],
) -> Option<&'static str> {
    if accumulator != DatumType::I32 {
        return None;
    }
    match query.n {
        Some(1) => None,
        Some(n) if n <= 16 => Some(NAME_32X16),
        _ => Some(NAME_32X32),
    }
}

/// The weights' packing: tract's `PackedI8K4(32)` layout (for each group of four `k`, the 32
/// features' four bytes side by side) with `k` padded with zeros to a multiple of 64, so that
/// every step of the kernel reads whole tiles inside the panel. The tokens' `PackedAmxA` pads
/// `k` alike, so the padding adds zeros. Each matrix is packed once per process
/// ([`weight_packs`]): the plans of every length share the pack.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct WeightSteps;

impl WeightSteps {
    fn panel_bytes(k: usize) -> usize {
        k.div_ceil(K_STEP) * K_STEP * FEATURES
    }
}

impl std::fmt::Display for WeightSteps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "I8K4Steps64[{FEATURES}]")
    }
}

impl MMMInputFormat for WeightSteps {
    fn prepare_tensor(&self, t: &Tensor, k_axis: usize, mn_axis: usize) -> TractResult<Tensor> {
        let packed = self.prepare_one(t, k_axis, mn_axis)?;
        Ok(PackedMatrixStorage::new(packed).into_tensor(t.datum_type()))
    }

    fn prepare_one_view(
        &self,
        t: &TensorView,
        k_axis: usize,
        mn_axis: usize,
    ) -> TractResult<Box<dyn MMMInputValue>> {
        weight_packs::ensure_int8_matrix(self, t, k_axis, mn_axis)?;
        let (k, mn) = (t.shape()[k_axis], t.shape()[mn_axis]);
        let panel = Self::panel_bytes(k);
        let panels = mn.div_ceil(FEATURES);
        let position = |m: usize, c: usize| {
            (m / FEATURES) * panel + (m % FEATURES) * 4 + (c / 4) * WEIGHT_ROW + c % 4
        };
        let packed = weight_packs::packed_once(self, t, k_axis, mn_axis, (position, 4), || {
            pack_at(t, k_axis, mn_axis, (panels * panel, 64), position)
        });
        let format = Box::new(self.clone());
        Ok(weight_packs::packed_input(format, packed, panel, (k, mn)))
    }

    fn precursor(&self) -> WeightType {
        WeightType::Plain(DatumType::I8)
    }

    fn r(&self) -> usize {
        FEATURES
    }

    fn k_alignment(&self) -> usize {
        K_STEP
    }

    fn merge_with<'o, 'a: 'o, 'b: 'o>(
        &'a self,
        other: &'b dyn MMMInputFormat,
    ) -> Option<&'o dyn MMMInputFormat> {
        other.downcast_ref::<WeightSteps>().map(|_| self as _)
    }

    fn mem_size(&self, k: TDim, mn: TDim) -> TDim {
        mn.divceil(FEATURES) * Self::panel_bytes(k.to_usize().unwrap_or(0))
    }

    fn extract_at_mn_f16(&self, _: &EagerPackedInput, _: usize, _: &mut [f16]) -> TractResult<()> {
        bail!("{self}: no f16 extraction")
    }

    fn extract_at_mn_f32(&self, _: &EagerPackedInput, _: usize, _: &mut [f32]) -> TractResult<()> {
        bail!("{self}: no f32 extraction")
    }
}

/// The tokens' packing: tract's `PackedAmxA` layout (panels of `r` tokens, each token's `k`
/// bytes in a row padded to a multiple of 64), with a constant matrix packed once per process
/// ([`weight_packs`]). Constants take this side too: tract swaps a product's operands only while
/// its tokens are fewer than its output features, so in the 384-token and longer plans the
/// weights of the products with 384 outputs are packed here, and every such plan shares them.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct TokenRows(pub(super) PackedAmxA);

impl TokenRows {
    fn padded_k(k: usize) -> usize {
        k.div_ceil(K_STEP) * K_STEP
    }
}

impl std::fmt::Display for TokenRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenRows64[{}]", self.0.r)
    }
}

impl MMMInputFormat for TokenRows {
    fn prepare_tensor(&self, t: &Tensor, k_axis: usize, mn_axis: usize) -> TractResult<Tensor> {
        let packed = self.prepare_one(t, k_axis, mn_axis)?;
        Ok(PackedMatrixStorage::new(packed).into_tensor(t.datum_type()))
    }

    fn prepare_one_view(
        &self,
        t: &TensorView,
        k_axis: usize,
        mn_axis: usize,
    ) -> TractResult<Box<dyn MMMInputValue>> {
        weight_packs::ensure_int8_matrix(self, t, k_axis, mn_axis)?;
        let (k, mn, r) = (t.shape()[k_axis], t.shape()[mn_axis], self.0.r);
        let row = Self::padded_k(k);
        let panel = row * r;
        let position = |m: usize, c: usize| (m / r) * panel + (m % r) * row + c;
        let len = (mn.div_ceil(r) * panel, self.0.alignment());
        let packed =
            weight_packs::packed_once(self, t, k_axis, mn_axis, (position, K_STEP), || {
                pack_at(t, k_axis, mn_axis, len, position)
            });
        let format = Box::new(self.clone());
        Ok(weight_packs::packed_input(format, packed, panel, (k, mn)))
    }

    fn precursor(&self) -> WeightType {
        WeightType::Plain(DatumType::I8)
    }

    fn r(&self) -> usize {
        self.0.r
    }

    fn k_alignment(&self) -> usize {
        K_STEP
    }

    fn merge_with<'o, 'a: 'o, 'b: 'o>(
        &'a self,
        other: &'b dyn MMMInputFormat,
    ) -> Option<&'o dyn MMMInputFormat> {
        other
            .downcast_ref::<TokenRows>()
            .filter(|other| *other == self)
            .map(|_| self as _)
    }

    fn mem_size(&self, k: TDim, mn: TDim) -> TDim {
        mn.divceil(self.0.r) * (Self::padded_k(k.to_usize().unwrap_or(0)) * self.0.r)
    }

    fn extract_at_mn_f16(&self, _: &EagerPackedInput, _: usize, _: &mut [f16]) -> TractResult<()> {
        bail!("{self}: no f16 extraction")
    }

    fn extract_at_mn_f32(&self, _: &EagerPackedInput, _: usize, _: &mut [f32]) -> TractResult<()> {
        bail!("{self}: no f32 extraction")
    }
}

/// The `rows × k` int8 values of `t` (`k` and rows on the given axes), each at the byte
/// `position(row, c)` of a zeroed blob of `len` bytes aligned to `align`.
fn pack_at(
    t: &TensorView,
    k_axis: usize,
    mn_axis: usize,
    (len, align): (usize, usize),
    position: impl Fn(usize, usize) -> usize,
) -> Blob {
    let (k, rows) = (t.shape()[k_axis], t.shape()[mn_axis]);
    let (k_stride, row_stride) = (t.strides()[k_axis], t.strides()[mn_axis]);
    // SAFETY: zeroed before the values are written; read only after.
    let mut blob = unsafe { Blob::new_for_size_and_align(len, align) };
    let bytes = blob.as_bytes_mut();
    bytes.fill(0);
    // SAFETY: the view's data holds `rows × k` int8 at these strides.
    let values = unsafe { t.as_ptr_unchecked::<i8>() };
    for row in 0..rows {
        for c in 0..k {
            // SAFETY: `row < rows` and `c < k` address a value of the view.
            let value =
                unsafe { *values.offset(row as isize * row_stride + c as isize * k_stride) };
            bytes[position(row, c)] = value as u8;
        }
    }
    blob
}

/// AMX tile configuration (palette 1): the 64-byte block `ldtilecfg` reads.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    /// Every tile 16 rows of 64 bytes: 0–3 accumulate (16 tokens × 16 int32 features), 4–5 hold
    /// 16 tokens × 64 `k`, 6–7 16 groups of four `k` × 16 features.
    const STEPS: TileConfig = {
        let mut config = [0u8; 64];
        config[0] = 1;
        let mut tile = 0;
        while tile < 8 {
            config[16 + 2 * tile] = 64;
            config[48 + tile] = 16;
            tile += 1;
        }
        TileConfig(config)
    };

    /// Loads this configuration unless it is the one in force (tract's own AMX kernel, which
    /// still serves one-token products, loads its own).
    ///
    /// # Safety
    /// The CPU has AMX and the OS granted this process tile data.
    unsafe fn ensure(&self) {
        let mut current = TileConfig([0; 64]);
        // SAFETY: per the caller.
        unsafe { asm!("sttilecfg [{}]", in(reg) current.0.as_mut_ptr(), options(nostack)) };
        if current.0 != self.0 {
            // SAFETY: per the caller.
            unsafe { self.load() };
        }
    }

    /// # Safety
    /// The CPU has AMX and the OS granted this process tile data.
    unsafe fn load(&self) {
        // SAFETY: per the caller; the block is a valid palette-1 configuration.
        unsafe { asm!("ldtilecfg [{}]", in(reg) self.0.as_ptr(), options(nostack)) };
    }
}

/// The kernel tract calls once per output tile, with the tile's operations ending in `Done`.
/// Returns 0, or 1 for an operation it does not implement (tract then fails the product: its
/// `can_fuse` keeps them away).
///
/// # Safety
/// The CPU has AMX-INT8 and tile-data permission (the kernel's `isa` requirement, which tract
/// checks before listing it); the pointers in `specs` are tract's panels and output for this
/// tile.
unsafe fn run<const TOKENS: usize>(specs: &[FusedKerSpec<i32>]) -> isize {
    // SAFETY (every block below): per this function's contract.
    unsafe {
        TileConfig::STEPS.ensure();
        // tract's tile operations start with `Clear`, which zeroes the accumulators.
        for spec in specs {
            match *spec {
                FusedKerSpec::Done => break,
                FusedKerSpec::Clear => clear(),
                FusedKerSpec::AddMatMul {
                    k,
                    pa,
                    pb,
                    packing: 0,
                } => add_mat_mul::<TOKENS>(k, pa, pb),
                FusedKerSpec::Store(store) if store.item_size == 4 => store_tile::<TOKENS>(store),
                _ => return 1,
            }
        }
    }
    0
}

/// Zeroes the four accumulator tiles.
unsafe fn clear() {
    // SAFETY: AMX is configured (see `run`).
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3"
        )
    };
}

/// Adds the product of a weight panel (`weights`, [`WeightSteps`]) and an activation panel
/// (`tokens`, `PackedAmxA(TOKENS)`) over `k` to the accumulators (tiles 0–1 for the first 16
/// tokens, 2–3 for the next 16), one step of 64 `k` at a time: both packings pad `k` with
/// zeros to whole steps.
unsafe fn add_mat_mul<const TOKENS: usize>(k: usize, weights: *const u8, tokens: *const u8) {
    let token_row = k.div_ceil(K_STEP) * K_STEP;
    let second_tokens = 16 * token_row;
    // SAFETY: AMX is configured; every tile load stays inside its panel: `TOKENS` token rows of
    // `token_row` bytes, and `token_row / 4` rows of 32 × 4 weight bytes.
    unsafe {
        for step in 0..k.div_ceil(K_STEP) {
            let tokens = tokens.add(step * K_STEP);
            let weights = weights.add(step * K_STEP / 4 * WEIGHT_ROW);
            let ahead = weights.add(PREFETCH_AHEAD);
            asm!(
                "prefetcht0 [{p}]",
                "prefetcht0 [{p} + 128]",
                "prefetcht0 [{p} + 256]",
                "prefetcht0 [{p} + 384]",
                "prefetcht0 [{p} + 512]",
                "prefetcht0 [{p} + 640]",
                "prefetcht0 [{p} + 768]",
                "prefetcht0 [{p} + 896]",
                "prefetcht0 [{p} + 1024]",
                "prefetcht0 [{p} + 1152]",
                "prefetcht0 [{p} + 1280]",
                "prefetcht0 [{p} + 1408]",
                "prefetcht0 [{p} + 1536]",
                "prefetcht0 [{p} + 1664]",
                "prefetcht0 [{p} + 1792]",
                "prefetcht0 [{p} + 1920]",
                p = in(reg) ahead,
                options(nostack, readonly),
            );
            if TOKENS == 32 {
                asm!(
                    "tileloadd tmm4, [{t} + {ts} * 1]",
                    "tileloadd tmm5, [{t2} + {ts} * 1]",
                    "tileloadd tmm6, [{w} + {ws} * 1]",
                    "tileloadd tmm7, [{w2} + {ws} * 1]",
                    "tdpbssd tmm0, tmm4, tmm6",
                    "tdpbssd tmm1, tmm4, tmm7",
                    "tdpbssd tmm2, tmm5, tmm6",
                    "tdpbssd tmm3, tmm5, tmm7",
                    t = in(reg) tokens,
                    t2 = in(reg) tokens.add(second_tokens),
                    ts = in(reg) token_row,
                    w = in(reg) weights,
                    w2 = in(reg) weights.add(64),
                    ws = in(reg) WEIGHT_ROW,
                    options(nostack, readonly),
                );
            } else {
                asm!(
                    "tileloadd tmm4, [{t} + {ts} * 1]",
                    "tileloadd tmm6, [{w} + {ws} * 1]",
                    "tileloadd tmm7, [{w2} + {ws} * 1]",
                    "tdpbssd tmm0, tmm4, tmm6",
                    "tdpbssd tmm1, tmm4, tmm7",
                    t = in(reg) tokens,
                    ts = in(reg) token_row,
                    w = in(reg) weights,
                    w2 = in(reg) weights.add(64),
                    ws = in(reg) WEIGHT_ROW,
                    options(nostack, readonly),
                );
            }
        }
    }
}

/// The accumulators as `TOKENS` rows (tokens) of 32 int32 (features), rows `row_bytes` apart.
unsafe fn store_tiles<const TOKENS: usize>(to: *mut u8, row_bytes: isize) {
    // SAFETY: AMX is configured; `to` spans `TOKENS` rows of `row_bytes` (the caller's).
    unsafe {
        asm!(
            "tilestored [{p} + {s} * 1], tmm0",
            "tilestored [{p64} + {s} * 1], tmm1",
            p = in(reg) to,
            p64 = in(reg) to.add(64),
            s = in(reg) row_bytes,
            options(nostack),
        );
        if TOKENS == 32 {
            let lower = to.offset(16 * row_bytes);
            asm!(
                "tilestored [{q} + {s} * 1], tmm2",
                "tilestored [{q64} + {s} * 1], tmm3",
                q = in(reg) lower,
                q64 = in(reg) lower.add(64),
                s = in(reg) row_bytes,
                options(nostack),
            );
        }
    }
}

/// Writes the tile to `store` (`row_byte_stride` between features, `col_byte_stride` between
/// tokens): straight from the tile registers when features are contiguous, as in the engine's
/// products and tract's border scratch; through memory otherwise.
unsafe fn store_tile<const TOKENS: usize>(store: OutputStoreKer) {
    // SAFETY: `store` addresses the `TOKENS` × 32 int32 outputs of this tile (tract's).
    unsafe {
        if store.row_byte_stride == 4 {
            store_tiles::<TOKENS>(store.ptr, store.col_byte_stride);
            return;
        }
        let mut tile = [0i32; 32 * FEATURES];
        store_tiles::<TOKENS>(tile.as_mut_ptr().cast(), (FEATURES * 4) as isize);
        for (token, row) in tile.chunks_exact(FEATURES).take(TOKENS).enumerate() {
            for (feature, &value) in row.iter().enumerate() {
                let at = store.ptr.offset(
                    feature as isize * store.row_byte_stride
                        + token as isize * store.col_byte_stride,
                );
                at.cast::<i32>().write_unaligned(value);
            }
        }
    }
}

/// Whether tract lists these kernels as runnable here (AMX-INT8 with tile-data permission).
#[cfg(test)]
fn available() -> bool {
    make_kernel::<32>().runnable()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_linalg::pack::PackedI8K4;

    /// `rows × k` int8 values covering the whole range.
    fn matrix(rows: usize, k: usize, seed: usize) -> (Tensor, Vec<i8>) {
        let values: Vec<i8> = (0..rows * k)
            .map(|i| ((i * 7919 + seed * 104_729) % 256) as u8 as i8)
            .collect();
        let tensor = Tensor::from_shape(&[rows, k], &values).expect("a tensor");
        (tensor, values)
    }

    /// Runs the `TOKENS`-token kernel on one tile of `weights · tokensᵀ` (32 features and
    /// `TOKENS` tokens of `k` values), storing with the given strides (in int32), and checks
    /// every sum.
    fn tile<const TOKENS: usize>(k: usize, feature_stride: isize, token_stride: isize) {
        let (weights, w) = matrix(FEATURES, k, 1);
        let (tokens, t) = matrix(TOKENS, k, 2);
        let packed_weights = WeightSteps.prepare_one(&weights, 1, 0).expect("packs");
        let packed_tokens = PackedAmxA::new(TOKENS)
            .pack_view(&tokens.view(), 1, 0)
            .expect("packs");
        let eager = |p: &dyn MMMInputValue| {
            p.downcast_ref::<EagerPackedInput>()
                .expect("eager")
                .packed
                .as_ptr()
        };
        let mut out = vec![0i32; FEATURES * 32];
        let specs = [
            FusedKerSpec::Clear,
            FusedKerSpec::AddMatMul {
                k,
                pa: eager(&*packed_weights),
                pb: eager(&*packed_tokens),
                packing: 0,
            },
            FusedKerSpec::Store(OutputStoreKer {
                ptr: out.as_mut_ptr().cast(),
                row_byte_stride: feature_stride * 4,
                col_byte_stride: token_stride * 4,
                item_size: 4,
            }),
            FusedKerSpec::Done,
        ];
        // SAFETY: the CPU has AMX (checked by the callers); the panels and output are whole.
        assert_eq!(unsafe { run::<TOKENS>(&specs) }, 0);
        for feature in 0..FEATURES {
            for token in 0..TOKENS {
                let expected: i32 = (0..k)
                    .map(|c| w[feature * k + c] as i32 * t[token * k + c] as i32)
                    .sum();
                let at = feature as isize * feature_stride + token as isize * token_stride;
                assert_eq!(
                    out[at as usize], expected,
                    "{TOKENS} tokens, k {k}, feature {feature}, token {token}"
                );
            }
        }
    }

    #[test]
    fn tiles_are_exact_integer_sums_in_every_store_layout() {
        if !available() {
            // No AMX here: then tract must never be offered these kernels.
            let pool = tract_linalg::mmm_routines::runnable_for(&tract_linalg::isa::native());
            assert!(pool
                .iter()
                .all(|kernel| kernel.name() != NAME_32X32 && kernel.name() != NAME_32X16));
            return;
        }
        for k in [64, 384, 1536, 100, 4, 70] {
            tile::<32>(k, 1, FEATURES as isize);
            tile::<32>(k, 32, 1);
            tile::<16>(k, 1, FEATURES as isize);
            tile::<16>(k, 16, 1);
        }
    }

    #[test]
    fn weights_are_tracts_k4_layout_padded_to_whole_steps() {
        for (mn, k) in [(32, 384), (40, 312), (5, 7), (64, 1200)] {
            let (weights, _) = matrix(mn, k, 3);
            let ours = WeightSteps.prepare_one(&weights, 1, 0).expect("packs");
            let ours = ours.downcast_ref::<EagerPackedInput>().expect("eager");
            let tracts = PackedI8K4::new(FEATURES)
                .prepare_one(&weights, 1, 0)
                .expect("packs");
            let tracts = tracts.downcast_ref::<EagerPackedInput>().expect("eager");
            let used = tracts.panel_bytes;
            assert_eq!(ours.panel_bytes, k.div_ceil(64) * 64 * FEATURES);
            for (panel, theirs) in ours
                .packed
                .as_bytes()
                .chunks(ours.panel_bytes)
                .zip(tracts.packed.as_bytes().chunks(used))
            {
                assert_eq!(&panel[..used], theirs, "{mn}×{k}");
                assert!(panel[used..].iter().all(|&b| b == 0), "{mn}×{k}: padding");
            }
        }
        // The packing of a transposed view (`k` strided) is the same.
        let (weights, _) = matrix(40, 100, 4);
        let transposed = weights.clone().permute_axes(&[1, 0]).expect("permutes");
        let direct = WeightSteps.prepare_one(&weights, 1, 0).expect("packs");
        let strided = WeightSteps
            .prepare_one_view(&transposed.view(), 0, 1)
            .expect("packs");
        let bytes = |p: &dyn MMMInputValue| {
            p.downcast_ref::<EagerPackedInput>()
                .expect("eager")
                .packed
                .as_bytes()
                .to_vec()
        };
        assert_eq!(bytes(&*direct), bytes(&*strided));
    }

    #[test]
    fn the_tier_names_the_kernels_for_products_of_several_columns() {
        let query = |m, k, n| Query {
            weight: tract_linalg::WeightType::Plain(DatumType::I8),
            activation: DatumType::I8,
            accumulators: tvec!(DatumType::I32),
            store: None,
            allow_extractor: false,
            m: Some(m),
            k: Some(k),
            n: Some(n),
        };
        let isa = tract_linalg::isa::native();
        let ask = |q: &Query, acc| preferred(&isa, acc, q, &[]);
        assert_eq!(ask(&query(384, 384, 128), DatumType::I32), Some(NAME_32X32));
        assert_eq!(ask(&query(384, 384, 17), DatumType::I32), Some(NAME_32X32));
        assert_eq!(ask(&query(384, 384, 16), DatumType::I32), Some(NAME_32X16));
        assert_eq!(ask(&query(384, 384, 1), DatumType::I32), None, "one column");
        assert_eq!(ask(&query(312, 1200, 48), DatumType::I32), Some(NAME_32X32));
        assert_eq!(ask(&query(384, 384, 128), DatumType::F32), None);
    }
}
