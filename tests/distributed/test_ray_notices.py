"""Ray's driver notices (a worker died, ...) go to stderr, so a `--json` report on stdout stays parseable."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("ray")

# A driver that joins Ray through tunekit, loses a task's worker (the process exits mid-task), waits for
# Ray's notice of it, then prints a report on stdout as `--json` does.
DRIVER = """
import json, os, sys, time
from tunekit_data.distributed.cluster import connect

ray = connect(None)

@ray.remote(max_retries=0)
def crash():
    os._exit(1)

try:
    ray.get(crash.remote())
except Exception as exc:
    lost = type(exc).__name__
time.sleep(3)  # the notice arrives through Ray's error listener thread, a poll later
print(json.dumps({"lost": lost}))
"""


def test_worker_death_notice_goes_to_stderr_not_stdout():
    done = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == {"lost": "WorkerCrashedError"}
    assert "worker died" in done.stderr.lower(), done.stderr[-2000:]
