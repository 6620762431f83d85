"""Sharded outputs under a folder or ``s3://`` prefix: parts written by tasks, a manifest last.

Each task writes its own part (``part-00000.jsonl`` ..., numbered by input position, so the parts
in name order hold the lines in input order) through ``storage.open_output``: a part appears only
complete, and a task run again after its node died replaces its part rather than adding one. The
driver writes ``manifest.json`` once every part is in: the parts, their line counts and the total.
A reader that finds the manifest finds every part it lists; a failed run deletes its parts.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import orjson

from tunekit_data.errors import InputError, UsageError
from tunekit_data.io import is_s3, storage

MANIFEST = "manifest.json"


def part_name(prefix: str, index: int, stem: str = "part") -> str:
    """The URI of part ``index`` under ``prefix``."""
    return f"{prefix.rstrip('/')}/{stem}-{index:05d}.jsonl"


class PartOutputs:
    """One sharded output: checked up front, published (manifest last) or removed at the end."""

    def __init__(self, prefix: str, option: str) -> None:
        if prefix.lower().endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet", ".json")):
            msg = f"{option} {prefix}: with --engine ray this output is a folder or s3:// prefix of parts (part-00000.jsonl ... and manifest.json)"
            raise UsageError(msg)
        if storage.list_names(prefix):
            msg = f"{option} {prefix}: already holds files; write sharded outputs to a new, empty folder or prefix"
            raise UsageError(msg)
        if is_s3(prefix):
            storage.check_writable(prefix)
        else:
            with contextlib.suppress(FileExistsError):
                Path(storage.local_path(prefix)).mkdir(parents=True)
        self.prefix = prefix
        self.parts: list[dict[str, object]] = []

    def add(self, uri: str, lines: int, **where: object) -> None:
        """Record a part a task wrote (in input order)."""
        self.parts.append({"path": uri.rpartition("/")[2], "lines": lines, **where})

    def publish(self) -> None:
        """Write the manifest, making the output complete."""
        manifest = {"format": "tunekit-parts", "lines": sum(int(p["lines"]) for p in self.parts), "parts": self.parts}
        with storage.open_output(f"{self.prefix.rstrip('/')}/{MANIFEST}") as out:
            out.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")

    def remove(self) -> None:
        """Delete every part under the prefix (a failed run leaves no half output)."""
        with contextlib.suppress(InputError, OSError):
            for name in storage.list_names(self.prefix):
                storage.delete(f"{self.prefix.rstrip('/')}/{name}")
