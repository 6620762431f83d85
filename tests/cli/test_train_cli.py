"""`train` end to end through `main(argv)`: run the example LoRA SFT and DPO recipes a few steps on the
bundled JSONL (checked and packed on the fly), resume them, read the status, generate and export."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunekit_cli.train import main


def test_train_run_resume_status_generate_export(tiny_run: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, overrides = tiny_run
    recipe = "examples/recipes/sft-lora-tiny.yaml"
    args = ["run", recipe, *overrides, "-o", str(run_dir), "--json"]
    assert main([*args, "--set", "training_config.trainer.max_steps=2"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["state"] == "completed" and state["step"] == 2 and state["lora"] is True
    assert (run_dir / "checkpoints" / "step-000002" / "adapter_model.safetensors").is_file()
    assert (run_dir / "checkpoints" / "step-000002" / "optimizer.pt").is_file()

    assert main([*args, "--set", "training_config.trainer.max_steps=3", "--resume", "auto"]) == 0
    capsys.readouterr()
    steps = [int(r.split(",")[0]) for r in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3]
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step-*")) == ["step-000001", "step-000002", "step-000003"]

    assert main(["status", str(run_dir), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "completed" and status["step"] == 3 and status["last_checkpoint"] == "step-000003"
    assert [e["type"] for e in status["events"]].count("resumed") == 1

    assert main(["generate", str(run_dir), "--prompt", "Color of grass?", "--max-new-tokens", "4", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["completions"]) == 1
    assert main(["export", str(run_dir), "-o", str(run_dir.parent / "merged"), "--merge", "--json"]) == 0
    assert "model.safetensors" in json.loads(capsys.readouterr().out)["files"]


def test_bad_recipe_exits_1_with_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("run:\n  model_name_or_path: m\ntraining_config:\n  trainre: {}\n  max_length: -3\n")
    assert main(["run", str(recipe)]) == 1
    err = capsys.readouterr().err
    assert "2 problems" in err and "did you mean 'trainer'" in err and "max_length" in err


def test_train_help_does_not_import_torch() -> None:
    code = "import sys; from tunekit_cli.train import main; main(['--help']); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


@pytest.mark.parametrize("recipe", ["dpo-full-tiny", "dpo-lora-tiny"])
def test_train_run_dpo_example_resume_generate_export(
    tiny_run: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str], recipe: str
) -> None:
    # The example DPO recipes on the bundled Nova DPO JSONL (packed on the fly, pairs kept whole).
    run_dir, overrides = tiny_run
    args = ["run", f"examples/recipes/{recipe}.yaml", *overrides, "-o", str(run_dir), "--json"]
    assert main([*args, "--set", "training_config.trainer.max_steps=2"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["state"] == "completed" and state["method"] == "dpo" and state["step"] == 2
    assert main([*args, "--set", "training_config.trainer.max_steps=3", "--resume", "auto"]) == 0
    capsys.readouterr()
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1", "2", "3"] and all(r["rewards/accuracy"] and r["val_rewards/accuracy"] for r in rows)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    references = [e["message"] for e in events if e["type"] == "reference"]
    if recipe == "dpo-full-tiny":  # precompute_ref: computed by the first run, reused on resume
        assert "computed" in references[0] and references[-1].startswith("reference log-probs: reused")
    else:
        assert references == ["reference: the policy with its LoRA adapters disabled"] * 2

    assert main(["generate", str(run_dir), "--prompt", "Color of grass?", "--max-new-tokens", "4", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["completions"]) == 1
    merge = ["--merge"] if recipe == "dpo-lora-tiny" else []
    assert main(["export", str(run_dir), "-o", str(run_dir.parent / "exported"), *merge, "--json"]) == 0
    assert "model.safetensors" in json.loads(capsys.readouterr().out)["files"]
