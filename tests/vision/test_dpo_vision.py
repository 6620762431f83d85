"""Image DPO through `train run`: Nova preference records whose prompt holds an image on S3 (chosen: the
shape's colour, rejected: another colour); the trained policy ranks the chosen answer higher on held-out
pairs (at the random start about half). The learning test takes about a minute (slow); the default suite
runs two steps of LoRA DPO with precomputed reference log-probs over image rows."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.vision.shapes import COLOURS, SHAPES, image_block, shape_png, write_jsonl

import tunekit_tokenize as tk
from tunekit_train.attention import flattens_rows
from tunekit_train.data import BatchStream, load_packed
from tunekit_train.dpo import segment_logps
from tunekit_train.generate import load_trained
from tunekit_train.model import load_model
from tunekit_train.recipe import parse_recipe
from tunekit_train.run import run_training
from tunekit_train.vision import batch_builder

torch.set_num_threads(1)


def _pairs(s3, n: int, seed: int) -> list[dict]:
    bucket, rng, out = s3.bucket(), random.Random(seed), []
    for i in range(n):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        wrong = rng.choice([c for c in COLOURS if c != colour])
        uri = f"s3://{bucket}/dpo/{seed}-{i}.png"
        s3.put(uri, shape_png(colour, shape, seed=seed * 100_000 + i))
        out.append({
            "schemaVersion": "bedrock-conversation-2024",
            "messages": [
                {"role": "user", "content": [image_block(uri), {"text": "What colour is the shape?"}]},
                {"role": "assistant", "candidates": [
                    {"content": [{"text": colour}], "preferenceLabel": "preferred"},
                    {"content": [{"text": wrong}], "preferenceLabel": "non-preferred"},
                ]},
            ],
        })
    return out


@torch.no_grad()
def _ranking(model: torch.nn.Module, packed: Path) -> float:
    rows = load_packed(packed)
    stream = BatchStream(rows, global_batch=4, micro_batch=4, seed=0, flatten=False, build=batch_builder(rows.manifest, pairs=True))
    model.eval()
    logps = np.concatenate([segment_logps(model, batch, "sdpa").numpy() for batch in stream.micro_batches()])
    return float((logps[0::2] > logps[1::2]).mean())


@pytest.mark.slow
def test_image_dpo_prefers_the_right_colour(s3, tmp_path, vlm_dir, processor_dir, monkeypatch) -> None:
    monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path / "cache"))
    data = write_jsonl(tmp_path / "train.jsonl", _pairs(s3, 160, seed=3))
    held_out = write_jsonl(tmp_path / "held-out.jsonl", _pairs(s3, 60, seed=4))
    packed = tmp_path / "held-out"
    tk.pack_files([str(held_out)], tokenizer=processor_dir, processor=processor_dir, max_length=256, out_dir=packed, workers=1)
    recipe = {
        "run": {"name": "dpo-colours", "model_name_or_path": str(vlm_dir), "data_s3_path": str(data)},
        "training_config": {
            "max_length": 256,
            "global_batch_size": 4,
            "micro_batch_size": 4,
            "trainer": {"max_steps": 70, "log_every_n_steps": 20},
            "model": {"optim": {"lr": 3e-3, "sched": {"warmup_steps": 5, "min_lr": 1e-4}}, "dpo_cfg": {"beta": 0.1}},
        },
    }
    before = _ranking(load_model(vlm_dir, backend="sdpa", seed=0)[0], packed)
    run_training(parse_recipe(recipe, source="dpo-colours"), output_dir=tmp_path / "run")
    after = _ranking(load_trained(tmp_path / "run"), packed)
    assert abs(before - 0.5) <= 0.2 and after >= 0.9, (before, after)


def test_image_dpo_lora_with_precomputed_reference_runs(s3, tmp_path, vlm_dir, monkeypatch) -> None:
    monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path / "cache"))
    data = write_jsonl(tmp_path / "train.jsonl", _pairs(s3, 12, seed=5))
    recipe = {
        "run": {"name": "dpo-lora", "model_name_or_path": str(vlm_dir), "data_s3_path": str(data)},
        "training_config": {
            "max_length": 256,
            "global_batch_size": 2,
            "micro_batch_size": 2,
            "trainer": {"max_steps": 2, "log_every_n_steps": 1},
            "model": {
                "dpo_cfg": {"beta": 0.1, "precompute_ref": True},
                "peft": {"peft_scheme": "lora", "lora_tuning": {"adapter_dim": 4, "alpha": 32}},
            },
        },
    }
    state = run_training(parse_recipe(recipe, source="dpo-lora"), output_dir=tmp_path / "run")
    assert state["state"] == "completed" and state["step"] == 2
    metrics = (tmp_path / "run" / "metrics.csv").read_text()
    assert "rewards/accuracy" in metrics.splitlines()[0]
    events = (tmp_path / "run" / "events.jsonl").read_text()
    assert "reference log-probs: computed for 12 pairs" in events


def test_pair_logps_of_flattened_image_rows_equal_padded_rows(s3, tmp_path, vlm_dir, processor_dir, monkeypatch) -> None:
    """`train run`'s CPU default (``sdpa_varlen``: a micro-batch of image pair rows flattened into one) scores
    each chosen and rejected answer as padded rows with the block-diagonal mask do."""
    monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path / "cache"))
    data = write_jsonl(tmp_path / "pairs.jsonl", _pairs(s3, 6, seed=7))
    tk.pack_files([str(data)], tokenizer=processor_dir, processor=processor_dir, max_length=256, out_dir=tmp_path / "packed", workers=1)
    rows = load_packed(tmp_path / "packed")
    scores = {}
    for backend in ("sdpa", "sdpa_varlen"):
        stream = BatchStream(rows, global_batch=4, micro_batch=4, seed=0, flatten=flattens_rows(backend), build=batch_builder(rows.manifest, pairs=True))
        model = load_model(vlm_dir, backend=backend, seed=0)[0].eval()
        with torch.no_grad():
            scores[backend] = np.concatenate([segment_logps(model, batch, backend).numpy() for batch in stream.micro_batches()])
    assert len(scores["sdpa"]) == 12
    np.testing.assert_allclose(scores["sdpa_varlen"], scores["sdpa"], rtol=1e-5, atol=1e-4)
