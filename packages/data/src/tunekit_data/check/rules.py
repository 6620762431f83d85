"""The rule table: every dataset rule tunekit enforces, with its id, severity and summary.

This is the single documented list (ids from ``shared/spec/data-formats.md``) that ``ds check``,
``ds convert``, ``ds pack`` and ``train run`` report against. The checks themselves live in the
format modules (``formats/*.py``), each registered under one of these ids; a check can only emit a
rule that is listed here (``Problem.make`` looks the id up), so the table and the checks cannot drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]
E: Severity = "error"
W: Severity = "warning"


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule: its id, default severity, one-line summary and where it comes from."""

    id: str
    severity: Severity
    summary: str


RULES: dict[str, Rule] = {
    r.id: r
    for r in [
        # 1. File and line rules
        Rule("F1", E, "dataset files end in .jsonl (optionally .gz/.zst compressed)"),
        Rule("F2", W, "dataset file names use only [A-Za-z0-9_./-]"),
        Rule("F3", E, "each line is valid UTF-8"),
        Rule("F4", W, "a UTF-8 byte order mark at the start of the file is stripped"),
        Rule("F5", E, "each non-blank line is exactly one RFC 8259 JSON value"),
        Rule("F6", E, "each line's value is a JSON object"),
        Rule("F7", W, "blank lines are not records"),
        Rule("F9", E, "strings are valid Unicode (no lone surrogate escapes)"),
        Rule("F10", E, "record count within the profile's bounds"),
        Rule("F11", E, "a dataset file holds at least one record"),
        Rule("F12", W, "records fit the context length"),
        Rule("F13", E, "JSON nesting at most 1,024 levels"),
        # 2. Converse SFT
        Rule("S1", E, "`messages` is present and an array"),
        Rule("S2", W, "`schemaVersion`, if present, is a string (bedrock-conversation-2024 expected)"),
        Rule("S3", E, "`system` is an array of {text: string} objects"),
        Rule("S4", W, "unknown keys are ignored by the service"),
        Rule("S5", E, "at least two messages"),
        Rule("S6", E, "`role` is exactly user or assistant"),
        Rule("S7", E, "first message is user and roles alternate"),
        Rule("S8", E, "last message is assistant"),
        Rule("S9", E, "every message has a non-empty `content` array"),
        Rule("S10", E, "each content block has exactly one known member"),
        Rule("S11", E, "text is a string; a text-only message has non-blank text"),
        Rule("S12", E, "reserved keywords do not appear in text"),
        Rule("S13", E, "reasoningContent: Nova 2 Lite only, assistant turns only, not with media"),
        Rule("S14", E, "tool calling: Nova 2 Lite only, consistent toolConfig/toolUse/toolResult"),
        Rule("S15", E, "Nova Micro is text only"),
        # 3. Multimodal samples
        Rule("M1", E, "image, video and document blocks only in user turns"),
        Rule("M2", E, "image format is one the profile supports"),
        Rule("M3", E, "video format is one the profile supports"),
        Rule("M4", E, "media has source.s3Location"),
        Rule("M5", E, "s3Location.uri is a valid S3 URI"),
        Rule("M6", E, "s3Location.bucketOwner, if present, is a 12-digit account id"),
        Rule("M7", E, "at most 10 images per sample"),
        Rule("M8", E, "at most 1 video per sample"),
        Rule("M9", E, "a sample does not mix images, videos and documents"),
        Rule("M10", E, "a dataset does not mix media modalities"),
        Rule("M11", E, "media are in the dataset's single S3 bucket"),
        Rule("M12", E, "media objects exist and are within size limits"),
        Rule("M14", E, "documents: Nova 2 Lite only, pdf, at most one per sample"),
        # 4. DPO
        Rule("D2", E, "the last message is an assistant turn with `candidates` and no `content`"),
        Rule("D3", E, "only the last message carries `candidates`"),
        Rule("D4", E, "exactly two candidates: one preferred, one non-preferred"),
        Rule("D5", E, "preferenceLabel is preferred or non-preferred"),
        Rule("D6", E, "candidate content is a non-empty array of non-blank text blocks"),
        Rule("D7", E, "no media inside candidates"),
        Rule("D8", E, "no video in DPO samples; images only for Lite/Pro"),
        Rule("D9", E, "DPO is not available on the profile"),
        Rule("D10", W, "fewer than 1,000 preference pairs"),
        Rule("D11", W, "preferred and non-preferred texts differ"),
        # 5. Nova CPT
        Rule("C1", E, "each record is {text: non-blank string}"),
        # 6. Databricks
        Rule("B1", E, "chat records have the single key `messages`"),
        Rule("B2", E, "at least two messages, each with exactly `role` and `content`"),
        Rule("B3", E, "role is system, user or assistant"),
        Rule("B4", E, "system only first; then user/assistant alternate"),
        Rule("B5", E, "the last message is assistant"),
        Rule("B6", E, "content is a string"),
        Rule("B8", E, "instruction records are {prompt: string, response: string}"),
    ]
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding on one record (or the dataset): rule id, severity, field path and message."""

    rule: str
    severity: Severity
    field: str
    message: str

    @classmethod
    def make(cls, rule: str, field: str, message: str, *, severity: Severity | None = None) -> Problem:
        """Build a problem for a rule of the table; the severity defaults to the rule's."""
        return cls(rule, severity or RULES[rule].severity, field, message)

    def to_dict(self) -> dict[str, str]:
        """The JSON shape used by ``--json`` and ``--errors-out`` (without file/line)."""
        return {"rule": self.rule, "severity": self.severity, "field": self.field, "message": self.message}
