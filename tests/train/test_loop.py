"""The training loop through `run_training`: accumulation equivalence, exact resume, early stopping,
Ctrl-C, checkpoint retention, the learning-rate schedule."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunekit_data.errors import ConfigError, UsageError
from tunekit_train.optim import lr_factor, param_groups
from tunekit_train.run import run_training

from .conftest import sft_sequences, write_packed


def _weights(run_dir: Path, name: str = "final") -> dict[str, torch.Tensor]:
    directory = run_dir / name
    file = "adapter_model.safetensors" if (directory / "adapter_config.json").is_file() else "model.safetensors"
    return load_file(directory / file)


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_accumulation_split_does_not_change_the_update(recipe_for, tmp_path: Path) -> None:
    # Global batch 8 as 1 row x 8 micro-batches and as 4 rows x 2: rows differ in length and padding,
    # yet the loss is normalised over the step's trained tokens, so the update is the same.
    common = ("training_config.global_batch_size=8", "training_config.trainer.max_steps=1", "training_config.model.optim.lr=0.01")
    run_training(recipe_for(*common, "training_config.micro_batch_size=1"), output_dir=tmp_path / "a")
    run_training(recipe_for(*common, "training_config.micro_batch_size=4"), output_dir=tmp_path / "b")
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    base = run_training(recipe_for(*common, "training_config.model.optim.lr=1e-9"), output_dir=tmp_path / "c")
    assert base["step"] == 1
    moved = max(float((a[k] - _weights(tmp_path / "c")[k]).abs().max()) for k in a)
    assert moved > 1e-3  # the step did change the weights
    # Adam's first update is g / (|g| + eps): float32 summation-order noise in near-zero gradients shows
    # up at ~1e-6, far below the 1e-2 step.
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)


@pytest.mark.parametrize("peft", ["null", "lora"])
def test_resume_gives_the_weights_of_an_uninterrupted_run(recipe_for, tmp_path: Path, peft: str) -> None:
    # Dropout on, 10 steps of 4 rows over 11 rows: the resumed half crosses epoch boundaries and needs
    # the RNG, optimizer, schedule and data position of the checkpoint to match exactly.
    recipe = recipe_for(
        "training_config.trainer.max_steps=10",
        "training_config.exp_manager.checkpoint_callback_params.every_n_train_steps=5",
        "training_config.exp_manager.checkpoint_callback_params.save_top_k=-1",
        "training_config.model.hidden_dropout=0.1",
        "training_config.model.ffn_dropout=0.1",
        "training_config.model.attention_dropout=0.1",
        f"training_config.model.peft.peft_scheme={peft}",
        "training_config.model.peft.lora_tuning.adapter_dropout=0.1",
        "training_config.model.peft.lora_tuning.adapter_dim=4",
        data=write_packed(tmp_path / "data", sft_sequences(33), max_length=64),
    )
    straight = tmp_path / "straight"
    run_training(recipe, output_dir=straight)
    resumed = tmp_path / "resumed"
    state = run_training(recipe, output_dir=resumed, resume=str(straight / "checkpoints" / "step-000005"))
    assert state["state"] == "completed" and state["step"] == 10
    expected, got = _weights(straight), _weights(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    assert "resumed" in [e["type"] for e in _events(resumed)]


def test_resume_auto_continues_in_place_and_refuses_to_overwrite(recipe_for, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_training(recipe_for("training_config.trainer.max_steps=2"), output_dir=run_dir)
    with pytest.raises(UsageError, match="already holds a run"):
        run_training(recipe_for(), output_dir=run_dir)
    state = run_training(recipe_for("training_config.trainer.max_steps=3"), output_dir=run_dir, resume="auto")
    assert state["step"] == 3
    steps = [int(line.split(",")[0]) for line in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3]


def test_early_stopping_fires(recipe_for, packed_val: Path, tmp_path: Path) -> None:
    state = run_training(
        recipe_for(
            f"run.validation_data_s3_path={packed_val}",
            "training_config.trainer.max_steps=50",
            "training_config.trainer.val_check_interval=1",
            "training_config.exp_manager.create_early_stopping_callback=true",
            "training_config.exp_manager.early_stopping_callback_params.min_delta=10",
            "training_config.exp_manager.early_stopping_callback_params.patience=2",
        ),
        output_dir=tmp_path / "run",
    )
    # Validation 1 sets the best value; no later one improves it by 10, so validation 3 stops the run.
    assert state["state"] == "completed" and state["reason"] == "early_stopped" and state["step"] == 3
    kinds = [e["type"] for e in _events(tmp_path / "run")]
    assert kinds.count("validation") == 3 and "early_stopping" in kinds
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()


def test_ctrl_c_stops_with_a_checkpoint_and_state_stopped(recipe_for, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"

    def interrupt_once_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = run_dir / "state.json"
            if state.is_file() and json.loads(state.read_text()).get("step", 0) >= 1:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=interrupt_once_running)
    thread.start()
    state = run_training(recipe_for("training_config.trainer.max_steps=100000"), output_dir=run_dir)
    thread.join()
    assert state["state"] == "stopped" and 1 <= state["step"] < 100000
    last = run_dir / "checkpoints" / "last"
    assert json.loads((last / "trainer_state.json").read_text())["step"] == state["step"]
    assert not (run_dir / "final").exists()


def test_retention_keeps_top_k_and_last_and_prunes_weights_only(recipe_for, packed_val: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_training(
        recipe_for(
            "training_config.trainer.max_steps=6",
            f"run.validation_data_s3_path={packed_val}",
            "training_config.trainer.val_check_interval=1",
            "training_config.exp_manager.checkpoint_callback_params.every_n_train_steps=1",
            "training_config.exp_manager.checkpoint_callback_params.monitor=val_loss",
            "training_config.exp_manager.checkpoint_callback_params.mode=min",
            "training_config.exp_manager.checkpoint_callback_params.save_top_k=2",
            "training_config.weights_only=true",
        ),
        output_dir=run_dir,
    )
    saved = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*"))
    val = {int(e["step"]): e["val_loss"] for e in _events(run_dir) if e["type"] == "validation"}
    best = sorted(sorted(val, key=val.get)[:2])
    assert saved == sorted({f"step-{s:06d}" for s in [*best, 6]})
    assert (run_dir / "checkpoints" / "last").resolve().name == "step-000006"
    for name in saved:
        has_optimizer = (run_dir / "checkpoints" / name / "optimizer.pt").is_file()
        assert has_optimizer == (name == "step-000006")


def test_run_time_problems_are_reported_together(recipe_for, tmp_path: Path) -> None:
    recipe = recipe_for(
        "run.model_name_or_path=s3://bucket/model",
        f"run.validation_data_s3_path={tmp_path / 'missing'}",
        "training_config.exp_manager.checkpoint_callback_params.monitor=rewards/accuracy",
        "training_config.attn_implementation=flex_attention",
    )
    with pytest.raises(ConfigError) as info:
        run_training(recipe, output_dir=tmp_path / "run")
    text = "\n".join(info.value.problems)
    assert "run.model_name_or_path: s3://bucket/model: S3 is supported for the data and output paths only" in text
    assert "missing: no such file or directory" in text
    assert "checkpoint_callback_params.monitor: rewards/accuracy is logged by DPO runs only" in text
    if not torch.cuda.is_available():
        assert "flex_attention trains on CUDA only" in text


def test_lr_schedule_warmup_cosine_then_constant_min_lr() -> None:
    factors = [lr_factor(s, warmup=2, constant=2, total=10, min_ratio=0.1) for s in range(10)]
    assert factors[:2] == [0.5, 1.0]
    assert factors[2] == pytest.approx(1.0) and factors[5] == pytest.approx(0.55)
    assert factors[-2:] == [0.1, 0.1]
    assert all(a >= b for a, b in itertools.pairwise(factors[1:]))


def test_loraplus_gives_b_matrices_a_larger_lr() -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig

    from .conftest import TINY_LLAMA

    model = get_peft_model(
        AutoModelForCausalLM.from_config(LlamaConfig(**TINY_LLAMA)), LoraConfig(r=2, target_modules=["q_proj"])
    )
    groups = param_groups(model, lr=1e-4, weight_decay=0.1, loraplus_lr_ratio=16.0)
    by_lr = {g["lr"]: g for g in groups}
    assert set(by_lr) == {1e-4, 1.6e-3}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("lora_B" in names[id(p)] for p in by_lr[1.6e-3]["params"])
    assert all(g["weight_decay"] == 0.1 for g in groups)  # LoRA matrices are 2-D: decayed


def test_training_duration_in_tokens_and_epochs(recipe_for, packed_sft: Path, tmp_path: Path) -> None:
    from tunekit_train.data import load_packed

    rows = load_packed(packed_sft)
    by_tokens = run_training(
        recipe_for("training_config.trainer.max_steps=-1", "training_config.training_duration=300tok"), output_dir=tmp_path / "tok"
    )
    assert 300 <= by_tokens["tokens"] < 300 + 4 * rows.max_row_length  # stops at the first step past 300
    by_epochs = run_training(
        recipe_for("training_config.trainer.max_steps=-1", "training_config.training_duration=2ep"), output_dir=tmp_path / "ep"
    )
    assert by_epochs["step"] == 2 * -(-len(rows) // 4) and by_epochs["epoch"] == 2 and by_epochs["tokens"] == 2 * rows.n_tokens


def test_custom_weights_path_starts_from_an_earlier_run(recipe_for, tmp_path: Path) -> None:
    run_training(recipe_for("training_config.model.optim.lr=0.01"), output_dir=tmp_path / "first")
    # lr ~ 0: the second run's weights are where it started, i.e. the first run's final weights.
    run_training(
        recipe_for(f"run.custom_weights_path={tmp_path / 'first'}", "training_config.model.optim.lr=1e-12"),
        output_dir=tmp_path / "second",
    )
    first, second = _weights(tmp_path / "first"), _weights(tmp_path / "second")
    for key in first:
        torch.testing.assert_close(second[key], first[key], atol=1e-9, rtol=0)


def test_data_loader_workers_give_the_same_run(recipe_for, tmp_path: Path) -> None:
    run_training(recipe_for(), output_dir=tmp_path / "inline")
    run_training(
        recipe_for("training_config.model.training_validation.loader.args.data_loader_workers=1"), output_dir=tmp_path / "worker"
    )
    a, b = _weights(tmp_path / "inline"), _weights(tmp_path / "worker")
    assert all(torch.equal(a[k], b[k]) for k in a)
