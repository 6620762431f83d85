"""`ds pack`: tokenize with the model's chat template and pack into fixed-length rows for training."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from tunekit_cli.console import out
from tunekit_cli.options import given
from tunekit_data.distributed import use_ray
from tunekit_data.errors import UsageError
from tunekit_data.formats import FORMAT_ALIASES, FORMATS
from tunekit_data.io import set_endpoint
from tunekit_data.video_sampling import MAX_FPS, MAX_SAMPLED_FRAMES, VideoSampling

if TYPE_CHECKING:
    from rich.progress import TaskID
    from rich.text import Text

    import tunekit_tokenize as tk

_FORMATS = " | ".join(["auto", *FORMAT_ALIASES, *FORMATS])
_STAGES = {"hash": "hashing inputs", "tokenize": "tokenizing records", "pack": "packing", "write": "writing rows"}


def pack(
    paths: Annotated[list[str], typer.Argument(help="Inputs in any format `ds convert` reads (JSONL, Parquet, HF datasets, .txt folders, s3:// objects and prefixes), or - for stdin.")],
    tokenizer: Annotated[str | None, typer.Option(help="local Hugging Face model or tokenizer directory (tokenizer.json, tokenizer_config.json); default: --processor's")] = None,
    output: Annotated[str | None, typer.Option("-o", "--output", help="output directory (Parquet shards, manifest.json, stats.json), or an empty s3://bucket/prefix/")] = None,
    max_length: Annotated[int | None, typer.Option(help="tokens per packed row (default 32768)")] = None,
    fmt: Annotated[str, typer.Option("--format", help=_FORMATS)] = "auto",
    template: Annotated[str | None, typer.Option(help="auto (the tokenizer's) | chatml | llama3 | PATH.jinja (default auto)")] = None,
    loss_on: Annotated[str | None, typer.Option(help="assistant | last-turn | all (chat data; default assistant)")] = None,
    truncation: Annotated[str | None, typer.Option(help="drop | right (keep the start) | left (keep the end) for examples over --max-length (default drop)")] = None,
    window: Annotated[int | None, typer.Option(help="pack groups of N sequences separately (bounded memory; default: all at once)")] = None,
    seed: Annotated[int | None, typer.Option(help="orders equal-length sequences and shuffles rows (default 0)")] = None,
    workers: Annotated[int | None, typer.Option(help="tokenizing processes (default: all cores)")] = None,
    max_invalid_percent: Annotated[float | None, typer.Option(help="pass when at most this percent of records is rejected (default 0.0)")] = None,
    explain: Annotated[int | None, typer.Option(help="show record N's tokens (0-based), trained ones highlighted, and write nothing")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")] = False,
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint for s3:// inputs and outputs (default: $AWS_ENDPOINT_URL, else AWS)")] = None,
    engine: Annotated[str, typer.Option(help="local | ray (tokenized and written by tasks of a Ray cluster, packed here)")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="with --engine ray: auto | ray://HOST:PORT | HOST:PORT (default: $RAY_ADDRESS, else a local Ray)")] = None,
    processor: Annotated[str | None, typer.Option(help="vision-language model directory (preprocessor_config.json + tokenizer): images and videos are fetched, decoded and expanded into their tokens, rows carry the image bytes and sampled video frames")] = None,
    media_cache: Annotated[str | None, typer.Option(help="media cache directory (default: $TUNEKIT_CACHE/media, else ~/.cache/tunekit/media)")] = None,
    max_image_pixels: Annotated[int | None, typer.Option(help="with --processor: reject images (video frames) with more pixels (before decoding; default 50000000)")] = None,
    video_fps: Annotated[float, typer.Option(help=f"with --processor: video frames sampled per second of video, in (0, {MAX_FPS:g}]")] = VideoSampling.fps,
    video_max_frames: Annotated[int, typer.Option(help=f"with --processor: at most this many frames of a video, in [2, {MAX_SAMPLED_FRAMES}]")] = VideoSampling.max_frames,
    rejects_out: Annotated[str | None, typer.Option(help="write every rejected record here (JSONL: file, line, field, reason, rule, record)")] = None,
) -> int:
    """Tokenize with the chat template (exact loss masks) and pack with global best-fit decreasing."""
    set_endpoint(endpoint_url)
    tokenizer = tokenizer or processor
    if tokenizer is None:
        msg = "--tokenizer DIR is required (or --processor DIR for a vision-language model)"
        raise UsageError(msg)
    if explain is not None:
        return _explain(paths, tokenizer, explain, json_output=json_output, **given(fmt=fmt, template=template, loss_on=loss_on))
    if output is None:
        msg = "-o/--output is required (or use --explain N to inspect one record)"
        raise UsageError(msg)
    # Only the options given: `pack` owns every default (tunekit_cli.options).
    options = given(
        fmt=fmt, tokenizer=tokenizer, max_length=max_length, out_dir=output, template=template, loss_on=loss_on,
        truncation=truncation, window=window, seed=seed, workers=workers, max_invalid_percent=max_invalid_percent,
        processor=processor, media_cache=media_cache, max_image_pixels=max_image_pixels,
        video=VideoSampling(video_fps, video_max_frames), rejects_out=rejects_out,
    )  # fmt: skip
    with _progress(enabled=not json_output) as on_progress:
        result = _pack_files(engine, ray_address)(paths, progress=on_progress, **options)
    if json_output:
        _write_json(result.to_json())
    else:
        _print_summary(result)
    return 0


def _pack_files(engine: str, address: str | None):
    """``pack_files`` of the engine asked for; Ray is imported only when it is."""
    if not use_ray(engine, address):
        import tunekit_tokenize as tk

        return tk.pack_files
    from functools import partial

    from tunekit_tokenize.ray_pack import pack_files_ray

    return partial(pack_files_ray, address=address)


@contextmanager
def _progress(*, enabled: bool) -> "Iterator[tk.Progress]":
    """A `tunekit_tokenize.Progress` callback drawing one bar per stage on stderr."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bars:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(_STAGES.get(stage, stage), total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield update


def _print_summary(result: "tk.PackResult") -> None:
    from rich.table import Table

    stats, manifest = result.stats, result.manifest
    title = f"ds pack -> {result.out_dir}" + (" (reused: inputs and options unchanged)" if result.cached else "")
    table = Table(title=title, show_header=False)
    table.add_row("kind", f"{manifest['kind']} (loss on {manifest['loss_on']})")
    if manifest["template"]:
        template = manifest["template"]
        table.add_row("template", f"{template['name']} (masks from {template['masks']})")
    table.add_row("records", f"{stats['records']:,}")
    table.add_row("packed examples", f"[green]{stats['examples']:,}[/green]")
    if stats["rejected"]:
        reasons = ", ".join(f"{code} {n:,}" for code, n in stats["rejected_by_reason"].items())
        table.add_row("rejected", f"[red]{stats['rejected']:,}[/red] ({reasons})")
    table.add_row("tokens", f"{stats['tokens']:,} ({stats['trained_tokens']:,} trained)")
    if "images" in stats:
        table.add_row("images", f"{stats['images']:,} (bytes carried in the rows)")
    if stats.get("videos"):
        table.add_row("videos", f"{stats['videos']:,} (sampled frames carried in the rows)")
    table.add_row("rows", f"{stats['bins']:,} of {manifest['max_length']:,} tokens (lower bound {stats['lower_bound_bins']:,})")
    table.add_row("packing efficiency", f"{stats['packing_efficiency']:.5f} (best possible {stats['efficiency_upper_bound']:.5f})")
    if stats["truncated"] or stats["dropped"] or stats["split_documents"]:
        table.add_row(
            "over max length",
            f"truncated {stats['truncated']:,} ({stats['truncated_tokens']:,} tokens cut), "
            f"dropped {stats['dropped']:,}, split documents {stats['split_documents']:,}",
        )
    table.add_row("shards", f"{len(manifest['shards'])} Parquet file(s)")
    if result.seconds:
        table.add_row("time", ", ".join(f"{stage} {s:.1f}s" for stage, s in result.seconds.items()))
    out.print(table)
    for sample in stats["reject_samples"]:
        out.print(f"{sample['file']}:{sample['line']}: [red]\\[{sample['reason']}][/red] {sample['message']}")


def _explain(paths: list[str], tokenizer: str, record: int, *, json_output: bool, **options: object) -> int:
    from tunekit_tokenize.explain import explain_record

    explained = explain_record(paths, tokenizer, record, **options)  # type: ignore[arg-type]
    if json_output:
        _write_json(explained.to_json())
        return 0
    where = f"{explained.file}:{explained.line}"
    for name, tokens in explained.sequences:
        trained = sum(t.trained for t in tokens)
        out.print(f"[bold]record {record}[/bold] ({where}) {name}: {len(tokens):,} tokens, [green]{trained:,} trained[/green]")
        out.print(_highlight(tokens))
    out.print("[dim]legend:[/dim] [black on green] trained [/black on green] [white on grey30] not trained [/white on grey30]; shades alternate per token")
    return 0


def _highlight(tokens: "list[tk.ExplainedToken]") -> "Text":
    """Tokens on coloured backgrounds: green when trained, grey when not, two shades to show boundaries."""
    from rich.text import Text

    text = Text()
    for i, token in enumerate(tokens):
        shade = ("black on green", "black on dark_sea_green") if token.trained else ("white on grey30", "white on grey23")
        text.append(token.text.replace("\n", "↵\n"), style=shade[i % 2])
    return text


def _write_json(payload: dict[str, object]) -> None:
    sys.stdout.buffer.write(orjson.dumps(payload) + b"\n")
    sys.stdout.buffer.flush()
