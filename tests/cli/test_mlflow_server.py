"""Tracking and the registry against a real ``mlflow server`` (SQLite backend, local artifact root, a free
127.0.0.1 port): a run logs to it and registers its model, and the registered version generates what
``train generate`` does; a server killed mid-run costs the run nothing, and a backfill completes MLflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import free_port
from tests.serve.conftest import serving

from tunekit_cli.train import main
from tunekit_train.logs import read_events, read_metrics

PROMPT = "Color of grass?"


class Server:
    """An ``mlflow server`` subprocess that can be stopped and started again on the same store and port."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        command += ["--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}", "--artifacts-destination", str(self.root / "artifacts")]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=(self.root / "server.log").open("ab"), start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.root / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        pytest.fail("mlflow server did not answer /health in 120 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # the server's uvicorn worker is a child process
            self.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module (its start-up is most of these tests' time); a test that stops it
    starts it again before it ends."""
    root = tmp_path_factory.mktemp("mlflow-server")
    running = Server(root)
    running.start()
    yield running
    running.stop()


def test_run_logs_to_a_server_and_registers_its_model(
    tiny_run: tuple[Path, list[str]], server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    from tunekit_train.generate import GenerationSettings, generate, load_trained, tokenizer_for
    from tunekit_train.registry import resolve_model

    run_dir, overrides = tiny_run
    sets = ["training_config.trainer.max_steps=2", f"run.tracking_uri={server.uri}", "run.register_to=main.tunekit"]
    args = ["run", "examples/recipes/sft-lora-tiny.yaml", *overrides, *(a for s in sets for a in ("--set", s)), "-o", str(run_dir), "--json"]
    assert main(args) == 0
    capsys.readouterr()
    record = json.loads((run_dir / "mlflow.json").read_text())
    client = MlflowClient(server.uri, registry_uri=server.uri)
    assert client.get_run(record["run_id"]).info.status == "FINISHED"
    rows = read_metrics(run_dir)
    assert [m.value for m in client.get_metric_history(record["run_id"], "train_loss")] == [float(r["train_loss"]) for r in rows]
    version = client.get_model_version("main.tunekit.sft-lora-tiny", "1")
    assert version.run_id == record["run_id"] and version.tags["tunekit.kind"] == "adapter"
    assert "registered main.tunekit.sft-lora-tiny version 1" in [e["message"] for e in read_events(run_dir)]

    assert main(["generate", str(run_dir), "--prompt", PROMPT, "--greedy", "--max-new-tokens", "8", "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)["completions"][0]["text"]
    local = resolve_model("models:/main.tunekit.sft-lora-tiny/1", tracking_uri=server.uri, dst=run_dir.parent / "downloaded")
    settings = GenerationSettings(max_new_tokens=8, do_sample=False)
    assert generate(load_trained(local), tokenizer_for(local), [PROMPT], settings) == [expected]

    # `train serve` takes the registered version by its models:/ URI and answers as `train generate` does.
    with serving(["models:/main.tunekit.sft-lora-tiny/1", "--tracking-uri", server.uri], run_dir.parent / "serve.log") as running:
        from openai import OpenAI

        client = OpenAI(base_url=f"{running.url}/v1", api_key="unused")
        assert [m.id for m in client.models.list().data] == ["main.tunekit.sft-lora-tiny"]
        answer = client.chat.completions.create(
            model="main.tunekit.sft-lora-tiny", messages=[{"role": "user", "content": PROMPT}], max_tokens=8, temperature=0
        )
        assert answer.choices[0].message.content == expected
    assert main(["serve", "models:/main.tunekit.sft-lora-tiny/9", "--tracking-uri", server.uri]) == 2
    assert "models:/main.tunekit.sft-lora-tiny/9: cannot fetch it from the MLflow registry" in capsys.readouterr().err

    merged = run_dir.parent / "merged"
    assert main(["export", str(run_dir), "-o", str(merged), "--merge", "--register", "tunekit-merged", "--json"]) == 0
    registered = json.loads(capsys.readouterr().out)["registered"]
    assert (registered["name"], registered["version"], registered["tunekit.kind"]) == ("tunekit-merged", 1, "model")
    local = resolve_model("models:/tunekit-merged/1", tracking_uri=server.uri, dst=run_dir.parent / "downloaded-merged")
    assert generate(load_trained(local), tokenizer_for(local), [PROMPT], settings) == [expected]


def test_server_killed_mid_run_loses_nothing(tiny_run: tuple[Path, list[str]], server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow import MlflowClient

    run_dir, overrides = tiny_run
    sets = ["training_config.trainer.max_steps=60", "training_config.trainer.val_check_interval=10", f"run.tracking_uri={server.uri}"]
    args = ["run", "examples/recipes/sft-lora-tiny.yaml", *overrides, *(a for s in sets for a in ("--set", s)), "-o", str(run_dir), "--json"]
    training = subprocess.Popen([sys.executable, "-m", "tunekit_cli.train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    while len(read_metrics(run_dir)) < 5:  # MLflow has the run and its first steps
        assert training.poll() is None, training.stderr.read().decode() if training.stderr else ""
        time.sleep(0.2)
    server.stop()
    _, stderr = training.communicate(timeout=600)
    assert training.returncode == 0, stderr.decode()[-3000:]
    assert "MLflow logging" in stderr.decode()
    warnings = [e["message"] for e in read_events(run_dir) if e["type"] == "warning" and "MLflow" in e["message"]]
    assert warnings and "train runs --backfill" in warnings[0]
    rows = read_metrics(run_dir)
    assert [int(r["step"]) for r in rows] == list(range(1, 61))

    server.start()
    assert main(["runs", "--runs-dir", str(run_dir.parent), "--backfill", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["backfilled"][0]["backfilled_points"] > 0
    run_id = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    client = MlflowClient(server.uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "train_loss")] == [(int(r["step"]), float(r["train_loss"])) for r in rows]
    assert client.get_run(run_id).info.status == "FINISHED"
