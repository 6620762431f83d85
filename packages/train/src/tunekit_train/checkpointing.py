"""Per-decoder-layer activation checkpointing and compilation (``activation_checkpointing``, ``compile``).

Each decoder layer (the classes Hugging Face lists in ``_no_split_modules``, found through peft's wrappers)
keeps only its input for backward and recomputes the rest, with non-reentrant ``torch.utils.checkpoint``:
it works when only some parameters require gradients (LoRA, frozen bases) and with keyword inputs
(the packed-attention mask, position embeddings). The RNG state is restored for the recomputation, so
dropout draws the same masks.

The layer's class is swapped for a subclass whose ``forward`` checkpoints the original one, instead of
wrapping the layer in another module (torch's ``checkpoint_wrapper``): parameter names stay unchanged
(checkpoints, the LoRA+ parameter groups and exported models see the same keys), a deep copy (DPO's frozen
reference) checkpoints its own layers, and FSDP2's ``fully_shard`` of the layer wraps the checkpointed
forward: its hooks gather the parameters around the layer call, and the recomputation inside backward
runs while they are gathered.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_SUBCLASSES: dict[type, type] = {}


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of a Hugging Face model (``_no_split_modules`` classes), through peft wrappers."""
    classes = {name for module in model.modules() for name in getattr(module, "_no_split_modules", None) or ()}
    # A checkpointed layer's class keeps its name (`_checkpointed`), and so does FSDP2's (FSDP + the name).
    return [module for module in model.modules() if type(module).__name__.removeprefix("FSDP") in classes]


def checkpoint_layers(model: nn.Module) -> int:
    """Turn on activation checkpointing in every decoder layer of ``model``; returns how many layers."""
    layers = decoder_layers(model)
    for layer in layers:
        if type(layer) not in _SUBCLASSES.values():
            layer.__class__ = _checkpointed(type(layer))
    return len(layers)


def compile_layers(model: nn.Module) -> int:
    """``torch.compile`` every decoder layer in place (checkpointing, when on, stays outside); returns how many."""
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile()
    return len(layers)


def _checkpointed(cls: type) -> type:
    if cls not in _SUBCLASSES:

        def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
            inner = super(subclass, self).forward
            if not torch.is_grad_enabled():  # no backward to save memory for (validation, reference pass)
                return inner(*args, **kwargs)
            return checkpoint(inner, *args, use_reentrant=False, **kwargs)

        subclass = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__})
        _SUBCLASSES[cls] = subclass
    return _SUBCLASSES[cls]

