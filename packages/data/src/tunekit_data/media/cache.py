"""A content-addressed local cache of media objects, so each S3 object is fetched once per machine.

Objects are stored under ``sha256(bytes)``; an index file per source URI maps the URI to that key, so
a second run (or a second record naming the same URI) reads the local copy without touching S3.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tunekit_data.errors import InputError
from tunekit_data.io import storage


def default_cache_dir() -> Path:
    """``$TUNEKIT_CACHE/media`` if set, else ``~/.cache/tunekit/media``."""
    root = os.environ.get("TUNEKIT_CACHE")
    return Path(root) / "media" if root else Path.home() / ".cache" / "tunekit" / "media"


def _atomic_write(path: Path, data: bytes) -> None:
    # The storage layer's atomic output (temp name, rename on commit): a concurrent reader never sees a
    # partial object. Cache keys have no suffix, and the bytes are stored as fetched (no compression).
    path.parent.mkdir(parents=True, exist_ok=True)
    with storage.open_output(str(path), compress=False) as out:
        out.write(data)


class MediaCache:
    """Fetch media bytes by URI (``s3://`` or a local path), each remote object once per machine."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.fetches = 0  # remote reads done by this instance (a cache hit reads none)

    def _object(self, key: str) -> Path:
        return self.root / "objects" / key[:2] / key

    def _index(self, uri: str) -> Path:
        return self.root / "uris" / hashlib.sha256(uri.encode()).hexdigest()

    def put(self, data: bytes) -> str:
        """Store ``data``; returns its content key (sha256 hex)."""
        key = hashlib.sha256(data).hexdigest()
        path = self._object(key)
        if not path.exists():
            _atomic_write(path, data)
        return key

    def get(self, key: str) -> bytes:
        """The bytes stored under a content key."""
        return self._object(key).read_bytes()

    def fetch(self, uri: str) -> tuple[str, bytes]:
        """(content key, bytes) of ``uri``; InputError naming the URI if it cannot be read."""
        index = self._index(uri)
        if index.exists():
            key = index.read_text().strip()
            if self._object(key).exists():
                return key, self.get(key)
        if not uri.startswith("s3://"):
            path = Path(storage.local_path(uri))
            try:
                data = path.read_bytes()
            except OSError as exc:
                msg = f"{uri}: cannot open: {exc.strerror or exc}"
                raise InputError(msg) from exc
            return self.put(data), data
        with storage.open_input(uri, decompress=False) as stream:
            data = stream.read()
        self.fetches += 1
        key = self.put(data)
        _atomic_write(index, key.encode())
        return key, data
