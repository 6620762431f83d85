"""Why a record was not converted: a ``Rejection`` is one record's verdict, located by file and line.

Converters raise ``ConversionError`` (a field path and a reason) deep inside a record; the pipeline
turns it, a JSON decoding problem, or an error-severity rule finding on the converted output into a
``Rejection``, which the summary counts and ``--rejects-out`` writes. Nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunekit_data.check import Problem


class ConversionError(Exception):
    """A record that cannot be expressed in the requested shape.

    Example: ``messages[1].content[0].image_url.url: data: URIs (base64) are not accepted ...``.
    """

    def __init__(self, reason: str, field: str = "") -> None:
        self.reason, self.field = reason, field
        super().__init__(f"{field}: {reason}" if field else reason)


@dataclass(frozen=True, slots=True)
class Rejection:
    """One record that was not written: where it is, which field, why, and the rule id if a rule said so.

    ``line`` is the 1-based physical line for JSONL inputs and the 1-based row for Parquet and
    Hugging Face dataset inputs (1 for a ``.txt`` document).
    """

    file: str
    line: int
    field: str
    reason: str
    rule: str | None = None

    @classmethod
    def from_error(cls, file: str, line: int, err: ConversionError) -> Rejection:
        """The rejection for a converter's error."""
        return cls(file, line, err.field, err.reason)

    @classmethod
    def from_problem(cls, file: str, line: int, problem: Problem) -> Rejection:
        """The rejection for a rule finding (JSON decoding or a ``ds check`` rule on the output)."""
        return cls(file, line, problem.field, problem.message, problem.rule)

    def to_dict(self) -> dict[str, object]:
        """The JSON shape of a rejects-file line, without the record itself."""
        out: dict[str, object] = {
            "file": self.file,
            "line": self.line,
            "field": self.field,
            "reason": self.reason,
        }
        if self.rule is not None:
            out["rule"] = self.rule
        return out

    def __str__(self) -> str:
        rule = f"[{self.rule}] " if self.rule else ""
        where = f"{self.field}: " if self.field else ""
        return f"{self.file}:{self.line}: {where}{rule}{self.reason}"


def json_type(value: object) -> str:
    """A value's JSON type for messages (``a string``, ``null``, ``an array``), not its Python type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a blank string" if not value.strip() else "a string"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    return "an object"
