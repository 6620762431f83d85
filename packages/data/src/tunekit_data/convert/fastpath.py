"""Fused decode + encode for the commonest (input, target) pairs, skipping the neutral ``Example``.

``convert_unit`` normally runs ``encode(plan.inputs.to_example(record))``: decode into ``Message`` /
``Example`` objects, then encode those for the target. For text-only OpenAI chat -> Converse and TRL
preference -> Nova DPO, which is what most runs convert, building those objects is most of the
per-record cost. A fast path here builds the target record straight from the input dict, and only
for records it fully understands and that are valid: for anything else (other shapes, media, tool
fields, a bad turn order, ``--system``) it returns ``None`` and the general path runs, so errors,
their messages and every output are exactly the general path's.
"""

from __future__ import annotations

from collections.abc import Callable

from tunekit_data.convert.inputs import InputPlan
from tunekit_data.convert.messages import CHAT_ROLES
from tunekit_data.convert.outputs import SCHEMA_VERSION, Record

FastPath = Callable[[object], "Record | None"]


def _chat_converse_turns(items: object, last: str) -> tuple[str | None, list[Record]] | None:
    """Text-only chat turns as Converse: ``(system text or None, messages)``, or None when the list is not exactly ``[system?] user, assistant, ...`` ending with a ``last`` turn of ``{role, content: str}``."""
    if type(items) is not list or not items:
        return None
    system: str | None = None
    messages: list[Record] = []
    expected = "user"
    roles = CHAT_ROLES
    for m in items:
        if type(m) is not dict or len(m) != 2:
            return None
        text = m.get("content")
        role = m.get("role")
        if type(text) is not str or type(role) is not str:
            return None
        role = roles.get(role)
        if role != expected:
            if role == "system" and system is None and not messages:  # the first turn only
                system = text
                continue
            return None
        messages.append({"role": role, "content": [{"text": text}]})
        expected = "assistant" if role == "user" else "user"
    if not messages or messages[-1]["role"] != last:
        return None
    return system, messages


def chat_to_converse(value: object) -> Record | None:
    """OpenAI chat ``{"messages": [...]}`` -> Converse, as ``to_converse(from_chat(...))`` gives it."""
    if type(value) is not dict:
        return None
    if value.get("tools") or value.get("functions"):
        return None
    turns = _chat_converse_turns(value.get("messages"), "assistant")
    if turns is None:
        return None
    return _converse_record(*turns)


def _converse_record(system: str | None, messages: list[Record]) -> Record:
    """A Converse-shaped record (Nova DPO's too), keys in the general encoder's order so that the output bytes match it."""
    out: Record = {"schemaVersion": SCHEMA_VERSION}
    if system is not None:
        out["system"] = [{"text": system}]
    out["messages"] = messages
    return out


def _answer(value: object) -> str | None:
    if type(value) is str:
        return value
    if type(value) is list and len(value) == 1:
        turn = value[0]
        if type(turn) is dict and len(turn) == 2 and turn.get("role") == "assistant":
            text = turn.get("content")
            if type(text) is str:
                return text
    return None


def preference_to_dpo(value: object) -> Record | None:
    """TRL ``{"prompt", "chosen", "rejected"}`` -> Nova DPO, as ``to_dpo(from_preference(...))`` gives it."""
    if type(value) is not dict or "prompt" not in value:
        return None
    chosen = _answer(value.get("chosen"))
    rejected = _answer(value.get("rejected"))
    if chosen is None or rejected is None:
        return None
    prompt = value.get("prompt")
    system: str | None = None
    if type(prompt) is str:
        messages: list[Record] = [{"role": "user", "content": [{"text": prompt}]}]
    else:
        turns = _chat_converse_turns(prompt, "user")
        if turns is None:
            return None
        system, messages = turns
    messages.append(
        {
            "role": "assistant",
            "candidates": [
                {"content": [{"text": chosen}], "preferenceLabel": "preferred"},
                {"content": [{"text": rejected}], "preferenceLabel": "non-preferred"},
            ],
        }
    )
    return _converse_record(system, messages)


_FAST: dict[tuple[str, str], FastPath] = {
    ("chat", "converse"): chat_to_converse,
    ("preference", "dpo"): preference_to_dpo,
}


def fast_path(inputs: InputPlan, target: str) -> FastPath | None:
    """The fused converter for this plan, if there is one (never with ``--system``)."""
    if inputs.system is not None:
        return None
    return _FAST.get((inputs.fmt, target))
