"""Columnar views for the vectorized checks: nested list columns flattened into levels.

A ``Level`` is every element of a nested list column at one depth, across all records of a block
(e.g. all messages, or all content blocks of all messages), with the record each belongs to, its
index in its list and its parent element. Checks compute boolean masks over a level with
pyarrow/numpy in one pass; Python touches only the failing elements, to build their messages and
field paths (``messages[2].content[0].image.format``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tunekit_data.check.rules import Problem


@dataclass(frozen=True)
class Level:
    """Flattened elements of a list column; see the module docstring."""

    name: str
    values: pa.Array
    row: np.ndarray
    pos: np.ndarray
    parent: np.ndarray
    up: Level | None

    @classmethod
    def of(cls, name: str, lists: pa.Array, row: np.ndarray, up: Level | None = None) -> Level:
        """Flatten ``lists`` (one list per element of the upper level, or per record if ``up`` is None)."""
        if pa.types.is_null(lists.type):  # a list field the block schema leaves out: no elements
            empty = np.zeros(0, np.int64)
            return cls(name, pa.array([], pa.struct([])), empty, empty, empty, up)
        lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False)
        parent = np.repeat(np.arange(len(lengths)), lengths)
        starts = np.cumsum(lengths) - lengths
        pos = np.arange(len(parent)) - starts[parent]
        return cls(name, pc.list_flatten(lists), row[parent], pos, parent, up)

    def __len__(self) -> int:
        return len(self.values)

    def field(self, name: str) -> pa.Array:
        """A struct field of every element (null where the element itself is null).

        A field the block schema leaves out reads as all-null: such blocks hold none of it.
        """
        if self.values.type.get_field_index(name) < 0:
            return pa.nulls(len(self.values))
        return pc.struct_field(self.values, name)

    def child(self, name: str, list_field: str) -> Level:
        """The level of the elements of this level's list field ``list_field``."""
        return Level.of(name, self.field(list_field), self.row, self)

    def path(self, i: int, suffix: str = "") -> str:
        """Field path of element ``i`` (plus an optional ``.suffix``)."""
        own = f"{self.name}[{self.pos[i]}]"
        base = own if self.up is None else f"{self.up.path(int(self.parent[i]))}.{own}"
        return f"{base}.{suffix}" if suffix else base

    def per_parent(self, mask: np.ndarray, size: int) -> np.ndarray:
        """Count of elements where ``mask`` holds, per element of the upper level (of length ``size``)."""
        return np.bincount(self.parent[mask], minlength=size)


def mask(arr: pa.Array) -> np.ndarray:
    """A boolean pyarrow array as numpy, with nulls as False."""
    if arr.null_count:
        arr = pc.fill_null(arr, fill_value=False)
    return arr.to_numpy(zero_copy_only=False)


def present(arr: pa.Array) -> np.ndarray:
    """True where the value is not null."""
    nulls = arr.null_count
    if nulls == 0 or nulls == len(arr):
        return np.full(len(arr), nulls == 0)
    return pc.is_valid(arr).to_numpy(zero_copy_only=False)


def strings(arr: pa.Array, idx: np.ndarray | int) -> object:
    """Python value(s) of a string array at the given index (used only for failing elements)."""
    return arr[int(idx)].as_py()


def indices(values: np.ndarray) -> pa.Array:
    """Integer ``values`` as an int64 Arrow array (for ``take``), zero-copy where they are int64.

    Not ``pa.array(values)``: it tests for a numpy masked array, which imports ``numpy.ma`` on first
    use, ~20 ms of a small `ds check` (measured), which needs no masked arrays.
    """
    data = np.ascontiguousarray(values, np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def lengths(arr: pa.Array) -> np.ndarray:
    """List lengths with null lists as 0."""
    return pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)


Hit = tuple[int, Problem]


def hits(rows: np.ndarray, where: np.ndarray, make) -> Iterator[Hit]:
    """Yield ``(record, make(i))`` for every element index ``i`` where ``where`` holds."""
    for i in np.flatnonzero(where):
        yield int(rows[i]), make(int(i))
