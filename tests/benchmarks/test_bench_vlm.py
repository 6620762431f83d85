"""The vision-language benchmark (benchmarks/vlm/bench_vlm.py) at toy size, so that it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "vlm" / "bench_vlm.py"


@pytest.mark.benchmark
def test_bench_vlm_toy() -> None:
    args = ["--images", "24", "--steps", "2", "--warmup", "1", "--max-length", "512", "--workers", "1"]
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=True, timeout=600)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["images"] == 24 and figures["pack_w1_cold_images_per_s"] > 0
    assert figures["packed_padding_share"] == 0 and figures["speedup_packed_vs_padded"] > 0
