"""Generate from a trained model: ``train generate``, and the ``eval_prompts`` logged at each checkpoint.

``train generate`` is seed 001's "deploy and invoke" step, locally; ``eval_prompts`` are Databricks'.

Defaults are Databricks' eval-prompt settings: sampling with max_new_tokens 100, temperature 1, top_k 50,
top_p 0.95. Prompts go through the tokenizer's chat template as one user turn (what SFT trained on) when
the tokenizer has one; ``raw=True`` feeds the text as it is (CPT models).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunekit_data.errors import InputError, at_least, between
from tunekit_train.lora import ADAPTER_CONFIG, is_adapter_dir

# The image processor's settings travel with the tokenizer: a vision-language model's prompts need both.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "preprocessor_config.json")


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings (greedy when ``do_sample`` is False)."""

    max_new_tokens: int = 100
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 0.95
    do_sample: bool = True
    seed: int = 0
    raw: bool = False
    """Skip the chat template."""
    system: str | None = None
    """System turn put before each prompt (use the one the model was trained with)."""

    def __post_init__(self) -> None:
        """Raise UsageError naming the option and its allowed range."""
        at_least("--max-new-tokens", self.max_new_tokens, 1)
        at_least("--temperature", self.temperature, 0.0)
        at_least("--top-k", self.top_k, 0)
        between("--top-p", self.top_p, 0, 1)


def hf_tokenizer(path: Path) -> Any:
    """The Hugging Face tokenizer in ``path``, for generation.

    ``tunekit_tokenize.load_tokenizer`` reads the same files for packing, without transformers.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def copy_tokenizer(source: Path, target: Path) -> None:
    """Copy the tokenizer files of ``source`` into ``target``."""
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


def model_dir(path: Path) -> Path:
    """The model directory behind ``path``: a run's ``final/`` (else its last checkpoint), or ``path`` itself.

    Raises:
        InputError: nothing loadable there.
    """
    candidates = [path / "final", path / "checkpoints" / "last", path]
    for candidate in candidates:
        if (candidate / "config.json").is_file() or is_adapter_dir(candidate):
            return candidate.resolve()
    msg = f"{path}: not a model directory, adapter directory or run directory"
    raise InputError(msg)


def load_trained(path: Path) -> nn.Module:
    """Load a model, or a base model with its adapter, for inference (eval mode).

    Raises:
        InputError: no model can be found at ``path``.
    """
    from tunekit_train.model import load_model

    directory = model_dir(path)
    if not is_adapter_dir(directory):
        return load_model(directory, backend="sdpa", seed=0)[0].eval()
    from peft import PeftModel

    base = Path(json.loads((directory / ADAPTER_CONFIG).read_text(encoding="utf-8"))["base_model_name_or_path"])
    return PeftModel.from_pretrained(load_model(base, backend="sdpa", seed=0)[0], directory).eval()


def tokenizer_for(path: Path, tokenizer: Path | None = None) -> Any:
    """The tokenizer given, or the one saved with the model behind ``path``.

    Raises:
        InputError: there is none.
    """
    source = tokenizer or model_dir(path)
    if not (source / "tokenizer.json").is_file():
        msg = f"{source}: no tokenizer.json; pass --tokenizer DIR"
        raise InputError(msg)
    return hf_tokenizer(source)


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]], chat_template: str | None = None) -> list[int]:
    """Token ids of ``messages`` rendered with the chat template and an open assistant turn.

    ``chat_template`` is a template source to use instead of the tokenizer's own (the one a run trained with).
    """
    return tokenizer.apply_chat_template(messages, chat_template=chat_template, add_generation_prompt=True, return_dict=True)["input_ids"]


@torch.no_grad()
def generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: list[str],
    settings: GenerationSettings,
    *,
    images: list[Any] = (),
    image_processor: Any = None,
    videos: list[Any] = (),
) -> list[str]:
    """Complete each prompt; returns the generated text only (special tokens removed).

    ``images`` (Pillow images) and then ``videos`` (sampled frames: `tunekit_train.vision.load_videos`),
    for a vision-language model and its ``image_processor``, go before each prompt's text in its user turn.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    torch.manual_seed(settings.seed)
    outputs = []
    for prompt in prompts:
        turns = [{"role": "system", "content": settings.system}] if settings.system else []
        if images or videos:
            from tunekit_train.vision import vision_inputs

            media = [*({"type": "image", "image": image} for image in images), *({"type": "video", "video": video} for video in videos)]
            parts = [*media, {"type": "text", "text": prompt}]
            inputs = vision_inputs(tokenizer, image_processor, [*turns, {"role": "user", "content": parts}])
            ids = inputs.pop("input_ids")
            outputs.append(complete_ids(model, tokenizer, ids.to(device), settings, **{k: v.to(device) for k, v in inputs.items()}))
            continue
        if tokenizer.chat_template and not settings.raw:
            ids = torch.tensor([prompt_ids(tokenizer, [*turns, {"role": "user", "content": prompt}])])
        else:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        outputs.append(complete_ids(model, tokenizer, ids.to(device), settings))
    model.train(was_training)
    return outputs


@torch.no_grad()
def complete_ids(model: nn.Module, tokenizer: Any, ids: torch.Tensor, settings: GenerationSettings, **images: torch.Tensor) -> str:
    """The completion of one prompt (``ids``: shape 1 x length, on the model's device), special tokens removed.

    ``images``: a vision-language prompt's ``pixel_values``, ``image_grid_thw`` (``pixel_values_videos``,
    ``video_grid_thw``) and ``mm_token_type_ids`` (`tunekit_train.vision.vision_inputs`), on the same device.
    """
    sampling = {"temperature": settings.temperature, "top_k": settings.top_k, "top_p": settings.top_p} if settings.do_sample else {}
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=settings.max_new_tokens,
        do_sample=settings.do_sample,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **images,
        **sampling,
    )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
