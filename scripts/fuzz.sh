#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of outside bytes (src/fuzzing/) with cargo-fuzz
# (libFuzzer, AddressSanitizer), each target for a bounded time.
#   scripts/fuzz.sh                     # every target, 300 s each
#   scripts/fuzz.sh 60 mqtt_input       # one target, 60 s
#   scripts/fuzz.sh --merge 600         # ... and add the inputs that found new coverage to
#                                       # fuzz/corpus/<target>/ (then commit them)
# Needs cargo-fuzz (installed here from crates.io if missing) and a nightly toolchain, or
# RUSTC_BOOTSTRAP=1 with the stable one (used when rustup has no nightly). New inputs go to
# fuzz/work/<target>/, crashes to fuzz/artifacts/<target>/; the script stops at the first crash
# and prints how to reproduce it. A fixed crash's input belongs in fuzz/corpus/<target>/, where
# the unit tests (src/fuzzing/tests.rs) replay it on every CI run.
# The last lines give each target's executions, run time and corpus size.
set -euo pipefail
cd "$(dirname "$0")/.."

merge=0
if [ "${1:-}" = --merge ]; then merge=1; shift; fi
case ${1:-} in
  -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
seconds=${1:-300}
shift || true
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for source in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$source" .rs)"); done
fi

if ! command -v cargo-fuzz > /dev/null; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
if rustup toolchain list 2> /dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi
# Its own target dir, so the project's builds are not invalidated by the sanitizer flags.
export CARGO_TARGET_DIR=${SENTIMQ_FUZZ_TARGET_DIR:-fuzz/target}

echo "== building the fuzz targets"
"${fuzz[@]}" build --fuzz-dir fuzz

summary=()
for target in "${targets[@]}"; do
  echo "== $target: ${seconds} s"
  mkdir -p "fuzz/work/$target"
  log=fuzz/work/$target.log
  # -rss_limit_mb: the mqtt target holds the shipped model; -timeout: no input may take 10 s.
  if ! "${fuzz[@]}" run --fuzz-dir fuzz "$target" "fuzz/work/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 -max_len=65536 \
      -print_final_stats=1 > "$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "scripts/fuzz.sh: $target failed; the input is in fuzz/artifacts/$target/ (log: $log)" >&2
    echo "reproduce: ${fuzz[*]} run --fuzz-dir fuzz $target fuzz/artifacts/$target/<file>" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  corpus=$(find "fuzz/work/$target" "fuzz/corpus/$target" -type f | wc -l)
  if [ "$merge" = 1 ]; then
    "${fuzz[@]}" run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" "fuzz/work/$target" -- \
      -merge=1 -rss_limit_mb=4096 -timeout=10 >> "$log" 2>&1
  fi
  summary+=("$(printf '%-16s %12s executions in %5d s, corpus %d inputs' "$target" "$runs" "$seconds" "$corpus")")
done
echo; echo "== fuzzing summary (no crash)"
printf '%s\n' "${summary[@]}"
