"""Parquet, Hugging Face (save_to_disk and hub cache) and Delta inputs read the records a JSONL file
of them holds: `ds check` reports the same problems by row, `ds convert` and `ds pack` read the same
records."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunekit_cli.ds import main
from tunekit_data.convert import read_examples

SV = "bedrock-conversation-2024"


def _records() -> list[dict]:
    out = []
    for i in range(40):
        role = "User" if i % 9 == 4 else "user"  # a bad role (S3) every few records
        out.append({"schemaVersion": SV, "messages": [{"role": role, "content": [{"text": f"question {i}"}]}, {"role": "assistant", "content": [{"text": f"answer {i}"}]}]})
    return out


def _inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    records = _records()
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    table = pa.Table.from_pylist(records)
    pq.write_table(table, tmp_path / "train.parquet", row_group_size=7)
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "hf"))
    deltalake = pytest.importorskip("deltalake")
    deltalake.write_deltalake(str(tmp_path / "delta"), table)
    # A hub-cache snapshot, laid out as huggingface_hub leaves it.
    repo = tmp_path / "hub" / "datasets--acme--chats"
    snapshot = repo / "snapshots" / "abc123" / "data"
    snapshot.mkdir(parents=True)
    pq.write_table(table, snapshot / "train-00000-of-00001.parquet")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return {"jsonl": str(jsonl), "parquet": str(tmp_path / "train.parquet"), "hf": str(tmp_path / "hf"), "delta": str(tmp_path / "delta"), "hub": "hf://datasets/acme/chats"}


def _check(capsys, path: str, *more: str) -> tuple[int, dict]:
    code = main(["check", path, "--json", *more])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("kind", ["parquet", "hf", "delta", "hub"])
def test_check_reports_the_jsonl_problems_by_row(tmp_path, monkeypatch, capsys, kind):
    inputs = _inputs(tmp_path, monkeypatch)
    code, expected = _check(capsys, inputs["jsonl"])
    got_code, got = _check(capsys, inputs[kind])
    assert (got_code, code) == (1, 1)
    for key in ("format", "records", "valid", "invalid", "blank", "warnings", "by_rule", "ok"):
        assert got[key] == expected[key], key
    assert expected["invalid"] == 4 and got["dataset_errors"] == []  # no F1: not a JSONL file name
    assert [(e["line"], e["rule"], e["field"]) for e in got["errors"]] == [(e["line"], e["rule"], e["field"]) for e in expected["errors"]]
    assert {e["unit"] for e in got["errors"]} == {"row"}


@pytest.mark.parametrize("kind", ["parquet", "hf", "delta", "hub"])
def test_convert_and_pack_read_the_same_records(tmp_path, monkeypatch, kind):
    inputs = _inputs(tmp_path, monkeypatch)
    def records(path: str) -> list[tuple[int, object]]:
        # A rejection names its file; everything else must be equal.
        return [(src.line, getattr(ex, "reason", ex)) for src, ex in read_examples([path])]

    expected = records(inputs["jsonl"])
    assert sum(isinstance(ex, str) for _, ex in expected) == 4
    assert records(inputs[kind]) == expected


def test_human_output_says_row(tmp_path, monkeypatch, capsys):
    inputs = _inputs(tmp_path, monkeypatch)
    assert main(["check", inputs["parquet"]]) == 1
    assert f"{inputs['parquet']}:row 5: messages[0].role:" in capsys.readouterr().out


def test_missing_hub_dataset_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert main(["check", "hf://datasets/acme/absent"]) == 2
    assert "not in the local Hugging Face hub cache" in capsys.readouterr().err
