"""What `train serve` serves.

Each argument becomes a model id, a model directory, a tokenizer and the chat template the run trained with.

An argument is ``PATH`` or ``ID=PATH``; PATH is a run directory (its ``final/``, else its last
checkpoint), a checkpoint, or a ``train export`` directory. The default id is the run's directory name
(``runs/sft-lora-tiny/final`` is ``sft-lora-tiny``), which is what a request names, as a Bedrock request
names a custom model id. `model_source` is the one place that turns an argument into a directory, so other
kinds of sources (a registry URI) slot in there.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunekit_data.errors import UsageError
from tunekit_train.generate import model_dir, prompt_ids, tokenizer_for
from tunekit_train.lora import ADAPTER_CONFIG, is_adapter_dir
from tunekit_train.vision import load_image_processor

# Names a run directory's final model and checkpoints are saved under, which are not good model ids.
_INNER_NAMES = {"final", "last", "checkpoints"}


@dataclass
class ServedModel:
    """One model id: where its weights are, and how its prompts are rendered and its tokens decoded."""

    model_id: str
    directory: Path
    """The model or adapter directory."""
    base: Path | None
    """The base model directory of a LoRA adapter; None for a full model."""
    tokenizer: Any = field(repr=False)
    chat_template: str | None = field(repr=False)
    """The template source the run was packed with, when it differs from the tokenizer's own."""
    context: int = 0
    """Longest prompt + completion in tokens (the model's max_position_embeddings)."""
    image_processor: Any = field(default=None, repr=False)
    """A vision-language model's image processor (None: the model takes text only)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def adapter_name(self) -> str:
        """The peft adapter name of this id.

        A registered model's id (``catalog.schema.name``) has dots, which torch module names cannot hold.
        """
        return self.model_id.replace(".", "\N{ONE DOT LEADER}")

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        """Prompt ids of a conversation, with an open assistant turn (as `train generate` renders it).

        Raises:
            ValueError: the template refuses the conversation (e.g. roles that do not alternate).
        """
        # The HF tokenizer sets its truncation/padding state on each call; one lock keeps the HTTP thread
        # (encoding) and the engine thread (decoding) from touching it at once.
        with self._lock:
            try:
                return prompt_ids(self.tokenizer, messages, self.chat_template)
            except Exception as exc:  # jinja's TemplateError and raise_exception() messages
                msg = f"the chat template refused the conversation: {exc}"
                raise ValueError(msg) from exc

    def encode_images(self, messages: list[dict[str, Any]]) -> tuple[list[int], dict[str, Any]]:
        """Prompt ids and image tensors of a conversation whose contents hold image parts.

        See `tunekit_train.vision.vision_inputs`.

        Raises:
            ValueError: the model takes no images, or the template refuses the conversation.
        """
        if self.image_processor is None:
            msg = f"model {self.model_id!r} takes text only; send no image content"
            raise ValueError(msg)
        from tunekit_train.vision import vision_inputs

        with self._lock:
            try:
                inputs = vision_inputs(self.tokenizer, self.image_processor, messages, chat_template=self.chat_template)
            except Exception as exc:  # jinja's TemplateError and raise_exception() messages
                msg = f"the chat template refused the conversation: {exc}"
                raise ValueError(msg) from exc
        return inputs.pop("input_ids")[0].tolist(), inputs

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, special tokens removed (as `train generate` decodes)."""
        with self._lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

    @property
    def eos_ids(self) -> set[int]:
        """Token ids that end a completion."""
        eos = self.tokenizer.eos_token_id
        return set() if eos is None else {eos}

    @property
    def pad_id(self) -> int:
        """The id that left-pads a batch."""
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else (self.tokenizer.eos_token_id or 0)


def model_source(spec: str, tracking_uri: str | None = None) -> tuple[str | None, Path]:
    """The id (explicit, or None for the default) and the local directory that an argument names.

    A registered model (``models:/NAME/VERSION``, ``runs:/RUN_ID/PATH``) is downloaded from the MLflow
    registry at ``tracking_uri`` (None: ``$MLFLOW_TRACKING_URI``); its default id is NAME.

    Raises:
        UsageError: an empty id or path.
    """
    model_id, sep, path = spec.partition("=")
    if not sep:
        model_id, path = "", spec
    if (sep and not model_id) or not path:
        msg = f"{spec!r}: expected PATH, ID=PATH or ID=models:/NAME/VERSION"
        raise UsageError(msg)
    if path.startswith(("models:/", "runs:/")):
        from tunekit_train.registry import resolve_model

        name = path.removeprefix("models:/").rpartition("/")[0] if path.startswith("models:/") else ""
        return model_id or name or None, resolve_model(path, tracking_uri=tracking_uri)
    return model_id or None, Path(path)


def default_id(path: Path) -> str:
    """The run's directory name: ``runs/a/final`` and ``runs/a/checkpoints/step-000004`` are ``a``."""
    path = path.resolve()
    parts = list(path.parts)
    while len(parts) > 1 and (parts[-1] in _INNER_NAMES or parts[-1].startswith("step-")):
        parts.pop()
    return parts[-1]


def resolve_models(specs: list[str], *, tracking_uri: str | None = None) -> list[ServedModel]:
    """The models the arguments name (see `model_source`), with their tokenizers and trained templates.

    Raises:
        UsageError: no arguments, or two with the same id.
        InputError: a path holds no model or no tokenizer.
    """
    if not specs:
        msg = "give at least one run or model directory to serve"
        raise UsageError(msg)
    models: dict[str, ServedModel] = {}
    for spec in specs:
        explicit, path = model_source(spec, tracking_uri)
        directory = model_dir(path)
        model_id = explicit or default_id(path)
        if model_id in models:
            msg = f"{spec}: model id {model_id!r} is already served by {models[model_id].directory}; name one ID=PATH"
            raise UsageError(msg)
        base = _adapter_base(directory) if is_adapter_dir(directory) else None
        tokenizer = tokenizer_for(directory)
        template = trained_template(path, directory)
        if template is None and not tokenizer.chat_template:
            msg = (
                f"{directory}: the tokenizer has no chat template, and chat APIs need one to render messages"
            )
            raise UsageError(msg)
        config = json.loads(((base or directory) / "config.json").read_text(encoding="utf-8"))
        config = {**config.get("text_config", {}), **config}  # vision-language configs nest the text model's
        models[model_id] = ServedModel(
            model_id=model_id,
            directory=directory,
            base=base,
            tokenizer=tokenizer,
            chat_template=template,
            context=int(config.get("max_position_embeddings") or 2048),
            image_processor=load_image_processor(directory),
        )
    return list(models.values())


def trained_template(path: Path, directory: Path) -> str | None:
    """The chat template source a run's data was packed with, when it is not the tokenizer's own."""
    name = pack_settings(path)["template"]
    if name == "auto":
        return None
    from tunekit_tokenize import load_tokenizer, resolve_template

    template = resolve_template(load_tokenizer(directory), name)
    return None if template is None else template.source


def pack_settings(path: Path) -> dict[str, str]:
    """How the run behind ``path`` tokenized its data: ``template`` (a `resolve_template` name) and ``loss_on``.

    ``ds pack --template chatml`` (or a .jinja file) records the template's name in the pack manifest;
    ``train run`` packs JSONL with the tokenizer's own template (``auto``), the default when nothing is recorded.
    """
    manifest = _train_manifest(path) or {}
    name = (manifest.get("template") or {}).get("name")
    return {
        "template": "auto" if name in (None, "tokenizer") else name,
        "loss_on": manifest.get("loss_on") or "assistant",
    }


def _train_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of the pack a run trained on: its own ``data/train`` or the packed directory its recipe names."""
    run = path.resolve()
    while run.name in _INNER_NAMES or run.name.startswith("step-"):
        run = run.parent
    candidates = [run / "data" / "train" / "manifest.json"]
    recipe = run / "recipe.yaml"
    if recipe.is_file():
        data = ((yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("run") or {}).get(
            "data_s3_path"
        )
        if isinstance(data, str) and not data.startswith("s3://"):
            candidates.insert(0, Path(data.removeprefix("file://")) / "manifest.json")
    for candidate in candidates:
        if candidate.is_file():
            return json.loads(candidate.read_text(encoding="utf-8"))
    return None


def _adapter_base(directory: Path) -> Path:
    return Path(
        json.loads((directory / ADAPTER_CONFIG).read_text(encoding="utf-8"))["base_model_name_or_path"]
    ).resolve()
