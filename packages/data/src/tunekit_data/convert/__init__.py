"""``ds convert``: stream datasets between the formats users have and Converse / Nova DPO, and back.

Inputs (``--from``, detected by default): see ``INPUT_FORMATS``; JSONL (``.gz`` / ``.zst``),
Parquet, Hugging Face ``save_to_disk`` folders and folders of ``.txt`` documents. Outputs (``--to``):
see ``OUTPUT_FORMATS`` and their Arrow schemas (``tunekit_data.formats.ARROW_SCHEMAS``). Every record is converted through a
neutral ``Example`` (``tunekit_data.examples``) and checked against the target's ``ds check`` rules
before it is written; a record that cannot be converted is rejected with its line and the reason.

Two entry points:

- ``read_examples(paths, fmt="auto", ...)``: ``(SourceRecord, Example | Rejection)`` per record, for
  consumers that want Examples (``ds pack``, ``train run``).
- ``convert_dataset(paths, ConvertOptions(...))``: the ``ds convert`` command, multi-core.

The format tables (``INPUT_FORMATS``, ``OUTPUT_FORMATS``: the decoders and encoders of the formats that
``tunekit_data.formats.registry`` declares, with their names and aliases) import without pyarrow;
the pipeline and the schemas load on first use of their names (PEP 562 ``__getattr__``), so that
`ds --help` can list the formats without loading them (~0.3 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunekit_data.convert.detect import Detection, detect_input_format
from tunekit_data.convert.inputs import INPUT_FORMATS, InputFormat
from tunekit_data.convert.outputs import OUTPUT_FORMATS, OutputFormat
from tunekit_data.convert.rejection import ConversionError, Rejection
from tunekit_data.lazy import lazy_exports

if TYPE_CHECKING:
    from tunekit_data.convert.pipeline import (
        ConvertOptions,
        ConvertSummary,
        ExampleReader,
        convert_dataset,
        read_examples,
    )
    from tunekit_data.convert.writer import Split
    from tunekit_data.formats import ARROW_SCHEMAS

_LAZY = {
    "ARROW_SCHEMAS": "tunekit_data.formats",
    "ConvertOptions": "tunekit_data.convert.pipeline",
    "ConvertSummary": "tunekit_data.convert.pipeline",
    "ExampleReader": "tunekit_data.convert.pipeline",
    "convert_dataset": "tunekit_data.convert.pipeline",
    "read_examples": "tunekit_data.convert.pipeline",
    "Split": "tunekit_data.convert.writer",
}

__all__ = [
    "ARROW_SCHEMAS",
    "INPUT_FORMATS",
    "OUTPUT_FORMATS",
    "ConversionError",
    "ConvertOptions",
    "ConvertSummary",
    "Detection",
    "ExampleReader",
    "InputFormat",
    "OutputFormat",
    "Rejection",
    "Split",
    "convert_dataset",
    "detect_input_format",
    "read_examples",
]

__getattr__ = lazy_exports(__name__, _LAZY)
