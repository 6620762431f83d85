"""How many frames of a video a vision-language model sees (``ds pack --video-fps/--video-max-frames``, the recipe's ``mm_cfg.video_fps/video_max_frames``).

Apart from `tunekit_data.media` so that recipes validate these keys without importing the storage layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

MAX_FPS = 60.0
MAX_SAMPLED_FRAMES = 768  # Qwen2-VL's video processor samples at most this many


@dataclass(frozen=True)
class VideoSampling:
    """How many frames of a video a model sees: ``fps`` per second of video, at most ``max_frames``."""

    fps: float = 2.0
    max_frames: int = 128

    def problems(self, fps_key: str, max_frames_key: str) -> list[str]:
        """What is out of range, each naming its key (a CLI flag or a recipe key)."""
        out = []
        if not 0 < self.fps <= MAX_FPS:
            out.append(f"{fps_key} must be in (0, {MAX_FPS:g}], got {self.fps:g}")
        if not 2 <= self.max_frames <= MAX_SAMPLED_FRAMES:
            out.append(f"{max_frames_key} must be in [2, {MAX_SAMPLED_FRAMES}], got {self.max_frames}")
        return out

    def indices(self, total: int, rate: float, multiple: int) -> np.ndarray:
        """Which of ``total`` frames (``rate`` per second) to keep: a multiple of ``multiple`` of them, evenly spread and in order; a video shorter than ``multiple`` frames repeats its last one."""
        import numpy as np  # lazily: recipes import this module to validate their keys

        wanted = min(round(total / rate * self.fps), self.max_frames, total)
        count = max(multiple, wanted // multiple * multiple)
        return np.linspace(0, total - 1, count).round().astype(np.int64)
