"""Vision-language batches: packed rows whose segments carry images (``ds pack --processor``).

A row keeps its segments packed: each segment's images are in ``image_bytes`` (with their patch grids)
and its image placeholder tokens are already expanded. The collate turns the images into pixel values
with transformers' own image processor (built from the settings the manifest recorded, so training
needs neither the processor directory nor S3) and checks that its grids equal the packed ones.

Qwen2-VL's multimodal rotary positions (M-RoPE: temporal, height, width) are computed per segment, so
every packed sequence sees its positions from 0 exactly as it would alone; the model takes them with
the plain per-segment text positions in front (``position_ids`` of shape ``[4, batch, L]``), and the
block-diagonal attention (`tunekit_train.attention`) keeps the segments apart. The positions are
computed here rather than by ``model.get_rope_index`` because that works on whole rows (one sequence
each) and needs the model in the collating process; tests check the two agree segment by segment.
"""

from __future__ import annotations

import functools
import io
import json
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


def mrope_positions(ids: np.ndarray, image_token_id: int, grids: np.ndarray, merge: int) -> np.ndarray:
    """Qwen2-VL's ``[3, len(ids)]`` positions of one sequence.

    Text advances all three by one per token; an image of grid (t, h, w) spans ``t * (h/merge) * (w/merge)``
    tokens placed on their (time, row, column) from the current position, which then advances by
    ``max(h, w) / merge``.
    """
    out = np.empty((3, len(ids)), dtype=np.int64)
    is_image = ids == image_token_id
    cursor, offset = 0, 0
    for t, h, w in grids.reshape(-1, 3).tolist():
        start = cursor + int(np.argmax(is_image[cursor:]))
        out[:, cursor:start] = offset + np.arange(start - cursor)
        offset += start - cursor
        grid = np.meshgrid(np.arange(t), np.arange(h // merge), np.arange(w // merge), indexing="ij")
        n = t * (h // merge) * (w // merge)
        out[:, start : start + n] = np.stack([g.ravel() for g in grid]) + offset
        offset += max(h, w) // merge
        cursor = start + n
    out[:, cursor:] = offset + np.arange(len(ids) - cursor)
    return out


@dataclass
class VisionBatch(Batch):
    """A `Batch` with its images.

    ``pixel_values`` (patches of every image, in token order), their ``image_grid_thw`` and the
    ``[3, rows, L]`` M-RoPE positions (`mrope_positions` per segment).
    """

    pixel_values: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    image_grid_thw: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 3, dtype=torch.long))
    rope_positions: torch.Tensor = field(default_factory=lambda: torch.zeros(3, 0, 0, dtype=torch.long))

    def to(self, device: torch.device) -> VisionBatch:
        """The same batch on ``device``."""
        text = Batch.to(self, device)
        return VisionBatch(
            **{name: getattr(text, name) for name in Batch.__dataclass_fields__},
            pixel_values=self.pixel_values.to(device),
            image_grid_thw=self.image_grid_thw.to(device),
            rope_positions=self.rope_positions.to(device),
        )

    def model_inputs(self, backend: Backend, dtype: torch.dtype) -> dict[str, Any]:
        """`Batch.model_inputs` plus the images; positions: text positions first, then M-RoPE's three."""
        inputs = Batch.model_inputs(self, backend, dtype)
        inputs["position_ids"] = torch.cat([self.position_ids[None], self.rope_positions])
        if len(self.image_grid_thw):
            inputs.update(pixel_values=self.pixel_values, image_grid_thw=self.image_grid_thw)
        return inputs


@dataclass
class VisionCollate:
    """Builds `VisionBatch` micro-batches from a vision pack's rows (picklable, for DataLoader workers)."""

    vision: dict[str, Any]
    """The manifest's ``vision`` entry."""
    merge: int
    _processor: Any = field(default=None, repr=False)

    @classmethod
    def for_manifest(cls, manifest: dict[str, Any]) -> VisionCollate:
        """The collate of a vision pack."""
        vision = manifest[VISION_KEY]
        return cls(vision, int(vision["image_processor"].get("merge_size", 2)))

    @property
    def image_token_id(self) -> int:
        """The id of the (expanded) image placeholder token."""
        return int(self.vision["image_token_id"])

    def pixels(self, blobs: list[bytes], grids: np.ndarray, where: str) -> np.ndarray:
        """Pixel patches of ``blobs`` (transformers' processor); InputError when its grids differ from the pack's."""
        from PIL import Image

        if self._processor is None:
            self._processor = image_processor(self.vision["image_processor"])
        images = [Image.open(io.BytesIO(blob)).convert("RGB") for blob in blobs]
        out = self._processor(images=images, return_tensors="np")
        if not np.array_equal(out["image_grid_thw"].reshape(-1), grids.reshape(-1)):
            msg = f"{where}: the image processor gives grids {out['image_grid_thw'].tolist()}, the pack has {grids.reshape(-1, 3).tolist()} (packed with other processor settings?)"
            raise InputError(msg)
        return out["pixel_values"]

    def __call__(self, rows: list[dict[str, np.ndarray]], *, flatten: bool, pad_id: int = 0) -> VisionBatch:
        """`collate` the rows' tokens, with their images' pixels, grids and M-RoPE positions."""
        text = collate(rows, flatten=flatten, pad_id=pad_id)
        rope = text.position_ids[None].repeat(3, 1, 1)  # padding and text-only segments: text positions
        pixels, grids = [], []
        at = [0] * text.input_ids.shape[0]  # next token of each batch row (one row when flattened)
        for r, row in enumerate(rows):
            b = 0 if flatten else r
            image_starts = np.concatenate([[0], np.cumsum(row["seq_images"])])
            row_grids = np.asarray(row["image_grid_thw"]).reshape(-1, 3)
            for s, n in enumerate(row["seq_lens"].tolist()):
                start, at[b] = at[b], at[b] + n
                seg_grids = row_grids[image_starts[s] : image_starts[s + 1]]
                if len(seg_grids):
                    segment = text.input_ids[b, start : start + n].numpy()
                    rope[:, b, start : start + n] = torch.from_numpy(mrope_positions(segment, self.image_token_id, seg_grids, self.merge))
            if len(row_grids):
                pixels.append(self.pixels(list(row["image_bytes"]), row_grids, f"a row of {len(row['seq_lens'])} segments"))
                grids.append(row_grids)
        return VisionBatch(
            **{name: getattr(text, name) for name in Batch.__dataclass_fields__},
            pixel_values=torch.from_numpy(np.concatenate(pixels)) if pixels else torch.zeros(0),
            image_grid_thw=torch.from_numpy(np.concatenate(grids).astype(np.int64)) if grids else torch.zeros(0, 3, dtype=torch.long),
            rope_positions=rope,
        )


def load_images(refs: list[str]) -> list[Any]:
    """Pillow images of local paths or ``s3://`` URIs, fetched through the media cache.

    Raises:
        InputError: an image cannot be fetched or decoded (the message names it).
    """
    from tunekit_data.media import MediaCache, MediaProblem, resolve_image

    cache, images = MediaCache(), []
    for ref in refs:
        got = resolve_image({"source": {"s3Location": {"uri": ref}}}, cache)
        if isinstance(got, MediaProblem):
            msg = f"{ref}: [{got.kind}] {got.message}"
            raise InputError(msg)
        images.append(got[1])
    return images


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
    """Model inputs for a prompt with images, as Qwen2-VL's processor makes them.

    The chat template renders each image part as the placeholder, which is then repeated once per image token.

    ``messages``: ``{"role", "content"}`` with ``content`` a string or a list of ``{"type": "text",
    "text"}`` / ``{"type": "image", "image": PIL.Image}`` parts.
    """
    from tunekit_tokenize.vision import IMAGE_TOKEN, VISION_END, VISION_START

    images, turns = [], []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            pieces = []
            for part in content:
                if part["type"] == "image":
                    images.append(part["image"].convert("RGB"))
                    pieces.append(f"{VISION_START}{IMAGE_TOKEN}{VISION_END}")
                else:
                    pieces.append(part["text"])
            content = "".join(pieces)
        turns.append({"role": message["role"], "content": content})
    text = tokenizer.apply_chat_template(turns, chat_template=chat_template, add_generation_prompt=True, tokenize=False)
    extra: dict[str, torch.Tensor] = {}
    if images:
        out = processor(images=images, return_tensors="pt")
        merge = int(getattr(processor, "merge_size", 2))
        counts = iter((out["image_grid_thw"].prod(-1) // merge**2).tolist())
        # Qwen2-VL's processor does this replacement: one placeholder per image, repeated per image token.
        parts = text.split(IMAGE_TOKEN)
        text = parts[0] + "".join(IMAGE_TOKEN * next(counts) + rest for rest in parts[1:])
        extra = {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if images:
        extra["mm_token_type_ids"] = (ids == image_id).long()
    return {"input_ids": ids, **extra}


def batch_builder(manifest: dict[str, Any], *, pairs: bool) -> Any:
    """The micro-batch builder of a pack.

    `collate` or `VisionCollate` for its tokens, wrapped by `collate_pairs` for DPO.
    """
    from tunekit_train.dpo import collate_pairs

    tokens = VisionCollate.for_manifest(manifest) if is_vision_pack(manifest) else collate
    return functools.partial(collate_pairs, build=tokens) if pairs else tokens


def split_segments(row: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Each segment of a packed vision row as a row of its own, with its images.

    The unpacked, one-sample-per-row layout: padding instead of packing.
    """
    starts, image_starts = np.cumsum([0, *row["seq_lens"]]), np.cumsum([0, *row["seq_images"]])
    grids = np.asarray(row["image_grid_thw"]).reshape(-1, 3)
    out = []
    for s, n in enumerate(row["seq_lens"].tolist()):
        tokens, images = slice(starts[s], starts[s + 1]), slice(image_starts[s], image_starts[s + 1])
        out.append({
            **{name: row[name][tokens] for name in ("input_ids", "labels", "position_ids")},
            "seq_lens": np.array([n], dtype=np.int32),
            "seq_images": np.array([row["seq_images"][s]], dtype=np.int32),
            "image_bytes": row["image_bytes"][images],
            "image_grid_thw": grids[images].reshape(-1),
        })
    return out
