"""Images in chat requests: Converse ``image`` blocks and OpenAI ``image_url`` parts, as Pillow images.

Converse blocks carry ``source.bytes`` (base64 in JSON) or ``source.s3Location.uri``; OpenAI parts a
``data:`` URI (base64), or here also an ``s3://`` URI or a local path (the server reads no http URLs:
it may have no internet). Both resolve through `tunekit_data.media` (its cache, S3 layer and pixel limit).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from tunekit_data.media import MediaCache, MediaProblem, resolve_image
from tunekit_train.serve.errors import ApiError

if TYPE_CHECKING:
    from tunekit_train.serve.models import ServedModel


def require_images(model: ServedModel) -> None:
    """ApiError unless ``model`` takes images (checked before any image is fetched or decoded)."""
    if model.image_processor is None:
        msg = f"model {model.model_id!r} takes text only: only text content blocks are supported"
        raise ApiError(msg, param="messages")


def converse_image(block: dict[str, Any], field: str) -> Any:
    """The Pillow image of a Converse ``image`` block value; ApiError naming ``field`` if it cannot be used."""
    got = resolve_image(block, MediaCache())
    if isinstance(got, MediaProblem):
        msg = f"{field}: [{got.kind}] {got.message}"
        raise ApiError(msg, param="messages")
    return got[1]


def url_image(url: str, field: str) -> Any:
    """The Pillow image of an OpenAI ``image_url.url``."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            msg = f"{field}: data: URIs must be base64 (data:image/png;base64,...)"
            raise ApiError(msg, param="messages")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            msg = f"{field}: the data: URI is not valid base64"
            raise ApiError(msg, param="messages") from exc
        return converse_image({"source": {"bytes": data}}, field)
    if url.split("://", 1)[0] in ("http", "https"):
        msg = f"{field}: http(s) image URLs are not fetched; send a data: URI, an s3:// URI or a local path"
        raise ApiError(msg, param="messages")
    return converse_image({"source": {"s3Location": {"uri": url}}}, field)
