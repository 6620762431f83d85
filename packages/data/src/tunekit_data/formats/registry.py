"""Every dataset format, once: its names, how it is recognised, read, written and checked.

One ``Format`` record per format holds all a command needs to know about it:

- ``name`` (``ds convert --from`` / ``--to``) and ``aliases`` (other names the commands accept, e.g.
  ``ds check``'s ``sft`` for ``converse``);
- ``looks_like``: the key test ``--from auto`` (``ds convert``, ``ds pack``) recognises it by;
- ``decoder``: the function that reads one record into an ``Example`` (``ds convert``, ``ds pack``);
- ``output``: when it is a ``--to`` target, the input kinds it takes and its encoder;
- ``check``: when ``ds check`` validates it, the ``--format`` name, the rule checks of its suite and
  the key test ``--format auto`` recognises it by.

Adding a format is one record here plus its decoder (``convert/inputs.py``), encoder
(``convert/outputs.py``) or rule checks (``formats/<family>.py``), each where its siblings live.

Plain Python that imports nothing of the package: ``ds --help`` and ``ds check`` read it without
pyarrow or the converter (tests/cli/test_startup.py). Decoders, encoders and checks are therefore
named, as ``"module:attribute"`` under ``tunekit_data``, and loaded by ``load`` when first used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Literal

Kind = Literal["chat", "preference", "text"]
Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Detector:
    """A key test for one format; tests run in ascending ``rank`` and the first that holds names the record.

    Ranks order formats whose keys overlap (a record with ``prompt``, ``completion``, ``chosen`` and
    ``rejected`` is a preference record): the more specific test ranks first. Tests of one rank
    exclude each other.
    """

    rank: int
    test: Callable[[Record], bool]


@dataclass(frozen=True, slots=True)
class Output:
    """How ``ds convert --to`` writes a format: the input kinds it takes, its encoder, its place in ``--to`` lists."""

    accepts: tuple[Kind, ...]
    encoder: str
    rank: int


@dataclass(frozen=True, slots=True)
class CheckSuite:
    """How ``ds check`` validates a format: its ``--format`` name, rule checks and detector.

    ``checks`` name tuples of vectorized checks under ``tunekit_data.formats``, run in order;
    ``converse`` marks the Converse-shaped formats (content blocks, media, Bedrock's record counts).
    """

    name: str
    checks: tuple[str, ...]
    detector: Detector
    converse: bool = False


@dataclass(frozen=True, slots=True)
class Format:
    """One dataset format (see the module docstring)."""

    name: str
    kind: Kind
    summary: str
    decoder: str
    detector: Detector
    aliases: tuple[str, ...] = ()
    output: Output | None = None
    check: CheckSuite | None = None


def load(ref: str) -> Any:
    """The object a ``"module:attribute"`` reference under ``tunekit_data`` names, importing its module."""
    module, _, attribute = ref.partition(":")
    return getattr(import_module(f"tunekit_data.{module}"), attribute)


# --- key tests -------------------------------------------------------------------------------------


def _messages_kind(value: Record) -> str | None:
    """Which of the ``messages`` formats a record is (``dpo``, ``converse``, ``chat``), None without messages."""
    if "messages" not in value:
        return None
    messages = value["messages"]
    turns = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    if turns and "candidates" in turns[-1]:
        return "dpo"
    if "schemaVersion" in value or isinstance(value.get("system"), list):
        return "converse"
    for turn in turns:
        content = turn.get("content")
        if isinstance(content, list) and content and isinstance(content[0], dict):
            # OpenAI parts carry "type"; Converse blocks are keyed by their kind.
            return "chat" if "type" in content[0] else "converse"
    return "chat"


def _messages(kind: str) -> Detector:
    return Detector(0, lambda v: _messages_kind(v) == kind)


def _keys(rank: int, *keys: str) -> Detector:
    wanted = frozenset(keys)
    return Detector(rank, lambda v: wanted <= v.keys())


def _is_preference(value: Record) -> bool:
    return {"chosen", "rejected"} <= value.keys() and ("prompt" in value or isinstance(value["chosen"], list))


def _check_turns(value: Record) -> list[object] | None:
    """The ``messages`` of a record ``ds check`` reads as Converse or chat (a non-empty list), else None."""
    messages = value.get("messages")
    return messages if isinstance(messages, list) and messages else None


def _check_dpo(value: Record) -> bool:
    turns = _check_turns(value)
    return turns is not None and isinstance(turns[-1], dict) and "candidates" in turns[-1]


def _check_chat(value: Record) -> bool:
    turns = _check_turns(value)
    return turns is not None and any(isinstance(m, dict) and isinstance(m.get("content"), str) for m in turns)


def _check_prompt_response(value: Record) -> bool:
    return "prompt" in value and ("response" in value or "completion" in value)


_CONVERSE_CHECKS = ("formats.converse:SFT_CHECKS", "formats.media:MEDIA_CHECKS")

# In the order the commands list them (``--from``/``--to`` help and errors).
FORMATS: dict[str, Format] = {
    f.name: f
    for f in [
        Format(
            "converse",
            "chat",
            "Converse SFT (Bedrock / Nova): messages of content blocks, optional system",
            "convert.inputs:from_converse",
            _messages("converse"),
            aliases=("sft",),
            output=Output(("chat", "preference"), "convert.outputs:to_converse", 0),
            check=CheckSuite(
                "sft",
                (*_CONVERSE_CHECKS, "formats.tools:TOOL_CHECKS"),
                Detector(2, lambda v: _check_turns(v) is not None),
                converse=True,
            ),
        ),
        Format(
            "dpo",
            "preference",
            "Nova DPO: Converse turns, the last one with preferred/non-preferred candidates",
            "convert.inputs:from_dpo",
            _messages("dpo"),
            output=Output(("preference",), "convert.outputs:to_dpo", 1),
            check=CheckSuite(
                "dpo", (*_CONVERSE_CHECKS, "formats.dpo:DPO_CHECKS"), Detector(0, _check_dpo), converse=True
            ),
        ),
        Format(
            "chat",
            "chat",
            "OpenAI / Databricks chat: messages with string or part-list content",
            "convert.inputs:from_chat",
            _messages("chat"),
            output=Output(("chat", "preference"), "convert.outputs:to_chat", 2),
            check=CheckSuite("chat", ("formats.databricks:CHAT_CHECKS",), Detector(1, _check_chat)),
        ),
        Format(
            "openai-preference",
            "preference",
            "OpenAI preference: input.messages, preferred_output, non_preferred_output",
            "convert.inputs:from_openai_preference",
            _keys(1, "input", "preferred_output", "non_preferred_output"),
        ),
        Format(
            "prompt-completion",
            "chat",
            "TRL prompt/completion, strings or message lists",
            "convert.inputs:from_prompt_completion",
            _keys(4, "prompt", "completion"),
        ),
        Format(
            "preference",
            "preference",
            "TRL prompt/chosen/rejected (strings or message lists; the prompt may be implicit)",
            "convert.inputs:from_preference",
            Detector(2, _is_preference),
            # TRL preference data has no ds check format; the decoders already guarantee its shape.
            output=Output(("preference",), "convert.outputs:to_preference", 4),
        ),
        Format(
            "prompt-response",
            "chat",
            "Databricks INSTRUCTION_FINETUNE: prompt/response",
            "convert.inputs:from_prompt_response",
            _keys(5, "prompt", "response"),
            output=Output(("chat", "preference"), "convert.outputs:to_prompt_response", 3),
            check=CheckSuite(
                "prompt-response", ("formats.databricks:PROMPT_RESPONSE_CHECKS",), Detector(4, _check_prompt_response)
            ),
        ),
        Format(
            "jumpstart",
            "chat",
            "SageMaker JumpStart: instruction/context/response, or any fields via template.json",
            "convert.inputs:from_jumpstart",
            _keys(8, "instruction", "context", "response"),
        ),
        Format(
            "sharegpt",
            "chat",
            "ShareGPT: conversations of {from, value}, optional system and images",
            "convert.inputs:from_sharegpt",
            _keys(6, "conversations"),
        ),
        Format(
            "alpaca",
            "chat",
            "Alpaca: instruction/input/output (optional system, history)",
            "convert.inputs:from_alpaca",
            _keys(7, "instruction", "output"),
        ),
        Format(
            "hh",
            "preference",
            "Anthropic HH: chosen/rejected Human:/Assistant: transcripts",
            "convert.inputs:from_hh",
            _keys(3, "chosen", "rejected"),
        ),
        Format(
            "text",
            "text",
            "plain text: {text} records, or a folder of .txt documents",
            "convert.inputs:from_text",
            _keys(9, "text"),
            aliases=("cpt",),
            output=Output(("text",), "convert.outputs:to_text", 5),
            check=CheckSuite("cpt", ("formats.cpt:CPT_CHECKS",), Detector(3, lambda v: "text" in v)),
        ),
    ]
}

# Other names of formats: ``ds check --format`` calls converse ``sft`` and text ``cpt``; ``ds pack
# --format`` and ``ds check --tokenizer`` accept them too.
FORMAT_ALIASES: dict[str, str] = {alias: f.name for f in FORMATS.values() for alias in f.aliases}
OUTPUT_NAMES: tuple[str, ...] = tuple(
    f.name for f in sorted(FORMATS.values(), key=lambda f: f.output.rank if f.output else -1) if f.output is not None
)
CHECK_SUITES: dict[str, CheckSuite] = {f.check.name: f.check for f in FORMATS.values() if f.check is not None}


def canonical_name(name: str) -> str:
    """``name`` with an alias replaced by the format's own name; any other string unchanged (``auto``)."""
    return FORMAT_ALIASES.get(name, name)


_BY_INPUT_RANK = sorted(((f.name, f.detector) for f in FORMATS.values()), key=lambda pair: pair[1].rank)
_BY_CHECK_RANK = sorted(((s.name, s.detector) for s in CHECK_SUITES.values()), key=lambda pair: pair[1].rank)


def _first(detectors: list[tuple[str, Detector]], value: object) -> str | None:
    if isinstance(value, dict):
        for name, detector in detectors:
            if detector.test(value):
                return name
    return None


def guess_input_format(value: object) -> str | None:
    """The input format (``--from`` name) one decoded record looks like, by its keys; None if none."""
    return _first(_BY_INPUT_RANK, value)


def guess_check_format(value: object) -> str | None:
    """The ``ds check --format`` one decoded record looks like, by its keys; None if none."""
    return _first(_BY_CHECK_RANK, value)
