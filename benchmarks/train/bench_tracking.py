"""Benchmark MLflow tracking's per-step cost (issue 14): steps/s of `train run` with and without it.

The tiny example model (``examples/tiny/model``: 4 layers, hidden 128, a seeded random init) trains on the
bundled SFT JSONL (packed once, outside the timing) with a metrics row at every step, the case where
tracking does the most work per step. Each repeat runs the same recipe twice, ``run.tracking: false``
and ``true`` (embedded SQLite store in a fresh runs directory), alternating which goes first. steps/s is
taken from ``metrics.csv``'s ``elapsed_s`` between the first and the last step, so it counts the training
steps only; ``close_s`` is the time from the last step to ``run_training``'s return (the tracked run's
final backfill, artifacts and status). ``other_cpu_s`` is CPU the rest of the machine used meanwhile.

Usage::

    uv run python benchmarks/train/bench_tracking.py --steps 300 --repeat 3
    uv run python benchmarks/train/bench_tracking.py --steps 20 --repeat 1     # toy

Prints a table, then one line of JSON with every figure.
"""

from __future__ import annotations

import os

# Set before torch loads OpenMP (as `train run` does): spinning OpenMP threads are ~10x slower on a busy box.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
from bench_sft import busy_cpu_seconds  # noqa: E402


def recipe(steps: int, *, tracking: bool, runs: Path) -> Any:
    """The benchmark's recipe: one metrics row per step, a checkpoint only at the end."""
    from tunekit_train.recipe import parse_recipe

    tree = {
        "run": {
            "name": "bench-tracking",
            "model_name_or_path": str(REPO / "examples/tiny/model"),
            "tokenizer_name_or_path": str(REPO / "examples/tiny/tokenizer"),
            "data_s3_path": str(REPO / "examples/data/sft.jsonl"),
            "tracking": tracking,
            "tracking_uri": f"sqlite:///{runs / 'mlflow.db'}",
        },
        "training_config": {
            "max_length": 256,
            "global_batch_size": 2,
            "micro_batch_size": 2,
            "trainer": {"max_steps": steps, "log_every_n_steps": 1},
            "model": {"optim": {"lr": 1e-3}},
        },
    }
    return parse_recipe(tree, source="bench_tracking")


def one_run(steps: int, tracking: bool, root: Path, pack: Path | None) -> dict[str, Any]:
    """Train once; steps/s over the logged steps, and the time the run's end took."""
    from tunekit_train.logs import read_metrics
    from tunekit_train.run import run_training

    runs = root / ("on" if tracking else "off")
    shutil.rmtree(runs, ignore_errors=True)
    run_dir = runs / "run"
    if pack is not None:  # the packed cache: packing is not timed
        shutil.copytree(pack, run_dir / "data" / "train")
    other = busy_cpu_seconds() - time.process_time()
    start = time.perf_counter()
    run_training(recipe(steps, tracking=tracking, runs=runs), output_dir=run_dir)
    wall = time.perf_counter() - start
    other = busy_cpu_seconds() - time.process_time() - other
    rows = read_metrics(run_dir)
    first, last = rows[0], rows[-1]
    span = float(last["elapsed_s"]) - float(first["elapsed_s"])
    return {
        "tracking": tracking,
        "steps_per_s": (int(last["step"]) - int(first["step"])) / span,
        "close_s": wall - float(last["elapsed_s"]),
        "wall_s": wall,
        "other_cpu_s": other,
    }


def main() -> None:
    """Run the benchmark and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        root = Path(tmp)
        warm = root / "warm"
        one_run(2, False, warm, None)  # packs the data once (cached for every timed run)
        pack = root / "pack"
        shutil.copytree(warm / "off" / "run" / "data" / "train", pack)
        results = []
        for i in range(args.repeat):
            order = (False, True) if i % 2 == 0 else (True, False)
            results += [one_run(args.steps, tracking, root, pack) for tracking in order]
    rate = {t: statistics.median(r["steps_per_s"] for r in results if r["tracking"] is t) for t in (False, True)}
    overhead = 1 - rate[True] / rate[False]
    print(f"{'tracking':>8} {'steps/s':>9} {'close s':>8} {'other cpu s':>11}")
    for r in results:
        print(f"{r['tracking']!s:>8} {r['steps_per_s']:9.2f} {r['close_s']:8.2f} {r['other_cpu_s']:11.1f}")
    print(f"median steps/s: off {rate[False]:.2f}, on {rate[True]:.2f}; overhead {overhead:+.2%} (target < 2%)")
    print(json.dumps({"steps": args.steps, "repeat": args.repeat, "runs": results, "median_steps_per_s": {"off": rate[False], "on": rate[True]}, "overhead": overhead}))


if __name__ == "__main__":
    main()
