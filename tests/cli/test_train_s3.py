"""`train run` with s3:// data and an s3:// output_s3_path, against the moto server of the ``s3`` fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunekit_cli.train import main

ROOT = Path(__file__).parents[2]


def test_train_run_reads_and_publishes_s3(s3, tiny_run: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, overrides = tiny_run
    bucket = s3.bucket()
    s3.put(f"s3://{bucket}/data/sft.jsonl", (ROOT / "examples/data/sft.jsonl").read_bytes())
    s3.put(f"s3://{bucket}/val/part-0.jsonl", (ROOT / "examples/data/sft-val.jsonl").read_bytes())  # a prefix
    output = f"s3://{bucket}/runs/tiny"
    args = ["run", "examples/recipes/sft-lora-tiny.yaml", *overrides, "-o", str(run_dir), "--json",
            "--set", "training_config.trainer.max_steps=2", "--set", f"run.data_s3_path=s3://{bucket}/data/sft.jsonl",
            "--set", f"run.validation_data_s3_path=s3://{bucket}/val/", "--set", f"run.output_s3_path={output}"]  # fmt: skip
    assert main(args) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["state"] == "completed" and state["step"] == 2
    # The data was fetched into the run directory and packed there as usual.
    assert (run_dir / "data" / "train-s3" / "sft.jsonl").is_file()
    assert (run_dir / "data" / "validation-s3" / "part-0.jsonl").is_file()
    assert (run_dir / "data" / "train" / "manifest.json").is_file()
    keys = {k.removeprefix("runs/tiny/") for k in s3.keys(bucket) if k.startswith("runs/tiny/") and not k.endswith("/")}
    for step in ("step-000001", "step-000002"):
        assert {f"checkpoints/{step}/adapter_model.safetensors", f"checkpoints/{step}/trainer_state.json"} <= keys
    assert {"final/adapter_model.safetensors", "final/adapter_config.json", "state.json", "events.jsonl", "metrics.csv"} <= keys
    assert not [k for k in keys if k.rpartition("/")[2].startswith(".")]  # no temporary keys left
    assert json.loads(s3.get(f"{output}/state.json"))["state"] == "completed"
    uploads = [json.loads(e) for e in s3.get(f"{output}/events.jsonl").splitlines()]
    assert [e["uri"] for e in uploads if e["type"] == "uploaded"][-1] == f"{output}/final/"


def test_train_run_with_a_missing_data_bucket_exits_2(s3, tiny_run: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, overrides = tiny_run
    args = ["run", "examples/recipes/sft-lora-tiny.yaml", *overrides, "-o", str(run_dir),
            "--set", "run.data_s3_path=s3://tk-no-such-bucket/sft.jsonl"]  # fmt: skip
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "s3://tk-no-such-bucket/sft.jsonl" in err and "no such bucket" in err and "Traceback" not in err


def test_train_run_from_a_packed_s3_prefix(s3, tiny_run: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    from tunekit_cli.ds import main as ds

    run_dir, overrides = tiny_run
    bucket = s3.bucket()
    packed = f"s3://{bucket}/packed/"
    assert ds(["pack", "examples/data/sft.jsonl", "--tokenizer", "examples/tiny/tokenizer", "--max-length", "256", "-o", packed, "--workers", "1", "--json"]) == 0
    capsys.readouterr()
    args = ["run", "examples/recipes/sft-lora-tiny.yaml", *overrides, "-o", str(run_dir), "--json",
            "--set", "training_config.trainer.max_steps=1", "--set", f"run.data_s3_path={packed}"]  # fmt: skip
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "completed"
    assert (run_dir / "data" / "train-s3" / "manifest.json").is_file()
    assert not (run_dir / "data" / "train").exists()  # used as packed, not packed again
