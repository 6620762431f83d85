"""``train export``: a run's model as a Hugging Face directory in safetensors.

A full-rank run exports its model as is. A LoRA run exports the adapter (``adapter_config.json`` +
``adapter_model.safetensors``, loadable with peft on top of the base), or with ``merge=True`` a plain
model whose linear weights have ``alpha/r * B @ A`` folded in, so it serves without peft. The tokenizer
files go along. The directory is assembled next to the target and renamed into place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunekit_data.errors import UsageError
from tunekit_data.io import publish_dir
from tunekit_train.checkpoint import save_weights
from tunekit_train.generate import copy_tokenizer, load_trained, model_dir
from tunekit_train.lora import is_adapter_dir


def export_model(source: Path, out: Path, *, merge: bool = False, tokenizer: Path | None = None) -> dict[str, Any]:
    """Export the model of ``source`` (a run, checkpoint, model or adapter directory) to ``out``.

    Raises:
        UsageError: ``out`` exists and is not empty, or ``merge`` was asked of a full-rank model.
        InputError: ``source`` holds no model.
    """
    if out.exists() and any(out.iterdir()):
        msg = f"{out}: already exists and is not empty; pick a new directory"
        raise UsageError(msg)
    directory = model_dir(source)
    adapter = is_adapter_dir(directory)
    if merge and not adapter:
        msg = f"{directory}: a full-rank model has no adapter to merge; export without --merge"
        raise UsageError(msg)
    model = load_trained(directory)
    with publish_dir(out) as staging:
        if merge:
            model.merge_and_unload().save_pretrained(staging)
        else:
            save_weights(model, staging)
        copy_tokenizer(tokenizer or directory, staging)
    kind = "merged model" if merge else ("adapter" if adapter else "model")
    return {"source": str(directory), "output": str(out), "kind": kind, "files": sorted(p.name for p in out.iterdir())}
