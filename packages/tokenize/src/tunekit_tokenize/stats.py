"""Counts kept while encoding, and the ``stats.json`` summary of a pack."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from tunekit_tokenize.encoder import Kind, sequences_per_item
from tunekit_tokenize.packer import Bins
from tunekit_tokenize.spool import SequenceStore
from tunekit_tokenize.truncation import FitCounts

if TYPE_CHECKING:
    from tunekit_data.io import AtomicOutput

REJECT_SAMPLES = 20  # rejected records listed with their location; all are counted


@dataclass(slots=True)
class Tally:
    """Running counts of an encoding pass; ``kind`` is the pack's kind once an example has been seen."""

    kind: Kind | None = None
    records: int = 0
    used: int = 0
    trained_tokens: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    reject_samples: list[dict[str, object]] = field(default_factory=list)
    fit: FitCounts = field(default_factory=FitCounts)
    rejects_out: AtomicOutput | None = None
    """``--rejects-out``: every rejected record, one JSON line each (location, reason, the record)."""

    def reject(self, file: str, line: int, code: str, message: str, *, field: str = "", record: object = None) -> None:
        """Count a rejected record, keeping the first few with their location (all in ``rejects_out``)."""
        self.rejected[code] += 1
        where = f"{field}: " if field else ""
        if len(self.reject_samples) < REJECT_SAMPLES:
            self.reject_samples.append({"file": file, "line": line, "reason": code, "message": f"{where}{message}"})
        if self.rejects_out is not None:
            import orjson

            entry = {"file": file, "line": line, "field": field, "reason": message, "rule": code, "record": record}
            self.rejects_out.write(orjson.dumps(entry, default=str) + b"\n")

    @property
    def rejected_total(self) -> int:
        """Records refused, all reasons together."""
        return sum(self.rejected.values())


def summarize(tally: Tally, spool: SequenceStore, bins: Bins, *, kind: Kind, max_length: int, media: dict[str, int] | None = None) -> dict[str, object]:
    """The ``stats.json`` payload.

    Counts, packing efficiency against its lower bound, lengths (and ``media``: the images and
    videos in the rows of a vision pack).
    """
    lengths = spool.lengths
    tokens = int(lengths.sum())
    fill = bins.totals(spool.item_lengths(sequences_per_item(kind)))
    lower_bound = math.ceil(tokens / max_length)
    fit = tally.fit
    stats: dict[str, object] = {
        "kind": kind,
        "max_length": max_length,
        "records": tally.records,
        "examples": tally.used,
        "rejected": tally.rejected_total,
        "rejected_by_reason": dict(sorted(tally.rejected.items())),
        "sequences": len(lengths),
        "tokens": tokens,
        "trained_tokens": tally.trained_tokens,
        "bins": len(bins),
        "lower_bound_bins": lower_bound,
        "packing_efficiency": _ratio(tokens, len(bins) * max_length),
        "efficiency_upper_bound": _ratio(tokens, lower_bound * max_length),
        "truncated": fit.truncated,
        "truncated_tokens": fit.truncated_tokens,
        "dropped": fit.dropped_too_long + fit.dropped_untrained,
        "dropped_too_long": fit.dropped_too_long,
        "dropped_untrained_after_truncation": fit.dropped_untrained,
        "dropped_tokens": fit.dropped_tokens,
        "split_documents": fit.split_documents,
        "sequence_length": _describe(lengths),
        "bin_fill": _describe(fill),
        "length_histogram": histogram(lengths, max_length),
        "reject_samples": tally.reject_samples,
    }
    if media is not None:
        stats.update(media)
    if kind == "dpo":
        stats["pairs"] = len(lengths) // 2
    return stats


def histogram(lengths: np.ndarray, max_length: int) -> list[dict[str, int]]:
    """Counts of lengths in power-of-two buckets: ``{"le": edge, "count": n}`` for ``prev < len <= edge``."""
    edges = [e for e in (1 << k for k in range(4, max_length.bit_length())) if e < max_length] + [max_length]
    counts = np.bincount(np.searchsorted(edges, lengths, side="left"), minlength=len(edges))
    return [{"le": edge, "count": int(n)} for edge, n in zip(edges, counts, strict=True)]


def _describe(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {"min": 0, "median": 0, "mean": 0.0, "max": 0}
    return {
        "min": int(values.min()),
        "median": int(np.median(values)),
        "mean": round(float(values.mean()), 1),
        "max": int(values.max()),
    }


def _ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 6) if denominator else 0.0
