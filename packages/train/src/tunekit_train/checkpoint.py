"""Checkpoints: written atomically, ranked top-k, always with a resumable ``last``.

Layout of ``RUN_DIR/checkpoints/step-000050/``::

    model.safetensors, config.json ...   full-rank: a Hugging Face model directory (save_pretrained)
    adapter_model.safetensors            LoRA: the adapter, as peft saves it
    adapter_config.json
    optimizer.pt  scheduler.pt  rng.pt   optimizer moments, schedule position, torch RNG states
    trainer_state.json                   step, data position (epoch, rows consumed), tokens, metrics,
                                         early-stopping counters

    distributed/                         ``strategy: fsdp`` runs, instead of the weights and optimizer.pt:
                                         model and optimizer state as torch.distributed.checkpoint (DCP)
                                         shards, one file per rank that wrote it (LoRA: adapters only)

DCP records each tensor's global shape and which slice every file holds, so a checkpoint written by N
ranks loads on any other number of ranks, or into an unsharded model in one process. An fsdp run
checkpoints that way even in one process, so its checkpoints stay one format.

A checkpoint is assembled in ``checkpoints/.tmp-step-N`` and renamed into place, and ``checkpoints/last``
is a symlink swapped with ``os.replace``, so a crash never leaves a half-written checkpoint or a dangling
``last``. Retention keeps the ``save_top_k`` best by the monitored metric plus the newest (``save_last``);
with ``weights_only`` the others drop their optimizer/scheduler/RNG files. The services cannot resume from
intermediate checkpoints; any full checkpoint here resumes exactly (same weights as an uninterrupted run).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from tunekit_data.errors import InputError
from tunekit_data.io import replace_dir, stage_dir
from tunekit_train.distributed import SINGLE_PROCESS, World, is_sharded
from tunekit_train.lora import ADAPTER_WEIGHTS, is_lora

STATE_FILE = "trainer_state.json"
RESUME_FILES = ("optimizer.pt", "scheduler.pt", "rng.pt")
SHARDED_DIR = "distributed"
"""Where an fsdp run's checkpoint keeps its DCP model and optimizer shards."""


@dataclass(frozen=True)
class Retention:
    """Which checkpoints survive: ``checkpoint_callback_params`` plus ``weights_only``."""

    monitor: str = "step"
    """``step`` or any logged metric (``checkpoint_callback_params.monitor``)."""
    mode: Literal["min", "max"] = "max"
    top_k: int = 1
    save_last: bool = True
    weights_only: bool = False


class Checkpointer:
    """Saves checkpoints under ``run_dir/checkpoints`` and applies the retention rule after each save."""

    def __init__(self, run_dir: Path, retention: Retention, *, sharded: bool = False, world: World = SINGLE_PROCESS) -> None:
        self.root = run_dir / "checkpoints"
        self.retention = retention
        self.sharded = sharded
        """Write model and optimizer as DCP shards (every rank calls `save`); else rank 0 alone saves."""
        self.world = world

    def save(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        state: dict[str, Any],
    ) -> Path | None:
        """Write a full checkpoint for ``state["step"]`` and prune older ones; returns its directory.

        Sharded: every rank writes its shards, then rank 0 completes the checkpoint; the others get None.
        """
        main = self.world.is_main
        final = self.root / f"step-{state['step']:06d}"
        # Not a fresh staging name: in a sharded save every rank writes into this one directory.
        tmp = self.root / f".tmp-{final.name}"
        if main:
            stage_dir(final, name=tmp.name)
        if self.sharded:
            self.world.barrier()  # the directory exists before any rank writes into it
            # dcp.save returns on rank 0 only after every rank has written its shard.
            save_sharded(model, optimizer, tmp / SHARDED_DIR)
            if not main:
                return None
        else:
            save_weights(model, tmp)
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(_rng_state(), tmp / "rng.pt")
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
        _fsync_tree(tmp)
        replace_dir(tmp, final)  # replaces the same step saved again after a resume
        # publish_file and publish_dir write files and directories, not links: a new link renamed
        # over the old one (os.replace) is the atomic swap for a symlink.
        link = self.root / ".last.tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(final.name)
        link.replace(self.root / "last")
        self._prune(newest=final)
        return final

    def _prune(self, newest: Path) -> None:
        rule = self.retention
        saved = [p for p in self.root.glob("step-*") if (p / STATE_FILE).is_file()]

        def rank(path: Path) -> float:
            state = read_state(path)
            value = state["step"] if rule.monitor == "step" else state.get(rule.monitor)
            if value is None:  # never measured: worst
                return float("inf")
            return value if rule.mode == "min" else -value

        ranked = sorted(saved, key=rank)
        keep = set(ranked if rule.top_k < 0 else ranked[: rule.top_k])
        if rule.save_last:
            keep.add(newest)
        for path in saved:
            if path not in keep:
                shutil.rmtree(path)
            elif rule.weights_only and path != newest:
                # A sharded checkpoint keeps its DCP optimizer shards: they cannot be split from the weights.
                for name in RESUME_FILES:
                    (path / name).unlink(missing_ok=True)


def save_weights(model: nn.Module, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write the trainable weights: the adapter for LoRA, the whole model (a HF directory) otherwise.

    ``state_dict``: the model's full state when ``model`` itself holds only shards (FSDP, gathered by
    `tunekit_train.distributed.gathered_state_dict`); the model then only provides names and config.
    """
    if is_lora(model):
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        # Written by hand rather than with PeftModel.save_pretrained, which also writes a README model card.
        adapter = get_peft_model_state_dict(model, state_dict=state_dict)
        save_file(adapter, directory / ADAPTER_WEIGHTS, metadata={"format": "pt"})
        model.peft_config["default"].save_pretrained(directory)
    else:
        model.save_pretrained(directory, state_dict=state_dict)


def _dcp_options(model: nn.Module) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # LoRA: only the adapters (and their moments) change; the frozen base is rebuilt from the model path.
    lora = is_lora(model)
    return StateDictOptions(ignore_frozen_params=lora, strict=not lora)


@contextlib.contextmanager
def _one_process_ok() -> Iterator[None]:
    # DCP warns that it assumes one process when no group exists: that is exactly the case meant here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def save_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Write model and optimizer state with torch.distributed.checkpoint (every rank its own shards)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer, options=_dcp_options(model))
    with _one_process_ok():
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=directory)


def load_sharded(model: nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Load `save_sharded` output into ``model`` and ``optimizer``, sharded or not, on any number of ranks."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    options = _dcp_options(model)
    # The templates say which slice of each tensor this rank holds; DCP reads just that from the files.
    # (get_state_dict also creates the optimizer's moments, which a fresh optimizer lacks until a step.)
    model_state, optim_state = get_state_dict(model, optimizer, options=options)
    state = {"model": model_state, "optimizer": optim_state}
    with _one_process_ok():
        dcp.load(state, checkpoint_id=directory)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"], options=options)


def load_weights(model: nn.Module, directory: Path) -> None:
    """Load weights saved by `save_weights` (or a compatible HF / peft directory) into ``model`` in place.

    Raises:
        InputError: the directory holds a different kind of weights, or names that do not match.
    """
    from safetensors.torch import load_file

    if is_lora(model):
        from peft import set_peft_model_state_dict

        if not (directory / ADAPTER_WEIGHTS).is_file():
            msg = f"{directory}: no {ADAPTER_WEIGHTS} (the run trains LoRA adapters; this is not an adapter checkpoint)"
            raise InputError(msg)
        result = set_peft_model_state_dict(model, load_file(directory / ADAPTER_WEIGHTS))
        if result.unexpected_keys:
            msg = f"{directory}: adapter does not match the model (unexpected {result.unexpected_keys[0]})"
            raise InputError(msg)
        return
    if not (directory / "model.safetensors").is_file():
        msg = f"{directory}: no model.safetensors (a full-rank run needs a full-model checkpoint)"
        raise InputError(msg)
    weights = load_file(directory / "model.safetensors")
    result = model.load_state_dict(weights, strict=False)
    # save_pretrained drops tied copies (lm_head.weight when tied to the embeddings); those may be missing.
    loaded = {t.data_ptr() for name, t in model.state_dict().items() if name in weights}
    untied = [k for k in result.missing_keys if model.state_dict()[k].data_ptr() not in loaded]
    if result.unexpected_keys or untied:
        first = (result.unexpected_keys or untied)[0]
        msg = f"{directory}: checkpoint does not match the model ({first})"
        raise InputError(msg)


def read_state(directory: Path) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint."""
    return json.loads((directory / STATE_FILE).read_text(encoding="utf-8"))


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint directory from a run directory (its ``checkpoints/last``) or a checkpoint directory.

    Raises:
        InputError: ``path`` is neither, or the run has no checkpoint yet.
    """
    if (path / STATE_FILE).is_file():
        return path
    last = path / "checkpoints" / "last"
    if last.exists():
        return last.resolve()
    msg = f"{path}: no checkpoint here (expected a run directory with checkpoints/last, or a checkpoint directory)"
    raise InputError(msg)


def restore(
    directory: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Load a full checkpoint into the objects (weights, optimizer, schedule, RNG) and return its state.

    A sharded (fsdp) checkpoint loads into a sharded or a plain model on any number of ranks; one written
    by rank 0 alone (ddp, one process) loads into a plain or DDP model only.

    Raises:
        InputError: the checkpoint kept weights only (``weights_only`` pruned it), or an FSDP run was
            asked to resume a replicated checkpoint.
    """
    sharded = (directory / SHARDED_DIR).is_dir()
    needed = RESUME_FILES[1:] if sharded else RESUME_FILES
    missing = [name for name in needed if not (directory / name).is_file()]
    if missing:
        msg = f"{directory}: weights-only checkpoint (no {missing[0]}); resume from the run's checkpoints/last"
        raise InputError(msg)
    if sharded:
        load_sharded(model, optimizer, directory / SHARDED_DIR)
    elif is_sharded(model):
        msg = f"{directory}: written by a ddp run; resume it with training_config.strategy ddp"
        raise InputError(msg)
    else:
        load_weights(model, directory)
        optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=True))
    _set_rng_state(torch.load(directory / "rng.pt", weights_only=True))
    return read_state(directory)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_tree(path: Path) -> None:
    # The rename is atomic only for data already on disk.
    for root, _dirs, files in os.walk(path):
        for name in files:
            with Path(root, name).open("rb") as f:
                os.fsync(f.fileno())
