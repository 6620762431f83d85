"""MLflow tracking on the embedded SQLite store: the example LoRA SFT and DPO recipes log their recipe as
params, every metrics.csv row as step metrics (the same values), events as tags, the eval_prompts
generations, run files and data manifests as artifacts, and a resumed run continues the same MLflow run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunekit_cli.train import main
from tunekit_train.logs import read_metrics


def logged_metrics(client: object, run_id: str, rows: list[dict[str, str]]) -> dict[str, dict[int, float]]:
    """MLflow's history of every metrics.csv column: the last value logged at each step."""
    keys = {k for row in rows for k, v in row.items() if k != "step" and v}
    return {k: {m.step: m.value for m in client.get_metric_history(run_id, k)} for k in keys}


def csv_metrics(rows: list[dict[str, str]]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for row in rows:
        for k, v in row.items():
            if k != "step" and v:
                out.setdefault(k, {})[int(row["step"])] = float(v)
    return out


@pytest.mark.parametrize(("recipe", "method"), [("sft-lora-tiny", "sft"), ("dpo-lora-tiny", "dpo")])
def test_run_and_resume_log_to_one_mlflow_run(
    tiny_run: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str], recipe: str, method: str
) -> None:
    from mlflow import MlflowClient

    run_dir, overrides = tiny_run
    args = ["run", f"examples/recipes/{recipe}.yaml", *overrides, "-o", str(run_dir), "--json"]
    args += ["--set", "run.experiment_path=/Shared/tunekit-tests", "--set", 'training_config.eval_prompts=["Color of grass?"]']
    assert main([*args, "--set", "training_config.trainer.max_steps=2"]) == 0
    record = json.loads((run_dir / "mlflow.json").read_text())
    assert record["tracking_uri"] == f"sqlite:///{run_dir.parent.resolve() / 'mlflow.db'}"
    assert main([*args, "--set", "training_config.trainer.max_steps=3", "--resume", "auto"]) == 0
    capsys.readouterr()
    assert json.loads((run_dir / "mlflow.json").read_text())["run_id"] == record["run_id"]

    client = MlflowClient(record["tracking_uri"])
    run = client.get_run(record["run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "/Shared/tunekit-tests" and run.info.status == "FINISHED"
    assert run.data.params["run.name"] == recipe and run.data.params["training_config.trainer.max_steps"] == "2"
    assert run.data.tags["param.training_config.trainer.max_steps"] == "3"  # changed on resume
    assert run.data.tags["tunekit.state"] == "completed" and "tunekit.event.resumed" in run.data.tags

    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert logged_metrics(client, record["run_id"], rows) == csv_metrics(rows)

    artifacts = {f.path for f in client.list_artifacts(record["run_id"])}
    assert {"events.jsonl", "state.json", "recipe.yaml", "data", "eval_prompts"} <= artifacts
    assert {f.path for f in client.list_artifacts(record["run_id"], "data/train")} == {"data/train/manifest.json", "data/train/stats.json"}
    tables = sorted(f.path for f in client.list_artifacts(record["run_id"], "eval_prompts"))
    assert tables == [f"eval_prompts/step-{s:06d}.json" for s in (1, 2, 3)]
    table = json.loads(Path(client.download_artifacts(record["run_id"], tables[-1], str(run_dir.parent))).read_text())
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    generated = [e["message"] for e in events if e["type"] == "eval_prompts" and e["step"] == 3]
    assert table["columns"] == ["step", "prompt", "text"] and [row[2] for row in table["data"]] == generated

    assert main(["runs", "--runs-dir", str(run_dir.parent), "--experiment", "/Shared/tunekit-tests", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["name"], r["state"], r["method"], r["step"], r["mlflow_run_id"]) for r in listed] == [(recipe, "completed", method, 3, record["run_id"])]
    best = min(float(r["val_loss"]) for r in rows if r["val_loss"])
    assert listed[0]["best_val_loss"] == best and listed[0]["tokens"] == int(rows[-1]["tokens"])
    assert main(["runs", "--runs-dir", str(run_dir.parent), "--experiment", "other", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == []


def test_tracking_false_writes_no_mlflow_record(tiny_run: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, overrides = tiny_run
    args = ["run", "examples/recipes/sft-lora-tiny.yaml", *overrides, "-o", str(run_dir), "--json"]
    assert main([*args, "--set", "training_config.trainer.max_steps=1", "--set", "run.tracking=false"]) == 0
    capsys.readouterr()
    assert not (run_dir / "mlflow.json").exists() and not (run_dir.parent / "mlflow.db").exists()
