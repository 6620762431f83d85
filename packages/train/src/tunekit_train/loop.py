"""The one training loop every method shares; methods differ only by their batches and loss function.

Each optimizer step takes ``accumulation`` micro-batches, counts the trained units of the WHOLE step first
(tokens for SFT/CPT, pairs for DPO), and back-propagates ``loss_sum / units`` per micro-batch, so the
accumulated gradient is exactly that of one big batch whatever the split. Metrics a loss reports (DPO's
rewards) are summed the same way and logged as means per unit. Then: clip, step, schedule, and on their
intervals log, validate (and early-stop on any logged metric), checkpoint. Ctrl-C finishes the current
step, checkpoints, and returns ``stopped``.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from tunekit_train.attention import Backend
from tunekit_train.data import BatchStream, Step
from tunekit_train.distributed import SINGLE_PROCESS, World, check_fault, sync_gradients
from tunekit_train.logs import RunLog
from tunekit_train.losses import LossFn, MetricSums
from tunekit_train.precision import autocast
from tunekit_train.recipe import EarlyStoppingParams

Outcome = Literal["completed", "early_stopped", "stopped"]
_LOSS_SUM = " loss_sum"  # the step's loss in the sums reduced with the metrics (no metric name has a space)


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint and restored on resume."""

    step: int = 0
    epoch: int = 0
    offset: int = 0
    """Rows of ``epoch`` already consumed."""
    tokens: int = 0
    train_loss: float | None = None
    val_loss: float | None = None
    best: float | None = None
    """Best early-stopping value so far."""
    bad_checks: int = 0
    """Validations since the early-stopping value last improved."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Latest value of each metric the loss reports (``rewards/accuracy``, ``val_rewards/accuracy`` ...)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return asdict(self)

    def metric(self, name: str) -> float | None:
        """Latest value of a logged metric: ``train_loss``, ``val_loss`` or one of `metrics`."""
        return {"train_loss": self.train_loss, "val_loss": self.val_loss, **self.metrics}.get(name)


@dataclass(frozen=True)
class LoopParts:
    """What the loop drives."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: LossFn
    backend: Backend
    train: BatchStream
    val: BatchStream | None
    device: torch.device
    world: World = SINGLE_PROCESS
    """The data-parallel job this process is a rank of."""
    precision: str = "auto"
    """``training_config.precision`` (`tunekit_train.precision.autocast`)."""


@dataclass(frozen=True)
class Schedule:
    """When the loop stops, logs, validates and checkpoints."""

    total_steps: int
    max_tokens: int | None = None
    """Stop once this many tokens were processed (``training_duration: Ntok``)."""
    log_every: int = 10
    val_every: int = 0
    """Validate every N steps and at the end (0: never)."""
    checkpoint_every: int = 0
    """Checkpoint every N steps (0: only at the end)."""
    clip: float = 1.0
    """Max global gradient norm (0: no clipping)."""


class EarlyStopping:
    """Stops when the monitored metric has not improved by ``min_delta`` for ``patience`` validations."""

    def __init__(self, params: EarlyStoppingParams) -> None:
        self.params = params

    def should_stop(self, state: TrainState) -> bool:
        """Update the counters in ``state`` with the latest value; True when patience ran out."""
        value = state.metric(self.params.monitor)
        if value is None:
            return False
        sign = 1 if self.params.mode == "min" else -1
        if state.best is None or sign * (state.best - value) > self.params.min_delta:
            state.best, state.bad_checks = value, 0
        else:
            state.bad_checks += 1
        return state.bad_checks >= self.params.patience


class StopRequest:
    """Ctrl-C (SIGINT) asks the loop to stop after the current step; a second Ctrl-C interrupts at once.

    A repeat within ``DEBOUNCE_S`` of the first is the same keypress delivered twice (``uv run`` and the
    terminal both signal the child), not a second request.
    """

    DEBOUNCE_S = 2.0

    def __init__(self) -> None:
        self.requested = False
        self._first = 0.0
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.requested:
            self.requested, self._first = True, time.monotonic()
        elif time.monotonic() - self._first > self.DEBOUNCE_S:
            raise KeyboardInterrupt


def fit(
    parts: LoopParts,
    state: TrainState,
    schedule: Schedule,
    *,
    log: RunLog,
    checkpoint: Callable[[TrainState], None],
    early_stopping: EarlyStopping | None = None,
    stop: StopRequest | None = None,
) -> Outcome:
    """Train from ``state`` until a limit, early stopping or a stop request; returns why it ended."""
    if _reached(state, schedule):  # resumed from a run that already got there
        return "completed"
    parts.model.train()
    window = _Window()
    steps = parts.train.steps(state.epoch, state.offset)
    while True:
        step = next(steps)
        check_fault(parts.world, state.step + 1)
        lr = _lr(parts.optimizer, parts.scheduler)
        loss_sum, metric_sums, units, tokens, grad_norm = _optimizer_step(parts, step, schedule.clip)
        _advance(state, step, tokens, len(parts.train.rows))
        window.add(loss_sum, units, tokens, metric_sums)
        done = _reached(state, schedule)
        halt = done or _stop_requested(stop, parts)
        outcome: Outcome | None = "completed" if done else ("stopped" if halt else None)

        validate = parts.val is not None and schedule.val_every and (state.step % schedule.val_every == 0 or halt)
        if state.step % schedule.log_every == 0 or halt or validate:
            state.train_loss = window.loss()
            state.metrics.update(window.metrics())
            row = {
                "step": state.step,
                "epoch": state.epoch + state.offset / len(parts.train.rows),
                "train_loss": state.train_loss,
                "lr": lr,
                "tokens_per_s": window.tokens_per_s(),
                "tokens": state.tokens,
                "grad_norm": grad_norm,
                "elapsed_s": time.monotonic() - log.started,
                **window.metrics(),
            }
            if validate:
                state.val_loss, val_metrics = evaluate(parts)
                state.metrics.update({f"val_{k}": v for k, v in val_metrics.items()})
                row.update(val_loss=state.val_loss, **{f"val_{k}": v for k, v in val_metrics.items()})
                log.event("validation", f"val_loss {state.val_loss:.4f}", step=state.step, val_loss=state.val_loss)
                if early_stopping is not None and early_stopping.should_stop(state) and not halt:
                    log.event("early_stopping", f"no improvement for {state.bad_checks} validations", step=state.step)
                    outcome = "early_stopped"
            log.metrics(row)
            log.progress(state.step, state.train_loss, row["tokens_per_s"])
            window = _Window()
        if outcome is not None or (schedule.checkpoint_every and state.step % schedule.checkpoint_every == 0):
            checkpoint(state)
        log.update_state(step=state.step, epoch=state.epoch, tokens=state.tokens, train_loss=state.train_loss, val_loss=state.val_loss)
        if outcome is not None:
            return outcome


def _stop_requested(stop: StopRequest | None, parts: LoopParts) -> bool:
    requested = stop is not None and stop.requested
    # Ctrl-C may reach some ranks only: all stop after the same step.
    return parts.world.sum([float(requested)], parts.device)[0] > 0


def _reached(state: TrainState, schedule: Schedule) -> bool:
    return state.step >= schedule.total_steps or (schedule.max_tokens is not None and state.tokens >= schedule.max_tokens)


def _optimizer_step(parts: LoopParts, step: Step, clip: float) -> tuple[float, dict[str, float], int, int, float]:
    units, tokens = sum(batch.n_targets for batch in step.micro_batches), step.n_tokens
    # The step's units over all ranks; DDP's gradient mean divides by the world size.
    units, tokens = (int(v) for v in parts.world.sum([units, tokens], parts.device))
    scale = float(parts.world.size)
    total = torch.zeros((), device=parts.device)
    sums: MetricSums = {}
    for i, batch in enumerate(step.micro_batches):
        with sync_gradients(parts.model, last=i == len(step.micro_batches) - 1):
            with autocast(parts.device, parts.precision):
                loss_sum, metrics = parts.loss_fn(parts.model, batch.to(parts.device), parts.backend)
            if units:
                (loss_sum * scale / units).backward()
        total += loss_sum.detach()
        _accumulate(sums, metrics)
    # Logged values are the whole step's, identical on every rank.
    sums = parts.world.sum_tensors({_LOSS_SUM: total, **sums}, parts.device)
    total = sums.pop(_LOSS_SUM)
    params = [p for p in parts.model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf, foreach=True)
    if isinstance(grad_norm, DTensor):  # FSDP: the norm over all ranks' shards, already reduced
        grad_norm = grad_norm.full_tensor()
    parts.optimizer.step()
    parts.scheduler.step()
    parts.optimizer.zero_grad(set_to_none=True)
    return float(total), {k: float(v) for k, v in sums.items()}, units, tokens, float(grad_norm)


def _accumulate(sums: MetricSums, metrics: MetricSums) -> None:
    # Tensors stay on the device until the step ends: no synchronisation per micro-batch.
    for name, value in metrics.items():
        sums[name] = sums[name] + value.detach() if name in sums else value.detach()


def _advance(state: TrainState, step: Step, tokens: int, n_rows: int) -> None:
    state.step += 1
    state.tokens += tokens
    state.epoch, state.offset = step.epoch, step.offset_after
    if state.offset >= n_rows:  # the epoch is done: the next step starts the next one
        state.epoch, state.offset = state.epoch + 1, 0


@torch.no_grad()
def evaluate(parts: LoopParts) -> tuple[float, dict[str, float]]:
    """Mean loss per unit (token or pair) over the validation rows, and the loss's metrics (dropout off)."""
    assert parts.val is not None
    parts.model.eval()
    total, units = 0.0, 0
    sums: MetricSums = {}
    for batch in parts.val.micro_batches():
        with autocast(parts.device, parts.precision):
            loss_sum, metrics = parts.loss_fn(parts.model, batch.to(parts.device), parts.backend)
        total += float(loss_sum)
        _accumulate(sums, metrics)
        units += batch.n_targets
    parts.model.train()
    return total / max(units, 1), {k: float(v) / max(units, 1) for k, v in sums.items()}


def _lr(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler) -> float:
    # The recipe's lr times the schedule factor of the coming step (LoRA+ B groups run at a multiple of it).
    factor = scheduler.get_last_lr()[0] / scheduler.base_lrs[0]
    return optimizer.defaults["lr"] * factor


class _Window:
    """Loss, metrics and throughput accumulated since the last metrics row."""

    def __init__(self) -> None:
        self.loss_sum, self.units, self.tokens = 0.0, 0, 0
        self.metric_sums: dict[str, float] = {}
        self.started = time.perf_counter()

    def add(self, loss_sum: float, units: int, tokens: int, metric_sums: dict[str, float]) -> None:
        self.loss_sum += loss_sum
        self.units += units
        self.tokens += tokens
        for name, value in metric_sums.items():
            self.metric_sums[name] = self.metric_sums.get(name, 0.0) + value

    def loss(self) -> float | None:
        return self.loss_sum / self.units if self.units else None

    def metrics(self) -> dict[str, float]:
        return {name: value / self.units for name, value in self.metric_sums.items()} if self.units else {}

    def tokens_per_s(self) -> float:
        return self.tokens / max(time.perf_counter() - self.started, 1e-9)

