"""``train status``: a run's state, progress, latest metrics, checkpoints and events.

Databricks' ``get_events`` and Bedrock's job status, for a local run directory.

A run whose ``state.json`` says ``running`` but whose process is gone (killed, machine rebooted) is
reported as ``failed`` with the reason, since it will never update its state itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tunekit_data.errors import InputError
from tunekit_train.checkpoint import STATE_FILE as STATE_FILE_CKPT
from tunekit_train.checkpoint import read_state
from tunekit_train.logs import STATE_FILE, read_events, read_metrics


def run_status(run_dir: Path) -> dict[str, Any]:
    """Everything ``train status`` shows about ``run_dir``.

    Raises:
        InputError: ``run_dir`` is not a run directory.
    """
    path = run_dir / STATE_FILE
    if not path.is_file():
        msg = f"{run_dir}: not a run directory (no {STATE_FILE})"
        raise InputError(msg)
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("state") == "running" and not _alive(state.get("pid")):
        state["state"] = "failed"
        state["error"] = f"process {state.get('pid')} ended without recording a final state"
    metrics = read_metrics(run_dir)
    checkpoints = [
        {"name": p.name, **{k: saved[k] for k in ("step", "train_loss", "val_loss")}}
        for p in sorted((run_dir / "checkpoints").glob("step-*"))
        if (p / STATE_FILE_CKPT).is_file() and (saved := read_state(p))
    ]
    last = run_dir / "checkpoints" / "last"
    return {
        **state,
        "latest_metrics": metrics[-1] if metrics else None,
        "checkpoints": checkpoints,
        "last_checkpoint": last.resolve().name if last.exists() else None,
        "events": read_events(run_dir),
    }


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
