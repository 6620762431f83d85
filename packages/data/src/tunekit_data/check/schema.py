"""Arrow schemas of the checked formats, and the structural walk that types one record against them.

A schema serves twice: pyarrow's JSON reader parses whole blocks straight into it (the fast path),
and ``walk`` checks one already-decoded record against it (the slow path, for lines the block
reader could not type). Each schema path carries the rule id reported when the value there has the
wrong JSON type, so a type error names the same rule on both paths.

Schema paths are written like field paths without indices: ``messages[].content[].image.format``.
A path's rule is the one registered for it or, failing that, for its nearest ancestor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
import pyarrow as pa

from tunekit_data.check.rules import Problem
from tunekit_data.formats import ARROW_SCHEMAS

S = pa.string()


def _struct(**fields: pa.DataType) -> pa.StructType:
    return pa.struct(list(fields.items()))


_S3 = _struct(s3Location=_struct(uri=S, bucketOwner=S))
_MEDIA = _struct(format=S, source=_S3)
_DOCUMENT = _struct(format=S, name=S, source=_S3)
# toolUse / toolResult carry arbitrary JSON (tool inputs): typed as strings holding the JSON text, so
# the block reader never types them and such records always take the slow path, where `walk`
# serialises them (see OPAQUE) and the S14 checks read the decoded values.
_BLOCK = _struct(
    text=S,
    image=_MEDIA,
    video=_MEDIA,
    document=_DOCUMENT,
    reasoningContent=_struct(reasoningText=_struct(text=S)),
    toolUse=S,
    toolResult=S,
)
_TEXT_BLOCK = _struct(text=S)
# The block reader's schema for Nova 1 data: only what such records normally hold. Anything else
# (documents, reasoning, tools, misplaced keys) shows up as an inferred nested field and sends the
# lines to the slow path, which types them against the full schema. Fewer fields parse faster.
_LEAN_SFT = ARROW_SCHEMAS["converse"]
_LEAN_DPO = ARROW_SCHEMAS["dpo"]
_CANDIDATE = _struct(content=pa.list_(_BLOCK), preferenceLabel=S)
_CONVERSE_MESSAGE = _struct(role=S, content=pa.list_(_BLOCK), candidates=pa.list_(_CANDIDATE))

CONVERSE = pa.schema(
    [
        ("schemaVersion", S),
        ("system", pa.list_(_TEXT_BLOCK)),
        ("messages", pa.list_(_CONVERSE_MESSAGE)),
        ("toolConfig", S),
    ]
)
CPT = pa.schema([("text", S)])
CHAT = pa.schema([("messages", pa.list_(_struct(role=S, content=S)))])
PROMPT_RESPONSE = pa.schema([("prompt", S), ("response", S), ("completion", S)])


@dataclass(frozen=True)
class FormatSchema:
    """A format's Arrow schema plus the rule ids for type errors and unknown keys, by schema path."""

    name: str
    schema: pa.Schema
    type_rules: dict[str, str]
    unknown_rules: dict[str, str] = field(default_factory=dict)
    opaque: frozenset[str] = frozenset()
    lean: pa.Schema | None = None

    @property
    def block_schema(self) -> pa.Schema:
        """The schema the block reader parses with (a lean subset where one is defined)."""
        return self.lean or self.schema

    def type_rule(self, path: str) -> str:
        """The rule for a type error at ``path``: its own or its nearest ancestor's."""
        while True:
            if path in self.type_rules:
                return self.type_rules[path]
            cut = max(path.rfind("."), path.rfind("[]"))
            if cut <= 0:
                return self.type_rules.get(path, "F6")
            path = path[:cut]

    def unknown_rule(self, path: str) -> str:
        """The rule for an unknown key inside the object at ``path`` (S4, a warning, by default)."""
        return self.unknown_rules.get(path, "S4")


_CONVERSE_TYPES = {
    "schemaVersion": "S2",
    "system": "S3",
    "messages": "S1",
    "messages[].role": "S6",
    "messages[].content": "S9",
    "messages[].content[]": "S10",
    "messages[].content[].text": "S11",
    "messages[].content[].image": "M4",
    "messages[].content[].image.format": "M2",
    "messages[].content[].video": "M4",
    "messages[].content[].video.format": "M3",
    "messages[].content[].document": "M14",
    "messages[].content[].reasoningContent": "S13",
    "messages[].content[].toolUse": "S14",
    "messages[].content[].toolResult": "S14",
    "messages[].candidates": "D4",
    "messages[].candidates[].preferenceLabel": "D5",
    "messages[].candidates[].content": "D6",
    "messages[].candidates[].content[]": "D6",
    "toolConfig": "S14",
}
for _kind in ("image", "video", "document"):
    _CONVERSE_TYPES[f"messages[].content[].{_kind}.source"] = "M4"
    _CONVERSE_TYPES[f"messages[].content[].{_kind}.source.s3Location.uri"] = "M5"
    _CONVERSE_TYPES[f"messages[].content[].{_kind}.source.s3Location.bucketOwner"] = "M6"

FORMATS: dict[str, FormatSchema] = {
    "sft": FormatSchema(
        "sft",
        CONVERSE,
        _CONVERSE_TYPES,
        unknown_rules={"messages[].content[]": "S10"},
        opaque=frozenset({"toolConfig", "messages[].content[].toolUse", "messages[].content[].toolResult"}),
        lean=_LEAN_SFT,
    ),
    "cpt": FormatSchema("cpt", CPT, {"text": "C1"}),
    "chat": FormatSchema(
        "chat",
        CHAT,
        {"messages": "B2", "messages[].role": "B3", "messages[].content": "B6"},
        unknown_rules={"": "B1", "messages[]": "B2"},
    ),
    "prompt-response": FormatSchema(
        "prompt-response", PROMPT_RESPONSE, {"prompt": "B8", "response": "B8", "completion": "B8"},
        unknown_rules={"": "B8"},
    ),
}
FORMATS["dpo"] = FormatSchema(
    "dpo", CONVERSE, _CONVERSE_TYPES, FORMATS["sft"].unknown_rules, FORMATS["sft"].opaque, _LEAN_DPO
)


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else "null"


_EXPECTED = {pa.types.is_struct: "object", pa.types.is_list: "array", pa.types.is_string: "string"}


def _expected(dtype: pa.DataType) -> str:
    return next(name for test, name in _EXPECTED.items() if test(dtype))


def walk(fmt: FormatSchema, record: dict) -> tuple[dict | None, list[Problem]]:
    """Type one decoded record against ``fmt``.

    Returns ``(typed, problems)``: ``typed`` is the record reduced to the schema's fields (opaque
    fields serialised to JSON text) ready for ``pa.Table.from_pylist``, or None when a type error
    makes the record unusable; ``problems`` holds type errors (errors) and unknown keys. An unknown
    key, even where it is an error (B1, B8, S10), leaves the record typed, so the semantic rules
    still run on it, as they do for the rows the block reader types.
    JSON ``null`` is treated like an absent key: the semantic rules decide whether it is required.
    """
    problems = _Found()
    typed = _walk_struct(fmt, record, fmt.schema, "", "", problems)
    return (None if problems.type_error else typed), list(problems)


class _Found(list):
    """The problems a walk found, and whether one was a type error."""

    type_error = False


def _walk_struct(fmt, value: dict, fields, spath: str, fpath: str, problems: _Found) -> dict:
    out = {}
    known = {f.name: f.type for f in fields}
    for key, item in value.items():
        child_spath = f"{spath}.{key}" if spath else key
        child_fpath = f"{fpath}.{key}" if fpath else key
        dtype = known.get(key)
        if dtype is None:
            if item is not None:  # null is absent (the block reader cannot tell the two apart)
                problems.append(unknown_key(fmt, spath, child_fpath, key))
            continue
        out[key] = _walk_value(fmt, item, dtype, child_spath, child_fpath, problems)
    return out


_UNKNOWN_HINT = {
    "S4": " is ignored by the service (misspelt?)",
    "S10": ": content blocks hold text, image, video (or document, reasoningContent, toolUse, toolResult on Nova 2)",
    "B1": ": chat records hold only 'messages'",
    "B2": ": chat messages hold only 'role' and 'content'",
    "B8": ": instruction records hold only 'prompt' and 'response'",
}


def unknown_key(fmt: FormatSchema, spath: str, fpath: str, key: str) -> Problem:
    """The problem for an unknown ``key`` inside the object at schema path ``spath``."""
    rule = fmt.unknown_rule(spath)
    return Problem.make(rule, fpath, f"unknown key {key!r}" + _UNKNOWN_HINT.get(rule, ""))


def _walk_value(fmt, item, dtype: pa.DataType, spath: str, fpath: str, problems: _Found):
    if item is None:
        return None
    if spath in fmt.opaque:
        return orjson.dumps(item).decode()
    want = _expected(dtype)
    got = _json_kind(item)
    if want != got:
        rule = fmt.type_rule(spath)
        severity = "error" if rule == "S2" else None  # S2's type error is an error, its value check a warning
        problems.append(Problem.make(rule, fpath, f"must be {_article(want)}, got {got}", severity=severity))
        problems.type_error = True
        return None
    if want == "object":
        return _walk_struct(fmt, item, dtype, spath, fpath, problems)
    if want == "array":
        return [
            _walk_value(fmt, v, dtype.value_type, f"{spath}[]", f"{fpath}[{i}]", problems) for i, v in enumerate(item)
        ]
    return item


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def unknown_columns(fmt: FormatSchema, table_schema: pa.Schema) -> Iterator[str]:
    """Top-level columns the block reader inferred beyond the format's schema."""
    known = set(fmt.block_schema.names)
    yield from (name for name in table_schema.names if name not in known)


MAX_DEPTH = 1024  # orjson's limit, rule F13


def nested_unknowns(fmt: FormatSchema, table_schema: pa.Schema) -> list[str]:
    """Known columns whose inferred type has nested fields beyond the block schema, and unknown columns the per-line path must judge: holding numbers (pyarrow reads NaN and Infinity, which RFC 8259 forbids) or nested deeper than rule F13 allows (pyarrow has no depth limit)."""
    out = []
    for f in fmt.block_schema:
        if f.name in table_schema.names and not covers(f.type, table_schema.field(f.name).type):
            out.append(f.name)
    out.extend(
        name
        for name in unknown_columns(fmt, table_schema)
        # a field of the full schema that the lean block schema leaves out (toolConfig) is typed per line
        if name in fmt.schema.names or needs_per_line(table_schema.field(name).type)
    )
    return out


def needs_per_line(dtype: pa.DataType) -> bool:
    """True for an unknown column's type whose values the per-line path must judge (see ``nested_unknowns``)."""
    # Iterative: an unknown column can be nested thousands of levels deep.
    stack = [(dtype, 2)]  # (type, JSON depth of its values: the record is depth 1)
    while stack:
        t, depth = stack.pop()
        if pa.types.is_floating(t):
            return True
        if pa.types.is_struct(t) or pa.types.is_list(t):
            if depth > MAX_DEPTH:
                return True
            children = [f.type for f in t] if pa.types.is_struct(t) else [t.value_type]
            stack.extend((c, depth + 1) for c in children)
    return False


def covers(want: pa.DataType, got: pa.DataType) -> bool:
    """True if every field of ``got`` (an inferred type) is one of ``want`` (a schema type), nested."""
    if pa.types.is_struct(want):
        names = {f.name: f.type for f in want}
        return all(g.name in names and covers(names[g.name], g.type) for g in got)
    if pa.types.is_list(want):
        return covers(want.value_type, got.value_type)
    return True
