"""Benchmark `train run` data parallelism on CPU (issue 8): tokens/s of 1 vs 2 processes over gloo.

The model, data and recipe are those of the SFT benchmark (``bench_sft.py``: a Llama built from a
config, 4 layers, hidden 256, vocab 2,048; seeded synthetic chats packed by ``tunekit_tokenize.pack_files``
into rows of ``--max-length`` tokens). Every configuration runs the same global batch
(``--global-batch`` rows a step, ``--micro-batch`` rows a forward pass), so 1 process accumulates
``global / micro`` micro-batches a step where 2 processes each take half of them:

* ``1 proc``: ``train run RECIPE`` with ``--threads`` intra-op threads;
* ``N procs``: ``train run RECIPE --nproc-per-node N`` (torchrun, gloo), ``--threads`` threads each,
  for ``training_config.strategy`` ddp and fsdp;
* ``1 proc, N x threads``: one process given all the cores the N processes use (the alternative on a
  single machine).

tokens/s are real tokens per second of training steps after ``--warmup`` steps, from rank 0's
``metrics.csv``. Scaling efficiency = tokens/s of N processes / (N x tokens/s of 1 process with the
same threads per process): 1.0 is linear scaling. ``other_cpu_s`` is CPU time the rest of the machine
used meanwhile (large values mean contended timings).

Usage::

    uv run python benchmarks/train/bench_scaling.py                  # 30 steps each
    uv run python benchmarks/train/bench_scaling.py --steps 4 --warmup 1 --samples 100 --layers 1 --hidden 64  # toy

Prints a table (medians over ``--repeat`` interleaved runs), then one line of JSON with every figure.
"""

from __future__ import annotations

import os

# Set before torch loads OpenMP (as `train run` does): spinning OpenMP threads are ~10x slower on a busy box.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import csv
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

# The SFT benchmark's model, data and measuring helpers (this script's folder is on sys.path when run).
from bench_sft import TOKENIZER, busy_cpu_seconds, environment, make_data, make_model, throughput

REPO = Path(__file__).resolve().parents[2]


def pack(samples: int, seed: int, max_length: int, global_batch: int, root: Path) -> Path:
    """Pack the SFT benchmark's chats; more samples until the last step of an epoch is not a lone row.

    `train run` on N processes refuses an epoch whose last step has fewer rows than processes.
    """
    from tunekit_tokenize import pack_files

    while True:
        out = root / f"packed-{samples}"
        pack_files([str(make_data(samples, seed))], tokenizer=TOKENIZER, max_length=max_length, out_dir=out, workers=1)
        rows = json.loads((out / "stats.json").read_text())["bins"]  # one packed row per bin
        if rows % global_batch != 1:
            return out
        samples += 10


def recipe_file(root: Path, model: Path, data: Path, a: argparse.Namespace, strategy: str) -> Path:
    """The benchmark recipe: AdamW, clipping, no checkpoints until the end, no TensorBoard."""
    recipe = {
        "run": {"name": "bench-scaling", "model_name_or_path": str(model), "data_s3_path": str(data)},
        "training_config": {
            "max_length": a.max_length,
            "global_batch_size": a.global_batch,
            "micro_batch_size": a.micro_batch,
            "strategy": strategy,
            "trainer": {"max_steps": a.steps, "log_every_n_steps": 1, "gradient_clip_val": 1.0},
            "exp_manager": {"create_tensorboard_logger": False},
            "model": {"optim": {"lr": 1e-4, "sched": {"warmup_steps": 5}}},
        },
    }
    path = root / f"recipe-{strategy}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def run(recipe: Path, out: Path, *, nproc: int, threads: int, warmup: int) -> dict[str, Any]:
    """One `train run` (through torchrun for nproc > 1); its steady-state tokens/s and wall time."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "tunekit_cli.train", "run", str(recipe), "-o", str(out), "--json"]
    if nproc > 1:
        command += ["--nproc-per-node", str(nproc)]
    # torchrun would set OMP_NUM_THREADS=1 per worker; set explicitly so every configuration is controlled.
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = str(threads)
    busy0, own0, wall0 = busy_cpu_seconds(), _children_cpu_s(), time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    wall = time.perf_counter() - wall0
    other = busy_cpu_seconds() - busy0 - (_children_cpu_s() - own0)
    if result.returncode:
        sys.exit(f"train run failed ({' '.join(command)}):\n{result.stderr[-3000:]}")
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    times, tokens = [float(r["elapsed_s"]) for r in rows], [int(r["tokens"]) for r in rows]
    return {
        "tokens_per_s": throughput(times, tokens, warmup),
        "wall_s": wall,
        "steps": len(rows),
        "tokens": tokens[-1],
        "other_cpu_s": round(max(other, 0.0), 1),
    }


def _children_cpu_s() -> float:
    # CPU time of finished children and the processes they waited for (torchrun's workers).
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--nproc", type=int, default=2, help="processes of the parallel runs")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    p.add_argument("--strategies", default="ddp,fsdp")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1, help="run the configurations in turn this many times; medians are reported")
    a = p.parse_args()

    root = Path(tempfile.mkdtemp(prefix="tunekit-bench-scaling-"))
    try:
        model = make_model(root, a.layers, a.hidden)
        data = pack(a.samples, a.seed, a.max_length, a.global_batch, root)
        strategies = a.strategies.split(",")
        recipes = {s: recipe_file(root, model, data, a, s) for s in strategies}
        first = recipes[strategies[0]]  # one process: the strategy changes only the checkpoint format
        configurations = {
            "1 proc": (first, 1, a.threads),
            **{f"{a.nproc} procs {s}": (recipe, a.nproc, a.threads) for s, recipe in recipes.items()},
            f"1 proc, {a.nproc}x threads": (first, 1, a.nproc * a.threads),
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configurations}
        for _ in range(a.repeat):  # interleaved, so a burst of load elsewhere hits every configuration alike
            for name, (recipe, nproc, threads) in configurations.items():
                runs[name].append(run(recipe, root / "run", nproc=nproc, threads=threads, warmup=a.warmup))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results = {
        name: {key: float(np.median([r[key] for r in done])) for key in done[0]} | {"runs": done} for name, done in runs.items()
    }

    base = results["1 proc"]["tokens_per_s"]
    for name, r in results.items():
        procs = a.nproc if " procs " in name else 1
        r["scaling_efficiency"] = r["tokens_per_s"] / (procs * base) if " procs " in name else None
        r["speedup"] = r["tokens_per_s"] / base
    print(f"{'configuration':<24} {'tokens/s':>10} {'speedup':>8} {'efficiency':>10} {'wall s':>7} {'other cpu s':>11}")
    for name, r in results.items():
        eff = f"{r['scaling_efficiency']:.2f}" if r["scaling_efficiency"] is not None else "-"
        print(f"{name:<24} {r['tokens_per_s']:>10.0f} {r['speedup']:>7.2f}x {eff:>10} {r['wall_s']:>7.1f} {r['other_cpu_s']:>11.1f}")
    print(json.dumps({**environment("train-scaling"), "threads_per_proc": a.threads, "nproc": a.nproc, "results": results}))


if __name__ == "__main__":
    main()
