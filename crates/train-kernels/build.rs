//! Links OpenBLAS statically from Debian's `libopenblas-pthread-dev` (or the directory in
//! `SENTIMQ_OPENBLAS_LIB_DIR`): only `cblas_sgemm` and `openblas_set_num_threads` are used, so
//! the binary needs no BLAS at run time and no Fortran runtime.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=SENTIMQ_OPENBLAS_LIB_DIR");
    let dir = match std::env::var_os("SENTIMQ_OPENBLAS_LIB_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
            let multiarch = match arch.as_str() {
                "x86_64" => "x86_64-linux-gnu",
                "aarch64" => "aarch64-linux-gnu",
                "arm" => "arm-linux-gnueabihf",
                other => other,
            };
            PathBuf::from(format!("/usr/lib/{multiarch}/openblas-pthread"))
        }
    };
    let archive = dir.join("libopenblas.a");
    if !archive.is_file() {
        panic!(
            "sentimq's training kernels link OpenBLAS statically and found no {}: install \
             Debian's libopenblas-pthread-dev (scripts/setup.sh does), or point \
             SENTIMQ_OPENBLAS_LIB_DIR at a directory holding libopenblas.a",
            archive.display()
        );
    }
    println!("cargo:rerun-if-changed={}", archive.display());
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static=openblas");
}
