"""Nova continued-pretraining records (rule C1; section 5)."""

from __future__ import annotations

from collections.abc import Iterator

from tunekit_data.check import Hit, Problem, hits, present
from tunekit_data.formats.view import ConverseView, Options, blank


def check_text(v: ConverseView, o: Options) -> Iterator[Hit]:
    """C1: ``text`` is a non-empty, non-whitespace string."""
    text = v.column("text")
    missing = ~present(text)
    yield from hits(v.rows, missing, lambda i: Problem.make("C1", "text", "text is required"))
    yield from hits(v.rows, blank(text), lambda i: Problem.make("C1", "text", "text is empty or whitespace-only"))


CPT_CHECKS = (check_text,)
