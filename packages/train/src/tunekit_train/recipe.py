"""Typed training recipes: the Nova HyperPod keys of seeds 000/002 plus the Databricks FMFT keys of seed 004.

A recipe copied from the Nova pages loads as it is. Loading runs in four passes so that every problem is
reported at once (`ConfigError` lists them all):

1. ``--set a.b.c=VALUE`` overrides are applied to the raw YAML (values parsed as YAML scalars),
2. ``${recipes.a.b}`` interpolations are resolved against the recipe root (whole-value references keep
   the referenced type; embedded ones are substituted as text),
3. the tree is validated by the pydantic sections below (unknown keys get a did-you-mean),
4. documented *service* ranges (seed 000: lr 1e-6..1e-3, warmup_steps 1..20, min_lr < lr, max_epochs <= 5,
   ...) are checked and returned as warnings, since a local run may go beyond them.

Keys that only tune the services' distributed machinery (``bucket_cap_mb``, ``overlap_grad_sync``,
``sequence_parallel``, ...) are accepted so that copied recipes load; their docstrings say they have no
effect in one process.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tunekit_data.errors import ConfigError
from tunekit_data.video_sampling import MAX_FPS, MAX_SAMPLED_FRAMES, VideoSampling


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# --------------------------------------------------------------------------------------------- run


class RunSection(_Section):
    """``run``: the job's name, model and data paths, and the Nova service's sizing keys."""

    name: str = "tunekit-run"
    """Descriptive name of the job; the default output directory is ``runs/<name>``."""
    model_type: str | None = None
    """Nova model variant (``amazon.nova-lite-v1:0:300k`` ...); only used to check ``replicas``."""
    model_name_or_path: str
    """Local Hugging Face model directory (weights, or only config.json for a random init)."""
    tokenizer_name_or_path: str | None = None
    """Tokenizer directory (tunekit key); defaults to ``model_name_or_path``."""
    replicas: int = Field(1, ge=1)
    """Number of data-parallel workers the global batch is spread over (one process locally)."""
    data_s3_path: str | None = None
    """Training data: JSONL in any format ``ds convert`` reads, a folder of .txt files (CPT), or a
    ``ds pack`` output directory. Local paths and ``file://`` URIs."""
    validation_data_s3_path: str | None = None
    """Optional validation data, same forms as ``data_s3_path``."""
    output_s3_path: str | None = None
    """Run directory (checkpoints, logs, final model) when ``--output-dir`` is not given."""
    custom_weights_path: str | None = None
    """Databricks key: start from the weights of an earlier run (its run dir or one checkpoint dir)."""
    tracking: bool = True
    """Mirror the run into MLflow (tunekit_train.tracking); ``false`` keeps only the run directory's files."""
    experiment_path: str | None = None
    """Databricks key: the MLflow experiment the run is logged to (default: ``run.name``)."""
    tracking_uri: str | None = None
    """MLflow tracking URI (default: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<runs dir>/mlflow.db``)."""
    register_to: str | None = None
    """Databricks key: register the final model under this name (``<catalog>.<schema>[.<name>]`` accepted)."""


# ------------------------------------------------------------------------------------- exp_manager

DpoMetric = Literal["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracy", "logps/chosen", "logps/rejected"]
DPO_METRICS: tuple[str, ...] = get_args(DpoMetric)
"""Per-pair means a DPO run logs at each log step, and with a ``val_`` prefix at each validation."""
# Every logged metric a callback may monitor: train and validation loss, and the DPO metrics of both.
Monitor = Literal[
    "train_loss",
    "val_loss",
    DpoMetric,
    "val_rewards/chosen",
    "val_rewards/rejected",
    "val_rewards/margins",
    "val_rewards/accuracy",
    "val_logps/chosen",
    "val_logps/rejected",
]


class CheckpointParams(_Section):
    """``training_config.exp_manager.checkpoint_callback_params``: how many checkpoints to keep, ranked by what."""

    monitor: Literal["step", Monitor] = "step"
    """Metric that ranks checkpoints for ``save_top_k``."""
    save_top_k: int = Field(1, ge=-1)
    """Checkpoints kept besides ``last`` (-1 keeps all, 0 keeps only ``last``)."""
    mode: Literal["min", "max"] = "max"
    """Whether a smaller or a larger ``monitor`` value is better."""
    every_n_train_steps: int = Field(0, ge=0)
    """Save every N optimizer steps (0: only at the end of the run)."""
    save_last: bool = True
    """Keep the newest checkpoint as ``checkpoints/last`` even when it is outside the top k."""


class EarlyStoppingParams(_Section):
    """``training_config.exp_manager.early_stopping_callback_params``: stop when a validation metric stops improving."""

    monitor: Monitor = "val_loss"
    """Metric checked at each validation."""
    min_delta: float = Field(0.0, ge=0)
    """Smallest change that counts as an improvement."""
    mode: Literal["min", "max"] = "min"
    """Whether a smaller or a larger ``monitor`` value is better."""
    patience: int = Field(3, ge=1)
    """Validations without improvement before the run stops."""


class ExpManager(_Section):
    """``training_config.exp_manager``: where the run writes, checkpoints and trackers."""

    exp_dir: str | None = None
    """Run directory; takes precedence over ``run.output_s3_path``."""
    create_wandb_logger: bool = False
    """Weights & Biases is not supported (as on Nova); True is reported as a warning."""
    create_tensorboard_logger: bool = True
    """Write TensorBoard event files under ``tb/``."""
    project: str | None = None
    """Recorded in ``state.json``."""
    name: str | None = None
    """TensorBoard run name (defaults to ``run.name``)."""
    checkpoint_callback_params: CheckpointParams = CheckpointParams()
    create_early_stopping_callback: bool = False
    """Stop when ``early_stopping_callback_params.monitor`` stops improving."""
    early_stopping_callback_params: EarlyStoppingParams = EarlyStoppingParams()


# ----------------------------------------------------------------------------------------- trainer


class Trainer(_Section):
    """``training_config.trainer``: how long to train, and how often to validate and log."""

    max_epochs: int = -1
    """Passes over the training data (-1: no epoch limit). With no limit at all the run does one epoch."""
    max_steps: int = -1
    """Optimizer steps (-1: no step limit)."""
    val_check_interval: int | float = 1.0
    """Validate every N steps (int) or every fraction of an epoch (float in (0, 1])."""
    log_every_n_steps: int = Field(10, ge=1)
    """Steps between rows of metrics.csv / TensorBoard points."""
    limit_test_batches: int | float = Field(0, ge=0)
    """There is no test stage; accepted so Nova recipes load."""
    gradient_clip_val: float = Field(1.0, ge=0)
    """Clip the global gradient norm to this value (0: no clipping)."""
    num_nodes: int = Field(1, ge=1)
    """Nodes of the service job; the local run is one process (see ``run.replicas``)."""

    @field_validator("max_epochs", "max_steps")
    @classmethod
    def _limit(cls, value: int) -> int:
        if value == 0 or value < -1:
            msg = f"must be -1 (no limit) or >= 1, got {value}"
            raise ValueError(msg)
        return value

    @field_validator("val_check_interval")
    @classmethod
    def _interval(cls, value: int | float) -> int | float:
        if isinstance(value, float) and not 0 < value <= 1:
            msg = f"a float is a fraction of an epoch and must be in (0, 1], got {value}"
            raise ValueError(msg)
        if isinstance(value, int) and value < 1:
            msg = f"an int is a number of steps and must be >= 1, got {value}"
            raise ValueError(msg)
        return value


# ------------------------------------------------------------------------------------------- model


class Sched(_Section):
    """``training_config.model.optim.sched``: the learning-rate schedule."""

    name: Literal["CosineAnnealing"] = "CosineAnnealing"
    """NeMo's CosineAnnealing: linear warmup, cosine decay to ``min_lr``, then ``constant_steps`` at ``min_lr``."""
    warmup_steps: int = Field(0, ge=0)
    """Steps of linear warmup from 0 to ``lr``."""
    constant_steps: int = Field(0, ge=0)
    """Steps held at ``min_lr`` at the end of the schedule."""
    min_lr: float = Field(0.0, ge=0)
    """Learning rate at the end of the cosine decay."""


class Optim(_Section):
    """``training_config.model.optim``: the optimizer and its schedule."""

    lr: float = Field(1e-5, gt=0)
    """Peak learning rate."""
    name: Literal["distributed_fused_adam", "adamw"] = "distributed_fused_adam"
    """Optimizer; Nova's distributed_fused_adam is torch AdamW in one process."""
    adam_w_mode: bool = True
    """True: decoupled weight decay (AdamW); False: L2 penalty added to the gradient (Adam)."""
    eps: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    """Applied to matrices only; norms, biases and other 1-D parameters are never decayed."""
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    sched: Sched = Sched()
    bucket_cap_mb: int | None = None
    """Distributed-optimizer knob; no effect in one process."""
    contiguous_grad_buffer: bool | None = None
    """Distributed-optimizer knob; no effect in one process."""
    overlap_param_sync: bool | None = None
    """Distributed-optimizer knob; no effect in one process."""
    contiguous_param_buffer: bool | None = None
    """Distributed-optimizer knob; no effect in one process."""
    overlap_grad_sync: bool | None = None
    """Distributed-optimizer knob; no effect in one process."""


class LoraTuning(_Section):
    """``training_config.model.peft.lora_tuning``: LoRA's rank, scaling, dropout and target modules."""

    alpha: float = Field(32, gt=0)
    """LoRA scaling numerator: the update is scaled by ``alpha / adapter_dim``."""
    adapter_dim: int = Field(32, ge=1)
    """LoRA rank r."""
    adapter_dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter input."""
    loraplus_lr_ratio: float = Field(1.0, ge=0)
    """LoRA+: the B matrices learn at ``lr * loraplus_lr_ratio`` (1: plain LoRA)."""
    target_modules: Literal["all-linear"] | list[str] = "all-linear"
    """Modules that get adapters: every linear layer but the output head, or a list of module names."""


class Peft(_Section):
    """``training_config.model.peft``: full-rank training or LoRA."""

    peft_scheme: Annotated[Literal["lora"] | None, BeforeValidator(_lower)] = None
    """``lora`` for LoRA fine-tuning, null for full-rank training."""
    lora_tuning: LoraTuning | None = None


class DpoCfg(_Section):
    """``training_config.model.dpo_cfg``: the preference loss, its strength, and how the reference is scored."""

    beta: float = Field(0.1, gt=0)
    """Strength of the preference objective (DPO beta): larger keeps the model closer to the reference,
    smaller learns the preferences faster (Nova's range: 0.001 to 0.5)."""
    loss: Literal["sigmoid", "ipo", "hinge"] = "sigmoid"
    """Per-pair loss: ``sigmoid`` (DPO), ``ipo`` (IPO, on per-token averaged log-ratios) or ``hinge``
    (SLiC / RSO, margin ``1 / beta``)."""
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)
    """Assumed share of flipped preference labels (conservative DPO); sigmoid loss only."""
    precompute_ref: bool = False
    """Compute the reference log-probs in one pass before training and cache them with the pack (reused
    by later runs on the same model and data), instead of a reference forward at every step; a
    full-rank run then keeps no frozen copy of the model."""

    @field_validator("label_smoothing")
    @classmethod
    def _smoothing_needs_sigmoid(cls, value: float, info: ValidationInfo) -> float:
        loss = info.data.get("loss")
        if value and loss != "sigmoid":
            msg = f"applies to the sigmoid loss only, got {value} with loss {loss}"
            raise ValueError(msg)
        return value


class Freeze(_Section):
    """One multimodal component (``llm``, ``image_projector``, ...): whether it trains."""

    freeze: bool = False
    require_newline: bool | None = None
    """Multimodal knob; no effect on text-only models."""


class MmCfg(_Section):
    """``training_config.model.mm_cfg``: which multimodal components train, and how media is sampled."""

    llm: Freeze = Freeze()
    """``freeze: true`` freezes the language model (only adapters train)."""
    image_projector: Freeze = Freeze()
    """Vision-language models, full training: ``freeze: true`` keeps the image projector (Qwen2-VL's
    ``visual.merger``) frozen. No effect on text-only models."""
    video_projector: Freeze = Freeze()
    """No effect on text-only models."""
    video_fps: float = Field(VideoSampling.fps, gt=0, le=MAX_FPS)
    """Vision-language models: video frames sampled per second of video when ``train run`` packs raw
    data (``ds pack --video-fps``; a packed dataset keeps the sampling it was packed with)."""
    video_max_frames: int = Field(VideoSampling.max_frames, ge=2, le=MAX_SAMPLED_FRAMES)
    """At most this many frames of a video (``ds pack --video-max-frames``); a multiple of the model's
    temporal patch is kept."""


class LoaderArgs(_Section):
    """``training_config.model.training_validation.loader.args``: the data loader's workers and prefetch."""

    data_loader_workers: int = Field(0, ge=0)
    """Worker processes that collate batches (0: in the training process)."""
    prefetch_factor: int = Field(2, ge=1)
    """Batches each worker prepares ahead."""


class Loader(_Section):
    """``training_config.model.training_validation.loader``."""

    args: LoaderArgs = LoaderArgs()


class CollatorArgs(_Section):
    """``training_config.model.training_validation.collator.args``: multimodal collation knobs."""

    force_image_at_turn_beginning: bool = False
    """Multimodal knob; no effect on text-only models."""


class Collator(_Section):
    """``training_config.model.training_validation.collator``."""

    args: CollatorArgs = CollatorArgs()


class TrainingValidation(_Section):
    """``training_config.model.training_validation``: the data loader and collator."""

    loader: Loader = Loader()
    collator: Collator = Collator()


class ModelSection(_Section):
    """``training_config.model``: dropout, optimizer, PEFT, DPO and multimodal settings."""

    hidden_dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the attention and MLP outputs before each residual add."""
    attention_dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the attention probabilities (the model config's ``attention_dropout``)."""
    ffn_dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout inside the MLP, on the input of its down projection."""
    sequence_parallel: bool = False
    """Megatron sequence parallelism; no effect in one process."""
    optim: Optim = Optim()
    peft: Peft = Peft()
    dpo_cfg: DpoCfg | None = None
    """Preference training (issue 6); its presence selects DPO."""
    mm_cfg: MmCfg = MmCfg()
    freeze_vision: bool = True
    """Vision-language models: keep the vision encoder frozen (LoRA adapts the language model only);
    the image projector follows ``mm_cfg.image_projector.freeze``. No effect on text-only models."""
    training_validation: TrainingValidation = TrainingValidation()

    @property
    def lora(self) -> LoraTuning | None:
        """The LoRA settings when LoRA is on (defaults if ``lora_tuning`` is omitted), else None."""
        if self.peft.peft_scheme != "lora":
            return None
        return self.peft.lora_tuning or LoraTuning()

    @field_validator("mm_cfg")
    @classmethod
    def _trainable(cls, value: MmCfg, info: ValidationInfo) -> MmCfg:
        peft = info.data.get("peft")
        if value.llm.freeze and peft is not None and peft.peft_scheme is None:
            msg = "llm.freeze: true with peft.peft_scheme null leaves nothing to train"
            raise ValueError(msg)
        return value


# ----------------------------------------------------------------------------------- training_config

Method = Literal["sft", "cpt", "dpo"]

# Nova writes `sft`; Databricks writes the upper-case task names. Both map onto a training method.
_TASK_METHOD: dict[str, Method] = {
    "sft": "sft",
    "instruction_finetune": "sft",
    "chat_completion": "sft",
    "cpt": "cpt",
    "continued_pretrain": "cpt",
    "dpo": "dpo",
}
TaskType = Annotated[
    Literal["sft", "instruction_finetune", "chat_completion", "cpt", "continued_pretrain", "dpo"],
    BeforeValidator(_lower),
]

_DURATION = re.compile(r"^(\d+)(ep|tok)$")


class TrainingConfig(_Section):
    """``training_config``: context length, batch size, seed and the sections below it."""

    max_length: int = Field(2048, ge=8)
    """Tokens per packed row (the context window trained)."""
    global_batch_size: int = Field(64, ge=1)
    """Packed rows per optimizer step = micro_batch_size x accumulation x replicas."""
    micro_batch_size: int = Field(1, ge=1)
    """Packed rows per forward pass."""
    save_steps: int | None = Field(None, ge=0)
    """Nova: default for ``checkpoint_callback_params.every_n_train_steps``."""
    replicas: int | None = Field(None, ge=1)
    """Nova repeats ``run.replicas`` here; must agree with it."""
    task_type: TaskType = "sft"
    """sft / INSTRUCTION_FINETUNE / CHAT_COMPLETION (supervised), CONTINUED_PRETRAIN / cpt, dpo."""
    weights_only: bool = False
    """Checkpoints other than the newest keep weights only (the newest always keeps optimizer state
    so that ``--resume`` stays exact)."""
    allow_percentage_invalid_samples: float = Field(0.0, ge=0, le=100)
    """JSONL input: invalid records are dropped up to this share; more is an error."""
    training_duration: str | None = None
    """Databricks key: ``3ep`` (epochs) or ``1000000tok`` (tokens); the run stops at the first limit reached."""
    eval_prompts: list[str] = []
    """Databricks key: prompts generated at each checkpoint (max_new_tokens 100, temperature 1, top_k 50,
    top_p 0.95) and logged to events.jsonl and TensorBoard."""
    seed: int = 0
    """Seed of the data order, dropout and (for config-only models) the weight init."""
    attn_implementation: Literal["auto", "sdpa_varlen", "sdpa", "eager", "flex_attention", "flash_attention_2"] = "auto"
    """Packed attention backend; auto is varlen flash-attention on GPU when installed, per-segment SDPA
    (``sdpa_varlen``) otherwise; ``sdpa`` and ``eager`` build a block-diagonal mask (length^2 memory)."""
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """Data parallelism when launched on several processes (``train run --nproc-per-node``, torchrun, SLURM):
    ``ddp`` keeps a full replica of the model and optimizer on every rank; ``fsdp`` shards parameters,
    gradients and optimizer state over the ranks (FSDP2 ``fully_shard``) and writes sharded checkpoints
    (torch.distributed.checkpoint) that resume on any process count. No effect in one process, except
    that ``fsdp`` runs write the same sharded checkpoints."""
    enable_fsdp: bool | None = None
    """SageMaker JumpStart's hyperparameter, accepted here in ``training_config``: true is
    ``strategy: fsdp``, false is ``strategy: ddp`` (it must not contradict an explicit ``strategy``)."""
    activation_checkpointing: Annotated[Literal["auto"] | bool, BeforeValidator(_lower)] = "auto"
    """Recompute each decoder layer's activations in backward instead of keeping them (non-reentrant
    ``torch.utils.checkpoint``): about a third more compute for a fraction of the activation memory.
    ``auto`` turns it on when the memory plan (``train plan``) says the run does not fit without it."""
    gradient_checkpointing: Annotated[Literal["auto"] | bool | None, BeforeValidator(_lower)] = None
    """SageMaker JumpStart's name for ``activation_checkpointing`` (it must not contradict it)."""
    loss_chunk_tokens: int = Field(4096, ge=1)
    """Trained tokens whose logits are computed at a time: the loss never holds more than
    ``loss_chunk_tokens x vocab`` float32 logits (4096 x 128k vocab = 2 GiB at most)."""
    precision: Literal["auto", "fp32", "bf16-mixed", "bf16"] = "auto"
    """``fp32``: float32 weights and compute; ``bf16-mixed``: float32 weights, bf16 autocast;
    ``bf16``: weights stored in bf16 (for LoRA only the frozen base, which halves its memory; the
    adapters and their optimizer state stay float32) with bf16 autocast. ``auto``: bf16-mixed on CUDA,
    fp32 on CPU (where bf16 matmuls are slow; bf16 there is allowed, with a warning)."""
    compile: bool = False
    """``torch.compile`` each decoder layer (the first steps are slower while it compiles)."""
    exp_manager: ExpManager = ExpManager()
    trainer: Trainer = Trainer()
    model: ModelSection = ModelSection()

    @property
    def checkpointing(self) -> Literal["auto"] | bool:
        """``activation_checkpointing``, or JumpStart's ``gradient_checkpointing`` when only that is set."""
        if "activation_checkpointing" not in self.model_fields_set and self.gradient_checkpointing is not None:
            return self.gradient_checkpointing
        return self.activation_checkpointing

    @property
    def method(self) -> Method:
        """Training method: a ``dpo_cfg`` section selects DPO, otherwise ``task_type`` decides."""
        return "dpo" if self.model.dpo_cfg is not None else _TASK_METHOD[self.task_type]

    @property
    def duration(self) -> tuple[int, Literal["ep", "tok"]] | None:
        """``training_duration`` parsed into (amount, unit)."""
        if self.training_duration is None:
            return None
        match = _DURATION.match(self.training_duration)
        assert match is not None  # checked by the validator below
        return int(match.group(1)), match.group(2)  # type: ignore[return-value]

    @property
    def fsdp(self) -> bool:
        """Whether the run shards the model (``strategy: fsdp`` or JumpStart's ``enable_fsdp: true``)."""
        return self.strategy == "fsdp" or bool(self.enable_fsdp)

    @property
    def checkpoint_every(self) -> int:
        """Steps between checkpoints: ``every_n_train_steps``, else ``save_steps``, else 0 (end only)."""
        every = self.exp_manager.checkpoint_callback_params.every_n_train_steps
        return every or (self.save_steps or 0)

    @field_validator("micro_batch_size")
    @classmethod
    def _divides(cls, value: int, info: ValidationInfo) -> int:
        total = info.data.get("global_batch_size")
        if total is not None and total % value:
            msg = f"global_batch_size {total} is not a multiple of micro_batch_size {value}"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _enable_fsdp_agrees(self) -> TrainingConfig:
        # Only an explicit strategy can contradict the alias: the default "ddp" yields to enable_fsdp.
        if self.enable_fsdp is not None and "strategy" in self.model_fields_set and (self.strategy == "fsdp") != self.enable_fsdp:
            msg = f"enable_fsdp: {str(self.enable_fsdp).lower()} contradicts strategy: {self.strategy}; set only one of them"
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _checkpointing_alias_agrees(self) -> TrainingConfig:
        alias = self.gradient_checkpointing
        if alias is not None and "activation_checkpointing" in self.model_fields_set and alias != self.activation_checkpointing:
            msg = f"gradient_checkpointing: {alias} contradicts activation_checkpointing: {self.activation_checkpointing}; set only one of them"
            raise ValueError(msg)
        return self

    @field_validator("training_duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not ((match := _DURATION.match(value)) and int(match.group(1)) > 0):
            msg = f"expected a positive count followed by 'ep' or 'tok' (e.g. 3ep, 1000000tok), got {value!r}"
            raise ValueError(msg)
        return value


class Recipe(_Section):
    """A whole recipe: ``run`` and ``training_config``, as in the Nova pages (see the module docstring)."""

    run: RunSection
    training_config: TrainingConfig = TrainingConfig()

    @model_validator(mode="after")
    def _replicas_agree(self) -> Recipe:
        repeated = self.training_config.replicas
        if repeated is not None and repeated != self.run.replicas:
            msg = f"training_config.replicas: {repeated} differs from run.replicas {self.run.replicas}"
            raise ValueError(msg)
        return self


# ------------------------------------------------------------------------------------------ loading


@dataclass(frozen=True)
class LoadedRecipe:
    """A validated recipe with where it came from and the service-range warnings it raised."""

    recipe: Recipe
    source: str
    warnings: tuple[str, ...]
    resolved: dict[str, Any]
    """The tree after overrides and interpolation (written to the run directory)."""


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> LoadedRecipe:
    """Load, override, interpolate and validate a recipe; raise `ConfigError` listing every problem."""
    source = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the recipe: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from exc
    return parse_recipe(raw, source=source, overrides=overrides)


def parse_recipe(raw: object, *, source: str, overrides: Sequence[str] = ()) -> LoadedRecipe:
    """Validate an already-parsed recipe tree (see `load_recipe`)."""
    if not isinstance(raw, dict):
        raise ConfigError(source, [f"the recipe must be a mapping of sections, got {type(raw).__name__}"])
    problems: list[str] = []
    tree = _apply_overrides(raw, overrides, problems)
    tree = _interpolate(tree, tree, problems, ())
    try:
        recipe = Recipe.model_validate(tree)
    except ValidationError as exc:
        problems.extend(_describe(err) for err in exc.errors())
        raise ConfigError(source, problems) from None
    if problems:
        raise ConfigError(source, problems)
    return LoadedRecipe(recipe, source, tuple(service_warnings(recipe)), tree)


def _apply_overrides(raw: dict[str, Any], overrides: Sequence[str], problems: list[str]) -> dict[str, Any]:
    tree = _copy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {item}: expected KEY=VALUE with a dotted key, e.g. training_config.max_length=1024")
            continue
        parts = key.strip().split(".")
        node = tree
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                problems.append(f"--set {item}: {'.'.join(parts[: i + 1])} is a value, not a section")
                break
            node = child
        else:
            try:
                node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
            except yaml.YAMLError as exc:
                problems.append(f"--set {item}: the value is not valid YAML ({exc.problem}); quote it")
    return tree


def _copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


_REF = re.compile(r"\$\{([^}]*)\}")


def _interpolate(node: Any, root: dict[str, Any], problems: list[str], seen: tuple[str, ...]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, root, problems, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, root, problems, seen) for v in node]
    if not isinstance(node, str) or "${" not in node:
        return node
    whole = _REF.fullmatch(node.strip())
    if whole:  # a whole-value reference keeps the referenced value's type (an int stays an int)
        return _lookup(whole.group(1), root, problems, seen)
    return _REF.sub(lambda m: str(_lookup(m.group(1), root, problems, seen)), node)


def _lookup(ref: str, root: dict[str, Any], problems: list[str], seen: tuple[str, ...]) -> Any:
    path = ref.strip().removeprefix("recipes.")
    if path in seen:
        problems.append(f"${{{ref}}}: circular reference ({' -> '.join((*seen, path))})")
        return None
    node: Any = root
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            problems.append(f"${{{ref}}}: no key {path} in the recipe")
            return None
        node = node[part]
    return _interpolate(node, root, problems, (*seen, path))


def _describe(err: Any) -> str:
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key{_did_you_mean(loc)}"
    if kind == "missing":
        return f"{key}: required key is missing"
    message = err["msg"].removeprefix("Value error, ")
    if kind == "value_error":  # our own checks: the message already shows the value
        return f"{key}: {message}"
    bounds = _bounds(loc)
    if kind.startswith(("greater_than", "less_than")) and bounds:
        return f"{key}: input should be {bounds}, got {err['input']!r}"
    return f"{key}: {message[0].lower()}{message[1:]}, got {err['input']!r}"


def _bounds(loc: tuple[str, ...]) -> str | None:
    # Name the whole allowed range (">= 0 and < 1"), where pydantic names only the bound that failed.
    field = _fields_at(loc[:-1]).get(loc[-1])
    symbols = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
    parts = [f"{sym} {getattr(m, attr)}" for m in (field.metadata if field else ()) for attr, sym in symbols if hasattr(m, attr)]
    return " and ".join(parts) if len(parts) > 1 else None


def _did_you_mean(loc: tuple[str, ...]) -> str:
    siblings = list(_fields_at(loc[:-1]))
    close = difflib.get_close_matches(loc[-1], siblings, n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    elsewhere = [p for p in _all_keys(Recipe, ()) if p.rsplit(".", 1)[-1] == loc[-1]]
    if elsewhere:  # a known key put in the wrong section
        return f" (did you mean '{elsewhere[0]}'?)"
    return ""


def _section_of(annotation: Any) -> type[_Section] | None:
    if isinstance(annotation, type) and issubclass(annotation, _Section):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _section_of(arg)
        if found is not None:
            return found
    return None


def _fields_at(loc: tuple[str, ...]) -> dict[str, Any]:
    cls: type[_Section] | None = Recipe
    for part in loc:
        field = cls.model_fields.get(part) if cls else None
        cls = _section_of(field.annotation) if field else None
    return dict(cls.model_fields) if cls else {}


def _all_keys(cls: type[_Section], prefix: tuple[str, ...]) -> list[str]:
    keys = []
    for name, field in cls.model_fields.items():
        keys.append(".".join((*prefix, name)))
        sub = _section_of(field.annotation)
        if sub is not None:
            keys.extend(_all_keys(sub, (*prefix, name)))
    return keys


# ------------------------------------------------------------------------------- service ranges


@dataclass(frozen=True)
class ServiceRange:
    """A documented limit of the managed services: outside it the recipe still runs, with a warning."""

    key: str
    allowed: str
    value: Callable[[Recipe], Any]
    ok: Callable[[Recipe], bool]


# Nova Micro / Lite / Pro replica counts (seed 000 "replicas").
_REPLICAS = {"micro": {2, 4, 8}, "lite": {4, 8, 16, 32}, "pro": {6, 12, 24}}


def _variant(recipe: Recipe) -> str | None:
    model_type = (recipe.run.model_type or "").lower()
    return next((v for v in _REPLICAS if f"nova-{v}" in model_type), None)


def _optim(r: Recipe) -> Optim:
    return r.training_config.model.optim


def _lora(r: Recipe) -> LoraTuning:
    return r.training_config.model.lora or LoraTuning()


SERVICE_RANGES: tuple[ServiceRange, ...] = (
    ServiceRange(
        "run.replicas",
        "2/4/8 (Micro), 4/8/16/32 (Lite), 6/12/24 (Pro)",
        lambda r: r.run.replicas,
        lambda r: (v := _variant(r)) is None or r.run.replicas in _REPLICAS[v],
    ),
    ServiceRange(
        "training_config.max_length",
        "<= 65536 (SFT), <= 32768 (DPO)",
        lambda r: r.training_config.max_length,
        lambda r: r.training_config.max_length <= (32768 if r.training_config.method == "dpo" else 65536),
    ),
    ServiceRange(
        "training_config.trainer.max_epochs",
        "<= 5",
        lambda r: r.training_config.trainer.max_epochs,
        lambda r: r.training_config.trainer.max_epochs <= 5,
    ),
    ServiceRange("training_config.model.optim.lr", "1e-6 to 1e-3", lambda r: _optim(r).lr, lambda r: 1e-6 <= _optim(r).lr <= 1e-3),
    ServiceRange(
        "training_config.model.optim.sched.warmup_steps",
        "1 to 20",
        lambda r: _optim(r).sched.warmup_steps,
        lambda r: 1 <= _optim(r).sched.warmup_steps <= 20,
    ),
    ServiceRange(
        "training_config.model.optim.sched.min_lr",
        "smaller than optim.lr",
        lambda r: _optim(r).sched.min_lr,
        lambda r: _optim(r).sched.min_lr < _optim(r).lr,
    ),
    ServiceRange(
        "training_config.model.peft.lora_tuning.alpha",
        "32, 64, 96, 128, 160 or 192",
        lambda r: _lora(r).alpha,
        lambda r: r.training_config.model.lora is None or _lora(r).alpha in {32, 64, 96, 128, 160, 192},
    ),
    ServiceRange(
        "training_config.model.peft.lora_tuning.loraplus_lr_ratio",
        "0 to 100",
        lambda r: _lora(r).loraplus_lr_ratio,
        lambda r: r.training_config.model.lora is None or _lora(r).loraplus_lr_ratio <= 100,
    ),
    ServiceRange(
        "training_config.model.dpo_cfg.beta",
        "0.001 to 0.5",
        lambda r: r.training_config.model.dpo_cfg and r.training_config.model.dpo_cfg.beta,
        lambda r: (c := r.training_config.model.dpo_cfg) is None or 0.001 <= c.beta <= 0.5,
    ),
    ServiceRange(
        "training_config.global_batch_size",
        "16, 32, 64, 128 or 256 (DPO)",
        lambda r: r.training_config.global_batch_size,
        lambda r: r.training_config.method != "dpo" or r.training_config.global_batch_size in {16, 32, 64, 128, 256},
    ),
)


def service_warnings(recipe: Recipe) -> list[str]:
    """Warnings for values outside the documented service ranges, and for settings with no local effect."""
    warnings = [
        f"{rng.key}: {rng.value(recipe)!r} is outside the service range ({rng.allowed}); running anyway"
        for rng in SERVICE_RANGES
        if not rng.ok(recipe)
    ]
    config = recipe.training_config
    if config.exp_manager.create_wandb_logger:
        warnings.append("training_config.exp_manager.create_wandb_logger: Weights & Biases is not supported; ignored")
    if config.model.peft.lora_tuning is not None and config.model.lora is None:
        warnings.append("training_config.model.peft.lora_tuning: ignored because peft_scheme is null (full-rank training)")
    lora = config.model.lora
    if lora is not None and lora.loraplus_lr_ratio == 0:
        warnings.append("training_config.model.peft.lora_tuning.loraplus_lr_ratio: 0 freezes the LoRA B matrices, so the adapters stay zero")
    return warnings
