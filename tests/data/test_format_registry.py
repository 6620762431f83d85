"""The format registry (issue 17): every format's names, detector, decoder, encoder and rule suite in one record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tunekit_data.check import FORMATS as CHECK_SCHEMAS
from tunekit_data.check import validate_values
from tunekit_data.convert import INPUT_FORMATS, OUTPUT_FORMATS
from tunekit_data.examples import ChatExample, PreferenceExample, TextExample
from tunekit_data.formats import (
    CHECK_SUITES,
    CHECKS,
    FORMAT_ALIASES,
    FORMATS,
    OUTPUT_NAMES,
    canonical_name,
    guess_check_format,
    guess_input_format,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "convert"
# One real record per input format: the first line of its fixture.
SAMPLES = {
    name: orjson.loads((FIXTURES / path).read_bytes().splitlines()[0])
    for name, path in {
        "converse": "converse.jsonl",
        "dpo": "dpo.jsonl",
        "chat": "chat.jsonl",
        "openai-preference": "openai_preference.jsonl",
        "prompt-completion": "prompt_completion.jsonl",
        "preference": "preference.jsonl",
        "prompt-response": "prompt_response.jsonl",
        "jumpstart": "jumpstart/train.jsonl",
        "sharegpt": "sharegpt.jsonl",
        "alpaca": "alpaca.jsonl",
        "hh": "hh.jsonl",
        "text": "text.jsonl",
    }.items()
}
KIND_OF = {ChatExample: "chat", PreferenceExample: "preference", TextExample: "text"}


def test_every_format_has_a_sample_here():
    assert sorted(SAMPLES) == sorted(FORMATS)


def test_every_alias_resolves_to_a_format_and_names_stay_unique():
    assert FORMAT_ALIASES == {"sft": "converse", "cpt": "text"}
    for alias, name in FORMAT_ALIASES.items():
        assert canonical_name(alias) == name and alias in FORMATS[name].aliases
        assert alias not in FORMATS
    assert canonical_name("auto") == "auto"


def test_a_check_name_other_than_the_format_name_is_one_of_its_aliases():
    # so that `ds pack --format sft` reads what `ds check --format sft` checks
    for f in FORMATS.values():
        if f.check is not None:
            assert f.check.name == f.name or f.check.name in f.aliases
            assert canonical_name(f.check.name) == f.name


def test_the_check_suites_are_the_checkers_formats_and_their_checks_load():
    assert set(CHECK_SUITES) == set(CHECK_SCHEMAS)
    for name in CHECK_SUITES:
        assert CHECKS[name] and all(callable(c) for c in CHECKS[name])
        assert len(CHECKS[name]) == len(set(CHECKS[name]))
    assert {n for n, s in CHECK_SUITES.items() if s.converse} == {"sft", "dpo"}


def test_the_converters_tables_are_the_registrys_with_loaded_code():
    assert list(INPUT_FORMATS) == list(FORMATS)
    assert list(OUTPUT_FORMATS) == list(OUTPUT_NAMES) == ["converse", "dpo", "chat", "prompt-response", "preference", "text"]
    for name, f in FORMATS.items():
        assert (INPUT_FORMATS[name].kind, INPUT_FORMATS[name].summary) == (f.kind, f.summary)
        if f.output is not None:
            target = OUTPUT_FORMATS[name]
            assert target.accepts == f.output.accepts
            assert target.check_format == (f.check.name if f.check else None)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_each_format_is_detected_and_decoded_as_its_record_says(name):
    record = SAMPLES[name]
    assert guess_input_format(record) == name
    example = INPUT_FORMATS[name].decode(record, _plan(name))
    assert KIND_OF[type(example)] == FORMATS[name].kind


@pytest.mark.parametrize("name", OUTPUT_NAMES)
def test_each_output_writes_records_that_read_back_detect_and_pass_its_rules(name):
    spec = FORMATS[name]
    assert spec.kind in spec.output.accepts  # every output is an input format too: its own sample feeds it
    example = INPUT_FORMATS[name].decode(SAMPLES[name], _plan(name))
    written = OUTPUT_FORMATS[name].encode(example)
    assert guess_input_format(written) == name
    if spec.check is not None:
        assert guess_check_format(written) == spec.check.name
        assert validate_values([written], fmt=spec.check.name) == [[]]


def test_check_detection_prefers_the_most_specific_shape():
    dpo = SAMPLES["dpo"]
    assert [guess_check_format(SAMPLES[n]) for n in ("converse", "chat", "text", "prompt-response")] == [
        "sft",
        "chat",
        "cpt",
        "prompt-response",
    ]
    assert guess_check_format(dpo) == "dpo"
    assert guess_check_format({"prompt": "p", "completion": "c"}) == "prompt-response"
    assert guess_check_format({"messages": [], "text": "t"}) == "cpt"  # empty messages: not a chat
    assert guess_check_format({"question": "q"}) is None
    assert guess_check_format("text") is None


def test_input_detection_breaks_overlapping_keys_by_rank():
    assert guess_input_format({"prompt": "p", "completion": "c", "chosen": "a", "rejected": "b"}) == "preference"
    assert guess_input_format({"prompt": "p", "response": "r", "completion": "c"}) == "prompt-completion"
    assert guess_input_format({"instruction": "i", "output": "o", "context": "", "response": "r"}) == "alpaca"
    assert guess_input_format({"chosen": "a", "rejected": "b", "conversations": []}) == "hh"
    assert guess_input_format({"messages": [], "text": "t"}) == "chat"


def test_the_registry_imports_without_pyarrow_or_the_converter():
    code = "import json, sys; import tunekit_data.formats; print(json.dumps(sorted(sys.modules)))"
    modules = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True).stdout)
    assert [m for m in modules if m.split(".")[0] in ("pyarrow", "numpy") or m.startswith("tunekit_data.convert")] == []


def _plan(name):
    from tunekit_data.convert.inputs import InputPlan

    return InputPlan(name)
