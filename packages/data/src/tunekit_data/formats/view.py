"""The columnar view of a block of Converse records that the S, M and D checks share.

Levels are built lazily and once per block, so each check pays only for the levels it reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tunekit_data.check import Level, Platform, Profile, indices, lengths, mask, present

MEDIA_KINDS = ("image", "video", "document")
BLOCK_MEMBERS = ("text", "image", "video", "document", "reasoningContent", "toolUse", "toolResult")


@dataclass(frozen=True)
class Options:
    """What the checks depend on besides the data."""

    profile: Profile
    fmt: str = "sft"
    platform: Platform = "sagemaker"
    dataset_bucket: str | None = None
    collect_media: bool = False  # list each block's S3 media references (``ds check --check-media``)


class ConverseView:
    """Lazily flattened levels of a Converse table (one block)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.n = table.num_rows
        self.rows = np.arange(self.n)
        self._columns: dict[str, pa.Array] = {}
        self._members: dict[str, np.ndarray] = {}

    def column(self, name: str) -> pa.Array:
        """A top-level column as one array (all-null if the block schema leaves it out).

        The block checker hands over single-chunk tables (``blockcheck._merged``), so this is
        normally free; a table of several chunks is combined once per column, as several checks
        read the same column.
        """
        if name not in self._columns:
            present_ = name in self.table.column_names
            if not present_:
                self._columns[name] = pa.nulls(self.n)
            else:
                column = self.table.column(name)
                # combine_chunks would copy even a single chunk
                self._columns[name] = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        return self._columns[name]

    @cached_property
    def messages(self) -> Level:
        """All messages of all records."""
        return Level.of("messages", self.column("messages"), self.rows)

    @cached_property
    def msg_count(self) -> np.ndarray:
        """Number of messages per record."""
        return lengths(self.column("messages"))

    @cached_property
    def role(self) -> pa.Array:
        """Role of every message."""
        return self.messages.field("role")

    @cached_property
    def is_last(self) -> np.ndarray:
        """True for the last message of its record."""
        m = self.messages
        return m.pos == self.msg_count[m.row] - 1

    @cached_property
    def has_candidates(self) -> np.ndarray:
        """True for messages that carry a ``candidates`` field."""
        return present(self.messages.field("candidates"))

    @cached_property
    def blocks(self) -> Level:
        """All content blocks of all messages."""
        return self.messages.child("content", "content")

    @cached_property
    def block_role(self) -> pa.Array:
        """Role of the message each content block belongs to."""
        return self.role.take(indices(self.blocks.parent))

    def member(self, name: str) -> np.ndarray:
        """True for content blocks that have member ``name`` (computed once per view: most checks ask)."""
        if name not in self._members:
            has = present(self.blocks.field(name))
            has.flags.writeable = False  # shared between checks
            self._members[name] = has
        return self._members[name]

    @cached_property
    def media_counts(self) -> dict[str, np.ndarray]:
        """Per record, the number of image / video / document blocks (message turns only)."""
        return {k: np.bincount(self.blocks.row[self.member(k)], minlength=self.n) for k in MEDIA_KINDS}

    @cached_property
    def system(self) -> Level:
        """All system blocks of all records."""
        return Level.of("system", self.column("system"), self.rows)

    @cached_property
    def candidates(self) -> Level:
        """All DPO candidates."""
        return self.messages.child("candidates", "candidates")

    @cached_property
    def candidate_blocks(self) -> Level:
        """All content blocks of all DPO candidates."""
        return self.candidates.child("content", "content")

    def texts(self) -> list[tuple[Level, pa.Array]]:
        """Every text-bearing level with its text array: system, message blocks, candidate blocks."""
        return [
            (self.system, self.system.field("text")),
            (self.blocks, self.blocks.field("text")),
            (self.candidate_blocks, self.candidate_blocks.field("text")),
        ]


def blank(texts: pa.Array) -> np.ndarray:
    """True where a text is present but empty or whitespace-only (Python ``str.strip`` semantics)."""
    # utf8_is_space (all characters whitespace, at least one) is utf8_trim_whitespace's predicate
    # without building the trimmed strings; an empty string is blank too.
    empty = pc.equal(pc.binary_length(texts), 0)
    return mask(pc.or_(empty, pc.utf8_is_space(texts)))
