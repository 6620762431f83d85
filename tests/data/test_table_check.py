"""`ds check` reads a table input's columns directly (``blockcheck.check_table``), not JSON lines
made from its rows: every report must still be the one the same records give as JSON lines
(``tables.json_lines``, what a JSONL file of the table holds), bad records of every kind included."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunekit_data.check import CheckConfig, check_block, check_table, get_profile, iter_problems, run_check
from tunekit_data.formats import Options
from tunekit_data.io import json_lines, reader

SV = "bedrock-conversation-2024"
IMAGE = {"format": "png", "source": {"s3Location": {"uri": "s3://bucket/a.png"}}}


def _turns(user: list, assistant: list | None = None) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant or [{"text": "fine"}]}]


SFT = [
    {"schemaVersion": SV, "messages": _turns([{"text": "a good one"}])},
    {"schemaVersion": SV, "messages": [*_turns([{"text": "bad role"}]), {"role": "User", "content": [{"text": "x"}]}]},
    {"schemaVersion": SV, "messages": _turns([{"text": ""}])},  # blank text
    {"schemaVersion": SV, "messages": _turns([{"text": "hi"}])[:1]},  # last turn is the user's
    {"schemaVersion": SV, "messages": None},  # null: absent
    {"schemaVersion": "v0", "messages": _turns([{"text": "hi"}]), "extra": 1, "another": "z"},  # unknown keys, in order
    {"schemaVersion": SV, "messages": _turns([{"text": "hi", "colour": "red"}])},  # a nested unknown key
    {"schemaVersion": SV, "messages": _turns([{"document": {"format": "pdf", "name": "d", "source": {"s3Location": {"uri": "s3://bucket/d.pdf"}}}}])},
    {"schemaVersion": SV, "messages": _turns([{"text": "hi"}], [{"reasoningContent": {"reasoningText": {"text": "r"}}}, {"text": "x"}])},
    {"schemaVersion": SV, "toolConfig": {"tools": [{"name": "t"}]}, "messages": _turns([{"text": "tools"}])},
    {"schemaVersion": SV, "messages": _turns([{"text": "look"}, {"image": {**IMAGE, "format": "tiff"}}])},  # bad image format
    {"schemaVersion": SV, "messages": _turns([{"text": "look"}, {"image": {"format": "png", "source": {"s3Location": {"uri": "http://x/a.png", "bucketOwner": "12"}}}}])},
    {"schemaVersion": SV, "messages": _turns([{"text": "look"}, {"image": {**IMAGE, "source": {"s3Location": {"uri": "s3://other/b.png"}}}}])},
    {"schemaVersion": SV, "messages": [None, {"role": "assistant", "content": [None, {"text": "x"}]}]},  # null items
    {"schemaVersion": SV, "messages": _turns([{"image": IMAGE}])},
    {"score": 1.5},  # a number in an unknown column, no messages
    {"score": math.nan, "schemaVersion": SV, "messages": []},  # NaN: null in its JSON line
    {},
]
DPO = [
    {"schemaVersion": SV, "messages": [{"role": "user", "content": [{"text": "q"}]}, {"role": "assistant", "candidates": [{"content": [{"text": "a"}], "preferenceLabel": "preferred"}, {"content": [{"text": "b"}], "preferenceLabel": "non-preferred"}]}]},
    {"schemaVersion": SV, "messages": [{"role": "user", "content": [{"text": "q"}]}, {"role": "assistant", "candidates": [{"content": [{"text": "a"}], "preferenceLabel": "best"}]}]},
    {"schemaVersion": SV, "messages": [{"role": "user", "content": [{"text": "q"}]}, {"role": "assistant", "content": [{"text": "c"}], "candidates": [{"content": [], "preferenceLabel": "preferred"}]}]},
    {"schemaVersion": SV, "messages": [{"role": "user", "content": [{"text": "q"}]}]},
]
CPT = [{"text": "a document"}, {"text": ""}, {"text": None}, {"text": "x", "title": "unknown"}, {"title": "only"}]
CHAT = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": ""}]},
    {"messages": [{"role": "user", "content": "hi", "name": "n"}], "id": 3},
    {"messages": []},
]
PROMPT_RESPONSE = [{"prompt": "p", "response": "r"}, {"prompt": "", "completion": "c"}, {"prompt": "p"}, {"prompt": "p", "response": "r", "id": 1}]


def _table(records: list[dict]) -> pa.Table:
    """The records as one table, its columns the keys of every record (not the first one's only)."""
    return pa.Table.from_struct_array(pa.array(records))


def _report(paths: list[str], fmt: str) -> dict:
    """Everything a check reports, with each file named by its stem (``x.parquet`` / ``x.jsonl``)."""
    summary = run_check(paths, CheckConfig(fmt=fmt))
    stem = {p: Path(p).stem for p in paths}
    try:
        return {
            "counts": (summary.format, summary.records, summary.valid, summary.invalid, summary.blank, summary.warnings, summary.errors),
            "by_rule": dict(summary.by_rule),
            "problems": [
                (stem[p["file"]], p["line"], p["rule"], p["severity"], p.get("field"), p["message"]) for p in iter_problems(summary)
            ],
            "dataset": [(d.rule, d.severity, d.message, d.file and stem[d.file]) for d in summary.dataset_errors if d.rule != "F1"],
        }
    finally:
        summary.close()


def _same_as_jsonl(tmp_path: Path, tables: list[pa.Table], fmt: str) -> dict:
    """The reports of ``tables`` as Parquet files and as the JSONL files of their rows; they must be equal."""
    parquet, jsonl = [], []
    for i, table in enumerate(tables):
        pq.write_table(table, tmp_path / f"part{i}.parquet", row_group_size=3)
        (tmp_path / f"part{i}.jsonl").write_bytes(json_lines(table))
        parquet.append(str(tmp_path / f"part{i}.parquet"))
        jsonl.append(str(tmp_path / f"part{i}.jsonl"))
    expected = _report(jsonl, fmt)
    assert _report(parquet, fmt) == expected
    return expected


@pytest.fixture(autouse=True)
def _small_blocks(monkeypatch):
    monkeypatch.setattr(reader, "TABLE_ROWS", 4)  # several blocks per table, rows split across them


@pytest.mark.parametrize(("fmt", "records"), [("sft", SFT), ("dpo", DPO), ("cpt", CPT), ("chat", CHAT), ("prompt-response", PROMPT_RESPONSE)])
def test_every_kind_of_bad_record_gets_the_jsonl_report(tmp_path, fmt, records):
    report = _same_as_jsonl(tmp_path, [_table(records)], fmt)
    assert report["counts"][3] > 0 and report["problems"]  # the records hold bad ones, and they are found


def test_sft_unknown_keys_and_per_line_rows_are_reported_in_key_order(tmp_path):
    report = _same_as_jsonl(tmp_path, [_table(SFT)], "sft")
    rules = {rule for _, _, rule, *_ in report["problems"]}
    # unknown keys top-level and nested (S4, S10), role (S6), blank text (S11), media (M2, M5, M6) ...
    assert {"S4", "S10", "S6", "S11", "M2", "M5"} <= rules
    unknown = [(line, field) for _, line, rule, _, field, _ in report["problems"] if rule == "S4" and line == 6]
    assert unknown == [(6, "extra"), (6, "another")]


def test_arrow_types_beyond_the_block_readers_read_as_their_json():
    """Large, view and dictionary strings, large and fixed-size lists, all-null columns."""
    n = 6
    texts = ["one", "", None, "four", "five", "six"]
    roles = ["user", "assistant", "user", "User", "user", "assistant"]
    content = pa.array([[{"text": t}] for t in texts], pa.large_list(pa.struct([("text", pa.large_string())])))
    messages = pa.FixedSizeListArray.from_arrays(
        pa.StructArray.from_arrays([pa.array(roles * 2).dictionary_encode(), pa.concat_arrays([content, content])], names=["role", "content"]), 2
    )
    table = pa.table(
        {
            "schemaVersion": pa.array([SV] * n, pa.string_view()),
            "system": pa.nulls(n),
            "messages": messages,
            "note": pa.array(["x", None, None, None, None, "y"]).dictionary_encode(),
        }
    )
    # Parquet would not keep these types: the block checker is given the table itself
    options = Options(get_profile("nova-lite-1"), "sft")
    got, expected = check_table(table, 1, options), check_block(json_lines(table), 1, options)
    assert got.problems == expected.problems and expected.problems
    assert got.invalid.tolist() == expected.invalid.tolist() and got.blank.tolist() == expected.blank.tolist()
    assert (got.stats.records, got.stats.valid, got.stats.with_media) == (expected.stats.records, expected.stats.valid, expected.stats.with_media)


@pytest.mark.parametrize(
    ("fmt", "table"),
    [
        ("cpt", pa.table({"text": pa.array([1, None, 3])})),  # a number where text must be a string
        ("sft", pa.table({"schemaVersion": [SV, SV], "system": ["a string", None], "messages": [_turns([{"text": "q"}]), _turns([{"text": "r"}])]})),
        ("chat", pa.table({"messages": [[{"role": "user", "content": {"text": "an object"}}], None]})),
        ("prompt-response", pa.table({"prompt": [b"bytes", b"more"], "response": [True, False]})),
    ],
)
def test_columns_of_another_json_type_get_the_per_line_verdicts(tmp_path, fmt, table):
    report = _same_as_jsonl(tmp_path, [table], fmt)
    assert report["counts"][3] > 0


def test_progress_counts_the_stored_bytes(tmp_path):
    path = tmp_path / "sft.parquet"
    pq.write_table(_table(SFT * 3), path, row_group_size=5)
    seen: list[int] = []
    summary = run_check([str(path)], CheckConfig(fmt="sft"), on_progress=seen.append)
    summary.close()
    size = path.stat().st_size  # each block's share rounds down by less than a byte
    assert len(seen) > 1 and size - len(seen) < sum(seen) <= size
