"""Model profiles and platforms: what each Nova model accepts (data-formats.md sections 1-4, 8).

The numbers are the sources' (N1, N2, V2); where sources conflict, the choice made in section 8 of
the spec is encoded here and the message names the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tunekit_data.errors import UsageError

Platform = Literal["bedrock", "sagemaker"]
PLATFORMS: tuple[Platform, ...] = ("bedrock", "sagemaker")


@dataclass(frozen=True)
class Profile:
    """What one model accepts."""

    name: str
    label: str
    media: bool
    image_formats: frozenset[str]
    video_formats: frozenset[str]
    nova2: bool  # documents, reasoningContent, toolConfig (N2)
    dpo: bool
    bedrock_sft_min: int
    bedrock_max: int = 20_000
    min_source: str = "N1"


_NOVA1_IMAGES = frozenset({"png", "jpeg", "gif", "webp"})
_NOVA1_VIDEOS = frozenset({"mov", "mkv", "mp4", "webm"})

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile("nova-micro-1", "Nova Micro 1.0", media=False, image_formats=frozenset(), video_formats=frozenset(), nova2=False, dpo=True, bedrock_sft_min=8),
        Profile("nova-lite-1", "Nova Lite 1.0", media=True, image_formats=_NOVA1_IMAGES, video_formats=_NOVA1_VIDEOS, nova2=False, dpo=True, bedrock_sft_min=8),
        Profile("nova-pro-1", "Nova Pro 1.0", media=True, image_formats=_NOVA1_IMAGES, video_formats=_NOVA1_VIDEOS, nova2=False, dpo=True, bedrock_sft_min=8),
        # N2's tables list WebP/WebM and a minimum of 8; AWS's own validator (V2) excludes both and
        # enforces 200: the spec (section 8, items 4-5) follows the code AWS ships to pre-check.
        Profile(
            "nova-lite-2",
            "Nova 2 Lite",
            media=True,
            image_formats=frozenset({"png", "jpeg", "gif"}),
            video_formats=frozenset({"mov", "mkv", "mp4"}),
            nova2=True,
            dpo=False,
            bedrock_sft_min=200,
            min_source="V2 (N2 says 8)",
        ),
    ]
}


def get_profile(name: str) -> Profile:
    """Look a profile up by name; UsageError listing the choices otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        msg = f"--profile must be one of {', '.join(PROFILES)}, got {name!r}"
        raise UsageError(msg) from None
