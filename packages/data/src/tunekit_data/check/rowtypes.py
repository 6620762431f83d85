"""A table input's columns in the block reader's types, without a trip through JSON.

The block checker's fast path types JSON lines with pyarrow's reader into a format's block schema;
a table input (Parquet, Hugging Face, Delta) is already columnar, so its columns are re-typed here
to that schema directly: string-like leaves become ``string``, list-like columns ``list``, struct
fields are matched by name. What the reader would not have typed from the rows' JSON lines is not
guessed at: per row, ``typed`` says which rows hold such a value (a field beyond the block schema,
a value of another JSON type, a number in an unknown column, a field the lean schema leaves out),
and those rows take the per-line path as JSON lines, as they would in a JSONL file.

Null and absent are one (``tables.drop_nulls``): a null value is typed as null, never judged.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tunekit_data.check.columns import lengths, present
from tunekit_data.check.schema import FormatSchema, needs_per_line, unknown_columns

_STRINGS = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
_LISTS = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list, pa.types.is_list_view, pa.types.is_large_list_view)


def typed(fmt: FormatSchema, table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """``table`` in ``fmt``'s block schema, and per row whether it must take the per-line path (its values in the typed table are then meaningless)."""
    per_line = np.zeros(table.num_rows, bool)
    columns = []
    for f in fmt.block_schema:
        if f.name in table.column_names:
            column, odd = _as(f.type, table.column(f.name).combine_chunks())
            per_line |= odd
        else:
            column = pa.nulls(table.num_rows, f.type)
        columns.append(column)
    for name in unknown_columns(fmt, table.schema):
        # as ``schema.nested_unknowns`` decides for the reader's inferred columns
        if name in fmt.schema.names or needs_per_line(table.schema.field(name).type):
            per_line |= present(table.column(name).combine_chunks())
    return pa.Table.from_arrays(columns, schema=fmt.block_schema), per_line


def _as(want: pa.DataType, arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """``arr`` as type ``want`` (a block schema type: string, struct or list), and per value whether it holds something only the per-line path judges."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    got = arr.type
    if pa.types.is_null(got):
        return pa.nulls(len(arr), want), np.zeros(len(arr), bool)
    if pa.types.is_string(want) and any(test(got) for test in _STRINGS):
        return arr.cast(want), np.zeros(len(arr), bool)
    if pa.types.is_struct(want) and pa.types.is_struct(got):
        return _struct(want, arr)
    if pa.types.is_list(want) and any(test(got) for test in _LISTS):
        return _list(want, arr)
    return pa.nulls(len(arr), want), present(arr)  # another JSON type than the schema's


def _struct(want: pa.StructType, arr: pa.StructArray) -> tuple[pa.Array, np.ndarray]:
    odd = np.zeros(len(arr), bool)
    children = dict(zip((f.name for f in arr.type), arr.flatten(), strict=True))  # parents' nulls applied
    out = []
    for f in want:
        if f.name in children:
            child, child_odd = _as(f.type, children.pop(f.name))
            odd |= child_odd
        else:
            child = pa.nulls(len(arr), f.type)
        out.append(child)
    for extra in children.values():  # a field beyond the block schema, where it holds a value
        odd |= present(extra)
    mask = pc.is_null(arr) if arr.null_count else None
    return pa.StructArray.from_arrays(out, fields=list(want), mask=mask), odd


def _list(want: pa.ListType, arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    n = lengths(arr)
    values, values_odd = _as(want.value_type, pc.list_flatten(arr))
    offsets = pa.array(np.concatenate(([0], np.cumsum(n))), pa.int32())
    mask = pc.is_null(arr) if arr.null_count else None
    odd = np.bincount(np.repeat(np.arange(len(arr)), n)[values_odd], minlength=len(arr)) > 0
    return pa.ListArray.from_arrays(offsets, values, type=want, mask=mask), odd
