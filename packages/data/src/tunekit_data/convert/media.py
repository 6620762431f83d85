"""Media references: OpenAI ``image_url`` parts, local paths and Converse blocks, to and from ``Media``.

The services read training media from S3 only, so every image or video ends up as a Converse block
with ``source.s3Location`` (``uri`` and, with ``--bucket-owner``, ``bucketOwner``). Local paths are
rewritten under ``--media-prefix`` (the relative path is kept, so ``aws s3 sync`` of the media folder
to the prefix makes the references resolve); without a prefix they stay local paths, which local
consumers (``train run``) can use and the Converse writer rejects with a reason. The format comes
from the file extension (``.jpg`` -> ``jpeg``); whether the profile supports it is the rules' call
(M2, M3), not this module's. Inline data (``data:`` URIs, Converse ``bytes``) is rejected: the
services take S3 references only.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Literal

from tunekit_data.convert.rejection import ConversionError, json_type
from tunekit_data.errors import UsageError
from tunekit_data.examples import Media
from tunekit_data.io import S3_LEADING_BUCKET

MediaKind = Literal["image", "video"]
# Extensions whose Converse format name differs from the extension itself.
_FORMAT_ALIASES = {"jpg": "jpeg", "3gp": "three_gp", "tif": "tiff"}
_BUCKET_OWNER = re.compile(r"^[0-9]{12}$")


@dataclass(frozen=True, slots=True)
class MediaOptions:
    """How local media paths and bucket owners are resolved (``--media-prefix``, ``--bucket-owner``)."""

    prefix: str | None = None
    bucket_owner: str | None = None

    def __post_init__(self) -> None:
        if self.prefix is not None and not re.match(S3_LEADING_BUCKET, self.prefix):
            msg = f"--media-prefix must be an S3 URI like s3://bucket/prefix, got {self.prefix!r}"
            raise UsageError(msg)
        if self.bucket_owner is not None and not _BUCKET_OWNER.match(self.bucket_owner):
            msg = f"--bucket-owner must be a 12-digit AWS account id, got {self.bucket_owner!r}"
            raise UsageError(msg)


def format_from_path(path: str, field: str) -> str:
    """The Converse format name for a file path or URI, from its extension (``x.JPG`` -> ``jpeg``)."""
    name = path.rsplit("/", 1)[-1].split("?", 1)[0]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not ext:
        msg = f"cannot tell the media format of {path!r}: it has no file extension"
        raise ConversionError(msg, field)
    ext = ext.lower()
    return _FORMAT_ALIASES.get(ext, ext)


def media_from_url(url: object, kind: MediaKind, field: str, options: MediaOptions) -> Media:
    """A ``Media`` for a URL or path as found in chat formats (``image_url.url``, ShareGPT ``images``)."""
    if not isinstance(url, str) or not url.strip():
        msg = f"the {kind} reference must be a non-empty string, got {json_type(url)}"
        raise ConversionError(msg, field)
    if url[:5].lower() == "data:":
        msg = f"data: URIs (base64) are not accepted: the services read {kind}s from S3 only; upload the file and reference it by s3:// URI (or a local path with --media-prefix)"
        raise ConversionError(msg, field)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "s3":
        return Media(kind, format_from_path(url, field), url, options.bucket_owner)
    if scheme not in ("", "file"):
        msg = f"{scheme}:// URLs are not accepted: the services read {kind}s from S3 only; download the file and pass its local path with --media-prefix"
        raise ConversionError(msg, field)
    path = url[len("file://") :] if scheme == "file" else url
    fmt = format_from_path(path, field)
    if options.prefix is None:
        return Media(kind, fmt, path)
    return Media(kind, fmt, _under_prefix(path, options.prefix, field), options.bucket_owner)


def _under_prefix(path: str, prefix: str, field: str) -> str:
    """``images/cat.jpg`` -> ``s3://bucket/prefix/images/cat.jpg`` (absolute paths lose the leading /)."""
    rel = posixpath.normpath(path.replace("\\", "/")).lstrip("/")
    if rel == ".." or rel.startswith("../"):
        msg = f"local path {path!r} leaves its folder ('..'); it cannot be placed under --media-prefix"
        raise ConversionError(msg, field)
    return f"{prefix.rstrip('/')}/{rel}"


def media_from_converse(kind: str, value: object, field: str, options: MediaOptions) -> Media:
    """A ``Media`` for a Converse ``image`` / ``video`` block value."""
    if kind not in ("image", "video"):
        msg = f"{kind} blocks are not supported by ds convert (images and videos are)"
        raise ConversionError(msg, field)
    if not isinstance(value, dict):
        msg = f"{kind} must be an object with format and source, got {json_type(value)}"
        raise ConversionError(msg, field)
    fmt = value.get("format")
    source = value.get("source")
    if not isinstance(fmt, str):
        msg = f"{kind}.format must be a string, got {json_type(fmt)}"
        raise ConversionError(msg, f"{field}.format")
    if isinstance(source, dict) and "bytes" in source:
        msg = "inline bytes are not accepted for fine-tuning: upload the file to S3 and use source.s3Location"
        raise ConversionError(msg, f"{field}.source.bytes")
    loc = source.get("s3Location") if isinstance(source, dict) else None
    uri = loc.get("uri") if isinstance(loc, dict) else None
    if not isinstance(uri, str):
        msg = f"{kind} needs source.s3Location.uri (a string)"
        raise ConversionError(msg, f"{field}.source.s3Location.uri")
    owner = loc.get("bucketOwner", options.bucket_owner)
    if owner is not None and not isinstance(owner, str):
        msg = f"bucketOwner must be a string, got {json_type(owner)}"
        raise ConversionError(msg, f"{field}.source.s3Location.bucketOwner")
    return Media(kind, fmt, uri, owner)  # type: ignore[arg-type]  # kind checked above


def converse_block(media: Media, field: str) -> dict[str, object]:
    """The Converse content block for a ``Media``; local paths are refused (the services read S3)."""
    if not media.uri.startswith("s3://"):
        msg = f"local {media.kind} path {media.uri!r} needs --media-prefix s3://bucket/prefix (the services read media from S3 only)"
        raise ConversionError(msg, field)
    location: dict[str, str] = {"uri": media.uri}
    if media.bucket_owner is not None:
        location["bucketOwner"] = media.bucket_owner
    return {media.kind: {"format": media.format, "source": {"s3Location": location}}}
