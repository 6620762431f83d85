"""``train run``: set up a run from a recipe, drive the shared loop, and leave a documented run directory.

Run directory layout::

    RUN_DIR/
      state.json        running | completed | failed | stopped, step, tokens, last losses (train status)
      events.jsonl      created, started/resumed, warning, validation, checkpoint, eval_prompts, ...
      metrics.csv       step, epoch, train_loss, val_loss, lr, tokens_per_s, tokens, grad_norm, elapsed_s
                        (DPO adds rewards/chosen ... logps/rejected and their val_ versions)
      recipe.yaml       the recipe after --set overrides and ${...} interpolation
      tb/<name>/        TensorBoard events (create_tensorboard_logger)
      data/             JSONL inputs packed on the fly (cached: same inputs and settings, same pack);
                        with dpo_cfg.precompute_ref, each pack's reference/ log-probs (tunekit_train.reference)
      base/             the randomly initialised base model, when LoRA trains on a config-only model
      checkpoints/      step-NNNNNN/ (see tunekit_train.checkpoint) and the `last` symlink
      final/            the trained model: a HF model directory (full) or a peft adapter (LoRA),
                        with the tokenizer files; `train export` turns it into a deployable directory

With ``s3://`` data paths, the data is fetched into ``data/<split>-s3/`` first; with an ``s3://``
``run.output_s3_path``, checkpoints, final/ and the run's record are uploaded there (`tunekit_train.remote`).

`run_training` reads as its steps: `_setup_place` (what can be checked before anything is written, the job
of processes, the run directory), `_setup_data`, `_setup_model`, `_setup_optimizer`, `_setup_logging`, then
`_train`, which ends in `_finish`. The steps are the same for one process and many
(`tunekit_train.distributed.World`).

Setup order matters for exact resume: the model is built (seeded), wrapped with LoRA, dropouts applied,
DPO's reference taken from this starting model, then optimizer and scheduler are created and the
checkpoint (weights, moments, schedule, RNG, data position) is loaded over them.
"""

from __future__ import annotations

import functools
import json
import math
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from tunekit_data.errors import ConfigError, UsageError
from tunekit_data.io import is_s3, publish_dir
from tunekit_train import checkpoint as ckpt
from tunekit_train import distributed, tracking
from tunekit_train.attention import Backend, flattens_rows, resolve_backend
from tunekit_train.data import BatchStream, PackedRows
from tunekit_train.distributed import World
from tunekit_train.dpo import METRIC_COLUMNS, DpoLoss
from tunekit_train.generate import GenerationSettings, copy_tokenizer, generate, hf_tokenizer
from tunekit_train.logs import RunLog, now
from tunekit_train.loop import EarlyStopping, LoopParts, Outcome, Schedule, StopRequest, TrainState, fit
from tunekit_train.lora import add_lora, is_adapter_dir, is_lora
from tunekit_train.losses import LOSSES, LossFn
from tunekit_train.model import (
    Dropouts,
    apply_dropouts,
    freeze_vision,
    has_weights,
    is_vision_config,
    load_model,
    prepare_model,
)
from tunekit_train.optim import build_optimizer, build_scheduler
from tunekit_train.plan import Plan, check_fits, plan_recipe
from tunekit_train.recipe import DPO_METRICS, LoadedRecipe, Recipe, TrainingConfig
from tunekit_train.reference import build_reference
from tunekit_train.remote import Publisher
from tunekit_train.sources import local_path, open_rows
from tunekit_train.vision import batch_builder, is_vision_pack


@dataclass(frozen=True)
class Paths:
    """The recipe's paths, resolved and checked."""

    model: Path
    tokenizer: Path | None
    train: Path | str  # str: an s3:// URI, fetched into the run directory (tunekit_train.remote)
    validation: Path | str | None
    custom_weights: Path | None


@dataclass(frozen=True)
class Place:
    """Where the run happens: its checked recipe and paths, this process's job and device, the run directory."""

    loaded: LoadedRecipe
    paths: Paths
    world: World
    device: torch.device
    plan: Plan
    backend: Backend
    run_dir: Path
    resume_from: Path | None
    """The checkpoint the run continues from (None: a new run)."""

    @property
    def config(self) -> TrainingConfig:
        """The recipe's ``training_config``."""
        return self.loaded.recipe.training_config


@dataclass(frozen=True)
class Data:
    """The packed rows and the steps the loop takes over them."""

    train: PackedRows
    validation: PackedRows | None
    stream: BatchStream
    val_stream: BatchStream | None
    schedule: Schedule


@dataclass(frozen=True)
class Model:
    """The model as built (before any DDP/FSDP wrapper), its loss, and what setting it up has to report."""

    module: nn.Module
    random_init: bool
    """Built from config.json alone (the model directory has no weights)."""
    loss_fn: LossFn
    events: list[tuple[str, str]]
    """(type, message) of the events about the model and its reference."""


def run_training(
    loaded: LoadedRecipe,
    *,
    output_dir: Path | None = None,
    resume: str | None = None,
    show_progress: bool = False,
    memory_budget: int | None = None,
) -> dict[str, Any]:
    """Train as the recipe says and return the final ``state.json`` contents.

    Args:
        loaded: the validated recipe.
        output_dir: run directory (default: ``exp_manager.exp_dir``, ``run.output_s3_path``, ``runs/<name>``).
        resume: ``auto`` (continue the run in the output directory if it has a checkpoint) or a run or
            checkpoint directory to continue from.
        show_progress: draw a progress bar on stderr.
        memory_budget: bytes per device the memory plan must fit (``--gpu-memory``; default: the GPU's).

    Raises:
        ConfigError: the recipe cannot run here (missing paths, S3, options this model lacks, or its memory
            plan does not fit the device: `tunekit_train.plan`).
        UsageError: the output directory holds another run and ``resume`` was not given.
    """
    place = _setup_place(loaded, output_dir=output_dir, resume=resume, memory_budget=memory_budget)
    data = _setup_data(place)
    model = _setup_model(place, data)
    parts, state = _setup_optimizer(place, data, model)
    log = _setup_logging(place, data, model, state, show_progress=show_progress)
    saver = _Saver(place, model, parts, log)
    _train(place, data.schedule, model, parts, state, log, saver)
    saver.publisher.run_files()
    place.world.leave()
    return log.state


def _setup_place(loaded: LoadedRecipe, *, output_dir: Path | None, resume: str | None, memory_budget: int | None) -> Place:
    """Check all that can be checked before anything is written, join the job, and create the run directory."""
    paths = _check_runnable(loaded)
    world = distributed.init_from_env()  # one process unless launched by torchrun (or with its variables)
    device = world.device()
    plan = plan_recipe(loaded, device=device.type, budget=memory_budget, processes=world.size)
    check_fits(plan, loaded)  # before anything is written, any data packed or any weight loaded
    run_dir, resume_from = _run_dir(loaded.recipe, output_dir, resume)
    world.barrier()  # every rank decides on the run directory before rank 0 writes into it
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(yaml.safe_dump(loaded.resolved, sort_keys=False), encoding="utf-8")
    config = loaded.recipe.training_config
    torch.manual_seed(config.seed)  # dropout and LoRA init draw from the global generator
    backend = resolve_backend(config.attn_implementation, device)
    return Place(loaded, paths, world, device, plan, backend, run_dir, resume_from)


def _setup_data(place: Place) -> Data:
    """The packed rows, checked against the recipe, and this rank's steps over them."""
    config, paths, cache = place.config, place.paths, place.run_dir / "data"
    # Rank 0 first: it packs JSONL inputs into the run's cache; the others reuse the packs.
    with place.world.main_first():
        train = open_rows(paths.train, config=config, tokenizer=paths.tokenizer, cache=cache / "train")
        validation = (
            open_rows(paths.validation, config=config, tokenizer=paths.tokenizer, cache=cache / "validation")
            if paths.validation
            else None
        )
        _check_rows(place.loaded, train, validation, vision_model=is_vision_config(paths.model))
    world = place.world
    distributed.check_batches(place.loaded.source, len(train), config.global_batch_size, config.micro_batch_size, world)
    stream = _stream(config, train, place.backend, world)
    val_stream = _val_stream(config, validation, place.backend)
    return Data(train, validation, stream, val_stream, _schedule(config, stream, has_val=validation is not None))


def _setup_model(place: Place, data: Data) -> Model:
    """The model as the recipe says, prepared and on the device, with the method's loss."""
    config = place.config
    with place.world.main_first():  # rank 0 saves a random base the others then load
        module, random_init = _build_model(place.loaded, place.paths, place.run_dir, place.backend)
    notes = prepare_model(module, config, checkpointing=place.plan.activation_checkpointing, device=place.device)
    module.to(place.device)
    rows = [r for r in (data.train, data.validation) if r is not None]
    loss_fn, reference_notes = _loss(config, module, rows, place.backend, place.device)
    return Model(module, random_init, loss_fn, [("reference", note) for note in reference_notes] + notes)


def _setup_optimizer(place: Place, data: Data, model: Model) -> tuple[LoopParts, TrainState]:
    """What the loop drives, with its optimizer and LR schedule, and the state it starts from.

    On resume, the checkpoint's weights, moments, schedule, RNG and data position are loaded over them.
    """
    config, lora = place.config, place.config.model.lora
    # Before the optimizer: FSDP replaces the parameters with sharded ones.
    trained = distributed.wrap(model.module, place.world, place.device, fsdp=config.fsdp)
    optimizer = build_optimizer(model.module, config.model.optim, loraplus_lr_ratio=lora.loraplus_lr_ratio if lora else 1.0)
    scheduler = build_scheduler(optimizer, config.model.optim, total_steps=data.schedule.total_steps)
    state = TrainState()
    if place.resume_from is not None:
        restored = ckpt.restore(place.resume_from, model=model.module, optimizer=optimizer, scheduler=scheduler)
        state = TrainState(**restored["train"])
    parts = LoopParts(
        trained, optimizer, scheduler, model.loss_fn, place.backend,
        data.stream, data.val_stream, place.device, place.world, config.precision,
    )  # fmt: skip
    return parts, state


def _setup_logging(place: Place, data: Data, model: Model, state: TrainState, *, show_progress: bool) -> RunLog:
    """The run's log (rank 0's; the other ranks write nothing), with the run's start recorded."""
    config, recipe = place.config, place.loaded.recipe
    log = distributed.SilentLog() if not place.world.is_main else RunLog(
        place.run_dir,
        tensorboard=config.exp_manager.create_tensorboard_logger,
        tb_name=config.exp_manager.name or recipe.run.name,
        show_progress=show_progress,
        total_steps=data.schedule.total_steps,
        resume_step=state.step,
        extra_columns=METRIC_COLUMNS if config.method == "dpo" else (),
        sinks=tracking.sinks_for(place.loaded.resolved, place.run_dir),  # MLflow (run.tracking*, run.register_to)
    )
    _record_start(log, place, _facts(place, data, model), state=state, random_init=model.random_init)
    for split, rows in (("train", data.train), ("validation", data.validation)):
        if rows is not None:
            log.event("data", f"{split}: {len(rows)} rows, {rows.n_tokens} tokens from {rows.source}")
    for kind, text in model.events:
        log.event(kind, text)
    return log


def _facts(place: Place, data: Data, model: Model) -> dict[str, Any]:
    """What ``state.json`` says about how the run trains."""
    config, world = place.config, place.world
    return {
        "lora": is_lora(model.module),
        "model": str(place.paths.model),
        "device": place.device.type,
        "processes": world.size,
        "strategy": ("fsdp" if config.fsdp else "ddp") if world.is_distributed else None,
        "attention": place.backend,
        "total_steps": data.schedule.total_steps,
        "trainable_parameters": sum(p.numel() for p in model.module.parameters() if p.requires_grad),
        "activation_checkpointing": place.plan.activation_checkpointing,
        "planned_bytes_per_device": place.plan.total,
    }


class _Saver:
    """The loop's checkpoint callback: save, record, publish, and sample the recipe's eval prompts."""

    def __init__(self, place: Place, model: Model, parts: LoopParts, log: RunLog) -> None:
        config, paths = place.config, place.paths
        self.place, self.model, self.parts, self.log = place, model, parts, log
        self.tokenizer = hf_tokenizer(paths.tokenizer) if paths.tokenizer and config.eval_prompts else None
        retention = config.exp_manager.checkpoint_callback_params
        self.checkpointer = ckpt.Checkpointer(
            place.run_dir,
            ckpt.Retention(retention.monitor, retention.mode, retention.save_top_k, retention.save_last, config.weights_only),
            sharded=config.fsdp,
            world=place.world,
        )
        # Uploads when output_s3_path is s3://; checks now that the bucket is writable.
        self.publisher = Publisher(place.loaded.recipe.run.output_s3_path, place.run_dir, enabled=place.world.is_main)

    def __call__(self, state: TrainState) -> None:
        """Checkpoint ``state`` (rank 0 alone under DDP, every rank's shards under FSDP)."""
        if not self.place.world.is_main and not distributed.is_sharded(self.parts.model):
            return  # DDP replicas are identical: rank 0 writes the checkpoint
        parts = self.parts
        directory = self.checkpointer.save(
            model=self.model.module, optimizer=parts.optimizer, scheduler=parts.scheduler, state=_checkpoint_state(state)
        )
        if directory is not None:  # None: an FSDP rank other than 0, its shards written
            self._record(directory, state.step)
        if self.tokenizer is not None:  # under FSDP the forwards need every rank
            _eval_prompts(self.model.module, self.tokenizer, self.place.config, self.log, state.step)

    def _record(self, directory: Path, step: int) -> None:
        name = directory.relative_to(self.place.run_dir)
        self.log.event("checkpoint", f"saved {name}", step=step, path=str(directory))
        if (uri := self.publisher.checkpoint(directory)) is not None:
            self.log.event("uploaded", f"{name} to {uri}", step=step, uri=uri)
        self.log.update_state(checkpoint=str(directory))


def _train(
    place: Place, schedule: Schedule, model: Model, parts: LoopParts, state: TrainState, log: RunLog, saver: _Saver
) -> None:
    """Run the loop to its end and record how it ended (``state.json``, events), whatever that was."""
    em = place.config.exp_manager
    early = EarlyStopping(em.early_stopping_callback_params) if em.create_early_stopping_callback else None
    try:
        with StopRequest() as stop:
            outcome = fit(parts, state, schedule, log=log, checkpoint=saver, early_stopping=early, stop=stop)
        _finish(place, model, parts.model, log, saver.publisher, outcome, state.step)
    except KeyboardInterrupt:  # a second Ctrl-C: stopped by the user, but without a final checkpoint
        log.event("stopped", "interrupted at once (second Ctrl-C); no final checkpoint", step=state.step)
        log.update_state(state="stopped")
        raise
    except BaseException as exc:
        log.event("failed", f"{type(exc).__name__}: {exc}", step=state.step, traceback=traceback.format_exc())
        log.update_state(state="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        log.close()


def _finish(
    place: Place, model: Model, trained: nn.Module, log: RunLog, publisher: Publisher, outcome: Outcome, step: int
) -> None:
    """Record a stop; or write the final model (rank 0), publish it, and record the completion."""
    if outcome == "stopped":
        log.event("stopped", "stopped on request after a final checkpoint", step=step)
        log.update_state(state="stopped")
        return
    # FSDP: every rank takes part in gathering the full weights that rank 0 writes.
    full = distributed.gathered_state_dict(trained, lora=is_lora(model.module)) if distributed.is_sharded(trained) else None
    if not place.world.is_main:
        return
    final = _write_final(model.module, place.paths, place.run_dir, full)
    if (uri := publisher.final(final)) is not None:
        log.event("uploaded", f"final/ to {uri}", step=step, uri=uri)
    message = "early stopping" if outcome == "early_stopped" else "reached the training limit"
    log.event("completed", f"completed ({message}); model in final/", step=step, final=str(final))
    log.update_state(state="completed", reason=outcome, final=str(final))


def _check_runnable(loaded: LoadedRecipe) -> Paths:
    """Everything about the recipe that can only be checked against this machine, reported at once."""
    problems: list[str] = []
    paths = _check_paths(loaded, problems)
    problems += _check_monitors(loaded) + _check_attention(loaded.recipe.training_config)
    if problems:
        raise ConfigError(loaded.source, problems)
    assert paths is not None  # a missing model or training data is a problem above
    return paths


def _check_paths(loaded: LoadedRecipe, problems: list[str]) -> Paths | None:
    """The recipe's paths, each checked; what is wrong goes to ``problems``. None: no model or training data."""
    recipe, config = loaded.recipe, loaded.recipe.training_config
    run = recipe.run
    model = _existing(problems, "run.model_name_or_path", run.model_name_or_path, required=True)
    if model is not None and not (model / "config.json").is_file():
        problems.append(f"run.model_name_or_path: {run.model_name_or_path}: not a Hugging Face model directory (no config.json)")
    tokenizer = _existing(problems, "run.tokenizer_name_or_path", run.tokenizer_name_or_path)
    if tokenizer is None and model is not None and (model / "tokenizer.json").is_file():
        tokenizer = model
    if config.eval_prompts and tokenizer is None:
        problems.append("training_config.eval_prompts: need a tokenizer (run.tokenizer_name_or_path, or tokenizer files in the model directory)")
    train = _data_path(problems, "run.data_s3_path", run.data_s3_path, required=True)
    validation = _data_path(problems, "run.validation_data_s3_path", run.validation_data_s3_path)
    custom = _existing(problems, "run.custom_weights_path", run.custom_weights_path)
    if model is None or train is None:
        return None
    return Paths(model, tokenizer, train, validation, custom)


def _existing(problems: list[str], key: str, value: str | None, *, required: bool = False) -> Path | None:
    """The local path ``value`` of ``key`` if it exists; else None, with the reason in ``problems``."""
    if value is None:
        if required:
            problems.append(f"{key}: required to train (set it in the recipe or with --set {key}=PATH)")
        return None
    path = local_path(value)
    if path is None:
        problems.append(f"{key}: {value}: S3 is supported for the data and output paths only; use a local path or file:// URI")
    elif not path.exists():
        problems.append(f"{key}: {value}: no such file or directory")
    return path if path is not None and path.exists() else None


def _data_path(problems: list[str], key: str, value: str | None, *, required: bool = False) -> Path | str | None:
    """A data path: an ``s3://`` URI as it is, else `_existing`."""
    # s3:// data is read when the run starts (tunekit_train.remote.fetch_data), which names what is wrong.
    return value if value is not None and is_s3(value) else _existing(problems, key, value, required=required)


def _check_monitors(loaded: LoadedRecipe) -> list[str]:
    """The metrics checkpoint retention and early stopping watch must be ones this run logs."""
    recipe, config = loaded.recipe, loaded.recipe.training_config
    em = config.exp_manager
    monitors = {"checkpoint_callback_params": em.checkpoint_callback_params.monitor}
    if em.create_early_stopping_callback:
        monitors["early_stopping_callback_params"] = em.early_stopping_callback_params.monitor
    problems = []
    for section, monitor in monitors.items():
        key = f"training_config.exp_manager.{section}.monitor"
        if monitor.startswith("val_") and recipe.run.validation_data_s3_path is None:
            problems.append(f"{key}: {monitor} needs run.validation_data_s3_path")
        if config.method != "dpo" and monitor.removeprefix("val_") in DPO_METRICS:
            problems.append(f"{key}: {monitor} is logged by DPO runs only (training_config.model.dpo_cfg)")
    return problems


def _check_attention(config: TrainingConfig) -> list[str]:
    """Attention kernels that need CUDA, asked for on a machine without it."""
    if config.attn_implementation in ("flex_attention", "flash_attention_2") and not torch.cuda.is_available():
        return [f"training_config.attn_implementation: {config.attn_implementation} trains on CUDA only; use sdpa or auto"]
    return []


def _run_dir(recipe: Recipe, output_dir: Path | None, resume: str | None) -> tuple[Path, Path | None]:
    if resume not in (None, "auto"):
        source = Path(resume)
        checkpoint = ckpt.resolve_checkpoint(source)
        if output_dir is not None:
            return output_dir, checkpoint
        return (source if (source / "checkpoints").is_dir() else checkpoint.parent.parent), checkpoint
    run_dir = output_dir or _default_run_dir(recipe)
    last = run_dir / "checkpoints" / "last"
    if resume == "auto" and last.exists():
        return run_dir, last.resolve()
    if resume is None and (run_dir / "state.json").exists():
        msg = f"{run_dir} already holds a run; continue it with --resume auto, or pick another --output-dir"
        raise UsageError(msg)
    return run_dir, None


def _default_run_dir(recipe: Recipe) -> Path:
    # An s3:// output_s3_path is where the run is published (remote.Publisher); it trains in runs/<name>.
    for value in (recipe.training_config.exp_manager.exp_dir, recipe.run.output_s3_path):
        if value is not None and (path := local_path(value)) is not None:
            return path
    return Path("runs") / recipe.run.name


def _check_rows(loaded: LoadedRecipe, train: PackedRows, val: PackedRows | None, *, vision_model: bool) -> None:
    config = loaded.recipe.training_config
    problems = [
        f"training_config.max_length: {config.max_length}, but {rows.source} has rows of {rows.max_row_length} tokens (packed for a longer context)"
        for rows in (train, val)
        if rows is not None and rows.max_row_length > config.max_length
    ]
    problems += [
        f"run.model_name_or_path: {loaded.recipe.run.model_name_or_path} is a text-only model, but {rows.source} holds images (packed with --processor)"
        for rows in (train, val)
        if rows is not None and is_vision_pack(rows.manifest) and not vision_model
    ]
    if not len(train):
        problems.append(f"run.data_s3_path: {train.source} has no rows")
    if problems:
        raise ConfigError(loaded.source, problems)


def _build_model(loaded: LoadedRecipe, paths: Paths, run_dir: Path, backend: Backend) -> tuple[nn.Module, bool]:
    config = loaded.recipe.training_config
    base_dir = run_dir / "base"
    source = base_dir if (base_dir / "config.json").is_file() else paths.model
    model, random_init = load_model(source, backend=backend, seed=config.seed)
    lora = config.model.lora
    if lora is not None:
        if random_init:  # the adapter alone cannot rebuild a random base: keep the base with the run
            model.save_pretrained(base_dir)
            source = base_dir
        model = add_lora(model, lora, skip_vision=config.model.freeze_vision)
        model.peft_config["default"].base_model_name_or_path = str(source.resolve())
    else:
        freeze_vision(model, encoder=config.model.freeze_vision, projector=config.model.mm_cfg.image_projector.freeze)
    problems = apply_dropouts(
        model, Dropouts(config.model.hidden_dropout, config.model.attention_dropout, config.model.ffn_dropout)
    )
    if problems:
        raise ConfigError(loaded.source, problems)
    if paths.custom_weights is not None:
        ckpt.load_weights(model, _weights_dir(paths.custom_weights))
    return model, random_init


def _weights_dir(path: Path) -> Path:
    if (path / "final").is_dir():
        return path / "final"
    if has_weights(path) or is_adapter_dir(path):
        return path
    return ckpt.resolve_checkpoint(path)


def _loss(
    config: TrainingConfig, model: nn.Module, rows: list[PackedRows], backend: Backend, device: torch.device
) -> tuple[LossFn, list[str]]:
    """The method's loss function, and notes for the events (DPO: how the reference is obtained)."""
    if config.method != "dpo":
        return functools.partial(LOSSES[config.method], chunk=config.loss_chunk_tokens), []
    assert config.model.dpo_cfg is not None
    # The reference is the starting model: built before a resumed run loads its checkpoint.
    reference, notes = build_reference(model, config, rows, backend=backend, device=device)
    return DpoLoss(config.model.dpo_cfg, reference, chunk=config.loss_chunk_tokens), notes


def _stream(config: TrainingConfig, rows: PackedRows, backend: Backend, world: World) -> BatchStream:
    """The training steps: in a multi-process job, each rank takes its share of every step's rows."""
    loader = config.model.training_validation.loader.args
    # One process accumulates the whole global batch: the service's `replicas` data-parallel workers become
    # extra accumulation, which gives the same update because the loss is normalised over the whole batch.
    options = _batch_options(config, rows, backend, global_batch=config.global_batch_size)
    return distributed.batch_stream(rows, world, workers=loader.data_loader_workers, prefetch=loader.prefetch_factor, **options)


def _val_stream(config: TrainingConfig, rows: PackedRows | None, backend: Backend) -> BatchStream | None:
    """Validation batches (every process validates on all rows)."""
    if rows is None:
        return None
    return BatchStream(rows, **_batch_options(config, rows, backend, global_batch=config.micro_batch_size))


def _batch_options(config: TrainingConfig, rows: PackedRows, backend: Backend, *, global_batch: int) -> dict[str, Any]:
    """The `BatchStream` options training and validation share."""
    return {
        "global_batch": global_batch,
        "micro_batch": config.micro_batch_size,
        "seed": config.seed,
        "flatten": flattens_rows(backend),
        "build": _collate(config, rows),
    }


def _collate(config: TrainingConfig, rows: PackedRows) -> Any:
    # Methods differ by their batch builder and loss: DPO batches know which segments form each pair;
    # rows with images get their pixel values and M-RoPE positions (tunekit_train.vision).
    return batch_builder(rows.manifest, pairs=config.method == "dpo")


def _schedule(config: TrainingConfig, stream: BatchStream, *, has_val: bool) -> Schedule:
    trainer, per_epoch = config.trainer, stream.steps_per_epoch
    limits = [trainer.max_steps] if trainer.max_steps > 0 else []
    if trainer.max_epochs > 0:
        limits.append(trainer.max_epochs * per_epoch)
    max_tokens = None
    if config.duration is not None:
        amount, unit = config.duration
        if unit == "ep":
            limits.append(amount * per_epoch)
        else:
            # The run stops on the token count; this step estimate only sets the schedule's horizon.
            max_tokens = amount
            limits.append(math.ceil(amount / stream.rows.n_tokens * per_epoch))
    total = min(limits) if limits else per_epoch  # no limit at all: one epoch (Databricks' default "1ep")
    interval = trainer.val_check_interval
    val_every = (interval if isinstance(interval, int) else max(1, round(interval * per_epoch))) if has_val else 0
    return Schedule(
        total_steps=total,
        max_tokens=max_tokens,
        log_every=trainer.log_every_n_steps,
        val_every=val_every,
        checkpoint_every=config.checkpoint_every,
        clip=trainer.gradient_clip_val,
    )


def _record_start(log: RunLog, place: Place, facts: dict[str, Any], *, state: TrainState, random_init: bool) -> None:
    """``state.json`` of a running run (over a resumed run's), and the events that open the run."""
    loaded, run_dir, resume_from = place.loaded, place.run_dir, place.resume_from
    recipe = loaded.recipe
    previous = _read_json(run_dir / "state.json")
    log.state.update(previous)
    log.update_state(
        state="running",
        name=recipe.run.name,
        project=recipe.training_config.exp_manager.project,
        method=recipe.training_config.method,
        recipe=loaded.source,
        run_dir=str(run_dir),
        pid=os.getpid(),
        started_at=previous.get("started_at", now()),
        step=state.step,
        error=None,
        **facts,
    )
    if not previous:
        log.event("created", f"run {recipe.run.name} from {loaded.source}")
    for warning in loaded.warnings:
        log.event("warning", warning)
    if random_init:
        seed = recipe.training_config.seed
        log.event("model", f"{facts['model']} has no weights: randomly initialised from config.json with seed {seed}")
    if resume_from is not None:
        log.event("resumed", f"resumed from {resume_from} at step {state.step}", step=state.step, checkpoint=str(resume_from))
    else:
        log.event("started", f"training {facts['total_steps']} steps on {facts['device']} ({facts['attention']})", step=0)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _checkpoint_state(state: TrainState) -> dict[str, Any]:
    # Top level: what retention ranks by; "train": what resume restores.
    return {"step": state.step, "train_loss": state.train_loss, "val_loss": state.val_loss, **state.metrics, "train": state.to_dict()}


def _eval_prompts(model: nn.Module, tokenizer: Any, config: TrainingConfig, log: RunLog, step: int) -> None:
    # Sampling must not move the training RNG, or checkpointing would change the run it records.
    with torch.random.fork_rng(devices=[]), distributed.root_unsharded(model):
        outputs = generate(model, tokenizer, config.eval_prompts, GenerationSettings(seed=config.seed + step))
    for prompt, text in zip(config.eval_prompts, outputs, strict=True):
        log.event("eval_prompts", text, step=step, prompt=prompt)
        log.text("eval_prompts", f"**{prompt}**\n\n{text}", step)


def _write_final(model: nn.Module, paths: Paths, run_dir: Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    final = run_dir / "final"
    with publish_dir(final) as staging:
        ckpt.save_weights(model, staging, state_dict)
        if paths.tokenizer is not None:
            copy_tokenizer(paths.tokenizer, staging)
    return final

