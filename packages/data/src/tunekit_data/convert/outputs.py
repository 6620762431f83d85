"""``Example`` to output records, one encoder per ``--to`` target, and each target's Arrow schema.

| target | record | from |
| --- | --- | --- |
| ``converse`` | ``{"schemaVersion", "system"?: [{"text"}], "messages": [{"role", "content": [blocks]}]}`` | chat, preference (chosen) |
| ``dpo`` | as converse; the last turn is ``{"role": "assistant", "candidates": [preferred, non-preferred]}`` | preference |
| ``chat`` | ``{"messages": [{"role", "content": str}]}`` (system first, when there is one) | chat, preference (chosen) |
| ``prompt-response`` | ``{"prompt": str, "response": str}`` (one user turn, no system) | chat, preference (chosen) |
| ``preference`` | TRL conversational ``{"prompt": [messages], "chosen": [assistant], "rejected": [assistant]}`` | preference |
| ``text`` | ``{"text": str}`` | text |

Preference input written as converse / chat / prompt-response keeps the chosen answer (supervised
fine-tuning on the preferred responses); the summary says so. Preference output is always the
conversational form, so a multi-turn prompt or a system prompt survives the round trip to DPO.

Parquet output uses the schemas in ``tunekit_data.formats.ARROW_SCHEMAS`` (loaded with pyarrow only when Parquet is
written, so that the CLI can name the targets without it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunekit_data.convert.messages import (
    chat_message,
    converse_message,
    converse_system_blocks,
)
from tunekit_data.convert.rejection import ConversionError
from tunekit_data.examples import ChatExample, Example, Message, PreferenceExample, TextExample
from tunekit_data.formats import FORMATS, OUTPUT_NAMES, Kind, load

if TYPE_CHECKING:
    import pyarrow as pa

SCHEMA_VERSION = "bedrock-conversation-2024"
DEFAULT_SHARD_SIZE = 100_000  # records per JSONL shard when the output is a folder
Record = dict[str, object]


def _as_chat(example: Example) -> ChatExample:
    """A chat view of a chat or preference example (a preference example keeps its chosen answer)."""
    if isinstance(example, PreferenceExample):
        return ChatExample((*example.prompt, Message("assistant", example.chosen)))
    assert isinstance(example, ChatExample), "the output plan admits only chat and preference kinds here"
    return example


def _split_system(turns: tuple[Message, ...]) -> tuple[Message | None, tuple[Message, ...]]:
    if turns and turns[0].role == "system":
        return turns[0], turns[1:]
    return None, turns


def _converse_head(system: Message | None) -> Record:
    head: Record = {"schemaVersion": SCHEMA_VERSION}
    if system is not None:
        head["system"] = converse_system_blocks(system, "system")
    return head


def to_converse(example: Example) -> Record:
    """Converse SFT (Nova): system blocks plus user/assistant messages of content blocks."""
    system, turns = _split_system(_as_chat(example).messages)
    return {**_converse_head(system), "messages": [converse_message(m, i) for i, m in enumerate(turns)]}


def to_dpo(example: Example) -> Record:
    """Nova DPO: the prompt's turns, then an assistant turn with the two labelled candidates."""
    assert isinstance(example, PreferenceExample), "the output plan admits only preference input for dpo"
    system, turns = _split_system(example.prompt)
    messages: list[Record] = [converse_message(m, i) for i, m in enumerate(turns)]
    candidates = [
        {"content": [{"text": example.chosen}], "preferenceLabel": "preferred"},
        {"content": [{"text": example.rejected}], "preferenceLabel": "non-preferred"},
    ]
    messages.append({"role": "assistant", "candidates": candidates})
    return {**_converse_head(system), "messages": messages}


def to_chat(example: Example) -> Record:
    """OpenAI / Databricks chat: ``messages`` of role and string content."""
    return {"messages": [chat_message(m, "messages", i) for i, m in enumerate(_as_chat(example).messages)]}


def to_prompt_response(example: Example) -> Record:
    """Databricks INSTRUCTION_FINETUNE: one user prompt and its response."""
    turns = _as_chat(example).messages
    if len(turns) != 2 or turns[0].role != "user":
        shape = "a system prompt" if turns[0].role == "system" else f"{len(turns) // 2} exchanges"
        msg = f"prompt-response holds one user turn and its answer; this record has {shape} (write --to chat to keep it)"
        raise ConversionError(msg, "messages")
    prompt, response = (chat_message(m, "messages", i)["content"] for i, m in enumerate(turns))
    return {"prompt": prompt, "response": response}


def to_preference(example: Example) -> Record:
    """TRL conversational preference: prompt messages, one-message chosen and rejected lists."""
    assert isinstance(example, PreferenceExample), (
        "the output plan admits only preference input for preference"
    )
    return {
        "prompt": [chat_message(m, "prompt", i) for i, m in enumerate(example.prompt)],
        "chosen": [{"role": "assistant", "content": example.chosen}],
        "rejected": [{"role": "assistant", "content": example.rejected}],
    }


def to_text(example: Example) -> Record:
    """Continued pretraining text."""
    assert isinstance(example, TextExample), "the output plan admits only text input for text"
    return {"text": example.text}


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """A ``--to`` target (``formats.registry``) with its encoder loaded, and the ``ds check`` format for its rules."""

    name: str
    accepts: tuple[Kind, ...]
    check_format: str | None
    encode: Callable[[Example], Record]

    @property
    def schema(self) -> pa.Schema:
        """The Arrow schema of Parquet output."""
        from tunekit_data.formats import ARROW_SCHEMAS

        return ARROW_SCHEMAS[self.name]


# Built from the registry, where each ``--to`` target is declared with its encoder from this module.
OUTPUT_FORMATS: dict[str, OutputFormat] = {
    f.name: OutputFormat(f.name, f.output.accepts, f.check.name if f.check else None, load(f.output.encoder))
    for f in (FORMATS[name] for name in OUTPUT_NAMES)
    if f.output is not None
}
