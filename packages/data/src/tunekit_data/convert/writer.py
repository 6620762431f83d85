"""Outputs: JSONL or Parquet files, or a folder of JSONL shards; the train/validation split.

Every output, a path or an ``s3://`` URI, is written through ``storage.open_output``: it appears under
its name only when the run completes, so a crashed or interrupted run never leaves a truncated file
(or S3 object) that looks finished.

``-o`` decides the layout: ``*.jsonl`` (``.gz`` / ``.zst`` compressed too) writes JSONL, ``*.parquet``
writes Parquet with the target's Arrow schema (``tunekit_data.formats.ARROW_SCHEMAS``), anything else is a folder
of ``train-00000.jsonl`` shards of ``shard_size`` records. With ``--split validation=0.1`` the held-out
records go beside the training output: ``out.validation.jsonl``, or ``validation-00000.jsonl`` shards.

The split is decided per record from a keyed hash of the record's bytes and ``--seed``: the same
input and seed give the same split on every run, with any number of workers, and it streams (no
shuffle buffer). Identical records always land on the same side, so duplicates cannot leak from
train into validation. ``ratio`` is the expected held-out share, not an exact count.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from tunekit_data.convert.outputs import DEFAULT_SHARD_SIZE
from tunekit_data.errors import InputError, UsageError
from tunekit_data.io import is_s3, storage

TRAIN = "train"
_COMPRESSION = {".gz": "gzip", ".zst": "zstd"}


# --- split -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Split:
    """``--split NAME=RATIO --seed N``: the held-out split's name, share, and the hash key."""

    name: str
    ratio: float
    seed: int = 0

    @classmethod
    def parse(cls, spec: str, seed: int = 0) -> Split:
        """Read ``validation=0.1``; UsageError for anything else."""
        name, eq, ratio = spec.partition("=")
        try:
            share = float(ratio)
        except ValueError:
            share = -1.0
        if not eq or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name) or name == TRAIN or not 0 < share < 1:
            msg = f"--split must look like validation=0.1 (a name other than train, and a share between 0 and 1), got {spec!r}"
            raise UsageError(msg)
        if not -(2**63) <= seed < 2**63:
            msg = f"--seed must fit in 64 bits, got {seed}"
            raise UsageError(msg)
        return cls(name, share, seed)

    def route(self, key: bytes) -> str:
        """The split a record with identifying bytes ``key`` belongs to."""
        digest = hashlib.blake2b(
            key, digest_size=8, key=self.seed.to_bytes(8, "little", signed=True)
        ).digest()
        return self.name if int.from_bytes(digest, "little") < self.ratio * 2**64 else TRAIN


# --- chunks: one unit's records for one output --------------------------------------------------------


@dataclass(slots=True)
class Chunk:
    """Encoded records for one output from one unit, in order.

    ``seq`` is each record's position in its unit (so a run stopped by ``--max-samples`` can cut every output
    at the same record).
    """

    seq: list[int] = field(default_factory=list)
    data: bytes = b""
    ends: list[int] = field(default_factory=list)
    table: pa.Table | None = None

    def __len__(self) -> int:
        return len(self.seq)

    def slice(self, start: int, stop: int) -> Chunk:
        """Records ``[start, stop)``."""
        if self.table is not None:
            return Chunk(self.seq[start:stop], table=self.table.slice(start, stop - start))
        begin = self.ends[start - 1] if start > 0 else 0
        end = self.ends[stop - 1] if stop > start else begin
        return Chunk(self.seq[start:stop], self.data[begin:end], [e - begin for e in self.ends[start:stop]])

    def upto(self, seq: int) -> Chunk:
        """The records at unit positions ``<= seq``."""
        return self.slice(0, bisect.bisect_right(self.seq, seq))


def dump_json(value: object) -> bytes:
    """Compact JSON for any decoded record; binary cells (Arrow ``binary``) are shown by their size."""
    return orjson.dumps(value, default=_json_default)


def dump_line(value: object) -> bytes:
    r"""``dump_json(value) + b"\n"``, without copying the line to add its newline."""
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_APPEND_NEWLINE)


def _json_default(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    return str(value)


def jsonl_chunk(seq: list[int], lines: list[bytes]) -> Chunk:
    r"""Already serialised records (``dump_json(record) + b"\n"`` each) as a JSONL chunk."""
    return Chunk(seq, b"".join(lines), list(itertools.accumulate(map(len, lines))))


def parquet_chunk(seq: list[int], records: list[dict[str, object]], schema: pa.Schema) -> Chunk:
    """Records as an Arrow table of ``schema`` (built in the worker, so the main process only writes)."""
    return Chunk(seq, table=pa.Table.from_pylist(records, schema=schema))


# --- sinks ---------------------------------------------------------------------------------------------


class Sink(Protocol):
    """An output being written: takes chunks, then is committed (renamed into place) or aborted."""

    def write(self, chunk: Chunk) -> None:
        """Append a chunk's records."""

    def commit(self) -> list[tuple[str, int]]:
        """Finish and rename into place; ``(final path, records)`` per file written."""

    def abort(self) -> None:
        """Close and delete whatever was written."""


class _FileSink:
    """One output file (a path or ``s3://bucket/key``) written through ``storage.open_output``, so it appears only on ``commit`` and an aborted run leaves nothing under its name."""

    def __init__(self, path: str, *, compress: bool) -> None:
        self.path, self.count = path if is_s3(path) else str(Path(path)), 0
        if not is_s3(path):
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                msg = f"{path}: cannot create its folder: {exc.strerror or exc}"
                raise InputError(msg) from exc
        self.out = storage.open_output(path, compress=compress)

    def _close(self) -> None:
        """Flush what the format still holds (a Parquet footer) into ``self.out``."""

    def commit(self) -> list[tuple[str, int]]:
        self._close()
        self.out.commit()
        return [(self.path, self.count)]

    def abort(self) -> None:
        try:
            self._close()
        finally:
            self.out.abort()


class JsonlSink(_FileSink):
    """A JSONL file, compressed by its suffix (``.gz``, ``.zst``) by ``storage.open_output``."""

    def __init__(self, path: str) -> None:
        super().__init__(path, compress=True)

    def write(self, chunk: Chunk) -> None:
        """Append the chunk's JSON lines."""
        self.out.write(chunk.data)
        self.count += len(chunk)


class ParquetSink(_FileSink):
    """A Parquet file of one schema; each chunk becomes a row group."""

    def __init__(self, path: str, schema: pa.Schema) -> None:
        super().__init__(path, compress=False)  # Parquet compresses its pages itself
        self.writer = pq.ParquetWriter(_Unclosable(self.out), schema, compression="zstd")
        self.open = True

    def write(self, chunk: Chunk) -> None:
        """Append the chunk's rows as one row group."""
        if chunk.table is not None and chunk.table.num_rows:
            self.writer.write_table(chunk.table)
        self.count += len(chunk)

    def _close(self) -> None:
        if self.open:
            self.open = False
            self.writer.close()


class _Unclosable:
    """An ``AtomicOutput`` as the file ``ParquetWriter`` writes to: closing the writer closes its file, but only ``commit`` / ``abort`` may end an atomic output (publish it or drop it)."""

    def __init__(self, out: storage.AtomicOutput) -> None:
        self._out = out
        self.closed = False

    def write(self, data: bytes) -> int:
        return self._out.write(data)

    def tell(self) -> int:
        return self._out.tell()

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self.closed = True


class ShardSink:
    """JSONL shards ``{prefix}-00000.jsonl`` ... of at most ``shard_size`` records in a folder."""

    def __init__(self, folder: str, prefix: str, shard_size: int) -> None:
        self.folder, self.prefix, self.shard_size = folder, prefix, shard_size
        self.done: list[JsonlSink] = []
        self.current: JsonlSink | None = None

    def write(self, chunk: Chunk) -> None:
        """Append the chunk's records, starting a new shard whenever one is full."""
        start = 0
        while start < len(chunk):
            if self.current is None or self.current.count == self.shard_size:
                self._next()
            assert self.current is not None
            take = min(len(chunk) - start, self.shard_size - self.current.count)
            self.current.write(chunk.slice(start, start + take))
            start += take

    def _next(self) -> None:
        if self.current is not None:
            self.done.append(self.current)
        self.current = JsonlSink(_join(self.folder, f"{self.prefix}-{len(self.done):05d}.jsonl"))

    def commit(self) -> list[tuple[str, int]]:
        """Publish every shard; returns ``(path, records)`` per shard, in order."""
        if self.current is None:  # no records: still leave one (empty) shard, so the output exists
            self._next()
        sinks = [*self.done, self.current]
        return [entry for s in sinks if s is not None for entry in s.commit()]

    def abort(self) -> None:
        """Drop every shard; none appears."""
        for s in [*self.done, self.current]:
            if s is not None:
                s.abort()


# --- layout ---------------------------------------------------------------------------------------------


def _with_split(path: str, name: str) -> str:
    """``out.jsonl`` -> ``out.validation.jsonl`` (``out.jsonl.gz`` -> ``out.validation.jsonl.gz``).

    String arithmetic, not ``Path``: ``-o`` may be an ``s3://`` URI, whose ``//`` a Path would fold.
    """
    head, _, file = path.rpartition("/")
    stem, suffix = _split_suffix(file)
    return f"{head}/{stem}.{name}{suffix}" if head else f"{stem}.{name}{suffix}"


def _split_suffix(name: str) -> tuple[str, str]:
    """``out.jsonl.gz`` -> ``("out", ".jsonl.gz")``; ``out.parquet`` -> ``("out", ".parquet")``."""
    parts = name.split(".")
    n = 2 if len(parts) > 2 and f".{parts[-1]}" in _COMPRESSION else 1
    return ".".join(parts[:-n]), "." + ".".join(parts[-n:])


def _join(folder: str, name: str) -> str:
    """``name`` inside the folder or ``s3://`` prefix ``folder``."""
    return f"{folder.rstrip('/')}/{name}" if is_s3(folder) else str(Path(folder) / name)


def output_kind(out: str) -> str:
    """``jsonl``, ``parquet`` or ``shards`` for an ``-o`` value (see the module docstring)."""
    lower = out.lower()
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst")):
        return "jsonl"
    if Path(out).is_file() or lower.endswith((".json", ".jsonl.bz2", ".csv")):
        msg = f"-o {out}: name a .jsonl or .parquet file, or a folder for JSONL shards"
        raise UsageError(msg)
    return "shards"


def open_outputs(
    out: str, *, splits: list[str], schema: pa.Schema, shard_size: int = DEFAULT_SHARD_SIZE
) -> dict[str, Sink]:
    """One sink per split name (``train`` first), laid out as ``out`` asks."""
    kind = output_kind(out)
    sinks: dict[str, Sink] = {}
    try:
        existing = storage.list_names(out) if kind == "shards" else []
        for name in splits:
            if kind == "shards":
                taken = sorted(n for n in existing if re.fullmatch(rf"{re.escape(name)}-.*\.jsonl", n))
                if taken:
                    msg = f"-o {out}: already holds {name} shards ({taken[0]} ...); remove them or choose another folder"
                    raise UsageError(msg)
                sinks[name] = ShardSink(out, name, shard_size)
                continue
            path = out if name == TRAIN else _with_split(out, name)
            sinks[name] = ParquetSink(path, schema) if kind == "parquet" else JsonlSink(path)
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        raise
    return sinks
