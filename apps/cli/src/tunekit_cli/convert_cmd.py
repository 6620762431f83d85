"""`ds convert`: convert datasets between formats; print a summary (or one JSON object with --json)."""

import sys
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from tunekit_cli.console import out
from tunekit_cli.options import given
from tunekit_cli.progress import byte_progress
from tunekit_data.check import PROFILES
from tunekit_data.convert import DEFAULT_SHARD_SIZE
from tunekit_data.distributed import use_ray
from tunekit_data.formats import FORMATS, OUTPUT_NAMES
from tunekit_data.io import set_endpoint

if TYPE_CHECKING:
    from tunekit_data.convert import ConvertSummary


def convert(
    paths: Annotated[list[str], typer.Argument(help="JSONL (.gz/.zst), Parquet, Hugging Face save_to_disk folders, folders of .txt documents, s3://bucket/key objects or s3://bucket/prefix/ prefixes, or - for stdin.")],
    to: Annotated[str, typer.Option(help=" | ".join(OUTPUT_NAMES))],
    output: Annotated[str, typer.Option("-o", "--output", help="out.jsonl, out.parquet, or a folder for JSONL shards (paths or s3:// URIs)")],
    fmt: Annotated[str, typer.Option("--from", help=f"auto | {' | '.join(FORMATS)}")] = "auto",
    system: Annotated[str | None, typer.Option(help="system prompt for records that have none")] = None,
    template: Annotated[str | None, typer.Option(help="JumpStart template.json (default: one beside the inputs)")] = None,
    bucket_owner: Annotated[str | None, typer.Option(help="12-digit account id set as bucketOwner on media references")] = None,
    media_prefix: Annotated[str | None, typer.Option(help="s3://bucket/prefix that local media paths are rewritten under")] = None,
    split: Annotated[str | None, typer.Option(help="hold out a share, e.g. validation=0.1 (JumpStart validation_split_ratio)")] = None,
    seed: Annotated[int | None, typer.Option(help="split seed (JumpStart train_data_split_seed; default 0)")] = None,
    max_samples: Annotated[int | None, typer.Option(help="stop after this many training records (max_train_samples; -1 = all)")] = None,
    rejects_out: Annotated[str | None, typer.Option(help="write each rejected record here as JSONL with its line and reason (a path or s3://bucket/key)")] = None,
    profile: Annotated[str | None, typer.Option(help=f"model whose rules the output must pass: {' | '.join(PROFILES)} (default nova-lite-1)")] = None,
    platform: Annotated[str | None, typer.Option(help="bedrock | sagemaker (default sagemaker)")] = None,
    shard_size: Annotated[int, typer.Option(help="records per shard when -o is a folder")] = DEFAULT_SHARD_SIZE,
    max_rejects_percent: Annotated[float | None, typer.Option(help="exit 0 when at most this percent of records is rejected (default 0.0)")] = None,
    workers: Annotated[int | None, typer.Option(help="processes to use (default: all cores)")] = None,
    resolve_images: Annotated[bool, typer.Option(help="fetch and decode every image (once per machine: media cache); reject records whose image fails")] = False,
    media_cache: Annotated[str | None, typer.Option(help="with --resolve-images: cache directory (default: $TUNEKIT_CACHE/media, else ~/.cache/tunekit/media)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")] = False,
    engine: Annotated[str, typer.Option(help="local | ray (converted by tasks of a Ray cluster; -o is a folder of parts)")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="with --engine ray: auto | ray://HOST:PORT | HOST:PORT (default: $RAY_ADDRESS, else a local Ray)")] = None,
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint for s3:// inputs and outputs (default: $AWS_ENDPOINT_URL, else AWS)")] = None,
) -> int:
    """Convert datasets to Converse, Nova DPO, chat, prompt-response, preference or text.

    Every record is written or rejected with its line and reason. Exit 1 when more than --max-rejects-percent is rejected.
    """
    # The converter (pyarrow) is imported here, not at the top: `ds --help` never loads it.
    from tunekit_data.convert import ConvertOptions, convert_dataset, discover, input_size

    set_endpoint(endpoint_url)
    # Only the options given: `ConvertOptions` owns every default (tunekit_cli.options).
    options = ConvertOptions(**given(
        to=to, out=output, fmt=fmt, template=template, system=system, media_prefix=media_prefix,
        bucket_owner=bucket_owner, split=split, seed=seed, max_samples=max_samples, rejects_out=rejects_out,
        profile=profile, platform=platform, workers=workers, shard_size=shard_size,
        max_rejects_percent=max_rejects_percent, resolve_images=resolve_images, media_cache=media_cache,
    ))  # type: ignore[arg-type]  # fmt: skip
    total = input_size(discover(paths)) or 0  # 0: unknown (stdin, compressed), no bar
    with byte_progress("converting", total, enabled=not json_output) as advance:
        run = _ray_convert(ray_address) if use_ray(engine, ray_address) else convert_dataset
        summary = run(paths, options, on_progress=advance)
    if json_output:
        sys.stdout.buffer.write(orjson.dumps(summary.to_dict()) + b"\n")
        sys.stdout.buffer.flush()
    else:
        print_human(summary)
    return 0 if summary.ok else 1


def _ray_convert(address: str | None):
    """``convert_dataset`` on Ray; imported here so that ``ds`` never loads ray unless asked to."""
    from functools import partial

    from tunekit_data.distributed import convert_dataset_ray

    return partial(convert_dataset_ray, address=address)


def print_human(summary: "ConvertSummary") -> None:
    """Summary table, where records went, and the first rejections."""
    from rich.table import Table

    table = Table(title=f"ds convert -> {summary.to}", show_header=False)
    fmt = summary.detection.fmt
    table.add_row("input format", f"{summary.detection.describe()}\n[dim]{FORMATS[fmt].summary}[/dim]")
    table.add_row("records", f"{summary.records:,}")
    for name, n in summary.written.items():
        table.add_row(f"written ({name})", f"[green]{n:,}[/green]")
    table.add_row("rejected", f"[red]{summary.rejected:,}[/red]" if summary.rejected else "0")
    if summary.blank:
        table.add_row("blank lines", f"{summary.blank:,} (not records)")
    if summary.warnings:
        table.add_row("warnings", ", ".join(f"{rule} x{n:,}" for rule, n in summary.warnings.most_common()))
    for o in summary.outputs:
        table.add_row(f"output ({o['split']})", f"{o['path']} ({o['records']:,})")
    if summary.rejects_out:
        table.add_row("rejects", summary.rejects_out)
    if summary.stopped_at:
        table.add_row("stopped", f"--max-samples reached at {summary.stopped_at[0]}:{summary.stopped_at[1]}")
    for note in summary.notes:
        table.add_row("note", note)
    out.print(table)
    for r in summary.first_rejects:
        out.print(f"[red]rejected[/red] {r}", markup=True, soft_wrap=True)
    if summary.rejected > len(summary.first_rejects):
        more = summary.rejected - len(summary.first_rejects)
        hint = "" if summary.rejects_out else " (use --rejects-out FILE for all)"
        out.print(f"... and {more:,} more rejected{hint}")
