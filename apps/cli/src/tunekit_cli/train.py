"""`train`: fine-tune open models from Nova-style recipes (SFT, DPO, LoRA, CPT).

torch and tunekit_train are imported inside the commands, so `train --help` starts instantly.
Exit codes: 0 done, 1 invalid recipe or data, 2 usage or I/O error, 130 stopped with Ctrl-C.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunekit_cli import eval_cmd, plan_cmd, runs_cmd, serve_cmd
from tunekit_cli.options import given
from tunekit_cli.runner import new_app, run_app
from tunekit_cli.torch_env import before_torch
from tunekit_data.errors import UsageError
from tunekit_data.video_sampling import MAX_FPS, MAX_SAMPLED_FRAMES, VideoSampling

if TYPE_CHECKING:
    from tunekit_train.launch import Launch

app = new_app("train", "Fine-tune open models from Nova-style recipes: run, plan, status, generate, export.")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

JsonFlag = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")]
app.command("runs")(runs_cmd.runs)


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML (Nova HyperPod keys, Databricks keys)")],
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override a key: --set training_config.max_length=1024 (repeatable)")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="run directory (default: exp_dir, run.output_s3_path if local, runs/<name>); an s3:// output_s3_path also gets the run uploaded")] = None,
    resume: Annotated[str | None, typer.Option(help="'auto' (continue the run in the output directory) or a run/checkpoint directory")] = None,
    json_output: JsonFlag = False,
    nproc_per_node: Annotated[int | None, typer.Option("--nproc-per-node", help="processes on this node: relaunch through torchrun (DDP)")] = None,
    nnodes: Annotated[int | None, typer.Option(help="nodes in the job (default: run.replicas with --master-addr, else 1)")] = None,
    node_rank: Annotated[int | None, typer.Option(help="this node's rank in a multi-node job (default 0)")] = None,
    master_addr: Annotated[str | None, typer.Option(help="address of the node with rank 0 (multi-node jobs)")] = None,
    master_port: Annotated[int | None, typer.Option(help="port of the rendezvous on the rank-0 node (default 29500)")] = None,
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint for s3:// data and output paths (default: $AWS_ENDPOINT_URL, else AWS)")] = None,
    gpu_memory: plan_cmd.GpuMemory = None,
) -> int:
    """Train a model as RECIPE says; Ctrl-C stops after the current step with a checkpoint.

    With --nproc-per-node, the same command runs on that many processes through torchrun (data-parallel);
    under an external torchrun or SLURM launch (RANK / WORLD_SIZE set) it joins that job.
    """
    before_torch()
    from tunekit_data.io import set_endpoint
    from tunekit_train.launch import Launch, under_launcher
    from tunekit_train.plan import parse_size
    from tunekit_train.recipe import load_recipe
    from tunekit_train.run import run_training

    set_endpoint(endpoint_url)  # an environment variable: torchrun's processes inherit it

    loaded = load_recipe(recipe, overrides or [])
    rank = int(os.environ.get("RANK", "0"))
    if nproc_per_node is not None and not under_launcher():
        args = [str(recipe), *(f"--set={o}" for o in overrides or [])]
        args += [f"--output-dir={output_dir}"] if output_dir is not None else []
        args += [f"--resume={resume}"] if resume is not None else []
        args += ["--json"] if json_output else []
        args += [f"--gpu-memory={gpu_memory}"] if gpu_memory is not None else []
        # Only the options given: `Launch` owns every default (tunekit_cli.options).
        launch = Launch(nproc_per_node, **given(nnodes=nnodes, node_rank=node_rank, master_addr=master_addr, master_port=master_port))  # type: ignore[arg-type]
        return _launch(launch, loaded.recipe.run.replicas, args)
    if rank == 0:
        for warning in loaded.warnings:
            err.print(f"[yellow]warning:[/yellow] {warning}")
    try:
        budget = parse_size(gpu_memory) if gpu_memory is not None else None
        state = run_training(loaded, output_dir=output_dir, resume=resume, show_progress=not json_output, memory_budget=budget)
    except Exception as exc:
        if not under_launcher():
            raise
        return _rank_failed(rank, exc)
    if rank != 0:  # rank 0 reports for the job
        return 130 if state.get("state") == "stopped" else 0
    if json_output:
        print(json.dumps(state))
    else:
        _print_state(state)
    return 130 if state["state"] == "stopped" else 0


@app.command()
def status(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    events: Annotated[int, typer.Option(help="events to show (all with --json)")] = 10,
    json_output: JsonFlag = False,
) -> int:
    """State (running / completed / failed / stopped), step, metrics, checkpoints and events of a run."""
    from tunekit_train.status import run_status

    info = run_status(run_dir)
    if json_output:
        print(json.dumps(info))
        return 0
    _print_state(info)
    if info["checkpoints"]:
        names = ", ".join(c["name"] for c in info["checkpoints"])
        out.print(f"checkpoints: {names} (last: {info['last_checkpoint']})")
    shown = info["events"][-events:] if events else []
    if shown:
        table = Table("time", "step", "event", "message", title=f"last {len(shown)} of {len(info['events'])} events")
        for e in shown:
            table.add_row(e["time"], "" if e["step"] is None else str(e["step"]), e["type"], e["message"].splitlines()[0][:100])
        out.print(table)
    return 0


@app.command()
def generate(
    model_dir: Annotated[Path, typer.Argument(help="a run directory (its final/ model), checkpoint, model or adapter directory")],
    prompts: Annotated[list[str], typer.Option("--prompt", help="prompt text (repeatable)")],
    tokenizer: Annotated[Path | None, typer.Option(help="tokenizer directory (default: the one saved with the model)")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="tokens generated per prompt (default 100)")] = None,
    temperature: Annotated[float | None, typer.Option(help="sampling temperature (default 1.0)")] = None,
    top_k: Annotated[int | None, typer.Option(help="sample from the K most likely tokens; 0: all (default 50)")] = None,
    top_p: Annotated[float | None, typer.Option(help="sample from the smallest set of tokens this likely together (default 0.95)")] = None,
    greedy: Annotated[bool, typer.Option(help="pick the most likely token instead of sampling")] = False,
    raw: Annotated[bool, typer.Option(help="feed the prompt as is, without the chat template")] = False,
    system: Annotated[str | None, typer.Option(help="system turn before each prompt (the one the model was trained with)")] = None,
    seed: Annotated[int | None, typer.Option(help="sampling seed (default 0)")] = None,
    image: Annotated[list[str] | None, typer.Option("--image", help="image (local path or s3:// URI) put before each prompt; repeatable; vision-language models")] = None,
    video: Annotated[list[str] | None, typer.Option("--video", help="video (local path or s3:// URI), sampled as ds pack samples it, put after the images; repeatable")] = None,
    video_fps: Annotated[float, typer.Option(help=f"with --video: frames sampled per second of video, in (0, {MAX_FPS:g}] (the ds pack value the model trained with)")] = VideoSampling.fps,
    video_max_frames: Annotated[int, typer.Option(help=f"with --video: at most this many frames of a video, in [2, {MAX_SAMPLED_FRAMES}]")] = VideoSampling.max_frames,
    json_output: JsonFlag = False,
) -> int:
    """Generate from a trained model (sampling defaults are Databricks' eval_prompts settings)."""
    before_torch()
    from tunekit_train.generate import GenerationSettings, load_trained, tokenizer_for
    from tunekit_train.generate import generate as complete
    from tunekit_train.generate import model_dir as find_model
    from tunekit_train.vision import load_image_processor, load_images, load_videos

    # Only the options given: `GenerationSettings` owns every default (tunekit_cli.options).
    sampled = given(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    settings = GenerationSettings(**sampled, do_sample=not greedy, raw=raw, system=system)  # type: ignore[arg-type]
    images = load_images(image or [])
    processor = load_image_processor(tokenizer or find_model(model_dir)) if images or video else None
    if (images or video) and processor is None:
        msg = f"{model_dir}: --image/--video need a vision-language model (no preprocessor_config.json with its tokenizer)"
        raise UsageError(msg)
    sampling = VideoSampling(video_fps, video_max_frames)
    if problems := sampling.problems("--video-fps", "--video-max-frames"):
        raise UsageError("; ".join(problems))
    videos = load_videos(video or [], processor, sampling)
    texts = complete(load_trained(model_dir), tokenizer_for(model_dir, tokenizer), prompts, settings, images=images, image_processor=processor, videos=videos)
    if json_output:
        print(json.dumps({"model": str(model_dir), "completions": [{"prompt": p, "text": t} for p, t in zip(prompts, texts, strict=True)]}))
    else:
        for prompt, text in zip(prompts, texts, strict=True):
            out.print(f"[bold]>>> {prompt}[/bold]")
            out.print(text, markup=False)
    return 0


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a run directory (its final/ model), checkpoint, model or adapter directory")],
    output: Annotated[Path, typer.Option("--output", "-o", help="new directory for the exported model")],
    merge: Annotated[bool, typer.Option(help="fold LoRA adapters into the base weights")] = False,
    tokenizer: Annotated[Path | None, typer.Option(help="tokenizer directory to include (default: the one saved with the model)")] = None,
    register: Annotated[str | None, typer.Option(help="also register the exported model in the run's MLflow registry under NAME (<catalog>.<schema>[.<name>] accepted)")] = None,
    json_output: JsonFlag = False,
) -> int:
    """Write a Hugging Face model directory (safetensors); --merge folds LoRA into the base weights."""
    before_torch()
    from tunekit_train.export import export_model

    result = export_model(run_dir, output, merge=merge, tokenizer=tokenizer)
    if register is not None:
        from tunekit_train.registry import register_run

        result["registered"] = register_run(run_dir, output, register)
    if json_output:
        print(json.dumps(result))
    else:
        out.print(f"exported {result['kind']} from {result['source']} to {result['output']}: {', '.join(result['files'])}")
        if register is not None:
            out.print(f"registered {result['registered']['name']} version {result['registered']['version']}")
    return 0


app.command("plan")(plan_cmd.plan)
app.command("serve")(serve_cmd.serve)
app.command("eval")(eval_cmd.evaluate)


WORKER = ["-m", "tunekit_cli.train", "run"]
"""What torchrun starts on each process for ``train run --nproc-per-node``: this command, as a worker."""


def torchrun_command(launch: Launch, replicas: int, train_args: list[str]) -> list[str]:
    """The torchrun command line that runs ``train run TRAIN_ARGS`` on every process of this node."""
    from tunekit_train.launch import torchrun_command as command

    return command(launch, replicas, [*WORKER, *train_args])


def _launch(launch: Launch, replicas: int, train_args: list[str]) -> int:
    """Run ``train run TRAIN_ARGS`` under torchrun; a failure or stop is one line on stderr."""
    from tunekit_train.launch import launch as run_job

    end = run_job(launch, replicas, [*WORKER, *train_args])
    if end.failure is not None:
        print(f"error: train run failed: {end.failure}", file=sys.stderr)
    elif end.stopped_by is not None:
        print(f"train run: stopped by {end.stopped_by}", file=sys.stderr)
    return end.exit_code


def _rank_failed(rank: int, exc: Exception) -> int:
    """A worker of a multi-process job failed: one line on stderr instead of a traceback per rank."""
    from tunekit_train.launch import rank_failed

    failure = rank_failed(rank, exc)
    if failure.caused_by_another:
        err.print(f"rank {rank}: {failure.message}", soft_wrap=True)
    else:
        err.print(f"[red]error:[/red] rank {rank}: {escape(failure.message)}", soft_wrap=True)
    return failure.exit_code


def _print_state(state: dict[str, Any]) -> None:
    colors = {"completed": "green", "running": "cyan", "stopped": "yellow", "failed": "red"}
    table = Table(show_header=False, title=f"train run: {state.get('name', '')}")
    table.add_row("state", f"[{colors.get(state['state'], 'white')}]{state['state']}[/]")
    table.add_row("step", f"{state.get('step', 0)} of {state.get('total_steps', '?')}")
    for key in ("method", "epoch", "tokens", "train_loss", "val_loss", "checkpoint", "final", "error", "run_dir"):
        if state.get(key) is not None:
            value = state[key]
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    out.print(table)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `train` console script; returns the exit code."""
    return run_app(app, argv, "train")


if __name__ == "__main__":
    raise SystemExit(main())
