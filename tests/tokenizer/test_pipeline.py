"""`pack` end to end: the written rows hold every encoded token exactly once, consistently labelled,
deterministic, cached, loadable by `datasets`; DPO pairs stay together; CPT documents end with EOS."""

from __future__ import annotations

import itertools
import json
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tunekit_data.errors import DataError, UsageError
from tunekit_data.examples import ChatExample, Media, Message, PreferenceExample, TextExample
from tunekit_tokenize import (
    Encoder,
    TokenizerBundle,
    encode_example,
    pack,
    pack_files,
    read_manifest,
    resolve_template,
)

from .conftest import FIXTURES

WORDS = ["the", "model", "answers", "questions", "about", "data", "and", "loss", "with", "short", "clear", "words"]


def random_chats(n: int, seed: int = 0, max_words: int = 60) -> list[ChatExample]:
    rng = random.Random(seed)
    say = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, max_words)))  # noqa: E731
    return [
        ChatExample(tuple(Message(r, say()) for _ in range(rng.randint(1, 3)) for r in ("user", "assistant")))
        for _ in range(n)
    ]


def rows(out: Path) -> list[dict]:
    packed = read_manifest(out)
    return [row for shard in packed.shards for row in pq.read_table(shard).to_pylist()]


def segments(row: dict, column: str) -> list[list[int]]:
    bounds = np.cumsum([0, *row["seq_lens"]])
    return [row[column][a:b] for a, b in itertools.pairwise(bounds)]


def check_rows(out: Path, max_length: int) -> list[dict]:
    """Row invariants: lengths, positions restarting per segment, first label of each segment -100."""
    result = rows(out)
    for row in result:
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["position_ids"]) == sum(row["seq_lens"])
        assert 0 < len(row["input_ids"]) <= max_length
        for positions, labels, ids in zip(*(segments(row, c) for c in ("position_ids", "labels", "input_ids")), strict=True):
            assert positions == list(range(len(positions)))
            assert labels[0] == -100
            assert all(label in (-100, token) for label, token in zip(labels, ids, strict=True))
    return result


def test_every_token_appears_exactly_once_with_its_labels(chatml: TokenizerBundle, records, tmp_path: Path) -> None:
    chats = random_chats(300)
    result = pack(records(*chats), tokenizer=chatml, max_length=1024, out_dir=tmp_path / "out", workers=1)
    packed = check_rows(tmp_path / "out", 1024)
    encoded = Encoder(chatml, resolve_template(chatml), "assistant").encode_batch(chats)
    expected = Counter((tuple(e.sequences[0].input_ids.tolist()), tuple(e.sequences[0].labels.tolist())) for e in encoded)
    got = Counter(
        (tuple(ids), tuple(labels))
        for row in packed
        for ids, labels in zip(segments(row, "input_ids"), segments(row, "labels"), strict=True)
    )
    assert got == expected
    stats = result.stats
    assert stats["sequences"] == stats["examples"] == 300 and stats["bins"] == len(packed)
    assert stats["tokens"] == sum(len(r["input_ids"]) for r in packed)
    assert stats["trained_tokens"] == sum(sum(label != -100 for label in r["labels"]) for r in packed)
    assert stats["packing_efficiency"] == round(stats["tokens"] / (stats["bins"] * 1024), 6)
    assert stats["bins"] <= stats["lower_bound_bins"] + 1
    assert sum(b["count"] for b in stats["length_histogram"]) == 300


def test_output_is_deterministic_and_independent_of_workers(chatml: TokenizerBundle, records, tmp_path: Path) -> None:
    chats = random_chats(600, seed=5, max_words=8)  # two batches: the two-worker run really uses a pool
    outs = []
    for name, workers in (("a", 1), ("b", 1), ("c", 2)):
        pack(records(*chats), tokenizer=chatml, max_length=512, out_dir=tmp_path / name, workers=workers, seed=7)
        outs.append(rows(tmp_path / name))
    assert outs[0] == outs[1] == outs[2]
    manifests = [json.loads((tmp_path / n / "manifest.json").read_text()) for n in "abc"]
    assert manifests[0] == manifests[1] == manifests[2]


def test_manifest_and_datasets_loading(chatml: TokenizerBundle, tmp_path: Path) -> None:
    result = pack_files([str(FIXTURES / "chat.jsonl")], tokenizer=chatml.path, max_length=128, out_dir=tmp_path / "out")
    manifest = result.manifest
    assert manifest["format"] == "tunekit-packed" and manifest["format_version"] == 1
    assert manifest["kind"] == "sft" and manifest["loss_on"] == "assistant"
    assert manifest["tokenizer"]["sha256"] == chatml.sha256
    assert manifest["template"] == {"name": "tokenizer", "sha256": manifest["template"]["sha256"], "masks": "generation-markers"}
    assert manifest["sources"][0]["path"].endswith("chat.jsonl") and len(manifest["sources"][0]["sha256"]) == 64
    assert manifest["reader"] == {"format": "chat"}
    assert manifest["columns"] == ["input_ids", "labels", "position_ids", "seq_lens"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    # In a fresh interpreter, as a user loading the pack would.
    code = (
        "import datasets, json, sys; d = datasets.load_dataset('parquet', data_dir=sys.argv[1])['train'];"
        "print(json.dumps(d.to_list()))"
    )
    loaded = subprocess.run([sys.executable, "-c", code, str(tmp_path / "out")], capture_output=True, text=True, check=True)
    assert json.loads(loaded.stdout) == rows(tmp_path / "out")


def test_rerun_reuses_the_output_until_something_changes(chatml: TokenizerBundle, tmp_path: Path) -> None:
    data = tmp_path / "chat.jsonl"
    shutil.copy(FIXTURES / "chat.jsonl", data)
    options = {"tokenizer": chatml.path, "max_length": 128, "out_dir": tmp_path / "out"}
    assert not pack_files([str(data)], **options).cached
    again = pack_files([str(data)], **options)
    assert again.cached and again.stats == json.loads((tmp_path / "out" / "stats.json").read_text())
    assert not pack_files([str(data)], **{**options, "max_length": 256}).cached
    data.write_text(data.read_text() + (FIXTURES / "chat.jsonl").read_text().splitlines()[0] + "\n")
    rebuilt = pack_files([str(data)], **{**options, "max_length": 256})
    assert not rebuilt.cached and rebuilt.stats["records"] == 5


def test_dpo_pairs_share_a_row_chosen_first(llama3: TokenizerBundle, records, tmp_path: Path) -> None:
    pairs = [
        PreferenceExample((Message("user", " ".join(WORDS[: 1 + i % 9])),), "good " * (1 + i % 7), "bad " * (1 + i % 5))
        for i in range(60)
    ]
    result = pack(records(*pairs), tokenizer=llama3, max_length=128, out_dir=tmp_path / "out", template="llama3")
    packed = check_rows(tmp_path / "out", 128)
    assert result.manifest["kind"] == "dpo" and result.manifest["loss_on"] == "response"
    assert result.stats["pairs"] == 60
    seen = []
    for row in packed:
        assert len(row["pair_ids"]) == len(row["seq_lens"]) == len(row["prompt_lens"]) == len(row["is_chosen"])
        assert row["pair_ids"][0::2] == row["pair_ids"][1::2]  # chosen and rejected adjacent, same pair
        assert row["is_chosen"] == [True, False] * (len(row["seq_lens"]) // 2)
        for pair_id, prompt_len, labels, ids in zip(
            row["pair_ids"], row["prompt_lens"], segments(row, "labels"), segments(row, "input_ids"), strict=True
        ):
            sequence = encode_example(llama3, pairs[pair_id], template="llama3").sequences[len(seen) % 2]
            assert prompt_len == sequence.prompt_len and ids == sequence.input_ids.tolist()
            assert set(labels[:prompt_len]) == {-100} and -100 not in labels[prompt_len:]
            seen.append(pair_id)
    assert Counter(seen) == dict.fromkeys(range(60), 2)


def test_text_documents_end_with_eos_and_long_ones_are_split(llama3: TokenizerBundle, records, tmp_path: Path) -> None:
    docs = [TextExample(" ".join(WORDS * (1 + i))) for i in range(8)]
    result = pack(records(*docs), tokenizer=llama3, max_length=64, out_dir=tmp_path / "out")
    packed = check_rows(tmp_path / "out", 64)
    pieces = [seg for row in packed for seg in segments(row, "input_ids")]
    whole = [encode_example(llama3, d).sequences[0].input_ids.tolist() for d in docs]
    assert sum(map(len, pieces)) == sum(map(len, whole))
    assert sum(p[-1] == llama3.eos_id for p in pieces) == len(docs)  # one EOS per document, at its end
    assert sum(p[0] == llama3.bos_id for p in pieces) == len(docs)
    assert result.stats["split_documents"] == sum(len(w) > 64 for w in whole)
    assert result.manifest["kind"] == "cpt" and result.manifest["template"] is None


@pytest.mark.parametrize("truncation", ["drop", "right", "left"])
def test_truncation_policies_are_counted(chatml: TokenizerBundle, chat, records, tmp_path: Path, truncation: str) -> None:
    examples = [chat("short question", "short answer"), chat("long " * 80, "answer " * 80), chat("q", "a")]
    result = pack(records(*examples), tokenizer=chatml, max_length=100, out_dir=tmp_path / "o", truncation=truncation)
    stats = result.stats
    packed = check_rows(tmp_path / "o", 100)
    if truncation == "drop":
        assert (stats["dropped"], stats["dropped_too_long"], stats["truncated"], stats["examples"]) == (1, 1, 0, 2)
    else:
        assert (stats["dropped"], stats["truncated"], stats["examples"]) == (0, 1, 3)
        longest = max((seg for r in packed for seg in segments(r, "input_ids")), key=len)
        full = encode_example(chatml, examples[1]).sequences[0].input_ids.tolist()
        assert longest == (full[:100] if truncation == "right" else full[-100:])
        assert stats["truncated_tokens"] == len(full) - 100


def test_right_truncation_that_cuts_every_answer_drops_the_example(chatml: TokenizerBundle, chat, records, tmp_path: Path) -> None:
    examples = [chat("long question " * 60, "answer"), chat("q", "a")]
    result = pack(records(*examples), tokenizer=chatml, max_length=50, out_dir=tmp_path / "o", truncation="right")
    assert result.stats["dropped_untrained_after_truncation"] == 1 and result.stats["examples"] == 1


def test_rejects_are_counted_and_fail_above_the_threshold(chatml: TokenizerBundle, chat, records, tmp_path: Path) -> None:
    image = ChatExample((Message("user", "see", (Media("image", "png", "s3://b/k.png"),)), Message("assistant", "ok")))
    examples = [chat("q", "a")] * 9 + [image]
    with pytest.raises(DataError, match=r"mem\.jsonl:10: record: \[media\] message 0 has 1 image/video part.*1 of 10 records rejected"):
        pack(records(*examples), tokenizer=chatml, max_length=64, out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()
    result = pack(records(*examples), tokenizer=chatml, max_length=64, out_dir=tmp_path / "o", max_invalid_percent=10)
    assert result.stats["rejected_by_reason"] == {"media": 1}
    assert result.stats["reject_samples"][0]["line"] == 10


def test_mixed_kinds_are_rejected(chatml: TokenizerBundle, chat, records, tmp_path: Path) -> None:
    examples = [chat("q", "a"), TextExample("plain text")]
    result = pack(records(*examples), tokenizer=chatml, max_length=64, out_dir=tmp_path / "o", max_invalid_percent=50)
    assert result.stats["rejected_by_reason"] == {"mixed-kinds": 1} and result.manifest["kind"] == "sft"


def test_usage_errors(chatml: TokenizerBundle, chat, records, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--max-length must be at least 2.*--truncation must be one of drop, right, left"):
        pack([], tokenizer=chatml, max_length=1, out_dir=tmp_path / "o", truncation="middle")  # type: ignore[arg-type]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="exists and is not a packed dataset"):
        pack(records(chat("q", "a")), tokenizer=chatml, max_length=64, out_dir=tmp_path / "taken")
    with pytest.raises(UsageError, match="no example fits in --max-length 8"):
        pack(records(chat("question", "answer")), tokenizer=chatml, max_length=8, out_dir=tmp_path / "o")


def test_window_option_packs_in_groups(chatml: TokenizerBundle, records, tmp_path: Path) -> None:
    chats = random_chats(400, seed=2)
    windowed = pack(records(*chats), tokenizer=chatml, max_length=512, out_dir=tmp_path / "w", window=100)
    whole = pack(records(*chats), tokenizer=chatml, max_length=512, out_dir=tmp_path / "g")
    check_rows(tmp_path / "w", 512)
    assert windowed.stats["tokens"] == whole.stats["tokens"]
    assert windowed.stats["bins"] >= whole.stats["bins"]
    assert windowed.manifest["window"] == 100


def test_large_packs_are_split_into_ordered_shards(
    chatml: TokenizerBundle, records, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tunekit_tokenize.writer.SHARD_TOKENS", 2000)
    chats = random_chats(120, seed=3)
    result = pack(records(*chats), tokenizer=chatml, max_length=512, out_dir=tmp_path / "o")
    shards = result.manifest["shards"]
    assert len(shards) > 2 and shards == sorted(shards) and shards[-1].endswith(f"-of-{len(shards):05d}.parquet")
    assert sum(len(r["input_ids"]) for r in check_rows(tmp_path / "o", 512)) == result.stats["tokens"]
