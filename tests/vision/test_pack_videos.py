"""`ds pack --processor` with Converse video blocks: videos from S3 and local paths sampled to frames,
expanded into exactly the tokens transformers' Qwen2-VL processor makes, never trained, carried in the
rows; every video failure a located reject."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from tests.vision.shapes import COLOURS, colour_record, shape_png, square_video, video_record, write_jsonl

import tunekit_tokenize as tk
from tunekit_cli.ds import main
from tunekit_data.errors import UsageError
from tunekit_data.media import VideoSampling, videos

VIDEO_SPAN = "<|vision_start|><|video_pad|><|vision_end|>"


def _segments(out_dir, manifest) -> list[dict]:
    """Every packed segment: its ids, labels, video frames (decoded .npy) and grids."""
    table = pq.read_table(out_dir / manifest["shards"][0]).to_pylist()
    segments = []
    for row in table:
        starts = np.cumsum([0, *row["seq_lens"]])
        video_starts = np.cumsum([0, *row["seq_videos"]])
        grids = np.array(row["video_grid_thw"]).reshape(-1, 3)
        for s in range(len(row["seq_lens"])):
            videos_of = slice(video_starts[s], video_starts[s + 1])
            segments.append({
                "ids": np.array(row["input_ids"][starts[s] : starts[s + 1]]),
                "labels": np.array(row["labels"][starts[s] : starts[s + 1]]),
                "frames": [np.load(io.BytesIO(b)) for b in row["video_bytes"][videos_of]],
                "grids": grids[videos_of],
                "images": row["seq_images"][s],
            })
    return segments


def test_pack_samples_videos_and_expands_them_exactly(s3, tmp_path, processor_dir) -> None:
    from transformers import AutoTokenizer

    bucket = s3.bucket()
    records, colours = [], list(COLOURS)
    for i, colour in enumerate(colours[:3]):
        uri = f"s3://{bucket}/videos/{i}.mp4"
        s3.put(uri, square_video(colour, seed=i))
        records.append(video_record(uri, colour))
    local = tmp_path / "local.mkv"  # Matroska: no frame count in the header
    local.write_bytes(square_video(colours[3], fmt="mkv", seed=3))
    records.append(video_record(str(local), colours[3], fmt="mkv"))
    image = tmp_path / "shape.png"
    image.write_bytes(shape_png("red", "circle"))
    records.append(colour_record(str(image), "red"))  # an image record packed beside the videos
    data = write_jsonl(tmp_path / "train.jsonl", records)
    result = tk.pack_files([str(data)], tokenizer=processor_dir, processor=processor_dir, max_length=256, out_dir=tmp_path / "packed",
                           media_cache=tmp_path / "cache", workers=1, video=VideoSampling(fps=3, max_frames=16))
    assert result.stats["examples"] == 5 and result.stats["videos"] == 4 and result.stats["images"] == 1
    vision = result.manifest["vision"]
    assert vision["video_sampling"] == {"fps": 3, "max_frames": 16}

    hf = AutoTokenizer.from_pretrained(processor_dir)
    video_id = hf.convert_tokens_to_ids("<|video_pad|>")
    assert vision["video_token_id"] == video_id
    by_colour = {}
    for segment in _segments(tmp_path / "packed", result.manifest):
        ids, labels = segment["ids"], segment["labels"]
        if segment["images"]:
            assert not (ids == video_id).any()
            continue
        (frames,), (grid,) = segment["frames"], segment["grids"]
        # 8 frames at 4 fps = 2 s; 3 a second = 6 frames, a multiple of the temporal patch (2)
        assert frames.shape == (6, 32, 32, 3) and frames.dtype == np.uint8
        assert grid.tolist() == [3, 8, 8]  # 32x32 stays 32x32 (min_pixels 32*32); patches of 4 pixels
        colour = hf.decode(ids[labels != -100]).removesuffix("<|im_end|>")
        # The reference: transformers' processor recipe (the template's placeholder repeated t*h*w/merge**2 times).
        text = hf.apply_chat_template([{"role": "user", "content": VIDEO_SPAN + "What colour is the square?"}, {"role": "assistant", "content": colour}], tokenize=False)
        text = text.replace("<|video_pad|>", "<|video_pad|>" * (int(np.prod(grid)) // 4))
        assert ids.tolist() == hf(text, add_special_tokens=False)["input_ids"]
        assert not (labels[ids == video_id] != -100).any()  # no video token is ever trained
        by_colour[colour] = frames
    assert sorted(by_colour) == sorted(colours)
    for colour, frames in by_colour.items():
        # Each sampled frame shows the square in its colour (MPEG-4 is lossy: near, not equal).
        square = frames.reshape(len(frames), -1, 3)
        nearest = np.abs(square.astype(int) - COLOURS[colour]).sum(-1).min(-1)
        assert (nearest < 40).all(), colour


def test_sampling_keeps_frames_within_max_frames_and_a_multiple_of_the_temporal_patch() -> None:
    sampling = VideoSampling(fps=2, max_frames=6)
    assert sampling.indices(total=8, rate=4, multiple=2).tolist() == [0, 2, 5, 7]  # 2 s at 2 fps
    assert sampling.indices(total=300, rate=30, multiple=2).tolist() == np.linspace(0, 299, 6).round().astype(int).tolist()
    assert sampling.indices(total=1, rate=30, multiple=2).tolist() == [0, 0]  # one frame: repeated
    assert VideoSampling(fps=0, max_frames=1).problems("--video-fps", "--video-max-frames") == [
        "--video-fps must be in (0, 60], got 0",
        "--video-max-frames must be in [2, 768], got 1",
    ]


def test_each_video_failure_is_a_located_reject(s3, tmp_path, processor_dir, monkeypatch) -> None:
    bucket = s3.bucket()
    good, long_video = square_video("red"), square_video("green", frames=20)
    s3.put(f"s3://{bucket}/v/good.mp4", good)
    s3.put(f"s3://{bucket}/v/garbage.mp4", b"\x00\x00\x00\x18ftypmp42 not a video")
    s3.put(f"s3://{bucket}/v/truncated.mp4", good[: len(good) // 2])
    s3.put(f"s3://{bucket}/v/long.mp4", long_video)
    s3.put(f"s3://{bucket}/v/big.mp4", square_video("blue", size=64))
    records = [
        video_record(f"s3://{bucket}/v/good.mp4", "red"),
        video_record(f"s3://{bucket}/v/absent.mp4", "red"),  # line 2: missing object
        video_record(f"s3://{bucket}/v/garbage.mp4", "red"),  # line 3: undecodable
        video_record(f"s3://{bucket}/v/truncated.mp4", "red"),  # line 4: truncated, undecodable
        video_record(f"s3://{bucket}/v/long.mp4", "green"),  # line 5: too many frames
        video_record(f"s3://{bucket}/v/big.mp4", "blue"),  # line 6: frames with too many pixels
        video_record(str(tmp_path / "no-such.mp4"), "red"),  # line 7: missing local file
        video_record(f"s3://{bucket}/v/good.mp4", "red"),
    ]
    data = write_jsonl(tmp_path / "train.jsonl", records)
    rejects = tmp_path / "rejects.jsonl"
    monkeypatch.setattr(videos, "MAX_DECODED_FRAMES", 16)  # the long video has 20 (workers=1: this process decodes)
    result = tk.pack_files([str(data)], tokenizer=processor_dir, processor=processor_dir, max_length=200, out_dir=tmp_path / "packed",
                           media_cache=tmp_path / "cache", workers=1, max_invalid_percent=100, max_image_pixels=48 * 48, rejects_out=str(rejects))
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    field = "messages[0].content[0].video"
    assert {entry["line"]: (entry["rule"], entry["field"]) for entry in lines} == {
        2: ("media-missing", field),
        3: ("media-undecodable", field),
        4: ("media-undecodable", field),
        5: ("media-too-large", field),
        6: ("media-too-large", field),
        7: ("media-missing", field),
    }
    reasons = {entry["line"]: entry["reason"] for entry in lines}
    assert "absent.mp4" in reasons[2] and "20 frames" in reasons[5] and "64x64" in reasons[6]
    assert all(entry["file"] == str(data) and entry["record"] == records[entry["line"] - 1] for entry in lines)
    assert result.stats["records"] == 8 and result.stats["examples"] == 2 and result.stats["rejected"] == 6  # nothing lost
    assert result.stats["videos"] == 2


def test_video_sampling_flags_are_checked(tmp_path, processor_dir, capsys) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", [video_record(str(tmp_path / "x.mp4"), "red")])
    with pytest.raises(UsageError, match=r"--video-max-frames must be in \[2, 768\], got 1000"):
        tk.pack_files([str(data)], tokenizer=processor_dir, processor=processor_dir, max_length=64, out_dir=tmp_path / "p",
                      video=VideoSampling(max_frames=1000))
    code = main(["pack", str(data), "--processor", str(processor_dir), "--max-length", "64", "-o", str(tmp_path / "p"), "--video-fps", "0"])
    assert code == 2 and "--video-fps must be in (0, 60], got 0" in capsys.readouterr().err
