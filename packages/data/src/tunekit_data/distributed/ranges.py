"""Cutting inputs into byte ranges that tasks read on their own, each as blocks of whole lines.

A range ``[start, stop)`` of a file owns the lines whose first byte lies in it: a task seeks to
``start - 1``, skips to the end of the line there (it belongs to the range before), and reads on
past ``stop`` to the end of its last line. So every line of the file is read by exactly one range,
whatever the cut points, and no task needs another's bytes. Line numbers in a range count from 1;
the driver, which sees the ranges in order, adds the lines of the ranges before (``check.Tally.shift``).

Compressed files and standard input cannot be entered in the middle: one range covers them whole
(``stop`` None). Local paths must be on storage every node sees (a shared mount); ``s3://``
objects are read with ranged GETs (``storage.open_random_access``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tunekit_data.errors import InputError, UsageError
from tunekit_data.io import BOM, Block, Source, iter_blocks, newline_offsets, storage

DEFAULT_RANGE_SIZE = 64 << 20  # per task: seconds of work, so scheduling costs stay a small share
MIN_RANGE_SIZE = 8 << 20
TASKS_PER_CPU = 4
_TAIL_READ = 1 << 20  # bytes read at a time past ``stop`` to finish the last line
_WHOLE = (".gz", ".zst")


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``[start, stop)`` of ``source`` (``stop`` None: the whole stream, read front to back)."""

    source: str
    start: int = 0
    stop: int | None = None
    kind: str = "jsonl"  # a table kind (``Source.kind``) is read whole, row by row


def split_ranges(sources: list[Source], range_size: int) -> list[ByteRange]:
    """The ranges of every source, in input order; each source has at least one."""
    if range_size < 1:
        msg = f"the range size must be at least 1 byte, got {range_size}"
        raise UsageError(msg)
    out: list[ByteRange] = []
    for source in sources:
        if source.is_stdin:
            msg = "standard input cannot be read by Ray tasks; pass files or s3:// objects with --engine ray"
            raise UsageError(msg)
        if source.kind != "jsonl" or source.name.endswith(_WHOLE):
            out.append(ByteRange(source.name, kind=source.kind))
            continue
        size = source.size() or 0
        out.extend(ByteRange(source.name, a, min(a + range_size, size)) for a in range(0, max(size, 1), range_size))
    return out


def range_size_for(total: int, cpus: int) -> int:
    """The bytes per range for an input of ``total`` bytes on ``cpus`` CPUs.

    ``DEFAULT_RANGE_SIZE``, or less for an input too small to give each CPU ``TASKS_PER_CPU``
    ranges (so that no CPU idles while another checks the last large range), but never under
    ``MIN_RANGE_SIZE``.
    """
    # Rounded up: rounded down, a few bytes were left over for one more, nearly empty task.
    return max(MIN_RANGE_SIZE, min(DEFAULT_RANGE_SIZE, -(-total // (TASKS_PER_CPU * cpus))))


def range_blocks(r: ByteRange, block_size: int) -> Iterator[Block]:
    """The lines ``r`` owns as blocks of about ``block_size`` bytes, numbered from line 1."""
    if r.stop is None:
        yield from iter_blocks(Source(r.source, r.kind), block_size=block_size)
        return
    data, bom = read_range(r)
    newlines = newline_offsets(data)
    start, line, index = 0, 1, 0
    while start < len(data):
        # Blocks end after the last newline within block_size, or after the first one if a line is longer.
        end = data.rfind(b"\n", start, start + block_size) + 1 or data.find(b"\n", start + block_size) + 1 or len(data)
        lo, hi = int(newlines.searchsorted(start)), int(newlines.searchsorted(end))
        yield Block(r.source, line, data[start:end], index, newlines[lo:hi] - start, bom and index == 0)
        line += hi - lo
        start, index = end, index + 1


def read_range(r: ByteRange) -> tuple[bytes, bool]:
    """The whole lines ``r`` owns (see the module docstring), without a leading BOM.

    Also whether one was stripped (only a range at the start of its file can have one).
    """
    assert r.stop is not None, "a whole-stream range is read with iter_blocks"
    file = storage.open_random_access(r.source)
    try:
        size = file.size()
        stop = min(r.stop, size)
        lead = 1 if r.start > 0 else 0
        data = file.read_at(stop - r.start + lead, r.start - lead) if stop > r.start else b""
        if lead:
            cut = data.find(b"\n")
            data = data[cut + 1 :] if cut >= 0 else b""  # no newline: no line starts in this range
        if data and not data.endswith(b"\n") and stop < size:
            data = _finish_line(file, data, stop, size)
    except OSError as exc:
        msg = f"{r.source}: read failed at byte {r.start:,}: {exc}"
        raise InputError(msg) from exc
    finally:
        file.close()
    if r.start == 0 and data.startswith(BOM):
        return data[len(BOM) :], True
    return data, False


def _finish_line(file, data: bytes, at: int, size: int) -> bytes:
    """``data`` extended past byte ``at`` to the end of its last line (or of the file)."""
    parts = [data]
    while at < size:
        piece = file.read_at(min(_TAIL_READ, size - at), at)
        cut = piece.find(b"\n")
        if cut >= 0:
            parts.append(piece[: cut + 1])
            break
        parts.append(piece)
        at += len(piece)
    return b"".join(parts)


def lines_through(block: Block) -> int:
    """Lines from the start of its range to the end of ``block`` (its last line may lack a newline)."""
    return block.first_line - 1 + block.lines
