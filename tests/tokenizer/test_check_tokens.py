"""`ds check --tokenizer DIR --max-length N` (rule F12): token counts equal what `ds pack` encodes,
records over N are warned about by line, and the option errors are readable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunekit_cli.ds import main
from tunekit_data.convert import read_examples
from tunekit_tokenize import encode_example, load_tokenizer

from .conftest import CHATML_DIR

ROOT = Path(__file__).resolve().parents[2]
SFT = ROOT / "examples" / "data" / "sft.jsonl"
DPO = ROOT / "examples" / "data" / "dpo.jsonl"


def check_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["check", *args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def pack_lengths(path: Path, fmt: str) -> dict[int, list[int]]:
    """Tokens per sequence of every record, by line, as the packer's encoder counts them."""
    bundle = load_tokenizer(CHATML_DIR)
    return {
        source.line: [len(s) for s in encode_example(bundle, example).sequences]
        for source, example in read_examples([str(path)], fmt=fmt)
    }


def test_sft_records_over_max_length_are_warned_by_line(capsys: pytest.CaptureFixture[str]) -> None:
    lengths = pack_lengths(SFT, "converse")
    limit = sorted(n for (n,) in lengths.values())[len(lengths) // 2]  # the median: about half are over
    code, report = check_json(capsys, str(SFT), "--tokenizer", str(CHATML_DIR), "--max-length", str(limit))
    over = {line for line, (n,) in lengths.items() if n > limit}
    assert 0 < len(over) < len(lengths)
    assert code == 0 and report["ok"] is True  # F12 is a warning: the records stay valid
    assert report["valid"] == len(lengths)
    f12 = [e for e in report["errors"] if e["rule"] == "F12"]
    assert {e["line"] for e in f12} == over
    first = min(over)
    assert next(e for e in f12 if e["line"] == first)["message"].startswith(f"record is {lengths[first][0]:,} tokens, over --max-length {limit:,}")
    assert report["tokens"] == {
        "max_length": limit,
        "records": len(lengths),
        "tokens": sum(n for (n,) in lengths.values()),
        "longest": max(n for (n,) in lengths.values()),
        "over_max_length": len(over),
    }


def test_dpo_counts_each_answer_with_its_prompt(capsys: pytest.CaptureFixture[str]) -> None:
    lengths = pack_lengths(DPO, "dpo")
    limit = max(max(pair) for pair in lengths.values()) - 1
    code, report = check_json(capsys, str(DPO), "--tokenizer", str(CHATML_DIR), "--max-length", str(limit))
    assert code == 0
    expected = {(line, name) for line, pair in lengths.items() for name, n in zip(("chosen", "rejected"), pair, strict=True) if n > limit}
    found = {(e["line"], e["message"].split()[2]) for e in report["errors"] if e["rule"] == "F12"}
    assert found == expected and expected
    assert report["tokens"]["tokens"] == sum(sum(pair) for pair in lengths.values())


def test_cpt_text_gets_eos_and_is_counted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = tmp_path / "cpt.jsonl"
    data.write_text("\n".join(json.dumps({"text": "the model answers " * k}) for k in (1, 2, 40)) + "\n", encoding="utf-8")
    lengths = pack_lengths(data, "text")
    code, report = check_json(capsys, str(data), "--format", "cpt", "--tokenizer", str(CHATML_DIR), "--max-length", str(lengths[2][0]))
    assert code == 0
    assert [e["line"] for e in report["errors"] if e["rule"] == "F12"] == [3]
    assert report["tokens"]["longest"] == lengths[3][0]


def test_human_report_shows_token_figures(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", str(SFT), "--tokenizer", str(CHATML_DIR), "--max-length", "32768"])
    out = capsys.readouterr().out
    assert code == 0
    assert "longest" in out and "0 over 32,768 (F12)" in out


def test_max_length_without_tokenizer_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", str(SFT), "--max-length", "100"])
    assert code == 2
    assert "needs --tokenizer DIR" in capsys.readouterr().err


def test_chat_data_with_a_tokenizer_without_template_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bare = tmp_path / "tok"
    bare.mkdir()
    (bare / "tokenizer.json").write_bytes((CHATML_DIR / "tokenizer.json").read_bytes())
    config = json.loads((CHATML_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    code = main(["check", str(SFT), "--tokenizer", str(bare)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "template" in err
