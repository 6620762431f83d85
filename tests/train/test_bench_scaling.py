"""The data-parallel scaling benchmark (benchmarks/train/bench_scaling.py) at toy size, so that it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train" / "bench_scaling.py"


@pytest.mark.benchmark
def test_bench_scaling_runs_at_toy_size() -> None:
    args = ["--steps", "4", "--warmup", "1", "--samples", "80", "--layers", "1", "--hidden", "64", "--max-length", "128"]
    out = subprocess.run([sys.executable, str(SCRIPT), *args], check=True, capture_output=True, text=True).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert set(summary["results"]) == {"1 proc", "2 procs ddp", "2 procs fsdp", "1 proc, 2x threads"}
    assert all(r["steps"] == 4 and r["tokens_per_s"] > 0 for r in summary["results"].values())
    assert summary["results"]["2 procs fsdp"]["scaling_efficiency"] > 0
