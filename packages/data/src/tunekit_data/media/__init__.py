"""Media of multimodal records: fetch once per machine (content-addressed cache), decode, report failures."""

from tunekit_data.media.cache import MediaCache, default_cache_dir
from tunekit_data.media.images import MAX_PIXELS, MediaProblem, resolve_image
from tunekit_data.media.record import RecordMedia, image_blocks, resolve_record
from tunekit_data.media.videos import resolve_video
from tunekit_data.video_sampling import VideoSampling

__all__ = [
    "MAX_PIXELS",
    "MediaCache",
    "MediaProblem",
    "RecordMedia",
    "VideoSampling",
    "default_cache_dir",
    "image_blocks",
    "resolve_image",
    "resolve_record",
    "resolve_video",
]
