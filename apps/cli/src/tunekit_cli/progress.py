"""Progress bars on stderr (rich), shown only for inputs large enough to be worth watching."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

MIN_BYTES = 4 << 20


@contextmanager
def byte_progress(label: str, total: int, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(n_bytes)`` callback driving a bar on stderr (a no-op for small inputs)."""
    if not enabled or total < MIN_BYTES:
        yield lambda n: None
        return
    # rich.progress is imported here, not at the top: small inputs and --json draw no bar.
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)
