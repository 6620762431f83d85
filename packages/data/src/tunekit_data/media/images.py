"""Resolve a Converse ``image`` block to a decoded Pillow image, or a problem naming what is wrong.

A block's source is ``s3Location.uri`` (fetched through the media cache, so S3 retries and
``--endpoint-url`` apply), a local path in that same field, or inline ``bytes`` (base64 in JSONL).
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tunekit_data.errors import TunekitError
from tunekit_data.media.cache import MediaCache

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

MAX_PIXELS = 50_000_000  # larger images are refused before decoding (a decompression bomb otherwise)


@dataclass(frozen=True)
class MediaProblem:
    """Why one media block of a record cannot be used: kind is missing | undecodable | too-large | bad-block."""

    kind: str
    message: str

    def located(self, file: str, line: int, field: str) -> str:
        """The problem as ``file:line: field: message``, the form every ds report uses."""
        return f"{file}:{line}: {field}: [{self.kind}] {self.message}"


def source_bytes(block: dict[str, Any], cache: MediaCache, kind: str = "image") -> tuple[str, bytes] | MediaProblem:
    """(content key, bytes) of an image or video block's source, or a MediaProblem."""
    source = block.get("source")
    if not isinstance(source, dict):
        return MediaProblem("bad-block", f"{kind} has no source")
    if "bytes" in source:
        raw = source["bytes"]
        try:
            data = raw if isinstance(raw, bytes) else base64.b64decode(raw, validate=True)
        except (binascii.Error, TypeError, ValueError):
            return MediaProblem("undecodable", "source.bytes is not valid base64")
        return cache.put(data), data
    uri = (source.get("s3Location") or {}).get("uri")
    if not isinstance(uri, str):
        return MediaProblem("bad-block", f"{kind} source has neither bytes nor s3Location.uri")
    try:
        return cache.fetch(uri)
    except TunekitError as exc:
        return MediaProblem("missing", str(exc))


def resolve_image(
    block: dict[str, Any], cache: MediaCache, *, max_pixels: int = MAX_PIXELS
) -> tuple[str, PILImage] | MediaProblem:
    """(content key, RGB ``PIL.Image``) of an image block, or a MediaProblem."""
    from PIL import Image, UnidentifiedImageError  # lazily: ds check never needs Pillow

    got = source_bytes(block, cache)
    if isinstance(got, MediaProblem):
        return got
    key, data = got
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > max_pixels:
                return MediaProblem("too-large", f"{width}x{height} image has more than {max_pixels} pixels")
            probe.load()
            return key, probe.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        return MediaProblem("undecodable", f"cannot decode image: {exc}")
