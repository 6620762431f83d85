"""``train run RECIPE --nproc-per-node N``: re-execute the same ``train run`` under torchrun.

PyTorch's own launcher (``torch.distributed.run``) starts the N processes of this node, sets the
standard variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) that
`tunekit_train.distributed.init_from_env` reads, and stops every rank when one fails. What each process
runs (the CLI's ``train run`` with the recipe and every other option unchanged) is the caller's.

The launcher runs in this process (``torch.distributed.run.run``, what the ``torchrun`` script calls), so
a failed job ends with one line naming the rank that failed first (the rank that recorded an error file,
`rank_failed`) instead of torchrun's report and traceback: `launch` returns it in a `JobEnd`.
"""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tunekit_data.errors import at_least, between

if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError


MAX_PORT = 65535  # the largest TCP port


@dataclass(frozen=True)
class Launch:
    """Where this node's processes sit in the job."""

    nproc_per_node: int
    nnodes: int | None = None
    """Nodes in the job; None: ``run.replicas`` when a master address names a multi-node job, else 1."""
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int = 29500

    def __post_init__(self) -> None:
        """Raise UsageError naming the option and its allowed range."""
        at_least("--nproc-per-node", self.nproc_per_node, 1)
        if self.nnodes is not None:
            at_least("--nnodes", self.nnodes, 1)
        at_least("--node-rank", self.node_rank, 0)
        between("--master-port", self.master_port, 1, MAX_PORT)

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


def torchrun_command(launch: Launch, replicas: int, worker: list[str]) -> list[str]:
    """The torchrun command line that runs ``worker`` on every process of this node.

    ``worker`` is what each process runs, as Python's arguments: ``["-m", MODULE, ARG ...]`` (the CLI
    passes its own ``train run`` and the options it was given).
    """
    return [sys.executable, "-m", "torch.distributed.run", *torchrun_args(launch, replicas, worker)]


def torchrun_args(launch: Launch, replicas: int, worker: list[str]) -> list[str]:
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
    return [*command, *worker]


@dataclass(frozen=True)
class JobEnd:
    """How a launched job ended."""

    exit_code: int
    """0; 130 when the launcher was stopped by a signal; else the exit code of the rank that failed first."""
    failure: str | None = None
    """Which rank failed first and why, in one line (the workers have printed their own errors)."""
    stopped_by: str | None = None
    """The signal that stopped the launcher (Ctrl-C, SIGTERM), which then stopped the ranks."""


def launch(launch: Launch, replicas: int, worker: list[str]) -> JobEnd:
    """Run ``worker`` (see `torchrun_command`) under torchrun and wait for the job to end."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(torchrun_args(launch, replicas, worker)))
    except ChildFailedError as exc:
        return _failed(exc)
    except SignalException as exc:
        return JobEnd(130, stopped_by=exc.sigval.name)
    return JobEnd(0)


def _failed(exc: ChildFailedError) -> JobEnd:
    # The first rank to fail wrote an error file (message, time: `rank_failed`); ranks stopped with it did not.
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
    message = f"rank {rank} (pid {failure.pid}) failed first: {why}{tail}"
    return JobEnd(failure.exitcode if failure.exitcode > 0 else 1, failure=message)


@dataclass(frozen=True)
class RankFailure:
    """Why one worker of a multi-process job failed, for its one line on stderr."""

    rank: int
    first: int | None
    """The rank that failed first (None: unknown, the rendezvous store is gone)."""
    message: str
    """This rank's error in one line."""
    exit_code: int
    """1 invalid recipe or data, 2 other tunekit errors, 1 anything else; 1 when another rank failed first."""

    @property
    def caused_by_another(self) -> bool:
        """Whether this rank only stopped because another rank failed first (its collectives broke)."""
        return self.first is not None and self.first != self.rank


def rank_failed(rank: int, exc: Exception) -> RankFailure:
    """Handle ``exc`` ending rank ``rank`` of a job: claim the failure, and record it if this rank was first.

    The rank that failed first records an error file for the launcher (torchrun's own mechanism), which then
    names it in `launch`'s `JobEnd`; ranks whose collectives broke because of it get ``caused_by_another``.
    """
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    from tunekit_data.errors import ConfigError, DataError, TunekitError
    from tunekit_train.distributed import claim_failure

    first = claim_failure(rank)
    if first is not None and first != rank:
        return RankFailure(rank, first, f"stopped because rank {first} failed", 1)
    if isinstance(exc, TunekitError):
        message = str(exc)
    else:  # unexpected: the innermost frame says where (rank 0 also keeps the traceback in events.jsonl)
        where = traceback.extract_tb(exc.__traceback__)[-1]
        message = f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})"
    ErrorHandler().record_exception(exc)
    code = 2 if isinstance(exc, TunekitError) and not isinstance(exc, DataError | ConfigError) else 1
    return RankFailure(rank, first, message, code)
