"""``train run RECIPE --nproc-per-node N``: re-execute the same ``train run`` under torchrun.

PyTorch's own launcher (``torch.distributed.run``) starts the N processes of this node, sets the
standard variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) that
`tunekit_train.distributed.init_from_env` reads, and stops every rank when one fails. The recipe and
every other option go to the workers unchanged.

The launcher runs in this process (``torch.distributed.run.run``, what the ``torchrun`` script calls), so
a failed job ends with one line naming the rank that failed first (the rank that recorded an error file,
see the ``train run`` worker) instead of torchrun's report and traceback.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO


@dataclass(frozen=True)
class Launch:
    """Where this node's processes sit in the job."""

    nproc_per_node: int
    nnodes: int | None = None
    """Nodes in the job; None: ``run.replicas`` when a master address names a multi-node job, else 1."""
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int = 29500

    def nodes(self, replicas: int) -> int:
        """The node count: the launcher's, else the recipe's ``run.replicas`` for a multi-node launch."""
        if self.nnodes is not None:
            return self.nnodes
        # Without a master address the job is this machine alone: waiting for `replicas` nodes that
        # nobody starts would hang.
        return replicas if self.master_addr is not None else 1


def under_launcher() -> bool:
    """True inside a torchrun / SLURM-style worker (the variables are set): never launch again."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def torchrun_command(launch: Launch, replicas: int, train_args: list[str]) -> list[str]:
    """The torchrun command line that runs ``train run TRAIN_ARGS`` on every process of this node."""
    return [sys.executable, "-m", "torch.distributed.run", *torchrun_args(launch, replicas, train_args)]


def torchrun_args(launch: Launch, replicas: int, train_args: list[str]) -> list[str]:
    """torchrun's arguments for `torchrun_command` (what follows ``torchrun`` on its command line)."""
    nodes = launch.nodes(replicas)
    command = [f"--nproc-per-node={launch.nproc_per_node}"]
    if nodes == 1 and launch.master_addr is None:
        command.append("--standalone")  # one node: torchrun picks a free local port itself
    else:
        command += [
            f"--nnodes={nodes}",
            f"--node-rank={launch.node_rank}",
            f"--master-addr={launch.master_addr or '127.0.0.1'}",
            f"--master-port={launch.master_port}",
        ]
    return [*command, "-m", "tunekit_cli.train", "run", *train_args]


def launch(launch: Launch, replicas: int, train_args: list[str], *, stderr: TextIO = sys.stderr) -> int:
    """Run ``train run TRAIN_ARGS`` under torchrun; returns 0, or the exit code of the rank that failed first.

    A failure is reported on ``stderr`` in one line: which rank failed first and why (the workers have
    printed their own one-line errors above it).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(torchrun_args(launch, replicas, train_args)))
    except ChildFailedError as exc:
        # The first rank to fail wrote an error file (message, time); ranks stopped with it did not.
        recorded = [rank for rank, failure in exc.failures.items() if Path(failure.error_file).is_file()]
        rank = min(recorded) if recorded else exc.get_first_failure()[0]
        failure = exc.failures[rank]
        if failure.exitcode < 0:
            why = f"killed by {failure.signal_name()}"
        elif recorded:  # ErrorHandler's file nests the text: {"message": {"message": TEXT, "extraInfo": ...}}
            why = failure.message.get("message") if isinstance(failure.message, dict) else failure.message
        else:
            why = f"exit code {failure.exitcode}"
        others = len(exc.failures) - 1
        tail = f"; {others} other rank(s) stopped with it" if others else ""
        print(f"error: train run failed: rank {rank} (pid {failure.pid}) failed first: {why}{tail}", file=stderr)
        return failure.exitcode if failure.exitcode > 0 else 1
    except SignalException as exc:  # the launcher itself was stopped (Ctrl-C, SIGTERM): torchrun stopped the ranks
        print(f"train run: stopped by {exc.sigval.name}", file=stderr)
        return 130
    return 0
