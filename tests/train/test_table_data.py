"""`train run` data paths may be Delta tables and hub-cache datasets: packed on the fly into the same
rows as the JSONL they hold."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunekit_data.io import HUB_SCHEME
from tunekit_train.recipe import parse_recipe
from tunekit_train.sources import local_path, open_rows

ROOT = Path(__file__).parents[2]
TOKENIZER = ROOT / "examples" / "tiny" / "tokenizer"
SFT = ROOT / "examples" / "data" / "sft.jsonl"


def _config():
    raw = {
        "run": {"name": "t", "model_name_or_path": "m", "data_s3_path": "d"},
        "training_config": {"max_length": 128, "global_batch_size": 2, "micro_batch_size": 2},
    }
    return parse_recipe(raw, source="t").recipe.training_config


def _rows(path, tmp_path: Path, name: str) -> tuple[dict, list]:
    """The pack's counts and its rows' tokens."""
    rows = open_rows(path, config=_config(), tokenizer=TOKENIZER, cache=tmp_path / "packs" / name)
    tokens = [r["input_ids"] for s in sorted((tmp_path / "packs" / name / "data").glob("*.parquet")) for r in pq.read_table(s).to_pylist()]
    return rows.manifest["counts"], tokens


def test_delta_and_hub_cache_data_pack_like_jsonl(tmp_path, monkeypatch):
    deltalake = pytest.importorskip("deltalake")
    table = pa.Table.from_pylist([orjson.loads(line) for line in SFT.read_bytes().splitlines()])
    deltalake.write_deltalake(str(tmp_path / "delta"), table)
    snapshot = tmp_path / "hub" / "datasets--acme--sft" / "snapshots" / "r1"
    snapshot.mkdir(parents=True)
    pq.write_table(table, snapshot / "train.parquet")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    expected = _rows(SFT, tmp_path, "jsonl")
    assert expected[0]["records"] == table.num_rows and expected[1]
    assert _rows(tmp_path / "delta", tmp_path, "delta") == expected
    hub = local_path(f"{HUB_SCHEME}acme/sft")
    assert hub == snapshot
    assert _rows(hub, tmp_path, "hub") == expected
    assert not local_path(f"{HUB_SCHEME}acme/absent").exists()  # the recipe check then names it
