#!/usr/bin/env python3
"""tract vs onnxruntime on the same ONNX files and the same inputs, as ratios from one run.

usage: benches/onnxruntime.py MODEL_DIR [--sentimq PATH] [--iterations N]

Measures, single-threaded, batch 1, sequence 16/32/64/128/256:
  - tract (`sentimq bench`) on model.int8.onnx and model.onnx,
  - onnxruntime on the same two files,
  - onnxruntime on its own `quantize_dynamic` output of model.onnx (the peer a user would pick),
and prints a JSON report with p50 latencies and the tract/onnxruntime ratios.
Inputs follow sentimq::bench::bench_ids, so both runtimes see identical tensors.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

SEQUENCES = [16, 32, 64, 128, 256]


def bench_ids(sequence: int, row: int = 0) -> list:
    body = [1000 + (i * 7919 + row * 104729) % 20000 for i in range(max(sequence - 2, 0))]
    return [101] + body + [102]


def ort_latency(path: str, iterations: int) -> dict:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    result = {}
    for sequence in SEQUENCES:
        feeds = {
            "input_ids": np.asarray([bench_ids(sequence)], dtype=np.int64),
            "attention_mask": np.ones((1, sequence), dtype=np.int64),
        }
        for _ in range(3):
            session.run(None, feeds)
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            session.run(None, feeds)
            times.append((time.perf_counter() - start) * 1e3)
        result[sequence] = float(np.median(times))
    return result


def tract_latency(sentimq: str, model_dir: str, graph: str, iterations: int) -> dict:
    out = subprocess.run(
        [sentimq, "bench", "--model", model_dir, "--graph", graph, "--iterations", str(iterations), "--threads", "1"],
        check=True, capture_output=True, text=True,
    ).stdout
    report = json.loads(out)[0]
    return {row["sequence"]: row["p50_ms"] for row in report["latency"] if row["threads"] == 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--sentimq", default=os.environ.get("SENTIMQ_BIN", "target/release/sentimq"))
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args()

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        ort_int8 = os.path.join(tmp, "model.ort-int8.onnx")
        quantize_dynamic(os.path.join(args.model_dir, "model.onnx"), ort_int8, weight_type=QuantType.QInt8)
        runs = {
            "tract int8 (sentimq)": tract_latency(args.sentimq, args.model_dir, "model.int8.onnx", args.iterations),
            "tract f32": tract_latency(args.sentimq, args.model_dir, "model.onnx", args.iterations),
            "onnxruntime int8 (sentimq file)": ort_latency(os.path.join(args.model_dir, "model.int8.onnx"), args.iterations),
            "onnxruntime int8 (quantize_dynamic)": ort_latency(ort_int8, args.iterations),
            "onnxruntime f32": ort_latency(os.path.join(args.model_dir, "model.onnx"), args.iterations),
        }
    peer = runs["onnxruntime int8 (quantize_dynamic)"]
    ours = runs["tract int8 (sentimq)"]
    report = {
        "p50_ms_batch1_1thread": {name: {str(k): round(v, 3) for k, v in run.items()} for name, run in runs.items()},
        "ratio_tract_int8_over_ort_quantize_dynamic": {str(s): round(ours[s] / peer[s], 3) for s in SEQUENCES},
        "ratio_tract_int8_seq16_over_seq128": round(ours[16] / ours[128], 3),
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
