"""tunekit_data: streaming reader, rule table, validator and converter for fine-tuning datasets.

Import the public names from here (or from the named public modules: ``reader``, ``rules``,
``examples``, ``errors``, ``storage`` for local and ``s3://`` inputs and outputs); anything prefixed
with an underscore is private.

The reader's and the examples' names load on first use (PEP 562 ``__getattr__``): ``reader``
brings in pyarrow and numpy (~0.2 s), which ``import tunekit_data.errors`` - what every `ds` command
imports first - and `ds --help` never need; ``examples`` (its dataclasses, ~5 ms) is for converters
and their consumers, never for `ds check`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunekit_data.check import RULES, Problem, Rule
from tunekit_data.errors import ConfigError, DataError, InputError, TunekitError, UsageError
from tunekit_data.io import is_blank, parse_line, require_object
from tunekit_data.lazy import lazy_exports

if TYPE_CHECKING:
    from tunekit_data.examples import (
        ChatExample,
        Example,
        Media,
        Message,
        PreferenceExample,
        SourceRecord,
        TextExample,
    )
    from tunekit_data.io import Block, Source, expand_paths, iter_blocks, iter_lines, split_lines

_LAZY = {
    **dict.fromkeys(("Block", "Source", "expand_paths", "iter_blocks", "iter_lines", "split_lines"), "io.reader"),
    **dict.fromkeys(("ChatExample", "Example", "Media", "Message", "PreferenceExample", "SourceRecord", "TextExample"), "examples"),
}

__all__ = [
    "RULES",
    "Block",
    "ChatExample",
    "ConfigError",
    "DataError",
    "Example",
    "InputError",
    "Media",
    "Message",
    "PreferenceExample",
    "Problem",
    "Rule",
    "Source",
    "SourceRecord",
    "TextExample",
    "TunekitError",
    "UsageError",
    "expand_paths",
    "is_blank",
    "iter_blocks",
    "iter_lines",
    "parse_line",
    "require_object",
    "split_lines",
]

__getattr__ = lazy_exports(__name__, _LAZY)
