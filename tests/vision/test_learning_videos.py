"""`train run` on Converse records with videos on S3: a tiny Qwen2-VL learns to name the colour of the
square in a video (held-out accuracy), the recipe's ``mm_cfg.video_fps`` / ``video_max_frames`` sampling
the frames of the raw data it packs."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tests.vision.shapes import COLOURS, square_video, video_record, write_jsonl

import tunekit_tokenize as tk
from tunekit_data.media import VideoSampling
from tunekit_train.data import load_packed
from tunekit_train.generate import load_trained
from tunekit_train.losses import trained_hidden
from tunekit_train.recipe import parse_recipe
from tunekit_train.run import run_training
from tunekit_train.vision import VisionCollate, split_segments

torch.set_num_threads(1)


def _dataset(s3, tmp_path: Path, n: int, seed: int) -> Path:
    bucket, rng, records = s3.bucket(), random.Random(seed), []
    for i in range(n):
        colour = rng.choice(list(COLOURS))
        uri = f"s3://{bucket}/videos/{seed}-{i}.mp4"
        s3.put(uri, square_video(colour, size=rng.choice((24, 32)), seed=seed * 100_000 + i))
        records.append(video_record(uri, colour))
    return write_jsonl(tmp_path / f"videos-{seed}.jsonl", records)


def _greedy_right(run_dir: Path, packed: Path) -> list[bool]:
    """Per held-out sample: does the greedy answer (the argmax at every answer position, the tokens
    greedy decoding would produce) equal the colour?"""
    model = load_trained(run_dir)
    model.train(False)
    rows = load_packed(packed)
    collate = VisionCollate.for_manifest(rows.manifest)
    right = []
    with torch.no_grad():
        for i in range(len(rows)):
            for segment in split_segments(rows.row(i)):
                hidden, head, targets = trained_hidden(model, collate([segment], flatten=False), "sdpa")
                right.append(bool(torch.equal(head(hidden).argmax(-1), targets)))
    return right


def test_tiny_vlm_learns_the_colour_in_a_video(s3, tmp_path, vlm_dir, monkeypatch) -> None:
    monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path / "cache"))
    recipe = {
        "run": {"name": "video-colours", "model_name_or_path": str(vlm_dir), "data_s3_path": str(_dataset(s3, tmp_path, 120, seed=1))},
        "training_config": {
            "max_length": 256,
            "global_batch_size": 4,
            "micro_batch_size": 4,
            "trainer": {"max_steps": 60, "log_every_n_steps": 30},
            "model": {"optim": {"lr": 3e-3, "sched": {"warmup_steps": 5, "min_lr": 1e-4}}, "mm_cfg": {"video_fps": 2, "video_max_frames": 4}},
        },
    }
    run_training(parse_recipe(recipe, source="video-colours"), output_dir=tmp_path / "run")
    held_out = tk.pack_files([str(_dataset(s3, tmp_path, 32, seed=2))], tokenizer=tmp_path / "run" / "final", processor=tmp_path / "run" / "final",
                             max_length=256, out_dir=tmp_path / "held-out", workers=1, video=VideoSampling(fps=2, max_frames=4))
    assert held_out.stats["videos"] == 32
    right = _greedy_right(tmp_path / "run", tmp_path / "held-out")
    assert len(right) == 32 and sum(right) / len(right) >= 0.9, right
