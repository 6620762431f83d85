"""Benchmark vision-language packing and training (issue 16): ``ds pack --processor`` images/s (fetch
through the media cache, decode, grid, expand, write the bytes into the rows), and training samples/s on
packed rows against padded rows and against TRL's VLM SFT trainer, same tiny Qwen2-VL (built from a
config), same images.

* ``pack``: `tunekit_tokenize.pack_files` with the processor, a cold media cache (every image read and
  decoded) and then a warm one, for each ``--workers`` count (2 or more starts a spawn process pool
  when the input has two batches of 512 records or more); images/s = images packed / wall seconds.
* ``packed``: micro-batches of one row of ``--max-length`` tokens holding several samples, attention per
  segment (``sdpa_varlen``: the flattened row and its ``cu_seq_lens``, SDPA on each segment; per-segment
  M-RoPE): what ``train run`` does on CPU (``attn_implementation: auto``).
* ``packed_mask``: the same rows with the block-diagonal ``[L, L]`` mask (``sdpa``), for comparison.
* ``padded``: the same samples, ``B`` per micro-batch (B = the packed rows' mean samples per row, so
  both sides see the same samples per step), padded to the longest: the layout of TRL's VLM SFT path
  (``DataCollatorForVisionLanguageModeling``, one sample per row).

* ``trl``: `trl.SFTTrainer` itself (`trl_peer`), batches of the same ``B`` samples; its collator
  tokenizes with the processor's chat template and processes the images on every step. Skipped with
  ``--no-trl`` (TRL and torchvision are in the ``bench`` group only).

Every side times collate (pixel values with transformers' image processor) + forward + backward +
AdamW step, after ``--warmup`` steps: samples per wall second, and per CPU second of the process
(``time.process_time``; one torch thread), the fairer figure on a shared machine where the sides, run
one after another, see different loads.

Usage::

    uv run --group bench python benchmarks/vlm/bench_vlm.py         # 600 images, 30 steps each
    uv run --group bench python benchmarks/vlm/bench_vlm.py --images 60 --steps 4 --warmup 1   # toy
    uv run python benchmarks/vlm/bench_vlm.py --no-trl              # without the bench group

Prints a table, then one line of JSON with every figure.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.vision.shapes import (  # noqa: E402
    COLOURS,
    SHAPES,
    colour_record,
    make_model_dir,
    make_processor_dir,
    shape_png,
    write_jsonl,
)


def make_images(root: Path, n: int, seed: int) -> Path:
    """``n`` coloured-shape PNGs of 32..96 px per side and their Converse records (local paths)."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        size = (rng.randrange(32, 97, 8), rng.randrange(32, 97, 8))
        path = root / "images" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(shape_png(colour, shape, size, seed=seed * 1_000_000 + i))
        records.append(colour_record(str(path), colour, question=f"What colour is the {shape}? Answer in one word."))
    return write_jsonl(root / "train.jsonl", records)


def bench_pack(data: Path, processor: Path, out: Path, cache: Path, workers: list[int], max_length: int) -> dict[str, float]:
    import tunekit_tokenize as tk

    figures = {}
    for n, label in ((n, label) for n in workers for label in ("cold", "warm")):
        if label == "cold":
            shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        result = tk.pack_files([str(data)], tokenizer=processor, processor=processor, max_length=max_length, out_dir=out, media_cache=cache, workers=n)
        seconds = time.perf_counter() - started
        figures[f"pack_w{n}_{label}_images_per_s"] = result.stats["images"] / seconds
        figures["images"] = result.stats["images"]
        figures["rows"] = result.stats["bins"]
        figures["packing_efficiency"] = result.stats["packing_efficiency"]
    return figures


def bench_train(packed: Path, model_dir: Path, *, steps: int, warmup: int) -> dict[str, float]:
    import numpy as np
    import torch

    from tunekit_train.attention import flattens_rows
    from tunekit_train.data import load_packed
    from tunekit_train.losses import causal_lm_loss
    from tunekit_train.model import load_model
    from tunekit_train.vision import VisionCollate, split_segments

    torch.set_num_threads(1)
    rows = load_packed(packed)
    collate = VisionCollate.for_manifest(rows.manifest)
    all_rows = [rows.row(i) for i in range(len(rows))]
    singles = [seg for row in all_rows for seg in split_segments(row)]
    random.Random(0).shuffle(singles)  # a dataset order, as TRL's sampler draws it (packed rows sort by length)
    per_row = len(singles) / len(all_rows)
    batch = max(1, round(per_row))
    # Rows in a random order, as `train run` visits them (`epoch_order`): the pack's first rows hold its
    # longest samples (the largest images), so taking them in pack order would time the costliest rows.
    order = random.Random(0).sample(range(len(all_rows)), len(all_rows))
    packed_plan = [[all_rows[order[i % len(all_rows)]]] for i in range(steps + warmup)]
    plans = {  # name: (micro-batches, attention backend)
        "packed": (packed_plan, "sdpa_varlen"),
        "packed_mask": (packed_plan, "sdpa"),
        "padded": ([[singles[(i * batch + j) % len(singles)] for j in range(batch)] for i in range(steps + warmup)], "sdpa"),
    }
    figures: dict[str, float] = {"samples_per_packed_row": per_row, "padded_batch": batch}
    for name, (micro_batches, backend) in plans.items():
        model, _ = load_model(model_dir, backend=backend, seed=0)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        samples = tokens = padded_tokens = 0
        started = cpu_started = 0.0
        for step, group in enumerate(micro_batches):
            if step == warmup:
                started, cpu_started, samples, tokens, padded_tokens = time.perf_counter(), time.process_time(), 0, 0, 0
            built = collate(group, flatten=flattens_rows(backend))
            loss, _ = causal_lm_loss(model, built, backend)
            (loss / max(built.n_targets, 1)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            samples += sum(len(r["seq_lens"]) for r in group)
            tokens += built.n_tokens
            padded_tokens += int(np.prod(built.input_ids.shape))
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        figures[f"{name}_samples_per_s"] = samples / seconds
        figures[f"{name}_samples_per_cpu_s"] = samples / cpu_seconds
        figures[f"{name}_tokens_per_s"] = tokens / seconds
        figures[f"{name}_padding_share"] = 1 - tokens / padded_tokens
    figures["speedup_packed_vs_padded"] = figures["packed_samples_per_s"] / figures["padded_samples_per_s"]
    figures["speedup_packed_vs_packed_mask"] = figures["packed_samples_per_s"] / figures["packed_mask_samples_per_s"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--workers", default="1,2", help="ds pack worker processes, comma-separated (each timed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trl", action=argparse.BooleanOptionalAction, default=True, help="run TRL's SFTTrainer as the peer (bench group)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tunekit-bench-vlm-"))
    try:
        processor = make_processor_dir(root / "processor")
        model_dir = make_model_dir(root / "model", processor)
        data = make_images(root, args.images, args.seed)
        figures = {"images_generated": args.images, **bench_pack(data, processor, root / "packed", root / "cache", [int(w) for w in args.workers.split(",")], args.max_length)}
        figures.update(bench_train(root / "packed", model_dir, steps=args.steps, warmup=args.warmup))
        if args.trl:
            from benchmarks.vlm.trl_peer import bench_trl

            batch = int(figures["padded_batch"])
            figures.update(bench_trl(data, processor, model_dir, root / "trl", batch=batch, steps=args.steps, warmup=args.warmup))
            figures["speedup_packed_vs_trl"] = figures["packed_samples_per_s"] / figures["trl_samples_per_s"]
            figures["speedup_padded_vs_trl"] = figures["padded_samples_per_s"] / figures["trl_samples_per_s"]
            figures["cpu_speedup_packed_vs_trl"] = figures["packed_samples_per_cpu_s"] / figures["trl_samples_per_cpu_s"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_figures("vlm", figures)


def print_figures(benchmark: str, figures: dict[str, float]) -> None:
    """A table of ``figures``, then one line of JSON with all of them."""
    for key, value in figures.items():
        print(f"{key:32s} {value:12.3f}" if isinstance(value, float) else f"{key:32s} {value:12d}")
    print(json.dumps({"benchmark": benchmark, **{k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}}))


if __name__ == "__main__":
    main()
