"""`ds convert` with s3:// inputs (objects and prefixes, JSONL and Parquet) and s3:// outputs, end to end.

Runs the real CLI (``tunekit_cli.ds.main``) against the moto server of the ``s3`` fixture
(``tests/conftest.py``).
"""

from __future__ import annotations

import io
import json

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunekit_cli.ds import main


def _converse(i: int) -> dict:
    return {"messages": [{"role": "user", "content": [{"text": f"question {i}"}]}, {"role": "assistant", "content": [{"text": f"answer {i}"}]}]}


def _lines(records: list[object]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def _convert(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["convert", *args, "--json", "--workers", "1"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out else {}


def test_convert_s3_prefix_to_s3_file_with_rejects(s3, capsys) -> None:
    bucket = s3.bucket()
    bad = {"messages": [{"role": "assistant", "content": [{"text": "no question"}]}]}
    s3.put(f"s3://{bucket}/in/a.jsonl", _lines([_converse(1), bad, _converse(2)]))
    s3.put(f"s3://{bucket}/in/b.jsonl", _lines([_converse(3)]))
    code, summary = _convert(capsys, f"s3://{bucket}/in/", "--to", "prompt-response", "-o", f"s3://{bucket}/out/train.jsonl",
                             "--rejects-out", f"s3://{bucket}/out/rejects.jsonl", "--max-rejects-percent", "50")  # fmt: skip
    assert code == 0
    assert summary["records"] == 4 and summary["rejected"] == 1
    assert summary["outputs"] == [{"split": "train", "path": f"s3://{bucket}/out/train.jsonl", "records": 3}]
    assert summary["rejects_out"] == f"s3://{bucket}/out/rejects.jsonl"
    written = [orjson.loads(line) for line in s3.get(f"s3://{bucket}/out/train.jsonl").splitlines()]
    assert [r["prompt"] for r in written] == ["question 1", "question 2", "question 3"]
    rejects = [orjson.loads(line) for line in s3.get(f"s3://{bucket}/out/rejects.jsonl").splitlines()]
    assert [(r["file"], r["line"]) for r in rejects] == [(f"s3://{bucket}/in/a.jsonl", 2)]
    # Only the outputs: no temporary keys are left behind.
    assert sorted(k for k in s3.keys(bucket) if k.startswith("out/") and not k.endswith("/")) == ["out/rejects.jsonl", "out/train.jsonl"]


def test_convert_s3_parquet_to_s3_shards_and_split(s3, capsys) -> None:
    bucket = s3.bucket()
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([_converse(i) for i in range(30)]), buffer)
    s3.put(f"s3://{bucket}/in/data.parquet", buffer.getvalue())
    code, summary = _convert(capsys, f"s3://{bucket}/in/data.parquet", "--to", "converse", "-o", f"s3://{bucket}/shards/",
                             "--shard-size", "10", "--split", "validation=0.2")  # fmt: skip
    assert code == 0
    outputs = summary["outputs"]
    assert sum(o["records"] for o in outputs) == 30
    assert all(o["path"].startswith(f"s3://{bucket}/shards/") for o in outputs)
    names = sorted(k.removeprefix("shards/") for k in s3.keys(bucket) if k.startswith("shards/") and not k.endswith("/"))
    assert names == sorted(o["path"].rpartition("/")[2] for o in outputs)
    assert names[0] == "train-00000.jsonl" and any(n.startswith("validation-") for n in names)
    total = sum(len(s3.get(o["path"]).splitlines()) for o in outputs)
    assert total == 30
    # A second run into the same prefix is refused rather than mixing shards of two runs.
    code = main(["convert", f"s3://{bucket}/in/data.parquet", "--to", "converse", "-o", f"s3://{bucket}/shards/"])
    assert code == 2 and "already holds train shards" in " ".join(capsys.readouterr().err.split())


def test_convert_to_s3_parquet_with_endpoint_option(s3, capsys, tmp_path, monkeypatch) -> None:
    bucket = s3.bucket()
    source = tmp_path / "in.jsonl"
    source.write_bytes(_lines([_converse(i) for i in range(5)]))
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    code, summary = _convert(capsys, str(source), "--to", "prompt-response", "-o", f"s3://{bucket}/out.parquet", "--endpoint-url", s3.endpoint)
    assert code == 0 and summary["outputs"][0]["records"] == 5
    table = pq.read_table(io.BytesIO(s3.get(f"s3://{bucket}/out.parquet")))
    assert table.num_rows == 5 and table.column("prompt").to_pylist()[0] == "question 0"


@pytest.mark.parametrize("where", ["input", "output"])
def test_convert_missing_bucket_names_it_and_exits_2(s3, capsys, tmp_path, where) -> None:
    bucket = s3.bucket()
    s3.put(f"s3://{bucket}/in.jsonl", _lines([_converse(1)]))
    source = "s3://tk-no-such-bucket/in.jsonl" if where == "input" else f"s3://{bucket}/in.jsonl"
    target = f"s3://{bucket}/out.jsonl" if where == "input" else "s3://tk-no-such-bucket/out.jsonl"
    code = main(["convert", source, "--to", "prompt-response", "-o", target])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "tk-no-such-bucket" in err and "no such bucket" in err
    assert "Traceback" not in err
    assert s3.keys(bucket) == ["in.jsonl"]


def test_convert_failing_for_good_on_s3_leaves_nothing_under_the_output_key(s3, capsys, monkeypatch) -> None:
    bucket = s3.bucket()
    s3.put(f"s3://{bucket}/in.jsonl", _lines([_converse(i) for i in range(3)]))
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    s3.faults.fail_next(1000, only="/out/train.jsonl")  # the temporary key uploads; publishing it fails
    code = main(["convert", f"s3://{bucket}/in.jsonl", "--to", "prompt-response", "-o", f"s3://{bucket}/out/train.jsonl"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert f"s3://{bucket}/out/train.jsonl: cannot publish: the server kept failing after retrying" in err
    assert "Traceback" not in err
    assert [k for k in s3.keys(bucket) if k.startswith("out/") and not k.endswith("/")] == []
