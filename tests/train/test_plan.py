"""Issue 12: the memory plan (`train plan`), the check `train run` makes with it, and the recipe keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tunekit_cli.train import main
from tunekit_data.errors import ConfigError
from tunekit_train.plan import ModelShape, make_plan, parse_size
from tunekit_train.recipe import parse_recipe

# One training step (forward and backward) of one packed row, in a process of its own so that its peak
# RSS is its own: prints the peak above the RSS after a 256-token warm-up step (Linux: /proc/self).
PROBE = """
import json, sys
import numpy as np, torch
torch.set_num_threads(1)
from transformers import AutoModelForCausalLM, LlamaConfig
from tunekit_train.checkpointing import checkpoint_layers
from tunekit_train.data import collate
from tunekit_train.losses import causal_lm_loss
length, checkpointing = int(sys.argv[1]), sys.argv[2] == "1"
cfg = LlamaConfig(**json.loads(sys.argv[3]))
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32).train()
if checkpointing:
    checkpoint_layers(model)
def row(n):
    ids = np.random.default_rng(0).integers(3, cfg.vocab_size, n).astype(np.int32)
    labels = ids.copy()
    labels[::256] = -100
    return {"input_ids": ids, "labels": labels, "position_ids": (np.arange(n) % 256).astype(np.int32), "seq_lens": np.full(n // 256, 256, dtype=np.int32)}
def step(n):
    causal_lm_loss(model, collate([row(n)], flatten=False), "sdpa")[0].backward()
def status_kb(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
step(256)
# Reset the peak RSS to the current RSS ("5" to clear_refs): the process's peak so far may come from
# importing torch and transformers, above anything a 2,048-token step adds; ru_maxrss cannot be reset.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status_kb("VmRSS")
step(length)
print((status_kb("VmHWM") - base) * 1024)
"""
SHAPE = {"vocab_size": 1024, "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4}


def _config(**training: object):
    tree = {"run": {"model_name_or_path": "m"}, "training_config": {"global_batch_size": 1, **training}}
    return parse_recipe(tree, source="r.yaml").recipe.training_config


def _measured(length: int, checkpointing: bool) -> int:
    args = [sys.executable, "-c", PROBE, str(length), str(int(checkpointing)), json.dumps(SHAPE)]
    # A fixed mmap threshold: glibc's default one rises after each large free, so that later tensors
    # come from (and stay in) the heap, and the peak then varied by +-20 % from run to run.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    return int(subprocess.run(args, capture_output=True, text=True, check=True, timeout=300, env=env).stdout.strip().splitlines()[-1])


@pytest.mark.slow  # 4 processes of a few seconds' compute, ~60 s in all on a busy 2-core machine
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_plan_activation_terms_grow_with_length_as_measured(checkpointing: bool) -> None:
    shape = ModelShape(0, 0, SHAPE["num_hidden_layers"], SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["hidden_size"], SHAPE["vocab_size"])

    def planned(length: int) -> int:
        plan = make_plan(_config(max_length=length), shape, device="cpu", checkpointing=checkpointing)
        return plan.terms["activations"] + plan.terms["attention_mask"] + plan.terms["loss_buffers"]

    # Measured (2026-12-08): the plan's growth is 1.16x the measured one plain, 1.73x checkpointed (its
    # backward term is conservative). A plan must not fall short, nor be more than twice the truth.
    growth = _measured(4096, checkpointing) - _measured(2048, checkpointing)
    assert growth <= planned(4096) - planned(2048) <= 2 * growth


def test_auto_checkpointing_turns_on_only_when_the_run_does_not_fit_without_it() -> None:
    shape = ModelShape(100_000_000, 100_000_000, 12, 768, 2048, 768, 32_000)
    config = _config(max_length=8192)
    plain = make_plan(config, shape, device="cpu", checkpointing=False)
    checkpointed = make_plan(config, shape, device="cpu", checkpointing=True)
    assert checkpointed.total < plain.total
    roomy = make_plan(config, shape, device="cpu", budget=plain.total + 1)
    tight = make_plan(config, shape, device="cpu", budget=(plain.total + checkpointed.total) // 2)
    assert (roomy.activation_checkpointing, roomy.fits) == (False, True)
    assert (tight.activation_checkpointing, tight.fits) == (True, True)
    # FSDP shards weights, gradients and optimizer state over the processes; DDP keeps them whole.
    fsdp = make_plan(_config(max_length=8192, strategy="fsdp", global_batch_size=4), shape, device="cpu", processes=4, checkpointing=True)
    ddp = make_plan(_config(max_length=8192, global_batch_size=4), shape, device="cpu", processes=4, checkpointing=True)
    assert fsdp.terms["optimizer_state"] * 4 == ddp.terms["optimizer_state"] == 2 * 4 * shape.trainable


def test_recipe_keys_validate_and_gradient_checkpointing_is_the_alias() -> None:
    assert _config().checkpointing == "auto"
    assert _config(gradient_checkpointing="True").checkpointing is True  # JumpStart passes strings
    assert _config(activation_checkpointing=False, gradient_checkpointing=False).checkpointing is False
    with pytest.raises(ConfigError, match="gradient_checkpointing: True contradicts activation_checkpointing: False"):
        _config(activation_checkpointing=False, gradient_checkpointing=True)
    with pytest.raises(ConfigError, match=r"training_config.precision: input should be 'auto', 'fp32', 'bf16-mixed' or 'bf16', got 'fp16'"):
        _config(precision="fp16")
    with pytest.raises(ConfigError, match=r"training_config.loss_chunk_tokens: input should be greater than or equal to 1, got 0"):
        _config(loss_chunk_tokens=0)
    assert (parse_size("80GB"), parse_size("1GiB"), parse_size("512mb")) == (80 * 10**9, 2**30, 512 * 10**6)


def test_train_plan_json(capsys: pytest.CaptureFixture[str], recipe_file: Callable[..., Path]) -> None:
    assert main(["plan", str(recipe_file()), "--device", "cpu", "--gpu-memory", "8GB", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    # The default backend on CPU (per-segment SDPA) builds no mask; SDPA with a block-diagonal mask does.
    assert set(info["terms"]) == {"weights", "gradients", "optimizer_state", "activations", "loss_buffers"}
    assert info["params_total"] == info["params_trainable"] > 0 and info["fits"] is True and info["budget"] == 8 * 10**9
    assert info["total"] == sum(info["terms"].values()) and info["steps_per_epoch"] >= 1
    assert info["activations_with_checkpointing"] > 0 and info["activations_without_checkpointing"] > 0
    assert info["tokens_per_step"] == 4 * 64 and info["remedy"] is None
    assert main(["plan", str(recipe_file("training_config.attn_implementation=sdpa")), "--device", "cpu", "--json"]) == 0
    masked = json.loads(capsys.readouterr().out)
    assert masked["terms"]["attention_mask"] == 2 * 64**2 * 4  # a float32 [64, 64] mask per row, micro_batch_size 2


def test_train_run_refuses_a_recipe_that_does_not_fit(capsys: pytest.CaptureFixture[str], recipe_file: Callable[..., Path], tmp_path: Path) -> None:
    recipe = recipe_file("training_config.activation_checkpointing=false")
    assert main(["plan", str(recipe), "--device", "cpu", "--gpu-memory", "1KB", "--json"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert info["fits"] is False and info["remedy"]
    code = main(["run", str(recipe), "--output-dir", str(tmp_path / "run"), "--gpu-memory", "1KB", "--json"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "Traceback" not in err
    assert f"the biggest term is {info['biggest'].replace('_', ' ')}" in err and f"set {info['remedy']}" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_train_run_turns_checkpointing_on_when_auto_needs_it(recipe_file: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from .conftest import make_model_dir

    # Enough layers that checkpointing saves memory (the tiny model's 2 layers are within one recomputed layer).
    deep = make_model_dir(tmp_path / "deep", num_hidden_layers=6)
    recipe = recipe_file(f"run.model_name_or_path={deep}")
    assert main(["plan", str(recipe), "--device", "cpu", "--json", "--set", "training_config.activation_checkpointing=false"]) == 0
    plain = json.loads(capsys.readouterr().out)
    budget = plain["total"] - plain["terms"]["activations"] + plain["activations_with_checkpointing"] + 1000
    assert main(["run", str(recipe), "--output-dir", str(tmp_path / "run"), "--gpu-memory", str(budget), "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["state"] == "completed" and state["activation_checkpointing"] is True


@pytest.fixture
def recipe_file(tiny_model: Path, packed_sft: Path, tmp_path: Path) -> Callable[..., Path]:
    import yaml

    def write(*overrides: str) -> Path:
        recipe = {
            "run": {"name": "plan", "model_name_or_path": str(tiny_model), "data_s3_path": str(packed_sft)},
            "training_config": {"max_length": 64, "global_batch_size": 4, "micro_batch_size": 2, "trainer": {"max_steps": 2}},
        }
        for item in overrides:
            key, value = item.split("=", 1)
            node = recipe
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = yaml.safe_load(value)
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return path

    return write
