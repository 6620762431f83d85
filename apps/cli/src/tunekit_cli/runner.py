"""Run a typer app as a function returning an exit code, with tunekit errors printed, not raised.

Exit codes: 0 success, 1 the data or config is invalid, 2 usage or I/O error. Tests call
``main(argv)`` directly; the console scripts call it and exit with its return value.
"""

from __future__ import annotations

import sys

import typer

from tunekit_cli.console import stderr
from tunekit_data.errors import ConfigError, DataError, TunekitError


def new_app(name: str, help_text: str, **settings: object) -> typer.Typer:
    """A typer app as `ds` and `train` build theirs; ``settings`` go on to `typer.Typer`.

    It shows help when run bare, offers no shell completion, and prints no pretty tracebacks:
    `run_app` prints tunekit's errors itself.
    """
    return typer.Typer(
        name=name,
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        **settings,  # type: ignore[arg-type]
    )


def run_app(app: typer.Typer, argv: list[str] | None, prog_name: str) -> int:
    """Run ``app`` on ``argv`` and return its exit code; never lets a user error escape as a traceback."""
    try:
        result = app(args=argv, prog_name=prog_name, standalone_mode=False)
    # typer >= 0.26 vendors click: its usage errors derive from typer.TyperException.
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        stderr.print("[red]aborted[/red]")
        return 130
    except typer.TyperException as exc:
        exc.show(file=sys.stderr)
        return 2
    # Messages quote paths and values: escaped (not rich markup), and not wrapped at the terminal width.
    except (DataError, ConfigError) as exc:
        stderr.print(f"[red]error:[/red] {_escape(str(exc))}", soft_wrap=True)
        return 1
    except TunekitError as exc:
        stderr.print(f"[red]error:[/red] {_escape(str(exc))}", soft_wrap=True)
        return 2
    return int(result or 0)


def _escape(text: str) -> str:
    from rich.markup import escape  # rich loads when there is something to print

    return escape(text)
