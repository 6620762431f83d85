"""The content-hash cache: equal inputs, tokenizer, template and options give the same pack.

So a re-run reuses the previous output instead of tokenizing again.

The key hashes the source files' *contents* in order (a renamed or moved file still hits), the
tokenizer files, the template source, every option that changes the output, the reader options and
the tunekit version. Only runs given their source files are cacheable (standard input is not).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from importlib.metadata import version
from pathlib import Path

from tunekit_data.errors import InputError
from tunekit_tokenize.manifest import FORMAT_VERSION, PackedDataset, is_packed_dir, read_manifest


def describe_source(path: Path, on_bytes: Callable[[int, int], None]) -> dict[str, object]:
    """Path, size and SHA-256 of an input file; ``on_bytes(done, total)`` reports hashing progress."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    done = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
            done += len(chunk)
            on_bytes(done, size)
    return {"path": str(path), "bytes": size, "sha256": digest.hexdigest()}


def cache_key(
    *,
    sources: list[dict[str, object]],
    tokenizer_sha256: str,
    template_sha256: str | None,
    options: Mapping[str, object],
    reader_options: Mapping[str, object],
) -> str:
    """The key under which a pack of these sources with these settings is stored."""
    payload = {
        "format_version": FORMAT_VERSION,
        "tunekit_tokenize": version("tunekit-tokenize"),
        "sources": [s["sha256"] for s in sources],
        "tokenizer": tokenizer_sha256,
        "template": template_sha256,
        "options": dict(options),
        "reader": dict(reader_options),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def cached_pack(out_dir: Path, key: str) -> PackedDataset | None:
    """The pack in ``out_dir`` if it is complete and was made under ``key``, else None."""
    if not is_packed_dir(out_dir):
        return None
    try:
        packed = read_manifest(out_dir)
    except InputError:  # missing shards or another format version: rebuild, nothing to report
        return None
    return packed if packed.manifest.get("cache_key") == key else None
