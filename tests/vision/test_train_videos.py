"""Vision-language training on packed video rows: the video patches are transformers' Qwen2-VL video
processor's, per-segment M-RoPE equals the model's own, a packed row gives the loss and gradients of its
segments trained alone."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.vision.conftest import PACKED_BACKENDS, assert_packed_equals_alone
from tests.vision.shapes import COLOURS, colour_record, shape_png, square_video, video_record, write_jsonl

import tunekit_tokenize as tk
from tunekit_data.media import VideoSampling
from tunekit_train.attention import flattens_rows
from tunekit_train.data import load_packed
from tunekit_train.generate import hf_tokenizer as load_tokenizer
from tunekit_train.model import load_model
from tunekit_train.vision import (
    VisionCollate,
    image_processor,
    load_image_processor,
    load_videos,
    mrope_positions,
    split_segments,
    vision_inputs,
)

torch.set_num_threads(1)


def _pack(tmp_path: Path, processor_dir: Path, n: int, *, image: bool = True) -> Path:
    """``n`` video records (8 frames of 32 or 40 pixels a side, some held still) and one image record."""
    records = []
    for i in range(n):
        colour = list(COLOURS)[i % len(COLOURS)]
        path = tmp_path / f"video-{i}.mp4"
        path.write_bytes(square_video(colour, size=32 + 8 * (i % 2), seed=i))
        records.append(video_record(str(path), colour))
    if image:
        path = tmp_path / "shape.png"
        path.write_bytes(shape_png("red", "square"))
        records.append(colour_record(str(path), "red"))
    data = write_jsonl(tmp_path / "data.jsonl", records)
    out = tmp_path / "packed"
    tk.pack_files([str(data)], tokenizer=processor_dir, processor=processor_dir, max_length=1024, out_dir=out,
                  media_cache=tmp_path / "cache", workers=1, video=VideoSampling(fps=4, max_frames=8))
    return out


def _videos(rows) -> list[tuple[bytes, np.ndarray]]:
    out = []
    for i in range(len(rows)):
        row = rows.row(i)
        out += list(zip(row["video_bytes"], np.asarray(row["video_grid_thw"]).reshape(-1, 3), strict=True))
    return out


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="transformers' video processor needs torchvision (uv run --group bench pytest)")
def test_video_patches_equal_transformers_video_processor(tmp_path, processor_dir) -> None:
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    rows = load_packed(_pack(tmp_path, processor_dir, 2, image=False))
    collate = VisionCollate.for_manifest(rows.manifest)
    settings = rows.manifest["vision"]["video_processor"]
    theirs = Qwen2VLVideoProcessor(**{key: settings[key] for key in ("size", "patch_size", "merge_size", "temporal_patch_size", "image_mean", "image_std")})
    for blob, grid in _videos(rows):
        frames = np.load(io.BytesIO(blob))
        out = theirs(videos=[torch.from_numpy(frames).permute(0, 3, 1, 2)], do_sample_frames=False, cap_pixels_per_frame=False, return_tensors="np")
        assert out["video_grid_thw"][0].tolist() == grid.tolist()
        np.testing.assert_allclose(collate.video_pixels([blob], grid, "test"), out["pixel_values_videos"], atol=1e-6)


def test_a_still_video_has_the_patches_of_its_frame_as_an_image(tmp_path, processor_dir) -> None:
    """Qwen2-VL patches an image as a video of one frame repeated over the temporal patch, so a video of
    one frame held still has that image's patches once per temporal step (transformers' image processor)."""
    rows = load_packed(_pack(tmp_path, processor_dir, 1, image=False))
    collate = VisionCollate.for_manifest(rows.manifest)
    (blob, grid), = _videos(rows)
    frame = np.load(io.BytesIO(blob))[0]
    still = io.BytesIO()
    np.save(still, np.stack([frame] * 4))
    pixels = collate.video_pixels([still.getvalue()], np.array([2, *grid[1:]]), "test")
    expected = image_processor(rows.manifest["vision"]["image_processor"])(images=[frame], return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(pixels, np.concatenate([expected, expected]), atol=1e-6)
    with pytest.raises(Exception, match="the processor gives grids"):
        collate.video_pixels([still.getvalue()], np.array([1, *grid[1:]]), "a row of 1 segments")


def test_mrope_of_videos_matches_the_models_rope_index(tmp_path, processor_dir, vlm_dir) -> None:
    rows = load_packed(_pack(tmp_path, processor_dir, 2))
    model, _ = load_model(vlm_dir, backend="sdpa", seed=0)
    collate = VisionCollate.for_manifest(rows.manifest)
    checked = 0
    for i in range(len(rows)):
        row = rows.row(i)
        starts, video_starts = np.cumsum([0, *row["seq_lens"]]), np.cumsum([0, *row["seq_videos"]])
        grids = np.asarray(row["video_grid_thw"]).reshape(-1, 3)
        for s in range(len(row["seq_lens"])):
            seg_grids = grids[video_starts[s] : video_starts[s + 1]]
            if not len(seg_grids):
                continue
            ids = row["input_ids"][starts[s] : starts[s + 1]].astype(np.int64)
            types = torch.from_numpy(2 * (ids == collate.video_token_id).astype(np.int64))[None]  # 2: video
            theirs, _ = model.model.get_rope_index(torch.from_numpy(ids)[None], types, video_grid_thw=torch.from_numpy(seg_grids.copy()))
            ours = mrope_positions(ids, {collate.video_token_id: seg_grids}, collate.merge)
            assert np.array_equal(ours, theirs[:, 0].numpy())
            assert len(set(ours[0][ids == collate.video_token_id].tolist())) == seg_grids[0][0]  # one time step per temporal patch
            checked += 1
    assert checked == 2


@pytest.mark.parametrize("backend", PACKED_BACKENDS)
def test_packed_video_row_equals_its_segments_alone(tmp_path, processor_dir, vlm_dir, backend) -> None:
    rows = load_packed(_pack(tmp_path, processor_dir, 3))
    row = max((rows.row(i) for i in range(len(rows))), key=lambda r: len(r["seq_lens"]))
    assert len(row["seq_lens"]) == 4 and sum(row["seq_videos"]) == 3 and sum(row["seq_images"]) == 1
    collate = VisionCollate.for_manifest(rows.manifest)
    model, _ = load_model(vlm_dir, backend=backend, seed=0)
    model.train(False)

    packed = collate([row], flatten=flattens_rows(backend))
    assert packed.pixel_values_videos.shape[0] == int(packed.video_grid_thw.prod(-1).sum())
    assert_packed_equals_alone(model, packed, [collate([r], flatten=False) for r in split_segments(row)], backend)


def test_generate_samples_a_video_as_ds_pack_packed_it(tmp_path, processor_dir) -> None:
    """`train generate`/`train serve` see the frames and patches training saw for the same video."""
    rows = load_packed(_pack(tmp_path, processor_dir, 2, image=False))
    collate = VisionCollate.for_manifest(rows.manifest)
    processor = load_image_processor(processor_dir)
    packed = _videos(rows)
    for i in range(2):
        (frames,) = load_videos([str(tmp_path / f"video-{i}.mp4")], processor, VideoSampling(fps=4, max_frames=8))
        blob, grid = next((b, g) for b, g in packed if np.array_equal(np.load(io.BytesIO(b)), frames))
        inputs = vision_inputs(load_tokenizer(processor_dir), processor, [{"role": "user", "content": [{"type": "video", "video": frames}]}])
        assert inputs["video_grid_thw"][0].tolist() == grid.tolist()
        np.testing.assert_allclose(inputs["pixel_values_videos"].numpy(), collate.video_pixels([blob], grid, "test"), atol=1e-6)
