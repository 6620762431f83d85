"""Fuzzing `ds check`: mutated valid records, random byte lines, valid and blank lines mixed.

Properties: no uncaught exception; ``valid + invalid + blank == lines``; the ``--valid-out`` /
``--rejects-out`` split holds every non-blank input line exactly once, unchanged and in order; the
columnar fast path and the per-line path give the same problems; so do many small blocks versus
one block, and two worker processes versus one.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tunekit_data.check.blockcheck as blockcheck
from tunekit_data.check import PROFILES, CheckConfig, check_block, get_profile, iter_problems, run_check
from tunekit_data.formats import Options

SV = "bedrock-conversation-2024"
BOM = b"\xef\xbb\xbf"
S3 = {"s3Location": {"uri": "s3://my-bucket/media/a.png", "bucketOwner": "123456789012"}}
BASES = {
    "sft": [
        {
            "schemaVersion": SV,
            "system": [{"text": "Be brief."}],
            "messages": [
                {"role": "user", "content": [{"text": "Capital of France?"}]},
                {"role": "assistant", "content": [{"text": "Paris."}]},
            ],
        },
        {
            "schemaVersion": SV,
            "messages": [
                {"role": "user", "content": [{"image": {"format": "png", "source": S3}}, {"text": "What is it?"}]},
                {"role": "assistant", "content": [{"text": "A cat."}]},
            ],
        },
        {
            "schemaVersion": SV,
            "toolConfig": {"tools": [{"toolSpec": {"name": "f", "description": "d", "inputSchema": {"json": {"type": "object"}}}}]},
            "messages": [
                {"role": "user", "content": [{"text": "Q"}, {"document": {"format": "pdf", "name": "d", "source": S3}}]},
                {
                    "role": "assistant",
                    "content": [
                        {"reasoningContent": {"reasoningText": {"text": "think"}}},
                        {"toolUse": {"toolUseId": "1", "name": "f", "input": {"a": 1}}},
                    ],
                },
                {"role": "user", "content": [{"toolResult": {"toolUseId": "1", "content": [{"json": {"x": 1}}]}}]},
                {"role": "assistant", "content": [{"text": "done"}]},
            ],
        },
    ],
    "dpo": [
        {
            "schemaVersion": SV,
            "messages": [
                {"role": "user", "content": [{"image": {"format": "png", "source": S3}}, {"text": "Q"}]},
                {
                    "role": "assistant",
                    "candidates": [
                        {"content": [{"text": "good"}], "preferenceLabel": "preferred"},
                        {"content": [{"text": "bad"}], "preferenceLabel": "non-preferred"},
                    ],
                },
            ],
        }
    ],
    "cpt": [{"text": "Some document text."}],
    "chat": [
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a"},
            ]
        }
    ],
    "prompt-response": [{"prompt": "p", "response": "r"}],
}
FORMATS = sorted(BASES)
VALID_LINE = {fmt: orjson.dumps(BASES[fmt][0]) for fmt in FORMATS}

WORDS = [
    "messages", "role", "content", "text", "image", "video", "document", "format", "source", "s3Location",
    "uri", "bucketOwner", "candidates", "preferenceLabel", "system", "schemaVersion", "toolUse", "toolResult",
    "reasoningContent", "user", "assistant", "preferred", "non-preferred", "png", "JPEG", "mp4", "pdf",
    "s3://my-bucket/a.png", "s3://Other/x", "User:", "[EOS]", "Thought:", "", " ", "\u00e9", "\U0001f600",
]  # fmt: skip
words = st.sampled_from(WORDS)
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | words | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words | st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*path, i))


@st.composite
def mutated_record(draw, fmt: str) -> object:
    record = copy.deepcopy(draw(st.sampled_from(BASES[fmt])))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(record) if p]
        if not paths:
            return draw(json_values)
        path = draw(st.sampled_from(paths))
        parent = record
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        op = draw(st.sampled_from(["drop", "replace", "string", "add-key", "duplicate"]))
        if op == "drop":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(json_values)
        elif op == "string":
            parent[key] = draw(words | st.text(max_size=12))
        elif op == "add-key" and isinstance(parent, dict):
            parent[draw(words | st.text(max_size=6))] = draw(json_values)
        elif op == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return record


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value).encode()  # NaN / Infinity, lone surrogates as \ud800 escapes


@st.composite
def line(draw, fmt: str) -> bytes:
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "mutated", "blank", "bytes", "json"]))
    if kind == "valid":
        return VALID_LINE[fmt]
    if kind == "blank":
        return draw(st.sampled_from([b"", b" ", b"\t", b"\r", b" \t "]))
    if kind == "bytes":
        return draw(st.binary(max_size=40)).replace(b"\n", b"")
    if kind == "json":
        return _dumps(draw(json_values)).replace(b"\n", b"")
    raw = _dumps(draw(mutated_record(fmt)))
    tweak = draw(st.sampled_from(["none", "none", "none", "byte", "cut", "crlf", "bom", "suffix"]))
    if tweak == "byte" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1 :]
    elif tweak == "cut":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif tweak == "crlf":
        raw += b"\r"
    elif tweak == "bom":
        raw = BOM + raw
    elif tweak == "suffix":
        raw += draw(st.sampled_from([b" null", b"{}", b" ", b"\x00", b"\xff"]))
    return raw.replace(b"\n", b"")


@st.composite
def dataset(draw) -> tuple[str, str, list[bytes], bool]:
    fmt = draw(st.sampled_from(FORMATS))
    profile = draw(st.sampled_from(sorted(PROFILES)))
    lines = draw(st.lists(line(fmt), min_size=1, max_size=25))
    final_newline = draw(st.booleans())
    return fmt, profile, lines, final_newline


def _encode(lines: list[bytes], final_newline: bool) -> bytes:
    return b"\n".join(lines) + (b"\n" if final_newline else b"")


def _physical_lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def _is_blank(raw: bytes) -> bool:
    return not raw.strip(b" \t\r")


def _check(data: bytes, fmt: str, profile: str, *, per_line: bool = False):
    options = Options(get_profile(profile), fmt)
    if per_line:
        with mock.patch.object(blockcheck, "_read", return_value=None):
            result = check_block(data, 1, options)
    else:
        result = check_block(data, 1, options)
    problems = sorted((line, p.rule, p.severity, p.field, p.message) for line, p in result.problems)
    return problems, result.blank.tolist(), result.invalid.tolist()


FUZZ = settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(dataset())
def test_fast_path_and_per_line_path_agree(case):
    fmt, profile, lines, final_newline = case
    data = _encode(lines, final_newline)
    fast = _check(data, fmt, profile)
    assert fast == _check(data, fmt, profile, per_line=True)
    problems, blank, invalid = fast
    physical = _physical_lines(data)
    assert len(blank) == len(invalid) == len(physical)
    assert blank == [_is_blank(raw) for raw in physical]
    assert all(1 <= line <= len(physical) for line, *_ in problems)
    error_lines = {line for line, _, severity, *_ in problems if severity == "error"}
    assert invalid == [i + 1 in error_lines for i in range(len(physical))]


@FUZZ
@given(dataset(), st.sampled_from([64, 200, 1 << 20]))
def test_run_check_counts_and_split(case, block_size):
    fmt, profile, lines, final_newline = case
    data = _encode(lines, final_newline)
    physical = _physical_lines(data.removeprefix(BOM))  # a BOM starting the file is not part of line 1 (F4)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "train.jsonl"
        src.write_bytes(data)
        valid_out, rejects_out = Path(tmp) / "valid.jsonl", Path(tmp) / "rejects.jsonl"
        config = CheckConfig(fmt=fmt, profile=profile, workers=1, block_size=block_size)
        summary = run_check([str(src)], config, valid_out=str(valid_out), rejects_out=str(rejects_out))
        try:
            problems = list(iter_problems(summary))
        finally:
            summary.close()
        assert summary.valid + summary.invalid + summary.blank == len(physical)
        assert summary.records == summary.valid + summary.invalid
        assert summary.blank == sum(_is_blank(raw) for raw in physical)
        bad = {p["line"] for p in problems if p["severity"] == "error"}
        assert summary.invalid == len(bad)
        # Every non-blank line, unchanged, in exactly one of the two outputs, in input order.
        kept = [(i + 1, raw) for i, raw in enumerate(physical) if not _is_blank(raw)]
        assert valid_out.read_bytes() == b"".join(raw + b"\n" for n, raw in kept if n not in bad)
        assert rejects_out.read_bytes() == b"".join(raw + b"\n" for n, raw in kept if n in bad)
        # Re-joined in input order, the two outputs are the input's non-blank lines.
        valid_lines = iter(_physical_lines(valid_out.read_bytes()))
        reject_lines = iter(_physical_lines(rejects_out.read_bytes()))
        rejoined = [next(reject_lines) if n in bad else next(valid_lines) for n, _ in kept]
        assert rejoined == [raw for _, raw in kept]
        assert next(valid_lines, None) is None and next(reject_lines, None) is None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dataset())
def test_small_blocks_give_the_same_problems_as_one_block(case):
    fmt, profile, lines, final_newline = case
    data = _encode(lines * 3, final_newline)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "train.jsonl"
        src.write_bytes(data)
        for block_size in (1 << 20, 97):
            summary = run_check([str(src)], CheckConfig(fmt=fmt, profile=profile, workers=1, block_size=block_size))
            try:
                results.append((list(iter_problems(summary)), summary.valid, summary.invalid, summary.blank, summary.dataset_errors))
            finally:
                summary.close()
    assert results[0] == results[1]


def _varied_dataset(n: int) -> bytes:
    """Valid and invalid lines of every kind, enough for many blocks."""
    sft = BASES["sft"]
    kinds = [
        orjson.dumps(sft[0]),
        orjson.dumps(sft[1]),
        b"",
        orjson.dumps({**sft[0], "messages": sft[0]["messages"][:1]}),
        b'{"messages": NaN}',
        b"\xff\xfe",
        b"[1, 2]",
        b"null",
        orjson.dumps({**sft[1], "id": 3}),
        b"[" * 1100 + b"]" * 1100,
        orjson.dumps(sft[0]) + b"\r",
    ]
    return b"".join(kinds[i % len(kinds)] + b"\n" for i in range(n))


def test_workers_2_gives_the_same_result_as_workers_1(tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_bytes(_varied_dataset(1000))
    runs = []
    for workers in (1, 2):
        valid_out, rejects_out = tmp_path / f"valid{workers}.jsonl", tmp_path / f"rejects{workers}.jsonl"
        config = CheckConfig(fmt="sft", workers=workers, block_size=16 << 10)
        summary = run_check([str(src)], config, valid_out=str(valid_out), rejects_out=str(rejects_out))
        try:
            runs.append(
                (
                    list(iter_problems(summary)),
                    (summary.records, summary.valid, summary.invalid, summary.blank, summary.warnings),
                    dict(summary.by_rule),
                    [p.to_dict() for p in summary.dataset_errors],
                    valid_out.read_bytes(),
                    rejects_out.read_bytes(),
                )
            )
        finally:
            summary.close()
    assert runs[0] == runs[1]
    problems, counts, *_ = runs[0]
    assert counts[0] + counts[3] == 1000
    assert {p["rule"] for p in problems} >= {"F3", "F5", "F6", "F7", "F13", "S4", "S5"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_valid_lines_of_every_format_pass(tmp_path, fmt):
    src = tmp_path / "train.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in BASES[fmt]) * 50)
    profile = "nova-lite-2" if fmt == "sft" else "nova-lite-1"
    summary = run_check([str(src)], CheckConfig(fmt=fmt, profile=profile, workers=1, block_size=512))
    try:
        assert summary.invalid == 0, list(iter_problems(summary))[:3]
    finally:
        summary.close()
