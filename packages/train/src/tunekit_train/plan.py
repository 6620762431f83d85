"""The memory plan of a run (``train plan``, and the check ``train run`` makes first).

Bytes per device, estimated from the recipe and the model's ``config.json`` alone, before any weight
is loaded.

Parameters are counted on a model built on the meta device (no memory), with LoRA adapters added as
the recipe says. The terms, per device (FSDP divides weights, gradients and optimizer state by the
processes; DDP keeps them whole and adds its gradient buckets):

- weights: 4 bytes a parameter, 2 where ``precision: bf16`` stores it in bf16 (`tunekit_train.precision`);
  full-rank DPO without ``precompute_ref`` adds the frozen reference copy (unsharded on every rank);
- gradients and optimizer state: AdamW keeps two moments per trainable parameter, in its dtype;
- activations, for one micro-batch of ``micro_batch_size x max_length`` tokens: what a Llama-shaped
  decoder layer saves for backward, counted tensor by tensor (`_saved_per_token`: the norms' inputs and
  outputs, q/k/v with their rotary inputs, attention output, the MLP's gate, up, activation and product),
  for every layer without checkpointing; with it, one ``hidden``-wide input per layer plus one layer's
  full set and its gradients while it is recomputed. Plus the embeddings' and final norm's outputs, the gradient of the
  hidden states in flight, and SDPA's or eager's block-causal mask (``L^2`` per row: flash-attention,
  per-segment SDPA and flex-attention build none);
- loss buffers: one chunk of float32 logits with its softmax and gradient, and the head's float32
  gradient accumulator (`tunekit_train.losses`).

A run fits when the sum stays within the budget less a reserve (10 % on CUDA, for the CUDA context and
the allocator's fragmentation). The budget is ``--gpu-memory``, else the GPU's memory on CUDA, else the
machine's available RAM on CPU; ``train run`` refuses a run that does not fit, except against available
RAM (which other processes move, and where running short means swapping, not a crash).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunekit_data.errors import ConfigError, InputError
from tunekit_train.recipe import LoadedRecipe, TrainingConfig

if TYPE_CHECKING:  # torch is imported inside the functions: `train plan --help` stays fast
    import torch

CUDA_RESERVE = 0.10
"""Share of a GPU's memory kept free for the CUDA context and allocator fragmentation."""
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str) -> int:
    """Bytes in ``80GB`` (10^9), ``80GiB`` (2^30), ``512MB``, ``1.5e9`` ...

    Raises:
        InputError: not a size.
    """
    match = _SIZE.match(text)
    if match is None:
        try:
            return int(float(text))
        except ValueError:
            msg = f"--gpu-memory: {text!r} is not a size (e.g. 80GB, 80GiB, 24000MB)"
            raise InputError(msg) from None
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs to know about the model, from its config and a meta-device build."""

    params: int
    trainable: int
    layers: int
    hidden: int
    intermediate: int
    kv_dim: int
    vocab: int


@dataclass
class Plan:
    """Bytes per device of each memory term, and whether they fit the budget."""

    device: str
    processes: int
    strategy: str
    precision: str
    activation_checkpointing: bool
    params_total: int
    params_trainable: int
    tokens_per_micro_batch: int
    tokens_per_step: int
    steps_per_epoch: int | None
    terms: dict[str, int]
    activations_without_checkpointing: int
    activations_with_checkpointing: int
    budget: int | None
    budget_from: str | None
    """``--gpu-memory``, ``GPU memory`` or ``available RAM`` (on CPU, the check only warns)."""
    usable: int | None
    fits: bool | None
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Bytes per device, all terms."""
        return sum(self.terms.values())

    def biggest(self) -> str:
        """The largest term."""
        return max(self.terms, key=lambda name: self.terms[name])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy, with the total."""
        return {**asdict(self), "total": self.total, "biggest": self.biggest()}


def model_shape(model_dir: Path, config: TrainingConfig) -> ModelShape:
    """Count the parameters (total and trainable, with the recipe's LoRA) without allocating any weight.

    Raises:
        InputError: ``model_dir`` has no readable ``config.json``.
    """
    import torch
    from transformers import AutoConfig

    from tunekit_train.model import freeze_vision, model_class

    if not (model_dir / "config.json").is_file():
        msg = f"{model_dir}: not a Hugging Face model directory (no config.json)"
        raise InputError(msg)
    hf = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = model_class(model_dir).from_config(hf)
        if config.model.lora is not None:
            from tunekit_train.lora import add_lora

            model = add_lora(model, config.model.lora, skip_vision=config.model.freeze_vision)
        else:
            freeze_vision(model, encoder=config.model.freeze_vision, projector=config.model.mm_cfg.image_projector.freeze)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    text = hf.get_text_config() if hasattr(hf, "get_text_config") else hf
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    intermediate = getattr(text, "intermediate_size", None) or 4 * text.hidden_size
    return ModelShape(params, trainable, text.num_hidden_layers, text.hidden_size, intermediate, kv_heads * head_dim, text.vocab_size)


def _saved_per_token(shape: ModelShape, act_bytes: int, norm_bytes: int) -> int:
    """Bytes one decoder layer keeps for backward per token (see the module docstring)."""
    h, kv, inter = shape.hidden, shape.kv_dim, shape.intermediate
    norms = 2 * (2 * h)  # each RMSNorm: its input and normalised value, in float32 under autocast
    matmul_outputs = 2 * h + h + 2 * h + 3 * kv + h + h  # norm outputs, q (+ rotary), k (+ rotary), v, attention out, o_proj in
    mlp = 4 * inter  # gate, up, silu(gate), silu(gate) * up
    return norms * norm_bytes + (matmul_outputs + mlp) * act_bytes


def make_plan(
    config: TrainingConfig,
    shape: ModelShape,
    *,
    device: str,
    processes: int = 1,
    budget: int | None = None,
    budget_from: str | None = None,
    checkpointing: bool | None = None,
    steps_per_epoch: int | None = None,
    attention: str = "sdpa",
) -> Plan:
    """The plan of ``config`` on ``shape``; ``checkpointing`` None decides ``auto`` (on when needed to fit)."""
    import torch

    from tunekit_train.precision import resolve_precision, weight_bytes

    dev = torch.device(device)
    precision = resolve_precision(config.precision, dev)
    fsdp = config.fsdp and processes > 1
    tokens = config.micro_batch_size * config.max_length
    lora = config.model.lora is not None
    trained_bytes = weight_bytes(config.precision, dev, trainable=True, lora=lora)
    frozen_bytes = weight_bytes(config.precision, dev, trainable=False, lora=lora)
    terms = _state_terms(config, shape, trained_bytes, frozen_bytes, processes=processes, fsdp=fsdp)
    without, with_ckpt = _activations(shape, tokens, precision)
    terms.update(_buffer_terms(config, shape, dev, tokens, attention, float_bytes=frozen_bytes))
    usable = None if budget is None else int(budget * (1 - CUDA_RESERVE if dev.type == "cuda" else 1))
    notes: list[str] = []
    if checkpointing is None:  # auto: on only when the run does not fit without it
        checkpointing = usable is not None and sum(terms.values()) + without > usable
        notes.append(f"activation_checkpointing auto: {'on' if checkpointing else 'off'}")
    terms["activations"] = with_ckpt if checkpointing else without
    total = sum(terms.values())
    return Plan(
        device=dev.type,
        processes=processes,
        strategy=("fsdp" if fsdp else "ddp") if processes > 1 else "single",
        precision=precision,
        activation_checkpointing=checkpointing,
        params_total=shape.params,
        params_trainable=shape.trainable,
        tokens_per_micro_batch=tokens,
        tokens_per_step=config.global_batch_size * config.max_length,
        steps_per_epoch=steps_per_epoch,
        terms=terms,
        activations_without_checkpointing=without,
        activations_with_checkpointing=with_ckpt,
        budget=budget,
        budget_from=budget_from if budget is not None else None,
        usable=usable,
        fits=None if usable is None else total <= usable,
        notes=notes,
    )


def _state_terms(
    config: TrainingConfig, shape: ModelShape, trained_bytes: int, frozen_bytes: int, *, processes: int, fsdp: bool
) -> dict[str, int]:
    """Weights, gradients, optimizer state (and a DPO reference copy), in bytes per device.

    ``trained_bytes`` and ``frozen_bytes`` are the bytes of one trained and one frozen parameter.
    """
    shard = processes if fsdp else 1
    frozen = shape.params - shape.trainable
    terms: dict[str, int] = {
        "weights": (shape.trainable * trained_bytes + frozen * frozen_bytes) // shard,
        "gradients": shape.trainable * trained_bytes // shard * (2 if processes > 1 and not fsdp else 1),
        "optimizer_state": 2 * shape.trainable * trained_bytes // shard,
    }
    if config.method == "dpo" and config.model.lora is None and not config.model.dpo_cfg.precompute_ref:  # type: ignore[union-attr]
        terms["reference_weights"] = shape.params * frozen_bytes
    return terms


def _activations(shape: ModelShape, tokens: int, precision: str) -> tuple[int, int]:
    """Activation bytes of one micro-batch of ``tokens``: without and with per-layer checkpointing."""
    act_bytes = 4 if precision == "fp32" else 2
    norm_bytes = 2 if precision == "bf16" else 4
    per_layer = _saved_per_token(shape, act_bytes, norm_bytes) * tokens
    outside = tokens * shape.hidden * (act_bytes + 2 * norm_bytes + 2 * 4)  # embeddings, final norm, gradient in flight
    without = shape.layers * per_layer + outside
    # Checkpointed: the layer inputs, and in backward one layer's recomputed tensors with the gradients
    # computed from them (measured on CPU: about twice the layer's saved set at the peak).
    with_ckpt = shape.layers * tokens * shape.hidden * norm_bytes + 2 * per_layer + outside
    return without, with_ckpt


def _buffer_terms(
    config: TrainingConfig, shape: ModelShape, dev: torch.device, tokens: int, attention: str, *, float_bytes: int
) -> dict[str, int]:
    """The attention mask (padded attention only) and the chunked loss's buffers, in bytes.

    ``float_bytes`` is the element size of an additive float mask.
    """
    terms: dict[str, int] = {}
    if attention in ("sdpa", "eager"):  # `tunekit_train.attention`: bool on CUDA SDPA, additive float otherwise
        float_mask = attention == "eager" or dev.type == "cpu"
        mask_bytes = float_bytes if float_mask else 1
        terms["attention_mask"] = config.micro_batch_size * config.max_length**2 * mask_bytes
    chunk = min(config.loss_chunk_tokens, tokens)
    terms["loss_buffers"] = 3 * chunk * shape.vocab * 4 + shape.vocab * shape.hidden * 4
    return terms


def remedy(plan: Plan, config: TrainingConfig) -> str:
    """The recipe key that would shrink the plan's biggest term."""
    lora = config.model.lora is not None
    fixes = {
        "activations": "training_config.activation_checkpointing: true"
        if not plan.activation_checkpointing
        else "a smaller training_config.max_length or micro_batch_size",
        "attention_mask": "training_config.attn_implementation: auto (sdpa_varlen or flash_attention_2), which builds no mask",
        "loss_buffers": "a smaller training_config.loss_chunk_tokens",
        "weights": "training_config.precision: bf16 (a bf16 frozen base)" if lora else "training_config.strategy: fsdp over more processes, or training_config.model.peft.peft_scheme: lora",
        "gradients": "training_config.model.peft.peft_scheme: lora, or training_config.strategy: fsdp over more processes",
        "optimizer_state": "training_config.model.peft.peft_scheme: lora, or training_config.strategy: fsdp over more processes",
        "reference_weights": "training_config.model.dpo_cfg.precompute_ref: true",
    }
    return fixes[plan.biggest()]


def plan_recipe(
    loaded: LoadedRecipe, *, device: str | None = None, budget: int | None = None, processes: int | None = None
) -> Plan:
    """The plan of a loaded recipe on ``device`` (default: CUDA when available), from config.json only.

    The budget defaults to the GPU's memory on CUDA and the available RAM on CPU.
    """
    import torch

    from tunekit_train.attention import resolve_backend
    from tunekit_train.sources import local_path

    recipe, config = loaded.recipe, loaded.recipe.training_config
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_dir = local_path(recipe.run.model_name_or_path)
    if model_dir is None or not (model_dir / "config.json").is_file():
        raise ConfigError(loaded.source, [f"run.model_name_or_path: {recipe.run.model_name_or_path}: no config.json to plan from"])
    budget_from = "--gpu-memory"
    if budget is None:
        budget, budget_from = _device_memory(device)
    checkpointing = None if config.checkpointing == "auto" else bool(config.checkpointing)
    return make_plan(
        config,
        model_shape(model_dir, config),
        device=device,
        processes=processes or int(os.environ.get("WORLD_SIZE", "1")),
        budget=budget,
        budget_from=budget_from,
        checkpointing=checkpointing,
        steps_per_epoch=_steps_per_epoch(recipe.run.data_s3_path, config),
        attention=resolve_backend(config.attn_implementation, torch.device(device)),
    )


def check_fits(plan: Plan, loaded: LoadedRecipe) -> None:
    """Raise a `ConfigError` naming the biggest term and the key that would fix it when the plan does not fit."""
    if plan.fits is not False or plan.budget_from == "available RAM":  # RAM on CPU: swapping is slow, not fatal
        return
    biggest = plan.biggest()
    problem = (
        f"the run needs about {gib(plan.total)} per device but {gib(plan.usable or 0)} is usable"
        f" ({plan.device}, budget {gib(plan.budget or 0)}); the biggest term is {biggest.replace('_', ' ')}"
        f" ({gib(plan.terms[biggest])}): set {remedy(plan, loaded.recipe.training_config)} (see `train plan`)"
    )
    raise ConfigError(loaded.source, [problem])


def gib(n: int) -> str:
    """``n`` bytes as GiB with two decimals."""
    return f"{n / 2**30:.2f} GiB"


def _device_memory(device: str) -> tuple[int | None, str]:
    if device.startswith("cuda"):
        import torch

        total = torch.cuda.get_device_properties(torch.device(device)).total_memory if torch.cuda.is_available() else None
        return total, "GPU memory"
    try:
        meminfo = Path("/proc/meminfo").read_text(encoding="utf-8")
    except OSError:
        return None, "available RAM"
    match = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.MULTILINE)
    return (int(match.group(1)) * 1024 if match else None), "available RAM"


def _steps_per_epoch(data: str | None, config: TrainingConfig) -> int | None:
    # Known before training only for a packed directory; JSONL is packed when the run starts.
    from tunekit_train.sources import local_path

    path = local_path(data) if data else None
    stats = path / "stats.json" if path is not None else None
    if stats is None or not stats.is_file():
        return None
    rows = json.loads(stats.read_text(encoding="utf-8")).get("rows")
    return math.ceil(rows / config.global_batch_size) if isinstance(rows, int) and rows else None
