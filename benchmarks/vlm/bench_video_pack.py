"""Benchmark ``ds pack --processor`` on videos (issue 16) against transformers' Qwen2-VL processor path,
same videos, one run: videos/s and sampled frames/s.

* ``tunekit``: `tunekit_tokenize.pack_files` with the processor and ``VideoSampling(--fps, --max-frames)``,
  one process, a cold media cache: read, decode (PyAV, one pass keeping the sampled frames, resized as
  they come), chat template, tokenize, expand the video tokens, pack, write the frames into the rows.
* ``transformers``: per record, what a TRL-style collator runs for a video sample: `transformers.video_utils.
  load_video` (its PyAV backend, ``fps`` sampling), then ``Qwen2VLProcessor(text=..., videos=...)`` (the video
  processor: resize, normalise, temporal patches; the tokenizer with the expanded video tokens). It writes
  nothing and packs nothing; tunekit does both, and its rows then hold frames, not pixel patches (the
  collate patches them, `tunekit_train.vision.FrameProcessor`).

Needs the ``bench`` group (``Qwen2VLProcessor`` imports torchvision for its video processor).

Usage::

    uv run --group bench python benchmarks/vlm/bench_video_pack.py                       # 120 videos
    uv run --group bench python benchmarks/vlm/bench_video_pack.py --videos 8 --repeat 1  # toy

Prints a table, then one line of JSON with every figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.vlm.bench_vlm import print_figures  # noqa: E402
from tests.vision.shapes import COLOURS, make_processor_dir, square_video, video_record, write_jsonl  # noqa: E402


def make_videos(root: Path, n: int, *, frames: int, size: int, fps: int) -> Path:
    """``n`` generated mp4 videos (``frames`` frames of ``size`` px at ``fps``) and their Converse records."""
    records = []
    for i in range(n):
        colour = list(COLOURS)[i % len(COLOURS)]
        path = root / "videos" / f"{i}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(square_video(colour, frames=frames, size=size, fps=fps, seed=i))
        records.append(video_record(str(path), colour))
    return write_jsonl(root / "train.jsonl", records)


def bench_tunekit(data: Path, processor: Path, root: Path, *, fps: float, max_frames: int) -> dict[str, float]:
    import numpy as np

    import tunekit_tokenize as tk
    from tunekit_data.media import VideoSampling
    from tunekit_train.data import load_packed

    shutil.rmtree(root / "cache", ignore_errors=True)
    shutil.rmtree(root / "packed", ignore_errors=True)
    started = time.perf_counter()
    result = tk.pack_files([str(data)], tokenizer=processor, processor=processor, max_length=4096, out_dir=root / "packed",
                           media_cache=root / "cache", workers=1, video=VideoSampling(fps, max_frames))
    seconds = time.perf_counter() - started
    rows = load_packed(root / "packed")
    grids = np.concatenate([np.asarray(rows.row(i)["video_grid_thw"]).reshape(-1, 3) for i in range(len(rows))])
    frames = int(grids[:, 0].sum()) * int(rows.manifest["vision"]["video_processor"].get("temporal_patch_size", 2))
    videos = len(grids)
    return {"tunekit_videos": videos, "tunekit_frames": frames, "tunekit_videos_per_s": videos / seconds, "tunekit_frames_per_s": frames / seconds,
            "tunekit_rows": result.stats["bins"]}


def bench_transformers(data: Path, processor_dir: Path, *, fps: float) -> dict[str, float]:
    from benchmarks.vlm.trl_peer import qwen2_vl_processor
    from transformers.video_utils import load_video

    # The fixture saves no video processor settings: both sides take the image processor's (trl_peer's processor).
    processor = qwen2_vl_processor(processor_dir)
    records = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    started = time.perf_counter()
    frames = 0
    for record in records:
        path = record["messages"][0]["content"][0]["video"]["source"]["s3Location"]["uri"]
        video, _ = load_video(path, fps=fps, backend="pyav")
        messages = [{"role": m["role"], "content": "".join("<|vision_start|><|video_pad|><|vision_end|>" if "video" in b else b["text"] for b in m["content"])} for m in record["messages"]]
        text = processor.tokenizer.apply_chat_template(messages, tokenize=False)
        out = processor(text=[text], videos=[video], do_sample_frames=False, cap_pixels_per_frame=False, return_tensors="np")
        frames += int(out["video_grid_thw"][0][0]) * processor.video_processor.temporal_patch_size
    seconds = time.perf_counter() - started
    return {"transformers_videos_per_s": len(records) / seconds, "transformers_frames_per_s": frames / seconds, "transformers_frames": frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=120)
    parser.add_argument("--frames", type=int, default=64, help="frames of each generated video")
    parser.add_argument("--size", type=int, default=64, help="pixels a side of each generated video")
    parser.add_argument("--video-fps", type=int, default=8, help="frame rate of the generated videos")
    parser.add_argument("--fps", type=float, default=2.0, help="frames sampled per second of video (both sides)")
    parser.add_argument("--max-frames", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each side (alternating); the best is kept")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tunekit-bench-video-"))
    try:
        processor = make_processor_dir(root / "processor")
        data = make_videos(root, args.videos, frames=args.frames, size=args.size, fps=args.video_fps)
        figures: dict[str, float] = {"videos": args.videos}
        for _ in range(args.repeat):
            for side in (bench_tunekit(data, processor, root, fps=args.fps, max_frames=args.max_frames), bench_transformers(data, processor, fps=args.fps)):
                for key, value in side.items():
                    figures[key] = max(figures.get(key, value), value) if key.endswith("_per_s") else value
        figures["speedup_videos_per_s"] = figures["tunekit_videos_per_s"] / figures["transformers_videos_per_s"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_figures("video_pack", figures)


if __name__ == "__main__":
    main()
