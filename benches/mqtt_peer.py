"""A small Python MQTT sentiment daemon: the peer `sentimqd` is measured against.

paho-mqtt + onnxruntime on a sentimq model directory (its default graph, int8 by default, or
the ONNX file --graph names, e.g. onnxruntime's own `quantize_dynamic` of model.onnx, which it
runs faster than sentimq's int8 file; and the directory's tokenizer.json), the way a Python developer would write it: subscribe to the input filter,
collect texts into micro-batches (up to --batch, waiting at most --wait-ms for more while a
batch is forming), pad each batch to its longest text, run onnxruntime with --threads intra-op
threads, publish one JSON result per message to `<base>/result/<input topic>` at QoS 1, as
sentimqd does. TCP_NODELAY is set on the broker connection. Payloads are UTF-8 text or JSON
with a "text" field; anything else gets `{"error": ...}` on `<base>/error`. It announces
itself with a retained `online` on `<base>/status` and clears it on SIGTERM/SIGINT.

  python3 benches/mqtt_peer.py --server 127.0.0.1:1883 --model models/imdb-minilm

Needs paho-mqtt (2.x), onnxruntime, numpy and tokenizers (pip install paho-mqtt onnxruntime
numpy tokenizers). benches/daemon_compare.py starts it next to sentimqd.
"""

import argparse
import json
import queue
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import paho.mqtt.client as mqtt
from tokenizers import Tokenizer


def load_model(model_dir, threads, graph=None):
    manifest = json.loads((model_dir / "model.json").read_text())
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # No busy-waiting between runs: an idle daemon should not burn a core.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    graph = graph or model_dir / manifest["default_graph"]
    session = ort.InferenceSession(str(graph), options,
                                   providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # Head-only truncation: the benchmark's texts fit the window, so this never cuts them.
    tokenizer.enable_truncation(manifest["truncation"]["max_tokens"])
    tokenizer.no_padding()
    return session, tokenizer, manifest["labels"], manifest.get("name", model_dir.name)


def text_of(payload):
    """The text of a payload (plain UTF-8 or JSON with "text"), or raises ValueError."""
    text = payload.decode("utf-8")
    stripped = text.lstrip()
    if stripped.startswith("{"):
        text = json.loads(stripped)["text"]
        if not isinstance(text, str):
            raise ValueError("text is not a string")
    if not text.strip():
        raise ValueError("empty text")
    return text


def classify(session, tokenizer, texts):
    encodings = tokenizer.encode_batch(texts)
    longest = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(texts), longest), dtype=np.int64)
    mask = np.zeros((len(texts), longest), dtype=np.int64)
    for row, e in enumerate(encodings):
        ids[row, :len(e.ids)] = e.ids
        mask[row, :len(e.ids)] = 1
    (probabilities,) = session.run(["probabilities"], {"input_ids": ids, "attention_mask": mask})
    return probabilities, [len(e.ids) for e in encodings]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", default="127.0.0.1:1883", help="broker host:port")
    parser.add_argument("--model", type=Path, default=Path("models/imdb-minilm"))
    parser.add_argument("--graph", type=Path, help="ONNX file to run instead of the default graph")
    parser.add_argument("--base-topic", default="sentimq")
    parser.add_argument("--input", help="subscription filter (default: <base>/classify/#)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--wait-ms", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--client-id", default="sentimq-python-peer")
    args = parser.parse_args()
    host, port = args.server.rsplit(":", 1)
    base = args.base_topic
    input_filter = args.input or f"{base}/classify/#"
    session, tokenizer, labels, name = load_model(args.model, args.threads, args.graph)

    inbox = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id,
                         clean_session=True)
    client.will_set(f"{base}/status", "offline", qos=1, retain=True)

    def on_connect(client, _userdata, _flags, reason_code, _properties):
        if reason_code.is_failure:
            raise SystemExit(f"mqtt_peer: connection refused: {reason_code}")
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(input_filter, qos=1)
        client.publish(f"{base}/status", "online", qos=1, retain=True)

    def on_message(_client, _userdata, message):
        inbox.put((message.topic, message.payload))

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(host, int(port))
    client.loop_start()

    stop = threading.Event()

    def shutdown(*_):
        stop.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)

    while not stop.is_set():
        try:
            first = inbox.get(timeout=0.1)
        except queue.Empty:
            continue
        batch = [first]
        deadline = time.monotonic() + args.wait_ms / 1e3
        while len(batch) < args.batch:
            remaining = deadline - time.monotonic()
            try:
                batch.append(inbox.get(timeout=max(remaining, 0)) if remaining > 0
                             else inbox.get_nowait())
            except queue.Empty:
                break
        texts, topics = [], []
        for topic, payload in batch:
            try:
                texts.append(text_of(payload))
                topics.append(topic)
            except (ValueError, KeyError, UnicodeDecodeError) as error:
                client.publish(f"{base}/error", json.dumps(
                    {"source_topic": topic, "error": "bad_input", "detail": str(error)}), qos=1)
        if not texts:
            continue
        started = time.perf_counter()
        probabilities, tokens = classify(session, tokenizer, texts)
        latency_ms = (time.perf_counter() - started) * 1e3
        for topic, row, count in zip(topics, probabilities, tokens):
            best = int(np.argmax(row))
            result = {
                "source_topic": topic,
                "label": labels[best],
                "score": round(float(row[best]), 6),
                "scores": {label: round(float(p), 6) for label, p in zip(labels, row)},
                "model": name,
                "tokens": count,
                "latency_ms": round(latency_ms, 3),
                "ts": int(time.time() * 1e3),
            }
            client.publish(f"{base}/result/{topic}", json.dumps(result), qos=1)

    client.publish(f"{base}/status", "offline", qos=1, retain=True).wait_for_publish(2)
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
