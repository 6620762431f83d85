"""Streaming JSONL input: files, `.gz` / `.zst` archives, directories, S3 objects and prefixes, and stdin, read in blocks (where the bytes come from is ``storage``'s job).

Everything downstream (check, convert, pack) reads through here, so that line numbers mean the same
thing everywhere: 1-based physical lines of the (decompressed) file, blank lines counted.

Blocks end on a line boundary and hold whole lines only; a line longer than the block size grows
the block (memory is bounded by ``block_size`` plus the longest line, never by the file size).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from tunekit_data.errors import InputError
from tunekit_data.io import storage, tables
from tunekit_data.io.s3 import is_s3

if TYPE_CHECKING:
    import pyarrow as pa

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
BOM = b"\xef\xbb\xbf"
DEFAULT_BLOCK_SIZE = 8 << 20
TABLE_ROWS = 4096  # rows of a table input per block


@dataclass(frozen=True, slots=True)
class Source:
    """One input: a path on disk, an ``s3://bucket/key`` object, or ``-`` for standard input.

    ``kind`` is ``jsonl``, or a table kind (``tables.TABLE_KINDS``: Parquet, Arrow, Delta) whose
    rows are read as JSON lines, so that line ``n`` of such a source is its row ``n``.
    """

    name: str
    kind: str = "jsonl"

    @property
    def is_stdin(self) -> bool:
        """True for standard input."""
        return self.name == "-"

    def size(self) -> int | None:
        """Size in bytes (compressed size for archives), or None for stdin."""
        return None if self.is_stdin else storage.stat(self.name)


@dataclass(slots=True)
class Block:
    r"""Whole lines of one source: ``data`` starts at line ``first_line`` (1-based).

    ``data`` never has a BOM; it ends with ``\n`` unless it is the file's last, unterminated line.
    A table input's block holds its rows as ``table``, and ``data`` (their JSON lines) is made only
    when something asks for it: the block checker reads the table itself (``check_table``).
    """

    source: str
    first_line: int
    _data: bytes | None
    index: int
    # Offsets of the ``\n`` bytes of ``data``, found once by the reader to count its lines and
    # handed to the block checker, which needs them too (``None``: not computed).
    _newlines: np.ndarray | None = None
    # True on a source's first block when a UTF-8 BOM was stripped from its start (rule F4): known
    # while reading, so stdin and S3 objects are not opened a second time to look.
    bom: bool = False
    table: pa.Table | None = None
    stored: int = 0  # a table block's share of its input's stored size (progress counts stored bytes)

    @property
    def data(self) -> bytes:
        """The block's lines (for a table block, its rows as JSON lines, made on first use)."""
        if self._data is None:
            self._from_table()
        return self._data  # type: ignore[return-value]

    @property
    def newlines(self) -> np.ndarray | None:
        r"""Offsets of the ``\n`` bytes of ``data`` (None: not computed)."""
        if self._data is None:
            self._from_table()
        return self._newlines

    def _from_table(self) -> None:
        assert self.table is not None, "a block holds lines or a table"
        self._data = tables.json_lines(self.table)
        self._newlines = newline_offsets(self._data)

    @property
    def lines(self) -> int:
        """How many lines the block holds (a table block: its rows)."""
        if self.table is not None:
            return self.table.num_rows
        assert self._newlines is not None, "reader blocks carry their newline offsets"
        return len(self._newlines) + (0 if self.data.endswith(b"\n") or not self.data else 1)

    @property
    def nbytes(self) -> int:
        """The bytes of the input the block stands for (a table block: its stored share)."""
        return self.stored if self.table is not None else len(self.data)


def expand_paths(paths: Iterable[str]) -> list[Source]:
    """Resolve files, directories and S3 prefixes (their ``*.jsonl[.gz|.zst]`` files, sorted) and ``-``.

    Raises InputError for a missing path or a directory without JSONL files. Extensions are not
    enforced here: rule F1 reports them, so a mis-named file is still checked.
    """
    out: list[Source] = []
    for raw in paths:
        if raw == "-":
            out.append(Source("-"))
            continue
        folder = tables.hub_dataset(raw) or Path(storage.local_path(raw))
        found = None if is_s3(raw) or not folder.is_dir() else tables.table_folder(folder)
        if found is None:
            names = storage.list_inputs(str(folder) if folder.is_dir() else raw, (*JSONL_SUFFIXES, ".parquet"))
            found = [(name, "parquet" if name.lower().endswith(".parquet") else "jsonl") for name in names]
        out.extend(Source(name, kind) for name, kind in found)
    return out


def open_source(source: Source) -> BinaryIO:
    """Open a source for binary reading, decompressing `.gz` and `.zst` on the fly."""
    return sys.stdin.buffer if source.is_stdin else storage.open_input(source.name)


def iter_blocks(source: Source, *, block_size: int = DEFAULT_BLOCK_SIZE) -> Iterator[Block]:
    """Yield the source as blocks of whole lines; see the module docstring for the guarantees.

    Each read lands in one reused buffer after the partial line carried over from the last one, so
    a block costs one copy (into its ``bytes``) rather than a fresh buffer, a join and a slice.
    """
    if source.kind != "jsonl":
        yield from _table_blocks(source)
        return
    line = 1
    index = 0
    buf = bytearray()
    have = 0  # buf[:have] is the carried partial line (no newline in it)
    first = True
    bom = False
    stream = open_source(source)
    try:
        while True:
            need = have + block_size
            if len(buf) < need:
                grown = bytearray(need)
                grown[:have] = buf[:have]
                buf = grown
            try:
                n = _read_into(stream, buf, have, need)
            except OSError as exc:  # corrupt archive, truncated gzip, I/O error
                msg = f"{source.name}: read failed after line {line - 1}: {exc}"
                raise InputError(msg) from exc
            if first:
                first = False
                if buf.startswith(BOM, 0, n):
                    buf[: n - len(BOM)] = buf[len(BOM) : n]
                    n -= len(BOM)
                    bom = True
            end = have + n
            if not n:
                if have:
                    data = bytes(buf[:have])
                    yield Block(source.name, line, data, index, newline_offsets(data), bom and index == 0)
                return
            cut = buf.rfind(b"\n", have, end) + 1
            if cut == 0:  # one line longer than a block: keep reading until it ends
                have = end
                continue
            with memoryview(buf) as view:
                block = bytes(view[:cut])
            buf[: end - cut] = buf[cut:end]
            have = end - cut
            newlines = newline_offsets(block)
            yield Block(source.name, line, block, index, newlines, bom and index == 0)
            index += 1
            line += len(newlines)
    finally:
        if not source.is_stdin:
            stream.close()


def _table_blocks(source: Source) -> Iterator[Block]:
    """A table's rows as blocks of its record batches; their lines (``Block.data``) are the JSON lines a JSONL file of the records would hold (one row a line: JSON strings escape newlines), so line ``n`` is row ``n``."""
    row = 1
    for index, (table, share) in enumerate(tables.iter_batches(source.name, source.kind, TABLE_ROWS)):
        yield Block(source.name, row, None, index, table=table, stored=share)
        row += table.num_rows


def newline_offsets(data: bytes, piece: int = 1 << 18) -> np.ndarray:
    r"""Offsets of the ``\n`` bytes of ``data`` (int64): numpy passes over cache-sized pieces, so the temporaries stay in cache (twice as fast as one pass)."""
    arr = np.frombuffer(data, np.uint8)
    parts = [np.flatnonzero(arr[i : i + piece] == 10) + i for i in range(0, len(arr), piece)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _read_into(stream: BinaryIO, buf: bytearray, start: int, stop: int) -> int:
    """Read up to ``stop - start`` bytes into ``buf[start:stop]``; 0 only at the end of the stream."""
    readinto = getattr(stream, "readinto", None)
    with memoryview(buf) as view:
        target = view[start:stop]
        if readinto is not None:
            return readinto(target) or 0
        chunk = stream.read(stop - start)
        target[: len(chunk)] = chunk
        return len(chunk)


def split_lines(data: bytes) -> list[bytes]:
    r"""Split a block into its lines, without the ``\n`` and without a trailing ``\r`` (CRLF files)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


def iter_lines(source: Source, *, block_size: int = DEFAULT_BLOCK_SIZE) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_line)`` for every physical line, blank ones included."""
    for block in iter_blocks(source, block_size=block_size):
        for offset, raw in enumerate(split_lines(block.data)):
            yield block.first_line + offset, raw
