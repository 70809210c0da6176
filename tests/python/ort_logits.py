"""Check sentimq's ONNX graphs with onnx.checker and run them in onnxruntime.

usage: ort_logits.py MODEL_DIR BATCH_JSON GRAPH...
BATCH_JSON holds {"input_ids": [[...]], "attention_mask": [[...]]}; prints
{"<graph>": {"logits": [[...]], "probabilities": [[...]]}} as JSON on stdout.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main() -> None:
    model_dir, batch_path, *graphs = sys.argv[1:]
    with open(batch_path) as f:
        batch = json.load(f)
    feeds = {name: np.asarray(batch[name], dtype=np.int64) for name in ("input_ids", "attention_mask")}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    result = {}
    for graph in graphs:
        path = f"{model_dir}/{graph}"
        onnx.checker.check_model(onnx.load(path), full_check=True)
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        logits, probabilities = session.run(["logits", "probabilities"], feeds)
        result[graph] = {"logits": logits.tolist(), "probabilities": probabilities.tolist()}
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
