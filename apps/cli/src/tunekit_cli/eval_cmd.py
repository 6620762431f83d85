"""`train eval`: loss, perplexity, token accuracy, exact match and ROUGE-L of a run on a held-out chat file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tunekit_cli.console import out
from tunekit_cli.options import given
from tunekit_cli.torch_env import before_torch

_METRICS = ("loss", "perplexity", "token_accuracy", "exact_match", "rouge_l")


def evaluate(
    run_dir: Annotated[
        Path,
        typer.Argument(help="a run directory (its final/ model), checkpoint, model or adapter directory"),
    ],
    data: Annotated[
        Path,
        typer.Option(
            help="held-out examples: Converse, chat or prompt/response JSONL (any format ds convert reads)"
        ),
    ],
    max_samples: Annotated[
        int | None, typer.Option(help="evaluate only the first N usable examples (default: all)")
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="tokens generated per answer (greedy; default 64)")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")] = False,
) -> int:
    """Evaluate RUN_DIR on --data; the result goes to RUN_DIR/eval.json and an `eval` event."""
    before_torch()
    from tunekit_train.evaluate import evaluate_run

    # Only the options given: `evaluate_run` owns every default (tunekit_cli.options).
    options = given(max_samples=max_samples, max_new_tokens=max_new_tokens)
    if json_output:
        result = evaluate_run(run_dir, data, **options)  # type: ignore[arg-type]
        print(json.dumps(result))
        return 0
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table

    with Progress(
        TextColumn("[bold]eval[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("eval", total=None)
        result = evaluate_run(run_dir, data, **options,  # type: ignore[arg-type]
                              progress=lambda done, total: bar.update(task, completed=done, total=total))  # fmt: skip
    table = Table(
        show_header=False,
        title=f"train eval: {result['examples']} examples, {result['tokens']} trained tokens",
    )
    for key in _METRICS:
        table.add_row(key, f"{result[key]:.4f}")
    out.print(table)
    out.print(f"written to {result['written']}")
    return 0
