"""Data-parallel training across processes (DDP or FSDP2), set up from the standard torchrun environment.

A launch under ``torchrun`` (or ``train run --nproc-per-node N``, which re-executes through it, or SLURM
with the same variables) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
`init_from_env` joins the process group (gloo on CPU, nccl on GPU). Without them the run is one process:
`SINGLE_PROCESS` (rank 0 of 1), whose collectives do nothing and whose `wrap` and `batch_stream` are the plain
model and stream, so the training code reads the same for one process and many.

How the update stays that of one big batch:

- every rank walks the same epoch order and the same (epoch, offset) positions; of each step's
  ``global_batch_size`` rows, rank r takes the r-th contiguous share (`ShardedStream`), so the data
  position in a checkpoint is global and resumes on any process count; a rank reads only the rows of
  its shares from the pack (`tunekit_train.data.PackedRows.select`);
- the step's trained-unit count (tokens, or pairs for DPO) is summed across ranks before backward, and
  each rank back-propagates ``world * loss_sum / global_units``: DDP averages gradients over ranks, so the
  sum of the ranks' losses over all the step's units is what reaches every replica;
- gradients are synchronised once per step (DDP's ``no_sync`` / FSDP's ``set_requires_gradient_sync``
  on all but the last micro-batch).

``training_config.strategy: fsdp`` shards instead of replicating (`shard`): every decoder layer and
then the root become FSDP2 units (``fully_shard``), so each rank holds 1/N of the parameters, gradients
and optimizer moments. FSDP2 also averages gradients over ranks (a reduce-scatter), so the loss scaling
above is the same for both strategies.

Only rank 0 writes logs and the final model (under FSDP every rank first takes part in gathering it,
`gathered_state_dict`); checkpoints are rank 0's alone under DDP and written by every rank under FSDP
(`tunekit_train.checkpoint`). The other ranks use `SilentLog`.

When a rank fails, the first to fail claims the failure in the rendezvous store (`claim_failure`), so
each rank can say whether it failed or only stopped with the job; torchrun then stops the rest.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule, fully_shard

from tunekit_data.errors import ConfigError
from tunekit_train.checkpointing import decoder_layers
from tunekit_train.data import BatchStream, PackedRows
from tunekit_train.logs import RunLog

TIMEOUT = timedelta(minutes=int(os.environ.get("TUNEKIT_DIST_TIMEOUT_MIN", "30")))
"""How long a collective waits for a rank that stopped answering before every rank fails."""
FAULT_ENV = "TUNEKIT_TEST_FAIL"
"""For tests only: ``RANK:STEP`` makes that rank raise `InjectedFault` before optimizer step STEP, to check
that a failed rank stops the whole job with a clear error (`check_fault`)."""
_FAILED_KEY = "tunekit/first_failed_rank"


@dataclass(frozen=True)
class World:
    """This process's place in the job; ``World()`` is a single-process run (rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, checkpoints and exports."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """Whether other processes share the job (a process group exists)."""
        return self.size > 1

    def device(self) -> torch.device:
        """The device this rank trains on: its local GPU, or the CPU (one process: the GPU if there is one)."""
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if not self.is_distributed:
            return torch.device("cuda")
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (one collective for the whole list)."""
        if not self.is_distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def sum_tensors(self, tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """`sum` of scalar tensors, as CPU tensors in the same order; one process gets ``tensors`` back as they are."""
        if not self.is_distributed:
            return tensors  # no collective, so no host synchronisation either
        names = sorted(tensors)  # the same order on every rank
        reduced = dict(zip(names, self.sum([float(tensors[n]) for n in names], device), strict=True))
        return {name: torch.tensor(reduced[name]) for name in tensors}

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.is_distributed:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it fills shared caches: packed data, the base model), then the rest."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def leave(self) -> None:
        """Leave the job together: wait for every rank, then destroy the process group (one process: nothing).

        Explicitly, because a rank that exits with the group still alive can be aborted by gloo's background
        threads at interpreter exit ("terminate called ...").
        """
        if self.is_distributed:
            self.barrier()
            if dist.is_initialized():
                dist.destroy_process_group()


SINGLE_PROCESS = World()
"""A run that is one process: rank 0 of 1."""


def init_from_env() -> World:
    """Join the process group the launcher describes; `SINGLE_PROCESS` for a single-process run."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE_PROCESS
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def wrap(model: nn.Module, world: World, device: torch.device, *, fsdp: bool = False) -> nn.Module:
    """The module the loop trains: ``model`` sharded in place (`shard`), under DDP, or itself for one process.

    DDP broadcasts the parameters from rank 0 and averages gradients after each step's backward. Call
    before building the optimizer: sharding replaces the parameters with sharded ones.
    """
    if not world.is_distributed:
        return model
    if fsdp:
        return shard(model)
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        # Buffers (rotary frequencies) are identical on every rank; broadcasting them each forward would
        # also make validation, which every rank runs on its own, a collective.
        broadcast_buffers=False,
    )


def shard(model: nn.Module) -> nn.Module:
    """Shard ``model`` in place with FSDP2: each decoder layer its own unit, then the root (the rest).

    Decoder layers are the classes Hugging Face lists in ``_no_split_modules`` (``LlamaDecoderLayer`` ...),
    found through peft's wrappers too. One unit per layer means only about one layer's full parameters
    exist at a time during forward and backward.
    """
    # Every rank built the whole model; make it rank 0's, as DDP does. (The ranks that loaded the random
    # base rank 0 saved drew fewer random numbers before LoRA's init, so their adapters start elsewhere.)
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.detach(), src=0)
    for module in decoder_layers(model):
        fully_shard(module)
    fully_shard(model)
    return model


@contextlib.contextmanager
def root_unsharded(model: nn.Module) -> Iterator[None]:
    """Keep the root unit's parameters (embeddings, head, final norm) gathered for the block.

    For calls that bypass the root's own forward, which is what gathers them: Hugging Face and peft
    ``generate`` call the inner model directly. The layer units still gather and free themselves.
    A no-op for a model that is not sharded.
    """
    if not isinstance(model, FSDPModule):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model`` is FSDP-sharded (its state exists only spread over the ranks)."""
    return isinstance(model, FSDPModule)


def gathered_state_dict(model: nn.Module, *, lora: bool) -> dict[str, torch.Tensor] | None:
    """The full trained state of a sharded model, on rank 0's CPU (None on the others); every rank must call.

    With ``lora`` only the trainable (adapter) tensors are gathered: the frozen base is what was loaded.
    """
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=lora)
    state = get_model_state_dict(model, options=options)
    return state if dist.get_rank() == 0 else None


def sync_gradients(model: nn.Module, *, last: bool) -> contextlib.AbstractContextManager:
    """Reduce gradients over ranks only on the step's last micro-batch (DDP's ``no_sync``, FSDP's switch)."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(last)
    elif isinstance(model, nn.parallel.DistributedDataParallel) and not last:
        return model.no_sync()
    return contextlib.nullcontext()


class InjectedFault(RuntimeError):
    """The failure `FAULT_ENV` asks for."""


def check_fault(world: World, step: int) -> None:
    """Raise `InjectedFault` if `FAULT_ENV` names this rank of a multi-process job and ``step`` (tests of failure handling)."""
    spec = os.environ.get(FAULT_ENV)
    if spec and world.is_distributed and spec == f"{world.rank}:{step}":
        msg = f"injected failure before step {step} ({FAULT_ENV}={spec})"
        raise InjectedFault(msg)


def claim_failure(rank: int) -> int | None:
    """Record ``rank`` as the job's first failure unless another rank was first; returns the first one.

    Ranks whose collectives broke because a peer died call this too, after the peer did, so they get the
    peer's rank back. The key lives in the rendezvous store every rank already shares. None: the store is
    gone (its host, rank 0 or the launcher, went first), so the first failure is unknown.
    """
    if not dist.is_initialized():
        return rank
    try:
        # c10d exposes no public getter for the default group's store; this is the one init used.
        store = dist.distributed_c10d._get_default_store()
        return int(store.compare_set(_FAILED_KEY, "", str(rank)))
    except (RuntimeError, ValueError):
        return None


def check_batches(source: str, n_rows: int, global_batch: int, micro_batch: int, world: World) -> None:
    """``global_batch_size = micro_batch_size x accumulation x processes``, and every step gives each rank a row.

    A rank with no rows in a step would skip its backward, and the ranks' gradient collectives would not
    pair up (a hang), so a short last step of an epoch needs at least one row per rank.

    Raises:
        ConfigError: the batch sizes do not split over the processes.
    """
    last = n_rows % global_batch
    problems = []
    if global_batch % (micro_batch * world.size):
        problems.append(
            f"training_config.global_batch_size: {global_batch} is not a multiple of micro_batch_size {micro_batch} "
            f"x {world.size} processes"
        )
    elif 0 < last < world.size:
        problems.append(
            f"training_config.global_batch_size: {global_batch} leaves a last step of {last} row(s) per epoch over "
            f"{n_rows} rows, fewer than the {world.size} processes; pick a batch size that leaves 0 or >= {world.size}"
        )
    if problems:
        raise ConfigError(source, problems)


class ShardedStream(BatchStream):
    """A `BatchStream` whose steps hold only this rank's contiguous share of each step's rows.

    Rows are still indexed globally, so ``offset_after`` (the checkpointed data position) is the same on
    every rank and independent of the process count. At each epoch the rank reads the per-token columns
    of just the rows of its shares (`PackedRows.select`), about 1/N of the pack.
    """

    def __init__(self, *args: object, world: World, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.world = world

    def _split(self, indices: np.ndarray) -> list[np.ndarray]:
        share = np.array_split(indices, self.world.size)[self.world.rank]
        return super()._split(share)

    def _epoch_rows(self, index_lists: list[np.ndarray]) -> PackedRows:
        if self.rows.complete:  # already in memory (e.g. with precomputed DPO reference log-probs)
            return self.rows
        return self.rows.select(np.concatenate(index_lists))


def batch_stream(rows: PackedRows, world: World, **options: Any) -> BatchStream:
    """This rank's training steps over ``rows``: a `ShardedStream` in a multi-process job, else a `BatchStream`.

    ``options`` are `BatchStream`'s (``global_batch``, ``micro_batch``, ``seed`` ...).
    """
    if world.is_distributed:
        return ShardedStream(rows, world=world, **options)
    return BatchStream(rows, **options)


class SilentLog(RunLog):
    """The log of ranks other than 0: the same interface, nothing written."""

    def __init__(self) -> None:  # deliberately not RunLog's: no files are opened
        import time

        self.started = time.monotonic()
        self.state = {}

    def event(self, *args: object, **kwargs: object) -> None:
        """Rank 0 records events."""

    def update_state(self, **fields: object) -> None:
        """Rank 0 records the state (kept here only so callers can read it back)."""
        self.state.update(fields)

    def metrics(self, row: dict) -> None:
        """Rank 0 records metrics."""

    def text(self, tag: str, text: str, step: int) -> None:
        """Rank 0 records text."""

    def progress(self, step: int, loss: float | None, tokens_per_s: float | None) -> None:
        """Rank 0 draws progress."""

    def close(self) -> None:
        """Nothing is open."""
