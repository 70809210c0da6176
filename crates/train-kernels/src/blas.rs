//! `cblas_sgemm` from OpenBLAS, called single-threaded: the kernels split work across rayon's
//! pool themselves, so the training step has one thread pool and no BLAS threads spinning
//! beside it. (Debian's serial OpenBLAS is not safe to call from several threads at once; the
//! pthread build with one thread is, and runs each call on the calling thread.)

use std::os::raw::c_int;
use std::sync::Once;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;

extern "C" {
    fn openblas_set_num_threads(threads: c_int);
    #[allow(clippy::too_many_arguments)]
    fn cblas_sgemm(
        order: c_int,
        trans_a: c_int,
        trans_b: c_int,
        m: c_int,
        n: c_int,
        k: c_int,
        alpha: f32,
        a: *const f32,
        lda: c_int,
        b: *const f32,
        ldb: c_int,
        beta: f32,
        c: *mut f32,
        ldc: c_int,
    );
}

/// A row-major matrix operand: its elements, row stride, and whether it is used transposed.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub data: &'a [f32],
    pub stride: usize,
    pub transposed: bool,
}

impl<'a> Operand<'a> {
    /// `data` as stored, rows `stride` apart.
    pub fn plain(data: &'a [f32], stride: usize) -> Self {
        Operand {
            data,
            stride,
            transposed: false,
        }
    }

    /// `data` transposed, its stored rows `stride` apart.
    pub fn transposed(data: &'a [f32], stride: usize) -> Self {
        Operand {
            data,
            stride,
            transposed: true,
        }
    }

    /// Checks that `rows × cols` of `op(self)` fit in `data`.
    fn check(&self, rows: usize, cols: usize, name: &str) {
        let (stored_rows, stored_cols) = if self.transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        assert!(
            stored_cols <= self.stride,
            "sgemm: {name} row of {stored_cols} exceeds its stride {}",
            self.stride
        );
        if stored_rows > 0 && stored_cols > 0 {
            let needed = (stored_rows - 1) * self.stride + stored_cols;
            assert!(
                needed <= self.data.len(),
                "sgemm: {name} needs {needed} elements, has {}",
                self.data.len()
            );
        }
    }
}

/// `c (m × n, rows c_stride apart) = alpha · op(a) (m × k) · op(b) (k × n) + beta · c`.
///
/// Panics when an operand is too short for its shape (a bug in the caller, never input).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    c: &mut [f32],
    c_stride: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    a.check(m, k, "a");
    b.check(k, n, "b");
    Operand::plain(c, c_stride).check(m, n, "c");
    let int = |v: usize| c_int::try_from(v).expect("sgemm: dimension over i32::MAX");
    static SINGLE_THREADED: Once = Once::new();
    // SAFETY: plain FFI calls; every operand was checked above to hold its matrix, `c` is
    // exclusively borrowed, and OpenBLAS with one thread works on the calling thread only.
    unsafe {
        SINGLE_THREADED.call_once(|| openblas_set_num_threads(1));
        cblas_sgemm(
            ROW_MAJOR,
            if a.transposed { TRANS } else { NO_TRANS },
            if b.transposed { TRANS } else { NO_TRANS },
            int(m),
            int(n),
            int(k),
            alpha,
            a.data.as_ptr(),
            int(a.stride.max(1)),
            b.data.as_ptr(),
            int(b.stride.max(1)),
            beta,
            c.as_mut_ptr(),
            int(c_stride.max(1)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_naive_product_in_every_transposition() {
        let (m, n, k) = (5, 3, 4);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| 1.0 - i as f32 * 0.25).collect();
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut want = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        for (a_op, b_op) in [
            (Operand::plain(&a, k), Operand::plain(&b, n)),
            (Operand::transposed(&at, m), Operand::plain(&b, n)),
            (Operand::plain(&a, k), Operand::transposed(&bt, k)),
            (Operand::transposed(&at, m), Operand::transposed(&bt, k)),
        ] {
            let mut c = vec![1f32; m * n];
            sgemm(m, n, k, 2.0, a_op, b_op, 0.5, &mut c, n);
            for (got, want) in c.iter().zip(&want) {
                assert!((got - (2.0 * want + 0.5)).abs() < 1e-4, "{got} vs {want}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "needs")]
    fn short_operands_are_refused() {
        let mut c = vec![0f32; 4];
        sgemm(
            2,
            2,
            2,
            1.0,
            Operand::plain(&[1.0; 3], 2),
            Operand::plain(&[1.0; 4], 2),
            0.0,
            &mut c,
            2,
        );
    }
}
