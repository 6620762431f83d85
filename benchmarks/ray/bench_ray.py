"""Benchmark ``ds check`` on Ray against the local engine (issue 15), and tabular inputs against JSONL.

One run, one input (generated Converse SFT JSONL, 1 % invalid lines, default 1 GB), each point in a
process of its own, the machine's CPUs the same for every point:

- ``local``: the local engine (threads of one process, ``available_cores()`` workers);
- ``ray 1 node``: a Ray head started here with every CPU; ``ray 2 nodes``: a head and a second node
  with half the CPUs each (the same CPUs, now with tasks and results crossing nodes).
  ``connect s`` (joining the running cluster) is reported apart from ``check s`` (the job), since a
  user's cluster is already running; the overhead is ``check s`` over the local engine's.
  Every Ray point's report must equal the local one (timings aside), or the run fails.
  ``daemons cpu s``: CPU seconds the cluster's own processes (GCS, raylets, agents; not the
  workers) used during the job, read from /proc.
- per task: one ``check_range`` task body timed alone (MB/s on one core) and the driver's CPU
  seconds per GB during the Ray job; the projection to N nodes of C CPUs is the larger of the tasks'
  share (bytes / (N x C x per-task MB/s)) and the driver's serial merge, which is what stops the
  scaling being linear.
- tables: the local check's valid lines as Parquet, a Hugging Face ``save_to_disk`` folder and a Delta
  table; ``ds check`` of each (reading included) in rows/s against the same rows as JSONL.

Usage::

    uv run --group bench python benchmarks/ray/bench_ray.py                 # 1 GB
    uv run --group bench python benchmarks/ray/bench_ray.py --size 64MB --nodes-projection 1,4,16

Prints a table, then one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def _bench_check() -> Any:
    """``benchmarks/check/bench_check.py`` (its seeded generator and data cache), as a module."""
    spec = importlib.util.spec_from_file_location(
        "_tunekit_bench_check", REPO / "benchmarks" / "check" / "bench_check.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def report(summary: Any) -> dict[str, Any]:
    """The `--json` report of a check summary (what both engines must agree on)."""
    import io

    from tunekit_data.check import report_json

    buffer = io.BytesIO()
    report_json(summary, buffer)
    return json.loads(buffer.getvalue())


def child(point: str, address: str | None, paths: list[str]) -> dict[str, Any]:
    """One point, in this process."""
    from tunekit_data.check import CheckConfig, run_check, worker_init

    worker_init()  # as the `ds` command does before any check (no pandas probe, jemalloc)
    out: dict[str, Any] = {"point": point}
    cpu0 = time.process_time()
    if address is None:
        start = time.perf_counter()
        summary = run_check(paths, CheckConfig())
    else:
        from tunekit_data.distributed.check import run_check_ray
        from tunekit_data.distributed.cluster import connect

        start = time.perf_counter()
        connect(address)
        out["connect_s"] = time.perf_counter() - start
        start, cpu0 = time.perf_counter(), time.process_time()
        summary = run_check_ray(paths, CheckConfig(), address=address)
    out["check_s"] = time.perf_counter() - start
    out["driver_cpu_s"] = time.process_time() - cpu0
    out["report"] = report(summary)
    return out


def run_child(
    point: str, address: str | None, paths: list[str], env: dict[str, str] | None = None, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    args = [sys.executable, __file__, "--child", point, address or "-", *paths, *extra]
    done = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=True, env=env)
    return json.loads(done.stdout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            msg = f"bench_ray: timed out waiting for {what}"
            raise SystemExit(msg)
        time.sleep(0.5)


def _cluster_cpus(address: str, env: dict[str, str]) -> int:
    probe = "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); print(int(ray.cluster_resources().get('CPU', 0)))"
    env = {**env, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}  # as `connect` has it (no working_dir upload)
    done = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True, env=env)
    return int(done.stdout.strip() or 0) if done.returncode == 0 else 0


def _proc_stat(pid: int) -> tuple[int, float, str] | None:
    """(parent pid, own CPU seconds, command line) of a live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), cmd


def daemon_cpu_s(roots: list[int]) -> float:
    """CPU seconds the Ray daemons under ``roots`` (the ``ray start`` processes) used so far: GCS,
    raylets, agents, not the worker processes (``ray::`` tasks and idle workers)."""
    procs = {int(p.name): st for p in Path("/proc").iterdir() if p.name.isdigit() and (st := _proc_stat(int(p.name)))}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0.0, list(roots)
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        if pid in procs:
            _, cpu, cmd = procs[pid]
            worker = cmd.startswith("ray::") and not cmd.split()[0].endswith("Agent")
            total += 0.0 if worker else cpu
    return total


def settle(roots: list[int], window: float = 2.0, busy: float = 0.05, timeout: float = 120) -> None:
    """Wait until the cluster's daemons use under ``busy`` of a CPU over ``window`` seconds.

    A fresh node's Python daemons (agents, client server, prestarted workers) take tens of CPU
    seconds to start; a user's cluster is up long before a job, so the job is timed on a settled one.
    """
    deadline = time.monotonic() + timeout
    before = daemon_cpu_s(roots)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = daemon_cpu_s(roots)
        if now - before < busy * window:
            return
        before = now
    print("bench_ray: the cluster did not settle; timing it anyway", file=sys.stderr)


@contextlib.contextmanager
def cluster(cpus_per_node: list[int]) -> Iterator[tuple[str, dict[str, str], list[int]]]:
    """A local Ray cluster of ``len(cpus_per_node)`` nodes (head first); yields its address, the
    environment (auth token) its drivers need and the nodes' process ids. Every node is stopped at
    the end."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    temp = tempfile.mkdtemp(prefix="tkbray", dir="/tmp")  # Ray's socket paths must stay short
    common = ["--node-ip-address", "127.0.0.1", "--block", "--disable-usage-stats"]
    nodes: list[subprocess.Popen] = []

    def start(extra: list[str], cpus: int) -> None:
        nodes.append(
            subprocess.Popen(
                [RAY, "start", *extra, "--num-cpus", str(cpus), *common],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    try:
        start(
            ["--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", temp],
            cpus_per_node[0],
        )
        for cpus in cpus_per_node[1:]:
            time.sleep(3)
            start(["--address", address], cpus)
        _wait(lambda: _cluster_cpus(address, env) == sum(cpus_per_node), f"{len(cpus_per_node)} node(s)")
        settle([node.pid for node in nodes])
        yield address, env, [node.pid for node in nodes]
    finally:
        for node in reversed(nodes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, 9)
        for node in nodes:
            node.wait()
        shutil.rmtree(temp, ignore_errors=True)


class _Captured(Exception):
    """Stops ``run_check`` once the per-task figure is taken (the blocks are not needed)."""


def per_task_mb_s(path: str, tasks: int) -> float:
    """MB/s of the Ray task body (``check_range``) on one core, over the first ``tasks`` ranges.

    ``run_check`` hands its engine the sources and the resolved format options; this engine times
    the task body on them in this process, then stops the run.
    """
    from tunekit_data.check import CheckConfig, run_check, worker_init
    from tunekit_data.distributed.check import check_range
    from tunekit_data.distributed.ranges import DEFAULT_RANGE_SIZE, split_ranges

    worker_init()  # as every Ray task runs it
    rate: list[float] = []

    def engine(sources: Any, options: Any, config: Any) -> Any:
        ranges = split_ranges(sources, DEFAULT_RANGE_SIZE)[:tasks]
        start = time.perf_counter()
        for r in ranges:
            check_range(r, options, config, {})
        rate.append(sum(r.stop - r.start for r in ranges) / 1e6 / (time.perf_counter() - start))
        raise _Captured

    with contextlib.suppress(_Captured):
        run_check([path], CheckConfig(), engine=engine)
    return rate[0]


def write_tables(valid_jsonl: Path, folder: Path) -> dict[str, str]:
    """The valid lines as Parquet, a Hugging Face ``save_to_disk`` folder and a Delta table."""
    import datasets
    import deltalake
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    table = pj.read_json(valid_jsonl)
    paths = {"parquet": folder / "data.parquet", "hf": folder / "hf", "delta": folder / "delta"}
    pq.write_table(table, paths["parquet"])
    datasets.disable_progress_bars()
    datasets.Dataset(table).save_to_disk(str(paths["hf"]))
    deltalake.write_deltalake(str(paths["delta"]), table)
    return {k: str(v) for k, v in paths.items()}


def tables_point(kind: str, path: str) -> dict[str, Any]:
    """``ds check`` of one input kind, reading included."""
    from tunekit_data.check import CheckConfig, run_check, worker_init

    worker_init()
    start = time.perf_counter()
    summary = run_check([path], CheckConfig())
    seconds = time.perf_counter() - start
    return {
        "input": kind,
        "rows": summary.records,
        "valid": summary.valid,
        "seconds": seconds,
        "rows_per_s": summary.records / seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--size", default="1GB")
    p.add_argument("--tasks", type=int, default=8, help="ranges timed for the per-task figure")
    p.add_argument("--nodes-projection", default="1,2,4,8,16,32")
    p.add_argument("--cpus-per-node", type=int, default=16, help="CPUs of each projected node")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        point, address, *paths = a.child
        if point == "per-task":
            print(json.dumps({"per_task_mb_s": per_task_mb_s(paths[0], a.tasks)}))
        elif point.startswith("tables:"):
            print(json.dumps(tables_point(point.removeprefix("tables:"), paths[0])))
        else:
            print(json.dumps(child(point, None if address == "-" else address, paths)))
        return

    bench_check = _bench_check()
    from tunekit_data.cores import available_cores

    meta = bench_check.ensure_data(
        bench_check.gen.parse_size(a.size), 0, (1.0, 0.0, 0.0), 0.01, kind="sft", tag="ray"
    )[0]
    path = meta["path"]
    size_mb = Path(path).stat().st_size / 1e6
    cpus = available_cores()
    bench_check.warm(path)

    points = [run_child("local", None, [path])]
    for name, nodes in (("ray 1 node", [cpus]), ("ray 2 nodes", [max(1, cpus // 2), max(1, cpus - cpus // 2)])):
        with cluster(nodes) as (address, env, pids):
            before = daemon_cpu_s(pids)
            points.append(run_child(name, address, [path], env))
            points[-1]["daemons_cpu_s"] = daemon_cpu_s(pids) - before
    local = points[0]
    reports = [point.pop("report") for point in points]
    if any(r != reports[0] for r in reports[1:]):
        msg = "bench_ray: a Ray report differs from the local engine's"
        raise SystemExit(msg)
    print(
        f"{'point':12} {'connect s':>9} {'check s':>8} {'MB/s':>7} {'vs local':>8} {'driver cpu s':>12} {'daemons cpu s':>13}",
        file=sys.stderr,
    )
    for point in points:
        point["mb_per_s"] = size_mb / point["check_s"]
        point["overhead"] = point["check_s"] / local["check_s"] - 1
        print(
            f"{point['point']:12} {point.get('connect_s', 0):9.2f} {point['check_s']:8.2f} {point['mb_per_s']:7.0f} "
            f"{point['overhead']:+8.1%} {point['driver_cpu_s']:12.2f} {point.get('daemons_cpu_s', 0):13.2f}",
            file=sys.stderr,
        )

    task = run_child("per-task", None, [path], extra=("--tasks", str(a.tasks)))["per_task_mb_s"]  # own process, as a worker
    driver_s_per_gb = points[1]["driver_cpu_s"] / (size_mb / 1000)
    projection = []
    for n in (int(x) for x in a.nodes_projection.split(",")):
        tasks_s = size_mb / (n * a.cpus_per_node * task)
        projection.append(
            {
                "nodes": n,
                "cpus": n * a.cpus_per_node,
                "tasks_s_per_tb": tasks_s * 1e6 / size_mb,
                "driver_s_per_tb": driver_s_per_gb * 1000,
                "projected_h_per_tb": max(tasks_s * 1e6 / size_mb, driver_s_per_gb * 1000) / 3600,
            }
        )
    print(
        f"per task: {task:.0f} MB/s on one core; driver: {driver_s_per_gb:.2f} CPU s per GB", file=sys.stderr
    )
    for row in projection:
        print(
            f"  {row['nodes']:3} nodes x {a.cpus_per_node} CPUs: {row['projected_h_per_tb']:.2f} h per TB",
            file=sys.stderr,
        )

    with tempfile.TemporaryDirectory(prefix="bench-ray-tables-") as tmp:
        from tunekit_data.check import CheckConfig, run_check

        valid = Path(tmp) / "valid.jsonl"
        run_check([path], CheckConfig(), valid_out=str(valid))
        inputs = {"jsonl": str(valid), **write_tables(valid, Path(tmp))}
        tables = [run_child(f"tables:{kind}", "-", [p_]) for kind, p_ in inputs.items()]
    base = tables[0]["rows_per_s"]
    for row in tables:
        row["vs_jsonl"] = row["rows_per_s"] / base
        print(
            f"  ds check {row['input']:8} {row['rows']:9,} rows {row['rows_per_s']:10,.0f} rows/s  {row['vs_jsonl']:.2f}x JSONL",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "benchmark": "bench_ray",
                "argv": sys.argv[1:],
                "size_mb": size_mb,
                "cpus": cpus,
                "loadavg_end": os.getloadavg(),
                "points": points,
                "per_task_mb_s": task,
                "driver_cpu_s_per_gb": driver_s_per_gb,
                "projection": projection,
                "tables": tables,
            }
        )
    )


if __name__ == "__main__":
    main()
