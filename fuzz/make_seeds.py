#!/usr/bin/env python3
"""Writes the seed inputs of fuzz/corpus/<target>/ (the format of each target's input is in
src/fuzzing/). Run from the repository root: python3 fuzz/make_seeds.py

The checkpoint seeds are a tiny two-layer BERT (the shape of TINY_CONFIG in
src/fuzzing/files.rs) saved by transformers as safetensors, as PyTorch's zip format and as its
legacy format; they need torch, transformers and safetensors (otherwise they are skipped with a
message). Inputs libFuzzer adds to the corpus, and crashes once fixed, are committed beside
these seeds.
"""

import io
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
SEP = b"\xff"


def write(target, name, data):
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)


def mqtt_seeds():
    def message(flags, topic, payload, response=b"", correlation=b""):
        return bytes([flags]) + topic + SEP + response + SEP + correlation + SEP + payload

    review = "A quiet, patient film that earns every minute of its ending.".encode()
    write("mqtt_input", "raw-text", message(0, b"sentimq/in/a", review))
    write("mqtt_input", "json-id-qos1",
          message(4, b"sentimq/in/b", json.dumps({"id": 42, "text": "Dreadful. I left early."}).encode()))
    write("mqtt_input", "json-transaction-echo",
          message(5, b"chat/text", json.dumps({"transaction": "t-1", "text": "Loved it"}).encode()))
    write("mqtt_input", "json-message-field",
          message(16 | 4, b"sentimq/in/c", json.dumps({"message": "fine", "id": [1, {"a": None}]}).encode()))
    write("mqtt_input", "json-wrong-types",
          message(4, b"sentimq/in/d", b'{"text": 12, "id": {"nested": [1, 2, 3]}}'))
    write("mqtt_input", "v5-route", message(6, b"sentimq/in/e", review, b"replies/me", b"\x01\x02corr"))
    write("mqtt_input", "v5-route-loop", message(6, b"sentimq/in/f", review, b"sentimq/in/x"))
    write("mqtt_input", "v5-route-wildcard", message(6, b"sentimq/in/g", review, b"replies/#"))
    write("mqtt_input", "too-long", message(8 | 4, b"sentimq/in/h", review * 2))
    write("mqtt_input", "bad-utf8", message(4, b"sentimq/in/i", b"caf\xc3 \x80 bad"))
    write("mqtt_input", "empty", message(4, b"sentimq/in/j", b"   "))
    write("mqtt_input", "unicode", message(1, b"sentimq/in/k", "Ça va 😀 — 好 ｆｕｌｌ\u200b\u0301 ok".encode()))
    write("mqtt_input", "long-review", message(4, b"sentimq/in/l", (review + b" ") * 200))
    write("mqtt_input", "deep-json", message(4, b"sentimq/in/m", b"[" * 200 + b"]" * 200))
    write("mqtt_input", "json-escapes",
          message(4, b"sentimq/in/n", b'{"text": "\\u00e9\\ud83d\\ude00 \\n\\t ok", "id": 1e308}'))


def config_seeds():
    write("config_file", "packaged", (ROOT / "systemd" / "sentimqd.toml").read_bytes())
    small = b"""[mqtt]
server = "mqtts://broker.example:8883"
base_topic = "home/sentiment"
inputs = ["$share/g/chat/+/message", "home/sentiment/classify/#"]
[input]
text_field = "message"
max_payload_bytes = 4096
[pipeline]
workers = 2
max_batch = 8
"""
    write("config_file", "small-with-env",
          small + SEP + b"SENTIMQ_MQTT_SERVER=mqtt://10.0.0.2:1884\nSENTIMQ_PIPELINE_WORKERS=1\n"
          b"SENTIMQ_MQTT_PASSWORD=secret\nSENTIMQ_LOG_FORMAT=json\n")
    write("config_file", "empty", b"")
    write("config_file", "env-only", SEP + b"SENTIMQ_MQTT_INPUTS=a/+, b/#\nSENTIMQ_MODEL_PLANS=4\n")


def manifest_seeds():
    text = (ROOT / "models" / "imdb-minilm" / "model.json").read_bytes()
    write("model_manifest", "shipped", text)
    manifest = json.loads(text)
    manifest["truncation"] = {"max_tokens": 3, "head_tokens": 0}
    manifest["labels"] = ["a", "b", "c"]
    write("model_manifest", "tiny-window", json.dumps(manifest).encode())


def tokenizer_seeds():
    review = ("This movie was a total waste of time, but the soundtrack (by Hans Zimmer!) "
              "was great. 10/10 would not watch again... ").encode()
    for flags in range(4):
        write("tokenizer_text", f"review-window-{flags}", bytes([flags]) + review)
        write("tokenizer_text", f"long-review-window-{flags}", bytes([flags]) + review * 40)
    write("tokenizer_text", "unicode", b"\x01" + "naïve café — 東京 😀 ﬁ Ⅻ \u00ad\u200d".encode() * 30)
    write("tokenizer_text", "whitespace", b"\x01" + b" \t\r\n" * 300 + b"end")
    write("tokenizer_text", "one-long-word", b"\x01" + b"a" * 2000)


def checkpoint_seeds():
    write("checkpoint_file", "config-tinybert-style",
          b"\x02" + json.dumps({"vocab_size": 30522, "hidden_size": 312, "num_hidden_layers": 4,
                                "num_attention_heads": 12, "intermediate_size": 1200,
                                "hidden_act": "gelu", "max_position_embeddings": 512,
                                "type_vocab_size": 2, "initializer_range": 0.02}).encode())
    try:
        import torch
        import transformers
        from safetensors.torch import save
    except ImportError as e:
        print(f"checkpoint seeds from torch skipped: {e}", file=sys.stderr)
        return
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=16, hidden_size=8, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=12,
                                     max_position_embeddings=12, type_vocab_size=2)
    state = {k: v.contiguous() for k, v in transformers.BertModel(config).state_dict().items()}
    write("checkpoint_file", "tiny-safetensors", b"\x00" + save(state))
    half = {k: v.half() for k, v in state.items()}
    write("checkpoint_file", "tiny-safetensors-f16", b"\x00" + save(half))
    zipped = io.BytesIO()
    torch.save(state, zipped)
    write("checkpoint_file", "tiny-torch-zip", b"\x01" + zipped.getvalue())
    legacy = io.BytesIO()
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    write("checkpoint_file", "tiny-torch-legacy", b"\x01" + legacy.getvalue())


if __name__ == "__main__":
    mqtt_seeds()
    config_seeds()
    manifest_seeds()
    tokenizer_seeds()
    checkpoint_seeds()
    for target in sorted(CORPUS.iterdir()):
        print(target.name, len(list(target.iterdir())), "inputs")
