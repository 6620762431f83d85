"""Images in packed rows: how many tokens each image becomes, and which images a record holds.

A vision-language model's processor directory (``ds pack --processor DIR``) holds its image processor
settings (``preprocessor_config.json``) and its tokenizer. Qwen2-VL-style processors (Qwen2-VL,
Qwen2.5-VL) resize an image so both sides are multiples of ``patch_size * merge_size`` with its pixel
count within ``[min_pixels, max_pixels]`` (the aspect ratio kept), cut it into ``patch_size`` patches
(grid ``t x h x w``, ``t = 1`` for an image), and the vision tower merges ``merge_size**2`` patches into
one language-model token. So the prompt's single image placeholder token becomes ``h * w / merge**2``
copies, and packing counts those expanded lengths.

The grid arithmetic (`smart_resize`) is written here rather than taken from transformers because every
transformers image processor imports torch (the default Qwen2-VL one also torchvision), and ``ds pack``
never imports torch. Tests check it against transformers' processor; training computes the pixel values
with transformers itself and checks that its grid equals the packed one.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunekit_data.errors import InputError, UsageError
from tunekit_data.examples import Media, Message
from tunekit_data.media import MediaCache, MediaProblem, resolve_image
from tunekit_data.media.images import MAX_PIXELS
from tunekit_tokenize.tokenizer import TokenizerBundle

PROCESSOR_FILE = "preprocessor_config.json"
SUPPORTED = ("Qwen2VLImageProcessor", "Qwen2VLImageProcessorFast", "Qwen2VLImageProcessorPil")
# Qwen2-VL's chat template writes an image as these three tokens; the middle one is expanded.
VISION_START, IMAGE_TOKEN, VISION_END = "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"
MAX_ASPECT = 200  # Qwen2-VL refuses more elongated images


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One image of a sequence: its content key in the media cache and its patch grid (t, h, w)."""

    key: str
    grid: tuple[int, int, int]


@dataclass(frozen=True)
class VisionProcessor:
    """A Qwen2-VL-style image processor's settings, and the image placeholder token of its tokenizer."""

    path: Path
    config: dict[str, Any]
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    min_pixels: int
    max_pixels: int
    image_token_id: int
    sha256: str

    @property
    def placeholder(self) -> str:
        """The text an image block renders as, before expansion."""
        return f"{VISION_START}{IMAGE_TOKEN}{VISION_END}"

    def grid(self, width: int, height: int) -> tuple[int, int, int]:
        """The (t, h, w) patch grid of a ``width x height`` image after `smart_resize`."""
        factor = self.patch_size * self.merge_size
        resized_h, resized_w = smart_resize(height, width, factor, self.min_pixels, self.max_pixels)
        return 1, resized_h // self.patch_size, resized_w // self.patch_size

    def tokens(self, grid: tuple[int, int, int]) -> int:
        """Language-model tokens an image of ``grid`` becomes."""
        t, h, w = grid
        return t * h * w // self.merge_size**2

    def describe(self) -> dict[str, Any]:
        """The manifest's ``vision`` entry: enough for training to rebuild the image processor."""
        return {"processor": str(self.path), "sha256": self.sha256, "image_token_id": self.image_token_id, "image_processor": self.config}


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
        InputError: no ``preprocessor_config.json``, or it is not valid JSON.
        UsageError: a processor type tunekit cannot count tokens for, or tokens the tokenizer lacks.
    """
    root = Path(path)
    file = root / PROCESSOR_FILE
    try:
        raw = file.read_bytes()
        config = json.loads(raw)
    except OSError as exc:
        msg = f"{file}: cannot read the image processor config ({exc.strerror}); --processor takes a model directory saved by transformers"
        raise InputError(msg) from exc
    except ValueError as exc:
        msg = f"{file}: not valid JSON: {exc}"
        raise InputError(msg) from exc
    kind = config.get("image_processor_type")
    if kind not in SUPPORTED:
        msg = f"{file}: image_processor_type {kind!r} is not supported (supported: Qwen2-VL-style, {', '.join(SUPPORTED)})"
        raise UsageError(msg)
    missing = [t for t in (VISION_START, IMAGE_TOKEN, VISION_END) if bundle.token_id(t) is None]
    if missing:
        msg = f"{bundle.path}: the tokenizer lacks the vision token(s) {', '.join(missing)}"
        raise UsageError(msg)
    size = config.get("size") or {}
    image_token_id = bundle.token_id(IMAGE_TOKEN)
    assert image_token_id is not None
    return VisionProcessor(
        path=root,
        config=config,
        patch_size=int(config.get("patch_size", 14)),
        merge_size=int(config.get("merge_size", 2)),
        temporal_patch_size=int(config.get("temporal_patch_size", 2)),
        min_pixels=int(config.get("min_pixels") or size.get("shortest_edge") or 56 * 56),
        max_pixels=int(config.get("max_pixels") or size.get("longest_edge") or 28 * 28 * 1280),
        image_token_id=image_token_id,
        sha256=hashlib.sha256(raw).hexdigest(),
    )


@dataclass(frozen=True)
class ImageInputs:
    """What an encoder needs to turn image parts into tokens: the processor and the media cache."""

    processor: VisionProcessor
    cache_root: Path
    max_pixels: int = MAX_PIXELS
    """Larger images are refused before decoding (``--max-image-pixels``)."""

    def resolve(self, messages: tuple[Message, ...]) -> ResolvedImages:
        """The messages as template input (each image block replaced by the placeholder) and their images
        in order, or the first media problem with its field path."""
        cache = MediaCache(self.cache_root)
        rendered: list[dict[str, str]] = []
        images: list[ImageRef] = []
        for m, message in enumerate(messages):
            text = []
            for c, part in enumerate(message.blocks()):
                if isinstance(part, str):
                    text.append(part)
                    continue
                field = f"messages[{m}].content[{c}].{part.kind}"
                got = _image(part, cache, self.processor, self.max_pixels)
                if isinstance(got, MediaProblem):
                    return ResolvedImages([], (), (field, got))
                images.append(got)
                text.append(self.processor.placeholder)
            rendered.append({"role": message.role, "content": "".join(text)})
        return ResolvedImages(rendered, tuple(images))


@dataclass(frozen=True, slots=True)
class ResolvedImages:
    """Messages ready for the chat template and their images, or the (field, problem) that stops them."""

    messages: list[dict[str, str]]
    images: tuple[ImageRef, ...]
    problem: tuple[str, MediaProblem] | None = None


def _image(part: Media, cache: MediaCache, processor: VisionProcessor, max_pixels: int) -> ImageRef | MediaProblem:
    if part.kind != "image":
        return MediaProblem("unsupported", f"{part.kind} parts cannot be packed yet (images only)")
    got = resolve_image({"format": part.format, "source": {"s3Location": {"uri": part.uri}}}, cache, max_pixels=max_pixels)
    if isinstance(got, MediaProblem):
        return got
    key, image = got
    width, height = image.size
    if max(width, height) > MAX_ASPECT * min(width, height):
        return MediaProblem("too-large", f"{width}x{height} image is more than {MAX_ASPECT} times as long as it is wide")
    return ImageRef(key, processor.grid(width, height))
