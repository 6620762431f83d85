"""Every offline rule of data-formats.md sections 1-6: a passing and a failing case each.

Record-level cases are mutations of a valid base record, named by their field path
(``messages[0].content[0].image.format``). Every case is checked three ways that must agree
(``assert_same_both_ways``): inside a block of valid lines (the columnar fast path, with its
halving), alone, and with the block reader switched off so that every line goes through the
per-line orjson path and the structural walk; records that decode also go through
``validate_values``. File- and dataset-level rules (F1, F2, F4, F10, F11, M10, M11, D9, D10) run
through ``run_check`` on small files.

M12 (S3 object sizes) needs HEAD requests and is not tested here; F8 and F12 are not in the table
of offline checks (F8 is exercised by the CRLF cases).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import orjson
import pytest

import tunekit_data.check.blockcheck as blockcheck
from tunekit_data.check import RULES, CheckConfig, check_block, get_profile, run_check, validate_values
from tunekit_data.formats import Options

# --- base records ---------------------------------------------------------------------------------

SV = "bedrock-conversation-2024"
OWNER = "123456789012"


def image(fmt: str = "png", uri: str = "s3://my-bucket/images/cat.png", **loc) -> dict:
    return {"image": {"format": fmt, "source": {"s3Location": {"uri": uri, **loc}}}}


def video(fmt: str = "mp4", uri: str = "s3://my-bucket/videos/cat.mp4") -> dict:
    return {"video": {"format": fmt, "source": {"s3Location": {"uri": uri, "bucketOwner": OWNER}}}}


def document(fmt: str = "pdf", uri: str = "s3://my-bucket/docs/report.pdf") -> dict:
    return {"document": {"format": fmt, "name": "report", "source": {"s3Location": {"uri": uri}}}}


def user(*blocks: dict) -> dict:
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks: dict) -> dict:
    return {"role": "assistant", "content": list(blocks)}


def text(t: str) -> dict:
    return {"text": t}


SFT = {
    "schemaVersion": SV,
    "system": [text("You are a helpful assistant.")],
    "messages": [user(text("What is the capital of France?")), assistant(text("Paris."))],
}
SFT_IMAGE = {
    "schemaVersion": SV,
    "messages": [user(image(bucketOwner=OWNER), text("What is in this picture?")), assistant(text("A cat."))],
}
SFT_VIDEO = {"schemaVersion": SV, "messages": [user(video(), text("What happens here?")), assistant(text("A cat jumps."))]}
TOOL_CONFIG = {
    "tools": [
        {
            "toolSpec": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}},
            }
        }
    ]
}
NOVA2 = {
    "schemaVersion": SV,
    "toolConfig": TOOL_CONFIG,
    "messages": [
        user(text("Weather in Paris, please. Details are in the report."), document()),
        assistant(
            {"reasoningContent": {"reasoningText": {"text": "I should call the weather tool."}}},
            {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}},
        ),
        user({"toolResult": {"toolUseId": "t1", "content": [{"json": {"temp_c": 18.5}}]}}),
        assistant(text("It is 18.5 degrees in Paris.")),
    ],
}
DPO = {
    "schemaVersion": SV,
    "messages": [
        user(text("Write a haiku about autumn.")),
        {
            "role": "assistant",
            "candidates": [
                {"content": [text("Leaves drift to the ground")], "preferenceLabel": "preferred"},
                {"content": [text("Autumn is a season.")], "preferenceLabel": "non-preferred"},
            ],
        },
    ],
}
DPO_IMAGE = copy.deepcopy(DPO)
DPO_IMAGE["messages"][0]["content"].insert(0, image())
CPT = {"text": "Paris is the capital and largest city of France."}
CHAT = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
}
PROMPT_RESPONSE = {"prompt": "Capital of France?", "response": "Paris."}

BASES = {
    "sft": SFT,
    "sft-image": SFT_IMAGE,
    "sft-video": SFT_VIDEO,
    "nova2": NOVA2,
    "dpo": DPO,
    "dpo-image": DPO_IMAGE,
    "cpt": CPT,
    "chat": CHAT,
    "prompt-response": PROMPT_RESPONSE,
}
FORMAT_OF = {"sft-image": "sft", "sft-video": "sft", "nova2": "sft", "dpo-image": "dpo"}


def fmt_of(base: str) -> str:
    return FORMAT_OF.get(base, base)


# --- mutations, addressed by field path -----------------------------------------------------------

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _keys(path: str) -> list[str | int]:
    return [int(idx) if idx else name for name, idx in _STEP.findall(path)]


def _parent(record: dict, path: str) -> tuple[object, str | int]:
    *head, last = _keys(path)
    node = record
    for k in head:
        node = node[k]
    return node, last


def setp(path: str, value: object) -> Callable[[dict], None]:
    """Set the value at a field path (``messages[0].content[0].text``)."""

    def mutate(record: dict) -> None:
        node, last = _parent(record, path)
        node[last] = copy.deepcopy(value)  # type: ignore[index]

    return mutate


def delp(path: str) -> Callable[[dict], None]:
    """Delete the key or list item at a field path."""

    def mutate(record: dict) -> None:
        node, last = _parent(record, path)
        del node[last]  # type: ignore[arg-type]

    return mutate


def appendp(path: str, *values: object) -> Callable[[dict], None]:
    """Append values to the list at a field path."""

    def mutate(record: dict) -> None:
        node, last = _parent(record, path)
        node[last].extend(copy.deepcopy(list(values)))  # type: ignore[index]

    return mutate


def both(*mutations: Callable[[dict], None]) -> Callable[[dict], None]:
    def mutate(record: dict) -> None:
        for m in mutations:
            m(record)

    return mutate


def build(base: str, mutation: Callable[[dict], None] | None) -> dict:
    record = copy.deepcopy(BASES[base])
    if mutation is not None:
        mutation(record)
    return record


# --- checking a line both ways -------------------------------------------------------------------

PAD = 70  # valid lines on each side (more than blockcheck.LEAF_LINES): the reader halves around a bad line
Found = list[tuple[int, str, str, str, str]]  # (line, rule, severity, field, message)


def _run(data: bytes, fmt: str, profile: str, *, per_line: bool = False) -> tuple[Found, list[bool], list[bool]]:
    options = Options(get_profile(profile), fmt)
    if per_line:
        with mock.patch.object(blockcheck, "_read", return_value=None):
            result = check_block(data, 1, options)
    else:
        result = check_block(data, 1, options)
    found = sorted((line, p.rule, p.severity, p.field, p.message) for line, p in result.problems)
    return found, result.blank.tolist(), result.invalid.tolist()


def assert_same_both_ways(raw: bytes, fmt: str, profile: str = "nova-lite-1") -> tuple[Found, bool]:
    """Problems of one line (numbered 1), asserting that the paths agree: the line alone through the
    block reader and through the per-line path, and the line inside a block of valid lines.

    Returns the problems and whether the line is invalid.
    """
    filler = orjson.dumps(BASES[fmt]) + b"\n"
    alone = _run(raw + b"\n", fmt, profile)
    alone_slow = _run(raw + b"\n", fmt, profile, per_line=True)
    block = filler * PAD + raw + b"\n" + filler * PAD
    embedded = _run(block, fmt, profile)
    assert alone == alone_slow, "fast and per-line paths disagree on the line"
    moved = [(line - PAD, *rest) for line, *rest in embedded[0]]
    assert moved == alone[0], "the line reports differently inside a block and alone"
    assert embedded[2] == [False] * PAD + alone[2] + [False] * PAD
    return alone[0], alone[2][0]


def check_record(record: dict, fmt: str, profile: str = "nova-lite-1") -> tuple[Found, bool]:
    """``assert_same_both_ways`` for a decoded record, plus ``validate_values``."""
    found, invalid = assert_same_both_ways(orjson.dumps(record), fmt, profile)
    via_values = validate_values([record], fmt=fmt, profile=profile)[0]
    assert sorted((1, p.rule, p.severity, p.field, p.message) for p in via_values) == found
    return found, invalid


def triples(found: Found) -> set[tuple[str, str, str]]:
    return {(rule, severity, field) for _, rule, severity, field, _ in found}


# --- failing cases: (id, base, profile, mutation, expected {(rule, severity, field)}) --------------

E, W = "error", "warning"
M0C0 = "messages[0].content[0]"
IMG0 = f"{M0C0}.image"
URI0 = f"{IMG0}.source.s3Location.uri"
CAND = "messages[1].candidates"

FAILING = [
    # S1-S15: Converse SFT
    ("S1-missing", "sft", "nova-lite-1", delp("messages"), {("S1", E, "messages")}),
    ("S1-object", "sft", "nova-lite-1", setp("messages", {"role": "user"}), {("S1", E, "messages")}),
    ("S2-missing", "sft", "nova-lite-1", delp("schemaVersion"), {("S2", W, "schemaVersion")}),
    ("S2-other", "sft", "nova-lite-1", setp("schemaVersion", "v1"), {("S2", W, "schemaVersion")}),
    ("S2-number", "sft", "nova-lite-1", setp("schemaVersion", 2024), {("S2", E, "schemaVersion")}),
    ("S3-string", "sft", "nova-lite-1", setp("system", "Be terse."), {("S3", E, "system")}),
    ("S3-block-string", "sft", "nova-lite-1", setp("system", ["Be terse."]), {("S3", E, "system[0]")}),
    ("S3-text-number", "sft", "nova-lite-1", setp("system[0].text", 1), {("S3", E, "system[0].text")}),
    (
        "S3-no-text",
        "sft",
        "nova-lite-1",
        setp("system", [{"txt": "Be terse."}]),
        {("S3", E, "system[0].text"), ("S4", W, "system[0].txt")},
    ),
    ("S4-top", "sft", "nova-lite-1", setp("id", "rec-1"), {("S4", W, "id")}),
    ("S4-misspelt-system", "sft", "nova-lite-1", setp("sytem", [text("x")]), {("S4", W, "sytem")}),
    ("S4-message-key", "sft", "nova-lite-1", setp("messages[0].name", "bob"), {("S4", W, "messages[0].name")}),
    ("S5-one", "sft", "nova-lite-1", delp("messages[1]"), {("S5", E, "messages")}),
    ("S5-none", "sft", "nova-lite-1", setp("messages", []), {("S5", E, "messages")}),
    ("S6-capital", "sft", "nova-lite-1", setp("messages[0].role", "User"), {("S6", E, "messages[0].role")}),
    ("S6-system", "sft", "nova-lite-1", setp("messages[0].role", "system"), {("S6", E, "messages[0].role")}),
    ("S6-missing", "sft", "nova-lite-1", delp("messages[1].role"), {("S6", E, "messages[1].role")}),
    ("S6-number", "sft", "nova-lite-1", setp("messages[1].role", 1), {("S6", E, "messages[1].role")}),
    (
        "S7-two-users",
        "sft",
        "nova-lite-1",
        setp("messages", [user(text("a")), user(text("b")), assistant(text("c"))]),
        # one misplaced turn is one problem, not one per later turn
        {("S7", E, "messages[1].role")},
    ),
    (
        "S7-assistant-first",
        "sft",
        "nova-lite-1",
        setp("messages", [assistant(text("a")), user(text("b")), assistant(text("c"))]),
        {("S7", E, "messages[0].role")},
    ),
    (
        "S7-two-assistants-mid-record",
        "sft",
        "nova-lite-1",
        setp("messages", [user(text("a")), assistant(text("b")), assistant(text("c")), user(text("d")), assistant(text("e"))]),
        {("S7", E, "messages[2].role")},
    ),
    ("S8-last-user", "sft", "nova-lite-1", appendp("messages", user(text("More?"))), {("S8", E, "messages[2].role")}),
    ("S9-empty", "sft", "nova-lite-1", setp("messages[0].content", []), {("S9", E, "messages[0].content")}),
    ("S9-missing", "sft", "nova-lite-1", delp("messages[1].content"), {("S9", E, "messages[1].content")}),
    ("S9-string", "sft", "nova-lite-1", setp("messages[0].content", "Hi"), {("S9", E, "messages[0].content")}),
    ("S10-empty-block", "sft", "nova-lite-1", setp("messages[0].content", [{}]), {("S10", E, M0C0)}),
    (
        "S10-two-members",
        "sft-image",
        "nova-lite-1",
        setp("messages[0].content", [{**image(), "text": "What is this?"}]),
        {("S10", E, M0C0)},
    ),
    (
        "S10-unknown-member",
        "sft",
        "nova-lite-1",
        setp("messages[0].content", [{"audio": {"format": "mp3"}}, text("Hi")]),
        {("S10", E, M0C0), ("S10", E, f"{M0C0}.audio")},
    ),
    ("S10-string-block", "sft", "nova-lite-1", setp("messages[0].content", ["Hi"]), {("S10", E, M0C0)}),
    ("S11-empty", "sft", "nova-lite-1", setp("messages[1].content[0].text", ""), {("S11", E, "messages[1].content")}),
    (
        "S11-whitespace",
        "sft",
        "nova-lite-1",
        setp("messages[1].content[0].text", " \n\t\u3000 "),
        {("S11", E, "messages[1].content")},
    ),
    ("S11-number", "sft", "nova-lite-1", setp("messages[0].content[0].text", 42), {("S11", E, f"{M0C0}.text")}),
    ("S12-user", "sft", "nova-lite-1", setp("messages[0].content[0].text", "User: hi"), {("S12", E, f"{M0C0}.text")}),
    (
        "S12-case-insensitive",
        "sft",
        "nova-lite-1",
        setp("messages[1].content[0].text", "the bot: said ASSISTANT: no"),
        {("S12", E, "messages[1].content[0].text")},
    ),
    ("S12-eos", "sft", "nova-lite-1", setp("messages[1].content[0].text", "Paris.[EOS]"), {("S12", E, "messages[1].content[0].text")}),
    ("S12-image-tag", "sft", "nova-lite-1", setp("messages[0].content[0].text", "see <image>"), {("S12", E, f"{M0C0}.text")}),
    ("S12-video-tag", "sft", "nova-lite-1", setp("messages[0].content[0].text", "see <VIDEO>"), {("S12", E, f"{M0C0}.text")}),
    ("S12-system", "sft", "nova-lite-1", setp("system[0].text", "System: be terse"), {("S12", E, "system[0].text")}),
    ("S12-thought", "sft", "nova-lite-1", setp("messages[1].content[0].text", "Thought: easy"), {("S12", W, "messages[1].content[0].text")}),
    ("S12-unk", "sft", "nova-lite-1", setp("messages[1].content[0].text", "Paris <unk>"), {("S12", W, "messages[1].content[0].text")}),
    (
        "S12-candidate",
        "dpo",
        "nova-lite-1",
        setp("messages[1].candidates[1].content[0].text", "Bot: no"),
        {("S12", E, f"{CAND}[1].content[0].text")},
    ),
    (
        "S13-nova1",
        "sft",
        "nova-lite-1",
        setp("messages[1].content", [{"reasoningContent": {"reasoningText": {"text": "hmm"}}}, text("Paris.")]),
        {("S13", E, "messages[1].content[0].reasoningContent")},
    ),
    (
        "S13-user-turn",
        "sft",
        "nova-lite-2",
        setp("messages[0].content", [{"reasoningContent": {"reasoningText": {"text": "hmm"}}}, text("Hi")]),
        {("S13", E, f"{M0C0}.reasoningContent")},
    ),
    (
        "S13-empty",
        "sft",
        "nova-lite-2",
        setp("messages[1].content", [{"reasoningContent": {"reasoningText": {"text": " "}}}, text("Paris.")]),
        {("S13", E, "messages[1].content[0].reasoningContent.reasoningText.text")},
    ),
    (
        "S13-with-image",
        "sft-image",
        "nova-lite-2",
        setp("messages[1].content", [{"reasoningContent": {"reasoningText": {"text": "hmm"}}}, text("A cat.")]),
        {("S13", E, "messages[1].content[0].reasoningContent")},
    ),
    ("S14-nova1-config", "nova2", "nova-lite-1", None, {
        ("S14", E, "toolConfig"),
        ("S14", E, "messages[1].content[1].toolUse"),
        ("S14", E, "messages[2].content[0].toolResult"),
        ("S13", E, "messages[1].content[0].reasoningContent"),
        ("M14", E, "messages[0].content[1].document"),
    }),
    ("S14-no-tools", "nova2", "nova-lite-2", setp("toolConfig.tools", []), {
        ("S14", E, "toolConfig.tools"),
        ("S14", E, "messages[1].content[1].toolUse.name"),
    }),
    (
        "S14-duplicate-name",
        "nova2",
        "nova-lite-2",
        appendp("toolConfig.tools", TOOL_CONFIG["tools"][0]),
        {("S14", E, "toolConfig.tools[1].toolSpec.name")},
    ),
    (
        "S14-no-description",
        "nova2",
        "nova-lite-2",
        setp("toolConfig.tools[0].toolSpec.description", ""),
        {("S14", E, "toolConfig.tools[0].toolSpec.description")},
    ),
    (
        "S14-schema-without-type",
        "nova2",
        "nova-lite-2",
        setp("toolConfig.tools[0].toolSpec.inputSchema.json", {"properties": {}}),
        {("S14", E, "toolConfig.tools[0].toolSpec.inputSchema.json")},
    ),
    (
        "S14-undefined-tool",
        "nova2",
        "nova-lite-2",
        setp("messages[1].content[1].toolUse.name", "get_time"),
        {("S14", E, "messages[1].content[1].toolUse.name")},
    ),
    (
        "S14-tool-use-in-user-turn",
        "nova2",
        "nova-lite-2",
        setp("messages[0].content[0]", {"toolUse": {"toolUseId": "t0", "name": "get_weather", "input": {}}}),
        {("S14", E, "messages[0].content[0].toolUse")},
    ),
    (
        "S14-result-in-assistant-turn",
        "nova2",
        "nova-lite-2",
        setp("messages[3].content", [{"toolResult": {"toolUseId": "t1", "content": [text("18.5")]}}]),
        {("S14", E, "messages[3].content[0].toolResult"), ("S14", E, "messages[3].content[0].toolResult.toolUseId")},
    ),
    (
        "S14-unknown-use-id",
        "nova2",
        "nova-lite-2",
        setp("messages[2].content[0].toolResult.toolUseId", "t9"),
        {("S14", E, "messages[2].content[0].toolResult.toolUseId")},
    ),
    (
        "S14-duplicate-use-id",
        "nova2",
        "nova-lite-2",
        appendp("messages[1].content", {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {}}}),
        {("S14", E, "messages[1].content[2].toolUse.toolUseId")},
    ),
    (
        "S14-result-text-and-json",
        "nova2",
        "nova-lite-2",
        setp("messages[2].content[0].toolResult.content", [{"text": "18.5", "json": {"t": 18.5}}]),
        {("S14", E, "messages[2].content[0].toolResult.content[0]")},
    ),
    (
        "S14-use-without-config",
        "nova2",
        "nova-lite-2",
        delp("toolConfig"),
        {("S14", E, "toolConfig")},
    ),
    ("S15-image", "sft-image", "nova-micro-1", None, {("S15", E, IMG0)}),
    ("S15-video", "sft-video", "nova-micro-1", None, {("S15", E, f"{M0C0}.video")}),
    # M1-M14: media as S3 references
    (
        "M1-assistant-image",
        "sft-image",
        "nova-lite-1",
        setp("messages[1].content", [image(), text("A cat.")]),
        {("M1", E, "messages[1].content[0].image")},
    ),
    ("M2-jpg", "sft-image", "nova-lite-1", setp(f"{IMG0}.format", "jpg"), {("M2", E, f"{IMG0}.format")}),
    ("M2-bmp", "sft-image", "nova-lite-1", setp(f"{IMG0}.format", "bmp"), {("M2", E, f"{IMG0}.format")}),
    ("M2-upper-case", "sft-image", "nova-lite-1", setp(f"{IMG0}.format", "JPEG"), {("M2", W, f"{IMG0}.format")}),
    ("M2-missing", "sft-image", "nova-lite-1", delp(f"{IMG0}.format"), {("M2", E, f"{IMG0}.format")}),
    ("M2-number", "sft-image", "nova-lite-1", setp(f"{IMG0}.format", 1), {("M2", E, f"{IMG0}.format")}),
    ("M2-webp-nova2", "sft-image", "nova-lite-2", setp(f"{IMG0}.format", "webp"), {("M2", E, f"{IMG0}.format")}),
    ("M3-flv", "sft-video", "nova-lite-1", setp(f"{M0C0}.video.format", "flv"), {("M3", E, f"{M0C0}.video.format")}),
    ("M3-three-gp", "sft-video", "nova-lite-1", setp(f"{M0C0}.video.format", "three_gp"), {("M3", E, f"{M0C0}.video.format")}),
    ("M3-upper-case", "sft-video", "nova-lite-1", setp(f"{M0C0}.video.format", "MP4"), {("M3", W, f"{M0C0}.video.format")}),
    ("M3-webm-nova2", "sft-video", "nova-lite-2", setp(f"{M0C0}.video.format", "webm"), {("M3", E, f"{M0C0}.video.format")}),
    (
        "M4-bytes",
        "sft-image",
        "nova-lite-1",
        setp(f"{IMG0}.source", {"bytes": "iVBORw0KGgo="}),
        {("M4", E, f"{IMG0}.source.s3Location"), ("S4", W, f"{IMG0}.source.bytes")},
    ),
    ("M4-no-source", "sft-image", "nova-lite-1", delp(f"{IMG0}.source"), {("M4", E, f"{IMG0}.source.s3Location")}),
    ("M4-source-string", "sft-image", "nova-lite-1", setp(f"{IMG0}.source", "s3://my-bucket/a.png"), {("M4", E, f"{IMG0}.source")}),
    ("M5-scheme", "sft-image", "nova-lite-1", setp(URI0, "S3://my-bucket/a.png"), {("M5", E, URI0)}),
    ("M5-https", "sft-image", "nova-lite-1", setp(URI0, "https://my-bucket.s3.amazonaws.com/a.png"), {("M5", E, URI0)}),
    ("M5-upper-case-bucket", "sft-image", "nova-lite-1", setp(URI0, "s3://My-Bucket/a.png"), {("M5", E, URI0)}),
    ("M5-underscore-bucket", "sft-image", "nova-lite-1", setp(URI0, "s3://my_bucket/a.png"), {("M5", E, URI0)}),
    ("M5-bucket-only", "sft-image", "nova-lite-1", setp(URI0, "s3://my-bucket"), {("M5", E, URI0)}),
    ("M5-empty-key", "sft-image", "nova-lite-1", setp(URI0, "s3://my-bucket/"), {("M5", E, URI0)}),
    ("M5-key-space", "sft-image", "nova-lite-1", setp(URI0, "s3://my-bucket/my cat.png"), {("M5", E, URI0)}),
    ("M5-key-non-ascii", "sft-image", "nova-lite-1", setp(URI0, "s3://my-bucket/café.png"), {("M5", E, URI0)}),
    ("M5-too-long", "sft-image", "nova-lite-1", setp(URI0, "s3://my-bucket/" + "a" * 1010), {("M5", E, URI0)}),
    ("M5-missing", "sft-image", "nova-lite-1", delp(URI0), {("M5", E, URI0)}),
    ("M5-number", "sft-image", "nova-lite-1", setp(URI0, 5), {("M5", E, URI0)}),
    ("M6-short", "sft-image", "nova-lite-1", setp(f"{IMG0}.source.s3Location.bucketOwner", "12345"), {("M6", E, f"{IMG0}.source.s3Location.bucketOwner")}),
    (
        "M6-placeholder",
        "sft-image",
        "nova-lite-1",
        setp(f"{IMG0}.source.s3Location.bucketOwner", "your-aws-account-id"),
        {("M6", E, f"{IMG0}.source.s3Location.bucketOwner")},
    ),
    (
        "M6-thirteen-digits",
        "sft-image",
        "nova-lite-1",
        setp(f"{IMG0}.source.s3Location.bucketOwner", "1234567890123"),
        {("M6", E, f"{IMG0}.source.s3Location.bucketOwner")},
    ),
    (
        "M6-number",
        "sft-image",
        "nova-lite-1",
        setp(f"{IMG0}.source.s3Location.bucketOwner", 123456789012),
        {("M6", E, f"{IMG0}.source.s3Location.bucketOwner")},
    ),
    ("M7-eleven", "sft-image", "nova-lite-1", setp("messages[0].content", [image()] * 11 + [text("?")]), {("M7", E, "messages")}),
    (
        "M7-six-plus-six",
        "sft-image",
        "nova-lite-1",
        setp(
            "messages",
            [user(*[image()] * 6, text("a")), assistant(text("b")), user(*[image()] * 6, text("c")), assistant(text("d"))],
        ),
        {("M7", E, "messages")},
    ),
    (
        "M8-two-turns",
        "sft-video",
        "nova-lite-1",
        setp("messages", [user(video(), text("a")), assistant(text("b")), user(video(), text("c")), assistant(text("d"))]),
        {("M8", E, "messages")},
    ),
    (
        "M9-image-and-video-in-two-turns",
        "sft-image",
        "nova-lite-1",
        setp("messages", [user(image(), text("a")), assistant(text("b")), user(video(), text("c")), assistant(text("d"))]),
        {("M9", E, "messages")},
    ),
    ("M9-image-and-document", "sft-image", "nova-lite-2", appendp("messages[0].content", document()), {("M9", E, "messages")}),
    ("M14-nova1", "sft", "nova-lite-1", appendp("messages[0].content", document()), {("M14", E, "messages[0].content[1].document")}),
    ("M14-format", "nova2", "nova-lite-2", setp("messages[0].content[1].document.format", "docx"), {("M14", E, "messages[0].content[1].document.format")}),
    ("M14-two", "nova2", "nova-lite-2", appendp("messages[0].content", document()), {("M14", E, "messages")}),
    # D2-D11: DPO
    ("D2-no-candidates", "dpo", "nova-lite-1", setp("messages[1]", assistant(text("Leaves fall."))), {("D2", E, "messages[1]")}),
    ("D2-also-content", "dpo", "nova-lite-1", setp("messages[1].content", [text("Leaves fall.")]), {("D2", E, "messages[1].content")}),
    ("D2-user-role", "dpo", "nova-lite-1", setp("messages[1].role", "user"), {
        ("D2", E, "messages[1].role"),
        ("S7", E, "messages[1].role"),
        ("S8", E, "messages[1].role"),
    }),
    (
        "D3-early-candidates",
        "dpo",
        "nova-lite-1",
        setp("messages", [user(text("a")), {**assistant(text("b")), "candidates": DPO["messages"][1]["candidates"]}, user(text("c")), DPO["messages"][1]]),
        {("D3", E, "messages[1].candidates")},
    ),
    (
        "D4-three",
        "dpo",
        "nova-lite-1",
        appendp(CAND, {"content": [text("Another one.")], "preferenceLabel": "non-preferred"}),
        {("D4", E, CAND)},
    ),
    ("D4-two-preferred", "dpo", "nova-lite-1", setp(f"{CAND}[1].preferenceLabel", "preferred"), {("D4", E, CAND)}),
    ("D4-one", "dpo", "nova-lite-1", delp(f"{CAND}[1]"), {("D4", E, CAND)}),
    ("D4-not-array", "dpo", "nova-lite-1", setp(CAND, {"preferred": "a"}), {("D4", E, CAND)}),
    ("D5-chosen", "dpo", "nova-lite-1", setp(f"{CAND}[0].preferenceLabel", "chosen"), {("D5", E, f"{CAND}[0].preferenceLabel"), ("D4", E, CAND)}),
    ("D5-nonpreferred", "dpo", "nova-lite-1", setp(f"{CAND}[1].preferenceLabel", "nonpreferred"), {("D5", E, f"{CAND}[1].preferenceLabel"), ("D4", E, CAND)}),
    ("D5-missing", "dpo", "nova-lite-1", delp(f"{CAND}[1].preferenceLabel"), {("D5", E, f"{CAND}[1].preferenceLabel"), ("D4", E, CAND)}),
    ("D5-number", "dpo", "nova-lite-1", setp(f"{CAND}[1].preferenceLabel", 0), {("D5", E, f"{CAND}[1].preferenceLabel")}),
    ("D6-empty", "dpo", "nova-lite-1", setp(f"{CAND}[0].content", []), {("D6", E, f"{CAND}[0].content")}),
    ("D6-missing", "dpo", "nova-lite-1", delp(f"{CAND}[0].content"), {("D6", E, f"{CAND}[0].content")}),
    ("D6-whitespace", "dpo", "nova-lite-1", setp(f"{CAND}[0].content[0].text", "  "), {("D6", E, f"{CAND}[0].content")}),
    ("D7-image", "dpo", "nova-lite-1", appendp(f"{CAND}[0].content", image()), {("D7", E, f"{CAND}[0].content[1].image")}),
    ("D8-video", "dpo", "nova-lite-1", setp("messages[0].content", [video(), text("Describe it.")]), {("D8", E, f"{M0C0}.video")}),
    ("D11-identical", "dpo", "nova-lite-1", setp(f"{CAND}[1].content", [text("Leaves drift to the ground")]), {("D11", W, CAND)}),
    (
        "D11-identical-multi-block",
        "dpo",
        "nova-lite-1",
        both(setp(f"{CAND}[0].content", [text("Leaves "), text("fall")]), setp(f"{CAND}[1].content", [text("Leav"), text("es fall")])),
        {("D11", W, CAND)},
    ),
    # C1: Nova CPT
    ("C1-empty", "cpt", "nova-lite-1", setp("text", ""), {("C1", E, "text")}),
    ("C1-whitespace", "cpt", "nova-lite-1", setp("text", " \n "), {("C1", E, "text")}),
    ("C1-missing", "cpt", "nova-lite-1", both(delp("text"), setp("body", "x")), {("C1", E, "text"), ("S4", W, "body")}),
    ("C1-number", "cpt", "nova-lite-1", setp("text", 1), {("C1", E, "text")}),
    # B1-B8: Databricks
    ("B1-extra-key", "chat", "nova-lite-1", setp("id", 7), {("B1", E, "id")}),
    ("B2-one-message", "chat", "nova-lite-1", setp("messages", [{"role": "user", "content": "Paris?"}]), {("B2", E, "messages")}),
    ("B2-no-content", "chat", "nova-lite-1", delp("messages[2].content"), {("B2", E, "messages[2].content")}),
    ("B2-extra-message-key", "chat", "nova-lite-1", setp("messages[1].name", "bob"), {("B2", E, "messages[1].name")}),
    ("B2-not-array", "chat", "nova-lite-1", setp("messages", "hi"), {("B2", E, "messages")}),
    ("B3-tool", "chat", "nova-lite-1", setp("messages[1].role", "tool"), {("B3", E, "messages[1].role")}),
    ("B4-system-late", "chat", "nova-lite-1", appendp("messages", {"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}), {("B4", E, "messages[3].role")}),
    ("B4-two-users", "chat", "nova-lite-1", setp("messages[2].role", "user"), {("B4", E, "messages[2].role"), ("B5", E, "messages[2].role")}),
    ("B5-last-user", "chat", "nova-lite-1", appendp("messages", {"role": "user", "content": "More?"}), {("B5", E, "messages[3].role")}),
    ("B6-list-content", "chat", "nova-lite-1", setp("messages[2].content", [{"type": "text", "text": "Paris."}]), {("B6", E, "messages[2].content")}),
    ("B8-no-response", "prompt-response", "nova-lite-1", delp("response"), {("B8", E, "response")}),
    ("B8-no-prompt", "prompt-response", "nova-lite-1", delp("prompt"), {("B8", E, "prompt")}),
    ("B8-prompt-number", "prompt-response", "nova-lite-1", setp("prompt", 1), {("B8", E, "prompt")}),
    ("B8-extra-key", "prompt-response", "nova-lite-1", setp("context", "x"), {("B8", E, "context")}),
    ("B8-both-answers", "prompt-response", "nova-lite-1", setp("completion", "Paris"), {("B8", E, "completion")}),
]


@pytest.mark.parametrize(("case", "base", "profile", "mutation", "expected"), FAILING, ids=[c[0] for c in FAILING])
def test_failing_case(case, base, profile, mutation, expected):
    found, invalid = check_record(build(base, mutation), fmt_of(base), profile)
    assert triples(found) == expected, found
    assert all(line == 1 for line, *_ in found)
    assert invalid == any(sev == E for _, sev, _ in expected)
    for _, rule, severity, _, message in found:
        assert rule in RULES
        assert severity in (E, W)
        assert message


# --- passing cases: (id, rule, base, profile, mutation): the rule stays silent, the record valid -----

PASSING = [
    ("S1", "S1", "sft", "nova-lite-1", None),
    ("S2-absent-is-fine-for-errors", "S2", "sft", "nova-lite-1", setp("schemaVersion", SV)),
    ("S3-empty-array", "S3", "sft", "nova-lite-1", setp("system", [])),
    ("S3-absent", "S3", "sft", "nova-lite-1", delp("system")),
    ("S3-several-blocks", "S3", "sft", "nova-lite-1", setp("system", [text("a"), text("b")])),
    ("S4-null-unknown", "S4", "sft", "nova-lite-1", setp("id", None)),
    ("S5-two", "S5", "sft", "nova-lite-1", None),
    ("S6-lower-case", "S6", "sft", "nova-lite-1", None),
    ("S7-four-turns", "S7", "sft", "nova-lite-1", appendp("messages", user(text("And Spain?")), assistant(text("Madrid.")))),
    ("S8", "S8", "sft", "nova-lite-1", None),
    ("S9", "S9", "sft", "nova-lite-1", None),
    ("S10-one-member", "S10", "sft-image", "nova-lite-1", None),
    ("S10-null-member", "S10", "sft", "nova-lite-1", setp("messages[0].content[0].image", None)),
    ("S11-empty-next-to-text", "S11", "sft", "nova-lite-1", appendp("messages[1].content", text(""))),
    ("S11-empty-next-to-image", "S11", "sft-image", "nova-lite-1", setp("messages[0].content[1].text", "")),
    ("S11-media-only", "S11", "sft-image", "nova-lite-1", delp("messages[0].content[1]")),
    ("S12-no-colon", "S12", "sft", "nova-lite-1", setp("messages[0].content[0].text", "Users and assistants are people. <b>image</b>")),
    ("S13-nova2-assistant", "S13", "sft", "nova-lite-2", setp("messages[1].content", [{"reasoningContent": {"reasoningText": {"text": "hmm"}}}, text("Paris.")])),
    ("S14-nova2", "S14", "nova2", "nova-lite-2", None),
    ("S14-result-text", "S14", "nova2", "nova-lite-2", setp("messages[2].content[0].toolResult.content", [text("18.5")])),
    ("S15-micro-text", "S15", "sft", "nova-micro-1", None),
    ("M1-user-image", "M1", "sft-image", "nova-lite-1", None),
    ("M2-webp-nova1", "M2", "sft-image", "nova-lite-1", setp(f"{IMG0}.format", "webp")),
    ("M2-jpeg", "M2", "sft-image", "nova-lite-2", setp(f"{IMG0}.format", "jpeg")),
    ("M2-gif", "M2", "sft-image", "nova-pro-1", setp(f"{IMG0}.format", "gif")),
    ("M3-webm-nova1", "M3", "sft-video", "nova-lite-1", setp(f"{M0C0}.video.format", "webm")),
    ("M3-mkv-nova2", "M3", "sft-video", "nova-lite-2", setp(f"{M0C0}.video.format", "mkv")),
    ("M4", "M4", "sft-image", "nova-lite-1", None),
    ("M5-dots-and-digits", "M5", "sft-image", "nova-lite-1", setp(URI0, "s3://my.bucket-01/a/b_c/d-e.f.png")),
    ("M5-exactly-1024", "M5", "sft-image", "nova-lite-1", setp(URI0, "s3://my-bucket/" + "a" * 1009)),
    ("M6-absent", "M6", "sft-image", "nova-lite-1", delp(f"{IMG0}.source.s3Location.bucketOwner")),
    ("M6-twelve-digits", "M6", "sft-image", "nova-lite-1", setp(f"{IMG0}.source.s3Location.bucketOwner", "000000000000")),
    ("M7-ten", "M7", "sft-image", "nova-lite-1", setp("messages[0].content", [image()] * 10 + [text("?")])),
    ("M7-five-plus-five", "M7", "sft-image", "nova-lite-1", setp("messages", [user(*[image()] * 5, text("a")), assistant(text("b")), user(*[image()] * 5, text("c")), assistant(text("d"))])),
    ("M8-one", "M8", "sft-video", "nova-lite-1", None),
    ("M9-images-only", "M9", "sft-image", "nova-lite-1", setp("messages", [user(image(), text("a")), assistant(text("b")), user(image(), text("c")), assistant(text("d"))])),
    ("M14-nova2-pdf", "M14", "nova2", "nova-lite-2", None),
    ("D2", "D2", "dpo", "nova-lite-1", None),
    ("D3", "D3", "dpo", "nova-lite-1", setp("messages", [user(text("a")), assistant(text("b")), user(text("c")), DPO["messages"][1]])),
    ("D4", "D4", "dpo", "nova-lite-1", None),
    ("D4-order", "D4", "dpo", "nova-lite-1", setp(CAND, list(reversed(DPO["messages"][1]["candidates"])))),
    ("D5", "D5", "dpo", "nova-lite-1", None),
    ("D6-several-text-blocks", "D6", "dpo", "nova-lite-1", appendp(f"{CAND}[0].content", text(" Crisp air."))),
    ("D7", "D7", "dpo", "nova-lite-1", None),
    ("D8-image-prompt", "D8", "dpo-image", "nova-pro-1", None),
    ("D11", "D11", "dpo", "nova-lite-1", None),
    ("C1", "C1", "cpt", "nova-lite-1", None),
    ("B1", "B1", "chat", "nova-lite-1", None),
    ("B2", "B2", "chat", "nova-lite-1", delp("messages[0]")),
    ("B3", "B3", "chat", "nova-lite-1", None),
    ("B4-no-system", "B4", "chat", "nova-lite-1", delp("messages[0]")),
    ("B5", "B5", "chat", "nova-lite-1", None),
    ("B6", "B6", "chat", "nova-lite-1", None),
    ("B8-completion", "B8", "prompt-response", "nova-lite-1", both(delp("response"), setp("completion", "Paris."))),
]


@pytest.mark.parametrize(("case", "rule", "base", "profile", "mutation"), PASSING, ids=[c[0] for c in PASSING])
def test_passing_case(case, rule, base, profile, mutation):
    found, invalid = check_record(build(base, mutation), fmt_of(base), profile)
    assert not invalid, found
    assert [f for f in found if f[1] == rule] == []
    assert found == [], found  # the bases are clean, and so is every passing variant


# --- line rules on raw bytes ----------------------------------------------------------------------

SFT_LINE = orjson.dumps(SFT)

RAW_FAILING = [
    ("F3-invalid-utf8", SFT_LINE.replace(b"Paris.", b"Par\xffis."), "F3"),
    ("F3-overlong", SFT_LINE.replace(b"Paris.", b"\xc0\xae"), "F3"),
    ("F3-utf8-surrogate", SFT_LINE.replace(b"Paris.", b"\xed\xa0\x80"), "F3"),
    ("F3-in-key", SFT_LINE[:-1] + b',"\xff":1}', "F3"),
    ("F5-nan", SFT_LINE[:-1] + b',"score":NaN}', "F5"),
    ("F5-infinity", SFT_LINE[:-1] + b',"score":Infinity}', "F5"),
    ("F5-minus-infinity", SFT_LINE[:-1] + b',"score":[-Infinity]}', "F5"),
    ("F5-nan-in-text", SFT_LINE.replace(b'"Paris."', b"NaN"), "F5"),
    ("F5-overflow", SFT_LINE[:-1] + b',"score":1e999}', "F5"),
    ("F5-trailing-comma", SFT_LINE[:-1] + b",}", "F5"),
    ("F5-comment", b"// train.jsonl", "F5"),
    ("F5-single-quotes", b"{'messages': []}", "F5"),
    ("F5-two-values", SFT_LINE + b" " + SFT_LINE, "F5"),
    ("F5-two-values-glued", SFT_LINE + SFT_LINE, "F5"),
    ("F5-object-then-null", SFT_LINE + b" null", "F5"),
    ("F5-open-brace", b"{", "F5"),
    ("F5-garbage-after", SFT_LINE + b"x", "F5"),
    ("F5-bom-on-later-line", b"\xef\xbb\xbf" + SFT_LINE, "F5"),
    ("F5-control-char", SFT_LINE.replace(b"Paris.", b"Par\tis."), "F5"),
    ("F5-bad-escape", SFT_LINE.replace(b"Paris.", b"\\x41"), "F5"),
    ("F5-leading-zero", SFT_LINE[:-1] + b',"n":01}', "F5"),
    ("F5-python-literal", SFT_LINE[:-1] + b',"ok":True}', "F5"),
    ("F5-form-feed", b"\x0c", "F5"),
    ("F5-lone-cr-splits-nothing", SFT_LINE + b"\r" + SFT_LINE, "F5"),
    ("F6-array", b"[1, 2]", "F6"),
    ("F6-empty-array", b"[]", "F6"),
    ("F6-string", b'"hello"', "F6"),
    ("F6-number", b"42", "F6"),
    ("F6-null", b"null", "F6"),
    ("F6-null-padded", b"  null ", "F6"),
    ("F6-true", b"true", "F6"),
    ("F9-lone-high", SFT_LINE.replace(b"Paris.", b"\\ud800"), "F9"),
    ("F9-lone-low", SFT_LINE.replace(b"Paris.", b"\\udc00x"), "F9"),
    ("F9-two-highs", SFT_LINE.replace(b"Paris.", b"\\ud800\\ud800"), "F9"),
    ("F9-in-unknown-key", SFT_LINE[:-1] + b',"\\ud800":1}', "F9"),
    ("F13-arrays", SFT_LINE[:-1] + b',"x":' + b"[" * 1024 + b"]" * 1024 + b"}", "F13"),
    ("F13-objects", SFT_LINE[:-1] + b',"x":' + b'{"a":' * 1100 + b"1" + b"}" * 1100 + b"}", "F13"),
    ("F13-very-deep", b"[" * 100_000 + b"]" * 100_000, "F13"),
    ("F13-very-deep-object", SFT_LINE[:-1] + b',"x":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}", "F13"),
    ("F5-unclosed-deep", b"{" + b'"a":[' * 30_000, "F5"),  # never reaches the block reader (a segfault)
]


@pytest.mark.parametrize(("case", "raw", "rule"), RAW_FAILING, ids=[c[0] for c in RAW_FAILING])
def test_line_rule_failing(case, raw, rule):
    found, invalid = assert_same_both_ways(raw, "sft")
    assert invalid
    assert [(line, r, sev, field) for line, r, sev, field, _ in found] == [(1, rule, E, "")]


RAW_PASSING = [
    ("F3-valid-multibyte", SFT_LINE.replace(b"Paris.", "Paris ✓ 日本 😀".encode())),
    ("F5-whitespace-around", b" \t" + SFT_LINE + b" \t"),
    ("F5-escaped-keys", SFT_LINE.replace(b'"messages"', b'"mess\\u0061ges"').replace(b'"user"', b'"\\u0075ser"')),
    ("F5-crlf", SFT_LINE + b"\r"),
    ("F5-pretty-spacing", orjson.dumps(SFT, option=orjson.OPT_INDENT_2).replace(b"\n", b" ")),
    ("F6-object", SFT_LINE),
    ("F9-surrogate-pair", SFT_LINE.replace(b"Paris.", b"\\ud83d\\ude00")),
    ("F9-nul-escape", SFT_LINE.replace(b"Paris.", b"Par\\u0000is")),
    ("F13-depth-1024", SFT_LINE[:-1] + b',"x":' + b"[" * 1023 + b"]" * 1023 + b"}"),
]


@pytest.mark.parametrize(("case", "raw"), RAW_PASSING, ids=[c[0] for c in RAW_PASSING])
def test_line_rule_passing(case, raw):
    found, invalid = assert_same_both_ways(raw, "sft")
    assert not invalid, found
    assert {r for _, r, *_ in found} <= {"S4"}, found  # F13-depth-1024 carries an unknown key


@pytest.mark.parametrize("raw", [b"", b" ", b"\t", b"\r", b"  \t \r"], ids=["empty", "space", "tab", "cr", "mixed"])
def test_f7_blank_line_is_not_a_record(raw):
    found, invalid = assert_same_both_ways(raw, "sft")
    assert not invalid
    assert [(line, r, sev, field) for line, r, sev, field, _ in found] == [(1, "F7", W, "")]
    result = check_block(raw + b"\n", 1, Options(get_profile("nova-lite-1"), "sft"))
    assert result.blank.tolist() == [True]
    assert (result.stats.records, result.stats.valid) == (0, 0)


# --- the same problems whether a block is read fast or line by line, across many bad lines ----------


def test_many_bad_lines_in_one_block_keep_their_numbers():
    """A block mixing every kind of bad line with valid and blank ones: the halving and the per-line
    path put each problem on its own physical line."""
    good = SFT_LINE
    lines = []
    expected = {}
    bad = [raw for _, raw, _ in RAW_FAILING[:20]] + [b"", b"  "]
    for i in range(300):
        if i % 13 == 5:
            raw = bad[(i // 13) % len(bad)]
            lines.append(raw)
            expected[i + 1] = raw
        else:
            lines.append(good)
    data = b"\n".join(lines) + b"\n"
    fast = _run(data, "sft", "nova-lite-1")
    slow = _run(data, "sft", "nova-lite-1", per_line=True)
    assert fast == slow
    found_lines = {line for line, *_ in fast[0]}
    assert found_lines == set(expected)
    for line, raw in expected.items():
        alone = _run(raw + b"\n", "sft", "nova-lite-1")[0]
        assert [(line, *rest) for _, *rest in alone] == [f for f in fast[0] if f[0] == line]


# --- files: F1 F2 F3 F4 F7 F8 F11, numbering ------------------------------------------------------


def _check_files(paths: list[Path], **config) -> tuple[object, list[dict]]:
    from tunekit_data.check import iter_problems

    config.setdefault("workers", 1)
    summary = run_check([str(p) for p in paths], CheckConfig(**config))
    try:
        problems = list(iter_problems(summary))
    finally:
        summary.close()
    return summary, problems


def _dataset_rules(summary) -> set[tuple[str, str]]:
    return {(p.rule, p.severity) for p in summary.dataset_errors}


def write_lines(path: Path, lines: list[bytes], *, end: bytes = b"\n", bom: bool = False) -> Path:
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"".join(line + end for line in lines))
    return path


def test_f1_extension(tmp_path):
    good = write_lines(tmp_path / "train.jsonl", [SFT_LINE])
    bad = write_lines(tmp_path / "train.json", [SFT_LINE])
    summary, _ = _check_files([good], fmt="sft")
    assert "F1" not in {p.rule for p in summary.dataset_errors}
    summary, _ = _check_files([bad], fmt="sft")
    f1 = [p for p in summary.dataset_errors if p.rule == "F1"]
    assert [(p.severity, p.file) for p in f1] == [("error", str(bad))]
    assert summary.records == summary.valid == 1  # still checked
    assert not summary.ok


def test_f2_file_name(tmp_path):
    good = write_lines(tmp_path / "train_v1.2-a.jsonl", [SFT_LINE])
    bad = write_lines(tmp_path / "my train (1).jsonl", [SFT_LINE])
    assert "F2" not in {p.rule for p in _check_files([good], fmt="sft")[0].dataset_errors}
    summary, _ = _check_files([bad], fmt="sft")
    assert ("F2", "warning") in _dataset_rules(summary)
    assert summary.ok  # a warning


def test_file_and_dataset_rules_take_their_severity_from_the_rule_table(tmp_path, monkeypatch):
    # One table decides severities: raising F2 (a warning) to an error there fails the check.
    bad = write_lines(tmp_path / "my train (1).jsonl", [SFT_LINE])
    monkeypatch.setitem(RULES, "F2", dataclasses.replace(RULES["F2"], severity="error"))
    summary, _ = _check_files([bad], fmt="sft")
    assert ("F2", "error") in _dataset_rules(summary)
    assert not summary.ok


def test_f3_invalid_utf8_is_one_record_and_the_rest_is_checked(tmp_path):
    bad_role = orjson.dumps({**SFT, "messages": [user(text("a")), {"role": "Assistant", "content": [text("b")]}]})
    path = write_lines(tmp_path / "train.jsonl", [SFT_LINE, b'{"messages": "\xff\xfe"}', bad_role, SFT_LINE])
    summary, problems = _check_files([path], fmt="sft")
    assert [(p["line"], p["rule"], p["severity"], p["field"]) for p in problems] == [
        (2, "F3", "error", ""),
        (3, "S6", "error", "messages[1].role"),
    ]
    assert (summary.records, summary.valid, summary.invalid) == (4, 2, 2)


def test_f4_bom_is_stripped_with_a_warning_and_line_1_is_checked(tmp_path):
    bad_first = orjson.dumps({**SFT, "messages": [{"role": "User", "content": [text("a")]}, assistant(text("b"))]})
    path = write_lines(tmp_path / "train.jsonl", [bad_first, SFT_LINE], bom=True)
    summary, problems = _check_files([path], fmt="sft")
    assert ("F4", "warning") in _dataset_rules(summary)
    assert [(p["line"], p["rule"], p["field"]) for p in problems] == [(1, "S6", "messages[0].role")]
    clean = write_lines(tmp_path / "clean.jsonl", [SFT_LINE, SFT_LINE], bom=True)
    summary, problems = _check_files([clean], fmt="sft")
    assert (summary.valid, problems, summary.ok) == (2, [], True)
    assert "F4" not in {p.rule for p in _check_files([write_lines(tmp_path / "nobom.jsonl", [SFT_LINE])], fmt="sft")[0].dataset_errors}


def test_f7_blank_lines_are_numbered_and_not_counted(tmp_path):
    bad = orjson.dumps({**SFT, "messages": [user(text("a"))]})
    path = write_lines(tmp_path / "train.jsonl", [b"", SFT_LINE, b"   ", b"\t", bad, b""])
    summary, problems = _check_files([path], fmt="sft")
    assert [(p["line"], p["rule"], p["severity"]) for p in problems] == [
        (1, "F7", "warning"),
        (3, "F7", "warning"),
        (4, "F7", "warning"),
        (5, "S5", "error"),
        (6, "F7", "warning"),
    ]
    assert (summary.records, summary.valid, summary.invalid, summary.blank) == (2, 1, 1, 4)


@pytest.mark.parametrize("end", [b"\n", b"\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("final_newline", [True, False], ids=["final-newline", "no-final-newline"])
def test_f8_line_endings(tmp_path, end, final_newline):
    bad = orjson.dumps({**SFT, "messages": [user(text("a")), user(text("b"))]})
    data = end.join([SFT_LINE, b"", bad, SFT_LINE, bad]) + (end if final_newline else b"")
    path = tmp_path / "train.jsonl"
    path.write_bytes(data)
    summary, problems = _check_files([path], fmt="sft")
    assert [(p["line"], p["rule"]) for p in problems if p["severity"] == "error"] == [
        (3, "S7"),
        (3, "S8"),
        (5, "S7"),
        (5, "S8"),
    ]
    assert (summary.records, summary.valid, summary.blank) == (4, 2, 1)


def test_f5_pretty_printed_record_is_one_error_per_line(tmp_path):
    pretty = orjson.dumps(SFT, option=orjson.OPT_INDENT_2).split(b"\n")
    path = write_lines(tmp_path / "train.jsonl", [SFT_LINE, *pretty, SFT_LINE])
    summary, problems = _check_files([path], fmt="sft")
    assert summary.records == len(pretty) + 2
    assert summary.valid == 2
    bad_lines = sorted({p["line"] for p in problems})
    assert bad_lines == list(range(2, len(pretty) + 2))
    assert {p["rule"] for p in problems} <= {"F5", "F6"}


def test_f11_empty_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    blank_only = write_lines(tmp_path / "blank.jsonl", [b"", b"  "])
    good = write_lines(tmp_path / "train.jsonl", [SFT_LINE])
    for path in (empty, blank_only):
        summary, _ = _check_files([path], fmt="sft")
        f11 = [p for p in summary.dataset_errors if p.rule == "F11"]
        assert [(p.severity, p.file) for p in f11] == [("error", str(path))]
        assert not summary.ok
    summary, _ = _check_files([good, empty], fmt="sft")
    assert [p.file for p in summary.dataset_errors if p.rule == "F11"] == [str(empty)]
    assert "F11" not in {p.rule for p in _check_files([good], fmt="sft")[0].dataset_errors}


def test_lines_of_several_files_are_numbered_per_file(tmp_path):
    bad = orjson.dumps({**SFT, "messages": [user(text("a"))]})
    a = write_lines(tmp_path / "a.jsonl", [SFT_LINE, bad])
    b = write_lines(tmp_path / "b.jsonl", [bad, SFT_LINE])
    _, problems = _check_files([a, b], fmt="sft")
    assert [(Path(p["file"]).name, p["line"], p["rule"]) for p in problems] == [("a.jsonl", 2, "S5"), ("b.jsonl", 1, "S5")]


# --- dataset rules: F10 M10 M11 D9 D10 -------------------------------------------------------------


def _dataset(tmp_path: Path, records: list[dict], name: str = "train.jsonl") -> Path:
    return write_lines(tmp_path / name, [orjson.dumps(r) for r in records])


@pytest.mark.parametrize(
    ("profile", "n", "ok"),
    [
        ("nova-lite-1", 7, False),
        ("nova-lite-1", 8, True),
        ("nova-micro-1", 8, True),
        ("nova-pro-1", 20_000, True),
        ("nova-pro-1", 20_001, False),
        ("nova-lite-2", 199, False),
        ("nova-lite-2", 200, True),
    ],
)
def test_f10_bedrock_record_count(tmp_path, profile, n, ok):
    path = write_lines(tmp_path / "train.jsonl", [SFT_LINE] * n)
    summary, _ = _check_files([path], fmt="sft", profile=profile, platform="bedrock")
    f10 = [p for p in summary.dataset_errors if p.rule == "F10"]
    assert (not f10) == ok
    assert summary.ok == ok
    if not ok:
        assert f10[0].severity == "error"
        assert f"{n:,}" in f10[0].message
        if profile == "nova-lite-2":
            assert "V2" in f10[0].message  # the source of the 200 minimum is named


def test_f10_counts_invalid_records_and_all_files(tmp_path):
    bad = orjson.dumps({**SFT, "messages": []})
    a = write_lines(tmp_path / "a.jsonl", [SFT_LINE] * 4)
    b = write_lines(tmp_path / "b.jsonl", [SFT_LINE] * 3 + [bad])
    summary, _ = _check_files([a, b], fmt="sft", platform="bedrock", max_invalid_percent=50)
    assert "F10" not in {p.rule for p in summary.dataset_errors}


def test_f10_off_on_sagemaker(tmp_path):
    path = write_lines(tmp_path / "train.jsonl", [SFT_LINE])
    summary, _ = _check_files([path], fmt="sft", platform="sagemaker")
    assert summary.ok
    assert summary.dataset_errors == []


def test_m10_dataset_modalities(tmp_path):
    mixed = _dataset(tmp_path, [SFT_IMAGE, SFT_VIDEO, SFT])
    summary, problems = _check_files([mixed], fmt="sft")
    assert ("M10", "error") in _dataset_rules(summary)
    assert problems == [] and summary.invalid == 0 and not summary.ok
    images_and_text = _dataset(tmp_path, [SFT_IMAGE, SFT, SFT_IMAGE], "images.jsonl")
    summary, _ = _check_files([images_and_text], fmt="sft")
    assert "M10" not in {p.rule for p in summary.dataset_errors} and summary.ok


def test_m10_across_files_and_blocks(tmp_path):
    a = _dataset(tmp_path, [SFT_IMAGE] * 50, "a.jsonl")
    b = _dataset(tmp_path, [SFT] * 50 + [SFT_VIDEO], "b.jsonl")
    summary, _ = _check_files([a, b], fmt="sft", block_size=4096)
    assert ("M10", "error") in _dataset_rules(summary)


def test_m11_single_bucket(tmp_path):
    other = copy.deepcopy(SFT_IMAGE)
    other["messages"][0]["content"][0] = image(uri="s3://other-bucket/cat.png")
    two = _dataset(tmp_path, [SFT_IMAGE, other], "two.jsonl")
    summary, _ = _check_files([two], fmt="sft")
    m11 = [p for p in summary.dataset_errors if p.rule == "M11"]
    assert [p.severity for p in m11] == ["error"]
    assert "my-bucket" in m11[0].message and "other-bucket" in m11[0].message
    one = _dataset(tmp_path, [SFT_IMAGE, SFT_IMAGE], "one.jsonl")
    summary, _ = _check_files([one], fmt="sft")
    assert summary.ok and summary.dataset_errors == []


def test_m11_dataset_uri_bucket(tmp_path):
    path = _dataset(tmp_path, [SFT, SFT_IMAGE])
    summary, problems = _check_files([path], fmt="sft", dataset_uri="s3://my-bucket/datasets/train/")
    assert summary.ok and problems == []
    summary, problems = _check_files([path], fmt="sft", dataset_uri="s3://data-bucket/train/")
    assert [(p["line"], p["rule"], p["severity"], p["field"]) for p in problems] == [(2, "M11", "error", URI0)]
    assert not summary.ok


def test_d9_dpo_not_on_nova_lite_2(tmp_path):
    path = _dataset(tmp_path, [DPO] * 3)
    summary, _ = _check_files([path], fmt="dpo", profile="nova-lite-2")
    assert ("D9", "error") in _dataset_rules(summary)
    assert not summary.ok
    for profile in ("nova-micro-1", "nova-lite-1", "nova-pro-1"):
        summary, _ = _check_files([path], fmt="dpo", profile=profile)
        assert "D9" not in {p.rule for p in summary.dataset_errors}


def test_d10_pair_count_warning(tmp_path):
    few = _dataset(tmp_path, [DPO] * 999, "few.jsonl")
    summary, _ = _check_files([few], fmt="dpo")
    assert ("D10", "warning") in _dataset_rules(summary)
    assert summary.ok
    enough = _dataset(tmp_path, [DPO] * 1000, "enough.jsonl")
    summary, _ = _check_files([enough], fmt="dpo")
    assert summary.dataset_errors == []


def test_micro_dpo_with_image_is_rejected(tmp_path):
    found, invalid = check_record(DPO_IMAGE, "dpo", "nova-micro-1")
    assert invalid
    assert ("S15", E, "messages[0].content[0].image") in triples(found)


# --- the rule table ---------------------------------------------------------------------------------


def test_every_offline_rule_has_a_failing_and_a_passing_case():
    failing = {rule for *_, expected in FAILING for rule, _, _ in expected}
    failing |= {rule for *_, rule in RAW_FAILING} | {"F7"}
    failing |= {"F1", "F2", "F4", "F10", "F11", "M10", "M11", "D9", "D10"}  # file / dataset tests above
    passing = {rule for _, rule, *_ in PASSING} | {case.split("-")[0] for case, _ in RAW_PASSING}
    passing |= {"F1", "F2", "F4", "F7", "F10", "F11", "M10", "M11", "D9", "D10"}
    offline = set(RULES) - {"M12", "F12"}
    assert offline - failing == set()
    assert offline - passing == set()


def test_rule_severities_follow_the_spec():
    warnings = {rule for rule, r in RULES.items() if r.severity == "warning"}
    assert warnings == {"F2", "F4", "F7", "F12", "S2", "S4", "D10", "D11"}


def test_default_workers_follow_the_affinity_mask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --workers, the local engine uses the cores this process may run on (a container's
    limit), not every core of the machine."""
    import tunekit_data.check.engine as check

    path = tmp_path / "big.jsonl"
    record = orjson.dumps({"schemaVersion": "bedrock-conversation-2024", "messages": [
        {"role": "user", "content": [{"text": "q"}]}, {"role": "assistant", "content": [{"text": "a"}]}]})
    path.write_bytes((record + b"\n") * 200)
    seen: list[int] = []
    real = check._ordered
    monkeypatch.setattr(check, "_ordered", lambda blocks, options, workers: seen.append(workers) or real(blocks, options, workers))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    summary = run_check([str(path)], CheckConfig(block_size=1024))
    assert summary.valid == 200 and seen == [3]
