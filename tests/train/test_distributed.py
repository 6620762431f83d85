"""Data-parallel training (DDP and FSDP over gloo on CPU): the same update on 2 processes as on 1, one set of logs.

The equivalence compared: 2 processes x micro-batch 2 and 1 process x micro-batch 4 at global batch 4.
Every rank gets its share of each step's rows and the loss is normalised over the whole step's trained
units (tokens; pairs for DPO), so both take the same optimizer steps; only float32 summation order differs
(gradients summed across ranks instead of within one batch, FSDP's reduce-scatter instead of DDP's
all-reduce). Adam turns that ~1e-7 relative noise into weight differences of at most ~1e-6 after a few
steps with lr 1e-2 (measured: 7e-7 for FSDP SFT), far below the steps themselves, hence ``atol=1e-5``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tests.conftest import free_port

from tunekit_cli.train import torchrun_command
from tunekit_data.errors import ConfigError
from tunekit_train.data import epoch_order
from tunekit_train.distributed import World, check_batches
from tunekit_train.launch import Launch
from tunekit_train.run import run_training

ROOT = Path(__file__).resolve().parents[2]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    final = run_dir / "final"
    file = "adapter_model.safetensors" if (final / "adapter_config.json").is_file() else "model.safetensors"
    return load_file(final / file)


def _recipe_file(
    path: Path,
    model: Path,
    data: Path,
    *,
    micro_batch: int,
    peft: str | None = None,
    steps: int = 3,
    checkpoint_every: int = 0,
    strategy: str = "ddp",
    dpo: bool = False,
) -> Path:
    recipe = {
        "run": {"name": "dist", "model_name_or_path": str(model), "data_s3_path": str(data)},
        "training_config": {
            "max_length": 64,
            "global_batch_size": 4,
            "micro_batch_size": micro_batch,
            "strategy": strategy,
            "trainer": {"max_steps": steps, "log_every_n_steps": 1},
            "model": {
                "optim": {"lr": 1e-2, "sched": {"warmup_steps": 1}},
                "peft": {"peft_scheme": peft, "lora_tuning": {"adapter_dim": 4}},
                **({"dpo_cfg": {"beta": 0.1}} if dpo else {}),
            },
        },
    }
    if checkpoint_every:
        callback = {"every_n_train_steps": checkpoint_every, "save_top_k": -1}
        recipe["training_config"]["exp_manager"] = {"checkpoint_callback_params": callback}
    path.write_text(yaml.safe_dump(recipe))
    return path


def _train_cli(*args: str | Path, nproc: int | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    launch = ["--nproc-per-node", str(nproc)] if nproc else []
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "tunekit_cli.train", "run", *map(str, args), "--json", *launch],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False,
    )


def _same_update(tmp_path: Path, model: Path, data: Path, peft: str | None, *, strategy: str = "ddp", dpo: bool = False) -> None:
    from tunekit_train.recipe import load_recipe

    def recipe(name: str, micro_batch: int) -> Path:
        return _recipe_file(tmp_path / name, model, data, micro_batch=micro_batch, peft=peft, strategy=strategy, dpo=dpo)

    one = tmp_path / "one"
    run_training(load_recipe(recipe("one.yaml", 4), []), output_dir=one)
    two = tmp_path / "two"
    result = _train_cli(recipe("two.yaml", 2), "--output-dir", two, nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    # Rank 0 alone reports, logs and exports.
    state = json.loads(result.stdout.strip().splitlines()[-1])
    assert (state["state"], state["step"], state["processes"], state["strategy"]) == ("completed", 3, 2, strategy)
    rows = (two / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 3
    _assert_same_weights(one, two)
    # The logged loss is the whole step's on both, and so is the token count.
    single = [line.split(",") for line in (one / "metrics.csv").read_text().splitlines()]
    double = [line.split(",") for line in rows]
    column = single[0].index("train_loss"), single[0].index("tokens")
    for r1, r2 in zip(single[1:], double[1:], strict=True):
        assert abs(float(r1[column[0]]) - float(r2[column[0]])) < 1e-4
        assert r1[column[1]] == r2[column[1]]


WORKER = """
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from tunekit_train.recipe import load_recipe
from tunekit_train.run import run_training
run_training(load_recipe(sys.argv[1], []), output_dir=Path(sys.argv[2]))
"""


def _run_ranks(recipe: Path, output_dir: Path, world: int) -> None:
    """Train ``recipe`` on ``world`` spawned ranks and check that all of them succeeded."""
    ranks = _start_ranks(recipe, output_dir, world)
    try:
        errors = [rank.communicate(timeout=240)[1] for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    assert [rank.returncode for rank in ranks] == [0] * world, "".join(e[-3000:] for e in errors)


def _assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    a, b = _weights(a_dir), _weights(b_dir)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)


def _start_ranks(recipe: Path, output_dir: Path, world: int) -> list[subprocess.Popen[str]]:
    # What torchrun would start: one process per rank with the standard variables.
    port = free_port()
    ranks = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        ranks.append(subprocess.Popen([sys.executable, "-c", WORKER, str(recipe), str(output_dir)], env=env, text=True, stderr=subprocess.PIPE))
    return ranks


def test_two_spawned_processes_match_one(tiny_model: Path, packed_sft: Path, tmp_path: Path) -> None:
    # The default-run check of DDP itself (no CLI, no torchrun): ranks started with the torchrun variables.
    from tunekit_train.recipe import load_recipe

    run_training(load_recipe(_recipe_file(tmp_path / "one.yaml", tiny_model, packed_sft, micro_batch=4), []), output_dir=tmp_path / "one")
    _run_ranks(_recipe_file(tmp_path / "two.yaml", tiny_model, packed_sft, micro_batch=2), tmp_path / "two", 2)
    _assert_same_weights(tmp_path / "one", tmp_path / "two")
    assert json.loads((tmp_path / "two" / "state.json").read_text())["processes"] == 2


@pytest.mark.slow
def test_cli_two_processes_match_one_full_rank(tiny_model: Path, packed_sft: Path, tmp_path: Path) -> None:
    _same_update(tmp_path, tiny_model, packed_sft, None)


@pytest.mark.slow
def test_cli_two_processes_match_one_lora(tiny_model: Path, packed_sft: Path, tmp_path: Path) -> None:
    _same_update(tmp_path, tiny_model, packed_sft, "lora")


def test_batch_sizes_must_split_over_the_processes() -> None:
    world = World(rank=0, size=2, local_rank=0)
    check_batches("r.yaml", 10, 4, 2, world)  # last step of 2 rows: one per rank
    with pytest.raises(ConfigError, match="not a multiple of micro_batch_size 4 x 2 processes"):
        check_batches("r.yaml", 8, 4, 4, world)
    with pytest.raises(ConfigError, match="last step of 1 row"):
        check_batches("r.yaml", 9, 4, 2, world)


def test_torchrun_command_keeps_the_recipe_and_maps_replicas_to_nodes() -> None:
    local = torchrun_command(Launch(2), replicas=4, train_args=["r.yaml", "--set=a.b=1"])
    assert local[-5:] == ["-m", "tunekit_cli.train", "run", "r.yaml", "--set=a.b=1"]
    assert "--standalone" in local  # no master address: this machine alone, whatever replicas says
    multi = torchrun_command(Launch(8, master_addr="10.0.0.1", node_rank=1), replicas=4, train_args=["r.yaml"])
    assert {"--nnodes=4", "--node-rank=1", "--master-addr=10.0.0.1", "--master-port=29500"} <= set(multi)


@pytest.mark.slow
def test_checkpoint_of_two_processes_resumes_on_one(tiny_model: Path, packed_sft: Path, tmp_path: Path) -> None:
    # DDP replicas are identical and the data position is global: rank 0's checkpoint continues anywhere.
    from tunekit_train.recipe import load_recipe

    straight = _recipe_file(tmp_path / "straight.yaml", tiny_model, packed_sft, micro_batch=4, steps=4)
    run_training(load_recipe(straight, []), output_dir=tmp_path / "straight")
    two = _recipe_file(tmp_path / "two.yaml", tiny_model, packed_sft, micro_batch=2, steps=4, checkpoint_every=2)
    _run_ranks(two, tmp_path / "two", 2)
    middle = str(tmp_path / "two" / "checkpoints" / "step-000002")
    state = run_training(load_recipe(straight, []), output_dir=tmp_path / "resumed", resume=middle)
    assert state["step"] == 4
    _assert_same_weights(tmp_path / "straight", tmp_path / "resumed")


def test_fsdp_two_processes_match_one_and_resume_on_one(tiny_model: Path, packed_sft: Path, tmp_path: Path) -> None:
    # FSDP2 (fully_shard per decoder layer + root) on 2 spawned ranks vs 1 process; its sharded (DCP)
    # checkpoint of step 2, written by 2 ranks, then continues in 1 process to the same weights.
    from tunekit_train.recipe import load_recipe

    def recipe(name: str, micro_batch: int) -> Path:
        return _recipe_file(tmp_path / name, tiny_model, packed_sft, micro_batch=micro_batch, steps=4, checkpoint_every=2, strategy="fsdp")

    one = recipe("one.yaml", 4)
    run_training(load_recipe(one, []), output_dir=tmp_path / "one")
    _run_ranks(recipe("two.yaml", 2), tmp_path / "two", 2)
    _assert_same_weights(tmp_path / "one", tmp_path / "two")
    middle = tmp_path / "two" / "checkpoints" / "step-000002"
    assert sorted(p.name for p in (middle / "distributed").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert not (middle / "model.safetensors").exists()  # no rank ever held the whole model before the export
    state = run_training(load_recipe(one, []), output_dir=tmp_path / "resumed", resume=str(middle))
    assert state["step"] == 4
    _assert_same_weights(tmp_path / "one", tmp_path / "resumed")
    assert json.loads((tmp_path / "two" / "state.json").read_text())["strategy"] == "fsdp"


@pytest.mark.slow
def test_cli_fsdp_lora_two_processes_match_one(tiny_model: Path, packed_sft: Path, tmp_path: Path) -> None:
    _same_update(tmp_path, tiny_model, packed_sft, "lora", strategy="fsdp")


@pytest.fixture(scope="module")
def packed_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .dpo_data import random_pairs, write_pairs

    return write_pairs(tmp_path_factory.mktemp("dpo") / "train", random_pairs(40), max_length=64)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_cli_dpo_two_processes_match_one(strategy: str, tiny_model: Path, packed_pairs: Path, tmp_path: Path) -> None:
    # Full-rank DPO: the reference is a frozen, unsharded copy on every rank; pairs are the summed unit.
    _same_update(tmp_path, tiny_model, packed_pairs, None, strategy=strategy, dpo=True)


@pytest.mark.slow
def test_cli_dpo_lora_fsdp_two_processes_match_one(tiny_model: Path, packed_pairs: Path, tmp_path: Path) -> None:
    # LoRA DPO under FSDP: the reference pass runs the sharded policy with its adapters off, on every rank.
    _same_update(tmp_path, tiny_model, packed_pairs, "lora", strategy="fsdp", dpo=True)


@pytest.mark.slow
def test_a_failed_rank_stops_the_job_with_one_clear_error(tiny_model: Path, packed_sft: Path, tmp_path: Path) -> None:
    # Rank 1 raises before step 2 while rank 0 waits in a collective: no hang, one line per rank, and the
    # launcher names rank 1 as the cause.
    recipe = _recipe_file(tmp_path / "r.yaml", tiny_model, packed_sft, micro_batch=2, steps=4, strategy="fsdp")
    result = _train_cli(recipe, "--output-dir", tmp_path / "run", nproc=2, env={"TUNEKIT_TEST_FAIL": "1:2"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "error: rank 1: InjectedFault: injected failure before step 2" in result.stderr
    assert "rank 0: stopped because rank 1 failed" in result.stderr or "SIGTERM" in result.stderr
    assert "failed first: InjectedFault: injected failure before step 2" in result.stderr.splitlines()[-1]


def test_each_rank_reads_only_its_share_of_the_rows(packed_sft: Path, tmp_path: Path) -> None:
    # A pack of several row groups opened as a rank does (lazily): each rank's epoch reads only its rows'
    # token columns, and its batches are those it would cut from the fully loaded pack.
    import pyarrow.parquet as pq

    from tunekit_train.data import load_packed
    from tunekit_train.distributed import ShardedStream

    shutil.copytree(packed_sft, tmp_path / "pack")
    shard = tmp_path / "pack" / "data" / "train-00000-of-00001.parquet"
    pq.write_table(pq.read_table(shard), shard, row_group_size=3)
    full = load_packed(tmp_path / "pack", lazy=False)
    n = len(full)
    for rank in (0, 1):
        rows = load_packed(tmp_path / "pack", lazy=True)
        assert (len(rows), rows.n_tokens) == (n, full.n_tokens)  # from the per-segment columns alone
        world = World(rank=rank, size=2, local_rank=rank)
        kwargs = {"global_batch": 4, "micro_batch": 2, "seed": 0, "flatten": False, "world": world}
        lazy, eager = ShardedStream(rows, **kwargs), ShardedStream(full, **kwargs)
        order = epoch_order(n, 0, 0)
        mine = [micro for start in range(0, n, 4) for micro in lazy._split(order[start : start + 4])]
        held = lazy._epoch_rows(mine)  # what steps() reads at the start of the epoch
        assert held.ids is not None and len(held.ids) == sum(map(len, mine)) <= n // 2 + 1
        assert not rows.complete  # nothing read the whole pack
        for a, b in zip(itertools.islice(lazy.steps(), 3), itertools.islice(eager.steps(), 3), strict=True):
            for x, y in zip(a.micro_batches, b.micro_batches, strict=True):
                assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.labels, y.labels)


def test_strategy_is_validated_and_enable_fsdp_is_its_alias() -> None:
    from tunekit_train.recipe import parse_recipe

    def config(**training: object) -> object:
        tree = {"run": {"model_name_or_path": "m"}, "training_config": training}
        return parse_recipe(tree, source="r.yaml").recipe.training_config

    assert not config().fsdp
    assert config(strategy="fsdp").fsdp
    assert config(enable_fsdp=True).fsdp
    assert config(enable_fsdp="True").fsdp  # JumpStart passes hyperparameters as strings
    assert not config(enable_fsdp=False).fsdp
    with pytest.raises(ConfigError, match=r"training_config.strategy: input should be 'ddp' or 'fsdp', got 'zero3'"):
        config(strategy="zero3")
    with pytest.raises(ConfigError, match="enable_fsdp: true contradicts strategy: ddp"):
        config(strategy="ddp", enable_fsdp=True)


@pytest.mark.slow
def test_cli_fsdp_eval_prompts_generate_from_the_sharded_model(tmp_path: Path) -> None:
    # peft's generate calls the inner model, bypassing the FSDP root's forward (which gathers the
    # embeddings): every rank generates with the root gathered, rank 0 logs.
    overrides = [
        "training_config.strategy=fsdp",
        "training_config.trainer.max_steps=2",
        "training_config.exp_manager.checkpoint_callback_params.every_n_train_steps=2",
        'training_config.eval_prompts=["Opposite of wet?"]',
    ]
    result = _train_cli(ROOT / "examples/recipes/sft-lora-tiny.yaml", "--output-dir", tmp_path / "run", *(f"--set={o}" for o in overrides), nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "eval_prompts"] == [2]
