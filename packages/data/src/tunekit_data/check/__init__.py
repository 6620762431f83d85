"""``ds check``: the rule table, the model profiles, and the checker that applies them.

- ``rules``: every rule's id, severity and summary; ``Problem``, one finding.
- ``profiles``: what each model and platform accepts.
- ``engine``: ``run_check`` / ``iter_problems`` over sources, on all cores, then the dataset rules.
- ``blockcheck``: one block of lines, columnar fast path and per-line slow path; ``rowtypes`` types a
  table input's columns for it; ``schema`` holds each checked format's Arrow schema and the
  structural walk; ``columns`` the columnar views the vectorized checks (``tunekit_data.formats``) use.
- ``mediacheck``: ``--check-media``, the S3 lookups of referenced media.

The rule table and the profiles (plain Python) import eagerly: every `ds` command lists them. The
rest loads on first use (PEP 562 ``__getattr__``), as it brings in pyarrow and numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunekit_data.check.profiles import PLATFORMS, PROFILES, Platform, Profile, get_profile
from tunekit_data.check.rules import RULES, Problem, Rule
from tunekit_data.lazy import lazy_exports

if TYPE_CHECKING:
    from tunekit_data.check.blockcheck import BlockResult, BlockStats, check_block, check_table
    from tunekit_data.check.columns import Hit, Level, hits, indices, lengths, mask, present, strings
    from tunekit_data.check.engine import (
        CheckConfig,
        CheckSummary,
        CheckWriters,
        Tally,
        Verdict,
        Verdicts,
        check_input_block,
        finish_block,
        iter_problems,
        report_json,
        run_check,
        validate_values,
        worker_init,
    )
    from tunekit_data.check.mediacheck import check_media
    from tunekit_data.check.schema import (
        FORMATS,
        FormatSchema,
        covers,
        needs_per_line,
        nested_unknowns,
        unknown_columns,
        unknown_key,
        walk,
    )

_LAZY = {
    **dict.fromkeys(("BlockResult", "BlockStats", "check_block", "check_table"), "blockcheck"),
    **dict.fromkeys(("Hit", "Level", "hits", "indices", "lengths", "mask", "present", "strings"), "columns"),
    **dict.fromkeys(
        (
            "CheckConfig",
            "CheckSummary",
            "CheckWriters",
            "Tally",
            "Verdict",
            "Verdicts",
            "check_input_block",
            "finish_block",
            "iter_problems",
            "report_json",
            "run_check",
            "validate_values",
            "worker_init",
        ),
        "engine",
    ),
    "check_media": "mediacheck",
    **dict.fromkeys(
        (
            "FORMATS",
            "FormatSchema",
            "covers",
            "needs_per_line",
            "nested_unknowns",
            "unknown_columns",
            "unknown_key",
            "walk",
        ),
        "schema",
    ),
}

__all__ = [
    "FORMATS",
    "PLATFORMS",
    "PROFILES",
    "RULES",
    "BlockResult",
    "BlockStats",
    "CheckConfig",
    "CheckSummary",
    "CheckWriters",
    "FormatSchema",
    "Hit",
    "Level",
    "Platform",
    "Problem",
    "Profile",
    "Rule",
    "Tally",
    "Verdict",
    "Verdicts",
    "check_block",
    "check_input_block",
    "check_media",
    "check_table",
    "covers",
    "finish_block",
    "get_profile",
    "hits",
    "indices",
    "iter_problems",
    "lengths",
    "mask",
    "needs_per_line",
    "nested_unknowns",
    "present",
    "report_json",
    "run_check",
    "strings",
    "unknown_columns",
    "unknown_key",
    "validate_values",
    "walk",
    "worker_init",
]

__getattr__ = lazy_exports(__name__, _LAZY)
