#!/usr/bin/env bash
# The whole test suite; the README's test command and CI run it (after scripts/setup.sh).
#   scripts/test.sh           # everything
#   scripts/test.sh --host    # only step 1, for a quick loop
# 1. cargo test --all-targets: unit tests, golden checks, the build step, onnxruntime interop,
#    the daemon against real mosquitto processes; it also writes the device reference.
# 2. Device checks under qemu-user for aarch64 and armv7 (cross/check.sh): sentimqd --version,
#    unit tests, golden hidden states, 50 IMDB reviews as on x86_64; aarch64 also end to end.
# 3. The systemd unit (systemd-analyze verify, security score <= 2.0) and the amd64 .deb
#    (contents, unit verified inside the unpacked package) (systemd/check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo; echo "== $* ($(date +%T))"; }

step "host tests"
cargo test --all-targets
[ "${1:-}" = --host ] && exit 0

step "aarch64 under qemu"
cross/check.sh aarch64-unknown-linux-gnu --e2e
step "armv7 under qemu"
cross/check.sh armv7-unknown-linux-gnueabihf

step "systemd unit and package"
systemd/check.sh
