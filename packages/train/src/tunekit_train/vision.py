"""Vision-language batches: packed rows whose segments carry images and videos (``ds pack --processor``).

A row keeps its segments packed: each segment's images are in ``image_bytes`` and its videos' sampled
frames in ``video_bytes`` (with their patch grids), and its placeholder tokens are already expanded.
The collate turns them into pixel values with transformers' own image processor (built from the
settings the manifest recorded, so training needs neither the processor directory nor S3) and checks
that its grids equal the packed ones. Videos: transformers' Qwen2-VL video processor needs torchvision,
which tunekit does not install beside the CUDA torch build; the packed frames are already at their
target size, so the image processor (no resize then) normalises and patches each frame, and
`video_patches` pairs consecutive frames into temporal patches exactly as the video processor lays
them out (tests compare the two where torchvision is installed).

Qwen2-VL's multimodal rotary positions (M-RoPE: temporal, height, width) are computed per segment, so
every packed sequence sees its positions from 0 exactly as it would alone; the model takes them with
the plain per-segment text positions in front (``position_ids`` of shape ``[4, batch, L]``; the language
model splits off the first as the text positions it hands to the attention layers), and the attention
backend (`tunekit_train.attention`) keeps the segments apart. With ``sdpa_varlen`` and
``flash_attention_2`` the micro-batch is one flattened row whose ``cu_seq_lens`` reach the language
model's layers only: transformers' ``get_image_features``/``get_video_features`` drop those keyword
arguments before the vision tower, which attends within each image (or frame) by its own ``cu_seqlens``
from the grids, so no mask is built anywhere (tests compare packed rows with their segments alone under
both backends). The positions are
computed here rather than by ``model.get_rope_index`` because that works on whole rows (one sequence
each) and needs the model in the collating process; tests check the two agree segment by segment.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunekit_data.errors import InputError
from tunekit_train.attention import Backend
from tunekit_train.data import Batch, collate

VISION_KEY = "vision"


def is_vision_pack(manifest: dict[str, Any]) -> bool:
    """Whether a pack's rows carry images."""
    return VISION_KEY in manifest


def mrope_positions(ids: np.ndarray, grids: Mapping[int, np.ndarray], merge: int) -> np.ndarray:
    """Qwen2-VL's ``[3, len(ids)]`` positions of one sequence.

    Text advances all three by one per token; an image or video of grid (t, h, w) spans
    ``t * (h/merge) * (w/merge)`` tokens placed on their (time, row, column) from the current position,
    which then advances by ``max(h, w) / merge``. ``grids``: per placeholder token id (image, video), the
    grids of that kind in token order.
    """
    out = np.empty((3, len(ids)), dtype=np.int64)
    is_vision = np.isin(ids, list(grids))
    pending = {token: iter(g.reshape(-1, 3).tolist()) for token, g in grids.items()}
    cursor, offset = 0, 0
    for _ in range(sum(len(g.reshape(-1, 3)) for g in grids.values())):
        start = cursor + int(np.argmax(is_vision[cursor:]))
        t, h, w = next(pending[int(ids[start])])
        out[:, cursor:start] = offset + np.arange(start - cursor)
        offset += start - cursor
        grid = np.meshgrid(np.arange(t), np.arange(h // merge), np.arange(w // merge), indexing="ij")
        n = t * (h // merge) * (w // merge)
        out[:, start : start + n] = np.stack([g.ravel() for g in grid]) + offset
        offset += max(h, w) // merge
        cursor = start + n
    out[:, cursor:] = offset + np.arange(len(ids) - cursor)
    return out


def _no_grids() -> torch.Tensor:
    return torch.zeros(0, 3, dtype=torch.long)


@dataclass
class VisionBatch(Batch):
    """A `Batch` with its images and videos.

    ``pixel_values`` (patches of every image, in token order), their ``image_grid_thw``, the same for
    videos, and the ``[3, rows, L]`` M-RoPE positions (`mrope_positions` per segment).
    """

    pixel_values: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    image_grid_thw: torch.Tensor = field(default_factory=_no_grids)
    rope_positions: torch.Tensor = field(default_factory=lambda: torch.zeros(3, 0, 0, dtype=torch.long))
    pixel_values_videos: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    video_grid_thw: torch.Tensor = field(default_factory=_no_grids)

    def to(self, device: torch.device) -> VisionBatch:
        """The same batch on ``device``."""
        text = Batch.to(self, device)
        return VisionBatch(
            **{name: getattr(text, name) for name in Batch.__dataclass_fields__},
            pixel_values=self.pixel_values.to(device),
            image_grid_thw=self.image_grid_thw.to(device),
            rope_positions=self.rope_positions.to(device),
            pixel_values_videos=self.pixel_values_videos.to(device),
            video_grid_thw=self.video_grid_thw.to(device),
        )

    def model_inputs(self, backend: Backend, dtype: torch.dtype) -> dict[str, Any]:
        """`Batch.model_inputs` plus the images and videos; positions: text positions first, then M-RoPE's three."""
        inputs = Batch.model_inputs(self, backend, dtype)
        inputs["position_ids"] = torch.cat([self.position_ids[None], self.rope_positions])
        if len(self.image_grid_thw):
            inputs.update(pixel_values=self.pixel_values, image_grid_thw=self.image_grid_thw)
        if len(self.video_grid_thw):
            inputs.update(pixel_values_videos=self.pixel_values_videos, video_grid_thw=self.video_grid_thw)
        return inputs


@dataclass
class VisionCollate:
    """Builds `VisionBatch` micro-batches from a vision pack's rows (picklable, for DataLoader workers)."""

    vision: dict[str, Any]
    """The manifest's ``vision`` entry."""
    merge: int
    _processor: Any = field(default=None, repr=False)
    _frame_processor: Any = field(default=None, repr=False)

    @classmethod
    def for_manifest(cls, manifest: dict[str, Any]) -> VisionCollate:
        """The collate of a vision pack."""
        vision = manifest[VISION_KEY]
        return cls(vision, int(vision["image_processor"].get("merge_size", 2)))

    @property
    def image_token_id(self) -> int:
        """The id of the (expanded) image placeholder token."""
        return int(self.vision["image_token_id"])

    @property
    def video_token_id(self) -> int | None:
        """The id of the (expanded) video placeholder token; None in packs made before videos were."""
        token = self.vision.get("video_token_id")
        return None if token is None else int(token)

    def pixels(self, blobs: list[bytes], grids: np.ndarray, where: str) -> np.ndarray:
        """Pixel patches of ``blobs`` (transformers' processor); InputError when its grids differ from the pack's."""
        from PIL import Image

        if self._processor is None:
            self._processor = image_processor(self.vision["image_processor"])
        images = [Image.open(io.BytesIO(blob)).convert("RGB") for blob in blobs]
        out = self._processor(images=images, return_tensors="np")
        _check_grids(out["image_grid_thw"], grids, where)
        return out["pixel_values"]

    def video_pixels(self, blobs: list[bytes], grids: np.ndarray, where: str) -> np.ndarray:
        """Pixel patches of videos' packed frames (``.npy`` blobs).

        Laid out as transformers' Qwen2-VL video processor lays them out; InputError when the grids
        differ from the pack's.
        """
        settings = self.vision.get("video_processor") or self.vision["image_processor"]
        if self._frame_processor is None:
            self._frame_processor = FrameProcessor(settings)
        patches, found = zip(*(self._frame_processor(np.load(io.BytesIO(blob), allow_pickle=False)) for blob in blobs), strict=True)
        _check_grids(np.array(found), grids, where)
        return np.concatenate(patches)

    def __call__(self, rows: list[dict[str, np.ndarray]], *, flatten: bool, pad_id: int = 0) -> VisionBatch:
        """`collate` the rows' tokens, with their images' pixels, grids and M-RoPE positions."""
        text = collate(rows, flatten=flatten, pad_id=pad_id)
        rope = text.position_ids[None].repeat(3, 1, 1)  # padding and text-only segments: text positions
        media: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {"image": ([], []), "video": ([], [])}
        at = [0] * text.input_ids.shape[0]  # next token of each batch row (one row when flattened)
        for r, row in enumerate(rows):
            b = 0 if flatten else r
            kinds = {kind: _RowMedia(row, kind) for kind in ("image", "video")}
            for s, n in enumerate(row["seq_lens"].tolist()):
                start, at[b] = at[b], at[b] + n
                seg_grids = {self._token(kind): media_of.segment(s) for kind, media_of in kinds.items()}
                if any(len(g) for g in seg_grids.values()):
                    segment = text.input_ids[b, start : start + n].numpy()
                    rope[:, b, start : start + n] = torch.from_numpy(mrope_positions(segment, seg_grids, self.merge))
            where = f"a row of {len(row['seq_lens'])} segments"
            for kind, media_of in kinds.items():
                if len(media_of.grids):
                    convert = self.pixels if kind == "image" else self.video_pixels
                    media[kind][0].append(convert(media_of.blobs, media_of.grids, where))
                    media[kind][1].append(media_of.grids)
        (images, image_grids), (videos, video_grids) = media["image"], media["video"]
        return VisionBatch(
            **{name: getattr(text, name) for name in Batch.__dataclass_fields__},
            pixel_values=_cat(images, torch.zeros(0)),
            image_grid_thw=_cat(image_grids, _no_grids(), np.int64),
            rope_positions=rope,
            pixel_values_videos=_cat(videos, torch.zeros(0)),
            video_grid_thw=_cat(video_grids, _no_grids(), np.int64),
        )

    def _token(self, kind: str) -> int:
        token = self.image_token_id if kind == "image" else self.video_token_id
        return -1 if token is None else token  # -1: no token matches; such packs hold no videos


class _RowMedia:
    """One kind's media (image or video) of a packed row: blobs, grids, and where each segment's start."""

    def __init__(self, row: dict[str, np.ndarray], kind: str) -> None:
        counts = row.get(f"seq_{kind}s")  # absent in packs made before videos were
        counts = np.zeros(len(row["seq_lens"]), dtype=np.int64) if counts is None else counts
        self.blobs: list[bytes] = list(row.get(f"{kind}_bytes", []))
        self.grids = np.asarray(row.get(f"{kind}_grid_thw", []), dtype=np.int64).reshape(-1, 3)
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def segment(self, s: int) -> np.ndarray:
        """The grids of segment ``s``."""
        return self.grids[self.starts[s] : self.starts[s + 1]]


def _cat(parts: list[np.ndarray], empty: torch.Tensor, dtype: Any = None) -> torch.Tensor:
    if not parts:
        return empty
    joined = np.concatenate(parts)
    return torch.from_numpy(joined.astype(dtype) if dtype is not None else joined)


def _check_grids(found: np.ndarray, packed: np.ndarray, where: str) -> None:
    if not np.array_equal(np.asarray(found).reshape(-1), packed.reshape(-1)):
        msg = f"{where}: the processor gives grids {np.asarray(found).reshape(-1, 3).tolist()}, the pack has {packed.reshape(-1, 3).tolist()} (packed with other processor settings?)"
        raise InputError(msg)


class FrameProcessor:
    """A video's patches and grid from its sampled frames, as Qwen2-VL's video processor makes them.

    transformers' image processor (Pillow, no torchvision) at temporal patch 1 resizes, normalises and
    patches each frame; `video_patches` pairs consecutive frames into temporal patches.
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        self.temporal = int(settings.get("temporal_patch_size", 2))
        self._frames = image_processor({**settings, "temporal_patch_size": 1})

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
        """(patches, (t, h, w) grid) of ``frames`` ``[n, height, width, 3]`` uint8, n a multiple of the temporal patch."""
        out = self._frames(images=list(frames), return_tensors="np")
        _, h, w = out["image_grid_thw"][0].tolist()
        return video_patches(out["pixel_values"], len(frames), self.temporal), (len(frames) // self.temporal, h, w)


def video_patches(frame_patches: np.ndarray, frames: int, temporal: int) -> np.ndarray:
    """One video's patches from its per-frame patches.

    Per-frame patches ``[frames * n, C * p * p]`` (the image processor at temporal patch 1) become
    ``[frames / temporal * n, C * temporal * p * p]``: each patch holds ``temporal`` consecutive frames
    of its place, channel-major, as Qwen2-VL's video processor flattens them.
    """
    per_frame = frame_patches.shape[0] // frames
    channels_pp = frame_patches.shape[1]
    grouped = frame_patches.reshape(frames // temporal, temporal, per_frame, 3, channels_pp // 3)
    return grouped.transpose(0, 2, 3, 1, 4).reshape(frames // temporal * per_frame, temporal * channels_pp)


def load_images(refs: list[str]) -> list[Any]:
    """Pillow images of local paths or ``s3://`` URIs, fetched through the media cache.

    Raises:
        InputError: an image cannot be fetched or decoded (the message names it).
    """
    from tunekit_data.media import MediaCache, resolve_image

    cache = MediaCache()
    return [_loaded(ref, resolve_image({"source": {"s3Location": {"uri": ref}}}, cache))[1] for ref in refs]


def load_videos(refs: list[str], processor: Any, sampling: Any = None) -> list[np.ndarray]:
    """The sampled frames (`sample_video`: ``sampling``, default `VideoSampling`'s) of videos at local paths or ``s3://`` URIs.

    Raises:
        InputError: a video cannot be fetched or decoded (the message names it).
    """
    return [_loaded(ref, sample_video({"source": {"s3Location": {"uri": ref}}}, processor, sampling)) for ref in refs]


def _loaded(ref: str, got: Any) -> Any:
    from tunekit_data.media import MediaProblem

    if isinstance(got, MediaProblem):
        msg = f"{ref}: [{got.kind}] {got.message}"
        raise InputError(msg)
    return got


def image_processor(settings: dict[str, Any]) -> Any:
    """transformers' Qwen2-VL image processor (Pillow backend: no torchvision) from its saved settings."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil.from_dict(settings)


def load_image_processor(directory: Path) -> Any | None:
    """The image processor saved in a model directory, or None for a text-only model."""
    from tunekit_tokenize.vision import PROCESSOR_FILE

    file = directory / PROCESSOR_FILE
    return image_processor(json.loads(file.read_text(encoding="utf-8"))) if file.is_file() else None


def vision_inputs(tokenizer: Any, processor: Any, messages: list[dict[str, Any]], *, chat_template: str | None = None) -> dict[str, torch.Tensor]:
    """Model inputs for a prompt with images and videos, as Qwen2-VL's processor makes them.

    The chat template renders each image (video) part as its placeholder, which is then repeated once per
    image (video) token.

    ``messages``: ``{"role", "content"}`` with ``content`` a string or a list of ``{"type": "text",
    "text"}`` / ``{"type": "image", "image": PIL.Image}`` / ``{"type": "video", "video": frames}`` parts
    (``frames``: `sample_video`'s). The frames go through the image ``processor``'s settings (`FrameProcessor`);
    a pack's videos went through the video processor's, which the tiny test model shares.
    """
    from tunekit_tokenize.vision import IMAGE_TOKEN, VIDEO_TOKEN, VISION_END, VISION_START

    media: dict[str, list[Any]] = {"image": [], "video": []}
    turns = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            pieces = []
            for part in content:
                if part["type"] in media:
                    media[part["type"]].append(part[part["type"]])
                    pieces.append(f"{VISION_START}{IMAGE_TOKEN if part['type'] == 'image' else VIDEO_TOKEN}{VISION_END}")
                else:
                    pieces.append(part["text"])
            content = "".join(pieces)
        turns.append({"role": message["role"], "content": content})
    text = tokenizer.apply_chat_template(turns, chat_template=chat_template, add_generation_prompt=True, tokenize=False)
    merge = int(getattr(processor, "merge_size", 2))
    extra: dict[str, torch.Tensor] = {}
    if media["image"]:
        out = processor(images=[image.convert("RGB") for image in media["image"]], return_tensors="pt")
        text = _expand(text, IMAGE_TOKEN, out["image_grid_thw"], merge)
        extra = {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
    if media["video"]:
        frames = FrameProcessor(processor.to_dict())
        patches, grids = zip(*(frames(video) for video in media["video"]), strict=True)
        video_grids = torch.tensor(grids, dtype=torch.long)
        text = _expand(text, VIDEO_TOKEN, video_grids, merge)
        extra.update(pixel_values_videos=torch.from_numpy(np.concatenate(patches)), video_grid_thw=video_grids)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    if extra:  # transformers' token types: 1 image, 2 video
        image_id, video_id = tokenizer.convert_tokens_to_ids([IMAGE_TOKEN, VIDEO_TOKEN])
        extra["mm_token_type_ids"] = (ids == image_id).long() + 2 * (ids == video_id).long()
    return {"input_ids": ids, **extra}


def _expand(text: str, token: str, grids: torch.Tensor, merge: int) -> str:
    # Qwen2-VL's processor does this replacement: one placeholder per image (video), repeated per token.
    counts = iter((grids.prod(-1) // merge**2).tolist())
    parts = text.split(token)
    return parts[0] + "".join(token * next(counts) + rest for rest in parts[1:])


def sample_video(block: dict[str, Any], processor: Any, sampling: Any = None) -> Any:
    """The sampled RGB frames of a Converse ``video`` block value, or the `tunekit_data.media.MediaProblem` that stops it.

    Sampled as ``ds pack`` samples them: ``sampling`` (default `VideoSampling`'s), a multiple of the processor's
    temporal patch.
    """
    from tunekit_data.media import MediaCache, VideoSampling, resolve_video

    temporal = int(getattr(processor, "temporal_patch_size", 2))
    got = resolve_video(block, MediaCache(), sampling or VideoSampling(), multiple=temporal)
    return got if not isinstance(got, tuple) else got[1]


def batch_builder(manifest: dict[str, Any], *, pairs: bool) -> Any:
    """The micro-batch builder of a pack.

    `collate` or `VisionCollate` for its tokens, wrapped by `collate_pairs` for DPO.
    """
    from tunekit_train.dpo import collate_pairs

    tokens = VisionCollate.for_manifest(manifest) if is_vision_pack(manifest) else collate
    return functools.partial(collate_pairs, build=tokens) if pairs else tokens


def split_segments(row: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Each segment of a packed vision row as a row of its own, with its images and videos.

    The unpacked, one-sample-per-row layout: padding instead of packing.
    """
    starts = np.cumsum([0, *row["seq_lens"]])
    kinds = [kind for kind in ("image", "video") if f"seq_{kind}s" in row]
    media = {kind: _RowMedia(row, kind) for kind in kinds}
    out = []
    for s, n in enumerate(row["seq_lens"].tolist()):
        tokens = slice(starts[s], starts[s + 1])
        segment = {name: row[name][tokens] for name in ("input_ids", "labels", "position_ids")}
        segment["seq_lens"] = np.array([n], dtype=np.int32)
        for kind, media_of in media.items():
            first, last = media_of.starts[s], media_of.starts[s + 1]
            segment[f"seq_{kind}s"] = np.array([last - first], dtype=np.int32)
            segment[f"{kind}_bytes"] = row[f"{kind}_bytes"][first:last]
            segment[f"{kind}_grid_thw"] = media_of.grids[first:last].reshape(-1)
        out.append(segment)
    return out
