"""The rich consoles the apps print to, made on first use.

Importing rich costs ~0.1 s of start-up that `--help`, `--json` and failing commands never need, so
a command module names ``out`` at its top and rich loads when something is printed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """Stands for ``rich.console.Console(**options)``, created at the first attribute access."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return getattr(self._console, name)


out = LazyConsole(highlight=False)
stderr = LazyConsole(stderr=True, highlight=False)
