#!/usr/bin/env bash
# The whole test suite; the README's test command and CI run it (after scripts/setup.sh).
#   scripts/test.sh           # everything
#   scripts/test.sh --host    # only step 1, for a quick loop
# 1. cargo test --all-targets --features train: unit tests, golden checks, the build step,
#    onnxruntime interop, the daemon against real mosquitto processes, the candle training
#    model (golden states, gradients, ONNX parity, overfitting, resume, bad input); it also
#    writes the device reference. Then the doc examples (cargo test --doc) and the training
#    kernels' own tests (cargo test -p sentimq-train-kernels: products, exp/erf accuracy,
#    dropout masks).
# 2. The real training run: MiniLM LoRA on IMDB reviews from a random head, >= 80 % on 1,000
#    test reviews (tests/it/train.rs says how many reviews and epochs).
# 3. Each Raspberry Pi target under qemu-user (cross/check.sh): aarch64 and armv7 builds with
#    Debian's toolchain, `sentimqd --version`, 20 messages answered through a native mosquitto
#    with x86_64's verdicts, and the device tests (the library's unit tests, golden hidden
#    states, exact int8 products, IMDB reviews of every length classified as on x86_64).
# 4. The systemd unit (systemd-analyze verify, security score <= 2.0) and the amd64 .deb
#    (contents, unit verified inside the unpacked package) (systemd/check.sh).
# Every input is required: a missing ../shared or mosquitto fails the tests that need it.
# The last lines give each step's wall time.
set -euo pipefail
cd "$(dirname "$0")/.."

case ${1:-} in
  ""|--host) ;;
  -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "scripts/test.sh: unknown argument '$1' (--host, --help)" >&2; exit 2 ;;
esac

timings=()
step_name="" step_start=0
step() {
  finish_step
  step_name=$*
  step_start=$(date +%s)
  echo; echo "== $* ($(date +%T))"
}
finish_step() {
  if [ -n "$step_name" ]; then
    timings+=("$(printf '%6d s  %s' $(( $(date +%s) - step_start )) "$step_name")")
  fi
  step_name=""
}
report() {
  finish_step
  echo; echo "== step times"
  printf '%s\n' "${timings[@]}"
}
trap report EXIT

targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
if [ -z "${1:-}" ]; then
  # The ARM builds (another compiler, their own target dir) run at low priority beside steps 1
  # and 2: those leave a core idle for minutes at a time (tract-core compiles on one thread),
  # and the cross builds fill it.
  cross_log=${CARGO_TARGET_DIR:-target}/cross-builds.log
  mkdir -p "$(dirname "$cross_log")"
  echo "ARM builds in the background (log: $cross_log)"
  # Its own session and process group, so that an early exit stops the builds too; with the
  # kernel's autogroup scheduling a new session gets its own CPU share, which
  # /proc/self/autogroup lowers as nice does within one.
  setsid nice -n 10 bash -c '{ echo 10 > /proc/self/autogroup; } 2>/dev/null
    for target; do cross/check.sh "$target" --build-only || exit 1; done' \
    _ "${targets[@]}" > "$cross_log" 2>&1 &
  cross_builds=$!
  # `|| true`: the builds have usually finished, and a failing command in an EXIT trap would
  # replace the script's exit status (set -e) and skip the report.
  trap 'kill -- -"$cross_builds" 2>/dev/null || true; report' EXIT
fi

step "host tests"
cargo test --all-targets --features train
# --all-targets leaves the doc examples out.
cargo test --doc --features train
cargo test -p sentimq-train-kernels
[ "${1:-}" = --host ] && exit 0

step "real training run"
cargo test --features train --test it train_real_run -- --ignored --nocapture

step "waiting for the ARM builds"
wait "$cross_builds" || { cat "$cross_log" >&2; echo "scripts/test.sh: an ARM build failed" >&2; exit 1; }
grep "^cross/check.sh" "$cross_log"

for target in "${targets[@]}"; do
  step "$target under qemu"
  cross/check.sh "$target" --e2e --device-tests
done

step "systemd unit and package"
systemd/check.sh
