"""Fixtures for `train serve` and `train eval`: two tiny LoRA adapters on one base, and a server subprocess.

One run of the example LoRA recipe (one step, on a tiny Llama built from a config) gives adapter A; a
copy with its B matrices perturbed gives adapter B on the same base, so the two must answer differently.
The server is the real CLI in a subprocess on a free 127.0.0.1 port, with an API key.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
API_KEY = "test-key"
CONTEXT = 256  # the tiny model's context, so an over-long prompt is cheap to build
SYSTEM = "Answer with one word."
B_ID = "main.team.run-b"


@dataclass(frozen=True)
class Runs:
    """The two adapters: ``a`` a run directory, ``b`` an adapter directory on the same base."""

    a: Path
    b: Path


@dataclass(frozen=True)
class Served:
    """A running server: its URL and what it printed at startup."""

    url: str
    info: dict
    process: subprocess.Popen


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import LlamaConfig

    from tunekit_cli.train import main

    root = tmp_path_factory.mktemp("serve")
    torch.set_num_threads(1)
    LlamaConfig(vocab_size=2048, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=CONTEXT, eos_token_id=2, pad_token_id=0).save_pretrained(root / "model")  # fmt: skip
    sets = {
        "run.model_name_or_path": root / "model",
        "run.tokenizer_name_or_path": ROOT / "examples/tiny/tokenizer",
        "run.data_s3_path": ROOT / "examples/data/sft.jsonl",
        "run.validation_data_s3_path": ROOT / "examples/data/sft-val.jsonl",
        "training_config.trainer.max_steps": 1,
        "training_config.exp_manager.create_tensorboard_logger": "false",
    }
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    assert (
        main(
            [
                "run",
                str(ROOT / "examples/recipes/sft-lora-tiny.yaml"),
                *args,
                "-o",
                str(root / "run-a"),
                "--json",
            ]
        )
        == 0
    )
    b = root / "run-b"
    shutil.copytree(root / "run-a" / "final", b)
    weights = load_file(b / "adapter_model.safetensors")
    generator = torch.Generator().manual_seed(0)
    perturbed = {
        k: v + 0.5 * torch.randn(v.shape, generator=generator) if "lora_B" in k else v
        for k, v in weights.items()
    }
    save_file(perturbed, b / "adapter_model.safetensors")
    return Runs(root / "run-a", b)


@contextmanager
def serving(args: list[str], log: Path) -> Iterator[Served]:
    """`train serve ARGS --port 0 --json` in a subprocess, stderr to ``log``; yields it once it serves."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "tunekit_cli.train", "serve", *args, "--port", "0", "--json"]
    with log.open("w") as stderr:  # a file, not a pipe: a pipe nobody reads would block the server once full
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=120)
    if not line or not line[0]:
        process.kill()
        process.wait()
        pytest.fail(f"train serve did not start: {log.read_text()[-2000:]}")
    info = json.loads(line[0])
    try:
        yield Served(info["url"], info, process)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def served(runs: Runs) -> Iterator[Served]:
    """`train serve run-a main.team.run-b=run-b` with an API key, small token and body limits (b's id is
    dotted, as registered Unity Catalog names are, and peft adapter names cannot be)."""
    args = [str(runs.a), f"{B_ID}={runs.b}", "--api-key", API_KEY, "--max-tokens-limit", "64", "--max-body-bytes", "4096"]
    with serving(args, runs.a.parent / "serve.log") as running:
        yield running
