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
the pipeline (its sources, engine and writer) and the schemas load on first use of their names (PEP 562 ``__getattr__``), so that
`ds --help` can list the formats without loading them (~0.3 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunekit_data.convert.detect import Detection, detect_input_format
from tunekit_data.convert.inputs import INPUT_FORMATS, InputFormat, InputPlan
from tunekit_data.convert.outputs import DEFAULT_SHARD_SIZE, OUTPUT_FORMATS, OutputFormat
from tunekit_data.convert.rejection import ConversionError, Rejection
from tunekit_data.lazy import lazy_exports

if TYPE_CHECKING:
    from tunekit_data.convert.engine import ConvertPlan, UnitResult, convert_unit
    from tunekit_data.convert.pipeline import (
        ConvertOptions,
        ConvertSummary,
        ExampleReader,
        OpenInput,
        convert_dataset,
        open_input,
        prepare_convert,
        read_examples,
    )
    from tunekit_data.convert.sources import (
        DEFAULT_BLOCK_SIZE,
        TXT_PER_UNIT,
        InputFile,
        Unit,
        discover,
        input_size,
        iter_units,
    )
    from tunekit_data.convert.writer import Chunk, JsonlSink, Split, dump_line, jsonl_chunk, output_kind
    from tunekit_data.formats import ARROW_SCHEMAS

_LAZY = {
    "ARROW_SCHEMAS": "tunekit_data.formats",
    **dict.fromkeys(("ConvertPlan", "UnitResult", "convert_unit"), "tunekit_data.convert.engine"),
    **dict.fromkeys(
        (
            "ConvertOptions",
            "ConvertSummary",
            "ExampleReader",
            "OpenInput",
            "convert_dataset",
            "open_input",
            "prepare_convert",
            "read_examples",
        ),
        "tunekit_data.convert.pipeline",
    ),
    **dict.fromkeys(
        ("DEFAULT_BLOCK_SIZE", "TXT_PER_UNIT", "InputFile", "Unit", "discover", "input_size", "iter_units"),
        "tunekit_data.convert.sources",
    ),
    **dict.fromkeys(
        ("Chunk", "JsonlSink", "Split", "dump_line", "jsonl_chunk", "output_kind"), "tunekit_data.convert.writer"
    ),
}

__all__ = [
    "ARROW_SCHEMAS",
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_SHARD_SIZE",
    "INPUT_FORMATS",
    "OUTPUT_FORMATS",
    "TXT_PER_UNIT",
    "Chunk",
    "ConversionError",
    "ConvertOptions",
    "ConvertPlan",
    "ConvertSummary",
    "Detection",
    "ExampleReader",
    "InputFile",
    "InputFormat",
    "InputPlan",
    "JsonlSink",
    "OpenInput",
    "OutputFormat",
    "Rejection",
    "Split",
    "Unit",
    "UnitResult",
    "convert_dataset",
    "convert_unit",
    "detect_input_format",
    "discover",
    "dump_line",
    "input_size",
    "iter_units",
    "jsonl_chunk",
    "open_input",
    "output_kind",
    "prepare_convert",
    "read_examples",
]

__getattr__ = lazy_exports(__name__, _LAZY)
