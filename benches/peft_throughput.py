"""PyTorch + PEFT training throughput: the peer of `sentimq train` at the same setting.

LoRA r=8 (--lora-r), alpha=16, dropout 0.1 on query+value (--lora-targets) with a trainable head, batch 16 x 128 tokens
(every position a real token, no padding), f32 eager, AdamW with gradient clipping; one update
= forward + backward + step, as `training_throughput` in tests/it/train.rs measures sentimq.

  python3 benches/peft_throughput.py --shape minilm --device cuda --steps 30
  python3 benches/peft_throughput.py --base ../shared/models/all-MiniLM-L6-v2 --device cpu
  python3 benches/peft_throughput.py --shape bert-base --save /tmp/bert-base-random \
      --tokenizer models/imdb-minilm/tokenizer.json    # a random-weight base for sentimq

Needs torch, transformers and peft. Prints one JSON line per measurement.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

# BERT shapes of the checkpoints the project targets; all use bert-base-uncased's vocabulary.
SHAPES = {
    "tinybert": dict(num_hidden_layers=4, hidden_size=312, num_attention_heads=12, intermediate_size=1200),
    "minilm": dict(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536),
    "bert-base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072),
}


def shape_config(shape):
    return BertConfig(vocab_size=30522, max_position_embeddings=512, type_vocab_size=2, **SHAPES[shape])


def save_random_base(shape, out, tokenizer, seed):
    """A base checkpoint with random weights: config.json, model.safetensors, tokenizer.json."""
    torch.manual_seed(seed)
    model = BertModel(shape_config(shape))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # safetensors
    shutil.copy(tokenizer, out / "tokenizer.json")


def throughput(model, device, steps, batch, seq, seed, r=8, targets=("query", "value")):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    lora = LoraConfig(r=r, lora_alpha=16, lora_dropout=0.1, target_modules=list(targets),
                      task_type="SEQ_CLS")
    model = get_peft_model(model, lora).to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(1000, 30522, (batch, seq), device=device)
    mask = torch.ones(batch, seq, dtype=torch.long, device=device)
    labels = torch.randint(0, 2, (batch,), device=device)

    def update():
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        update()
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        update()
    sync()
    seconds = time.perf_counter() - started
    return batch * steps / seconds, seconds / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--base", type=Path, help="a BERT checkpoint directory")
    source.add_argument("--shape", choices=SHAPES, help="random weights of this shape")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank (alpha stays 16)")
    parser.add_argument("--lora-targets", default="query,value",
                        help="comma-separated module names, as sentimq's --lora-targets")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--save", type=Path, help="write a random-weight base of --shape here and stop")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json to put beside --save's weights")
    args = parser.parse_args()

    if args.save:
        if not (args.shape and args.tokenizer):
            parser.error("--save needs --shape and --tokenizer")
        save_random_base(args.shape, args.save, args.tokenizer, args.seed)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # f32, as sentimq trains
    device = torch.device(args.device)
    if args.base:
        model = BertForSequenceClassification.from_pretrained(args.base, num_labels=2)
        name = str(args.base)
    else:
        torch.manual_seed(args.seed)
        model = BertForSequenceClassification(shape_config(args.shape))
        name = args.shape
    # PEFT matches each name against the end of a module's name, as sentimq does.
    targets = args.lora_targets.split(",")
    samples_per_s, seconds_per_step = throughput(model, device, args.steps, args.batch, args.seq, args.seed,
                                                 args.lora_r, targets)
    print(json.dumps({
        "framework": f"torch {torch.__version__} + peft",
        "model": name,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "seq": args.seq,
        "lora": f"r {args.lora_r} on {args.lora_targets}",
        "samples_per_s": round(samples_per_s, 2),
        "ms_per_step": round(seconds_per_step * 1e3, 2),
    }))


if __name__ == "__main__":
    main()
