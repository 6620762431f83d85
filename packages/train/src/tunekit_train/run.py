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

Setup order matters for exact resume: the model is built (seeded), wrapped with LoRA, dropouts applied,
DPO's reference taken from this starting model, then optimizer and scheduler are created and the
checkpoint (weights, moments, schedule, RNG, data position) is loaded over them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from tunekit_data.errors import ConfigError, UsageError
from tunekit_data.s3 import is_s3
from tunekit_train import checkpoint as ckpt
from tunekit_train import distributed, tracking
from tunekit_train.attention import Backend, flattens_rows, resolve_backend
from tunekit_train.data import BatchStream, PackedRows
from tunekit_train.dpo import METRIC_COLUMNS, DpoLoss
from tunekit_train.generate import GenerationSettings, copy_tokenizer, generate, load_tokenizer
from tunekit_train.logs import RunLog, now
from tunekit_train.loop import EarlyStopping, LoopParts, Schedule, StopRequest, TrainState, fit
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
from tunekit_train.plan import check_fits, plan_recipe
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
    recipe, config = loaded.recipe, loaded.recipe.training_config
    paths = _check_runnable(loaded)
    world = distributed.init_from_env()  # None unless launched by torchrun (or with its variables)
    device = world.device() if world is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    plan = plan_recipe(loaded, device=device.type, budget=memory_budget, processes=world.size if world is not None else 1)
    check_fits(plan, loaded)  # before anything is written, any data packed or any weight loaded
    run_dir, resume_from = _run_dir(recipe, output_dir, resume)
    if world is not None:  # every rank decides on the run directory before rank 0 writes into it
        world.barrier()
    main = world is None or world.is_main
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "recipe.yaml").write_text(yaml.safe_dump(loaded.resolved, sort_keys=False), encoding="utf-8")

    torch.manual_seed(config.seed)  # dropout and LoRA init draw from the global generator
    backend = resolve_backend(config.attn_implementation, device)
    # Rank 0 first: it packs JSONL inputs into the run's cache and saves a random base; the others reuse them.
    with world.main_first() if world is not None else contextlib.nullcontext():
        train_rows = open_rows(paths.train, config=config, tokenizer=paths.tokenizer, cache=run_dir / "data" / "train")
        val_rows = (
            open_rows(paths.validation, config=config, tokenizer=paths.tokenizer, cache=run_dir / "data" / "validation")
            if paths.validation
            else None
        )
        _check_rows(loaded, train_rows, val_rows, vision_model=is_vision_config(paths.model))
        model, random_init = _build_model(loaded, paths, run_dir, backend)
    model_notes = prepare_model(model, config, checkpointing=plan.activation_checkpointing, device=device)
    model.to(device)
    loss_fn, reference_notes = _loss(config, model, [r for r in (train_rows, val_rows) if r is not None], backend, device)
    if world is not None:
        distributed.check_batches(loaded.source, len(train_rows), config.global_batch_size, config.micro_batch_size, world)
    stream = _stream(config, train_rows, backend, world)
    schedule = _schedule(config, stream, val_rows is not None)
    lora = config.model.lora
    # Before the optimizer: FSDP replaces the parameters with sharded ones.
    trained = distributed.wrap(model, world, device, fsdp=config.fsdp) if world is not None else model
    optimizer = build_optimizer(model, config.model.optim, loraplus_lr_ratio=lora.loraplus_lr_ratio if lora else 1.0)
    scheduler = build_scheduler(optimizer, config.model.optim, total_steps=schedule.total_steps)
    state = TrainState()
    if resume_from is not None:
        state = TrainState(**ckpt.restore(resume_from, model=model, optimizer=optimizer, scheduler=scheduler)["train"])

    log = distributed.SilentLog() if not main else RunLog(
        run_dir,
        tensorboard=config.exp_manager.create_tensorboard_logger,
        tb_name=config.exp_manager.name or recipe.run.name,
        show_progress=show_progress,
        total_steps=schedule.total_steps,
        resume_step=state.step,
        extra_columns=METRIC_COLUMNS if config.method == "dpo" else (),
        sinks=tracking.sinks_for(loaded.resolved, run_dir),  # MLflow (run.tracking*, run.register_to)
    )
    facts = {
        "lora": is_lora(model),
        "model": str(paths.model),
        "device": device.type,
        "processes": world.size if world is not None else 1,
        "strategy": ("fsdp" if config.fsdp else "ddp") if world is not None else None,
        "attention": backend,
        "total_steps": schedule.total_steps,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "activation_checkpointing": plan.activation_checkpointing,
        "planned_bytes_per_device": plan.total,
    }
    _record_start(log, loaded, run_dir, facts, state=state, resume_from=resume_from, random_init=random_init)
    for split, rows in (("train", train_rows), ("validation", val_rows)):
        if rows is not None:
            log.event("data", f"{split}: {len(rows)} rows, {rows.n_tokens} tokens from {rows.source}")
    for note in reference_notes:
        log.event("reference", note)
    for kind, text in model_notes:
        log.event(kind, text)
    tokenizer = load_tokenizer(paths.tokenizer) if paths.tokenizer and config.eval_prompts else None
    retention = config.exp_manager.checkpoint_callback_params
    checkpointer = ckpt.Checkpointer(
        run_dir,
        ckpt.Retention(retention.monitor, retention.mode, retention.save_top_k, retention.save_last, config.weights_only),
        sharded=config.fsdp,
        world=world,
    )
    publisher = Publisher(recipe.run.output_s3_path, run_dir, enabled=main)  # uploads when output_s3_path is s3://

    def save(state: TrainState) -> None:
        sharded = distributed.is_sharded(trained)
        if not main and not sharded:  # DDP replicas are identical: rank 0 writes the checkpoint
            return
        directory = checkpointer.save(
            model=model, optimizer=optimizer, scheduler=scheduler, state=_checkpoint_state(state)
        )
        if directory is None:  # FSDP ranks other than 0: shards written; forwards still need every rank
            if tokenizer is not None:
                _eval_prompts(model, tokenizer, config, log, state.step)
            return
        log.event("checkpoint", f"saved {directory.relative_to(run_dir)}", step=state.step, path=str(directory))
        if (uri := publisher.checkpoint(directory)) is not None:
            log.event("uploaded", f"{directory.relative_to(run_dir)} to {uri}", step=state.step, uri=uri)
        log.update_state(checkpoint=str(directory))
        if tokenizer is not None:
            _eval_prompts(model, tokenizer, config, log, state.step)

    parts = LoopParts(trained, optimizer, scheduler, loss_fn, backend, stream, _val_stream(config, val_rows, backend), device, world, config.precision)
    early = EarlyStopping(config.exp_manager.early_stopping_callback_params) if config.exp_manager.create_early_stopping_callback else None
    try:
        with StopRequest() as stop:
            outcome = fit(parts, state, schedule, log=log, checkpoint=save, early_stopping=early, stop=stop)
        if outcome == "stopped":
            log.event("stopped", "stopped on request after a final checkpoint", step=state.step)
            log.update_state(state="stopped")
        else:
            # FSDP: every rank takes part in gathering the full weights that rank 0 writes.
            full = distributed.gathered_state_dict(trained, is_lora(model)) if distributed.is_sharded(trained) else None
            if main:
                final = _write_final(model, paths, run_dir, full)
                if (uri := publisher.final(final)) is not None:
                    log.event("uploaded", f"final/ to {uri}", step=state.step, uri=uri)
                message = "early stopping" if outcome == "early_stopped" else "reached the training limit"
                log.event("completed", f"completed ({message}); model in final/", step=state.step, final=str(final))
                log.update_state(state="completed", reason=outcome, final=str(final))
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
    publisher.run_files()
    if world is not None:
        # Leave the group together and explicitly: a rank that exits with it still alive can be
        # aborted by gloo's background threads at interpreter exit ("terminate called ...").
        world.barrier()
        distributed.shutdown()
    return log.state


def _check_runnable(loaded: LoadedRecipe) -> Paths:
    """Everything about the recipe that can only be checked against this machine, reported at once."""
    recipe, config = loaded.recipe, loaded.recipe.training_config
    problems: list[str] = []

    def existing(key: str, value: str | None, *, required: bool = False) -> Path | None:
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

    model = existing("run.model_name_or_path", recipe.run.model_name_or_path, required=True)
    if model is not None and not (model / "config.json").is_file():
        problems.append(f"run.model_name_or_path: {recipe.run.model_name_or_path}: not a Hugging Face model directory (no config.json)")
    tokenizer = existing("run.tokenizer_name_or_path", recipe.run.tokenizer_name_or_path)
    if tokenizer is None and model is not None and (model / "tokenizer.json").is_file():
        tokenizer = model
    if config.eval_prompts and tokenizer is None:
        problems.append("training_config.eval_prompts: need a tokenizer (run.tokenizer_name_or_path, or tokenizer files in the model directory)")
    def data(key: str, value: str | None, *, required: bool = False) -> Path | str | None:
        # s3:// data is read when the run starts (tunekit_train.remote.fetch_data), which names what is wrong.
        return value if value is not None and is_s3(value) else existing(key, value, required=required)

    train = data("run.data_s3_path", recipe.run.data_s3_path, required=True)
    validation = data("run.validation_data_s3_path", recipe.run.validation_data_s3_path)
    custom = existing("run.custom_weights_path", recipe.run.custom_weights_path)
    em = config.exp_manager
    monitors = {"checkpoint_callback_params": em.checkpoint_callback_params.monitor}
    if em.create_early_stopping_callback:
        monitors["early_stopping_callback_params"] = em.early_stopping_callback_params.monitor
    for section, monitor in monitors.items():
        key = f"training_config.exp_manager.{section}.monitor"
        if monitor.startswith("val_") and recipe.run.validation_data_s3_path is None:
            problems.append(f"{key}: {monitor} needs run.validation_data_s3_path")
        if config.method != "dpo" and monitor.removeprefix("val_") in DPO_METRICS:
            problems.append(f"{key}: {monitor} is logged by DPO runs only (training_config.model.dpo_cfg)")
    on_gpu = torch.cuda.is_available()
    if config.attn_implementation in ("flex_attention", "flash_attention_2") and not on_gpu:
        problems.append(f"training_config.attn_implementation: {config.attn_implementation} trains on CUDA only; use sdpa or auto")
    if problems:
        raise ConfigError(loaded.source, problems)
    assert model is not None and train is not None
    return Paths(model, tokenizer, train, validation, custom)


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


def _stream(config: TrainingConfig, rows: PackedRows, backend: Backend, world: distributed.World | None) -> BatchStream:
    loader = config.model.training_validation.loader.args
    accumulation = config.global_batch_size // config.micro_batch_size
    if world is not None:  # each rank takes its share of every step's rows
        return distributed.ShardedStream(
            rows,
            global_batch=config.global_batch_size,
            micro_batch=config.micro_batch_size,
            seed=config.seed,
            flatten=flattens_rows(backend),
            workers=loader.data_loader_workers,
            prefetch=loader.prefetch_factor,
            build=_collate(config, rows),
            world=world,
        )
    # One process: the service's `replicas` data-parallel workers become extra accumulation, which gives
    # the same update because the loss is normalised over the whole global batch.
    return BatchStream(
        rows,
        global_batch=config.micro_batch_size * accumulation,
        micro_batch=config.micro_batch_size,
        seed=config.seed,
        flatten=flattens_rows(backend),
        workers=loader.data_loader_workers,
        prefetch=loader.prefetch_factor,
        build=_collate(config, rows),
    )


def _val_stream(config: TrainingConfig, rows: PackedRows | None, backend: Backend) -> BatchStream | None:
    if rows is None:
        return None
    return BatchStream(
        rows,
        global_batch=config.micro_batch_size,
        micro_batch=config.micro_batch_size,
        seed=config.seed,
        flatten=flattens_rows(backend),
        build=_collate(config, rows),
    )


def _collate(config: TrainingConfig, rows: PackedRows) -> Any:
    # Methods differ by their batch builder and loss: DPO batches know which segments form each pair;
    # rows with images get their pixel values and M-RoPE positions (tunekit_train.vision).
    return batch_builder(rows.manifest, pairs=config.method == "dpo")


def _schedule(config: TrainingConfig, stream: BatchStream, has_val: bool) -> Schedule:
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


def _record_start(
    log: RunLog,
    loaded: LoadedRecipe,
    run_dir: Path,
    facts: dict[str, Any],
    *,
    state: TrainState,
    resume_from: Path | None,
    random_init: bool,
) -> None:
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
    final, tmp = run_dir / "final", run_dir / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    ckpt.save_weights(model, tmp, state_dict)
    if paths.tokenizer is not None:
        copy_tokenizer(paths.tokenizer, tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final

