"""What a run writes as it goes: ``state.json``, ``events.jsonl``, ``metrics.csv``, TensorBoard, progress.

- ``state.json``: the run's state (running / completed / failed / stopped), step, last metrics; replaced
  atomically on every change, so ``train status`` never reads half a file.
- ``events.jsonl``: one JSON object per event (created, started, resumed, warning, validation,
  checkpoint, eval_prompts, early_stopping, completed, stopped, failed), like Databricks' ``get_events``.
- ``metrics.csv``: Bedrock-style step-wise metrics (step, train loss, validation loss, lr, tokens/s ...),
  then the method's own columns (DPO: rewards/chosen ... logps/rejected, and their ``val_`` versions).
- ``tb/``: TensorBoard scalars (and eval-prompt generations as text) when the recipe asks for it.

Sinks (``tunekit_train.tracking``'s MLflow mirror) receive every event and metrics row as it is written;
the files stay the record, so a sink that fails loses nothing.

On resume, rows and TensorBoard points after the checkpoint's step are dropped: they came from the part
of the interrupted run that is being redone.
"""

from __future__ import annotations

import csv
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tunekit_data.io import publish_file

METRIC_COLUMNS = ("step", "epoch", "train_loss", "val_loss", "lr", "tokens_per_s", "tokens", "grad_norm", "elapsed_s")
STATE_FILE = "state.json"
EVENTS_FILE = "events.jsonl"
METRICS_FILE = "metrics.csv"


class Sink(Protocol):
    """Something that receives a copy of what a run logs (called from the training thread: must not block)."""

    def event(self, record: dict[str, Any]) -> None:
        """An event, as appended to ``events.jsonl``."""

    def metrics(self, row: dict[str, str]) -> None:
        """A metrics row, formatted as written to ``metrics.csv``."""

    def close(self) -> list[str]:
        """The run's log is closing; returns warnings to record as events."""
        ...


def now() -> str:
    """Current UTC time in ISO 8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, value: Any) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    with publish_file(path) as f:
        f.write(json.dumps(value, indent=2).encode("utf-8"))


def append_event(run_dir: Path, kind: str, message: str, *, step: int | None = None, **data: Any) -> dict[str, Any]:
    """Append an event to a run's ``events.jsonl`` and return the record written.

    Also for commands that run after training, like ``train eval``.
    """
    record = {"time": now(), "type": kind, "step": step, "message": message, **data}
    with (run_dir / EVENTS_FILE).open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    return record


class RunLog:
    """The log files of one run directory (and the console progress bar)."""

    def __init__(
        self,
        run_dir: Path,
        *,
        tensorboard: bool,
        tb_name: str,
        show_progress: bool,
        total_steps: int,
        resume_step: int = 0,
        extra_columns: tuple[str, ...] = (),
        sinks: tuple[Sink, ...] = (),
    ) -> None:
        self.run_dir = run_dir
        self._sinks = sinks
        self.started = time.monotonic()
        self.state: dict[str, Any] = {}
        self._metrics_path = run_dir / METRICS_FILE
        self._columns = METRIC_COLUMNS + extra_columns
        _truncate_metrics(self._metrics_path, resume_step, self._columns)
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / "tb" / tb_name), purge_step=resume_step + 1 if resume_step else None)
        self._progress = None
        if show_progress:
            self._progress = Progress(
                TextColumn("[bold]train[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[speed]} tok/s"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self._task = self._progress.add_task("train", total=total_steps, completed=resume_step, loss="-", speed="-")
            self._progress.start()

    def event(self, kind: str, message: str, *, step: int | None = None, **data: Any) -> None:
        """Append an event to ``events.jsonl``."""
        record = append_event(self.run_dir, kind, message, step=step, **data)
        for sink in self._sinks:
            sink.event(record)

    def update_state(self, **fields: Any) -> None:
        """Merge ``fields`` into ``state.json``."""
        self.state.update(fields, updated_at=now())
        write_json_atomic(self.run_dir / STATE_FILE, self.state)

    def metrics(self, row: dict[str, Any]) -> None:
        """Append a row to ``metrics.csv`` and the non-empty values to TensorBoard."""
        new = not self._metrics_path.is_file()
        written = {k: _fmt(row.get(k)) for k in self._columns}
        with self._metrics_path.open("a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns)
            if new:
                writer.writeheader()
            writer.writerow(written)
        for sink in self._sinks:
            sink.metrics(written)
        if self._writer is not None:
            for key, value in row.items():
                if key != "step" and value is not None:
                    self._writer.add_scalar(key, value, row["step"])
            self._writer.flush()

    def text(self, tag: str, text: str, step: int) -> None:
        """Log text (eval-prompt generations) to TensorBoard."""
        if self._writer is not None:
            self._writer.add_text(tag, text, step)
            self._writer.flush()

    def progress(self, step: int, loss: float | None, tokens_per_s: float | None) -> None:
        """Move the progress bar to ``step``."""
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=step,
                loss="-" if loss is None else f"{loss:.4f}",
                speed="-" if tokens_per_s is None else f"{tokens_per_s:,.0f}",
            )

    def close(self) -> None:
        """Stop the progress bar, close TensorBoard and the sinks (recording their warnings)."""
        if self._progress is not None:
            self._progress.stop()
        if self._writer is not None:
            self._writer.close()
        sinks, self._sinks = self._sinks, ()  # the sinks' own warnings are not sent back to them
        for sink in sinks:
            for warning in sink.close():
                self.event("warning", warning)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def _truncate_metrics(path: Path, resume_step: int, columns: tuple[str, ...]) -> None:
    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """Rows of a run's ``metrics.csv`` (empty when there is none yet)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """Events of a run's ``events.jsonl``, oldest first."""
    path = run_dir / EVENTS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
