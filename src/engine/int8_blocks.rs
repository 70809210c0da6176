//! What the engine's SIMD int8 product kernels (`neon_int8` on aarch64, `avx2_int8` on x86_64)
//! share: their packing ([`Blocks`]), the 8 × 8 tile one call computes and how it is stored,
//! the kernel's declaration to tract, and the dispatch rule of their tiers.
//!
//! Both operands are packed alike: panels of [`PANEL_ROWS`] rows (features for the weights,
//! tract's `a`; tokens for the activations, tract's `b`), `k` padded with zeros to whole blocks
//! of `k_block` (one vector register's bytes), and in each block the panel's rows one after the
//! other, so a kernel reads a row's block with one load and several rows' with one multi-register
//! load. A weight panel starts with a header of [`HEADER_BYTES`] whose first byte is 1 when the
//! panel holds −128. The kernels' fast paths add two int8 products in an int16 lane, which only
//! −128 · −128 twice overflows: `sentimq build` quantizes weights symmetrically to −127..=127
//! (as onnxruntime's `quantize_dynamic` does), and a flagged panel (another tool's graph) takes
//! the kernel's exact path for any int8. Weights are packed once per process
//! ([`super::weight_packs`]); activations on every run.

use tract_linalg::isa::{Arch, IsaReq};
use tract_linalg::mmm::{
    DynKernel, EagerPackedInput, FusedKerSpec, FusedSpec, MMMInputFormat, MMMInputValue, MatMatMul,
    OutputStoreKer, PackedMatrixStorage, Query,
};
use tract_linalg::WeightType;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

use super::weight_packs;

/// Rows of a packed panel, and features (`m`) and tokens (`n`) of the tile one call computes.
pub(super) const PANEL_ROWS: usize = 8;

/// Bytes of a weight panel's header (its first byte: 1 if the panel holds −128, else 0): an
/// AVX2 register's width, so that blocks stay aligned to one.
pub(super) const HEADER_BYTES: usize = 32;

/// The packing of both operands (see the module's documentation).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct Blocks {
    weights: bool,
    k_block: usize,
}

impl Blocks {
    pub(super) fn weights(k_block: usize) -> Blocks {
        Blocks {
            weights: true,
            k_block,
        }
    }

    pub(super) fn tokens(k_block: usize) -> Blocks {
        Blocks {
            weights: false,
            k_block,
        }
    }

    fn header_bytes(&self) -> usize {
        if self.weights {
            HEADER_BYTES
        } else {
            0
        }
    }

    fn block_bytes(&self) -> usize {
        PANEL_ROWS * self.k_block
    }

    fn panel_bytes(&self, k: usize) -> usize {
        self.header_bytes() + k.div_ceil(self.k_block) * self.block_bytes()
    }

    /// The byte of a panel set of `panel` bytes that holds value `c` of `row`.
    fn position(&self, panel: usize, row: usize, c: usize) -> usize {
        (row / PANEL_ROWS) * panel
            + self.header_bytes()
            + (c / self.k_block) * self.block_bytes()
            + (row % PANEL_ROWS) * self.k_block
            + c % self.k_block
    }

    /// Writes the `rows × k` int8 values of `t` (`k` and rows on the given axes) into `bytes`,
    /// zeroed panels of [`Self::panel_bytes`], and flags the weight panels holding −128.
    fn fill(&self, t: &TensorView, k_axis: usize, mn_axis: usize, bytes: &mut [u8]) {
        let (k, rows) = (t.shape()[k_axis], t.shape()[mn_axis]);
        let (k_stride, row_stride) = (t.strides()[k_axis], t.strides()[mn_axis]);
        let panel = self.panel_bytes(k);
        // SAFETY: the view's data holds `rows × k` int8 at these strides.
        let values = unsafe { t.as_ptr_unchecked::<i8>() };
        for row in 0..rows {
            // SAFETY: `row < rows`.
            let first = unsafe { values.offset(row as isize * row_stride) };
            for block in 0..k.div_ceil(self.k_block) {
                let start = block * self.k_block;
                let to = self.position(panel, row, start);
                let width = self.k_block.min(k - start);
                let target = &mut bytes[to..to + width];
                if k_stride == 1 {
                    // SAFETY: the block's `width` values of this row are contiguous in the view.
                    let source =
                        unsafe { std::slice::from_raw_parts(first.add(start).cast::<u8>(), width) };
                    target.copy_from_slice(source);
                } else {
                    for (c, byte) in target.iter_mut().enumerate() {
                        // SAFETY: `start + c < k` addresses a value of this row.
                        *byte = unsafe { *first.offset((start + c) as isize * k_stride) } as u8;
                    }
                }
            }
        }
        if self.weights {
            for panel in bytes.chunks_exact_mut(panel) {
                let (header, blocks) = panel.split_at_mut(HEADER_BYTES);
                header[0] = u8::from(blocks.contains(&(i8::MIN as u8)));
            }
        }
    }
}

impl std::fmt::Display for Blocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let side = if self.weights { "weights" } else { "tokens" };
        write!(f, "I8K{}[{PANEL_ROWS}] ({side})", self.k_block)
    }
}

impl MMMInputFormat for Blocks {
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
        let (k, rows) = (t.shape()[k_axis], t.shape()[mn_axis]);
        let panel = self.panel_bytes(k);
        let pack = || {
            // SAFETY: zeroed before the values are written; read only after.
            let mut blob =
                unsafe { Blob::new_for_size_and_align(rows.div_ceil(PANEL_ROWS) * panel, 32) };
            let bytes = blob.as_bytes_mut();
            bytes.fill(0);
            self.fill(t, k_axis, mn_axis, bytes);
            blob
        };
        // Constants once per process, shared by the plans of every length (the weights, and in
        // the long plans' products the weights on the tokens' side); activations every run.
        let position = |row, c| self.position(panel, row, c);
        let packed =
            weight_packs::packed_once(self, t, k_axis, mn_axis, (position, self.k_block), pack);
        let format = Box::new(self.clone());
        Ok(weight_packs::packed_input(format, packed, panel, (k, rows)))
    }

    fn precursor(&self) -> WeightType {
        WeightType::Plain(DatumType::I8)
    }

    fn r(&self) -> usize {
        PANEL_ROWS
    }

    fn k_alignment(&self) -> usize {
        self.k_block
    }

    fn merge_with<'o, 'a: 'o, 'b: 'o>(
        &'a self,
        other: &'b dyn MMMInputFormat,
    ) -> Option<&'o dyn MMMInputFormat> {
        other
            .downcast_ref::<Blocks>()
            .filter(|other| *other == self)
            .map(|_| self as _)
    }

    fn mem_size(&self, k: TDim, mn: TDim) -> TDim {
        mn.divceil(PANEL_ROWS) * self.panel_bytes(k.to_usize().unwrap_or(0))
    }

    fn extract_at_mn_f16(&self, _: &EagerPackedInput, _: usize, _: &mut [f16]) -> TractResult<()> {
        bail!("{self}: no f16 extraction")
    }

    fn extract_at_mn_f32(&self, _: &EagerPackedInput, _: usize, _: &mut [f32]) -> TractResult<()> {
        bail!("{self}: no f32 extraction")
    }
}

/// The 8 × 8 tile of one call, tokens × features (a token's 8 features contiguous).
#[repr(C, align(32))]
pub(super) struct Tile(pub(super) [[i32; PANEL_ROWS]; PANEL_ROWS]);

/// A kernel's product: adds to the tile the products over `blocks` blocks of `k` of a weight
/// panel's 8 features (`features`, past its header) and a token panel's 8 tokens (`tokens`),
/// exactly for any int8 when `holds_min` (the panel's flag), else for weights without −128.
pub(super) type AddProduct = unsafe fn(
    holds_min: bool,
    blocks: usize,
    features: *const u8,
    tokens: *const u8,
    tile: &mut Tile,
);

/// The declaration to tract of a kernel computing 8 × 8 tiles with `add`, over blocks of
/// `k_block`, accepting only the product and its store (the engine's `DequantizeRows` scales
/// and adds the bias; tract runs anything else itself).
pub(super) fn declare(
    name: &str,
    arch: Arch,
    isa: IsaReq,
    k_block: usize,
    run: unsafe fn(&[FusedKerSpec<i32>]) -> isize,
) -> Box<dyn MatMatMul> {
    let packings: Vec<(Box<dyn MMMInputFormat>, Box<dyn MMMInputFormat>)> = vec![(
        Box::new(Blocks::weights(k_block)),
        Box::new(Blocks::tokens(k_block)),
    )];
    Box::new(DynKernel::<PANEL_ROWS, PANEL_ROWS, i32> {
        name: name.to_string(),
        kernel: run,
        arch: Some(arch),
        emulated: || false,
        packings,
        stores: vec![DatumType::I32],
        built: true,
        isa,
        boost: || 0,
        can_fuse: |spec| matches!(spec, FusedSpec::AddMatMul { .. } | FusedSpec::Store(_)),
        row_major_store: false,
    })
}

/// Whether a tier of these kernels claims the product: int8 × int8 accumulated in int32, with
/// more than one column (`n`, tokens); one-column products keep tract's matrix-vector kernels.
pub(super) fn claims(accumulator: DatumType, query: &Query) -> bool {
    accumulator == DatumType::I32
        && query.weight == WeightType::Plain(DatumType::I8)
        && query.activation.unquantized() == DatumType::I8
        && query.n != Some(1)
}

/// Runs the operations tract asks of one tile (ending in `Done`) with `add`, over blocks of
/// `k_block`. Returns 0, or 1 for an operation it does not implement (tract then fails the
/// product: the kernel's `can_fuse` keeps them away).
///
/// # Safety
/// The pointers in `specs` are tract's panels (packed by [`Blocks`] with `k_block`) and output
/// for this tile; `add` can run on this CPU.
pub(super) unsafe fn run_tile(
    specs: &[FusedKerSpec<i32>],
    k_block: usize,
    add: AddProduct,
) -> isize {
    let mut tile = Tile([[0; PANEL_ROWS]; PANEL_ROWS]);
    for spec in specs {
        match *spec {
            FusedKerSpec::Done => break,
            FusedKerSpec::Clear => tile.0 = [[0; PANEL_ROWS]; PANEL_ROWS],
            FusedKerSpec::AddMatMul {
                k,
                pa,
                pb,
                packing: 0,
            } => {
                let blocks = k.div_ceil(k_block);
                if blocks == 0 {
                    continue;
                }
                // SAFETY: `pa` is a weight panel: its header first, then `blocks` blocks of 8
                // rows, as the token panel `pb` (per the contract).
                unsafe { add(*pa != 0, blocks, pa.add(HEADER_BYTES), pb, &mut tile) };
            }
            // SAFETY: `store` addresses this tile's outputs (tract's).
            FusedKerSpec::Store(store) if store.item_size == 4 => unsafe {
                store_tile(&tile, store)
            },
            _ => return 1,
        }
    }
    0
}

/// Writes the tile to `store` (`row_byte_stride` between features, `col_byte_stride` between
/// tokens): a token's 8 features at once when they are contiguous, as in the engine's products
/// and tract's border scratch; one by one otherwise.
///
/// # Safety
/// `store` addresses the 8 × 8 int32 outputs of this tile (tract's).
unsafe fn store_tile(tile: &Tile, store: OutputStoreKer) {
    for (token, features) in tile.0.iter().enumerate() {
        let row = token as isize * store.col_byte_stride;
        // SAFETY (both branches): per the contract.
        unsafe {
            if store.row_byte_stride == 4 {
                store
                    .ptr
                    .offset(row)
                    .cast::<[i32; PANEL_ROWS]>()
                    .write_unaligned(*features);
            } else {
                for (feature, &value) in features.iter().enumerate() {
                    let at = row + feature as isize * store.row_byte_stride;
                    store.ptr.offset(at).cast::<i32>().write_unaligned(value);
                }
            }
        }
    }
}

/// Checks of a kernel built on these pieces, for its module's tests.
#[cfg(test)]
pub(super) mod checks {
    use super::*;

    /// `rows × k` int8 values covering the whole range, −128 included unless `no_min`.
    pub(in crate::engine) fn matrix(rows: usize, k: usize, seed: usize, no_min: bool) -> Vec<i8> {
        (0..rows * k)
            .map(|i| ((i * 7919 + seed * 104_729) % 256) as u8 as i8)
            .map(|v| if no_min { v.max(-127) } else { v })
            .collect()
    }

    fn tensor(rows: usize, k: usize, values: &[i8]) -> Tensor {
        Tensor::from_shape(&[rows, k], values).expect("a tensor")
    }

    fn eager(p: &dyn MMMInputValue) -> &EagerPackedInput {
        p.downcast_ref::<EagerPackedInput>().expect("eager")
    }

    /// Runs `run` (a kernel over blocks of `k_block`) on one tile of `weights · tokensᵀ` (8
    /// features and 8 tokens of `k` values) in several store layouts and checks every sum. The
    /// tokens hold −128; so do the weights when `weights_min`. Feature 0 and token 0 start with
    /// the largest products: −127 (or −128) · −128 over the first 64 `k`.
    pub(in crate::engine) fn tiles_are_exact(
        run: unsafe fn(&[FusedKerSpec<i32>]) -> isize,
        k_block: usize,
    ) {
        for k in [16, 32, 384, 1536, 100, 4, 70, 1] {
            for weights_min in [false, true] {
                for (feature_stride, token_stride) in [(1, 8), (8, 1), (1, 16)] {
                    tile(run, k_block, k, feature_stride, token_stride, weights_min);
                }
            }
        }
    }

    fn tile(
        run: unsafe fn(&[FusedKerSpec<i32>]) -> isize,
        k_block: usize,
        k: usize,
        feature_stride: isize,
        token_stride: isize,
        weights_min: bool,
    ) {
        let mut w = matrix(PANEL_ROWS, k, 1, !weights_min);
        let mut t = matrix(PANEL_ROWS, k, 2, false);
        for c in 0..k.min(64) {
            w[c] = if weights_min { -128 } else { -127 };
            t[c] = -128;
        }
        let weights = Blocks::weights(k_block)
            .prepare_one(&tensor(PANEL_ROWS, k, &w), 1, 0)
            .expect("packs");
        let tokens = Blocks::tokens(k_block)
            .prepare_one(&tensor(PANEL_ROWS, k, &t), 1, 0)
            .expect("packs");
        let mut out = vec![i32::MIN; PANEL_ROWS * PANEL_ROWS * 2];
        let store = OutputStoreKer {
            ptr: out.as_mut_ptr().cast(),
            row_byte_stride: feature_stride * 4,
            col_byte_stride: token_stride * 4,
            item_size: 4,
        };
        let product = FusedKerSpec::AddMatMul {
            k,
            pa: eager(&*weights).packed.as_ptr(),
            pb: eager(&*tokens).packed.as_ptr(),
            packing: 0,
        };
        // Twice into one tile: the second adds to the first.
        let specs = [
            FusedKerSpec::Clear,
            product,
            product,
            FusedKerSpec::Store(store),
            FusedKerSpec::Done,
        ];
        // SAFETY: the panels and the output are whole; the caller's kernel runs here.
        assert_eq!(unsafe { run(&specs) }, 0);
        for feature in 0..PANEL_ROWS {
            for token in 0..PANEL_ROWS {
                let expected: i32 = (0..k)
                    .map(|c| w[feature * k + c] as i32 * t[token * k + c] as i32)
                    .sum();
                let at = feature as isize * feature_stride + token as isize * token_stride;
                assert_eq!(
                    out[at as usize],
                    2 * expected,
                    "k {k}, −128 in weights {weights_min}, feature {feature}, token {token}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::checks::matrix;
    use super::*;

    #[test]
    fn panels_are_blocks_of_k_row_after_row() {
        let (rows, k) = (10, 40);
        let v = matrix(rows, k, 3, false);
        let values = Tensor::from_shape(&[rows, k], &v).expect("a tensor");
        for k_block in [16, 32] {
            for format in [Blocks::tokens(k_block), Blocks::weights(k_block)] {
                let packed = format.prepare_one(&values, 1, 0).expect("packs");
                let packed = packed.downcast_ref::<EagerPackedInput>().expect("eager");
                let header = format.header_bytes();
                let blocks = k.div_ceil(k_block);
                assert_eq!(packed.panel_bytes, header + blocks * 8 * k_block);
                let bytes = packed.packed.as_bytes();
                assert_eq!(bytes.len(), 2 * packed.panel_bytes);
                for row in 0..16 {
                    for c in 0..blocks * k_block {
                        let at = (row / 8) * packed.panel_bytes
                            + header
                            + (c / k_block) * 8 * k_block
                            + (row % 8) * k_block
                            + c % k_block;
                        let expected = if row < rows && c < k {
                            v[row * k + c]
                        } else {
                            0
                        };
                        assert_eq!(bytes[at] as i8, expected, "{format}: row {row}, k {c}");
                    }
                }
                // The packing of a transposed view (`k` strided) is the same.
                let transposed = values.clone().permute_axes(&[1, 0]).expect("permutes");
                let strided = format
                    .prepare_one_view(&transposed.view(), 0, 1)
                    .expect("packs");
                let strided = strided.downcast_ref::<EagerPackedInput>().expect("eager");
                assert_eq!(strided.packed.as_bytes(), bytes);
            }
        }
    }

    #[test]
    fn weight_panels_holding_minus_128_are_flagged_in_their_header() {
        let mut w = matrix(16, 40, 4, true);
        w[8 * 40 + 39] = -128;
        let weights = Tensor::from_shape(&[16, 40], &w).expect("a tensor");
        let packed = Blocks::weights(16)
            .prepare_one(&weights, 1, 0)
            .expect("packs");
        let packed = packed.downcast_ref::<EagerPackedInput>().expect("eager");
        let flags: Vec<u8> = packed
            .packed
            .as_bytes()
            .chunks(packed.panel_bytes)
            .map(|panel| panel[0])
            .collect();
        assert_eq!(flags, [0, 1]);
    }

    #[test]
    fn tiers_claim_int8_products_of_several_columns() {
        let query = |weight, activation, n| Query {
            weight: WeightType::Plain(weight),
            activation,
            accumulators: tvec!(DatumType::I32),
            store: None,
            allow_extractor: false,
            m: Some(384),
            k: Some(384),
            n: Some(n),
        };
        let int8 = |n| query(DatumType::I8, DatumType::I8, n);
        assert!(claims(DatumType::I32, &int8(128)));
        assert!(claims(DatumType::I32, &int8(2)));
        assert!(!claims(DatumType::I32, &int8(1)), "one column");
        assert!(!claims(DatumType::F32, &int8(128)));
        assert!(!claims(
            DatumType::I32,
            &query(DatumType::I8, DatumType::U8, 128)
        ));
        assert!(!claims(
            DatumType::F32,
            &query(DatumType::F32, DatumType::F32, 128)
        ));
    }
}
