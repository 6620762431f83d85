"""Experiment tracking on MLflow: each ``train run`` is one MLflow run, like Databricks' ``fm.create``.

The run directory stays the record (``metrics.csv``, ``events.jsonl``, ``state.json``); this module
mirrors it into MLflow as a `RunLog` sink:

- params: the resolved recipe, flattened to dotted keys (values cut to MLflow's length limit);
- metrics: every ``metrics.csv`` row as step metrics, with the values as written to the file;
- tags: the run's state and the latest message of each event type; artifacts: ``events.jsonl``,
  ``recipe.yaml``, ``state.json``, the packs' ``manifest.json``/``stats.json`` (``data/<split>/``) and
  each checkpoint's eval_prompts generations as a table (``eval_prompts/step-NNNNNN.json``);
- ``run.register_to``: the final model registered as a new version (`tunekit_train.registry`).

Where: ``run.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else an embedded SQLite store beside the
run directories (``<runs dir>/mlflow.db``, artifacts in ``<runs dir>/mlartifacts``), so it works with no
server. The experiment is ``run.experiment_path`` (default ``run.name``). The MLflow run id is kept in
``RUN_DIR/mlflow.json``, so a resumed run continues the same MLflow run.

Logging happens on a background thread, so a step never waits for MLflow. A failed call is retried,
then warned about once (an event and stderr) and logging stops; the metrics stay in ``metrics.csv`` and
`backfill` (at the run's end, on resume, and ``train runs --backfill``) logs the steps MLflow lacks.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tunekit_train.logs import EVENTS_FILE, STATE_FILE, append_event, now, read_metrics, write_json_atomic

RECORD_FILE = "mlflow.json"
"""In the run directory: where its MLflow run is (tracking URI, experiment, run id)."""
RETRIES = (0.5, 2.0)
"""Seconds to wait before each retry of a failed MLflow call."""
_CLOSE_TIMEOUT_S = 300.0
_MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}
_T = TypeVar("_T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """Where a run is tracked."""

    tracking_uri: str
    experiment: str
    artifact_location: str | None  # for the embedded store only: keep artifacts beside the database


def target_for(run: dict[str, Any], runs_root: Path) -> Target:
    """The tracking target of a recipe's ``run`` section (a dict, as in ``recipe.yaml``)."""
    uri = run.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{runs_root.resolve() / 'mlflow.db'}"
    artifacts = None
    if uri.startswith("sqlite:///"):  # MLflow's default would be ./mlruns, wherever the command runs
        artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return Target(uri, run.get("experiment_path") or run.get("name") or "tunekit-run", artifacts)


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The run directory's MLflow record (``mlflow.json``), or None when it was never tracked."""
    path = run_dir / RECORD_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def client_for(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri``, whose HTTP calls fail fast: this module does its own retries."""
    # MLflow's default is 7 retries with exponential backoff: minutes per call against a server that is down.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout is --json's
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def open_run(run_dir: Path, target: Target, *, tags: dict[str, str]) -> tuple[Any, str]:
    """The client and id of the run directory's MLflow run, created (and recorded) on first use."""
    client = client_for(target.tracking_uri)
    record = read_record(run_dir)
    if record is not None and record["tracking_uri"] == target.tracking_uri:
        client.update_run(record["run_id"], status="RUNNING")
        return client, record["run_id"]
    experiment = client.get_experiment_by_name(target.experiment)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(target.experiment, artifact_location=target.artifact_location)
    )
    run = client.create_run(experiment_id, run_name=tags.get("tunekit.name"), tags=tags)
    write_json_atomic(
        run_dir / RECORD_FILE,
        {"tracking_uri": target.tracking_uri, "experiment": target.experiment, "experiment_id": experiment_id, "run_id": run.info.run_id, "created_at": now()},
    )
    return client, run.info.run_id


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested recipe keys as dotted params (``training_config.model.optim.lr``), values as strings."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value)
    return flat


def log_params(client: Any, run_id: str, params: dict[str, str]) -> None:
    """Log ``params`` not yet on the run.

    A value a resumed run changed goes to a ``param.<key>`` tag (MLflow params are write-once).
    """
    from mlflow.entities import Param, RunTag
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

    params = {k: v[:MAX_PARAM_VAL_LENGTH] for k, v in params.items()}
    existing = client.get_run(run_id).data.params
    new = [Param(k, v) for k, v in params.items() if k not in existing]
    changed = [RunTag(f"param.{k}", v) for k, v in params.items() if k in existing and existing[k] != v]
    for i in range(0, len(new), MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=new[i : i + MAX_PARAMS_TAGS_PER_BATCH])
    if changed:
        client.log_batch(run_id, tags=changed)


def metric_points(rows: list[dict[str, str]]) -> list[tuple[str, float, int]]:
    """(key, value, step) for every non-empty value of ``metrics.csv`` rows."""
    return [(k, float(v), int(row["step"])) for row in rows for k, v in row.items() if k != "step" and v not in ("", None)]


def log_points(client: Any, run_id: str, points: list[tuple[str, float, int]]) -> None:
    """Log metric points in batches of MLflow's maximum size."""
    from mlflow.entities import Metric
    from mlflow.utils.validation import MAX_METRICS_PER_BATCH

    stamp = int(time.time() * 1000)
    metrics = [Metric(k, v, stamp, s) for k, v, s in points]
    for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])


def missing_points(client: Any, run_id: str, rows: list[dict[str, str]]) -> list[tuple[str, float, int]]:
    """The points of ``rows`` whose (key, step) MLflow does not have."""
    points = metric_points(rows)
    logged = {key: {m.step for m in client.get_metric_history(run_id, key)} for key in {k for k, _, _ in points}}
    return [(k, v, s) for k, v, s in points if s not in logged[k]]


def backfill(run_dir: Path) -> dict[str, Any] | None:
    """Log the ``metrics.csv`` steps the run's MLflow run lacks, and refresh its files and state.

    A run whose tracking never reached MLflow gets its MLflow run created now. Returns None for a run
    with ``run.tracking: false``.
    """
    import yaml

    recipe = run_dir / "recipe.yaml"
    resolved = (yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}) if recipe.is_file() else {}
    run = resolved.get("run", {})
    if run.get("tracking") is False:
        return None
    record = read_record(run_dir)
    target = Target(record["tracking_uri"], record["experiment"], None) if record else target_for(run, run_dir.parent)
    method = json.loads((run_dir / STATE_FILE).read_text(encoding="utf-8")).get("method", "")
    client, run_id = open_run(run_dir, target, tags=run_tags(run_dir, run.get("name", ""), method))
    if record is None:
        log_params(client, run_id, flatten(resolved))
    missing = missing_points(client, run_id, read_metrics(run_dir))
    log_points(client, run_id, missing)
    _log_run_files(client, run_id, run_dir)
    _set_final_status(client, run_id, run_dir)
    return {"run_dir": str(run_dir), "run_id": run_id, "backfilled_points": len(missing)}


def run_tags(run_dir: Path, name: str, method: str) -> dict[str, str]:
    """The tags a new MLflow run starts with (``mlflow.runName`` is what the UI shows)."""
    return {"tunekit.name": name, "tunekit.run_dir": str(run_dir.resolve()), "tunekit.method": method, "mlflow.runName": name}


def sinks_for(resolved: dict[str, Any], run_dir: Path) -> tuple[MlflowSink, ...]:
    """The RunLog sinks for a run: an `MlflowSink`, or none with ``run.tracking: false``."""
    run = resolved.get("run", {})
    if run.get("tracking") is False:
        return ()
    return (MlflowSink(run_dir, target_for(run, run_dir.parent), flatten(resolved), register_to=run.get("register_to")),)


class MlflowSink:
    """Mirrors a run's log into MLflow from a background thread (see the module docstring)."""

    def __init__(self, run_dir: Path, target: Target, params: dict[str, str], *, register_to: str | None) -> None:
        self.run_dir = run_dir
        self.target = target
        self.register_to = register_to
        self.run_id: str | None = None
        self._client: Any = None
        self._params = params
        self._failure: str | None = None
        self._tables: dict[int, list[dict[str, Any]]] = {}  # eval_prompts generations by step
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._warnings: list[str] = []
        self._thread = threading.Thread(target=self._work, name="mlflow-sink", daemon=True)
        self._thread.start()

    def event(self, record: dict[str, Any]) -> None:
        """Queue an event (tags; eval_prompts generations become the checkpoint's table)."""
        self._queue.put(("event", record))

    def metrics(self, row: dict[str, str]) -> None:
        """Queue a metrics row."""
        self._queue.put(("metrics", row))

    def close(self) -> list[str]:
        """Finish logging (backfill, files, status, registration) and return the warnings."""
        self._queue.put(("close", None))
        self._thread.join(_CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            self._warn(f"MLflow logging did not finish in {_CLOSE_TIMEOUT_S:.0f} s; `train runs --backfill` completes it")
        return self._warnings

    def _work(self) -> None:
        self._try("start", self._start)
        while True:
            items = [self._queue.get()]
            while not self._queue.empty():  # drain: one batch for everything queued meanwhile
                items.append(self._queue.get_nowait())
            if self._failure is None:
                self._try("log", functools.partial(self._log, items))
            if items[-1][0] == "close":
                self._try("finish", self._finish)
                return

    def _start(self) -> None:
        params = self._params
        tags = run_tags(self.run_dir, params.get("run.name", ""), params.get("training_config.method", ""))
        self._client, self.run_id = open_run(self.run_dir, self.target, tags=tags)
        log_params(self._client, self.run_id, params)

    def _log(self, items: list[tuple[str, Any]]) -> None:
        from mlflow.entities import RunTag

        rows = [value for kind, value in items if kind == "metrics"]
        tags: dict[str, str] = {}
        for kind, record in items:
            if kind != "event":
                continue
            if record["type"] == "eval_prompts":
                self._tables.setdefault(record["step"], []).append({"step": record["step"], "prompt": record["prompt"], "text": record["message"]})
            else:
                tags[f"tunekit.event.{record['type']}"] = record["message"][:5000]
        log_points(self._client, self.run_id, metric_points(rows))
        if tags:
            self._client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        done = [step for step in self._tables if step != max(self._tables)]  # the latest may still grow
        for step in done:
            self._log_table(step)

    def _log_table(self, step: int) -> None:
        rows = self._tables.pop(step)
        table = {key: [r[key] for r in rows] for key in ("step", "prompt", "text")}
        self._client.log_table(self.run_id, data=table, artifact_file=f"eval_prompts/step-{step:06d}.json")

    def _finish(self) -> None:
        if self._client is None:  # never started: the server was down from the beginning
            self._start()
        for step in list(self._tables):
            self._log_table(step)
        assert self.run_id is not None
        # Every step MLflow lacks, this session's or (resumed) an earlier one's: metrics.csv is the record.
        log_points(self._client, self.run_id, missing_points(self._client, self.run_id, read_metrics(self.run_dir)))
        _log_run_files(self._client, self.run_id, self.run_dir)
        state = _set_final_status(self._client, self.run_id, self.run_dir)
        if self.register_to and state.get("state") == "completed":
            from tunekit_train.registry import register_model

            version = register_model(self._client, self.run_id, Path(state["final"]), self.register_to, run_name=state.get("name"))
            # Written from the worker after training ended: the RunLog no longer writes events.
            append_event(self.run_dir, "registered", f"registered {version['name']} version {version['version']}")

    def _try(self, what: str, call: Callable[[], _T]) -> _T | None:
        for wait in (*RETRIES, None):
            try:
                return call()
            except Exception as exc:
                if wait is None:
                    self._failure = f"{type(exc).__name__}: {exc}"
                    self._warn(
                        f"MLflow logging to {self.target.tracking_uri} failed ({what}: {self._failure}); "
                        "metrics.csv keeps every step: `train runs --backfill` logs them later"
                    )
                    return None
                time.sleep(wait)
        return None

    def _warn(self, message: str) -> None:
        log.warning(message)
        self._warnings.append(message)


def _log_run_files(client: Any, run_id: str, run_dir: Path) -> None:
    for name in (EVENTS_FILE, STATE_FILE, "recipe.yaml"):
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name))
    for split, pack in _packs(run_dir).items():
        for name in ("manifest.json", "stats.json"):
            if (pack / name).is_file():
                client.log_artifact(run_id, str(pack / name), f"data/{split}")


def _packs(run_dir: Path) -> dict[str, Path]:
    """The pack each split trained on: the recipe's pack directory, or the one packed into the run."""
    import yaml

    from tunekit_train.sources import local_path

    recipe = run_dir / "recipe.yaml"
    run = (yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("run", {}) if recipe.is_file() else {}
    packs = {}
    for split, key in (("train", "data_s3_path"), ("validation", "validation_data_s3_path")):
        given = local_path(run[key]) if run.get(key) else None
        cached = sorted((run_dir / "data" / split).glob("**/manifest.json"))
        if given is not None and (given / "manifest.json").is_file():
            packs[split] = given
        elif cached:
            packs[split] = cached[0].parent
    return packs


def _set_final_status(client: Any, run_id: str, run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE_FILE
    state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if state.get("state") in _MLFLOW_STATUS:
        client.set_tag(run_id, "tunekit.state", state["state"])
        client.set_terminated(run_id, status=_MLFLOW_STATUS[state["state"]])
    return state
