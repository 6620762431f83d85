"""`train runs`: the runs of a runs directory, one line each.

Each with state, method, base model, best val loss, tokens and duration (and its MLflow run);
``--backfill`` first logs to MLflow whatever a failed connection missed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tunekit_cli.console import out


def runs(
    experiment: Annotated[str | None, typer.Option(help="only the runs tracked in this MLflow experiment (run.experiment_path)")] = None,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="directory holding the run directories")] = Path("runs"),
    backfill: Annotated[bool, typer.Option(help="log the metrics.csv steps and files each tracked run's MLflow run lacks (creating it if tracking never reached MLflow)")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")] = False,
) -> int:
    """List the runs (newest first), like Bedrock's custom-model jobs or an MLflow experiment's runs."""
    from tunekit_train.runs import list_runs

    listed = list_runs(runs_dir, experiment=experiment)
    backfilled = []
    if backfill:
        from tunekit_train.tracking import backfill as backfill_run

        backfilled = [b for r in listed if (b := backfill_run(Path(r["run_dir"]))) is not None]
    if json_output:
        print(json.dumps({"runs_dir": str(runs_dir), "runs": listed, "backfilled": backfilled}))
        return 0
    from rich.table import Table

    table = Table("name", "state", "method", "model", "step", "best val loss", "tokens", "duration", "mlflow run", title=f"runs in {runs_dir}")
    for r in listed:
        loss = "" if r["best_val_loss"] is None else f"{r['best_val_loss']:.4f}"
        duration = "" if r["duration_s"] is None else f"{r['duration_s']:.0f} s"
        table.add_row(r["name"], r["state"], r["method"], Path(r["model"] or "").name, str(r["step"]), loss, str(r["tokens"] or ""), duration, r["mlflow_run_id"] or "")
    out.print(table)
    for b in backfilled:
        out.print(f"backfilled {b['backfilled_points']} metric points into MLflow run {b['run_id']} ({b['run_dir']})")
    return 0
