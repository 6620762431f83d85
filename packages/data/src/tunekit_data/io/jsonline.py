"""Per-line JSON decoding with the file/line rules (F3, F5, F6, F9, F13) as precise verdicts.

orjson is strict where CPython's ``json`` is lax (NaN, lone surrogates, recursion), which is what
the spec asks for; this module only translates its failures into rule ids and plain messages.
"""

from __future__ import annotations

import orjson

from tunekit_data.check import Problem

JSON_WHITESPACE = b" \t\r"


def is_blank(raw: bytes) -> bool:
    """True for an empty or JSON-whitespace-only line (rule F7: not a record)."""
    return not raw.strip(JSON_WHITESPACE)


def parse_line(raw: bytes) -> tuple[object, Problem | None]:
    """Decode one non-blank line; return ``(value, None)`` or ``(None, problem)``.

    The value is any JSON value; callers that need an object check F6 with ``require_object``.
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, Problem.make("F3", "", f"invalid UTF-8 byte 0x{raw[exc.start]:02x} at column {exc.start + 1}")
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        text = str(exc)
        if "surrogate" in text:
            return None, Problem.make("F9", "", f"lone surrogate escape in a string ({text})")
        if "depth limit" in text or "recursion" in text:
            return None, Problem.make("F13", "", "JSON nested deeper than 1,024 levels")
        return None, Problem.make("F5", "", f"not one valid JSON value: {text}")


def require_object(value: object) -> Problem | None:
    """Rule F6: a record is a JSON object."""
    if isinstance(value, dict):
        return None
    kind = "array" if isinstance(value, list) else "null" if value is None else type(value).__name__
    return Problem.make("F6", "", f"a record must be a JSON object, got {kind}")
