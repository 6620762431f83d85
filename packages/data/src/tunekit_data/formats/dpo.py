"""Nova DPO checks (rules D2-D8, D11; section 4). The prompt turns follow the SFT checks (D1)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tunekit_data.check import Hit, Problem, hits, indices, mask, present, strings
from tunekit_data.formats.view import MEDIA_KINDS, ConverseView, Options, blank

LABELS = ("preferred", "non-preferred")


def check_candidates_turn(v: ConverseView, o: Options) -> Iterator[Hit]:
    """D2 the last message is an assistant turn with candidates and no content; D3 only there."""
    m = v.messages
    cand = v.has_candidates
    last = v.is_last
    last_without = last & ~cand & present(m.values)
    yield from hits(
        m.row, last_without, lambda i: Problem.make("D2", m.path(i), "the last message of a DPO sample needs 'candidates' (a preferred and a non-preferred answer)")
    )
    with_content = last & cand & present(m.field("content"))
    yield from hits(m.row, with_content, lambda i: Problem.make("D2", m.path(i, "content"), "the candidates turn must not also have 'content'"))
    not_asst = last & cand & ~mask(pc.equal(v.role, "assistant"))
    yield from hits(m.row, not_asst, lambda i: Problem.make("D2", m.path(i, "role"), "the candidates turn must have role 'assistant'"))
    early = cand & ~last
    yield from hits(m.row, early, lambda i: Problem.make("D3", m.path(i, "candidates"), "only the last message may carry candidates"))


def check_candidates(v: ConverseView, o: Options) -> Iterator[Hit]:
    """D4 exactly one preferred + one non-preferred; D5 labels; D6 content; D7 no media; D11 identical."""
    m, c = v.messages, v.candidates
    label = c.field("preferenceLabel")
    is_pref = mask(pc.equal(label, "preferred"))
    is_non = mask(pc.equal(label, "non-preferred"))
    valid_label = is_pref | is_non

    def bad_label(i: int) -> Problem:
        got = strings(label, i)
        if got is None:
            return Problem.make("D5", c.path(i, "preferenceLabel"), 'preferenceLabel is required ("preferred" or "non-preferred")')
        return Problem.make("D5", c.path(i, "preferenceLabel"), f'preferenceLabel must be "preferred" or "non-preferred", got {got!r}')

    yield from hits(c.row, ~valid_label, bad_label)

    n_msgs = len(m)
    count = c.per_parent(np.ones(len(c), bool), n_msgs)
    prefs = c.per_parent(is_pref, n_msgs)
    nons = c.per_parent(is_non, n_msgs)
    wrong = v.has_candidates & ((count != 2) | (prefs != 1) | (nons != 1))
    yield from hits(
        m.row,
        wrong,
        lambda i: Problem.make("D4", m.path(i, "candidates"), f"needs exactly two candidates, one preferred and one non-preferred; got {count[i]} ({prefs[i]} preferred, {nons[i]} non-preferred)"),
    )

    content = c.field("content")
    n_blocks = pc.fill_null(pc.list_value_length(content), 0).to_numpy(zero_copy_only=False)
    yield from hits(c.row, n_blocks == 0, lambda i: Problem.make("D6", c.path(i, "content"), "candidate content must be a non-empty array of text blocks"))
    cb = v.candidate_blocks
    texts = cb.field("text")
    has_text = present(texts)
    media = np.zeros(len(cb), bool)
    for kind in MEDIA_KINDS:
        has = present(cb.field(kind))
        media |= has
        yield from hits(cb.row, has, lambda i, kind=kind: Problem.make("D7", cb.path(i, kind), f"no {kind}s inside candidates"))
    not_text = ~has_text & ~media
    yield from hits(cb.row, not_text, lambda i: Problem.make("D6", cb.path(i), "candidate content blocks must be text"))
    nonblank = cb.per_parent(has_text & ~blank(texts), len(c))
    blank_cand = (n_blocks > 0) & (nonblank == 0)
    yield from hits(c.row, blank_cand, lambda i: Problem.make("D6", c.path(i, "content"), "candidate text is empty or whitespace-only"))
    yield from _identical(v, c, cb, texts, is_pref, is_non, wrong)


def _identical(v, c, cb, texts, is_pref, is_non, wrong) -> Iterator[Hit]:
    """D11: warn when the preferred and non-preferred texts are the same."""
    ok = v.has_candidates & ~wrong
    if not ok.any():
        return
    # A candidate's text is its text blocks concatenated; most candidates have exactly one block,
    # so compare those columnar and join in Python only for multi-block candidates.
    n_blocks = np.bincount(cb.parent, minlength=len(c))
    first = np.cumsum(n_blocks) - n_blocks
    single = texts.take(indices(np.minimum(first, max(len(cb) - 1, 0)))) if len(cb) else pa.nulls(len(c), pa.string())
    pref_idx = np.full(len(v.messages), -1)
    non_idx = np.full(len(v.messages), -1)
    pref_idx[c.parent[is_pref]] = np.flatnonzero(is_pref)
    non_idx[c.parent[is_non]] = np.flatnonzero(is_non)
    msgs = np.flatnonzero(ok)
    a, b = pref_idx[msgs], non_idx[msgs]
    simple = (n_blocks[a] == 1) & (n_blocks[b] == 1)
    same = np.zeros(len(msgs), bool)
    if simple.any():
        same[simple] = mask(pc.equal(single.take(indices(a[simple])), single.take(indices(b[simple]))))
    for k in np.flatnonzero(~simple):
        same[k] = _joined(cb, texts, first, n_blocks, a[k]) == _joined(cb, texts, first, n_blocks, b[k])
    m = v.messages
    for msg in msgs[same]:
        yield int(m.row[msg]), Problem.make("D11", m.path(int(msg), "candidates"), "preferred and non-preferred texts are identical (no preference signal)")


def _joined(cb, texts, first, n_blocks, cand: int) -> str:
    return "".join(texts[int(j)].as_py() or "" for j in range(first[cand], first[cand] + n_blocks[cand]))


def check_dpo_media(v: ConverseView, o: Options) -> Iterator[Hit]:
    """D8: no video anywhere in a DPO sample."""
    b = v.blocks
    yield from hits(b.row, v.member("video"), lambda i: Problem.make("D8", b.path(i, "video"), "video is not supported for DPO"))


DPO_CHECKS = (check_candidates_turn, check_candidates, check_dpo_media)
