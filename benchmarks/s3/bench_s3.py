"""Benchmark `ds check` reading from a local S3-compatible server vs from local disk, issue 7.

In one run, on the same generated SFT file (``benchmarks/check/gen.py``; by default the 216 MB
analogue of the AWS file of issue 2, cached in ``benchmarks/_data/``):

* ``ds check FILE`` - from local disk (read once before timing, so from the page cache);
* ``ds check s3://tunekit-bench/FILE`` - from a moto server on 127.0.0.1, which this script starts in
  its own process (so it does not share ``ds check``'s interpreter) and stops at the end.

Both are the real CLI as a subprocess, best of ``--repeat``, measured like ``bench_check.py``
(wall time, CPU and peak RSS of the ``ds check`` process tree; ``moto cpu`` is the server's CPU
time meanwhile, ``other cpu`` what the rest of the machine used, moto included). Their verdicts must agree with
each other and with the generator's record of the file. Two ``read only`` rows time the reading path
alone (``reader.iter_blocks`` over the file, one process), to tell the store's cost from the checker's.

moto is a test double, not a fast store: it serves every ranged GET by copying the whole object in
Python (here from memory), so the S3 rows measure tunekit's reading path plus moto's cost: a floor
for a real store.

Usage::

    uv run python benchmarks/s3/bench_s3.py --size 216MB --workers 2 --repeat 3

Prints a table, then one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]
BUCKET = "tunekit-bench"
_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _bench_check() -> ModuleType:
    """``benchmarks/check/bench_check.py``, under the module name that benchmark's tests use."""
    name = "_tunekit_bench_check_bench_check"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "check" / "bench_check.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before exec: dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


bench_check = _bench_check()


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set environment variables (inherited by the measured ``ds check``), restoring them after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class Server:
    """A running moto server: its endpoint URL and process id."""

    endpoint: str
    pid: int

    def cpu(self) -> float:
        """CPU seconds the server has used so far."""
        return bench_check._cpu_seconds(self.pid) or 0.0


@contextlib.contextmanager
def moto_server(object_bytes: int) -> Iterator[Server]:
    """A moto S3 server on a free 127.0.0.1 port, in its own process.

    Objects up to ``object_bytes`` stay in its memory (moto's default spills objects over 5 MB to
    temporary files and reads the whole file back for every ranged GET).
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(object_bytes + (1 << 20))}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                msg = f"moto server did not start: {shlex.join(cmd)}"
                raise RuntimeError(msg)
            time.sleep(0.1)
        yield Server(f"http://127.0.0.1:{port}", proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def upload(endpoint: str, path: str) -> str:
    """Put ``path`` into the bench bucket (multipart, in parallel); return its ``s3://`` URI."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=BUCKET)
    key = Path(path).name
    client.upload_file(path, BUCKET, key)
    return f"s3://{BUCKET}/{key}"


@dataclass
class Row:
    """One measured source."""

    source: str
    target: str
    mb: float
    lines: int
    wall: float
    mb_s: float
    lines_s: float
    cpu: float
    other_cpu: float
    moto_cpu: float
    peak_rss_mb: float
    records: int | None
    valid: int | None
    verified: bool
    note: str = ""


# Reads TARGET in blocks as ds check does, and prints the line count as ds check's JSON would.
READ_ONLY = (
    "import sys, orjson; from tunekit_data.io import expand_paths, iter_blocks; "
    "n = sum(b.data.count(b'\\n') for s in expand_paths(sys.argv[1:]) for b in iter_blocks(s)); "
    "sys.stdout.buffer.write(orjson.dumps({'records': n, 'valid': n}))"
)


def _measure(
    label: str, cmd: list[str], target: str, meta: dict[str, Any], server: Server, repeat: int
) -> tuple[Row, Any]:
    runs = []
    for _ in range(repeat):
        before = server.cpu()
        runs.append((bench_check.measure(cmd), server.cpu() - before))
    best, moto_cpu = min(runs, key=lambda r: r[0].wall)
    mb = meta["bytes"] / 1e6
    row = Row(label, target, round(mb, 1), meta["lines"], round(best.wall, 3), round(mb / best.wall, 1),
              round(meta["lines"] / best.wall), round(best.cpu, 2), round(best.other_cpu, 2), round(moto_cpu, 2),
              round(best.peak_rss / 2**20, 1), None, None, False)  # fmt: skip
    return row, best


def read_only(label: str, target: str, meta: dict[str, Any], server: Server, repeat: int) -> Row:
    """Time reading ``target`` in blocks, without checking; verified by the line count."""
    row, best = _measure(label, [sys.executable, "-c", READ_ONLY, target], target, meta, server, repeat)
    with contextlib.suppress(orjson.JSONDecodeError):
        row.records = row.valid = orjson.loads(best.stdout)["records"]
    row.verified = row.records == meta["lines"]
    row.note = "" if row.verified else f"exit {best.exit}: {best.stderr.strip()[-300:]}"
    return row


def run(
    label: str,
    target: str,
    meta: dict[str, Any],
    server: Server,
    ds_cmd: list[str],
    workers: int,
    repeat: int,
) -> Row:
    """Time ``ds check TARGET`` (best of ``repeat``) and check its verdict against the generator's."""
    cmd = [*ds_cmd, "check", target, "--json", "--format", meta["format"], "--workers", str(workers)]
    row, best = _measure(label, cmd, target, meta, server, repeat)
    try:
        summary = orjson.loads(best.stdout)
    except orjson.JSONDecodeError:
        row.note = f"exit {best.exit}, no JSON: {best.stderr.strip()[-300:]}"
        return row
    row.records, row.valid = summary.get("records"), summary.get("valid")
    problems = bench_check.verify_ds(summary, meta)
    row.verified, row.note = not problems, "; ".join(problems)[:600]
    return row


def _table(rows: list[Row]) -> str:
    head = f"{'source':<22} {'MB':>7} {'wall s':>7} {'MB/s':>7} {'lines/s':>9} {'cpu s':>6} {'moto cpu s':>10} {'other cpu s':>11} {'peak RSS MB':>11}  ok"
    body = [
        f"{r.source:<22} {r.mb:>7,.1f} {r.wall:>7.2f} {r.mb_s:>7,.1f} {r.lines_s:>9,.0f} {r.cpu:>6.1f} {r.moto_cpu:>10.1f} {r.other_cpu:>11.1f} {r.peak_rss_mb:>11,.0f}  {'yes' if r.verified else 'NO'}"
        for r in rows
    ]
    return "\n".join([head, *body])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns 1 if a verdict disagrees."""
    gen = bench_check.gen
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--size", type=gen.parse_size, default=gen.parse_size("216MB"), help="file size: 216MB, 1GB, ..."
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mix", type=gen.parse_mix, default=(1.0, 0.0, 0.0), help="record shares sft,dpo,image")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="ds check --workers")
    ap.add_argument("--repeat", type=int, default=1, help="runs per source; the fastest counts")
    ap.add_argument(
        "--data-dir", type=Path, default=bench_check.DATA_DIR, help="where generated files are cached"
    )
    ap.add_argument(
        "--ds", default=f"{shlex.quote(sys.executable)} -m tunekit_cli.ds", help="command that runs ds"
    )
    args = ap.parse_args(argv)
    ds_cmd = shlex.split(args.ds)

    meta = next(
        m
        for m in bench_check.ensure_data(args.size, args.seed, args.mix, 0.0, data_dir=args.data_dir)
        if m["format"] == "sft"
    )
    bench_check.warm(meta["path"])
    with moto_server(meta["bytes"]) as server, environ(**_CREDENTIALS, AWS_ENDPOINT_URL=server.endpoint):
        uri = upload(server.endpoint, meta["path"])
        rows = [
            run("local disk", meta["path"], meta, server, ds_cmd, args.workers, args.repeat),
            run("s3 (moto)", uri, meta, server, ds_cmd, args.workers, args.repeat),
            read_only("read only, local disk", meta["path"], meta, server, args.repeat),
            read_only("read only, s3 (moto)", uri, meta, server, args.repeat),
        ]
    agree = rows[0].records == rows[1].records and rows[0].valid == rows[1].valid
    info = bench_check.machine()
    print(
        f"\nds check, local disk vs S3 (moto on 127.0.0.1), --workers {args.workers}: {info['cores']} cores ({info['cpu']}), commit {info['commit']}"
    )
    print(_table(rows))
    for r in rows:
        if r.note:
            print(f"note: {r.source}: {r.note}", file=sys.stderr)
    if not agree:
        print("note: the two sources gave different verdicts", file=sys.stderr)
    result = {
        "bench": "ds-check-s3",
        "machine": info,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": [asdict(r) for r in rows],
        "s3_vs_local": round(rows[1].mb_s / rows[0].mb_s, 3),
    }
    print(orjson.dumps(result).decode())
    return 0 if agree and all(r.verified for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
