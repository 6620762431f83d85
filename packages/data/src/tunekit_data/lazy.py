"""Lazy public names for the packages' ``__init__`` (PEP 562): ``ds`` starts without pyarrow.

A package lists what it exports and where each name lives; the module holding a name is imported
the first time the name is read, so ``import tunekit_data.check`` costs the rule table, not the
checker (tests/cli/test_startup.py holds the line).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that loads each of ``names`` on first use.

    Args:
        package: The package's ``__name__``.
        names: Each exported name's module: absolute (``tunekit_data.formats``) or under ``package``
            (``reader`` for ``tunekit_data.io.reader``).
    """

    def __getattr__(name: str) -> object:
        if name not in names:
            msg = f"module {package!r} has no attribute {name!r}"
            raise AttributeError(msg)
        module = names[name]
        return getattr(import_module(module if module.startswith("tunekit_data.") else f"{package}.{module}"), name)

    return __getattr__
