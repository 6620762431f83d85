"""Benchmark long packed rows (issue 12) on CPU: peak RSS and training tokens/s of tunekit with activation
checkpointing and the chunked loss, tunekit without either, and TRL's SFTTrainer with
``gradient_checkpointing=True`` and padding-free packing, on the same model, data and steps.

Model: a Llama built from a config (hidden 768, 12 layers, 12 heads, MLP 2,048, vocab 32,000, tied
embeddings: 110M parameters), seeded init, float32, AdamW. Data: seeded random sequences of 256-2,048
tokens (the first half of each is the untrained prompt), packed into rows of exactly ``--length`` tokens
for tunekit; TRL packs the same sequences itself (BFD, padding-free, ``completion_only_loss``).
tunekit attends with the backend `train run` picks (``--attention auto``: per-segment SDPA on CPU, no mask);
TRL with SDPA, whose padding-free rows get transformers' block-diagonal mask from the position ids.
One packed row per optimizer step. Every (peer, length) point runs in a process of its own, one after
the other, so each peak RSS (``ru_maxrss``) is that point's alone; tokens/s is over the steps after
``--warmup``, by the wall clock and per CPU-second of the process (``time.process_time``: on a shared machine the
wall clock counts other jobs' time too, CPU time much less so).

``tunekit-plain`` is skipped at lengths where its memory plan exceeds ``--max-gib`` (the machine's
shared memory would not hold it); the summary says so.

Usage::

    uv run --group bench python benchmarks/train/bench_long.py                          # 2k-16k, 1 step each
    uv run --group bench python benchmarks/train/bench_long.py --lengths 2048,4096 --steps 2

Prints a table, then one line of JSON with every figure.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `train run` does, before torch loads OpenMP

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MODEL = {
    "vocab_size": 32000, "hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
    "num_attention_heads": 12, "num_key_value_heads": 12, "tie_word_embeddings": True,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
}
PEERS = ("tunekit", "tunekit-plain", "trl")


def sequences(length: int, rows: int, seed: int, vocab: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """``rows`` rows of sequences filling exactly ``length`` tokens each (the last one cut to fit)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rows):
        row, used = [], 0
        while used < length:
            n = min(int(rng.integers(256, 2049)), length - used)
            ids = rng.integers(3, vocab, n).astype(np.int32)
            labels = ids.copy()
            labels[: max(1, n // 2)] = -100
            row.append((ids, labels))
            used += n
        out.append(row)
    return out


def packed_row(row: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """The `ds pack` columns of one row (each segment's first label is -100)."""
    labels = [np.concatenate([[-100], lab[1:]]).astype(np.int32) for _, lab in row]
    return {
        "input_ids": np.concatenate([ids for ids, _ in row]),
        "labels": np.concatenate(labels),
        "position_ids": np.concatenate([np.arange(len(ids)) for ids, _ in row]).astype(np.int32),
        "seq_lens": np.array([len(ids) for ids, _ in row], dtype=np.int32),
    }


def build_model(backend: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tunekit_train.attention import register_segment_sdpa

    register_segment_sdpa()
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(LlamaConfig(**MODEL), attn_implementation=backend, dtype=torch.float32)


def child_tunekit(length: int, steps: int, warmup: int, checkpointed: bool, attention: str) -> dict[str, Any]:
    """Train ``warmup + steps`` steps with tunekit's loss (chunked, checkpointed) or the full-logits loss."""
    import torch
    import torch.nn.functional as F

    from tunekit_train.attention import flattens_rows, resolve_backend
    from tunekit_train.checkpointing import checkpoint_layers
    from tunekit_train.data import collate
    from tunekit_train.losses import causal_lm_loss, trained_hidden

    backend = resolve_backend(attention, torch.device("cpu"))  # type: ignore[arg-type]
    model = build_model(backend).train()
    if checkpointed:
        checkpoint_layers(model)

    def plain_loss(model: Any, batch: Any, backend: str) -> tuple[Any, dict]:
        # What the loss was before issue 12: every trained position's float32 logits at once.
        hidden, head, targets = trained_hidden(model, batch, backend)
        return F.cross_entropy(head(hidden).float(), targets, reduction="sum"), {}

    loss_fn = causal_lm_loss if checkpointed else plain_loss
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times, cpu, tokens = [], [], []
    for row in sequences(length, warmup + steps, 0, MODEL["vocab_size"]):
        batch = collate([packed_row(row)], flatten=flattens_rows(backend))
        start, start_cpu = time.perf_counter(), time.process_time()
        loss, _ = loss_fn(model, batch, backend)
        (loss / batch.n_targets).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        tokens.append(batch.n_tokens)
    return {"times": times, "cpu": cpu, "tokens": tokens}


def child_trl(length: int, steps: int, warmup: int) -> dict[str, Any]:
    """TRL SFTTrainer: gradient checkpointing, BFD packing into padding-free rows of ``length`` tokens."""
    import datasets
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    records = [
        {"input_ids": ids.tolist(), "completion_mask": (lab != -100).astype(int).tolist()}
        for row in sequences(length, warmup + steps, 0, MODEL["vocab_size"])
        for ids, lab in row
    ]

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.cpu: list[float] = []
            self.tokens: list[int] = []
            self.start = self.start_cpu = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start, self.start_cpu = time.perf_counter(), time.process_time()
            self.seen = state.num_input_tokens_seen

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.times.append(time.perf_counter() - self.start)
            self.cpu.append(time.process_time() - self.start_cpu)
            self.tokens.append(state.num_input_tokens_seen - self.seen)

    clock = Clock()
    config = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-long-trl-"),
        per_device_train_batch_size=1,
        packing=True,
        padding_free=True,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        completion_only_loss=True,
        max_length=length,
        max_steps=warmup + steps,
        learning_rate=1e-4,
        max_grad_norm=1.0,
        include_num_input_tokens_seen="non_padding",
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(Path(__file__).resolve().parents[2] / "examples" / "tiny" / "tokenizer")
    dataset = datasets.Dataset.from_list(records)
    trainer = SFTTrainer(model=build_model("sdpa"), args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[clock])
    trainer.train()
    return {"times": clock.times, "cpu": clock.cpu, "tokens": clock.tokens}


def child(peer: str, length: int, steps: int, warmup: int, attention: str) -> None:
    """One point, in this process: prints its figures as JSON."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    run = child_trl(length, steps, warmup) if peer == "trl" else child_tunekit(length, steps, warmup, peer == "tunekit", attention)
    timed_s, timed_tokens = sum(run["times"][warmup:]), sum(run["tokens"][warmup:])
    cpu_s = sum(run["cpu"][warmup:])
    print(json.dumps({
        "peer": peer, "length": length, "steps": len(run["times"]) - warmup,
        "tokens_per_s": timed_tokens / timed_s, "tokens_per_cpu_s": timed_tokens / cpu_s, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }))


def planned_gib(length: int, checkpointing: bool, attention: str) -> float:
    """tunekit's memory plan (`tunekit_train.plan`) for one row of ``length`` tokens on CPU."""
    import torch
    from transformers import LlamaConfig

    from tunekit_train.attention import resolve_backend
    from tunekit_train.plan import make_plan, model_shape
    from tunekit_train.recipe import parse_recipe

    config = parse_recipe(
        {"run": {"model_name_or_path": "m"}, "training_config": {"max_length": length, "global_batch_size": 1}}, source="bench"
    ).recipe.training_config
    with tempfile.TemporaryDirectory() as model_dir:
        LlamaConfig(**MODEL).save_pretrained(model_dir)
        shape = model_shape(Path(model_dir), config)
    backend = resolve_backend(attention, torch.device("cpu"))  # type: ignore[arg-type]
    return make_plan(config, shape, device="cpu", checkpointing=checkpointing, attention=backend).total / 2**30


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--lengths", default="2048,4096,8192,16384")
    p.add_argument("--steps", type=int, default=1, help="timed optimizer steps per point")
    p.add_argument("--warmup", type=int, default=1, help="steps before the timed ones")
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--max-gib", type=float, default=10.0, help="skip tunekit-plain where its plan needs more")
    p.add_argument("--attention", default="auto", choices=["auto", "sdpa_varlen", "sdpa"],
                   help="tunekit's backend (auto: what train run uses; sdpa: the block-diagonal mask); TRL uses sdpa")
    p.add_argument("--layers", type=int, default=MODEL["num_hidden_layers"], help="decoder layers (toy runs: fewer)")
    p.add_argument("--hidden", type=int, default=MODEL["hidden_size"], help="hidden size (toy runs: smaller)")
    p.add_argument("--child", nargs=2, metavar=("PEER", "LENGTH"), help=argparse.SUPPRESS)
    a = p.parse_args()
    heads = max(1, a.hidden // 64)
    MODEL.update(num_hidden_layers=a.layers, hidden_size=a.hidden, intermediate_size=a.hidden * 8 // 3,
                 num_attention_heads=heads, num_key_value_heads=heads)
    if a.child:
        child(a.child[0], int(a.child[1]), a.steps, a.warmup, a.attention)
        return
    results, skipped = [], []
    for length in (int(x) for x in a.lengths.split(",")):
        for peer in a.peers.split(","):
            if peer == "tunekit-plain" and planned_gib(length, False, a.attention) > a.max_gib:
                skipped.append({"peer": peer, "length": length, "planned_gib": planned_gib(length, False, a.attention)})
                continue
            args = [sys.executable, __file__, "--child", peer, str(length), "--steps", str(a.steps), "--warmup", str(a.warmup),
                    "--layers", str(a.layers), "--hidden", str(a.hidden), "--attention", a.attention]
            # The child's stderr passes through, so a failing point shows its own traceback.
            out = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=True).stdout
            point = json.loads(out.strip().splitlines()[-1])
            point["planned_gib"] = planned_gib(length, peer != "tunekit-plain", a.attention) if peer != "trl" else None
            results.append(point)
            print(f"{peer:14} {length:6} tokens/s {point['tokens_per_s']:8.1f}  per CPU-s {point['tokens_per_cpu_s']:8.1f}  peak RSS {point['peak_rss_gib']:.2f} GiB", file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "bench_long", "argv": sys.argv[1:], "loadavg_end": os.getloadavg(), "results": results, "skipped": skipped}))


if __name__ == "__main__":
    main()
