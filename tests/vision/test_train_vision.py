"""Vision-language training on packed rows: per-segment M-RoPE equals the model's own, a packed row gives
the loss and gradients of its segments trained alone, the vision tower stays frozen by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.vision.conftest import PACKED_BACKENDS, assert_packed_equals_alone, loss_and_grads
from tests.vision.shapes import COLOURS, colour_record, shape_png, write_jsonl

import tunekit_tokenize as tk
from tunekit_train.attention import flattens_rows
from tunekit_train.data import load_packed
from tunekit_train.model import load_model
from tunekit_train.vision import VisionCollate, mrope_positions, split_segments

torch.set_num_threads(1)


def _pack(tmp_path: Path, processor_dir: Path, n: int, *, max_length: int, seed: int = 0, two_images: bool = False) -> Path:
    records = []
    for i in range(n):
        colour = list(COLOURS)[(i + seed) % len(COLOURS)]
        path = tmp_path / f"img-{seed}-{i}.png"
        path.write_bytes(shape_png(colour, ("circle", "square", "triangle")[i % 3], (32 + 8 * (i % 2), 32), seed=seed * 1000 + i))
        record = colour_record(str(path), colour)
        if two_images and i % 2:
            record["messages"][0]["content"].insert(1, record["messages"][0]["content"][0])
        records.append(record)
    data = write_jsonl(tmp_path / f"data-{seed}.jsonl", records)
    out = tmp_path / f"packed-{seed}-{max_length}"
    tk.pack_files([str(data)], tokenizer=processor_dir, processor=processor_dir, max_length=max_length, out_dir=out, media_cache=tmp_path / "cache", workers=1)
    return out


def test_mrope_matches_the_models_rope_index(tmp_path, processor_dir, vlm_dir) -> None:
    rows = load_packed(_pack(tmp_path, processor_dir, 2, max_length=512, two_images=True))
    model, _ = load_model(vlm_dir, backend="sdpa", seed=0)
    collate = VisionCollate.for_manifest(rows.manifest)
    checked = 0
    for i in range(len(rows)):
        row = rows.row(i)
        starts, image_starts = np.cumsum([0, *row["seq_lens"]]), np.cumsum([0, *row["seq_images"]])
        grids = np.asarray(row["image_grid_thw"]).reshape(-1, 3)
        for s in range(len(row["seq_lens"])):
            ids = row["input_ids"][starts[s] : starts[s + 1]].astype(np.int64)
            seg_grids = grids[image_starts[s] : image_starts[s + 1]]
            types = torch.from_numpy((ids == collate.image_token_id).astype(np.int64))[None]
            theirs, _ = model.model.get_rope_index(torch.from_numpy(ids)[None], types, image_grid_thw=torch.from_numpy(seg_grids.astype(np.int64)))
            ours = mrope_positions(ids, {collate.image_token_id: seg_grids}, collate.merge)
            assert np.array_equal(ours, theirs[:, 0].numpy())
            checked += len(seg_grids)
    assert checked == 3


@pytest.mark.parametrize("backend", PACKED_BACKENDS)
def test_packed_equals_unpacked_loss_and_gradients(tmp_path, processor_dir, vlm_dir, backend) -> None:
    rows = load_packed(_pack(tmp_path, processor_dir, 4, max_length=160, two_images=True))
    batch_rows = [rows.row(i) for i in range(len(rows))]
    assert len(batch_rows) >= 2 and sum(len(r["seq_lens"]) for r in batch_rows) == 4
    collate = VisionCollate.for_manifest(rows.manifest)
    model, _ = load_model(vlm_dir, backend=backend, seed=0)
    model.train(False)

    # the rows of one micro-batch: padded rows with the block-diagonal mask, or one flattened row of 4 segments
    alone = [segment for row in batch_rows for segment in split_segments(row)]
    assert_packed_equals_alone(model, collate(batch_rows, flatten=flattens_rows(backend)), [collate([r], flatten=False) for r in alone], backend)
    # the segments as rows of their own, padded into one micro-batch: the same sums again
    alone_loss, _ = loss_and_grads(model, [collate([r], flatten=False) for r in alone])
    padded_loss, _ = loss_and_grads(model, [collate(alone, flatten=False)])
    assert padded_loss == pytest.approx(alone_loss, rel=1e-5)
