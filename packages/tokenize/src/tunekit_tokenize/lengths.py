"""Rule F12 with a real tokenizer: record lengths in tokens, counted as ``ds pack`` counts them.

``ds check --tokenizer DIR --max-length N`` counts every valid record's tokens as ``ds pack`` would
(same chat template, same decoding) and warns about records longer than N, which the trainer would
drop or truncate.

Without a tokenizer ``ds check`` cannot count tokens (``shared/spec/data-formats.md`` F12), so this
lives here, next to the encoder, and reaches the checker as its ``CheckConfig.record_check`` hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunekit_data.check import Problem
from tunekit_data.convert import INPUT_FORMATS, ConversionError, InputPlan
from tunekit_data.errors import UsageError
from tunekit_data.examples import Example
from tunekit_data.formats import FORMAT_ALIASES
from tunekit_tokenize.chat_template import resolve_template
from tunekit_tokenize.encoder import Encoded, Encoder
from tunekit_tokenize.manifest import DEFAULT_MAX_LENGTH, max_length_problem
from tunekit_tokenize.tokenizer import TokenizerBundle, load_tokenizer

_NAMES = ("sequence",)
_PAIR_NAMES = ("chosen", "rejected")


@dataclass
class LengthCheck:
    """Counts tokens per record; records over ``max_length`` get an F12 warning naming the count.

    Also keeps the dataset's token figures (``records``, ``tokens``, ``longest``, ``over``) for the
    summary. Records the encoder cannot use at all (media for a text tokenizer, a template that
    fails) are reported as F12 warnings too, with the reason, since their length is unknown.
    """

    bundle: TokenizerBundle
    max_length: int = DEFAULT_MAX_LENGTH
    template: str = "auto"
    records: int = 0
    tokens: int = 0
    longest: int = 0
    over: int = 0
    _encoders: dict[bool, Encoder] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, tokenizer: str | Path, max_length: int | None = None, template: str = "auto") -> LengthCheck:
        """The counter for the tokenizer directory ``tokenizer``; ``max_length`` None is `DEFAULT_MAX_LENGTH`."""
        return cls(load_tokenizer(tokenizer), DEFAULT_MAX_LENGTH if max_length is None else max_length, template)

    def __post_init__(self) -> None:
        if problem := max_length_problem(self.max_length):
            raise UsageError(problem)

    def __call__(self, fmt: str, records: list[tuple[int, object]]) -> list[tuple[int, Problem]]:
        """The F12 findings among ``records`` (``(line, decoded JSON)``, all valid for ``fmt``)."""
        plan = InputPlan(FORMAT_ALIASES.get(fmt, fmt))
        decode = INPUT_FORMATS[plan.fmt].decode
        found: list[tuple[int, Problem]] = []
        lines: list[int] = []
        examples: list[Example] = []
        for line, value in records:
            try:
                examples.append(decode(value, plan))  # type: ignore[arg-type]
                lines.append(line)
            except ConversionError as exc:  # valid for ds check but not tokenizable as this format
                found.append((line, Problem.make("F12", exc.field or "", f"cannot count tokens: {exc.reason}")))
        encoder = self._encoder(needs_template=plan.format.kind != "text")
        for line, result in zip(lines, encoder.encode_batch(examples), strict=True):
            if not isinstance(result, Encoded):
                found.append((line, Problem.make("F12", "", f"cannot count tokens: [{result.code}] {result.message}")))
                continue
            found.extend((line, p) for p in self._measure(result))
        return sorted(found, key=lambda hit: hit[0])

    def _measure(self, encoded: Encoded) -> list[Problem]:
        self.records += 1
        names = _PAIR_NAMES if encoded.kind == "dpo" else _NAMES
        problems = []
        for name, sequence in zip(names, encoded.sequences, strict=True):
            n = len(sequence)
            self.tokens += n
            self.longest = max(self.longest, n)
            if n > self.max_length:
                self.over += 1
                what = "record" if name == "sequence" else f"prompt + {name} answer"
                problems.append(Problem.make("F12", "", f"{what} is {n:,} tokens, over --max-length {self.max_length:,}: training drops or truncates it"))
        return problems

    def _encoder(self, *, needs_template: bool) -> Encoder:
        # Resolved lazily: CPT data needs no chat template, so a tokenizer without one still works.
        if needs_template not in self._encoders:
            template = resolve_template(self.bundle, self.template) if needs_template else None
            self._encoders[needs_template] = Encoder(self.bundle, template, "all")
        return self._encoders[needs_template]

    def to_dict(self) -> dict[str, int]:
        """The token figures for ``ds check --json``."""
        return {"max_length": self.max_length, "records": self.records, "tokens": self.tokens, "longest": self.longest, "over_max_length": self.over}
