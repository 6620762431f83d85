"""`ds`: check, convert and pack fine-tuning datasets.

Each verb lives in its own module (`check_cmd.py`, `convert_cmd.py`, `pack_cmd.py`) and is registered
here, in ``COMMANDS``. `ds` starts instantly: `ds VERB ...` imports and builds VERB alone; a command
module imports only typer and the light parts of tunekit_data (errors, rules, profiles, the format
tables) at its top, and whatever loads pyarrow, numpy, rich's tables or a tokenizer inside the
function that uses it (tests/cli/test_startup.py holds this).
`ds --help` lists the verbs by their one-line summaries in ``COMMANDS`` and imports none of them.
The command modules (and this one) do without ``from __future__ import annotations``: typer reads
every option's annotation at each start, twice (``inspect.signature(eval_str=True)``,
``get_type_hints``), and a string annotation is compiled and evaluated each time: ~25 ms of every
`ds` command (measured).
"""

import functools
import sys
from collections.abc import Callable
from importlib import import_module
from typing import Any

import typer

from tunekit_cli.runner import new_app, run_app

# Each verb, the function that runs it and the summary `ds --help` lists it with. The function is
# imported only when the app is built with it: typer reads every option of every command it builds
# (~10 ms for convert's and pack's), and their modules load the converter's format tables (~45 ms),
# which neither `ds check` nor `ds --help` needs.
COMMANDS = {
    "check": ("tunekit_cli.check_cmd:check", "Check datasets against the Nova rules, S3 media included."),
    "convert": ("tunekit_cli.convert_cmd:convert", "Convert datasets between Converse, DPO, chat and text formats."),
    "pack": ("tunekit_cli.pack_cmd:pack", "Tokenize with exact loss masks and pack by best-fit decreasing."),
}
# Set by `cli`: process-wide settings (worker_init) are for `ds`'s own process, never a caller's.
_own_process = False


def _command(func: Callable[..., int]) -> Callable[..., int]:
    """``func`` as a command that, in `ds`'s own process, runs `worker_init` once its arguments parsed.

    Here, not in `cli`: worker_init loads pyarrow, which `ds --help` and `ds check --help` never need.
    """

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> int:
        if _own_process:
            from tunekit_data.check import worker_init

            worker_init()  # `ds` never needs pandas; see worker_init
        return func(*args, **kwargs)

    return run


def _group() -> None:
    """Check, convert and pack fine-tuning datasets."""


def make_app(argv: list[str]) -> typer.Typer:
    """The `ds` app for ``argv``.

    Its verb alone when ``argv`` starts with one (what that verb's usage, help and errors show is the
    same), else every verb (`ds --help`, a mistyped verb).
    """
    app = new_app(
        "ds",
        "Check, convert and pack fine-tuning datasets (Converse SFT, Nova DPO, chat, preference, text).",
        # Plain help, as click formats it: typer's rich help panels import rich.markdown and
        # markdown_it (~0.2 s measured), which would double `ds --help`'s start-up.
        rich_markup_mode=None,
    )
    app.callback()(_group)
    if argv and argv[0] in COMMANDS:
        target, summary = COMMANDS[argv[0]]
        module, func = target.split(":")
        app.command(argv[0], short_help=summary)(_command(getattr(import_module(module), func)))
        return app
    for name, (_, summary) in COMMANDS.items():
        app.command(name, help=summary, add_help_option=False, context_settings=_PASS_THROUGH)(_listed(name))
    return app


# A listed verb takes every argument as is and hands it to the verb itself (see ``_listed``).
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _listed(name: str) -> Callable[[typer.Context], int]:
    """The stand-in for verb ``name`` in the app of every verb.

    It is listed by `ds --help` and suggested for a mistyped verb, and run only when an argv reaches it
    that ``make_app`` did not read as that verb's (``ds -- check FILE``): it runs the verb on its
    arguments.
    """

    def run(ctx: typer.Context) -> int:
        return main([name, *ctx.args])

    return run


def main(argv: list[str] | None = None) -> int:
    """Run `ds` on ``argv`` (default: the command line) and return the exit code.

    This is what tests and other programs call.
    """
    args = sys.argv[1:] if argv is None else argv
    return run_app(make_app(args), args, "ds")


def cli() -> None:
    """The `ds` console script: a process of its own, so it can skip pyarrow's pandas probe."""
    global _own_process  # one switch, set once at the console script's start
    _own_process = True
    raise SystemExit(main())


if __name__ == "__main__":
    cli()
