"""Resolve a Converse ``video`` block to frames sampled at a set rate, or a problem naming what is wrong.

Sources are those of images (`tunekit_data.media.images.source_bytes`: ``s3Location.uri`` through the
media cache, local paths, inline bytes). PyAV decodes (its wheels bundle FFmpeg). Frames are sampled as
Qwen2-VL's reference loader (qwen-vl-utils) and LLaMA-Factory do: ``duration * fps`` frames, at most
``max_frames``, a multiple of the model's temporal patch, spread evenly from the first frame to the
last. Decoding is one sequential pass that keeps only the sampled frames (resized as they come, when a
target size is given), so memory holds the sample, never the whole video.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from tunekit_data.media.cache import MediaCache
from tunekit_data.media.images import MAX_PIXELS, MediaProblem, source_bytes
from tunekit_data.video_sampling import VideoSampling

MAX_DECODED_FRAMES = 54_000  # 15 minutes at 60 fps, the longest video Nova 2 takes (spec M12)

if TYPE_CHECKING:
    import numpy as np

Resize = Callable[[int, int], tuple[int, int]]
"""(width, height) of the video -> (width, height) its frames are resized to."""


def resolve_video(
    block: dict[str, Any],
    cache: MediaCache,
    sampling: VideoSampling,
    *,
    multiple: int = 1,
    max_pixels: int = MAX_PIXELS,
    resize: Resize | None = None,
) -> tuple[str, np.ndarray] | MediaProblem:
    """(content key of the video, sampled RGB frames ``[frames, height, width, 3]`` uint8), or a MediaProblem.

    ``multiple``: the frame count is a multiple of it (the model's temporal patch). ``max_pixels``: a
    video whose frames have more pixels is refused before decoding. ``resize``: the frames' target size.
    """
    got = source_bytes(block, cache, "video")
    if isinstance(got, MediaProblem):
        return got
    key, data = got
    import av  # lazily: ds check and text packs never need PyAV

    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                return MediaProblem("undecodable", "the file has no video stream")
            stream = container.streams.video[0]
            frames = _sample(container, stream, sampling, multiple, max_pixels, resize)
    except (av.FFmpegError, OSError, ValueError) as exc:
        return MediaProblem("undecodable", f"cannot decode video: {exc}")
    return frames if isinstance(frames, MediaProblem) else (key, frames)


def _sample(container: Any, stream: Any, sampling: VideoSampling, multiple: int, max_pixels: int, resize: Resize | None) -> np.ndarray | MediaProblem:
    import numpy as np
    from PIL import Image

    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > max_pixels:
        return MediaProblem("too-large", f"{width}x{height} video frames have more than {max_pixels} pixels")
    rate = stream.average_rate or stream.guessed_rate
    if not rate or width * height == 0:
        return MediaProblem("undecodable", "the video stream has no frame rate or no frame size")
    total = stream.frames
    if not total:  # Matroska and WebM headers carry no frame count: count packets (demuxing, no decoding)
        total = sum(1 for packet in container.demux(stream) if packet.size)
        container.seek(0)
    if total > MAX_DECODED_FRAMES:
        return MediaProblem("too-large", f"the video has {total:,} frames; at most {MAX_DECODED_FRAMES:,} are decoded")
    if total == 0:
        return MediaProblem("undecodable", "the video has no frames")
    wanted = sampling.indices(total, float(Fraction(rate)), multiple)
    target = resize(width, height) if resize is not None else (width, height)
    keep, last = set(wanted.tolist()), int(wanted[-1])
    kept: dict[int, np.ndarray] = {}
    decoded = 0
    for frame in container.decode(stream):
        if decoded in keep:
            image = frame.to_image()
            if image.size != target:
                image = image.resize(target, Image.Resampling.BICUBIC)
            kept[decoded] = np.asarray(image.convert("RGB"))
        decoded += 1
        if decoded > last:
            break
    if last not in kept:
        return MediaProblem("undecodable", f"the video ended after {decoded} of its {total} frames (truncated?)")
    return np.stack([kept[i] for i in wanted.tolist()])
