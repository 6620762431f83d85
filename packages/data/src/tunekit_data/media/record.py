"""All images of one Converse record, resolved in order, or every problem with its field path.

A record with any problem is rejected whole (the caller writes it to rejects, as ``ds convert`` and
``ds pack`` do), so one bad image never yields a sample whose placeholders and pixels disagree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tunekit_data.media.cache import MediaCache
from tunekit_data.media.images import MAX_PIXELS, MediaProblem, resolve_image

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


@dataclass
class RecordMedia:
    """The images of a record (content key, image) in message order, and the problems found."""

    images: list[tuple[str, PILImage]] = field(default_factory=list)
    problems: list[tuple[str, MediaProblem]] = field(default_factory=list)  # (field path, problem)

    def report(self, file: str, line: int) -> list[str]:
        """Each problem as ``file:line: field: [kind] message``."""
        return [problem.located(file, line, path) for path, problem in self.problems]


def image_blocks(record: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(field path, image block) of every image in the record's messages, in order."""
    for m, message in enumerate(record.get("messages") or []):
        for c, part in enumerate((message or {}).get("content") or []):
            if isinstance(part, dict) and "image" in part:
                yield f"messages[{m}].content[{c}].image", part["image"]


def resolve_record(record: dict[str, Any], cache: MediaCache, *, max_pixels: int = MAX_PIXELS) -> RecordMedia:
    """Resolve every image block of ``record``; the result's problems are empty when all decoded."""
    media = RecordMedia()
    for path, block in image_blocks(record):
        got = (
            resolve_image(block, cache, max_pixels=max_pixels)
            if isinstance(block, dict)
            else MediaProblem("bad-block", "image must be an object")
        )
        if isinstance(got, MediaProblem):
            media.problems.append((path, got))
        else:
            media.images.append(got)
    return media
