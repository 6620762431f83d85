"""The README's main command, `bash examples/quickstart.sh`, works every time it is run (issue 18)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def quickstart(copy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the quickstart of the scratch copy ``copy`` with this environment's `ds` and `train`."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(copy / "examples" / "quickstart.sh"), *args], capture_output=True, text=True, env=env, check=False)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A scratch checkout: the quickstart needs only examples/ (it runs from the folder above it)."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    return tmp_path


def test_quickstart_refuses_an_out_dir_it_did_not_write(copy: Path) -> None:
    mine = copy / "my-run"
    (mine / "packed").mkdir(parents=True)
    (mine / "notes.txt").write_text("a user's file")
    proc = quickstart(copy, str(mine))
    assert proc.returncode == 2
    assert f"{mine} exists and was not written by the quickstart" in proc.stderr
    assert (mine / "notes.txt").read_text() == "a user's file"


@pytest.mark.slow
def test_quickstart_runs_twice_in_the_same_checkout(copy: Path) -> None:
    # ~1-2 min per run on 2 cores. The first run finds what a quickstart from before the marker file
    # left (packed/ alone), the second its own marked output: both start afresh and succeed.
    out = copy / "runs" / "quickstart"
    (out / "packed").mkdir(parents=True)
    for attempt in (1, 2):
        proc = quickstart(copy)
        assert proc.returncode == 0, f"run {attempt}: {proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        assert "starting afresh" in proc.stdout
        assert f"the run (adapter in final/) in {out}/sft-lora" in proc.stdout
        assert (out / "sft-lora" / "final").is_dir() and (out / ".tunekit-quickstart").is_file()
