"""`train plan`: the memory plan of a recipe (bytes per device, whether it fits), before any weight loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tunekit_cli.console import out

GpuMemory = Annotated[str | None, typer.Option("--gpu-memory", help="memory per device to fit: 80GB, 80GiB, 24000MB (default: the GPU's; on CPU the available RAM)")]


def plan(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML")],
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override a key: --set training_config.max_length=8192 (repeatable)")] = None,
    device: Annotated[str | None, typer.Option(help="cuda | cpu (default: cuda when available)")] = None,
    gpu_memory: GpuMemory = None,
    nproc: Annotated[int | None, typer.Option("--nproc", min=1, help="processes of the data-parallel job (FSDP shards over them; default 1)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")] = False,
) -> int:
    """Parameters, bytes per device (weights, gradients, optimizer state, activations, loss) and whether the run fits."""
    from tunekit_data.errors import UsageError
    from tunekit_train.plan import parse_size, plan_recipe, remedy
    from tunekit_train.recipe import load_recipe

    if device not in (None, "cuda", "cpu"):
        msg = f"--device: {device!r}; use cuda or cpu"
        raise UsageError(msg)
    loaded = load_recipe(recipe, overrides or [])
    result = plan_recipe(loaded, device=device, budget=parse_size(gpu_memory) if gpu_memory else None, processes=nproc)
    info = result.to_dict()
    info["remedy"] = None if result.fits is not False else remedy(result, loaded.recipe.training_config)
    if json_output:
        print(json.dumps(info))
    else:
        _print(info)
    return 0 if result.fits is not False else 1


def _print(info: dict[str, Any]) -> None:
    def gib(n: int | None) -> str:
        return "-" if n is None else f"{n / 2**30:,.2f} GiB"

    from rich.table import Table

    head = Table(show_header=False, title="train plan")
    head.add_row("parameters", f"{info['params_total']:,} total, {info['params_trainable']:,} trainable")
    head.add_row("device", f"{info['device']}, {info['processes']} process(es), {info['strategy']}, {info['precision']}")
    head.add_row("tokens", f"{info['tokens_per_micro_batch']:,} per micro-batch, {info['tokens_per_step']:,} per optimizer step (at most)")
    head.add_row("steps per epoch", "-" if info["steps_per_epoch"] is None else str(info["steps_per_epoch"]))
    head.add_row("activation checkpointing", "on" if info["activation_checkpointing"] else "off")
    out.print(head)
    terms = Table("term", "bytes per device", title="memory")
    for name, value in info["terms"].items():
        terms.add_row(name.replace("_", " "), gib(value))
    terms.add_row("(activations without checkpointing)", gib(info["activations_without_checkpointing"]))
    terms.add_row("(activations with checkpointing)", gib(info["activations_with_checkpointing"]))
    terms.add_row("[bold]total[/bold]", f"[bold]{gib(info['total'])}[/bold]")
    out.print(terms)
    if info["budget"] is None:
        out.print("no budget known: pass --gpu-memory")
        return
    verdict = "[green]fits[/green]" if info["fits"] else "[red]does not fit[/red]"
    out.print(f"{verdict}: {gib(info['total'])} of {gib(info['usable'])} usable ({info['budget_from']} {gib(info['budget'])})")
    if info["remedy"]:
        out.print(f"biggest term: {info['biggest'].replace('_', ' ')}; set {info['remedy']}")
