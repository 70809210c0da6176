#!/usr/bin/env bash
# Runs cargo for a Raspberry Pi target without Docker, with Debian's toolchain:
#   cross/build.sh <target> <cargo command and arguments...>
#   cross/build.sh aarch64-unknown-linux-gnu build --release --bin sentimqd --no-default-features
#   cross/build.sh armv7-unknown-linux-gnueabihf test --no-default-features --test it device::
#
# Targets: aarch64-unknown-linux-gnu (Pi 3/4/5, 64-bit OS), armv7-unknown-linux-gnueabihf
# (Pi 2/3/Zero 2, 32-bit OS). rustup cannot add targets here; Debian's rustc-web
# (/usr/bin/rustc, 1.96) is used with the target's prebuilt standard library from Debian's
# multiarch package libstd-rust-web-dev:<arm64|armhf> (the same rustc release). The GNU cross
# gcc links (through lld-15 for --release builds, below); `cargo test` and `cargo run` run the
# binaries under qemu-user. `scripts/setup.sh` installs the packages. With Docker, `cross build
# --release --target <target> --bin sentimqd --no-default-features` (Cross.toml) builds the
# same code, linked by GNU ld (1.3 MB larger on aarch64, no glibc 2.36 requirement).
#
# Output goes to $SENTIMQ_CROSS_TARGET_DIR (default target/cross): the compiler differs from
# rustup's, so its artifacts are kept apart from the host's.
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,4p' "$0" >&2
  exit 2
fi
target=$1
shift

. "$(dirname "$0")/targets.sh"
cross_target_tools "$target" || exit 2

# Release builds (what ships) link with LLVM's lld instead of GNU ld: relative relocations
# packed (DT_RELR, glibc >= 2.36: an aarch64 sentimqd's 1 MB of .rela.dyn becomes 11 kB) and
# identical functions folded (--icf=all). Debian 12's GNU ld 2.40 cannot pack them on ARM.
release=false
for arg in "$@"; do [ "$arg" = --release ] && release=true; done
lld_dir=${SENTIMQ_LLD_DIR:-/usr/lib/llvm-15/bin}

rustc=${SENTIMQ_CROSS_RUSTC:-/usr/bin/rustc}
cargo=${SENTIMQ_CROSS_CARGO:-/usr/bin/cargo}
missing=()
[ -x "$rustc" ] || missing+=("$rustc (package rustc-web)")
[ -x "$cargo" ] || missing+=("$cargo (package cargo-web)")
std_dir=$("$rustc" --print sysroot 2>/dev/null || true)/lib/rustlib/$target/lib
compgen -G "$std_dir/libstd-*.rlib" >/dev/null || missing+=("the $target standard library in $std_dir (package libstd-rust-web-dev:$debian_arch)")
command -v "$gcc" >/dev/null || missing+=("$gcc (package gcc-${gcc%-gcc})")
[ -d "$sysroot/lib" ] || missing+=("$sysroot (the target's libc6-dev cross package)")
command -v "$qemu" >/dev/null || missing+=("$qemu (package qemu-user)")
[ $release = false ] || [ -x "$lld_dir/ld.lld" ] || missing+=("$lld_dir/ld.lld (package lld-15)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "cross/build.sh: missing ${missing[*]}; run scripts/setup.sh" >&2
  exit 1
fi

upper=$(echo "$target" | tr 'a-z-' 'A-Z_')
export RUSTC="$rustc"
# CI lints the host build through clippy-driver (.ci/run), which is rustup's, not this rustc.
unset RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
export "CARGO_TARGET_${upper}_LINKER=$gcc"
export "CARGO_TARGET_${upper}_RUNNER=$emulator"
if [ $release = true ]; then
  export "CARGO_TARGET_${upper}_RUSTFLAGS=-C link-arg=-B$lld_dir -C link-arg=-fuse-ld=lld -C link-arg=-Wl,-z,pack-relative-relocs -C link-arg=-Wl,--icf=all"
fi
# ring's C and assembly go through the cc crate.
export "CC_${target//-/_}=$gcc" "AR_${target//-/_}=${gcc%-gcc}-ar"
CARGO_TARGET_DIR=$(cross_target_dir)
export CARGO_TARGET_DIR
# No debug info in dev/test builds for the device: it is most of the dependencies' compile time
# under opt-level 3 and nobody runs a debugger under qemu (panics still name file and line).
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-false}

command=$1
shift
# Every dependency at opt-level 3 on the devices (Cargo.toml keeps most at 1 for the host tests):
# under qemu the device checks run the model's start-up (sha256 of the graph, tokenizer.json) and
# whole test files, and at opt-level 1 they were several times slower.
exec "$cargo" "$command" --config 'profile.dev.package."*".opt-level=3' --target "$target" "$@"
