"""Packed rows (the `ds pack` output) and the batches the training loop consumes.

A packed dataset is a directory with ``manifest.json``, ``stats.json`` and ``data/*.parquet``; each row is
one bin of at most ``max_length`` tokens with the list columns ``input_ids``, ``labels`` (-100 where not
trained and on each segment's first token), ``position_ids`` (restarting at 0 per segment) and
``seq_lens``. Rows are read into flat numpy columns (values + offsets), so taking a row is a slice.

Every process holds the small per-segment columns (``seq_lens``, DPO's ``pair_ids`` ...) of every row, which
give the row lengths. The per-token columns are the bulk; a rank of a multi-process job (``WORLD_SIZE`` > 1)
does not read them at load time but, at each epoch, only for the rows it trains on then (`PackedRows.select`:
the Parquet row groups holding them, of which it keeps just those rows), so no rank holds the whole dataset.

Batch sizes count rows. An epoch visits every row once in an order drawn from (seed, epoch), so the data
position of a run is just (epoch, rows consumed in the epoch) and resuming is O(1). The last step of an
epoch takes the rows that are left (fewer than ``global_batch_size``); since the loss is normalised over
trained tokens, a short step is weighted by its tokens like any other.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tunekit_data.errors import InputError
from tunekit_tokenize import IGNORE_INDEX as IGNORE
from tunekit_tokenize import IMAGE_COLUMNS, REQUIRED_COLUMNS, TOKEN_COLUMNS, VIDEO_COLUMNS, read_manifest
from tunekit_train.attention import Backend, attention_kwargs

LAZY_COLUMNS = TOKEN_COLUMNS + IMAGE_COLUMNS + VIDEO_COLUMNS
"""Per-token columns and a vision pack's images and videos: nearly all of a pack's bytes, read lazily by the ranks of a
multi-process job."""


@dataclass(frozen=True)
class Column:
    """A list column as flat values and row offsets (row i is ``values[offsets[i]:offsets[i + 1]]``)."""

    values: np.ndarray
    offsets: np.ndarray

    def row(self, i: int) -> np.ndarray:
        """The values of row ``i``."""
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def row_lengths(self) -> np.ndarray:
        """Number of values in each row."""
        return np.diff(self.offsets)

    def take(self, rows: np.ndarray) -> Column:
        """The column of ``rows`` only, in that order."""
        lengths = self.row_lengths()[rows]
        values = np.concatenate([self.row(int(i)) for i in rows]) if len(rows) else self.values[:0]
        return Column(values, np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]))


class PackedRows:
    """The rows of a packed dataset as flat numpy columns: every row, or the subset `select` read.

    ``lengths``, ``len()`` and ``n_tokens`` always describe every row of the dataset (from the per-segment
    columns), whatever is held. A lazily opened pack reads its per-token columns on first use of `columns`
    or `row`; `select` reads them for some rows only.
    """

    def __init__(
        self,
        columns: dict[str, Column],
        manifest: dict[str, Any],
        source: str,
        *,
        shards: tuple[Path, ...] = (),
        pending: tuple[str, ...] = (),
        ids: np.ndarray | None = None,
    ) -> None:
        self._columns, self.manifest, self.source = columns, manifest, source
        self.shards = shards
        self._pending = pending
        """Per-token columns not read yet (a lazily opened pack)."""
        self.ids = ids
        """Global index of each held row, ascending (a `select` subset); None: rows 0 .. n-1."""
        self.lengths = _segment_sums(columns["seq_lens"])

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def n_tokens(self) -> int:
        """Tokens in all rows (no padding exists in packed rows)."""
        return int(self.lengths.sum())

    @property
    def max_row_length(self) -> int:
        """Length of the longest row."""
        return int(self.lengths.max(initial=0))

    @property
    def complete(self) -> bool:
        """Whether every column of every row is in memory."""
        return not self._pending and self.ids is None

    @property
    def columns(self) -> dict[str, Column]:
        """Every column of the held rows; a lazily opened pack reads its per-token columns (all rows) now."""
        if self._pending:
            self._columns.update(_read(self.shards, self._pending))
            self._pending = ()
            _check_rows(self._columns, self.source)
        return self._columns

    def has_column(self, name: str) -> bool:
        """Whether the pack has the column ``name`` (without reading anything)."""
        return name in self._columns or name in self._pending

    def column(self, name: str) -> Column:
        """One column; a per-segment one never makes a lazily opened pack read its per-token columns."""
        return self._columns[name] if name in self._columns else self.columns[name]

    def row(self, i: int) -> dict[str, np.ndarray]:
        """Every column of row ``i`` (a global index, also in a `select` subset)."""
        local = i if self.ids is None else int(np.searchsorted(self.ids, i))
        if self.ids is not None and (local >= len(self.ids) or self.ids[local] != i):
            msg = f"{self.source}: row {i} was not read by this process"
            raise IndexError(msg)
        return {name: column.row(local) for name, column in self.columns.items()}

    def select(self, ids: np.ndarray) -> PackedRows:
        """The rows ``ids`` (global indices) alone; read from the Parquet shards unless all are held.

        Only the row groups that hold some of ``ids`` are read, and only those rows kept.
        """
        ids = np.unique(ids)
        if self.complete:  # already in memory (one process, or precomputed DPO reference log-probs)
            columns = {name: column.take(ids) for name, column in self._columns.items()}
        else:
            columns = _read(self.shards, None, ids)
            _check_rows(columns, self.source, ids)
        return PackedRows(columns, self.manifest, self.source, ids=ids)


def load_packed(path: str | Path, *, lazy: bool | None = None) -> PackedRows:
    """Read a `ds pack` output directory and check the packing contract.

    Args:
        path: the packed directory.
        lazy: leave the per-token columns unread until used (see `PackedRows`); None: lazily in a rank of
            a multi-process job (``WORLD_SIZE`` > 1), which then reads only its rows' share with `select`.

    Raises:
        InputError: the directory is not a packed dataset, or its rows break the contract (a lazily opened
            pack checks the per-token columns of the rows it reads, when it reads them).
    """
    dataset = read_manifest(path)
    shards = tuple(Path(f) for f in dataset.shards)
    schema = pq.read_schema(shards[0]) if shards else pa.schema([])
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        msg = f"{dataset.path}: packed rows lack the column(s) {', '.join(missing)}"
        raise InputError(msg)
    if lazy is None:
        lazy = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not lazy:
        columns = _read(shards, None)
        _check_rows(columns, str(dataset.path))
        return PackedRows(columns, dataset.manifest, str(dataset.path), shards=shards)
    segment_columns = [name for name in _list_columns(schema) if name not in LAZY_COLUMNS]
    pending = tuple(name for name in LAZY_COLUMNS if name in schema.names)
    return PackedRows(_read(shards, segment_columns), dataset.manifest, str(dataset.path), shards=shards, pending=pending)


def _list_columns(schema: pa.Schema) -> list[str]:
    return [field.name for field in schema if pa.types.is_list(field.type) or pa.types.is_large_list(field.type)]


def _read(shards: tuple[Path, ...], names: list[str] | tuple[str, ...] | None, rows: np.ndarray | None = None) -> dict[str, Column]:
    """The list columns ``names`` (None: all) of the shards, of every row or of ``rows`` (ascending global indices)."""
    tables = []
    start = 0
    for shard in shards:
        file = pq.ParquetFile(shard)
        for group in range(file.num_row_groups):
            n = file.metadata.row_group(group).num_rows
            lo, hi = (0, n) if rows is None else (rows.searchsorted(start), rows.searchsorted(start + n))
            if hi > lo:
                table = file.read_row_group(group, columns=list(names) if names is not None else None)
                tables.append(table if rows is None else table.take(pa.array(rows[lo:hi] - start)))
            start += n
    if not tables:  # no rows at all: empty columns of the right types
        schema = pq.read_schema(shards[0])
        tables.append(schema.empty_table().select(list(names) if names is not None else schema.names))
    table = pa.concat_tables(tables)
    return {name: _flat(table.column(name)) for name in _list_columns(table.schema)}


def _flat(column: pa.ChunkedArray) -> Column:
    array = column.combine_chunks()
    offsets = array.offsets.to_numpy().astype(np.int64)
    return Column(array.values.to_numpy(zero_copy_only=False), offsets)


def _segment_sums(seq_lens: Column) -> np.ndarray:
    # Tokens of each row: the sum of its segments' lengths.
    cumulative = np.concatenate([[0], np.cumsum(seq_lens.values, dtype=np.int64)])
    return cumulative[seq_lens.offsets[1:]] - cumulative[seq_lens.offsets[:-1]]


def _check_rows(columns: dict[str, Column], source: str, ids: np.ndarray | None = None) -> None:
    lengths = columns["input_ids"].row_lengths()
    for name in ("labels", "position_ids"):
        if not np.array_equal(columns[name].row_lengths(), lengths):
            msg = f"{source}: {name} and input_ids differ in length in some rows"
            raise InputError(msg)
    per_row = _segment_sums(columns["seq_lens"])
    bad = np.flatnonzero(per_row != lengths)
    if bad.size:
        row = int(bad[0]) if ids is None else int(ids[bad[0]])
        msg = f"{source}: row {row}: seq_lens sum to {int(per_row[bad[0]])}, but the row has {int(lengths[bad[0]])} tokens"
        raise InputError(msg)


@dataclass
class Batch:
    """One micro-batch: ``[rows, L]`` tensors, padded at the end of shorter rows (or one flattened row).

    ``segment_ids`` number the segments of each row (padding is a segment of its own); ``n_targets`` is the
    number of trained tokens (labels other than -100 after the one-token shift), the unit the loss is
    normalised by.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor
    n_tokens: int
    n_targets: int

    def to(self, device: torch.device) -> Batch:
        """The same batch on ``device``."""
        return Batch(
            self.input_ids.to(device),
            self.labels.to(device),
            self.position_ids.to(device),
            self.segment_ids.to(device),
            self.n_tokens,
            self.n_targets,
        )

    def model_inputs(self, backend: Backend, dtype: torch.dtype) -> dict[str, Any]:
        """Keyword arguments for the model's forward, with attention confined to segments."""
        return {
            "input_ids": self.input_ids,
            "position_ids": self.position_ids,
            **attention_kwargs(self.segment_ids, backend, dtype),
        }


def collate(rows: list[dict[str, np.ndarray]], *, flatten: bool, pad_id: int = 0) -> Batch:
    """Build a micro-batch from packed rows: one flattened row (varlen kernels) or rows padded to the longest."""
    if flatten:
        rows = [_concat_rows(rows)]
    length = max(len(r["input_ids"]) for r in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((len(rows), length), dtype=torch.long)
    segment_ids = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        input_ids[i, :n] = torch.from_numpy(row["input_ids"].astype(np.int64))
        labels[i, :n] = torch.from_numpy(row["labels"].astype(np.int64))
        position_ids[i, :n] = torch.from_numpy(row["position_ids"].astype(np.int64))
        segments = np.repeat(np.arange(len(row["seq_lens"])), row["seq_lens"])
        segment_ids[i, :n] = torch.from_numpy(segments)
        segment_ids[i, n:] = len(row["seq_lens"])  # padding: its own segment, never attended by real tokens
        position_ids[i, n:] = torch.arange(length - n)
    n_targets = int((labels[:, 1:] != IGNORE).sum())
    return Batch(input_ids, labels, position_ids, segment_ids, int(sum(len(r["input_ids"]) for r in rows)), n_targets)


def _concat_rows(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([r[name] for r in rows]) for name in REQUIRED_COLUMNS}


def epoch_order(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The order rows are visited in during ``epoch``: a permutation drawn from (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


@dataclass
class Step:
    """The micro-batches of one optimizer step and where the data stands after it."""

    micro_batches: list[Batch]
    epoch: int
    offset_after: int
    """Rows of ``epoch`` consumed once this step is done."""

    @property
    def n_tokens(self) -> int:
        """Tokens the step processes."""
        return sum(b.n_tokens for b in self.micro_batches)


Collate = Callable[..., Any]
"""Builds a micro-batch from packed rows: ``collate(rows, flatten=...)``; `collate` for SFT/CPT, a pair
batch for DPO (anything with ``n_tokens``, ``n_targets`` and ``to(device)``)."""


class _MicroBatches(torch.utils.data.Dataset):
    def __init__(self, rows: PackedRows, index_lists: list[np.ndarray], *, flatten: bool, build: Collate) -> None:
        self.rows, self.index_lists, self.flatten, self.build = rows, index_lists, flatten, build

    def __len__(self) -> int:
        return len(self.index_lists)

    def __getitem__(self, i: int) -> Batch:
        return self.build([self.rows.row(int(j)) for j in self.index_lists[i]], flatten=self.flatten)


class BatchStream:
    """Training steps over packed rows, epoch after epoch, starting from any (epoch, offset)."""

    def __init__(
        self,
        rows: PackedRows,
        *,
        global_batch: int,
        micro_batch: int,
        seed: int,
        flatten: bool,
        workers: int = 0,
        prefetch: int = 2,
        build: Collate = collate,
    ) -> None:
        self.rows, self.global_batch, self.micro_batch, self.seed = rows, global_batch, micro_batch, seed
        self.flatten, self.workers, self.prefetch, self.build = flatten, workers, prefetch, build

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one pass over the rows (the last may be short)."""
        return -(-len(self.rows) // self.global_batch)

    def steps(self, epoch: int = 0, offset: int = 0) -> Iterator[Step]:
        """Yield steps forever, beginning at row ``offset`` of ``epoch``."""
        while True:
            order = epoch_order(len(self.rows), self.seed, epoch)
            starts = range(offset, len(order), self.global_batch)
            per_step = [self._split(order[s : s + self.global_batch]) for s in starts]
            index_lists = [m for micro in per_step for m in micro]
            loader = self._loader(index_lists, self._epoch_rows(index_lists))
            for start, micro in zip(starts, per_step, strict=True):
                batches = [next(loader) for _ in micro]
                yield Step(batches, epoch, min(start + self.global_batch, len(order)))
            epoch, offset = epoch + 1, 0

    def micro_batches(self) -> Iterator[Batch]:
        """Every row once, in stored order, in micro-batches (for validation)."""
        yield from self._loader(self._split(np.arange(len(self.rows))))

    def _split(self, indices: np.ndarray) -> list[np.ndarray]:
        return [indices[i : i + self.micro_batch] for i in range(0, len(indices), self.micro_batch)]

    def _epoch_rows(self, index_lists: list[np.ndarray]) -> PackedRows:
        """The rows the epoch's micro-batches are built from (a subclass may read just those)."""
        return self.rows

    def _loader(self, index_lists: list[np.ndarray], rows: PackedRows | None = None) -> Iterator[Batch]:
        dataset = _MicroBatches(rows if rows is not None else self.rows, index_lists, flatten=self.flatten, build=self.build)
        if self.workers == 0:
            return (dataset[i] for i in range(len(dataset)))
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, num_workers=self.workers, prefetch_factor=self.prefetch
        )
        return iter(loader)
