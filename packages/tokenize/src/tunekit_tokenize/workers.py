"""Encode batches of examples on a pool of processes, results in input order, memory bounded.

Tokenization dominates `ds pack` (86 M tokens take ~35-55 s on 2 cores against ~1 s of packing,
``shared/spec/pack-train-notes.md`` §5.1), and Jinja rendering is Python, so threads would serialise
on the GIL: each worker process renders, tokenizes (one tokenizer thread) and fits whole batches.
At most two batches per worker are in flight. The pool starts only for inputs of two batches or
more; smaller ones encode in the calling process, where ``encode_batch`` still uses every core.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from tunekit_data.examples import Example
from tunekit_data.parallel import ordered_map
from tunekit_tokenize.encoder import Encoder, Reject, TokenSequence
from tunekit_tokenize.spool import SpoolBatch
from tunekit_tokenize.truncation import FitCounts, Truncation, fit

BATCH_SIZE = 512  # records per task: large enough to amortise IPC, small enough to stream


@dataclass(slots=True)
class Batch:
    """Records for one task: their positions in the whole input, examples, file/line locations and values."""

    indices: list[int] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    locations: list[tuple[str, int]] = field(default_factory=list)
    values: list[object] = field(default_factory=list)
    """The source records, for the rejects file (kept by the caller: never sent to a worker)."""


@dataclass(slots=True)
class BatchResult:
    """A task's output: sequences for the spool, rejects (by position in the batch) and counts."""

    spool: SpoolBatch
    rejects: list[tuple[int, Reject]]
    fit: FitCounts
    used: int
    trained_tokens: int


@dataclass(frozen=True)
class EncodeJob:
    """Everything a worker needs (picklable): encode a batch, fit each example, flatten for the spool."""

    encoder: Encoder
    max_length: int
    truncation: Truncation

    def run(self, indices: list[int], examples: list[Example]) -> BatchResult:
        """Encode and fit one batch; ``indices`` are the records' positions in the whole input."""
        counts = FitCounts()
        rejects: list[tuple[int, Reject]] = []
        sequences: list[TokenSequence] = []
        records: list[int] = []
        is_chosen: list[bool] = []
        used = 0
        for position, (index, result) in enumerate(zip(indices, self.encoder.encode_batch(examples), strict=True)):
            if isinstance(result, Reject):
                rejects.append((position, result))
                continue
            fitted = fit(result, self.max_length, self.truncation, counts)
            used += bool(fitted)
            sequences.extend(fitted)
            records.extend([index] * len(fitted))
            is_chosen.extend(result.kind != "dpo" or j == 0 for j in range(len(fitted)))
        trained_tokens = sum(int(s.trained[1:].sum()) for s in sequences)
        batch = SpoolBatch.from_sequences(sequences, records, is_chosen)
        return BatchResult(batch, rejects, counts, used, trained_tokens)


def encode_batches(job: EncodeJob, batches: Iterator[Batch], workers: int) -> Iterator[tuple[Batch, BatchResult]]:
    """Run ``job`` over ``batches`` on ``workers`` processes; yields results in input order."""
    head = list(itertools.islice(batches, 2))
    # spawn, not fork: the parent may already run tokenizer threads, which fork would leave broken.
    # A batch's source values stay here (``send``): only its positions and examples go to a worker.
    if len(head) < 2:
        workers = 1
    return ordered_map(
        _run_in_worker if workers > 1 else job.run,  # one worker: the job runs here, no pool
        itertools.chain(head, batches),
        workers=workers,
        send=lambda batch: (batch.indices, batch.examples),
        start_method="spawn",
        initializer=_start_worker,
        initargs=(job,),
    )


_WORKER_JOB: EncodeJob | None = None


def _start_worker(job: EncodeJob) -> None:
    global _WORKER_JOB  # one job per worker process, set once by the pool initializer
    # One tokenizer thread per process: the pool already uses every core.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER_JOB = job


def _run_in_worker(indices: list[int], examples: list[Example]) -> BatchResult:
    assert _WORKER_JOB is not None, "pool initializer did not run"
    return _WORKER_JOB.run(indices, examples)
