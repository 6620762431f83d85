"""The one place ``ds convert`` asks the ``ds check`` rules about its output.

Every converted record is checked against its target's rule set (``converse`` -> ``sft``,
``dpo`` -> ``dpo``, ``chat``, ``prompt-response``, ``text`` -> ``cpt``) before it is written; a
record with an error-severity finding is rejected with that rule's id and message instead. Warnings
are counted, and the record is written. Dataset-level rules (record counts, M10 modality mix, M11
single bucket, D10 pair count) need the whole output: run ``ds check`` on it for those.

The records are checked as the JSONL lines that will be written, through ``ds check``'s own block
checker (what ``check.validate_values`` does after serialising its records): serialising once and
checking those very bytes saves a fifth of the conversion time and checks exactly what is written.
"""

from __future__ import annotations

from tunekit_data.check import Problem, check_block, get_profile
from tunekit_data.formats import Options


def check_lines(
    data: bytes, count: int, *, check_format: str | None, profile: str, platform: str
) -> dict[int, list[Problem]]:
    """The problems of the lines of ``data`` (``count`` JSONL records) under ``check_format``'s rules, by 0-based line index; lines without problems are absent (most lines, so nothing is built for them)."""
    found: dict[int, list[Problem]] = {}
    if check_format is None or not count:
        return found
    result = check_block(data, 1, Options(get_profile(profile), check_format, platform))  # type: ignore[arg-type]
    for line, problem in result.problems:
        found.setdefault(line - 1, []).append(problem)
    return found
