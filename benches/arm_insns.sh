#!/usr/bin/env bash
# Guest instructions per inference of the release engine on Raspberry Pi cores, counted under
# qemu-user with a TCG plugin (benches/arm/insncount.c): a proxy for comparing ARM code paths
# (kernels, fusion, opt-levels), not cycles.
#   benches/arm_insns.sh [aarch64-unknown-linux-gnu|armv7-unknown-linux-gnueabihf]
#                        [--tokens 16,128] [--runs 4] [--model models/imdb-minilm] [--profile]
# aarch64 is counted on a Pi 4's core (-cpu cortex-a72, tract's A72 kernels) and a Pi 5's
# (-cpu cortex-a76: SDOT; tract's generic kernels, as it picks on a Pi 5); armv7 on a Pi 2's
# cortex-a7. Builds examples/classify_repeat.rs with the release profile (cross/build.sh) and
# runs it twice per length, once with 1 run and once with 1 + --runs: per inference =
# (second count − first) / --runs, so loading, planning and start-up cancel out. One JSON
# line per core and length on stdout. Takes minutes per length under emulation.
# --profile: also the instructions per inference of each function (benches/arm/profile.py), on
# stderr after each JSON line; the example is then linked with its symbol table (same code).
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/targets.sh

target=aarch64-unknown-linux-gnu tokens=16,128 runs=4 model=models/imdb-minilm profile=0
while [ $# -gt 0 ]; do
  case $1 in
    --tokens) tokens=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --profile) profile=1; shift ;;
    -*) echo "benches/arm_insns.sh: unknown flag $1" >&2; exit 2 ;;
    *) target=$1; shift ;;
  esac
done
cross_target_tools "$target"
case $target in
  aarch64-*) cores=("cortex-a72 a72" "cortex-a76 generic") ;;
  *) cores=("cortex-a7 -") ;;
esac

work=$(cross_target_dir)/insncount
mkdir -p "$work"
gcc -O2 -Wall -Wextra -shared -fPIC -o "$work/insncount.so" benches/arm/insncount.c
if [ $profile = 1 ]; then
  cross/build.sh "$target" rustc --release --locked --no-default-features \
    --example classify_repeat -- -C strip=none >&2
else
  cross/build.sh "$target" build --release --locked --no-default-features --example classify_repeat >&2
fi
program=$(realpath "$(cross_target_dir)/$target/release/examples/classify_repeat")

count() { # <qemu cpu> <tract kind or -> <tokens> <runs>: prints the guest instructions executed
  local out=$work/count.txt kind_env=() blocks=
  [ "$2" = - ] || kind_env=(-E "TRACT_CPU_AARCH64_KIND=$2")
  [ $profile = 0 ] || blocks=",blocks=$work/blocks-$4.txt"
  $qemu -cpu "$1" -L "$sysroot" -E "LD_LIBRARY_PATH=$sysroot/lib" "${kind_env[@]}" \
    -plugin "$work/insncount.so,out=$out$blocks" "$program" "$model" "$3" "$4" >&2
  cat "$out"
}

for core in "${cores[@]}"; do
  read -r qemu_cpu kind <<<"$core"
  for n in ${tokens//,/ }; do
    once=$(count "$qemu_cpu" "$kind" "$n" 1)
    more=$(count "$qemu_cpu" "$kind" "$n" $((runs + 1)))
    echo "{\"target\":\"$target\",\"cpu\":\"$qemu_cpu\",\"tokens\":$n,\"runs\":$runs,\"instructions_per_inference\":$(( (more - once) / runs )),\"instructions_load_and_first\":$once}"
    if [ $profile = 1 ]; then
      echo "# $qemu_cpu, $n tokens" >&2
      python3 benches/arm/profile.py "$program" "$work/blocks-$((runs + 1)).txt" \
        "$work/blocks-1.txt" --runs "$runs" --nm "${gcc%-gcc}-nm" >&2
    fi
  done
done
