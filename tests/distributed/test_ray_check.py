"""`ds check --engine ray` gives the local engine's report and splits the lines the same way.

Byte ranges are cut small (a few hundred bytes) so that one file becomes many tasks and ranges
start and end inside lines, at blank lines and at CRLF endings.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import orjson
import pytest
from tests.conftest import free_port

from tunekit_cli.ds import main
from tunekit_data.check import CheckConfig, report_json, run_check
from tunekit_data.distributed.check import run_check_ray
from tunekit_data.distributed.parts import MANIFEST

SV = "bedrock-conversation-2024"


def _sft(i: int, role: str = "user") -> bytes:
    return orjson.dumps({"schemaVersion": SV, "messages": [{"role": role, "content": [{"text": f"question {i} " * (i % 7)}]}, {"role": "assistant", "content": [{"text": f"answer {i}"}]}]})


def _dataset(tmp_path: Path) -> list[str]:
    """Two files of mixed good and bad lines: bad roles, broken JSON, blank lines, a BOM, CRLF,
    unknown keys, bad UTF-8, and a last line without a newline."""
    lines = []
    for i in range(120):
        kind = i % 11
        lines.append(
            _sft(i, "User") if kind == 3
            else b'{"schemaVersion": "' + SV.encode() + b'", "messages": [' if kind == 5
            else b"" if kind == 7
            else _sft(i)[:-1] + b', "extra": 1}' if kind == 9
            else _sft(i).replace(b"question", b"q\xff") if i == 44
            else _sft(i)
        )  # fmt: skip
    a = tmp_path / "a.jsonl"
    a.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines[:70]) + b"\n")
    b = tmp_path / "b.jsonl"
    b.write_bytes(b"\r\n".join(lines[70:]))  # CRLF, and no newline at the end
    return [str(a), str(b)]


def _report(summary) -> dict:
    buf = io.BytesIO()
    report_json(summary, buf)
    summary.close()
    return json.loads(buf.getvalue())


def _lines(folder: Path) -> list[bytes]:
    manifest = json.loads((folder / MANIFEST).read_bytes())
    out = []
    for part in manifest["parts"]:
        out.extend((folder / part["path"]).read_bytes().splitlines(keepends=True))
    assert manifest["lines"] == len(out)
    return out


@pytest.mark.parametrize("range_size", [97, 600, 1 << 20])
def test_same_report_and_split_as_the_local_engine(ray_cluster, tmp_path, range_size):
    paths = _dataset(tmp_path)
    config = CheckConfig(block_size=256)
    local = run_check(paths, config, valid_out=str(tmp_path / "valid.jsonl"), rejects_out=str(tmp_path / "rejects.jsonl"))
    ray = run_check_ray(paths, config, valid_out=str(tmp_path / "valid"), rejects_out=str(tmp_path / "rejects"), range_size=range_size)
    expected = _report(local)
    assert expected["invalid"] > 10 and expected["blank"] > 5 and expected["dataset_errors"]
    assert _report(ray) == expected
    # Parts in name order hold the local outputs' lines, in order: each line in exactly one.
    assert b"".join(_lines(tmp_path / "valid")) == (tmp_path / "valid.jsonl").read_bytes()
    assert b"".join(_lines(tmp_path / "rejects")) == (tmp_path / "rejects.jsonl").read_bytes()


def test_cli_json_and_exit_code_match(ray_cluster, tmp_path, capsys):
    paths = _dataset(tmp_path)
    code_local = main(["check", *paths, "--json"])
    local = capsys.readouterr().out
    code_ray = main(["check", *paths, "--json", "--engine", "ray", "--errors-out", str(tmp_path / "errors.jsonl")])
    assert (code_ray, capsys.readouterr().out) == (code_local, local) == (1, local)
    errors = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_bytes().splitlines()]
    assert errors == json.loads(local)["errors"]


def test_sharded_outputs_refuse_a_used_folder_and_file_names(ray_cluster, tmp_path, capsys):
    paths = _dataset(tmp_path)
    used = tmp_path / "used"
    used.mkdir()
    (used / "old.jsonl").write_bytes(b"{}\n")
    assert main(["check", *paths, "--engine", "ray", "--valid-out", str(used)]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert main(["check", *paths, "--engine", "ray", "--valid-out", str(tmp_path / "v.jsonl")]) == 2
    assert "folder or s3:// prefix of parts" in capsys.readouterr().err
    assert (used / "old.jsonl").read_bytes() == b"{}\n"


def test_engine_options_are_checked(capsys, tmp_path):
    paths = _dataset(tmp_path)
    assert main(["check", *paths, "--engine", "spark"]) == 2
    assert "--engine must be one of local, ray" in capsys.readouterr().err
    assert main(["check", *paths, "--ray-address", "auto"]) == 2
    assert "--ray-address needs --engine ray" in capsys.readouterr().err


def test_a_dead_cluster_is_one_clear_error(tmp_path, capsys):
    paths = _dataset(tmp_path)
    port = free_port()  # nothing listens there
    assert main(["check", *paths, "--engine", "ray", "--ray-address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_a_table_input_gets_the_local_report(ray_cluster, tmp_path):
    """A Parquet file is one task (read whole, by row group): its rows' problems, `unit: row`, counts."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    records = [orjson.loads(_sft(i, "User" if i % 5 == 2 else "user")) | ({"extra": i} if i % 7 == 3 else {}) for i in range(60)]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_struct_array(pa.array(records)), path, row_group_size=8)
    expected = _report(run_check([str(path)], CheckConfig()))
    assert expected["invalid"] > 10 and expected["by_rule"]["S4"] == 9 and {e["unit"] for e in expected["errors"]} == {"row"}
    assert _report(run_check_ray([str(path)], CheckConfig())) == expected
