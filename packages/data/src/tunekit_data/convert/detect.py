"""``--from auto``: name the input format from the keys of the first records, once per run.

The guess is made from up to ``SAMPLE`` leading records (the most common signature wins, so one odd
first line does not decide) and reported in the summary. It only picks the decoder: every record is
then decoded as that format, and a record that does not fit is rejected with a reason, never quietly
read as something else. Each format's key test is in its record in ``formats.registry``. A
``template.json`` beside the inputs means JumpStart, as it does to JumpStart itself; ``.txt``
documents are text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from tunekit_data.errors import UsageError
from tunekit_data.formats import guess_input_format

SAMPLE = 64


@dataclass(frozen=True, slots=True)
class Detection:
    """The format a run decodes with, and how it was chosen (``given``, ``detected``, ``template``)."""

    fmt: str
    how: str
    evidence: str = ""

    def describe(self) -> str:
        """One line for the summary, e.g. ``chat (detected from 64 of 64 records)``."""
        return f"{self.fmt} ({self.how}{': ' + self.evidence if self.evidence else ''})"


def detect_input_format(
    values: Iterable[object], *, files_are_text: bool = False, template: str | None = None
) -> Detection:
    """Choose the decoder for a run from its leading records (see the module docstring)."""
    if template is not None:
        return Detection("jumpstart", "template", template)
    if files_are_text:
        return Detection("text", "detected", ".txt documents")
    votes: Counter[str] = Counter()
    seen = 0
    keys: set[str] = set()
    for value in values:
        seen += 1
        guess = guess_input_format(value)
        if guess is not None:
            votes[guess] += 1
        elif isinstance(value, dict):
            keys.update(value)
    if not votes:
        found = f"keys seen: {', '.join(sorted(keys)[:12])}" if keys else "no JSON object records"
        msg = f"cannot tell the input format from the first {seen} records ({found}); name it with --from"
        raise UsageError(msg)
    fmt, n = votes.most_common(1)[0]
    return Detection(fmt, "detected", f"{n} of {seen} leading records")
