"""Fixtures for vision-language tests: a processor directory and a tiny Qwen2-VL model, built once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.vision.shapes import make_model_dir, make_processor_dir


@pytest.fixture(scope="session")
def processor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_processor_dir(tmp_path_factory.mktemp("vlm") / "processor")


@pytest.fixture(scope="session")
def vlm_dir(tmp_path_factory: pytest.TempPathFactory, processor_dir: Path) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("vlm") / "model", processor_dir)


def loss_and_grads(model: torch.nn.Module, batches: list) -> tuple[float, dict[str, torch.Tensor]]:
    """Summed loss of ``batches`` (as `train run` computes it) and the gradients it gives each parameter."""
    from tunekit_train.losses import causal_lm_loss

    model.zero_grad()
    total = sum(causal_lm_loss(model, b, "sdpa")[0] for b in batches)
    total.backward()
    return float(total.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
