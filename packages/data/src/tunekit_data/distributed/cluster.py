"""Joining a Ray cluster, and running one function over many items as Ray tasks, in order.

Plain Ray tasks (``ray.remote``), not Ray Data: every engine here already has its unit of work (a
block of lines, a unit of records, a batch of examples) and only needs it run somewhere, with its
result back in input order. Ray Data's datasets would re-cut the data into its own blocks (so line
numbers would no longer follow the input) and pull in pandas; tasks keep ``ray`` the one dependency.

Fault handling: a task whose worker process or node dies is run again by Ray (``MAX_RETRIES``); its
outputs are atomic (``storage.open_output``), so a rerun replaces, never duplicates, what the lost
attempt wrote. Errors raised by tunekit's own code (an unreadable object, a usage error) are not
retried: they say something about the input, and the original error is raised on the driver as
it would be on one machine. A cluster that cannot be reached is one ``InputError`` naming the address.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tunekit_data.errors import InputError, TunekitError

MAX_RETRIES = 3
CONNECT_TIMEOUT = 5.0  # seconds to reach a head node before calling it dead
_FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_MAX_ATTEMPTS")


def connect(address: str | None) -> Any:
    """Join the Ray cluster at ``address`` and return the ``ray`` module.

    ``address`` is ``auto``, ``ray://host:port`` or ``host:port``; None: ``$RAY_ADDRESS``, else a
    Ray instance started in this process.

    Reuses a connection this process already has. InputError, naming the address, if the cluster
    cannot be reached; UsageError-free: a missing ``ray`` package is reported with the extra to install.
    """
    # Ray (>= 2.47) replicates a driver started under `uv run` onto every worker: it uploads the
    # current folder as the job's working_dir and starts each worker with `uv run`, which here put
    # 9-16 s between a job's submission and its first task (measured, bench_ray.py under `uv run`).
    # Nodes running tunekit's tasks have tunekit installed, as for any Ray library; setting the
    # variable to 1 keeps Ray's behaviour. Read when ray is first imported, so set before that.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        import ray
    except ImportError as exc:
        msg = "--engine ray needs the ray package: pip install 'tunekit-data[ray]'"
        raise InputError(msg) from exc
    # The store endpoint (--endpoint-url) and region travel to the workers, which may run on other
    # machines; credentials do not: each node uses its own AWS chain (instance role, environment).
    env = {k: os.environ[k] for k in _FORWARDED_ENV if os.environ.get(k)}
    where = address or os.environ.get("RAY_ADDRESS") or "a local Ray instance"
    if where not in ("a local Ray instance", "auto"):
        _reachable(where)
    if ray.is_initialized():
        return ray
    _notices_to_stderr()
    try:
        ray.init(
            address=address,
            runtime_env={"env_vars": env} if env else None,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            configure_logging=True,
        )
    except (ConnectionError, RuntimeError, ValueError, TimeoutError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        msg = f"cannot reach the Ray cluster at {where}: {first}"
        raise InputError(msg) from None
    return ray


def _notices_to_stderr() -> None:
    """Send the Ray driver's cluster notices ("a worker died ...") to stderr instead of stdout.

    Ray's driver prints them on stdout whatever ``log_to_driver`` says (its error listener thread calls
    ``ray._private.worker.print_to_stdstream`` with ``is_err=False``), which breaks every ``--json``
    report a script reads from stdout. They are diagnostics, so they go where diagnostics go. Ray has no
    public switch for this; if a Ray release moves the function, the notices stay where Ray puts them.
    """
    import importlib

    worker = importlib.import_module("ray._private.worker")
    original = getattr(worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_tunekit_stderr", False):
        return

    def to_stderr(data: dict, *args: Any, **kwargs: Any) -> None:
        original({**data, "is_err": True}, *args, **kwargs)

    to_stderr._tunekit_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def _reachable(address: str) -> None:
    """InputError unless something listens at ``address`` (``[ray://]HOST:PORT``).

    Ray's own connect retries a missing head node for minutes, printing a warning every few
    seconds; one TCP connection attempt tells a dead or mistyped address at once.
    """
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        msg = f"--ray-address must be auto, ray://HOST:PORT or HOST:PORT, got {address!r}"
        raise InputError(msg)
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        msg = f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} (is its head node running?)"
        raise InputError(msg) from None


def cluster_cpus(ray: Any) -> int:
    """CPUs of the whole cluster (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def ordered_tasks(ray: Any, fn: Callable[..., Any], items: Iterable[tuple], *, in_flight: int, keep: bool = False) -> Iterator[Any]:
    """``fn(*item)`` for every item as Ray tasks, results in input order, ``in_flight`` at a time.

    Bounded like the local pools (a few tasks per CPU), so the driver holds few results however
    large the input. A task that fails with a tunekit error re-raises it here; one that is still
    lost after ``MAX_RETRIES`` reruns (its node died each time) is an InputError. With ``keep``,
    ``fn`` returns a pair: the first is fetched, the second left in the cluster's object store and
    yielded as its reference (data that later tasks read, never the driver).
    """
    options = {"num_cpus": 1, "max_retries": MAX_RETRIES, "retry_exceptions": False, "num_returns": 2 if keep else 1}
    remote = ray.remote(**options)(fn)
    pending: deque = deque()

    def take() -> Any:
        refs = pending.popleft()
        return (_get(ray, refs[0]), refs[1]) if keep else _get(ray, refs)

    try:
        for item in items:
            pending.append(remote.remote(*item))
            if len(pending) >= in_flight:
                yield take()
        while pending:
            yield take()
    finally:
        for refs in pending:
            for ref in refs if keep else [refs]:
                ray.cancel(ref, force=True)


def _get(ray: Any, ref: Any) -> Any:
    from ray import exceptions

    try:
        return ray.get(ref)
    except exceptions.RayTaskError as exc:
        if isinstance(exc.cause, TunekitError):
            raise exc.cause from None
        raise
    except (exceptions.WorkerCrashedError, exceptions.NodeDiedError, exceptions.ObjectLostError) as exc:
        msg = f"a Ray task was lost {MAX_RETRIES + 1} times (its worker or node died each time): {type(exc).__name__}"
        raise InputError(msg) from None
