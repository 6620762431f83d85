"""ds convert (issue 3): output layouts (JSONL, Parquet, shards), the deterministic split, and the
temporary-name-then-rename life cycle."""

from __future__ import annotations

import gzip
from pathlib import Path

import datasets
import orjson
import polars as pl
import pyarrow.parquet as pq
import pytest

from tunekit_data.convert import ARROW_SCHEMAS, ConvertOptions, Split, convert_dataset
from tunekit_data.errors import UsageError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "convert"


@pytest.fixture
def many(tmp_path: Path) -> Path:
    """1,000 prompt-response records, with 50 exact duplicates of one record at the end."""
    path = tmp_path / "many.jsonl"
    lines = [orjson.dumps({"prompt": f"question {i}", "response": f"answer {i}"}) for i in range(950)]
    lines += [orjson.dumps({"prompt": "same", "response": "same"})] * 50
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


# --- split ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec", ["validation", "validation=0", "validation=1", "validation=x", "train=0.1", "=0.1", "1x=0.2"]
)
def test_split_spec_is_checked(spec):
    with pytest.raises(UsageError, match=r"--split must look like validation=0\.1"):
        Split.parse(spec)


def test_split_is_deterministic_complete_and_ordered(tmp_path, many):
    def convert(seed: int, name: str) -> tuple[list[bytes], list[bytes]]:
        out = tmp_path / name / "train.jsonl"
        summary = convert_dataset(
            [str(many)], ConvertOptions(to="prompt-response", out=str(out), split="validation=0.1", seed=seed)
        )
        val = out.with_name("train.validation.jsonl")
        assert [o["path"] for o in summary.outputs] == [str(out), str(val)]
        assert summary.written["train"] + summary.written["validation"] == summary.records == 1000
        return lines_of(out), lines_of(val)

    train, val = convert(7, "a")
    assert (train, val) == convert(7, "b")  # same seed, same split
    assert (train, val) != convert(8, "c")  # another seed, another split
    assert 40 <= len(val) <= 160  # 10 % expected; the hash decides per record
    everything = lines_of(many)
    canonical = [orjson.dumps(orjson.loads(x)) for x in everything]
    assert sorted(train + val) == sorted(canonical)
    assert train == [x for x in canonical if x in set(train)]  # input order kept within each split
    same = orjson.dumps({"prompt": "same", "response": "same"})
    assert (same in train) != (same in val)  # duplicates never straddle train and validation


def test_split_does_not_depend_on_workers_or_blocks(tmp_path, many):
    outs = []
    for workers, block in ((1, 1 << 20), (2, 4096)):
        out = tmp_path / f"w{workers}" / "o.jsonl"
        convert_dataset(
            [str(many)],
            ConvertOptions(
                to="prompt-response",
                out=str(out),
                split="validation=0.2",
                seed=3,
                workers=workers,
                block_size=block,
            ),
        )
        outs.append((out.read_bytes(), out.with_name("o.validation.jsonl").read_bytes()))
    assert outs[0] == outs[1]


# --- Parquet -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "to", "opts"), [
    ("chat.jsonl", "converse", {"media_prefix": "s3://my-bucket/media"}),
    ("preference.jsonl", "dpo", {}),
    ("hh.jsonl", "preference", {}),
    ("alpaca.jsonl", "chat", {}),
    ("prompt_response.jsonl", "prompt-response", {}),
    ("text.jsonl", "text", {}),
])  # fmt: skip
def test_parquet_output_has_the_documented_schema_and_loads_with_datasets_and_polars(
    tmp_path, fixture, to, opts
):
    out = tmp_path / "out.parquet"
    summary = convert_dataset([str(FIXTURES / fixture)], ConvertOptions(to=to, out=str(out), **opts))
    assert summary.rejected == 0
    assert pq.read_schema(out).remove_metadata() == ARROW_SCHEMAS[to]
    jsonl = tmp_path / "out.jsonl"
    convert_dataset([str(FIXTURES / fixture)], ConvertOptions(to=to, out=str(jsonl), **opts))
    expected = [orjson.loads(x) for x in lines_of(jsonl)]

    ds = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == len(expected)
    frame = pl.read_parquet(out)
    assert frame.height == len(expected)
    # Parquet keeps every schema field: absent members read back as null; otherwise the same records.
    assert [_drop_nulls(r) for r in ds.to_list()] == expected
    assert [_drop_nulls(r) for r in frame.to_dicts()] == expected


def _drop_nulls(value):
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def test_parquet_split_output(tmp_path, many):
    out = tmp_path / "data.parquet"
    summary = convert_dataset(
        [str(many)], ConvertOptions(to="prompt-response", out=str(out), split="test=0.25")
    )
    val = tmp_path / "data.test.parquet"
    assert pq.read_metadata(out).num_rows + pq.read_metadata(val).num_rows == 1000
    assert summary.outputs[1] == {
        "split": "test",
        "path": str(val),
        "records": pq.read_metadata(val).num_rows,
    }


# --- other layouts -------------------------------------------------------------------------------------


def test_a_folder_gets_numbered_shards(tmp_path, many):
    folder = tmp_path / "shards"
    summary = convert_dataset(
        [str(many)],
        ConvertOptions(to="prompt-response", out=str(folder), shard_size=300, split="validation=0.1"),
    )
    names = sorted(p.name for p in folder.iterdir())
    assert names[:4] == ["train-00000.jsonl", "train-00001.jsonl", "train-00002.jsonl", "train-00003.jsonl"]
    assert "validation-00000.jsonl" in names
    assert [o["records"] for o in summary.outputs if o["split"] == "train"][:3] == [300, 300, 300]
    assert sum(len(lines_of(p)) for p in folder.iterdir()) == 1000
    with pytest.raises(UsageError, match="already holds train shards"):
        convert_dataset([str(many)], ConvertOptions(to="prompt-response", out=str(folder)))


def test_compressed_jsonl_output(tmp_path):
    out = tmp_path / "out.jsonl.gz"
    convert_dataset(
        [str(FIXTURES / "alpaca.jsonl")],
        ConvertOptions(to="converse", out=str(out), split="validation=0.5", seed=1),
    )
    plain = tmp_path / "plain.jsonl"
    convert_dataset(
        [str(FIXTURES / "alpaca.jsonl")],
        ConvertOptions(to="converse", out=str(plain), split="validation=0.5", seed=1),
    )
    assert gzip.decompress(out.read_bytes()) == plain.read_bytes()
    assert (
        gzip.decompress((tmp_path / "out.validation.jsonl.gz").read_bytes())
        == (tmp_path / "plain.validation.jsonl").read_bytes()
    )


@pytest.mark.parametrize("out", ["out.json", "out.csv"])
def test_output_names_must_say_what_to_write(tmp_path, out):
    with pytest.raises(UsageError, match=r"name a \.jsonl or \.parquet file, or a folder"):
        ConvertOptions(to="converse", out=str(tmp_path / out))


def test_nothing_is_left_behind_when_a_run_fails(tmp_path, many):
    out = tmp_path / "out" / "o.parquet"
    rejects = tmp_path / "rejects.jsonl"

    def boom(_: int) -> None:
        raise KeyboardInterrupt

    options = ConvertOptions(
        to="prompt-response", out=str(out), split="validation=0.1", rejects_out=str(rejects), block_size=4096
    )
    with pytest.raises(KeyboardInterrupt):
        convert_dataset([str(many)], options, on_progress=boom)
    assert list(out.parent.iterdir()) == []
    assert not rejects.exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["many.jsonl"]


def test_outputs_appear_only_when_complete(tmp_path, many):
    """While the run is going the final names do not exist; temporary names are hidden, beside them."""
    out = tmp_path / "o.jsonl"
    seen: list[list[str]] = []
    options = ConvertOptions(to="prompt-response", out=str(out), block_size=4096)
    convert_dataset(
        [str(many)], options, on_progress=lambda _: seen.append(sorted(p.name for p in tmp_path.iterdir()))
    )
    assert all("o.jsonl" not in names for names in seen)
    assert any(name.startswith(".o.jsonl.") and name.endswith(".tmp") for name in seen[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.jsonl", "o.jsonl"]
