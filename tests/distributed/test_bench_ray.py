"""The Ray benchmark (benchmarks/ray/bench_ray.py) at toy size, so that it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ray" / "bench_ray.py"


@pytest.mark.benchmark
def test_bench_ray_runs_at_toy_size() -> None:
    args = ["--size", "4MB", "--tasks", "1", "--nodes-projection", "1,4"]
    out = subprocess.run([sys.executable, str(SCRIPT), *args], check=True, capture_output=True, text=True, timeout=900).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert [p["point"] for p in summary["points"]] == ["local", "ray 1 node", "ray 2 nodes"]
    assert all(p["check_s"] > 0 for p in summary["points"])
    assert summary["per_task_mb_s"] > 0 and [r["nodes"] for r in summary["projection"]] == [1, 4]
    tables = {t["input"]: t for t in summary["tables"]}
    assert set(tables) == {"jsonl", "parquet", "hf", "delta"}
    # Every input kind holds the same rows, all of them valid (they are the valid lines of the check).
    assert {(t["rows"], t["valid"]) for t in tables.values()} == {(tables["jsonl"]["rows"], tables["jsonl"]["rows"])}
