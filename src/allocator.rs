//! How the process's allocator treats the memory inference frees (glibc; a no-op elsewhere).
//!
//! tract allocates each run's activations afresh: tens of buffers per layer, megabytes each
//! for long texts. glibc serves allocations above 128 KiB with their own `mmap` and unmaps
//! them when freed, so every run faulted its activations back in, page by page: 14 % of an
//! x86 inference at 128 tokens was the kernel's (page faults, zeroing, unmapping; perf, 2-core
//! Xeon). [`keep_freed_memory`] keeps freed memory in the allocator's heaps for the next run
//! instead; whoever calls it hands that memory back when it is idle ([`return_freed_memory`]:
//! `sentimqd` does after each quiet poll interval of an inference thread).

/// Serves allocations up to glibc's largest mmap threshold (32 MiB on 64-bit targets, 16 MiB
/// on 32-bit) from the heaps and stops glibc returning a heap's top by itself, so freed
/// activations are reused by the next run instead of unmapped and faulted in again.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's DEFAULT_MMAP_THRESHOLD_MAX: 4 MiB × sizeof(long).
        let largest = (4 << 20) * std::mem::size_of::<libc::c_long>() as libc::c_int;
        // SAFETY: mallopt only changes allocator tunables (under glibc's own lock); a refused
        // setting (return 0) merely leaves the default.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, largest);
            libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
        }
    }
}

/// glibc's default thresholds held fixed, for loading a model: every allocation above 128 KiB
/// gets its own `mmap`, unmapped when freed, and a heap's free top above 128 KiB is returned.
/// Loading frees far more than it keeps (the file's bytes, the protobuf, each plan's optimizer
/// copies and duplicate packs); by default glibc raises its mmap threshold to the size of the
/// largest such block freed, and later ones of that size then stay in the heaps when freed,
/// raising the process's peak resident memory (by 8 to 10 MiB for `sentimqd` with MiniLM,
/// measured). Call [`keep_freed_memory`] once loading is done.
pub fn return_freed_memory_while_loading() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's DEFAULT_MMAP_THRESHOLD_MIN and DEFAULT_TRIM_THRESHOLD; setting them explicitly
        // also turns the dynamic adjustment off.
        let threshold: libc::c_int = 128 * 1024;
        // SAFETY: as in `keep_freed_memory`.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
            libc::mallopt(libc::M_TRIM_THRESHOLD, threshold);
        }
    }
}

/// Hands memory the allocator holds free back to the kernel. Loading and optimizing a model
/// frees much more than it keeps, after a reload the old model's pages are free too, and
/// [`keep_freed_memory`] keeps the last runs' activations; `malloc_trim` releases every free
/// page.
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it walks glibc's own heaps under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
