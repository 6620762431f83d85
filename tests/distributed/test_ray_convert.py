"""`ds convert --engine ray` writes the local engine's records and reports the same counts and
rejections, with line numbers counted from the start of each file."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunekit_cli.ds import main
from tunekit_data.convert import ConvertOptions, convert_dataset
from tunekit_data.distributed.convert import convert_dataset_ray
from tunekit_data.distributed.parts import MANIFEST

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "convert"


def _chat_input(tmp_path: Path) -> list[str]:
    """The chat fixture repeated with rejected lines (broken JSON, wrong roles, blanks) in between."""
    good = (FIXTURES / "chat.jsonl").read_bytes().splitlines()
    bad = [b'{"messages": [', b"", b'{"messages": [{"role": "bot", "content": "x"}]}', b"[1, 2]"]
    lines = [line for i in range(30) for line in (good[i % len(good)], bad[i % len(bad)]) if i % 3 or line in good]
    a = tmp_path / "a.jsonl"
    a.write_bytes(b"\n".join(lines) + b"\n")
    table = pa.Table.from_pylist([json.loads(g) for g in good[:2]])  # text-only turns: one Arrow type
    pq.write_table(table, tmp_path / "b.parquet")
    return [str(a), str(tmp_path / "b.parquet")]


def _without_outputs(summary) -> dict:
    report = summary.to_dict()
    del report["outputs"], report["rejects_out"]  # the output names differ by design
    return report


def _records(folder: Path, split: str) -> list[bytes]:
    manifest = json.loads((folder / MANIFEST).read_bytes())
    parts = [p for p in manifest["parts"] if p["split"] == split]
    lines = [line for p in parts for line in (folder / p["path"]).read_bytes().splitlines()]
    assert len(lines) == sum(p["lines"] for p in parts)
    return lines


@pytest.mark.parametrize("range_size", [150, 1 << 20])
def test_same_records_and_report_as_the_local_engine(ray_cluster, tmp_path, range_size):
    paths = _chat_input(tmp_path)
    common = {"to": "converse", "split": "validation=0.3", "seed": 3, "block_size": 200, "shard_size": 7}
    local = convert_dataset(paths, ConvertOptions(out=str(tmp_path / "local"), rejects_out=str(tmp_path / "rl.jsonl"), **common))
    ray = convert_dataset_ray(paths, ConvertOptions(out=str(tmp_path / "ray"), rejects_out=str(tmp_path / "rr.jsonl"), **common), range_size=range_size)
    assert local.rejected > 5 and local.blank > 0 and local.written["validation"] > 0
    assert _without_outputs(ray) == _without_outputs(local)
    for split in ("train", "validation"):
        expected = [line for f in sorted((tmp_path / "local").glob(f"{split}-*.jsonl")) for line in f.read_bytes().splitlines()]
        assert _records(tmp_path / "ray", split) == expected
    assert (tmp_path / "rr.jsonl").read_bytes() == (tmp_path / "rl.jsonl").read_bytes()


def test_cli_text_documents_and_usage_errors(ray_cluster, tmp_path, capsys):
    args = ["convert", str(FIXTURES / "txt"), "--to", "text", "--json"]
    assert main([*args, "-o", str(tmp_path / "local")]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main([*args, "-o", str(tmp_path / "ray"), "--engine", "ray"]) == 0
    ray = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in ray.items() if k != "outputs"} == {k: v for k, v in local.items() if k != "outputs"}
    assert main([*args, "-o", str(tmp_path / "one.jsonl"), "--engine", "ray"]) == 2
    assert "folder or s3:// prefix of parts" in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "x"), "--engine", "ray", "--max-samples", "1"]) == 2
    assert "--max-samples" in capsys.readouterr().err
