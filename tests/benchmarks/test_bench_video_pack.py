"""The video packing benchmark (benchmarks/vlm/bench_video_pack.py) at toy size, so that it cannot rot."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "vlm" / "bench_video_pack.py"


@pytest.mark.benchmark
@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="the transformers side needs torchvision (uv run --group bench pytest)")
def test_bench_video_pack_toy() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--videos", "4", "--repeat", "1"], capture_output=True, text=True, check=True, timeout=600)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["tunekit_videos"] == 4 and figures["tunekit_frames"] == figures["transformers_frames"] > 0
    assert figures["tunekit_videos_per_s"] > 0 and figures["transformers_videos_per_s"] > 0
