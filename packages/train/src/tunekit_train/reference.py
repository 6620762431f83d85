"""Reference log-probs for DPO, with no second copy of the model wherever the method allows it.

- LoRA: the policy itself with its adapters disabled (peft ``disable_adapter``). LoRA's B matrices start
  at zero, so the base model IS the starting policy: no extra memory, one extra no-grad forward per
  micro-batch (TRL and torchtune do the same).
- Full-rank: a frozen copy of the starting model (one more set of weights; no gradients, no optimizer
  state), taken before a resumed run loads its checkpoint, so the reference stays the starting model.
- ``dpo_cfg.precompute_ref``: one no-grad pass over the data before training gives every segment's
  reference log-prob, cached in the pack directory as ``reference/<key>.npy``. The key hashes the
  reference weights, the packed rows and the device type (the compute precision), so a later run on the
  same model and data reuses the file. Training then runs one forward per micro-batch and keeps no
  reference model at all. (Each rank of a multi-process job attaches the values to every row, so
  there every rank reads the whole pack rather than only its share.)

The reference always runs in eval mode: it stands for a fixed model, and dropout noise would only add
variance to the margins (and make precomputed and online values differ).

A LoRA run that continues an earlier adapter (``run.custom_weights_path``) takes the base model without
any adapter as its reference.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tunekit_data.io import publish_file
from tunekit_tokenize import REQUIRED_COLUMNS
from tunekit_train.attention import Backend, flattens_rows
from tunekit_train.data import BatchStream, Column, PackedRows
from tunekit_train.dpo import REFERENCE_COLUMN, PairBatch, Reference, segment_logps
from tunekit_train.lora import is_lora
from tunekit_train.losses import DEFAULT_CHUNK
from tunekit_train.precision import autocast, resolve_precision
from tunekit_train.recipe import TrainingConfig
from tunekit_train.vision import batch_builder

CACHE_DIR = "reference"
_CACHE_VERSION = "tunekit-reference-1"


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def model_reference(model: nn.Module, batch: PairBatch, backend: Backend, *, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Per-segment log-probs of ``model`` as it is now, in eval mode (full-rank precompute, `FrozenCopy`)."""
    with _eval_mode(model):
        return segment_logps(model, batch, backend, chunk=chunk)


class AdaptersOff:
    """A LoRA model's base as the reference: the policy's own peft model with its adapters disabled.

    It holds the peft model itself, not the module the loop trains (which may be a DDP wrapper), so the
    no-grad reference pass never goes through gradient synchronisation.
    """

    def __init__(self, model: nn.Module, *, chunk: int = DEFAULT_CHUNK) -> None:
        self.model, self.chunk = model, chunk

    def __call__(self, policy: nn.Module, batch: PairBatch, backend: Backend) -> torch.Tensor:
        """The batch's reference log-probs: the policy's base, its adapters off."""
        with self.model.disable_adapter():  # type: ignore[operator]
            return model_reference(self.model, batch, backend, chunk=self.chunk)


class FrozenCopy:
    """A frozen copy of the starting model, for full-rank DPO without precomputed log-probs."""

    def __init__(self, model: nn.Module, *, chunk: int = DEFAULT_CHUNK) -> None:
        self.model, self.chunk = copy.deepcopy(model).eval().requires_grad_(requires_grad=False), chunk

    def __call__(self, policy: nn.Module, batch: PairBatch, backend: Backend) -> torch.Tensor:
        """The batch's reference log-probs from the frozen copy."""
        return model_reference(self.model, batch, backend, chunk=self.chunk)


def precomputed(model: nn.Module, batch: PairBatch, backend: Backend) -> torch.Tensor:
    """The log-probs collated from the rows' reference column (added by `attach_reference`)."""
    assert batch.reference is not None, "precomputed reference log-probs were not attached to the rows"
    return batch.reference


def build_reference(
    model: nn.Module, config: TrainingConfig, rows: list[PackedRows], *, backend: Backend, device: torch.device
) -> tuple[Reference, list[str]]:
    """The reference a DPO run uses, and notes for its events; call before loading a checkpoint.

    With ``precompute_ref`` every ``rows`` gets its reference column (from the cache or computed now).
    """
    assert config.model.dpo_cfg is not None
    lora, chunk = is_lora(model), config.loss_chunk_tokens
    if not config.model.dpo_cfg.precompute_ref:
        if lora:
            return AdaptersOff(model, chunk=chunk), ["reference: the policy with its LoRA adapters disabled"]
        return FrozenCopy(model, chunk=chunk), ["reference: a frozen copy of the starting model"]
    online = AdaptersOff(model, chunk=chunk) if lora else functools.partial(model_reference, chunk=chunk)
    notes = [
        attach_reference(
            rows_, online, model, micro_batch=config.micro_batch_size, backend=backend, device=device, precision=config.precision
        )
        for rows_ in rows
    ]
    return precomputed, notes


def attach_reference(
    rows: PackedRows,
    reference: Reference,
    model: nn.Module,
    *,
    micro_batch: int,
    backend: Backend,
    device: torch.device,
    precision: str = "auto",
) -> str:
    """Give ``rows`` the column of every segment's reference log-prob; returns what was done, for the events.

    Reads ``<pack>/reference/<key>.npy`` when it exists, else computes the values in one no-grad pass and
    writes them there (atomically). A pack directory that cannot be written to is used without a cache.
    """
    path = Path(rows.source) / CACHE_DIR / f"{reference_key(model, rows, device, precision)}.npy"
    segments = rows.columns["seq_lens"]
    values = np.load(path) if path.is_file() else None
    if values is not None and len(values) == len(segments.values):
        note = f"reference log-probs: reused {path}"
    else:
        started = time.perf_counter()
        values = _reference_pass(rows, reference, model, micro_batch=micro_batch, backend=backend, device=device, precision=precision)
        note = f"reference log-probs: computed for {len(values) // 2} pairs in {time.perf_counter() - started:.1f} s"
        try:
            _save_atomic(path, values)
            note += f", cached at {path}"
        except OSError as exc:
            note += f", not cached ({path.parent}: {exc.strerror})"
    rows.columns[REFERENCE_COLUMN] = Column(values, segments.offsets)
    return note


@torch.no_grad()
def _reference_pass(
    rows: PackedRows, reference: Reference, model: nn.Module, *, micro_batch: int, backend: Backend, device: torch.device, precision: str
) -> np.ndarray:
    # Rows in stored order, so the concatenated per-segment values line up with the flat seq_lens column.
    stream = BatchStream(
        rows, global_batch=micro_batch, micro_batch=micro_batch, seed=0, flatten=flattens_rows(backend), build=batch_builder(rows.manifest, pairs=True)
    )
    values = []
    for batch in stream.micro_batches():
        with autocast(device, precision):
            values.append(reference(model, batch.to(device), backend).float().cpu().numpy())
    return np.concatenate(values)


def reference_key(model: nn.Module, rows: PackedRows, device: torch.device, precision: str = "auto") -> str:
    """Cache key of a reference pass: the reference weights (adapters excluded), the rows, the compute precision."""
    compute = resolve_precision(precision, device)
    # The device type alone named the precision before the key existed: keep those keys for the default.
    tag = device.type if compute == resolve_precision("auto", device) else f"{device.type} {compute}"
    digest = hashlib.sha256(f"{_CACHE_VERSION} {tag}".encode())
    for name, tensor in model.state_dict().items():
        if "lora_" in name:  # the reference runs with the adapters off
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    for name in REQUIRED_COLUMNS:
        digest.update(rows.columns[name].values.tobytes())
        digest.update(rows.columns[name].offsets.tobytes())
    return digest.hexdigest()[:32]


def _save_atomic(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(exist_ok=True)
    # publish_file's temporary names are fresh per writer: data-parallel ranks may write the same
    # (identical) values at once.
    with publish_file(path) as f:
        np.save(f, values)
