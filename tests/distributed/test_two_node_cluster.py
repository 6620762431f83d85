"""A real two-node Ray cluster on this machine (a head and a second node of 1 CPU each, started
with ``ray start --block`` and stopped at the end): ``ds check --engine ray`` of an S3 prefix (moto)
and of a local folder gives the local report, and killing a task's worker mid-job loses and
duplicates nothing (Ray reruns the task)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from tests.conftest import free_port

from tunekit_cli.ds import main

pytestmark = pytest.mark.slow
SV = "bedrock-conversation-2024"
RAY = str(Path(sys.executable).with_name("ray"))
# The driver: run_check_ray in its own process (the test process may hold an in-process Ray).
DRIVER = """
import io, json, sys
from tunekit_data.check import CheckConfig, report_json
from tunekit_data.distributed import run_check_ray
address, range_size, valid, *paths = sys.argv[1:]
summary = run_check_ray(paths, CheckConfig(block_size=4096), address=address, range_size=int(range_size), valid_out=valid)
report_json(summary, sys.stdout.buffer)
"""


@contextmanager
def _cluster() -> Iterator[str]:
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="tkray", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    common = ["--num-cpus", "1", "--block", "--disable-usage-stats"]
    nodes = [subprocess.Popen([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard", "false", "--temp-dir", str(tmp), *common],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        _wait(lambda: _listening(port), "the head node")
        nodes.append(subprocess.Popen([RAY, "start", "--address", address, "--node-ip-address", "127.0.0.1", *common],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))  # fmt: skip
        _wait(lambda: _nodes(address) == 2, "two nodes")
        yield address
    finally:
        # Each node is a session of its own (start_new_session): its processes, workers included,
        # are stopped with it (a graceful SIGTERM waits 30 s to drain a node that is going anyway).
        for node in reversed(nodes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _nodes(address: str) -> int:
    code = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return int(run.stdout.strip() or 0)


def _wait(ready, what: str, timeout: float = 120, interval: float = 1) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what} did not come up"
        time.sleep(interval)


def _data(n: int) -> bytes:
    lines = []
    for i in range(n):
        role = "User" if i % 13 == 5 else "user"
        lines.append(orjson.dumps({"schemaVersion": SV, "messages": [{"role": role, "content": [{"text": f"question {i} " * (i % 5)}]}, {"role": "assistant", "content": [{"text": f"answer {i}"}]}]}))
    return b"\n".join(lines) + b"\n"


def _local(capsys, paths: list[str]) -> dict:
    main(["check", *paths, "--json"])
    return json.loads(capsys.readouterr().out)


def _driver(address: str, range_size: int, valid: Path | str, paths: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, address, str(range_size), str(valid), *paths], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(driver: subprocess.Popen) -> dict:
    out, err = driver.communicate(timeout=300)
    assert out, err.decode()[-2000:]
    # stdout is the report alone: Ray's notice of the killed worker goes to stderr (cluster.connect).
    return json.loads(out)


def _task_workers() -> list[int]:
    """Pids of worker processes running a check task (Ray names them after the task)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::check_range"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _valid_lines(folder: Path) -> list[bytes]:
    manifest = json.loads((folder / "manifest.json").read_bytes())
    return [line for p in manifest["parts"] for line in (folder / p["path"]).read_bytes().splitlines()]


def test_two_nodes_s3_local_and_a_killed_worker(s3, tmp_path, capsys, monkeypatch):
    # Ray >= 2.5x requires a token between nodes: one for this cluster, inherited by every process.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    bucket = s3.bucket()
    data = {"a.jsonl": _data(300), "b.jsonl": _data(120)}
    local_dir = tmp_path / "ds"
    local_dir.mkdir()
    for name, body in data.items():
        s3.put(f"s3://{bucket}/ds/{name}", body)
        (local_dir / name).write_bytes(body)
    with _cluster() as address:
        # An S3 prefix, outputs on S3 too: the report of the local engine on the same objects.
        expected = _local(capsys, [f"s3://{bucket}/ds/"])
        assert expected["invalid"] > 20
        assert _finish(_driver(address, 5000, f"s3://{bucket}/valid/", [f"s3://{bucket}/ds/"])) == expected
        assert b"".join(s3.get(f"s3://{bucket}/{k}") for k in sorted(s3.keys(bucket)) if k.startswith("valid/part-")).count(b"\n") == expected["valid"]
        # A local folder, with a task's worker killed mid-job: Ray reruns it, nothing is lost or doubled.
        # A third, larger file keeps the job running long enough to catch a task on an idle machine.
        (local_dir / "c.jsonl").write_bytes(_data(4000))
        expected = _local(capsys, [str(local_dir)])
        driver = _driver(address, 2000, tmp_path / "valid", [str(local_dir)])
        _wait(lambda: bool(_task_workers()) or driver.poll() is not None, "a running task", timeout=180, interval=0.02)
        killed = _task_workers()
        assert killed, "the job finished before a worker could be killed"
        os.kill(killed[0], signal.SIGKILL)
        assert _finish(driver) == expected
        main(["check", str(local_dir), "--valid-out", str(tmp_path / "valid.jsonl")])
        capsys.readouterr()
        got = _valid_lines(tmp_path / "valid")
        assert len(got) == expected["valid"] and got == (tmp_path / "valid.jsonl").read_bytes().splitlines()
