#!/usr/bin/env bash
# sentimq's training step against PyTorch + PEFT on this machine, alternating, same settings:
#   benches/train_compare.sh [--rounds N] [--steps N] [--threads N] [--lora-r R] [--lora-targets a,b]
# Both train LoRA (default r 8 on query+value, alpha 16, dropout 0.1) on MiniLM-L6, batch 16 x
# 128 tokens with no padding, hidden and attention dropout 0.1, f32, AdamW with clipping:
# `sentimq train --throughput` on real IMDB reviews that fill 128 tokens, and
# benches/peft_throughput.py on random token ids. Prints each measurement as a JSON line, then
# the ratio of the mean samples/s (sentimq / PyTorch) as the last line; the CPU's model and
# SIMD flags go to stderr.
# Needs ../shared (or SENTIMQ_BASE and SENTIMQ_DATA) and a Python with torch, transformers and
# peft: $PYTHON if it has them, else a virtualenv made once under ~/.cache/sentimq/bench-venv
# (pip downloads PyTorch, several GB).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=2 steps=10 threads=$(nproc) lora_r=8 lora_targets=query,value
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --lora-r) lora_r=$2; shift 2 ;;
    --lora-targets) lora_targets=$2; shift 2 ;;
    *) echo "benches/train_compare.sh: unknown flag $1" >&2; exit 2 ;;
  esac
done
base=${SENTIMQ_BASE:-../shared/models/all-MiniLM-L6-v2}
data=${SENTIMQ_DATA:-../shared/data/imdb/aclImdb_v1_labeled.tar.gz}
for input in "$base" "$data"; do
  [ -e "$input" ] || { echo "benches/train_compare.sh: missing $input (set SENTIMQ_BASE / SENTIMQ_DATA)" >&2; exit 1; }
done

python=${PYTHON:-python3}
if ! "$python" -c 'import torch, transformers, peft' 2>/dev/null; then
  venv=$HOME/.cache/sentimq/bench-venv
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import torch, transformers, peft' 2>/dev/null; then
    echo "benches/train_compare.sh: installing torch, transformers and peft into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check torch transformers peft
  fi
  python=$venv/bin/python
fi

cargo build --release --quiet --features train --bin sentimq
sentimq=${CARGO_TARGET_DIR:-target}/release/sentimq

grep -m1 'model name' /proc/cpuinfo | sed 's/.*: /cpu: /' >&2
echo "simd: $(grep -m1 -o -w -E 'avx2|avx512f|avx512_vnni|amx_int8|asimd|asimddp' /proc/cpuinfo | sort -u | tr '\n' ' ')" >&2

mean() { awk '{ s += $1 } END { printf "%.3f", s / NR }'; }
ours=() theirs=()
for round in $(seq "$rounds"); do
  line=$("$sentimq" train --throughput "$steps" --base "$base" --data "$data" --max-len 128 \
    --head-len 64 --batch 16 --lora-r "$lora_r" --lora-targets "$lora_targets" \
    --threads "$threads" --quiet)
  echo "sentimq round $round: $line"
  ours+=("$(sed -E 's/.*"samples_per_s":([0-9.]+).*/\1/' <<<"$line")")
  line=$("$python" benches/peft_throughput.py --base "$base" --device cpu --threads "$threads" \
    --steps "$steps" --batch 16 --seq 128 --lora-r "$lora_r" --lora-targets "$lora_targets" 2>/dev/null)
  echo "pytorch round $round: $line"
  theirs+=("$(sed -E 's/.*"samples_per_s": ([0-9.]+).*/\1/' <<<"$line")")
done
ours_mean=$(printf '%s\n' "${ours[@]}" | mean)
theirs_mean=$(printf '%s\n' "${theirs[@]}" | mean)
echo "sentimq $ours_mean samples/s, pytorch $theirs_mean samples/s ($threads threads, r $lora_r on $lora_targets)"
awk -v a="$ours_mean" -v b="$theirs_mean" 'BEGIN { printf "ratio %.2f\n", a / b }'
