"""Databricks foundation-model fine-tuning formats (rules B1-B8; section 6).

CHAT_COMPLETION records are ``{"messages": [{"role", "content": str}, ...]}``; INSTRUCTION_FINETUNE
records are ``{"prompt": str, "response": str}`` (llm-foundry also accepts ``completion``).
Unknown keys (B1, B2, B8) are reported by the structural walk and the block reader.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tunekit_data.check import Hit, Problem, hits, mask, present, strings
from tunekit_data.formats.view import ConverseView, Options

CHAT_ROLES = ("system", "user", "assistant")


def check_chat(v: ConverseView, o: Options) -> Iterator[Hit]:
    """B2 two or more messages with role and content; B3 roles; B4 order; B5 last is assistant."""
    missing = ~present(v.column("messages"))
    yield from hits(v.rows, missing, lambda i: Problem.make("B2", "messages", "messages is required"))
    few = ~missing & (v.msg_count < 2)
    yield from hits(v.rows, few, lambda i: Problem.make("B2", "messages", f"needs at least 2 messages, got {v.msg_count[i]}"))
    m, role = v.messages, v.role
    for key in ("role", "content"):
        absent = ~present(m.field(key))
        yield from hits(m.row, absent, lambda i, key=key: Problem.make("B2", m.path(i, key), f"every message needs '{key}'"))
    known = mask(pc.is_in(role, value_set=pa.array(CHAT_ROLES)))
    bad = present(role) & ~known
    yield from hits(m.row, bad, lambda i: Problem.make("B3", m.path(i, "role"), f"role must be system, user or assistant, got {strings(role, i)!r}"))

    is_system = mask(pc.equal(role, "system"))
    yield from hits(m.row, is_system & (m.pos > 0), lambda i: Problem.make("B4", m.path(i, "role"), "a system message may only come first"))
    # After an optional leading system message, user/assistant alternate starting with user.
    offset = is_system[_first_index(m)][m.row] if len(m) else np.zeros(0, bool)
    turn = m.pos - offset.astype(int)
    expect_user = turn % 2 == 0
    is_user = mask(pc.equal(role, "user"))
    is_asst = mask(pc.equal(role, "assistant"))
    wrong = (is_user | is_asst) & (is_user != expect_user)
    yield from hits(
        m.row,
        wrong,
        lambda i: Problem.make("B4", m.path(i, "role"), f"expected {'user' if expect_user[i] else 'assistant'} (turns alternate user/assistant after an optional system message), got {strings(role, i)!r}"),
    )
    last_bad = v.is_last & present(role) & ~is_asst & (v.msg_count[m.row] >= 2)
    yield from hits(m.row, last_bad, lambda i: Problem.make("B5", m.path(i, "role"), "the last message must be 'assistant'"))


def _first_index(m) -> np.ndarray:
    """Index of the first message of each record that has messages (indexed by record)."""
    first = np.zeros(int(m.row.max()) + 1 if len(m) else 0, dtype=np.int64)
    starts = np.flatnonzero(m.pos == 0)
    first[m.row[starts]] = starts
    return first


def check_prompt_response(v: ConverseView, o: Options) -> Iterator[Hit]:
    """B8: a string ``prompt`` and exactly one of ``response`` / ``completion``."""
    prompt = present(v.column("prompt"))
    response = present(v.column("response"))
    completion = present(v.column("completion"))
    yield from hits(v.rows, ~prompt, lambda i: Problem.make("B8", "prompt", "prompt is required"))
    yield from hits(v.rows, ~response & ~completion, lambda i: Problem.make("B8", "response", "response is required"))
    yield from hits(v.rows, response & completion, lambda i: Problem.make("B8", "completion", "give either response or completion, not both"))


CHAT_CHECKS = (check_chat,)
PROMPT_RESPONSE_CHECKS = (check_prompt_response,)
