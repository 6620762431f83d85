"""Images and videos in chat requests: Converse ``image``/``video`` blocks, OpenAI ``image_url``/``video_url`` parts.

Images become Pillow images, videos their sampled frames.

OpenAI's chat API defines no video part; ``{"type": "video_url", "video_url": {"url": ...}}`` is vLLM's
(and SGLang's) extension, the shape OpenAI-compatible VLM servers share, so it is the one taken here.
Videos are sampled as ``ds pack`` samples them (`tunekit_train.vision.sample_video`).

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


def converse_video(block: dict[str, Any], field: str, model: ServedModel) -> Any:
    """The sampled frames of a Converse ``video`` block value; ApiError naming ``field`` if it cannot be used."""
    from tunekit_train.vision import sample_video

    got = sample_video(block, model.image_processor)
    if isinstance(got, MediaProblem):
        msg = f"{field}: [{got.kind}] {got.message}"
        raise ApiError(msg, param="messages")
    return got


def url_video(url: str, field: str, model: ServedModel) -> Any:
    """The sampled frames of a ``video_url.url`` (the same sources as `url_image`)."""
    return converse_video(url_block(url, field, "video"), field, model)


def url_image(url: str, field: str) -> Any:
    """The Pillow image of an OpenAI ``image_url.url``."""
    return converse_image(url_block(url, field, "image"), field)


def url_block(url: str, field: str, kind: str) -> dict[str, Any]:
    """The Converse block value of a ``data:`` URI (base64), an ``s3://`` URI or a local path."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            msg = f"{field}: data: URIs must be base64 (data:{kind}/...;base64,...)"
            raise ApiError(msg, param="messages")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            msg = f"{field}: the data: URI is not valid base64"
            raise ApiError(msg, param="messages") from exc
        return {"source": {"bytes": data}}
    if url.split("://", 1)[0] in ("http", "https"):
        msg = f"{field}: http(s) {kind} URLs are not fetched; send a data: URI, an s3:// URI or a local path"
        raise ApiError(msg, param="messages")
    return {"source": {"s3Location": {"uri": url}}}
