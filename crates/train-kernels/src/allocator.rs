//! Allocator settings for the training step, which allocates and frees many 1–32 MiB tensors
//! per step: by default glibc serves each from a fresh `mmap` (or trims the heap after
//! freeing it), and the kernel zeroes every new page. perf measured 25–30 % of a MiniLM
//! training step in page faults and `clear_page` before these settings.

/// Makes glibc keep freed memory for reuse instead of returning it to the kernel: blocks up
/// to 32 MiB (glibc's largest `mmap` threshold on 64-bit) come from the heap, the heap is
/// never trimmed, and it grows 256 MiB at a time. Equivalent to
/// `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=268435456`.
/// Process-wide; a no-op on other C libraries.
pub fn retain_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables (under glibc's own lock); a refused
    // setting (return 0) merely leaves the default.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}
