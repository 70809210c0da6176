//! Runs a kernel's loops compiled for AVX2 and FMA when the CPU has them (every x86_64 this
//! project meets: the AVX2-only AMD EPYC and the AVX-512 Xeons), else for the baseline the
//! crate is built for. Only codegen changes: Rust never contracts `a * b + c` into an FMA on its
//! own and the reductions fix their summation order, so both paths give the same bits.

/// Calls `f`, compiled with AVX2 and FMA enabled where available. `f` and what it calls
/// should be `#[inline]` so that they are compiled into the AVX2 copy.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features `with_avx2` is compiled for.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}
