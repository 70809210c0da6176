#!/usr/bin/env bash
# Device checks of one Raspberry Pi target under qemu-user (CI runs them for both):
#   cross/check.sh aarch64-unknown-linux-gnu [--e2e]
# 1. builds sentimqd and the tests for the target (cross/build.sh, Debian's toolchain);
# 2. `sentimqd --version` runs;
# 3. the library's unit tests, and the device checks of tests/it (golden hidden states of the
#    TinyBERT-format fixture and MiniLM, 50 IMDB reviews classified as on x86_64) pass;
# 4. with --e2e: the emulated daemon answers 20 messages through a native mosquitto.
# The x86_64 reference comes from `cargo test --test it device::` (run here if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/targets.sh

target=${1:?usage: cross/check.sh <target> [--e2e]}
e2e=${2:-}
cross_target_tools "$target"
start=$(date +%s)

export SENTIMQ_DEVICE_CHECK_DIR=${SENTIMQ_DEVICE_CHECK_DIR:-${CARGO_TARGET_DIR:-target}/tmp/device-check}
if [ ! -f "$SENTIMQ_DEVICE_CHECK_DIR/reference.json" ]; then
  cargo test --test it device::
fi

cross/build.sh "$target" build --locked --bin sentimqd --no-default-features
binary=$(realpath "$(cross_target_dir)/$target/debug/sentimqd")
"$qemu" -L "$sysroot" "$binary" --version

cross/build.sh "$target" test --locked --no-default-features --lib --test it -- --nocapture

if [ "$e2e" = --e2e ]; then
  SENTIMQ_TEST_SENTIMQD="$qemu -L $sysroot $binary" \
    cargo test --test it daemon::emulated -- --ignored --nocapture
fi
echo "cross/check.sh $target: passed in $(( $(date +%s) - start )) s"
