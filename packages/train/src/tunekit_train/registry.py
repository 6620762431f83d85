"""The MLflow model registry: register a run's model, and resolve ``models:/NAME/VERSION`` to a directory.

Registering is ``run.register_to`` or ``train export --register``; resolving gives a local model directory.

A version's source is the model directory itself, logged as the run's ``model/`` artifacts: a full model
(config.json + safetensors) or a LoRA adapter whose ``adapter_config.json`` names its base, with the
tokenizer files. It is not logged with ``mlflow.transformers``: for a PEFT model that flavor stores only
the adapter and references the base by its Hugging Face Hub repository and commit, to download it on
load, which cannot work offline nor for a local or randomly initialised base. A resolved version loads
with ``train generate`` / `tunekit_train.generate.load_trained`, transformers or peft, as ``final/`` does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunekit_data.errors import InputError, UsageError
from tunekit_train.lora import is_adapter_dir

ARTIFACT_PATH = "model"


def model_name(name: str, run_name: str | None) -> str:
    """The registered model name: Databricks' ``<catalog>.<schema>`` gets the run's name appended."""
    parts = name.split(".")
    if any(not p for p in parts) or len(parts) > 3 or "/" in name:
        msg = f"run.register_to: {name!r}: expected NAME or <catalog>.<schema>[.<name>]"
        raise UsageError(msg)
    return f"{name}.{run_name or 'model'}" if len(parts) == 2 else name


def register_model(client: Any, run_id: str, directory: Path, name: str, *, run_name: str | None = None) -> dict[str, Any]:
    """Log ``directory`` to the MLflow run as ``model/`` and register it as a new version of ``name``."""
    from mlflow.exceptions import MlflowException

    full_name = model_name(name, run_name)
    client.log_artifacts(run_id, str(directory), ARTIFACT_PATH)
    try:
        client.create_registered_model(full_name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    tags = {"tunekit.kind": "adapter" if is_adapter_dir(directory) else "model"}
    if is_adapter_dir(directory):
        config = json.loads((directory / "adapter_config.json").read_text(encoding="utf-8"))
        tags["tunekit.base_model"] = str(config.get("base_model_name_or_path"))
    source = f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT_PATH}"
    version = client.create_model_version(full_name, source=source, run_id=run_id, tags=tags)
    return {"name": full_name, "version": int(version.version), "source": source, "run_id": run_id, **tags}


def register_run(run_dir: Path, model_dir: Path, name: str) -> dict[str, Any]:
    """Register ``model_dir`` (the run's final model, or an export of it) under the run's MLflow run.

    Raises:
        InputError: the run was never tracked.
    """
    from tunekit_train.tracking import client_for, read_record

    record = read_record(run_dir)
    if record is None:
        msg = f"{run_dir}: not tracked in MLflow (no mlflow.json): run it with run.tracking true to register its model"
        raise InputError(msg)
    state = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
    return register_model(client_for(record["tracking_uri"]), record["run_id"], model_dir, name, run_name=state.get("name"))


def resolve_model(uri: str, *, tracking_uri: str | None = None, dst: Path | None = None) -> Path:
    """A local directory holding the model ``uri`` names (``models:/NAME/VERSION``, ``runs:/...``, a path).

    Downloads the registered version's files (into ``dst``, or MLflow's temporary directory); a local
    path is returned as is.
    """
    if not uri.startswith(("models:/", "runs:/")):
        return Path(uri)
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from tunekit_train.tracking import client_for

    asked = uri
    try:
        client = client_for(tracking_uri) if tracking_uri else None
        if uri.startswith("models:/") and client is not None:
            # Asked of the given registry explicitly: MLflow's models:/ resolution uses the default registry.
            name, _, version = uri.removeprefix("models:/").rpartition("/")
            uri = client.get_model_version_download_uri(name, version)
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst) if dst else None, tracking_uri=tracking_uri)
    except (MlflowException, OSError) as exc:
        where = tracking_uri or "$MLFLOW_TRACKING_URI"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        msg = f"{asked}: cannot fetch it from the MLflow registry at {where}: {first}"
        raise InputError(msg) from None
    return Path(local)
