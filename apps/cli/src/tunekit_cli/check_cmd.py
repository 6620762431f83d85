"""`ds check`: validate datasets; print a summary table (or one JSON object with --json)."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tunekit_cli.console import out
from tunekit_cli.options import given
from tunekit_cli.progress import byte_progress
from tunekit_data.check import PLATFORMS, PROFILES, RULES
from tunekit_data.distributed import use_ray
from tunekit_data.errors import UsageError
from tunekit_data.formats import CHECK_SUITES
from tunekit_data.io import set_endpoint

if TYPE_CHECKING:
    from tunekit_data.check import CheckSummary

SHOWN = 20


def check(
    paths: Annotated[list[str], typer.Argument(help="JSONL files (.jsonl, .jsonl.gz, .jsonl.zst), directories of them, s3://bucket/key objects or s3://bucket/prefix/ prefixes, or - for stdin.")],
    fmt: Annotated[str | None, typer.Option("--format", help=f"{' | '.join(['auto', *CHECK_SUITES])} (default auto)")] = None,
    profile: Annotated[str | None, typer.Option(help=f"{' | '.join(PROFILES)} (default nova-lite-1)")] = None,
    platform: Annotated[str | None, typer.Option(help=f"{' | '.join(PLATFORMS)} (bedrock enforces record-count bounds; default sagemaker)")] = None,
    dataset_uri: Annotated[str | None, typer.Option(help="s3://bucket/prefix the dataset will live at (media must share its bucket; default: the bucket of s3:// inputs)")] = None,
    max_invalid_percent: Annotated[float | None, typer.Option(help="pass when at most this percent of records is invalid (recipes' allow_percentage_invalid_samples; default 0.0)")] = None,
    valid_out: Annotated[str | None, typer.Option(help="write the valid lines here, unchanged (a path or s3://bucket/key)")] = None,
    rejects_out: Annotated[str | None, typer.Option(help="write the invalid lines here, unchanged (a path or s3://bucket/key)")] = None,
    errors_out: Annotated[str | None, typer.Option(help="stream every problem here as JSONL (a path or s3://bucket/key)")] = None,
    check_media: Annotated[bool, typer.Option("--check-media", help="HEAD every referenced S3 image, video and document: missing objects and size limits (M12)")] = False,
    endpoint_url: Annotated[str | None, typer.Option(help="S3-compatible endpoint for s3:// inputs, outputs and media (default: $AWS_ENDPOINT_URL, else AWS)")] = None,
    tokenizer: Annotated[str | None, typer.Option(help="count every record's tokens with this local tokenizer directory, as ds pack would (F12)")] = None,
    max_length: Annotated[int | None, typer.Option(help="with --tokenizer: warn about records longer than this many tokens (default 32768)")] = None,
    template: Annotated[str | None, typer.Option(help="with --tokenizer: auto (the tokenizer's) | chatml | llama3 | PATH.jinja (default auto)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")] = False,
    workers: Annotated[int | None, typer.Option(help="processes to use (default: all cores)")] = None,
    engine: Annotated[str, typer.Option(help="local | ray (byte ranges checked by tasks of a Ray cluster; outputs become folders of parts)")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="with --engine ray: auto | ray://HOST:PORT | HOST:PORT (default: $RAY_ADDRESS, else a local Ray)")] = None,
) -> int:
    """Validate Converse SFT, Nova DPO, CPT and Databricks datasets, including S3 media references."""
    # The validator (pyarrow, numpy) is imported here, not at the top: `ds --help` never loads it.
    from tunekit_data.check import CheckConfig, report_json, run_check
    from tunekit_data.io import expand_paths

    set_endpoint(endpoint_url)
    lengths = _length_check(tokenizer, max_length, template)
    # Only the options given: `CheckConfig` owns every default (tunekit_cli.options).
    config = CheckConfig(**given(
        fmt=fmt, profile=profile, platform=platform, dataset_uri=dataset_uri, max_invalid_percent=max_invalid_percent,
        workers=workers, check_media=check_media, record_check=lengths,
    ))  # type: ignore[arg-type]  # fmt: skip
    total = sum(s.size() or 0 for s in expand_paths(paths))
    with byte_progress("checking", total, enabled=not json_output) as advance:
        check = _ray_check(ray_address) if use_ray(engine, ray_address) else run_check
        summary = check(paths, config, valid_out=valid_out, rejects_out=rejects_out, errors_out=errors_out, on_progress=advance)
    summary.tokens = lengths.to_dict() if lengths else None
    try:
        if json_output:
            report_json(summary, sys.stdout.buffer)
        else:
            print_human(summary)
    finally:
        summary.close()
    return 0 if summary.ok else 1


def _ray_check(address: str | None):
    """``run_check`` on Ray; imported here so that ``ds`` never loads ray unless asked to."""
    from functools import partial

    from tunekit_data.distributed import run_check_ray

    return partial(run_check_ray, address=address)


def _length_check(tokenizer: str | None, max_length: int | None, template: str | None):
    """The F12 token counter for ``--tokenizer``, or None; imported here so plain checks stay light."""
    if tokenizer is None:
        if max_length is not None or template is not None:
            msg = "--max-length and --template count tokens, which needs --tokenizer DIR"
            raise UsageError(msg)
        return None
    from tunekit_tokenize import LengthCheck

    return LengthCheck.load(tokenizer, **given(max_length=max_length, template=template))  # type: ignore[arg-type]


def print_human(summary: "CheckSummary") -> None:
    """Summary table, per-rule counts and the first problems."""
    from rich.markup import escape
    from rich.table import Table

    fmt = f"{summary.format} (detected)" if summary.detected else summary.format
    table = Table(title=escape(f"ds check: {', '.join(Path(f).name for f in summary.files)}"), show_header=False)
    table.add_row("format", fmt)
    table.add_row("profile", f"{summary.profile} / {summary.platform}")
    table.add_row("records", f"{summary.records:,}")
    table.add_row("valid", f"[green]{summary.valid:,}[/green]")
    table.add_row("invalid", f"[red]{summary.invalid:,}[/red] ({summary.invalid_percent:.2f}%, allowed {summary.max_invalid_percent:g}%)")
    table.add_row("warnings", f"{summary.warnings:,}")
    if summary.tokens is not None:
        t = summary.tokens
        table.add_row("tokens", f"{t['tokens']:,} in {t['records']:,} records, longest {t['longest']:,}; {t['over_max_length']:,} over {t['max_length']:,} (F12)")
    if summary.blank:
        table.add_row("blank lines", f"{summary.blank:,} (F7: skipped, not records)")
    out.print(table)
    if summary.by_rule:
        rules = Table("rule", "count", "what it checks", title="problems by rule")
        for rule, n in sorted(summary.by_rule.items(), key=lambda kv: -kv[1]):
            rules.add_row(rule, f"{n:,}", escape(RULES[rule].summary))
        out.print(rules)
    # File names, field paths and messages quote the data: escaped, so that `[/x]` in a record is
    # printed rather than read as rich markup; one line each (soft wrap), so that grep finds them.
    for p in summary.dataset_errors:
        where = f"{escape(p.file)}: " if p.file else ""
        color = "red" if p.severity == "error" else "yellow"
        out.print(f"[{color}]{where}\\[{p.rule}] {escape(p.message)}[/{color}]", soft_wrap=True)
    shown = 0
    for problem in summary.sample[:SHOWN]:
        color = "red" if problem["severity"] == "error" else "yellow"
        field = f" {escape(problem['field'])}:" if problem["field"] else ""
        where = escape(f"{problem['file']}:{'row ' if problem.get('unit') == 'row' else ''}{problem['line']}:")
        out.print(f"{where}{field} [{color}]\\[{problem['rule']}][/{color}] {escape(problem['message'])}", soft_wrap=True)
        shown += 1
    remaining = summary.errors + summary.warnings - shown
    if remaining > 0:
        out.print(f"... and {remaining:,} more (use --errors-out FILE or --json for all)")
    verdict = "[green]OK[/green]" if summary.ok else "[red]FAILED[/red]"
    out.print(f"{verdict}: {summary.valid:,} of {summary.records:,} records valid")
