"""The long-row benchmark (benchmarks/train/bench_long.py) at toy size, so that it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train" / "bench_long.py"


@pytest.mark.benchmark
def test_bench_long_runs_at_toy_size() -> None:
    args = ["--lengths", "256,512", "--steps", "1", "--warmup", "1", "--layers", "1", "--hidden", "64"]
    out = subprocess.run([sys.executable, str(SCRIPT), *args], check=True, capture_output=True, text=True).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    points = {(r["peer"], r["length"]) for r in summary["results"]}
    assert points == {(peer, n) for peer in ("tunekit", "tunekit-plain", "trl") for n in (256, 512)}
    assert all(r["tokens_per_s"] > 0 and r["peak_rss_gib"] > 0 for r in summary["results"])
    assert all(r["planned_gib"] > 0 for r in summary["results"] if r["peer"] != "trl")
