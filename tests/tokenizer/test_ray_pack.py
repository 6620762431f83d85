"""`ds pack --engine ray` writes the local engine's rows: same tokens, masks, bins and efficiency.

Inputs are cut into many small byte ranges (so tokenization runs in many tasks, whose record ids
and line numbers the driver must renumber) and packs into several shards (written by tasks).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import orjson
import pytest

from tunekit_cli.ds import main
from tunekit_tokenize import TokenizerBundle, pack_files
from tunekit_tokenize.ray_pack import pack_files_ray

from .test_pipeline import check_rows, random_chats


def _chat_jsonl(path: Path, n: int, bad_every: int) -> Path:
    lines = []
    for i, chat in enumerate(random_chats(n, seed=5)):
        lines.append(orjson.dumps({"messages": [{"role": m.role, "content": m.content} for m in chat.messages]}))
        if i % bad_every == 3:
            lines.append(b'{"messages": [{"role": "user", "content": "no answer"}]}')
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _pairs_jsonl(path: Path, n: int) -> Path:
    rows = [{"prompt": f"question {i} " * (1 + i % 4), "chosen": "good " * (1 + i % 7), "rejected": "bad " * (1 + i % 5)} for i in range(n)]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_same_rows_and_efficiency_as_the_local_engine(ray_cluster, chatml: TokenizerBundle, tmp_path, monkeypatch, kind):
    monkeypatch.setattr("tunekit_tokenize.writer.SHARD_TOKENS", 3000)
    if kind == "sft":
        data = [str(_chat_jsonl(tmp_path / "a.jsonl", 150, 40)), str(_chat_jsonl(tmp_path / "b.jsonl", 40, 15))]
    else:
        data = [str(_pairs_jsonl(tmp_path / "p.jsonl", 120))]
    options = {"tokenizer": chatml.path, "max_length": 384, "max_invalid_percent": 10.0}
    local = pack_files(data, out_dir=tmp_path / "local", workers=1, **options)
    ray = pack_files_ray(data, out_dir=tmp_path / "ray", range_size=2000, **options)
    assert local.stats["rejected"] > 0 or kind == "dpo"
    assert len(ray.manifest["shards"]) == len(local.manifest["shards"]) > 1
    assert ray.stats == local.stats  # counts, efficiency, histogram, and rejects with their file:line
    assert ray.stats["packing_efficiency"] == local.stats["packing_efficiency"]
    local_rows, ray_rows = check_rows(tmp_path / "local", 384), check_rows(tmp_path / "ray", 384)
    assert ray_rows == local_rows  # same bins, same order: tokens, labels (masks), positions
    tokens = Counter(t for row in ray_rows for t in row["input_ids"])
    assert sum(tokens.values()) == ray.stats["tokens"]


def test_cli(ray_cluster, chatml: TokenizerBundle, tmp_path, capsys):
    data = str(_chat_jsonl(tmp_path / "a.jsonl", 30, 100))
    args = ["pack", data, "--tokenizer", str(chatml.path), "--max-length", "256", "--max-invalid-percent", "5", "--json"]
    assert main([*args, "-o", str(tmp_path / "local")]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main([*args, "-o", str(tmp_path / "ray"), "--engine", "ray"]) == 0
    ray = json.loads(capsys.readouterr().out)
    assert ray["stats"] == local["stats"] and ray["shards"] == local["shards"]
