"""Running ``ds check``, ``ds convert`` and ``ds pack`` as tasks of a Ray cluster (``--engine ray``).

Nothing here imports ``ray`` until an engine runs: ``ds`` starts as fast with it as without.
``check``, ``convert`` (and ``tunekit_tokenize.ray_pack``) hold the engines; ``cluster`` joins the
cluster and runs tasks in order; ``ranges`` cuts inputs into byte ranges; ``parts`` writes sharded
outputs with a manifest last.

The engines' names load on first use (PEP 562 ``__getattr__``): ``ds`` imports this package for
``use_ray`` at start-up, and the engines bring in pyarrow and the checker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tunekit_data.errors import UsageError
from tunekit_data.lazy import lazy_exports

if TYPE_CHECKING:
    from tunekit_data.distributed.check import run_check_ray
    from tunekit_data.distributed.cluster import cluster_cpus, connect, ordered_tasks
    from tunekit_data.distributed.convert import Share, convert_dataset_ray, share_units, shares
    from tunekit_data.distributed.ranges import DEFAULT_RANGE_SIZE, lines_through

_LAZY = {
    "run_check_ray": "check",
    **dict.fromkeys(("cluster_cpus", "connect", "ordered_tasks"), "cluster"),
    **dict.fromkeys(("Share", "convert_dataset_ray", "share_units", "shares"), "convert"),
    **dict.fromkeys(("DEFAULT_RANGE_SIZE", "lines_through"), "ranges"),
}

__all__ = [
    "DEFAULT_RANGE_SIZE",
    "ENGINES",
    "Share",
    "cluster_cpus",
    "connect",
    "convert_dataset_ray",
    "lines_through",
    "ordered_tasks",
    "run_check_ray",
    "share_units",
    "shares",
    "use_ray",
]

__getattr__ = lazy_exports(__name__, _LAZY)

ENGINES = ("local", "ray")


def use_ray(engine: str, address: str | None) -> bool:
    """True for ``--engine ray``; UsageError for an unknown engine, or an address without Ray."""
    if engine not in ENGINES:
        msg = f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}"
        raise UsageError(msg)
    if address is not None and engine != "ray":
        msg = "--ray-address needs --engine ray"
        raise UsageError(msg)
    return engine == "ray"
