#!/usr/bin/env bash
# Device checks of one Raspberry Pi target under qemu-user:
#   cross/check.sh aarch64-unknown-linux-gnu [--build-only] [--e2e] [--device-tests]
# Always: builds sentimqd and the device tests for the target (cross/build.sh, Debian's
#   toolchain) and runs `sentimqd --version` under qemu.
# --build-only: only that (scripts/test.sh builds both targets while the host tests run).
# --e2e: the emulated daemon answers 20 messages through a native mosquitto with the x86_64
#   engine's verdicts (tests/it/daemon/emulated.rs, run by the host's test binary).
# --device-tests: runs the library's unit tests and tests/it for the target under qemu:
#   golden hidden states of the TinyBERT-format fixture and MiniLM, exact `MatMulInteger`
#   products, and IMDB reviews classified as on x86_64 (labels equal, probabilities no
#   further from x86_64's than its int8 is from f32). Their reference comes from
#   `cargo test --features train --test it device::` on the host (run here if missing). On
#   aarch64 the exact-products check runs again on the Pi 5's core, whose SDOT kernels differ.
# qemu emulates a Pi's core (cross/targets.sh: cortex-a72 for aarch64, cortex-a7 for armv7).
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/targets.sh

target=${1:?usage: cross/check.sh <target> [--build-only] [--e2e] [--device-tests]}
shift
e2e=0 device_tests=0 build_only=0
for flag in "$@"; do
  case $flag in
    --build-only) build_only=1 ;;
    --e2e) e2e=1 ;;
    --device-tests) device_tests=1 ;;
    *) echo "cross/check.sh: unknown flag $flag" >&2; exit 2 ;;
  esac
done
cross_target_tools "$target"
start=$(date +%s)

# One build: `cargo test --no-run` builds the library's tests, tests/it and, for tests/it, the
# sentimqd binary.
cross/build.sh "$target" test --locked --no-run --no-default-features --lib --test it
binary=$(realpath "$(cross_target_dir)/$target/debug/sentimqd")
$emulator "$binary" --version
built=$(date +%s)
if [ $build_only = 1 ]; then
  echo "cross/check.sh $target: build $(( built - start )) s"
  exit 0
fi

# Host-side tests use scripts/test.sh's features, so its build is reused.
export SENTIMQ_DEVICE_TOLERANCE=$tolerance SENTIMQ_DEVICE_REVIEWS=${SENTIMQ_DEVICE_REVIEWS:-$device_reviews}
if [ $e2e = 1 ]; then
  SENTIMQ_TEST_SENTIMQD="$emulator $binary" \
    cargo test --features train --test it daemon::emulated -- --ignored --nocapture
fi

if [ $device_tests = 1 ]; then
  export SENTIMQ_DEVICE_CHECK_DIR=${SENTIMQ_DEVICE_CHECK_DIR:-${CARGO_TARGET_DIR:-target}/tmp/device-check}
  if [ ! -f "$SENTIMQ_DEVICE_CHECK_DIR/reference.json" ]; then
    cargo test --features train --test it device::
  fi
  cross/build.sh "$target" test --locked --no-default-features --lib --test it -- --nocapture
  if [ -n "$dotprod_cpu" ]; then
    # The other int8 kernel family (SDOT) must be exact too.
    SENTIMQ_QEMU_CPU=$dotprod_cpu cross/build.sh "$target" test --locked --no-default-features \
      --test it device::integer_products -- --nocapture
  fi
fi
echo "cross/check.sh $target: build $(( built - start )) s, checks $(( $(date +%s) - built )) s"
