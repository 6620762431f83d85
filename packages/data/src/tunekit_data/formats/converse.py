"""Converse SFT checks (rules S1-S13, S15; data-formats.md section 2), vectorized per block.

Also used for the prompt turns of DPO records (rule D1): checks that concern the message content
skip the final candidates turn, which the DPO checks own.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tunekit_data.check import Hit, Problem, hits, mask, present, strings
from tunekit_data.formats.view import BLOCK_MEMBERS, MEDIA_KINDS, ConverseView, Options, blank

SCHEMA_VERSION = "bedrock-conversation-2024"
RESERVED = ("User:", "Bot:", "Assistant:", "System:", "<image>", "<video>", "[EOS]")
RESERVED_WARN = ("Thought:", "<unk>")


def _alternation(words: tuple[str, ...]) -> str:
    return "|".join(w.replace("[", r"\[").replace("]", r"\]") for w in words)


def check_messages_field(v: ConverseView, o: Options) -> Iterator[Hit]:
    """S1 messages present; S5 at least two messages."""
    missing = ~present(v.column("messages"))
    yield from hits(v.rows, missing, lambda i: Problem.make("S1", "messages", "messages is required"))
    few = ~missing & (v.msg_count < 2)
    yield from hits(
        v.rows,
        few,
        lambda i: Problem.make("S5", "messages", f"needs at least 2 messages (user, assistant), got {v.msg_count[i]}"),
    )


def check_schema_version(v: ConverseView, o: Options) -> Iterator[Hit]:
    """S2: schemaVersion absent or not bedrock-conversation-2024 is a warning."""
    sv = v.column("schemaVersion")
    absent = ~present(sv)
    yield from hits(
        v.rows, absent, lambda i: Problem.make("S2", "schemaVersion", f"schemaVersion is missing ({SCHEMA_VERSION!r} expected)")
    )
    other = ~absent & ~mask(pc.equal(sv, SCHEMA_VERSION))
    yield from hits(
        v.rows,
        other,
        lambda i: Problem.make("S2", "schemaVersion", f"{strings(sv, i)!r} is not {SCHEMA_VERSION!r} (accepted, but unusual)"),
    )


def check_system(v: ConverseView, o: Options) -> Iterator[Hit]:
    """S3: each system block is an object with a string ``text``."""
    s = v.system
    no_text = ~present(s.field("text"))
    yield from hits(s.row, no_text, lambda i: Problem.make("S3", s.path(i, "text"), "system blocks need a 'text' string"))


def check_roles(v: ConverseView, o: Options) -> Iterator[Hit]:
    """S6 role is user/assistant; S7 first user then alternating; S8 last is assistant."""
    m, role = v.messages, v.role
    is_user = mask(pc.equal(role, "user"))
    is_asst = mask(pc.equal(role, "assistant"))
    valid = is_user | is_asst
    null_msg = ~present(m.values)

    def bad_role(i: int) -> Problem:
        if null_msg[i]:
            return Problem.make("S6", m.path(i), "a message must be an object with role and content")
        got = strings(role, i)
        if got is None:
            return Problem.make("S6", m.path(i, "role"), "role is required (user or assistant)")
        hint = ""
        if got.lower() in ("user", "assistant"):
            hint = f" (roles are lower-case: {got.lower()!r})"
        elif got == "system":
            hint = " (put system prompts in the top-level 'system' array)"
        return Problem.make("S6", m.path(i, "role"), f'role must be "user" or "assistant", got {got!r}{hint}')

    yield from hits(m.row, ~valid, bad_role)
    # One misplaced turn is one problem: a message is wrong where it repeats the role before it
    # (judging by position would also flag every later turn of the record).
    first = m.pos == 0
    repeat = np.zeros(len(valid), bool)
    repeat[1:] = valid[1:] & valid[:-1] & (is_user[1:] == is_user[:-1])
    wrong = (first & valid & ~is_user) | (~first & repeat)
    yield from hits(
        m.row,
        wrong,
        lambda i: Problem.make(
            "S7",
            m.path(i, "role"),
            "the first message must be 'user'" if m.pos[i] == 0 else f"roles must alternate: two {strings(role, i)!r} messages in a row",
        ),
    )
    last_not_asst = v.is_last & is_user & (v.msg_count[m.row] >= 2)
    yield from hits(m.row, last_not_asst, lambda i: Problem.make("S8", m.path(i, "role"), "the last message must be 'assistant'"))


def check_content(v: ConverseView, o: Options) -> Iterator[Hit]:
    """S9 content is a non-empty array (candidates turns excepted: the DPO checks own those)."""
    m = v.messages
    content = m.field("content")
    n_blocks = pc.fill_null(pc.list_value_length(content), -1).to_numpy(zero_copy_only=False)
    owned_by_dpo = v.has_candidates & v.is_last if o.fmt == "dpo" else np.zeros(len(m), bool)
    scope = present(m.values) & ~owned_by_dpo
    hint = " (candidates belong in DPO datasets: use --format dpo)"

    def problem(i: int) -> Problem:
        if n_blocks[i] < 0:
            return Problem.make("S9", m.path(i, "content"), "content is required: an array of content blocks" + (hint if v.has_candidates[i] else ""))
        return Problem.make("S9", m.path(i, "content"), "content must not be empty")

    yield from hits(m.row, scope & (n_blocks <= 0), problem)


def check_blocks(v: ConverseView, o: Options) -> Iterator[Hit]:
    """S10: each content block has exactly one known member; S11 text-only messages are not blank."""
    b = v.blocks
    members = {name: v.member(name) for name in BLOCK_MEMBERS}
    count = sum(members.values())
    null_block = ~present(b.values)

    def problem(i: int) -> Problem:
        if null_block[i]:
            return Problem.make("S10", b.path(i), "a content block must be an object")
        if count[i] == 0:
            return Problem.make("S10", b.path(i), f"empty content block: needs one of {', '.join(BLOCK_MEMBERS[:3])}")
        both = [name for name, has in members.items() if has[i]]
        return Problem.make("S10", b.path(i), f"a content block holds exactly one member, got {' and '.join(both)}")

    yield from hits(b.row, count != 1, problem)

    texts = b.field("text")
    has_text = members["text"]
    nonblank = has_text & ~blank(texts)
    n_msgs = len(v.messages)
    text_blocks = b.per_parent(has_text, n_msgs)
    nonblank_blocks = b.per_parent(nonblank, n_msgs)
    other_blocks = b.per_parent(count - has_text > 0, n_msgs)
    m = v.messages
    empty_msg = (text_blocks > 0) & (other_blocks == 0) & (nonblank_blocks == 0) & ~v.has_candidates
    yield from hits(m.row, empty_msg, lambda i: Problem.make("S11", m.path(i, "content"), "text is empty or whitespace-only"))


def check_keywords(v: ConverseView, o: Options) -> Iterator[Hit]:
    """S12: reserved keywords anywhere in system, user, assistant or candidate text (case-insensitive).

    A vectorized byte screen (``keyword_candidates``) picks the few texts that could hold one; one
    regex pass over those for both lists; only matching texts are classified in Python.
    """
    pattern = _alternation(RESERVED + RESERVED_WARN)
    for level, texts in v.texts():
        if not len(texts):
            continue
        candidates = np.flatnonzero(keyword_candidates(texts))
        if not len(candidates):
            continue
        found = candidates[mask(pc.match_substring_regex(texts.take(candidates), pattern, ignore_case=True))]
        for i in found:
            text = strings(texts, i)
            for words, severity in ((RESERVED, None), (RESERVED_WARN, "warning")):
                word = _first_keyword(text, words)
                if word:
                    yield int(level.row[i]), Problem.make("S12", level.path(int(i), "text"), f"reserved keyword {word!r} in text", severity=severity)


# Every keyword holds an anchor byte with a fixed neighbour: ':' after r/t/m (User: Bot: Assistant:
# System: Thought:), '<' before i/v/u (<image> <video> <unk>), '[' before e ([EOS]). Case-insensitive
# matching changes neither: the only non-ASCII characters that fold to ASCII letters are the Kelvin
# sign (k) and the long s (s), never a neighbour. The sets hold the neighbours lower-cased with
# | 0x20, which maps only A-Z onto the letters tested.


def _anchor_set(*chars: str) -> np.ndarray:
    out = np.zeros(256, bool)
    out[[ord(c) for c in chars]] = True
    return out


_AFTER_COLON = _anchor_set("r", "t", "m")
_BEFORE_LT = _anchor_set("i", "v", "u")
_BEFORE_BRACKET = _anchor_set("e")
assert all(any(a in w for a in ":<[") for w in RESERVED + RESERVED_WARN)


_PIECE = 1 << 18  # bytes scanned per numpy pass: the temporaries stay in cache (twice as fast as one pass)


def _anchors(data: np.ndarray, start: int) -> np.ndarray:
    """Offsets of the ':' '<' '[' bytes of ``data[start : start + _PIECE]``."""
    piece = data[start : start + _PIECE]
    found = piece == 58
    found |= piece == 60
    found |= piece == 91
    return np.flatnonzero(found) + start


def keyword_candidates(texts: pa.Array) -> np.ndarray:
    """True for the texts that may hold a reserved keyword (a superset of the regex's matches).

    Scans the array's character data with numpy for the anchors above; a text with none cannot
    hold a keyword. Falls back to all True for arrays it cannot read directly.
    """
    n = len(texts)
    if not pa.types.is_string(texts.type) or texts.null_count == n:
        return np.ones(n, bool) if texts.null_count != n else np.zeros(n, bool)
    _, offsets_buf, data_buf = texts.buffers()
    offsets = np.frombuffer(offsets_buf, np.int32)[texts.offset : texts.offset + n + 1]
    lo, hi = int(offsets[0]), int(offsets[-1])
    if data_buf is None or hi <= lo:
        return np.zeros(n, bool)
    data = np.frombuffer(data_buf, np.uint8)[lo:hi]
    at = np.concatenate([_anchors(data, start) for start in range(0, len(data), _PIECE)])
    if not len(at):
        return np.zeros(n, bool)
    # The neighbours of the first / last byte read out of range: index -1 wraps to the last byte and
    # the last is clamped to the anchor itself, which at worst adds a candidate, never drops one.
    anchor, prev, nxt = data[at], data[at - 1] | 0x20, data[np.minimum(at + 1, len(data) - 1)] | 0x20
    hit = np.where(
        anchor == ord(":"), _AFTER_COLON[prev], np.where(anchor == ord("<"), _BEFORE_LT[nxt], _BEFORE_BRACKET[nxt])
    )
    at = at[hit] + lo  # offsets into the data buffer
    out = np.zeros(n, bool)
    out[np.searchsorted(offsets, at, side="right") - 1] = True
    return out


def _first_keyword(text: str, words: tuple[str, ...]) -> str | None:
    low = text.lower()
    found = [w for w in words if w.lower() in low]
    return min(found, key=lambda w: low.index(w.lower())) if found else None


def check_nova2_blocks(v: ConverseView, o: Options) -> Iterator[Hit]:
    """S13 reasoningContent and S14/M14 Nova 2 members used on a Nova 1 profile; S13 placement."""
    b = v.blocks
    reasoning = v.member("reasoningContent")
    gated = {"reasoningContent": "S13", "toolUse": "S14", "toolResult": "S14", "document": "M14"}
    if not o.profile.nova2:
        for name, rule in gated.items():
            yield from hits(
                b.row,
                v.member(name),
                lambda i, name=name, rule=rule: Problem.make(rule, b.path(i, name), f"{name} blocks are Nova 2 Lite only (profile {o.profile.name})"),
            )
        tool_config = present(v.column("toolConfig"))
        yield from hits(
            v.rows, tool_config, lambda i: Problem.make("S14", "toolConfig", f"toolConfig is Nova 2 Lite only (profile {o.profile.name})")
        )
        return
    not_asst = reasoning & ~mask(pc.equal(v.block_role, "assistant"))
    yield from hits(b.row, not_asst, lambda i: Problem.make("S13", b.path(i, "reasoningContent"), "reasoningContent only in assistant turns"))
    if not reasoning.any():
        return
    rtext = pc.struct_field(pc.struct_field(b.field("reasoningContent"), "reasoningText"), "text")
    empty = reasoning & (~present(rtext) | blank(rtext))
    yield from hits(b.row, empty, lambda i: Problem.make("S13", b.path(i, "reasoningContent.reasoningText.text"), "reasoning text is required"))
    media = v.media_counts["image"] + v.media_counts["video"]
    with_media = reasoning & (media[b.row] > 0)
    yield from hits(b.row, with_media, lambda i: Problem.make("S13", b.path(i, "reasoningContent"), "reasoningContent cannot be combined with images or videos"))


def check_micro(v: ConverseView, o: Options) -> Iterator[Hit]:
    """S15: Nova Micro takes text only."""
    if o.profile.media:
        return
    b = v.blocks
    for kind in MEDIA_KINDS:
        yield from hits(
            b.row, v.member(kind), lambda i, kind=kind: Problem.make("S15", b.path(i, kind), f"{o.profile.label} is text only: no {kind}s")
        )


SFT_CHECKS = (
    check_messages_field,
    check_schema_version,
    check_system,
    check_roles,
    check_content,
    check_blocks,
    check_keywords,
    check_nova2_blocks,
    check_micro,
)
