"""The precision policy of a run (``training_config.precision``): how weights are stored and forwards computed.

- ``fp32``: float32 weights, float32 compute.
- ``bf16-mixed``: float32 weights (and gradients, optimizer state), forwards under bf16 autocast.
- ``bf16``: weights stored in bf16 under bf16 autocast. For LoRA only the frozen base is stored in bf16
  (half its memory; the adapters, their gradients and optimizer state stay float32, which keeps the small
  updates of a LoRA step from rounding away). Full-rank training then keeps bf16 weights, gradients and
  optimizer state, as torchtune's default does.
- ``auto`` (the default, and tunekit's behaviour before the key existed): bf16-mixed on CUDA, fp32 on CPU,
  where bf16 matmuls are emulated and several times slower.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch
from torch import nn

Precision = Literal["fp32", "bf16-mixed", "bf16"]


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """The precision ``requested`` means on ``device`` (``auto``: bf16-mixed on CUDA, fp32 elsewhere)."""
    if requested == "auto":
        return "bf16-mixed" if device.type == "cuda" else "fp32"
    assert requested in ("fp32", "bf16-mixed", "bf16"), requested
    return requested  # type: ignore[return-value]


def precision_warnings(requested: str, device: torch.device) -> list[str]:
    """Warnings for a precision that runs but is slow on ``device``."""
    precision = resolve_precision(requested, device)
    if device.type == "cpu" and precision != "fp32":
        return [f"training_config.precision: {precision} on CPU runs bf16 matmuls in emulation, several times slower than fp32"]
    return []


def autocast(device: torch.device, requested: str = "auto") -> contextlib.AbstractContextManager:
    """The compute precision of every forward pass of a run (training, validation, reference log-probs)."""
    if resolve_precision(requested, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def store_weights(model: nn.Module, requested: str, device: torch.device) -> None:
    """Store the weights as the precision says: with ``bf16``, the frozen ones (LoRA's base) or all of them."""
    if resolve_precision(requested, device) != "bf16":
        return
    params = list(model.parameters())
    frozen = [p for p in params if not p.requires_grad]
    for param in frozen or params:
        param.data = param.data.to(torch.bfloat16)


def weight_bytes(requested: str, device: torch.device, *, trainable: bool, lora: bool) -> int:
    """Bytes per stored parameter under the policy (`store_weights`)."""
    bf16 = resolve_precision(requested, device) == "bf16" and not (lora and trainable)
    return 2 if bf16 else 4
