#!/usr/bin/env bash
# Checks `sentimq train --device cuda` on a machine with an NVIDIA GPU (CUDA 13 libraries) and
# Python with torch, transformers and peft:
#   scripts/gpu-check.sh REVIEWS.jsonl [OUT_DIR]
# REVIEWS.jsonl: labelled reviews ({"text","label"} per line, at least 64 that fill 128 tokens).
# The integration tests built with `--features cuda` come from $SENTIMQ_IT_BIN when set (a
# machine without Rust: build them elsewhere with
# `cargo test --features cuda --test it --no-run`), else they are built here.
#
# 1. Random-weight bases of three BERT shapes the project targets (TinyBERT 4L/312, MiniLM
#    6L/384, BERT-base 12L/768) with the default model's tokenizer: the GPU path is checked
#    without downloading checkpoints (benches/peft_throughput.py --save).
# 2. tests/it/train_cuda.rs: the same LoRA run (one epoch, validation, dropout) on the GPU and
#    on the CPU ends with the same adapter and losses (≤ 1e-3 relative); then the GPU's training
#    throughput for each shape (LoRA r=8 q+v, batch 16 × 128 tokens, f32).
# 3. PyTorch + PEFT at the same setting on the same GPU (benches/peft_throughput.py).
set -euo pipefail
cd "$(dirname "$0")/.."
reviews=$(realpath "${1:?usage: scripts/gpu-check.sh REVIEWS.jsonl [OUT_DIR]}")
out=${2:-target/gpu-check}
mkdir -p "$out"
out=$(realpath "$out")

# CUDA libraries of the Python environment (PyPI's nvidia-* wheels) or the toolkit.
site=$(python3 -c 'import site; print(site.getsitepackages()[0])')
libs=$(find "$site/nvidia" /usr/local/cuda/lib64 \( -name 'libcublas.so.*' -o -name 'libcurand.so.*' \
  -o -name 'libcudart.so.*' -o -name 'libnvrtc.so.*' \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd: || true)
export LD_LIBRARY_PATH="${libs}:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

it=${SENTIMQ_IT_BIN:-}
if [ -z "$it" ]; then
  it=$(cargo test --release --features cuda --test it --no-run --message-format=json \
    | python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable")][-1])')
fi

bases=()
for shape in tinybert minilm bert-base; do
  python3 benches/peft_throughput.py --shape "$shape" --save "$out/bases/$shape" \
    --tokenizer models/imdb-minilm/tokenizer.json
  bases+=("$out/bases/$shape")
done

echo "== the same run on cuda and cpu"
SENTIMQ_CUDA_DATA=$reviews SENTIMQ_CUDA_BASES="${bases[0]}:${bases[1]}" \
  "$it" train_cuda::cuda_training_matches_cpu --exact --nocapture --test-threads 1
echo "== sentimq (candle) throughput on cuda"
SENTIMQ_CUDA_DATA=$reviews SENTIMQ_CUDA_BASES=$(IFS=:; echo "${bases[*]}") \
  "$it" train_cuda::cuda_training_throughput --exact --ignored --nocapture --test-threads 1
echo "== PyTorch + PEFT throughput on cuda"
for shape in tinybert minilm bert-base; do
  python3 benches/peft_throughput.py --shape "$shape" --device cuda --steps 30
done
