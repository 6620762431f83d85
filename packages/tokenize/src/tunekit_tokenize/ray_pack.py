"""``ds pack --engine ray``: tokenization and row writing as Ray tasks, global packing on the driver.

Stages, as in the local pipeline (``pipeline``), with its ``PackEngine`` hooks:

1. encode: a task per share of the input (a byte range of a JSONL file, or whole Parquet / Arrow /
   ``.txt`` files: ``tunekit_data.distributed.convert.shares``) decodes its records, encodes them
   with the very ``EncodeJob`` of the local engine and returns the per-sequence metadata (lengths,
   record ids, DPO prompt lengths, chosen flags: ~21 bytes a sequence) to the driver. The tokens
   stay in the cluster's object store (Ray spills them to disk beyond its memory).
2. pack: best-fit decreasing over the gathered lengths, on the driver, over the whole dataset:
   the same lengths in the same order as the local engine, so the same bins.
3. write: a task per shard gathers its sequences' tokens from the object store and writes the
   shard with the local writer's code (``writer.shard_table``); the driver writes ``stats.json`` and
   ``manifest.json`` last and publishes the directory as the local engine does.

The output directory must be on storage every node can write (a shared mount); an ``s3://`` output
is built in the driver's temporary folder (``$TMPDIR``) before the upload, so on several machines
point ``TMPDIR`` at a shared folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunekit_data.convert import (
    DEFAULT_BLOCK_SIZE,
    Detection,
    ExampleReader,
    InputPlan,
    OpenInput,
    open_input,
)
from tunekit_data.distributed import (
    DEFAULT_RANGE_SIZE,
    Share,
    cluster_cpus,
    connect,
    lines_through,
    ordered_tasks,
    share_units,
    shares,
)
from tunekit_data.errors import UsageError
from tunekit_data.formats import FORMAT_ALIASES
from tunekit_data.io import Block
from tunekit_tokenize.encoder import Kind, sequences_per_item
from tunekit_tokenize.manifest import DATA_DIR
from tunekit_tokenize.packer import Bins
from tunekit_tokenize.pipeline import PackInput, PackResult, Progress, absorb_batch, batches, pack
from tunekit_tokenize.spool import SpoolBatch
from tunekit_tokenize.stats import REJECT_SAMPLES, Tally
from tunekit_tokenize.workers import EncodeJob
from tunekit_tokenize.writer import shard_name, shard_ranges, shard_table, write_shard

_META = ("lengths", "records", "prompt_lens", "is_chosen")


@dataclass(slots=True)
class EncodedShare:
    """What an encode task returns to the driver.

    Its counts, its sequences' metadata (``records`` counted from the share's first record) and the
    lines its byte range holds.
    """

    tally: Tally
    meta: dict[str, np.ndarray]
    lines: int


def encode_share(share: Share, plan: InputPlan, detection: Detection, job: EncodeJob, block_size: int) -> tuple[EncodedShare, tuple[np.ndarray, np.ndarray]]:
    """Decode and encode one share (the task body).

    Returns the metadata and, for the object store, the tokens and trained flags of its sequences.
    """
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one tokenizer thread per task: Ray runs a task per CPU
    files, r = share
    last: list[Block] = []
    reader = ExampleReader(OpenInput(files, detection, plan, share_units(files, r, block_size, last)))
    tally = Tally()
    parts: list[SpoolBatch] = []
    for batch in batches(reader, tally):
        result = job.run(batch.indices, batch.examples)
        absorb_batch(tally, batch, result)
        parts.append(result.spool)
    meta = {name: np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0, np.int64) for name in _META}
    tokens = (
        np.concatenate([p.ids for p in parts]) if parts else np.zeros(0, np.int32),
        np.concatenate([p.trained for p in parts]) if parts else np.zeros(0, np.bool_),
    )
    return EncodedShare(tally, meta, lines_through(last[0]) if last else 0), tokens


@dataclass(slots=True)
class ClusterStore:
    """The sequences of a Ray pack: metadata on the driver, tokens in the object store.

    One object per encode task; task ``k`` holds sequences ``firsts[k]`` to ``firsts[k + 1] - 1``.
    """

    lengths: np.ndarray
    records: np.ndarray
    prompt_lens: np.ndarray
    is_chosen: np.ndarray
    firsts: np.ndarray
    tokens: list[Any]  # object references

    def item_lengths(self, per_item: int) -> np.ndarray:
        """Lengths of packing items made of ``per_item`` consecutive sequences."""
        return self.lengths.reshape(-1, per_item).sum(axis=1)

    def gather(self, sequences: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and trained flags of ``sequences``, fetching only the objects that hold them."""
        import ray

        owner = np.searchsorted(self.firsts, sequences, side="right") - 1
        needed = np.unique(owner)
        fetched = dict(zip(needed.tolist(), ray.get([self.tokens[k] for k in needed]), strict=True))
        starts = np.concatenate(([0], np.cumsum(self.lengths)))
        base = starts[self.firsts[owner]]
        ids, trained = [], []
        for o, a, n in zip(owner.tolist(), (starts[sequences] - base).tolist(), self.lengths[sequences].tolist(), strict=True):
            ids.append(fetched[o][0][a : a + n])
            trained.append(fetched[o][1][a : a + n])
        if not ids:
            return np.zeros(0, np.int32), np.zeros(0, np.bool_)
        return np.concatenate(ids), np.concatenate(trained).view(np.bool_)


# Positional: `ordered_tasks` calls a Ray task with each item of its list as the argument tuple.
def write_shard_task(store: ClusterStore, bins: Bins, path: str, first: int, last: int, per_item: int, dpo: bool, max_length: int) -> int:  # noqa: FBT001
    """Write bins ``[first, last)`` as the shard at ``path`` (the task body); returns its rows."""
    write_shard(Path(path), shard_table(store, bins, first, last, per_item=per_item, dpo=dpo), max_length)
    return last - first


@dataclass
class RayEngine:
    """A ``pipeline.PackEngine`` whose stages run as Ray tasks (see the module docstring)."""

    ray: Any
    shares: list[Share]
    plan: InputPlan
    detection: Detection
    block_size: int

    def encode(self, examples: Iterable[PackInput], job: EncodeJob, staging: Path, notify: Progress, tally: Tally) -> ClusterStore:
        """Encode every share as a task; ``examples`` is unused (the tasks read the input).

        The tasks' reject samples are merged into ``tally``; its rejects file is not written
        (``--rejects-out`` is local).
        """
        meta: dict[str, list[np.ndarray]] = {name: [] for name in _META}
        tokens, firsts = [], [0]
        lines = 0
        items = ((share, self.plan, self.detection, job, self.block_size) for share in self.shares)
        done = ordered_tasks(self.ray, encode_share, items, in_flight=2 * cluster_cpus(self.ray), keep=True)
        for (_, r), (encoded, ref) in zip(self.shares, done, strict=True):
            if r is None or r.start == 0:
                lines = 0  # a new file
            _merge(tally, encoded.tally, lines)
            encoded.meta["records"] = encoded.meta["records"] + (tally.records - encoded.tally.records)
            for name in _META:
                meta[name].append(encoded.meta[name])
            tokens.append(ref)
            firsts.append(firsts[-1] + len(encoded.meta["lengths"]))
            lines += encoded.lines
            notify("tokenize", tally.records, None)
        arrays = {name: np.concatenate(parts).astype(dtype) for (name, parts), dtype in zip(meta.items(), (np.int64, np.int64, np.int32, np.bool_), strict=True)}
        return ClusterStore(**arrays, firsts=np.asarray(firsts, np.int64), tokens=tokens)

    def write(self, staging: Path, spool: ClusterStore, bins: Bins, *, kind: Kind, max_length: int, on_rows) -> list[str]:  # type: ignore[override]
        """Write every shard as a task."""
        per_item = sequences_per_item(kind)
        ranges = shard_ranges(bins.totals(spool.item_lengths(per_item)))
        (staging / DATA_DIR).mkdir(parents=True, exist_ok=True)
        names = [shard_name(i, len(ranges)) for i in range(len(ranges))]
        store, packed = self.ray.put(spool), self.ray.put(bins)
        items = (
            (store, packed, str(staging / name), first, last, per_item, kind == "dpo", max_length)
            for name, (first, last) in zip(names, ranges, strict=True)
        )
        for rows in ordered_tasks(self.ray, write_shard_task, items, in_flight=2 * cluster_cpus(self.ray)):
            on_rows(rows)
        return names


def _merge(total: Tally, part: Tally, lines: int) -> None:
    """Add a task's counts to ``total``, its reject samples renumbered by the lines before its range."""
    total.kind = total.kind or part.kind
    total.records += part.records
    total.used += part.used
    total.trained_tokens += part.trained_tokens
    total.fit.add(part.fit)
    total.rejected.update(part.rejected)
    room = REJECT_SAMPLES - len(total.reject_samples)
    total.reject_samples.extend({**s, "line": int(s["line"]) + lines} for s in part.reject_samples[: max(room, 0)])  # type: ignore[call-overload]


def pack_files_ray(paths: Sequence[str], *, fmt: str = "auto", address: str | None = None, range_size: int = DEFAULT_RANGE_SIZE, **options: Any) -> PackResult:
    """``pack_files`` on a Ray cluster: the same rows, masks and efficiency.

    No content-hash reuse: hashing the inputs on the driver would read them all once more.
    """
    ray = connect(address)
    opened = open_input(list(paths), fmt=FORMAT_ALIASES.get(fmt, fmt))
    options.pop("workers", None)  # the cluster's CPUs are the workers
    if options.get("rejects_out") is not None:
        msg = "--rejects-out is written by local packs only (--engine local)"
        raise UsageError(msg)
    engine = RayEngine(ray, shares(opened.files, range_size), opened.plan, opened.detection, DEFAULT_BLOCK_SIZE)
    return pack((), engine=engine, reader_options={"format": opened.detection.fmt}, **options)
