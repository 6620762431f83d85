"""Running ``ds check``, ``ds convert`` and ``ds pack`` as tasks of a Ray cluster (``--engine ray``).

Nothing here imports ``ray`` until an engine runs: ``ds`` starts as fast with it as without.
``check``, ``convert`` (and ``tunekit_tokenize.ray_pack``) hold the engines; ``cluster`` joins the
cluster and runs tasks in order; ``ranges`` cuts inputs into byte ranges; ``parts`` writes sharded
outputs with a manifest last.
"""

from __future__ import annotations

from tunekit_data.errors import UsageError

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
