"""Benchmark `ds`'s start-up (issue 18): `ds --help` and `ds check` of a small file, against the floor.

In one run, each command in a fresh process, interleaved round by round (so that a burst of load
on a shared machine hits every command alike), medians and minima over ``--repeat`` rounds:

* ``python -c pass`` - the interpreter alone;
* ``arrow floor`` - importing only the libraries an Arrow-based `ds check` with rich output cannot
  do without (typer, orjson, numpy, pyarrow.compute, pyarrow.json, rich's console and table): a
  lower bound of any `ds check` built on the Arrow checker, whatever tunekit itself imports;
* ``ds --help``, ``ds check FILE`` (rich output) and ``ds check --json FILE`` - the console script;
* with ``--base DIR``: the same three `ds` commands run from the source tree in DIR (another commit,
  extracted with ``git archive REV apps packages | tar -x -C DIR``), put first on ``PYTHONPATH``
  so that the same interpreter and libraries run the other commit's code: before/after in one run.

Bytecode caches are used as on a user's machine: ``PYTHONDONTWRITEBYTECODE`` is removed from the
children's environment (with it, every run compiles its modules and times double). ``other cpu``
is the CPU the rest of the machine used per second of the run (from /proc/stat, less this
benchmark's own children): above ~0.1 the machine was contended.

Usage::

    uv run python benchmarks/cli/bench_startup.py --repeat 15
    git archive HEAD~3 apps packages | tar -x -C /tmp/base
    uv run python benchmarks/cli/bench_startup.py --repeat 15 --base /tmp/base

Prints a table, then one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SMALL = REPO / "examples" / "data" / "sft.jsonl"
PYTHON = Path(sys.executable)
DS = PYTHON.with_name("ds")
SOURCE_DIRS = ("apps/cli/src", "packages/data/src", "packages/tokenize/src", "packages/train/src")
FLOOR = "import typer, orjson, numpy, pyarrow.compute, pyarrow.json, rich.console, rich.table"


def _bench_check() -> ModuleType:
    """benchmarks/check/bench_check.py, for its machine-load helpers (scripts, not a package)."""
    name = "_tunekit_bench_check_bench_check"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "check" / "bench_check.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def commands(small: Path, base: Path | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Label -> (argv, environment) of every timed command."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    ds = {"ds --help": ["--help"], f"ds check {small.name}": ["check", str(small)], f"ds check --json {small.name}": ["check", "--json", str(small)]}
    out = {"python -c pass": ([str(PYTHON), "-c", "pass"], env), "arrow floor": ([str(PYTHON), "-c", FLOOR], env)}
    out.update({label: ([str(DS), *argv], env) for label, argv in ds.items()})
    if base is not None:
        path = os.pathsep.join([*(str(base / d) for d in SOURCE_DIRS), *filter(None, [env.get("PYTHONPATH")])])
        out.update({f"{label} (base)": ([str(DS), *argv], {**env, "PYTHONPATH": path}) for label, argv in ds.items()})
    return out


def run_once(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run of ``argv``; it must succeed (exit 0)."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        msg = f"{argv[:3]} exited {proc.returncode}: {proc.stderr.decode()[-500:]}"
        raise SystemExit(msg)
    return wall


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints a table and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=15, help="rounds; each runs every command once (median over rounds)")
    parser.add_argument("--file", type=Path, default=SMALL, help="the small JSONL file `ds check` reads")
    parser.add_argument("--base", type=Path, help="source tree of another commit (apps/, packages/) to time in the same run")
    parser.add_argument("--idle-wait", type=float, default=0.0, help="before each round, wait up to this many seconds for a quiet machine")
    args = parser.parse_args(argv)
    if args.base is not None and not (args.base / SOURCE_DIRS[0] / "tunekit_cli").is_dir():
        parser.error(f"--base {args.base}: no {SOURCE_DIRS[0]}/tunekit_cli there")
    bench = _bench_check()
    cmds = commands(args.file, args.base)
    for cmd, env in cmds.values():  # warm: page cache and bytecode caches written
        run_once(cmd, env)
    times: dict[str, list[float]] = {label: [] for label in cmds}
    busy0, own0, start = bench._busy_seconds(), _children_cpu(), time.perf_counter()
    for _ in range(args.repeat):
        if args.idle_wait:
            bench.wait_idle(args.idle_wait)
        for label, (cmd, env) in cmds.items():
            times[label].append(run_once(cmd, env))
    elapsed = time.perf_counter() - start
    other = max(0.0, bench._busy_seconds() - busy0 - (_children_cpu() - own0)) / elapsed
    rows = [{"command": label, "median_s": round(statistics.median(t), 4), "min_s": round(min(t), 4)} for label, t in times.items()]
    print(f"{'command':<40} {'median s':>9} {'min s':>7}")
    for r in rows:
        print(f"{r['command']:<40} {r['median_s']:>9.3f} {r['min_s']:>7.3f}")
    print(f"rounds {args.repeat}; other cpu {other:.2f} cores; {platform.python_version()}, {os.cpu_count()} cpus")
    print(json.dumps({"rows": rows, "repeat": args.repeat, "other_cpu_cores": round(other, 3), "file": str(args.file), "base": str(args.base) if args.base else None}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
