# The whole test suite; the README's test command and CI run it (after scripts/setup.sh).
#   scripts/test.sh           # everything
#   scripts/test.sh --host    # only step 1, for a quick loop
# 1. cargo test --all-targets --features train: unit tests, golden checks, the build step,
#    onnxruntime interop, the daemon against real mosquitto processes, the candle training
#    model (golden states, gradients, ONNX parity, overfitting, resume, bad input); it also
#    writes the device reference.
# 2. The real training run: MiniLM LoRA on 2,000 IMDB reviews, one epoch, >= 80 % on 1,000
#    test reviews (about 10 minutes on 2 cores).
# 3. Each Raspberry Pi target under qemu-user (cross/check.sh): aarch64 and armv7 builds with
#    Debian's toolchain, `sentimqd --version`, 20 messages answered through a native mosquitto
#    with x86_64's verdicts, and the device tests (the library's unit tests, golden hidden
#    states, 50 IMDB reviews classified as on x86_64).
# 4. The systemd unit (systemd-analyze verify, security score <= 2.0) and the amd64 .deb
#    (contents, unit verified inside the unpacked package) (systemd/check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo; echo "== $* ($(date +%T))"; }

step "host tests"
cargo test --all-targets --features train
[ "${1:-}" = --host ] && exit 0

step "real training run"
cargo test --features train --test it train_real_run -- --ignored --nocapture

for target in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  step "$target under qemu"
  cross/check.sh "$target" --e2e --device-tests
done

step "systemd unit and package"
systemd/check.sh
