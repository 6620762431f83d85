"""Images and videos in packed rows: how many tokens each becomes, and which a record holds.

A vision-language model's processor directory (``ds pack --processor DIR``) holds its image processor
settings (``preprocessor_config.json``) and its tokenizer. Qwen2-VL-style processors (Qwen2-VL,
Qwen2.5-VL) resize an image so both sides are multiples of ``patch_size * merge_size`` with its pixel
count within ``[min_pixels, max_pixels]`` (the aspect ratio kept), cut it into ``patch_size`` patches
(grid ``t x h x w``, ``t = 1`` for an image), and the vision tower merges ``merge_size**2`` patches into
one language-model token. So the prompt's single image placeholder token becomes ``h * w / merge**2``
copies, and packing counts those expanded lengths. A video is sampled to frames (`tunekit_data.media.
videos`: ``fps``, ``max_frames``, a multiple of ``temporal_patch_size``), every frame resized to one
`smart_resize` target (the video processor's pixel bounds: ``video_preprocessor_config.json`` if the
directory has one, else the image processor's, as transformers falls back), and its grid is
``frames / temporal_patch_size x h x w``; its single ``<|video_pad|>`` becomes ``t * h * w / merge**2``.
The rows carry the sampled, resized frames (``.npy``, uint8), so training needs neither S3 nor a video
decoder, and transformers' processor would not resize them again.

The grid arithmetic (`smart_resize`) is written here rather than taken from transformers because every
transformers image processor imports torch (the default Qwen2-VL one also torchvision), and ``ds pack``
never imports torch. Tests check it against transformers' processor; training computes the pixel values
with transformers itself and checks that its grid equals the packed one.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunekit_data.errors import InputError, UsageError
from tunekit_data.examples import Media, Message
from tunekit_data.media import (
    MAX_PIXELS,
    MediaCache,
    MediaProblem,
    VideoSampling,
    resolve_image,
    resolve_video,
)
from tunekit_tokenize.tokenizer import TokenizerBundle

PROCESSOR_FILE = "preprocessor_config.json"
VIDEO_PROCESSOR_FILE = "video_preprocessor_config.json"
SUPPORTED = ("Qwen2VLImageProcessor", "Qwen2VLImageProcessorFast", "Qwen2VLImageProcessorPil")
# Qwen2-VL's chat template writes an image (a video) as these three tokens; the middle one is expanded.
VISION_START, IMAGE_TOKEN, VISION_END = "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"
VIDEO_TOKEN = "<|video_pad|>"
MAX_ASPECT = 200  # Qwen2-VL refuses more elongated images


@dataclass(frozen=True, slots=True)
class MediaRef:
    """One image or video of a sequence.

    Its content key in the media cache (an image's file, a video's sampled frames) and its patch
    grid (t, h, w).
    """

    key: str
    grid: tuple[int, int, int]
    kind: Literal["image", "video"] = "image"


@dataclass(frozen=True)
class VisionProcessor:
    """A Qwen2-VL-style processor's image (and video) settings, and the placeholder tokens of its tokenizer."""

    path: Path
    config: dict[str, Any]
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    min_pixels: int
    max_pixels: int
    image_token_id: int
    sha256: str
    video_config: dict[str, Any]
    video_min_pixels: int
    video_max_pixels: int
    video_token_id: int | None
    """None when the tokenizer has no ``<|video_pad|>``: videos are then rejected."""

    def placeholder(self, kind: str = "image") -> str:
        """The text an image (a video) block renders as, before expansion."""
        return f"{VISION_START}{IMAGE_TOKEN if kind == 'image' else VIDEO_TOKEN}{VISION_END}"

    def token_id(self, kind: str) -> int | None:
        """The placeholder token id of ``image`` or ``video``."""
        return self.image_token_id if kind == "image" else self.video_token_id

    def grid(self, width: int, height: int) -> tuple[int, int, int]:
        """The (t, h, w) patch grid of a ``width x height`` image after `smart_resize`."""
        factor = self.patch_size * self.merge_size
        resized_h, resized_w = smart_resize(height, width, factor, self.min_pixels, self.max_pixels)
        return 1, resized_h // self.patch_size, resized_w // self.patch_size

    def video_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) every frame of a ``width x height`` video is resized to."""
        factor = self.patch_size * self.merge_size
        resized_h, resized_w = smart_resize(height, width, factor, self.video_min_pixels, self.video_max_pixels)
        return resized_w, resized_h

    def video_grid(self, frames: int, width: int, height: int) -> tuple[int, int, int]:
        """The (t, h, w) patch grid of ``frames`` resized frames (``frames`` a multiple of the temporal patch)."""
        return frames // self.temporal_patch_size, height // self.patch_size, width // self.patch_size

    def tokens(self, grid: tuple[int, int, int]) -> int:
        """Language-model tokens an image of ``grid`` becomes."""
        t, h, w = grid
        return t * h * w // self.merge_size**2

    def describe(self) -> dict[str, Any]:
        """The manifest's ``vision`` entry: enough for training to rebuild the image processor."""
        return {
            "processor": str(self.path),
            "sha256": self.sha256,
            "image_token_id": self.image_token_id,
            "image_processor": self.config,
            "video_token_id": self.video_token_id,
            "video_processor": self.video_config,
        }


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize target: sides multiples of ``factor``, pixels within the bounds, aspect kept."""
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def load_processor(path: str | Path, bundle: TokenizerBundle) -> VisionProcessor:
    """The image processor of the model directory ``path``; ``bundle`` must have its placeholder tokens.

    Raises:
        InputError: no ``preprocessor_config.json``, or it (or ``video_preprocessor_config.json``) is not valid JSON.
        UsageError: a processor type tunekit cannot count tokens for, or tokens the tokenizer lacks.
    """
    root = Path(path)
    file = root / PROCESSOR_FILE
    try:
        raw = file.read_bytes()
    except OSError as exc:
        msg = f"{file}: cannot read the image processor config ({exc.strerror}); --processor takes a model directory saved by transformers"
        raise InputError(msg) from exc
    config = _json(file, raw)
    kind = config.get("image_processor_type")
    if kind not in SUPPORTED:
        msg = f"{file}: image_processor_type {kind!r} is not supported (supported: Qwen2-VL-style, {', '.join(SUPPORTED)})"
        raise UsageError(msg)
    missing = [t for t in (VISION_START, IMAGE_TOKEN, VISION_END) if bundle.token_id(t) is None]
    if missing:
        msg = f"{bundle.path}: the tokenizer lacks the vision token(s) {', '.join(missing)}"
        raise UsageError(msg)
    video_file = root / VIDEO_PROCESSOR_FILE
    # transformers' video processor falls back to the image processor's settings the same way.
    video_config = _json(video_file, video_file.read_bytes()) if video_file.is_file() else config
    image_token_id = bundle.token_id(IMAGE_TOKEN)
    assert image_token_id is not None
    image_min, image_max = _pixel_bounds(config, 56 * 56, 28 * 28 * 1280)
    video_min, video_max = _pixel_bounds(video_config, 128 * 28 * 28, 28 * 28 * 768)
    return VisionProcessor(
        path=root,
        config=config,
        patch_size=int(config.get("patch_size", 14)),
        merge_size=int(config.get("merge_size", 2)),
        temporal_patch_size=int(config.get("temporal_patch_size", 2)),
        min_pixels=image_min,
        max_pixels=image_max,
        image_token_id=image_token_id,
        sha256=hashlib.sha256(raw).hexdigest(),
        video_config=video_config,
        video_min_pixels=video_min,
        video_max_pixels=video_max,
        video_token_id=bundle.token_id(VIDEO_TOKEN),
    )


def _json(file: Path, raw: bytes) -> dict[str, Any]:
    try:
        return json.loads(raw)
    except ValueError as exc:
        msg = f"{file}: not valid JSON: {exc}"
        raise InputError(msg) from exc


def _pixel_bounds(config: dict[str, Any], low: int, high: int) -> tuple[int, int]:
    """(min, max) pixels of a saved processor config.

    ``min_pixels``/``max_pixels`` or ``size``, else the defaults of transformers' Qwen2-VL processor.
    """
    size = config.get("size") or {}
    return int(config.get("min_pixels") or size.get("shortest_edge") or low), int(config.get("max_pixels") or size.get("longest_edge") or high)


@dataclass(frozen=True)
class MediaInputs:
    """What an encoder needs to turn image and video parts into tokens.

    The processor, the media cache and the video sampling.
    """

    processor: VisionProcessor
    cache_root: Path
    max_pixels: int = MAX_PIXELS
    """Larger images (video frames) are refused before decoding (``--max-image-pixels``)."""
    video: VideoSampling = field(default_factory=VideoSampling)

    def describe(self) -> dict[str, Any]:
        """The manifest's ``vision`` entry (`VisionProcessor.describe`) with the video sampling."""
        return {**self.processor.describe(), "video_sampling": {"fps": self.video.fps, "max_frames": self.video.max_frames}}

    def resolve(self, messages: tuple[Message, ...]) -> ResolvedMedia:
        """The messages as template input and their media in order, or the first media problem.

        Each image or video block becomes its placeholder; a problem names its field path.
        """
        cache = MediaCache(self.cache_root)
        rendered: list[dict[str, str]] = []
        media: list[MediaRef] = []
        for m, message in enumerate(messages):
            text = []
            for c, part in enumerate(message.blocks()):
                if isinstance(part, str):
                    text.append(part)
                    continue
                path = f"messages[{m}].content[{c}].{part.kind}"
                got = self._video(part, cache) if part.kind == "video" else _image(part, cache, self.processor, self.max_pixels)
                if isinstance(got, MediaProblem):
                    return ResolvedMedia([], (), (path, got))
                media.append(got)
                text.append(self.processor.placeholder(got.kind))
            rendered.append({"role": message.role, "content": "".join(text)})
        return ResolvedMedia(rendered, tuple(media))

    def _video(self, part: Media, cache: MediaCache) -> MediaRef | MediaProblem:
        import numpy as np

        processor = self.processor
        if processor.video_token_id is None:
            return MediaProblem("unsupported", f"the tokenizer has no {VIDEO_TOKEN} token, so videos cannot be packed")
        got = resolve_video(
            _block(part), cache, self.video, multiple=processor.temporal_patch_size, max_pixels=self.max_pixels, resize=processor.video_size
        )
        if isinstance(got, MediaProblem):
            return got
        frames = got[1]
        frame_count, height, width, _ = frames.shape
        if problem := _aspect_problem(width, height, "video"):
            return problem
        blob = io.BytesIO()
        np.save(blob, frames, allow_pickle=False)
        return MediaRef(cache.put(blob.getvalue()), processor.video_grid(frame_count, width, height), "video")


@dataclass(frozen=True, slots=True)
class ResolvedMedia:
    """Messages ready for the chat template and their images and videos, or the (field, problem) that stops them."""

    messages: list[dict[str, str]]
    media: tuple[MediaRef, ...]
    problem: tuple[str, MediaProblem] | None = None


def _block(part: Media) -> dict[str, Any]:
    return {"format": part.format, "source": {"s3Location": {"uri": part.uri}}}


def _aspect_problem(width: int, height: int, kind: str) -> MediaProblem | None:
    if max(width, height) > MAX_ASPECT * min(width, height):
        return MediaProblem("too-large", f"{width}x{height} {kind} is more than {MAX_ASPECT} times as long as it is wide")
    return None


def _image(part: Media, cache: MediaCache, processor: VisionProcessor, max_pixels: int) -> MediaRef | MediaProblem:
    if part.kind != "image":
        return MediaProblem("unsupported", f"{part.kind} parts cannot be packed (images and videos can)")
    got = resolve_image(_block(part), cache, max_pixels=max_pixels)
    if isinstance(got, MediaProblem):
        return got
    key, image = got
    width, height = image.size
    return _aspect_problem(width, height, "image") or MediaRef(key, processor.grid(width, height))
