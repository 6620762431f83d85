"""Fixtures shared by the CLI tests: a tiny model for ``train run`` (built here, nothing downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.fixture
def tiny_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    import torch
    from transformers import LlamaConfig

    torch.set_num_threads(1)  # tiny shapes; a busy 2-core box makes OpenMP threads spin
    monkeypatch.chdir(ROOT)  # the example recipe's paths are relative to the repository root
    model = tmp_path / "model"
    LlamaConfig(
        vocab_size=2048,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ).save_pretrained(model)
    overrides = [
        f"run.model_name_or_path={model}",
        "training_config.trainer.log_every_n_steps=1",
        "training_config.trainer.val_check_interval=1",
        "training_config.exp_manager.checkpoint_callback_params.every_n_train_steps=1",
        "training_config.exp_manager.checkpoint_callback_params.save_top_k=-1",
    ]
    return tmp_path / "run", [arg for o in overrides for arg in ("--set", o)]
