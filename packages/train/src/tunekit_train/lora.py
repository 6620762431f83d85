"""LoRA through peft, with LoRA+ learning rates (Hayou et al. 2024, arXiv 2402.12354).

The base weights are frozen and each targeted linear layer gets ``B @ A`` scaled by ``alpha / r``;
B starts at zero, so the adapted model starts equal to the base model. LoRA+ gives the B matrices a
learning rate ``loraplus_lr_ratio`` times that of A (the paper: B should learn faster in wide models);
the split into param groups is in `tunekit_train.optim.param_groups`.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from tunekit_train.recipe import LoraTuning

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def add_lora(model: nn.Module, lora: LoraTuning, *, skip_vision: bool = True) -> nn.Module:
    """Wrap ``model`` with fresh LoRA adapters; only the adapters require gradients.

    ``skip_vision``: a vision-language model's vision tower (``visual``) gets no adapters, so LoRA
    adapts the language model only (``training_config.model.freeze_vision``).
    """
    from peft import LoraConfig, get_peft_model

    from tunekit_train.model import VISION_TOWER

    config = LoraConfig(
        r=lora.adapter_dim,
        lora_alpha=lora.alpha,
        lora_dropout=lora.adapter_dropout,
        target_modules=lora.target_modules,
        exclude_modules=rf"(.*\.)?{VISION_TOWER}\..*" if skip_vision else None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def is_lora(model: nn.Module) -> bool:
    """Whether ``model`` is a peft-wrapped model."""
    from peft import PeftModel

    return isinstance(model, PeftModel)


def is_lora_b(name: str) -> bool:
    """Whether a parameter name is a LoRA B matrix (the one LoRA+ speeds up)."""
    return ".lora_B." in name


def is_adapter_dir(path: Path) -> bool:
    """Whether a directory holds a peft adapter rather than a full model."""
    return (path / ADAPTER_CONFIG).is_file()
