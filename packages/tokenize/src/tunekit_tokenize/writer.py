"""Assemble packed bins into Parquet shards, and check where the output directory may go.

Rows are built a shard at a time with vectorised numpy (labels, position ids, list offsets), so memory
is bounded by one shard (``SHARD_TOKENS`` tokens, ~20 bytes each while building) whatever the dataset
size. Token columns are not dictionary-encoded (ids are high-cardinality); zstd compresses them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tunekit_data.errors import UsageError
from tunekit_tokenize.encoder import IGNORE_INDEX, Kind, sequences_per_item
from tunekit_tokenize.manifest import DATA_DIR, is_packed_dir
from tunekit_tokenize.packer import Bins
from tunekit_tokenize.spool import SequenceStore
from tunekit_tokenize.vision import MediaRef

if TYPE_CHECKING:
    from tunekit_data.media import MediaCache

SHARD_TOKENS = 1 << 24  # ~16.8 M tokens (~200 MB of int32 columns before compression) per shard
ROW_GROUP_TOKENS = 1 << 20  # readers stream a row group at a time


def write_shards(
    root: Path,
    spool: SequenceStore,
    bins: Bins,
    *,
    kind: Kind,
    max_length: int,
    on_rows: Callable[[int], None] | None = None,
    images: MediaColumns | None = None,
) -> list[str]:
    """Write ``bins`` (items = sequences, or chosen+rejected pairs for dpo) under ``root/data``.

    Returns the shard paths relative to ``root``; ``on_rows(n)`` is called after each shard. With
    ``images`` (a vision pack), each row also carries its images' bytes and grids.
    """
    per_item = sequences_per_item(kind)
    bin_ranges = shard_ranges(bins.totals(spool.item_lengths(per_item)))
    (root / DATA_DIR).mkdir(parents=True, exist_ok=True)
    names = []
    for index, (first, last) in enumerate(bin_ranges):
        name = shard_name(index, len(bin_ranges))
        table = shard_table(spool, bins, first, last, per_item=per_item, dpo=kind == "dpo", images=images)
        write_shard(root / name, table, max_length)
        names.append(name)
        if on_rows:
            on_rows(last - first)
    return names


def shard_name(index: int, count: int) -> str:
    """The path of shard ``index`` of ``count``, relative to the output directory."""
    return f"{DATA_DIR}/train-{index:05d}-of-{count:05d}.parquet"


def write_shard(path: Path, table: pa.Table, max_length: int) -> None:
    """Write one shard's rows (zstd, row groups of about ``ROW_GROUP_TOKENS`` tokens)."""
    rows_per_group = max(1, ROW_GROUP_TOKENS // max_length)
    pq.write_table(table, path, compression="zstd", use_dictionary=False, row_group_size=rows_per_group)


def shard_ranges(bin_tokens: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive ``[first, last)`` bin ranges of about SHARD_TOKENS tokens; at least one, maybe empty."""
    cuts, tokens = [0], 0
    for end, row in enumerate(bin_tokens.tolist(), 1):
        tokens += row
        if tokens >= SHARD_TOKENS:
            cuts.append(end)
            tokens = 0
    if cuts[-1] != len(bin_tokens) or len(cuts) == 1:
        cuts.append(len(bin_tokens))
    return list(itertools.pairwise(cuts))


@dataclass(frozen=True)
class MediaColumns:
    """Where a vision pack's media columns come from.

    Each sequence's images and videos, and the cache holding their bytes (an image's file, a video's
    sampled frames as ``.npy``).
    """

    images: list[tuple[MediaRef, ...]]
    cache: MediaCache

    def columns(self, sequences: np.ndarray, seg_offsets: np.ndarray) -> dict[str, pa.Array]:
        """The media columns of the rows of ``sequences``.

        Per row ``image_bytes`` and ``image_grid_thw`` (t, h, w per image), per segment
        ``seq_images``; the same for videos (``video_bytes``, ``video_grid_thw``, ``seq_videos``).
        """
        per_sequence = [self.images[s] for s in sequences.tolist()]
        columns: dict[str, pa.Array] = {}
        for kind in ("image", "video"):
            refs = [tuple(ref for ref in seq if ref.kind == kind) for seq in per_sequence]
            columns.update(self._kind(kind, refs, seg_offsets))
        return columns

    def _kind(self, kind: str, per_sequence: list[tuple[MediaRef, ...]], seg_offsets: np.ndarray) -> dict[str, pa.Array]:
        counts = np.array([len(refs) for refs in per_sequence], dtype=np.int32)
        flat = [ref for refs in per_sequence for ref in refs]
        offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])[seg_offsets]
        blobs = [self.cache.get(ref.key) for ref in flat]
        # int64 offsets: a shard's images (videos) may pass 2 GiB
        blob_offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs], dtype=np.int64)])
        data = pa.Array.from_buffers(pa.large_binary(), len(blobs), [None, pa.py_buffer(blob_offsets), pa.py_buffer(b"".join(blobs))])
        grids = np.array([ref.grid for ref in flat], dtype=np.int32).reshape(-1)
        return {
            f"{kind}_bytes": pa.ListArray.from_arrays(_arrow(offsets.astype(np.int32)), data),
            f"{kind}_grid_thw": pa.ListArray.from_arrays(_arrow((offsets * 3).astype(np.int32)), _arrow(grids)),
            f"seq_{kind}s": pa.ListArray.from_arrays(_arrow(seg_offsets.astype(np.int32)), _arrow(counts)),
        }


def shard_table(
    spool: SequenceStore, bins: Bins, first: int, last: int, *, per_item: int, dpo: bool, images: MediaColumns | None = None
) -> pa.Table:
    """Rows ``first`` to ``last - 1`` of ``bins`` as one shard's table (token, DPO and media columns)."""
    items = bins.items[bins.offsets[first] : bins.offsets[last]]
    sequences = (items[:, None] * per_item + np.arange(per_item)).ravel()
    lengths = spool.lengths[sequences]
    ids, trained = spool.gather(sequences)
    seg_starts = np.zeros(len(sequences), dtype=np.int64)
    np.cumsum(lengths[:-1], out=seg_starts[1:])
    position_ids = (np.arange(len(ids), dtype=np.int64) - np.repeat(seg_starts, lengths)).astype(np.int32)
    labels = np.where(trained, ids, IGNORE_INDEX).astype(np.int32)
    labels[seg_starts] = IGNORE_INDEX  # nothing predicts a segment's first token
    # Row r holds segments seg_offsets[r]:seg_offsets[r+1], i.e. tokens at those segments' starts.
    seg_offsets = (bins.offsets[first : last + 1] - bins.offsets[first]) * per_item
    token_offsets = np.append(seg_starts, len(ids))[seg_offsets]

    def rows(values: np.ndarray, offsets: np.ndarray) -> pa.ListArray:
        return pa.ListArray.from_arrays(_arrow(offsets.astype(np.int32)), _arrow(values))

    columns = {
        "input_ids": rows(ids, token_offsets),
        "labels": rows(labels, token_offsets),
        "position_ids": rows(position_ids, token_offsets),
        "seq_lens": rows(lengths.astype(np.int32), seg_offsets),
    }
    if dpo:
        columns["pair_ids"] = rows(spool.records[sequences], seg_offsets)
        columns["prompt_lens"] = rows(spool.prompt_lens[sequences], seg_offsets)
        columns["is_chosen"] = rows(spool.is_chosen[sequences], seg_offsets)
    if images is not None:
        columns.update(images.columns(sequences, seg_offsets))
    return pa.table(columns)


def _arrow(values: np.ndarray) -> pa.Array:
    """A numpy array as an Arrow array without copying (``pa.array`` would import pandas, ~1 s)."""
    if values.dtype == np.bool_:  # Arrow packs booleans into bits
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(np.packbits(values, bitorder="little"))])
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def check_output_dir(out_dir: Path) -> None:
    """Check that ``ds pack`` may publish to ``out_dir``: it is missing, empty or a previous ``ds pack`` output.

    Raises:
        UsageError: ``out_dir`` exists, is not empty and is not a previous `ds pack` output.
    """
    if out_dir.exists() and not (out_dir.is_dir() and (is_packed_dir(out_dir) or not any(out_dir.iterdir()))):
        msg = f"{out_dir}: exists and is not a packed dataset; choose another -o directory or remove it"
        raise UsageError(msg)


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON (stable key order, so equal runs give equal bytes)."""
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, allow_nan=False) + "\n", encoding="utf-8")

