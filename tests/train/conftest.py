"""Fixtures for the training tests: tiny Llama models built from a config (nothing downloads) and packed
datasets written directly in the `ds pack` shape (manifest.json, stats.json, data/*.parquet)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

# Tiny shapes gain nothing from intra-op threads, and on a busy 2-core box OpenMP's spin-waiting makes
# two threads several times slower than one.
torch.set_num_threads(1)

TINY_LLAMA = {
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "eos_token_id": 2,
    "bos_token_id": 1,
    "pad_token_id": 0,
}

Sequence = tuple[np.ndarray, np.ndarray]  # (input_ids, labels), labels aligned with input_ids


def make_model_dir(path: Path, **overrides: object) -> Path:
    """A model directory holding only config.json: training builds it with a seeded random init."""
    from transformers import LlamaConfig

    LlamaConfig(**{**TINY_LLAMA, **overrides}).save_pretrained(path)
    return path


def sft_sequences(n: int, *, seed: int = 0, vocab: int = 64, lengths: tuple[int, int] = (4, 24)) -> list[Sequence]:
    """Random prompt/answer sequences: the first half (the prompt) is not trained."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(3, vocab, int(rng.integers(*lengths))).astype(np.int32)
        labels = ids.copy()
        labels[: max(1, len(ids) // 2)] = -100
        out.append((ids, labels))
    return out


def pack_sequences(seqs: list[Sequence], max_length: int) -> list[list[Sequence]]:
    """Next-fit in order: each row takes sequences until the next does not fit."""
    rows: list[list[Sequence]] = [[]]
    for seq in seqs:
        if sum(len(s[0]) for s in rows[-1]) + len(seq[0]) > max_length:
            rows.append([])
        rows[-1].append(seq)
    return [r for r in rows if r]


def row_columns(row: list[Sequence]) -> dict[str, np.ndarray]:
    """The packed columns of one row (each segment's first label is -100)."""
    labels = []
    for _ids, lab in row:
        lab = lab.copy()
        lab[0] = -100
        labels.append(lab)
    return {
        "input_ids": np.concatenate([s[0] for s in row]).astype(np.int32),
        "labels": np.concatenate(labels).astype(np.int32),
        "position_ids": np.concatenate([np.arange(len(s[0])) for s in row]).astype(np.int32),
        "seq_lens": np.array([len(s[0]) for s in row], dtype=np.int32),
    }


def write_packed(path: Path, seqs: list[Sequence], *, max_length: int, kind: str = "sft") -> Path:
    """Write ``seqs`` as a packed dataset directory."""
    return write_rows(path, [row_columns(r) for r in pack_sequences(seqs, max_length)], max_length=max_length, kind=kind)


def write_rows(path: Path, rows: list[dict[str, np.ndarray]], *, max_length: int, kind: str) -> Path:
    """Write packed rows (each a dict of column values) as a packed dataset directory."""
    (path / "data").mkdir(parents=True)
    types = {name: pa.list_(pa.from_numpy_dtype(values.dtype)) for name, values in rows[0].items()}
    table = pa.table({name: pa.array([r[name] for r in rows], type=types[name]) for name in rows[0]})
    shard = "data/train-00000-of-00001.parquet"
    pq.write_table(table, path / shard)
    manifest = {"format": "tunekit-packed", "format_version": 1, "kind": kind, "max_length": max_length, "shards": [shard]}
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "stats.json").write_text(json.dumps({"rows": len(rows), "tokens": int(sum(len(r["input_ids"]) for r in rows))}))
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config-only tiny Llama directory."""
    return make_model_dir(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def packed_sft(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 random SFT sequences packed into rows of 64 tokens."""
    return write_packed(tmp_path_factory.mktemp("packed") / "sft", sft_sequences(64), max_length=64)


@pytest.fixture(scope="session")
def packed_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 other random SFT sequences, for validation."""
    return write_packed(tmp_path_factory.mktemp("packed") / "val", sft_sequences(16, seed=1), max_length=64)


@pytest.fixture
def recipe_for(tiny_model: Path, packed_sft: Path) -> Callable[..., object]:
    """Build a LoadedRecipe for the tiny model and data from ``--set``-style overrides."""
    from tunekit_train.recipe import parse_recipe

    def build(*overrides: str, data: Path = packed_sft, model: Path = tiny_model) -> object:
        base = {
            # MLflow tracking is off unless a test asks for it (tests/train/test_tracking.py): it costs an
            # import and a SQLite migration per run directory.
            "run": {"name": "t", "model_name_or_path": str(model), "data_s3_path": str(data), "tracking": False},
            "training_config": {
                "max_length": 64,
                "global_batch_size": 4,
                "micro_batch_size": 2,
                "trainer": {"max_steps": 4, "log_every_n_steps": 1},
                "model": {"optim": {"lr": 1e-3, "sched": {"warmup_steps": 1}}},
            },
        }
        return parse_recipe(base, source="test-recipe", overrides=overrides)

    return build
