"""`ds pack` with s3:// inputs and an s3:// output prefix, against the moto server of the ``s3`` fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunekit_cli.ds import main
from tunekit_data.io import storage
from tunekit_tokenize import read_manifest

from .conftest import CHATML_DIR, FIXTURES


def _pack(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["pack", *args, "--tokenizer", str(CHATML_DIR), "--max-length", "128", "--workers", "1"])
    captured = capsys.readouterr()
    return code, captured.out, " ".join(captured.err.split())


def test_pack_s3_input_to_s3_prefix_loads(s3, capsys, tmp_path: Path) -> None:
    bucket = s3.bucket()
    s3.put(f"s3://{bucket}/data/chat.jsonl", (FIXTURES / "chat.jsonl").read_bytes())
    code, out, _ = _pack(capsys, f"s3://{bucket}/data/", "-o", f"s3://{bucket}/packed/", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["out_dir"] == f"s3://{bucket}/packed/" and result["cached"] is False and result["stats"]["examples"] == 4
    keys = [k.removeprefix("packed/") for k in s3.keys(bucket) if k.startswith("packed/") and not k.endswith("/")]
    manifest = json.loads(s3.get(f"s3://{bucket}/packed/manifest.json"))
    assert sorted(keys) == sorted([*manifest["shards"], "manifest.json", "stats.json"])  # no temporary or spool files
    local = tmp_path / "packed"
    storage.download_dir(f"s3://{bucket}/packed/", local)
    packed = read_manifest(local)
    assert packed.manifest["kind"] == "sft" and len(packed.shards) == len(manifest["shards"]) >= 1


def test_pack_to_a_used_s3_prefix_is_refused(s3, capsys) -> None:
    bucket = s3.bucket()
    s3.put(f"s3://{bucket}/packed/other.txt", b"x")
    code, _, err = _pack(capsys, str(FIXTURES / "chat.jsonl"), "-o", f"s3://{bucket}/packed/")
    assert code == 2 and f"s3://{bucket}/packed/: already holds objects" in err


@pytest.mark.parametrize("where", ["input", "output"])
def test_pack_missing_bucket_names_it_and_exits_2(s3, capsys, tmp_path: Path, where: str) -> None:
    source = "s3://tk-no-such-bucket/chat.jsonl" if where == "input" else str(FIXTURES / "chat.jsonl")
    target = str(tmp_path / "out") if where == "input" else "s3://tk-no-such-bucket/packed/"
    code, out, err = _pack(capsys, source, "-o", target)
    assert code == 2 and out == ""
    assert "s3://tk-no-such-bucket/" in err and "no such bucket" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
