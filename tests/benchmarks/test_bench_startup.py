"""The start-up benchmark (benchmarks/cli/bench_startup.py) at toy size, so that it cannot rot.

``uv run pytest -m benchmark tests/benchmarks/test_bench_startup.py``: one round of every command,
with this checkout as the ``--base`` tree too (so the PYTHONPATH route runs).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "cli" / "bench_startup.py"


@pytest.mark.benchmark
def test_bench_startup_times_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("_tunekit_bench_startup", BENCH)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    assert bench.main(["--repeat", "1", "--base", str(ROOT)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    labels = [r["command"] for r in result["rows"]]
    assert labels[:2] == ["python -c pass", "arrow floor"]
    assert "ds check sft.jsonl" in labels and "ds check sft.jsonl (base)" in labels and len(labels) == 8
    assert all(0 < r["min_s"] <= r["median_s"] for r in result["rows"])
