"""`ds` starts instantly: what each command imports, measured in a fresh interpreter.

The rule these tests hold: a `tunekit_cli/*_cmd.py` module imports only typer and the light parts of
tunekit_data (errors, rules, profiles, the format tables) at its top; pyarrow, numpy, rich's tables,
tokenizers, torch, ray ... are imported inside the function that uses them. Module lists, not
wall-clock times, so that a busy CI machine cannot make them flaky; the one timing test is slow.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SFT = ROOT / "examples" / "data" / "sft.jsonl"
DPO = ROOT / "examples" / "data" / "dpo.jsonl"
CMD_MODULES = sorted(f"tunekit_cli.{p.stem}" for p in (ROOT / "apps/cli/src/tunekit_cli").glob("*_cmd.py"))
# Never needed to parse arguments or print help (~0.05-0.3 s each on a 2-core machine).
HEAVY = (
    "numpy", "pyarrow", "polars", "pandas", "torch", "transformers", "tokenizers", "datasets", "ray",
    "pydantic", "rich", "tunekit_data.check.engine", "tunekit_data.io.reader", "tunekit_data.io.storage",
    "tunekit_data.convert.pipeline", "tunekit_tokenize", "tunekit_train",
)  # fmt: skip
# Never needed by `ds check` or `ds convert`, which do need pyarrow and numpy.
NOT_FOR_DATA = tuple(m for m in HEAVY if m not in {"numpy", "pyarrow", "rich"} and not m.startswith("tunekit_data"))
# Loaded only by the inputs and options that use them (S3 and Parquet: pyarrow.fs, ssl; a process
# pool; numpy masked arrays, which `pa.array(ndarray)` imports; importlib.abc), or by the other verbs
# (the converter's tables and examples): a check of a local JSONL file never needs them (~0.1 s
# together on a 2-core machine, issue 18).
NOT_FOR_LOCAL_JSONL = (
    "pyarrow.fs", "pyarrow.parquet", "ssl", "multiprocessing", "concurrent.futures.process", "numpy.ma",
    "importlib.abc", "tunekit_cli.convert_cmd", "tunekit_cli.pack_cmd", "tunekit_data.convert",
    "tunekit_data.examples",
)  # fmt: skip

PROBE = """
import json, sys
argv, report = json.loads(sys.argv[1]), sys.argv[2]
sys.argv = ["ds", *argv]
from tunekit_cli.ds import cli
try:
    cli()
except SystemExit as exc:
    code = exc.code
with open(report, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    """The packages of ``names`` that ``modules`` holds (a package counts when any submodule loaded)."""
    return sorted({n for n in names for m in modules if m == n or m.startswith(f"{n}.")})


def run_ds(argv: list[str], tmp_path: Path) -> tuple[int, list[str]]:
    """Run the `ds` console script's entry point on ``argv`` in a fresh interpreter: exit code, modules."""
    report = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), str(report)], capture_output=True, check=False, cwd=ROOT)
    assert report.exists(), proc.stderr.decode()
    result = json.loads(report.read_text())
    return result["code"], result["modules"]


@pytest.mark.parametrize("argv", [[], ["--help"], ["check", "--help"], ["convert", "--help"], ["pack", "--help"]])
def test_help_imports_nothing_heavy(argv: list[str], tmp_path: Path) -> None:
    code, modules = run_ds(argv, tmp_path)
    assert code in (0, None, 2)  # no_args_is_help exits 2, as click does
    assert loaded(modules, HEAVY) == []


@pytest.mark.parametrize("module", CMD_MODULES)
def test_command_modules_import_nothing_heavy_at_their_top(module: str) -> None:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    heavy = loaded(json.loads(proc.stdout), HEAVY)
    assert heavy == [], f"{module} imports {heavy} at its top: import them inside the function that uses them"


@pytest.mark.parametrize("argv", [[], ["check"], ["convert"], ["pack"]])
def test_command_annotations_are_objects_not_strings(argv: list[str]) -> None:
    # typer evaluates string annotations (``from __future__ import annotations``) twice per option
    # at every start: ~25 ms of each `ds` command; evaluated once at import they cost ~5.
    from tunekit_cli.ds import make_app

    for info in make_app(argv).registered_commands:
        func = inspect.unwrap(info.callback)
        strings = sorted(name for name, a in func.__annotations__.items() if isinstance(a, str))
        assert strings == [], f"{func.__module__}.{func.__name__}: string annotations {strings}"


def test_help_lists_every_verb_whole_without_importing_any(tmp_path: Path) -> None:
    from tunekit_cli.ds import COMMANDS

    code, modules = run_ds(["--help"], tmp_path)
    assert code == 0
    # convert's and pack's modules load the converter's format tables (~45 ms), check's the S3 client
    assert loaded(modules, (*CMD_MODULES, "tunekit_data.convert", "tunekit_data.io.s3")) == []
    help_text = subprocess.run([sys.executable, "-m", "tunekit_cli.ds", "--help"], capture_output=True, text=True, check=True).stdout
    listed = dict(line.split(maxsplit=1) for line in help_text.split("Commands:")[1].strip().splitlines())
    # each summary whole: click cuts one too long for the terminal's 80 columns with "..."
    assert listed == {name: summary for name, (_, summary) in COMMANDS.items()}


def test_a_verb_reached_through_the_listing_runs_as_itself(capsys: pytest.CaptureFixture[str]) -> None:
    from tunekit_cli.ds import main

    # `--` first: the app of every verb is built, and its stand-in for check hands the arguments on
    assert main(["--", "check", "--json", str(SFT)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["records"], report["valid"]) == (180, 180)
    assert main(["--", "check", "--format", "nope", str(SFT)]) == 2


def test_check_json_loads_the_validator_but_no_printing_or_tokenizer(tmp_path: Path) -> None:
    code, modules = run_ds(["check", "--json", str(SFT)], tmp_path)
    assert code == 0
    assert loaded(modules, ("pyarrow", "tunekit_data.check.engine")) == ["pyarrow", "tunekit_data.check.engine"]
    assert loaded(modules, (*NOT_FOR_DATA, "rich")) == []


def test_check_human_output_loads_rich_tables_not_typers_help(tmp_path: Path) -> None:
    code, modules = run_ds(["check", str(SFT)], tmp_path)
    assert code == 0
    assert "rich.table" in modules
    assert loaded(modules, (*NOT_FOR_DATA, "typer.rich_utils", "markdown_it")) == []


@pytest.mark.parametrize("argv", [["check", str(SFT)], ["check", "--json", str(SFT)], ["check", "--json", str(DPO)]])
def test_check_of_a_local_jsonl_file_loads_no_s3_parquet_or_process_pool(argv: list[str], tmp_path: Path) -> None:
    code, modules = run_ds(argv, tmp_path)
    assert code == 0
    assert loaded(modules, NOT_FOR_LOCAL_JSONL) == []


def test_convert_json_loads_no_tokenizer(tmp_path: Path) -> None:
    code, modules = run_ds(["convert", str(SFT), "--to", "chat", "-o", str(tmp_path / "out.jsonl"), "--json"], tmp_path)
    assert code == 0 and (tmp_path / "out.jsonl").exists()
    assert loaded(modules, (*NOT_FOR_DATA, "rich")) == []


@pytest.mark.slow
def test_help_starts_in_well_under_half_a_second() -> None:
    # Loose on purpose (measured 0.15 s on a loaded 2-core machine, 0.50 s before issue 18).
    ds = Path(sys.executable).with_name("ds")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as installed: with .pyc
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([str(ds), "--help"], check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    assert sorted(times)[2] < 0.5, times
