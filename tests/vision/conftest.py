"""Fixtures for vision-language tests: a processor directory and a tiny Qwen2-VL model, built once."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.vision.shapes import make_model_dir, make_processor_dir


@pytest.fixture(scope="session")
def processor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_processor_dir(tmp_path_factory.mktemp("vlm") / "processor")


@pytest.fixture(scope="session")
def vlm_dir(tmp_path_factory: pytest.TempPathFactory, processor_dir: Path) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("vlm") / "model", processor_dir)
