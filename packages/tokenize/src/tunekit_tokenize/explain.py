"""`--explain`: one record's tokens, each with the text it covers and whether the loss trains it.

Most fine-tuning bugs are mask bugs (an answer never trained, an end-of-turn token left out), and
they are invisible in loss curves; looking at the tokens is the quickest check.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tunekit_data.convert import Rejection, read_examples
from tunekit_data.errors import InputError, UsageError
from tunekit_data.examples import Example
from tunekit_data.formats import FORMAT_ALIASES
from tunekit_tokenize.chat_template import ChatTemplate
from tunekit_tokenize.encoder import IGNORE_INDEX, ExampleRejected, encode_example
from tunekit_tokenize.masks import LossOn
from tunekit_tokenize.tokenizer import TokenizerBundle, load_tokenizer


@dataclass(frozen=True, slots=True)
class ExplainedToken:
    """A token: its id, the rendered text it covers, and whether its label is trained.

    ``trained`` follows the packed labels, so a sequence's first token is never trained.
    """

    id: int
    text: str
    trained: bool


def explain_example(
    bundle: TokenizerBundle,
    example: Example,
    *,
    template: str | ChatTemplate = "auto",
    loss_on: LossOn = "assistant",
) -> list[list[ExplainedToken]]:
    """The tokens of each sequence of ``example`` (two for a preference pair: chosen, rejected).

    Raises:
        ExampleRejected: the example cannot be encoded (the reason says why).
    """
    encoded = encode_example(bundle, example, template=template, loss_on=loss_on)
    explained = []
    for sequence, text in zip(encoded.sequences, encoded.texts, strict=True):
        encoding = bundle.tokenizer.encode(text, add_special_tokens=False)
        # Text documents gain BOS/EOS around the text's own tokens; those two have no offsets.
        start = 1 if encoded.kind == "cpt" and bundle.adds_bos else 0
        covered = {start + i: text[a:b] for i, (a, b) in enumerate(encoding.offsets)}
        explained.append(
            [
                ExplainedToken(
                    int(token),
                    covered.get(i) or bundle.tokenizer.decode([int(token)], skip_special_tokens=False),
                    bool(label != IGNORE_INDEX),
                )
                for i, (token, label) in enumerate(zip(sequence.input_ids, sequence.labels, strict=True))
            ]
        )
    return explained


@dataclass(frozen=True, slots=True)
class ExplainedRecord:
    """Record ``index`` of an input: where it was read, and each sequence's name and tokens."""

    index: int
    file: str
    line: int
    sequences: list[tuple[str, list[ExplainedToken]]]

    def to_json(self) -> dict[str, object]:
        """The ``ds pack --explain N --json`` object."""
        return {
            "record": self.index,
            "file": self.file,
            "line": self.line,
            "sequences": [
                {"name": name, "tokens": [{"id": t.id, "text": t.text, "trained": t.trained} for t in tokens]}
                for name, tokens in self.sequences
            ],
        }


def explain_record(
    paths: Sequence[str],
    tokenizer: str | Path,
    record: int,
    *,
    fmt: str = "auto",
    template: str = "auto",
    loss_on: LossOn = "assistant",
) -> ExplainedRecord:
    """`explain_example` of record ``record`` (0-based) of ``paths``, read as `pack_files` reads them.

    Raises:
        UsageError: ``record`` is negative.
        InputError: the input has no such record, or it cannot be read or encoded (the reason says why).
    """
    if record < 0:
        msg = f"--explain must be a record index >= 0, got {record}"
        raise UsageError(msg)
    bundle = load_tokenizer(tokenizer)
    reader = read_examples(list(paths), fmt=FORMAT_ALIASES.get(fmt, fmt))
    found = next(itertools.islice(reader, record, None), None)
    if found is None:
        msg = f"--explain {record}: the input has fewer than {record + 1} records"
        raise InputError(msg)
    source, example = found
    if isinstance(example, Rejection):
        msg = f"{example} (record {record} cannot be read, so it has no tokens)"
        raise InputError(msg)
    try:
        sequences = explain_example(bundle, example, template=template, loss_on=loss_on)
    except ExampleRejected as exc:
        msg = f"{source.file}:{source.line}: {exc}"
        raise InputError(msg) from exc
    names = ["chosen", "rejected"] if len(sequences) == 2 else ["sequence"]
    return ExplainedRecord(record, source.file, source.line, list(zip(names, sequences, strict=True)))
