"""The `train serve` benchmark (benchmarks/serve/bench_serve.py) at toy size, so that it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serve" / "bench_serve.py"


@pytest.mark.benchmark
def test_bench_serve_runs_at_toy_size() -> None:
    args = ["--clients", "1,4", "--requests", "8", "--max-tokens", "4"]
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args], check=True, capture_output=True, text=True
    ).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert [level["clients"] for level in summary["levels"]] == [1, 4]
    assert all(
        level["serve"]["requests"] == level["baseline"]["requests"] == 8 and level["match"] == 1.0
        for level in summary["levels"]
    )
    assert summary["server"]["max_batch_size"] > 1
