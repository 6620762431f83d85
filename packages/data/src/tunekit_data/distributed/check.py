"""``ds check --engine ray``: the block checker of ``ds check`` run as Ray tasks over byte ranges.

The driver is ``check.run_check`` itself (detection, per-file rules, counting, dataset rules, the
``--json`` report): only where blocks are checked changes. Each task reads one byte range of one
input (``ranges``), cuts it into the same kind of blocks the local engine checks, runs
``blockcheck.check_block`` and ``check.finish_block`` on each (media lookups included), writes its
valid and rejected lines to its own part of ``--valid-out`` / ``--rejects-out`` (``parts``), and
returns them summed up (``check.Tally``: counts, the first problems, every problem as spool lines)
with line numbers counted from its range's first line. The driver takes the results in input order
and renumbers them (one number per task, added as the problems are read back), so every count,
every problem's file:line and the exit code are the local engine's. ``--errors-out`` stays one file, written by the driver in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tunekit_data.check import (
    CheckConfig,
    CheckSummary,
    CheckWriters,
    Tally,
    Verdict,
    Verdicts,
    check_input_block,
    finish_block,
    run_check,
    worker_init,
)
from tunekit_data.distributed.cluster import cluster_cpus, connect, ordered_tasks
from tunekit_data.distributed.parts import PartOutputs, part_name
from tunekit_data.distributed.ranges import (
    ByteRange,
    lines_through,
    range_blocks,
    range_size_for,
    split_ranges,
)
from tunekit_data.errors import UsageError
from tunekit_data.formats import Options
from tunekit_data.io import Block, Source

_OUTPUTS = (("valid", "--valid-out"), ("rejects", "--rejects-out"))


@dataclass(slots=True)
class RangeChecked:
    """One task's outcome, summed up.

    Its blocks' verdicts (``check.Tally``), the bytes they cover, whether a BOM was stripped, the
    range's line count, and how many lines it wrote to each part.

    Summed up in the task so that the driver's work per task does not grow with the problems
    found: it adds counts and copies the problems' spool lines whole.
    """

    tally: Tally = field(default_factory=Tally)
    nbytes: int = 0
    bom: bool = False
    lines: int = 0
    written: dict[str, int] = field(default_factory=dict)


def check_range(r: ByteRange, options: Options, config: CheckConfig, parts: dict[str, str]) -> RangeChecked:
    """Check the lines of ``r`` (the task body).

    ``parts`` maps ``valid`` / ``rejects`` to this range's part URIs.
    """
    # As in a `ds` process (no pandas probe: ~1 s of a worker's first task otherwise). Not Ray's
    # worker_process_setup_hook: a runtime env delayed every worker's start by seconds (measured).
    worker_init()
    writers = CheckWriters(parts.get("valid"), parts.get("rejects"), None)
    out = RangeChecked(written=dict.fromkeys(parts, 0))
    source = Source(r.source, r.kind)
    last: Block | None = None
    try:
        for block in range_blocks(r, config.block_size):
            result = check_input_block(block, options)
            finish_block(block, result, options.fmt, config)
            writers.write_lines(block, result)
            if "valid" in parts:
                out.written["valid"] += result.stats.valid
            if "rejects" in parts:
                out.written["rejects"] += result.stats.records - result.stats.valid
            out.tally.add(source, result)
            out.nbytes += block.nbytes
            out.bom |= block.bom
            last = block
        writers.commit()
    except BaseException:
        writers.abort()
        raise
    if last is not None:
        out.lines = lines_through(last)
    return out


class RayCheck:
    """A ``check.Engine`` that hands byte ranges to Ray tasks (see the module docstring)."""

    def __init__(self, ray, outputs: dict[str, PartOutputs], range_size: int | None) -> None:
        self.ray, self.outputs, self.range_size = ray, outputs, range_size

    def __call__(self, sources: list[Source], options: Options, config: CheckConfig) -> Verdicts:
        """The verdicts of every range of ``sources``, in input order, checked by Ray tasks."""
        size = self.range_size or range_size_for(sum(s.size() or 0 for s in sources), cluster_cpus(self.ray))
        per_source = [split_ranges([s], size) for s in sources]
        ranges = [r for rs in per_source for r in rs]
        task_config = CheckConfig(
            config.fmt, config.profile, config.platform, config.dataset_uri, config.max_invalid_percent,
            block_size=config.block_size, check_media=config.check_media,
        )  # fmt: skip
        items = (
            (r, options, task_config, {k: part_name(o.prefix, i) for k, o in self.outputs.items()})
            for i, r in enumerate(ranges)
        )
        results = ordered_tasks(self.ray, check_range, items, in_flight=2 * cluster_cpus(self.ray))
        counts = iter([len(rs) for rs in per_source])
        index = iter(range(len(ranges)))

        def verdicts(source: Source, stream: Iterator[Block]) -> Iterator[Verdict]:
            lines = 0
            for _ in range(next(counts)):
                checked, i = next(results), next(index)
                for key, output in self.outputs.items():
                    output.add(part_name(output.prefix, i), checked.written[key], source=source.name, first_line=lines + 1)
                yield Verdict(checked.tally.shift(lines), checked.nbytes, checked.bom, None)
                lines += checked.lines

        return verdicts


def run_check_ray(
    paths: list[str],
    config: CheckConfig,
    *,
    address: str | None = None,
    valid_out: str | None = None,
    rejects_out: str | None = None,
    errors_out: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    range_size: int | None = None,
) -> CheckSummary:
    """``run_check`` on a Ray cluster: the same summary.

    ``valid_out`` / ``rejects_out`` are folders or ``s3://`` prefixes of parts with a manifest
    (``parts``); ``range_size`` is the bytes per task (None: ``ranges.range_size_for`` the input and
    the cluster). Raises UsageError / InputError.
    """
    if config.record_check is not None:
        msg = "--tokenizer counts tokens on the local engine only; run it without --engine ray"
        raise UsageError(msg)
    config.validate()
    ray = connect(address)
    outputs: dict[str, PartOutputs] = {}
    try:
        for (key, option), uri in zip(_OUTPUTS, (valid_out, rejects_out), strict=True):
            if uri:
                outputs[key] = PartOutputs(uri, option)
        summary = run_check(paths, config, errors_out=errors_out, on_progress=on_progress, engine=RayCheck(ray, outputs, range_size))
        for output in outputs.values():
            output.publish()
    except BaseException:
        for output in outputs.values():
            output.remove()
        raise
    return summary
