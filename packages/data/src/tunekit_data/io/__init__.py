"""Where records come from and where outputs go: local paths, ``s3://``, tables, JSON lines.

- ``reader``: sources (files, archives, folders, S3 prefixes, stdin) read in blocks of lines.
- ``jsonline``: one line decoded, with the file/line rules as verdicts.
- ``storage``: local and ``s3://`` paths behind one API (``storage.open_input`` ...), and the
  outputs that appear only when complete (``AtomicOutput``).
- ``publish``: the write-beside-then-rename of every output (``publish_file``, ``publish_dir``), and
  the temporary names and keys ``storage`` builds its outputs under.
- ``s3``: the S3 filesystem, endpoint and error messages.
- ``tables``: Parquet, Hugging Face and Delta inputs as Arrow batches.

``storage``, ``s3`` and ``tables`` are public as namespaces (``from tunekit_data.io import storage``).
Every name loads on first use (PEP 562 ``__getattr__``): ``reader`` and ``storage`` bring in pyarrow,
which `ds --help` and the CLI's ``set_endpoint`` never need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunekit_data.lazy import lazy_exports

if TYPE_CHECKING:
    from tunekit_data.io.jsonline import is_blank, parse_line, require_object
    from tunekit_data.io.publish import (
        create_temp,
        publish_dir,
        publish_file,
        replace_dir,
        stage_dir,
        temp_name,
    )
    from tunekit_data.io.reader import (
        BOM,
        JSONL_SUFFIXES,
        Block,
        Source,
        expand_paths,
        iter_blocks,
        iter_lines,
        newline_offsets,
        split_lines,
    )
    from tunekit_data.io.s3 import (
        S3_BUCKET_NAME,
        S3_LEADING_BUCKET,
        S3_OBJECT_URI,
        S3_PREFIX_URI,
        S3Path,
        bucket_of,
        is_s3,
        set_endpoint,
    )
    from tunekit_data.io.storage import AtomicOutput, Head, head_many, open_output
    from tunekit_data.io.tables import (
        HUB_SCHEME,
        drop_nulls,
        hub_cache,
        hub_dataset,
        iter_batches,
        json_lines,
        table_folder,
    )

_LAZY = {
    **dict.fromkeys(("is_blank", "parse_line", "require_object"), "jsonline"),
    **dict.fromkeys(("create_temp", "publish_dir", "publish_file", "replace_dir", "stage_dir", "temp_name"), "publish"),
    **dict.fromkeys(
        (
            "BOM",
            "JSONL_SUFFIXES",
            "Block",
            "Source",
            "expand_paths",
            "iter_blocks",
            "iter_lines",
            "newline_offsets",
            "split_lines",
        ),
        "reader",
    ),
    **dict.fromkeys(
        ("S3_BUCKET_NAME", "S3_LEADING_BUCKET", "S3_OBJECT_URI", "S3_PREFIX_URI", "S3Path", "bucket_of", "is_s3", "set_endpoint"),
        "s3",
    ),
    **dict.fromkeys(("AtomicOutput", "Head", "head_many", "open_output"), "storage"),
    **dict.fromkeys(
        (
            "HUB_SCHEME",
            "drop_nulls",
            "hub_cache",
            "hub_dataset",
            "iter_batches",
            "json_lines",
            "table_folder",
        ),
        "tables",
    ),
}

__all__ = [
    "BOM",
    "HUB_SCHEME",
    "JSONL_SUFFIXES",
    "S3_BUCKET_NAME",
    "S3_LEADING_BUCKET",
    "S3_OBJECT_URI",
    "S3_PREFIX_URI",
    "AtomicOutput",
    "Block",
    "Head",
    "S3Path",
    "Source",
    "bucket_of",
    "create_temp",
    "drop_nulls",
    "expand_paths",
    "head_many",
    "hub_cache",
    "hub_dataset",
    "is_blank",
    "is_s3",
    "iter_batches",
    "iter_blocks",
    "iter_lines",
    "json_lines",
    "newline_offsets",
    "open_output",
    "parse_line",
    "publish_dir",
    "publish_file",
    "replace_dir",
    "require_object",
    "set_endpoint",
    "split_lines",
    "stage_dir",
    "table_folder",
    "temp_name",
]

__getattr__ = lazy_exports(__name__, _LAZY)
