"""Load the model a recipe trains: a local Hugging Face directory, with the recipe's dropouts applied.

A directory with ``config.json`` but no weights gives a randomly initialised model built from the config
with a fixed seed (the quickstart's tiny model is shipped that way: a few hundred bytes instead of
megabytes); the caller records that choice in the run's events.

Dropouts (Nova ``training_config.model``) use Megatron's meaning, mapped onto Hugging Face decoders:
``attention_dropout`` is the attention modules' setting of the same name (dropout on attention probabilities);
``hidden_dropout`` drops the attention and MLP outputs before each residual add; ``ffn_dropout`` drops the
MLP activations before the down projection. The last two are forward hooks on the ``self_attn``,
``mlp`` and ``mlp.down_proj`` modules that Llama-family decoders (Llama, Mistral, Qwen, Gemma) share.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunekit_data.errors import InputError
from tunekit_train.attention import SEGMENT_SDPA, Backend, register_segment_sdpa
from tunekit_train.recipe import TrainingConfig

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass(frozen=True)
class Dropouts:
    """The three Nova dropout probabilities."""

    hidden: float = 0.0
    attention: float = 0.0
    ffn: float = 0.0


def has_weights(path: Path) -> bool:
    """Whether a model directory holds weights (else only a config to build from)."""
    return any((path / name).is_file() for name in WEIGHT_FILES)


def is_vision_config(path: Path) -> bool:
    """Whether the model directory holds a vision-language model (its config has a ``vision_config``)."""
    import json

    try:
        return "vision_config" in json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def model_class(path: Path) -> Any:
    """The transformers auto class for the model in ``path``: image-text-to-text for a vision-language model."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    return AutoModelForImageTextToText if is_vision_config(path) else AutoModelForCausalLM


def load_model(path: str | Path, *, backend: Backend, seed: int) -> tuple[nn.Module, bool]:
    """Load the causal LM in ``path`` in float32; the model and whether it was randomly initialised.

    A vision-language model loads as ``AutoModelForImageTextToText``.

    Raises:
        InputError: ``path`` is not a model directory.
    """
    from transformers.utils import logging

    # tunekit draws its own progress; transformers' bars (e.g. "Writing model shards") would interleave.
    logging.disable_progress_bar()
    root = Path(path)
    if not (root / "config.json").is_file():
        msg = f"{root}: not a Hugging Face model directory (no config.json)"
        raise InputError(msg)
    if backend == SEGMENT_SDPA:
        register_segment_sdpa()
    kwargs: dict[str, Any] = {"attn_implementation": backend, "dtype": torch.float32}
    auto = model_class(root)
    if has_weights(root):
        return auto.from_pretrained(root, **kwargs), False
    from transformers import AutoConfig

    torch.manual_seed(seed)
    return auto.from_config(AutoConfig.from_pretrained(root), **kwargs), True


VISION_TOWER = "visual"
"""The vision encoder's module name in Qwen2-VL-style models; its ``merger`` is the image projector."""


def vision_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(vision encoder, image projector) parameters of a vision-language model; empty for a text model."""
    encoder, projector = [], []
    for name, param in model.named_parameters():
        parts = name.split(".")
        if VISION_TOWER in parts:
            (projector if "merger" in parts[parts.index(VISION_TOWER) :] else encoder).append(param)
    return encoder, projector


def freeze_vision(model: nn.Module, *, encoder: bool, projector: bool) -> int:
    """Freeze the vision encoder and/or the image projector (full training); returns parameters frozen."""
    vision, merger = vision_parameters(model)
    frozen = (vision if encoder else []) + (merger if projector else [])
    for param in frozen:
        param.requires_grad_(requires_grad=False)
    return sum(p.numel() for p in frozen)


def apply_dropouts(model: nn.Module, dropouts: Dropouts) -> list[str]:
    """Set the three dropouts on ``model`` (call after LoRA wrapping, so adapters are covered too).

    Returns the recipe problems instead (and changes nothing) when a non-zero dropout has no module
    to act on in this architecture.
    """
    modules = dict(model.named_modules())
    attn = [m for name, m in modules.items() if name.endswith(".self_attn") and hasattr(m, "attention_dropout")]
    attn_blocks = [m for name, m in modules.items() if name.endswith(".self_attn")]
    mlp_blocks = [m for name, m in modules.items() if name.endswith(".mlp")]
    blocks = attn_blocks + mlp_blocks if attn_blocks and mlp_blocks else []
    down = [m for name, m in modules.items() if name.endswith(".mlp.down_proj")]
    needs = (
        ("attention_dropout", dropouts.attention, attn, "self_attn modules with an attention_dropout setting"),
        ("hidden_dropout", dropouts.hidden, blocks, "self_attn/mlp modules"),
        ("ffn_dropout", dropouts.ffn, down, "mlp.down_proj modules"),
    )
    problems = [
        f"training_config.model.{key}: {p} but the model has no {what} to apply it to; set 0"
        for key, p, found, what in needs
        if p and not found
    ]
    if problems:
        return problems
    for module in attn:  # read at each forward (`dropout=0.0 if not self.training else self.attention_dropout`)
        module.attention_dropout = dropouts.attention
    if dropouts.hidden:
        for module in blocks:
            module.register_forward_hook(_output_dropout(dropouts.hidden))
    if dropouts.ffn:
        for module in down:
            module.register_forward_pre_hook(_input_dropout(dropouts.ffn))
    return []


def _output_dropout(p: float) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        # Attention modules return (hidden, weights); only the hidden states are dropped.
        if isinstance(output, tuple):
            return (nn.functional.dropout(output[0], p, module.training), *output[1:])
        return nn.functional.dropout(output, p, module.training)

    return hook


def _input_dropout(p: float) -> Any:
    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (nn.functional.dropout(args[0], p, module.training), *args[1:])

    return hook


def prepare_model(
    model: nn.Module, config: TrainingConfig, *, checkpointing: bool, device: torch.device
) -> list[tuple[str, str]]:
    """Apply the recipe's memory and speed settings to a built model.

    It runs after LoRA and dropouts, before sharding: bf16 storage (``precision``), per-layer activation
    checkpointing, ``compile``.

    Returns ``(event type, message)`` pairs for the run's events: ``warning`` or ``model``.
    """
    from tunekit_train.checkpointing import checkpoint_layers, compile_layers
    from tunekit_train.precision import precision_warnings, resolve_precision, store_weights

    store_weights(model, config.precision, device)
    notes = [("warning", w) for w in precision_warnings(config.precision, device)]
    notes.append(("model", f"precision: {resolve_precision(config.precision, device)}"))
    if checkpointing:
        notes.append(("model", f"activation checkpointing: {checkpoint_layers(model)} decoder layers"))
    if config.compile:
        notes.append(("model", f"compile: {compile_layers(model)} decoder layers"))
    return notes
