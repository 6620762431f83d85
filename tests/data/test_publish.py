"""tunekit_data.io.publish: files and directories appear under their name only once complete."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tunekit_data.io import create_temp, publish_dir, publish_file, replace_dir, stage_dir, temp_name


class Boom(Exception):
    pass


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_temp_name_is_hidden_fresh_and_marked() -> None:
    first, second = temp_name("out.jsonl"), temp_name("out.jsonl")
    assert re.fullmatch(r"\.out\.jsonl\.[0-9a-f]{12}\.tmp", first)
    assert first != second


def test_create_temp_is_beside_final_with_a_new_file_mode(tmp_path: Path) -> None:
    tmp, fd = create_temp(tmp_path / "out.bin")
    os.close(fd)
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(".out.bin.")
    assert tmp.stat().st_mode & 0o777 == 0o666 & ~umask()  # not mkstemp's 0600


def test_publish_file_writes_the_file(tmp_path: Path) -> None:
    final = tmp_path / "out.json"
    with publish_file(final) as f:
        f.write(b"{}\n")
        assert not final.exists()  # nothing under the name before the block ends
    assert final.read_bytes() == b"{}\n"
    assert names(tmp_path) == ["out.json"]
    assert final.stat().st_mode & 0o777 == 0o666 & ~umask()


def test_publish_file_replaces_an_existing_file(tmp_path: Path) -> None:
    final = tmp_path / "out.json"
    final.write_bytes(b"old")
    with publish_file(str(final), fsync=True) as f:
        f.write(b"new")
    assert final.read_bytes() == b"new"
    assert names(tmp_path) == ["out.json"]


def test_publish_file_keeps_the_old_file_on_error(tmp_path: Path) -> None:
    final = tmp_path / "out.json"
    final.write_bytes(b"old")
    with pytest.raises(Boom), publish_file(final) as f:
        f.write(b"half")
        raise Boom
    assert final.read_bytes() == b"old"
    assert names(tmp_path) == ["out.json"]


def test_publish_file_in_a_missing_directory_fails_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), publish_file(tmp_path / "no" / "out.json"):
        pass
    assert names(tmp_path) == []


def test_publish_dir_writes_the_directory(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "model"  # parents are created
    with publish_dir(final) as staging:
        assert staging.parent == final.parent and staging.name.startswith(".model.")
        (staging / "weights").write_bytes(b"w")
        assert not final.exists()
    assert names(final) == ["weights"]
    assert names(final.parent) == ["model"]


def test_publish_dir_replaces_an_existing_directory(tmp_path: Path) -> None:
    final = tmp_path / "model"
    final.mkdir()
    (final / "stale").write_bytes(b"s")
    with publish_dir(final) as staging:
        (staging / "weights").write_bytes(b"w")
    assert names(final) == ["weights"]
    assert names(tmp_path) == ["model"]  # the old one, renamed aside, is gone too


def test_publish_dir_keeps_the_old_directory_on_error(tmp_path: Path) -> None:
    final = tmp_path / "model"
    final.mkdir()
    (final / "weights").write_bytes(b"old")
    with pytest.raises(Boom), publish_dir(final) as staging:
        (staging / "weights").write_bytes(b"half")
        raise Boom
    assert (final / "weights").read_bytes() == b"old"
    assert names(tmp_path) == ["model"]


def test_stage_dir_with_a_name_clears_a_leftover(tmp_path: Path) -> None:
    final = tmp_path / "step-000001"
    leftover = tmp_path / ".tmp-step-000001"
    leftover.mkdir()
    (leftover / "half").write_bytes(b"h")
    staging = stage_dir(final, name=".tmp-step-000001")
    assert staging == leftover
    assert names(staging) == []
    (staging / "done").write_bytes(b"d")
    replace_dir(staging, final)
    assert names(final) == ["done"]
    assert names(tmp_path) == ["step-000001"]
