"""A disk spool of encoded sequences, so packing a dataset larger than RAM keeps memory bounded.

Token ids (int32) and trained flags (uint8) are appended to two flat files as batches arrive; only
per-sequence metadata stays in memory (about 25 bytes a sequence, against 5 bytes a *token* on
disk). Bins are later assembled by reading the files through ``numpy.memmap``, so the operating
system pages token data in and out as needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from tunekit_tokenize.encoder import TokenSequence
from tunekit_tokenize.vision import MediaRef


@dataclass(slots=True)
class SpoolBatch:
    """Sequences of one batch: flat ``ids``/``trained`` and per-sequence ``lengths`` and metadata.

    ``records`` is the input record index of each sequence (the DPO pair id), ``prompt_lens`` the
    DPO prompt length (0 otherwise), ``is_chosen`` True for chosen answers (and every non-DPO sequence),
    ``images`` each sequence's images (empty tuples in a text pack).
    """

    ids: np.ndarray
    trained: np.ndarray
    lengths: np.ndarray
    records: np.ndarray
    prompt_lens: np.ndarray
    is_chosen: np.ndarray
    images: list[tuple[MediaRef, ...]]

    @classmethod
    def from_sequences(cls, sequences: list[TokenSequence], records: list[int], is_chosen: list[bool]) -> SpoolBatch:
        """Flatten ``sequences`` with each one's record index and chosen flag."""
        return cls(
            ids=np.concatenate([s.input_ids for s in sequences]) if sequences else np.zeros(0, np.int32),
            trained=np.concatenate([s.trained for s in sequences]) if sequences else np.zeros(0, np.bool_),
            lengths=np.array([len(s) for s in sequences], dtype=np.int64),
            records=np.array(records, dtype=np.int64),
            prompt_lens=np.array([s.prompt_len for s in sequences], dtype=np.int32),
            is_chosen=np.array(is_chosen, dtype=np.bool_),
            images=[s.images for s in sequences],
        )


class SequenceStore(Protocol):
    """Encoded sequences as packing and writing read them.

    Per-sequence metadata in memory, tokens by ``gather`` (a `Spool` on this machine's disk, or
    batches held by a Ray cluster).
    """

    lengths: np.ndarray
    records: np.ndarray
    prompt_lens: np.ndarray
    is_chosen: np.ndarray

    def item_lengths(self, per_item: int) -> np.ndarray:
        """Lengths of packing items made of ``per_item`` consecutive sequences."""

    def gather(self, sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and trained flags of ``sequences``, concatenated in that order."""


_META = {"lengths": np.int64, "records": np.int64, "prompt_lens": np.int32, "is_chosen": np.bool_}


class Spool:
    """Append-only store of sequences in directory ``root``; `close` it, then read with `gather`.

    After `close`, ``lengths``, ``records``, ``prompt_lens`` and ``is_chosen`` hold every sequence's
    metadata in append order, and ``images`` each sequence's image references (about 100 bytes an
    image in memory; the bytes stay in the media cache until a shard is written).
    """

    lengths: np.ndarray
    records: np.ndarray
    prompt_lens: np.ndarray
    is_chosen: np.ndarray
    images: list[tuple[MediaRef, ...]]

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self._ids_path, self._trained_path = root / "ids.int32", root / "trained.uint8"
        self._ids_file = self._ids_path.open("wb")
        self._trained_file = self._trained_path.open("wb")
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name in _META}
        self.images = []
        self._starts = np.zeros(1, dtype=np.int64)
        self._ids: np.ndarray | None = None
        self._trained: np.ndarray | None = None

    def append(self, batch: SpoolBatch) -> None:
        """Write a batch's tokens to disk and keep its metadata."""
        self._ids_file.write(batch.ids.astype(np.int32, copy=False).tobytes())
        self._trained_file.write(batch.trained.astype(np.uint8, copy=False).tobytes())
        for name, parts in self._parts.items():
            parts.append(getattr(batch, name))
        self.images.extend(batch.images)

    def close(self) -> None:
        """Finish writing; fills the metadata arrays and maps the token files for `gather`."""
        self._ids_file.close()
        self._trained_file.close()
        for name, dtype in _META.items():
            parts = self._parts[name]
            setattr(self, name, np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype))
        self._parts.clear()
        self._starts = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self._starts[1:])
        if self._starts[-1]:  # numpy cannot map an empty file
            self._ids = np.memmap(self._ids_path, dtype=np.int32, mode="r")
            self._trained = np.memmap(self._trained_path, dtype=np.uint8, mode="r")

    def item_lengths(self, per_item: int) -> np.ndarray:
        """Lengths of packing items made of ``per_item`` consecutive sequences."""
        return self.lengths.reshape(-1, per_item).sum(axis=1)

    def gather(self, sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and trained flags of ``sequences``, concatenated in that order."""
        if self._ids is None or self._trained is None or not len(sequences):
            return np.zeros(0, np.int32), np.zeros(0, np.bool_)
        bounds = list(zip(self._starts[sequences].tolist(), self._starts[sequences + 1].tolist(), strict=True))
        ids = np.concatenate([self._ids[a:b] for a, b in bounds])
        trained = np.concatenate([self._trained[a:b] for a, b in bounds])
        return ids, trained.view(np.bool_)
