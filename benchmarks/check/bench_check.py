"""Benchmark `ds check` against the orjson ceiling and a pydantic (AWS V2-style) validator, issue 2.

In one run, on the same generated files (``gen.py``; cached in ``benchmarks/_data/``, git-ignored):

* ``ds check FILE --json --format sft|dpo --workers N`` - the real CLI, as a subprocess;
* ``orjson`` - ``orjson.loads`` of every line on one core (``baselines.py``), the raw ceiling;
* ``pydantic`` - one ``json.loads`` + ``model_validate`` per line, like AWS's V2 validator;
* ``aws validator`` (optional, ``--aws-validator PATH``) - AWS's own script, run as a user runs it:
  ``nova_ft_dataset_validator.py`` from aws-samples/amazon-nova-samples
  (customization/bedrock-finetuning/understanding/dataset_validation/). It is not part of tunekit:
  obtain a copy yourself and pass its path (it needs pydantic, which the workspace has).

Each tool runs as its own subprocess, so wall time includes interpreter start-up for all of them and
memory is measured per tool. Memory and CPU are sampled over the whole process tree (``ds check``
forks workers through a forkserver, whose memory and CPU ``getrusage`` of the direct child does not
see): ``rss`` is the peak of the summed RSS every 50 ms (shared pages count once per process, so it
over-states), ``pss`` the peak of the summed proportional set size every 0.5 s (shared pages split;
may miss a short peak), ``cpu`` the user+system seconds of all processes of the tree, and ``other
cpu`` the CPU seconds the rest of the machine used meanwhile (from /proc/stat): anything above a few
percent of the wall time means the figures are contended; ``--repeat N`` keeps the fastest of N runs
and ``--idle-wait S`` waits up to S seconds for a quiet machine before each run.
``MB/cpu-s`` (bytes per CPU second over the tree) is the efficiency figure that contention moves least. Files are read once before timing, so every
tool reads from the page cache.

``ds check``'s JSON is checked against the generator's record of what it wrote (record count,
invalid count, and with ``--invalid-share`` the exact invalid line numbers); a mismatch is printed
and flagged in the JSON line, never hidden.

Usage::

    uv run --group bench python benchmarks/check/bench_check.py --size 1GB --workers 2 --rss-file-size 4GB
    uv run --group bench python benchmarks/check/bench_check.py --size 216MB --mix 1,0,0   # the AWS-file analogue
    uv run --group bench python benchmarks/check/bench_check.py --size 216MB --mix 1,0,0 \
        --aws-validator /path/to/nova_ft_dataset_validator.py                              # + AWS's script

Prints a table, then one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def sibling(name: str) -> ModuleType:
    """Import ``benchmarks/check/<name>.py`` under a unique module name.

    The benchmarks are scripts, not a package; a plain ``import gen`` would collide with another
    benchmark's ``gen.py`` once tests load several of them into one interpreter.
    """
    mod_name = f"_tunekit_bench_check_{name}"
    if mod_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(mod_name, HERE / f"{name}.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module  # before exec: dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[mod_name]


gen = sibling("gen")
DATA_DIR = REPO / "benchmarks" / "_data"
BASELINES = HERE / "baselines.py"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


# --- measuring a process tree -----------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out.extend(int(c) for c in (task / "children").read_text().split())
    except (OSError, ValueError):
        pass
    return out


def _tree(root: int) -> list[int]:
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(_children(pid))
    return pids


def _rss(pid: int) -> int:
    """Resident set size in bytes from statm (O(1) in the kernel); 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:  # noqa: PTH123 - hot path, tiny procfs reads
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _pss(pid: int) -> int:
    """Proportional set size in bytes from smaps_rollup; 0 once the process is gone.

    The kernel walks the page tables for this (~4 ms for 300 MB resident), so it is sampled less often.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:  # noqa: PTH123
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:  # noqa: PTH123
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    except (OSError, ValueError, IndexError):
        return None


class TreeSampler(threading.Thread):
    """Samples RSS/PSS and CPU time of a process and all its descendants until stopped."""

    def __init__(self, root: int, interval: float = 0.05, pss_every: int = 10) -> None:
        super().__init__(daemon=True)
        self.root, self.interval, self.pss_every = root, interval, pss_every
        self.peak_rss = self.peak_pss = 0
        self.max_procs = 0
        self.samples = 0
        self.cpu: dict[int, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def sample(self) -> None:
        """One sample of the whole tree: RSS and CPU every time, PSS every ``pss_every`` samples.

        Costs ~0.1 ms per process for RSS + CPU, so sampling steals well under 1 % of a core.
        """
        pids = _tree(self.root)
        rss = 0
        for pid in pids:
            rss += _rss(pid)
            cpu = _cpu_seconds(pid)
            if cpu is not None:
                self.cpu[pid] = max(cpu, self.cpu.get(pid, 0.0))
        if self.samples % self.pss_every == 0:
            self.peak_pss = max(self.peak_pss, sum(_pss(pid) for pid in pids))
        self.samples += 1
        self.peak_rss = max(self.peak_rss, rss)
        self.max_procs = max(self.max_procs, len(pids))

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._halt.set()
        self.join()


def _busy_seconds() -> float:
    """CPU seconds spent busy by the whole machine since boot (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK


@dataclass
class Run:
    """One timed subprocess."""

    cmd: list[str]
    wall: float
    exit: int
    stdout: bytes
    stderr: str
    peak_rss: int  # bytes, summed over the process tree (sampled)
    peak_pss: int  # bytes, summed over the process tree (sampled every 0.5 s)
    max_rss: int  # bytes, kernel's max RSS of the child and the descendants it reaped (exact)
    cpu: float  # user + system seconds over the tree (sampled)
    procs: int
    other_cpu: float  # CPU seconds the rest of the machine used meanwhile: > 0.1 x wall means contention


# Tools run as on a user's machine, caching their bytecode: these sandboxes set PYTHONDONTWRITEBYTECODE,
# which makes every process (and every worker process) compile all it imports from source, measured
# at ~0.7 s per `ds` start and more for `datasets`; that is the sandbox, not the tools.
def child_env() -> dict[str, str]:
    """This process's environment as it is now (callers set e.g. AWS_ENDPOINT_URL), minus that flag."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure(cmd: list[str]) -> Run:
    """Run ``cmd``; return wall time, exit status, output and memory/CPU of its whole process tree."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        busy0 = _busy_seconds()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO, env=child_env())
        sampler = TreeSampler(proc.pid)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        busy = _busy_seconds() - busy0
        sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen
        out.seek(0)
        err.seek(0)
        own_cpu = usage.ru_utime + usage.ru_stime
        cpu = max(own_cpu, sum(sampler.cpu.values()))
        return Run(
            cmd, wall, proc.returncode, out.read(), err.read().decode("utf-8", "replace")[-4000:],
            sampler.peak_rss, sampler.peak_pss, usage.ru_maxrss * 1024, cpu, sampler.max_procs,
            max(0.0, busy - cpu),
        )  # fmt: skip


# --- data -------------------------------------------------------------------------------------------


def _label(size: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"


def ensure_data(
    size: int,
    seed: int,
    mix: tuple[float, float, float],
    invalid_share: float,
    kind: str = "all",
    tag: str = "check",
    data_dir: Path = DATA_DIR,
) -> list[dict[str, Any]]:
    """Generate the benchmark files unless identical ones (same parameters, same sizes) are cached."""
    mix_s = "-".join(f"{x:g}" for x in mix)
    out = data_dir / f"{tag}-{_label(size)}-seed{seed}-mix{mix_s}-inv{invalid_share:g}.jsonl"
    want = {"seed": seed, "invalid_share": invalid_share}
    metas = []
    for path in gen.output_paths(out, kind).values():
        meta_path = Path(f"{path}.meta.json")
        if not (path.exists() and meta_path.exists()):
            break
        meta = orjson.loads(meta_path.read_bytes())
        params = meta.get("params", {})
        if any(params.get(k) != v for k, v in want.items()) or path.stat().st_size != meta["bytes"]:
            break
        metas.append(meta)
    else:
        if metas:
            return [m for m in metas if m["lines"]]
    t0 = time.perf_counter()
    stats = gen.generate(out, size, seed=seed, mix=mix, kind=kind, invalid_share=invalid_share)
    dt = time.perf_counter() - t0
    total = sum(s.bytes for s in stats)
    print(f"generated {total / 1e6:,.0f} MB in {dt:.1f} s -> {out.parent}/", file=sys.stderr)
    return [orjson.loads(Path(f"{s.path}.meta.json").read_bytes()) for s in stats if s.lines]


def warm(path: str) -> None:
    """Read the file once so every tool is timed against the page cache, not the disk."""
    with Path(path).open("rb", buffering=0) as f:
        while f.read(16 << 20):
            pass


# --- the tools --------------------------------------------------------------------------------------


@dataclass
class Row:
    """One tool on one file."""

    tool: str
    file: str
    format: str
    bytes: int
    lines: int
    wall: float
    exit: int
    peak_rss: int
    peak_pss: int
    max_rss: int
    cpu: float
    other_cpu: float = 0.0
    valid: int | None = None
    invalid: int | None = None
    verified: bool | None = None
    note: str = ""
    cmd: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mb_s(self) -> float:
        """Throughput in MB/s (10^6 bytes), wall clock."""
        return self.bytes / 1e6 / self.wall

    @property
    def lines_s(self) -> float:
        """Lines per second, wall clock."""
        return self.lines / self.wall

    def to_dict(self) -> dict[str, Any]:
        """The row for the JSON line, with derived rates and memory in MB."""
        d = asdict(self)
        d.update(
            mb_s=round(self.mb_s, 1),
            lines_s=round(self.lines_s),
            wall=round(self.wall, 3),
            cpu=round(self.cpu, 2),
            mb_per_cpu_s=round(self.bytes / 1e6 / max(self.cpu, 1e-9), 1),
            other_cpu=round(self.other_cpu, 2),
        )
        for k in ("peak_rss", "peak_pss", "max_rss"):
            d[k + "_mb"] = round(d.pop(k) / 1e6, 1)
        return d


def _row(tool: str, meta: dict[str, Any], run: Run) -> Row:
    return Row(
        tool, meta["path"], meta["format"], meta["bytes"], meta["lines"], run.wall, run.exit,
        run.peak_rss, run.peak_pss, run.max_rss, run.cpu, run.other_cpu, cmd=shlex.join(run.cmd),
    )  # fmt: skip


def verify_ds(summary: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """Differences between `ds check --json` and what the generator wrote (empty list: all agree)."""
    problems = []
    if summary.get("records") != meta["lines"]:
        problems.append(f"records {summary.get('records')} != {meta['lines']} written")
    if summary.get("invalid") != meta["invalid"]:
        problems.append(f"invalid {summary.get('invalid')} != {meta['invalid']} injected")
    bad_lines = {e["line"] for e in summary.get("errors", []) if e.get("severity") == "error"}
    injected = set(meta["invalid_lines"])
    if bad_lines != injected:
        missed, extra = sorted(injected - bad_lines), sorted(bad_lines - injected)
        problems.append(
            f"error lines differ: missed {missed[:5]} ({len(missed)}), unexpected {extra[:5]} ({len(extra)})"
        )
    # Warnings on injected lines are expected (a renamed `messages` is also an unknown key, S4); on the
    # generated valid lines there should be none.
    warned = sorted(
        {e["line"] for e in summary.get("errors", []) if e.get("severity") == "warning"} - injected
    )
    if warned:
        rules = sorted({e["rule"] for e in summary["errors"] if e["line"] in set(warned)})
        problems.append(f"warnings on {len(warned)} valid generated lines {warned[:5]}: {rules}")
    for d in summary.get("dataset_errors", []):
        # D10 (fewer than 1,000 preference pairs) is expected on toy-sized files.
        if not (d.get("rule") == "D10" and meta["lines"] < 1000):
            problems.append(f"dataset {d.get('severity')}: [{d.get('rule')}] {d.get('message')}")
    if summary.get("ok") != (meta["invalid"] == 0):
        problems.append(f"ok={summary.get('ok')} with {meta['invalid']} invalid records")
    return problems


def wait_idle(max_wait: float, threshold: float = 0.25) -> None:
    """Wait up to ``max_wait`` s for a second in which other processes use < ``threshold`` cores.

    On a shared machine this keeps a measurement from starting in the middle of someone's test run;
    it never waits past ``max_wait``, and ``other cpu s`` still reports what happened during the run.
    """
    deadline = time.monotonic() + max_wait
    while True:
        busy0 = _busy_seconds()
        time.sleep(1.0)
        if _busy_seconds() - busy0 < threshold or time.monotonic() >= deadline:
            return


def timed(cmd: list[str], repeat: int, idle_wait: float) -> Run:
    """The fastest of ``repeat`` runs of ``cmd``, each started on an idle machine if possible."""
    runs = []
    for _ in range(repeat):
        if idle_wait:
            wait_idle(idle_wait)
        runs.append(measure(cmd))
    return min(runs, key=lambda r: r.wall)


def run_ds(meta: dict[str, Any], workers: int, ds_cmd: list[str], repeat: int, idle_wait: float = 0.0) -> Row:
    """Time `ds check` on one file (best of ``repeat``) and check its verdict against the generator."""
    cmd = [*ds_cmd, "check", meta["path"], "--json", "--format", meta["format"], "--workers", str(workers)]
    run = timed(cmd, repeat, idle_wait)
    row = _row(f"ds check -w{workers}", meta, run)
    try:
        summary = orjson.loads(run.stdout)
    except orjson.JSONDecodeError:
        row.verified = False
        tail = run.stderr.strip().splitlines()[-1:] or ["no output"]
        row.note = f"exit {run.exit}, no JSON: {tail[0][:200]}"
        return row
    row.valid, row.invalid = summary.get("valid"), summary.get("invalid")
    problems = verify_ds(summary, meta)
    row.verified = not problems
    row.note = "; ".join(problems)[:600]
    row.extra = {"by_rule": summary.get("by_rule", {}), "warnings": summary.get("warnings")}
    return row


def run_baseline(tool: str, meta: dict[str, Any], repeat: int, idle_wait: float = 0.0) -> Row:
    """Time one baseline (``orjson`` or ``pydantic``) on one file in its own interpreter."""
    cmd = [sys.executable, str(BASELINES), tool, meta["path"], "--format", meta["format"]]
    run = timed(cmd, repeat, idle_wait)
    row = _row(tool, meta, run)
    try:
        res = orjson.loads(run.stdout.strip().splitlines()[-1])
        row.valid, row.invalid = res["valid"], res["invalid"]
        row.extra = {"inner_seconds": round(res["seconds"], 3)}
    except (orjson.JSONDecodeError, IndexError, KeyError):
        row.note = f"exit {run.exit}: {run.stderr.strip()[-200:]}"
    return row


# The AWS script's options matching `ds check`'s defaults (--profile nova-lite-1, --platform sagemaker),
# with --skip-bad-samples so that it checks every line rather than stop at the first invalid one.
AWS_ARGS = "-m lite -p sagemaker --skip-bad-samples"
_AWS_COUNTS = re.compile(rb"(Valid|Failed) samples:\s+(\d+)")


def run_aws(script: Path, meta: dict[str, Any], args: str, repeat: int, idle_wait: float = 0.0) -> Row:
    """Time AWS's own validator script on one file in its own interpreter; its report gives the counts."""
    cmd = [sys.executable, str(script), "-i", meta["path"], "-t", meta["format"], *shlex.split(args)]
    run = timed(cmd, repeat, idle_wait)
    row = _row("aws validator", meta, run)
    counts = dict(_AWS_COUNTS.findall(run.stdout))
    if len(counts) == 2:
        row.valid, row.invalid = int(counts[b"Valid"]), int(counts[b"Failed"])
    else:
        row.note = f"exit {run.exit}, no report: {(run.stdout + run.stderr.encode()).decode(errors='replace').strip()[-200:]}"
    return row


# --- report -----------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Where the figures were taken: cores, CPU model, memory, versions, git commit."""
    cpu = "?"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        )
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    versions = {}
    for mod in ("orjson", "pyarrow", "polars", "pydantic"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    try:
        git = ["git", "-C", str(REPO)]
        commit = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        # Uncommitted changes to the code under test make the commit alone an incomplete reference.
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "packages/data", "apps/cli"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        commit += "+dirty" if dirty else ""
    except OSError:
        commit = "?"
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "mem_gib": round(mem / 2**30, 1),
        "python": platform.python_version(),
        "commit": commit,
        **versions,
    }


def _fmt_table(rows: list[Row]) -> str:
    ref: dict[tuple[str, str], Row] = {(r.file, r.tool): r for r in rows}
    head = (
        "tool",
        "file",
        "MB",
        "lines",
        "wall s",
        "MB/s",
        "lines/s",
        "rss MB",
        "pss MB",
        "cpu s",
        "MB/cpu-s",
        "other cpu s",
        "x pydantic",
        "x aws",
        "% orjson",
        "ok",
    )
    out = [head]
    for r in rows:
        pyd, orj, aws = (ref.get((r.file, tool)) for tool in ("pydantic", "orjson", "aws validator"))
        ok = "" if r.verified is None else ("yes" if r.verified else "NO")
        out.append((
            r.tool, Path(r.file).name if r.file != "*" else "all files", f"{r.bytes / 1e6:,.0f}", f"{r.lines:,}",
            f"{r.wall:.2f}", f"{r.mb_s:,.1f}", f"{r.lines_s:,.0f}", f"{r.peak_rss / 1e6:,.0f}", f"{r.peak_pss / 1e6:,.0f}",
            f"{r.cpu:.1f}", f"{r.bytes / 1e6 / max(r.cpu, 1e-9):,.0f}", f"{r.other_cpu:.1f}", f"{r.mb_s / pyd.mb_s:.1f}x" if pyd else "", f"{r.mb_s / aws.mb_s:.1f}x" if aws else "", f"{100 * r.mb_s / orj.mb_s:.0f}%" if orj else "", ok,
        ))  # fmt: skip
    widths = [max(len(str(row[i])) for row in out) for i in range(len(head))]
    lines = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in out
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def totals(rows: list[Row]) -> list[Row]:
    """One row per tool over all files: summed bytes, lines and wall time; peak memory is the max."""
    out = []
    for tool in dict.fromkeys(r.tool for r in rows):
        rs = [r for r in rows if r.tool == tool]
        if len(rs) < 2:
            continue
        verified = None if any(r.verified is None for r in rs) else all(r.verified for r in rs)
        out.append(Row(
            tool, "*", "+".join(r.format for r in rs), sum(r.bytes for r in rs), sum(r.lines for r in rs),
            sum(r.wall for r in rs), max(r.exit for r in rs), max(r.peak_rss for r in rs), max(r.peak_pss for r in rs),
            max(r.max_rss for r in rs), sum(r.cpu for r in rs), sum(r.other_cpu for r in rs), verified=verified,
        ))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    """Generate (or reuse) the data, run every tool, print the table and one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--size",
        type=gen.parse_size,
        default=gen.parse_size("1GB"),
        help="total data size over the SFT and DPO files",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mix", type=gen.parse_mix, default=(0.6, 0.3, 0.1), help="record shares sft,dpo,image")
    ap.add_argument(
        "--invalid-share", type=float, default=0.0, help="share of invalid records to inject (e.g. 0.001)"
    )
    ap.add_argument(
        "--workers",
        default=str(len(os.sched_getaffinity(0))),
        help="ds check --workers; a comma list runs each",
    )
    ap.add_argument("--repeat", type=int, default=1, help="runs per measurement; the fastest counts")
    ap.add_argument(
        "--idle-wait",
        type=float,
        default=0.0,
        help="before each run, wait up to this many seconds for other processes to go quiet (shared machines)",
    )
    ap.add_argument("--skip-baselines", action="store_true", help="time ds check only")
    ap.add_argument(
        "--aws-validator",
        type=Path,
        default=None,
        help="also time AWS's nova_ft_dataset_validator.py (a copy you obtained from aws-samples/amazon-nova-samples)",
    )
    ap.add_argument("--aws-args", default=AWS_ARGS, help=f"its options besides -i and -t (default: {AWS_ARGS!r})")
    ap.add_argument(
        "--rss-file-size",
        type=gen.parse_size,
        default=None,
        help="also run ds check on one SFT+image file this big (e.g. 4GB)",
    )
    ap.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="where generated files are cached (git-ignored)"
    )
    ap.add_argument(
        "--ds", default=f"{shlex.quote(sys.executable)} -m tunekit_cli.ds", help="command that runs ds"
    )
    args = ap.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    ds_cmd = shlex.split(args.ds)

    if args.aws_validator is not None and not args.aws_validator.is_file():
        ap.error(f"--aws-validator {args.aws_validator}: no such file")
    metas = ensure_data(args.size, args.seed, args.mix, args.invalid_share, data_dir=args.data_dir)
    rows: list[Row] = []
    for meta in metas:
        warm(meta["path"])
        for w in workers:
            rows.append(run_ds(meta, w, ds_cmd, args.repeat, args.idle_wait))
            print(f"  {rows[-1].tool} {Path(meta['path']).name}: {rows[-1].mb_s:,.1f} MB/s", file=sys.stderr)
        if not args.skip_baselines:
            for tool in ("orjson", "pydantic"):
                rows.append(run_baseline(tool, meta, args.repeat, args.idle_wait))
                print(f"  {tool} {Path(meta['path']).name}: {rows[-1].mb_s:,.1f} MB/s", file=sys.stderr)
        if args.aws_validator is not None:
            rows.append(run_aws(args.aws_validator, meta, args.aws_args, args.repeat, args.idle_wait))
            print(f"  aws validator {Path(meta['path']).name}: {rows[-1].mb_s:,.1f} MB/s", file=sys.stderr)
    all_rows = rows + totals(rows)

    rss_rows: list[Row] = []
    if args.rss_file_size:
        s, _, i = args.mix
        rss_meta = ensure_data(
            args.rss_file_size,
            args.seed,
            (s, 0.0, i) if s + i else (1.0, 0.0, 0.0),
            0.0,
            kind="sft",
            tag="rss",
            data_dir=args.data_dir,
        )[0]
        warm(rss_meta["path"])
        for w in workers:
            rss_rows.append(run_ds(rss_meta, w, ds_cmd, 1, args.idle_wait))

    info = machine()
    print(
        f"\nds check benchmark: {info['cores']} cores ({info['cpu']}), {info['mem_gib']} GiB, Python {info['python']}, commit {info['commit']}"
    )
    print(_fmt_table(all_rows))
    if rss_rows:
        print("\npeak memory on one large file:")
        print(_fmt_table(rss_rows))
    for r in all_rows + rss_rows:
        if r.note:
            print(f"note: {r.tool} {Path(r.file).name}: {r.note}", file=sys.stderr)
        if r.file != "*" and r.other_cpu > 0.1 * r.wall:
            print(
                f"note: {r.tool} {Path(r.file).name}: other processes used {r.other_cpu:.1f} CPU s during its "
                f"{r.wall:.1f} s; the machine was not idle (use --repeat, --idle-wait)",
                file=sys.stderr,
            )
    result = {
        "bench": "ds-check",
        "machine": info,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": [r.to_dict() for r in all_rows],
        "rss_file": [r.to_dict() for r in rss_rows],
    }
    if args.aws_validator is not None:  # which copy of the script: they differ between commits
        result["aws_validator_sha256"] = hashlib.sha256(args.aws_validator.read_bytes()).hexdigest()
    print(orjson.dumps(result).decode())
    return 0 if all(r.verified is not False for r in rows + rss_rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
