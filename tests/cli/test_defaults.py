"""The CLI restates no default or bound: each comes from the library call a command stands for.

An option whose default the library owns is ``None`` in its command ("not given", passed on through
`tunekit_cli.options.given`) and its help states the library's value; an option out of range is
refused by the library's config, with the library's message naming the option.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from pathlib import Path

import pytest

import tunekit_tokenize as tk
from tunekit_cli import check_cmd, convert_cmd, eval_cmd, pack_cmd, serve_cmd, train
from tunekit_cli.ds import main as ds_main
from tunekit_data.check import CheckConfig
from tunekit_data.convert import ConvertOptions
from tunekit_data.errors import UsageError
from tunekit_train.evaluate import evaluate_run
from tunekit_train.generate import GenerationSettings
from tunekit_train.launch import Launch
from tunekit_train.serve.app import ServeOptions, ServeSettings

ROOT = Path(__file__).parents[2]
SFT = str(ROOT / "examples" / "data" / "sft.jsonl")
RECIPE = str(ROOT / "examples" / "recipes" / "sft-lora-tiny.yaml")


def _fields(config: type) -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(config)}


def _parameters(function: Callable[..., object]) -> dict[str, object]:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()}


# (command, the library's defaults, the options whose default the library owns)
OWNED = [
    (pack_cmd.pack, _parameters(tk.pack), ("max_length", "template", "loss_on", "truncation", "seed", "max_invalid_percent", "max_image_pixels")),
    (convert_cmd.convert, _fields(ConvertOptions), ("seed", "profile", "platform", "max_rejects_percent")),
    (check_cmd.check, _fields(CheckConfig), ("fmt", "profile", "platform", "max_invalid_percent")),
    (check_cmd.check, _fields(tk.LengthCheck), ("max_length", "template")),
    (serve_cmd.serve, _fields(ServeOptions), ("host", "port", "engine", "max_batch")),
    (serve_cmd.serve, _fields(ServeSettings), ("max_tokens_limit", "max_body_bytes")),
    (eval_cmd.evaluate, _parameters(evaluate_run), ("max_new_tokens",)),
    (train.run, _fields(Launch), ("node_rank", "master_port")),
    (train.generate, _fields(GenerationSettings), ("max_new_tokens", "temperature", "top_k", "top_p", "seed")),
]  # fmt: skip


def _help(command: Callable[..., object], parameter: str) -> str:
    """The help text of ``parameter`` of the typer command ``command``."""
    annotation = typing.get_type_hints(command, include_extras=True)[parameter]
    return " ".join(annotation.__metadata__[0].help.split())


@pytest.mark.parametrize(("command", "library", "names"), OWNED, ids=lambda x: getattr(x, "__name__", None))
def test_help_states_the_librarys_default_and_the_command_passes_none(
    command: Callable[..., object], library: dict[str, object], names: tuple[str, ...]
) -> None:
    for name in names:
        assert f"default {library[name]})" in _help(command, name), name
        assert inspect.signature(command).parameters[name].default is None, name  # not given: the library decides


def _library_error(make: Callable[[], object]) -> str:
    with pytest.raises(UsageError) as refused:
        make()
    return str(refused.value)


# (entry point, arguments with one option out of range, the library call that refuses it, the option)
BOUNDS = [
    (ds_main, ["check", SFT, "--max-invalid-percent", "150"], lambda: CheckConfig(max_invalid_percent=150).validate(), "--max-invalid-percent"),
    (ds_main, ["check", SFT, "--profile", "nova-huge"], lambda: CheckConfig(profile="nova-huge").validate(), "--profile"),
    (train.main, ["serve", "m", "--max-batch", "0"], lambda: ServeOptions(max_batch=0), "--max-batch"),
    (train.main, ["serve", "m", "--port", "70000"], lambda: ServeOptions(port=70000), "--port"),
    (train.main, ["serve", "m", "--max-tokens-limit", "0"], lambda: ServeSettings(max_tokens_limit=0), "--max-tokens-limit"),
    (train.main, ["serve", "m", "--max-body-bytes", "10"], lambda: ServeSettings(max_body_bytes=10), "--max-body-bytes"),
    (train.main, ["generate", "m", "--prompt", "hi", "--top-p", "2"], lambda: GenerationSettings(top_p=2), "--top-p"),
    (train.main, ["generate", "m", "--prompt", "hi", "--temperature", "-1"], lambda: GenerationSettings(temperature=-1), "--temperature"),
    (train.main, ["eval", "m", "--data", SFT, "--max-new-tokens", "0"], lambda: GenerationSettings(max_new_tokens=0), "--max-new-tokens"),
    (train.main, ["run", RECIPE, "--nproc-per-node", "2", "--master-port", "0"], lambda: Launch(2, master_port=0), "--master-port"),
    (train.main, ["run", RECIPE, "--nproc-per-node", "0"], lambda: Launch(0), "--nproc-per-node"),
]  # fmt: skip


@pytest.mark.parametrize(("main", "argv", "make", "option"), BOUNDS, ids=[f"{b[1][0]} {b[3]}" for b in BOUNDS])
def test_an_option_out_of_range_gets_the_librarys_error(
    capsys: pytest.CaptureFixture[str], main: Callable[[list[str]], int], argv: list[str], make: Callable[[], object], option: str
) -> None:
    expected = _library_error(make)
    assert option in expected
    assert main(argv) == 2
    assert expected in " ".join(capsys.readouterr().err.split())
