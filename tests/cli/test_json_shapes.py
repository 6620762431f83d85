"""`ds check`, `ds convert` and `ds pack` print the library's own `--json` objects, byte for byte.

The shapes belong to the library (`report_json`, `ConvertSummary.to_dict`, `PackResult.to_json`):
each test runs a command on the examples and the library call it stands for, and compares the bytes.
(tests/cli/test_defaults.py holds the CLI's defaults and bounds to the library's.)
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import orjson
import pytest

import tunekit_tokenize as tk
from tunekit_cli.ds import main
from tunekit_data.check import CheckConfig, CheckSummary, report_json, run_check
from tunekit_data.convert import ConvertOptions, convert_dataset

ROOT = Path(__file__).parents[2]
SFT = str(ROOT / "examples" / "data" / "sft.jsonl")
DPO = str(ROOT / "examples" / "data" / "dpo.jsonl")
TOKENIZER = str(ROOT / "examples" / "tiny" / "tokenizer")


def ds(capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> bytes:
    main(list(args))
    return capsysbinary.readouterr().out


def _report_bytes(summary: CheckSummary) -> bytes:
    """``report_json``'s bytes for ``summary``, which is closed after."""
    expected = io.BytesIO()
    try:
        report_json(summary, expected)
    finally:
        summary.close()
    return expected.getvalue()


@pytest.mark.parametrize("path", [SFT, DPO])
def test_check_json_is_the_reports(capsysbinary: pytest.CaptureFixture[bytes], path: str) -> None:
    printed = ds(capsysbinary, "check", path, "--json")
    summary = run_check([path], CheckConfig())
    assert printed == _report_bytes(summary)


def test_check_json_with_token_counts_is_the_reports(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    printed = ds(capsysbinary, "check", SFT, "--tokenizer", TOKENIZER, "--max-length", "32", "--json")
    lengths = tk.LengthCheck.load(TOKENIZER, 32)
    summary = run_check([SFT], CheckConfig(record_check=lengths))
    summary.tokens = lengths.to_dict()
    assert printed == _report_bytes(summary)
    assert json.loads(printed)["tokens"]["over_max_length"] > 0  # the counter ran: some records exceed 32


def test_convert_json_is_the_summarys(capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path) -> None:
    printed = ds(capsysbinary, "convert", SFT, "--to", "chat", "-o", str(tmp_path / "cli.jsonl"), "--json")
    summary = convert_dataset([SFT], ConvertOptions(to="chat", out=str(tmp_path / "lib.jsonl")))
    expected = orjson.dumps(summary.to_dict()).replace(b"lib.jsonl", b"cli.jsonl") + b"\n"
    assert printed == expected


def test_pack_json_is_the_results(capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path) -> None:
    printed = json.loads(ds(capsysbinary, "pack", DPO, "--tokenizer", TOKENIZER, "-o", str(tmp_path / "cli"), "--workers", "1", "--json"))
    result = tk.pack_files([DPO], tokenizer=TOKENIZER, out_dir=tmp_path / "lib", workers=1).to_json()
    for payload in (printed, result):
        del payload["seconds"], payload["out_dir"]  # timings, and the two runs' own directories
    assert printed == result
    assert result["stats"]["max_length"] == tk.DEFAULT_MAX_LENGTH


def test_pack_explain_json_is_the_records(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    printed = ds(capsysbinary, "pack", SFT, "--tokenizer", TOKENIZER, "--explain", "1", "--json")
    assert printed == orjson.dumps(tk.explain_record([SFT], TOKENIZER, 1).to_json()) + b"\n"


def test_check_and_pack_share_the_max_length_bound(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    too_short = str(tk.MIN_MAX_LENGTH - 1)
    errors = []
    for args in (["check", SFT, "--tokenizer", TOKENIZER], ["pack", SFT, "--tokenizer", TOKENIZER, "-o", str(tmp_path / "o")]):
        assert main([*args, "--max-length", too_short]) == 2
        errors.append(capsys.readouterr().err.strip())  # pack opens its progress bar first
    assert errors[0] == errors[1]
    assert f"--max-length must be at least {tk.MIN_MAX_LENGTH}, got {too_short}" in errors[0]
