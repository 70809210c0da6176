//! Packed weights made once per process, for the engine's own int8 weight packings (`amx`'s,
//! and `int8_blocks`' for `neon_int8` and `avx2_int8`), and the check of what they pack.
//!
//! Every plan packs its constant weights while tract optimizes it (`OptMatMulPack` folded as a
//! constant), and the plans of one model pack the same weights again: `plans`' constant pool
//! then points each plan at the copy made first, but only after the plan has made its own, so
//! building a plan allocated a second copy of every weight (5.2 MB of MiniLM's 61.8 MB heap
//! peak at load on x86, heaptrack). [`packed_once`] looks for a live pack of the same values in
//! the same format first and hands that out instead: no allocation, no copy.
//!
//! Packs are found by format, `k` and rows, then checked value by value against the matrix
//! being packed (a candidate of other values fails at its first differing byte), so a match is
//! always exact. The registry holds them weakly: a pack lives as long as a plan uses it.
//!
//! Only packs made while a plan is optimized ([`while_building_plan`]) are constants that other
//! plans share; a pack made while a plan runs is of activations, used once, and is made without
//! the registry. Either operand's format goes through [`packed_once`]: in the long plans tract
//! puts the weights on the side the tokens take in the short ones (it swaps the operands only
//! while tokens are fewer than output features).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use tract_linalg::mmm::{EagerPackedInput, MMMInputFormat, MMMInputValue, PackedExoticFact};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;

/// Packs by (format, `k`, rows).
type Registry = HashMap<(String, usize, usize), Vec<Weak<Blob>>>;

fn registry() -> &'static Mutex<Registry> {
    static PACKS: OnceLock<Mutex<Registry>> = OnceLock::new();
    PACKS.get_or_init(Default::default)
}

thread_local! {
    /// Whether this thread is optimizing a plan (its packs are of constants).
    static BUILDING_PLAN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `build` (a plan's optimization) with [`packed_once`] sharing the packs it makes.
pub(super) fn while_building_plan<T>(build: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            BUILDING_PLAN.with(|building| building.set(self.0));
        }
    }
    let _restore = Restore(BUILDING_PLAN.with(|building| building.replace(true)));
    build()
}

/// Fails unless `t` is an int8 matrix with distinct `k` and rows axes, as `format` packs.
pub(super) fn ensure_int8_matrix(
    format: &dyn std::fmt::Display,
    t: &TensorView,
    k_axis: usize,
    mn_axis: usize,
) -> TractResult<()> {
    ensure!(
        k_axis != mn_axis,
        "k and mn axes must differ (both {k_axis})"
    );
    ensure!(
        t.datum_type().unquantized() == DatumType::I8,
        "{format} packs int8, not {:?}",
        t.datum_type()
    );
    Ok(())
}

/// The pack of the int8 matrix `t` (`k` and rows on the given axes) in `format`: while a plan
/// is optimized, a live one of the same values if there is one, else `pack()`'s, registered;
/// otherwise (activations, at run time) `pack()`'s. `position(row, c)` is the byte
/// of the pack that holds value `c` of `row`, and values `c..c + run` of a row (`c` a multiple
/// of `run`) lie in consecutive bytes; bytes it never names (padding, headers) must be a
/// function of the values.
pub(super) fn packed_once(
    format: &dyn std::fmt::Display,
    t: &TensorView,
    k_axis: usize,
    mn_axis: usize,
    (position, run): (impl Fn(usize, usize) -> usize, usize),
    pack: impl FnOnce() -> Blob,
) -> Arc<Blob> {
    if !BUILDING_PLAN.with(Cell::get) {
        return Arc::new(pack());
    }
    let (k, rows) = (t.shape()[k_axis], t.shape()[mn_axis]);
    let key = (format.to_string(), k, rows);
    let same_values = |blob: &Blob| holds(blob, t, k_axis, mn_axis, (&position, run));
    {
        let registry = registry().lock().unwrap_or_else(PoisonError::into_inner);
        let found = registry
            .get(&key)
            .into_iter()
            .flatten()
            .filter_map(Weak::upgrade)
            .find(|blob| same_values(blob));
        if let Some(blob) = found {
            return blob;
        }
    }
    // Packed outside the lock; two threads packing the same matrix at once both keep theirs
    // (the constant pool still merges them).
    let blob = Arc::new(pack());
    let mut registry = registry().lock().unwrap_or_else(PoisonError::into_inner);
    let packs = registry.entry(key).or_default();
    packs.retain(|pack| pack.strong_count() > 0);
    packs.push(Arc::downgrade(&blob));
    blob
}

/// A packed `mn × k` matrix in `format`, as tract's products take it.
pub(super) fn packed_input(
    format: Box<dyn MMMInputFormat>,
    packed: Arc<Blob>,
    panel_bytes: usize,
    (k, mn): (usize, usize),
) -> Box<dyn MMMInputValue> {
    Box::new(EagerPackedInput {
        fact: PackedExoticFact {
            format,
            mn: mn.to_dim(),
            k,
        },
        packed,
        panel_bytes,
        mn,
    })
}

/// Whether `blob` holds every value of `t` where `position` says: runs of `run` values compared
/// as slices when `k` is contiguous, value by value otherwise.
fn holds(
    blob: &Blob,
    t: &TensorView,
    k_axis: usize,
    mn_axis: usize,
    (position, run): (impl Fn(usize, usize) -> usize, usize),
) -> bool {
    let (k, rows) = (t.shape()[k_axis], t.shape()[mn_axis]);
    let (k_stride, row_stride) = (t.strides()[k_axis], t.strides()[mn_axis]);
    let bytes = blob.as_bytes();
    // SAFETY: the view's data holds `rows × k` int8 at these strides.
    let values = unsafe { t.as_ptr_unchecked::<i8>() };
    if k_stride == 1 && run > 0 {
        return (0..rows).all(|row| {
            // SAFETY: row `row < rows` of the view: `k` contiguous values.
            let source = unsafe {
                std::slice::from_raw_parts(values.offset(row as isize * row_stride).cast::<u8>(), k)
            };
            source.chunks(run).enumerate().all(|(i, values)| {
                let at = position(row, i * run);
                bytes.get(at..at + values.len()) == Some(values)
            })
        });
    }
    (0..rows).all(|row| {
        (0..k).all(|c| {
            let at = row as isize * row_stride + c as isize * k_stride;
            // SAFETY: `row < rows` and `c < k` address a value of the view.
            let value = unsafe { *values.offset(at) };
            bytes.get(position(row, c)) == Some(&(value as u8))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in packing: the rows reversed, one byte of padding after each.
    fn pack_reversed(values: &[i8], calls: &mut usize) -> Arc<Blob> {
        let (rows, k) = (6, 10);
        let t = Tensor::from_shape(&[rows, k], values).expect("a tensor");
        let position = |row: usize, c: usize| (rows - 1 - row) * (k + 1) + c;
        let pack = || {
            *calls += 1;
            let mut bytes = vec![0u8; rows * (k + 1)];
            for row in 0..rows {
                for c in 0..k {
                    bytes[position(row, c)] = values[row * k + c] as u8;
                }
            }
            Blob::from_bytes(&bytes).expect("a blob")
        };
        while_building_plan(|| packed_once(&"reversed-test", &t.view(), 1, 0, (position, k), pack))
    }

    #[test]
    fn equal_weights_share_one_pack_and_different_ones_do_not() {
        let values: Vec<i8> = (0..60).map(|i| (i * 37 % 256) as u8 as i8).collect();
        let mut other = values.clone();
        other[59] ^= 1;
        let mut calls = 0;
        let first = pack_reversed(&values, &mut calls);
        let again = pack_reversed(&values.clone(), &mut calls);
        assert!(Arc::ptr_eq(&first, &again), "same values: the same pack");
        assert_eq!(calls, 1);
        let different = pack_reversed(&other, &mut calls);
        assert!(!Arc::ptr_eq(&first, &different), "one value differs");
        assert_eq!(calls, 2);
        // A view with `k` strided (checked value by value) finds the same pack.
        let (rows, k) = (6, 10);
        let transposed = Tensor::from_shape(&[rows, k], &values)
            .and_then(|t| t.permute_axes(&[1, 0]))
            .expect("a transposed tensor");
        let position = |row: usize, c: usize| (rows - 1 - row) * (k + 1) + c;
        let strided = while_building_plan(|| {
            packed_once(
                &"reversed-test",
                &transposed.view(),
                0,
                1,
                (position, k),
                || panic!("packed again"),
            )
        });
        assert!(Arc::ptr_eq(&first, &strided));
        // At run time (activations) every pack is made afresh, even of equal values.
        let t = Tensor::from_shape(&[rows, k], &values).expect("a tensor");
        let made = packed_once(&"reversed-test", &t.view(), 1, 0, (position, k), || {
            Blob::from_bytes(&[0; 66]).expect("a blob")
        });
        assert!(!Arc::ptr_eq(&first, &made), "outside a plan's optimization");
        // Once no plan holds a pack, it is made again.
        drop((first, again, strided));
        let _made_again = pack_reversed(&values, &mut calls);
        assert_eq!(calls, 3);
    }
}
