"""`ds pack --processor`: images from S3 expanded into exactly the tokens transformers' Qwen2-VL
processor makes, never trained, carried in the rows; every media failure a located reject."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from tests.vision.shapes import COLOURS, TINY_TOKENIZER, colour_record, image_block, shape_png, write_jsonl

import tunekit_tokenize as tk
from tunekit_cli.ds import main
from tunekit_data.errors import DataError, InputError, UsageError
from tunekit_tokenize.vision import load_processor


def test_grid_matches_transformers_processor(processor_dir) -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    ours = load_processor(processor_dir, tk.load_tokenizer(processor_dir))
    theirs = Qwen2VLImageProcessorPil.from_pretrained(processor_dir)
    for size in [(32, 32), (20, 50), (100, 30), (7, 9), (200, 190), (64, 8)]:
        grid = theirs(images=[Image.new("RGB", size)], return_tensors="np")["image_grid_thw"][0]
        assert ours.grid(*size) == tuple(int(v) for v in grid), size
        assert ours.tokens(ours.grid(*size)) == int(np.prod(grid)) // 4


def _upload(s3, n: int, *, size=(32, 32)) -> tuple[str, list[tuple[str, str, bytes]]]:
    bucket = s3.bucket()
    items = []
    for i in range(n):
        colour = list(COLOURS)[i % len(COLOURS)]
        data = shape_png(colour, "circle", (size[0] + 8 * (i % 3), size[1]), seed=i)
        uri = f"s3://{bucket}/img/{i}.png"
        s3.put(uri, data)
        items.append((uri, colour, data))
    return bucket, items


def test_pack_expands_images_exactly_and_carries_bytes(s3, tmp_path, processor_dir) -> None:
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    _bucket, items = _upload(s3, 6)
    records = [colour_record(uri, colour) for uri, colour, _ in items]
    records[1]["messages"][0]["content"].insert(2, image_block(items[0][0]))  # two images, text between
    data = write_jsonl(tmp_path / "train.jsonl", records)
    result = tk.pack_files([str(data)], tokenizer=processor_dir, processor=processor_dir, max_length=200,
                           out_dir=tmp_path / "packed", media_cache=tmp_path / "cache", workers=1)
    assert result.stats["examples"] == 6 and result.stats["images"] == 7
    assert result.manifest["vision"]["image_token_id"] == tk.load_tokenizer(processor_dir).token_id("<|image_pad|>")
    table = pq.read_table(tmp_path / "packed" / result.manifest["shards"][0]).to_pylist()

    hf = AutoTokenizer.from_pretrained(processor_dir)
    images = Qwen2VLImageProcessorPil.from_pretrained(processor_dir)
    image_id = hf.convert_tokens_to_ids("<|image_pad|>")
    by_bytes = {data: (uri, colour) for uri, colour, data in items}
    segments = 0
    for row in table:
        starts = np.cumsum([0, *row["seq_lens"]])
        image_starts = np.cumsum([0, *row["seq_images"]])
        grids = np.array(row["image_grid_thw"]).reshape(-1, 3)
        for s in range(len(row["seq_lens"])):
            segments += 1
            ids = np.array(row["input_ids"][starts[s] : starts[s + 1]])
            labels = np.array(row["labels"][starts[s] : starts[s + 1]])
            blobs = row["image_bytes"][image_starts[s] : image_starts[s + 1]]
            colour = by_bytes[blobs[0]][1]  # the first image is the record's own
            # The reference: transformers' processor recipe (template text, each placeholder repeated grid/4 times).
            pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]
            theirs = images(images=pil, return_tensors="np")["image_grid_thw"]
            assert np.array_equal(theirs, grids[image_starts[s] : image_starts[s + 1]])
            user = "".join("<|vision_start|><|image_pad|><|vision_end|>" for _ in blobs) if len(blobs) == 1 else (
                "<|vision_start|><|image_pad|><|vision_end|>What colour is the shape?<|vision_start|><|image_pad|><|vision_end|>"
            )
            question = "What colour is the shape?" if len(blobs) == 1 else ""
            text = hf.apply_chat_template([{"role": "user", "content": user + question}, {"role": "assistant", "content": colour}], tokenize=False)
            for n in (int(np.prod(g)) // 4 for g in theirs):
                text = text.replace("<|image_pad|>", "<|placeholder|>" * n, 1)
            expected = hf(text.replace("<|placeholder|>", "<|image_pad|>"), add_special_tokens=False)["input_ids"]
            assert ids.tolist() == expected
            assert (ids == image_id).sum() == sum(int(np.prod(g)) // 4 for g in theirs)
            assert not (labels[ids == image_id] != -100).any()  # no image token is ever trained
            assert hf.decode(ids[labels != -100]) == f"{colour}<|im_end|>"
    assert segments == 6


def test_each_media_failure_is_a_located_reject(s3, tmp_path, processor_dir) -> None:
    bucket, items = _upload(s3, 2)
    s3.put(f"s3://{bucket}/img/broken.png", b"\x89PNG not an image")
    s3.put(f"s3://{bucket}/img/huge.png", shape_png("red", "square", (120, 120)))
    records = [
        colour_record(items[0][0], "red"),
        colour_record(f"s3://{bucket}/img/absent.png", "red"),  # line 2: missing
        colour_record(f"s3://{bucket}/img/broken.png", "red"),  # line 3: undecodable
        colour_record(f"s3://{bucket}/img/huge.png", "red"),  # line 4: too many pixels
        colour_record(str(tmp_path / "no-such.png"), "red"),  # line 5: missing local file
        {"messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": "AAAA"}}}]}, {"role": "assistant", "content": [{"text": "red"}]}]},  # 6: inline
        colour_record(items[1][0], "green"),
    ]
    data = write_jsonl(tmp_path / "train.jsonl", records)
    rejects = tmp_path / "rejects.jsonl"
    result = tk.pack_files([str(data)], tokenizer=processor_dir, processor=processor_dir, max_length=200, out_dir=tmp_path / "packed",
                           media_cache=tmp_path / "cache", workers=1, max_invalid_percent=100, max_image_pixels=100 * 100, rejects_out=str(rejects))
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    got = {entry["line"]: (entry["rule"], entry["field"]) for entry in lines}
    field = "messages[0].content[0].image"
    assert got == {
        2: ("media-missing", field),
        3: ("media-undecodable", field),
        4: ("media-too-large", field),
        5: ("media-missing", field),
        6: ("invalid-record", "messages[0].content[0].image.source.bytes"),  # inline bytes: S3 references only
    }
    assert all(entry["file"] == str(data) and entry["record"] == records[entry["line"] - 1] for entry in lines)
    assert result.stats["records"] == 7 and result.stats["examples"] + result.stats["rejected"] == 7  # nothing lost
    assert "absent.png" in next(e["reason"] for e in lines if e["line"] == 2)


def test_cli_pack_with_processor(s3, tmp_path, processor_dir, monkeypatch, capsys) -> None:
    _bucket, items = _upload(s3, 2)
    data = write_jsonl(tmp_path / "train.jsonl", [colour_record(uri, colour) for uri, colour, _ in items])
    monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path / "cache"))
    code = main(["pack", str(data), "--processor", str(processor_dir), "--max-length", "128", "-o", str(tmp_path / "p"), "--workers", "1", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stats"]["images"] == 2 and summary["kind"] == "sft"
    assert (tmp_path / "cache" / "media" / "objects").is_dir()  # fetched through the media cache


def test_text_packs_still_refuse_media(tmp_path, processor_dir) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", [colour_record("s3://b/x.png", "red")])
    with pytest.raises(DataError, match="image/video"):
        tk.pack_files([str(data)], tokenizer=processor_dir, max_length=64, out_dir=tmp_path / "packed", workers=1)


def test_pack_does_not_import_torch() -> None:
    code = "import sys, tunekit_tokenize.vision, tunekit_tokenize.pipeline; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_vision_pack_usage_errors(tmp_path, processor_dir) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", [colour_record(str(tmp_path / "x.png"), "red")])
    with pytest.raises(UsageError, match="--truncation right would cut images apart"):
        tk.pack_files([str(data)], tokenizer=processor_dir, processor=processor_dir, max_length=64, out_dir=tmp_path / "p", truncation="right")
    with pytest.raises(UsageError, match="lacks the vision token"):
        tk.pack_files([str(data)], tokenizer=TINY_TOKENIZER, processor=processor_dir, max_length=64, out_dir=tmp_path / "p")
    with pytest.raises(InputError, match=r"preprocessor_config\.json"):
        tk.pack_files([str(data)], tokenizer=processor_dir, processor=tmp_path, max_length=64, out_dir=tmp_path / "p")
