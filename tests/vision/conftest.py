"""Fixtures for vision-language tests: a processor directory and a tiny Qwen2-VL model, built once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from tests.vision.shapes import make_model_dir, make_processor_dir

PACKED_BACKENDS = ("sdpa", "sdpa_varlen")
"""The attention backends packed vision rows are checked under: the block-diagonal mask, and the flattened
micro-batch with per-segment SDPA (``train run``'s ``auto`` on CPU)."""


@pytest.fixture(scope="session")
def processor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_processor_dir(tmp_path_factory.mktemp("vlm") / "processor")


@pytest.fixture(scope="session")
def vlm_dir(tmp_path_factory: pytest.TempPathFactory, processor_dir: Path) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("vlm") / "model", processor_dir)


def loss_and_grads(model: torch.nn.Module, batches: list, backend: str = "sdpa") -> tuple[float, dict[str, torch.Tensor]]:
    """Summed loss of ``batches`` (as `train run` computes it) and the gradients it gives each parameter."""
    from tunekit_train.losses import causal_lm_loss

    model.zero_grad()
    total = sum(causal_lm_loss(model, b, backend)[0] for b in batches)
    total.backward()
    return float(total.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_packed_equals_alone(model: torch.nn.Module, packed, alone: list, backend: str) -> None:
    """``packed`` (one micro-batch under ``backend``) gives the loss and gradients of the ``alone`` micro-batches
    (one sample each, block-diagonal SDPA), vision tower included; and the same batch with its segments merged
    into one (cross-segment attention) does not, so the comparison would catch a leak between segments."""
    packed_loss, packed_grads = loss_and_grads(model, [packed], backend)
    alone_loss, alone_grads = loss_and_grads(model, alone)
    assert packed_loss == pytest.approx(alone_loss, rel=1e-5)
    assert packed_grads.keys() == alone_grads.keys() and any("visual" in n for n in packed_grads)
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, alone_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    merged = dataclasses.replace(packed, segment_ids=torch.zeros_like(packed.segment_ids))
    _, merged_grads = loss_and_grads(model, [merged], backend)
    assert any(not torch.allclose(grad, alone_grads[name], rtol=1e-4, atol=1e-6) for name, grad in merged_grads.items())
