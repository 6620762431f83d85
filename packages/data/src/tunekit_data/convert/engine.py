"""Convert one unit of input: decode, encode for the target, check, split, serialize.

``convert_unit`` is what runs in the worker processes. It takes a ``Unit`` (a block of lines or
rows) and a ``ConvertPlan`` and returns everything the main process needs to write and count, already
serialized (JSONL bytes or an Arrow table per output), so the main process does little but write.
Every record of the unit leaves as exactly one of: written to a split, or rejected with a reason.
"""

from __future__ import annotations

import gc
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from tunekit_data.convert.fastpath import fast_path
from tunekit_data.convert.inputs import InputPlan
from tunekit_data.convert.outputs import OUTPUT_FORMATS, Record
from tunekit_data.convert.rejection import ConversionError, Rejection
from tunekit_data.convert.sources import RawRecord, Unit, jsonl_record, unit_records
from tunekit_data.convert.validate import check_lines
from tunekit_data.convert.writer import TRAIN, Chunk, Split, dump_line, jsonl_chunk, parquet_chunk
from tunekit_data.examples import SourceRecord
from tunekit_data.media import MediaCache, resolve_record


@dataclass(frozen=True, slots=True)
class ConvertPlan:
    """What every worker does to every record; small and picklable (sent along with each unit)."""

    inputs: InputPlan
    target: str
    parquet: bool = False
    split: Split | None = None
    profile: str = "nova-lite-1"
    platform: str = "sagemaker"
    keep_refs: bool = False  # --max-samples needs to name the record it stopped at
    media_cache: str | None = None
    """``--resolve-images``: fetch and decode every image of each output record through the media cache
    at this directory; a record whose image fails is rejected (`tunekit_data.media`)."""


@dataclass(slots=True)
class UnitResult:
    """One unit's outcome. ``seq`` numbers in the chunks are record positions within the unit."""

    nbytes: int
    records: int = 0
    chunks: dict[str, Chunk] = field(default_factory=dict)
    rejects: Chunk = field(default_factory=Chunk)
    rejections: list[Rejection] = field(default_factory=list)
    blanks: list[int] = field(default_factory=list)  # per blank line: records before it in the unit
    warnings: Counter[str] = field(default_factory=Counter)
    refs: list[tuple[str, int]] = field(default_factory=list)  # (file, line) per record, if asked


def convert_unit(unit: Unit, plan: ConvertPlan) -> UnitResult:
    """Convert every record of ``unit`` (see the module docstring)."""
    # Decoded JSON and Examples hold no reference cycles, so reference counting frees them all; the
    # cyclic collector would only rescan the unit's millions of young objects again and again
    # (measured: 2.9x slower conversion with it on).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _convert_unit(unit, plan)
    finally:
        if was_enabled:
            gc.enable()


def _convert_unit(unit: Unit, plan: ConvertPlan) -> UnitResult:
    encode = OUTPUT_FORMATS[plan.target].encode
    to_example = plan.inputs.to_example
    fast = fast_path(plan.inputs, plan.target)  # None, or a fused converter for the common records

    def convert(value: object) -> Record:
        if fast is not None:
            record = fast(value)
            if record is not None:
                return record
        return encode(to_example(value))

    work = _UnitWork(plan, convert, UnitResult(unit.nbytes))
    if unit.kind == "jsonl":
        seq = _jsonl_unit(unit, work)
    else:
        seq = 0
        for item in unit_records(unit, want_keys=plan.split is not None):
            seq = _take(item, seq, work)
    result, rejected = work.result, work.rejected
    result.records = seq
    _check_and_route(work)
    rejected.sort(key=lambda t: t[0])
    result.rejections = [r for _, r, _ in rejected]
    lines = [dump_line(_reject_line(r, item, unit.kind)) for _, r, item in rejected]
    result.rejects = jsonl_chunk([s for s, _, _ in rejected], lines)
    return result


@dataclass(slots=True)
class _UnitWork:
    """A unit being converted: the plan and its converter, and what they have produced so far (records are numbered by ``seq``, their position in the unit)."""

    plan: ConvertPlan
    convert: Callable[[object], Record]
    result: UnitResult
    rejected: list[tuple[int, Rejection, RawRecord]] = field(default_factory=list)
    converted: list[_Converted] = field(default_factory=list)


def _jsonl_unit(unit: Unit, work: _UnitWork) -> int:
    """``_take`` over a JSONL unit's lines, with the common line (a JSON object) handled inline: no ``RawRecord`` is built for it, and its parsed input is let go at once (its raw line is kept, and parsed again only if it is rejected), so a unit's decoded JSON does not pile up in the worker.

    Returns the number of records (non-blank lines).
    """
    # Locals, not attributes, in the loop below: it runs once per line of every JSONL input.
    plan, convert, result, rejected, converted = work.plan, work.convert, work.result, work.rejected, work.converted
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    file, first, parquet = unit.file, unit.first, plan.parquet
    refs = result.refs if plan.keep_refs else None
    seq = 0
    for offset, raw in enumerate(_lines(unit.payload)):  # type: ignore[arg-type]
        try:
            value = loads(raw)
        except decode_error:
            value = None
        if type(value) is not dict:  # blank, not JSON, or not an object: sources' verdict
            seq = _take(jsonl_record(file, first + offset, raw), seq, work)
            continue
        if refs is not None:
            refs.append((file, first + offset))
        try:
            record = convert(value)
        except ConversionError as err:
            item = RawRecord(SourceRecord(file, first + offset, value), raw)
            rejected.append((seq, Rejection.from_error(file, first + offset, err), item))
        else:
            converted.append(
                _Converted(seq, dump_line(record), record if parquet else None, file, first + offset, raw)
            )
        seq += 1
    return seq


def _lines(data: bytes) -> list[bytes]:
    r"""``reader.split_lines``: the lines without ``\n`` and a trailing ``\r``, whose per-line ``\r`` test is skipped when the block holds no ``\r`` at all (every LF-only file)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if b"\r" in data:
        return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
    return lines


def _take(item: RawRecord, seq: int, work: _UnitWork) -> int:
    """Convert one record (or count a blank line); returns ``seq`` advanced past it."""
    if item.blank:
        work.result.blanks.append(seq)
        return seq
    src = item.record
    if work.plan.keep_refs:
        work.result.refs.append((src.file, src.line))
    if item.problem is not None:
        work.rejected.append((seq, Rejection.from_problem(src.file, src.line, item.problem), item))
        return seq + 1
    try:
        record = work.convert(src.value)
    except ConversionError as err:
        work.rejected.append((seq, Rejection.from_error(src.file, src.line, err), item))
    else:
        out = dump_line(record)
        work.converted.append(
            _Converted(seq, out, record if work.plan.parquet else None, src.file, src.line, item.key, item)
        )
    return seq + 1


@dataclass(slots=True)
class _Converted:
    """A record that converted: its position, serialised output, (for Parquet) the output itself, and its source: file, line or row, identifying bytes, and the RawRecord when one was built."""

    seq: int
    line: bytes
    record: Record | None
    file: str
    where: int
    key: bytes
    item: RawRecord | None = None

    def raw(self) -> RawRecord:
        """The source as a RawRecord (for a JSONL line: its raw bytes, parsed again when written to rejects)."""
        if self.item is not None:
            return self.item
        return RawRecord(SourceRecord(self.file, self.where, None), self.key)


def _check_and_route(work: _UnitWork) -> None:
    """Check the converted records against the target's rules; put each valid one in its split's chunk."""
    converted, plan, result, rejected = work.converted, work.plan, work.result, work.rejected
    target = OUTPUT_FORMATS[plan.target]
    data = b"".join([c.line for c in converted])
    problems = check_lines(
        data,
        len(converted),
        check_format=target.check_format,
        profile=plan.profile,
        platform=plan.platform,
    )
    names = [TRAIN, plan.split.name] if plan.split is not None else [TRAIN]
    routed: dict[str, list[_Converted]] = {name: [] for name in names}
    cache = MediaCache(plan.media_cache) if plan.media_cache is not None else None
    for i, c in enumerate(converted):
        found = problems.get(i)
        if cache is not None and not any(p.severity == "error" for p in found or ()) and (media := _media_rejection(c, cache)):
            rejected.append((c.seq, media, c.raw()))
            continue
        if found:
            errors = [p for p in found if p.severity == "error"]
            if errors:
                first = errors[0]
                more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
                reason = f"converted record breaks {first.rule}: {first.message}{more}"
                rejected.append((c.seq, Rejection(c.file, c.where, first.field, reason, first.rule), c.raw()))
                continue
            result.warnings.update(p.rule for p in found)
        routed[plan.split.route(c.key) if plan.split is not None else TRAIN].append(c)
    for name, picked in routed.items():
        seqs = [c.seq for c in picked]
        if plan.parquet:
            result.chunks[name] = parquet_chunk(seqs, [c.record for c in picked], target.schema)  # type: ignore[misc]
        elif len(picked) == len(converted):  # all of them, in order: the bytes just checked
            result.chunks[name] = Chunk(seqs, data, list(itertools.accumulate([len(c.line) for c in picked])))
        else:
            result.chunks[name] = jsonl_chunk(seqs, [c.line for c in picked])


def _media_rejection(c: _Converted, cache: MediaCache) -> Rejection | None:
    """The rejection of a converted record whose first image cannot be fetched or decoded, else None."""
    media = resolve_record(orjson.loads(c.line), cache)
    if not media.problems:
        return None
    field, problem = media.problems[0]
    more = f" (and {len(media.problems) - 1} more)" if len(media.problems) > 1 else ""
    return Rejection(c.file, c.where, field, f"[{problem.kind}] {problem.message}{more}", f"media-{problem.kind}")


def _reject_line(rejection: Rejection, item: RawRecord, kind: str) -> dict[str, object]:
    """A rejects-file line: where, why, and the original record (or the raw line if it is not JSON)."""
    line = rejection.to_dict()
    value = item.record.value
    if value is None and item.problem is None:  # a JSONL record let go after converting: parse it again
        value = orjson.loads(item.key)
    if value is not None:
        line["record"] = value
    elif kind == "jsonl":
        line["raw"] = item.key.decode("utf-8", "replace")
    return line
