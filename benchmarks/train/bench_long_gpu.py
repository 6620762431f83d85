"""GPU benchmark of long packed rows (issue 12): tokens/s, MFU and peak memory against the memory plan.

Needs one CUDA device (never part of CI). Model: a Llama built from a config with Llama-3.2-1B's shape
(hidden 2,048, 16 layers, 32 heads, 8 KV heads, MLP 8,192, vocab 128,256, tied embeddings: 1.24B
parameters), seeded init, ``precision`` (default bf16-mixed: float32 master weights, bf16 autocast),
AdamW, one packed row of ``--length`` tokens per optimizer step, the attention backend ``train run``
picks (varlen flash-attention when installed, else SDPA with a block mask), activation checkpointing
and the chunked loss on as in ``train run``'s plan for 80 GB.

MFU = 6 x parameters x tokens/s over the card's dense bf16 peak (``--peak-tflops``; 989 for H100/H200
SXM); attention FLOPs and checkpointing's recompute are not counted, as in the usual definition.

Usage::

    uv run --group bench python benchmarks/train/bench_long_gpu.py                       # 8k and 32k
    uv run --group bench python benchmarks/train/bench_long_gpu.py --lengths 8192 --steps 5 --compile

Prints one line per point, then one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_long import packed_row, sequences  # the same seeded rows as the CPU benchmark

MODEL = {
    "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": True, "rope_theta": 500000.0,
    "max_position_embeddings": 131072, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
}


def plan_for(length: int, precision: str, backend: str) -> Any:
    """tunekit's memory plan (`tunekit_train.plan`) of this model and row on one CUDA device."""
    from transformers import LlamaConfig

    from tunekit_train.plan import make_plan, model_shape
    from tunekit_train.recipe import parse_recipe

    config = parse_recipe(
        {"run": {"model_name_or_path": "m"},
         "training_config": {"max_length": length, "global_batch_size": 1, "precision": precision}},
        source="bench",
    ).recipe.training_config
    with tempfile.TemporaryDirectory() as model_dir:
        LlamaConfig(**MODEL).save_pretrained(model_dir)
        shape = model_shape(Path(model_dir), config)
    return make_plan(config, shape, device="cuda", checkpointing=True, attention=backend)


def point(length: int, steps: int, warmup: int, precision: str, compile_layers_: bool) -> dict[str, Any]:
    """Train ``warmup + steps`` steps of one row each on the GPU; tokens/s over the timed steps."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tunekit_train.attention import flattens_rows, register_segment_sdpa, resolve_backend
    from tunekit_train.checkpointing import checkpoint_layers, compile_layers
    from tunekit_train.data import collate
    from tunekit_train.losses import causal_lm_loss
    from tunekit_train.precision import autocast, store_weights

    device = torch.device("cuda")
    backend = resolve_backend("auto", device)
    register_segment_sdpa()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**MODEL), attn_implementation=backend, dtype=torch.float32)
    store_weights(model, precision, device)
    model.to(device).train()
    checkpoint_layers(model)
    if compile_layers_:
        compile_layers(model)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    torch.cuda.reset_peak_memory_stats()
    times, tokens = [], []
    for row in sequences(length, warmup + steps, 0, MODEL["vocab_size"]):
        batch = collate([packed_row(row)], flatten=flattens_rows(backend)).to(device)
        torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast(device, precision):
            loss, _ = causal_lm_loss(model, batch, backend)
        (loss / batch.n_targets).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        tokens.append(batch.n_tokens)
    tokens_per_s = sum(tokens[warmup:]) / sum(times[warmup:])
    plan = plan_for(length, precision, backend)
    return {
        "length": length, "backend": backend, "precision": precision, "compile": compile_layers_,
        "params": params, "steps": steps, "tokens_per_s": tokens_per_s,
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        "planned_gib": plan.total / 2**30, "card": torch.cuda.get_device_name(),
        "card_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--lengths", default="8192,32768")
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps per point")
    p.add_argument("--warmup", type=int, default=2, help="steps before the timed ones")
    p.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "bf16"])
    p.add_argument("--compile", action="store_true", help="torch.compile each decoder layer")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the card's dense bf16 peak")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(point(a.child, a.steps, a.warmup, a.precision, a.compile)))
        return
    results = []
    for length in (int(x) for x in a.lengths.split(",")):
        # One process per point, so each peak is that point's alone.
        args = [sys.executable, __file__, "--child", str(length), "--steps", str(a.steps), "--warmup", str(a.warmup),
                "--precision", a.precision, *(["--compile"] if a.compile else [])]
        r = json.loads(subprocess.run(args, stdout=subprocess.PIPE, text=True, check=True).stdout.strip().splitlines()[-1])
        r["mfu"] = 6 * r["params"] * r["tokens_per_s"] / (a.peak_tflops * 1e12)
        results.append(r)
        print(f"{length:6} {r['backend']:18} tokens/s {r['tokens_per_s']:9.0f}  MFU {r['mfu']:.1%}  "
              f"peak {r['peak_allocated_gib']:.1f} GiB (plan {r['planned_gib']:.1f})", file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "bench_long_gpu", "argv": sys.argv[1:], "results": results}))


if __name__ == "__main__":
    main()
