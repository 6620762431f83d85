"""ds convert (issue 3): --from auto names the format from the leading records and never changes
what is done per record."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tunekit_data.convert import ConvertOptions, convert_dataset, detect_input_format, read_examples
from tunekit_data.errors import UsageError
from tunekit_data.formats import guess_input_format

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "convert"


@pytest.mark.parametrize(
    ("record", "fmt"),
    [
        ({"messages": [{"role": "user", "content": [{"text": "q"}]}]}, "converse"),
        ({"schemaVersion": "x", "messages": []}, "converse"),
        ({"system": [{"text": "s"}], "messages": [{"role": "user", "content": "q"}]}, "converse"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]}, "chat"),
        ({"messages": [{"role": "user", "content": "q"}]}, "chat"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"text": "q"}]},
                    {"role": "assistant", "candidates": []},
                ]
            },
            "dpo",
        ),
        ({"input": {}, "preferred_output": [], "non_preferred_output": []}, "openai-preference"),
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "preference"),
        ({"chosen": [{"role": "user", "content": "q"}], "rejected": []}, "preference"),
        ({"chosen": "\n\nHuman: q", "rejected": "\n\nHuman: q"}, "hh"),
        ({"prompt": "p", "completion": "c"}, "prompt-completion"),
        ({"prompt": "p", "response": "r"}, "prompt-response"),
        ({"conversations": []}, "sharegpt"),
        ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
        ({"instruction": "i", "context": "", "response": "r", "category": "qa"}, "jumpstart"),
        ({"text": "t"}, "text"),
        ({"question": "q", "answer": "a"}, None),
        ([1, 2], None),
    ],
)
def test_guess_format_by_keys(record, fmt):
    assert guess_input_format(record) == fmt


def test_majority_of_leading_records_decides():
    values = [{"text": "odd one"}] + [{"prompt": "p", "response": "r"}] * 5 + [{"unknown": 1}]
    detection = detect_input_format(values)
    assert (detection.fmt, detection.evidence) == ("prompt-response", "5 of 7 leading records")
    assert detection.describe() == "prompt-response (detected: 5 of 7 leading records)"


def test_undetectable_input_names_the_keys_and_asks_for_from(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "a"}\n')
    with pytest.raises(
        UsageError, match=r"cannot tell the input format .*keys seen: answer, question.*--from"
    ):
        read_examples([str(path)])


def test_template_beside_the_input_means_jumpstart():
    reader = read_examples([str(FIXTURES / "jumpstart_template" / "train.jsonl")])
    assert (reader.detection.fmt, reader.detection.how) == ("jumpstart", "template")


def test_template_with_another_format_is_a_usage_error():
    with pytest.raises(UsageError, match="--template is for JumpStart input"):
        read_examples(
            [str(FIXTURES / "chat.jsonl")],
            fmt="chat",
            template=str(FIXTURES / "jumpstart_template" / "template.json"),
        )


def test_unknown_from_is_a_usage_error():
    with pytest.raises(UsageError, match="--from must be auto or one of converse, dpo, chat"):
        read_examples([str(FIXTURES / "chat.jsonl")], fmt="openai")


def test_a_given_format_is_applied_to_every_record_never_guessed(tmp_path):
    """--from prompt-response on chat data rejects each record with a reason; nothing is re-read as chat."""
    summary = convert_dataset(
        [str(FIXTURES / "chat.jsonl")],
        ConvertOptions(to="converse", out=str(tmp_path / "o.jsonl"), fmt="prompt-response"),
    )
    assert summary.records == summary.rejected == 4
    assert {r.reason for r in summary.first_rejects} == {"must be a string, got null"}


def test_records_of_another_format_after_detection_are_rejected(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [orjson.dumps({"prompt": f"q{i}", "response": "a"}) for i in range(5)] + [
        orjson.dumps({"text": "stray"})
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    summary = convert_dataset([str(path)], ConvertOptions(to="converse", out=str(tmp_path / "o.jsonl")))
    assert summary.detection.fmt == "prompt-response"
    assert (summary.written["train"], summary.rejected) == (5, 1)
    assert (summary.first_rejects[0].line, summary.first_rejects[0].field) == (6, "prompt")


def test_target_must_fit_the_input_kind(tmp_path):
    with pytest.raises(UsageError, match=r"--to dpo needs preference input; the input is chat \(detected"):
        convert_dataset(
            [str(FIXTURES / "chat.jsonl")], ConvertOptions(to="dpo", out=str(tmp_path / "o.jsonl"))
        )
    with pytest.raises(UsageError, match="--to text needs text input"):
        convert_dataset(
            [str(FIXTURES / "alpaca.jsonl")], ConvertOptions(to="text", out=str(tmp_path / "o.jsonl"))
        )
    with pytest.raises(UsageError, match="--to converse needs chat or preference input"):
        convert_dataset(
            [str(FIXTURES / "text.jsonl")], ConvertOptions(to="converse", out=str(tmp_path / "o.jsonl"))
        )


def test_preference_to_sft_keeps_the_chosen_answer_and_says_so(tmp_path):
    out = tmp_path / "o.jsonl"
    summary = convert_dataset([str(FIXTURES / "hh.jsonl")], ConvertOptions(to="chat", out=str(out)))
    assert summary.notes == ["preference input written as chat keeps the chosen answer of each pair"]
    first = orjson.loads(out.read_bytes().splitlines()[0])
    assert first["messages"][-1]["content"].startswith("I'd rather not list those.")
