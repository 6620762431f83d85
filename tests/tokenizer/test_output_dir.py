"""Where `ds pack` may publish: ``check_output_dir``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunekit_data.errors import UsageError
from tunekit_tokenize.manifest import FORMAT, MANIFEST_FILE
from tunekit_tokenize.writer import check_output_dir


def test_missing_empty_and_packed_directories_may_be_replaced(tmp_path: Path) -> None:
    check_output_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")
    packed = tmp_path / "packed"
    packed.mkdir()
    (packed / MANIFEST_FILE).write_text(json.dumps({"format": FORMAT}), encoding="utf-8")
    check_output_dir(packed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "packed"]  # nothing created


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_other_outputs_are_refused(tmp_path: Path, kind: str) -> None:
    taken = tmp_path / "taken"
    if kind == "dir":
        taken.mkdir()
        (taken / "notes.txt").write_text("mine", encoding="utf-8")
    else:
        taken.write_text("mine", encoding="utf-8")
    with pytest.raises(UsageError, match=r"taken: exists and is not a packed dataset; choose another -o directory"):
        check_output_dir(taken)
