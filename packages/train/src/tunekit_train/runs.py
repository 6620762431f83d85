"""``train runs``: the runs of a runs directory with their status, like Bedrock's list of custom-model jobs.

Reads the records ``train status`` reads (`tunekit_train.status.run_status`) and each run's
MLflow record, so it needs no tracking server.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from tunekit_data.errors import InputError
from tunekit_train.logs import STATE_FILE, read_metrics
from tunekit_train.status import run_status
from tunekit_train.tracking import read_record


def list_runs(runs_dir: Path, *, experiment: str | None = None) -> list[dict[str, Any]]:
    """One summary per run directory under ``runs_dir``, newest first; only ``experiment``'s if given.

    Raises:
        InputError: ``runs_dir`` is not a directory.
    """
    if not runs_dir.is_dir():
        msg = f"{runs_dir}: no such runs directory"
        raise InputError(msg)
    runs = []
    for run_dir in sorted(p.parent for p in runs_dir.glob(f"*/{STATE_FILE}")):
        record = read_record(run_dir) or {}
        if experiment is not None and record.get("experiment") != experiment:
            continue
        runs.append(_summary(run_dir, record))
    return sorted(runs, key=lambda r: r["started_at"] or "", reverse=True)


def _summary(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    status = run_status(run_dir)
    losses = [float(r["val_loss"]) for r in read_metrics(run_dir) if r.get("val_loss")]
    return {
        "name": status.get("name"),
        "run_dir": str(run_dir),
        "state": status.get("state"),
        "method": status.get("method"),
        "model": status.get("model"),
        "step": status.get("step"),
        "best_val_loss": min(losses) if losses else None,
        "tokens": status.get("tokens"),
        "started_at": status.get("started_at"),
        "duration_s": _seconds(status.get("started_at"), status.get("updated_at")),
        "experiment": record.get("experiment"),
        "mlflow_run_id": record.get("run_id"),
    }


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
