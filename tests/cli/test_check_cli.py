"""`ds check` end to end through ``tunekit_cli.ds.main``: exit codes, --json, outputs, inputs."""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from tunekit_cli.ds import main

SV = "bedrock-conversation-2024"


def sft(i: int = 0, **extra) -> bytes:
    record = {
        "schemaVersion": SV,
        "messages": [
            {"role": "user", "content": [{"text": f"Question {i}?"}]},
            {"role": "assistant", "content": [{"text": f"Answer {i}."}]},
        ],
        **extra,
    }
    return orjson.dumps(record)


BAD_ROLE = orjson.dumps(
    {"schemaVersion": SV, "messages": [{"role": "User", "content": [{"text": "a"}]}, {"role": "assistant", "content": [{"text": "b"}]}]}
)
DPO = orjson.dumps(
    {
        "schemaVersion": SV,
        "messages": [
            {"role": "user", "content": [{"text": "Q"}]},
            {
                "role": "assistant",
                "candidates": [
                    {"content": [{"text": "good"}], "preferenceLabel": "preferred"},
                    {"content": [{"text": "bad"}], "preferenceLabel": "non-preferred"},
                ],
            },
        ],
    }
)
SAMPLES = {
    "sft": sft(),
    "dpo": DPO,
    "cpt": b'{"text": "A document."}',
    "chat": b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}',
    "prompt-response": b'{"prompt": "Hi", "response": "Hello"}',
}
JSON_KEYS = {"files", "format", "profile", "records", "valid", "invalid", "blank", "warnings", "by_rule", "errors", "dataset_errors", "ok"}


def write(path: Path, lines: list[bytes], end: bytes = b"\n") -> Path:
    path.write_bytes(b"".join(line + end for line in lines))
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys, *args: str) -> tuple[int, dict]:
    code, out, _ = run(capsys, *args, "--json")
    assert out.endswith("\n") and out.count("\n") == 1, "exactly one JSON object, on one line"
    return code, json.loads(out)


# --- exit codes -----------------------------------------------------------------------------------


def test_exit_0_when_valid(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", [sft(i) for i in range(5)])
    code, out, _ = run(capsys, str(path))
    assert code == 0
    assert "OK: 5 of 5 records valid" in out


def test_exit_1_when_invalid_with_the_problem_line(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", [sft(), BAD_ROLE])
    code, out, _ = run(capsys, str(path))
    assert code == 1
    assert f"{path}:2: messages[0].role: [S6] role must be" in out
    assert "FAILED: 1 of 2 records valid" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--profile", "nova-giant-9"], "--profile must be one of"),
        (["--format", "xml"], "--format must be one of"),
        (["--platform", "azure"], "--platform must be one of"),
        (["--max-invalid-percent", "150"], "--max-invalid-percent must be between 0 and 100"),
        (["--dataset-uri", "https://bucket/x"], "--dataset-uri must look like s3://bucket/prefix"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--workers", "many"], "--workers"),
        (["--no-such-option"], "No such option"),
    ],
)
def test_exit_2_on_usage_errors(tmp_path, capsys, args, needle):
    path = write(tmp_path / "train.jsonl", [sft()])
    code, out, err = run(capsys, str(path), *args)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err + out
    assert out == ""


def test_exit_2_on_a_missing_file_with_one_clear_line(tmp_path, capsys):
    missing = tmp_path / "a-rather-long-directory-name-for-wrapping" / "no-such-training-file-with-a-long-name.jsonl"
    code, out, err = run(capsys, str(missing))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert str(missing) in lines[0] and "no such file or directory" in lines[0]
    assert out == ""


def test_exit_2_without_paths(capsys):
    code, _, err = run(capsys)
    assert code == 2
    assert "Traceback" not in err


def test_exit_2_on_a_directory_without_jsonl(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run(capsys, str(tmp_path))
    assert code == 2
    assert "holds no" in err


def test_exit_2_on_an_output_in_a_missing_directory(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", [sft()])
    code, _, err = run(capsys, str(path), "--valid-out", str(tmp_path / "nope" / "valid.jsonl"))
    assert code == 2
    assert "Traceback" not in err


def test_exit_2_when_the_format_cannot_be_detected(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", [b"[1]", b'{"foo": 1}'])
    code, _, err = run(capsys, str(path))
    assert code == 2
    assert "--format" in err


def test_markup_in_the_data_is_printed_not_interpreted(tmp_path, capsys):
    record = orjson.dumps({"schemaVersion": SV, "messages": [{"role": "[/x]", "content": [{"text": "a"}]}, {"role": "assistant", "content": [{"text": "b"}]}]})
    path = write(tmp_path / "train.jsonl", [record, sft(1, **{"[bold]k[/bold]": 1})])
    code, out, err = run(capsys, str(path))
    assert code == 1
    assert "got '[/x]'" in out
    assert "[bold]k[/bold]" in out
    assert "Traceback" not in err


# --- --max-invalid-percent ------------------------------------------------------------------------


@pytest.mark.parametrize(("percent", "code"), [("0", 1), ("24.9", 1), ("25", 0), ("100", 0)])
def test_max_invalid_percent(tmp_path, capsys, percent, code):
    path = write(tmp_path / "train.jsonl", [sft(1), BAD_ROLE, sft(2), sft(3)])  # 25 % invalid
    got, summary = run_json(capsys, str(path), "--max-invalid-percent", percent)
    assert got == code
    assert summary["ok"] is (code == 0)
    assert summary["invalid"] == 1


def test_max_invalid_percent_does_not_excuse_dataset_errors(tmp_path, capsys):
    path = write(tmp_path / "train.json", [sft()])  # F1
    code, summary = run_json(capsys, str(path), "--max-invalid-percent", "100")
    assert code == 1
    assert [e["rule"] for e in summary["dataset_errors"]] == ["F1"]


# --- --json ----------------------------------------------------------------------------------------


def test_json_contract(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", [sft(1), b"", BAD_ROLE, b"{not json", sft(2, id=7)])
    code, summary = run_json(capsys, str(path), "--format", "sft")
    assert code == 1
    assert set(summary) >= JSON_KEYS
    assert summary["files"] == [str(path)]
    assert summary["format"] == "sft"
    assert summary["profile"] == "nova-lite-1"
    assert (summary["records"], summary["valid"], summary["invalid"], summary["blank"]) == (4, 2, 2, 1)
    assert summary["ok"] is False
    errors = summary["errors"]
    for e in errors:
        assert set(e) == {"file", "line", "rule", "severity", "field", "message"}
        assert e["file"] == str(path) and e["severity"] in ("error", "warning") and e["message"]
    assert [(e["line"], e["rule"], e["severity"], e["field"]) for e in errors] == [
        (2, "F7", "warning", ""),
        (3, "S6", "error", "messages[0].role"),
        (4, "F5", "error", ""),
        (5, "S4", "warning", "id"),
    ]
    assert summary["warnings"] == 2
    assert summary["by_rule"] == {"F5": 1, "F7": 1, "S4": 1, "S6": 1}
    assert summary["dataset_errors"] == []


def test_json_lists_every_problem_not_a_sample(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", [BAD_ROLE] * 150 + [sft()])
    code, summary = run_json(capsys, str(path))
    assert code == 1
    assert len(summary["errors"]) == 150
    assert [e["line"] for e in summary["errors"]] == list(range(1, 151))
    assert sum(summary["by_rule"].values()) == len(summary["errors"])


def test_json_dataset_errors(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", [sft(i) for i in range(3)])
    code, summary = run_json(capsys, str(path), "--platform", "bedrock")
    assert code == 1
    assert summary["errors"] == []
    [f10] = summary["dataset_errors"]
    assert set(f10) >= {"rule", "severity", "message"}
    assert (f10["rule"], f10["severity"]) == ("F10", "error")


def test_json_on_a_valid_dataset(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", [sft(i) for i in range(3)])
    code, summary = run_json(capsys, str(path))
    assert code == 0
    assert summary["ok"] is True and summary["errors"] == [] and summary["by_rule"] == {}


# --- --errors-out, --valid-out, --rejects-out ------------------------------------------------------


def test_errors_out_streams_every_problem_as_jsonl(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", [BAD_ROLE, sft(), b"[]", sft(3, extra=1)] * 10)
    errors_out = tmp_path / "errors.jsonl"
    code, summary = run_json(capsys, str(path), "--errors-out", str(errors_out))
    assert code == 1
    streamed = [json.loads(line) for line in errors_out.read_text().splitlines()]
    assert streamed == summary["errors"]
    assert len(streamed) == 30


def test_split_outputs_are_byte_for_byte(tmp_path, capsys):
    lines = [sft(1), b"", BAD_ROLE + b"  ", b" " + sft(2), b"\xff", sft(3), b"\t", b"null"]
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    valid_out, rejects_out = tmp_path / "valid.jsonl", tmp_path / "rejects.jsonl"
    code, _, _ = run(capsys, str(path), "--format", "sft", "--valid-out", str(valid_out), "--rejects-out", str(rejects_out))
    assert code == 1
    assert valid_out.read_bytes() == sft(1) + b"\r\n" + b" " + sft(2) + b"\r\n" + sft(3) + b"\r\n"
    assert rejects_out.read_bytes() == BAD_ROLE + b"  \r\n" + b"\xff\r\n" + b"null\r\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rejects.jsonl", "train.jsonl", "valid.jsonl"]  # no temporaries left


def test_outputs_are_not_written_on_a_usage_error(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", [sft()])
    valid_out = tmp_path / "valid.jsonl"
    code, _, _ = run(capsys, str(path), "--valid-out", str(valid_out), "--profile", "nope")
    assert code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


# --- --format auto ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_format_auto_reports_what_it_detected(tmp_path, capsys, fmt):
    path = write(tmp_path / "train.jsonl", [SAMPLES[fmt]] * 3)
    _, summary = run_json(capsys, str(path))
    assert summary["format"] == fmt
    assert summary["detected_format"] is True
    assert summary["invalid"] == 0
    _, out, _ = run(capsys, str(path))
    assert f"{fmt} (detected)" in out


def test_format_auto_never_changes_the_rules_per_record(tmp_path, capsys):
    """A DPO dataset with one SFT record: detected as dpo, and the SFT record is checked as DPO."""
    path = write(tmp_path / "train.jsonl", [DPO, DPO, sft()])
    _, summary = run_json(capsys, str(path))
    assert summary["format"] == "dpo"
    assert [(e["line"], e["rule"]) for e in summary["errors"] if e["severity"] == "error"] == [(3, "D2")]


def test_explicit_format_is_reported_as_given(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", [SAMPLES["cpt"]])
    _, summary = run_json(capsys, str(path), "--format", "cpt")
    assert (summary["format"], summary["detected_format"]) == ("cpt", False)


# --- inputs: compressed files, directories, stdin ---------------------------------------------------

LINES = [sft(1), BAD_ROLE, b"", sft(2), b"\xff"]


def _expected(summary: dict) -> list[tuple[int, str]]:
    return [(e["line"], e["rule"]) for e in summary["errors"]]


def test_gzip_and_zstd_inputs_match_the_plain_file(tmp_path, capsys):
    data = b"".join(line + b"\n" for line in LINES)
    plain = tmp_path / "train.jsonl"
    plain.write_bytes(data)
    gz = tmp_path / "train.jsonl.gz"
    gz.write_bytes(gzip.compress(data))
    zst = tmp_path / "train.jsonl.zst"
    with pa.CompressedOutputStream(str(zst), "zstd") as f:
        f.write(data)
    results = {}
    for path in (plain, gz, zst):
        code, summary = run_json(capsys, str(path), "--format", "sft")
        assert code == 1
        assert summary["dataset_errors"] == []  # the extensions are accepted (F1)
        results[path.name] = (_expected(summary), summary["records"], summary["valid"], summary["blank"])
    assert results["train.jsonl.gz"] == results["train.jsonl"] == results["train.jsonl.zst"]
    assert results["train.jsonl"][0] == [(2, "S6"), (3, "F7"), (5, "F3")]


def test_compressed_split_outputs_are_decompressed_lines(tmp_path, capsys):
    gz = tmp_path / "train.jsonl.gz"
    gz.write_bytes(gzip.compress(b"".join(line + b"\n" for line in LINES)))
    valid_out = tmp_path / "valid.jsonl"
    run(capsys, str(gz), "--format", "sft", "--valid-out", str(valid_out))
    assert valid_out.read_bytes() == sft(1) + b"\n" + sft(2) + b"\n"


def test_a_corrupt_archive_is_an_io_error(tmp_path, capsys):
    bad = tmp_path / "train.jsonl.gz"
    bad.write_bytes(gzip.compress(b"".join(sft(i) + b"\n" for i in range(1000)))[:200])
    code, _, err = run(capsys, str(bad), "--format", "sft")
    assert code == 2
    assert "Traceback" not in err


def test_directory_input(tmp_path, capsys):
    root = tmp_path / "dataset"
    (root / "part-b").mkdir(parents=True)
    write(root / "part-a.jsonl", [sft(1), BAD_ROLE])
    write(root / "part-b" / "x.jsonl", [BAD_ROLE])
    (root / "part-c.jsonl.gz").write_bytes(gzip.compress(sft(3) + b"\n"))
    (root / "README.md").write_text("not data")
    code, summary = run_json(capsys, str(root))
    assert code == 1
    names = [str(Path(f).relative_to(root)) for f in summary["files"]]
    assert names == ["part-a.jsonl", "part-b/x.jsonl", "part-c.jsonl.gz"]
    assert summary["records"] == 4
    assert [(Path(e["file"]).name, e["line"], e["rule"]) for e in summary["errors"] if e["severity"] == "error"] == [
        ("part-a.jsonl", 2, "S6"),
        ("x.jsonl", 1, "S6"),
    ]


class _Stdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


def test_stdin(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", _Stdin(b"".join(line + b"\n" for line in LINES)))
    code, summary = run_json(capsys, "-", "--format", "sft")
    assert code == 1
    assert summary["files"] == ["-"]
    assert _expected(summary) == [(2, "S6"), (3, "F7"), (5, "F3")]
    assert summary["dataset_errors"] == []


def test_stdin_with_a_bom_gets_f4_and_line_1_checked(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", _Stdin(b"\xef\xbb\xbf" + BAD_ROLE + b"\n" + sft() + b"\n"))
    code, summary = run_json(capsys, "-", "--format", "sft")
    assert code == 1
    assert _expected(summary) == [(1, "S6")]
    assert [(e["rule"], e["severity"]) for e in summary["dataset_errors"]] == [("F4", "warning")]


def test_stdin_with_format_auto_and_split(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "stdin", _Stdin(DPO + b"\n" + DPO + b"\n"))
    valid_out = tmp_path / "valid.jsonl"
    code, summary = run_json(capsys, "-", "--valid-out", str(valid_out))
    assert summary["format"] == "dpo"
    assert code == 0  # D10 (fewer than 1,000 pairs) is a warning
    assert [e["rule"] for e in summary["dataset_errors"]] == ["D10"]
    assert valid_out.read_bytes() == DPO + b"\n" + DPO + b"\n"


def test_workers_option(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", [sft(i) if i % 7 else BAD_ROLE for i in range(200)])
    results = [run_json(capsys, str(path), "--workers", w) for w in ("1", "2")]
    assert results[0] == results[1]
    assert results[0][1]["invalid"] == 29


def test_format_auto_on_an_empty_file_reports_f11(tmp_path, capsys):
    empty = tmp_path / "train.jsonl"
    empty.write_bytes(b"\n\n")
    code, summary = run_json(capsys, str(empty))
    assert code == 1
    assert [(e["rule"], e["severity"]) for e in summary["dataset_errors"]] == [("F11", "error")]


def test_format_auto_looks_past_empty_files(tmp_path, capsys):
    (tmp_path / "a.jsonl").write_bytes(b"")
    write(tmp_path / "b.jsonl", [DPO])
    code, summary = run_json(capsys, str(tmp_path))
    assert summary["format"] == "dpo"
    assert code == 1  # F11 on a.jsonl
    assert [(Path(e["file"]).name, e["rule"]) for e in summary["dataset_errors"] if e["severity"] == "error"] == [
        ("a.jsonl", "F11")
    ]


def test_human_output_shows_the_first_20_problems(tmp_path, capsys):
    path = write(tmp_path / "train.jsonl", [BAD_ROLE] * 30)
    code, out, _ = run(capsys, str(path))
    assert code == 1
    shown = [line for line in out.splitlines() if ": [S6] " in line]
    assert shown == [f"{path}:{n}: messages[0].role: [S6] role must be \"user\" or \"assistant\", got 'User' (roles are lower-case: 'user')" for n in range(1, 21)]
    assert "... and 10 more (use --errors-out FILE or --json for all)" in out
    assert "FAILED: 0 of 30 records valid" in out
