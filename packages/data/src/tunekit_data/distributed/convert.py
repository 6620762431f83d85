"""``ds convert --engine ray``: ``engine.convert_unit`` run as Ray tasks, each writing its own parts.

The driver prepares the run exactly as the local engine does (``pipeline.prepare_convert``: inputs,
detection, plan). Tasks then take the inputs in order: a byte range of a JSONL file (``ranges``),
one Parquet or Arrow file, or a group of ``.txt`` documents. A task cuts its share into the same
units the local engine converts, runs ``convert_unit`` on each and writes the converted records to
its own part of every split (``train-00000.jsonl``, ``validation-00000.jsonl`` ... under ``-o``,
a folder or ``s3://`` prefix; ``manifest.json`` last, see ``parts``). It returns the counts and the
rejections, whose JSONL line numbers count from its range's first line: the driver renumbers them
and writes ``--rejects-out`` (one file: the rejected share is small, and its lines must name the
input line, known only in input order), so the summary is the local engine's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import orjson

from tunekit_data.convert import (
    TXT_PER_UNIT,
    Chunk,
    ConvertOptions,
    ConvertPlan,
    ConvertSummary,
    InputFile,
    JsonlSink,
    Unit,
    UnitResult,
    convert_unit,
    dump_line,
    iter_units,
    jsonl_chunk,
    output_kind,
    prepare_convert,
)
from tunekit_data.distributed.cluster import cluster_cpus, connect, ordered_tasks
from tunekit_data.distributed.parts import PartOutputs, part_name
from tunekit_data.distributed.ranges import (
    DEFAULT_RANGE_SIZE,
    ByteRange,
    lines_through,
    range_blocks,
    split_ranges,
)
from tunekit_data.errors import UsageError
from tunekit_data.io import Block, Source

Share = tuple[list[InputFile], ByteRange | None]
"""What one task converts: a byte range of one JSONL file, or whole files (Parquet, Arrow, .txt)."""


@dataclass(slots=True)
class PartConverted:
    """One task's outcome.

    Its units' results (chunks emptied: their records are in the parts), records written per
    split, and the lines its range holds.
    """

    results: list[UnitResult] = field(default_factory=list)
    written: dict[str, int] = field(default_factory=dict)
    lines: int = 0


def convert_part(share: Share, plan: ConvertPlan, block_size: int, parts: dict[str, str]) -> PartConverted:
    """Convert one share (the task body); ``parts`` maps each split to this share's part URI."""
    files, r = share
    sinks = {name: JsonlSink(uri) for name, uri in parts.items()}
    out = PartConverted(written=dict.fromkeys(parts, 0))
    last: list[Block] = []
    try:
        for unit in share_units(files, r, block_size, last):
            result = convert_unit(unit, plan)
            for name, chunk in result.chunks.items():
                sinks[name].write(chunk)
                out.written[name] += len(chunk)
                result.chunks[name] = Chunk(chunk.seq)
            out.results.append(result)
        for sink in sinks.values():
            sink.commit()
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        raise
    out.lines = lines_through(last[0]) if last else 0
    return out


def share_units(files: list[InputFile], r: ByteRange | None, block_size: int, last: list[Block]) -> Iterator[Unit]:
    """The units of a share; ``last`` receives a range's last block (for its line count)."""
    if r is None:
        yield from iter_units(files, block_size=block_size)
        return
    for block in range_blocks(r, block_size):
        last[:] = [block]
        yield Unit(r.source, "jsonl", block.first_line, block.data, len(block.data))


def shares(files: Sequence[InputFile], range_size: int) -> list[Share]:
    """The tasks' shares of ``files``, in input order."""
    out: list[Share] = []
    docs: list[InputFile] = []
    for f in files:
        if f.kind == "txt":
            docs.append(f)
            if len(docs) == TXT_PER_UNIT:
                out.append((docs, None))
                docs = []
            continue
        if docs:
            out.append((docs, None))
            docs = []
        if f.kind == "jsonl":
            out.extend(([f], r) for r in split_ranges([Source(f.path)], range_size))
        else:
            out.append(([f], None))
    if docs:
        out.append((docs, None))
    return out


def _renumber(result: UnitResult, lines: int) -> UnitResult:
    """A range's result with JSONL line numbers counted from the start of its file."""
    if lines:
        result.rejections = [dataclasses.replace(r, line=r.line + lines) for r in result.rejections]
        shifted = []
        for raw in result.rejects.data.splitlines():
            entry = orjson.loads(raw)
            entry["line"] += lines
            shifted.append(dump_line(entry))
        result.rejects = jsonl_chunk(result.rejects.seq, shifted)
    return result


def convert_dataset_ray(
    paths: Sequence[str],
    options: ConvertOptions,
    *,
    address: str | None = None,
    on_progress: Callable[[int], None] | None = None,
    range_size: int = DEFAULT_RANGE_SIZE,
) -> ConvertSummary:
    """``convert_dataset`` on a Ray cluster (see the module docstring); ``-o`` names a folder or prefix."""
    if options.limit is not None:
        msg = "--max-samples stops at a record in input order; run it without --engine ray"
        raise UsageError(msg)
    if output_kind(options.out) != "shards":
        msg = f"-o {options.out}: with --engine ray the output is a folder or s3:// prefix of parts (train-00000.jsonl ... and manifest.json)"
        raise UsageError(msg)
    ray = connect(address)
    prepared = prepare_convert(paths, options)
    summary = prepared.summary
    out = PartOutputs(options.out, "-o")
    rejects = None
    try:
        rejects = JsonlSink(options.rejects_out) if options.rejects_out else None
        tasks = shares(prepared.opened.files, range_size)
        names = [{split: part_name(out.prefix, i, split) for split in prepared.splits} for i in range(len(tasks))]
        items = ((share, prepared.plan, options.block_size, parts) for share, parts in zip(tasks, names, strict=True))
        lines = 0
        done = ordered_tasks(ray, convert_part, items, in_flight=2 * cluster_cpus(ray))
        for (_, r), parts, converted in zip(tasks, names, done, strict=True):
            if r is None or r.start == 0:
                lines = 0  # a new file
            for result in converted.results:
                _renumber(result, lines)
                if rejects is not None:
                    rejects.write(result.rejects)
                summary.absorb(result)
                if on_progress is not None:
                    on_progress(result.nbytes)
            lines += converted.lines
            for split, uri in parts.items():
                out.add(uri, converted.written[split], split=split)
                summary.outputs.append({"split": split, "path": uri, "records": converted.written[split]})
        out.publish()
        if rejects is not None:
            rejects.commit()
            summary.rejects_out = options.rejects_out
    except BaseException:
        out.remove()
        if rejects is not None:
            rejects.abort()
        raise
    return summary
