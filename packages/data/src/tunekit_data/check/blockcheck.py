"""Check one block of lines: the columnar fast path, with a per-line slow path for what it can't type.

Fast path: pyarrow's JSON reader parses the whole block into the format's Arrow schema (unknown
fields inferred, so they can be reported) and the format's checks run vectorized over the table.
When the reader rejects the block (a line that is not JSON, a type mismatch, a lone surrogate,
nested unknown keys), or a screen finds bytes it would mishandle (invalid UTF-8, which it does not
check; a bare ``null`` line; nesting deep enough to overflow its stack), the block is split and
retried (``_fast_or_split``): around the line the failure names, else into ``FAN_OUT`` parts, so
one bad line costs a re-parse of its neighbourhood rather than a slow pass over the whole block.
The lines isolated that way, and ranges of at most ``LEAF_LINES`` lines that name none, go line
by line through orjson and the structural walk (``schema.walk``), and the lines that type
correctly join a table that runs through the very same vectorized checks.
Either way a line is one verdict: never dropped, never merged.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from tunekit_data.check import rowtypes
from tunekit_data.check.columns import lengths, mask, present
from tunekit_data.check.rules import Problem
from tunekit_data.check.schema import (
    FORMATS,
    FormatSchema,
    covers,
    nested_unknowns,
    unknown_columns,
    unknown_key,
    walk,
)
from tunekit_data.formats import CHECK_SUITES, CHECKS, MEDIA_KINDS, ConverseView, Options
from tunekit_data.io import S3_LEADING_BUCKET, S3_OBJECT_URI, newline_offsets, parse_line, require_object

LEAF_LINES = 64
FAN_OUT = 16
HINTS = 64  # failures per block whose named line is followed (see _fast_or_split)
# The block reader's parse chunk: as fast as 1 MB chunks or one chunk per block (measured), and
# ~25 MB less peak memory per worker than one chunk per 8 MB block.
READ_CHUNK = 2 << 20
# pyarrow's JSON parser recurses without a depth limit and overflows the C stack (a segfault) on
# lines nested 10,000-20,000 deep; a line holding more than this many '{' / '[' bytes (a bound on
# its depth) never reaches it: orjson rejects it per line (F13) or, if it is shallow after all, types it.
READER_MAX_OPENERS = 4096
_BOM = b"\xef\xbb\xbf"
# First bytes of the lines the reader mishandles: blank ones (skipped, so a line holding two objects
# can hide one), and a bare `null` (read as an all-null record, and a segfault when it is the first row).
_ODD_START = np.zeros(256, bool)
_ODD_START[[9, 13, 32, ord("n")]] = True
_BLANK_LINE = Problem.make("F7", "", "blank line: not a record, skipped")
_WS = np.zeros(256, bool)
_WS[[9, 10, 13, 32]] = True


@dataclass
class BlockStats:
    """Dataset-level facts one block contributes (merged across blocks for M10, M11, D10, F10)."""

    records: int = 0
    valid: int = 0
    with_media: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MEDIA_KINDS, 0))
    buckets: dict[str, int] = field(default_factory=dict)

    def merge(self, other: BlockStats) -> None:
        """Add another block's facts to these."""
        self.records += other.records
        self.valid += other.valid
        for k, n in other.with_media.items():
            self.with_media[k] += n
        for b, line in other.buckets.items():
            self.buckets.setdefault(b, line)


@dataclass
class BlockResult:
    """The verdicts of one block: problems per line, which lines are blank or invalid."""

    first_line: int
    n_lines: int
    blank: np.ndarray  # bool per line
    invalid: np.ndarray  # bool per line
    problems: list[tuple[int, Problem]]  # (line number, problem), in line order
    stats: BlockStats
    # With ``Options.collect_media``: (line index in the block, field path, kind, uri) of every
    # media block whose uri is a valid S3 URI (M5), for the HEAD checks of ``mediacheck``.
    media: list[tuple[int, str, str, str]] = field(default_factory=list)


class _Lines:
    """Line offsets of a block (one vectorized newline scan), and per-line facts the fast path needs."""

    def __init__(self, data: bytes, newlines: np.ndarray | None = None) -> None:
        self.data = data
        self.arr = np.frombuffer(data, np.uint8)
        nl = newline_offsets(data) if newlines is None else newlines
        # Exclusive end offset of each line, without its newline.
        self.ends = nl if not data or data.endswith(b"\n") else np.append(nl, len(data))
        self.count = len(self.ends)

    def __len__(self) -> int:
        return self.count

    @cached_property
    def starts(self) -> np.ndarray:
        """Start offset of each line."""
        return np.concatenate(([0], self.ends[:-1] + 1)) if self.count else np.zeros(0, np.int64)

    def raw(self, i: int) -> bytes:
        r"""Line ``i`` without its terminator (``\n`` or ``\r\n``)."""
        line = self.data[self.starts[i] : self.ends[i]]
        return line[:-1] if line.endswith(b"\r") else line

    def span(self, a: int, b: int) -> bytes | memoryview:
        """The bytes of lines [a, b), terminators included (a view: no copy)."""
        if a == 0 and b == self.count:
            return self.data
        return memoryview(self.data)[self.starts[a] : self.ends[b - 1] + 1] if b > a else b""

    def line_at(self, offset: int) -> int:
        """The line holding byte ``offset`` (its terminator included)."""
        return min(int(np.searchsorted(self.ends, offset)), self.count - 1)

    @cached_property
    def blank(self) -> np.ndarray:
        """True for lines holding only JSON whitespace."""
        cs = np.concatenate(([0], np.cumsum(~_WS[self.arr])))
        return (cs[self.ends] - cs[self.starts]) == 0

    @cached_property
    def odd(self) -> tuple[np.ndarray, np.ndarray]:
        r"""Per line: whether it is a bare ``null`` line (whitespace, then ``null``), and whether it is blank (only ``[ \t\r]``): the lines the block reader mishandles.

        A record line starts with ``{``; only the few lines that are empty or start with whitespace
        or ``n`` are looked at one by one.
        """
        null = np.zeros(self.count, bool)
        blank = np.zeros(self.count, bool)
        if not self.count:
            return null, blank
        starts = self.starts
        empty = starts >= self.ends
        first = self.arr[np.minimum(starts, max(len(self.arr) - 1, 0))] if len(self.arr) else np.zeros(self.count, np.uint8)
        for i in np.flatnonzero(empty | _ODD_START[first]):
            line = self.data[starts[i] : self.ends[i]].lstrip(b" \t\r")
            blank[i] = not line
            null[i] = line.startswith(b"null")
        return null, blank

    @cached_property
    def deep(self) -> np.ndarray:
        """True for lines holding more than ``READER_MAX_OPENERS`` '{' / '[' bytes (a bound on their nesting depth); only lines longer than that many bytes can, so only those are counted."""
        deep = np.zeros(self.count, bool)
        for i in np.flatnonzero(self.ends - self.starts > READER_MAX_OPENERS):
            a, b = int(self.starts[i]), int(self.ends[i])
            deep[i] = self.data.count(b"{", a, b) + self.data.count(b"[", a, b) > READER_MAX_OPENERS
        return deep


def check_block(data: bytes, first_line: int, options: Options, newlines: np.ndarray | None = None) -> BlockResult:
    r"""Check every line of ``data`` (whole lines, starting at line ``first_line``).

    ``newlines``, when given, are the offsets of its ``\n`` bytes (``reader.newline_offsets``).
    """
    fmt = FORMATS[options.fmt]
    lines = _Lines(data, newlines)
    n = len(lines)
    res = BlockResult(first_line, n, np.zeros(n, bool), np.zeros(n, bool), [], BlockStats())
    tables: list[tuple[pa.Table, np.ndarray]] = []  # typed rows and their line indices
    per_line: list[tuple[int, Problem]] = []
    _fast_or_split(fmt, lines, 0, n, tables, per_line, res.blank)
    per_line.extend((int(i), _BLANK_LINE) for i in np.flatnonzero(res.blank))
    return _judged(res, tables, per_line, options)


def check_table(table: pa.Table, first_line: int, options: Options) -> BlockResult:
    """Check the rows of a table input (row ``i`` is line ``first_line + i``) as ``check_block`` checks the same records as JSON lines (``tables.json_lines``): the same verdicts, problems and stats, without turning the rows into JSON. The rows ``rowtypes.typed`` cannot vouch for go through the per-line path as their JSON lines, as those lines would in a JSONL file."""
    fmt = FORMATS[options.fmt]
    n = table.num_rows
    res = BlockResult(first_line, n, np.zeros(n, bool), np.zeros(n, bool), [], BlockStats())
    tables: list[tuple[pa.Table, np.ndarray]] = []
    per_line: list[tuple[int, Problem]] = []
    from tunekit_data.io import json_lines  # reading tables is not the block checker's concern

    block, odd = rowtypes.typed(fmt, table)
    rows = np.flatnonzero(~odd)
    if len(rows):
        unknown = table.select(list(unknown_columns(fmt, table.schema)))
        # a row's JSON line holds its keys in column order: the order its unknown keys are reported in
        _top_level_unknowns(fmt, unknown if len(rows) == n else unknown.take(rows), rows, per_line, None)
        tables.append((block if len(rows) == n else block.take(rows), rows))
    if len(rows) < n:
        odd_rows = np.flatnonzero(odd)
        lines = _Lines(json_lines(table.take(odd_rows)))
        found: list[tuple[int, Problem]] = []
        start = len(tables)
        _slow(fmt, lines, 0, len(lines), tables, found, np.zeros(len(lines), bool))
        per_line.extend((int(odd_rows[i]), p) for i, p in found)
        tables[start:] = [(t, odd_rows[idx]) for t, idx in tables[start:]]
    return _judged(res, tables, per_line, options)


def _judged(res: BlockResult, tables: list[tuple[pa.Table, np.ndarray]], per_line: list[tuple[int, Problem]], options: Options) -> BlockResult:
    """``res`` completed: the vectorized checks run over the typed rows ``tables`` (with their line indices), their problems joined to ``per_line``'s, the verdicts and stats counted."""
    fmt_name, n, first_line = options.fmt, res.n_lines, res.first_line
    merged = _merged(tables)
    tables.clear()  # the reader's multi-chunk tables: only their combined copies stay alive
    for table, idx in merged:
        view = ConverseView(table)
        for row, problem in _run_checks(view, fmt_name, options):
            per_line.append((int(idx[row]), problem))
        _collect_stats(view, fmt_name, idx, res)
        if options.collect_media:
            _collect_media(view, fmt_name, idx, res)
    res.stats.buckets = dict(sorted(res.stats.buckets.items(), key=lambda kv: kv[1]))
    per_line.sort(key=lambda t: t[0])
    for i, problem in per_line:
        if problem.severity == "error":
            res.invalid[i] = True
    res.problems = [(first_line + i, p) for i, p in per_line]
    res.stats.records = int(n - res.blank.sum())
    res.stats.valid = int(res.stats.records - res.invalid.sum())
    return res


def _merged(tables: list[tuple[pa.Table, np.ndarray]]) -> list[tuple[pa.Table, np.ndarray]]:
    """One single-chunk table per schema (fast-path ranges share the block schema, per-line rows the full one): the checks' fixed cost is paid per table, and a block split around bad lines has dozens; the checks read whole columns, so their chunks are combined once here."""
    groups: dict[pa.Schema, list[tuple[pa.Table, np.ndarray]]] = {}
    for table, idx in tables:
        groups.setdefault(table.schema, []).append((table, idx))
    return [
        (pa.concat_tables([t for t, _ in group]).combine_chunks(), np.concatenate([i for _, i in group]))
        for group in groups.values()
    ]


@dataclass(frozen=True)
class _Rejected:
    """The block reader's refusal of a range, with the row it stopped at when its message says."""

    row: int | None = None


_IN_ROW = re.compile(r" in row (\d+)$")


def _read(fmt: FormatSchema, data: bytes | memoryview) -> pa.Table | _Rejected | None:
    """The block reader's table of ``data``, or why not (anything but a table is a refusal)."""
    try:
        return pj.read_json(
            # A zero-copy native reader over the block's bytes (a Python file object costs a copy and
            # a GIL round trip per parse chunk). The parallelism is across blocks, so no reader threads.
            pa.BufferReader(pa.py_buffer(data)),
            read_options=pj.ReadOptions(use_threads=False, block_size=READ_CHUNK),
            parse_options=pj.ParseOptions(explicit_schema=fmt.block_schema, unexpected_field_behavior="infer"),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        # The row of an error counts from the start of its parse chunk, which is not named: only
        # a range of one chunk tells the line.
        found = _IN_ROW.search(str(exc)) if len(data) < READ_CHUNK else None
        return _Rejected(int(found.group(1)) if found else None)


def _fast_or_split(fmt, lines: _Lines, a: int, b: int, tables, per_line, blank: np.ndarray, hints: list[int] | None = None) -> None:
    """Type lines [a, b) with the block reader, splitting on failure down to the per-line path.

    Where a failure names a line (the reader's error row, the first line a screen rejects, the
    first record with an unknown nested key), the lines before it are read again (they normally
    type), that line goes per line, and the rest is read on: a lone bad line costs one per-line
    check and a re-read of its range. A range that names a second bad line, or whose failure names
    none, is cut into ``FAN_OUT`` parts rather than halves, so the bad lines of a dense range are
    isolated after re-reading it about once more (halving re-read each block ~5 times with 0.1 %
    bad lines). Parts of at most ``LEAF_LINES`` lines that name no line go line by line. A line
    named wrongly costs only time (its range fails again); ``HINTS`` bounds how many a block follows.
    """
    hints = [HINTS] if hints is None else hints
    followed = 0
    while b > a:
        done, bad = _fast(fmt, lines, a, b, tables, per_line, blank)
        if done:
            return
        if bad is None or not a <= bad < b or hints[0] <= 0:
            _fan_out(fmt, lines, a, b, tables, per_line, blank, hints)
            return
        hints[0] -= 1
        followed += 1
        _fast_or_split(fmt, lines, a, bad, tables, per_line, blank, hints)
        _slow(fmt, lines, bad, bad + 1, tables, per_line, blank)
        a = bad + 1
        if followed >= 2 and b - a > LEAF_LINES:
            _fan_out(fmt, lines, a, b, tables, per_line, blank, hints)
            return


def _fan_out(fmt, lines: _Lines, a: int, b: int, tables, per_line, blank: np.ndarray, hints: list[int]) -> None:
    if b - a <= LEAF_LINES:
        _slow(fmt, lines, a, b, tables, per_line, blank)
        return
    step = max(LEAF_LINES, -(-(b - a) // FAN_OUT))
    for start in range(a, b, step):
        _fast_or_split(fmt, lines, start, min(start + step, b), tables, per_line, blank, hints)


def _fast(fmt, lines: _Lines, a: int, b: int, tables, per_line, blank: np.ndarray) -> tuple[bool, int | None]:
    """Type lines [a, b) with the block reader: ``(True, None)`` if it did, else ``(False, line)`` with a line that is (likely) to blame, or None when the failure names none."""
    null_lines, blank_lines = lines.odd
    odd = null_lines[a:b] | lines.deep[a:b]
    if odd.any():
        return False, a + int(np.argmax(odd))
    data = lines.span(a, b)
    unsafe = _reader_unsafe(data)
    if unsafe is not None:
        return False, lines.line_at(int(lines.starts[a]) + unsafe)
    table = _read(fmt, data)
    if not isinstance(table, pa.Table):
        row = getattr(table, "row", None)
        if row is None:
            return False, None
        records = np.flatnonzero(~blank_lines[a:b])
        return False, (a + int(records[row]) if row < len(records) else None)
    one_row_per_line = table.num_rows == b - a and not blank_lines[a:b].any()
    local_blank = np.zeros(b - a, bool) if one_row_per_line else lines.blank[a:b]
    rows = np.flatnonzero(~local_blank) + a
    if table.num_rows != len(rows):
        return False, None
    nested = nested_unknowns(fmt, table.schema)
    if nested or not _unknowns_valid(fmt, table):
        try:
            first = _first_with(fmt, table, nested) if nested else None
        except pa.ArrowException:  # only a hint: an array the reader built oddly names no line
            first = None
        return False, (int(rows[first]) if first is not None else None)
    blank[a:b] = local_blank
    _top_level_unknowns(fmt, table, rows, per_line, lines)
    tables.append((table.select(fmt.block_schema.names), rows))
    return True, None


def _first_with(fmt, table: pa.Table, names: list[str]) -> int | None:
    """The first row holding a value of the columns ``names`` beyond the block schema (a nested unknown key, or an unknown column the per-line path must judge), or None if none is found."""
    known = {f.name: f.type for f in fmt.block_schema}
    has = np.zeros(table.num_rows, bool)
    for name in names:
        column = table.column(name).combine_chunks()
        has |= _beyond(known[name], column) if name in known else present(column)
    return int(np.argmax(has)) if has.any() else None


def _beyond(want: pa.DataType, arr: pa.Array) -> np.ndarray:
    """Per value of ``arr``: True where it holds a (non-null) field that type ``want`` lacks."""
    got = arr.type
    if pa.types.is_struct(want) and pa.types.is_struct(got):
        fields = {f.name: f.type for f in want}
        out = np.zeros(len(arr), bool)
        for i, f in enumerate(got):
            child = pc.struct_field(arr, [i])
            if f.name not in fields:
                out |= present(child)
            elif not covers(fields[f.name], f.type):
                out |= _beyond(fields[f.name], child)
        return out
    if pa.types.is_list(want) and pa.types.is_list(got):
        n = lengths(arr)
        inner = _beyond(want.value_type, pc.list_flatten(arr))
        return np.bincount(np.repeat(np.arange(len(arr)), n)[inner], minlength=len(arr)) > 0
    return np.zeros(len(arr), bool)


def _reader_unsafe(data: bytes | memoryview) -> int | None:
    """None if the block reader may see ``data``, else the offset of the first byte it must not: it does not validate UTF-8 (F3) and it skips a BOM at the start of its input (a BOM on a later line is F5).

    (Deep nesting: ``_Lines.deep``.)
    """
    if bytes(data[: len(_BOM)]) == _BOM:
        return 0
    utf8 = pa.Array.from_buffers(
        pa.large_string(), 1, [None, pa.py_buffer(np.array([0, len(data)], np.int64)), pa.py_buffer(data)]
    )
    try:
        utf8.validate(full=True)  # UTF-8 check, several GB/s
    except pa.ArrowInvalid:
        return _first_bad_utf8(data)
    return None


def _first_bad_utf8(data: bytes | memoryview, piece: int = 1 << 16) -> int:
    """Offset of the first byte of ``data`` that is not UTF-8 (0 if Python finds none), decoding piece by piece so that no block-sized string is built."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    for start in range(0, len(view), piece):
        try:
            decoder.decode(view[start : start + piece], final=start + piece >= len(view))
        except UnicodeDecodeError as exc:
            return max(0, start + exc.start - len(decoder.getstate()[0]))
    return 0


def _unknowns_valid(fmt, table: pa.Table) -> bool:
    """False if the reader built a corrupt array for an inferred column (pyarrow 26 does for a list whose first item is null and a later one an object: its offsets run past the child array)."""
    try:
        for name in unknown_columns(fmt, table.schema):
            table.column(name).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _top_level_unknowns(fmt, table: pa.Table, rows: np.ndarray, per_line, lines: _Lines | None) -> None:
    """Report the unknown top-level keys of the typed rows, a line's keys in the order the line holds them (as the per-line walk does), not in the order the reader met them in the range (``lines`` None: a table input's rows, whose JSON lines hold them in column order)."""
    found: dict[int, list[str]] = {}
    for name in unknown_columns(fmt, table.schema):
        has = present(table.column(name).combine_chunks())
        for r in np.flatnonzero(has):
            found.setdefault(int(rows[r]), []).append(name)
    for line, names in found.items():
        if len(names) > 1 and lines is not None:
            try:
                order = {key: k for k, key in enumerate(orjson.loads(lines.raw(line)))}
            except orjson.JSONDecodeError:
                order = {}
            names.sort(key=lambda key: order.get(key, len(order)))
        per_line.extend((line, unknown_key(fmt, "", name, name)) for name in names)


def _slow(fmt, lines: _Lines, a: int, b: int, tables, per_line, blank: np.ndarray) -> None:
    typed_rows: list[dict] = []
    typed_idx: list[int] = []
    for i in range(a, b):
        raw = lines.raw(i)
        if not raw.strip(b" \t\r"):
            blank[i] = True
            continue
        value, problem = parse_line(raw)
        problem = problem or require_object(value)
        if problem:
            per_line.append((i, problem))
            continue
        typed, problems = walk(fmt, value)
        per_line.extend((i, p) for p in problems)
        if typed is not None:
            typed_rows.append(typed)
            typed_idx.append(i)
    if typed_rows:
        tables.append((pa.Table.from_pylist(typed_rows, schema=fmt.schema), np.asarray(typed_idx)))


def _run_checks(view: ConverseView, fmt_name: str, options: Options):
    if view.n == 0:
        return
    for check in CHECKS[fmt_name]:
        yield from check(view, options)


def _collect_stats(view: ConverseView, fmt_name: str, idx: np.ndarray, res: BlockResult) -> None:
    if not CHECK_SUITES[fmt_name].converse or view.n == 0:
        return
    for kind, counts in view.media_counts.items():
        res.stats.with_media[kind] += int((counts > 0).sum())
    b = view.blocks
    for kind in MEDIA_KINDS:
        if not view.member(kind).any():
            continue
        uri = _uris(view, kind)
        bucket = pc.struct_field(pc.extract_regex(uri, S3_LEADING_BUCKET), "bucket")
        for name in pc.unique(pc.drop_null(bucket)).to_pylist():
            at = pc.index(bucket, name).as_py()
            line = res.first_line + int(idx[b.row[at]])
            # A block's rows may sit in several tables (fast ranges, per-line rows): keep the first line.
            res.stats.buckets[name] = min(line, res.stats.buckets.get(name, line))


def _collect_media(view: ConverseView, fmt_name: str, idx: np.ndarray, res: BlockResult) -> None:
    if not CHECK_SUITES[fmt_name].converse or view.n == 0:
        return
    b = view.blocks
    for kind in MEDIA_KINDS:
        has = view.member(kind)
        if not has.any():
            continue
        uri = _uris(view, kind)
        for i in np.flatnonzero(has & mask(pc.match_substring_regex(uri, S3_OBJECT_URI))):
            path = b.path(int(i), f"{kind}.source.s3Location.uri")
            res.media.append((int(idx[b.row[i]]), path, kind, uri[int(i)].as_py()))


def _uris(view: ConverseView, kind: str) -> pa.Array:
    """``source.s3Location.uri`` of every content block's ``kind`` member (null where absent)."""
    media = view.blocks.field(kind)
    return pc.struct_field(pc.struct_field(pc.struct_field(media, "source"), "s3Location"), "uri")
