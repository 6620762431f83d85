"""Input records to ``Example``: one decoder per input format, chosen once per run (``--from``).

A decoder either returns an Example or raises ``ConversionError`` naming the field and the reason;
it never guesses another format for a record that does not fit (that record is rejected). Every
Example leaves here in the shape ``examples.py`` promises: an optional system turn first, then
user/assistant turns alternating from user; a chat ends with an assistant turn, a preference prompt
with a user turn. ``--system TEXT`` is added to examples that have no system turn of their own.

Instruction formats (Alpaca, JumpStart without a template) become one user turn holding the
instruction, then a blank line and the input/context when there is one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tunekit_data.convert.media import MediaOptions, media_from_url
from tunekit_data.convert.messages import (
    chat_turns,
    converse_blocks,
    converse_system,
    converse_turns,
    expect_list,
    expect_object,
    expect_text,
)
from tunekit_data.convert.rejection import ConversionError, json_type
from tunekit_data.convert.template import Template
from tunekit_data.examples import (
    ChatExample,
    Example,
    Media,
    Message,
    Part,
    PreferenceExample,
    Role,
    TextExample,
)
from tunekit_data.formats import FORMATS, Kind, load


@dataclass(frozen=True, slots=True)
class InputFormat:
    """An input format (``formats.registry``) with its decoder for one record loaded."""

    name: str
    kind: Kind
    summary: str
    decode: Callable[[dict[str, object], InputPlan], Example]


@dataclass(frozen=True, slots=True)
class InputPlan:
    """Everything a decoder needs besides the record; picklable, so worker processes get a copy."""

    fmt: str
    media: MediaOptions = field(default_factory=MediaOptions)
    template: Template | None = None
    system: str | None = None

    @property
    def format(self) -> InputFormat:
        """The input format this plan decodes."""
        return INPUT_FORMATS[self.fmt]

    def to_example(self, value: object) -> Example:
        """Decode one record (a JSON object) into an Example; raises ConversionError."""
        record = expect_object(value, "")
        example = self.format.decode(record, self)
        return with_system(example, self.system) if self.system is not None else example


def with_system(example: Example, system: str) -> Example:
    """``example`` with ``system`` as its system turn, unless it already has one."""
    turn = Message("system", system)
    if isinstance(example, ChatExample) and example.messages[0].role != "system":
        return ChatExample((turn, *example.messages))
    if isinstance(example, PreferenceExample) and example.prompt[0].role != "system":
        return PreferenceExample((turn, *example.prompt), example.chosen, example.rejected)
    return example


# --- shape checks shared by every decoder -------------------------------------------------------


def chat_example(turns: Sequence[Message], field: str) -> ChatExample:
    """A ChatExample after checking turn order (system first, then user/assistant, last assistant)."""
    _check_order(turns, field, last="assistant")
    return ChatExample(tuple(turns))


def preference_example(
    prompt: Sequence[Message], chosen: str, rejected: str, field: str
) -> PreferenceExample:
    """A PreferenceExample after checking the prompt's turn order (it ends with a user turn)."""
    _check_order(prompt, field, last="user")
    return PreferenceExample(tuple(prompt), chosen, rejected)


def _check_order(turns: Sequence[Message], field: str, *, last: Role) -> None:
    body = turns[1:] if turns and turns[0].role == "system" else turns
    if not body:
        msg = "needs at least one user turn besides the system prompt"
        raise ConversionError(msg, field)
    for i, turn in enumerate(body):
        expected = "user" if i % 2 == 0 else "assistant"
        if turn.role != expected:
            where = "only first" if turn.role == "system" else "alternating from user"
            msg = f"turn {i + 1} after the system prompt is {turn.role!r}, expected {expected!r} (system {where}; then user and assistant alternate)"
            raise ConversionError(msg, field)
    if body[-1].role != last:
        what = (
            "a conversation must end with an assistant"
            if last == "assistant"
            else "a preference prompt must end with a user"
        )
        msg = f"{what} turn, this one ends with {body[-1].role!r}"
        raise ConversionError(msg, field)


def _answer(value: object, field: str, plan: InputPlan) -> str:
    """A preference answer: a string, or a list holding one text-only assistant message."""
    if isinstance(value, str):
        return value
    if type(value) is list and len(value) == 1:  # fast path: [{"role": "assistant", "content": str}]
        turn = value[0]
        if type(turn) is dict and len(turn) == 2 and turn.get("role") == "assistant":
            text = turn.get("content")
            if type(text) is str:
                return text
    turns = chat_turns(value, field, plan.media)
    if len(turns) != 1:
        msg = f"an answer is a string or a list of exactly one assistant message, got {len(turns)} messages"
        raise ConversionError(msg, field)
    return _answer_text(turns[0], f"{field}[0]")


def _answer_text(turn: Message, field: str) -> str:
    if turn.role != "assistant" or turn.media:
        msg = f"an answer is a text-only assistant message, got a {turn.role} turn" + (
            " with media" if turn.media else ""
        )
        raise ConversionError(msg, field)
    return turn.content


def _prompt_turns(value: object, field: str, plan: InputPlan) -> tuple[Message, ...]:
    """A prompt: a string (one user turn) or a message list."""
    if isinstance(value, str):
        return (Message("user", value),)
    return chat_turns(value, field, plan.media)


def _instruction(instruction: object, extra: object, names: tuple[str, str]) -> str:
    """``instruction``, then a blank line and ``extra`` (Alpaca input / JumpStart context) if non-blank."""
    text = expect_text(instruction, names[0])
    more = expect_text(extra, names[1]) if extra is not None else ""
    return f"{text}\n\n{more}" if more.strip() else text


def _refuse_tools(record: dict[str, object]) -> None:
    for key in ("tools", "functions"):
        if record.get(key):
            msg = "tool definitions are not supported by ds convert"
            raise ConversionError(msg, key)


def _refuse_candidates(items: list[object], reason: str) -> None:
    """Raise ``reason`` at the first of the Converse ``messages`` ``items`` that carries DPO candidates."""
    for i, m in enumerate(items):
        if isinstance(m, dict) and "candidates" in m:
            raise ConversionError(reason, f"messages[{i}].candidates")


# --- decoders ----------------------------------------------------------------------------------


def from_converse(record: dict[str, object], plan: InputPlan) -> Example:
    """Converse SFT: ``system`` blocks, then ``messages`` with content blocks."""
    system = converse_system(record.get("system"), "system")
    items = expect_list(record.get("messages"), "messages", "messages")
    _refuse_candidates(items, "a DPO record (candidates); convert it with --from dpo")
    turns = converse_turns(items, "messages", plan.media)
    return chat_example((system, *turns) if system else turns, "messages")


def from_dpo(record: dict[str, object], plan: InputPlan) -> Example:
    """Nova DPO: Converse turns whose last assistant turn holds a preferred and a non-preferred candidate."""
    system = converse_system(record.get("system"), "system")
    items = expect_list(record.get("messages"), "messages", "messages")
    *head, last = items
    _refuse_candidates(head, "only the last message may carry candidates (D3)")
    last_field = f"messages[{len(head)}]"
    final = expect_object(last, last_field)
    candidates = final.get("candidates")
    if candidates is None:
        msg = "the last message needs candidates (Nova DPO); convert SFT records with --from converse"
        raise ConversionError(msg, f"{last_field}.candidates")
    if final.get("role") != "assistant" or "content" in final:
        msg = "the candidates turn is an assistant turn with candidates and no content (D2)"
        raise ConversionError(msg, last_field)
    by_label: dict[str, str] = {}
    for i, cand in enumerate(expect_list(candidates, f"{last_field}.candidates", "candidates")):
        cfield = f"{last_field}.candidates[{i}]"
        candidate = expect_object(cand, cfield)
        label = candidate.get("preferenceLabel")
        if label not in ("preferred", "non-preferred") or label in by_label:
            msg = f"needs one 'preferred' and one 'non-preferred' candidate, got {label!r} here"
            raise ConversionError(msg, f"{cfield}.preferenceLabel")
        parts = converse_blocks(candidate.get("content"), f"{cfield}.content", plan.media)
        texts = [p for p in parts if isinstance(p, str)]
        if len(texts) != len(parts):
            msg = "candidates hold text only (D7)"
            raise ConversionError(msg, f"{cfield}.content")
        # Several text blocks are joined without a separator, as Message.content joins text parts.
        by_label[str(label)] = "".join(texts)
    if len(by_label) != 2:
        msg = f"needs exactly one 'preferred' and one 'non-preferred' candidate, got {sorted(by_label)}"
        raise ConversionError(msg, f"{last_field}.candidates")
    turns = converse_turns(head, "messages", plan.media)
    prompt = (system, *turns) if system else turns
    return preference_example(prompt, by_label["preferred"], by_label["non-preferred"], "messages")


def from_chat(record: dict[str, object], plan: InputPlan) -> Example:
    """OpenAI / Databricks chat (and TRL conversational language modeling): ``messages``."""
    _refuse_tools(record)
    return chat_example(chat_turns(record.get("messages"), "messages", plan.media), "messages")


def from_openai_preference(record: dict[str, object], plan: InputPlan) -> Example:
    """OpenAI preference fine-tuning: ``input.messages``, ``preferred_output``, ``non_preferred_output``."""
    inp = expect_object(record.get("input"), "input")
    _refuse_tools(inp)
    prompt = chat_turns(inp.get("messages"), "input.messages", plan.media)
    chosen = _answer(record.get("preferred_output"), "preferred_output", plan)
    rejected = _answer(record.get("non_preferred_output"), "non_preferred_output", plan)
    return preference_example(prompt, chosen, rejected, "input.messages")


def from_prompt_completion(record: dict[str, object], plan: InputPlan) -> Example:
    """TRL prompt-completion: ``prompt`` and ``completion``, strings or message lists."""
    prompt = _prompt_turns(record.get("prompt"), "prompt", plan)
    completion = record.get("completion")
    if isinstance(completion, str):
        return chat_example((*prompt, Message("assistant", completion)), "prompt")
    return chat_example((*prompt, *chat_turns(completion, "completion", plan.media)), "prompt")


def from_preference(record: dict[str, object], plan: InputPlan) -> Example:
    """TRL preference: ``prompt``/``chosen``/``rejected``, or ``chosen``/``rejected`` conversations sharing an implicit prompt (everything before their last turn)."""
    if "prompt" in record:
        prompt = _prompt_turns(record.get("prompt"), "prompt", plan)
        chosen = _answer(record.get("chosen"), "chosen", plan)
        rejected = _answer(record.get("rejected"), "rejected", plan)
        return preference_example(prompt, chosen, rejected, "prompt")
    chosen_turns = chat_turns(record.get("chosen"), "chosen", plan.media)
    rejected_turns = chat_turns(record.get("rejected"), "rejected", plan.media)
    if chosen_turns[:-1] != rejected_turns[:-1]:
        msg = "without a prompt, chosen and rejected must be the same conversation up to their last turn (implicit prompt)"
        raise ConversionError(msg, "rejected")
    chosen = _answer_text(chosen_turns[-1], f"chosen[{len(chosen_turns) - 1}]")
    rejected = _answer_text(rejected_turns[-1], f"rejected[{len(rejected_turns) - 1}]")
    return preference_example(chosen_turns[:-1], chosen, rejected, "chosen")


def from_prompt_response(record: dict[str, object], plan: InputPlan) -> Example:
    """Databricks INSTRUCTION_FINETUNE: string ``prompt`` and ``response``."""
    prompt = expect_text(record.get("prompt"), "prompt")
    response = expect_text(record.get("response"), "response")
    return chat_example((Message("user", prompt), Message("assistant", response)), "prompt")


def from_jumpstart(record: dict[str, object], plan: InputPlan) -> Example:
    """SageMaker JumpStart: the template's prompt/completion, else ``instruction``/``context``/``response``."""
    if plan.template is not None:
        prompt, completion = plan.template.render(record)
    else:
        for key in ("instruction", "context", "response"):
            if key not in record:
                msg = f"JumpStart records without a template.json need instruction, context and response (J3); '{key}' is missing"
                raise ConversionError(msg, key)
        prompt = _instruction(record["instruction"], record["context"], ("instruction", "context"))
        completion = expect_text(record["response"], "response")
    return chat_example((Message("user", prompt), Message("assistant", completion)), "prompt")


def from_alpaca(record: dict[str, object], plan: InputPlan) -> Example:
    """Alpaca: ``instruction``/``input``/``output``, plus optional ``system`` and ``history`` pairs."""
    turns: list[Message] = []
    if record.get("system"):
        turns.append(Message("system", expect_text(record["system"], "system")))
    history = (
        expect_list(record["history"], "history", "[instruction, response] pairs")
        if record.get("history")
        else []
    )
    for i, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2):
            msg = f"history entries are [instruction, response] pairs, got {json_type(pair)}"
            raise ConversionError(msg, f"history[{i}]")
        turns += [
            Message("user", expect_text(pair[0], f"history[{i}][0]")),
            Message("assistant", expect_text(pair[1], f"history[{i}][1]")),
        ]
    turns.append(
        Message(
            "user", _instruction(record.get("instruction"), record.get("input"), ("instruction", "input"))
        )
    )
    turns.append(Message("assistant", expect_text(record.get("output"), "output")))
    return chat_example(turns, "instruction")


SHAREGPT_ROLES: dict[str, Role] = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
}
_PLACEHOLDER = re.compile(r"(<image>|<video>)")


def from_sharegpt(record: dict[str, object], plan: InputPlan) -> Example:
    """ShareGPT: ``conversations`` of ``{from, value}``.

    LLaVA-style ``image(s)``/``video(s)`` fill the ``<image>``/``<video>`` placeholders in order (without
    placeholders they open the first user turn).
    """
    items = expect_list(record.get("conversations"), "conversations", "turns")
    pending = {kind: _sharegpt_media(record, kind, plan) for kind in ("image", "video")}
    turns: list[Message] = []
    if record.get("system"):
        turns.append(Message("system", expect_text(record["system"], "system")))
    for i, item in enumerate(items):
        turn = expect_object(item, f"conversations[{i}]")
        role = SHAREGPT_ROLES.get(str(turn.get("from")).lower())
        if role is None:
            msg = f"'from' must be one of {', '.join(SHAREGPT_ROLES)}, got {turn.get('from')!r}"
            raise ConversionError(msg, f"conversations[{i}].from")
        text = expect_text(turn.get("value"), f"conversations[{i}].value")
        turns.append(Message.from_parts(role, _fill_placeholders(text, pending, f"conversations[{i}].value")))
    leftover = [m for kind in pending.values() for m in kind]
    if leftover:
        if any(_PLACEHOLDER.search(str(t.get("value"))) for t in items if isinstance(t, dict)):
            msg = f"{len(leftover)} image/video reference(s) more than <image>/<video> placeholders"
            raise ConversionError(msg, "images")
        first = next((i for i, t in enumerate(turns) if t.role == "user"), None)
        if first is None:
            msg = "images need a user turn"
            raise ConversionError(msg, "conversations")
        turns[first] = Message.from_parts("user", (*leftover, *turns[first].blocks()))
    return chat_example(turns, "conversations")


def _sharegpt_media(
    record: dict[str, object], kind: Literal["image", "video"], plan: InputPlan
) -> list[Media]:
    for key in (kind, f"{kind}s"):
        value = record.get(key)
        if value:
            refs = [value] if isinstance(value, str) else expect_list(value, key, f"{kind} paths")
            return [media_from_url(r, kind, f"{key}[{i}]", plan.media) for i, r in enumerate(refs)]
    return []


def _fill_placeholders(text: str, pending: dict[str, list[Media]], field: str) -> tuple[Part, ...]:
    """Split ``text`` at ``<image>``/``<video>`` and put the next pending media in each place; the newline that separates a placeholder from its text goes with it."""
    pieces = _PLACEHOLDER.split(text)
    if len(pieces) == 1:
        return (text,)
    parts: list[Part] = []
    for i, piece in enumerate(pieces):
        if i % 2 == 1:
            kind = piece[1:-1]
            if not pending[kind]:
                msg = f"more {piece} placeholders than {kind} references"
                raise ConversionError(msg, field)
            parts.append(pending[kind].pop(0))
            continue
        if i > 0 and piece.startswith("\n"):
            piece = piece[1:]
        if i < len(pieces) - 1 and piece.endswith("\n"):
            piece = piece[:-1]
        if piece:
            parts.append(piece)
    return tuple(parts)


_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ ]?")


def from_hh(record: dict[str, object], plan: InputPlan) -> Example:
    """Anthropic HH: ``chosen``/``rejected`` transcripts of ``Human:``/``Assistant:`` turns that differ only in their last Assistant turn."""
    chosen = _hh_turns(record.get("chosen"), "chosen")
    rejected = _hh_turns(record.get("rejected"), "rejected")
    if chosen[:-1] != rejected[:-1]:
        msg = "chosen and rejected must be the same transcript up to their last Assistant turn"
        raise ConversionError(msg, "rejected")
    return preference_example(chosen[:-1], chosen[-1].content, rejected[-1].content, "chosen")


def _hh_turns(value: object, field: str) -> tuple[Message, ...]:
    text = expect_text(value, field)
    pieces = _HH_TURN.split(text)
    if pieces[0].strip() or len(pieces) < 3:
        msg = "a transcript is a sequence of '\\n\\nHuman: ' and '\\n\\nAssistant: ' turns"
        raise ConversionError(msg, field)
    turns = tuple(
        Message("user" if who == "Human" else "assistant", body)
        for who, body in zip(pieces[1::2], pieces[2::2], strict=True)
    )
    if turns[-1].role != "assistant":
        msg = "a transcript must end with an Assistant turn"
        raise ConversionError(msg, field)
    return turns


def from_text(record: dict[str, object], plan: InputPlan) -> Example:
    """Plain text: ``{"text": ...}`` (also each ``.txt`` document)."""
    return TextExample(expect_text(record.get("text"), "text"))


# Built from the registry, where each input format is declared; this module holds the decoders
# (which it has defined by now, so the registry's references to them resolve while it loads).
INPUT_FORMATS: dict[str, InputFormat] = {
    f.name: InputFormat(f.name, f.kind, f.summary, load(f.decoder)) for f in FORMATS.values()
}
