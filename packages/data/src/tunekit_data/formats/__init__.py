"""Dataset formats: the registry of every format, and ``ds check``'s vectorized rule checks.

- ``registry``: one record per format (names, aliases, detector, decoder, encoder, rule suite); plain
  Python, imported eagerly.
- ``suites``: each checked format's checks (``CHECKS``); ``converse``, ``media``, ``dpo``, ``tools``,
  ``cpt``, ``databricks``: the checks of each rule family; ``view``: the columnar view they read;
  ``arrow_schemas``: the Arrow schema of each ``ds convert`` target. These load on first use of their
  names (PEP 562 ``__getattr__``), as they bring in pyarrow and numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunekit_data.formats.registry import (
    CHECK_SUITES,
    FORMAT_ALIASES,
    FORMATS,
    OUTPUT_NAMES,
    CheckSuite,
    Detector,
    Format,
    Kind,
    Output,
    canonical_name,
    guess_check_format,
    guess_input_format,
    load,
)
from tunekit_data.lazy import lazy_exports

if TYPE_CHECKING:
    from tunekit_data.formats.arrow_schemas import ARROW_SCHEMAS
    from tunekit_data.formats.suites import CHECKS
    from tunekit_data.formats.view import MEDIA_KINDS, ConverseView, Options

_LAZY = {
    "ARROW_SCHEMAS": "arrow_schemas",
    "CHECKS": "suites",
    **dict.fromkeys(("MEDIA_KINDS", "ConverseView", "Options"), "view"),
}

__all__ = [
    "ARROW_SCHEMAS",
    "CHECKS",
    "CHECK_SUITES",
    "FORMATS",
    "FORMAT_ALIASES",
    "MEDIA_KINDS",
    "OUTPUT_NAMES",
    "CheckSuite",
    "ConverseView",
    "Detector",
    "Format",
    "Kind",
    "Options",
    "Output",
    "canonical_name",
    "guess_check_format",
    "guess_input_format",
    "load",
]

__getattr__ = lazy_exports(__name__, _LAZY)
