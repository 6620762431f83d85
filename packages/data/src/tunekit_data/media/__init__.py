"""Media of multimodal records: fetch once per machine (content-addressed cache), decode, report failures."""

from tunekit_data.media.cache import MediaCache, default_cache_dir
from tunekit_data.media.images import MediaProblem, resolve_image

__all__ = ["MediaCache", "MediaProblem", "default_cache_dir", "resolve_image"]
