"""Issue 12: activation checkpointing under DDP and FSDP2 (2 gloo processes): the same update as one
process without it (FSDP2 shards the checkpointed layers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tunekit_train.run import run_training

from .test_distributed import _assert_same_weights, _recipe_file, _run_ranks


def _with(path: Path, **training: object) -> Path:
    recipe = yaml.safe_load(path.read_text())
    recipe["training_config"].update(training)
    path.write_text(yaml.safe_dump(recipe))
    return path


def _checkpointed_two_match_plain_one(tmp_path: Path, model: Path, data: Path, strategy: str, peft: str | None) -> None:
    from tunekit_train.recipe import load_recipe

    one = _recipe_file(tmp_path / "one.yaml", model, data, micro_batch=4, strategy=strategy, peft=peft)
    run_training(load_recipe(_with(one, activation_checkpointing=False), []), output_dir=tmp_path / "one")
    two = _recipe_file(tmp_path / "two.yaml", model, data, micro_batch=2, strategy=strategy, peft=peft)
    _run_ranks(_with(two, activation_checkpointing=True, loss_chunk_tokens=7), tmp_path / "two", 2)
    _assert_same_weights(tmp_path / "one", tmp_path / "two")


def test_fsdp_checkpointed_two_processes_match_one(tiny_model: Path, packed_sft: Path, tmp_path: Path) -> None:
    _checkpointed_two_match_plain_one(tmp_path, tiny_model, packed_sft, "fsdp", None)


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "peft"), [("ddp", None), ("ddp", "lora"), ("fsdp", "lora")])
def test_checkpointed_two_processes_match_one(strategy: str, peft: str | None, tiny_model: Path, packed_sft: Path, tmp_path: Path) -> None:
    _checkpointed_two_match_plain_one(tmp_path, tiny_model, packed_sft, strategy, peft)
